//! One answer of a session: its relay, its publishes in flight and the decisions its
//! outcomes call for.

use std::collections::VecDeque;

use crate::connection::errors::{self, APPENDS_NOT_ENABLED};
use crate::connection::PublishOutcome;
use crate::headers;
use crate::ids::{ChannelName, MessageId, Serial};
use crate::protocol::{ErrorInfo, Message};
use crate::relay::{PublishOp, Relay};
use crate::time::Instant;

use super::{PublishKind, Report, SessionConfig};

/// What to tell a user whose channel refuses appends (Ably error 93002).
pub const APPENDS_NOT_ENABLED_HELP: &str = "the Ably channel does not accept appends: in the \
     Ably dashboard, add a channel rule for this namespace (e.g. `ai`) with \"Message \
     annotations, updates, deletes, and appends\" enabled";

/// What a publish in flight was. Appends and updates carry their place in the answer's
/// sequence of publishes, so a refusal of an append that a later full-text update already
/// covers costs no repair.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Kind {
    Create,
    /// The replacement create of an answer whose create failed, born `failed`.
    Replacement,
    Append {
        /// Its number among the answer's publishes.
        seq: u64,
        /// Where its fragment starts in the answer's text, in bytes.
        start: usize,
    },
    Update {
        /// Its number among the answer's publishes.
        seq: u64,
    },
}

impl Kind {
    pub(super) fn publish_kind(self) -> PublishKind {
        match self {
            Self::Create | Self::Replacement => PublishKind::Create,
            Self::Append { .. } => PublishKind::Append,
            Self::Update { .. } => PublishKind::Update,
        }
    }
}

/// Where the search for a create with an unclear outcome stands.
#[derive(Clone, Debug, Default, PartialEq)]
enum Lookup {
    #[default]
    Idle,
    /// Waiting for the connection (a create still being resent has its chance), until then.
    Waiting { until: Instant, error: String },
    /// Handed to the driver.
    InFlight { error: String },
}

/// What a decision asks of the session besides the answer's own state.
#[derive(Debug, Default)]
pub(super) struct Effects {
    pub(super) created: Option<Result<Serial, String>>,
    pub(super) lookup: Option<(ChannelName, MessageId)>,
}

/// One answer's state besides what its relay keeps.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) relay: Relay,
    pub(super) channel: ChannelName,
    create_id: MessageId,
    /// Publishes handed out whose outcome has not come back.
    pub(super) pending: usize,
    /// [`super::Output::StopStream`] was given.
    pub(super) stream_stopped: bool,
    /// When the answer stops waiting for its last outcomes.
    pub(super) drain_deadline: Option<Instant>,
    /// Resends waiting for the budget.
    outbox: VecDeque<(Kind, Message)>,
    /// A resend waiting for the connection, given up at its instant.
    held: Option<(Kind, Message, Instant)>,
    create_deadline: Option<Instant>,
    /// The create, kept to be sent again if it is refused as too fast (until the create
    /// timeout).
    create_message: Option<Message>,
    lookup: Lookup,
    looked_up: bool,
    /// The create failed for good; what follows is the replacement born `failed`.
    create_failed: bool,
    /// [`super::Output::Created`] was given.
    announced: bool,
    /// Publishing cannot go on (93002, outcomes that never came).
    fatal: Option<String>,
    /// The drain timeout ended the answer.
    gave_up: bool,
    publish_error: Option<String>,
    /// The latest full-text update (or replacement), kept to send again.
    last_update: Option<Message>,
    update_resends: u32,
    /// Publishes taken from the relay so far, numbering each.
    sent: u64,
    /// The number of the latest full-text update taken.
    last_update_seq: u64,
    /// The highest version serial ACKed for the final update.
    final_version: Option<Serial>,
    /// The highest version serial ACKed for any other append or update.
    other_version: Option<Serial>,
    appends: u64,
    messages: u64,
    repairs: u64,
}

impl Answer {
    pub(super) fn new(relay: Relay, channel: ChannelName, create_id: MessageId) -> Self {
        Self {
            relay,
            channel,
            create_id,
            pending: 0,
            stream_stopped: false,
            drain_deadline: None,
            outbox: VecDeque::new(),
            held: None,
            create_deadline: None,
            create_message: None,
            lookup: Lookup::Idle,
            looked_up: false,
            create_failed: false,
            announced: false,
            fatal: None,
            gave_up: false,
            publish_error: None,
            last_update: None,
            update_resends: 0,
            sent: 0,
            last_update_seq: 0,
            final_version: None,
            other_version: None,
            appends: 0,
            messages: 0,
            repairs: 0,
        }
    }

    /// Whether a publish is ready to go (budget permitting).
    pub(super) fn has_publish(&self) -> bool {
        self.fatal.is_none() && (!self.outbox.is_empty() || self.relay.has_op())
    }

    /// The next publish: a resend first, then the relay's next operation.
    pub(super) fn next_publish(
        &mut self,
        now: Instant,
        config: &SessionConfig,
    ) -> Option<(Kind, Message)> {
        if self.fatal.is_some() {
            return None;
        }
        self.messages += 1;
        if let Some(resend) = self.outbox.pop_front() {
            return Some(resend);
        }
        let Some(op) = self.relay.poll_op() else {
            self.messages -= 1;
            return None;
        };
        self.sent += 1;
        let kind = match &op {
            PublishOp::Create(_) if self.create_failed => Kind::Replacement,
            PublishOp::Create(_) => Kind::Create,
            PublishOp::Append(append) => Kind::Append {
                seq: self.sent,
                start: append_start(append),
            },
            PublishOp::Update(_) => {
                self.last_update_seq = self.sent;
                Kind::Update { seq: self.sent }
            }
        };
        let mut message = op.into_message();
        match kind {
            Kind::Create => {
                // Our own id, so the create can be found on the channel if its ACK is lost.
                message.id = Some(self.create_id.clone());
                self.create_deadline = Some(now + config.create_timeout);
                self.create_message = Some(message.clone());
            }
            Kind::Append { .. } => self.appends += 1,
            Kind::Update { .. } | Kind::Replacement => {
                self.last_update = Some(message.clone());
                self.update_resends = 0;
            }
        }
        Some((kind, message))
    }

    /// Whether nothing more will happen: the answer is drained, or publishing cannot go on.
    pub(super) fn is_over(&self) -> bool {
        self.fatal.is_some()
            || (self.relay.is_finished()
                && self.pending == 0
                && self.outbox.is_empty()
                && self.held.is_none()
                && self.lookup == Lookup::Idle
                && !self.relay.has_op())
    }

    /// What the answer is waiting for, in words: for an operator, or a test's failure report.
    pub(super) fn describe(&self) -> String {
        let serial = self.relay.serial().map_or("no serial", |s| s.as_str());
        let mut parts = vec![format!(
            "{} on {}, {}, stream {}",
            serial,
            self.channel,
            self.relay.status(),
            if self.relay.is_finished() {
                "finished"
            } else {
                "running"
            },
        )];
        if self.pending > 0 {
            parts.push(format!("{} publishes awaiting their outcome", self.pending));
        }
        if !self.outbox.is_empty() {
            parts.push(format!("{} resends queued", self.outbox.len()));
        }
        if self.relay.has_op() {
            parts.push("relay has operations queued".to_owned());
        }
        if let Some((kind, _, until)) = &self.held {
            parts.push(format!(
                "{kind:?} held for the connection until {}ms",
                until.as_millis()
            ));
        }
        if self.lookup != Lookup::Idle {
            parts.push(format!("create lookup {:?}", self.lookup));
        }
        if let Some(at) = self.drain_deadline {
            parts.push(format!("drain deadline {}ms", at.as_millis()));
        }
        if let Some(fatal) = &self.fatal {
            parts.push(format!("fatal: {fatal}"));
        }
        parts.join("; ")
    }

    /// The announcement still owed to whoever waits for the create, if any.
    pub(super) fn unannounced(&mut self) -> Option<Result<Serial, String>> {
        if self.announced {
            return None;
        }
        self.announced = true;
        Some(match self.relay.serial() {
            Some(serial) => Ok(serial.clone()),
            None => Err(self
                .fatal
                .clone()
                .or_else(|| self.publish_error.clone())
                .unwrap_or_else(|| {
                    "the answer ended before its create was acknowledged".to_owned()
                })),
        })
    }

    /// When this answer's next deadline is due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let waiting = match &self.lookup {
            Lookup::Waiting { until, .. } => Some(*until),
            _ => None,
        };
        [
            self.relay.poll_timeout(),
            self.create_deadline
                .filter(|_| self.relay.serial().is_none()),
            self.held.as_ref().map(|(_, _, until)| *until),
            waiting,
            self.drain_deadline
                .filter(|_| self.pending > 0 || !self.outbox.is_empty()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Deadlines due at `now`.
    pub(super) fn handle_timeout(
        &mut self,
        now: Instant,
        config: &SessionConfig,
        connected: bool,
    ) -> Effects {
        let mut effects = Effects::default();
        if self.relay.serial().is_none() && self.create_deadline.is_some_and(|at| at <= now) {
            self.create_deadline = None;
            let error = format!(
                "no ACK for the answer's create within {:?}",
                config.create_timeout
            );
            self.create_refused(now, error, config, connected, &mut effects);
        }
        if self
            .held
            .as_ref()
            .is_some_and(|(_, _, until)| *until <= now)
        {
            self.held = None;
            self.publish_error = Some(format!(
                "an update was not sent again: no connection within {:?}",
                config.reconnect_wait
            ));
        }
        if let Lookup::Waiting { until, error } = &self.lookup {
            if *until <= now {
                // The connection is still down: the search will most likely fail, and the
                // answer end `failed`, but only the channel can say.
                let error = error.clone();
                self.start_lookup(error, &mut effects);
            }
        }
        if self.drain_deadline.is_some_and(|at| at <= now) {
            self.gave_up = self.pending > 0 || !self.outbox.is_empty();
            if self.pending > 0 {
                self.fatal = Some(format!(
                    "{} publishes had no ACK within {:?}",
                    self.pending, config.drain_timeout
                ));
            } else if !self.outbox.is_empty() {
                self.fatal = Some(format!(
                    "the last publishes could not be sent within {:?}",
                    config.drain_timeout
                ));
            }
        }
        effects
    }

    /// The connection is back: a held resend and a waiting lookup go.
    pub(super) fn release(&mut self, connected: bool) -> Effects {
        let mut effects = Effects::default();
        if !connected {
            return effects;
        }
        if let Some((kind, message, _)) = self.held.take() {
            self.outbox.push_back((kind, message));
        }
        if let Lookup::Waiting { error, .. } = &self.lookup {
            let error = error.clone();
            self.start_lookup(error, &mut effects);
        }
        effects
    }

    /// What the search for the create found.
    pub(super) fn handle_lookup(
        &mut self,
        now: Instant,
        found: Result<Option<Serial>, String>,
        config: &SessionConfig,
        connected: bool,
    ) -> Effects {
        let mut effects = Effects::default();
        let Lookup::InFlight { error } = std::mem::take(&mut self.lookup) else {
            return effects;
        };
        match found {
            Ok(Some(serial)) => self.created(now, serial, &mut effects),
            Ok(None) => self.create_refused(now, error, config, connected, &mut effects),
            Err(why) => {
                let error = format!("{error}; the channel could not be searched: {why}");
                self.create_refused(now, error, config, connected, &mut effects);
            }
        }
        effects
    }

    /// Applies one ACK or NACK.
    pub(super) fn settle(
        &mut self,
        now: Instant,
        kind: Kind,
        outcome: PublishOutcome,
        config: &SessionConfig,
        connected: bool,
    ) -> Effects {
        let mut effects = Effects::default();
        match (kind, outcome) {
            (Kind::Create, Ok(serials)) => match serials.into_iter().next().flatten() {
                Some(serial) => self.created(now, serial, &mut effects),
                None => {
                    let error = "the create's ACK carried no serial".to_owned();
                    self.create_refused(now, error, config, connected, &mut effects);
                }
            },
            (Kind::Create, Err(err)) if err.code == APPENDS_NOT_ENABLED => {
                let error = describe_refusal(&err);
                self.announce(Err(error.clone()), &mut effects);
                self.fatal = Some(error);
            }
            (Kind::Create, Err(err)) if errors::is_rate_limit(&err) => {
                // Refused as too fast: not stored. It goes again, with the same id, once
                // the session's lowered budget allows, until the create timeout.
                match self.create_message.clone() {
                    Some(create) => self.outbox.push_back((Kind::Create, create)),
                    None => {
                        self.create_refused(
                            now,
                            describe_refusal(&err),
                            config,
                            connected,
                            &mut effects,
                        );
                    }
                }
            }
            (Kind::Create, Err(err)) => {
                self.create_deadline = None;
                self.create_refused(now, describe_refusal(&err), config, connected, &mut effects);
            }
            (_, Err(err)) if err.code == APPENDS_NOT_ENABLED => {
                self.fatal = Some(describe_refusal(&err));
            }
            (Kind::Append { start, .. }, Err(err)) if errors::is_too_large(&err) => {
                self.relay.handle_too_large(now, start);
            }
            (Kind::Update { .. }, Err(err)) if errors::is_too_large(&err) => {
                let fits = self.relay.text().len() * 3 / 4;
                self.relay.handle_too_large(now, fits);
            }
            (Kind::Append { seq, .. }, Err(_)) if seq < self.last_update_seq => {
                // A full-text update sent after this append already carries its text.
            }
            (Kind::Append { .. }, Err(_)) => {
                self.repairs += 1;
                self.relay.handle_append_failed(now);
            }
            (Kind::Update { .. } | Kind::Replacement, Err(err)) if errors::is_rate_limit(&err) => {
                // Refused as too fast: it goes again once the lowered budget allows, without
                // counting against the resends; the drain timeout bounds it.
                self.resend(now, config, connected, false);
            }
            (Kind::Update { .. } | Kind::Replacement, Err(err))
                if worth_resending(&err) && self.update_resends < config.update_resends =>
            {
                // The connection failed or dropped the frame, or the server refused a
                // resent frame as a reused id: the whole text goes again once connected.
                self.resend(now, config, connected, true);
            }
            (Kind::Update { .. } | Kind::Replacement, Err(err)) => {
                self.publish_error =
                    Some(format!("an update was refused: {}", describe_refusal(&err)));
            }
            (Kind::Append { .. } | Kind::Update { .. }, Ok(serials)) => {
                self.note_version(now, kind, serials, config, connected);
            }
            (Kind::Replacement, Ok(_)) => {}
        }
        effects
    }

    /// The answer's report, once it is over.
    pub(super) fn report(&self) -> Report {
        let relay_headers = self.relay.headers();
        let mut report = Report {
            serial: self.relay.serial().cloned(),
            status: self.relay.status(),
            text: self.relay.text().to_owned(),
            detail: relay_headers
                .get(headers::ERROR)
                .or_else(|| relay_headers.get(headers::REASON))
                .cloned(),
            publish_error: self.publish_error.clone(),
            appends: self.appends,
            messages: self.messages,
            repairs: self.repairs,
            resends: self.update_resends,
            gave_up: self.gave_up,
            retries: 0,
        };
        if let Some(fatal) = &self.fatal {
            report.publish_error = Some(fatal.clone());
            if report.serial.is_none() {
                report.status = headers::Status::Failed;
            }
        }
        report
    }

    fn announce(&mut self, result: Result<Serial, String>, effects: &mut Effects) {
        if !self.announced {
            self.announced = true;
            effects.created = Some(result);
        }
    }

    fn created(&mut self, now: Instant, serial: Serial, effects: &mut Effects) {
        if self.relay.serial().is_some() || self.create_failed {
            return;
        }
        self.create_deadline = None;
        self.announce(Ok(serial.clone()), effects);
        self.relay.handle_created(now, serial);
    }

    /// The create's outcome says it failed, or nothing was heard in time. The server may
    /// have stored it all the same (an ACK lost with the connection, or a resent create
    /// refused as a reused id), so the channel is searched for it by id once; only when it
    /// is not there does the answer end `failed`, with a replacement create.
    fn create_refused(
        &mut self,
        now: Instant,
        error: String,
        config: &SessionConfig,
        connected: bool,
        effects: &mut Effects,
    ) {
        if self.relay.serial().is_some() || self.create_failed {
            return;
        }
        if config.lookups && !self.looked_up {
            self.looked_up = true;
            if connected {
                self.start_lookup(error, effects);
            } else {
                self.lookup = Lookup::Waiting {
                    until: now + config.reconnect_wait,
                    error,
                };
            }
            return;
        }
        self.announce(Err(error.clone()), effects);
        self.create_failed = true;
        self.relay.handle_create_failed(&error);
        self.publish_error = Some(error);
    }

    fn start_lookup(&mut self, error: String, effects: &mut Effects) {
        self.lookup = Lookup::InFlight { error };
        effects.lookup = Some((self.channel.clone(), self.create_id.clone()));
    }

    /// Sends the latest full-text update again: now if connected, else once the
    /// connection is back (or never, after `reconnect_wait`).
    fn resend(&mut self, now: Instant, config: &SessionConfig, connected: bool, counted: bool) {
        let Some(update) = self.last_update.clone() else {
            return;
        };
        if counted {
            self.update_resends += 1;
        }
        let kind = if self.create_failed {
            Kind::Replacement
        } else {
            Kind::Update {
                seq: self.last_update_seq,
            }
        };
        if connected {
            self.outbox.push_back((kind, update));
        } else {
            self.held = Some((kind, update, now + config.reconnect_wait));
        }
    }

    /// Keeps the highest version serial ACKed for the final update and for every other
    /// append or update of the answer. A publish whose outcome was lost with a connection
    /// is resent after a failed resume (RTN19a2) and may land after the final update,
    /// leaving history with a stray fragment on top of the full text; an ACK above the
    /// final update's version says so, and the final update goes out again.
    fn note_version(
        &mut self,
        now: Instant,
        kind: Kind,
        serials: Vec<Option<Serial>>,
        config: &SessionConfig,
        connected: bool,
    ) {
        let Some(version) = serials.into_iter().next().flatten() else {
            return;
        };
        let is_final = matches!(kind, Kind::Update { seq } if seq == self.last_update_seq)
            && self.relay.is_finished();
        let slot = if is_final {
            &mut self.final_version
        } else {
            &mut self.other_version
        };
        if slot.as_ref().is_none_or(|known| &version > known) {
            *slot = Some(version);
        }
        let overtaken = matches!(
            (&self.final_version, &self.other_version),
            (Some(last), Some(other)) if other > last
        );
        if overtaken && self.update_resends < config.update_resends {
            // The resend's own ACK decides anew.
            self.final_version = None;
            self.resend(now, config, connected, true);
        }
    }
}

/// Where an append's fragment starts in the answer's text: its `length` header less the
/// fragment's bytes.
fn append_start(append: &Message) -> usize {
    let fragment = append
        .data
        .as_ref()
        .and_then(|d| d.as_str())
        .map_or(0, str::len);
    append
        .header(headers::LENGTH)
        .and_then(headers::parse_length)
        .map_or(0, |length| length.saturating_sub(fragment))
}

/// Whether a refused update may succeed when sent again: not when the key lacks the
/// capability (401xx), the channel refuses appends and updates (93002) or the message is
/// too large (40009). A connection that failed or dropped the frame (800xx, 50001), or a
/// server that refuses a frame resent after a reconnect as a reused id (Sockudo: 40000), is
/// worth another try.
pub(super) fn worth_resending(err: &ErrorInfo) -> bool {
    !((40100..40200).contains(&err.code)
        || err.code == APPENDS_NOT_ENABLED
        || err.code == errors::MESSAGE_TOO_LARGE)
}

/// A refusal in words, with what to do about the known ones.
pub fn describe_refusal(err: &ErrorInfo) -> String {
    if err.code == APPENDS_NOT_ENABLED {
        format!(
            "{APPENDS_NOT_ENABLED_HELP} (Ably error {}: {})",
            err.code, err.message
        )
    } else {
        format!("{} (Ably error {})", err.message, err.code)
    }
}
