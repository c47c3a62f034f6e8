//! The tokio loop around the sans-IO `Connection`: it reads the socket and the handles'
//! commands, calls the connection, writes what it returns and sleeps until its deadline.
//!
//! One task owns the connection. Opening a socket runs beside the loop (a future it polls),
//! writing and closing run in the socket's own task, so the loop never waits on any of them:
//! how long an open may take, and what to do when it fails, are the connection's decisions
//! (its connect timer), not the driver's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shared::connection::{Connection, ConnectionState, Io};
use shared::Instant;
use tokio::sync::mpsc;

use super::handle::{Command, TokenSource};
use super::replies::Replies;
use super::socket::{Incoming, Socket};

type Opening = Pin<Box<dyn Future<Output = Result<Socket, String>> + Send>>;

pub(super) struct Driver {
    conn: Connection,
    socket: Option<Socket>,
    /// A socket being opened, for the transport the connection asked for last.
    opening: Option<Opening>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For token fetches, which report back as commands.
    self_commands: mpsc::UnboundedSender<Command>,
    replies: Replies,
    tokens: Option<Arc<dyn TokenSource>>,
    epoch: tokio::time::Instant,
    closing: bool,
}

impl Driver {
    pub(super) fn new(
        conn: Connection,
        commands: mpsc::UnboundedReceiver<Command>,
        self_commands: mpsc::UnboundedSender<Command>,
        replies: Replies,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Self {
        Self {
            conn,
            socket: None,
            opening: None,
            commands,
            self_commands,
            replies,
            tokens,
            epoch: tokio::time::Instant::now(),
            closing: false,
        }
    }

    /// Read, call the core, write what it returns, sleep until its deadline; until closed.
    pub(super) async fn run(mut self) {
        self.conn.connect(self.now());
        loop {
            self.write();
            let over = matches!(
                self.conn.state(),
                ConnectionState::Closed | ConnectionState::Failed
            );
            if self.closing && over {
                return;
            }
            let deadline = self.conn.poll_timeout();
            // Check the clock first: an elapsed sleep may still report pending under
            // tokio's cooperative budget.
            if deadline.is_some_and(|at| at <= self.now()) {
                self.conn.handle_timeout(self.now());
                continue;
            }
            let sleep_until = deadline.map(|at| self.epoch + Duration::from_millis(at.as_millis()));
            tokio::select! {
                // The driver holds a sender itself, so the commands never end.
                Some(command) = self.commands.recv() => self.command(command),
                frame = next_frame(&mut self.socket) => self.frame(frame),
                opened = next_open(&mut self.opening) => self.opened(opened),
                () = crate::wait::sleep_until(sleep_until) => self.conn.handle_timeout(self.now()),
            }
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command.apply(&mut self.conn, now, &mut self.replies) {
            Some(Command::Cut) => {
                if let Some(socket) = self.socket.take() {
                    socket.cut();
                    let why = Some("transport cut".to_owned());
                    self.conn.handle_transport_closed(now, why);
                }
            }
            Some(Command::Close) => {
                self.closing = true;
                self.conn.close(now);
            }
            _ => {}
        }
    }

    fn frame(&mut self, incoming: Incoming) {
        let now = self.now();
        match incoming {
            Incoming::Text(text) => {
                if let Err(err) = self.conn.handle_text(now, &text) {
                    tracing::warn!(error = %err, "ignored a malformed frame from Ably");
                }
            }
            Incoming::Closed(why) => {
                self.socket = None;
                self.conn.handle_transport_closed(now, why);
            }
        }
    }

    fn opened(&mut self, opened: Result<Socket, String>) {
        self.opening = None;
        match opened {
            Ok(socket) => self.socket = Some(socket),
            Err(reason) => self.conn.handle_transport_closed(self.now(), Some(reason)),
        }
    }

    /// Carries out everything the connection asked for: frames queued on the socket, opens
    /// started, closes handed to the socket's task, events handed on, the snapshot noted.
    fn write(&mut self) {
        while let Some(io) = self.conn.poll_io() {
            match io {
                Io::Open { url } => {
                    self.socket = None;
                    self.opening = Some(Box::pin(Socket::open(url)));
                }
                Io::Send(text) => {
                    if let Some(socket) = &self.socket {
                        socket.send(text);
                    }
                }
                Io::Lost(why) => self.lost(why),
                Io::Close => (self.opening, self.socket) = (None, None),
                Io::FetchToken => self.fetch_token(),
                Io::Event(event) => self.replies.event(event, self.closing),
            }
        }
        self.replies.note(&self.conn);
    }

    /// The socket is gone: the connection reacts (reconnect, requeue), and the loop carries
    /// that out.
    fn lost(&mut self, why: String) {
        if self.socket.take().is_some() {
            let now = self.now();
            self.conn.handle_transport_closed(now, Some(why));
        }
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

async fn next_frame(socket: &mut Option<Socket>) -> Incoming {
    match socket {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}

async fn next_open(opening: &mut Option<Opening>) -> Result<Socket, String> {
    match opening {
        Some(open) => open.await,
        None => std::future::pending().await,
    }
}
