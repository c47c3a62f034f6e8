//! The conversation a request carries, as [`Turn`]s, and the GGUF's chat template
//! (`tokenizer.chat_template`, a Jinja template) that turns them into the model's prompt.

use candle_core::quantized::gguf_file;
use serde_json::Value;

use super::ModelError;

/// One message of the conversation: `system`, `user` or `assistant`, and its text.
#[derive(Clone, Debug, Eq, PartialEq, serde::Serialize)]
pub struct Turn {
    /// Who speaks.
    pub role: String,
    /// What they say.
    pub content: String,
}

impl Turn {
    /// A turn of `role` saying `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// The turns of a Responses request: `instructions` as a system turn first, then `input`,
/// which is a string (one user turn) or a list of message items. A message's `content` is a
/// string or a list of parts whose `text` is joined; `developer` counts as `system`; items
/// that are not messages (reasoning, tool calls) are skipped. `None` means the input has a
/// shape this server does not take.
pub fn turns(instructions: Option<&str>, input: &Value) -> Option<Vec<Turn>> {
    let mut turns = Vec::new();
    if let Some(text) = instructions.filter(|t| !t.trim().is_empty()) {
        turns.push(Turn::new("system", text));
    }
    match input {
        Value::String(text) => turns.push(Turn::new("user", text.as_str())),
        Value::Array(items) => {
            for item in items {
                let kind = item.get("type").and_then(Value::as_str);
                if !matches!(kind, None | Some("message")) {
                    continue;
                }
                let role = match item.get("role").and_then(Value::as_str)? {
                    "developer" | "system" => "system",
                    "assistant" => "assistant",
                    "user" => "user",
                    _ => return None,
                };
                let content = match item.get("content")? {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|part| part.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => return None,
                };
                turns.push(Turn::new(role, content));
            }
        }
        _ => return None,
    }
    Some(turns)
}

/// A chat template: the Jinja source, rendered with `messages` and
/// `add_generation_prompt = true`.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

/// The template used when a GGUF has none: ChatML, which SmolLM and many others use.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + \
                      message['content'] + '<|im_end|>' + '\n' }}{% endfor %}\
                      {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

impl ChatTemplate {
    /// The template of a GGUF file (ChatML when it has none), checked by rendering a
    /// sample conversation.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, ModelError> {
        let text = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_string().ok())
                .cloned()
        };
        let token = |key: &str| -> String {
            let id = content.metadata.get(key).and_then(|v| v.to_u32().ok());
            let tokens = content
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok());
            id.zip(tokens)
                .and_then(|(id, tokens)| tokens.get(id as usize)?.to_string().ok().cloned())
                .unwrap_or_default()
        };
        let template = Self::new(
            text("tokenizer.chat_template").unwrap_or_else(|| CHATML.to_owned()),
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        );
        template.render(&[Turn::new("user", "check")])?;
        Ok(template)
    }

    /// A template from its Jinja source and the texts of the begin and end tokens it may
    /// name (`bos_token`, `eos_token`).
    pub fn new(source: String, bos: String, eos: String) -> Self {
        Self { source, bos, eos }
    }

    /// The prompt for `turns`, ending where the assistant's answer begins.
    pub fn render(&self, turns: &[Turn]) -> Result<String, ModelError> {
        let env = minijinja::Environment::new();
        let context = minijinja::context! {
            messages => turns,
            add_generation_prompt => true,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        env.render_str(&self.source, context)
            .map_err(|e| ModelError::Template(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
