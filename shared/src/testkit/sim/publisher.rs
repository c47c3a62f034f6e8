//! The publisher: the daemon's own [`Session`] over one [`Connection`], driven the way the
//! daemon drives it (`publisher/src/answer.rs`): model events fed as they arrive, the
//! session's publishes handed to the connection, outcomes, connection state and history
//! reads handed back. Every decision (repairs, resends, lookups, pacing, the end of an
//! answer) is the session's, so the simulation proves the code the daemon runs.

use std::collections::{BTreeMap, VecDeque};

use crate::connection::{AttachOptions, Connection, ConnectionState, Event, PublishId};
use crate::ids::{ChannelName, MessageId, Serial};
use crate::openai::StreamEvent;
use crate::session::{AnswerId, AnswerSpec, Output, Session, SessionConfig, Ticket};
use crate::time::Instant;

use super::model::ModelAnswer;
use super::trace::{clip, short, Actor, Trace};

/// How long the daemon's history read for a lost create takes here.
const LOOKUP_DELAY_MS: u64 = 50;

#[derive(Debug)]
struct Run {
    /// Stream events not yet handed to the session, with when they arrive.
    events: VecDeque<(Instant, StreamEvent)>,
    start: Instant,
    prompt: Serial,
    /// The session's name for it, once started.
    id: Option<AnswerId>,
    /// The stream was read to its end (or the session asked to stop reading).
    stream_done: bool,
    /// The session said the answer is over.
    ended: bool,
}

/// The publisher's session and its connection.
#[derive(Debug)]
pub(super) struct Publisher {
    pub(super) conn: Connection,
    channel: ChannelName,
    session: Session,
    runs: Vec<Run>,
    /// The session's tickets by the connection's publish ids.
    pending: BTreeMap<PublishId, Ticket>,
    /// History reads asked for: the answer, when the read is done, the id to look for.
    lookups: Vec<(AnswerId, Instant, MessageId)>,
    /// Why an answer could not reach its viewers (a refused create or final update).
    pub(super) problems: Vec<String>,
    /// Answers that stopped waiting for outcomes that never came (drain timeout).
    pub(super) gave_up: Vec<String>,
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
                events: answer.events.iter().cloned().collect(),
                start: answer
                    .events
                    .first()
                    .map_or(Instant::default(), |(at, _)| *at),
                prompt: Serial::new(answer.prompt.clone()),
                id: None,
                stream_done: false,
                ended: false,
            })
            .collect();
        let session = Session::new(SessionConfig {
            window: std::time::Duration::from_millis(window_ms),
            source: "replay".to_owned(),
            max_message_size: Some(65_536),
            // A short lease, so that quiet stretches send heartbeats (empty appends) under
            // the same faults as every other publish.
            lease: Some(crate::lease::Lease {
                duration: std::time::Duration::from_millis(600),
                clock: crate::lease::UnixClock::new(1_700_000_000_000),
            }),
            ..SessionConfig::default()
        });
        Self {
            conn,
            channel,
            session,
            runs,
            pending: BTreeMap::new(),
            lookups: Vec::new(),
            problems: Vec::new(),
            gave_up: Vec::new(),
        }
    }

    /// Connects, and attaches the channel live-only as the daemon does to hear cancels: a
    /// channel whose attach goes unanswered is suspended, and holds the answers' publishes.
    pub(super) fn start(&mut self, now: Instant) {
        self.conn.connect(now);
        if let Err(err) = self
            .conn
            .attach(now, self.channel.clone(), AttachOptions::live_only())
        {
            self.problems
                .push(format!("the publisher could not attach: {err}"));
        }
    }

    /// The earliest instant an answer starts, an event arrives or the session is due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let runs = self.runs.iter().flat_map(|r| {
            let start = r.id.is_none().then_some(r.start);
            let event = (!r.stream_done)
                .then(|| r.events.front().map(|(at, _)| *at))
                .flatten();
            [start, event]
        });
        runs.flatten()
            .chain(self.session.poll_timeout())
            .chain(self.lookups.iter().map(|(_, at, _)| *at))
            .min()
    }

    /// Starts answers, feeds events and runs the session's deadlines due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant, trace: &mut Trace) {
        for run in &mut self.runs {
            if run.id.is_none() && run.start <= now {
                let id = self.session.start(
                    now,
                    AnswerSpec {
                        channel: self.channel.clone(),
                        prompt: Some(run.prompt.clone()),
                        create_id: MessageId::new(format!("sim-answer-{}", run.prompt)),
                    },
                );
                run.id = Some(id);
            }
            let Some(id) = run.id else {
                continue;
            };
            while !run.stream_done && run.events.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, event)) = run.events.pop_front() {
                    self.session.handle_stream_event(now, id, &event);
                }
            }
            if !run.stream_done && run.events.is_empty() {
                run.stream_done = true;
                self.session.handle_stream_end(now, id);
            }
        }
        if self.session.poll_timeout().is_some_and(|at| at <= now) {
            self.session.handle_timeout(now);
        }
        self.drain(now, trace);
    }

    /// An event from the publisher's connection.
    pub(super) fn handle_event(&mut self, now: Instant, event: Event, trace: &mut Trace) {
        match event {
            Event::Published { id, outcome } => {
                if let Some(ticket) = self.pending.remove(&id) {
                    self.session.handle_outcome(now, ticket, outcome);
                }
            }
            Event::StateChanged { current, .. } => {
                self.session.set_limits(self.conn.limits());
                self.session
                    .set_connected(now, current == ConnectionState::Connected);
            }
            Event::ChannelStateChanged { .. } => {
                self.session.set_blocked(now, self.conn.blocked_channels());
            }
            _ => return,
        }
        self.drain(now, trace);
    }

    /// Whether every answer has ended and every publish is settled.
    pub(super) fn is_done(&self) -> bool {
        self.runs.iter().all(|r| r.ended)
            && self.pending.is_empty()
            && !self.conn.has_pending_publishes()
    }

    /// Answers whose history read for a lost create is due, with the id to look for.
    pub(super) fn due_lookups(&mut self, now: Instant) -> Vec<(AnswerId, MessageId)> {
        let (due, later) = std::mem::take(&mut self.lookups)
            .into_iter()
            .partition(|(_, at, _)| *at <= now);
        self.lookups = later;
        due.into_iter()
            .map(|(id, _, create)| (id, create))
            .collect()
    }

    /// What the history read found for an answer's create.
    pub(super) fn handle_lookup(
        &mut self,
        now: Instant,
        id: AnswerId,
        found: Option<Serial>,
        trace: &mut Trace,
    ) {
        trace.note(
            now,
            Actor::Publisher,
            found.as_ref(),
            format!(
                "{id}: history {}",
                found
                    .as_ref()
                    .map_or("does not hold the create".to_owned(), |s| format!(
                        "holds the create as {}",
                        short(s)
                    ))
            ),
        );
        self.session.handle_lookup(now, id, Ok(found));
        self.drain(now, trace);
    }

    /// Performs what the session asks for, as the daemon's driver does.
    fn drain(&mut self, now: Instant, trace: &mut Trace) {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Publish {
                    ticket,
                    answer,
                    kind,
                    channel,
                    message,
                } => {
                    trace.note(
                        now,
                        Actor::Publisher,
                        message.serial.as_ref(),
                        format!(
                            "{answer} publishes {kind:?} {}",
                            clip(message.data.as_ref().and_then(|d| d.as_str()).unwrap_or(""))
                        ),
                    );
                    self.send(now, ticket, &channel, message);
                }
                Output::Post {
                    ticket,
                    channel,
                    message,
                } => self.send(now, ticket, &channel, message),
                Output::Posted { .. } => {}
                Output::FindPost { ticket, .. } => {
                    // The simulated publisher posts nothing, so there is nothing to find.
                    self.session.handle_post_lookup(ticket, Ok(None));
                }
                Output::Lookup { answer, id, .. } => {
                    trace.note(
                        now,
                        Actor::Publisher,
                        None,
                        format!("{answer}: the create's outcome is unclear; reading history"),
                    );
                    let at = now + std::time::Duration::from_millis(LOOKUP_DELAY_MS);
                    self.lookups.push((answer, at, id));
                }
                Output::Created { answer, result } => match result {
                    Ok(serial) => trace.note(
                        now,
                        Actor::Publisher,
                        Some(&serial),
                        format!("{answer} created as {}", short(&serial)),
                    ),
                    Err(error) => self.problems.push(format!("{answer}: {error}")),
                },
                Output::StopStream { answer } => {
                    if let Some(run) = self.runs.iter_mut().find(|r| r.id == Some(answer)) {
                        run.stream_done = true;
                    }
                }
                Output::Ended { answer, report } => {
                    trace.note(
                        now,
                        Actor::Publisher,
                        report.serial.as_ref(),
                        format!(
                            "{answer} ended {} after {} messages, {} repairs, {} resends",
                            report.status, report.messages, report.repairs, report.resends
                        ),
                    );
                    if let Some(error) = report.publish_error {
                        if report.gave_up {
                            self.gave_up
                                .push(format!("{answer} at {}ms: {error}", now.as_millis()));
                        }
                        self.problems.push(format!("{answer}: {error}"));
                    }
                    if let Some(run) = self.runs.iter_mut().find(|r| r.id == Some(answer)) {
                        run.ended = true;
                        run.stream_done = true;
                    }
                }
            }
        }
    }

    /// Hands one publish to the connection; a refusal goes straight back to the session.
    fn send(
        &mut self,
        now: Instant,
        ticket: Ticket,
        channel: &ChannelName,
        message: crate::protocol::Message,
    ) {
        match self.conn.publish(now, channel, vec![message]) {
            Ok(id) => {
                self.pending.insert(id, ticket);
            }
            Err(err) => {
                self.session
                    .handle_outcome(now, ticket, Err(err.to_error_info()));
            }
        }
    }
}
