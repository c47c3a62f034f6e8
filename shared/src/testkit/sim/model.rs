//! The model's side: one answer's text and the OpenAI Responses stream events that carry it,
//! built in code in the shape of the recordings in `fixtures/openai/`.

use serde_json::{json, Value};

use crate::openai::StreamEvent;
use crate::time::Instant;

use super::rng::SimRng;

/// Words the answers are made of: ASCII, accents, CJK, an emoji and a newline, so that byte
/// lengths and char boundaries differ.
const WORDS: &[&str] = &[
    "the",
    "relay",
    "streams",
    "tokens",
    "over",
    "Ably",
    "café",
    "naïve",
    "日本語",
    "🚀",
    "and",
    "messages",
    "append",
    "—",
    "serial",
    "\n",
    "résumé",
    "ok",
    "a",
    "Ünïcödé",
];

/// One answer as the model streams it.
#[derive(Clone, Debug)]
pub(super) struct ModelAnswer {
    /// The prompt serial the answer replies to; the relay repeats it in the `prompt` header,
    /// which is how checks find the model text of an answer a viewer holds.
    pub(super) prompt: String,
    /// The text the model produced: the deltas concatenated.
    pub(super) text: String,
    /// The stream events with the instant each arrives at the publisher.
    pub(super) events: Vec<(Instant, StreamEvent)>,
}

impl ModelAnswer {
    /// Draws answer `index`, whose stream starts at `start` ms.
    pub(super) fn draw(rng: &mut SimRng, index: usize, start: u64) -> Self {
        let response_id = format!("resp_sim_{index}");
        let item_id = format!("msg_sim_{index}");
        let deltas = rng.range(4, 60);
        let mut pieces = Vec::new();
        for n in 0..deltas {
            let words = rng.range(1, 3);
            let mut piece = String::new();
            for w in 0..words {
                if n > 0 || w > 0 {
                    piece.push(' ');
                }
                piece.push_str(WORDS[rng.index(WORDS.len())]);
            }
            pieces.push(piece);
        }
        let text: String = pieces.concat();
        let response = |status: &str, output: Value| {
            json!({"id": response_id, "object": "response", "status": status,
                   "model": "sim-model", "output": output})
        };
        let message = |status: &str, content: Value| {
            json!({"id": item_id, "type": "message", "status": status, "role": "assistant",
                   "content": content})
        };
        let at = |item: &str| json!({"item_id": item, "output_index": 0, "content_index": 0});
        let mut raw: Vec<(u64, Value)> = Vec::new();
        let mut t = start;
        raw.push((
            t,
            json!({"type": "response.created", "response": response("in_progress", json!([]))}),
        ));
        t += rng.range(0, 40);
        raw.push((
            t,
            json!({"type": "response.output_item.added", "output_index": 0,
                            "item": message("in_progress", json!([]))}),
        ));
        let mut part = at(&item_id);
        part["type"] = json!("response.content_part.added");
        part["part"] = json!({"type": "output_text", "text": ""});
        raw.push((t, part));
        for piece in &pieces {
            // Bursts (no gap), pauses longer than the relay's window, and now and then a
            // quiet stretch long enough for heartbeats (the simulated lease is 600 ms).
            t += [0, 0, 3, 8, 15, 30, 60, 0, 3, 8, 15, 30, 60, 450][rng.index(14)];
            let mut delta = at(&item_id);
            delta["type"] = json!("response.output_text.delta");
            delta["delta"] = json!(piece);
            raw.push((t, delta));
        }
        t += rng.range(0, 20);
        let mut done = at(&item_id);
        done["type"] = json!("response.output_text.done");
        done["text"] = json!(text);
        raw.push((t, done));
        let mut part_done = at(&item_id);
        part_done["type"] = json!("response.content_part.done");
        part_done["part"] = json!({"type": "output_text", "text": text});
        raw.push((t, part_done));
        let content = json!([{"type": "output_text", "text": text}]);
        raw.push((
            t,
            json!({"type": "response.output_item.done", "output_index": 0,
                            "item": message("completed", content.clone())}),
        ));
        raw.push((t, json!({"type": "response.completed",
                            "response": response("completed", json!([message("completed", content)]))})));
        let events = raw
            .into_iter()
            .enumerate()
            .filter_map(|(sequence, (at, mut value))| {
                value["sequence_number"] = json!(sequence);
                let event = StreamEvent::from_value(value).ok()?;
                Some((Instant::from_millis(at), event))
            })
            .collect();
        Self {
            prompt: format!("prompt-{index}"),
            text,
            events,
        }
    }
}
