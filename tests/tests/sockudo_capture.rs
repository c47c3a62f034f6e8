//! Frames Sockudo 5.2.0 really sent (`fixtures/sockudo/probe-capture.jsonl`) as test
//! vectors: every frame decodes, and the live subscriber's deliveries assemble into the
//! text each message ended with.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::collections::BTreeMap;

use serde_json::Value;
use shared::assembler::Assembler;
use shared::codec;
use shared::protocol::{Action, MessageAction};
use shared::Serial;

fn capture() -> Vec<(String, String, String)> {
    let path = tests::fixtures_dir().join("../sockudo/probe-capture.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| v[k].as_str().unwrap().to_owned();
            (field("dir"), field("conn"), v["frame"].to_string())
        })
        .collect()
}

#[test]
fn every_captured_frame_decodes() {
    let frames = capture();
    assert!(frames.len() > 100);
    for (dir, conn, frame) in &frames {
        codec::decode(frame).unwrap_or_else(|e| panic!("{dir} {conn}: {e}: {frame}"));
    }
}

#[test]
fn the_live_subscriber_assembles_what_each_message_ended_as() {
    let mut view = Assembler::new();
    let mut last_full: BTreeMap<Serial, String> = BTreeMap::new();
    for (dir, conn, frame) in capture() {
        if dir != "in" || conn != "B" {
            continue;
        }
        let frame = codec::decode(&frame).unwrap();
        if frame.action != Action::MESSAGE {
            continue;
        }
        // The probe also published other kinds of messages (objects, plain names); the
        // answers are the ones named `response`.
        for message in frame.messages.unwrap_or_default() {
            if message.name.as_deref() != Some(shared::headers::ANSWER_NAME) {
                continue;
            }
            if matches!(
                message.action(),
                MessageAction::CREATE | MessageAction::UPDATE
            ) {
                last_full.insert(message.serial.clone().unwrap(), message.text().unwrap());
            }
            view.apply(&message).unwrap();
        }
    }
    assert!(!last_full.is_empty());
    for (serial, text) in &last_full {
        let answer = view.answer(serial).expect("assembled");
        assert_eq!(answer.text(), text, "{serial}");
    }
}
