//! The Responses stream events of one answer with a single text message, as a local server
//! writes them: numbered SSE frames for the lifecycle, the text deltas and the ending. The
//! replay server's synthesized answers and the local model ([`crate::model::server`]) both
//! write through [`AnswerEvents`].

use axum::body::Bytes;
use serde_json::{json, Map, Value};

/// The ids, echoed settings and event numbering of one answer.
#[derive(Clone, Debug)]
pub struct AnswerEvents {
    response_id: String,
    item_id: String,
    model: String,
    created_at: u64,
    input_tokens: u64,
    /// Request settings echoed in every response object (`instructions`, `temperature`, ...).
    settings: Map<String, Value>,
    sequence: u64,
}

impl AnswerEvents {
    /// The events of the answer `response_id` whose message is `item_id`, from `model`,
    /// created at `created_at` (Unix seconds) for a prompt of `input_tokens` tokens.
    pub fn new(
        response_id: String,
        item_id: String,
        model: &str,
        created_at: u64,
        input_tokens: u64,
    ) -> Self {
        Self {
            response_id,
            item_id,
            model: model.to_owned(),
            created_at,
            input_tokens,
            settings: Map::new(),
            sequence: 0,
        }
    }

    /// Echoes these fields (an object) in every response object, over the defaults.
    pub fn with_settings(mut self, settings: Value) -> Self {
        if let Value::Object(settings) = settings {
            self.settings = settings;
        }
        self
    }

    /// The answer's id.
    pub fn response_id(&self) -> &str {
        &self.response_id
    }

    /// The `sequence_number` the next event gets.
    pub fn next_sequence(&self) -> u64 {
        self.sequence
    }

    /// A numbered SSE frame: `event: <kind>` and the event with its `type` and
    /// `sequence_number` set.
    pub fn event(&mut self, kind: &str, mut event: Value) -> Bytes {
        if let Some(fields) = event.as_object_mut() {
            fields.insert("type".into(), kind.into());
            fields.insert("sequence_number".into(), self.sequence.into());
        }
        self.sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
    }

    /// `response.created`, `response.in_progress`, `response.output_item.added` (an empty
    /// assistant message) and `response.content_part.added`.
    pub fn opening(&mut self) -> Vec<Bytes> {
        let in_progress = self.response("in_progress", json!({}));
        let item = self.item("in_progress", json!([]));
        let part = self.positioned(json!({ "part": part("") }));
        vec![
            self.event("response.created", json!({ "response": in_progress })),
            self.event("response.in_progress", json!({ "response": in_progress })),
            self.event(
                "response.output_item.added",
                json!({ "output_index": 0, "item": item }),
            ),
            self.event("response.content_part.added", part),
        ]
    }

    /// One `response.output_text.delta`.
    pub fn delta(&mut self, delta: &str) -> Bytes {
        let event = self.positioned(json!({ "delta": delta, "logprobs": [] }));
        self.event("response.output_text.delta", event)
    }

    /// `response.output_text.done`, `response.content_part.done` and
    /// `response.output_item.done` for the whole `text`, the item marked `status`; with the
    /// finished item, for the response object's `output`.
    pub fn close_message(&mut self, text: &str, status: &str) -> (Vec<Bytes>, Value) {
        let text_done = self.positioned(json!({ "text": text, "logprobs": [] }));
        let part_done = self.positioned(json!({ "part": part(text) }));
        let item = self.item(status, json!([part(text)]));
        let frames = vec![
            self.event("response.output_text.done", text_done),
            self.event("response.content_part.done", part_done),
            self.event(
                "response.output_item.done",
                json!({ "output_index": 0, "item": item }),
            ),
        ];
        (frames, item)
    }

    /// The message closed, then `response.completed` with usage.
    pub fn completed(&mut self, text: &str, output_tokens: u64, completed_at: u64) -> Vec<Bytes> {
        let (mut frames, item) = self.close_message(text, "completed");
        let response = self.response(
            "completed",
            json!({
                "completed_at": completed_at,
                "output": [item],
                "usage": self.usage(output_tokens),
            }),
        );
        frames.push(self.event("response.completed", json!({ "response": response })));
        frames
    }

    /// The message closed as incomplete, then `response.incomplete` with reason
    /// `max_output_tokens` and usage.
    pub fn incomplete(
        &mut self,
        text: &str,
        max_output_tokens: u64,
        output_tokens: u64,
    ) -> Vec<Bytes> {
        let (mut frames, item) = self.close_message(text, "incomplete");
        let response = self.response(
            "incomplete",
            json!({
                "incomplete_details": {"reason": "max_output_tokens"},
                "max_output_tokens": max_output_tokens,
                "output": [item],
                "usage": self.usage(output_tokens),
            }),
        );
        frames.push(self.event("response.incomplete", json!({ "response": response })));
        frames
    }

    /// `response.failed` with `message`, the partial `text` kept in its output.
    pub fn failed(&mut self, text: &str, message: &str, output_tokens: u64) -> Bytes {
        let item = self.item("incomplete", json!([part(text)]));
        let response = self.response(
            "failed",
            json!({
                "error": { "code": "server_error", "message": message },
                "output": [item],
                "usage": self.usage(output_tokens),
            }),
        );
        self.event("response.failed", json!({ "response": response }))
    }

    /// A Response object with the given status; the settings, then `fields`, override the
    /// defaults.
    pub fn response(&self, status: &str, fields: Value) -> Value {
        let mut response = json!({
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "completed_at": null,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "max_output_tokens": null,
            "model": self.model,
            "output": [],
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "store": false,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": null,
            "metadata": {},
        });
        if let (Some(response), Value::Object(fields)) = (response.as_object_mut(), fields) {
            response.extend(self.settings.clone());
            response.extend(fields);
        }
        response
    }

    /// The `usage` object for an answer of `output_tokens` tokens.
    pub fn usage(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens.saturating_add(output_tokens),
        })
    }

    fn item(&self, status: &str, content: Value) -> Value {
        json!({
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        })
    }

    /// `fields` with the message's position (`item_id`, `output_index`, `content_index`).
    fn positioned(&self, fields: Value) -> Value {
        let mut event = json!({ "item_id": self.item_id, "output_index": 0, "content_index": 0 });
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        event
    }
}

/// An `output_text` content part holding `text`.
fn part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}
