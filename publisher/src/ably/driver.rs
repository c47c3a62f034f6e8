//! The tokio loop around the sans-IO `Connection`: feed it frames, commands and time, carry
//! out what it asks (open, send, close), and hand its events to whoever listens.
//!
//! One task owns the connection and the socket. [`Realtime`] is a cheap, cloneable handle
//! that sends commands to it; publishes are pipelined (each returns a [`Published`] future,
//! awaited when the caller wants the ACK), so many answers share one connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::codec;
use shared::connection::{
    errors, AttachOptions, Auth, ChannelState, Config, Connection, ConnectionState, Event, Output,
    PublishId, PublishOutcome, Transmit,
};
use shared::protocol::{ErrorInfo, Message};
use shared::{ChannelName, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where to get a fresh token when the connection needs one (token auth).
pub trait TokenSource: Send + Sync + 'static {
    /// A new token string, or a readable reason why none could be had.
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// How long a `failed` connection waits before the core starts a new one (its revival
/// policy, which the daemon turns on). A daemon runs for months: whatever failed it (a
/// server error, a revoked key being restored), it keeps trying, slowly.
const REVIVE_AFTER: Duration = Duration::from_secs(15);

/// The connection as last seen by the driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub state: ConnectionState,
    pub reason: Option<ErrorInfo>,
    /// The largest message the server accepts (from CONNECTED).
    pub max_message_size: usize,
}

enum Command {
    Attach(
        ChannelName,
        AttachOptions,
        oneshot::Sender<Result<(), ErrorInfo>>,
    ),
    Detach(ChannelName),
    Publish(ChannelName, Vec<Message>, oneshot::Sender<PublishOutcome>),
    Subscribe(mpsc::UnboundedSender<Event>),
    Token(Result<String, String>),
    Cut,
    Close,
}

/// A handle on one running Ably connection.
#[derive(Clone)]
pub struct Realtime {
    commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Snapshot>,
}

/// The outcome of one publish, once its ACK or NACK arrives.
pub struct Published(oneshot::Receiver<PublishOutcome>);

impl Published {
    /// An outcome known already: for wrappers of [`crate::answer::Publish`] that refuse or
    /// answer a publish themselves.
    pub fn ready(outcome: PublishOutcome) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(outcome);
        Self(rx)
    }

    /// An outcome to be given later through the returned sender (dropping it reads as the
    /// connection having stopped).
    pub fn pending() -> (oneshot::Sender<PublishOutcome>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self(rx))
    }
}

impl Future for Published {
    type Output = PublishOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or_else(|_| Err(stopped())))
    }
}

/// Every event of the connection from the moment of subscribing, in order, none dropped.
pub struct Subscription(mpsc::UnboundedReceiver<Event>);

impl Subscription {
    /// The next event, or `None` once the driver stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// Waits for the first event that `pick` accepts, up to `limit`.
    pub async fn wait_for<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        tokio::time::timeout(limit, async {
            while let Some(event) = self.0.recv().await {
                if let Some(found) = pick(&event) {
                    return Some(found);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

impl Realtime {
    /// Spawns the driver and connects. With token auth, `tokens` supplies new tokens when
    /// the connection asks for one. A failed connection is revived after `REVIVE_AFTER`
    /// unless the config already chose a revival delay.
    pub fn start(
        mut config: Config,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        config.revive_failed_after.get_or_insert(REVIVE_AFTER);
        if tokens.is_none() && matches!(config.auth, Auth::Token(_)) {
            config.token_renewable = false;
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot) = watch::channel(Snapshot {
            state: ConnectionState::Initialized,
            reason: None,
            max_message_size: shared::connection::DEFAULT_MAX_MESSAGE_SIZE,
        });
        let driver = Driver {
            conn: Connection::new(config),
            socket: None,
            commands: command_rx,
            self_commands: commands.clone(),
            snapshot: snapshot_tx,
            subscribers: Vec::new(),
            publishes: HashMap::new(),
            attaches: HashMap::new(),
            tokens,
            epoch: tokio::time::Instant::now(),
            closing: false,
        };
        let task = tokio::spawn(driver.run());
        (Self { commands, snapshot }, task)
    }

    /// The connection's current state, reason and limits.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Follows the connection's state, reason and limits as they change.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// Waits until the connection is `connected`; fails at once if it is `failed` (bad key)
    /// or `closed`, or after `limit`.
    pub async fn wait_connected(&self, limit: Duration) -> Result<(), String> {
        let mut watch = self.snapshot.clone();
        let wait = async move {
            watch
                .wait_for(|s| {
                    matches!(
                        s.state,
                        ConnectionState::Connected
                            | ConnectionState::Failed
                            | ConnectionState::Closed
                    )
                })
                .await
                .map(|s| s.clone())
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(s)) if s.state == ConnectionState::Connected => Ok(()),
            Ok(Ok(s)) => Err(describe(&s)),
            Ok(Err(_)) => Err("the Ably driver stopped".to_owned()),
            Err(_) => Err(format!(
                "no Ably connection within {limit:?} ({})",
                describe(&self.snapshot())
            )),
        }
    }

    /// Attaches a channel and waits until it is attached, or for the reason it is not.
    pub async fn attach(
        &self,
        channel: &ChannelName,
        options: AttachOptions,
    ) -> Result<(), ErrorInfo> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Attach(channel.clone(), options, tx));
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Detaches a channel.
    pub fn detach(&self, channel: &ChannelName) {
        self.send(Command::Detach(channel.clone()));
    }

    /// Publishes `messages` as one frame without waiting; await the result for the ACK.
    pub fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Publish(channel.clone(), messages, tx));
        Published(rx)
    }

    /// Every event from now on (messages on attached channels, state changes, publish
    /// results).
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(Command::Subscribe(tx));
        Subscription(rx)
    }

    /// Drops the socket without a close handshake, as a network failure would; the
    /// connection then reconnects and resumes by itself. For tests and fault drills.
    pub fn cut(&self) {
        self.send(Command::Cut);
    }

    /// Closes the connection cleanly and waits (up to `limit`) until it is closed.
    pub async fn close(&self, limit: Duration) {
        self.send(Command::Close);
        let mut watch = self.snapshot.clone();
        let closed = watch
            .wait_for(|s| matches!(s.state, ConnectionState::Closed | ConnectionState::Failed));
        let _ = tokio::time::timeout(limit, closed).await;
    }

    fn send(&self, command: Command) {
        // A stopped driver answers every waiter with `stopped()` when its sender drops.
        let _ = self.commands.send(command);
    }
}

struct Driver {
    conn: Connection,
    socket: Option<Socket>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For token fetches, which report back as commands.
    self_commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Sender<Snapshot>,
    subscribers: Vec<mpsc::UnboundedSender<Event>>,
    publishes: HashMap<PublishId, oneshot::Sender<PublishOutcome>>,
    attaches: HashMap<ChannelName, Vec<oneshot::Sender<Result<(), ErrorInfo>>>>,
    tokens: Option<Arc<dyn TokenSource>>,
    epoch: tokio::time::Instant,
    closing: bool,
}

impl Driver {
    async fn run(mut self) {
        let now = self.now();
        self.conn.connect(now);
        loop {
            self.drain().await;
            if self.closing
                && matches!(
                    self.conn.state(),
                    ConnectionState::Closed | ConnectionState::Failed
                )
            {
                self.drain().await;
                return;
            }
            let deadline = self.conn.poll_timeout();
            // Check the clock first: an elapsed sleep may still report pending under
            // tokio's cooperative budget.
            if deadline.is_some_and(|at| at <= self.now()) {
                let now = self.now();
                self.conn.handle_timeout(now);
                continue;
            }
            let sleep_until = deadline.map(|at| self.epoch + Duration::from_millis(at.as_millis()));
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => {
                        // Every handle is gone: close cleanly and stop.
                        if !self.closing {
                            self.closing = true;
                            let now = self.now();
                            self.conn.close(now);
                        }
                    }
                },
                frame = next_frame(&mut self.socket) => self.frame(frame),
                () = crate::wait::sleep_until(sleep_until) => {
                    let now = self.now();
                    self.conn.handle_timeout(now);
                }
            }
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Attach(channel, options, done) => {
                if self.conn.channel_state(&channel) == ChannelState::Attached {
                    let _ = done.send(Ok(()));
                    return;
                }
                match self.conn.attach(now, channel.clone(), options) {
                    Ok(()) => self.attaches.entry(channel).or_default().push(done),
                    Err(err) => {
                        let _ = done.send(Err(err.to_error_info()));
                    }
                }
            }
            Command::Detach(channel) => self.conn.detach(now, &channel),
            Command::Publish(channel, messages, done) => {
                match self.conn.publish(now, &channel, messages) {
                    Ok(id) => {
                        self.publishes.insert(id, done);
                    }
                    Err(err) => {
                        let _ = done.send(Err(err.to_error_info()));
                    }
                }
            }
            Command::Subscribe(tx) => self.subscribers.push(tx),
            Command::Token(Ok(token)) => self.conn.set_token(now, token),
            Command::Token(Err(reason)) => {
                tracing::warn!(%reason, "could not get an Ably token");
                let cause = ErrorInfo::new(errors::TOKEN_CALLBACK_FAILED, 401, reason);
                self.conn.handle_token_failed(now, cause);
            }
            Command::Cut => {
                if self.socket.take().is_some() {
                    self.conn
                        .handle_transport_closed(now, Some("transport cut".to_owned()));
                }
            }
            Command::Close => {
                self.closing = true;
                self.conn.close(now);
            }
        }
    }

    fn frame(&mut self, frame: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>) {
        let now = self.now();
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                if let Err(err) = self.conn.handle_text(now, text.as_str()) {
                    tracing::warn!(error = %err, "ignored a malformed frame from Ably");
                }
            }
            Some(Ok(WsMessage::Close(close))) => {
                self.socket = None;
                let reason = close.map(|c| format!("closed by the server: {}", c.reason));
                self.conn.handle_transport_closed(now, reason);
            }
            Some(Err(err)) => {
                self.socket = None;
                self.conn
                    .handle_transport_closed(now, Some(format!("transport error: {err}")));
            }
            None => {
                self.socket = None;
                self.conn
                    .handle_transport_closed(now, Some("transport closed".to_owned()));
            }
            Some(Ok(_)) => {}
        }
    }

    /// Carries out everything the connection asked for.
    async fn drain(&mut self) {
        let mut unflushed = false;
        while let Some(output) = self.conn.poll_output() {
            match output {
                Output::Transmit(Transmit::Open { url }) => self.open(&url).await,
                Output::Transmit(Transmit::Frame(frame)) => {
                    // Queued, not flushed: one flush after the batch below, so a burst of
                    // appends costs one write rather than one per frame.
                    let sent = match (&mut self.socket, codec::encode(&frame)) {
                        (Some(ws), Ok(text)) => {
                            unflushed = true;
                            ws.feed(WsMessage::text(text)).await.is_ok()
                        }
                        _ => false,
                    };
                    if !sent && self.socket.take().is_some() {
                        let now = self.now();
                        self.conn
                            .handle_transport_closed(now, Some("send failed".to_owned()));
                    }
                }
                Output::Transmit(Transmit::Close) => {
                    if let Some(mut ws) = self.socket.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    }
                }
                Output::Event(event) => self.event(event),
            }
        }
        if unflushed {
            if let Some(ws) = &mut self.socket {
                if ws.flush().await.is_err() {
                    self.socket = None;
                    let now = self.now();
                    self.conn
                        .handle_transport_closed(now, Some("send failed".to_owned()));
                    // The connection reacts to the loss (reconnect, requeue): carry that out.
                    Box::pin(self.drain()).await;
                    return;
                }
            }
        }
        let snapshot = Snapshot {
            state: self.conn.state(),
            reason: self.conn.error_reason().cloned(),
            max_message_size: self.conn.max_message_size(),
        };
        self.snapshot.send_if_modified(|current| {
            let changed = *current != snapshot;
            *current = snapshot;
            changed
        });
    }

    async fn open(&mut self, url: &str) {
        self.socket = None;
        let connect = tokio_tungstenite::connect_async(url);
        let result = tokio::time::timeout(Duration::from_secs(15), connect).await;
        let now = self.now();
        match result {
            Ok(Ok((ws, _))) => self.socket = Some(ws),
            Ok(Err(err)) => {
                // The URL carries the key or token: never quote it.
                let reason = format!("could not open the WebSocket: {}", describe_ws_error(&err));
                self.conn.handle_transport_closed(now, Some(reason));
            }
            Err(_) => self
                .conn
                .handle_transport_closed(now, Some("WebSocket open timed out".to_owned())),
        }
    }

    fn event(&mut self, event: Event) {
        match &event {
            Event::Published { id, outcome } => {
                if let Some(done) = self.publishes.remove(id) {
                    let _ = done.send(outcome.clone());
                }
            }
            Event::ChannelStateChanged {
                channel,
                current,
                reason,
                ..
            } => {
                let result = match current {
                    ChannelState::Attached => Some(Ok(())),
                    ChannelState::Failed | ChannelState::Detached | ChannelState::Suspended => {
                        Some(Err(reason.clone().unwrap_or_else(|| {
                            ErrorInfo::new(90000, 400, format!("channel {channel} is {current}"))
                        })))
                    }
                    _ => None,
                };
                if let Some(result) = result {
                    for done in self.attaches.remove(channel).unwrap_or_default() {
                        let _ = done.send(result.clone());
                    }
                }
            }
            Event::TokenRequired { reason } => {
                tracing::info!(reason = ?reason.as_ref().map(|r| &r.message), "Ably asked for a new token");
                self.fetch_token();
            }
            Event::StateChanged {
                previous,
                current,
                reason,
            } => {
                tracing::info!(%previous, %current, reason = ?reason.as_ref().map(|r| &r.message), "Ably connection");
                if *current == ConnectionState::Failed && !self.closing {
                    tracing::warn!(
                        "the Ably connection failed; a new one starts in {REVIVE_AFTER:?}"
                    );
                }
            }
            Event::ResumeFailed { reason } => {
                tracing::warn!(reason = ?reason.as_ref().map(|r| &r.message), "Ably resume failed: new connection");
            }
            Event::Message { .. } => {}
        }
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Fetches one token and reports the result; when to ask, and what a failure means,
    /// is the connection's decision.
    fn fetch_token(&self) {
        let Some(source) = self.tokens.clone() else {
            return;
        };
        let back = self.self_commands.clone();
        tokio::spawn(async move {
            let _ = back.send(Command::Token(source.token().await));
        });
    }
}

fn describe(snapshot: &Snapshot) -> String {
    match &snapshot.reason {
        Some(reason) => format!(
            "Ably connection {}: {} (code {})",
            snapshot.state, reason.message, reason.code
        ),
        None => format!("Ably connection {}", snapshot.state),
    }
}

fn describe_ws_error(err: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::Io(io) => io.to_string(),
        Error::Http(response) => format!("HTTP {}", response.status()),
        Error::Tls(tls) => format!("TLS: {tls}"),
        Error::Url(_) => "invalid endpoint URL".to_owned(),
        other => other.to_string(),
    }
}

fn stopped() -> ErrorInfo {
    ErrorInfo::new(80000, 500, "the Ably driver stopped")
}

async fn next_frame(
    socket: &mut Option<Socket>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match socket {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}
