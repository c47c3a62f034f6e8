use leptos::prelude::*;
use serde_json::json;
use shared::assembler::Assembler;
use shared::headers::Status;
use shared::protocol::Message;
use shared::Serial;

use super::{Kind, Rows};

fn message(value: serde_json::Value) -> Message {
    serde_json::from_value(value).unwrap()
}

fn feed(rows: &Rows, view: &mut Assembler, value: serde_json::Value) {
    let changes = view.apply(&message(value)).unwrap();
    rows.apply(&changes, view);
}

#[test]
fn rows_follow_serial_order_and_tokens_touch_one_row() {
    let owner = Owner::new();
    owner.set();
    let rows = Rows::default();
    let mut view = Assembler::new();
    feed(
        &rows,
        &mut view,
        json!({"serial": "s2", "name": "response", "data": "", "action": 0}),
    );
    feed(
        &rows,
        &mut view,
        json!({"serial": "s1", "name": "prompt", "data": "Hi?", "action": 0}),
    );
    assert_eq!(rows.len(), 2);
    let list = rows.list.get_untracked();
    assert_eq!(list[0].kind, Kind::Prompt);
    assert_eq!(list[1].serial, Serial::new("s2"));

    feed(
        &rows,
        &mut view,
        json!({"serial": "s2", "name": "response", "data": "Hel", "action": 5, "version": {"serial": "v1"}}),
    );
    feed(
        &rows,
        &mut view,
        json!({"serial": "s2", "name": "response", "data": "lo", "action": 5, "version": {"serial": "v2"}}),
    );
    let answer = rows.list.get_untracked()[1].clone();
    assert_eq!(answer.text.get_untracked(), "Hello");
    assert_eq!(answer.status.get_untracked(), Status::Streaming);

    feed(
        &rows,
        &mut view,
        json!({"serial": "s2", "name": "response", "data": "Hello!", "action": 1,
        "version": {"serial": "v3"}, "extras": {"headers": {"status": "failed", "error": "model broke"}}}),
    );
    assert_eq!(answer.text.get_untracked(), "Hello!");
    assert_eq!(answer.status.get_untracked(), Status::Failed);
    assert_eq!(
        answer.detail.get_untracked().as_deref(),
        Some("model broke")
    );
}

#[test]
fn a_mid_stream_join_is_partial_until_the_full_text_arrives() {
    let owner = Owner::new();
    owner.set();
    let rows = Rows::default();
    let mut view = Assembler::new();
    feed(
        &rows,
        &mut view,
        json!({"serial": "s9", "name": "response", "data": "tail", "action": 5, "version": {"serial": "v5"}}),
    );
    let row = rows.list.get_untracked()[0].clone();
    assert!(row.partial.get_untracked());
    feed(
        &rows,
        &mut view,
        json!({"serial": "s9", "name": "response", "data": "head and tail", "action": 1,
        "version": {"serial": "v6"}, "extras": {"headers": {"status": "completed"}}}),
    );
    assert!(!row.partial.get_untracked());
    assert_eq!(row.text.get_untracked(), "head and tail");
    assert_eq!(row.status.get_untracked(), Status::Completed);
}
