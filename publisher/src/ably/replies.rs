//! What the driver owes the handles on its connection: each publish's outcome, each
//! attach's result, every event to the subscribers, the [`Snapshot`], and the log lines.
//! It hands news on; it decides nothing.

use std::collections::HashMap;

use shared::connection::{
    errors, ChannelState, Connection, ConnectionState, Event, PublishId, PublishOutcome,
};
use shared::protocol::ErrorInfo;
use shared::ChannelName;
use tokio::sync::{mpsc, oneshot, watch};

use super::handle::{Snapshot, REVIVE_AFTER};

/// The handles' waiting replies and listeners.
pub(super) struct Replies {
    snapshot: watch::Sender<Snapshot>,
    subscribers: Vec<mpsc::UnboundedSender<Event>>,
    publishes: HashMap<PublishId, oneshot::Sender<PublishOutcome>>,
    attaches: HashMap<ChannelName, Vec<oneshot::Sender<Result<(), ErrorInfo>>>>,
}

impl Replies {
    pub(super) fn new(snapshot: watch::Sender<Snapshot>) -> Self {
        Self {
            snapshot,
            subscribers: Vec::new(),
            publishes: HashMap::new(),
            attaches: HashMap::new(),
        }
    }

    pub(super) fn subscribe(&mut self, tx: mpsc::UnboundedSender<Event>) {
        self.subscribers.push(tx);
    }

    /// The outcome of publish `id` goes to `done`.
    pub(super) fn publish(&mut self, id: PublishId, done: oneshot::Sender<PublishOutcome>) {
        self.publishes.insert(id, done);
    }

    /// `channel`'s next attached (or failed) state goes to `done`.
    pub(super) fn attach(
        &mut self,
        channel: ChannelName,
        done: oneshot::Sender<Result<(), ErrorInfo>>,
    ) {
        self.attaches.entry(channel).or_default().push(done);
    }

    /// Hands one of the connection's events on, to whoever waits for it. A publish's
    /// result goes to that publish alone: one per token, it would otherwise be cloned to
    /// every subscriber and wake each one's task.
    pub(super) fn event(&mut self, event: Event, closing: bool) {
        if let Event::Published { id, outcome } = event {
            if let Some(done) = self.publishes.remove(&id) {
                let _ = done.send(outcome);
            }
            return;
        }
        match &event {
            Event::ChannelStateChanged {
                channel,
                current,
                reason,
                ..
            } => {
                if let Some(result) = attach_result(channel, *current, reason.as_ref()) {
                    for done in self.attaches.remove(channel).unwrap_or_default() {
                        let _ = done.send(result.clone());
                    }
                }
            }
            Event::TokenRequired { reason } => {
                tracing::info!(reason = ?reason.as_ref().map(|r| &r.message), "Ably asked for a new token");
            }
            Event::StateChanged {
                previous,
                current,
                reason,
            } => {
                tracing::info!(%previous, %current, reason = ?reason.as_ref().map(|r| &r.message), "Ably connection");
                if *current == ConnectionState::Failed && !closing {
                    tracing::warn!(
                        "the Ably connection failed; a new one starts in {REVIVE_AFTER:?}"
                    );
                }
            }
            Event::ResumeFailed { reason } => {
                tracing::warn!(reason = ?reason.as_ref().map(|r| &r.message), "Ably resume failed: new connection");
            }
            Event::Message { .. } | Event::Published { .. } => {}
        }
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Publishes the connection's state to the handles, if it changed.
    pub(super) fn note(&self, conn: &Connection) {
        let snapshot = Snapshot {
            state: conn.state(),
            reason: conn.error_reason().cloned(),
            limits: conn.limits().clone(),
            blocked: conn.blocked_channels().cloned().collect(),
        };
        self.snapshot.send_if_modified(|current| {
            let changed = *current != snapshot;
            *current = snapshot;
            changed
        });
    }
}

/// What a channel state means for a waiting attach: done, failed, or not yet.
fn attach_result(
    channel: &ChannelName,
    state: ChannelState,
    reason: Option<&ErrorInfo>,
) -> Option<Result<(), ErrorInfo>> {
    match state {
        ChannelState::Attached => Some(Ok(())),
        ChannelState::Failed | ChannelState::Detached | ChannelState::Suspended => {
            Some(Err(reason.cloned().unwrap_or_else(|| {
                ErrorInfo::new(
                    errors::CHANNEL_OPERATION_FAILED,
                    400,
                    format!("channel {channel} is {state}"),
                )
            })))
        }
        _ => None,
    }
}
