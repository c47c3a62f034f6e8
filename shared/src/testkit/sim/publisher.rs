//! The publisher: one [`Relay`] per answer over one [`Connection`], driven the way the
//! daemon's answer loop drives them: the create published first and its serial awaited,
//! appends pipelined, a NACKed append repaired by a full-text update, the final update sent
//! again (with a new id, up to three times) when it is refused for a reason worth retrying.
//!
//! The final update is also sent again when an earlier publish of its answer turns out to
//! have been applied after it: its ACK carries a version serial above the final update's.
//! That happens when a publish's ACK or NACK is lost with the transport and the resume is
//! refused: the queue is renumbered and resent on the new connection (RTN19a2), the service
//! skips by id what it already applied (RSL1k), and applies the rest, so an append whose
//! NACK was lost lands after the final update and history's text ends with a stray
//! fragment (seed 773).

use std::collections::{BTreeMap, VecDeque};

use crate::connection::{Connection, Event, PublishId, PublishOutcome};
use crate::ids::{ChannelName, MessageId, Serial};
use crate::openai::StreamEvent;
use crate::protocol::{ErrorInfo, Message};
use crate::relay::{PublishOp, Relay, RelayConfig};
use crate::time::Instant;

use super::model::ModelAnswer;
use super::trace::{clip, short, Actor, Trace};

/// How often a refused final update is published again.
const UPDATE_RESENDS: u32 = 3;

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Kind {
    Create,
    /// The replacement create of an answer whose create failed, born `failed`.
    Replacement,
    Append,
    Update,
}

/// How long the daemon's history read for a lost create takes here.
const LOOKUP_DELAY_MS: u64 = 50;

#[derive(Debug)]
struct Run {
    relay: Relay,
    /// Stream events not yet handed to the relay, with when they arrive.
    events: VecDeque<(Instant, StreamEvent)>,
    start: Instant,
    started: bool,
    last_update: Option<Message>,
    update_resends: u32,
    /// The create's own id, as the daemon gives it, to find it in history.
    create_id: MessageId,
    /// When the history read for a create with an unclear outcome is due.
    lookup_at: Option<Instant>,
    looked_up: bool,
    create_failed: bool,
    /// The highest version serial ACKed for the final update (a publish equal to
    /// `last_update` once the relay has finished).
    final_version: Option<Serial>,
    /// The highest version serial ACKed for any other append or update of the answer.
    other_version: Option<Serial>,
}

/// One publish awaiting its outcome.
#[derive(Debug)]
struct Sent {
    index: usize,
    kind: Kind,
    /// An update's message, to tell the final update from a repair when it is ACKed.
    update: Option<Message>,
}

/// The publisher's answers and its connection.
#[derive(Debug)]
pub(super) struct Publisher {
    pub(super) conn: Connection,
    channel: ChannelName,
    runs: Vec<Run>,
    pending: BTreeMap<PublishId, Sent>,
    /// Why an answer could not reach its viewers (a refused create or final update).
    pub(super) problems: Vec<String>,
}

impl Publisher {
    /// A publisher of the model's `answers` on `channel`, each starting at its first event.
    pub(super) fn new(
        conn: Connection,
        channel: ChannelName,
        window_ms: u64,
        answers: &[ModelAnswer],
    ) -> Self {
        let runs = answers
            .iter()
            .map(|answer| Run {
                relay: Relay::new(RelayConfig {
                    window: std::time::Duration::from_millis(window_ms),
                    source: "replay".to_owned(),
                    prompt: Some(Serial::new(answer.prompt.clone())),
                    max_message_size: Some(65_536),
                }),
                events: answer.events.iter().cloned().collect(),
                start: answer
                    .events
                    .first()
                    .map_or(Instant::default(), |(at, _)| *at),
                started: false,
                last_update: None,
                update_resends: 0,
                create_id: MessageId::new(format!("sim-answer-{}", answer.prompt)),
                lookup_at: None,
                looked_up: false,
                create_failed: false,
                final_version: None,
                other_version: None,
            })
            .collect();
        Self {
            conn,
            channel,
            runs,
            pending: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// The earliest instant an answer starts, an event arrives or a relay window ends.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.runs
            .iter()
            .flat_map(|r| {
                let start = (!r.started).then_some(r.start);
                let event = r.events.front().map(|(at, _)| *at);
                [start, event, r.relay.poll_timeout(), r.lookup_at]
            })
            .flatten()
            .min()
    }

    /// Starts answers, feeds events and runs relay windows due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant, trace: &mut Trace) {
        for index in 0..self.runs.len() {
            let Some(run) = self.runs.get_mut(index) else {
                continue;
            };
            if !run.started && run.start <= now {
                run.started = true;
                run.relay.start();
            }
            if run.started {
                while run.events.front().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, event)) = run.events.pop_front() {
                        run.relay.handle_event(now, &event);
                    }
                }
                if run.events.is_empty() && !run.relay.status().is_terminal() {
                    run.relay.handle_stream_end(now);
                }
                run.relay.handle_timeout(now);
            }
            self.pump(now, index, trace);
        }
    }

    /// An event from the publisher's connection.
    pub(super) fn handle_event(&mut self, now: Instant, event: Event, trace: &mut Trace) {
        if let Event::Published { id, outcome } = event {
            if let Some(sent) = self.pending.remove(&id) {
                self.settle(now, sent, outcome, trace);
            }
        }
    }

    /// Whether every answer has queued its final update and every publish is settled.
    pub(super) fn is_done(&self) -> bool {
        self.runs.iter().all(|r| r.started && r.relay.is_finished())
            && self.pending.is_empty()
            && !self.conn.has_pending_publishes()
    }

    /// Answers whose history read for a lost create is due, with the id to look for.
    pub(super) fn due_lookups(&mut self, now: Instant) -> Vec<(usize, MessageId)> {
        let mut due = Vec::new();
        for (index, run) in self.runs.iter_mut().enumerate() {
            if run.lookup_at.is_some_and(|at| at <= now) {
                run.lookup_at = None;
                due.push((index, run.create_id.clone()));
            }
        }
        due
    }

    /// What the history read found for answer `index`'s create: its serial, or nothing, in
    /// which case the answer fails with a replacement create, as the daemon's does.
    pub(super) fn handle_lookup(
        &mut self,
        now: Instant,
        index: usize,
        found: Option<Serial>,
        trace: &mut Trace,
    ) {
        let Some(run) = self.runs.get_mut(index) else {
            return;
        };
        match found {
            Some(serial) => {
                trace.note(
                    now,
                    Actor::Publisher,
                    Some(&serial),
                    format!("answer {index} found in history as {}", short(&serial)),
                );
                run.relay.handle_created(now, serial);
            }
            None => Self::create_unclear(
                run,
                now,
                index,
                "the create is not in history".to_owned(),
                &mut self.problems,
                trace,
            ),
        }
        self.pump(now, index, trace);
    }

    /// The create may or may not be on the channel: look for it by id once, as the daemon
    /// does (`publisher/src/answer.rs`), and give the answer up only after that.
    fn create_unclear(
        run: &mut Run,
        now: Instant,
        index: usize,
        why: String,
        problems: &mut Vec<String>,
        trace: &mut Trace,
    ) {
        if run.relay.serial().is_some() {
            return;
        }
        if !run.looked_up {
            run.looked_up = true;
            run.lookup_at = Some(now + std::time::Duration::from_millis(LOOKUP_DELAY_MS));
            trace.note(
                now,
                Actor::Publisher,
                None,
                format!("answer {index}: {why}; looking for it in history"),
            );
            return;
        }
        run.create_failed = true;
        run.relay.handle_create_failed(&why);
        problems.push(format!("answer {index}: {why}"));
    }

    fn pump(&mut self, now: Instant, index: usize, trace: &mut Trace) {
        loop {
            let Some(run) = self.runs.get_mut(index) else {
                return;
            };
            let Some(op) = run.relay.poll_op() else {
                return;
            };
            let kind = match &op {
                PublishOp::Create(_) if run.create_failed => Kind::Replacement,
                PublishOp::Create(_) => Kind::Create,
                PublishOp::Append(_) => Kind::Append,
                PublishOp::Update(_) => Kind::Update,
            };
            let mut message = op.into_message();
            if kind == Kind::Create {
                message.id = Some(run.create_id.clone());
            }
            if matches!(kind, Kind::Update | Kind::Replacement) {
                run.last_update = Some(message.clone());
                run.update_resends = 0;
            }
            trace.note(
                now,
                Actor::Publisher,
                message.serial.as_ref(),
                format!(
                    "answer {index} publishes {kind:?} {}",
                    clip(message.data.as_ref().and_then(|d| d.as_str()).unwrap_or(""))
                ),
            );
            self.send(now, index, kind, message, trace);
        }
    }

    fn send(
        &mut self,
        now: Instant,
        index: usize,
        kind: Kind,
        message: Message,
        trace: &mut Trace,
    ) {
        let update = matches!(kind, Kind::Update).then(|| message.clone());
        match self.conn.publish(now, &self.channel, vec![message]) {
            Ok(id) => {
                self.pending.insert(
                    id,
                    Sent {
                        index,
                        kind,
                        update,
                    },
                );
            }
            Err(err) => {
                let sent = Sent {
                    index,
                    kind,
                    update: None,
                };
                self.settle(now, sent, Err(err.to_error_info()), trace);
            }
        }
    }

    fn settle(&mut self, now: Instant, sent: Sent, outcome: PublishOutcome, trace: &mut Trace) {
        let Sent {
            index,
            kind,
            update,
        } = sent;
        let Some(run) = self.runs.get_mut(index) else {
            return;
        };
        match (kind, outcome) {
            (Kind::Create, Ok(serials)) => match serials.into_iter().next().flatten() {
                Some(serial) => {
                    trace.note(
                        now,
                        Actor::Publisher,
                        Some(&serial),
                        format!("answer {index} created as {}", short(&serial)),
                    );
                    run.relay.handle_created(now, serial);
                }
                None => Self::create_unclear(
                    run,
                    now,
                    index,
                    "the create's ACK carried no serial".to_owned(),
                    &mut self.problems,
                    trace,
                ),
            },
            (Kind::Create, Err(err)) => Self::create_unclear(
                run,
                now,
                index,
                format!("create refused: {err}"),
                &mut self.problems,
                trace,
            ),
            (Kind::Replacement, Ok(_)) => {}
            (Kind::Append, Err(err)) => {
                trace.note(
                    now,
                    Actor::Publisher,
                    run.relay.serial(),
                    format!("answer {index}: append refused ({}), repairing", err.code),
                );
                run.relay.handle_append_failed(now);
            }
            (Kind::Update | Kind::Replacement, Err(err))
                if worth_resending(&err) && run.update_resends < UPDATE_RESENDS =>
            {
                if let Some(update) = run.last_update.clone() {
                    run.update_resends += 1;
                    trace.note(
                        now,
                        Actor::Publisher,
                        run.relay.serial(),
                        format!(
                            "answer {index}: update refused ({}), sending it again",
                            err.code
                        ),
                    );
                    self.send(now, index, kind, update, trace);
                }
            }
            (Kind::Update | Kind::Replacement, Err(err)) => {
                self.problems
                    .push(format!("answer {index}: update refused: {err}"));
            }
            (Kind::Append | Kind::Update, Ok(serials)) => {
                let version = serials.into_iter().next().flatten();
                if self.note_applied(index, kind, update.as_ref(), version) {
                    self.resend_final(now, index, trace);
                }
            }
        }
        self.pump(now, index, trace);
    }

    /// Records the version serial an append or update of answer `index` was ACKed with, and
    /// says whether the final update is no longer the latest version applied.
    fn note_applied(
        &mut self,
        index: usize,
        kind: Kind,
        update: Option<&Message>,
        version: Option<Serial>,
    ) -> bool {
        let Some(run) = self.runs.get_mut(index) else {
            return false;
        };
        let Some(version) = version else {
            return false;
        };
        let is_final = kind == Kind::Update
            && run.relay.is_finished()
            && update.is_some_and(|u| run.last_update.as_ref().is_some_and(|l| same_content(u, l)));
        let slot = if is_final {
            &mut run.final_version
        } else {
            &mut run.other_version
        };
        if slot.as_ref().is_none_or(|v| *v < version) {
            *slot = Some(version);
        }
        match (&run.final_version, &run.other_version) {
            (Some(last), Some(other)) => other > last,
            _ => false,
        }
    }

    /// Publishes the final update again (with a new id), because an earlier publish of the
    /// answer was applied after it.
    fn resend_final(&mut self, now: Instant, index: usize, trace: &mut Trace) {
        let Some(run) = self.runs.get_mut(index) else {
            return;
        };
        let Some(update) = run.last_update.clone() else {
            return;
        };
        trace.note(
            now,
            Actor::Publisher,
            run.relay.serial(),
            format!(
                "answer {index}: a publish was applied after the final update ({} > {}), sending it again",
                run.other_version.as_ref().map_or(String::new(), short),
                run.final_version.as_ref().map_or(String::new(), short),
            ),
        );
        // The resend's own ACK decides anew.
        run.final_version = None;
        self.send(now, index, Kind::Update, update, trace);
    }
}

/// Whether two messages carry the same text and headers (their ids differ).
fn same_content(a: &Message, b: &Message) -> bool {
    a.data == b.data && a.extras == b.extras
}

/// As the daemon decides: capability, appends-disabled and size refusals are final.
fn worth_resending(err: &ErrorInfo) -> bool {
    const APPENDS_NOT_ENABLED: u32 = 93002;
    const MESSAGE_TOO_LARGE: u32 = 40009;
    !((40100..40200).contains(&err.code)
        || err.code == APPENDS_NOT_ENABLED
        || err.code == MESSAGE_TOO_LARGE)
}
