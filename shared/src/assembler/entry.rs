//! One answer or prompt being rebuilt: the version rules and text bookkeeping the
//! [`Assembler`](super::Assembler) applies per serial, and the read-only views it hands out.

use std::collections::BTreeMap;

use crate::headers::{self, Status};
use crate::ids::Serial;

use super::Change;

/// What a delivery does to its message.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Op {
    Create,
    Update,
    Delete,
    Append,
}

impl Op {
    /// Whether the delivery carries the whole message rather than a fragment.
    fn is_full(self) -> bool {
        self != Self::Append
    }
}

/// A delivery that passed validation, reduced to what the rules need.
#[derive(Debug)]
pub(super) struct Incoming<'m> {
    pub(super) op: Op,
    /// The version serial; a create without `version` already carries its own serial here.
    pub(super) version: Option<Serial>,
    /// The decoded text; `None` only for a delete without data, which keeps the text.
    pub(super) text: Option<String>,
    /// `extras.headers`, when the message carries them.
    pub(super) headers: Option<BTreeMap<String, String>>,
    /// The [`headers::LENGTH`] header: the text's byte length once this message is applied.
    pub(super) length: Option<usize>,
    /// The [`headers::DIGEST`] header: the digest of the text once this message is applied.
    pub(super) digest: Option<&'m str>,
    pub(super) name: Option<&'m str>,
    pub(super) client_id: Option<&'m str>,
    pub(super) timestamp: Option<i64>,
}

impl Incoming<'_> {
    /// A full version whose text is shorter or longer than its own [`headers::LENGTH`] says,
    /// or does not match its own [`headers::DIGEST`]: it misses parts (a server stored it
    /// with an append lost) or has them out of order (an append stored after later ones), so
    /// its text is not the publisher's.
    fn misses_parts(&self) -> bool {
        if !self.op.is_full() {
            return false;
        }
        let Some(text) = &self.text else {
            return false;
        };
        self.length.is_some_and(|length| text.len() != length)
            || self
                .digest
                .is_some_and(|digest| headers::digest(text) != digest)
    }
}

/// An append held back because it starts past the end of the text.
#[derive(Clone, Debug, Eq, PartialEq)]
struct Held {
    version: Option<Serial>,
    text: String,
    headers: Option<BTreeMap<String, String>>,
}

/// Most appends held per entry while waiting for a gap to fill; beyond that, later ones are
/// dropped (the text stays a correct prefix; the final full version repairs it).
const MAX_HELD: usize = 256;

/// The state kept per serial, shared by answers and prompts.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(super) struct Entry {
    serial: Serial,
    name: Option<String>,
    client_id: Option<String>,
    timestamp: Option<i64>,
    text: String,
    /// The digest of `text`, kept as it grows ([`headers::Digest`]).
    digest: headers::Digest,
    headers: BTreeMap<String, String>,
    /// The version serial of the last applied versioned delivery.
    version: Option<Serial>,
    /// The text lacks its beginning: the first delivery seen was an append.
    partial: bool,
    /// Where `text` starts in the whole answer, in bytes: 0 once a full version was applied;
    /// for a partial text, what its first append's [`headers::LENGTH`] said, if it said.
    start: Option<usize>,
    /// Appends that arrived before the text they continue, by the byte offset they start at,
    /// held until the gap before them fills or a full version covers them.
    held: BTreeMap<usize, Held>,
    /// Bytes of fragments in `held`.
    held_bytes: usize,
    /// A delivery showed the text is missing something (a held append, or one that
    /// contradicted the text); cleared by the next full version, or when the held appends
    /// all fit.
    gap: bool,
    /// A delivery contradicted the text (its bytes or its digest): only a full version
    /// clears the gap then, since what is missing is not held.
    contradicted: bool,
    deleted: bool,
    truncated: bool,
    /// An unversioned delivery was applied since the last strictly newer full version, so the
    /// text may be ahead of `version` and an equal-version full version is not a repair.
    unversioned_since: bool,
}

impl Entry {
    /// The entry for a serial seen for the first time, and the changes that announce it.
    pub(super) fn start(
        serial: Serial,
        incoming: &Incoming<'_>,
        max_text: usize,
    ) -> (Self, Vec<Change>) {
        let missing = incoming.misses_parts();
        // An append that says where it starts is placed into an empty text, so a viewer
        // that joined mid-stream holds it until the beginning arrives (from history, a
        // rewind or the final update) rather than showing a text without its start.
        let placed = incoming.op == Op::Append
            && incoming
                .length
                .zip(incoming.text.as_deref())
                .is_some_and(|(length, text)| length >= text.len());
        // A full version that misses parts starts an empty text, to be filled in order.
        let full = if missing || placed {
            ""
        } else {
            incoming.text.as_deref().unwrap_or("")
        };
        let kept = fit(full, max_text);
        let start = if incoming.op == Op::Append && !placed {
            incoming
                .length
                .and_then(|length| length.checked_sub(full.len()))
        } else {
            Some(0)
        };
        let entry = Self {
            serial,
            name: incoming.name.map(str::to_owned),
            client_id: incoming.client_id.map(str::to_owned),
            timestamp: incoming.timestamp,
            text: kept.to_owned(),
            digest: headers::Digest::of(kept),
            headers: incoming.headers.clone().unwrap_or_default(),
            version: if missing || placed {
                None
            } else {
                incoming.version.clone()
            },
            partial: incoming.op == Op::Append && !placed,
            start,
            held: BTreeMap::new(),
            held_bytes: 0,
            gap: missing,
            contradicted: false,
            deleted: incoming.op == Op::Delete,
            truncated: kept.len() < full.len(),
            unversioned_since: incoming.version.is_none(),
        };
        let mut entry = entry;
        let mut changes = vec![Change::Created {
            serial: entry.serial.clone(),
            text: entry.text.clone(),
            partial: entry.partial,
        }];
        if placed {
            entry.apply_append(incoming, max_text, &mut changes);
        }
        if missing {
            changes.push(Change::Gap {
                serial: entry.serial.clone(),
            });
        }
        if entry.truncated {
            changes.push(Change::Truncated {
                serial: entry.serial.clone(),
            });
        }
        if entry.deleted {
            changes.push(Change::Deleted {
                serial: entry.serial.clone(),
            });
        }
        (entry, changes)
    }

    /// Applies a later delivery for this serial, if the version rules admit it.
    pub(super) fn apply(&mut self, incoming: &Incoming<'_>, max_text: usize) -> Vec<Change> {
        self.fill_metadata(incoming);
        if !self.admits(incoming) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        if incoming.misses_parts() {
            // A server's aggregate that lost an append on the way: applying it would show
            // a hole. Keep the text, a correct prefix, until a whole version arrives.
            self.report_gap(&mut changes);
            return changes;
        }
        if incoming.op.is_full() {
            self.apply_full(incoming, max_text, &mut changes);
            if let Some(headers) = &incoming.headers {
                self.headers.clone_from(headers);
            }
            self.drain_held(max_text, &mut changes);
        } else {
            self.apply_append(incoming, max_text, &mut changes);
        }
        changes
    }

    /// Where the text ends in the whole answer, in bytes, when that is known: always for a
    /// full text, for a partial one when its first append said where it started. Unknown
    /// once the text was cut at the byte cap.
    fn end(&self) -> Option<usize> {
        if self.truncated {
            return None;
        }
        self.start.map(|start| start + self.text.len())
    }

    /// The version rules of the module documentation.
    fn admits(&self, incoming: &Incoming<'_>) -> bool {
        let (Some(version), Some(last)) = (&incoming.version, &self.version) else {
            // Unversioned deliveries cannot be ordered, and nothing can be stale against an
            // entry that has only seen unversioned ones.
            return true;
        };
        if incoming.op.is_full() {
            version > last || (version == last && (self.partial || !self.unversioned_since))
        } else {
            version > last
        }
    }

    fn apply_full(&mut self, incoming: &Incoming<'_>, max_text: usize, changes: &mut Vec<Change>) {
        let was_deleted = self.deleted;
        let was_truncated = self.truncated;
        let mut replaced = false;
        // A delete without data says nothing about the text, so it keeps text and flags.
        if let Some(full) = incoming.text.as_deref() {
            let kept = fit(full, max_text);
            let restored = was_deleted && incoming.op != Op::Delete;
            let text_change = if self.partial || restored {
                Some(Change::Replaced {
                    serial: self.serial.clone(),
                    text: kept.to_owned(),
                })
            } else if kept == self.text {
                None
            } else if let Some(delta) = kept.strip_prefix(self.text.as_str()) {
                Some(Change::Appended {
                    serial: self.serial.clone(),
                    delta: delta.to_owned(),
                })
            } else {
                Some(Change::Replaced {
                    serial: self.serial.clone(),
                    text: kept.to_owned(),
                })
            };
            replaced = matches!(text_change, Some(Change::Replaced { .. }));
            self.truncated = kept.len() < full.len();
            self.text = kept.to_owned();
            self.digest = headers::Digest::of(kept);
            self.partial = false;
            self.start = Some(0);
            self.gap = false;
            self.contradicted = false;
            changes.extend(text_change);
        }
        if self.truncated && !was_truncated {
            changes.push(Change::Truncated {
                serial: self.serial.clone(),
            });
        }
        self.deleted = incoming.op == Op::Delete;
        // `Replaced` means "not deleted" to a view, so a deleted entry says so again after one.
        if self.deleted && (!was_deleted || replaced) {
            changes.push(Change::Deleted {
                serial: self.serial.clone(),
            });
        }
        match &incoming.version {
            Some(version) => {
                if self.version.as_ref().is_none_or(|last| version > last) {
                    self.unversioned_since = false;
                }
                self.version = Some(version.clone());
                // Held appends this full version already contains are done with.
                self.held
                    .retain(|_, held| held.version.as_ref().is_none_or(|v| v > version));
                self.held_bytes = self.held.values().map(|held| held.text.len()).sum();
            }
            None => self.unversioned_since = true,
        }
    }

    /// An append: placed by its [`headers::LENGTH`] when both it and the text know where they
    /// stand, otherwise concatenated in arrival order.
    fn apply_append(
        &mut self,
        incoming: &Incoming<'_>,
        max_text: usize,
        changes: &mut Vec<Change>,
    ) {
        let fragment = incoming.text.as_deref().unwrap_or("");
        let at = incoming
            .length
            .and_then(|length| length.checked_sub(fragment.len()));
        let held = Held {
            version: incoming.version.clone(),
            text: fragment.to_owned(),
            headers: incoming.headers.clone(),
        };
        match (at, self.end()) {
            (Some(at), Some(end)) => {
                self.place(at, end, held, max_text, changes);
                self.drain_held(max_text, changes);
            }
            _ => self.push_append(held, max_text, changes),
        }
    }

    /// Puts a fragment that starts at byte `at` against a text that ends at byte `end`:
    /// concatenated when it continues the text, its new part only when it overlaps what the
    /// text already has, held when it starts past the end.
    fn place(
        &mut self,
        at: usize,
        end: usize,
        mut held: Held,
        max_text: usize,
        changes: &mut Vec<Change>,
    ) {
        if at > end {
            self.hold(at, held, max_text, changes);
            return;
        }
        let known = end - at;
        if known == 0 {
            self.push_append(held, max_text, changes);
            return;
        }
        // The fragment repeats `known` bytes the text already ends with (a server replayed
        // or rolled up appends we have): check them, then keep only what is new.
        let tail_len = known.min(self.text.len());
        let matches = held
            .text
            .get(known - tail_len..known)
            .is_some_and(|repeat| {
                self.text
                    .get(self.text.len() - tail_len..)
                    .is_some_and(|tail| tail == repeat)
            });
        if !matches {
            // It contradicts the text: keep the text (a correct prefix) and wait for a full
            // version to repair it.
            self.contradicted = true;
            self.report_gap(changes);
            return;
        }
        if held.text.len() <= known {
            // Nothing new; a newer version of nothing new still moves the version on.
            self.note_append_version(held.version.as_ref());
            return;
        }
        held.text.drain(..known);
        self.push_append(held, max_text, changes);
    }

    /// Holds a fragment that starts past the text's end, within the entry's bounds.
    fn hold(&mut self, at: usize, held: Held, max_text: usize, changes: &mut Vec<Change>) {
        // Two appends held at one offset agree on what they share (the publisher's text is
        // one text), so the longer one, which covers the other, is the one kept.
        let replaced = self.held.get(&at).map(|kept| kept.text.len());
        if replaced.is_some_and(|kept| kept >= held.text.len()) || held.text.is_empty() {
            self.report_gap(changes);
            return;
        }
        let freed = replaced.unwrap_or(0);
        let room = max_text.saturating_sub(self.text.len() + self.held_bytes - freed);
        let count_ok = replaced.is_some() || self.held.len() < MAX_HELD;
        if count_ok && held.text.len() <= room {
            self.held_bytes = self.held_bytes - freed + held.text.len();
            self.held.insert(at, held);
        }
        self.report_gap(changes);
    }

    /// Applies held fragments that the text now reaches, in order.
    fn drain_held(&mut self, max_text: usize, changes: &mut Vec<Change>) {
        while let (Some(end), Some(entry)) = (self.end(), self.held.first_entry()) {
            if *entry.key() > end {
                break;
            }
            let (at, held) = entry.remove_entry();
            self.held_bytes -= held.text.len();
            let newer = match (&held.version, &self.version) {
                (Some(version), Some(last)) => version > last,
                _ => true,
            };
            if newer {
                self.place(at, end, held, max_text, changes);
            }
        }
        if self.held.is_empty() && self.gap && !self.contradicted && self.end().is_some() {
            self.gap = false;
        }
    }

    fn report_gap(&mut self, changes: &mut Vec<Change>) {
        if !self.gap {
            self.gap = true;
            changes.push(Change::Gap {
                serial: self.serial.clone(),
            });
        }
    }

    /// Concatenates a fragment that continues the text, and takes its headers and version.
    fn push_append(&mut self, held: Held, max_text: usize, changes: &mut Vec<Change>) {
        let fragment = held.text.as_str();
        let after = self.digest.extend(fragment);
        if self.contradicts_digest(after, held.headers.as_ref()) {
            // The text would not be the publisher's: a server rolled this append up with
            // others around one it never applied, or placed it after a part it lacks. Keep
            // the text, a correct prefix, until a full version repairs it.
            self.contradicted = true;
            self.report_gap(changes);
            return;
        }
        if !self.truncated {
            let room = max_text.saturating_sub(self.text.len());
            let kept = fit(fragment, room);
            if !kept.is_empty() {
                self.text.push_str(kept);
                self.digest = if kept.len() == fragment.len() {
                    after
                } else {
                    self.digest.extend(kept)
                };
                changes.push(Change::Appended {
                    serial: self.serial.clone(),
                    delta: kept.to_owned(),
                });
            }
            if kept.len() < fragment.len() {
                self.truncated = true;
                changes.push(Change::Truncated {
                    serial: self.serial.clone(),
                });
            }
        }
        if let Some(headers) = held.headers {
            self.headers = headers;
        }
        self.note_append_version(held.version.as_ref());
    }

    /// Whether an append's [`headers::DIGEST`] says the whole text after it is not `after`:
    /// checked only when the text is known from its first byte and not cut.
    fn contradicts_digest(
        &self,
        after: headers::Digest,
        headers: Option<&BTreeMap<String, String>>,
    ) -> bool {
        if self.start != Some(0) || self.partial || self.truncated {
            return false;
        }
        headers
            .and_then(|h| h.get(headers::DIGEST))
            .and_then(|d| headers::Digest::parse(d))
            .is_some_and(|said| said != after)
    }

    fn note_append_version(&mut self, version: Option<&Serial>) {
        match version {
            Some(version) => {
                if self.version.as_ref().is_none_or(|last| version > last) {
                    self.version = Some(version.clone());
                }
            }
            None => self.unversioned_since = true,
        }
    }

    /// Name, clientId and timestamp never change across versions; take them from any delivery
    /// when the entry lacks them, even one too old to apply.
    fn fill_metadata(&mut self, incoming: &Incoming<'_>) {
        if self.name.is_none() {
            self.name = incoming.name.map(str::to_owned);
        }
        if self.client_id.is_none() {
            self.client_id = incoming.client_id.map(str::to_owned);
        }
        if self.timestamp.is_none() {
            self.timestamp = incoming.timestamp;
        }
    }
}

/// The longest prefix of `text` that fits in `room` bytes and ends on a char boundary.
fn fit(text: &str, room: usize) -> &str {
    if text.len() <= room {
        return text;
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

/// The getters an answer and a prompt share, read from their [`Entry`].
macro_rules! entry_getters {
    ($kind:literal) => {
        #[doc = concat!("The ", $kind, "'s serial, the same for every version.")]
        pub fn serial(&self) -> &Serial {
            &self.entry.serial
        }

        #[doc = concat!("The ", $kind, "'s text so far (cut at [`Config::max_text_bytes`](super::Config)).")]
        pub fn text(&self) -> &str {
            &self.entry.text
        }

        /// The original publisher's clientId.
        pub fn client_id(&self) -> Option<&str> {
            self.entry.client_id.as_deref()
        }

        /// When the original message was first received, in ms since the Unix epoch.
        pub fn timestamp(&self) -> Option<i64> {
            self.entry.timestamp
        }

        /// All string headers from the latest `extras.headers` seen.
        pub fn headers(&self) -> &BTreeMap<String, String> {
            &self.entry.headers
        }

        /// One header, such as [`headers::MODEL`].
        pub fn header(&self, name: &str) -> Option<&str> {
            self.entry.headers.get(name).map(String::as_str)
        }

        /// Whether the text lacks its beginning (joined mid-stream, no full version yet).
        pub fn is_partial(&self) -> bool {
            self.entry.partial
        }

        /// Whether the latest applied full version was a delete.
        pub fn is_deleted(&self) -> bool {
            self.entry.deleted
        }

        /// Whether a delivery showed the text is missing a part: an append arrived before the
        /// one it follows (it is held until the gap fills), or contradicted the text. The text
        /// is still a correct prefix; a full version (the final update, or the latest version
        /// read from history) repairs it.
        pub fn has_gap(&self) -> bool {
            self.entry.gap
        }

        /// Whether the text was cut at the byte cap.
        pub fn is_truncated(&self) -> bool {
            self.entry.truncated
        }

        /// The version serial of the last applied delivery that had one.
        pub fn version(&self) -> Option<&Serial> {
            self.entry.version.as_ref()
        }

        pub(super) fn entry_mut(&mut self) -> &mut Entry {
            &mut self.entry
        }
    };
}

/// One answer: the text rebuilt so far and what its headers say about it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Answer {
    entry: Entry,
    status: Status,
}

impl Answer {
    entry_getters!("answer");

    pub(super) fn from_entry(entry: Entry) -> Self {
        let mut answer = Self {
            entry,
            status: Status::Streaming,
        };
        answer.refresh_status();
        answer
    }

    /// Reads the status again from the `status` header.
    pub(super) fn refresh_status(&mut self) {
        self.status = self
            .entry
            .headers
            .get(headers::STATUS)
            .and_then(|value| Status::parse(value))
            .unwrap_or(Status::Streaming);
    }

    /// The message name, normally [`headers::ANSWER_NAME`].
    pub fn name(&self) -> Option<&str> {
        self.entry.name.as_deref()
    }

    /// The status from the `status` header; [`Status::Streaming`] when the header is missing
    /// or holds a value this system does not define.
    pub fn status(&self) -> Status {
        self.status
    }
}

/// One prompt of the conversation.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Prompt {
    entry: Entry,
}

impl Prompt {
    entry_getters!("prompt");

    pub(super) fn from_entry(entry: Entry) -> Self {
        Self { entry }
    }
}
