//! The browser's driver of `shared::connection::Connection`: one local task moves frames
//! between a WebSocket and the connection, reads the page's clock, fires its timers, and
//! fetches a new token when the connection needs one or the current one nears expiry.

use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;

use futures::channel::mpsc;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message as WsMessage, WebSocketError};
use gloo_timers::future::TimeoutFuture;
use shared::auth::TokenDetails;
use shared::codec;
use shared::connection::{AttachOptions, Config, Connection, Event, Output, Transmit};
use shared::{ChannelName, Instant};

/// A fresh token, or why there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<TokenDetails, String>>>>;

/// Where new tokens come from.
pub type Tokens = Rc<dyn Fn() -> TokenFuture>;

/// Renew a token this long before it expires.
const RENEW_BEFORE_MS: f64 = 60_000.0;

/// Retry a failed token fetch after this long.
const TOKEN_RETRY_MS: u32 = 5_000;

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Frame(Option<Result<WsMessage, WebSocketError>>),
    Timer,
    Renew,
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
        let driver = Driver {
            conn: Connection::new(config),
            sink: None,
            source: None,
            commands: rx,
            self_commands: tx.clone(),
            tokens,
            renew_at: expires.map(renew_time),
            fetching: false,
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
    /// When to renew the token (Unix ms), if it expires.
    renew_at: Option<f64>,
    fetching: bool,
}

impl Driver {
    async fn run(mut self, mut on_event: impl FnMut(&Connection, Event)) {
        self.conn.connect(now());
        loop {
            while let Some(output) = self.conn.poll_output() {
                match output {
                    Output::Transmit(Transmit::Open { url }) => self.open(&url),
                    Output::Transmit(Transmit::Frame(frame)) => {
                        let sent = match (&mut self.sink, codec::encode(&frame)) {
                            (Some(sink), Ok(text)) => {
                                sink.send(WsMessage::Text(text)).await.is_ok()
                            }
                            _ => false,
                        };
                        if !sent && self.sink.is_some() {
                            self.drop_socket();
                            self.conn
                                .handle_transport_closed(now(), Some("send failed".to_owned()));
                        }
                    }
                    Output::Transmit(Transmit::Close) => {
                        if let Some(mut sink) = self.sink.take() {
                            let _ = sink.close().await;
                        }
                        self.source = None;
                    }
                    Output::Event(event) => {
                        if matches!(event, Event::TokenRequired { .. }) {
                            self.fetch_token(0);
                        }
                        on_event(&self.conn, event);
                    }
                }
            }
            let timeout = self
                .conn
                .poll_timeout()
                .map(|at| at.as_millis().saturating_sub(now().as_millis()));
            let renew = self
                .renew_at
                .filter(|_| !self.fetching)
                .map(|at| (at - js_sys::Date::now()).max(0.0));
            let wake = {
                let mut timer = pin!(sleep(timeout).fuse());
                let mut renew_timer = pin!(sleep(renew.map(|ms| ms as u64)).fuse());
                let mut frame = pin!(next_frame(&mut self.source).fuse());
                futures::select! {
                    command = self.commands.next() => Wake::Command(command),
                    frame = frame => Wake::Frame(frame),
                    () = timer => Wake::Timer,
                    () = renew_timer => Wake::Renew,
                }
            };
            match wake {
                Wake::Command(Some(Command::Attach(channel, options))) => {
                    let _ = self.conn.attach(now(), channel, options);
                }
                Wake::Command(Some(Command::Close) | None) => self.conn.close(now()),
                Wake::Command(Some(Command::Token(Ok(details)))) => {
                    self.fetching = false;
                    self.renew_at = Some(renew_time(details.expires));
                    self.conn.set_token(now(), details.token);
                }
                Wake::Command(Some(Command::Token(Err(_)))) => {
                    self.fetching = false;
                    self.fetch_token(TOKEN_RETRY_MS);
                }
                Wake::Frame(frame) => self.frame(frame),
                Wake::Timer => self.conn.handle_timeout(now()),
                Wake::Renew => {
                    self.renew_at = None;
                    self.fetch_token(0);
                }
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

    fn fetch_token(&mut self, delay_ms: u32) {
        if self.fetching {
            return;
        }
        self.fetching = true;
        let tokens = Rc::clone(&self.tokens);
        let back = self.self_commands.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if delay_ms > 0 {
                TimeoutFuture::new(delay_ms).await;
            }
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

fn renew_time(expires_unix_ms: i64) -> f64 {
    expires_unix_ms as f64 - RENEW_BEFORE_MS
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
