//! The publisher session: every answer published over one connection, from its create to
//! its final update, sans-IO.
//!
//! One [`Session`] per connection owns one [`Relay`] per answer and decides everything the
//! daemon's answer loop used to decide in async code: when a publish may go (the rate
//! [`Budget`](crate::relay::Budget), shared by all answers), how wide each answer's window
//! is, what a NACK costs (a repair, a cut, a resend or nothing), when a create whose outcome
//! is unclear is looked up on the channel, when an answer is given up, and when it is over.
//! A driver feeds it `(now, input)` and performs what [`Session::poll_output`] hands back:
//!
//! ```text
//!  start(spec)            ──► Publish{Create}        ──outcome──► handle_outcome(ticket)
//!  handle_stream_event    ──► Publish{Append|Update} ──outcome──► handle_outcome(ticket)
//!  create NACKed / silent ──► Lookup{id}             ──found────► handle_lookup(answer)
//!  relay finished, drained ──► Ended{report}
//! ```
//!
//! # Invariants
//!
//! - Every answer that starts ends with exactly one [`Output::Ended`], whatever the
//!   connection does: drained, given up after [`SessionConfig::drain_timeout`], or cut short
//!   by a refusal that makes publishing pointless (93002).
//! - A prompt is never left without an answer on the channel: a create that is refused and
//!   not found by its id is replaced by a create born `failed` ([`Relay::handle_create_failed`]).
//! - A refused append costs at most one full-text update, and none when a later update
//!   already carries its text.
//! - A final update that a resent earlier publish overtook (its ACK carries a higher
//!   version serial) goes out again, at most [`SessionConfig::update_resends`] times.
//! - No publish leaves while the connection's or its channel's budget is empty, resends,
//!   prompts and cancels included ([`Session::post`]); the driver never paces.
//! - A rate-limit refusal lowers the budget it names (42913 a channel's, any other the
//!   connection's) by half at most once a second, and the rate comes back by doubling after
//!   each quiet backoff, never all at once.
//! - No publish leaves for a channel that would refuse it for its state
//!   ([`Session::set_blocked`]) until it is attached again or has been blocked for
//!   [`SessionConfig::reconnect_wait`]; a suspension costs a wait, never a refusal. A post
//!   waits [`SessionConfig::post_wait`] at most, then is refused without being sent.

mod answer;
mod pace;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::connection::{errors, Limits, PublishOutcome};
use crate::headers::Status;
use crate::ids::{ChannelName, MessageId, Serial};
use crate::openai::StreamEvent;
use crate::protocol::{ErrorInfo, Message};
use crate::relay::{Continuation, Relay, RelayConfig};
use crate::time::Instant;

use answer::{Answer, Kind};
use pace::Pace;

pub use answer::{describe_refusal, APPENDS_NOT_ENABLED_HELP};

/// Bytes of a publish frame besides its one message: the ProtocolMessage's action, channel
/// name (up to Ably's channel name limit) and msgSerial, with their JSON keys.
const FRAME_ENVELOPE: usize = 256;

/// Names one answer of a session.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct AnswerId(pub u64);

impl fmt::Display for AnswerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "answer-{}", self.0)
    }
}

/// Names one publish the driver performs; its outcome comes back with it.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Ticket(pub u64);

/// What a publish is, for the driver's metrics.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum PublishKind {
    /// The answer's create (empty, or born `failed` when it replaces a refused create).
    Create,
    /// A fragment appended to the answer.
    Append,
    /// The answer's whole text: a repair, the final update, or a resend of it.
    Update,
}

/// How a session publishes and how long it waits.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    /// The base coalescing window, widened when many answers stream at once.
    pub window: Duration,
    /// Messages per second over the connection (0 = unlimited).
    pub rate: u32,
    /// Messages per second on any one channel (0 = unlimited). Ably allows 50.
    pub channel_rate: u32,
    /// The `source` header of every answer.
    pub source: String,
    /// The largest message the channel accepts (from `connectionDetails`).
    pub max_message_size: Option<usize>,
    /// Whether the driver can search a channel for a message by id ([`Output::Lookup`]).
    pub lookups: bool,
    /// How long a create's ACK may take before the answer looks for it on the channel.
    /// Longer than Ably's default connectionStateTtl (2 min), by which time the connection
    /// has resent the create or failed it (RTN14e).
    pub create_timeout: Duration,
    /// How long the last publishes' outcomes may take once the answer has ended.
    pub drain_timeout: Duration,
    /// How long a resend or a lookup waits for the connection to come back.
    pub reconnect_wait: Duration,
    /// How long a post may wait to be handed out (for the budget, for a blocked channel, or
    /// to go again after a rate-limit refusal) before it is refused: someone is waiting
    /// for its outcome.
    pub post_wait: Duration,
    /// How often a refused or overtaken final update is sent again.
    pub update_resends: u32,
    /// The liveness lease of every answer ([`crate::lease`]); `None` publishes none.
    pub lease: Option<crate::lease::Lease>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            window: crate::relay::DEFAULT_WINDOW,
            rate: 0,
            channel_rate: 0,
            source: "openai".to_owned(),
            max_message_size: None,
            lookups: true,
            create_timeout: Duration::from_secs(150),
            drain_timeout: Duration::from_secs(75),
            reconnect_wait: Duration::from_secs(60),
            post_wait: Duration::from_secs(20),
            update_resends: 3,
            lease: None,
        }
    }
}

/// One answer to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerSpec {
    pub channel: ChannelName,
    /// The prompt message it answers, sent as the `prompt` header.
    pub prompt: Option<Serial>,
    /// The create's own id, so it can be found on the channel if its outcome is unclear.
    pub create_id: MessageId,
}

/// How an answer went.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The answer message's serial, if its create was ACKed or found.
    pub serial: Option<Serial>,
    pub status: Status,
    pub text: String,
    /// The `error` (or `reason`) header.
    pub detail: Option<String>,
    /// Publishing problems (refused create or update, missing ACKs): subscribers may lack
    /// the end.
    pub publish_error: Option<String>,
    pub appends: u64,
    pub messages: u64,
    pub repairs: u64,
    /// Times the final update was sent again (lost with the connection, or overtaken by a
    /// publish that landed after it).
    pub resends: u32,
    /// The answer stopped waiting for outcomes or resends that never came
    /// ([`SessionConfig::drain_timeout`]).
    pub gave_up: bool,
    /// Retries the model request needed before its stream began: the driver's to fill in,
    /// since the session never sees the request.
    pub retries: u32,
}

/// What the driver is to do, or to tell the answer's owner.
// `Publish` is nearly every output and carries a whole message; boxing it would cost an
// allocation per append for nothing, since outputs are drained one at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Publish `message` on `channel`; give its outcome to [`Session::handle_outcome`].
    Publish {
        ticket: Ticket,
        answer: AnswerId,
        kind: PublishKind,
        channel: ChannelName,
        message: Message,
    },
    /// Search `channel`'s latest messages for the one with `id`; give what was found to
    /// [`Session::handle_lookup`].
    Lookup {
        answer: AnswerId,
        channel: ChannelName,
        id: MessageId,
    },
    /// The create was ACKed or found (`Ok(serial)`), or the answer could not be started.
    /// Given once per answer.
    Created {
        answer: AnswerId,
        result: Result<Serial, String>,
    },
    /// The answer's outcome is decided: stop reading its model stream (which stops
    /// generation). Given once per answer.
    StopStream { answer: AnswerId },
    /// Publish `message`, which is no answer's (a prompt, a cancel), on `channel`; give its
    /// outcome to [`Session::handle_outcome`].
    Post {
        ticket: Ticket,
        channel: ChannelName,
        message: Message,
    },
    /// Search `channel`'s latest messages for the post with `id`, whose outcome was unclear;
    /// give what was found to [`Session::handle_post_lookup`].
    FindPost {
        ticket: Ticket,
        channel: ChannelName,
        id: MessageId,
    },
    /// The outcome of a [`Session::post`].
    Posted {
        ticket: Ticket,
        outcome: PublishOutcome,
    },
    /// The answer is over; nothing more is said of it.
    Ended {
        answer: AnswerId,
        report: Box<Report>,
    },
}

/// Whose publish a ticket is.
#[derive(Clone, Debug)]
enum Owner {
    Answer(AnswerId, Kind),
    /// A post, kept to be sent again if it is refused as too fast.
    Post {
        message: Box<Message>,
    },
}

/// Every answer on one connection. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    /// The connection's budget.
    pace: Pace,
    /// Each channel's budget, and how many answers stream there.
    channels: HashMap<ChannelName, (Pace, usize)>,
    answers: BTreeMap<AnswerId, Answer>,
    tickets: HashMap<Ticket, Owner>,
    /// Posts waiting for the budget.
    posts: VecDeque<(Ticket, ChannelName, Message)>,
    /// Each post's channel and when it was posted, for as long as its ticket is alive.
    post_channels: HashMap<Ticket, (ChannelName, Instant)>,
    /// Posts being looked for, with the error they were refused with.
    post_lookups: HashMap<Ticket, ErrorInfo>,
    outputs: VecDeque<Output>,
    next_answer: u64,
    next_ticket: u64,
    connected: bool,
    /// When the budget has room again, if a publish is waiting for it.
    paced_until: Option<Instant>,
    /// Channels that refuse publishes (SUSPENDED or FAILED), with when their publishes stop
    /// waiting for them: `None` once that has passed, and publishes go to be refused.
    blocked: HashMap<ChannelName, Option<Instant>>,
}

impl Session {
    /// A session with no answers; the connection is taken to be up until told otherwise.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            pace: Pace::new(config.rate),
            post_channels: HashMap::new(),
            channels: HashMap::new(),
            config,
            answers: BTreeMap::new(),
            tickets: HashMap::new(),
            posts: VecDeque::new(),
            post_lookups: HashMap::new(),
            outputs: VecDeque::new(),
            next_answer: 0,
            next_ticket: 0,
            connected: true,
            paced_until: None,
            blocked: HashMap::new(),
        }
    }

    /// Starts an answer: its create is queued at once, before any stream event.
    pub fn start(&mut self, now: Instant, spec: AnswerSpec) -> AnswerId {
        self.begin(now, spec, None)
    }

    /// Carries on an answer another publisher began and left ([`Relay::continuing`]): its
    /// message exists, so nothing is created; the model stream is fed from its start.
    pub fn continue_answer(
        &mut self,
        now: Instant,
        spec: AnswerSpec,
        from: Continuation,
    ) -> AnswerId {
        self.begin(now, spec, Some(from))
    }

    fn begin(&mut self, now: Instant, spec: AnswerSpec, from: Option<Continuation>) -> AnswerId {
        let id = AnswerId(self.next_answer);
        self.next_answer += 1;
        let channel_rate = self.config.channel_rate;
        let (_, streaming) = self
            .channels
            .entry(spec.channel.clone())
            .or_insert_with(|| (Pace::new(channel_rate), 0));
        *streaming += 1;
        let config = RelayConfig {
            window: self.config.window,
            source: self.config.source.clone(),
            prompt: spec.prompt,
            max_message_size: self.config.max_message_size,
            lease: self.config.lease,
        };
        let relay = match from {
            Some(from) => Relay::continuing(config, from),
            None => Relay::new(config),
        };
        self.answers
            .insert(id, Answer::new(relay, spec.channel, spec.create_id));
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.start(now);
        }
        self.after(now, id);
        id
    }

    /// One event of the answer's model stream.
    pub fn handle_stream_event(&mut self, now: Instant, id: AnswerId, event: &StreamEvent) {
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.handle_event(now, event);
            self.after(now, id);
        }
    }

    /// The answer's model request or stream failed: it ends `failed` with `error`.
    pub fn handle_stream_error(&mut self, now: Instant, id: AnswerId, error: &str) {
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.handle_stream_error(now, error);
            self.after(now, id);
        }
    }

    /// The answer's model stream ended (without a terminal event it ends `failed`).
    pub fn handle_stream_end(&mut self, now: Instant, id: AnswerId) {
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.handle_stream_end(now);
            self.after(now, id);
        }
    }

    /// A user stopped the answer: it ends `cancelled` with its text so far.
    /// The publisher shuts down and leaves the answer to whoever carries it on: buffered
    /// text goes out, then nothing ([`Relay::hand_over`]); it stays `streaming`.
    pub fn hand_over(&mut self, now: Instant, id: AnswerId) {
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.hand_over(now);
            self.after(now, id);
        }
    }

    /// Another publisher carries the answer on ([`Relay::abandon`]): this session
    /// publishes nothing more of it.
    pub fn abandon(&mut self, now: Instant, id: AnswerId) {
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.abandon();
            self.after(now, id);
        }
    }

    /// The user asked to stop the answer: it ends `cancelled`.
    pub fn cancel(&mut self, now: Instant, id: AnswerId) {
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.relay.cancel(now);
            self.after(now, id);
        }
    }

    /// The ACK or NACK of a publish.
    pub fn handle_outcome(&mut self, now: Instant, ticket: Ticket, outcome: PublishOutcome) {
        if let Err(error) = &outcome {
            if errors::is_rate_limit(error) {
                self.rate_limited(now, ticket, error);
            }
        }
        let (id, kind) = match self.tickets.remove(&ticket) {
            Some(Owner::Answer(id, kind)) => (id, kind),
            Some(Owner::Post { message }) => {
                self.post_outcome(now, ticket, *message, outcome);
                return;
            }
            None => return,
        };
        if let Some(answer) = self.answers.get_mut(&id) {
            answer.pending = answer.pending.saturating_sub(1);
            let effects = answer.settle(now, kind, outcome, &self.config, self.connected);
            self.apply(id, effects);
            self.after(now, id);
        }
    }

    /// Queues a message that is no answer's (a prompt, a cancel) under the same budgets as
    /// answers, ahead of their appends: someone is waiting for it. Its outcome comes back as
    /// [`Output::Posted`].
    /// Give the message an id, so that a post whose outcome is unclear can be found again
    /// ([`Output::FindPost`]).
    pub fn post(&mut self, now: Instant, channel: ChannelName, message: Message) -> Ticket {
        let ticket = self.new_ticket();
        self.post_channels.insert(ticket, (channel.clone(), now));
        self.posts.push_back((ticket, channel, message));
        self.pump_posts(now);
        ticket
    }

    /// A post's ACK or NACK. Refused as too fast, it is sent again once the lowered budget
    /// allows, within [`SessionConfig::post_wait`] of when it was posted; refused
    /// unclearly, the server may have stored it all the same (an implicit
    /// NACK of a frame it applied, an ACK lost with the connection): someone's prompt must
    /// not sit on the channel unanswered, nor be sent twice, so the channel is searched for
    /// it by id before it is called refused.
    fn post_outcome(
        &mut self,
        now: Instant,
        ticket: Ticket,
        message: Message,
        outcome: PublishOutcome,
    ) {
        let Some((channel, posted)) = self.post_channels.get(&ticket).cloned() else {
            return;
        };
        match outcome {
            Err(error) if errors::is_rate_limit(&error) && now < posted + self.config.post_wait => {
                self.posts.push_front((ticket, channel, message));
                self.pump_posts(now);
            }
            Err(error) if self.config.lookups && answer::worth_resending(&error) => {
                match message.id {
                    Some(id) => {
                        self.post_lookups.insert(ticket, error);
                        self.outputs.push_back(Output::FindPost {
                            ticket,
                            channel,
                            id,
                        });
                    }
                    None => self.posted(ticket, Err(error)),
                }
            }
            outcome => self.posted(ticket, outcome),
        }
    }

    fn posted(&mut self, ticket: Ticket, outcome: PublishOutcome) {
        self.post_channels.remove(&ticket);
        self.outputs.push_back(Output::Posted { ticket, outcome });
    }

    /// The server refused a publish as too fast: the budget it names is halved, starting
    /// empty, so every answer's window widens and fewer, larger appends go, and doubles back
    /// after each quiet [`pace::RATE_BACKOFF`]. 42913 names the publish's channel; every
    /// other rate limit the connection.
    fn rate_limited(&mut self, now: Instant, ticket: Ticket, error: &ErrorInfo) {
        let channel = match self.tickets.get(&ticket) {
            Some(Owner::Answer(id, _)) => self.answers.get(id).map(|a| &a.channel),
            Some(Owner::Post { .. }) => self.post_channels.get(&ticket).map(|(c, _)| c),
            None => None,
        };
        let pace = match channel {
            Some(channel) if error.code == errors::RATE_LIMIT_CHANNEL_PUBLISH => {
                self.channels.get_mut(channel).map(|(pace, _)| pace)
            }
            _ => None,
        };
        pace.unwrap_or(&mut self.pace).cut(now);
    }

    /// What the search for a post with an unclear outcome found: its serial makes the post
    /// a success; nothing (or a failed search) leaves it refused as it was.
    pub fn handle_post_lookup(&mut self, ticket: Ticket, found: Result<Option<Serial>, String>) {
        let Some(error) = self.post_lookups.remove(&ticket) else {
            return;
        };
        let outcome = match found {
            Ok(Some(serial)) => Ok(vec![Some(serial)]),
            Ok(None) | Err(_) => Err(error),
        };
        self.posted(ticket, outcome);
    }

    /// What the search for an answer's create found: its serial, nothing, or why the
    /// search failed (which counts as nothing).
    pub fn handle_lookup(
        &mut self,
        now: Instant,
        id: AnswerId,
        found: Result<Option<Serial>, String>,
    ) {
        if let Some(answer) = self.answers.get_mut(&id) {
            let effects = answer.handle_lookup(now, found, &self.config, self.connected);
            self.apply(id, effects);
            self.after(now, id);
        }
    }

    /// Whether the connection is up; resends and lookups wait for it.
    pub fn set_connected(&mut self, now: Instant, connected: bool) {
        self.connected = connected;
        if connected {
            self.release_all(now);
        }
    }

    /// The channels that refuse publishes now, SUSPENDED or FAILED (RTL6c4), in place of
    /// the ones named before. Their answers' publishes and their posts wait, for up to
    /// [`SessionConfig::reconnect_wait`], and go when the channel is attached again (RTL13b
    /// re-attaches a suspended one); what waited longer goes to be refused.
    pub fn set_blocked<'a>(
        &mut self,
        now: Instant,
        channels: impl IntoIterator<Item = &'a ChannelName>,
    ) {
        let mut blocked = HashMap::new();
        for channel in channels {
            let until = match self.blocked.remove(channel) {
                Some(until) => until,
                None => Some(now + self.config.reconnect_wait),
            };
            blocked.insert(channel.clone(), until);
        }
        let released = !self.blocked.is_empty();
        self.blocked = blocked;
        if released {
            self.release_all(now);
        }
    }

    /// The limits the server announced: the message size for answers started from now on
    /// (CD2c), no larger than what fits in one frame with its envelope (CD2d), and
    /// `maxInboundRate` (CD2e), which caps the connection's budget below the configured
    /// rate (or sets it, when the configured rate is unlimited).
    pub fn set_limits(&mut self, limits: &Limits) {
        let in_a_frame = limits.max_frame_size.saturating_sub(FRAME_ENVELOPE);
        self.config.max_message_size = Some(limits.max_message_size.min(in_a_frame));
        let announced = limits
            .max_inbound_rate
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let rate = match (self.config.rate, announced) {
            (0, Some(limit)) => limit,
            (rate, Some(limit)) => rate.min(limit),
            (rate, None) => rate,
        };
        self.pace.set_base(rate);
    }

    /// Time passed: windows, deadlines and the budget.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paced_until.is_some_and(|at| at <= now) {
            self.paced_until = None;
        }
        self.pace.recover(now);
        for (pace, _) in self.channels.values_mut() {
            pace.recover(now);
        }
        for until in self.blocked.values_mut() {
            if until.is_some_and(|at| at <= now) {
                *until = None;
            }
        }
        self.expire_posts(now);
        self.pump_posts(now);
        let ids: Vec<AnswerId> = self.answers.keys().copied().collect();
        for id in ids {
            if let Some(answer) = self.answers.get_mut(&id) {
                answer.relay.handle_timeout(now);
                let effects = answer.handle_timeout(now, &self.config, self.connected);
                self.apply(id, effects);
                self.after(now, id);
            }
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Session::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let answers = self.answers.values().filter_map(Answer::poll_timeout);
        let blocked = self.blocked.values().flatten().copied();
        let throttle = self.pace.deadline().into_iter().chain(
            self.channels
                .values()
                .filter_map(|(pace, _)| pace.deadline()),
        );
        answers
            .chain(self.paced_until)
            .chain(blocked)
            .chain(throttle)
            .chain(self.post_deadline())
            .min()
    }

    /// How many answers are running (streaming or draining).
    pub fn active(&self) -> usize {
        self.answers.len()
    }

    /// Each running answer and what it waits for, in words, at `now` (simulated or real
    /// milliseconds), with whether its channel is blocked and the connection is up.
    pub fn describe(&self, now: Instant) -> Vec<String> {
        let mut lines: Vec<String> = self
            .answers
            .iter()
            .map(|(id, answer)| {
                let blocked = if self.is_blocked(&answer.channel) {
                    "; channel blocked"
                } else {
                    ""
                };
                format!("{id}: {}{blocked}", answer.describe())
            })
            .collect();
        lines.push(format!(
            "at {}ms: connected {}, {} posts queued, throttled {}, paced until {:?}",
            now.as_millis(),
            self.connected,
            self.posts.len(),
            self.pace.is_lowered(),
            self.paced_until.map(Instant::as_millis),
        ));
        lines
    }

    /// An answer's text so far.
    pub fn text(&self, id: AnswerId) -> Option<&str> {
        self.answers.get(&id).map(|a| a.relay.text())
    }

    /// Where an answer stands.
    pub fn status(&self, id: AnswerId) -> Option<Status> {
        self.answers.get(&id).map(|a| a.relay.status())
    }

    /// Something that held publishes back is gone: what waited goes, budget permitting.
    fn release_all(&mut self, now: Instant) {
        self.pump_posts(now);
        let ids: Vec<AnswerId> = self.answers.keys().copied().collect();
        for id in ids {
            if let Some(answer) = self.answers.get_mut(&id) {
                let effects = answer.release(self.connected);
                self.apply(id, effects);
                self.after(now, id);
            }
        }
    }

    /// Queues what an answer's decision asked for.
    fn apply(&mut self, id: AnswerId, effects: answer::Effects) {
        if let Some(result) = effects.created {
            self.outputs
                .push_back(Output::Created { answer: id, result });
        }
        if let Some((channel, create_id)) = effects.lookup {
            self.outputs.push_back(Output::Lookup {
                answer: id,
                channel,
                id: create_id,
            });
        }
    }

    /// After any input about answer `id`: its window, its stream, its publishes, its end.
    fn after(&mut self, now: Instant, id: AnswerId) {
        let streaming = self.answers.len();
        let Some(answer) = self.answers.get_mut(&id) else {
            return;
        };
        let mut window = self.pace.budget.window(self.config.window, streaming);
        if let Some((pace, streaming)) = self.channels.get(&answer.channel) {
            window = window.max(pace.budget.window(self.config.window, *streaming));
        }
        answer.relay.set_window(window);
        if answer.relay.status().is_terminal() && !answer.stream_stopped {
            answer.stream_stopped = true;
            self.outputs.push_back(Output::StopStream { answer: id });
        }
        self.pump(now, id);
        let Some(answer) = self.answers.get_mut(&id) else {
            return;
        };
        if answer.is_over() {
            let owed = answer.unannounced();
            let report = answer.report();
            if let Some(result) = owed {
                self.outputs
                    .push_back(Output::Created { answer: id, result });
            }
            let channel = answer.channel.clone();
            self.answers.remove(&id);
            self.tickets
                .retain(|_, owner| !matches!(owner, Owner::Answer(of, _) if *of == id));
            if let Some((_, streaming)) = self.channels.get_mut(&channel) {
                *streaming = streaming.saturating_sub(1);
            }
            self.outputs.push_back(Output::Ended {
                answer: id,
                report: Box::new(report),
            });
        } else if answer.relay.is_finished() && answer.drain_deadline.is_none() {
            answer.drain_deadline = Some(now + self.config.drain_timeout);
        }
    }

    /// Hands out the answer's queued publishes while the budget allows.
    fn pump(&mut self, now: Instant, id: AnswerId) {
        loop {
            let Some(answer) = self.answers.get(&id) else {
                return;
            };
            if !answer.has_publish() || self.is_blocked(&answer.channel) || self.post_ready() {
                return;
            }
            let channel = answer.channel.clone();
            if !self.take_budget(now, &channel) {
                return;
            }
            let Some(answer) = self.answers.get_mut(&id) else {
                return;
            };
            let Some((kind, message)) = answer.next_publish(now, &self.config) else {
                return;
            };
            self.send(id, kind, message);
        }
    }

    /// Hands out queued posts, in order but for those whose channel is blocked, while the
    /// budgets allow.
    fn pump_posts(&mut self, now: Instant) {
        let mut index = 0;
        while let Some((_, channel, _)) = self.posts.get(index) {
            if self.is_blocked(channel) {
                index += 1;
                continue;
            }
            let channel = channel.clone();
            if !self.take_budget(now, &channel) {
                return;
            }
            if let Some((ticket, channel, message)) = self.posts.remove(index) {
                self.tickets.insert(
                    ticket,
                    Owner::Post {
                        message: Box::new(message.clone()),
                    },
                );
                self.outputs.push_back(Output::Post {
                    ticket,
                    channel,
                    message,
                });
            }
        }
    }

    /// Refuses the queued posts that have waited [`SessionConfig::post_wait`].
    fn expire_posts(&mut self, now: Instant) {
        let wait = self.config.post_wait;
        let mut expired = Vec::new();
        self.posts.retain(|(ticket, _, _)| {
            let due = self
                .post_channels
                .get(ticket)
                .is_some_and(|(_, posted)| *posted + wait <= now);
            if due {
                expired.push(*ticket);
            }
            !due
        });
        for ticket in expired {
            let why = ErrorInfo::new(
                errors::CHANNEL_INVALID_STATE,
                503,
                format!("the channel took no publishes for {wait:?}"),
            );
            self.posted(ticket, Err(why));
        }
    }

    /// When the oldest queued post is to be refused, if any is queued.
    fn post_deadline(&self) -> Option<Instant> {
        self.posts
            .iter()
            .filter_map(|(ticket, _, _)| self.post_channels.get(ticket))
            .map(|(_, posted)| *posted + self.config.post_wait)
            .min()
    }

    /// Whether a post could go now (budget permitting): answers wait behind it.
    fn post_ready(&self) -> bool {
        self.posts
            .iter()
            .any(|(_, channel, _)| !self.is_blocked(channel))
    }

    /// Whether `channel`'s publishes are to wait for it.
    fn is_blocked(&self, channel: &ChannelName) -> bool {
        self.blocked.get(channel).is_some_and(Option::is_some)
    }

    /// Takes one message from the connection's budget and `channel`'s, or notes when both
    /// will have room and takes nothing.
    fn take_budget(&mut self, now: Instant, channel: &ChannelName) -> bool {
        let channel_rate = self.config.channel_rate;
        let (channel_pace, _) = self
            .channels
            .entry(channel.clone())
            .or_insert_with(|| (Pace::new(channel_rate), 0));
        let wait = [
            self.pace.budget.ready_at(now),
            channel_pace.budget.ready_at(now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(at) = wait {
            self.paced_until = Some(self.paced_until.map_or(at, |p| p.min(at)));
            return false;
        }
        let _ = self.pace.budget.take(now);
        let _ = channel_pace.budget.take(now);
        true
    }

    fn new_ticket(&mut self) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        ticket
    }

    fn send(&mut self, id: AnswerId, kind: Kind, message: Message) {
        let ticket = self.new_ticket();
        let Some(answer) = self.answers.get_mut(&id) else {
            return;
        };
        answer.pending += 1;
        self.tickets.insert(ticket, Owner::Answer(id, kind));
        self.outputs.push_back(Output::Publish {
            ticket,
            answer: id,
            kind: kind.publish_kind(),
            channel: answer.channel.clone(),
            message,
        });
    }
}
