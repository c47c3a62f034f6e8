//! The browser's driver of `shared::connection::Connection`: one local task moves frames
//! between a WebSocket and the connection, reads the page's clock, fires its timers, and
//! fetches a token when the connection asks for one (when to ask, and what to do when a
//! fetch fails, is the connection's decision). The same loop as the daemon's
//! (`publisher/src/ably/driver.rs`): read, call the core, write what it returns (fed, one
//! flush a turn), sleep until its deadline; a socket opens (the browser's `WebSocket` does
//! so asynchronously) and closes without the loop waiting on it.

use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message as WsMessage, WebSocketError};
use gloo_timers::future::TimeoutFuture;
use shared::auth::TokenDetails;
use shared::codec;
use shared::connection::{errors, AttachOptions, Config, Connection, Event, Output, Transmit};
use shared::protocol::ErrorInfo;
use shared::{ChannelName, Instant};

/// A fresh token, or why there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<TokenDetails, String>>>>;

/// Where new tokens come from.
pub type Tokens = Rc<dyn Fn() -> TokenFuture>;

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Frame(Option<Result<WsMessage, WebSocketError>>),
    Timer,
}

enum Command {
    Attach(ChannelName, AttachOptions),
    Close,
    Token(Result<TokenDetails, String>),
}

/// A handle on the running connection.
#[derive(Clone)]
pub struct Live {
    commands: mpsc::UnboundedSender<Command>,
}

type Sink = SplitSink<WebSocket, WsMessage>;
type Source = SplitStream<WebSocket>;

impl Live {
    /// Connects with `config` (token auth, the first token's expiry in Unix ms given) and
    /// runs until closed; every event goes to `on_event` with the connection.
    pub fn start(
        config: Config,
        expires: Option<i64>,
        tokens: Tokens,
        on_event: impl FnMut(&Connection, Event) + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded();
        let mut conn = Connection::new(config);
        if let Some(expires) = expires {
            // Only the expiry of the first token is known here: measure it on the local clock.
            conn.set_token_lifetime(now(), lifetime(expires, js_sys::Date::now() as i64));
        }
        let driver = Driver {
            conn,
            sink: None,
            source: None,
            commands: rx,
            self_commands: tx.clone(),
            tokens,
        };
        wasm_bindgen_futures::spawn_local(driver.run(on_event));
        Self { commands: tx }
    }

    /// Attaches a channel.
    pub fn attach(&self, channel: ChannelName, options: AttachOptions) {
        let _ = self
            .commands
            .unbounded_send(Command::Attach(channel, options));
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.commands.unbounded_send(Command::Close);
    }
}

struct Driver {
    conn: Connection,
    sink: Option<Sink>,
    source: Option<Source>,
    commands: mpsc::UnboundedReceiver<Command>,
    self_commands: mpsc::UnboundedSender<Command>,
    tokens: Tokens,
}

impl Driver {
    async fn run(mut self, mut on_event: impl FnMut(&Connection, Event)) {
        self.conn.connect(now());
        loop {
            let mut unflushed = false;
            while let Some(output) = self.conn.poll_output() {
                match output {
                    Output::Transmit(Transmit::Open { url }) => self.open(&url),
                    Output::Transmit(Transmit::Frame(frame)) => {
                        // Fed, not flushed: one flush per turn of the loop, however many.
                        let sent = match (&mut self.sink, codec::encode(&frame)) {
                            (Some(sink), Ok(text)) => {
                                unflushed = true;
                                sink.feed(WsMessage::Text(text)).await.is_ok()
                            }
                            _ => false,
                        };
                        if !sent && self.sink.is_some() {
                            self.lost();
                        }
                    }
                    Output::Transmit(Transmit::Close) => self.close_socket(),
                    Output::Event(event) => {
                        if matches!(event, Event::TokenRequired { .. }) {
                            self.fetch_token();
                        }
                        on_event(&self.conn, event);
                    }
                }
            }
            if let (true, Some(sink)) = (unflushed, &mut self.sink) {
                if sink.flush().await.is_err() {
                    self.lost();
                    // What the connection does about the loss goes out on the next turn.
                    continue;
                }
            }
            let timeout = self
                .conn
                .poll_timeout()
                .map(|at| at.as_millis().saturating_sub(now().as_millis()));
            let wake = {
                let mut timer = pin!(sleep(timeout).fuse());
                let mut frame = pin!(next_frame(&mut self.source).fuse());
                futures::select! {
                    command = self.commands.next() => Wake::Command(command),
                    frame = frame => Wake::Frame(frame),
                    () = timer => Wake::Timer,
                }
            };
            match wake {
                Wake::Command(Some(Command::Attach(channel, options))) => {
                    let _ = self.conn.attach(now(), channel, options);
                }
                Wake::Command(Some(Command::Close) | None) => self.conn.close(now()),
                Wake::Command(Some(Command::Token(Ok(details)))) => {
                    let issued = if details.issued > 0 {
                        details.issued
                    } else {
                        js_sys::Date::now() as i64
                    };
                    let lifetime = lifetime(details.expires, issued);
                    self.conn
                        .set_token_with_lifetime(now(), details.token, lifetime);
                }
                Wake::Command(Some(Command::Token(Err(reason)))) => {
                    let cause = ErrorInfo::new(errors::TOKEN_CALLBACK_FAILED, 401, reason);
                    self.conn.handle_token_failed(now(), cause);
                }
                Wake::Frame(frame) => self.frame(frame),
                Wake::Timer => self.conn.handle_timeout(now()),
            }
        }
    }

    fn open(&mut self, url: &str) {
        self.drop_socket();
        match WebSocket::open(url) {
            Ok(ws) => {
                let (sink, source) = ws.split();
                self.sink = Some(sink);
                self.source = Some(source);
            }
            Err(err) => self
                .conn
                .handle_transport_closed(now(), Some(format!("cannot open the WebSocket: {err}"))),
        }
    }

    fn frame(&mut self, frame: Option<Result<WsMessage, WebSocketError>>) {
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                // A malformed frame is reported by the connection and otherwise ignored.
                let _ = self.conn.handle_text(now(), &text);
            }
            Some(Ok(WsMessage::Bytes(_))) => {}
            Some(Err(err)) => {
                self.drop_socket();
                self.conn
                    .handle_transport_closed(now(), Some(format!("WebSocket closed: {err}")));
            }
            None => {
                self.drop_socket();
                self.conn
                    .handle_transport_closed(now(), Some("WebSocket closed".to_owned()));
            }
        }
    }

    fn drop_socket(&mut self) {
        self.sink = None;
        self.source = None;
    }

    /// The socket broke while writing.
    fn lost(&mut self) {
        self.drop_socket();
        self.conn
            .handle_transport_closed(now(), Some("send failed".to_owned()));
    }

    /// Closes the socket in a task of its own, so the loop never waits on a close.
    fn close_socket(&mut self) {
        self.source = None;
        if let Some(mut sink) = self.sink.take() {
            wasm_bindgen_futures::spawn_local(async move {
                let _ = sink.close().await;
            });
        }
    }

    /// Fetches one token and reports the result (the connection asks once at a time).
    fn fetch_token(&mut self) {
        let tokens = Rc::clone(&self.tokens);
        let back = self.self_commands.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = tokens().await;
            let _ = back.unbounded_send(Command::Token(result));
        });
    }
}

/// The page's monotonic clock, as the core's `Instant`.
pub fn now() -> Instant {
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now());
    Instant::from_millis(ms as u64)
}

/// A token's lifetime from two Unix-ms times (zero if already expired).
fn lifetime(expires_unix_ms: i64, from_unix_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(expires_unix_ms.saturating_sub(from_unix_ms)).unwrap_or(0))
}

async fn sleep(ms: Option<u64>) {
    match ms {
        Some(ms) => TimeoutFuture::new(u32::try_from(ms).unwrap_or(u32::MAX)).await,
        None => std::future::pending().await,
    }
}

async fn next_frame(source: &mut Option<Source>) -> Option<Result<WsMessage, WebSocketError>> {
    match source {
        Some(source) => source.next().await,
        None => std::future::pending().await,
    }
}
