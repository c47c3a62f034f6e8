//! Relay tests: recorded streams end to end, coalescing with fake time, repairs and limits.

use std::fs;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::openai::{Decoded, Recording};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai/");
const SERIAL: &str = "serial-1";

fn ms(t: u64) -> Instant {
    Instant::from_millis(t)
}

fn config(window_ms: u64) -> RelayConfig {
    RelayConfig {
        window: Duration::from_millis(window_ms),
        ..RelayConfig::default()
    }
}

fn ev(value: serde_json::Value) -> StreamEvent {
    StreamEvent::from_value(value).unwrap()
}

fn created() -> StreamEvent {
    ev(
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "model": "m1"}}),
    )
}

fn completed() -> StreamEvent {
    ev(json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}))
}

fn delta(item: &str, text: &str) -> StreamEvent {
    ev(
        json!({"type": "response.output_text.delta", "item_id": item, "content_index": 0, "delta": text}),
    )
}

fn text_done(item: &str, text: &str) -> StreamEvent {
    ev(
        json!({"type": "response.output_text.done", "item_id": item, "content_index": 0, "text": text}),
    )
}

fn item_added(index: u64, id: &str, kind: &str) -> StreamEvent {
    ev(
        json!({"type": "response.output_item.added", "output_index": index, "item": {"id": id, "type": kind}}),
    )
}

/// Drives a relay as a daemon would: it acknowledges creates at once (unless told not to),
/// fires timeouts when they fall due and keeps a transcript of what was published when.
struct Harness {
    relay: Relay,
    now: u64,
    auto_ack: bool,
    ops: Vec<(u64, PublishOp)>,
}

impl Harness {
    fn new(config: RelayConfig) -> Self {
        Self {
            relay: Relay::new(config),
            now: 0,
            auto_ack: true,
            ops: Vec::new(),
        }
    }

    fn window(window_ms: u64) -> Self {
        Self::new(config(window_ms))
    }

    /// Moves time forward to `t`, firing every timeout that falls due on the way.
    fn advance(&mut self, t: u64) {
        for _ in 0..10_000 {
            match self.relay.poll_timeout() {
                Some(due) if due.as_millis() <= t => {
                    self.now = self.now.max(due.as_millis());
                    self.relay.handle_timeout(ms(self.now));
                    self.drain();
                }
                _ => {
                    self.now = self.now.max(t);
                    return;
                }
            }
        }
        panic!("poll_timeout keeps returning a due instant that handle_timeout does not clear");
    }

    fn event(&mut self, t: u64, event: &StreamEvent) {
        self.advance(t);
        self.relay.handle_event(ms(self.now), event);
        self.drain();
    }

    fn ack(&mut self) {
        self.relay.handle_created(ms(self.now), Serial::new(SERIAL));
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(op) = self.relay.poll_op() {
            let is_create = matches!(op, PublishOp::Create(_));
            self.ops.push((self.now, op));
            if is_create && self.auto_ack {
                self.relay.handle_created(ms(self.now), Serial::new(SERIAL));
            }
        }
    }

    fn transcript(&self) -> Vec<String> {
        self.ops.iter().map(|(_, op)| describe(op)).collect()
    }

    fn timed(&self) -> Vec<(u64, String)> {
        self.ops.iter().map(|(t, op)| (*t, describe(op))).collect()
    }

    fn last(&self) -> &Message {
        self.ops.last().map(|(_, op)| op.message()).unwrap()
    }

    /// What a subscriber that saw every op holds: create sets, append concatenates, update
    /// replaces.
    fn subscriber_view(&self) -> String {
        let mut text = String::new();
        for (_, op) in &self.ops {
            match op {
                PublishOp::Create(_) | PublishOp::Update(_) => text = op.text().to_owned(),
                PublishOp::Append(_) => text.push_str(op.text()),
            }
        }
        text
    }

    /// The rules every finished transcript obeys.
    #[track_caller]
    fn check_invariants(&self) {
        let (first, rest) = self.ops.split_first().unwrap();
        let PublishOp::Create(create) = &first.1 else {
            panic!("first op is not a create: {:?}", first.1)
        };
        assert_eq!(create.name.as_deref(), Some(headers::ANSWER_NAME));
        assert_eq!(create.data, Some(json!("")));
        assert_eq!(create.action, None);
        assert_eq!(create.serial, None);
        assert_eq!(create.header(headers::STATUS), Some("streaming"));
        for (_, op) in rest {
            let m = op.message();
            assert_eq!(
                m.serial.as_ref().map(Serial::as_str),
                Some(SERIAL),
                "{op:?}"
            );
            assert_eq!(m.name.as_deref(), Some(headers::ANSWER_NAME));
            assert!(m.header(headers::SOURCE).is_some() && m.header(headers::STATUS).is_some());
            match op {
                PublishOp::Create(_) => panic!("a second create: {op:?}"),
                PublishOp::Append(_) => {
                    assert_eq!(m.action, Some(MessageAction::APPEND));
                    assert!(!op.text().is_empty(), "an empty append");
                    // Only the final update announces the end: a subscriber that stops at
                    // a terminal status must not stop before the repairing full text.
                    assert_eq!(m.header(headers::STATUS), Some("streaming"), "{op:?}");
                }
                PublishOp::Update(_) => assert_eq!(m.action, Some(MessageAction::UPDATE)),
            }
        }
        let PublishOp::Update(last) = &self.ops.last().unwrap().1 else {
            panic!("the last op is not an update")
        };
        assert_eq!(last.data, Some(json!(self.relay.text())));
        assert_eq!(
            last.header(headers::STATUS),
            Some(self.relay.status().as_str())
        );
        assert!(self.relay.status().is_terminal());
        assert!(self.relay.is_finished());
        assert_eq!(self.subscriber_view(), self.relay.text());
        assert_eq!(self.relay.poll_timeout(), None);
        // Every message says the length and digest of the text once it is applied, the
        // digest extended per append rather than hashed again.
        let mut view = String::new();
        for (_, op) in &self.ops {
            match op {
                PublishOp::Create(_) | PublishOp::Update(_) => op.text().clone_into(&mut view),
                PublishOp::Append(_) => view.push_str(op.text()),
            }
            let m = op.message();
            assert_eq!(
                m.header(headers::LENGTH),
                Some(view.len().to_string().as_str())
            );
            assert_eq!(
                m.header(headers::DIGEST),
                Some(headers::digest(&view).as_str())
            );
        }
    }
}

fn describe(op: &PublishOp) -> String {
    match op {
        PublishOp::Create(_) => "create".to_owned(),
        PublishOp::Append(_) => format!("append {:?}", op.text()),
        PublishOp::Update(m) => format!(
            "update[{}] {:?}",
            m.header(headers::STATUS).unwrap_or("?"),
            op.text()
        ),
    }
}

fn recording(name: &str) -> Recording {
    let text = fs::read_to_string(format!("{FIXTURES}{name}")).unwrap();
    Recording::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn events_of(name: &str, attempt: usize) -> Vec<StreamEvent> {
    recording(name).attempts[attempt]
        .events()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Feeds a whole event list, `step_ms` apart, then the end of the stream.
fn run(events: &[StreamEvent], window_ms: u64, step_ms: u64) -> Harness {
    let mut h = Harness::window(window_ms);
    for (i, event) in events.iter().enumerate() {
        h.event(i as u64 * step_ms, event);
    }
    let end = events.len() as u64 * step_ms;
    h.advance(end);
    h.relay.handle_stream_end(ms(end));
    h.drain();
    h.check_invariants();
    h
}

fn run_fixture(name: &str, attempt: usize, window_ms: u64) -> Harness {
    run(&events_of(name, attempt), window_ms, 0)
}

#[test]
fn f01_plain_text_completes_with_coalesced_appends() {
    let h = run_fixture("01_plain_text.jsonl", 0, 40);
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Hello\"",
            "append \"! How can I help?\"",
            "update[completed] \"Hello! How can I help?\"",
        ]
    );
    let last = h.last();
    assert_eq!(
        last.header(headers::RESPONSE_ID),
        Some("resp_0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    );
    assert_eq!(last.header(headers::MODEL), Some("gpt-5.4-mini-2026-03-17"));
    assert_eq!(last.header(headers::SOURCE), Some("openai"));
    assert_eq!(last.header(headers::REFUSAL), None);
    assert_eq!(last.header(headers::ERROR), None);
    assert_eq!(last.header(headers::PROMPT), None);
    assert_eq!(h.relay.status(), Status::Completed);
    assert_eq!(h.relay.serial().map(Serial::as_str), Some(SERIAL));
}

#[test]
fn f01_with_window_zero_sends_one_append_per_delta() {
    let h = run_fixture("01_plain_text.jsonl", 0, 0);
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Hello\"",
            "append \"! How\"",
            "append \" can I help?\"",
            "update[completed] \"Hello! How can I help?\"",
        ]
    );
}

#[test]
fn f00_seed_joke_publishes_the_guides_thirteen_deltas_and_no_reasoning() {
    let h = run_fixture("00_seed_joke.jsonl", 0, 0);
    let appends: Vec<&str> = h
        .ops
        .iter()
        .filter(|(_, op)| matches!(op, PublishOp::Append(_)))
        .map(|(_, op)| op.text())
        .collect();
    assert_eq!(
        appends,
        [
            "Why",
            " don",
            "'t",
            " scientists",
            " trust",
            " atoms",
            "?",
            " Because",
            " they",
            " make",
            " up",
            " everything",
            "."
        ]
    );
    assert_eq!(
        h.relay.text(),
        "Why don't scientists trust atoms? Because they make up everything."
    );
    assert_eq!(h.relay.status(), Status::Completed);
    assert_eq!(h.last().header(headers::RESPONSE_ID), Some("resp_abc123"));
    assert_eq!(h.last().header(headers::MODEL), None);
}

#[test]
fn f02_reasoning_summary_is_never_published() {
    let h = run_fixture("02_reasoning_then_message.jsonl", 0, 0);
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"2 + 2\"",
            "append \" = 4.\"",
            "update[completed] \"2 + 2 = 4.\""
        ]
    );
}

#[test]
fn f03_refusal_is_published_as_text_with_the_refusal_header() {
    let h = run_fixture("03_refusal.jsonl", 0, 40);
    assert_eq!(h.relay.text(), "I'm sorry, but I can't help with that.");
    assert_eq!(h.relay.status(), Status::Completed);
    assert_eq!(h.last().header(headers::REFUSAL), Some("true"));
    let first_append = h
        .ops
        .iter()
        .find(|(_, op)| matches!(op, PublishOp::Append(_)))
        .unwrap();
    assert_eq!(
        first_append.1.message().header(headers::REFUSAL),
        Some("true")
    );
}

#[test]
fn f04_two_messages_are_joined_by_a_blank_line() {
    let h = run_fixture("04_two_messages.jsonl", 0, 0);
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Let me\"",
            "append \" check that.\"",
            "append \"\\n\\nThe answer\"",
            "append \" is 42.\"",
            "update[completed] \"Let me check that.\\n\\nThe answer is 42.\"",
        ]
    );
}

#[test]
fn f05_function_call_arguments_are_never_answer_text() {
    let h = run_fixture("05_function_call.jsonl", 0, 0);
    assert_eq!(h.transcript(), ["create", "update[completed] \"\""]);
}

#[test]
fn f06_incomplete_carries_its_reason() {
    let h = run_fixture("06_incomplete_max_output_tokens.jsonl", 0, 40);
    assert_eq!(h.relay.status(), Status::Incomplete);
    assert_eq!(h.relay.text(), "Once upon a time there was a very long");
    assert_eq!(h.last().header(headers::REASON), Some("max_output_tokens"));
    assert_eq!(h.last().header(headers::STATUS), Some("incomplete"));
}

#[test]
fn f07_failed_response_carries_its_error_message() {
    let h = run_fixture("07_response_failed.jsonl", 0, 40);
    assert_eq!(h.transcript(), ["create", "update[failed] \"\""]);
    assert_eq!(
        h.last().header(headers::ERROR),
        Some("The model failed to generate a response.")
    );
}

#[test]
fn f08_nested_error_event_fails_the_answer_and_keeps_the_partial_text() {
    let h = run_fixture("08_midstream_error_nested.jsonl", 0, 40);
    assert_eq!(
        h.transcript(),
        ["create", "append \"Partial\"", "update[failed] \"Partial\""]
    );
    assert_eq!(
        h.last().header(headers::ERROR),
        Some("The server had an error while processing your request. Sorry about that!")
    );
}

#[test]
fn f08b_flat_error_event_fails_the_answer() {
    let h = run_fixture("08b_midstream_error_flat.jsonl", 0, 40);
    assert_eq!(h.transcript(), ["create", "update[failed] \"\""]);
    assert_eq!(
        h.last().header(headers::ERROR),
        Some("The server had an error while processing your request. Sorry about that!")
    );
}

#[test]
fn f09_second_attempt_completes() {
    assert_eq!(events_of("09_http429_then_success.jsonl", 0), []);
    let h = run_fixture("09_http429_then_success.jsonl", 1, 40);
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Hi\"",
            "append \"!\"",
            "update[completed] \"Hi!\""
        ]
    );
}

#[test]
fn f10_truncated_stream_fails_at_its_end_with_the_text_so_far() {
    let h = run_fixture("10_truncated_no_terminal.jsonl", 0, 40);
    assert_eq!(
        h.transcript(),
        ["create", "append \"Cut off\"", "update[failed] \"Cut off\""]
    );
    assert_eq!(h.last().header(headers::ERROR), Some(STREAM_ENDED_EARLY));
}

#[test]
fn f11_framing_quirks_do_not_change_the_answer() {
    let h = run_fixture("11_framing_quirks.jsonl", 0, 0);
    assert_eq!(h.relay.text(), "Framing quirks are fine.");
    assert_eq!(h.relay.status(), Status::Completed);
}

#[test]
fn f12_background_stream_resumes_into_the_same_answer() {
    let events = events_of("12_background_resume.jsonl", 0);
    let (first, resumed): (Vec<_>, Vec<_>) =
        events.iter().partition(|e| e.sequence_number() <= Some(4));
    let mut h = Harness::window(40);
    for event in first {
        h.event(0, event);
    }
    // The connection drops; the resumed stream continues the same relay a second later.
    for event in resumed {
        h.event(1000, event);
    }
    h.relay.handle_stream_end(ms(1000));
    h.drain();
    h.check_invariants();
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Long\"",
            "append \" answer\"",
            "update[completed] \"Long answer\""
        ]
    );
}

#[test]
fn real_llamacpp_capture_decodes_and_completes() {
    let raw = fs::read_to_string(format!(
        "{FIXTURES}real_llamacpp_b11434_responses_stream.txt"
    ))
    .unwrap();
    let events: Vec<StreamEvent> = raw
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| match StreamEvent::from_data(data) {
            Ok(Decoded::Event(event)) => event,
            other => panic!("{data}: {other:?}"),
        })
        .collect();
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| e.sequence_number().is_none()));
    assert!(!events
        .iter()
        .any(|e| matches!(e, StreamEvent::Unknown { .. })));
    let h = run(&events, 0, 0);
    assert_eq!(h.relay.text(), "Hi, hello.");
    assert_eq!(h.relay.status(), Status::Completed);
    assert_eq!(
        h.last().header(headers::MODEL),
        Some("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(
        h.last().header(headers::RESPONSE_ID),
        Some("resp_Wp2QrTyUF4i89UG8QR3pTqzmNUZhqCQ6")
    );
}

#[test]
fn coalescing_sends_the_first_delta_at_once_then_one_append_per_window() {
    let mut h = Harness::window(40);
    h.event(0, &created());
    h.event(0, &delta("m", "a"));
    h.event(5, &delta("m", "b"));
    assert_eq!(h.relay.poll_timeout(), Some(ms(40)));
    h.event(10, &delta("m", "c"));
    assert_eq!(h.relay.poll_timeout(), Some(ms(40)));
    h.event(50, &delta("m", "d"));
    assert_eq!(h.relay.poll_timeout(), Some(ms(80)));
    h.event(51, &delta("m", "e"));
    h.advance(200);
    assert_eq!(h.relay.poll_timeout(), None);
    h.event(200, &completed());
    let expected: Vec<(u64, String)> = vec![
        (0, "create".into()),
        (0, "append \"a\"".into()),
        (40, "append \"bc\"".into()),
        (80, "append \"de\"".into()),
        (200, "update[completed] \"abcde\"".into()),
    ];
    assert_eq!(h.timed(), expected);
    h.check_invariants();
}

#[test]
fn window_zero_sends_every_delta_in_order() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    for (t, d) in [(0, "1"), (0, "2"), (1, "3"), (1, "4")] {
        h.event(t, &delta("m", d));
    }
    h.event(2, &completed());
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"1\"",
            "append \"2\"",
            "append \"3\"",
            "append \"4\"",
            "update[completed] \"1234\""
        ]
    );
}

#[test]
fn pending_text_is_flushed_before_the_final_update() {
    let mut h = Harness::window(40);
    h.event(0, &created());
    h.event(0, &delta("m", "a"));
    h.event(1, &delta("m", "b"));
    h.event(2, &completed());
    assert_eq!(
        h.timed()[2..],
        [
            (2, "append \"b\"".to_owned()),
            (2, "update[completed] \"ab\"".to_owned())
        ]
    );
}

#[test]
fn set_window_moves_the_deadline() {
    let mut h = Harness::window(40);
    h.event(0, &created());
    h.event(0, &delta("m", "a"));
    h.event(5, &delta("m", "b"));
    h.relay.set_window(Duration::from_millis(100));
    assert_eq!(h.relay.poll_timeout(), Some(ms(100)));
    h.advance(99);
    assert_eq!(h.ops.len(), 2);
    h.advance(100);
    assert_eq!(h.timed().last(), Some(&(100, "append \"b\"".to_owned())));
    assert_eq!(h.relay.config().window, Duration::from_millis(100));
}

#[test]
fn deltas_wait_for_the_serial_then_go_out_as_one_append() {
    let mut h = Harness::window(40);
    h.auto_ack = false;
    h.event(0, &created());
    h.event(1, &delta("m", "a"));
    h.event(2, &delta("m", "b"));
    assert_eq!(h.transcript(), ["create"]);
    assert_eq!(h.relay.poll_timeout(), None);
    h.now = 30;
    h.ack();
    assert_eq!(h.timed()[1..], [(30, "append \"ab\"".to_owned())]);
    h.event(31, &delta("m", "c"));
    assert_eq!(h.relay.poll_timeout(), Some(ms(70)));
}

#[test]
fn final_ops_wait_for_the_serial() {
    let mut h = Harness::window(40);
    h.auto_ack = false;
    h.event(0, &created());
    h.event(1, &delta("m", "Hi"));
    h.event(2, &completed());
    assert_eq!(h.transcript(), ["create"]);
    assert!(!h.relay.is_finished());
    assert_eq!(h.relay.status(), Status::Completed);
    h.ack();
    assert_eq!(
        h.transcript(),
        ["create", "append \"Hi\"", "update[completed] \"Hi\""]
    );
    h.check_invariants();
}

#[test]
fn a_stream_that_skips_response_created_still_creates_first() {
    let mut h = Harness::window(40);
    h.event(0, &delta("msg_x", "Hello"));
    h.event(1, &completed());
    assert_eq!(
        h.transcript(),
        ["create", "append \"Hello\"", "update[completed] \"Hello\""]
    );
    h.check_invariants();
}

#[test]
fn start_creates_before_any_event_and_only_once() {
    let mut h = Harness::window(40);
    h.relay.start(Instant::from_millis(0));
    h.relay.start(Instant::from_millis(0));
    h.drain();
    assert_eq!(h.transcript(), ["create"]);
    h.event(0, &created());
    h.event(1, &delta("m", "Hi"));
    h.event(2, &completed());
    assert_eq!(
        h.transcript(),
        ["create", "append \"Hi\"", "update[completed] \"Hi\""]
    );
    assert_eq!(
        h.relay.headers().get("response-id").map(String::as_str),
        Some("resp_1")
    );
    h.check_invariants();
}

#[test]
fn stream_end_before_any_event_still_reports_the_failure() {
    let mut h = Harness::window(40);
    h.relay.handle_stream_end(ms(0));
    h.drain();
    assert_eq!(h.transcript(), ["create", "update[failed] \"\""]);
    h.check_invariants();
}

#[test]
fn done_text_that_only_extends_the_deltas_is_appended() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(0, &delta("m", "Hel"));
    h.event(1, &text_done("m", "Hello"));
    h.event(2, &completed());
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Hel\"",
            "append \"lo\"",
            "update[completed] \"Hello\""
        ]
    );
}

#[test]
fn done_text_that_differs_wins_and_repairs_subscribers() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(0, &delta("m", "Helo"));
    h.event(1, &text_done("m", "Hello"));
    h.event(2, &delta("n", "Next"));
    h.event(3, &completed());
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Helo\"",
            "update[streaming] \"Hello\"",
            "append \"\\n\\nNext\"",
            "update[completed] \"Hello\\n\\nNext\"",
        ]
    );
    h.check_invariants();
}

#[test]
fn content_part_done_text_also_wins() {
    let mut h = Harness::window(40);
    h.event(0, &created());
    h.event(0, &delta("m", "Partial"));
    let part_done = ev(
        json!({"type": "response.content_part.done", "item_id": "m", "content_index": 0,
        "part": {"type": "output_text", "text": "Partially lost"}}),
    );
    h.event(1, &part_done);
    h.event(2, &completed());
    assert_eq!(h.relay.text(), "Partially lost");
    h.check_invariants();
}

#[test]
fn only_message_items_are_published() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(0, &item_added(0, "rs_1", "reasoning"));
    h.event(0, &item_added(1, "fc_1", "function_call"));
    // Odd, but possible: output text on items known not to be messages is skipped.
    h.event(1, &delta("rs_1", "thinking"));
    h.event(
        1,
        &ev(json!({"type": "response.output_text.delta", "output_index": 1, "delta": "{}"})),
    );
    h.event(1, &ev(json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "plan"})));
    h.event(
        1,
        &ev(json!({"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "raw"})),
    );
    h.event(1, &ev(json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{"})));
    // A delta for an item never announced (llama.cpp) is message text.
    h.event(2, &delta("msg_unannounced", "Answer"));
    h.event(3, &completed());
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"Answer\"",
            "update[completed] \"Answer\""
        ]
    );
}

#[test]
fn items_are_tracked_by_id_not_by_arrival() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(0, &delta("a", "A1"));
    h.event(1, &delta("b", "B1"));
    h.event(2, &delta("a", "A2"));
    h.event(3, &completed());
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"A1\"",
            "append \"\\n\\nB1\"",
            "update[streaming] \"A1A2\\n\\nB1\"",
            "update[completed] \"A1A2\\n\\nB1\"",
        ]
    );
}

#[test]
fn refusal_parts_are_marked() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(0, &ev(json!({"type": "response.refusal.delta", "item_id": "m", "content_index": 0, "delta": "No."})));
    h.event(1, &completed());
    assert!(h.ops[1..]
        .iter()
        .all(|(_, op)| op.message().header(headers::REFUSAL) == Some("true")));
    assert_eq!(h.relay.text(), "No.");
}

#[test]
fn headers_are_repeated_on_every_message() {
    let config = RelayConfig {
        source: "replay".into(),
        prompt: Some(Serial::new("prompt-7")),
        ..config(0)
    };
    let mut h = Harness::new(config);
    h.event(0, &created());
    h.event(1, &delta("m", "a"));
    h.event(2, &completed());
    for (_, op) in &h.ops {
        let m = op.message();
        assert_eq!(m.header(headers::SOURCE), Some("replay"), "{op:?}");
        assert_eq!(m.header(headers::PROMPT), Some("prompt-7"), "{op:?}");
        assert_eq!(m.header(headers::RESPONSE_ID), Some("resp_1"), "{op:?}");
        assert_eq!(m.header(headers::MODEL), Some("m1"), "{op:?}");
    }
    assert_eq!(
        h.ops[1].1.message().header(headers::STATUS),
        Some("streaming")
    );
    assert_eq!(
        h.relay.headers().get(headers::STATUS).map(String::as_str),
        Some("completed")
    );
}

#[test]
fn a_nacked_append_queues_one_repair_update() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(0, &delta("m", "a"));
    h.event(1, &delta("m", "b"));
    h.relay.handle_append_failed(ms(2));
    h.drain();
    // The update already covers the second NACK.
    h.relay.handle_append_failed(ms(2));
    h.drain();
    h.event(3, &delta("m", "c"));
    h.event(4, &completed());
    h.relay.handle_append_failed(ms(5));
    h.drain();
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"a\"",
            "append \"b\"",
            "update[streaming] \"ab\"",
            "append \"c\"",
            "update[completed] \"abc\"",
        ]
    );
    h.check_invariants();
}

#[test]
fn a_nacked_create_ends_the_relay_with_one_replacement_born_failed() {
    let mut h = Harness::window(0);
    h.auto_ack = false;
    h.event(0, &created());
    h.event(1, &delta("m", "a"));
    h.relay.handle_create_failed("channel denied");
    h.event(2, &delta("m", "b"));
    h.event(3, &completed());
    h.relay.handle_created(ms(4), Serial::new(SERIAL));
    h.relay.handle_append_failed(ms(4));
    h.drain();
    assert_eq!(h.transcript().len(), 2, "{:?}", h.transcript());
    assert_eq!(h.transcript()[0], "create");
    // The replacement is a new message that already says how the answer ended, so the
    // prompt is never left alone on the channel.
    let replacement = h.last();
    assert_eq!(replacement.action, None);
    assert_eq!(replacement.serial, None);
    assert_eq!(replacement.header(headers::STATUS), Some("failed"));
    assert_eq!(replacement.header(headers::ERROR), Some("channel denied"));
    assert_eq!(replacement.data, Some(json!("a")));
    assert_eq!(replacement.header(headers::LENGTH), Some("1"));
    assert!(h.relay.is_finished());
    assert_eq!(h.relay.status(), Status::Failed);
    assert_eq!(
        h.relay.headers().get(headers::ERROR).map(String::as_str),
        Some("channel denied")
    );
    assert_eq!(h.relay.poll_timeout(), None);
}

#[test]
fn stream_errors_and_cancels_end_the_answer_once() {
    let mut h = Harness::window(40);
    h.event(0, &created());
    h.event(0, &delta("m", "a"));
    h.event(1, &delta("m", "b"));
    h.relay.handle_stream_error(ms(2), "connection reset");
    h.drain();
    h.relay.cancel(ms(3));
    h.relay.handle_stream_end(ms(3));
    h.event(4, &delta("m", "late"));
    h.event(4, &completed());
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"a\"",
            "append \"b\"",
            "update[failed] \"ab\""
        ]
    );
    assert_eq!(h.last().header(headers::ERROR), Some("connection reset"));
    h.check_invariants();

    let mut h = Harness::window(40);
    h.event(0, &created());
    h.event(0, &delta("m", "a"));
    h.relay.cancel(ms(1));
    h.drain();
    h.event(2, &completed());
    assert_eq!(
        h.transcript(),
        ["create", "append \"a\"", "update[cancelled] \"a\""]
    );
    assert_eq!(h.last().header(headers::ERROR), None);
    h.check_invariants();
}

#[test]
fn codex_done_and_integer_error_codes_end_the_answer() {
    let mut h = Harness::window(0);
    h.event(0, &delta("m", "x"));
    h.event(
        1,
        &ev(json!({"type": "response.done", "response": {"id": "r", "status": "completed"}})),
    );
    assert_eq!(h.relay.status(), Status::Completed);
    h.check_invariants();

    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(
        1,
        &ev(json!({"type": "error", "code": 500, "message": "upstream exploded", "param": null})),
    );
    assert_eq!(h.relay.status(), Status::Failed);
    assert_eq!(h.last().header(headers::ERROR), Some("upstream exploded"));
    h.check_invariants();
}

#[test]
fn unknown_events_are_ignored_but_start_the_answer() {
    let mut h = Harness::window(0);
    h.event(
        0,
        &ev(json!({"type": "response.web_search_call.searching", "item_id": "ws"})),
    );
    assert_eq!(h.transcript(), ["create"]);
    h.event(1, &delta("m", "x"));
    h.event(
        2,
        &ev(json!({"type": "response.output_text.annotation.added", "item_id": "m"})),
    );
    h.event(3, &completed());
    assert_eq!(h.relay.text(), "x");
    h.check_invariants();
}

#[test]
fn max_message_size_cuts_the_answer_cleanly_on_a_char_boundary() {
    // The size of a cut answer's message with no text: what the limit leaves room for.
    let mut cut = Message {
        name: Some(headers::ANSWER_NAME.into()),
        ..Message::default()
    };
    let cut_headers: BTreeMap<String, String> = [
        (headers::SOURCE, "openai"),
        (headers::STATUS, "incomplete"),
        (headers::REASON, MAX_MESSAGE_SIZE_REASON),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    cut.set_headers(&cut_headers);
    // The relay keeps room for the `length` header at its widest, and for the `digest`.
    cut.insert_header(headers::LENGTH, usize::MAX.to_string());
    cut.insert_header(headers::DIGEST, headers::digest(""));
    let limit = cut.wire_size() + ENVELOPE_SLACK + 7;

    let mut h = Harness::new(RelayConfig {
        max_message_size: Some(limit),
        ..config(0)
    });
    h.event(0, &delta("m", "ab"));
    h.event(1, &delta("m", "éé"));
    assert_eq!(h.relay.status(), Status::Streaming);
    h.event(2, &delta("m", "éé"));
    h.event(3, &delta("m", "more"));
    h.event(4, &completed());
    assert_eq!(h.relay.text(), "abéé");
    assert_eq!(h.relay.status(), Status::Incomplete);
    assert_eq!(
        h.last().header(headers::REASON),
        Some(MAX_MESSAGE_SIZE_REASON)
    );
    assert_eq!(
        h.transcript(),
        [
            "create",
            "append \"ab\"",
            "append \"éé\"",
            "update[incomplete] \"abéé\""
        ]
    );
    assert!(
        h.last().wire_size() + ENVELOPE_SLACK <= limit,
        "{} > {limit}",
        h.last().wire_size()
    );
    h.check_invariants();
}

#[test]
fn max_message_size_keeps_buffered_text_that_fits() {
    let mut h = Harness::new(RelayConfig {
        max_message_size: Some(200 + ENVELOPE_SLACK),
        ..config(1000)
    });
    h.event(0, &delta("m", "a"));
    for t in 1..100 {
        h.event(t, &delta("m", "0123456789"));
    }
    assert!(h.relay.is_finished());
    assert_eq!(h.relay.status(), Status::Incomplete);
    assert!(h.last().wire_size() <= 200);
    assert!(h.relay.text().len() > 50);
    h.check_invariants();
}

#[test]
fn calls_out_of_order_do_not_panic_or_publish() {
    let mut relay = Relay::new(RelayConfig::default());
    relay.handle_created(ms(0), Serial::new("early"));
    relay.handle_append_failed(ms(0));
    relay.handle_timeout(ms(0));
    assert_eq!(relay.poll_op(), None);
    assert_eq!(relay.serial(), None);
    assert_eq!(relay.text(), "");
    assert!(!relay.is_finished());
    relay.handle_event(ms(1), &created());
    assert!(matches!(relay.poll_op(), Some(PublishOp::Create(_))));
    relay.handle_created(ms(1), Serial::new("s"));
    relay.handle_created(ms(1), Serial::new("other"));
    assert_eq!(relay.serial().map(Serial::as_str), Some("s"));
    relay.handle_create_failed("too late");
    assert_eq!(relay.status(), Status::Streaming);
}

/// One scripted input of the property test.
#[derive(Clone, Debug)]
enum Input {
    Delta { gap: u64, item: u8, text: String },
    Done { gap: u64, item: u8, text: String },
}

fn input() -> impl Strategy<Value = Input> {
    let text = "[aé€ \n]{0,4}";
    prop_oneof![
        4 => (0..60u64, 0..2u8, text).prop_map(|(gap, item, text)| Input::Delta { gap, item, text }),
        1 => (0..60u64, 0..2u8, text).prop_map(|(gap, item, text)| Input::Done { gap, item, text }),
    ]
}

proptest! {
    /// Whatever the timing, the items and the corrections, subscribers converge on the
    /// relay's text, and while streaming no two publishes fall within one window.
    #[test]
    fn subscribers_converge_and_windows_hold(
        window in 0..50u64,
        ack_after in 0..5usize,
        inputs in prop::collection::vec(input(), 0..30),
        nack_at in prop::option::of(0..30usize),
    ) {
        let mut h = Harness::window(window);
        h.auto_ack = false;
        h.event(0, &created());
        let mut t = 0;
        for (i, input) in inputs.iter().enumerate() {
            if i == ack_after {
                h.ack();
            }
            let (gap, event) = match input {
                Input::Delta { gap, item, text } => (gap, delta(&format!("m{item}"), text)),
                Input::Done { gap, item, text } => (gap, text_done(&format!("m{item}"), text)),
            };
            t += gap;
            h.event(t, &event);
            if nack_at == Some(i) {
                h.relay.handle_append_failed(ms(t));
                h.drain();
            }
        }
        if ack_after >= inputs.len() {
            h.ack();
        }
        let end = t + 1;
        h.event(end, &completed());
        h.check_invariants();
        let streaming: Vec<u64> = h.ops[1..]
            .iter()
            .filter(|(at, op)| *at < end && op.message().header(headers::STATUS) == Some("streaming"))
            .map(|(at, _)| *at)
            .collect();
        if nack_at.is_none() {
            for pair in streaming.windows(2) {
                prop_assert!(pair[1] - pair[0] >= window, "publishes at {pair:?} within {window} ms");
            }
        }
    }
}

/// One call a driver can make, for the robustness property.
#[derive(Clone, Debug)]
enum Call {
    Event(usize),
    Created,
    CreateFailed,
    AppendFailed,
    Timeout,
    StreamError,
    StreamEnd,
    Cancel,
    Window(u64),
}

fn event_pool() -> Vec<StreamEvent> {
    vec![
        created(),
        completed(),
        delta("a", "x"),
        delta("b", "é€"),
        text_done("a", "yy"),
        item_added(0, "a", "reasoning"),
        item_added(1, "b", "message"),
        ev(json!({"type": "response.refusal.delta", "item_id": "c", "delta": "no"})),
        ev(json!({"type": "response.reasoning_text.delta", "item_id": "a", "delta": "hm"})),
        ev(json!({"type": "error", "error": {"code": 1, "message": "bad"}})),
        ev(json!({"type": "response.failed", "response": {"error": {"message": "f"}}})),
        ev(
            json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "content_filter"}}}),
        ),
        ev(json!({"type": "response.done", "response": {"status": "in_progress"}})),
        ev(json!({"type": "response.mystery"})),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        8 => (0..14usize).prop_map(Call::Event),
        2 => Just(Call::Created),
        1 => Just(Call::CreateFailed),
        1 => Just(Call::AppendFailed),
        2 => Just(Call::Timeout),
        1 => Just(Call::StreamError),
        1 => Just(Call::StreamEnd),
        1 => Just(Call::Cancel),
        1 => (0..100u64).prop_map(Call::Window),
    ]
}

proptest! {
    /// Any sequence of driver calls is safe: one create first, nothing after the final
    /// update, and a finished answer's final update holds the relay's whole text.
    #[test]
    fn any_call_sequence_keeps_the_op_rules(
        calls in prop::collection::vec((0..30u64, call()), 0..40),
        // From the smallest limit that still holds an answer's metadata with no text (its
        // headers, `length` among them), to a few hundred bytes.
        limit in prop::option::of(200..400usize),
    ) {
        let pool = event_pool();
        let mut relay = Relay::new(RelayConfig { max_message_size: limit, ..config(10) });
        let mut ops = Vec::new();
        let mut t = 0;
        let mut create_failed = false;
        for (gap, call) in calls {
            t += gap;
            let now = ms(t);
            match call {
                Call::Event(i) => relay.handle_event(now, &pool[i]),
                Call::Created => relay.handle_created(now, Serial::new(SERIAL)),
                Call::CreateFailed => {
                    let fails = relay.serial().is_none() && !relay.is_finished();
                    relay.handle_create_failed("nack");
                    if fails {
                        // Only the replacement create, born failed, may follow.
                        let replacement: Vec<PublishOp> = std::iter::from_fn(|| relay.poll_op()).collect();
                        prop_assert_eq!(replacement.len(), 1);
                        prop_assert!(matches!(&replacement[0], PublishOp::Create(m) if m.header(headers::STATUS) == Some("failed")));
                        create_failed = true;
                    }
                }
                Call::AppendFailed => relay.handle_append_failed(now),
                Call::Timeout => relay.handle_timeout(now),
                Call::StreamError => relay.handle_stream_error(now, "reset"),
                Call::StreamEnd => relay.handle_stream_end(now),
                Call::Cancel => relay.cancel(now),
                Call::Window(w) => relay.set_window(Duration::from_millis(w)),
            }
            while let Some(op) = relay.poll_op() {
                prop_assert!(!create_failed, "{op:?} after a failed create");
                ops.push(op);
            }
        }
        let creates = ops.iter().filter(|op| matches!(op, PublishOp::Create(_))).count();
        prop_assert!(creates <= 1);
        if creates == 1 {
            prop_assert!(matches!(ops[0], PublishOp::Create(_)));
        }
        let final_updates = ops
            .iter()
            .filter(|op| matches!(op, PublishOp::Update(m) if m.header(headers::STATUS) != Some("streaming")))
            .count();
        prop_assert!(final_updates <= 1);
        if relay.is_finished() && !create_failed {
            let last = ops.last().map(PublishOp::message);
            prop_assert_eq!(last.and_then(|m| m.data.clone()), Some(json!(relay.text())));
            prop_assert_eq!(last.and_then(|m| m.header(headers::STATUS)), Some(relay.status().as_str()));
            if let Some(limit) = limit {
                prop_assert!(last.map_or(0, Message::wire_size) <= limit);
            }
        }
    }
}

/// Found by a long run of the property above: with a small limit, the final headers
/// (a long error message among them) left no room, and the final update was too large.
#[test]
fn a_long_error_message_is_shortened_so_the_final_update_fits() {
    let limit = 300 + ENVELOPE_SLACK;
    let mut relay = Relay::new(RelayConfig {
        max_message_size: Some(limit),
        ..config(0)
    });
    relay.handle_event(ms(0), &created());
    relay.handle_created(ms(1), Serial::new(SERIAL));
    relay.handle_event(ms(2), &delta("a", "some text"));
    relay.handle_stream_error(ms(3), &"connection reset by peer; ".repeat(40));
    let ops: Vec<PublishOp> = std::iter::from_fn(|| relay.poll_op()).collect();
    let last = ops.last().unwrap().message();
    assert!(last.wire_size() <= limit, "{} > {limit}", last.wire_size());
    assert_eq!(last.header(headers::STATUS), Some("failed"));
    assert!(last
        .header(headers::ERROR)
        .unwrap()
        .starts_with("connection reset by peer"));
}

/// Sockudo measures the whole JSON message, escapes included: text full of quotes and
/// newlines must still leave the final update, with an id and a serial, under the limit.
#[test]
fn escaped_text_is_measured_as_json() {
    let limit = 4_096;
    let mut relay = Relay::new(RelayConfig {
        max_message_size: Some(limit),
        ..config(0)
    });
    relay.handle_event(ms(0), &created());
    relay.handle_created(ms(1), Serial::new(SERIAL));
    for t in 0..2_000 {
        relay.handle_event(ms(2 + t), &delta("a", "\"q\"\n"));
    }
    relay.handle_event(ms(3_000), &completed());
    assert_eq!(relay.status(), Status::Incomplete);
    // The raw text alone would have fitted more than twice over.
    assert!(relay.text().len() < limit / 2, "{}", relay.text().len());
    let mut last = std::iter::from_fn(|| relay.poll_op())
        .last()
        .unwrap()
        .into_message();
    last.id = Some(crate::ids::MessageId::new("pub0123abcd-123456:0"));
    let json = serde_json::to_string(&last).unwrap();
    assert!(json.len() <= limit, "{} > {limit}", json.len());
}

/// A server that counts more than we do refuses an append as too large: the answer ends
/// `incomplete` with the text the channel holds (up to where that append started), and a
/// refusal of that update cuts again, a bounded number of times.
#[test]
fn a_message_refused_as_too_large_ends_the_answer_incomplete_with_what_fits() {
    let mut h = Harness::window(0);
    h.event(0, &created());
    h.event(1, &delta("m", "Hello "));
    h.event(2, &delta("m", "wörld"));
    h.relay.handle_too_large(ms(3), "Hello ".len());
    h.drain();
    assert_eq!(h.relay.status(), Status::Incomplete);
    assert!(h.relay.is_finished());
    let last = h.last();
    assert_eq!(last.action, Some(MessageAction::UPDATE));
    assert_eq!(last.data, Some(json!("Hello ")));
    assert_eq!(last.header(headers::STATUS), Some("incomplete"));
    assert_eq!(last.header(headers::REASON), Some(MAX_MESSAGE_SIZE_REASON));
    assert_eq!(last.header(headers::LENGTH), Some("6"));
    // Later events change nothing.
    h.event(4, &delta("m", "more"));
    h.event(5, &completed());
    h.drain();
    assert_eq!(h.last().data, Some(json!("Hello ")));
    // Each refusal of the update cuts again, up to the bound; then nothing more is sent.
    let updates = |h: &Harness| {
        h.transcript()
            .iter()
            .filter(|t| t.starts_with("update"))
            .count()
    };
    let before = updates(&h);
    for _ in 1..=MAX_SIZE_CUTS {
        let fits = h.relay.text().len() / 2;
        h.relay.handle_too_large(ms(6), fits);
        h.drain();
    }
    assert_eq!(
        updates(&h),
        before + usize::from(MAX_SIZE_CUTS) - 1,
        "{:?}",
        h.transcript()
    );
    assert_eq!(h.last().data, Some(json!("H")));
}

fn leased(window_ms: u64) -> Harness {
    Harness::new(RelayConfig {
        lease: Some(Lease {
            duration: Duration::from_secs(9),
            clock: crate::lease::UnixClock::new(1_000_000),
        }),
        ..config(window_ms)
    })
}

fn lease_header(op: &PublishOp) -> Option<i64> {
    op.message()
        .header(crate::lease::LEASE)
        .and_then(crate::lease::parse)
}

#[test]
fn every_streaming_message_carries_a_lease_and_the_final_update_none() {
    let mut h = leased(40);
    h.event(0, &created());
    h.event(100, &delta("m", "Hi"));
    h.event(2_500, &delta("m", " there"));
    h.event(2_600, &completed());
    let ops: Vec<_> = h.ops.iter().map(|(t, op)| (*t, lease_header(op))).collect();
    assert_eq!(
        ops,
        [
            (0, Some(1_009_000)),
            (100, Some(1_010_000)),
            (2_500, Some(1_012_000)),
            (2_600, None),
        ]
    );
    assert_eq!(h.last().header(headers::STATUS), Some("completed"));
    h.check_invariants();
}

#[test]
fn a_quiet_answer_sends_an_empty_append_every_third_of_its_lease() {
    let mut h = leased(40);
    h.event(0, &created());
    h.event(10, &delta("m", "Thinking"));
    // The model goes quiet for 10 s: heartbeats at 3 s, 6 s and 9 s after the last message.
    h.advance(10_010);
    let beats: Vec<_> = h
        .ops
        .iter()
        .skip(2)
        .map(|(t, op)| {
            (
                *t,
                op.text().to_owned(),
                op.message().header(headers::LENGTH),
            )
        })
        .collect();
    assert_eq!(
        beats,
        [
            (3_010, String::new(), Some("8")),
            (6_010, String::new(), Some("8")),
            (9_010, String::new(), Some("8")),
        ]
    );
    assert!(h
        .ops
        .iter()
        .skip(2)
        .all(|(_, op)| matches!(op, PublishOp::Append(_))));
    // Text resets the clock; the end stops the beats.
    h.event(10_500, &delta("m", "!"));
    h.event(11_000, &completed());
    h.advance(60_000);
    assert_eq!(h.subscriber_view(), "Thinking!");
    assert_eq!(h.last().header(headers::STATUS), Some("completed"));
    assert_eq!(h.ops.len(), 7, "{:?}", h.timed());
}

#[test]
fn no_heartbeat_before_the_create_is_acknowledged_or_without_a_lease() {
    let mut h = leased(40);
    h.auto_ack = false;
    h.event(0, &created());
    h.advance(20_000);
    assert_eq!(h.transcript(), ["create"]);
    let mut plain = Harness::window(40);
    plain.event(0, &created());
    plain.event(10, &delta("m", "Hi"));
    plain.advance(60_000);
    assert_eq!(plain.ops.len(), 2);
    assert!(plain.ops.iter().all(|(_, op)| lease_header(op).is_none()));
}

/// A background response's events, numbered from 0: created, item, part, the deltas,
/// then the done events and completed.
fn background_events(deltas: &[&str]) -> Vec<StreamEvent> {
    let mut events = vec![
        json!({"type": "response.created", "response": {"id": "resp_b", "status": "queued", "background": true}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "m", "type": "message"}}),
        json!({"type": "response.content_part.added", "item_id": "m", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": ""}}),
    ];
    for d in deltas {
        events.push(json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": d}));
    }
    let text = deltas.concat();
    events.push(json!({"type": "response.output_text.done", "item_id": "m", "output_index": 0, "content_index": 0, "text": text}));
    events.push(json!({"type": "response.completed", "response": {"id": "resp_b", "status": "completed", "background": true}}));
    events
        .into_iter()
        .enumerate()
        .map(|(seq, mut e)| {
            e["sequence_number"] = json!(seq);
            ev(e)
        })
        .collect()
}

fn sequence_header(op: &PublishOp) -> Option<u64> {
    op.message()
        .header(headers::SEQUENCE)
        .and_then(|s| s.parse().ok())
}

#[test]
fn a_leased_background_answer_says_how_far_through_its_stream_each_message_is() {
    let mut h = leased(0);
    for (t, event) in background_events(&["A", "b", "c"]).iter().enumerate() {
        h.event(t as u64 * 10, event);
    }
    h.check_invariants();
    let seqs: Vec<_> = h.ops.iter().map(|(_, op)| sequence_header(op)).collect();
    // The create goes with the first event; each append names its delta's event; the
    // final update, which ends the answer, none.
    assert_eq!(seqs, [Some(0), Some(3), Some(4), Some(5), None]);

    // A foreground response, or one without a lease, carries none.
    let mut foreground = leased(0);
    foreground.event(0, &created());
    foreground.event(10, &delta("m", "x"));
    let mut unleased = Harness::window(0);
    for event in background_events(&["x"]) {
        unleased.event(0, &event);
    }
    for h in [foreground, unleased] {
        assert!(h.ops.iter().all(|(_, op)| sequence_header(op).is_none()));
    }
}

/// A relay carrying on what `first` published through event `through`, fed `events` again
/// from the start.
fn continued(published: &str, through: u64, events: &[StreamEvent]) -> Harness {
    let mut headers = BTreeMap::new();
    headers.insert(headers::PROMPT.to_owned(), "prompt-serial".to_owned());
    headers.insert(headers::RESPONSE_ID.to_owned(), "resp_b".to_owned());
    headers.insert(lease::LEASE.to_owned(), "1".to_owned());
    headers.insert(headers::SEQUENCE.to_owned(), through.to_string());
    let mut h = leased(0);
    h.relay = Relay::continuing(
        h.relay.config().clone(),
        Continuation {
            serial: Serial::new(SERIAL),
            text: published.to_owned(),
            headers,
            through,
        },
    );
    h.relay.start(ms(0));
    h.drain();
    for event in events {
        h.event(h.now + 10, event);
    }
    h
}

#[test]
fn a_continued_answer_appends_only_what_follows_the_published_events() {
    let events = background_events(&["One", " two", " three", " four"]);
    // The dead publisher's text went through event 4 (" two").
    let h = continued("One two", 4, &events);
    assert_eq!(
        h.transcript(),
        [
            "append \"\"",
            "append \" three\"",
            "append \" four\"",
            "update[completed] \"One two three four\""
        ]
    );
    // The claim is an empty append with a fresh lease at the old text's length and digest.
    let claim = h.ops[0].1.message();
    assert_eq!(claim.serial.as_ref().map(Serial::as_str), Some(SERIAL));
    assert_eq!(claim.header(headers::LENGTH), Some("7"));
    assert_eq!(
        claim.header(headers::DIGEST),
        Some(headers::digest("One two").as_str())
    );
    assert!(lease_header(&h.ops[0].1).is_some_and(|lease| lease > 1));
    assert_eq!(claim.header(headers::PROMPT), Some("prompt-serial"));
    assert_eq!(claim.header(headers::STATUS), Some("streaming"));
    assert_eq!(h.relay.text(), "One two three four");
    assert_eq!(h.relay.status(), Status::Completed);
}

#[test]
fn a_continued_answer_whose_rebuilt_text_differs_sends_it_whole() {
    let events = background_events(&["One", " two", " three"]);
    // Ably holds a text the events do not give (a lost append the dead publisher never
    // repaired): the first publish after the rebuild is a full update.
    let h = continued("One", 4, &events);
    assert_eq!(
        h.transcript(),
        [
            "append \"\"",
            "update[streaming] \"One two three\"",
            "update[completed] \"One two three\""
        ]
    );
}

#[test]
fn a_continued_answer_that_breaks_before_its_rebuild_keeps_the_published_text() {
    let events = background_events(&["One", " two", " three"]);
    let mut h = continued("One two", 4, &events[..3]);
    h.relay.handle_stream_error(ms(h.now), "gone again");
    h.drain();
    assert_eq!(
        h.transcript(),
        ["append \"\"", "update[failed] \"One two\""]
    );
    assert_eq!(h.last().header(headers::LENGTH), Some("7"));
}

#[test]
fn a_continued_answer_whose_end_was_published_but_not_its_update_finishes() {
    // The dead publisher appended through the terminal event but its update was lost.
    let events = background_events(&["One", " two"]);
    let last = events.len() as u64 - 1;
    let h = continued("One two", last, &events);
    assert_eq!(
        h.transcript(),
        ["append \"\"", "update[completed] \"One two\""]
    );
}

#[test]
fn a_handed_over_answer_sends_its_buffered_text_and_no_end() {
    let mut h = leased(1_000);
    let events = background_events(&["One", " two", " three"]);
    for event in &events[..5] {
        h.event(10, event);
    }
    // " two" waits for its window when the daemon shuts down.
    h.relay.hand_over(ms(20));
    h.drain();
    assert_eq!(
        h.transcript(),
        ["create", "append \"One\"", "append \" two\""]
    );
    assert_eq!(sequence_header(&h.ops[2].1), Some(4));
    assert_eq!(h.relay.status(), Status::Streaming);
    assert!(h.relay.is_finished());
    assert_eq!(
        h.relay.poll_timeout(),
        None,
        "no heartbeat after the handover"
    );
    // Nothing more, whatever comes.
    h.event(30, &events[5]);
    h.relay.handle_stream_end(ms(40));
    h.drain();
    assert_eq!(h.ops.len(), 3);
}

/// Deltas of one to three characters from a small alphabet with multi-byte letters.
fn small_deltas() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[aé日🙂 ]{1,3}", 0..25)
}

proptest! {
    /// However far the dead publisher got, and whether or not the channel's text matches the
    /// events it says it includes, a carried-on answer ends with the model's text for a
    /// viewer who had the channel's text, and from its first publish on shows only the
    /// model's text so far; when the channel's text matched, it only ever grows (appends,
    /// no rewrite) until the final update.
    #[test]
    fn a_continued_answer_converges_on_the_models_text(
        deltas in small_deltas(),
        cut in 0..26usize,
        window in 0..60u64,
        gaps in prop::collection::vec(0..40u64, 40),
        other in prop::option::of("[a-z]{0,6}"),
    ) {
        let cut = cut.min(deltas.len());
        let strs: Vec<&str> = deltas.iter().map(String::as_str).collect();
        let events = background_events(&strs);
        let full = deltas.concat();
        let consistent = other.is_none();
        let published = other.unwrap_or_else(|| deltas[..cut].concat());
        // Events 0..=2 open the answer; delta i is event 3 + i.
        let through = 2 + cut as u64;
        let mut h = leased(window);
        h.relay = Relay::continuing(
            h.relay.config().clone(),
            Continuation {
                serial: Serial::new(SERIAL),
                text: published.clone(),
                headers: BTreeMap::new(),
                through,
            },
        );
        h.relay.start(ms(0));
        h.drain();
        let mut t = 0;
        for (event, gap) in events.iter().zip(gaps.iter().cycle()) {
            t += gap;
            h.event(t, event);
        }
        h.advance(t + 10_000);
        prop_assert_eq!(h.relay.status(), Status::Completed);
        let mut view = published.clone();
        let last = h.ops.len() - 1;
        for (i, (_, op)) in h.ops.iter().enumerate() {
            match op {
                PublishOp::Create(_) => prop_assert!(false, "a continued answer creates nothing"),
                PublishOp::Append(_) => view.push_str(op.text()),
                PublishOp::Update(_) => {
                    prop_assert!(!consistent || i == last, "a rewrite of a matching text: {:?}", h.transcript());
                    op.text().clone_into(&mut view);
                }
            }
            let m = op.message();
            let (length, digest) = (view.len().to_string(), headers::digest(&view));
            prop_assert_eq!(m.header(headers::LENGTH), Some(length.as_str()));
            prop_assert_eq!(m.header(headers::DIGEST), Some(digest.as_str()));
            // After the claim, every version a viewer holds is the model's text so far.
            if i > 0 || consistent {
                prop_assert!(full.starts_with(&view), "{:?} is not a prefix of {:?}", view, full);
            }
        }
        prop_assert_eq!(view, full);
    }
}
