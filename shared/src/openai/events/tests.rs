//! Tests: Decoding of every event shape, tolerant and hostile input.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn event(data: &str) -> StreamEvent {
    match StreamEvent::from_data(data) {
        Ok(Decoded::Event(event)) => event,
        other => panic!("expected an event from {data}, got {other:?}"),
    }
}

#[test]
fn done_sentinel_is_a_distinct_result() {
    assert_eq!(StreamEvent::from_data("[DONE]"), Ok(Decoded::DoneSentinel));
    assert_eq!(
        StreamEvent::from_data(" [DONE]\n"),
        Ok(Decoded::DoneSentinel)
    );
}

#[test]
fn lifecycle_events_expose_the_response_info() {
    let e = event(
        r#"{"type":"response.incomplete","sequence_number":10,"response":{"id":"resp_1",
        "status":"incomplete","model":"gpt-5.4-mini","background":false,
        "incomplete_details":{"reason":"max_output_tokens"},"error":null}}"#,
    );
    assert!(matches!(e, StreamEvent::Incomplete(_)));
    assert_eq!(e.sequence_number(), Some(10));
    let info = e.response().unwrap();
    assert_eq!(info.id.as_deref(), Some("resp_1"));
    assert_eq!(info.status, Some(ResponseStatus::Incomplete));
    assert_eq!(info.model.as_deref(), Some("gpt-5.4-mini"));
    assert_eq!(info.incomplete_reason.as_deref(), Some("max_output_tokens"));
    assert_eq!(info.error, None);
    assert_eq!(e.terminal_status(), Some(Status::Incomplete));

    let failed = event(
        r#"{"type":"response.failed","response":{"status":"failed","error":{"code":500,"message":"boom"}}}"#,
    );
    assert_eq!(failed.response().unwrap().error_message(), Some("boom"));
    assert_eq!(failed.response().unwrap().error_code(), Some("500"));
    assert!(failed.is_terminal());
    assert!(!event(r#"{"type":"response.created","response":{}}"#).is_terminal());
}

#[test]
fn codex_response_done_is_terminal_by_its_status() {
    let done = |status: &str| {
        event(&format!(
            r#"{{"type":"response.done","response":{{"status":"{status}"}}}}"#
        ))
    };
    assert_eq!(done("completed").terminal_status(), Some(Status::Completed));
    assert_eq!(
        done("incomplete").terminal_status(),
        Some(Status::Incomplete)
    );
    assert_eq!(done("failed").terminal_status(), Some(Status::Failed));
    assert_eq!(done("cancelled").terminal_status(), Some(Status::Cancelled));
    assert_eq!(done("in_progress").terminal_status(), None);
    let bare = event(r#"{"type":"response.done","response":{"id":"r"}}"#);
    assert_eq!(bare.terminal_status(), Some(Status::Completed));
}

#[test]
fn error_event_in_nested_and_flat_shapes_with_any_code_type() {
    let nested = event(
        r#"{"type":"error","sequence_number":5,"error":{"type":"server_error",
        "code":"server_error","message":"Sorry","param":null}}"#,
    );
    let StreamEvent::Error(e) = &nested else {
        panic!("not an error: {nested:?}")
    };
    assert_eq!(e.error_type.as_deref(), Some("server_error"));
    assert_eq!(e.code.as_deref(), Some("server_error"));
    assert_eq!(e.message.as_deref(), Some("Sorry"));
    assert_eq!(e.sequence_number, Some(5));
    assert!(nested.is_terminal());

    let flat = event(r#"{"type":"error","code":429,"message":"Slow down","param":"model"}"#);
    let StreamEvent::Error(e) = &flat else {
        panic!("not an error: {flat:?}")
    };
    assert_eq!(e.error_type, None);
    assert_eq!(e.code.as_deref(), Some("429"));
    assert_eq!(e.param.as_deref(), Some("model"));
    assert_eq!(e.describe(), "Slow down");

    let null_code = event(r#"{"type":"error","code":null,"message":"x"}"#);
    let StreamEvent::Error(e) = null_code else {
        panic!("not an error")
    };
    assert_eq!(e.code, None);

    let bare = event(r#"{"type":"error"}"#);
    let StreamEvent::Error(e) = bare else {
        panic!("not an error")
    };
    assert_eq!(
        e.describe(),
        "the server sent an error event without a message"
    );
    let code_only = ErrorEvent {
        code: Some("boom".into()),
        ..ErrorEvent::default()
    };
    assert_eq!(code_only.describe(), "error event with code boom");
}

#[test]
fn deltas_and_dones_keep_optional_positions() {
    let llama = event(r#"{"type":"response.output_text.delta","item_id":"msg_1","delta":"Hi"}"#);
    let StreamEvent::OutputTextDelta(d) = &llama else {
        panic!("not a delta: {llama:?}")
    };
    assert_eq!(d.delta, "Hi");
    assert_eq!(d.position.item_id.as_deref(), Some("msg_1"));
    assert_eq!(d.position.output_index, None);
    assert_eq!(d.position.content_index, None);
    assert_eq!(llama.sequence_number(), None);

    let refusal = event(
        r#"{"type":"response.refusal.done","item_id":"m","output_index":0,"content_index":1,"refusal":"No."}"#,
    );
    let StreamEvent::RefusalDone(d) = refusal else {
        panic!("not a refusal")
    };
    assert_eq!(d.text, "No.");
    assert_eq!(d.position.content_index, Some(1));

    let summary = event(
        r#"{"type":"response.reasoning_summary_text.delta","item_id":"rs","summary_index":2,"delta":"t"}"#,
    );
    let StreamEvent::ReasoningSummaryTextDelta(d) = summary else {
        panic!("not a summary")
    };
    assert_eq!(d.position.summary_index, Some(2));

    let vllm = event(r#"{"type":"response.reasoning_text.delta","item_id":"rs","delta":"hm"}"#);
    assert!(matches!(vllm, StreamEvent::ReasoningTextDelta(_)));
    let vllm_done = event(r#"{"type":"response.reasoning_text.done","item_id":"rs","text":"hm"}"#);
    assert!(matches!(vllm_done, StreamEvent::ReasoningTextDone(_)));

    let args = event(
        r#"{"type":"response.function_call_arguments.done","item_id":"fc","arguments":"{}"}"#,
    );
    let StreamEvent::FunctionCallArgumentsDone(a) = args else {
        panic!("not arguments")
    };
    assert_eq!(a.name, None);
    assert_eq!(a.arguments, "{}");
}

#[test]
fn items_and_parts_are_typed_and_tolerant() {
    let added = event(
        r#"{"type":"response.output_item.added","output_index":1,"item":{"id":"fc_1","type":"function_call","name":"f"}}"#,
    );
    let item = added.output_item().unwrap();
    assert_eq!(item.id.as_deref(), Some("fc_1"));
    assert_eq!(item.kind, Some(ItemKind::FunctionCall));
    assert_eq!(item.status, None);
    assert_eq!(item.raw["name"], "f");

    let bare_part = event(
        r#"{"type":"response.content_part.added","item_id":"m","output_index":1,"content_index":0}"#,
    );
    let StreamEvent::ContentPartAdded(p) = bare_part else {
        panic!("not a part")
    };
    assert_eq!(p.part, None);

    let refusal_part = event(
        r#"{"type":"response.content_part.done","item_id":"m","part":{"type":"refusal","refusal":"No."}}"#,
    );
    let StreamEvent::ContentPartDone(p) = refusal_part else {
        panic!("not a part")
    };
    assert_eq!(
        p.part,
        Some(ContentPart {
            kind: Some(PartKind::Refusal),
            text: Some("No.".into())
        })
    );
}

#[test]
fn unknown_types_and_fields_are_surfaced_not_fatal() {
    let e = event(
        r#"{"type":"response.web_search_call.searching","item_id":"ws","sequence_number":3,"x":1}"#,
    );
    assert_eq!(e.kind(), "response.web_search_call.searching");
    assert_eq!(e.sequence_number(), Some(3));
    let StreamEvent::Unknown { raw, .. } = e else {
        panic!("not unknown")
    };
    assert_eq!(raw["x"], 1);

    let extra = event(
        r#"{"type":"response.output_text.delta","delta":"a","obfuscation":"zz","new":{"a":[1]}}"#,
    );
    assert!(matches!(extra, StreamEvent::OutputTextDelta(_)));
    // Optional fields of the wrong type read as absent instead of failing.
    let odd = event(
        r#"{"type":"response.output_text.delta","delta":"a","output_index":"zero","sequence_number":-1}"#,
    );
    assert_eq!(odd.sequence_number(), None);
}

#[test]
fn bad_input_gives_clear_errors() {
    assert!(matches!(
        StreamEvent::from_data("not json"),
        Err(EventError::NotJson(_))
    ));
    assert!(matches!(
        StreamEvent::from_data(""),
        Err(EventError::NotJson(_))
    ));
    assert_eq!(
        StreamEvent::from_data("[1,2]"),
        Err(EventError::NotAnObject)
    );
    assert_eq!(
        StreamEvent::from_data(r#""text""#),
        Err(EventError::NotAnObject)
    );
    assert_eq!(
        StreamEvent::from_data(r#"{"delta":"x"}"#),
        Err(EventError::MissingType)
    );
    assert_eq!(
        StreamEvent::from_data(r#"{"type":7}"#),
        Err(EventError::MissingType)
    );
    assert_eq!(
        StreamEvent::from_data(r#"{"type":"response.output_text.delta","delta":5}"#),
        Err(EventError::WrongType {
            kind: "response.output_text.delta".into(),
            field: "delta",
            expected: "a string"
        })
    );
    assert_eq!(
        StreamEvent::from_data(r#"{"type":"response.output_text.done"}"#),
        Err(EventError::MissingField {
            kind: "response.output_text.done".into(),
            field: "text"
        })
    );
    assert_eq!(
        StreamEvent::from_data(r#"{"type":"response.completed","response":"done"}"#),
        Err(EventError::WrongType {
            kind: "response.completed".into(),
            field: "response",
            expected: "an object"
        })
    );
    assert!(StreamEvent::from_data(r#"{"type":"response.created"}"#).is_err());
    assert!(StreamEvent::from_data(r#"{"type":"response.output_item.added","item":[]}"#).is_err());
    assert!(StreamEvent::from_data(r#"{"type":"response.content_part.done","part":"x"}"#).is_err());
    let message = EventError::MissingField {
        kind: "response.created".into(),
        field: "response",
    };
    assert_eq!(
        message.to_string(),
        "`response.created` event has no `response` field"
    );
}

const KINDS: &[&str] = &[
    "response.created",
    "response.completed",
    "response.done",
    "response.output_item.added",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.done",
    "response.function_call_arguments.done",
    "error",
    "something.else",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z\\[\\]{}\"]{0,6}".prop_map(Value::from),
        Just(json!({})),
        Just(json!([1, "x"])),
        Just(json!({"id": 5, "type": [], "status": {}, "error": "x", "message": 1})),
    ]
}

proptest! {
    /// Arbitrary text never panics the decoder.
    #[test]
    fn arbitrary_data_never_panics(data in ".{0,64}") {
        let _ = StreamEvent::from_data(&data);
    }

    /// Known and unknown types with fields of any JSON type decode or fail cleanly, and
    /// an error event always decodes.
    #[test]
    fn any_field_types_decode_or_fail_cleanly(
        kind in prop::sample::select(KINDS),
        fields in prop::collection::btree_map(
            prop::sample::select(&["response", "item", "part", "delta", "text", "refusal",
                "arguments", "code", "message", "error", "sequence_number", "output_index"][..]),
            scalar(),
            0..6,
        ),
    ) {
        let mut obj: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        obj.insert("type".into(), Value::from(kind));
        let result = StreamEvent::from_data(&Value::Object(obj).to_string());
        if kind == "error" || kind == "something.else" {
            prop_assert!(matches!(result, Ok(Decoded::Event(_))), "{result:?}");
        }
        if let Ok(Decoded::Event(event)) = result {
            prop_assert_eq!(event.kind(), kind);
        }
    }
}

#[test]
fn from_value_matches_from_data() {
    let value = json!({"type": "response.output_text.delta", "delta": "x", "item_id": "m"});
    let direct = StreamEvent::from_value(value.clone()).unwrap();
    assert_eq!(event(&value.to_string()), direct);
    assert_eq!(direct.kind(), "response.output_text.delta");
}
