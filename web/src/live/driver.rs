//! The browser's loop around the sans-IO `Connection`, the same as the daemon's
//! (`publisher/src/ably/driver.rs`): read the socket and the page's commands, call the core,
//! carry out what it returns, sleep until its deadline. A socket opens, is written and
//! closes without the loop waiting on it ([`super::socket`]); when to fetch a token, and
//! what a failed fetch means, are the connection's decisions.

use std::pin::pin;
use std::rc::Rc;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use gloo_timers::future::TimeoutFuture;
use shared::connection::{Connection, Event, Io};

use super::socket::{Incoming, Socket};
use super::{lifetime, now, Command, Tokens};

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Frame(Incoming),
    Timer,
}

pub(super) struct Driver {
    conn: Connection,
    socket: Option<Socket>,
    commands: mpsc::UnboundedReceiver<Command>,
    self_commands: mpsc::UnboundedSender<Command>,
    tokens: Tokens,
}

impl Driver {
    pub(super) fn new(
        conn: Connection,
        commands: mpsc::UnboundedReceiver<Command>,
        self_commands: mpsc::UnboundedSender<Command>,
        tokens: Tokens,
    ) -> Self {
        Self {
            conn,
            socket: None,
            commands,
            self_commands,
            tokens,
        }
    }

    pub(super) async fn run(mut self, mut on_event: impl FnMut(&Connection, Event)) {
        self.conn.connect(now());
        loop {
            self.write(&mut on_event);
            let timeout = self
                .conn
                .poll_timeout()
                .map(|at| at.as_millis().saturating_sub(now().as_millis()));
            let wake = {
                let mut timer = pin!(sleep(timeout).fuse());
                let mut frame = pin!(next_frame(&mut self.socket).fuse());
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
                        super::observe_server_time(details.issued);
                        details.issued
                    } else {
                        js_sys::Date::now() as i64
                    };
                    let lifetime = lifetime(details.expires, issued);
                    self.conn
                        .set_token_with_lifetime(now(), details.token, lifetime);
                }
                Wake::Command(Some(Command::Token(Err(reason)))) => {
                    self.conn.handle_token_fetch_failed(now(), reason);
                }
                Wake::Frame(frame) => self.frame(frame),
                Wake::Timer => self.conn.handle_timeout(now()),
            }
        }
    }

    /// Carries out everything the connection asked for: frames queued on the socket, opens
    /// started, closes handed to the socket's task, events handed on.
    fn write(&mut self, on_event: &mut impl FnMut(&Connection, Event)) {
        while let Some(io) = self.conn.poll_io() {
            match io {
                Io::Open { url } => {
                    self.socket = None;
                    match Socket::open(&url) {
                        Ok(socket) => self.socket = Some(socket),
                        Err(why) => self.conn.handle_transport_closed(now(), Some(why)),
                    }
                }
                Io::Send(text) => {
                    if let Some(socket) = &self.socket {
                        socket.send(text);
                    }
                }
                Io::Lost(why) => self.lost(why),
                Io::Close => self.socket = None,
                Io::FetchToken => self.fetch_token(),
                Io::Event(event) => on_event(&self.conn, event),
            }
        }
    }

    /// The socket is gone: the connection reacts, and the loop carries that out.
    fn lost(&mut self, why: String) {
        if self.socket.take().is_some() {
            self.conn.handle_transport_closed(now(), Some(why));
        }
    }

    fn frame(&mut self, incoming: Incoming) {
        match incoming {
            // A malformed frame is reported by the connection and otherwise ignored.
            Incoming::Text(text) => drop(self.conn.handle_text(now(), &text)),
            Incoming::Closed(why) => {
                self.socket = None;
                self.conn.handle_transport_closed(now(), Some(why));
            }
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

async fn sleep(ms: Option<u64>) {
    match ms {
        Some(ms) => TimeoutFuture::new(u32::try_from(ms).unwrap_or(u32::MAX)).await,
        None => std::future::pending().await,
    }
}

async fn next_frame(socket: &mut Option<Socket>) -> Incoming {
    match socket {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}
