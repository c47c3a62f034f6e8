//! Continuing a background response whose stream broke: which events are new, and whether,
//! from where and after how long to stream the response again.
//!
//! A response created with `background: true` keeps generating when our connection to it
//! drops, and `GET /responses/{id}?stream=true&starting_after=N` streams its events after
//! `sequence_number` N. [`Resumption`] follows one answer's events and, when its stream
//! ends without a terminal event or fails, says whether it can be continued that way. It
//! trusts what the server says (the `background` field of the response object), not what
//! was asked for, so a server that ignores the setting is never asked to resume. Nothing is
//! ever posted again: a new POST would generate, and bill, a second answer.

use std::time::Duration;

use super::StreamEvent;

/// How many times in a row a stream may break without bringing a new event before the
/// answer is given up.
pub const MAX_BREAKS_WITHOUT_PROGRESS: u32 = 3;

/// The pause before each attempt to continue, by how many breaks in a row came before it
/// without progress (the first continues at once).
const DELAYS: [Duration; MAX_BREAKS_WITHOUT_PROGRESS as usize] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// Where and when to pick a broken background stream up again.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Resume {
    /// The response to stream again.
    pub response_id: String,
    /// The last `sequence_number` already handled: the stream continues after it.
    pub starting_after: u64,
    /// How long to wait before asking.
    pub delay: Duration,
    /// How many breaks in a row, this one included, brought no new event before them.
    pub attempt: u32,
}

/// One answer's progress through its model stream, as far as continuing it is concerned.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Resumption {
    response_id: Option<String>,
    background: bool,
    last: Option<u64>,
    ended: bool,
    breaks: u32,
}

impl Resumption {
    /// A stream that has not begun.
    pub fn new() -> Self {
        Self::default()
    }

    /// A background response already followed through `last` by someone else (a publisher
    /// that died), to be continued from there.
    pub fn continuing(response_id: impl Into<String>, last: u64) -> Self {
        Self {
            response_id: Some(response_id.into()),
            background: true,
            last: Some(last),
            ..Self::default()
        }
    }

    /// Takes note of `event` and says whether it is new. An event numbered at or before the
    /// last one handled is a repeat (a server may replay a stream from its start) and must
    /// be skipped; events without a number are always new.
    pub fn accept(&mut self, event: &StreamEvent) -> bool {
        if let (Some(seq), Some(last)) = (event.sequence_number(), self.last) {
            if seq <= last {
                return false;
            }
        }
        if let Some(seq) = event.sequence_number() {
            self.last = Some(seq);
        }
        if let Some(response) = event.response() {
            if let Some(id) = &response.id {
                self.response_id = Some(id.clone());
            }
            if let Some(background) = response.background {
                self.background = background;
            }
        }
        self.ended |= event.is_terminal();
        self.breaks = 0;
        true
    }

    /// The stream ended without a terminal event, or failed: where to continue it, or
    /// `None` when it cannot be (not a background response, no id or event number seen,
    /// already ended) or has broken too often without progress.
    pub fn on_break(&mut self) -> Option<Resume> {
        if self.ended || !self.background {
            return None;
        }
        let (Some(response_id), Some(last)) = (&self.response_id, self.last) else {
            return None;
        };
        let delay = *DELAYS.get(self.breaks as usize)?;
        self.breaks += 1;
        Some(Resume {
            response_id: response_id.clone(),
            starting_after: last,
            delay,
            attempt: self.breaks,
        })
    }

    /// The response's id, once an event named it.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// The last `sequence_number` handled.
    pub fn last_sequence(&self) -> Option<u64> {
        self.last
    }

    /// Whether the server says the response runs in background mode.
    pub fn is_background(&self) -> bool {
        self.background
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::openai::Decoded;
    use serde_json::json;

    fn event(value: serde_json::Value) -> StreamEvent {
        match StreamEvent::from_data(&value.to_string()).unwrap() {
            Decoded::Event(event) => event,
            Decoded::DoneSentinel => panic!("not an event"),
        }
    }

    fn created(seq: u64, background: bool) -> StreamEvent {
        event(json!({"type": "response.created", "sequence_number": seq,
            "response": {"id": "resp_1", "status": "queued", "background": background}}))
    }

    fn delta(seq: u64, text: &str) -> StreamEvent {
        event(
            json!({"type": "response.output_text.delta", "sequence_number": seq,
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text}),
        )
    }

    fn completed(seq: u64) -> StreamEvent {
        event(json!({"type": "response.completed", "sequence_number": seq,
            "response": {"id": "resp_1", "status": "completed", "background": true}}))
    }

    #[test]
    fn a_broken_background_stream_continues_after_its_last_event() {
        let mut r = Resumption::new();
        assert!(r.accept(&created(0, true)));
        assert!(r.accept(&delta(1, "Hi")));
        assert_eq!(
            r.on_break(),
            Some(Resume {
                response_id: "resp_1".into(),
                starting_after: 1,
                delay: Duration::ZERO,
                attempt: 1,
            })
        );
    }

    #[test]
    fn repeats_of_handled_events_are_skipped() {
        // A server that streams from the start again, as the official SDKs ask for.
        let mut r = Resumption::new();
        for e in [created(0, true), delta(1, "a"), delta(2, "b")] {
            assert!(r.accept(&e));
        }
        assert!(!r.accept(&created(0, true)));
        assert!(!r.accept(&delta(2, "b")));
        assert!(r.accept(&delta(3, "c")));
        assert_eq!(r.last_sequence(), Some(3));
    }

    #[test]
    fn unnumbered_events_are_always_new_and_never_resumable() {
        // llama.cpp omits sequence numbers: nothing to resume from.
        let mut r = Resumption::new();
        let bare = event(json!({"type": "response.created",
            "response": {"id": "resp_1", "background": true}}));
        assert!(r.accept(&bare));
        assert!(r.accept(&bare));
        assert_eq!(r.on_break(), None);
    }

    #[test]
    fn a_foreground_or_ended_or_unnamed_stream_is_not_continued() {
        let mut foreground = Resumption::new();
        foreground.accept(&created(0, false));
        foreground.accept(&delta(1, "a"));
        assert_eq!(foreground.on_break(), None);

        let mut ended = Resumption::new();
        ended.accept(&created(0, true));
        ended.accept(&completed(1));
        assert_eq!(ended.on_break(), None);

        // Broken before response.created named the response.
        assert_eq!(Resumption::new().on_break(), None);
    }

    #[test]
    fn breaks_without_progress_back_off_then_give_up_and_progress_resets_them() {
        let mut r = Resumption::new();
        r.accept(&created(0, true));
        let delays: Vec<_> = std::iter::from_fn(|| r.on_break().map(|resume| resume.delay))
            .take(10)
            .collect();
        assert_eq!(delays, DELAYS);
        let mut r = Resumption::new();
        r.accept(&created(0, true));
        for seq in 1..10 {
            assert_eq!(r.on_break().map(|resume| resume.attempt), Some(1));
            r.accept(&delta(seq, "x"));
        }
    }

    #[test]
    fn a_continuation_from_recorded_progress_skips_what_was_published() {
        let mut r = Resumption::continuing("resp_1", 4);
        assert!(!r.accept(&delta(4, "old")));
        assert!(r.accept(&delta(5, "new")));
        assert_eq!(r.on_break().map(|resume| resume.starting_after), Some(5));
    }
}
