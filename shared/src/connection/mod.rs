//! Sans-IO Ably realtime connection and channels: fed `(now, input)`, it yields frames to
//! send, events for the application and its next deadline.
//!
//! The driver owns the socket and the clock and runs one loop:
//!
//! 1. on a received text frame call [`Connection::handle_text`], on a closed socket
//!    [`Connection::handle_transport_closed`], when the deadline passes
//!    [`Connection::handle_timeout`], and call commands (`connect`, `attach`, `publish`, …)
//!    as the application asks;
//! 2. after each of those, drain [`Connection::poll_output`]: open a socket for
//!    [`Transmit::Open`], send [`Transmit::Frame`]s in order, close on [`Transmit::Close`],
//!    hand [`Event`]s to the application;
//! 3. sleep until [`Connection::poll_timeout`] or the next input.
//!
//! ```text
//!  initialized ─connect─► connecting ─CONNECTED─► connected ─close─► closing ─CLOSED─► closed
//!                            ▲   │                    │
//!                  reconnect │   │ transport lost      │ transport lost / idle / DISCONNECTED
//!                            │   ▼                    ▼
//!                         disconnected ──(no success within connectionStateTtl)──► suspended
//!  fatal ERROR (any state) ─► failed
//! ```

mod channel;
mod config;
mod queue;
mod timer;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

pub use channel::{AttachOptions, ChannelState};
pub use config::{
    encode_component, ApiKey, Auth, Config, ConfigError, Endpoint, PRODUCTION_ENDPOINT,
};
pub use queue::{PublishId, PublishOutcome};

use channel::Channel;
use queue::PublishQueue;
use timer::{Timer, TimerTable};

use crate::codec::{self, CodecError};
use crate::ids::{ChannelName, ChannelSerial, ConnectionId, ConnectionKey, MessageId};
use crate::protocol::{
    Action, AuthDetails, ErrorInfo, Flags, Message, MessageAction, MessageVersion, ProtocolMessage,
};
use crate::time::Instant;

/// Message size limit until the server announces its own (Ably's default).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;

/// Connection states, as Ably names them.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum ConnectionState {
    Initialized,
    Connecting,
    Connected,
    Disconnected,
    Suspended,
    Closing,
    Closed,
    Failed,
}

impl ConnectionState {
    /// Ably's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialized => "initialized",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Suspended => "suspended",
            Self::Closing => "closing",
            Self::Closed => "closed",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the driver must do with the transport.
// Outputs are moved once through a short queue; boxing the frame would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Transmit {
    /// Open a WebSocket to this URL (closing any previous one first).
    Open { url: String },
    /// Send this frame on the open WebSocket (encode it with [`codec::encode`]).
    Frame(ProtocolMessage),
    /// Close the WebSocket.
    Close,
}

/// What the application learns.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The connection changed state (`previous == current` means an update, e.g. re-auth).
    StateChanged {
        previous: ConnectionState,
        current: ConnectionState,
        reason: Option<ErrorInfo>,
    },
    /// A resume was refused: this is a new connection. Publishes not yet ACKed are resent
    /// with new msgSerials (their message ids let the server drop copies it already has);
    /// channels re-attach, and continuity of messages is not guaranteed.
    ResumeFailed { reason: Option<ErrorInfo> },
    /// A channel changed state. `previous == current == Attached` with `resumed == false`
    /// means continuity was lost: messages may have been missed.
    ChannelStateChanged {
        channel: ChannelName,
        previous: ChannelState,
        current: ChannelState,
        resumed: bool,
        has_backlog: bool,
        reason: Option<ErrorInfo>,
    },
    /// A message delivered on an attached channel (id, connectionId and timestamp filled in
    /// from the frame where the message left them out).
    Message {
        channel: ChannelName,
        message: Message,
    },
    /// The result of a [`Connection::publish`].
    Published {
        id: PublishId,
        outcome: PublishOutcome,
    },
    /// The token was rejected, expired, or the server asked for re-authentication: call
    /// [`Connection::set_token`] with a fresh one.
    TokenRequired { reason: Option<ErrorInfo> },
}

/// One thing for the driver to do.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Transmit(Transmit),
    Event(Event),
}

/// Why a command was refused.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("connection is {0}: cannot do that now")]
    ConnectionState(ConnectionState),
    #[error("channel `{channel}` is {state}: cannot publish")]
    ChannelState {
        channel: ChannelName,
        state: ChannelState,
    },
    #[error("message of {size} bytes exceeds the connection's maxMessageSize of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("nothing to publish")]
    Empty,
}

impl CommandError {
    /// The Ably error an ably-js client would report for the same refusal.
    pub fn to_error_info(&self) -> ErrorInfo {
        let code = match self {
            Self::ConnectionState(_) => 80000,
            Self::ChannelState { .. } => 90001,
            Self::TooLarge { .. } => 40009,
            Self::Empty => 40003,
        };
        let status = if code == 40009 { 413 } else { 400 };
        ErrorInfo::new(code, status, self.to_string())
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Transport {
    /// No socket.
    None,
    /// Socket requested; CONNECTED not yet received.
    Pending,
    /// CONNECTED received on the current socket.
    Active,
}

/// One Ably realtime connection with its channels, as a state machine.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: ConnectionState,
    reason: Option<ErrorInfo>,
    transport: Transport,
    connection_id: Option<ConnectionId>,
    connection_key: Option<ConnectionKey>,
    max_message_size: usize,
    max_idle: Option<Duration>,
    state_ttl: Duration,
    resume_attempted: bool,
    awaiting_token: bool,
    disconnected_since: Option<Instant>,
    retry_count: u32,
    rng: u64,
    next_publish: u64,
    queue: PublishQueue,
    channels: BTreeMap<ChannelName, Channel>,
    timers: TimerTable,
    outputs: VecDeque<Output>,
}

impl Connection {
    /// A connection in the `initialized` state; nothing happens until [`Self::connect`].
    pub fn new(config: Config) -> Self {
        let rng = config.jitter_seed | 1;
        let state_ttl = config.connection_state_ttl;
        Self {
            config,
            state: ConnectionState::Initialized,
            reason: None,
            transport: Transport::None,
            connection_id: None,
            connection_key: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_idle: None,
            state_ttl,
            resume_attempted: false,
            awaiting_token: false,
            disconnected_since: None,
            retry_count: 0,
            rng,
            next_publish: 0,
            queue: PublishQueue::default(),
            channels: BTreeMap::new(),
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
        }
    }

    // ----- commands -------------------------------------------------------------------

    /// Opens a transport now (from `initialized`, `disconnected`, `suspended`, `closed`
    /// or `failed`); does nothing while connecting or connected.
    pub fn connect(&mut self, now: Instant) {
        match self.state {
            ConnectionState::Connecting | ConnectionState::Connected | ConnectionState::Closing => {
            }
            ConnectionState::Closed | ConnectionState::Failed => {
                self.connection_id = None;
                self.connection_key = None;
                self.disconnected_since = None;
                self.retry_count = 0;
                self.open_transport(now);
            }
            _ => self.open_transport(now),
        }
    }

    /// Closes the connection cleanly (CLOSE, then CLOSED); it cannot be resumed afterwards.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            ConnectionState::Closed | ConnectionState::Failed | ConnectionState::Closing => {}
            ConnectionState::Connected if self.transport == Transport::Active => {
                self.send(ProtocolMessage::new(Action::CLOSE));
                self.timers.stop_all();
                self.timers
                    .set(Timer::Close, now + self.config.realtime_request_timeout);
                self.set_state(ConnectionState::Closing, None);
            }
            _ => self.finish_closed(),
        }
    }

    /// Attaches a channel (again, after a detach). Rewind applies to the first attach
    /// only: later re-attaches carry the channel serial for continuity instead.
    pub fn attach(
        &mut self,
        now: Instant,
        channel: ChannelName,
        options: AttachOptions,
    ) -> Result<(), CommandError> {
        if matches!(
            self.state,
            ConnectionState::Closing | ConnectionState::Closed | ConnectionState::Failed
        ) {
            return Err(CommandError::ConnectionState(self.state));
        }
        let active = self.transport == Transport::Active;
        let timeout = self.config.realtime_request_timeout;
        let ch = self
            .channels
            .entry(channel.clone())
            .or_insert_with(|| Channel::new(channel.clone(), options.clone()));
        if matches!(ch.state, ChannelState::Attaching | ChannelState::Attached) {
            return Ok(());
        }
        ch.options = options;
        let frame = ch.attach_frame();
        ch.deadline = active.then(|| now + timeout);
        if active {
            self.send(frame);
        }
        self.set_channel_state(&channel, ChannelState::Attaching, false, false, None);
        Ok(())
    }

    /// Detaches a channel; its continuity serial is forgotten.
    pub fn detach(&mut self, now: Instant, channel: &ChannelName) {
        let active = self.transport == Transport::Active;
        let timeout = self.config.realtime_request_timeout;
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        match ch.state {
            ChannelState::Attached | ChannelState::Attaching if active => {
                let frame = ch.detach_frame();
                ch.deadline = Some(now + timeout);
                self.send(frame);
                self.set_channel_state(channel, ChannelState::Detaching, false, false, None);
            }
            ChannelState::Detached | ChannelState::Detaching => {}
            _ => {
                ch.deadline = None;
                ch.channel_serial = None;
                self.set_channel_state(channel, ChannelState::Detached, false, false, None);
            }
        }
    }

    /// Publishes messages on a channel as one frame (the channel need not be attached).
    ///
    /// Every message without an `id` gets one (`<id_prefix>-<n>:<index>`), so a frame
    /// resent after a cut is applied once. Queued while connecting or disconnected;
    /// refused while suspended, closing, closed or failed. The result arrives as
    /// [`Event::Published`] with the same id.
    pub fn publish(
        &mut self,
        _now: Instant,
        channel: &ChannelName,
        mut messages: Vec<Message>,
    ) -> Result<PublishId, CommandError> {
        if matches!(
            self.state,
            ConnectionState::Suspended
                | ConnectionState::Closing
                | ConnectionState::Closed
                | ConnectionState::Failed
        ) {
            return Err(CommandError::ConnectionState(self.state));
        }
        if let Some(ch) = self.channels.get(channel) {
            if matches!(ch.state, ChannelState::Failed | ChannelState::Suspended) {
                return Err(CommandError::ChannelState {
                    channel: channel.clone(),
                    state: ch.state,
                });
            }
        }
        if messages.is_empty() {
            return Err(CommandError::Empty);
        }
        let size: usize = messages.iter().map(Message::wire_size).sum();
        if size > self.max_message_size {
            return Err(CommandError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        let id = PublishId(self.next_publish);
        self.next_publish += 1;
        for (index, message) in messages.iter_mut().enumerate() {
            if message.id.is_none() {
                message.id = Some(MessageId::new(format!(
                    "{}-{}:{index}",
                    self.config.id_prefix, id.0
                )));
            }
        }
        self.queue.push(id, channel.clone(), messages);
        if self.transport == Transport::Active {
            self.flush_queue();
        }
        Ok(id)
    }

    /// Supplies a fresh token: re-authenticates a live connection in place (AUTH), or
    /// reconnects one that stopped for want of a token. Switches key auth to token auth.
    pub fn set_token(&mut self, now: Instant, token: String) {
        self.config.auth = Auth::Token(token.clone());
        if self.transport == Transport::Active && self.state == ConnectionState::Connected {
            self.send(ProtocolMessage {
                auth: Some(AuthDetails {
                    access_token: token,
                }),
                ..ProtocolMessage::new(Action::AUTH)
            });
        } else if self.awaiting_token {
            self.awaiting_token = false;
            self.open_transport(now);
        }
    }

    // ----- inputs ---------------------------------------------------------------------

    /// A text frame arrived. A malformed one is reported and otherwise ignored: the
    /// connection keeps its state and the frame counts as activity.
    pub fn handle_text(&mut self, now: Instant, text: &str) -> Result<(), CodecError> {
        if self.transport == Transport::None {
            return Ok(());
        }
        match codec::decode(text) {
            Ok(frame) => {
                self.handle_frame(now, frame);
                Ok(())
            }
            Err(err) => {
                self.touch(now);
                Err(err)
            }
        }
    }

    /// A decoded frame arrived on the current transport.
    pub fn handle_frame(&mut self, now: Instant, frame: ProtocolMessage) {
        if self.transport == Transport::None {
            return;
        }
        self.touch(now);
        match frame.action {
            Action::CONNECTED => self.on_connected(now, frame),
            Action::DISCONNECTED => self.on_disconnected(now, frame.error),
            Action::ERROR if frame.channel.is_some() => self.on_channel_error(frame),
            Action::ERROR => self.on_error(now, frame.error),
            Action::CLOSED => self.finish_closed(),
            Action::ACK | Action::NACK => self.on_ack(now, frame),
            Action::ATTACHED => self.on_attached(frame),
            Action::DETACHED => self.on_detached(now, frame),
            Action::MESSAGE => self.on_message(frame),
            Action::AUTH => self.emit(Event::TokenRequired { reason: None }),
            _ => {}
        }
    }

    /// The transport closed (by the peer or the network).
    pub fn handle_transport_closed(&mut self, now: Instant, reason: Option<String>) {
        if self.transport == Transport::None {
            return;
        }
        let message = reason.unwrap_or_else(|| "connection to the server was lost".to_owned());
        self.lose_transport(now, ErrorInfo::new(80003, 400, message), false);
    }

    /// The deadline from [`Self::poll_timeout`] passed (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.expired(now) {
            match timer {
                Timer::Connect => {
                    let err = ErrorInfo::new(80014, 408, "timed out waiting for CONNECTED");
                    self.lose_transport(now, err, true);
                }
                Timer::Idle => {
                    let ms =
                        self.max_idle.unwrap_or_default() + self.config.realtime_request_timeout;
                    let err = ErrorInfo::new(
                        80003,
                        400,
                        format!("no activity seen from realtime in {}ms; assuming the connection dropped", ms.as_millis()),
                    );
                    self.send(ProtocolMessage::new(Action::DISCONNECT));
                    self.lose_transport(now, err, true);
                }
                Timer::Reconnect => self.open_transport(now),
                Timer::Close => self.finish_closed(),
            }
        }
        let grace = self.config.realtime_request_timeout;
        for (id, outcome) in self.queue.expire_skipped(now, grace) {
            self.emit(Event::Published { id, outcome });
        }
        self.channel_timeouts(now);
    }

    // ----- outputs and getters ---------------------------------------------------------

    /// The next thing for the driver to do; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let channels = self.channels.values().filter_map(|c| c.deadline).min();
        let skipped = self
            .queue
            .skipped_deadline(self.config.realtime_request_timeout);
        [self.timers.next(), channels, skipped]
            .into_iter()
            .flatten()
            .min()
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Why the connection last changed state, if it was an error.
    pub fn error_reason(&self) -> Option<&ErrorInfo> {
        self.reason.as_ref()
    }

    /// The server's id for the current connection.
    pub fn connection_id(&self) -> Option<&ConnectionId> {
        self.connection_id.as_ref()
    }

    /// The key a reconnect resumes with.
    pub fn connection_key(&self) -> Option<&ConnectionKey> {
        self.connection_key.as_ref()
    }

    /// The largest message the server accepts on this connection.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// A channel's state (`initialized` for channels never attached).
    pub fn channel_state(&self, channel: &ChannelName) -> ChannelState {
        self.channels
            .get(channel)
            .map_or(ChannelState::Initialized, |c| c.state)
    }

    /// The channel position of the last non-resumed attach (for history `untilAttach`).
    pub fn attach_serial(&self, channel: &ChannelName) -> Option<&ChannelSerial> {
        self.channels.get(channel)?.attach_serial.as_ref()
    }

    /// Whether publishes are still waiting to be sent or acknowledged.
    pub fn has_pending_publishes(&self) -> bool {
        !self.queue.is_empty()
    }

    // ----- frame handlers ------------------------------------------------------------

    fn on_connected(&mut self, now: Instant, frame: ProtocolMessage) {
        let details = frame.connection_details.unwrap_or_default();
        if let Some(key) = details.connection_key.clone().or(frame.connection_key) {
            self.connection_key = Some(key);
        }
        self.max_message_size = details
            .max_message_size
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        self.max_idle = details
            .max_idle_interval
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        self.state_ttl = details
            .connection_state_ttl
            .map_or(self.config.connection_state_ttl, Duration::from_millis);
        if self.transport == Transport::Active && self.state == ConnectionState::Connected {
            // A second CONNECTED on a live transport: new details after re-auth.
            self.connection_id = frame.connection_id.or(self.connection_id.take());
            self.arm_idle(now);
            self.set_state(ConnectionState::Connected, frame.error);
            return;
        }
        let resumed = self.resume_attempted
            && frame.connection_id.is_some()
            && frame.connection_id == self.connection_id;
        if !resumed {
            if self.resume_attempted {
                self.emit(Event::ResumeFailed {
                    reason: frame.error.clone(),
                });
            }
            self.queue.reset_serials();
        }
        self.connection_id = frame.connection_id;
        self.transport = Transport::Active;
        self.resume_attempted = false;
        self.retry_count = 0;
        self.disconnected_since = None;
        self.timers.stop(Timer::Connect);
        self.timers.stop(Timer::Reconnect);
        self.arm_idle(now);
        self.set_state(ConnectionState::Connected, frame.error);
        // As ably-js does: resend pending publishes first, then re-attach.
        self.flush_queue();
        self.reattach_all(now);
    }

    fn on_disconnected(&mut self, now: Instant, error: Option<ErrorInfo>) {
        let err = error.unwrap_or_else(|| ErrorInfo::new(80003, 400, "server disconnected"));
        if err.is_token_error() {
            self.token_rejected(now, err);
        } else {
            self.lose_transport(now, err, true);
        }
    }

    fn on_error(&mut self, now: Instant, error: Option<ErrorInfo>) {
        let err = error.unwrap_or_else(|| ErrorInfo::new(50000, 500, "server error"));
        if err.is_token_error() {
            self.token_rejected(now, err);
        } else if (90000..91000).contains(&err.code) {
            self.restart_fresh(now, err);
        } else {
            self.fail(err);
        }
    }

    /// A channel-class error sent for the whole connection (Sockudo's 90003, "outbound
    /// queue overflow", after replaying a long backlog on re-attach) is not about
    /// credentials and need not end the connection. Start a new one instead: no resume,
    /// and channels re-attach without their position, so the backlog is not replayed
    /// again; they report `resumed == false`, telling the application that continuity was
    /// lost. Pending publishes are resent with new msgSerials and the same ids.
    fn restart_fresh(&mut self, now: Instant, err: ErrorInfo) {
        self.connection_key = None;
        for ch in self.channels.values_mut() {
            ch.channel_serial = None;
        }
        self.lose_transport(now, err, true);
    }

    fn on_channel_error(&mut self, frame: ProtocolMessage) {
        let Some(name) = frame.channel else { return };
        let err = frame
            .error
            .unwrap_or_else(|| ErrorInfo::new(90000, 400, "channel error"));
        let Some(ch) = self.channels.get_mut(&name) else {
            return;
        };
        ch.deadline = None;
        for (id, outcome) in self.queue.fail_channel(&name, &err) {
            self.emit(Event::Published { id, outcome });
        }
        self.set_channel_state(&name, ChannelState::Failed, false, false, Some(err));
    }

    fn on_ack(&mut self, now: Instant, frame: ProtocolMessage) {
        let Some(first) = frame.msg_serial else {
            return;
        };
        let error = match frame.action {
            Action::NACK => Some(
                frame
                    .error
                    .unwrap_or_else(|| ErrorInfo::new(50001, 500, "message rejected (NACK)")),
            ),
            _ => None,
        };
        for (id, outcome) in
            self.queue
                .complete(now, first, frame.count.unwrap_or(1), frame.res, error)
        {
            self.emit(Event::Published { id, outcome });
        }
    }

    fn on_attached(&mut self, frame: ProtocolMessage) {
        let Some(name) = frame.channel.clone() else {
            return;
        };
        let resumed = frame.has_flag(Flags::RESUMED);
        let has_backlog = frame.has_flag(Flags::HAS_BACKLOG);
        let Some(ch) = self.channels.get_mut(&name) else {
            return;
        };
        match ch.state {
            ChannelState::Attaching | ChannelState::Suspended | ChannelState::Attached => {
                let was_attached = ch.state == ChannelState::Attached;
                if frame.channel_serial.is_some() {
                    ch.channel_serial = frame.channel_serial.clone();
                }
                if !resumed {
                    ch.attach_serial = frame.channel_serial;
                }
                ch.deadline = None;
                // An ATTACHED with RESUMED on an attached channel changes nothing.
                if !(was_attached && resumed) {
                    self.set_channel_state(
                        &name,
                        ChannelState::Attached,
                        resumed,
                        has_backlog,
                        frame.error,
                    );
                }
            }
            _ => {}
        }
    }

    fn on_detached(&mut self, now: Instant, frame: ProtocolMessage) {
        let Some(name) = frame.channel else { return };
        let timeout = self.config.realtime_request_timeout;
        let retry = self.config.channel_retry_timeout;
        let Some(ch) = self.channels.get_mut(&name) else {
            return;
        };
        match ch.state {
            ChannelState::Detaching => {
                ch.deadline = None;
                ch.channel_serial = None;
                self.set_channel_state(&name, ChannelState::Detached, false, false, frame.error);
            }
            ChannelState::Attached => {
                // The server detached us: re-attach at once, keeping continuity.
                let attach = ch.attach_frame();
                ch.deadline = Some(now + timeout);
                self.send(attach);
                self.set_channel_state(&name, ChannelState::Attaching, false, false, frame.error);
            }
            ChannelState::Attaching => {
                ch.deadline = Some(now + retry);
                self.set_channel_state(&name, ChannelState::Suspended, false, false, frame.error);
            }
            _ => {}
        }
    }

    fn on_message(&mut self, frame: ProtocolMessage) {
        let Some(name) = frame.channel else { return };
        let Some(ch) = self.channels.get_mut(&name) else {
            return;
        };
        if ch.state != ChannelState::Attached {
            // As ably-js does: messages for channels not attached are not delivered.
            return;
        }
        if frame.channel_serial.is_some() {
            ch.channel_serial = frame.channel_serial;
        }
        for (index, mut message) in frame.messages.unwrap_or_default().into_iter().enumerate() {
            if message.id.is_none() {
                message.id = frame
                    .id
                    .as_ref()
                    .map(|id| MessageId::new(format!("{id}:{index}")));
            }
            if message.connection_id.is_none() {
                message.connection_id = frame.connection_id.clone();
            }
            if message.timestamp.is_none() {
                message.timestamp = frame.timestamp;
            }
            if message.action() == MessageAction::CREATE && message.version_serial().is_none() {
                let version = message.version.get_or_insert_with(MessageVersion::default);
                version.serial = message.serial.clone();
                version.timestamp = version.timestamp.or(message.timestamp);
            }
            self.emit(Event::Message {
                channel: name.clone(),
                message,
            });
        }
    }

    // ----- transitions -----------------------------------------------------------------

    fn open_transport(&mut self, now: Instant) {
        let url = self
            .config
            .connect_url(self.connection_key.as_ref().map(ConnectionKey::as_str));
        self.resume_attempted = self.connection_key.is_some();
        self.transport = Transport::Pending;
        self.timers.stop(Timer::Reconnect);
        self.timers.stop(Timer::Idle);
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        let reason = self.reason.clone();
        self.set_state(ConnectionState::Connecting, reason);
        self.outputs
            .push_back(Output::Transmit(Transmit::Open { url }));
    }

    /// The transport is gone (or we give up on it): requeue in-flight publishes and
    /// retry, immediately if we were connected, else with backoff; past the connection
    /// state TTL, suspend.
    fn lose_transport(&mut self, now: Instant, reason: ErrorInfo, close_socket: bool) {
        if close_socket {
            self.outputs.push_back(Output::Transmit(Transmit::Close));
        }
        self.transport = Transport::None;
        self.timers.stop(Timer::Connect);
        self.timers.stop(Timer::Idle);
        self.queue.requeue_in_flight();
        if self.state == ConnectionState::Closing {
            self.finish_closed();
            return;
        }
        let was_connected = self.state == ConnectionState::Connected;
        let since = *self.disconnected_since.get_or_insert(now);
        if now.saturating_since(since) >= self.state_ttl {
            self.suspend(now, reason);
            return;
        }
        self.set_state(ConnectionState::Disconnected, Some(reason));
        if was_connected {
            self.open_transport(now);
        } else {
            self.retry_count += 1;
            let delay = self.backoff(self.retry_count);
            self.timers.set(Timer::Reconnect, now + delay);
        }
    }

    fn suspend(&mut self, now: Instant, reason: ErrorInfo) {
        let fail = ErrorInfo::new(
            80002,
            400,
            format!("connection suspended: {}", reason.message),
        );
        for (id, outcome) in self.queue.fail_all(&fail) {
            self.emit(Event::Published { id, outcome });
        }
        let names: Vec<ChannelName> = self
            .channels
            .values()
            .filter(|c| c.wants_attach())
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            if let Some(ch) = self.channels.get_mut(&name) {
                ch.deadline = None;
            }
            self.set_channel_state(
                &name,
                ChannelState::Suspended,
                false,
                false,
                Some(reason.clone()),
            );
        }
        self.set_state(ConnectionState::Suspended, Some(reason));
        self.timers
            .set(Timer::Reconnect, now + self.config.suspended_retry_timeout);
    }

    fn token_rejected(&mut self, now: Instant, err: ErrorInfo) {
        if matches!(self.config.auth, Auth::Key(_)) {
            self.fail(err);
            return;
        }
        self.outputs.push_back(Output::Transmit(Transmit::Close));
        self.transport = Transport::None;
        self.timers.stop(Timer::Connect);
        self.timers.stop(Timer::Idle);
        self.timers.stop(Timer::Reconnect);
        self.queue.requeue_in_flight();
        self.disconnected_since.get_or_insert(now);
        self.awaiting_token = true;
        self.set_state(ConnectionState::Disconnected, Some(err.clone()));
        self.emit(Event::TokenRequired { reason: Some(err) });
    }

    fn fail(&mut self, err: ErrorInfo) {
        if self.transport != Transport::None {
            self.outputs.push_back(Output::Transmit(Transmit::Close));
        }
        self.transport = Transport::None;
        self.timers.stop_all();
        self.connection_key = None;
        for (id, outcome) in self.queue.fail_all(&err) {
            self.emit(Event::Published { id, outcome });
        }
        let names: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for name in names {
            if let Some(ch) = self.channels.get_mut(&name) {
                ch.deadline = None;
                if ch.state == ChannelState::Detached || ch.state == ChannelState::Initialized {
                    continue;
                }
            }
            self.set_channel_state(&name, ChannelState::Failed, false, false, Some(err.clone()));
        }
        self.set_state(ConnectionState::Failed, Some(err));
    }

    fn finish_closed(&mut self) {
        if self.transport != Transport::None {
            self.outputs.push_back(Output::Transmit(Transmit::Close));
        }
        self.transport = Transport::None;
        self.timers.stop_all();
        self.connection_key = None;
        self.connection_id = None;
        let closed = ErrorInfo::new(80017, 400, "connection closed");
        for (id, outcome) in self.queue.fail_all(&closed) {
            self.emit(Event::Published { id, outcome });
        }
        let names: Vec<ChannelName> = self
            .channels
            .values()
            .filter(|c| c.state != ChannelState::Initialized)
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            if let Some(ch) = self.channels.get_mut(&name) {
                ch.deadline = None;
                ch.channel_serial = None;
            }
            self.set_channel_state(&name, ChannelState::Detached, false, false, None);
        }
        self.set_state(ConnectionState::Closed, None);
    }

    fn reattach_all(&mut self, now: Instant) {
        let timeout = self.config.realtime_request_timeout;
        let names: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for name in names {
            let Some(ch) = self.channels.get_mut(&name) else {
                continue;
            };
            if ch.wants_attach() {
                let frame = ch.attach_frame();
                ch.deadline = Some(now + timeout);
                self.send(frame);
                self.set_channel_state(&name, ChannelState::Attaching, false, false, None);
            } else if ch.state == ChannelState::Detaching {
                let frame = ch.detach_frame();
                ch.deadline = Some(now + timeout);
                self.send(frame);
            }
        }
    }

    fn channel_timeouts(&mut self, now: Instant) {
        let due: Vec<ChannelName> = self
            .channels
            .values()
            .filter(|c| c.deadline.is_some_and(|d| d <= now))
            .map(|c| c.name.clone())
            .collect();
        let active = self.transport == Transport::Active;
        let timeout = self.config.realtime_request_timeout;
        let retry = self.config.channel_retry_timeout;
        for name in due {
            let Some(ch) = self.channels.get_mut(&name) else {
                continue;
            };
            match ch.state {
                ChannelState::Attaching => {
                    ch.deadline = Some(now + retry);
                    let err = ErrorInfo::new(90007, 408, "timed out waiting for ATTACHED");
                    self.set_channel_state(&name, ChannelState::Suspended, false, false, Some(err));
                }
                ChannelState::Suspended if active => {
                    let frame = ch.attach_frame();
                    ch.deadline = Some(now + timeout);
                    self.send(frame);
                    self.set_channel_state(&name, ChannelState::Attaching, false, false, None);
                }
                ChannelState::Detaching => {
                    ch.deadline = None;
                    ch.channel_serial = None;
                    self.set_channel_state(&name, ChannelState::Detached, false, false, None);
                }
                _ => ch.deadline = None,
            }
        }
    }

    // ----- helpers -----------------------------------------------------------------------

    fn touch(&mut self, now: Instant) {
        if self.transport == Transport::Active {
            self.arm_idle(now);
        }
    }

    fn arm_idle(&mut self, now: Instant) {
        match self.max_idle {
            Some(idle) => self.timers.set(
                Timer::Idle,
                now + idle + self.config.realtime_request_timeout,
            ),
            None => self.timers.stop(Timer::Idle),
        }
    }

    fn flush_queue(&mut self) {
        for frame in self.queue.send_all() {
            self.send(frame);
        }
    }

    fn send(&mut self, frame: ProtocolMessage) {
        self.outputs
            .push_back(Output::Transmit(Transmit::Frame(frame)));
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn set_state(&mut self, current: ConnectionState, reason: Option<ErrorInfo>) {
        let previous = self.state;
        if previous == current && current != ConnectionState::Connected {
            return;
        }
        self.state = current;
        self.reason = reason.clone();
        self.emit(Event::StateChanged {
            previous,
            current,
            reason,
        });
    }

    fn set_channel_state(
        &mut self,
        name: &ChannelName,
        current: ChannelState,
        resumed: bool,
        has_backlog: bool,
        reason: Option<ErrorInfo>,
    ) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        let previous = ch.state;
        if previous == current && current != ChannelState::Attached {
            return;
        }
        ch.state = current;
        ch.reason = reason.clone();
        self.emit(Event::ChannelStateChanged {
            channel: name.clone(),
            previous,
            current,
            resumed,
            has_backlog,
            reason,
        });
    }

    /// Ably's retry delay: the base timeout times min((n + 2) / 3, 2), minus up to 20 % jitter.
    fn backoff(&mut self, attempt: u32) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 1.0 - (self.rng % 1000) as f64 / 5000.0;
        let factor = (f64::from(attempt + 2) / 3.0).min(2.0);
        self.config
            .disconnected_retry_timeout
            .mul_f64(factor * jitter)
    }
}

#[cfg(test)]
mod tests;
