//! The checks behind the fuzz targets in `fuzz/` and their replay on stable in
//! `tests/tests/fuzz_corpora.rs`. Not part of the API: each function takes raw fuzz input and
//! panics when a property does not hold, so a fuzzer and an ordinary test run the same code.
//!
//! - [`check_codec`]: a text frame either fails to decode, or decodes to a frame that encodes
//!   and decodes back to itself.
//! - [`check_assembler`]: a sequence of messages, built from the input by
//!   [`AssemblerInput::decode`], applied to an [`Assembler`] never panics, and the assembler
//!   keeps its documented promises (see the function).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::assembler::{Answer, Assembler, Change, Config, Prompt};
use crate::codec;
use crate::headers::{self, Status};
use crate::ids::Serial;
use crate::protocol::{Message, MessageAction, MessageVersion};

/// Decodes the input as a frame (invalid UTF-8 replaced); whatever decodes must survive
/// `encode` and decode again to an equal frame.
pub fn check_codec(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let Ok(frame) = codec::decode(&text) else {
        return;
    };
    let encoded = match codec::encode(&frame) {
        Ok(encoded) => encoded,
        Err(error) => panic!("a decoded frame does not encode ({error}): {frame:?}"),
    };
    match codec::decode(&encoded) {
        Ok(again) => assert_eq!(again, frame, "re-encoded as {encoded}"),
        Err(error) => panic!("the re-encoded frame does not decode ({error}): {encoded}"),
    }
}

/// Applies the messages of [`AssemblerInput::decode`] and checks, panicking otherwise:
///
/// 1. No panic, and a message that fails leaves the assembler as it was (its entry and the
///    numbers of answers and prompts; an eviction would show in the entry of a new serial).
/// 2. The changes, applied to an empty view, give the text, status and deleted flag of every
///    entry (and whether an answer is partial): after each message for the entries it touched,
///    and at the end for all.
/// 3. The same messages, applied with `apply_all` to a fresh assembler, give the same changes,
///    the same errors and the same answers and prompts.
/// 4. When the last message for a serial is an update whose version is newer than every
///    version seen for that serial before, the entry kept for it (if any) holds that update's
///    text (cut at the text cap), not deleted nor partial, and an answer has the status of the
///    update's `status` header.
pub fn check_assembler(input: &[u8]) {
    let AssemblerInput { config, messages } = AssemblerInput::decode(input);

    let mut asm = Assembler::with_config(config);
    let mut view = View::default();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for (index, msg) in messages.iter().enumerate() {
        let serial = msg.serial.clone().unwrap_or_default();
        let before = (
            View::entry_of(&asm, &serial),
            asm.answer_count(),
            asm.prompt_count(),
        );
        match asm.apply(msg) {
            Ok(new) => {
                new.iter().for_each(|change| view.apply(change));
                let touched = new.iter().map(Change::serial).chain([&serial]);
                for serial in touched {
                    assert_eq!(
                        view.0.get(serial),
                        View::entry_of(&asm, serial).as_ref(),
                        "after message {index} ({msg:?}) the changes do not rebuild {serial}"
                    );
                }
                changes.extend(new);
            }
            Err(error) => {
                let after = (
                    View::entry_of(&asm, &serial),
                    asm.answer_count(),
                    asm.prompt_count(),
                );
                assert_eq!(
                    after, before,
                    "message {index} failed ({error}) yet changed things"
                );
                errors.push((index, error));
            }
        }
    }
    assert_eq!(
        view,
        View::of(&asm),
        "the changes do not rebuild the assembler"
    );

    let mut again = Assembler::with_config(config);
    let outcome = again.apply_all(&messages);
    assert_eq!(outcome.changes, changes, "apply_all gave other changes");
    assert_eq!(outcome.errors, errors, "apply_all gave other errors");
    assert_eq!(
        Snapshot::of(&again),
        Snapshot::of(&asm),
        "apply_all ended elsewhere"
    );

    check_final_updates(&messages, &asm);
}

/// Property 4 of [`check_assembler`].
fn check_final_updates(messages: &[Message], asm: &Assembler) {
    // For each serial: its last message, and the newest version seen before that one.
    let mut last: BTreeMap<&Serial, (usize, Option<&Serial>)> = BTreeMap::new();
    for (index, msg) in messages.iter().enumerate() {
        let Some(serial) = &msg.serial else { continue };
        let newest = last
            .get(serial)
            .and_then(|&(previous, newest)| newest.max(implied_version(&messages[previous])));
        last.insert(serial, (index, newest));
    }
    for (serial, (index, newest_before)) in last {
        let msg = &messages[index];
        if msg.action() != MessageAction::UPDATE
            || msg.name.as_deref() == Some(headers::CANCEL_NAME)
        {
            continue;
        }
        let (Some(version), Ok(text)) = (msg.version_serial(), msg.text()) else {
            continue;
        };
        if newest_before.is_some_and(|newest| newest >= version) {
            continue;
        }
        let kept = fit(&text, asm.config().max_text_bytes);
        if let Some(answer) = asm.answer(serial) {
            assert_eq!(
                answer.text(),
                kept,
                "answer {serial} after its final update"
            );
            assert!(
                !answer.is_deleted() && !answer.is_partial(),
                "answer {serial}"
            );
            if let Some(headers) = msg.headers() {
                let status = headers.get(headers::STATUS).and_then(|s| Status::parse(s));
                assert_eq!(answer.status(), status.unwrap_or(Status::Streaming));
            }
        } else if let Some(prompt) = asm.prompt(serial) {
            assert_eq!(
                prompt.text(),
                kept,
                "prompt {serial} after its final update"
            );
            assert!(
                !prompt.is_deleted() && !prompt.is_partial(),
                "prompt {serial}"
            );
        }
    }
}

/// The version a message would give its entry: its own, or for a create without one, its
/// serial.
fn implied_version(msg: &Message) -> Option<&Serial> {
    match (msg.version_serial(), msg.action()) {
        (Some(version), _) => Some(version),
        (None, MessageAction::CREATE) => msg.serial.as_ref(),
        (None, _) => None,
    }
}

/// The longest prefix of `text` within `max` bytes that ends on a char boundary.
fn fit(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Everything an assembler holds, comparable.
#[derive(Debug, PartialEq)]
struct Snapshot {
    answers: Vec<Answer>,
    prompts: Vec<Prompt>,
}

impl Snapshot {
    fn of(asm: &Assembler) -> Self {
        Self {
            answers: asm.answers().cloned().collect(),
            prompts: asm.prompts().cloned().collect(),
        }
    }
}

/// What a UI knows of one entry, from changes alone.
#[derive(Debug, PartialEq)]
struct ViewEntry {
    prompt: bool,
    text: String,
    status: Status,
    deleted: bool,
    /// Only answers announce it (`Change::Created`); always false for prompts.
    partial: bool,
}

/// A UI's picture rebuilt from [`Change`]s only.
#[derive(Debug, Default, PartialEq)]
struct View(BTreeMap<Serial, ViewEntry>);

impl View {
    fn apply(&mut self, change: &Change) {
        let entry = |prompt, text: &str, partial| ViewEntry {
            prompt,
            text: text.to_owned(),
            status: Status::Streaming,
            deleted: false,
            partial,
        };
        match change {
            Change::Created {
                serial,
                text,
                partial,
            } => {
                self.0.insert(serial.clone(), entry(false, text, *partial));
            }
            Change::PromptAdded { serial, text } => {
                self.0.insert(serial.clone(), entry(true, text, false));
            }
            Change::Evicted { serial } => {
                self.0.remove(serial);
            }
            Change::Appended { serial, delta } => {
                if let Some(e) = self.0.get_mut(serial) {
                    e.text.push_str(delta);
                }
            }
            Change::Replaced { serial, text } => {
                if let Some(e) = self.0.get_mut(serial) {
                    e.text.clone_from(text);
                    e.deleted = false;
                    e.partial = false;
                }
            }
            Change::StatusChanged { serial, status } => {
                if let Some(e) = self.0.get_mut(serial) {
                    e.status = *status;
                }
            }
            Change::Deleted { serial } => {
                if let Some(e) = self.0.get_mut(serial) {
                    e.deleted = true;
                }
            }
            Change::Truncated { .. } | Change::Gap { .. } => {}
        }
    }

    fn of(asm: &Assembler) -> Self {
        let answers = asm.answers().map(|a| (a.serial().clone(), Self::answer(a)));
        let prompts = asm.prompts().map(|p| (p.serial().clone(), Self::prompt(p)));
        Self(answers.chain(prompts).collect())
    }

    /// What the view should hold for one serial.
    fn entry_of(asm: &Assembler, serial: &Serial) -> Option<ViewEntry> {
        asm.answer(serial)
            .map(Self::answer)
            .or_else(|| asm.prompt(serial).map(Self::prompt))
    }

    fn answer(answer: &Answer) -> ViewEntry {
        ViewEntry {
            prompt: false,
            text: answer.text().to_owned(),
            status: answer.status(),
            deleted: answer.is_deleted(),
            partial: answer.is_partial(),
        }
    }

    fn prompt(prompt: &Prompt) -> ViewEntry {
        ViewEntry {
            prompt: true,
            text: prompt.text().to_owned(),
            status: Status::Streaming,
            deleted: prompt.is_deleted(),
            partial: false,
        }
    }
}

/// Words picked by a string selector byte for serials and version serials (one pool, so
/// that a create's serial orders against the versions of later deliveries).
pub const SERIALS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Words picked for message data.
pub const TEXTS: &[&str] = &[
    "",
    "a",
    "b",
    "ab",
    "Hello",
    " world",
    "Hello world",
    "é",
    "😀",
    "中",
    "a\u{301}",
    "aGk=",
    "/w==",
    "{\"k\":1}",
];
/// Words picked for the `status` header.
pub const STATUSES: &[&str] = &[
    "streaming",
    "completed",
    "incomplete",
    "failed",
    "cancelled",
    "done",
];
/// The `encoding` a data kind byte selects (bits 2–4).
pub const ENCODINGS: &[Option<&str>] = &[
    None,
    Some("base64"),
    Some("utf-8/base64"),
    Some("json"),
    Some("utf-8"),
    Some("cipher+aes-128-cbc/base64"),
    None,
    None,
];
/// The message names an op byte selects (bits 3–4).
const NAMES: [Option<&str>; 4] = [
    Some(headers::ANSWER_NAME),
    Some(headers::PROMPT_NAME),
    Some(headers::CANCEL_NAME),
    None,
];
/// The caps a limits byte selects (two bits each); `None` keeps the default.
const MAX_ENTRIES: [Option<usize>; 4] = [Some(1), Some(2), Some(3), None];
const MAX_TEXT: [Option<usize>; 4] = [Some(1), Some(5), Some(32), None];

const ABSENT: u8 = 0xfe;
const LITERAL: u8 = 0xff;

/// What the assembler target applies: limits and messages, decoded from bytes.
///
/// ```text
/// input   = limits message*          (a message cut off by the end of input is dropped)
/// limits  = byte: bits 0-1 max answers [1, 2, 3, default], bits 2-3 max prompts (same),
///                 bits 4-5 max text bytes [1, 5, 32, default]
/// message = op serial [version] [data] [status]
/// op      = byte: bits 0-2 action [create, update, delete, meta, summary, append, absent, 9]
///                 bits 3-4 name [response, prompt, cancel, absent]
///                 bit 5: a version follows; bit 6: data follows; bit 7: a status header follows
/// serial  = str (SERIALS)           absent: the message has no serial
/// version = str (SERIALS)           absent: a version object without serial
/// data    = kind [str (TEXTS)]      kind bits 0-1 [string, {"text": str}, 7, null] (str only
///                                   for the first two), bits 2-4 the ENCODINGS entry
/// status  = str (STATUSES)          absent: `extras.headers` without any header
/// str     = byte: 0xff, a length byte, then that many bytes (lossy UTF-8, at most 255 bytes
///                 of text): a literal
///                 0xfe: absent; anything else: pool[byte % pool length]
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct AssemblerInput {
    /// The assembler's limits.
    pub config: Config,
    /// The deliveries, in order.
    pub messages: Vec<Message>,
}

impl AssemblerInput {
    /// Decodes fuzz input; never fails (every byte string is some input).
    pub fn decode(input: &[u8]) -> Self {
        let mut reader = Reader(input);
        let limits = reader.byte().unwrap_or(0xff);
        let mut config = Config::default();
        if let Some(max) = MAX_ENTRIES[usize::from(limits & 3)] {
            config = config.with_max_answers(max);
        }
        if let Some(max) = MAX_ENTRIES[usize::from((limits >> 2) & 3)] {
            config = config.with_max_prompts(max);
        }
        if let Some(max) = MAX_TEXT[usize::from((limits >> 4) & 3)] {
            config = config.with_max_text_bytes(max);
        }
        let mut messages = Vec::new();
        while let Some(msg) = reader.message() {
            messages.push(msg);
        }
        Self { config, messages }
    }

    /// Encodes `messages` in the format [`Self::decode`] reads, after a `limits` byte: the
    /// seed corpus is made this way. Strings are written as literals (cut to 255 bytes);
    /// fields the format cannot carry (ids, other headers, timestamps) are left out, and other
    /// names read back as `response`.
    pub fn encode(limits: u8, messages: &[Message]) -> Vec<u8> {
        let mut out = vec![limits];
        for msg in messages {
            let action = match msg.action {
                None => 6,
                Some(action) if action.0 <= 5 => action.0,
                Some(_) => 7,
            };
            let name = NAMES
                .iter()
                .position(|n| *n == msg.name.as_deref())
                .unwrap_or(0) as u8;
            let op = action
                | name << 3
                | u8::from(msg.version.is_some()) << 5
                | u8::from(msg.data.is_some()) << 6
                | u8::from(msg.extras.is_some()) << 7;
            out.push(op);
            put_str(&mut out, msg.serial.as_ref().map(Serial::as_str));
            if let Some(version) = &msg.version {
                put_str(&mut out, version.serial.as_ref().map(Serial::as_str));
            }
            if let Some(data) = &msg.data {
                let encoding = ENCODINGS
                    .iter()
                    .position(|e| *e == msg.encoding.as_deref())
                    .unwrap_or(0) as u8;
                let (kind, text) = match data {
                    Value::String(s) => (0, Some(s.clone())),
                    Value::Object(map) => {
                        let text = match map.get("text") {
                            Some(Value::String(s)) => s.clone(),
                            _ => data.to_string(),
                        };
                        (1, Some(text))
                    }
                    Value::Null => (3, None),
                    _ => (2, None),
                };
                out.push(kind | encoding << 2);
                if let Some(text) = text {
                    put_str(&mut out, Some(&text));
                }
            }
            if msg.extras.is_some() {
                put_str(&mut out, msg.header(headers::STATUS));
            }
        }
        out
    }
}

/// Writes a literal string (cut on a char boundary to 255 bytes) or the absent marker.
fn put_str(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(value) = value else {
        out.push(ABSENT);
        return;
    };
    let value = fit(value, 255);
    out.push(LITERAL);
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

/// Reads the format of [`AssemblerInput`].
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// A string selector: `Some(None)` when it says "absent".
    fn string(&mut self, pool: &[&str]) -> Option<Option<String>> {
        match self.byte()? {
            ABSENT => Some(None),
            LITERAL => {
                let len = usize::from(self.byte()?).min(self.0.len());
                let (bytes, rest) = self.0.split_at(len);
                self.0 = rest;
                // Replacement characters can make the text longer than its bytes; a literal
                // stays within what `encode` can write.
                Some(Some(fit(&String::from_utf8_lossy(bytes), 255).to_owned()))
            }
            pick => Some(Some(pool[usize::from(pick) % pool.len()].to_owned())),
        }
    }

    fn message(&mut self) -> Option<Message> {
        let op = self.byte()?;
        let mut msg = Message {
            action: match op & 7 {
                6 => None,
                7 => Some(MessageAction(9)),
                action => Some(MessageAction(action)),
            },
            name: NAMES[usize::from((op >> 3) & 3)].map(str::to_owned),
            serial: self.string(SERIALS)?.map(Serial::new),
            ..Message::default()
        };
        if op & 1 << 5 != 0 {
            msg.version = Some(MessageVersion {
                serial: self.string(SERIALS)?.map(Serial::new),
                ..MessageVersion::default()
            });
        }
        if op & 1 << 6 != 0 {
            let kind = self.byte()?;
            msg.encoding = ENCODINGS[usize::from((kind >> 2) & 7)].map(str::to_owned);
            msg.data = Some(match kind & 3 {
                0 => Value::String(self.string(TEXTS)?.unwrap_or_default()),
                1 => json!({ "text": self.string(TEXTS)?.unwrap_or_default() }),
                2 => json!(7),
                _ => Value::Null,
            });
        }
        if op & 1 << 7 != 0 {
            msg.extras = Some(match self.string(STATUSES)? {
                Some(status) => json!({ "headers": { headers::STATUS: status } }),
                None => json!({ "headers": {} }),
            });
        }
        Some(msg)
    }
}
