//! Unit tests for the assembler: each delivery rule on hand-written deliveries, and the
//! frames captured in ably-protocol §12.

use serde_json::{json, Value};

use super::prop_tests::View;
use super::*;
use crate::protocol::MessageVersion;

fn s(value: &str) -> Serial {
    Serial::new(value)
}

/// A delivered message as a subscriber sees it.
fn delivered(
    action: MessageAction,
    serial: &str,
    version: Option<&str>,
    data: Option<&str>,
) -> Message {
    Message {
        name: Some(headers::ANSWER_NAME.to_owned()),
        serial: Some(s(serial)),
        action: Some(action),
        version: version.map(|v| MessageVersion {
            serial: Some(s(v)),
            ..MessageVersion::default()
        }),
        data: data.map(|d| Value::String(d.to_owned())),
        ..Message::default()
    }
}

/// A create without `version`, as older servers and REST history may send it.
fn create(serial: &str, text: &str) -> Message {
    delivered(MessageAction::CREATE, serial, None, Some(text))
}

fn append(serial: &str, version: &str, fragment: &str) -> Message {
    delivered(MessageAction::APPEND, serial, Some(version), Some(fragment))
}

fn update(serial: &str, version: &str, text: &str) -> Message {
    delivered(MessageAction::UPDATE, serial, Some(version), Some(text))
}

fn delete(serial: &str, version: &str) -> Message {
    delivered(MessageAction::DELETE, serial, Some(version), None)
}

fn named(mut msg: Message, name: &str) -> Message {
    msg.name = Some(name.to_owned());
    msg
}

fn with_headers(mut msg: Message, pairs: &[(&str, &str)]) -> Message {
    let map = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    msg.set_headers(&map);
    msg
}

/// `msg` with the `length` and `digest` headers of the publisher's text `published`.
fn stamped(msg: Message, published: &str) -> Message {
    let length = published.len().to_string();
    with_headers(
        msg,
        &[
            (headers::LENGTH, length.as_str()),
            (headers::DIGEST, headers::digest(published).as_str()),
        ],
    )
}

fn text_of(asm: &Assembler, serial: &str) -> String {
    asm.answer(&s(serial))
        .map(|a| a.text().to_owned())
        .unwrap_or_default()
}

fn appended(serial: &str, delta: &str) -> Change {
    Change::Appended {
        serial: s(serial),
        delta: delta.to_owned(),
    }
}

fn replaced(serial: &str, text: &str) -> Change {
    Change::Replaced {
        serial: s(serial),
        text: text.to_owned(),
    }
}

#[test]
fn create_then_appends_concatenate() {
    let mut asm = Assembler::new();
    assert_eq!(
        asm.apply(&create("S1", "Hel")).unwrap(),
        vec![Change::Created {
            serial: s("S1"),
            text: "Hel".into(),
            partial: false
        }]
    );
    assert_eq!(
        asm.apply(&append("S1", "S2", "lo")).unwrap(),
        vec![appended("S1", "lo")]
    );
    assert_eq!(
        asm.apply(&append("S1", "S3", " wörld 😀")).unwrap(),
        vec![appended("S1", " wörld 😀")]
    );
    let answer = asm.answer(&s("S1")).unwrap();
    assert_eq!(answer.text(), "Hello wörld 😀");
    assert_eq!(answer.version(), Some(&s("S3")));
    assert_eq!(answer.status(), Status::Streaming);
    assert_eq!(answer.name(), Some("response"));
    assert!(!answer.is_partial());
    // An empty fragment is applied (its version counts) but changes no text.
    assert_eq!(asm.apply(&append("S1", "S4", "")).unwrap(), vec![]);
    assert_eq!(asm.answer(&s("S1")).unwrap().version(), Some(&s("S4")));
}

#[test]
fn append_before_create_is_partial_until_a_full_version() {
    let mut asm = Assembler::new();
    assert_eq!(
        asm.apply(&append("S1", "S3", " World")).unwrap(),
        vec![Change::Created {
            serial: s("S1"),
            text: " World".into(),
            partial: true
        }]
    );
    assert!(asm.answer(&s("S1")).unwrap().is_partial());

    // The create is older than what we hold: only its metadata is used.
    let mut late_create = create("S1", "Hello");
    late_create.client_id = Some("agent".into());
    late_create.timestamp = Some(1_000);
    assert_eq!(asm.apply(&late_create).unwrap(), vec![]);
    let answer = asm.answer(&s("S1")).unwrap();
    assert!(answer.is_partial());
    assert_eq!(answer.text(), " World");
    assert_eq!(answer.client_id(), Some("agent"));
    assert_eq!(answer.timestamp(), Some(1_000));

    // A full version at the same version vouches for the whole text and clears `partial`.
    assert_eq!(
        asm.apply(&update("S1", "S3", "Hello World")).unwrap(),
        vec![replaced("S1", "Hello World")]
    );
    assert!(!asm.answer(&s("S1")).unwrap().is_partial());
    assert_eq!(
        asm.apply(&append("S1", "S4", "!")).unwrap(),
        vec![appended("S1", "!")]
    );
    assert_eq!(text_of(&asm, "S1"), "Hello World!");
}

#[test]
fn an_update_for_an_unknown_serial_is_a_complete_answer() {
    // What a subscriber that joined mid-stream gets for its first append (ably-protocol §6.2).
    let mut asm = Assembler::new();
    assert_eq!(
        asm.apply(&update("S1", "S5", "Hello")).unwrap(),
        vec![Change::Created {
            serial: s("S1"),
            text: "Hello".into(),
            partial: false
        }]
    );
    assert_eq!(
        asm.apply(&append("S1", "S6", " there")).unwrap(),
        vec![appended("S1", " there")]
    );
}

#[test]
fn duplicates_are_ignored_by_version_serial() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "a")).unwrap();
    asm.apply(&append("S1", "S2", "b")).unwrap();
    assert_eq!(asm.apply(&append("S1", "S2", "b")).unwrap(), vec![]);
    assert_eq!(asm.apply(&create("S1", "a")).unwrap(), vec![]);
    asm.apply(&update("S1", "S3", "abc")).unwrap();
    assert_eq!(asm.apply(&update("S1", "S3", "abc")).unwrap(), vec![]);
    assert_eq!(asm.apply(&append("S1", "S2", "b")).unwrap(), vec![]);
    assert_eq!(text_of(&asm, "S1"), "abc");
}

#[test]
fn stale_versions_are_ignored() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "first")).unwrap();
    asm.apply(&update("S1", "S4", "newest")).unwrap();
    assert_eq!(asm.apply(&update("S1", "S3", "older")).unwrap(), vec![]);
    assert_eq!(asm.apply(&append("S1", "S2", " tail")).unwrap(), vec![]);
    let answer = asm.answer(&s("S1")).unwrap();
    assert_eq!(answer.text(), "newest");
    assert_eq!(answer.version(), Some(&s("S4")));
}

#[test]
fn update_replaces_the_text_or_extends_it() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "Hello")).unwrap();
    // A full text that extends ours is reported as the delta, so a view patches in place.
    assert_eq!(
        asm.apply(&update("S1", "S2", "Hello World")).unwrap(),
        vec![appended("S1", " World")]
    );
    assert_eq!(
        asm.apply(&update("S1", "S3", "Goodbye")).unwrap(),
        vec![replaced("S1", "Goodbye")]
    );
    assert_eq!(
        asm.apply(&update("S1", "S4", "")).unwrap(),
        vec![replaced("S1", "")]
    );
    assert_eq!(text_of(&asm, "S1"), "");
}

#[test]
fn a_dropped_append_is_repaired_by_an_equal_version_update() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "a")).unwrap();
    // The append at S2 ("b") was lost in transit.
    asm.apply(&append("S1", "S3", "c")).unwrap();
    assert_eq!(text_of(&asm, "S1"), "ac");
    // The resume delivers the aggregate at the version we already hold.
    assert_eq!(
        asm.apply(&update("S1", "S3", "abc")).unwrap(),
        vec![replaced("S1", "abc")]
    );
    assert_eq!(text_of(&asm, "S1"), "abc");
}

#[test]
fn delete_marks_the_answer_deleted() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "secret")).unwrap();
    assert_eq!(
        asm.apply(&delete("S1", "S2")).unwrap(),
        vec![Change::Deleted { serial: s("S1") }]
    );
    let answer = asm.answer(&s("S1")).unwrap();
    assert!(answer.is_deleted());
    assert_eq!(
        answer.text(),
        "secret",
        "a delete without data keeps the data"
    );
    assert_eq!(asm.answers().count(), 1, "deleted answers stay listed");
    assert_eq!(asm.apply(&delete("S1", "S2")).unwrap(), vec![]);

    // A delete that carries data replaces the text too; the view hears it is still deleted.
    let with_data = delivered(MessageAction::DELETE, "S1", Some("S3"), Some("[removed]"));
    assert_eq!(
        asm.apply(&with_data).unwrap(),
        vec![
            replaced("S1", "[removed]"),
            Change::Deleted { serial: s("S1") }
        ]
    );

    // A newer update brings it back.
    assert_eq!(
        asm.apply(&update("S1", "S4", "restored")).unwrap(),
        vec![replaced("S1", "restored")]
    );
    assert!(!asm.answer(&s("S1")).unwrap().is_deleted());

    // A delete for a serial never seen is announced, then marked.
    assert_eq!(
        asm.apply(&delete("S9", "S10")).unwrap(),
        vec![
            Change::Created {
                serial: s("S9"),
                text: String::new(),
                partial: false
            },
            Change::Deleted { serial: s("S9") }
        ]
    );
}

#[test]
fn headers_are_replaced_by_messages_that_carry_them_and_status_defaults_to_streaming() {
    let mut asm = Assembler::new();
    // The guide's own publisher sends no headers at all.
    asm.apply(&create("S1", "")).unwrap();
    assert_eq!(asm.answer(&s("S1")).unwrap().status(), Status::Streaming);
    assert!(asm.answer(&s("S1")).unwrap().headers().is_empty());

    let first = with_headers(
        append("S1", "S2", "a"),
        &[("status", "streaming"), ("model", "m1")],
    );
    assert_eq!(asm.apply(&first).unwrap(), vec![appended("S1", "a")]);
    assert_eq!(asm.answer(&s("S1")).unwrap().header("model"), Some("m1"));

    // No headers: the previous ones stay.
    asm.apply(&append("S1", "S3", "b")).unwrap();
    assert_eq!(asm.answer(&s("S1")).unwrap().header("model"), Some("m1"));

    // An unknown status reads as streaming; the raw value is kept.
    let odd = with_headers(append("S1", "S4", "c"), &[("status", "paused")]);
    assert_eq!(asm.apply(&odd).unwrap(), vec![appended("S1", "c")]);
    let answer = asm.answer(&s("S1")).unwrap();
    assert_eq!(answer.status(), Status::Streaming);
    assert_eq!(answer.header("status"), Some("paused"));
    assert_eq!(
        answer.header("model"),
        None,
        "headers are replaced, not merged"
    );

    let done = with_headers(update("S1", "S5", "abc"), &[("status", "completed")]);
    assert_eq!(
        asm.apply(&done).unwrap(),
        vec![Change::StatusChanged {
            serial: s("S1"),
            status: Status::Completed
        }]
    );

    // A first delivery with a terminal status announces it right after the creation.
    let finished = with_headers(update("S7", "S8", "all"), &[("status", "failed")]);
    assert_eq!(
        asm.apply(&finished).unwrap(),
        vec![
            Change::Created {
                serial: s("S7"),
                text: "all".into(),
                partial: false
            },
            Change::StatusChanged {
                serial: s("S7"),
                status: Status::Failed
            }
        ]
    );
}

#[test]
fn prompts_are_kept_apart_and_cancels_are_not_answers() {
    let mut asm = Assembler::new();
    let mut prompt = named(create("S1", "Tell me a joke"), headers::PROMPT_NAME);
    prompt.client_id = Some("viewer-1".into());
    prompt.timestamp = Some(42);
    assert_eq!(
        asm.apply(&prompt).unwrap(),
        vec![Change::PromptAdded {
            serial: s("S1"),
            text: "Tell me a joke".into()
        }]
    );
    assert_eq!(
        asm.apply(&prompt).unwrap(),
        vec![],
        "a duplicate prompt changes nothing"
    );
    let cancel = named(create("S3", "S2"), headers::CANCEL_NAME);
    assert_eq!(asm.apply(&cancel).unwrap(), vec![]);
    asm.apply(&create("S2", "Why did")).unwrap();

    assert_eq!(asm.answer_count(), 1);
    assert_eq!(asm.prompt_count(), 1);
    let kept = asm.prompt(&s("S1")).unwrap();
    assert_eq!(kept.text(), "Tell me a joke");
    assert_eq!(kept.client_id(), Some("viewer-1"));
    assert_eq!(kept.timestamp(), Some(42));
    assert!(asm.answer(&s("S1")).is_none());
    assert!(asm.answer(&s("S3")).is_none() && asm.prompt(&s("S3")).is_none());
}

#[test]
fn conversation_interleaves_prompts_and_answers_in_serial_order() {
    let mut asm = Assembler::new();
    for msg in [
        create("S4", "second answer"),
        named(create("S1", "first prompt"), headers::PROMPT_NAME),
        named(create("S3", "second prompt"), headers::PROMPT_NAME),
        create("S2", "first answer"),
        create("S5", "third answer"),
    ] {
        asm.apply(&msg).unwrap();
    }
    let turns: Vec<(&str, bool)> = asm
        .conversation()
        .map(|t| (t.text(), matches!(t, Turn::Prompt(_))))
        .collect();
    assert_eq!(
        turns,
        vec![
            ("first prompt", true),
            ("first answer", false),
            ("second prompt", true),
            ("second answer", false),
            ("third answer", false),
        ]
    );
    let serials: Vec<&str> = asm.answers().map(|a| a.serial().as_str()).collect();
    assert_eq!(serials, vec!["S2", "S4", "S5"]);
}

#[test]
fn the_oldest_answer_is_evicted_beyond_the_cap() {
    let mut asm = Assembler::with_config(Config::default().with_max_answers(2).with_max_prompts(1));
    asm.apply(&create("S2", "b")).unwrap();
    asm.apply(&create("S3", "c")).unwrap();
    assert_eq!(
        asm.apply(&create("S4", "d")).unwrap(),
        vec![
            Change::Created {
                serial: s("S4"),
                text: "d".into(),
                partial: false
            },
            Change::Evicted { serial: s("S2") }
        ]
    );
    // Older than everything kept: it would be evicted at once, so it is dropped.
    assert_eq!(asm.apply(&append("S1", "S9", "late")).unwrap(), vec![]);
    assert_eq!(asm.apply(&append("S2", "S9", "late")).unwrap(), vec![]);
    let serials: Vec<&str> = asm.answers().map(|a| a.serial().as_str()).collect();
    assert_eq!(serials, vec!["S3", "S4"]);
    // Known answers still take their deliveries.
    assert_eq!(
        asm.apply(&append("S3", "S9", "!")).unwrap(),
        vec![appended("S3", "!")]
    );

    asm.apply(&named(create("S5", "p1"), headers::PROMPT_NAME))
        .unwrap();
    let changes = asm
        .apply(&named(create("S6", "p2"), headers::PROMPT_NAME))
        .unwrap();
    assert_eq!(changes.last(), Some(&Change::Evicted { serial: s("S5") }));
    assert_eq!(asm.prompt_count(), 1);

    let mut none = Assembler::with_config(Config::default().with_max_answers(0));
    assert_eq!(none.apply(&create("S1", "x")).unwrap(), vec![]);
    assert_eq!(none.answer_count(), 0);
}

#[test]
fn text_is_truncated_on_a_char_boundary_once() {
    let mut asm = Assembler::with_config(Config::default().with_max_text_bytes(6));
    asm.apply(&create("S1", "aé")).unwrap(); // 3 bytes
                                             // "b" fits, "é" (2 bytes) would end at byte 6 and fits, "€" (3 bytes) does not.
    assert_eq!(
        asm.apply(&append("S1", "S2", "bé€x")).unwrap(),
        vec![appended("S1", "bé"), Change::Truncated { serial: s("S1") }]
    );
    assert_eq!(text_of(&asm, "S1"), "aébé");
    assert!(asm.answer(&s("S1")).unwrap().is_truncated());
    // Appends after the cut are dropped, even ones that would fit: the text has a gap.
    assert_eq!(asm.apply(&append("S1", "S3", "y")).unwrap(), vec![]);
    // A full text cut at the same place changes nothing and is not announced again.
    assert_eq!(asm.apply(&update("S1", "S4", "aébé€xyz")).unwrap(), vec![]);
    assert_eq!(asm.answer(&s("S1")).unwrap().version(), Some(&s("S4")));

    // A create whose text is already too long, in 4-byte chars.
    let changes = asm.apply(&create("S5", "😀😀")).unwrap();
    assert_eq!(
        changes,
        vec![
            Change::Created {
                serial: s("S5"),
                text: "😀".into(),
                partial: false
            },
            Change::Truncated { serial: s("S5") }
        ]
    );

    let mut tiny = Assembler::with_config(Config::default().with_max_text_bytes(0));
    assert_eq!(tiny.apply(&create("S1", "€")).unwrap().len(), 2);
    assert_eq!(text_of(&tiny, "S1"), "");
}

#[test]
fn bad_input_is_an_error_and_leaves_the_state_intact() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "keep")).unwrap();
    let before: Vec<Answer> = asm.answers().cloned().collect();

    let mut no_serial = append("S1", "S2", "x");
    no_serial.serial = None;
    assert_eq!(
        asm.apply(&no_serial),
        Err(Error::MissingSerial {
            action: MessageAction::APPEND
        })
    );

    let mut bad_base64 = append("S1", "S2", "!!!");
    bad_base64.encoding = Some("base64".into());
    assert!(matches!(asm.apply(&bad_base64), Err(Error::Data { serial, .. }) if serial == s("S1")));

    let mut object = update("S1", "S2", "");
    object.data = Some(json!({"a": 1}));
    assert!(matches!(asm.apply(&object), Err(Error::Data { .. })));

    let mut encoded_object = create("S7", "{\"a\":1}");
    encoded_object.encoding = Some("json".into());
    assert!(matches!(
        asm.apply(&encoded_object),
        Err(Error::Data { .. })
    ));

    let after: Vec<Answer> = asm.answers().cloned().collect();
    assert_eq!(before, after);

    // Text sent as base64 bytes is fine.
    let mut bytes = append("S1", "S2", "IQ==");
    bytes.encoding = Some("utf-8/base64".into());
    assert_eq!(asm.apply(&bytes).unwrap(), vec![appended("S1", "!")]);
    assert!(Error::MissingSerial {
        action: MessageAction::CREATE
    }
    .to_string()
    .contains("serial"));
}

#[test]
fn meta_summary_and_unknown_actions_are_ignored() {
    let mut asm = Assembler::new();
    for action in [
        MessageAction::META,
        MessageAction::SUMMARY,
        MessageAction(42),
    ] {
        let mut msg = create("S1", "x");
        msg.action = Some(action);
        msg.serial = None;
        assert_eq!(asm.apply(&msg), Ok(vec![]));
    }
    assert_eq!(asm.answer_count(), 0);
}

#[test]
fn apply_all_applies_what_it_can_and_reports_the_rest_by_position() {
    let mut asm = Assembler::new();
    let mut broken = append("S1", "S2", "x");
    broken.serial = None;
    let batch = [create("S1", "a"), broken, append("S1", "S3", "b")];
    let outcome = asm.apply_all(&batch);
    assert_eq!(outcome.changes.len(), 2);
    assert_eq!(
        outcome.errors,
        vec![(
            1,
            Error::MissingSerial {
                action: MessageAction::APPEND
            }
        )]
    );
    assert_eq!(text_of(&asm, "S1"), "ab");
}

#[test]
fn unversioned_messages_are_applied_in_arrival_order() {
    let mut asm = Assembler::new();
    asm.apply(&create("S1", "a")).unwrap();
    let unversioned = delivered(MessageAction::APPEND, "S1", None, Some("b"));
    asm.apply(&unversioned).unwrap();
    // Without a version a duplicate cannot be recognised: it is applied again.
    asm.apply(&unversioned).unwrap();
    assert_eq!(text_of(&asm, "S1"), "abb");
    // The text is now ahead of the recorded version, so a replay of that version is stale.
    assert_eq!(asm.apply(&create("S1", "a")).unwrap(), vec![]);
    assert_eq!(asm.answer(&s("S1")).unwrap().version(), Some(&s("S1")));
    // A newer full version is the whole truth again.
    assert_eq!(
        asm.apply(&update("S1", "S5", "abc")).unwrap(),
        vec![replaced("S1", "abc")]
    );
    assert_eq!(asm.apply(&update("S1", "S5", "abc")).unwrap(), vec![]);
}

#[test]
fn sockudo_per_version_rewind_converges_on_the_final_text() {
    // Sockudo replays the create, then one update per version with the text so far.
    let mut asm = Assembler::new();
    let replay = [
        create("S1", ""),
        update("S1", "S2", "Hel"),
        update("S1", "S3", "Hello"),
        update("S1", "S4", "Hello World"),
    ];
    let outcome = asm.apply_all(&replay);
    assert!(outcome.errors.is_empty());
    assert_eq!(text_of(&asm, "S1"), "Hello World");
    assert_eq!(
        outcome.changes[1..],
        [
            appended("S1", "Hel"),
            appended("S1", "lo"),
            appended("S1", " World")
        ]
    );

    // Should a server stamp every replayed update with the latest version, the last still wins.
    let mut asm = Assembler::new();
    let stamped = [
        update("S1", "S4", "Hel"),
        update("S1", "S4", "Hello"),
        update("S1", "S4", "Hello World"),
    ];
    asm.apply_all(&stamped);
    assert_eq!(text_of(&asm, "S1"), "Hello World");
    // Then live traffic continues from there.
    asm.apply(&append("S1", "S5", "!")).unwrap();
    assert_eq!(text_of(&asm, "S1"), "Hello World!");
}

/// The frames of ably-protocol §12.3 (live subscriber B) and §12.4 (rewind subscriber C).
#[test]
fn captured_frames_give_hello_world_without_duplication() {
    let s1 = "01795755526628-001@emulator0:000";
    let s2 = "01795755526628-002@emulator0:000";
    let live_create: Message = serde_json::from_value(json!({
        "name": "response", "data": "Hello", "action": 0, "serial": s1, "timestamp": 1_795_755_526_628_i64,
        "version": {"serial": s1, "timestamp": 1_795_755_526_628_i64}
    }))
    .unwrap();
    let live_append: Message = serde_json::from_value(json!({
        "serial": s1, "action": 5, "name": "response", "data": " World", "timestamp": 1_795_755_526_628_i64,
        "version": {"serial": s2, "timestamp": 1_795_755_526_700_i64, "description": "tok"}
    }))
    .unwrap();
    let rewind: Vec<Message> = serde_json::from_value(json!([
        {"name": "response", "data": "Hello World", "action": 1, "serial": s1, "timestamp": 1_795_755_526_628_i64,
         "connectionId": "conn1", "version": {"serial": s2, "timestamp": 1_795_755_526_700_i64, "description": "tok"}},
        {"name": "obj", "data": "{\"a\":1}", "encoding": "json", "action": 0, "serial": "01795755526628-003@emulator0:000"},
        {"name": "bin", "data": "AQID", "encoding": "base64", "action": 0, "serial": "01795755526628-004@emulator0:000"}
    ]))
    .unwrap();

    // Subscriber B saw the create and the append live, then gets the aggregate again.
    let mut b = Assembler::new();
    b.apply(&live_create).unwrap();
    assert_eq!(b.apply(&live_append).unwrap(), vec![appended(s1, " World")]);
    assert_eq!(
        b.apply(&rewind[0]).unwrap(),
        vec![],
        "the aggregate is the state we hold"
    );
    assert_eq!(text_of(&b, s1), "Hello World");

    // Subscriber C only has the rewind backlog.
    let mut c = Assembler::new();
    let outcome = c.apply_all(&rewind);
    assert_eq!(
        outcome.changes[0],
        Change::Created {
            serial: s(s1),
            text: "Hello World".into(),
            partial: false
        }
    );
    assert_eq!(text_of(&c, s1), "Hello World");
    assert_eq!(
        c.answer(&s(s1)).unwrap().timestamp(),
        Some(1_795_755_526_628)
    );
    // A JSON object is not answer text; bytes that are valid UTF-8 are.
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.errors[0].0, 1);
    assert_eq!(
        text_of(&c, "01795755526628-004@emulator0:000"),
        "\u{1}\u{2}\u{3}"
    );
    // Live traffic after the backlog: a duplicate of the last append, then a new one.
    assert_eq!(c.apply(&live_append).unwrap(), vec![]);
    assert_eq!(
        c.apply(&append(s1, "01795755526628-005@emulator0:000", "!"))
            .unwrap(),
        vec![appended(s1, "!")]
    );
    assert_eq!(text_of(&c, s1), "Hello World!");
}

#[test]
fn changes_rebuild_the_same_state_in_a_view() {
    let mut asm =
        Assembler::with_config(Config::default().with_max_answers(3).with_max_text_bytes(8));
    let batch = [
        append("S2", "S3", "tail"),
        create("S1", "one"),
        with_headers(update("S2", "S4", "head tail"), &[("status", "completed")]),
        named(create("S5", "prompt"), headers::PROMPT_NAME),
        delete("S1", "S6"),
        create("S7", "seven"),
        create("S8", "eight"),
        update("S1", "S9", "uno"),
        append("S8", "S10", "€€€"),
    ];
    let outcome = asm.apply_all(&batch);
    assert!(outcome.errors.is_empty());
    let mut view = View::default();
    for change in &outcome.changes {
        view.apply(change);
    }
    assert_eq!(view, View::of(&asm));
}

/// An append whose NACK was lost is resent on a new connection (RTN19a, RTN19a2) and stored
/// after the appends that followed it: the server's aggregates then hold the right number of
/// bytes in the wrong order ("a" "c" "b" instead of "a" "b" "c"), with the headers of the
/// last append applied. A late joiner given that aggregate (rewind, history) must not show
/// it: its digest is not the publisher's, so it is treated as missing parts, and later
/// appends wait for a full version (seed 18849 and 18 more of 20,000).
#[test]
fn an_aggregate_of_appends_stored_out_of_order_is_not_shown() {
    let mut asm = Assembler::new();
    // Rewind: the aggregate after "c" was stored before "b" and "d" after both.
    asm.apply(&stamped(update("S1", "S4", "acbd"), "abcd"))
        .unwrap();
    assert_eq!(text_of(&asm, "S1"), "");
    // Live appends after it are held, not placed after a wrong text.
    asm.apply(&stamped(append("S1", "S5", "e"), "abcde"))
        .unwrap();
    assert_eq!(text_of(&asm, "S1"), "");
    // The publisher's own full version repairs.
    asm.apply(&stamped(update("S1", "S6", "abcde"), "abcde"))
        .unwrap();
    assert_eq!(text_of(&asm, "S1"), "abcde");
}

/// A server that rolls appends up around one it refused delivers their fragments as one,
/// with the latest one's headers: the bytes of the refused append are missing from its
/// middle, yet its `length` can line up with the text once an earlier fragment is replayed
/// (seed 1562 of 20,000). The digest of the text after it says the text would be wrong, so
/// it is not applied, and the publisher's next full version repairs.
#[test]
fn a_roll_up_across_a_refused_append_is_not_applied() {
    let mut asm = Assembler::new();
    asm.apply(&stamped(create("S1", ""), "")).unwrap();
    // The publisher appended "ab", "cd" (refused by the server) and "ef"; the roll-up of
    // the first and third arrives first, placed at 6 - 4 = 2, past the text's end.
    asm.apply(&stamped(append("S1", "S4", "abef"), "abcdef"))
        .unwrap();
    assert_eq!(text_of(&asm, "S1"), "");
    // The replay of "ab" brings the text to byte 2, where the roll-up would start.
    let changes = asm.apply(&stamped(append("S1", "S2", "ab"), "ab")).unwrap();
    assert_eq!(text_of(&asm, "S1"), "ab", "{changes:?}");
    assert!(asm.answer(&s("S1")).is_some_and(|a| a.has_gap()));
    asm.apply(&stamped(update("S1", "S5", "abcdef"), "abcdef"))
        .unwrap();
    assert_eq!(text_of(&asm, "S1"), "abcdef");
    assert!(asm.answer(&s("S1")).is_some_and(|a| !a.has_gap()));
}

#[test]
fn an_empty_append_refreshes_the_lease_and_adds_nothing() {
    let mut asm = Assembler::new();
    let lease = |msg: Message, text: &str, until: &str| {
        let mut msg = stamped(msg, text);
        msg.insert_header(crate::lease::LEASE, until.to_owned());
        msg.insert_header(headers::STATUS, "streaming".to_owned());
        msg
    };
    asm.apply(&lease(create("a", ""), "", "1000")).unwrap();
    asm.apply(&lease(append("a", "v1", "Hi"), "Hi", "2000"))
        .unwrap();
    let changes = asm
        .apply(&lease(append("a", "v2", ""), "Hi", "5000"))
        .unwrap();
    assert!(
        !changes.iter().any(|c| matches!(c, Change::Gap { .. })),
        "{changes:?}"
    );
    let answer = asm.answer(&s("a")).unwrap();
    assert_eq!(answer.text(), "Hi");
    assert!(!answer.has_gap());
    assert_eq!(answer.header(crate::lease::LEASE), Some("5000"));
    // A heartbeat held back behind a missing append does not move the text either.
    asm.apply(&lease(append("a", "v4", ""), "Hi there", "9000"))
        .unwrap();
    asm.apply(&lease(append("a", "v3", " there"), "Hi there", "8000"))
        .unwrap();
    let answer = asm.answer(&s("a")).unwrap();
    assert_eq!(answer.text(), "Hi there");
    assert!(!answer.has_gap());
}
