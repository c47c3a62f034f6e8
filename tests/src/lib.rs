//! Helpers for the cross-crate end-to-end tests in `tests/tests/`: recorded streams and
//! synthetic OpenAI events.

pub mod harness;
pub mod js;
pub mod process;
pub mod proxy;
pub mod publish;
pub mod realtime;
pub mod sockudo;

use std::path::PathBuf;

use serde_json::{json, Value};
use shared::openai::recording::Recording;
use shared::openai::{EventError, StreamEvent};

/// The repository's `fixtures/openai/` folder.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/openai")
}

/// Reads and parses one recording from `fixtures/openai/`.
pub fn recording(name: &str) -> Result<Recording, String> {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Recording::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The events of a recording's last successful attempt.
pub fn recorded_events(name: &str) -> Result<Vec<StreamEvent>, String> {
    let recording = recording(name)?;
    let attempt = recording
        .attempts
        .iter()
        .rev()
        .find(|a| a.status == 200)
        .ok_or_else(|| format!("{name}: no successful attempt"))?;
    attempt
        .events()
        .collect::<Result<_, EventError>>()
        .map_err(|e| format!("{name}: {e}"))
}

/// Builds synthetic stream events the way OpenAI shapes them.
#[derive(Debug, Default)]
pub struct Events {
    seq: u64,
}

impl Events {
    fn event(&mut self, mut value: Value) -> StreamEvent {
        value["sequence_number"] = json!(self.seq);
        self.seq += 1;
        match StreamEvent::from_value(value) {
            Ok(event) => event,
            Err(err) => panic!("test event does not decode: {err}"),
        }
    }

    fn response(status: &str) -> Value {
        json!({"id": "resp_test", "object": "response", "status": status, "model": "gpt-test", "output": []})
    }

    /// `response.created`.
    pub fn created(&mut self) -> StreamEvent {
        self.event(json!({"type": "response.created", "response": Self::response("in_progress")}))
    }

    /// `response.output_item.added` for an item of `kind` (`message`, `reasoning`, …).
    pub fn item_added(&mut self, index: u32, id: &str, kind: &str) -> StreamEvent {
        self.event(json!({"type": "response.output_item.added", "output_index": index,
                          "item": {"id": id, "type": kind, "status": "in_progress", "content": []}}))
    }

    /// `response.output_text.delta` of a message item.
    pub fn text_delta(&mut self, index: u32, id: &str, delta: &str) -> StreamEvent {
        self.event(
            json!({"type": "response.output_text.delta", "item_id": id, "output_index": index,
                          "content_index": 0, "delta": delta, "logprobs": []}),
        )
    }

    /// `response.reasoning_summary_text.delta` of a reasoning item.
    pub fn reasoning_delta(&mut self, index: u32, id: &str, delta: &str) -> StreamEvent {
        self.event(
            json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                          "output_index": index, "summary_index": 0, "delta": delta}),
        )
    }

    /// `response.completed`.
    pub fn completed(&mut self) -> StreamEvent {
        self.event(json!({"type": "response.completed", "response": Self::response("completed")}))
    }

    /// `response.incomplete` with a reason.
    pub fn incomplete(&mut self, reason: &str) -> StreamEvent {
        let mut response = Self::response("incomplete");
        response["incomplete_details"] = json!({"reason": reason});
        self.event(json!({"type": "response.incomplete", "response": response}))
    }

    /// A mid-stream `error` event in the nested shape the live API sends.
    pub fn error(&mut self, message: &str) -> StreamEvent {
        self.event(
            json!({"type": "error", "error": {"type": "server_error", "code": "server_error",
                                                    "message": message, "param": null}}),
        )
    }
}
