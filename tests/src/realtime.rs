//! A minimal tokio WebSocket driver around `shared::connection::Connection`, so tests can
//! run the sans-IO core against a real Ably-compatible server on loopback.
//!
//! The loop is the one every driver runs: feed inputs with the current time, drain the
//! outputs (open, send, close, events), sleep until the next deadline.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::codec;
use shared::connection::{
    AttachOptions, ChannelState, CommandError, Config, Connection, Event, Output, PublishId,
    PublishOutcome, Transmit,
};
use shared::protocol::Message;
use shared::{ChannelName, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Command {
    Attach(ChannelName, AttachOptions),
    Publish(ChannelName, Vec<Message>, oneshot::Sender<PublishOutcome>),
    /// Drop the socket without a close handshake, as a network cut does.
    Cut,
    Close,
}

/// A running connection: commands in, events out.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    /// Every event the connection emitted, in order.
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts the driver task and connects.
    pub fn start(config: Config) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(Connection::new(config), command_rx, event_tx));
        Self {
            commands,
            events,
            task,
        }
    }

    /// Attaches a channel.
    pub fn attach(&self, channel: &str, options: AttachOptions) {
        let _ = self
            .commands
            .send(Command::Attach(ChannelName::from(channel), options));
    }

    /// Publishes and waits for the ACK or NACK (or a refusal).
    pub async fn publish(&self, channel: &str, messages: Vec<Message>) -> PublishOutcome {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::Publish(ChannelName::from(channel), messages, tx));
        rx.await.unwrap_or_else(|_| {
            Err(shared::protocol::ErrorInfo::new(
                50000,
                500,
                "driver stopped",
            ))
        })
    }

    /// Publishes without waiting; the outcome arrives on the returned receiver.
    pub fn publish_pipelined(
        &self,
        channel: &str,
        messages: Vec<Message>,
    ) -> oneshot::Receiver<PublishOutcome> {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::Publish(ChannelName::from(channel), messages, tx));
        rx
    }

    /// Cuts the transport abruptly; the connection reconnects and resumes by itself.
    pub fn cut(&self) {
        let _ = self.commands.send(Command::Cut);
    }

    /// Waits for the first event that `pick` accepts, up to `limit`.
    pub async fn wait_for<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        tokio::time::timeout(limit, async {
            while let Some(event) = self.events.recv().await {
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

    /// Waits until a channel reaches `attached` (true) or `failed` (false), up to `limit`.
    pub async fn wait_attached(&mut self, limit: Duration) -> bool {
        let outcome = self
            .wait_for(limit, |e| match e {
                Event::ChannelStateChanged {
                    current: ChannelState::Attached,
                    ..
                } => Some(true),
                Event::ChannelStateChanged {
                    current: ChannelState::Failed,
                    ..
                } => Some(false),
                _ => None,
            })
            .await;
        outcome == Some(true)
    }

    /// Closes the connection and stops the driver.
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn run(
    mut conn: Connection,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let epoch = tokio::time::Instant::now();
    let now = move || {
        Instant::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    };
    let mut socket: Option<Socket> = None;
    let mut waiting: HashMap<PublishId, oneshot::Sender<PublishOutcome>> = HashMap::new();
    let mut closing = false;
    conn.connect(now());
    loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::Transmit(Transmit::Open { url }) => {
                    socket = match tokio_tungstenite::connect_async(url.as_str()).await {
                        Ok((ws, _)) => Some(ws),
                        Err(err) => {
                            conn.handle_transport_closed(
                                now(),
                                Some(format!("connect failed: {err}")),
                            );
                            None
                        }
                    };
                }
                Output::Transmit(Transmit::Frame(frame)) => {
                    let sent = match (&mut socket, codec::encode(&frame)) {
                        (Some(ws), Ok(text)) => ws.send(WsMessage::text(text)).await.is_ok(),
                        _ => false,
                    };
                    if !sent && socket.take().is_some() {
                        conn.handle_transport_closed(now(), Some("send failed".into()));
                    }
                }
                Output::Transmit(Transmit::Close) => {
                    if let Some(mut ws) = socket.take() {
                        let _ = ws.close(None).await;
                    }
                }
                Output::Event(event) => {
                    if let Event::Published { id, outcome } = &event {
                        if let Some(tx) = waiting.remove(id) {
                            let _ = tx.send(outcome.clone());
                        }
                    }
                    let _ = events.send(event);
                }
            }
        }
        if closing && conn.poll_timeout().is_none() {
            return;
        }
        let deadline = conn
            .poll_timeout()
            .map(|at| epoch + Duration::from_millis(at.as_millis()));
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Attach(channel, options)) => {
                    // A refusal shows up as the channel never attaching.
                    let _ = conn.attach(now(), channel, options);
                }
                Some(Command::Publish(channel, messages, tx)) => match conn.publish(now(), &channel, messages) {
                    Ok(id) => { waiting.insert(id, tx); }
                    Err(err) => { let _ = tx.send(Err(CommandError::to_error_info(&err))); }
                },
                Some(Command::Cut) => {
                    if socket.take().is_some() {
                        conn.handle_transport_closed(now(), Some("cut by the test".into()));
                    }
                }
                Some(Command::Close) | None => {
                    closing = true;
                    conn.close(now());
                }
            },
            frame = next_frame(&mut socket) => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let _ = conn.handle_text(now(), text.as_str());
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => {
                    socket = None;
                    conn.handle_transport_closed(now(), None);
                }
                Some(Ok(_)) => {}
            },
            () = sleep_until(deadline) => conn.handle_timeout(now()),
        }
    }
}

async fn next_frame(
    socket: &mut Option<Socket>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match socket {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
