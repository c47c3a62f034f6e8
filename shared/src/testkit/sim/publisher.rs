//! The publisher: one [`Relay`] per answer over one [`Connection`], driven the way the
//! daemon's answer loop drives them: the create published first and its serial awaited,
//! appends pipelined, a NACKed append repaired by a full-text update, the final update sent
//! again (with a new id, up to three times) when it is refused for a reason worth retrying.
//!
//! The final update goes out only once every earlier publish of its answer has settled. A
//! publish whose outcome is unknown (its ACK or NACK lost with the transport) is resent on
//! the next transport, and after a refused resume it is renumbered and resent (RTN19a2),
//! while the service recognises by id what it already applied and skips it (RSL1k). A
//! NACKed append whose NACK was lost is applied then, after an update that was already
//! applied, so the answer's text ends with a stray fragment. Nothing of the answer may be
//! in flight while its final update is, so that update is the last one applied.

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
    /// The final update, held until the answer has no other publish in flight.
    held: Option<Message>,
}

/// The publisher's answers and its connection.
#[derive(Debug)]
pub(super) struct Publisher {
    pub(super) conn: Connection,
    channel: ChannelName,
    runs: Vec<Run>,
    pending: BTreeMap<PublishId, (usize, Kind)>,
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
                held: None,
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
            if let Some((index, kind)) = self.pending.remove(&id) {
                self.settle(now, index, kind, outcome, trace);
            }
        }
    }

    /// Whether every answer has queued its final update and every publish is settled.
    pub(super) fn is_done(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.started && r.relay.is_finished() && r.held.is_none())
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

    /// Publishes what answer `index`'s relay has queued, holding its final update (and so
    /// anything after it) while other publishes of the answer are in flight.
    fn pump(&mut self, now: Instant, index: usize, trace: &mut Trace) {
        loop {
            let in_flight = self.in_flight(index);
            let Some(run) = self.runs.get_mut(index) else {
                return;
            };
            if let Some(update) = run.held.take() {
                if in_flight > 0 {
                    run.held = Some(update);
                    return;
                }
                trace.note(
                    now,
                    Actor::Publisher,
                    update.serial.as_ref(),
                    format!("answer {index}: nothing else in flight, final update released"),
                );
                self.send(now, index, Kind::Update, update, trace);
                continue;
            }
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
            let is_final = kind == Kind::Update && run.relay.is_finished();
            trace.note(
                now,
                Actor::Publisher,
                message.serial.as_ref(),
                format!(
                    "answer {index} publishes {}{kind:?} {}",
                    if is_final { "final " } else { "" },
                    clip(message.data.as_ref().and_then(|d| d.as_str()).unwrap_or(""))
                ),
            );
            if is_final && in_flight > 0 {
                trace.note(
                    now,
                    Actor::Publisher,
                    message.serial.as_ref(),
                    format!("answer {index}: final update held behind {in_flight} in flight"),
                );
                run.held = Some(message);
                return;
            }
            self.send(now, index, kind, message, trace);
        }
    }

    /// How many publishes of answer `index` await their outcome.
    fn in_flight(&self, index: usize) -> usize {
        self.pending.values().filter(|(i, _)| *i == index).count()
    }

    fn send(
        &mut self,
        now: Instant,
        index: usize,
        kind: Kind,
        message: Message,
        trace: &mut Trace,
    ) {
        match self.conn.publish(now, &self.channel, vec![message]) {
            Ok(id) => {
                self.pending.insert(id, (index, kind));
            }
            Err(err) => self.settle(now, index, kind, Err(err.to_error_info()), trace),
        }
    }

    fn settle(
        &mut self,
        now: Instant,
        index: usize,
        kind: Kind,
        outcome: PublishOutcome,
        trace: &mut Trace,
    ) {
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
            (Kind::Append | Kind::Update, Ok(_)) => {}
        }
        self.pump(now, index, trace);
    }
}

/// As the daemon decides: capability, appends-disabled and size refusals are final.
fn worth_resending(err: &ErrorInfo) -> bool {
    const APPENDS_NOT_ENABLED: u32 = 93002;
    const MESSAGE_TOO_LARGE: u32 = 40009;
    !((40100..40200).contains(&err.code)
        || err.code == APPENDS_NOT_ENABLED
        || err.code == MESSAGE_TOO_LARGE)
}
