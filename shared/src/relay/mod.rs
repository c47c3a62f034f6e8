//! Publisher side: turns one OpenAI response stream into Ably publish operations, sans-IO.
//!
//! One [`Relay`] per answer. The driver feeds it stream events, ACK/NACK outcomes and time,
//! and drains [`PublishOp`]s with [`Relay::poll_op`]:
//!
//! ```text
//!  first event ──► Create {name: "response", data: ""}     ──ACK──► handle_created(serial)
//!  text deltas ──► Append {serial, fragment}  (first at once, then at most one per window)
//!  terminal    ──► [Append rest] + Update {serial, full text, final status}
//! ```
//!
//! Only message text is published (output text and refusals); reasoning and function-call
//! arguments never are. Metadata travels in `extras.headers` (see [`crate::headers`]) and is
//! repeated on every message, because an append replaces `extras`. Every message also says
//! the text's byte length once it is applied ([`headers::LENGTH`]), so a subscriber can tell
//! a reordered or missing append from a stale one, and the text's digest
//! ([`headers::DIGEST`]), so it can tell a server's aggregate of appends applied out of order
//! from the publisher's text. The final update carries
//! the whole text, so subscribers and history converge even if an append was lost.
//!
//! [`Relay::continuing`] carries on an answer another publisher left: no create, the text
//! Ably has as the starting point, and the response's stream fed again from its start, its
//! events through the recorded [`headers::SEQUENCE`] only rebuilding the text.

mod budget;
mod text;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::Value;

use crate::headers::{self, Status};
use crate::ids::Serial;
use crate::lease::{self, Lease};
use crate::openai::{ContentPart, PartKind, Position, ResponseInfo, StreamEvent};
use crate::protocol::{Message, MessageAction};
use crate::time::Instant;
use text::{AnswerText, Edit};

pub use budget::Budget;

/// The default coalescing window: at most one append per 40 ms per answer.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(40);

/// The `error` header of an answer whose stream ended without a terminal event.
pub const STREAM_ENDED_EARLY: &str = "stream ended before a terminal event";

/// The `reason` header of an answer cut because it reached the maximum message size.
pub const MAX_MESSAGE_SIZE_REASON: &str = "max_message_size";

/// The `error` header of a failed response that gave no message.
pub const RESPONSE_FAILED: &str = "the response failed";

/// Room kept for what some servers count besides the text, name and extras Ably counts:
/// the message id, serial, action and the JSON keys and quotes around them. Sockudo checks
/// the whole JSON message against the limit.
pub const ENVELOPE_SLACK: usize = 512;

/// How many times one answer is cut after the server refused a message as too large.
pub const MAX_SIZE_CUTS: u8 = 3;

/// Error headers longer than this many bytes are cut, so that a huge error body cannot
/// crowd the answer out of the message.
const MAX_ERROR_HEADER_LEN: usize = 1024;

/// How a relay publishes.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayConfig {
    /// The coalescing window: after the first append, at most one append per window.
    /// Zero sends one append per delta.
    pub window: Duration,
    /// The `source` header: `openai`, or `replay` for recorded streams.
    pub source: String,
    /// The serial of the prompt this answer responds to, sent as the `prompt` header.
    pub prompt: Option<Serial>,
    /// The largest message (text, name and extras) the channel accepts, if limited.
    pub max_message_size: Option<usize>,
    /// The liveness lease every streaming message carries, with an empty append when the
    /// model is quiet ([`crate::lease`]); `None` publishes no lease.
    pub lease: Option<Lease>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            source: "openai".to_owned(),
            prompt: None,
            max_message_size: None,
            lease: None,
        }
    }
}

/// An answer another publisher began, as its latest version on the channel shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Continuation {
    /// The answer message's serial.
    pub serial: Serial,
    /// Its text so far.
    pub text: String,
    /// Its headers (the lease, length, digest and sequence are the relay's own again).
    pub headers: BTreeMap<String, String>,
    /// The last stream event its text includes ([`headers::SEQUENCE`]).
    pub through: u64,
}

/// Rebuilding a continued answer's text from the events already published.
#[derive(Clone, Debug)]
struct CatchUp {
    through: u64,
    /// The text subscribers have, kept for an end that comes before the rebuild does.
    published: String,
}

/// One publish for the driver to perform.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum PublishOp {
    /// Publish a new message; its ACK serial goes to [`Relay::handle_created`].
    Create(Message),
    /// Append a fragment to the answer (action APPEND, the create's serial).
    Append(Message),
    /// Replace the answer's whole text (action UPDATE, the create's serial).
    Update(Message),
}

impl PublishOp {
    /// The message to publish.
    pub fn message(&self) -> &Message {
        match self {
            Self::Create(m) | Self::Append(m) | Self::Update(m) => m,
        }
    }

    /// The message to publish, by value.
    pub fn into_message(self) -> Message {
        match self {
            Self::Create(m) | Self::Append(m) | Self::Update(m) => m,
        }
    }

    /// The message's data as text (empty if it has none).
    pub fn text(&self) -> &str {
        self.message()
            .data
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// What a text event does to its part.
#[derive(Clone, Copy)]
enum Change<'a> {
    /// A fragment to add (`*.delta`).
    Delta(&'a str),
    /// The part's full text, which wins over the fragments (`*.done`).
    Full(&'a str),
}

/// How an answer ended, beyond its status.
enum Ending {
    Plain,
    Reason(String),
    Error(String),
}

/// Relays one OpenAI response to one Ably message: create, appends, final update.
///
/// Inputs are `handle_*` calls (and [`Relay::cancel`]), each with the current time when it
/// matters; outputs are drained with [`Relay::poll_op`], and [`Relay::poll_timeout`] says
/// when to call [`Relay::handle_timeout`]. Instants must never go backwards.
#[derive(Clone, Debug)]
pub struct Relay {
    config: RelayConfig,
    headers: BTreeMap<String, String>,
    status: Status,
    text: AnswerText,
    ops: VecDeque<PublishOp>,
    /// The create has been queued.
    created: bool,
    /// The create's serial, once ACKed.
    serial: Option<Serial>,
    /// The answer's outcome is decided; later events are ignored.
    ended: bool,
    /// Nothing more will be queued: the final update is queued, or the create failed.
    closed: bool,
    /// How many bytes of the text subscribers have (through the create, appends, updates).
    sent_len: usize,
    /// The digest of those bytes, extended per append rather than hashed again.
    sent_digest: headers::Digest,
    /// The text no longer extends what subscribers have: the next publish is an update.
    diverged: bool,
    /// When the last append or update was queued.
    last_publish: Option<Instant>,
    /// Appends queued since the last update, to tell whether a NACK needs a repair.
    appends_since_update: usize,
    /// The size of a cut answer's message without text, computed once per header change
    /// rather than on every delta.
    cut_overhead: Option<usize>,
    /// Times the server refused a message as too large ([`Relay::handle_too_large`]).
    size_cuts: u8,
    /// When the last message with a lease was queued.
    leased_at: Option<Instant>,
    /// The last `sequence_number` handled.
    last_seq: Option<u64>,
    /// The server says the response runs in background mode.
    background: bool,
    /// Set while a continued answer's published events are fed again.
    catch_up: Option<CatchUp>,
}

impl Relay {
    /// A relay for one answer.
    pub fn new(config: RelayConfig) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert(
            headers::STATUS.to_owned(),
            Status::Streaming.as_str().to_owned(),
        );
        headers.insert(headers::SOURCE.to_owned(), config.source.clone());
        if let Some(prompt) = &config.prompt {
            headers.insert(headers::PROMPT.to_owned(), prompt.as_str().to_owned());
        }
        Self {
            config,
            headers,
            status: Status::Streaming,
            text: AnswerText::default(),
            ops: VecDeque::new(),
            created: false,
            serial: None,
            ended: false,
            closed: false,
            sent_len: 0,
            sent_digest: headers::Digest::EMPTY,
            diverged: false,
            last_publish: None,
            appends_since_update: 0,
            cut_overhead: None,
            size_cuts: 0,
            leased_at: None,
            last_seq: None,
            background: false,
            catch_up: None,
        }
    }

    /// A relay that carries on an answer another publisher left: nothing is created, and
    /// the stream is expected from its start. Its events through `from.through` rebuild the
    /// text without publishing; after them, a text that differs from what subscribers have
    /// is sent whole in an update, else only what follows is appended. An end before the
    /// rebuild finished (other than the model's own) keeps the published text.
    /// [`Relay::start`] sends an empty append with a fresh lease, which claims the answer.
    pub fn continuing(config: RelayConfig, from: Continuation) -> Self {
        let mut relay = Self::new(config);
        for (name, value) in from.headers {
            if ![
                lease::LEASE,
                headers::LENGTH,
                headers::DIGEST,
                headers::SEQUENCE,
                headers::STATUS,
            ]
            .contains(&name.as_str())
            {
                relay.headers.insert(name, value);
            }
        }
        relay.created = true;
        relay.serial = Some(from.serial);
        relay.background = true;
        relay.sent_len = from.text.len();
        relay.sent_digest = headers::Digest::of(&from.text);
        relay.last_seq = Some(from.through);
        relay.catch_up = Some(CatchUp {
            through: from.through,
            published: from.text,
        });
        relay
    }

    /// Queues the create now, before any stream event, so the answer's message exists (and
    /// its serial is known) while the model is still thinking. Does nothing if queued.
    pub fn start(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if self.catch_up.is_some() {
            self.publish_heartbeat(now);
        } else {
            self.ensure_created(now);
        }
    }

    /// Feeds one stream event. The first event of any type queues the create; events after
    /// the answer ended are ignored.
    pub fn handle_event(&mut self, now: Instant, event: &StreamEvent) {
        if self.ended {
            return;
        }
        let catching_up = self.catching_up(event);
        if let Some(seq) = event.sequence_number() {
            self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        }
        if let Some(info) = event.response() {
            self.note_response(info);
        }
        self.ensure_created(now);
        match event {
            StreamEvent::OutputItemAdded(e) | StreamEvent::OutputItemDone(e) => {
                self.text
                    .note_item(e.output_index, e.item.id.as_deref(), e.item.kind.as_ref());
            }
            StreamEvent::OutputTextDelta(d) => {
                self.on_text(
                    now,
                    &d.position,
                    &PartKind::OutputText,
                    Change::Delta(&d.delta),
                );
            }
            StreamEvent::RefusalDelta(d) => {
                self.on_text(
                    now,
                    &d.position,
                    &PartKind::Refusal,
                    Change::Delta(&d.delta),
                );
            }
            StreamEvent::OutputTextDone(d) => {
                self.on_text(
                    now,
                    &d.position,
                    &PartKind::OutputText,
                    Change::Full(&d.text),
                );
            }
            StreamEvent::RefusalDone(d) => {
                self.on_text(now, &d.position, &PartKind::Refusal, Change::Full(&d.text));
            }
            StreamEvent::ContentPartDone(e) => {
                if let Some(ContentPart {
                    kind: Some(kind),
                    text: Some(text),
                }) = &e.part
                {
                    self.on_text(now, &e.position, kind, Change::Full(text));
                }
            }
            _ => {}
        }
        if self.ended {
            // The text outgrew the maximum message size and the answer was cut.
            return;
        }
        match event.terminal_status() {
            Some(status) => self.finish(now, status, ending_of(event, status)),
            None if catching_up => {}
            None => self.flush_if_due(now),
        }
    }

    /// Whether `event` is one a continued answer already published. The first event after
    /// those (or the model's end) finishes the rebuild: a text other than the one
    /// subscribers have goes out whole.
    fn catching_up(&mut self, event: &StreamEvent) -> bool {
        let Some(catch_up) = &self.catch_up else {
            return false;
        };
        let published = event
            .sequence_number()
            .is_some_and(|seq| seq <= catch_up.through);
        if published && !event.is_terminal() {
            return true;
        }
        self.catch_up = None;
        self.diverged = self.text.len() != self.sent_len
            || headers::Digest::of(self.text.as_str()) != self.sent_digest;
        false
    }

    /// The create was ACKed with this serial: buffered text goes out at once, or the final
    /// operations if the answer already ended.
    pub fn handle_created(&mut self, now: Instant, serial: Serial) {
        if !self.created || self.serial.is_some() || self.closed {
            return;
        }
        self.serial = Some(serial);
        if self.ended {
            self.emit_final(now);
        } else if self.has_pending() {
            self.publish_pending(now);
        }
    }

    /// The create was refused for good (NACKed, and not found on the channel): the answer
    /// ends `failed`. So that its prompt is never left without an answer, one replacement
    /// create is queued, born `failed` with the reason and the text so far; nothing else is
    /// published after it.
    pub fn handle_create_failed(&mut self, error: &str) {
        if self.closed || self.serial.is_some() {
            return;
        }
        self.ended = true;
        self.closed = true;
        self.ops.clear();
        self.set_status(Status::Failed);
        self.set_header(headers::ERROR, &cap(error, MAX_ERROR_HEADER_LEN));
        if let Some(limit) = self.config.max_message_size {
            self.fit_error_header(limit);
            self.text
                .truncate_json(limit.saturating_sub(self.overhead(&self.headers) + ENVELOPE_SLACK));
        }
        let mut replacement = self.message(None, self.text.as_str());
        stamp(
            &mut replacement,
            self.text.len(),
            headers::Digest::of(self.text.as_str()),
        );
        self.ops.push_back(PublishOp::Create(replacement));
    }

    /// An append was NACKed: queue a repair update carrying the full text so far. Nothing is
    /// queued when no append was sent since the last update (which already covers it) or
    /// when the final update is already queued.
    pub fn handle_append_failed(&mut self, now: Instant) {
        if self.closed || self.serial.is_none() || self.appends_since_update == 0 {
            return;
        }
        self.publish_update(now);
    }

    /// The server refused a message as too large although it was measured to fit (a server
    /// that counts more than we do). The answer ends `incomplete` with reason
    /// [`MAX_MESSAGE_SIZE_REASON`], its text cut to at most `fits` bytes (what the channel is
    /// known to hold: where the refused append started), in a final full-text update. At most
    /// [`MAX_SIZE_CUTS`] times per answer, each cut shorter, so it cannot loop.
    pub fn handle_too_large(&mut self, now: Instant, fits: usize) {
        if self.serial.is_none() || self.size_cuts >= MAX_SIZE_CUTS {
            return;
        }
        self.size_cuts += 1;
        self.ended = true;
        self.ops.clear();
        self.text.truncate_json(fits.min(self.text.len()));
        self.set_status(Status::Incomplete);
        self.headers.remove(headers::ERROR);
        self.set_header(headers::REASON, MAX_MESSAGE_SIZE_REASON);
        self.publish_update(now);
        self.closed = true;
    }

    /// The transport failed mid-stream: the answer ends `failed` with this message.
    pub fn handle_stream_error(&mut self, now: Instant, message: &str) {
        self.finish(now, Status::Failed, Ending::Error(message.to_owned()));
    }

    /// The stream reached its end. Without a terminal event before it, the answer ends
    /// `failed` with [`STREAM_ENDED_EARLY`].
    pub fn handle_stream_end(&mut self, now: Instant) {
        self.finish(
            now,
            Status::Failed,
            Ending::Error(STREAM_ENDED_EARLY.to_owned()),
        );
    }

    /// The publisher is going away and leaves the answer to whoever carries it on (a
    /// background response, [`Relay::continuing`]): buffered text goes out, saying how far
    /// through the stream it is, then nothing more, not even a final update. The answer
    /// stays `streaming` until its lease lapses and a sweeper takes it.
    pub fn hand_over(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if self.serial.is_some() && self.has_pending() {
            self.publish_pending(now);
        }
        self.ended = true;
        self.closed = true;
    }

    /// Another publisher carries the answer on now: nothing more is published from here,
    /// not even what is buffered.
    pub fn abandon(&mut self) {
        self.ended = true;
        self.closed = true;
    }

    /// The user asked to stop: the answer ends `cancelled` with the text so far.
    pub fn cancel(&mut self, now: Instant) {
        self.finish(now, Status::Cancelled, Ending::Plain);
    }

    /// Changes the coalescing window (the daemon widens it under rate pressure).
    pub fn set_window(&mut self, window: Duration) {
        self.config.window = window;
    }

    /// Time passed: publishes buffered text whose window has elapsed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_if_due(now);
        if self.heartbeat_due().is_some_and(|due| now >= due) {
            self.publish_heartbeat(now);
        }
    }

    /// The next publish to perform, in order.
    pub fn poll_op(&mut self) -> Option<PublishOp> {
        self.ops.pop_front()
    }

    /// Whether an operation is queued for [`Relay::poll_op`].
    pub fn has_op(&self) -> bool {
        !self.ops.is_empty()
    }

    /// When buffered text is due, if any is waiting for its window, or else when a quiet
    /// answer's heartbeat is.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended || self.serial.is_none() || !self.has_pending() {
            return self.heartbeat_due();
        }
        Some(
            self.last_publish
                .map_or(Instant::default(), |last| last + self.config.window),
        )
    }

    /// The answer text so far (the full text, whatever has been published).
    pub fn text(&self) -> &str {
        self.text.as_str()
    }

    /// Where the answer stands.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The create's serial, once ACKed.
    pub fn serial(&self) -> Option<&Serial> {
        self.serial.as_ref()
    }

    /// Whether nothing more will be queued: the final update is queued (drain
    /// [`Relay::poll_op`] to get it) or the create failed.
    pub fn is_finished(&self) -> bool {
        self.closed
    }

    /// The headers the next message will carry.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The relay's configuration, with the current window.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    fn ensure_created(&mut self, now: Instant) {
        if !self.created {
            self.created = true;
            let mut create = self.message(None, "");
            stamp(&mut create, 0, headers::Digest::EMPTY);
            self.stamp_lease(&mut create, now);
            self.ops.push_back(PublishOp::Create(create));
        }
    }

    /// The size of an answer message with `headers` and no text, as this relay stamps it.
    fn overhead(&self, headers: &BTreeMap<String, String>) -> usize {
        overhead(headers, self.config.lease.is_some())
    }

    /// Adds the lease to a message that says `streaming`, and for a background response
    /// how far through its stream the text is ([`headers::SEQUENCE`]).
    fn stamp_lease(&mut self, message: &mut Message, now: Instant) {
        if let Some(lease) = &self.config.lease {
            if message.header(headers::STATUS) == Some(Status::Streaming.as_str()) {
                message.insert_header(lease::LEASE, lease.until(now).to_string());
                if let (true, Some(seq)) = (self.background, self.last_seq) {
                    message.insert_header(headers::SEQUENCE, seq.to_string());
                }
                self.leased_at = Some(now);
            }
        }
    }

    /// When a quiet answer sends its empty append, if it keeps a lease and may still
    /// publish.
    fn heartbeat_due(&self) -> Option<Instant> {
        let lease = self.config.lease.as_ref()?;
        if self.ended || self.closed || self.serial.is_none() || self.has_pending() {
            return None;
        }
        Some(self.leased_at.unwrap_or_default() + lease.heartbeat())
    }

    /// An empty append that refreshes the lease: the publisher is alive, the model quiet.
    fn publish_heartbeat(&mut self, now: Instant) {
        let mut append = self.message(Some(MessageAction::APPEND), "");
        stamp(&mut append, self.sent_len, self.sent_digest);
        self.stamp_lease(&mut append, now);
        self.ops.push_back(PublishOp::Append(append));
    }

    fn note_response(&mut self, info: &ResponseInfo) {
        if let Some(background) = info.background {
            self.background = background;
        }
        if let Some(id) = &info.id {
            self.set_header(headers::RESPONSE_ID, id);
        }
        if let Some(model) = &info.model {
            self.set_header(headers::MODEL, model);
        }
    }

    /// Applies a fragment or a part's full text. Only output text and refusals of message
    /// items count; reasoning parts and other items are never answer text.
    fn on_text(&mut self, now: Instant, position: &Position, kind: &PartKind, change: Change<'_>) {
        if !matches!(kind, PartKind::OutputText | PartKind::Refusal)
            || !self.text.is_answer_text(position)
        {
            return;
        }
        let key = self.text.part_key(position);
        let (edit, text) = match change {
            Change::Delta(delta) => (self.text.push(key, delta), delta),
            Change::Full(full) => (self.text.replace_part(key, full), full),
        };
        match edit {
            Edit::Unchanged => return,
            Edit::Extended => {}
            Edit::Rewritten { kept } => {
                if kept < self.sent_len {
                    self.diverged = true;
                }
            }
        }
        if *kind == PartKind::Refusal && !text.is_empty() {
            self.set_header(headers::REFUSAL, "true");
        }
        self.enforce_size(now);
    }

    /// Ends the answer `incomplete` when the text no longer fits in one message, keeping
    /// the part that fits next to the headers of a cut answer.
    fn enforce_size(&mut self, now: Instant) {
        let Some(limit) = self.config.max_message_size else {
            return;
        };
        let leased = self.config.lease.is_some();
        let cut_overhead = *self.cut_overhead.get_or_insert_with(|| {
            let mut cut_headers = self.headers.clone();
            cut_headers.insert(
                headers::STATUS.to_owned(),
                Status::Incomplete.as_str().to_owned(),
            );
            cut_headers.insert(
                headers::REASON.to_owned(),
                MAX_MESSAGE_SIZE_REASON.to_owned(),
            );
            overhead(&cut_headers, leased)
        });
        let room = limit.saturating_sub(cut_overhead + ENVELOPE_SLACK);
        if self.text.json_len() > room {
            self.text.truncate_json(room);
            self.finish(
                now,
                Status::Incomplete,
                Ending::Reason(MAX_MESSAGE_SIZE_REASON.to_owned()),
            );
        }
    }

    fn finish(&mut self, now: Instant, status: Status, ending: Ending) {
        if self.ended {
            return;
        }
        self.ended = true;
        // An answer that ends before its first event still gets a message, created as usual.
        self.ensure_created(now);
        self.set_status(status);
        match ending {
            Ending::Plain => {}
            Ending::Reason(reason) => self.set_header(headers::REASON, &reason),
            Ending::Error(error) => {
                self.set_header(headers::ERROR, &cap(&error, MAX_ERROR_HEADER_LEN))
            }
        }
        if self.serial.is_some() {
            self.emit_final(now);
        }
    }

    /// Queues what is still buffered, then the final update with the whole text.
    fn emit_final(&mut self, now: Instant) {
        if let Some(catch_up) = self.catch_up.take() {
            // Ended before the rebuild did: subscribers keep the text they have.
            let mut update = self.message(Some(MessageAction::UPDATE), &catch_up.published);
            stamp(&mut update, self.sent_len, self.sent_digest);
            self.ops.push_back(PublishOp::Update(update));
            self.last_publish = Some(now);
            self.closed = true;
            return;
        }
        if let Some(limit) = self.config.max_message_size {
            // The final headers may be longer than the ones the text was checked against:
            // an error message is shortened first, then the text.
            self.fit_error_header(limit);
            self.text
                .truncate_json(limit.saturating_sub(self.overhead(&self.headers) + ENVELOPE_SLACK));
        }
        if self.sent_len > self.text.len() {
            self.diverged = true;
        }
        if !self.diverged && self.text.len() > self.sent_len {
            self.publish_pending(now);
        }
        self.publish_update(now);
        self.closed = true;
    }

    /// Shortens the `error` header so that the headers alone fit in `limit`, if they can.
    fn fit_error_header(&mut self, limit: usize) {
        let excess = (self.overhead(&self.headers) + ENVELOPE_SLACK).saturating_sub(limit);
        if excess == 0 {
            return;
        }
        if let Some(error) = self.headers.get(headers::ERROR) {
            // Each byte cut from the text shortens its JSON form by at least one byte.
            let shorter = cap(error, error.len().saturating_sub(excess));
            self.set_header(headers::ERROR, &shorter);
        }
    }

    /// Whether subscribers lack text. Never while a continued answer is being rebuilt: its
    /// text catches up with theirs first.
    fn has_pending(&self) -> bool {
        self.catch_up.is_none() && (self.diverged || self.text.len() > self.sent_len)
    }

    fn flush_if_due(&mut self, now: Instant) {
        if self.ended || self.serial.is_none() || !self.has_pending() {
            return;
        }
        let due = self.last_publish.map(|last| last + self.config.window);
        if due.is_none_or(|due| now >= due) {
            self.publish_pending(now);
        }
    }

    /// Publishes what subscribers lack: an append of the new text, or an update when the
    /// text no longer extends what they have.
    fn publish_pending(&mut self, now: Instant) {
        if self.diverged {
            self.publish_update(now);
            return;
        }
        let Some(fragment) = self.text.as_str().get(self.sent_len..) else {
            // Not on a char boundary, which cannot happen; resynchronise with an update.
            self.publish_update(now);
            return;
        };
        if fragment.is_empty() {
            return;
        }
        let mut append = self.message(Some(MessageAction::APPEND), fragment);
        if self.status.is_terminal() {
            // The rest of the text goes out just before the final update: it says
            // `streaming`, so that only the update, which carries the whole text, ends it.
            let mut headers = self.headers.clone();
            headers.insert(
                headers::STATUS.to_owned(),
                Status::Streaming.as_str().to_owned(),
            );
            append.set_headers(&headers);
        }
        // Subscribers have the text up to `sent_len` unchanged (else it diverged and this
        // would be an update), so the digest after the append extends theirs.
        let digest = self.sent_digest.extend(fragment);
        stamp(&mut append, self.text.len(), digest);
        self.stamp_lease(&mut append, now);
        self.ops.push_back(PublishOp::Append(append));
        self.sent_len = self.text.len();
        self.sent_digest = digest;
        self.appends_since_update += 1;
        self.last_publish = Some(now);
    }

    fn publish_update(&mut self, now: Instant) {
        let mut update = self.message(Some(MessageAction::UPDATE), self.text.as_str());
        let digest = headers::Digest::of(self.text.as_str());
        stamp(&mut update, self.text.len(), digest);
        self.stamp_lease(&mut update, now);
        self.ops.push_back(PublishOp::Update(update));
        self.sent_len = self.text.len();
        self.sent_digest = digest;
        self.diverged = false;
        self.appends_since_update = 0;
        self.last_publish = Some(now);
    }

    fn message(&self, action: Option<MessageAction>, data: &str) -> Message {
        let mut message = Message {
            name: Some(headers::ANSWER_NAME.to_owned()),
            data: Some(Value::String(data.to_owned())),
            serial: action.and(self.serial.clone()),
            action,
            ..Message::default()
        };
        message.set_headers(&self.headers);
        message
    }

    fn set_status(&mut self, status: Status) {
        self.status = status;
        self.set_header(headers::STATUS, status.as_str());
    }

    fn set_header(&mut self, name: &str, value: &str) {
        if self.headers.get(name).map(String::as_str) != Some(value) {
            self.headers.insert(name.to_owned(), value.to_owned());
            self.cut_overhead = None;
        }
    }
}

/// The details a terminal event gives beyond its status.
fn ending_of(event: &StreamEvent, status: Status) -> Ending {
    match (event, status) {
        (StreamEvent::Error(e), _) => Ending::Error(e.describe()),
        (_, Status::Incomplete) => match event.response().and_then(|r| r.incomplete_reason.clone())
        {
            Some(reason) => Ending::Reason(reason),
            None => Ending::Plain,
        },
        (_, Status::Failed) => Ending::Error(
            event
                .response()
                .and_then(ResponseInfo::error_message)
                .unwrap_or(RESPONSE_FAILED)
                .to_owned(),
        ),
        _ => Ending::Plain,
    }
}

/// Says what the answer's whole text is once `message` is applied: its byte length
/// ([`headers::LENGTH`]) and digest ([`headers::DIGEST`]).
fn stamp(message: &mut Message, length: usize, digest: headers::Digest) {
    message.insert_header(headers::LENGTH, length.to_string());
    message.insert_header(headers::DIGEST, digest.to_string());
}

/// The size of an answer message with these headers and no text, counting the
/// [`headers::LENGTH`] header at its widest, the [`headers::DIGEST`] header and, if
/// `leased`, the [`lease::LEASE`] header at its widest.
fn overhead(headers: &BTreeMap<String, String>, leased: bool) -> usize {
    let mut message = Message {
        name: Some(headers::ANSWER_NAME.to_owned()),
        ..Message::default()
    };
    message.set_headers(headers);
    message.insert_header(headers::LENGTH, usize::MAX.to_string());
    message.insert_header(headers::DIGEST, headers::digest(""));
    if leased {
        message.insert_header(lease::LEASE, i64::MAX.to_string());
        message.insert_header(headers::SEQUENCE, u64::MAX.to_string());
    }
    message.wire_size()
}

/// `text` cut to at most `max_len` bytes on a char boundary.
fn cap(text: &str, max_len: usize) -> String {
    let mut end = max_len.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}
