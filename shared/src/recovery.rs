//! Answers whose publisher died: the ledger of answers in flight, and the final update a
//! sweeper publishes for one whose lease lapsed.
//!
//! ```text
//!  publisher: begun{channel, id} ─► ledger channel ◄─ ended{channel, id}   (refreshed while streaming)
//!  sweeper:   ledger history ─► open entries ─► each answer's latest version (history by id)
//!             ─► judge: Live | Over | Lost(final update: text so far, `failed`)
//!             ─► Lost with a `sequence` header: claimed{entry, by} on the ledger, and the
//!                oldest claim's sweeper carries the answer on (continuation)
//! ```
//!
//! The ledger lives on Ably, not in the daemon, so a restarted daemon or any other replica
//! finds what a dead one left. Its channel lies outside the namespace browsers get tokens
//! for, since it names every conversation with an answer in flight.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::headers::{self, Status};
use crate::ids::{ChannelName, MessageId};
use crate::lease;
use crate::protocol::{Message, MessageAction};
use crate::relay::Continuation;

/// Name of the ledger message saying an answer is in flight (sent again while it streams).
pub const BEGUN_NAME: &str = "begun";
/// Name of the ledger message saying an answer has ended.
pub const ENDED_NAME: &str = "ended";
/// Name of the ledger message by which a sweeper claims a lost answer to carry it on.
pub const CLAIMED_NAME: &str = "claimed";

/// The `error` header of an answer ended by a sweeper.
pub const PUBLISHER_LOST: &str = "the publisher was lost before the answer finished";

/// How long past its lease a streaming answer is left before a sweeper ends it, for clock
/// differences between hosts and a heartbeat in transit.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3);

/// How often a daemon sweeps (each waits a random part of this again, so that replicas
/// rarely sweep together).
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How often a streaming answer's `begun` entry is published again, so that it stays in
/// the ledger's history (Ably keeps two minutes of an unpersisted channel).
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// How many of the ledger's latest messages a sweep reads.
pub const LEDGER_WINDOW: u32 = 1000;

/// The ledger channel of the daemons serving `namespace`: `<namespace>-ledger:answers`.
pub fn ledger_channel(namespace: &str) -> ChannelName {
    ChannelName::from(format!("{namespace}-ledger:answers"))
}

/// One answer in flight: its channel, and the id of its create.
#[derive(Clone, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct Entry {
    pub channel: ChannelName,
    pub id: MessageId,
}

impl Entry {
    /// The ledger message saying this answer is in flight.
    pub fn begun(&self) -> Message {
        self.message(BEGUN_NAME)
    }

    /// The ledger message saying this answer has ended.
    pub fn ended(&self) -> Message {
        self.message(ENDED_NAME)
    }

    /// The ledger message by which the sweeper `by` claims this answer's `loss` ([`loss`]),
    /// to carry it on. Its id names the answer and the loss, so every claim of the same
    /// loss has the same id: a server that dedupes by id keeps the first, and [`claimant`]
    /// reads the oldest either way. A claimant that dies in turn leaves a new loss (its own
    /// lease), claimed afresh.
    pub fn claim(&self, loss: &str, by: &str) -> Message {
        let data = serde_json::json!({"channel": self.channel, "id": self.id, "by": by});
        Message {
            id: Some(self.claim_id(loss)),
            name: Some(CLAIMED_NAME.to_owned()),
            data: Some(Value::String(data.to_string())),
            ..Message::default()
        }
    }

    /// The id of every claim of this answer's `loss`.
    pub fn claim_id(&self, loss: &str) -> MessageId {
        MessageId::new(format!("{}:claim:{loss}", self.id.as_str()))
    }

    fn message(&self, name: &str) -> Message {
        let data = serde_json::to_string(self).unwrap_or_default();
        Message {
            name: Some(name.to_owned()),
            data: Some(Value::String(data)),
            ..Message::default()
        }
    }

    fn of(message: &Message) -> Option<Self> {
        let text = message.text().ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The answers the ledger says are in flight: those whose latest entry (in `history`,
/// newest first) is `begun`. Messages that are not entries are skipped.
pub fn open_entries(history: &[Message]) -> Vec<Entry> {
    let mut seen = HashSet::new();
    let mut open = Vec::new();
    for message in history {
        let name = message.name.as_deref();
        if name != Some(BEGUN_NAME) && name != Some(ENDED_NAME) {
            continue;
        }
        let Some(entry) = Entry::of(message) else {
            continue;
        };
        if seen.insert(entry.clone()) && name == Some(BEGUN_NAME) {
            open.push(entry);
        }
    }
    open
}

/// Names one loss of an answer, as its latest version shows it: how far through the stream
/// its text is and the lease that lapsed.
pub fn loss(answer: &Message) -> String {
    let header = |name| answer.header(name).unwrap_or("-").to_owned();
    format!("{}-{}", header(headers::SEQUENCE), header(lease::LEASE))
}

/// Who won the claim `claim_id`: the `by` of its oldest message in `history` (newest
/// first), so every sweeper that reads the same history agrees.
pub fn claimant(history: &[Message], claim_id: &MessageId) -> Option<String> {
    let claim = history
        .iter()
        .rev()
        .find(|message| message.id.as_ref() == Some(claim_id))?;
    let data: Value = serde_json::from_str(&claim.text().ok()?).ok()?;
    data.get("by")?.as_str().map(str::to_owned)
}

/// Whether the answer created as `entry` was claimed again after the claim `ours`: a claim
/// of it with another id is newer in `history` (newest first) than ours.
pub fn reclaimed(history: &[Message], entry: &MessageId, ours: &MessageId) -> bool {
    let prefix = format!("{}:claim:", entry.as_str());
    for message in history {
        let Some(id) = &message.id else {
            continue;
        };
        if id == ours {
            return false;
        }
        if message.name.as_deref() == Some(CLAIMED_NAME) && id.as_str().starts_with(&prefix) {
            return true;
        }
    }
    false
}

/// How a lost answer can be carried on instead of ended: its response id and where its
/// text stands, when its headers say it is a background response and how far through the
/// stream its text is ([`headers::SEQUENCE`]).
pub fn continuation(answer: &Message) -> Option<(String, Continuation)> {
    let headers = answer.headers()?;
    let response_id = headers.get(headers::RESPONSE_ID)?.clone();
    let through = headers.get(headers::SEQUENCE)?.parse().ok()?;
    let text = answer.text().ok()?;
    let from = Continuation {
        serial: answer.serial.clone()?,
        text,
        headers,
        through,
    };
    Some((response_id, from))
}

/// What a sweeper makes of an answer in flight.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Its lease holds (or it has none): leave it.
    Live,
    /// It has ended: only its ledger entry is left to close.
    Over,
    /// Its publisher is gone: publish this final update, then close the entry.
    Lost(Box<Message>),
}

/// Judges `answer`, the latest version of an answer's message (as history gives it), at
/// `now_ms` on the sweeper's wall clock.
pub fn judge(answer: &Message, now_ms: i64) -> Verdict {
    let Some(headers) = answer.headers() else {
        return Verdict::Live;
    };
    let status = headers.get(headers::STATUS).and_then(|s| Status::parse(s));
    if status.is_some_and(Status::is_terminal) || answer.action() == MessageAction::DELETE {
        return Verdict::Over;
    }
    if !lease::is_lapsed(&headers, now_ms, SWEEP_GRACE) {
        return Verdict::Live;
    }
    let Some(serial) = &answer.serial else {
        return Verdict::Live;
    };
    let text = answer.text().unwrap_or_default();
    let mut update = Message::update(serial, &text);
    update.name = Some(headers::ANSWER_NAME.to_owned());
    update.id = answer
        .id
        .as_ref()
        .map(|id| MessageId::new(format!("{}:lost", id.as_str())));
    let mut headers = headers;
    headers.remove(lease::LEASE);
    headers.insert(
        headers::STATUS.to_owned(),
        Status::Failed.as_str().to_owned(),
    );
    headers.insert(headers::ERROR.to_owned(), PUBLISHER_LOST.to_owned());
    headers.insert(headers::LENGTH.to_owned(), text.len().to_string());
    headers.insert(headers::DIGEST.to_owned(), headers::digest(&text));
    update.set_headers(&headers);
    Verdict::Lost(Box::new(update))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Serial;

    fn entry(channel: &str, id: &str) -> Entry {
        Entry {
            channel: ChannelName::from(channel),
            id: MessageId::new(id),
        }
    }

    #[test]
    fn an_entry_is_open_while_its_newest_ledger_message_is_begun() {
        let a = entry("ai:one", "x-answer-0");
        let b = entry("ai:two", "x-answer-1");
        let c = entry("ai:one", "y-answer-0");
        let noise = Message::create("chatter", "{\"channel\":\"ai:one\"}");
        // Newest first: b ended, a refreshed, c begun, a begun.
        let history = [b.ended(), a.begun(), noise, c.begun(), b.begun(), a.begun()];
        assert_eq!(open_entries(&history), [a.clone(), c.clone()]);
        assert_eq!(open_entries(&[a.ended(), a.begun()]), []);
        // An entry begun again after it ended (a restart reused nothing, but be strict).
        assert_eq!(open_entries(&[a.begun(), a.ended()]), [a]);
    }

    fn answer(status: &str, lease: Option<&str>, text: &str) -> Message {
        let mut message = Message::create(headers::ANSWER_NAME, text);
        message.id = Some(MessageId::new("x-answer-0"));
        message.serial = Some(Serial::new("s-1"));
        message.insert_header(headers::STATUS, status.to_owned());
        message.insert_header(headers::SOURCE, "openai".to_owned());
        message.insert_header(headers::LENGTH, text.len().to_string());
        if let Some(lease) = lease {
            message.insert_header(lease::LEASE, lease.to_owned());
        }
        message
    }

    #[test]
    fn a_lapsed_answer_gets_a_final_update_with_its_text_so_far() {
        let lost = answer("streaming", Some("10000"), "Half an ans");
        assert_eq!(judge(&lost, 12_000), Verdict::Live, "within the grace");
        let Verdict::Lost(update) = judge(&lost, 13_001) else {
            panic!("not judged lost")
        };
        assert_eq!(update.action, Some(MessageAction::UPDATE));
        assert_eq!(update.serial, Some(Serial::new("s-1")));
        assert_eq!(update.id, Some(MessageId::new("x-answer-0:lost")));
        assert_eq!(update.text().unwrap(), "Half an ans");
        assert_eq!(update.header(headers::STATUS), Some("failed"));
        assert_eq!(update.header(headers::ERROR), Some(PUBLISHER_LOST));
        assert_eq!(update.header(headers::LENGTH), Some("11"));
        assert_eq!(
            update.header(headers::DIGEST),
            Some(headers::digest("Half an ans").as_str())
        );
        assert_eq!(update.header(headers::SOURCE), Some("openai"));
        assert_eq!(update.header(lease::LEASE), None);
    }

    #[test]
    fn ended_unleased_and_deleted_answers_are_left_alone() {
        assert_eq!(
            judge(&answer("completed", Some("10"), "Done"), 99_000),
            Verdict::Over
        );
        assert_eq!(
            judge(&answer("streaming", None, "Hi"), 99_000),
            Verdict::Live
        );
        let mut deleted = answer("streaming", Some("10"), "");
        deleted.action = Some(MessageAction::DELETE);
        assert_eq!(judge(&deleted, 99_000), Verdict::Over);
        let mut bare = Message::create(headers::ANSWER_NAME, "x");
        bare.serial = Some(Serial::new("s-2"));
        assert_eq!(judge(&bare, 99_000), Verdict::Live);
    }

    #[test]
    fn a_lost_background_answer_carries_where_to_continue_it() {
        let mut lost = answer("streaming", Some("10000"), "Half an ans");
        assert_eq!(continuation(&lost), None, "no sequence: not continuable");
        lost.insert_header(headers::RESPONSE_ID, "resp_7".to_owned());
        assert_eq!(continuation(&lost), None, "no sequence: not continuable");
        lost.insert_header(headers::SEQUENCE, "41".to_owned());
        let (response, from) = continuation(&lost).unwrap();
        assert_eq!(response, "resp_7");
        assert_eq!(from.serial, Serial::new("s-1"));
        assert_eq!(from.text, "Half an ans");
        assert_eq!(from.through, 41);
        assert_eq!(
            from.headers.get(headers::SOURCE).map(String::as_str),
            Some("openai")
        );
    }

    #[test]
    fn the_oldest_claim_of_a_loss_wins_for_every_reader() {
        let a = entry("ai:one", "x-answer-0");
        let mut lost = answer("streaming", Some("10000"), "Half");
        lost.insert_header(headers::SEQUENCE, "41".to_owned());
        assert_eq!(loss(&lost), "41-10000");
        let first = a.claim("41-10000", "daemon-1");
        let second = a.claim("41-10000", "daemon-2");
        assert_eq!(first.id, second.id, "claims of one loss share an id");
        // The claimant died too: its own lease lapsed, a new loss.
        assert_ne!(a.claim("41-25000", "daemon-1").id, first.id);
        let id = a.claim_id("41-10000");
        // Newest first, as history gives it.
        assert_eq!(
            claimant(&[second.clone(), a.begun(), first.clone()], &id).as_deref(),
            Some("daemon-1")
        );
        assert_eq!(
            claimant(std::slice::from_ref(&second), &id).as_deref(),
            Some("daemon-2")
        );
        assert_eq!(claimant(&[a.begun()], &id), None);
        // Claimed again after ours: the newer claimant carries it on.
        let ours = a.claim_id("41-10000");
        let newer = a.claim("504-25000", "daemon-2");
        assert!(recovery_reclaimed(
            &[newer.clone(), first.clone()],
            &a,
            &ours
        ));
        assert!(!recovery_reclaimed(
            &[first.clone(), newer.clone()],
            &a,
            &ours
        ));
        assert!(
            !recovery_reclaimed(&[second.clone(), first.clone()], &a, &ours),
            "the same loss"
        );
        let other = entry("ai:one", "x-answer-1").claim("1-1", "daemon-2");
        assert!(!recovery_reclaimed(&[other, first.clone()], &a, &ours));
        // A claim is no entry: it neither opens nor closes one.
        assert_eq!(open_entries(&[first, a.begun()]), [a]);
    }

    fn recovery_reclaimed(history: &[Message], entry: &Entry, ours: &MessageId) -> bool {
        reclaimed(history, &entry.id, ours)
    }
}
