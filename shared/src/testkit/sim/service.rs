//! The simulated Ably service: it reads the frames connections send and answers as Ably's
//! protocol says, for one channel, with the faults the seed's [`Plan`] allows.
//!
//! - Connections: CONNECTED with `connectionDetails` (key, TTL, idle interval, size limit);
//!   a `resume` within the TTL keeps the connectionId (a new key each time); a refused one
//!   gets a new connectionId and error 80008. Token auth: an expired token gets ERROR 40142 on
//!   connect, and a token that expires while connected gets DISCONNECTED 40142. AUTH gets a
//!   second CONNECTED. Heartbeats when a link has been quiet for the idle interval.
//! - Publishing: creates get a serial, appends and updates a version serial (one tick
//!   counter, so both sort lexicographically); ACKs carry `res` serials; a frame resent with a
//!   msgSerial already processed on the connection is re-ACKed with the same result, and a
//!   message whose `id` was applied before is not applied again (idempotent publishing).
//! - Delivery: a create as stored; an append as its fragment with the append's own version
//!   serial and `extras` (verbatim), unless the attachment never got that message, when it is
//!   the aggregate as an update; an update as the aggregate. Every MESSAGE frame carries the
//!   channelSerial of its position.
//! - Attach: a fresh attach with `rewind` gets the last messages' aggregates (or, Sockudo
//!   style, each message's create and one update per version). A re-attach with a
//!   channelSerial on a resumed connection gets ATTACHED with RESUMED, then the messages after
//!   that position, replayed as they were published (appends as fragments); on a new
//!   connection, ATTACHED without RESUMED and nothing replayed. When the replay is deferred
//!   behind live deliveries (Sockudo's order), those carry the attach point's channelSerial
//!   until the replay is out, so a client's resume point never passes what it has not got.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::Value;

use crate::ids::{ChannelName, ChannelSerial, ConnectionId, ConnectionKey, MessageId, Serial};
use crate::protocol::{
    Action, ConnectionDetails, ErrorInfo, Flags, Message, MessageAction, MessageVersion,
    ProtocolMessage, PublishResult,
};
use crate::time::Instant;

use super::net::{Down, LinkId, Up};
use super::plan::{Plan, Rewind};
use super::rng::SimRng;
use super::trace::{clip, Actor, Trace};

/// The token has expired.
pub(super) const TOKEN_EXPIRED: u32 = 40142;
/// The connection cannot be resumed (its state expired): a new connection was made.
pub(super) const CONNECTION_EXPIRED: u32 = 80008;
/// The service failed to process a message.
pub(super) const INTERNAL_ERROR: u32 = 50001;
/// An append or update names a serial the channel does not hold.
pub(super) const UNKNOWN_SERIAL: u32 = 40400;
/// The request cannot be processed as sent.
pub(super) const INVALID_REQUEST: u32 = 40003;

/// The idle interval announced in CONNECTED, and the heartbeat period of a quiet link.
const MAX_IDLE_MS: u64 = 15_000;
/// How long a connection without a transport stays resumable.
const STATE_TTL_MS: u64 = 120_000;
/// Most messages a rewind replays.
const MAX_REWIND: usize = 100;
/// The largest message accepted.
const MAX_MESSAGE_SIZE: u64 = 65_536;
/// The modes granted on ATTACHED.
const MODES: u64 = Flags::PRESENCE | Flags::PUBLISH | Flags::SUBSCRIBE | Flags::PRESENCE_SUBSCRIBE;
/// The timestamp of instant 0, in ms since the Unix epoch.
const EPOCH_MS: i64 = 1_795_755_526_000;
/// Most NACKs one answer's updates get, so that the publisher's resends still land.
const MAX_UPDATE_NACKS: u32 = 2;
/// How long a skipped ACK waits for a later one to skip it before it is sent after all: a
/// frame is never left unanswered on a live connection (RTN7a).
const SKIPPED_ACK_LATE_MS: u64 = 2_000;

type Outcome = Result<Vec<Option<Serial>>, ErrorInfo>;

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum EntryKind {
    Create,
    Append,
    Update,
}

/// One accepted operation, in channel order.
#[derive(Clone, Debug)]
struct Entry {
    serial: Serial,
    kind: EntryKind,
    /// For an append: the fragment as live subscribers get it.
    fragment: Option<Message>,
    /// The message's aggregate just after this operation.
    aggregate: Message,
}

#[derive(Clone, Debug)]
struct Attachment {
    /// Live deliveries flow (false from a transport loss until the next ATTACH).
    active: bool,
    /// The channel position this attachment started at.
    first_position: usize,
    /// Serials its rewind backlog delivered.
    rewind_seen: BTreeSet<Serial>,
    /// Serials it has been delivered in some form.
    seen: BTreeSet<Serial>,
}

#[derive(Clone, Debug)]
struct Conn {
    id: ConnectionId,
    key: ConnectionKey,
    generation: u32,
    link: Option<LinkId>,
    lost_at: Option<Instant>,
    processed: BTreeMap<u64, Outcome>,
    attachment: Option<Attachment>,
    token_expires: Option<Instant>,
    /// When its messages of the last second were published, for the inbound rate.
    published: VecDeque<Instant>,
}

#[derive(Clone, Debug)]
struct Outbound {
    conn: ConnectionId,
    frames: Vec<ProtocolMessage>,
    flush_at: Option<Instant>,
    last_sent: Instant,
}

#[derive(Clone, Debug)]
struct Deferred {
    at: Instant,
    link: LinkId,
    from: usize,
    seen: BTreeSet<Serial>,
}

/// The service: one channel's messages, the connections and their links.
#[derive(Debug)]
pub(super) struct Service {
    channel: ChannelName,
    plan: Plan,
    rng: SimRng,
    faults_on: bool,
    tick: u64,
    next_conn: u64,
    messages: BTreeMap<Serial, Message>,
    log: Vec<Entry>,
    ids: BTreeMap<MessageId, Serial>,
    conns: BTreeMap<ConnectionId, Conn>,
    keys: BTreeMap<ConnectionKey, ConnectionId>,
    links: BTreeMap<LinkId, Outbound>,
    deferred: Vec<Deferred>,
    held: Vec<(Instant, LinkId, ProtocolMessage)>,
    /// ACKs skipped by the skip-ack fault: dropped once a later ACK or NACK goes out on the
    /// same link, sent late if none has by the instant given.
    skipped: Vec<(Instant, LinkId, ProtocolMessage)>,
    nacked_updates: BTreeMap<Serial, u32>,
    outbox: VecDeque<(LinkId, Down)>,
    /// Publishes refused as over the inbound rate, and publishes accepted.
    pub(super) over_rate: u64,
    pub(super) accepted: u64,
}

impl Service {
    /// A service for `channel` that injects the faults of `plan`.
    pub(super) fn new(channel: ChannelName, plan: Plan, rng: SimRng) -> Self {
        Self {
            channel,
            plan,
            rng,
            faults_on: true,
            tick: 0,
            next_conn: 0,
            messages: BTreeMap::new(),
            log: Vec::new(),
            ids: BTreeMap::new(),
            conns: BTreeMap::new(),
            keys: BTreeMap::new(),
            links: BTreeMap::new(),
            deferred: Vec::new(),
            held: Vec::new(),
            skipped: Vec::new(),
            nacked_updates: BTreeMap::new(),
            outbox: VecDeque::new(),
            over_rate: 0,
            accepted: 0,
        }
    }

    /// Stops injecting faults (past the horizon); pending deferred work still completes.
    pub(super) fn stop_faults(&mut self) {
        self.faults_on = false;
    }

    /// Something arrived on `link`.
    pub(super) fn handle_up(&mut self, now: Instant, link: LinkId, item: Up, trace: &mut Trace) {
        match item {
            Up::Open(url) => self.on_open(now, link, &url, trace),
            Up::Frame(frame) => self.on_frame(now, link, frame, trace),
            Up::Closed => {
                let lost = self.drop_link(now, link);
                note_lost(now, link, &lost, trace);
            }
        }
        self.flush(now);
    }

    /// Sends the frames of `frames` that are due at `now` (on links still open), each noted
    /// in the trace as `what`; gives back the ones not yet due.
    fn release_due(
        &mut self,
        now: Instant,
        frames: Vec<(Instant, LinkId, ProtocolMessage)>,
        what: &str,
        trace: &mut Trace,
    ) -> Vec<(Instant, LinkId, ProtocolMessage)> {
        let (due, later): (Vec<_>, Vec<_>) = frames.into_iter().partition(|(at, _, _)| *at <= now);
        for (_, link, frame) in due {
            if self.links.contains_key(&link) {
                trace.note(
                    now,
                    Actor::Service,
                    None,
                    format!("{what}: msgSerial {}", frame.msg_serial.map_or(0, |m| m.0)),
                );
                self.enqueue(now, link, frame);
            }
        }
        later
    }

    /// Time passed: released ACKs, deferred replays, buffered frames, token expiry,
    /// heartbeats.
    pub(super) fn handle_timeout(&mut self, now: Instant, trace: &mut Trace) {
        let held = std::mem::take(&mut self.held);
        self.held = self.release_due(now, held, "late ACK released", trace);
        let skipped = std::mem::take(&mut self.skipped);
        self.skipped = self.release_due(
            now,
            skipped,
            "skipped ACK sent late: no later ACK followed",
            trace,
        );
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| d.at <= now);
        self.deferred = later;
        for mut replay in due {
            if !self.links.contains_key(&replay.link) {
                continue;
            }
            let end = self.log.len();
            trace.note(
                now,
                Actor::Service,
                None,
                format!("deferred replay of positions {}..{end}", replay.from),
            );
            for index in replay.from..end {
                let frame = self.delivery(index, &mut replay.seen);
                self.enqueue(now, replay.link, frame);
            }
        }
        if self.faults_on {
            let expired: Vec<LinkId> = self
                .conns
                .values()
                .filter(|c| c.token_expires.is_some_and(|t| t <= now))
                .filter_map(|c| c.link)
                .collect();
            for link in expired {
                trace.note(
                    now,
                    Actor::Service,
                    None,
                    format!(
                        "token expired on link {}: DISCONNECTED {TOKEN_EXPIRED}",
                        link.0
                    ),
                );
                let frame = ProtocolMessage {
                    error: Some(ErrorInfo::new(TOKEN_EXPIRED, 401, "Token expired")),
                    ..ProtocolMessage::new(Action::DISCONNECTED)
                };
                self.enqueue(now, link, frame);
                self.close_link(now, link);
            }
        }
        let quiet: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, o)| o.frames.is_empty() && o.last_sent + ms(MAX_IDLE_MS) <= now)
            .map(|(l, _)| *l)
            .collect();
        for link in quiet {
            self.enqueue(now, link, ProtocolMessage::new(Action::HEARTBEAT));
        }
        self.flush(now);
    }

    /// When [`Self::handle_timeout`] is due next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let held = self
            .held
            .iter()
            .chain(&self.skipped)
            .map(|(at, _, _)| *at)
            .min();
        let deferred = self.deferred.iter().map(|d| d.at).min();
        let flush = self.links.values().filter_map(|o| o.flush_at).min();
        let heartbeat = self
            .links
            .values()
            .map(|o| o.last_sent + ms(MAX_IDLE_MS))
            .min();
        let tokens = self
            .conns
            .values()
            .filter(|c| self.faults_on && c.link.is_some())
            .filter_map(|c| c.token_expires)
            .min();
        [held, deferred, flush, heartbeat, tokens]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next frame (or close) to put on a link.
    pub(super) fn poll_transmit(&mut self) -> Option<(LinkId, Down)> {
        self.outbox.pop_front()
    }

    /// Whether nothing is held, deferred or buffered (heartbeats aside).
    pub(super) fn is_quiet(&self) -> bool {
        self.held.is_empty()
            && self.skipped.is_empty()
            && self.deferred.is_empty()
            && self.outbox.is_empty()
            && self.links.values().all(|o| o.frames.is_empty())
    }

    /// REST history: the latest version of every message, newest first.
    pub(super) fn history(&self) -> Vec<Message> {
        self.messages.values().rev().cloned().collect()
    }

    // ----- connections ------------------------------------------------------------------

    fn on_open(&mut self, now: Instant, link: LinkId, url: &str, trace: &mut Trace) {
        let query = parse_query(url);
        let token = query
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.clone());
        let expires = token.as_deref().and_then(token_expiry);
        if self.faults_on && expires.is_some_and(|t| t <= now) {
            trace.note(
                now,
                Actor::Service,
                None,
                format!(
                    "link {}: connect with an expired token: ERROR {TOKEN_EXPIRED}",
                    link.0
                ),
            );
            self.links
                .insert(link, Outbound::new(ConnectionId::new("-"), now));
            let frame = ProtocolMessage {
                error: Some(ErrorInfo::new(TOKEN_EXPIRED, 401, "Token expired")),
                ..ProtocolMessage::new(Action::ERROR)
            };
            self.enqueue(now, link, frame);
            self.close_link(now, link);
            return;
        }
        let resume = query
            .iter()
            .find(|(k, _)| k == "resume")
            .map(|(_, v)| ConnectionKey::new(v.clone()));
        let known = resume.as_ref().and_then(|k| self.keys.get(k)).cloned();
        let resumable = known.clone().filter(|id| {
            self.conns.get(id).is_some_and(|c| {
                c.link.is_some() || c.lost_at.is_some_and(|at| at + ms(STATE_TTL_MS) > now)
            })
        });
        let refused =
            resumable.is_some() && self.faults_on && self.rng.chance(self.plan.resume_fail);
        let mut error = None;
        let id = match resumable.filter(|_| !refused) {
            Some(id) => {
                if let Some(old) = self.conns.get(&id).and_then(|c| c.link) {
                    self.close_link(now, old);
                }
                id
            }
            None => {
                if let Some(old) = known {
                    if let Some(old_link) = self.conns.get(&old).and_then(|c| c.link) {
                        self.close_link(now, old_link);
                    }
                    self.conns.remove(&old);
                }
                if resume.is_some() {
                    error = Some(ErrorInfo::new(
                        CONNECTION_EXPIRED,
                        400,
                        "Unable to recover connection (connection expired)",
                    ));
                }
                self.next_conn += 1;
                let id = ConnectionId::new(format!("conn{}", self.next_conn));
                self.conns.insert(
                    id.clone(),
                    Conn {
                        id: id.clone(),
                        key: ConnectionKey::new(""),
                        generation: 0,
                        link: None,
                        lost_at: None,
                        processed: BTreeMap::new(),
                        attachment: None,
                        token_expires: None,
                        published: VecDeque::new(),
                    },
                );
                id
            }
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        self.keys.remove(&conn.key);
        conn.generation += 1;
        conn.key = ConnectionKey::new(format!("{}!k{}", conn.id, conn.generation));
        conn.link = Some(link);
        conn.lost_at = None;
        conn.token_expires = expires;
        if let Some(att) = &mut conn.attachment {
            att.active = false;
        }
        self.keys.insert(conn.key.clone(), id.clone());
        let frame = connected(conn, error.clone());
        trace.note(
            now,
            Actor::Service,
            None,
            match (&error, refused) {
                (None, _) if resume.is_some() => format!("link {}: resumed {}", link.0, id),
                (None, _) => format!("link {}: new connection {}", link.0, id),
                (Some(_), true) => format!(
                    "link {}: resume REFUSED (fault) → new {id}, {CONNECTION_EXPIRED}",
                    link.0
                ),
                (Some(_), false) => format!(
                    "link {}: resume impossible → new {id}, {CONNECTION_EXPIRED}",
                    link.0
                ),
            },
        );
        self.links.insert(link, Outbound::new(id, now));
        self.enqueue(now, link, frame);
    }

    fn on_frame(&mut self, now: Instant, link: LinkId, frame: ProtocolMessage, trace: &mut Trace) {
        let Some(conn_id) = self.links.get(&link).map(|o| o.conn.clone()) else {
            return;
        };
        match frame.action {
            Action::HEARTBEAT => {
                let reply = ProtocolMessage {
                    id: frame.id,
                    ..ProtocolMessage::new(Action::HEARTBEAT)
                };
                self.enqueue(now, link, reply);
            }
            Action::ATTACH => self.on_attach(now, link, &conn_id, &frame, trace),
            Action::DETACH => {
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.attachment = None;
                }
                let reply = ProtocolMessage {
                    channel: Some(self.channel.clone()),
                    ..ProtocolMessage::new(Action::DETACHED)
                };
                self.enqueue(now, link, reply);
            }
            Action::MESSAGE => self.on_publish(now, link, &conn_id, frame, trace),
            Action::CLOSE => {
                self.enqueue(now, link, ProtocolMessage::new(Action::CLOSED));
                self.close_link(now, link);
                if let Some(conn) = self.conns.remove(&conn_id) {
                    self.keys.remove(&conn.key);
                }
            }
            Action::AUTH => {
                let expires = frame
                    .auth
                    .as_ref()
                    .and_then(|a| token_expiry(&a.access_token));
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.token_expires = expires;
                    let reply = connected(conn, None);
                    self.enqueue(now, link, reply);
                }
            }
            Action::DISCONNECT => {
                let lost = self.drop_link(now, link);
                note_lost(now, link, &lost, trace);
            }
            _ => {}
        }
    }

    /// The client's socket closed (or the service noticed a cut). What was still buffered
    /// for it is lost; returns the ACKs and NACKs among it, whose outcomes the client then
    /// never learns.
    fn drop_link(&mut self, now: Instant, link: LinkId) -> Vec<String> {
        let Some(out) = self.links.remove(&link) else {
            return Vec::new();
        };
        let lost = out
            .frames
            .iter()
            .filter(|f| f.action == Action::ACK || f.action == Action::NACK)
            .map(|f| {
                let kind = if f.action == Action::ACK {
                    "ACK"
                } else {
                    "NACK"
                };
                format!("{kind} {}", f.msg_serial.map_or(0, |m| m.0))
            })
            .collect();
        if let Some(conn) = self
            .conns
            .get_mut(&out.conn)
            .filter(|c| c.link == Some(link))
        {
            conn.link = None;
            conn.lost_at = Some(now);
            if let Some(att) = &mut conn.attachment {
                att.active = false;
            }
        }
        lost
    }

    /// Sends what is buffered for `link`, then closes it.
    fn close_link(&mut self, now: Instant, link: LinkId) {
        if let Some(out) = self.links.get_mut(&link) {
            for frame in out.frames.drain(..) {
                self.outbox.push_back((link, Down::Frame(frame)));
            }
            self.outbox.push_back((link, Down::Closed));
        }
        self.drop_link(now, link);
    }

    // ----- channel ----------------------------------------------------------------------

    fn on_attach(
        &mut self,
        now: Instant,
        link: LinkId,
        conn_id: &ConnectionId,
        frame: &ProtocolMessage,
        trace: &mut Trace,
    ) {
        if self.faults_on
            && self.plan.attach_silence > 0
            && self.rng.chance(self.plan.attach_silence)
        {
            trace.note(
                now,
                Actor::Service,
                None,
                format!("link {}: ATTACH left unanswered (fault)", link.0),
            );
            return;
        }
        let position = self.log.len();
        let requested = frame
            .channel_serial
            .as_ref()
            .and_then(parse_position)
            .filter(|p| *p <= position);
        let has_attachment = self
            .conns
            .get(conn_id)
            .is_some_and(|c| c.attachment.is_some());
        let mut resumable = requested.is_some() && has_attachment;
        if resumable && self.faults_on && self.rng.chance(self.plan.attach_loss) {
            trace.note(
                now,
                Actor::Service,
                None,
                format!(
                    "link {}: cannot serve channelSerial (fault): ATTACHED without RESUMED",
                    link.0
                ),
            );
            resumable = false;
        }
        match requested.filter(|_| resumable) {
            Some(from) => self.resume_attachment(now, link, conn_id, from, trace),
            None if frame.channel_serial.is_some() => {
                self.set_attachment(conn_id, position, BTreeSet::new());
                trace.note(
                    now,
                    Actor::Service,
                    None,
                    format!("link {}: ATTACHED (continuity lost) at {position}", link.0),
                );
                let reply = attached_frame(&self.channel, position, 0);
                self.enqueue(now, link, reply);
            }
            None => {
                let wanted = frame
                    .params
                    .as_ref()
                    .and_then(|p| p.get("rewind"))
                    .and_then(|r| r.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(MAX_REWIND);
                let skip = self.messages.len().saturating_sub(wanted);
                let backlog: Vec<Serial> = self.messages.keys().skip(skip).cloned().collect();
                self.set_attachment(conn_id, position, backlog.iter().cloned().collect());
                let flags = if backlog.is_empty() {
                    0
                } else {
                    Flags::HAS_BACKLOG
                };
                trace.note(
                    now,
                    Actor::Service,
                    None,
                    format!(
                        "link {}: ATTACHED fresh at {position}, rewind {} messages ({:?})",
                        link.0,
                        backlog.len(),
                        self.plan.rewind
                    ),
                );
                let reply = attached_frame(&self.channel, position, flags);
                self.enqueue(now, link, reply);
                for serial in backlog {
                    for message in self.rewind_of(&serial) {
                        let frame = self.message_frame(position, message);
                        self.enqueue(now, link, frame);
                    }
                }
            }
        }
    }

    /// A re-attach the service can continue from position `from`: ATTACHED with RESUMED,
    /// then what the attachment missed, at once or (Sockudo's order) after live deliveries.
    fn resume_attachment(
        &mut self,
        now: Instant,
        link: LinkId,
        conn_id: &ConnectionId,
        from: usize,
        trace: &mut Trace,
    ) {
        let position = self.log.len();
        let defer = from < position && self.faults_on && self.rng.chance(self.plan.replay_defer);
        let delay = self
            .rng
            .range(self.plan.replay_defer_ms.0, self.plan.replay_defer_ms.1);
        let Some(att) = self
            .conns
            .get_mut(conn_id)
            .and_then(|c| c.attachment.as_mut())
        else {
            return;
        };
        // The client has everything before `from`: its rewind and what this attachment
        // delivered since it began.
        let mut seen = att.rewind_seen.clone();
        let start = att.first_position.min(from);
        for entry in self.log.get(start..from).unwrap_or_default() {
            seen.insert(entry.serial.clone());
        }
        att.seen = seen.clone();
        att.active = true;
        let backlog = if from < position {
            Flags::HAS_BACKLOG
        } else {
            0
        };
        trace.note(
            now,
            Actor::Service,
            None,
            format!(
                "link {}: ATTACHED RESUMED from position {from} (now {position}){}",
                link.0,
                if defer {
                    format!(", replay deferred {delay}ms behind live")
                } else {
                    String::new()
                }
            ),
        );
        // As Sockudo does, the ATTACHED names the position the client sent: if the replay
        // after it is lost, the next re-attach asks for it again.
        let reply = attached_frame(&self.channel, from, Flags::RESUMED | backlog);
        self.enqueue(now, link, reply);
        if defer {
            self.deferred.push(Deferred {
                at: now + ms(delay),
                link,
                from,
                seen,
            });
        } else {
            for index in from..position {
                let frame = self.delivery_for(conn_id, index);
                self.enqueue(now, link, frame);
            }
        }
    }

    /// Starts a new attachment for `conn_id` at `position`, having delivered `rewound`.
    fn set_attachment(
        &mut self,
        conn_id: &ConnectionId,
        position: usize,
        rewound: BTreeSet<Serial>,
    ) {
        if let Some(conn) = self.conns.get_mut(conn_id) {
            conn.attachment = Some(Attachment {
                active: true,
                first_position: position,
                seen: rewound.clone(),
                rewind_seen: rewound,
            });
        }
    }

    /// What a rewind replays of one message, in the plan's style.
    fn rewind_of(&self, serial: &Serial) -> Vec<Message> {
        match self.plan.rewind {
            Rewind::Aggregate => self.messages.get(serial).cloned().into_iter().collect(),
            Rewind::PerVersion => self
                .log
                .iter()
                .filter(|e| &e.serial == serial)
                .map(|e| e.aggregate.clone())
                .collect(),
        }
    }

    fn on_publish(
        &mut self,
        now: Instant,
        link: LinkId,
        conn_id: &ConnectionId,
        frame: ProtocolMessage,
        trace: &mut Trace,
    ) {
        let Some(msg_serial) = frame.msg_serial else {
            return;
        };
        let known = self
            .conns
            .get(conn_id)
            .and_then(|c| c.processed.get(&msg_serial.0))
            .cloned();
        if let Some(outcome) = known {
            trace.note(
                now,
                Actor::Service,
                None,
                format!(
                    "msgSerial {} seen before on {conn_id}: same answer again",
                    msg_serial.0
                ),
            );
            let reply = ack_frame(msg_serial.0, outcome);
            self.enqueue(now, link, reply);
            return;
        }
        let messages = frame.messages.unwrap_or_default();
        if self.over_rate(now, conn_id, messages.len()) {
            self.over_rate += 1;
            trace.note(
                now,
                Actor::Service,
                None,
                format!(
                    "NACK {} msgSerial {}: over the inbound rate of {}/s",
                    self.plan.rate_code,
                    msg_serial.0,
                    self.plan.inbound_rate.unwrap_or(0)
                ),
            );
            let outcome = Err(ErrorInfo::new(
                self.plan.rate_code,
                429,
                "maximum publish rate exceeded",
            ));
            if let Some(conn) = self.conns.get_mut(conn_id) {
                conn.processed.insert(msg_serial.0, outcome.clone());
            }
            self.enqueue(now, link, ack_frame(msg_serial.0, outcome));
            return;
        }
        self.accepted += 1;
        let mut serials = Vec::new();
        let mut error = None;
        let mut is_append = false;
        for msg in messages {
            is_append |= msg.action() == MessageAction::APPEND;
            if let Some(done) = msg.id.as_ref().and_then(|id| self.ids.get(id)) {
                trace.note(
                    now,
                    Actor::Service,
                    msg.serial.as_ref(),
                    format!(
                        "message id {} applied before: not applied again",
                        msg.id.as_ref().map_or("", MessageId::as_str)
                    ),
                );
                serials.push(Some(done.clone()));
                continue;
            }
            if self.faults_on && self.should_nack(&msg) {
                trace.note(
                    now,
                    Actor::Service,
                    msg.serial.as_ref(),
                    format!(
                        "NACK {INTERNAL_ERROR} (fault) msgSerial {} {:?} {}",
                        msg_serial.0,
                        msg.action(),
                        clip(msg.data.as_ref().and_then(Value::as_str).unwrap_or(""))
                    ),
                );
                error = Some(ErrorInfo::new(
                    INTERNAL_ERROR,
                    500,
                    "simulated failure to process the message",
                ));
                break;
            }
            let id = msg.id.clone();
            match self.apply(now, msg) {
                Ok(serial) => {
                    if let Some(id) = id {
                        self.ids.insert(id, serial.clone());
                    }
                    serials.push(Some(serial));
                    self.fan_out(now, trace);
                }
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        let outcome = match error {
            Some(err) => Err(err),
            None => Ok(serials),
        };
        if let Some(conn) = self.conns.get_mut(conn_id) {
            conn.processed.insert(msg_serial.0, outcome.clone());
        }
        let ok = outcome.is_ok();
        let reply = ack_frame(msg_serial.0, outcome);
        if ok && is_append && self.faults_on && self.rng.chance(self.plan.skip_ack) {
            trace.note(
                now,
                Actor::Service,
                None,
                format!(
                    "ACK for msgSerial {} skipped (fault): only a later ACK answers it",
                    msg_serial.0
                ),
            );
            self.skipped
                .push((now + ms(SKIPPED_ACK_LATE_MS), link, reply));
        } else if ok && self.faults_on && self.rng.chance(self.plan.hold_ack) {
            let at = now + ms(self.rng.range(1, 300));
            self.held.push((at, link, reply));
        } else {
            self.enqueue(now, link, reply);
        }
    }

    /// Whether `count` more messages from the connection would exceed the plan's inbound
    /// rate over the last second (enforced throughout, as Ably does); counts them if not.
    fn over_rate(&mut self, now: Instant, conn_id: &ConnectionId, count: usize) -> bool {
        let Some(rate) = self.plan.inbound_rate else {
            return false;
        };
        let Some(conn) = self.conns.get_mut(conn_id) else {
            return false;
        };
        while conn
            .published
            .front()
            .is_some_and(|at| now.saturating_since(*at) >= Duration::from_secs(1))
        {
            conn.published.pop_front();
        }
        if conn.published.len() + count > usize::try_from(rate).unwrap_or(usize::MAX) {
            return true;
        }
        conn.published.extend(std::iter::repeat_n(now, count));
        false
    }

    fn should_nack(&mut self, msg: &Message) -> bool {
        match msg.action() {
            MessageAction::APPEND => self.rng.chance(self.plan.nack),
            MessageAction::UPDATE => {
                let Some(serial) = msg.serial.clone() else {
                    return false;
                };
                let count = self.nacked_updates.entry(serial).or_insert(0);
                if *count < MAX_UPDATE_NACKS && self.rng.chance(self.plan.nack) {
                    *count += 1;
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    /// Applies one publish; returns the serial (create) or version serial (append, update).
    fn apply(&mut self, now: Instant, msg: Message) -> Result<Serial, ErrorInfo> {
        let timestamp = EPOCH_MS + i64::try_from(now.as_millis()).unwrap_or(0);
        let action = msg.action();
        if action == MessageAction::CREATE {
            let serial = self.mint();
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
            self.messages.insert(serial.clone(), stored.clone());
            self.log.push(Entry {
                serial: serial.clone(),
                kind: EntryKind::Create,
                fragment: None,
                aggregate: stored,
            });
            return Ok(serial);
        }
        let serial = msg
            .serial
            .clone()
            .ok_or_else(|| ErrorInfo::new(INVALID_REQUEST, 400, "message lacks a serial"))?;
        let mut next =
            self.messages.get(&serial).cloned().ok_or_else(|| {
                ErrorInfo::new(UNKNOWN_SERIAL, 404, format!("no message {serial}"))
            })?;
        let kind = match action {
            MessageAction::APPEND => {
                let (Some(base), Some(fragment)) = (text_of(&next), text_of(&msg)) else {
                    return Err(ErrorInfo::new(
                        INVALID_REQUEST,
                        400,
                        "only text can be appended",
                    ));
                };
                next.data = Some(Value::String(format!("{base}{fragment}")));
                EntryKind::Append
            }
            MessageAction::UPDATE => {
                if msg.data.is_some() {
                    next.data.clone_from(&msg.data);
                    next.encoding.clone_from(&msg.encoding);
                }
                if msg.name.is_some() {
                    next.name.clone_from(&msg.name);
                }
                EntryKind::Update
            }
            other => {
                return Err(ErrorInfo::new(
                    INVALID_REQUEST,
                    400,
                    format!("cannot publish {other:?}"),
                ));
            }
        };
        if msg.extras.is_some() {
            next.extras.clone_from(&msg.extras);
        }
        next.action = Some(MessageAction::UPDATE);
        let version = self.mint();
        next.version = Some(MessageVersion {
            serial: Some(version.clone()),
            timestamp: Some(timestamp),
            ..MessageVersion::default()
        });
        let fragment = (kind == EntryKind::Append).then(|| Message {
            id: msg.id.clone(),
            serial: Some(serial.clone()),
            action: Some(MessageAction::APPEND),
            name: next.name.clone(),
            client_id: next.client_id.clone(),
            data: msg.data.clone(),
            encoding: msg.encoding.clone(),
            extras: msg.extras.clone(),
            version: next.version.clone(),
            timestamp: next.timestamp,
            ..Message::default()
        });
        self.messages.insert(serial.clone(), next.clone());
        self.log.push(Entry {
            serial,
            kind,
            fragment,
            aggregate: next,
        });
        Ok(version)
    }

    /// Delivers the newest log entry to every active attachment.
    fn fan_out(&mut self, now: Instant, trace: &mut Trace) {
        let index = self.log.len() - 1;
        let targets: Vec<(ConnectionId, LinkId)> = self
            .conns
            .values()
            .filter(|c| c.attachment.as_ref().is_some_and(|a| a.active))
            .filter_map(|c| c.link.map(|l| (c.id.clone(), l)))
            .collect();
        for (conn_id, link) in targets {
            let mut frame = self.delivery_for(&conn_id, index);
            // A live delivery that overtakes a deferred replay must not move the client's
            // resume point past the messages still to be replayed (RTL15b: the channelSerial
            // of a delivery is where a re-attach continues from). It carries the attach
            // point instead, so a transport lost before the replay arrives gets it again.
            if let Some(from) = self
                .deferred
                .iter()
                .filter(|d| d.link == link)
                .map(|d| d.from)
                .min()
            {
                frame.channel_serial = Some(position_serial(from));
            }
            if !self.conflate(link, &frame) {
                self.enqueue(now, link, frame);
            } else if let Some(serial) = self.log.get(index).map(|e| e.serial.clone()) {
                trace.note(
                    now,
                    Actor::Service,
                    Some(&serial),
                    format!(
                        "conflated an append into the buffered one on link {}",
                        link.0
                    ),
                );
            }
        }
    }

    /// Merges `frame` into the last frame buffered for `link` when both are appends to one
    /// message: the data concatenated, the version, extras and channelSerial of the latest.
    fn conflate(&mut self, link: LinkId, frame: &ProtocolMessage) -> bool {
        if self.plan.conflate_ms == 0 || !self.faults_on {
            return false;
        }
        let Some(out) = self.links.get_mut(&link) else {
            return false;
        };
        let (Some(last), Some([next])) = (out.frames.last_mut(), frame.messages.as_deref()) else {
            return false;
        };
        let Some([prev]) = last.messages.as_deref_mut() else {
            return false;
        };
        if last.action != Action::MESSAGE
            || prev.action() != MessageAction::APPEND
            || next.action() != MessageAction::APPEND
            || prev.serial != next.serial
        {
            return false;
        }
        let (Some(a), Some(b)) = (text_of(prev), text_of(next)) else {
            return false;
        };
        prev.data = Some(Value::String(format!("{a}{b}")));
        prev.version.clone_from(&next.version);
        prev.id.clone_from(&next.id);
        if next.extras.is_some() {
            prev.extras.clone_from(&next.extras);
        }
        last.channel_serial.clone_from(&frame.channel_serial);
        true
    }

    /// Entry `index` as the attachment of `conn_id` gets it, noting the serial as seen.
    fn delivery_for(&mut self, conn_id: &ConnectionId, index: usize) -> ProtocolMessage {
        let mut seen = self
            .conns
            .get_mut(conn_id)
            .and_then(|c| c.attachment.as_mut())
            .map(|a| std::mem::take(&mut a.seen))
            .unwrap_or_default();
        let frame = self.delivery(index, &mut seen);
        if let Some(att) = self
            .conns
            .get_mut(conn_id)
            .and_then(|c| c.attachment.as_mut())
        {
            att.seen = seen;
        }
        frame
    }

    /// Entry `index` as a MESSAGE frame for an attachment that has seen `seen`.
    fn delivery(&self, index: usize, seen: &mut BTreeSet<Serial>) -> ProtocolMessage {
        let Some(entry) = self.log.get(index) else {
            return ProtocolMessage::new(Action::HEARTBEAT);
        };
        let message = match (&entry.fragment, entry.kind) {
            (Some(fragment), EntryKind::Append) if seen.contains(&entry.serial) => fragment.clone(),
            _ => entry.aggregate.clone(),
        };
        seen.insert(entry.serial.clone());
        self.message_frame(index + 1, message)
    }

    fn message_frame(&self, position: usize, message: Message) -> ProtocolMessage {
        ProtocolMessage {
            channel: Some(self.channel.clone()),
            channel_serial: Some(position_serial(position)),
            messages: Some(vec![message]),
            ..ProtocolMessage::new(Action::MESSAGE)
        }
    }

    fn mint(&mut self) -> Serial {
        self.tick += 1;
        Serial::new(format!("{:020}@sim", self.tick))
    }

    fn enqueue(&mut self, now: Instant, link: LinkId, frame: ProtocolMessage) {
        if frame.action == Action::ACK || frame.action == Action::NACK {
            // A later ACK or NACK on the link is what skips an earlier frame's ACK.
            let later = frame.msg_serial.map_or(0, |m| m.0);
            self.skipped.retain(|(_, l, skipped)| {
                *l != link || skipped.msg_serial.map_or(0, |m| m.0) >= later
            });
        }
        let wait = if self.faults_on {
            self.plan.conflate_ms
        } else {
            0
        };
        if let Some(out) = self.links.get_mut(&link) {
            out.frames.push(frame);
            if out.flush_at.is_none() {
                out.flush_at = Some(now + ms(wait));
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        for (link, out) in &mut self.links {
            if out.flush_at.is_some_and(|at| at <= now) {
                out.flush_at = None;
                out.last_sent = now;
                for frame in out.frames.drain(..) {
                    self.outbox.push_back((*link, Down::Frame(frame)));
                }
            }
        }
    }
}

impl Outbound {
    fn new(conn: ConnectionId, now: Instant) -> Self {
        Self {
            conn,
            frames: Vec::new(),
            flush_at: None,
            last_sent: now,
        }
    }
}

/// Traces the ACKs and NACKs a dropped link never carried.
fn note_lost(now: Instant, link: LinkId, lost: &[String], trace: &mut Trace) {
    if !lost.is_empty() {
        trace.note(
            now,
            Actor::Service,
            None,
            format!(
                "link {} gone: buffered {} never sent",
                link.0,
                lost.join(", ")
            ),
        );
    }
}

fn connected(conn: &Conn, error: Option<ErrorInfo>) -> ProtocolMessage {
    ProtocolMessage {
        connection_id: Some(conn.id.clone()),
        connection_details: Some(ConnectionDetails {
            connection_key: Some(conn.key.clone()),
            max_message_size: Some(MAX_MESSAGE_SIZE),
            connection_state_ttl: Some(STATE_TTL_MS),
            max_idle_interval: Some(MAX_IDLE_MS),
            ..ConnectionDetails::default()
        }),
        error,
        ..ProtocolMessage::new(Action::CONNECTED)
    }
}

fn attached_frame(channel: &ChannelName, position: usize, flags: u64) -> ProtocolMessage {
    ProtocolMessage {
        channel: Some(channel.clone()),
        channel_serial: Some(position_serial(position)),
        flags: Some(Flags(MODES | flags)),
        ..ProtocolMessage::new(Action::ATTACHED)
    }
}

fn ack_frame(msg_serial: u64, outcome: Outcome) -> ProtocolMessage {
    let (action, res, error) = match outcome {
        Ok(serials) => (Action::ACK, Some(vec![PublishResult { serials }]), None),
        Err(err) => (Action::NACK, None, Some(err)),
    };
    ProtocolMessage {
        msg_serial: Some(crate::ids::MsgSerial(msg_serial)),
        count: Some(1),
        res,
        error,
        ..ProtocolMessage::new(action)
    }
}

fn text_of(msg: &Message) -> Option<&str> {
    match &msg.data {
        None => Some(""),
        Some(Value::String(s)) => Some(s),
        Some(_) => None,
    }
}

fn position_serial(position: usize) -> ChannelSerial {
    ChannelSerial::new(format!("sim:{position:08}"))
}

fn parse_position(serial: &ChannelSerial) -> Option<usize> {
    serial.as_str().strip_prefix("sim:")?.parse().ok()
}

/// The token format the simulation's viewers use: `tok-<viewer>-<n>-<expiry ms>`.
pub(super) fn token(viewer: usize, n: u32, expires: Option<Instant>) -> String {
    format!(
        "tok-{viewer}-{n}-{}",
        expires.map_or(u64::MAX, Instant::as_millis)
    )
}

fn token_expiry(token: &str) -> Option<Instant> {
    let ms = token.rsplit('-').next()?.parse::<u64>().ok()?;
    (ms != u64::MAX).then(|| Instant::from_millis(ms))
}

/// The query parameters of a connect URL, percent-decoded.
fn parse_query(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
