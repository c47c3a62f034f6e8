//! The tokio loop around the sans-IO `Connection`: it reads the socket and the handles'
//! commands, calls the connection, writes what it returns and sleeps until its deadline.
//!
//! One task owns the connection and the socket. Opening a socket runs beside the loop (a
//! future polled by it) and closing one runs in a task of its own, so the loop never waits
//! on either: how long an open may take, and what to do when it fails, are the
//! connection's decisions (its connect timer), not the driver's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::codec;
use shared::connection::{
    errors, ChannelState, Connection, ConnectionState, Event, Output, PublishId, PublishOutcome,
    Transmit,
};
use shared::protocol::ErrorInfo;
use shared::{ChannelName, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::handle::{Command, Snapshot, TokenSource, REVIVE_AFTER};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Opening = Pin<Box<dyn Future<Output = Result<Socket, String>> + Send>>;
type Frame = Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>;

/// How long a closing socket gets for its close handshake, in its own task.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(super) struct Driver {
    conn: Connection,
    socket: Option<Socket>,
    /// A socket being opened, for the transport the connection asked for last.
    opening: Option<Opening>,
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
    pub(super) fn new(
        conn: Connection,
        commands: mpsc::UnboundedReceiver<Command>,
        self_commands: mpsc::UnboundedSender<Command>,
        snapshot: watch::Sender<Snapshot>,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Self {
        Self {
            conn,
            socket: None,
            opening: None,
            commands,
            self_commands,
            snapshot,
            subscribers: Vec::new(),
            publishes: HashMap::new(),
            attaches: HashMap::new(),
            tokens,
            epoch: tokio::time::Instant::now(),
            closing: false,
        }
    }

    /// Read, call the core, write what it returns, sleep until its deadline; until closed.
    pub(super) async fn run(mut self) {
        let now = self.now();
        self.conn.connect(now);
        loop {
            self.write().await;
            if self.closing
                && matches!(
                    self.conn.state(),
                    ConnectionState::Closed | ConnectionState::Failed
                )
            {
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
                command = self.commands.recv() => self.command(command),
                frame = next_frame(&mut self.socket) => self.frame(frame),
                opened = next_open(&mut self.opening) => self.opened(opened),
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

    fn command(&mut self, command: Option<Command>) {
        let now = self.now();
        let Some(command) = command else {
            // Every handle is gone: close cleanly and stop.
            if !self.closing {
                self.closing = true;
                self.conn.close(now);
            }
            return;
        };
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

    fn frame(&mut self, frame: Frame) {
        let now = self.now();
        let closed = match frame {
            Some(Ok(WsMessage::Text(text))) => {
                if let Err(err) = self.conn.handle_text(now, text.as_str()) {
                    tracing::warn!(error = %err, "ignored a malformed frame from Ably");
                }
                return;
            }
            Some(Ok(WsMessage::Close(close))) => {
                close.map(|c| format!("closed by the server: {}", c.reason))
            }
            Some(Err(err)) => Some(format!("transport error: {err}")),
            None => Some("transport closed".to_owned()),
            Some(Ok(_)) => return,
        };
        self.socket = None;
        self.conn.handle_transport_closed(now, closed);
    }

    fn opened(&mut self, opened: Result<Socket, String>) {
        self.opening = None;
        match opened {
            Ok(ws) => self.socket = Some(ws),
            Err(reason) => {
                let now = self.now();
                self.conn.handle_transport_closed(now, Some(reason));
            }
        }
    }

    /// Carries out everything the connection asked for: frames fed and flushed once per
    /// turn, opens and closes started, events handed on, the snapshot updated.
    async fn write(&mut self) {
        loop {
            let mut unflushed = false;
            while let Some(output) = self.conn.poll_output() {
                match output {
                    Output::Transmit(Transmit::Open { url }) => {
                        self.close_socket();
                        self.opening = Some(Box::pin(open(url)));
                    }
                    Output::Transmit(Transmit::Frame(frame)) => {
                        let sent = match (&mut self.socket, codec::encode(&frame)) {
                            (Some(ws), Ok(text)) => {
                                unflushed = true;
                                ws.feed(WsMessage::text(text)).await.is_ok()
                            }
                            _ => false,
                        };
                        if !sent && self.socket.take().is_some() {
                            self.lost("send failed");
                        }
                    }
                    Output::Transmit(Transmit::Close) => {
                        self.opening = None;
                        self.close_socket();
                    }
                    Output::Event(event) => self.event(event),
                }
            }
            let flushed = match (&mut self.socket, unflushed) {
                (Some(ws), true) => ws.flush().await.is_ok(),
                _ => true,
            };
            if flushed || self.socket.take().is_none() {
                break;
            }
            // What the connection does about the loss is carried out in the next pass.
            self.lost("send failed");
        }
        let snapshot = Snapshot {
            state: self.conn.state(),
            reason: self.conn.error_reason().cloned(),
            limits: self.conn.limits().clone(),
            blocked: self.conn.blocked_channels().cloned().collect(),
        };
        self.snapshot.send_if_modified(|current| {
            let changed = *current != snapshot;
            *current = snapshot;
            changed
        });
    }

    /// The socket broke while writing: the connection reacts (reconnect, requeue), and
    /// the loop carries that out on its next turn.
    fn lost(&mut self, why: &str) {
        let now = self.now();
        self.conn.handle_transport_closed(now, Some(why.to_owned()));
    }

    /// Closes the current socket, if any, in a task of its own.
    fn close_socket(&mut self) {
        if let Some(mut ws) = self.socket.take() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(None)).await;
            });
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
                            ErrorInfo::new(
                                errors::CHANNEL_OPERATION_FAILED,
                                400,
                                format!("channel {channel} is {current}"),
                            )
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

/// Opens a WebSocket; the URL carries the key or token, so an error never quotes it.
async fn open(url: String) -> Result<Socket, String> {
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((ws, _)) => Ok(ws),
        Err(err) => Err(format!(
            "could not open the WebSocket: {}",
            describe_ws_error(&err)
        )),
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

async fn next_frame(socket: &mut Option<Socket>) -> Frame {
    match socket {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn next_open(opening: &mut Option<Opening>) -> Result<Socket, String> {
    match opening {
        Some(open) => open.await,
        None => std::future::pending().await,
    }
}
