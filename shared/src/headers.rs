//! The answer metadata this system carries in `extras.headers`, and the message names it uses.
//!
//! These names are an interface: the page, the tests and other clients rely on them.

use std::fmt;

/// Name of the message that holds one answer (message-per-response).
pub const ANSWER_NAME: &str = "response";
/// Name of the message that holds a prompt.
pub const PROMPT_NAME: &str = "prompt";
/// Name of a message asking the publisher of an answer to stop; data is the answer's serial.
pub const CANCEL_NAME: &str = "cancel";

/// `streaming`, `completed`, `incomplete`, `failed` or `cancelled`.
pub const STATUS: &str = "status";
/// OpenAI's id for the response.
pub const RESPONSE_ID: &str = "response-id";
/// The model that produced the answer.
pub const MODEL: &str = "model";
/// Why an answer is incomplete (`max_output_tokens`, `content_filter`, `max_message_size`).
pub const REASON: &str = "reason";
/// Human-readable message when an answer failed.
pub const ERROR: &str = "error";
/// `true` when the text is a refusal.
pub const REFUSAL: &str = "refusal";
/// `openai`, or `replay` for recorded streams.
pub const SOURCE: &str = "source";
/// Serial of the prompt message the answer responds to.
pub const PROMPT: &str = "prompt";
/// The UTF-8 byte length of the answer's whole text once this message is applied: `0` on
/// the create, the new total on each append, the full length on an update. A subscriber
/// finds where an append's fragment starts (`length` − fragment bytes), so a reordered,
/// repeated or missing append is seen as such and never becomes a hole in the text. A
/// server that rolls several appends into one keeps the latest one's headers, and the
/// rule still holds for the concatenated fragment.
pub const LENGTH: &str = "length";

/// On the streaming messages of a background response that keeps a lease: the
/// `sequence_number` of the last model stream event whose text this message's text
/// includes. Whoever carries the answer on after its publisher died streams the response
/// again and publishes only what comes after it.
pub const SEQUENCE: &str = "sequence";

/// A digest of the answer's whole text once this message is applied: FNV-1a (64 bits) of
/// its UTF-8 bytes as 16 lowercase hex digits ([`digest`]). [`LENGTH`] catches a text with a
/// part missing; this catches one whose parts a server applied out of order (an append whose
/// NACK was lost, resent on a new connection and stored after later ones), which has the
/// right length and the wrong text. A server's aggregate carries the headers of the last
/// message it applied, so a subscriber can check any full version it is given. It guards
/// against a server's mistakes, not an adversary.
pub const DIGEST: &str = "digest";

/// The [`DIGEST`] value of `text`.
pub fn digest(text: &str) -> String {
    Digest::of(text).to_string()
}

/// A running [`DIGEST`]: FNV-1a over bytes, extended fragment by fragment, so a subscriber
/// checks each append against the publisher's digest without hashing the whole text again.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Digest(u64);

impl Digest {
    /// The digest of the empty text.
    pub const EMPTY: Digest = Digest(0xcbf2_9ce4_8422_2325);

    /// The digest of `text`.
    pub fn of(text: &str) -> Self {
        Self::EMPTY.extend(text)
    }

    /// The digest of the text this one is of, followed by `more`.
    #[must_use]
    pub fn extend(self, more: &str) -> Self {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        Self(
            more.bytes()
                .fold(self.0, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME)),
        )
    }

    /// Reads a [`DIGEST`] header value: 16 hex digits.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 16 {
            return None;
        }
        u64::from_str_radix(value, 16).ok().map(Self)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Reads a [`LENGTH`] header value: a decimal byte count.
pub fn parse_length(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Where an answer stands.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Status {
    Streaming,
    Completed,
    Incomplete,
    Failed,
    Cancelled,
}

impl Status {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Completed => "completed",
            Self::Incomplete => "incomplete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a header value; `None` for values this system does not define.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "streaming" => Self::Streaming,
            "completed" | "complete" => Self::Completed,
            "incomplete" => Self::Incomplete,
            "failed" => Self::Failed,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether no more text will follow.
    pub fn is_terminal(self) -> bool {
        self != Self::Streaming
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_rejects_unknown_values() {
        for s in [
            Status::Streaming,
            Status::Completed,
            Status::Incomplete,
            Status::Failed,
            Status::Cancelled,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("weird"), None);
        assert!(!Status::Streaming.is_terminal());
        assert!(Status::Cancelled.is_terminal());
    }

    #[test]
    fn length_values_are_plain_decimal_byte_counts() {
        assert_eq!(parse_length("0"), Some(0));
        assert_eq!(parse_length("1636"), Some(1636));
        for bad in [
            "",
            "-1",
            "+3",
            " 3",
            "3.0",
            "0x10",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
