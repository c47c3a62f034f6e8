//! Tests of the channel model itself: serials, errors, fan-out shapes, rewind, fault knobs.

use serde_json::{json, Value};

use super::*;
use crate::protocol::MessageVersion;

fn data(msg: &Message) -> Option<&str> {
    msg.data.as_ref().and_then(Value::as_str)
}

fn actions(msgs: &[Message]) -> Vec<MessageAction> {
    msgs.iter().map(Message::action).collect()
}

#[test]
fn serials_and_version_serials_increase_lexicographically() {
    let mut sim = SimChannel::new();
    let mut minted = Vec::new();
    let first = sim.publish(create("response", "")).unwrap();
    minted.push(first.clone());
    let second = sim.publish(create("response", "")).unwrap();
    minted.push(second.clone());
    for _ in 0..12 {
        minted.push(sim.publish(append(&first, "x")).unwrap());
    }
    minted.push(sim.publish(update(&second, "y")).unwrap());
    minted.push(sim.publish(create("response", "")).unwrap());
    assert!(
        minted.windows(2).all(|pair| pair[0] < pair[1]),
        "{minted:?}"
    );
    assert!(minted
        .iter()
        .all(|serial| serial.as_str().len() == minted[0].as_str().len()));

    let history = sim.history();
    let serials: Vec<&Serial> = history.iter().filter_map(|m| m.serial.as_ref()).collect();
    assert_eq!(serials, vec![&first, &second, minted.last().unwrap()]);
    assert_eq!(data(&history[0]), Some("xxxxxxxxxxxx"));
    assert_eq!(history[0].action(), MessageAction::UPDATE);
    assert_eq!(history[0].version_serial(), Some(&minted[13]));
    assert_eq!(history[2].action(), MessageAction::CREATE);
    assert_eq!(history[2].version_serial(), history[2].serial.as_ref());
    assert!(history[0].timestamp < history[0].version.as_ref().unwrap().timestamp);
}

#[test]
fn operations_on_missing_or_unknown_serials_are_errors_that_change_nothing() {
    let mut sim = SimChannel::new();
    let sub = sim.subscribe(None);
    let serial = sim.publish(create("response", "a")).unwrap();
    sim.drain(sub);

    let unknown = Serial::new("99999999999999-000@simchannel:000");
    assert_eq!(sim.publish(append(&unknown, "x")).unwrap_err().code, 40400);
    assert_eq!(sim.publish(update(&unknown, "x")).unwrap_err().code, 40400);
    assert_eq!(sim.publish(delete(&unknown)).unwrap_err().code, 40400);
    let mut no_serial = append(&serial, "x");
    no_serial.serial = None;
    assert_eq!(sim.publish(no_serial).unwrap_err().code, 40003);
    let mut meta = create("response", "x");
    meta.action = Some(MessageAction::META);
    assert_eq!(sim.publish(meta).unwrap_err().code, 40003);
    let mut object = append(&serial, "");
    object.data = Some(Value::String("{\"a\":1}".into()));
    object.encoding = Some("json".into());
    assert_eq!(sim.publish(object).unwrap_err().code, 40013);
    let mut bytes = append(&serial, "AQID");
    bytes.encoding = Some("base64".into());
    assert_eq!(
        sim.publish(bytes).unwrap_err().code,
        40013,
        "bytes onto text"
    );

    let mut small = SimChannel::new().with_max_message_size(20);
    let kept = small.publish(create("response", "0123456789")).unwrap();
    let too_large = small.publish(append(&kept, "0123456789")).unwrap_err();
    assert_eq!((too_large.code, too_large.status_code), (40009, Some(413)));
    assert_eq!(data(small.message(&kept).unwrap()), Some("0123456789"));

    assert!(sim.pending(sub).is_empty());
    assert_eq!(sim.versions(&serial).len(), 1);
    assert_eq!(data(sim.message(&serial).unwrap()), Some("a"));
    // Nothing was minted by the failures: the next version follows the create directly.
    let next = sim.publish(append(&serial, "b")).unwrap();
    assert_eq!(next.as_str(), "00000000000002-000@simchannel:000");
}

#[test]
fn live_deliveries_have_the_documented_shapes() {
    let mut sim = SimChannel::new();
    let sub = sim.subscribe(None);
    let mut first = with_headers(create("response", "Hello"), &[("status", "streaming")]);
    first.client_id = Some("agent".into());
    let serial = sim.publish(first).unwrap();
    let mut fragment = append(&serial, " World");
    fragment.version = Some(MessageVersion {
        description: Some("tok".into()),
        ..MessageVersion::default()
    });
    let append_version = sim.publish(fragment).unwrap();
    let update_version = sim
        .publish(with_headers(
            update(&serial, "Hello World!"),
            &[("status", "completed")],
        ))
        .unwrap();
    let delete_version = sim.publish(delete(&serial)).unwrap();

    let got = sim.drain(sub);
    assert_eq!(
        actions(&got),
        vec![
            MessageAction::CREATE,
            MessageAction::APPEND,
            MessageAction::UPDATE,
            MessageAction::DELETE
        ]
    );
    assert_eq!(got[0].version_serial(), Some(&serial));

    let live_append = &got[1];
    assert_eq!(live_append.serial.as_ref(), Some(&serial));
    assert_eq!(
        data(live_append),
        Some(" World"),
        "an append carries only its fragment"
    );
    assert_eq!(
        live_append.name.as_deref(),
        Some("response"),
        "the name comes from the original"
    );
    assert_eq!(live_append.client_id.as_deref(), Some("agent"));
    assert_eq!(
        live_append.timestamp, got[0].timestamp,
        "the timestamp is the original's"
    );
    assert_eq!(live_append.version_serial(), Some(&append_version));
    assert_eq!(
        live_append.version.as_ref().unwrap().description.as_deref(),
        Some("tok")
    );
    assert_eq!(live_append.extras, None, "extras as sent");

    assert_eq!(data(&got[2]), Some("Hello World!"));
    assert_eq!(
        got[2].name.as_deref(),
        Some("response"),
        "an update without a name keeps it"
    );
    assert_eq!(got[2].version_serial(), Some(&update_version));
    assert_eq!(got[2].header("status"), Some("completed"));
    assert_eq!(
        data(&got[3]),
        Some("Hello World!"),
        "a delete without data keeps the data"
    );
    assert_eq!(got[3].header("status"), Some("completed"), "and the extras");
    assert_eq!(got[3].version_serial(), Some(&delete_version));
    assert_eq!(
        sim.message(&serial).unwrap().action(),
        MessageAction::DELETE
    );
}

#[test]
fn an_append_keeps_the_stored_extras_unless_it_sends_its_own() {
    let mut sim = SimChannel::new();
    let serial = sim
        .publish(with_headers(
            create("response", ""),
            &[("status", "streaming")],
        ))
        .unwrap();
    sim.publish(append(&serial, "a")).unwrap();
    assert_eq!(
        sim.message(&serial).unwrap().header("status"),
        Some("streaming")
    );
    sim.publish(with_headers(
        append(&serial, "b"),
        &[("status", "completed")],
    ))
    .unwrap();
    assert_eq!(
        sim.message(&serial).unwrap().header("status"),
        Some("completed")
    );
    assert_eq!(data(sim.message(&serial).unwrap()), Some("ab"));
}

#[test]
fn binary_appends_concatenate_bytes() {
    let mut sim = SimChannel::new();
    let mut first = create("bin", "");
    first.set_payload(Payload::Binary(vec![1, 2]));
    let serial = sim.publish(first).unwrap();
    let mut more = append(&serial, "");
    more.set_payload(Payload::Binary(vec![3]));
    sim.publish(more).unwrap();
    assert_eq!(
        sim.message(&serial).unwrap().payload(),
        Ok(Payload::Binary(vec![1, 2, 3]))
    );
}

#[test]
fn the_first_append_for_an_unseen_serial_arrives_as_a_full_update() {
    let mut sim = SimChannel::new();
    let early = sim.subscribe(None);
    let serial = sim.publish(create("response", "Hel")).unwrap();
    let late = sim.subscribe(None);
    sim.publish(append(&serial, "lo")).unwrap();
    sim.publish(append(&serial, "!")).unwrap();

    let early_got = sim.drain(early);
    assert_eq!(
        actions(&early_got),
        vec![
            MessageAction::CREATE,
            MessageAction::APPEND,
            MessageAction::APPEND
        ]
    );
    let late_got = sim.drain(late);
    assert_eq!(
        actions(&late_got),
        vec![MessageAction::UPDATE, MessageAction::APPEND]
    );
    assert_eq!(data(&late_got[0]), Some("Hello"));
    assert_eq!(data(&late_got[1]), Some("!"));
    assert_eq!(late_got[0].version_serial(), early_got[1].version_serial());
}

#[test]
fn rewind_replays_the_latest_aggregates() {
    let mut sim = SimChannel::new();
    let s1 = sim.publish(create("response", "Hello")).unwrap();
    let v2 = sim.publish(append(&s1, " World")).unwrap();
    let s3 = sim.publish(create("response", "untouched")).unwrap();

    let all = sim.subscribe(Some(10));
    let got = sim.drain(all);
    assert_eq!(
        actions(&got),
        vec![MessageAction::UPDATE, MessageAction::CREATE]
    );
    assert_eq!(
        (
            data(&got[0]),
            got[0].serial.as_ref(),
            got[0].version_serial()
        ),
        (Some("Hello World"), Some(&s1), Some(&v2))
    );
    assert_eq!(
        (data(&got[1]), got[1].version_serial()),
        (Some("untouched"), Some(&s3))
    );

    let last_one = sim.subscribe(Some(1));
    assert_eq!(sim.pending(last_one).len(), 1);
    assert_eq!(sim.pending(last_one)[0].serial.as_ref(), Some(&s3));
    let none = sim.subscribe(None);
    assert!(sim.pending(none).is_empty());
    let zero = sim.subscribe(Some(0));
    assert!(sim.pending(zero).is_empty());

    // Rewound serials count as delivered: the next append is a fragment.
    sim.publish(append(&s1, "!")).unwrap();
    assert_eq!(
        sim.drain(all).last().map(Message::action),
        Some(MessageAction::APPEND)
    );
    assert_eq!(
        sim.drain(none).last().map(Message::action),
        Some(MessageAction::UPDATE)
    );
}

#[test]
fn rewind_is_capped_at_one_hundred_messages() {
    let mut sim = SimChannel::new();
    for i in 0..120 {
        sim.publish(create("response", &i.to_string())).unwrap();
    }
    let sub = sim.subscribe(Some(500));
    let got = sim.drain(sub);
    assert_eq!(got.len(), SimChannel::MAX_REWIND);
    assert_eq!(data(&got[0]), Some("20"));
}

#[test]
fn per_version_rewind_replays_like_sockudo() {
    let mut sim = SimChannel::new();
    let serial = sim.publish(create("response", "")).unwrap();
    sim.publish(append(&serial, "Hel")).unwrap();
    sim.publish(append(&serial, "lo")).unwrap();
    sim.publish(update(&serial, "Hello!")).unwrap();
    let sub = sim.subscribe_with(Some(5), RewindStyle::PerVersion);
    let got = sim.drain(sub);
    assert_eq!(
        actions(&got),
        vec![
            MessageAction::CREATE,
            MessageAction::UPDATE,
            MessageAction::UPDATE,
            MessageAction::UPDATE
        ]
    );
    let texts: Vec<Option<&str>> = got.iter().map(data).collect();
    assert_eq!(
        texts,
        vec![Some(""), Some("Hel"), Some("Hello"), Some("Hello!")]
    );
    let versions: Vec<&Serial> = got.iter().filter_map(Message::version_serial).collect();
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(sim.versions(&serial).len(), 4);
}

#[test]
fn conflation_merges_appends_and_respects_creates_and_duplicates() {
    let mut sim = SimChannel::new();
    let sub = sim.subscribe(None);
    let a = sim.publish(create("response", "")).unwrap();
    let b = sim.publish(create("response", "")).unwrap();
    sim.publish(append(&a, "1")).unwrap();
    sim.publish(append(&b, "x")).unwrap();
    sim.publish(with_headers(append(&a, "2"), &[("status", "streaming")]))
        .unwrap();
    let last_a = sim.publish(append(&a, "3")).unwrap();
    assert_eq!(sim.conflate(sub), 2);
    let got = sim.pending(sub).to_vec();
    assert_eq!(
        actions(&got),
        vec![
            MessageAction::CREATE,
            MessageAction::CREATE,
            MessageAction::APPEND,
            MessageAction::APPEND
        ]
    );
    assert_eq!(
        (data(&got[2]), got[2].serial.as_ref()),
        (Some("123"), Some(&a))
    );
    assert_eq!(got[2].version_serial(), Some(&last_a));
    assert_eq!(
        got[2].header("status"),
        Some("streaming"),
        "the latest extras sent are kept"
    );
    assert_eq!(data(&got[3]), Some("x"));

    // An update supersedes the appends before it; appends after it are folded in.
    sim.publish(append(&a, "4")).unwrap();
    sim.publish(update(&a, "full")).unwrap();
    let folded = sim.publish(append(&a, "!")).unwrap();
    assert_eq!(sim.conflate_window(sub, 4..usize::MAX), 2);
    let tail = &sim.pending(sub)[4..];
    assert_eq!(tail.len(), 1);
    assert_eq!(
        (tail[0].action(), data(&tail[0])),
        (MessageAction::UPDATE, Some("full!"))
    );
    assert_eq!(tail[0].version_serial(), Some(&folded));

    // A duplicate is never merged, so no fragment is counted twice.
    sim.drain(sub);
    sim.publish(append(&a, "5")).unwrap();
    assert!(sim.duplicate(sub, 0, 1));
    sim.publish(append(&a, "6")).unwrap();
    assert_eq!(sim.conflate(sub), 1);
    let got = sim.pending(sub);
    assert_eq!(data(&got[0]), Some("56"));
    assert_eq!(
        data(&got[1]),
        Some("5"),
        "the duplicate stays behind the merge, stale"
    );
}

#[test]
fn duplicate_drop_resync_and_inject_edit_the_queue() {
    let mut sim = SimChannel::new();
    let sub = sim.subscribe(None);
    let serial = sim.publish(create("response", "a")).unwrap();
    sim.publish(append(&serial, "b")).unwrap();
    sim.publish(append(&serial, "c")).unwrap();

    assert!(sim.duplicate(sub, 0, 99));
    assert_eq!(sim.pending(sub).len(), 4);
    assert_eq!(
        sim.pending(sub)[3].action(),
        MessageAction::CREATE,
        "clamped to the end"
    );
    assert!(!sim.duplicate(sub, 9, 10));

    let lost = sim.drop_delivery(sub, 1).unwrap();
    assert_eq!(data(&lost), Some("b"));
    assert!(sim.drop_delivery(sub, 9).is_none());
    assert!(sim.resync(sub, &serial));
    let resync = sim.pending(sub).last().unwrap();
    assert_eq!(
        (resync.action(), data(resync)),
        (MessageAction::UPDATE, Some("abc"))
    );
    assert!(!sim.resync(sub, &Serial::new("nope")));

    assert!(sim.inject(sub, lost));
    assert_eq!(sim.drain(sub).len(), 5);
    assert!(sim.drain(sub).is_empty());

    let missing = SubscriberId(42);
    assert!(sim.drain(missing).is_empty());
    assert!(!sim.inject(missing, Message::default()));
    assert_eq!(sim.conflate(missing), 0);
}

#[test]
fn a_disconnected_subscriber_gets_aggregates_on_reconnect() {
    let mut sim = SimChannel::new();
    let sub = sim.subscribe(None);
    let a = sim.publish(create("response", "a")).unwrap();
    sim.drain(sub);
    sim.disconnect(sub);
    sim.publish(append(&a, "b")).unwrap();
    let b = sim.publish(create("response", "new")).unwrap();
    sim.publish(append(&a, "c")).unwrap();
    assert!(sim.pending(sub).is_empty());
    sim.reconnect(sub);
    let got = sim.drain(sub);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].serial.as_ref(), data(&got[0])),
        (Some(&a), Some("abc"))
    );
    assert_eq!(
        (got[1].serial.as_ref(), got[1].action()),
        (Some(&b), MessageAction::CREATE)
    );
    sim.publish(append(&b, "er")).unwrap();
    assert_eq!(sim.drain(sub)[0].action(), MessageAction::APPEND);
    assert_eq!(sim.subscriber_count(), 1);
}

#[test]
fn deliveries_serialise_like_the_captured_frames() {
    // The shape of ably-protocol §12.3, with the channel's own serials.
    let mut sim = SimChannel::new();
    let sub = sim.subscribe(None);
    let serial = sim.publish(create("response", "Hello")).unwrap();
    sim.publish(append(&serial, " World")).unwrap();
    let got = sim.drain(sub);
    let wire = serde_json::to_value(&got[1]).unwrap();
    assert_eq!(wire["action"], json!(5));
    assert_eq!(wire["serial"], json!(serial.as_str()));
    assert_eq!(wire["name"], json!("response"));
    assert_eq!(wire["data"], json!(" World"));
    assert!(wire["version"]["serial"].is_string());
}
