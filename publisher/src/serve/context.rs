//! Multi-turn context from the channel itself: earlier prompts and answers read from its
//! history become the model's input, so no daemon keeps conversation state of its own.

use std::collections::HashSet;

use serde_json::{json, Value};
use shared::headers::{ANSWER_NAME, PROMPT_NAME};
use shared::protocol::Message;

/// Most characters of earlier turns given to the model; older turns are left out first.
pub const MAX_CONTEXT_CHARS: usize = 24_000;

/// The model input for `prompt` after the channel's `history` (newest first, as REST
/// history returns it): up to `turns` earlier messages, oldest first, then the prompt.
pub fn conversation(history: &[Message], turns: usize, prompt: &str) -> Value {
    let mut seen = HashSet::new();
    let mut earlier = Vec::new();
    let mut chars = 0;
    for message in history {
        if earlier.len() >= turns {
            break;
        }
        let role = match message.name.as_deref() {
            Some(PROMPT_NAME) => "user",
            Some(ANSWER_NAME) => "assistant",
            _ => continue,
        };
        // Several versions of one answer may be listed; the newest comes first.
        if let Some(serial) = &message.serial {
            if !seen.insert(serial.clone()) {
                continue;
            }
        }
        let text = message.text().unwrap_or_default();
        if text.trim().is_empty() {
            continue;
        }
        chars += text.chars().count();
        if chars > MAX_CONTEXT_CHARS {
            break;
        }
        earlier.push(json!({"role": role, "content": text}));
    }
    if earlier.is_empty() {
        return Value::String(prompt.to_owned());
    }
    earlier.reverse();
    earlier.push(json!({"role": "user", "content": prompt}));
    Value::Array(earlier)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
