//! The cloneable handle on one Ably connection's driver task: commands in (attach,
//! publish, subscribe, cut, close), results out (a [`Published`] future per publish, a
//! [`Subscription`] per listener, a [`Snapshot`] of the connection's state), and what each
//! command asks of the connection, which the driver's loop applies.
//!
//! Publishes are pipelined (each returns a [`Published`] future, awaited when the caller
//! wants the ACK), so many answers share one connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shared::connection::{
    AttachOptions, Auth, ChannelState, Config, Connection, ConnectionState, Event, Limits,
    PublishOutcome,
};
use shared::protocol::{ErrorInfo, Message};
use shared::{ChannelName, Instant};
use tokio::sync::{mpsc, oneshot, watch};

use super::driver::Driver;
use super::replies::Replies;

/// Where to get a fresh token when the connection needs one (token auth).
pub trait TokenSource: Send + Sync + 'static {
    /// A new token string, or a readable reason why none could be had.
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// How long a `failed` connection waits before the core starts a new one (its revival
/// policy, which the daemon turns on). A daemon runs for months: whatever failed it (a
/// server error, a revoked key being restored), it keeps trying, slowly.
pub(super) const REVIVE_AFTER: Duration = Duration::from_secs(15);

/// The connection as last seen by the driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub state: ConnectionState,
    pub reason: Option<ErrorInfo>,
    /// The limits the server announced in CONNECTED (or the defaults before any).
    pub limits: Limits,
    /// The channels that refuse publishes now (SUSPENDED or FAILED), in name order.
    pub blocked: Vec<ChannelName>,
}

pub(super) enum Command {
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

impl Command {
    /// Carries out a handle's command on the connection, its reply owed through `replies`;
    /// what is the socket's to do (a cut, a close) comes back for the driver.
    pub(super) fn apply(
        self,
        conn: &mut Connection,
        now: Instant,
        replies: &mut Replies,
    ) -> Option<Self> {
        match self {
            Self::Attach(channel, _, done)
                if conn.channel_state(&channel) == ChannelState::Attached =>
            {
                let _ = done.send(Ok(()));
            }
            Self::Attach(channel, options, done) => {
                match conn.attach(now, channel.clone(), options) {
                    Ok(()) => replies.attach(channel, done),
                    Err(err) => drop(done.send(Err(err.to_error_info()))),
                }
            }
            Self::Detach(channel) => conn.detach(now, &channel),
            Self::Publish(channel, messages, done) => match conn.publish(now, &channel, messages) {
                Ok(id) => replies.publish(id, done),
                Err(err) => drop(done.send(Err(err.to_error_info()))),
            },
            Self::Subscribe(tx) => replies.subscribe(tx),
            Self::Token(Ok(token)) => conn.set_token(now, token),
            Self::Token(Err(reason)) => {
                tracing::warn!(%reason, "could not get an Ably token");
                conn.handle_token_fetch_failed(now, reason);
            }
            Self::Cut | Self::Close => return Some(self),
        }
        None
    }
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
            limits: Limits::default(),
            blocked: Vec::new(),
        });
        let driver = Driver::new(
            Connection::new(config),
            command_rx,
            commands.clone(),
            Replies::new(snapshot_tx),
            tokens,
        );
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

    /// Every event from now on (messages on attached channels, state changes), except
    /// publish results: each goes to its own publish's [`Published`].
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

pub(super) fn describe(snapshot: &Snapshot) -> String {
    match &snapshot.reason {
        Some(reason) => format!(
            "Ably connection {}: {} (code {})",
            snapshot.state, reason.message, reason.code
        ),
        None => format!("Ably connection {}", snapshot.state),
    }
}

pub(super) fn stopped() -> ErrorInfo {
    ErrorInfo::new(80000, 500, "the Ably driver stopped")
}
