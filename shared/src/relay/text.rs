//! The answer text of one response: message parts keyed by output item and content index,
//! joined with a blank line between non-empty parts, in the order their text first appeared.

use std::collections::HashMap;

use crate::openai::{ItemKind, Position};
use crate::protocol::json_len::escape_extra;

/// What separates two non-empty parts of an answer.
pub(crate) const PART_SEPARATOR: &str = "\n\n";

/// How an output item is identified: by id when known, else by output index.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
enum ItemKey {
    Id(String),
    Index(u64),
    /// Neither id nor index (a server that sends neither): one implicit item.
    Anonymous,
}

/// One content part of one output item.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub(crate) struct PartKey {
    item: ItemKey,
    content: u64,
}

/// What an edit did to the joined text.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Edit {
    /// Nothing changed.
    Unchanged,
    /// Text was added at the end; everything before it is as it was.
    Extended,
    /// The text was rebuilt; its first `kept` bytes are as they were.
    Rewritten { kept: usize },
}

/// The accumulated answer text and what is known about the output items.
#[derive(Clone, Debug, Default)]
pub(crate) struct AnswerText {
    /// Non-empty parts, in the order their text first appeared.
    parts: Vec<(PartKey, String)>,
    /// The parts joined with [`PART_SEPARATOR`].
    text: String,
    /// The type of each output item announced by `output_item.added` or `.done`.
    kinds: HashMap<ItemKey, ItemKind>,
    /// Item ids by output index, so that an event carrying only an index finds its item.
    ids_by_index: HashMap<u64, String>,
    /// How many leading bytes of `text` [`Self::escape_extra`] covers.
    escaped_upto: usize,
    /// The bytes JSON escaping adds to `text[..escaped_upto]`.
    escape_extra: usize,
}

impl AnswerText {
    /// The joined text.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The joined text's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.text.len()
    }

    /// The length of the text as a JSON string's contents (escapes included), which is
    /// what a server that measures whole JSON messages counts. Only text added since the
    /// last call is scanned.
    pub(crate) fn json_len(&mut self) -> usize {
        if self.escaped_upto > self.text.len() || !self.text.is_char_boundary(self.escaped_upto) {
            self.escaped_upto = 0;
            self.escape_extra = 0;
        }
        if let Some(new) = self.text.get(self.escaped_upto..) {
            self.escape_extra += new.chars().map(escape_extra).sum::<usize>();
        }
        self.escaped_upto = self.text.len();
        self.text.len() + self.escape_extra
    }

    /// Cuts the text so that its JSON length ([`Self::json_len`]) is at most `max`, on a
    /// char boundary. Parts are left alone: the text is final once cut.
    pub(crate) fn truncate_json(&mut self, max: usize) {
        let mut json_len = 0;
        let mut end = 0;
        for (at, c) in self.text.char_indices() {
            let cost = c.len_utf8() + escape_extra(c);
            if json_len + cost > max {
                break;
            }
            json_len += cost;
            end = at + c.len_utf8();
        }
        if end < self.text.len() {
            self.text.truncate(end);
            self.escaped_upto = 0;
            self.escape_extra = 0;
        }
    }

    /// Records an output item's id, index and type.
    pub(crate) fn note_item(
        &mut self,
        output_index: Option<u64>,
        id: Option<&str>,
        kind: Option<&ItemKind>,
    ) {
        if let (Some(index), Some(id)) = (output_index, id) {
            self.ids_by_index.insert(index, id.to_owned());
        }
        if let Some(kind) = kind {
            if let Some(id) = id {
                self.kinds.insert(ItemKey::Id(id.to_owned()), kind.clone());
            }
            if let Some(index) = output_index {
                self.kinds.insert(ItemKey::Index(index), kind.clone());
            }
        }
    }

    /// Whether text at this position belongs to the answer: true unless its item is known
    /// to be something other than a message (deltas of unannounced items count, because
    /// servers such as llama.cpp skip `output_item.added`).
    pub(crate) fn is_answer_text(&self, position: &Position) -> bool {
        let by_key = self.kinds.get(&self.item_key(position));
        let by_index = position
            .output_index
            .and_then(|i| self.kinds.get(&ItemKey::Index(i)));
        match by_key.or(by_index) {
            Some(kind) => *kind == ItemKind::Message,
            None => true,
        }
    }

    /// The part a delta or done event at this position belongs to.
    pub(crate) fn part_key(&self, position: &Position) -> PartKey {
        PartKey {
            item: self.item_key(position),
            content: position.content_index.unwrap_or(0),
        }
    }

    /// Adds a fragment to a part.
    pub(crate) fn push(&mut self, key: PartKey, delta: &str) -> Edit {
        if delta.is_empty() {
            return Edit::Unchanged;
        }
        match self.parts.iter().position(|(k, _)| *k == key) {
            None => {
                self.start_part(key, delta);
                Edit::Extended
            }
            Some(i) if i + 1 == self.parts.len() => {
                self.parts[i].1.push_str(delta);
                self.text.push_str(delta);
                Edit::Extended
            }
            Some(i) => {
                // A part that is not the last one grew: items interleave.
                self.parts[i].1.push_str(delta);
                self.rebuild()
            }
        }
    }

    /// Sets a part's full text, as a `*.done` event gives it; it wins over the deltas.
    pub(crate) fn replace_part(&mut self, key: PartKey, full: &str) -> Edit {
        let Some(i) = self.parts.iter().position(|(k, _)| *k == key) else {
            if full.is_empty() {
                return Edit::Unchanged;
            }
            self.start_part(key, full);
            return Edit::Extended;
        };
        let current = &self.parts[i].1;
        if current == full {
            return Edit::Unchanged;
        }
        if i + 1 == self.parts.len() {
            if let Some(missing) = full.strip_prefix(current.as_str()) {
                // Only the end was missing (a lost delta): extend.
                let missing = missing.to_owned();
                self.parts[i].1.push_str(&missing);
                self.text.push_str(&missing);
                return Edit::Extended;
            }
        }
        if full.is_empty() {
            self.parts.remove(i);
        } else {
            self.parts[i].1 = full.to_owned();
        }
        self.rebuild()
    }

    fn start_part(&mut self, key: PartKey, text: &str) {
        if !self.text.is_empty() {
            self.text.push_str(PART_SEPARATOR);
        }
        self.text.push_str(text);
        self.parts.push((key, text.to_owned()));
    }

    fn rebuild(&mut self) -> Edit {
        let mut text = String::with_capacity(self.text.len());
        for (_, part) in &self.parts {
            if !text.is_empty() {
                text.push_str(PART_SEPARATOR);
            }
            text.push_str(part);
        }
        let kept = self
            .text
            .bytes()
            .zip(text.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        self.text = text;
        self.escaped_upto = 0;
        self.escape_extra = 0;
        Edit::Rewritten { kept }
    }

    fn item_key(&self, position: &Position) -> ItemKey {
        match (&position.item_id, position.output_index) {
            (Some(id), _) => ItemKey::Id(id.clone()),
            (None, Some(index)) => match self.ids_by_index.get(&index) {
                Some(id) => ItemKey::Id(id.clone()),
                None => ItemKey::Index(index),
            },
            (None, None) => ItemKey::Anonymous,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
