//! In-memory model of ONE Ably channel's delivery rules (ably-protocol §3.2 and §6), so tests
//! can run publisher operations → channel → subscribers without IO. A test double, not a
//! server: no connections, no frames, no auth, no clock.
//!
//! # What it models
//!
//! - [`SimChannel::publish`] applies the server semantics of §6.2. A create gets a new serial;
//!   an append, update or delete names an existing serial, gets a new version serial (greater
//!   than every serial minted before), and turns the stored message into its latest aggregate:
//!   fragments are concatenated, updates and deletes mix in `name`, `data` and `extras`.
//! - Live delivery to each subscriber: a create as stored; an append as its fragment (action
//!   APPEND, the original serial and name, the append's version serial and extras); an update
//!   or delete as the full latest version. The first append a subscriber gets for a serial it
//!   was never delivered arrives as the full aggregate (UPDATE) instead, as the Ably docs say.
//! - Rewind on subscribe: the last N messages in their latest aggregate form (UPDATE with the
//!   whole text when appended, CREATE when untouched), like real Ably; or, with
//!   [`RewindStyle::PerVersion`], a create followed by one update per version carrying the text
//!   accumulated so far, like Sockudo.
//! - [`SimChannel::history`]: one message per serial, latest version, in serial order.
//!
//! # Fault knobs
//!
//! Deliveries wait in a per-subscriber queue until [`SimChannel::drain`]. Tests script what
//! real deliveries do by editing the queue with explicit calls: [`SimChannel::conflate`] and
//! [`SimChannel::conflate_window`] (rollup), [`SimChannel::duplicate`],
//! [`SimChannel::drop_delivery`] followed by [`SimChannel::resync`] (what a resume or re-attach
//! gives), [`SimChannel::disconnect`] / [`SimChannel::reconnect`], [`SimChannel::inject`], and a
//! late [`SimChannel::subscribe`] with or without rewind.
//!
//! Serials are `{tick:014}-000@simchannel:000` with one tick counter for serials and version
//! serials, so they are zero-padded and strictly increasing in lexicographic order.
//! Timestamps are [`SimChannel::EPOCH_MS`] plus the tick, a logical clock.

mod build;
mod conflate;
mod pipeline;
pub mod sim;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::ops::Range;

use serde_json::Value;

use crate::ids::Serial;
use crate::protocol::{ErrorInfo, Message, MessageAction, MessageVersion, Payload};

pub use build::{append, create, delete, update, with_headers};
pub use pipeline::RelayDriver;

/// A subscriber of a [`SimChannel`].
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct SubscriberId(usize);

/// How a rewind backlog is replayed to a new subscriber.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub enum RewindStyle {
    /// Real Ably: each message once, in its latest aggregate form.
    #[default]
    Aggregate,
    /// Sockudo: each message's create, then one update (or delete) per later version with the
    /// text accumulated so far.
    PerVersion,
}

/// One channel's stored messages and its subscribers' delivery queues.
#[derive(Clone, Debug)]
pub struct SimChannel {
    tick: u64,
    max_message_size: usize,
    messages: BTreeMap<Serial, Stored>,
    subscribers: Vec<Subscriber>,
}

/// One message as the channel keeps it.
#[derive(Clone, Debug)]
struct Stored {
    /// The latest aggregate: CREATE when untouched, else UPDATE or DELETE.
    latest: Message,
    /// Every version in order, starting with the create, each with the text at that version.
    versions: Vec<Message>,
}

/// One attachment's view of the channel.
#[derive(Clone, Debug, Default)]
struct Subscriber {
    queue: Vec<Message>,
    /// Serials this attachment has been delivered (the server's view, drops notwithstanding).
    seen: BTreeSet<Serial>,
    connected: bool,
    /// Serials that changed while disconnected.
    missed: BTreeSet<Serial>,
}

impl Subscriber {
    /// Queues a delivery, or notes it as missed while disconnected.
    fn offer(&mut self, serial: &Serial, msg: Message) {
        if self.connected {
            self.seen.insert(serial.clone());
            self.queue.push(msg);
        } else {
            self.missed.insert(serial.clone());
        }
    }
}

impl Default for SimChannel {
    fn default() -> Self {
        Self::new()
    }
}

impl SimChannel {
    /// Most messages a rewind replays, as on Ably.
    pub const MAX_REWIND: usize = 100;
    /// Default cap on a message's size, as on Ably's free and standard packages.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
    /// The timestamp of tick 0, in ms since the Unix epoch (a fixed, plausible date).
    pub const EPOCH_MS: i64 = 1_795_755_526_000;

    /// An empty channel with no subscribers.
    pub fn new() -> Self {
        Self {
            tick: 0,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            messages: BTreeMap::new(),
            subscribers: Vec::new(),
        }
    }

    /// Sets the largest aggregate message accepted (error 40009 beyond it).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Applies one publisher operation and fans it out to subscribers.
    ///
    /// Returns the new serial for a create, and the new version serial for an append, update
    /// or delete. Errors: 40003 for a missing serial or an action that cannot be published,
    /// 40400 for an unknown serial, 40013 for an append whose data cannot be concatenated
    /// (JSON, or text onto bytes), 40009 when the result exceeds the size cap. A failed
    /// operation changes nothing.
    pub fn publish(&mut self, msg: Message) -> Result<Serial, ErrorInfo> {
        match msg.action() {
            MessageAction::CREATE => self.publish_create(msg),
            MessageAction::APPEND | MessageAction::UPDATE | MessageAction::DELETE => {
                self.publish_change(msg)
            }
            other => Err(ErrorInfo::new(
                40003,
                400,
                format!("a message with action {other:?} cannot be published"),
            )),
        }
    }

    /// Attaches a new subscriber with the real-Ably rewind form; see [`Self::subscribe_with`].
    pub fn subscribe(&mut self, rewind: Option<usize>) -> SubscriberId {
        self.subscribe_with(rewind, RewindStyle::Aggregate)
    }

    /// Attaches a new subscriber. With `rewind`, its queue starts with the last `rewind`
    /// messages (at most [`Self::MAX_REWIND`]), oldest first, replayed in `style`.
    pub fn subscribe_with(&mut self, rewind: Option<usize>, style: RewindStyle) -> SubscriberId {
        let count = rewind.unwrap_or(0).min(Self::MAX_REWIND);
        let skip = self.messages.len().saturating_sub(count);
        let mut subscriber = Subscriber {
            connected: true,
            ..Subscriber::default()
        };
        for (serial, stored) in self.messages.iter().skip(skip) {
            subscriber.seen.insert(serial.clone());
            match style {
                RewindStyle::Aggregate => subscriber.queue.push(stored.latest.clone()),
                RewindStyle::PerVersion => subscriber.queue.extend(stored.versions.iter().cloned()),
            }
        }
        self.subscribers.push(subscriber);
        SubscriberId(self.subscribers.len() - 1)
    }

    /// Takes every delivery queued for `sub`, oldest first.
    pub fn drain(&mut self, sub: SubscriberId) -> Vec<Message> {
        self.subscriber_mut(sub)
            .map(|s| std::mem::take(&mut s.queue))
            .unwrap_or_default()
    }

    /// The deliveries queued for `sub`, oldest first.
    pub fn pending(&self, sub: SubscriberId) -> &[Message] {
        self.subscribers
            .get(sub.0)
            .map_or(&[], |s| s.queue.as_slice())
    }

    /// Rolls up `sub`'s whole queue as Ably's conflation may; see [`Self::conflate_window`].
    pub fn conflate(&mut self, sub: SubscriberId) -> usize {
        self.conflate_window(sub, 0..usize::MAX)
    }

    /// Rolls up the queued deliveries in `window` (clamped to the queue) per serial, the way
    /// Ably's conflation may, and returns how many deliveries it removed:
    ///
    /// - appends that follow each other for one serial merge into one append, with the data
    ///   concatenated and the latest version serial and extras;
    /// - an append that follows an update or delete of its serial is folded into it;
    /// - an update or delete supersedes the append, update or delete before it;
    /// - a create is never merged, and neither is anything whose version serial does not
    ///   move forward (a duplicate), nor data that cannot be concatenated.
    ///
    /// Deliveries of other serials may sit in between; the merged delivery takes the earlier
    /// position.
    pub fn conflate_window(&mut self, sub: SubscriberId, window: Range<usize>) -> usize {
        self.subscriber_mut(sub)
            .map_or(0, |s| conflate::conflate(&mut s.queue, window))
    }

    /// Copies the delivery at `index` of `sub`'s queue to position `to` (clamped to after
    /// `index` and to the end), as a resume overlap or a retried frame would. Returns whether
    /// there was a delivery to copy.
    pub fn duplicate(&mut self, sub: SubscriberId, index: usize, to: usize) -> bool {
        let Some(queue) = self.subscriber_mut(sub).map(|s| &mut s.queue) else {
            return false;
        };
        let Some(copy) = queue.get(index).cloned() else {
            return false;
        };
        let to = to.clamp(index + 1, queue.len());
        queue.insert(to, copy);
        true
    }

    /// Removes the delivery at `index` of `sub`'s queue: it is lost in transit. The channel
    /// still counts it as delivered; follow with [`Self::resync`] to model the resume.
    pub fn drop_delivery(&mut self, sub: SubscriberId, index: usize) -> Option<Message> {
        let queue = &mut self.subscriber_mut(sub)?.queue;
        (index < queue.len()).then(|| queue.remove(index))
    }

    /// Queues the latest aggregate of `serial` for `sub`, as a resume or re-attach delivers
    /// it (UPDATE with the whole text once anything was applied). Returns whether both exist.
    pub fn resync(&mut self, sub: SubscriberId, serial: &Serial) -> bool {
        let Some(latest) = self.messages.get(serial).map(|s| s.latest.clone()) else {
            return false;
        };
        let Some(subscriber) = self.subscriber_mut(sub) else {
            return false;
        };
        subscriber.seen.insert(serial.clone());
        subscriber.queue.push(latest);
        true
    }

    /// Queues an arbitrary message for `sub`, such as a stale copy. Returns whether `sub`
    /// exists.
    pub fn inject(&mut self, sub: SubscriberId, msg: Message) -> bool {
        self.subscriber_mut(sub)
            .map(|s| s.queue.push(msg))
            .is_some()
    }

    /// Stops live deliveries to `sub` (its transport dropped). What is already queued stays.
    pub fn disconnect(&mut self, sub: SubscriberId) {
        if let Some(subscriber) = self.subscriber_mut(sub) {
            subscriber.connected = false;
        }
    }

    /// Resumes live deliveries to `sub`, first queueing the latest aggregate of every serial
    /// that changed while it was away, in serial order.
    pub fn reconnect(&mut self, sub: SubscriberId) {
        let Some(subscriber) = self.subscribers.get_mut(sub.0) else {
            return;
        };
        subscriber.connected = true;
        for serial in std::mem::take(&mut subscriber.missed) {
            if let Some(stored) = self.messages.get(&serial) {
                subscriber.queue.push(stored.latest.clone());
                subscriber.seen.insert(serial);
            }
        }
    }

    /// One message per serial, in its latest version, in serial order (REST history read
    /// forwards).
    pub fn history(&self) -> Vec<Message> {
        self.messages.values().map(|s| s.latest.clone()).collect()
    }

    /// The latest version of one message (REST getMessage).
    pub fn message(&self, serial: &Serial) -> Option<&Message> {
        self.messages.get(serial).map(|s| &s.latest)
    }

    /// Every version of one message, starting with the create, each with its data at that
    /// version (appends included, unlike Ably's version history).
    pub fn versions(&self, serial: &Serial) -> &[Message] {
        self.messages
            .get(serial)
            .map_or(&[], |s| s.versions.as_slice())
    }

    /// How many subscribers have been attached.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    fn subscriber_mut(&mut self, sub: SubscriberId) -> Option<&mut Subscriber> {
        self.subscribers.get_mut(sub.0)
    }

    /// The next serial: one counter for serials and version serials keeps both increasing.
    fn mint(&mut self) -> (Serial, i64) {
        self.tick += 1;
        let timestamp = i64::try_from(self.tick).map_or(i64::MAX, |t| Self::EPOCH_MS + t);
        (
            Serial::new(format!("{:014}-000@simchannel:000", self.tick)),
            timestamp,
        )
    }

    fn check_size(&self, msg: &Message) -> Result<(), ErrorInfo> {
        let size = msg.wire_size();
        if size > self.max_message_size {
            return Err(ErrorInfo::new(
                40009,
                413,
                format!(
                    "message of {size} bytes exceeds the {}-byte limit",
                    self.max_message_size
                ),
            ));
        }
        Ok(())
    }

    fn publish_create(&mut self, msg: Message) -> Result<Serial, ErrorInfo> {
        self.check_size(&msg)?;
        let (serial, timestamp) = self.mint();
        let stored = Message {
            serial: Some(serial.clone()),
            action: Some(MessageAction::CREATE),
            version: Some(MessageVersion {
                serial: Some(serial.clone()),
                timestamp: Some(timestamp),
                ..MessageVersion::default()
            }),
            timestamp: Some(timestamp),
            size: None,
            ..msg
        };
        for subscriber in &mut self.subscribers {
            subscriber.offer(&serial, stored.clone());
        }
        self.messages.insert(
            serial.clone(),
            Stored {
                latest: stored.clone(),
                versions: vec![stored],
            },
        );
        Ok(serial)
    }

    fn publish_change(&mut self, msg: Message) -> Result<Serial, ErrorInfo> {
        let action = msg.action();
        let serial = msg
            .serial
            .clone()
            .ok_or_else(|| ErrorInfo::new(40003, 400, "message lacks a serial"))?;
        let stored = self.messages.get(&serial).ok_or_else(|| {
            ErrorInfo::new(40400, 404, format!("no message with serial {serial}"))
        })?;
        let mut next = stored.latest.clone();
        if action == MessageAction::APPEND {
            let (data, encoding) = join_payloads(&next, &msg).ok_or_else(|| {
                ErrorInfo::new(
                    40013,
                    400,
                    "append data cannot be concatenated to the message",
                )
            })?;
            next.data = data;
            next.encoding = encoding;
            if msg.extras.is_some() {
                next.extras.clone_from(&msg.extras);
            }
            if next.action() != MessageAction::DELETE {
                next.action = Some(MessageAction::UPDATE);
            }
        } else {
            if msg.name.is_some() {
                next.name.clone_from(&msg.name);
            }
            if msg.data.is_some() {
                next.data.clone_from(&msg.data);
                next.encoding.clone_from(&msg.encoding);
            }
            if msg.extras.is_some() {
                next.extras.clone_from(&msg.extras);
            }
            next.action = Some(action);
        }
        self.check_size(&next)?;

        let (version_serial, timestamp) = self.mint();
        let operation = msg.version.clone().unwrap_or_default();
        next.version = Some(MessageVersion {
            serial: Some(version_serial.clone()),
            timestamp: Some(timestamp),
            client_id: operation.client_id,
            description: operation.description,
            metadata: operation.metadata,
        });
        let fragment = (action == MessageAction::APPEND).then(|| Message {
            serial: Some(serial.clone()),
            action: Some(MessageAction::APPEND),
            name: next.name.clone(),
            client_id: next.client_id.clone(),
            data: msg.data,
            encoding: msg.encoding,
            extras: msg.extras,
            version: next.version.clone(),
            timestamp: next.timestamp,
            ..Message::default()
        });
        for subscriber in &mut self.subscribers {
            match &fragment {
                Some(fragment) if subscriber.seen.contains(&serial) => {
                    subscriber.offer(&serial, fragment.clone());
                }
                _ => subscriber.offer(&serial, next.clone()),
            }
        }
        if let Some(stored) = self.messages.get_mut(&serial) {
            stored.latest = next.clone();
            stored.versions.push(next);
        }
        Ok(version_serial)
    }
}

/// The `data` and `encoding` of `base`'s payload followed by `fragment`'s: text onto text, or
/// bytes onto bytes. `None` when the two cannot be concatenated.
fn join_payloads(base: &Message, fragment: &Message) -> Option<(Option<Value>, Option<String>)> {
    let joined = match (base.payload().ok()?, fragment.payload().ok()?) {
        (Payload::Empty, Payload::Empty) => Payload::Empty,
        (Payload::Empty, Payload::Text(b)) => Payload::Text(b),
        (Payload::Text(a), Payload::Empty) => Payload::Text(a),
        (Payload::Text(a), Payload::Text(b)) => Payload::Text(a + &b),
        (Payload::Empty, Payload::Binary(b)) => Payload::Binary(b),
        (Payload::Binary(a), Payload::Empty) => Payload::Binary(a),
        (Payload::Binary(mut a), Payload::Binary(b)) => {
            a.extend_from_slice(&b);
            Payload::Binary(a)
        }
        _ => return None,
    };
    let mut carrier = Message::default();
    carrier.set_payload(joined);
    Some((carrier.data, carrier.encoding))
}
