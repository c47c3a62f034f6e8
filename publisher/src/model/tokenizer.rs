//! The tokenizer, built from the GGUF's own metadata, and [`TextStream`], which turns
//! generated token ids into text without ever splitting a UTF-8 character.
//!
//! candle builds a byte-level BPE `tokenizers::Tokenizer` from `tokenizer.ggml.tokens`,
//! `tokenizer.ggml.merges` and the token types (control tokens become special added
//! tokens). Its pre-tokenizer is chosen by `tokenizer.ggml.pre`; candle knows `llama3`,
//! `qwen2` and friends, and treats the rest as plain GPT-2. SmolLM's (`smollm`) differs from
//! GPT-2 in two ways, so it is set here: every digit is split off on its own, and no space is
//! put before the first word.

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

use super::ModelError;

/// The tokenizer described by a GGUF file's metadata.
pub fn from_gguf(content: &gguf_file::Content) -> Result<Tokenizer, ModelError> {
    let mut tokenizer =
        Tokenizer::from_gguf(content).map_err(|e| ModelError::Metadata(e.to_string()))?;
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    if pre == Some("smollm") {
        let byte_level = ByteLevel::new(false, true, true);
        let steps = vec![Digits::new(true).into(), byte_level.into()];
        tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    }
    Ok(tokenizer)
}

/// Generated ids in, text out: each call to [`TextStream::push`] returns the text that the
/// ids so far settle, holding back bytes that do not yet make a whole character.
///
/// A byte-level token may end in the middle of a multi-byte character (an emoji is often two
/// or three tokens). Decoding such a prefix yields U+FFFD, so the stream waits for the next
/// token; once the window decodes cleanly, the new part of the text is released. Decoding a
/// window that starts a few tokens back keeps the decoder's view of word boundaries right.
#[derive(Debug)]
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    /// Where the window decoded as context begins.
    prefix: usize,
    /// Where the ids not yet released as text begin.
    read: usize,
}

/// At most this many ids are held back waiting for a character to complete (a UTF-8
/// character has at most four bytes, and every byte-level token at least one).
const MAX_HELD: usize = 4;

impl<'t> TextStream<'t> {
    /// A stream that decodes with `tokenizer`.
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds a generated id; returns the text it completes, if any (special tokens add none).
    pub fn push(&mut self, id: u32) -> Result<Option<String>, ModelError> {
        self.ids.push(id);
        let before = self.decode(self.prefix, self.read)?;
        let now = self.decode(self.prefix, self.ids.len())?;
        let held = self.ids.len() - self.read;
        if now.len() > before.len() && (!now.ends_with('\u{FFFD}') || held >= MAX_HELD) {
            let text = now.strip_prefix(before.as_str()).map(str::to_owned);
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(text.filter(|t| !t.is_empty()));
        }
        Ok(None)
    }

    /// The text still held back, released at the end of the answer.
    pub fn finish(&mut self) -> Result<Option<String>, ModelError> {
        let before = self.decode(self.prefix, self.read)?;
        let now = self.decode(self.prefix, self.ids.len())?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now
            .strip_prefix(before.as_str())
            .map(str::to_owned)
            .filter(|t| !t.is_empty()))
    }

    fn decode(&self, from: usize, to: usize) -> Result<String, ModelError> {
        let ids = self.ids.get(from..to).unwrap_or_default();
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Inference(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
