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
    pub(super) name: Option<&'m str>,
    pub(super) client_id: Option<&'m str>,
    pub(super) timestamp: Option<i64>,
}

/// The state kept per serial, shared by answers and prompts.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(super) struct Entry {
    serial: Serial,
    name: Option<String>,
    client_id: Option<String>,
    timestamp: Option<i64>,
    text: String,
    headers: BTreeMap<String, String>,
    /// The version serial of the last applied versioned delivery.
    version: Option<Serial>,
    /// The text lacks its beginning: the first delivery seen was an append.
    partial: bool,
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
        let full = incoming.text.as_deref().unwrap_or("");
        let kept = fit(full, max_text);
        let entry = Self {
            serial,
            name: incoming.name.map(str::to_owned),
            client_id: incoming.client_id.map(str::to_owned),
            timestamp: incoming.timestamp,
            text: kept.to_owned(),
            headers: incoming.headers.clone().unwrap_or_default(),
            version: incoming.version.clone(),
            partial: incoming.op == Op::Append,
            deleted: incoming.op == Op::Delete,
            truncated: kept.len() < full.len(),
            unversioned_since: incoming.version.is_none(),
        };
        let mut changes = vec![Change::Created {
            serial: entry.serial.clone(),
            text: entry.text.clone(),
            partial: entry.partial,
        }];
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
        if incoming.op.is_full() {
            self.apply_full(incoming, max_text, &mut changes);
        } else {
            self.apply_append(incoming, max_text, &mut changes);
        }
        if let Some(headers) = &incoming.headers {
            self.headers.clone_from(headers);
        }
        changes
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
            self.partial = false;
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
            }
            None => self.unversioned_since = true,
        }
    }

    fn apply_append(
        &mut self,
        incoming: &Incoming<'_>,
        max_text: usize,
        changes: &mut Vec<Change>,
    ) {
        let fragment = incoming.text.as_deref().unwrap_or("");
        if !self.truncated {
            let room = max_text.saturating_sub(self.text.len());
            let kept = fit(fragment, room);
            if !kept.is_empty() {
                self.text.push_str(kept);
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
        match &incoming.version {
            Some(version) => self.version = Some(version.clone()),
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
