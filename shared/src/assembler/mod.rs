//! Subscriber side: rebuilds each answer by serial from create / append / update / delete,
//! and reports what changed per answer. Pure: no IO, no clock, no knowledge of connections.
//!
//! # Input
//!
//! The [`Assembler`] is fed delivered [`Message`]s in the order they arrive, whatever their
//! source: a live subscription, a rewind backlog, or REST history. Each call returns the
//! [`Change`]s it caused, so a UI can patch the one answer that moved.
//!
//! # Rules
//!
//! Messages are grouped by `serial`. Versions of one message are ordered by `version.serial`
//! (both compare lexicographically, ably-protocol §6.2):
//!
//! | Delivery | Applied when | Effect |
//! |---|---|---|
//! | create (0 or no action) | version ≥ last applied | text set |
//! | update (1) | version ≥ last applied | text replaced by the full text |
//! | delete (2) | version ≥ last applied | text replaced if data is present; marked deleted |
//! | append (5) | version > last applied | fragment concatenated (placed by `length`, below) |
//! | meta, summary, unknown | never | ignored |
//!
//! # Appends that arrive out of order
//!
//! Version order alone cannot tell a late append from a stale one. A server may deliver a
//! live append before it replays the ones a resumed subscriber missed (Sockudo does, right
//! after a resumed re-attach), and applying only "newer" versions would then turn the
//! replayed ones into a silent hole. So this system's publisher puts a
//! [`headers::LENGTH`] header on every message: the text's byte length once the message is
//! applied. An append then starts at `length − fragment bytes`, and against a text that ends
//! at byte `end`:
//!
//! - it starts at `end`: concatenated;
//! - it starts before `end` and repeats what the text ends with (a replay, or appends a
//!   server rolled up into one): only its new part is concatenated;
//! - it starts past `end`: held, with [`Change::Gap`], and applied once the appends before it
//!   arrive; a full version covers whatever it held;
//! - it contradicts the text: dropped, with [`Change::Gap`]; the next full version repairs.
//!
//! The text a view shows is therefore always a prefix of the publisher's text (or, after a
//! rewrite, of the latest full version), never text with a hole. Appends without the header
//! (other publishers) fall back to version order.
//!
//! - A create without `version` has the version serial of its own `serial` (TM2s1).
//! - A full version (create, update, delete) with a version *equal* to the last applied one
//!   describes the state we already claim to hold. When our text matches, applying it changes
//!   nothing, which is how duplicate deliveries and the rewind aggregate of ably-protocol §12.4
//!   are absorbed. When it does not match, we missed something (a dropped append, an answer we
//!   joined mid-stream), and the full version repairs it. This is deliberately looser than the
//!   strict "greater than" rule: it also lets a server that stamps a replay with one version
//!   serial converge on the final text.
//! - An append with a version equal to the last applied one is a duplicate and is ignored.
//! - Messages without any version serial cannot be ordered or de-duplicated. They are applied
//!   in arrival order and leave the recorded version alone, so a duplicated unversioned append
//!   doubles its fragment; nothing better is possible without a version. After one has been
//!   applied, an equal-version full version is no longer treated as a repair (our text may be
//!   legitimately ahead of it), until a strictly newer full version resets the answer.
//! - An append for a serial never seen starts a *partial* answer holding just that fragment
//!   (the subscriber joined mid-stream). It stays partial until a full version at or after its
//!   latest version arrives. A create arriving after the answer is known is older than anything
//!   applied, so only the metadata it carries (name, clientId, timestamp) is used, to fill gaps.
//! - A message carrying `extras.headers` replaces the answer's headers; one without keeps them.
//!   The `status` header gives the answer's [`Status`]; no header, or a value this system does
//!   not define, reads as [`Status::Streaming`] (the raw header is kept).
//! - Messages named [`headers::PROMPT_NAME`] are kept as prompts, apart from answers; messages
//!   named [`headers::CANCEL_NAME`] are requests to the publisher, not content, and are ignored
//!   (the publisher answers a cancel by finishing the answer with status `cancelled`, which
//!   arrives as a [`Change::StatusChanged`]). Everything else is an answer. Whether a serial is a
//!   prompt or an answer is decided when it is first seen.
//!
//! # Bounded memory
//!
//! [`Config`] caps the number of answers and prompts kept (the oldest by serial is evicted, with
//! [`Change::Evicted`]) and the text bytes per entry (the text is cut on a char boundary, with
//! [`Change::Truncated`] once; later appends to a cut text are dropped). When the assembler is
//! full, a message for an unknown serial older than every kept entry would be evicted at once,
//! so it is dropped without a change.
//!
//! # Changes
//!
//! Changes are self-contained: applying them in order to an empty view reproduces the texts,
//! statuses and deleted flags the assembler holds, even when a batch is applied before the view
//! looks at any of them.

mod entry;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod order_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;

use crate::headers::{self, Status};
use crate::ids::Serial;
use crate::protocol::{DataError, Message, MessageAction};

pub use entry::{Answer, Prompt};

use entry::{Entry, Incoming, Op};

/// Limits that keep the assembler's memory bounded.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Config {
    /// Most answers kept; the oldest by serial is evicted beyond this.
    pub max_answers: usize,
    /// Most prompts kept; the oldest by serial is evicted beyond this.
    pub max_prompts: usize,
    /// Most bytes of text kept per answer or prompt; the rest is cut on a char boundary.
    pub max_text_bytes: usize,
}

impl Config {
    /// Default cap on answers kept.
    pub const DEFAULT_MAX_ANSWERS: usize = 1_000;
    /// Default cap on prompts kept.
    pub const DEFAULT_MAX_PROMPTS: usize = 1_000;
    /// Default cap on text per entry: the largest message Ably accepts on any package.
    pub const DEFAULT_MAX_TEXT_BYTES: usize = 256 * 1024;

    /// Sets the cap on answers kept.
    pub fn with_max_answers(mut self, max: usize) -> Self {
        self.max_answers = max;
        self
    }

    /// Sets the cap on prompts kept.
    pub fn with_max_prompts(mut self, max: usize) -> Self {
        self.max_prompts = max;
        self
    }

    /// Sets the cap on text bytes per answer or prompt.
    pub fn with_max_text_bytes(mut self, max: usize) -> Self {
        self.max_text_bytes = max;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_answers: Self::DEFAULT_MAX_ANSWERS,
            max_prompts: Self::DEFAULT_MAX_PROMPTS,
            max_text_bytes: Self::DEFAULT_MAX_TEXT_BYTES,
        }
    }
}

/// What one delivery did to one answer or prompt, named by its serial.
///
/// `Appended`, `Replaced`, `Deleted`, `Truncated` and `Evicted` apply to whichever entry holds
/// the serial, answer or prompt; serials are unique on a channel.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Change {
    /// A new answer, with its text so far. `partial` means the start is missing (joined
    /// mid-stream); a later `Replaced` brings the whole text. Its status starts as
    /// [`Status::Streaming`]; a `StatusChanged` follows when it is anything else.
    Created {
        /// The answer's serial.
        serial: Serial,
        /// The text so far.
        text: String,
        /// Whether the text lacks its beginning.
        partial: bool,
    },
    /// Text to add at the end of the entry's text.
    Appended {
        /// The entry's serial.
        serial: Serial,
        /// The text to add.
        delta: String,
    },
    /// The entry's whole text is now `text`: complete from its start and not deleted.
    Replaced {
        /// The entry's serial.
        serial: Serial,
        /// The whole text.
        text: String,
    },
    /// The answer's status moved.
    StatusChanged {
        /// The answer's serial.
        serial: Serial,
        /// The new status.
        status: Status,
    },
    /// The entry was deleted (soft delete: it stays readable, marked deleted).
    Deleted {
        /// The entry's serial.
        serial: Serial,
    },
    /// A new prompt, with its text.
    PromptAdded {
        /// The prompt's serial.
        serial: Serial,
        /// The prompt's text.
        text: String,
    },
    /// The entry was dropped to respect [`Config::max_answers`] or [`Config::max_prompts`].
    Evicted {
        /// The entry's serial.
        serial: Serial,
    },
    /// The entry's text reached [`Config::max_text_bytes`]; what follows is not kept.
    Truncated {
        /// The entry's serial.
        serial: Serial,
    },
    /// A continuity problem in one answer: an append arrived before the one it follows, or
    /// contradicted the text. The text does not move: it stays a correct prefix, and the
    /// held append is applied as soon as the missing part arrives. A full version repairs
    /// it at the latest; a view that wants it sooner reads the message from history. Says
    /// nothing about the text, so a view may ignore it.
    Gap {
        /// The entry's serial.
        serial: Serial,
    },
}

impl Change {
    /// The serial of the entry this change is about.
    pub fn serial(&self) -> &Serial {
        match self {
            Self::Created { serial, .. }
            | Self::Appended { serial, .. }
            | Self::Replaced { serial, .. }
            | Self::StatusChanged { serial, .. }
            | Self::Deleted { serial }
            | Self::PromptAdded { serial, .. }
            | Self::Evicted { serial }
            | Self::Truncated { serial }
            | Self::Gap { serial } => serial,
        }
    }
}

/// Why one message could not be applied. The assembler is unchanged when this is returned.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum Error {
    /// The message has no `serial`, so it cannot be tied to an answer.
    #[error("{action:?} message has no serial")]
    MissingSerial {
        /// The message's action.
        action: MessageAction,
    },
    /// The message's data is not text (a JSON object, bad base64, bytes that are not UTF-8, an
    /// encrypted payload).
    #[error("message {serial} carries data that is not text: {source}")]
    Data {
        /// The message's serial.
        serial: Serial,
        /// Why the data could not be read as text.
        source: DataError,
    },
}

/// What a batch did: every change in order, and the messages that could not be applied.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct BatchOutcome {
    /// The changes of every applied message, in order.
    pub changes: Vec<Change>,
    /// The position in the batch of each message that failed, with its error.
    pub errors: Vec<(usize, Error)>,
}

/// One item of the conversation: a prompt or an answer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Turn<'a> {
    /// A prompt.
    Prompt(&'a Prompt),
    /// An answer.
    Answer(&'a Answer),
}

impl<'a> Turn<'a> {
    /// The serial of the prompt or answer.
    pub fn serial(&self) -> &'a Serial {
        match self {
            Self::Prompt(prompt) => prompt.serial(),
            Self::Answer(answer) => answer.serial(),
        }
    }

    /// The text of the prompt or answer.
    pub fn text(&self) -> &'a str {
        match self {
            Self::Prompt(prompt) => prompt.text(),
            Self::Answer(answer) => answer.text(),
        }
    }
}

/// Rebuilds answers and prompts from delivered messages, keyed by serial.
#[derive(Clone, Debug, Default)]
pub struct Assembler {
    config: Config,
    answers: BTreeMap<Serial, Answer>,
    prompts: BTreeMap<Serial, Prompt>,
}

/// Where a message goes.
enum Route {
    Answer,
    Prompt,
}

impl Assembler {
    /// An assembler with the default [`Config`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler with the given limits.
    pub fn with_config(config: Config) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Applies one delivered message and returns what it changed (often nothing, for a
    /// duplicate or stale delivery). On error the assembler is left exactly as it was.
    pub fn apply(&mut self, msg: &Message) -> Result<Vec<Change>, Error> {
        let action = msg.action();
        let op = match action {
            MessageAction::CREATE => Op::Create,
            MessageAction::UPDATE => Op::Update,
            MessageAction::DELETE => Op::Delete,
            MessageAction::APPEND => Op::Append,
            _ => return Ok(Vec::new()),
        };
        if msg.name.as_deref() == Some(headers::CANCEL_NAME) {
            return Ok(Vec::new());
        }
        let serial = msg.serial.clone().ok_or(Error::MissingSerial { action })?;
        let text = match (&msg.data, op) {
            (None, Op::Delete) => None,
            _ => Some(msg.text().map_err(|source| Error::Data {
                serial: serial.clone(),
                source,
            })?),
        };
        let version = match (msg.version_serial(), op) {
            (Some(version), _) => Some(version.clone()),
            (None, Op::Create) => Some(serial.clone()),
            (None, _) => None,
        };
        let incoming = Incoming {
            op,
            version,
            text,
            length: msg.header(headers::LENGTH).and_then(headers::parse_length),
            digest: msg.header(headers::DIGEST),
            headers: msg.headers(),
            name: msg.name.as_deref(),
            client_id: msg.client_id.as_deref(),
            timestamp: msg.timestamp,
        };
        let max_text = self.config.max_text_bytes;
        let changes = match self.route(&serial, msg.name.as_deref()) {
            Route::Answer => {
                if let Some(answer) = self.answers.get_mut(&serial) {
                    answer.apply(&incoming, max_text)
                } else if would_be_evicted(&self.answers, &serial, self.config.max_answers) {
                    Vec::new()
                } else {
                    let (answer, mut changes) = Answer::start(serial, &incoming, max_text);
                    self.answers.insert(answer.serial().clone(), answer);
                    evict(&mut self.answers, self.config.max_answers, &mut changes);
                    changes
                }
            }
            Route::Prompt => {
                if let Some(prompt) = self.prompts.get_mut(&serial) {
                    prompt.apply(&incoming, max_text)
                } else if would_be_evicted(&self.prompts, &serial, self.config.max_prompts) {
                    Vec::new()
                } else {
                    let (prompt, mut changes) = Prompt::start(serial, &incoming, max_text);
                    self.prompts.insert(prompt.serial().clone(), prompt);
                    evict(&mut self.prompts, self.config.max_prompts, &mut changes);
                    changes
                }
            }
        };
        Ok(changes)
    }

    /// Applies messages in order. A message that fails is reported with its position and
    /// skipped; the others are applied.
    pub fn apply_all<'m>(&mut self, msgs: impl IntoIterator<Item = &'m Message>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for (index, msg) in msgs.into_iter().enumerate() {
            match self.apply(msg) {
                Ok(changes) => outcome.changes.extend(changes),
                Err(error) => outcome.errors.push((index, error)),
            }
        }
        outcome
    }

    /// The answer with this serial.
    pub fn answer(&self, serial: &Serial) -> Option<&Answer> {
        self.answers.get(serial)
    }

    /// The prompt with this serial.
    pub fn prompt(&self, serial: &Serial) -> Option<&Prompt> {
        self.prompts.get(serial)
    }

    /// Answers in serial order, deleted ones included (see [`Answer::is_deleted`]).
    pub fn answers(&self) -> impl Iterator<Item = &Answer> + '_ {
        self.answers.values()
    }

    /// Prompts in serial order.
    pub fn prompts(&self) -> impl Iterator<Item = &Prompt> + '_ {
        self.prompts.values()
    }

    /// Prompts and answers interleaved in serial order.
    pub fn conversation(&self) -> Conversation<'_> {
        Conversation {
            prompts: self.prompts.values().peekable(),
            answers: self.answers.values().peekable(),
        }
    }

    /// How many answers are kept.
    pub fn answer_count(&self) -> usize {
        self.answers.len()
    }

    /// How many prompts are kept.
    pub fn prompt_count(&self) -> usize {
        self.prompts.len()
    }

    fn route(&self, serial: &Serial, name: Option<&str>) -> Route {
        if self.answers.contains_key(serial) {
            Route::Answer
        } else if self.prompts.contains_key(serial) || name == Some(headers::PROMPT_NAME) {
            Route::Prompt
        } else {
            Route::Answer
        }
    }
}

/// Prompts and answers in serial order; see [`Assembler::conversation`].
#[derive(Clone, Debug)]
pub struct Conversation<'a> {
    prompts: Peekable<std::collections::btree_map::Values<'a, Serial, Prompt>>,
    answers: Peekable<std::collections::btree_map::Values<'a, Serial, Answer>>,
}

impl<'a> Iterator for Conversation<'a> {
    type Item = Turn<'a>;

    fn next(&mut self) -> Option<Turn<'a>> {
        let order = match (self.prompts.peek(), self.answers.peek()) {
            (Some(prompt), Some(answer)) => prompt.serial().cmp(answer.serial()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return None,
        };
        if order == Ordering::Greater {
            self.answers.next().map(Turn::Answer)
        } else {
            self.prompts.next().map(Turn::Prompt)
        }
    }
}

/// Whether a new entry with this serial would be the one evicted at once.
fn would_be_evicted<T>(map: &BTreeMap<Serial, T>, serial: &Serial, max: usize) -> bool {
    map.len() >= max && map.keys().next().is_none_or(|oldest| serial < oldest)
}

/// Drops the oldest entries beyond `max`, reporting each.
fn evict<T>(map: &mut BTreeMap<Serial, T>, max: usize, changes: &mut Vec<Change>) {
    while map.len() > max {
        match map.pop_first() {
            Some((serial, _)) => changes.push(Change::Evicted { serial }),
            None => break,
        }
    }
}

// Answers and prompts share the rules of `entry`; these wrappers add what differs: an answer's
// status, and the change that announces a prompt.
impl Answer {
    fn start(serial: Serial, incoming: &Incoming<'_>, max_text: usize) -> (Self, Vec<Change>) {
        let (entry, mut changes) = Entry::start(serial, incoming, max_text);
        let answer = Self::from_entry(entry);
        let status = answer.status();
        if status != Status::Streaming {
            changes.push(Change::StatusChanged {
                serial: answer.serial().clone(),
                status,
            });
        }
        (answer, changes)
    }

    fn apply(&mut self, incoming: &Incoming<'_>, max_text: usize) -> Vec<Change> {
        let before = self.status();
        let mut changes = self.entry_mut().apply(incoming, max_text);
        self.refresh_status();
        let after = self.status();
        if after != before {
            changes.push(Change::StatusChanged {
                serial: self.serial().clone(),
                status: after,
            });
        }
        changes
    }
}

impl Prompt {
    fn start(serial: Serial, incoming: &Incoming<'_>, max_text: usize) -> (Self, Vec<Change>) {
        let (entry, mut changes) = Entry::start(serial, incoming, max_text);
        for change in &mut changes {
            if let Change::Created { serial, text, .. } = change {
                *change = Change::PromptAdded {
                    serial: std::mem::take(serial),
                    text: std::mem::take(text),
                };
            }
        }
        (Self::from_entry(entry), changes)
    }

    fn apply(&mut self, incoming: &Incoming<'_>, max_text: usize) -> Vec<Change> {
        self.entry_mut().apply(incoming, max_text)
    }
}
