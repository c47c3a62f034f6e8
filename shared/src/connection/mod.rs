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
//!                  ▲  ▲   │  ▲  │ host unreachable:     │
//!    reconnect     │  │   │  └──┘ next fallback host    │ transport lost / idle / DISCONNECTED /
//!    (backoff)     │  │   │                             │ CLOSED not asked for / rate limit
//!                  │  │   ▼                             ▼
//!                  │  └─ disconnected ◄────────────────────(at once if it was connected,
//!                  │        │                                 after the backoff if not)
//!                  │        │ still no success after connectionStateTtl
//!                  │        ▼
//!                  └──── suspended (retry every suspended_retry_timeout, still resuming)
//!
//!  fatal ERROR (any state) ─► failed ─(revive_failed_after, if set)─► connecting
//! ```
//!
//! Policies, each following Ably's features spec (version 6.1.1, protocol 6; the items are
//! named in `spec_tests.rs`):
//!
//! - **Resume** (RTN15b, RTN14h): every reconnect resumes with the last connection key,
//!   also from `suspended`; the server decides what survives (`Event::ResumeFailed`).
//!   Channels keep their channel serial while `suspended` and forget it when `detached` or
//!   `failed` (RTL15b2); ATTACH never carries `ATTACH_RESUME` (RTL4j, deleted in 6.1).
//! - **Backoff** (RTB1): `disconnected_retry_timeout × min((n + 2) / 3, 2) × jitter(0.8–1)`.
//!   Past `connectionStateTtl` (from CONNECTED, else the config) the connection is
//!   `suspended`: queued publishes fail with 80002 and new ones are refused (RTN14e, RTN7e).
//! - **Hosts** (RTN17, REC2): every run of attempts starts on the endpoint's host; when it
//!   cannot be reached (closed before CONNECTED, connect timeout, DISCONNECTED with a 5xx),
//!   each fallback host is tried once in random order. Only the production endpoint has
//!   fallback hosts. The connectivity check of RTN17j is not made.
//! - **Tokens** (RSA4, RTN14b, RTN15h2, RTN22): the connection asks for a token with
//!   [`Event::TokenRequired`] when the token is rejected, `token_renew_margin` before it
//!   expires (when its lifetime was given), or when the server sends AUTH. The driver
//!   answers with [`Connection::set_token`] / [`Connection::set_token_with_lifetime`] or
//!   [`Connection::handle_token_failed`] within `realtime_request_timeout`. One new token
//!   per rejection: a rejected fresh token, a failed or late fetch wait out the backoff in
//!   `disconnected` (80019), then `suspended`; a live connection whose renewal fails stays
//!   connected and asks again after a backoff; a 403 fails the connection.
//! - **Errors** ([`errors::classify`]): token errors renew, rate limits (429xx) wait out
//!   the backoff, channel-class errors for the whole connection start afresh, any other
//!   ERROR fails the connection. A CLOSED not asked for reconnects like a DISCONNECTED.
//! - **Revival** (`Config::revive_failed_after`, off by default as RTN27h has it): a
//!   failed connection starts again after the delay and re-attaches every channel the
//!   application attached and did not detach.
//! - **Limits** ([`Limits`]): maxMessageSize, maxFrameSize, maxInboundRate,
//!   connectionStateTtl and maxIdleInterval from `connectionDetails` (CD2, RTN21).

mod channel;
mod config;
pub mod errors;
mod hosts;
mod io;
mod queue;
mod timer;
mod token;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

pub use channel::{AttachOptions, ChannelState};
pub use config::{
    encode_component, ApiKey, Auth, Config, ConfigError, Endpoint, PRODUCTION_ENDPOINT,
    PRODUCTION_FALLBACK_HOSTS,
};
pub use errors::ErrorClass;
pub use io::Io;
pub use queue::{PublishId, PublishOutcome};

use channel::Channel;
use errors::classify;
use hosts::Hosts;
use queue::PublishQueue;
use timer::{Timer, TimerTable};
use token::TokenState;

use crate::codec::{self, CodecError};
use crate::ids::{ChannelName, ChannelSerial, ConnectionId, ConnectionKey, MessageId};
use crate::protocol::{
    Action, AuthDetails, ErrorInfo, Flags, Message, MessageAction, MessageVersion, ProtocolMessage,
};
use crate::time::Instant;

/// Message size limit until the server announces its own (Ably's default, TO3l8).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;

/// Frame size limit until the server announces its own (Ably's default, TO3l9).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 524_288;

/// The limits in force on the connection: what the last CONNECTED's `connectionDetails`
/// said (CD2, RTN21), or the defaults before any.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Limits {
    /// The largest publish, summed over its messages (CD2c).
    pub max_message_size: usize,
    /// The largest WebSocket frame (CD2d).
    pub max_frame_size: usize,
    /// Protocol messages per second the server accepts from this client (CD2e), if said.
    pub max_inbound_rate: Option<u64>,
    /// How long the server keeps a dropped connection's state (CD2f), and how long the
    /// connection stays `disconnected` before `suspended` (RTN14e).
    pub connection_state_ttl: Duration,
    /// The longest the server stays silent (CD2h); `None` when it did not say or said 0.
    pub max_idle_interval: Option<Duration>,
}

/// Ably's defaults, before any CONNECTED (a `connectionStateTtl` of 2 min).
impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_inbound_rate: None,
            connection_state_ttl: Duration::from_secs(120),
            max_idle_interval: None,
        }
    }
}

impl Limits {
    fn defaults(config: &Config) -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_inbound_rate: None,
            connection_state_ttl: config.connection_state_ttl,
            max_idle_interval: None,
        }
    }
}

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
    /// Fetch a new token now and hand it over with [`Connection::set_token`] (or
    /// [`Connection::set_token_with_lifetime`]), or report the failure with
    /// [`Connection::handle_token_failed`]. Asked when the token was rejected (with the
    /// reason), when it is about to expire, or when the server asked for re-authentication
    /// (RTN22). The connection asks once and waits: the answer is due within
    /// `realtime_request_timeout`, and a failure is retried with backoff, never at once.
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
            Self::ConnectionState(ConnectionState::Suspended) => errors::CONNECTION_SUSPENDED,
            Self::ConnectionState(ConnectionState::Closing | ConnectionState::Closed) => {
                errors::CONNECTION_CLOSED
            }
            Self::ConnectionState(_) => errors::CONNECTION_FAILED,
            Self::ChannelState { .. } => errors::CHANNEL_INVALID_STATE,
            Self::TooLarge { .. } => errors::MESSAGE_TOO_LARGE,
            Self::Empty => errors::BAD_REQUEST,
        };
        let status = if code == errors::MESSAGE_TOO_LARGE {
            413
        } else {
            400
        };
        ErrorInfo::new(code, status, self.to_string())
    }
}

/// How a lost transport is followed up.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Loss {
    /// At once if the connection was up (RTN15a, RTN15h3), else after the backoff.
    Drop,
    /// The host could not be reached (RTN17f): try the next fallback host at once, if any.
    Unreachable,
    /// Always after the backoff (rate limits).
    BackOff,
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
    /// A [`Io::FetchToken`] is owed after the `TokenRequired` just handed out.
    fetch_owed: bool,
    config: Config,
    state: ConnectionState,
    reason: Option<ErrorInfo>,
    transport: Transport,
    connection_id: Option<ConnectionId>,
    connection_key: Option<ConnectionKey>,
    limits: Limits,
    resume_attempted: bool,
    token: TokenState,
    hosts: Hosts,
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
        let limits = Limits::defaults(&config);
        let hosts = Hosts::new(config.fallback_hosts.clone());
        Self {
            fetch_owed: false,
            config,
            state: ConnectionState::Initialized,
            reason: None,
            transport: Transport::None,
            connection_id: None,
            connection_key: None,
            limits,
            resume_attempted: false,
            token: TokenState::default(),
            hosts,
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
                self.timers.stop(Timer::Revive);
                self.start_attempts(now);
            }
            _ => self.start_attempts(now),
        }
    }

    /// Closes the connection cleanly (CLOSE, then CLOSED); it cannot be resumed afterwards.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            // A failed connection stays failed: no revival after a close.
            ConnectionState::Failed => self.timers.stop(Timer::Revive),
            ConnectionState::Closed | ConnectionState::Closing => {}
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
        ch.wanted = true;
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
        ch.wanted = false;
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
        if size > self.limits.max_message_size {
            return Err(CommandError::TooLarge {
                size,
                max: self.limits.max_message_size,
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

    /// Supplies a fresh token whose lifetime is not known (so it is renewed only when the
    /// server rejects it): see [`Self::set_token_with_lifetime`].
    pub fn set_token(&mut self, now: Instant, token: String) {
        self.accept_token(now, token, None);
    }

    /// Supplies a fresh token valid for `lifetime` from now (`expires - issued` of its
    /// `TokenDetails`, both server times, so the local clock's error does not matter).
    /// Re-authenticates a live connection in place (AUTH, RTC8a), or connects one that
    /// stopped for want of a token (RTC8c). The connection asks for the next token
    /// `token_renew_margin` before this one expires. Switches key auth to token auth.
    pub fn set_token_with_lifetime(&mut self, now: Instant, token: String, lifetime: Duration) {
        self.accept_token(now, token, Some(lifetime));
    }

    /// The token in use (the one in the config) is valid for `lifetime` from now: ask for
    /// the next one `token_renew_margin` before it expires.
    pub fn set_token_lifetime(&mut self, now: Instant, lifetime: Duration) {
        if matches!(self.config.auth, Auth::Token(_)) {
            let after = token::renew_after(lifetime, self.config.token_renew_margin);
            self.timers.set(Timer::Renew, now + after);
        }
    }

    /// The driver could not get the token asked for by [`Event::TokenRequired`]. With a
    /// 403 status the connection fails (RSA4d); otherwise a live connection stays up and
    /// asks again after a backoff (RSA4c3), and one that was connecting goes
    /// `disconnected` and tries again after a backoff, `suspended` past the state TTL
    /// (RSA4c2, RTN14b). The reported error is 80019 with `cause`'s message (RSA4c1).
    pub fn handle_token_failed(&mut self, now: Instant, cause: ErrorInfo) {
        self.token_failed(now, cause);
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
            Action::CLOSED if self.state == ConnectionState::Closing => self.finish_closed(),
            Action::CLOSED => {
                // Not asked for: the server ended the connection. Reconnect as after a
                // DISCONNECTED (RTN15h3), resuming; the server decides what survives.
                let err = frame.error.unwrap_or_else(|| {
                    ErrorInfo::new(
                        errors::DISCONNECTED,
                        400,
                        "the server closed the connection",
                    )
                });
                self.lose_transport(now, err, true, Loss::Drop);
            }
            Action::ACK | Action::NACK => self.on_ack(now, frame),
            Action::ATTACHED => self.on_attached(frame),
            Action::DETACHED => self.on_detached(now, frame),
            Action::MESSAGE => self.on_message(frame),
            Action::AUTH => self.request_token(now, None),
            _ => {}
        }
    }

    /// The transport closed (by the peer or the network).
    pub fn handle_transport_closed(&mut self, now: Instant, reason: Option<String>) {
        if self.transport == Transport::None {
            return;
        }
        let message = reason.unwrap_or_else(|| "connection to the server was lost".to_owned());
        let loss = if self.transport == Transport::Pending {
            Loss::Unreachable
        } else {
            Loss::Drop
        };
        self.lose_transport(
            now,
            ErrorInfo::new(errors::DISCONNECTED, 400, message),
            false,
            loss,
        );
    }

    /// The deadline from [`Self::poll_timeout`] passed (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.expired(now) {
            match timer {
                Timer::Connect => {
                    let err = ErrorInfo::new(
                        errors::CONNECTION_TIMED_OUT,
                        408,
                        "timed out waiting for CONNECTED",
                    );
                    self.lose_transport(now, err, true, Loss::Unreachable);
                }
                Timer::Idle => {
                    let ms = self.limits.max_idle_interval.unwrap_or_default()
                        + self.config.realtime_request_timeout;
                    let err = ErrorInfo::new(
                        errors::DISCONNECTED,
                        400,
                        format!("no activity seen from realtime in {}ms; assuming the connection dropped", ms.as_millis()),
                    );
                    self.send(ProtocolMessage::new(Action::DISCONNECT));
                    self.lose_transport(now, err, true, Loss::Drop);
                }
                Timer::Reconnect => self.start_attempts(now),
                Timer::Close => self.finish_closed(),
                Timer::TokenFetch => {
                    let cause = ErrorInfo::new(
                        errors::TOKEN_REQUEST_FAILED,
                        401,
                        "no token within realtimeRequestTimeout",
                    );
                    self.token_failed(now, cause);
                }
                Timer::Renew => self.renew_token(now),
                Timer::Revive => self.revive(now),
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
        self.limits.max_message_size
    }

    /// The limits the server announced for this connection (or the defaults).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The fallback host the current or last transport went to; `None` for the
    /// endpoint's own host. REST requests should prefer the same host (RTN17e).
    pub fn current_host(&self) -> Option<&str> {
        self.hosts.current()
    }

    /// Whether a token request is out ([`Event::TokenRequired`] not yet answered).
    pub fn is_awaiting_token(&self) -> bool {
        self.token.fetching
    }

    /// A channel's state (`initialized` for channels never attached).
    pub fn channel_state(&self, channel: &ChannelName) -> ChannelState {
        self.channels
            .get(channel)
            .map_or(ChannelState::Initialized, |c| c.state)
    }

    /// The channels that refuse publishes now, SUSPENDED or FAILED (RTL6c4), in name order.
    pub fn blocked_channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels
            .values()
            .filter(|c| matches!(c.state, ChannelState::Failed | ChannelState::Suspended))
            .map(|c| &c.name)
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
        let size = |n: Option<u64>, default: usize| {
            n.and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .unwrap_or(default)
        };
        self.limits = Limits {
            max_message_size: size(details.max_message_size, DEFAULT_MAX_MESSAGE_SIZE),
            max_frame_size: size(details.max_frame_size, DEFAULT_MAX_FRAME_SIZE),
            max_inbound_rate: details.max_inbound_rate.filter(|&n| n > 0),
            connection_state_ttl: details
                .connection_state_ttl
                .map_or(self.config.connection_state_ttl, Duration::from_millis),
            max_idle_interval: details
                .max_idle_interval
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
        };
        self.token.fresh = false;
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

    /// DISCONNECTED: a token error renews the token (RTN15h2), a rate limit waits out the
    /// backoff, a 5xx status while connecting tries the next host (RTN17f1), anything else
    /// reconnects at once, resuming (RTN15h3).
    fn on_disconnected(&mut self, now: Instant, error: Option<ErrorInfo>) {
        let err = error
            .unwrap_or_else(|| ErrorInfo::new(errors::DISCONNECTED, 400, "server disconnected"));
        match classify(&err) {
            ErrorClass::Token => self.token_rejected(now, err),
            ErrorClass::RateLimited => self.lose_transport(now, err, true, Loss::BackOff),
            _ if self.transport == Transport::Pending && errors::wants_fallback(&err) => {
                self.lose_transport(now, err, true, Loss::Unreachable);
            }
            _ => self.lose_transport(now, err, true, Loss::Drop),
        }
    }

    /// ERROR for the whole connection: a token error renews the token (RTN14b, RTN15c5),
    /// a rate limit waits out the backoff, a channel-class error starts afresh; anything
    /// else fails the connection (RTN14g, RTN15j).
    fn on_error(&mut self, now: Instant, error: Option<ErrorInfo>) {
        let err =
            error.unwrap_or_else(|| ErrorInfo::new(errors::INTERNAL_ERROR, 500, "server error"));
        match classify(&err) {
            ErrorClass::Token => self.token_rejected(now, err),
            ErrorClass::RateLimited => self.lose_transport(now, err, true, Loss::BackOff),
            ErrorClass::Channel => self.restart_fresh(now, err),
            ErrorClass::Fatal => self.fail(now, err),
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
        self.lose_transport(now, err, true, Loss::Drop);
    }

    fn on_channel_error(&mut self, frame: ProtocolMessage) {
        let Some(name) = frame.channel else { return };
        let err = frame.error.unwrap_or_else(|| {
            ErrorInfo::new(errors::CHANNEL_OPERATION_FAILED, 400, "channel error")
        });
        let Some(ch) = self.channels.get_mut(&name) else {
            return;
        };
        ch.deadline = None;
        // RTL15b2: a failed channel forgets its position.
        ch.channel_serial = None;
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
            Action::NACK => Some(frame.error.unwrap_or_else(|| {
                ErrorInfo::new(errors::MESSAGE_REJECTED, 500, "message rejected (NACK)")
            })),
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

    /// Starts a run of connection attempts on the endpoint's own host (RTN17i).
    fn start_attempts(&mut self, now: Instant) {
        let mut rng = self.rng;
        self.hosts.restart(|| xorshift(&mut rng));
        self.rng = rng;
        self.open_transport(now);
    }

    /// Opens a transport to the current host, resuming when there is a key (RTN15b,
    /// RTN14h); first asks for a token if the one in hand is stale (RTN27b: `connecting`
    /// covers getting a token).
    fn open_transport(&mut self, now: Instant) {
        self.timers.stop(Timer::Reconnect);
        self.timers.stop(Timer::Idle);
        let reason = self.reason.clone();
        if self.token.stale && matches!(self.config.auth, Auth::Token(_)) {
            self.transport = Transport::None;
            self.set_state(ConnectionState::Connecting, reason.clone());
            self.request_token(now, reason);
            return;
        }
        let url = self.config.connect_url_via(
            self.hosts.current(),
            self.connection_key.as_ref().map(ConnectionKey::as_str),
        );
        self.resume_attempted = self.connection_key.is_some();
        self.transport = Transport::Pending;
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        self.set_state(ConnectionState::Connecting, reason);
        self.outputs
            .push_back(Output::Transmit(Transmit::Open { url }));
    }

    /// The transport is gone (or we give up on it): requeue in-flight publishes, then
    /// try the next fallback host, reconnect at once, or wait out the backoff, as `loss`
    /// says; past the connection state TTL, suspend.
    fn lose_transport(&mut self, now: Instant, reason: ErrorInfo, close_socket: bool, loss: Loss) {
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
        if now.saturating_since(since) >= self.limits.connection_state_ttl {
            self.suspend(now, reason);
            return;
        }
        if loss == Loss::Unreachable && self.hosts.advance() {
            // RTN17j: straight on to the next fallback host, still `connecting`.
            self.reason = Some(reason);
            self.open_transport(now);
            return;
        }
        self.set_state(ConnectionState::Disconnected, Some(reason));
        if was_connected && loss != Loss::BackOff {
            self.start_attempts(now);
        } else {
            self.retry_later(now);
        }
    }

    /// Schedules the next run of attempts after the backoff (RTN14d, RTB1).
    fn retry_later(&mut self, now: Instant) {
        self.retry_count += 1;
        let delay = self.backoff(self.config.disconnected_retry_timeout, self.retry_count);
        self.timers.set(Timer::Reconnect, now + delay);
    }

    /// Like [`Self::lose_transport`] when no transport is up (a token could not be had):
    /// `disconnected` with backoff, or `suspended` past the state TTL.
    fn disconnect_for_now(&mut self, now: Instant, reason: ErrorInfo) {
        let since = *self.disconnected_since.get_or_insert(now);
        if now.saturating_since(since) >= self.limits.connection_state_ttl {
            self.suspend(now, reason);
            return;
        }
        self.set_state(ConnectionState::Disconnected, Some(reason));
        self.retry_later(now);
    }

    fn suspend(&mut self, now: Instant, reason: ErrorInfo) {
        let fail = ErrorInfo::new(
            errors::CONNECTION_SUSPENDED,
            400,
            format!("connection suspended: {}", reason.message),
        );
        // RTN7e: publishes not yet acknowledged fail.
        for (id, outcome) in self.queue.fail_all(&fail) {
            self.emit(Event::Published { id, outcome });
        }
        // RTL3c; the channel serial is kept (RTL15b2) and the key too (RTN9d), so the
        // next attempt still resumes (RTN14h).
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

    /// The server refused the token (RTN14b, RTN15h). Without a way to renew it the
    /// connection fails (RSA4a2); otherwise the first refusal asks for a new token at
    /// once, and a refusal of that new token waits out the backoff (RSA4b's single
    /// attempt), so a bad token source never makes a tight loop.
    fn token_rejected(&mut self, now: Instant, err: ErrorInfo) {
        if matches!(self.config.auth, Auth::Key(_)) {
            self.fail(now, err);
            return;
        }
        if !self.config.token_renewable {
            let err = ErrorInfo::new(
                errors::TOKEN_RENEWAL_NOT_CONFIGURED,
                401,
                format!("token rejected and no way to renew it: {}", err.message),
            );
            self.fail(now, err);
            return;
        }
        if self.transport != Transport::None {
            self.outputs.push_back(Output::Transmit(Transmit::Close));
        }
        self.transport = Transport::None;
        self.timers.stop(Timer::Connect);
        self.timers.stop(Timer::Idle);
        self.timers.stop(Timer::Reconnect);
        self.queue.requeue_in_flight();
        self.disconnected_since.get_or_insert(now);
        self.token.stale = true;
        if std::mem::take(&mut self.token.fresh) {
            self.disconnect_for_now(now, err);
        } else {
            // RTN15h2: straight to `connecting`, getting a token, then resuming.
            self.set_state(ConnectionState::Connecting, Some(err.clone()));
            self.request_token(now, Some(err));
        }
    }

    /// Asks the driver for a token, once: with a request already out, nothing more.
    fn request_token(&mut self, now: Instant, reason: Option<ErrorInfo>) {
        // Key auth has nobody to ask (a server AUTH is ignored); nor has a token that
        // cannot be renewed.
        if self.token.fetching
            || !self.config.token_renewable
            || !matches!(self.config.auth, Auth::Token(_))
        {
            return;
        }
        self.token.fetching = true;
        self.timers.set(
            Timer::TokenFetch,
            now + self.config.realtime_request_timeout,
        );
        self.emit(Event::TokenRequired { reason });
    }

    fn accept_token(&mut self, now: Instant, token: String, lifetime: Option<Duration>) {
        self.config.auth = Auth::Token(token.clone());
        self.token.fetching = false;
        self.timers.stop(Timer::TokenFetch);
        match lifetime {
            Some(lifetime) => {
                let after = token::renew_after(lifetime, self.config.token_renew_margin);
                self.timers.set(Timer::Renew, now + after);
            }
            None => self.timers.stop(Timer::Renew),
        }
        let was_stale = std::mem::take(&mut self.token.stale);
        if self.transport == Transport::Active && self.state == ConnectionState::Connected {
            self.token.renew_failures = 0;
            self.send(ProtocolMessage {
                auth: Some(AuthDetails {
                    access_token: token,
                }),
                ..ProtocolMessage::new(Action::AUTH)
            });
        } else if was_stale
            && matches!(
                self.state,
                ConnectionState::Connecting
                    | ConnectionState::Disconnected
                    | ConnectionState::Suspended
            )
            && self.transport == Transport::None
        {
            self.token.fresh = true;
            self.start_attempts(now);
        }
    }

    fn token_failed(&mut self, now: Instant, cause: ErrorInfo) {
        if !self.token.fetching {
            return;
        }
        self.token.fetching = false;
        self.timers.stop(Timer::TokenFetch);
        let status = if cause.status_code == Some(403) {
            403
        } else {
            401
        };
        let err = ErrorInfo::new(
            errors::TOKEN_REQUEST_FAILED,
            status,
            format!("could not get a token: {}", cause.message),
        );
        if status == 403 {
            self.fail(now, err);
        } else if self.transport == Transport::Active && self.state == ConnectionState::Connected {
            self.token.renew_failures += 1;
            let delay = self.backoff(
                self.config.disconnected_retry_timeout,
                self.token.renew_failures,
            );
            self.timers.set(Timer::Renew, now + delay);
            self.reason = Some(err);
        } else if self.transport == Transport::None && self.state == ConnectionState::Connecting {
            self.disconnect_for_now(now, err);
        }
    }

    /// The renewal deadline passed: ask for the next token while connected, otherwise
    /// get one before the next attempt.
    fn renew_token(&mut self, now: Instant) {
        if !matches!(self.config.auth, Auth::Token(_)) {
            return;
        }
        if self.transport == Transport::Active && self.state == ConnectionState::Connected {
            self.request_token(now, None);
        } else {
            self.token.stale = true;
        }
    }

    /// The revival policy: a failed connection starts again afresh, and every channel the
    /// application attached (and did not detach) attaches again.
    fn revive(&mut self, now: Instant) {
        if self.state != ConnectionState::Failed {
            return;
        }
        self.connect(now);
        let names: Vec<ChannelName> = self
            .channels
            .values()
            .filter(|c| c.wanted)
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            if let Some(ch) = self.channels.get_mut(&name) {
                ch.deadline = None;
            }
            self.set_channel_state(&name, ChannelState::Attaching, false, false, None);
        }
    }

    fn fail(&mut self, now: Instant, err: ErrorInfo) {
        if self.transport != Transport::None {
            self.outputs.push_back(Output::Transmit(Transmit::Close));
        }
        self.transport = Transport::None;
        self.timers.stop_all();
        self.token.fetching = false;
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
                // RTL15b2: a failed channel forgets its position.
                ch.channel_serial = None;
            }
            self.set_channel_state(&name, ChannelState::Failed, false, false, Some(err.clone()));
        }
        self.set_state(ConnectionState::Failed, Some(err));
        if let Some(after) = self.config.revive_failed_after {
            self.timers.set(Timer::Revive, now + after);
        }
    }

    fn finish_closed(&mut self) {
        self.token.fetching = false;
        if self.transport != Transport::None {
            self.outputs.push_back(Output::Transmit(Transmit::Close));
        }
        self.transport = Transport::None;
        self.timers.stop_all();
        self.connection_key = None;
        self.connection_id = None;
        let closed = ErrorInfo::new(errors::CONNECTION_CLOSED, 400, "connection closed");
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
                    let err = ErrorInfo::new(
                        errors::CHANNEL_TIMED_OUT,
                        408,
                        "timed out waiting for ATTACHED",
                    );
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
        match self.limits.max_idle_interval {
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

    /// Ably's retry delay (RTB1): `base` times min((n + 2) / 3, 2), times a jitter
    /// between 0.8 and 1.
    fn backoff(&mut self, base: Duration, attempt: u32) -> Duration {
        let random = xorshift(&mut self.rng);
        let jitter = 1.0 - (random % 1000) as f64 / 5000.0;
        let factor = (f64::from(attempt + 2) / 3.0).min(2.0);
        base.mul_f64(factor * jitter)
    }
}

/// One step of the xorshift generator behind jitter and host order (not cryptographic).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
