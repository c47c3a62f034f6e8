//! Deterministic transcripts of the connection state machine with fake time.

use super::*;
use crate::ids::{MsgSerial, Serial};
use crate::protocol::PublishResult;

const T0: Instant = Instant::from_millis(1_000);

pub(super) fn at(ms: u64) -> Instant {
    Instant::from_millis(T0.as_millis() + ms)
}

pub(super) fn config() -> Config {
    let key = ApiKey::parse("appId.keyId:secret").unwrap();
    let mut config = Config::new(
        Endpoint::parse("http://127.0.0.1:6001").unwrap(),
        Auth::Key(key),
        "pub1",
    );
    config.echo = false;
    config
}

pub(super) fn drain(conn: &mut Connection) -> Vec<Output> {
    std::iter::from_fn(|| conn.poll_output()).collect()
}

/// Short names of outputs, for transcript comparison.
pub(super) fn names(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Transmit(Transmit::Open { url }) => {
                format!(
                    "Open{}",
                    if url.contains("resume=") {
                        "(resume)"
                    } else {
                        ""
                    }
                )
            }
            Output::Transmit(Transmit::Frame(f)) => format!("Send({:?})", f.action),
            Output::Transmit(Transmit::Close) => "Close".into(),
            Output::Event(Event::StateChanged { current, .. }) => format!("State({current})"),
            Output::Event(Event::ResumeFailed { .. }) => "ResumeFailed".into(),
            Output::Event(Event::ChannelStateChanged {
                current, resumed, ..
            }) => {
                format!(
                    "Channel({current}{})",
                    if *resumed { ",resumed" } else { "" }
                )
            }
            Output::Event(Event::Message { .. }) => "Message".into(),
            Output::Event(Event::Published { outcome, .. }) => {
                format!("Published({})", if outcome.is_ok() { "ok" } else { "err" })
            }
            Output::Event(Event::TokenRequired { .. }) => "TokenRequired".into(),
        })
        .collect()
}

pub(super) fn frames(outputs: &[Output]) -> Vec<ProtocolMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit::Frame(f)) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn text(conn: &mut Connection, now: Instant, frame: &str) -> Vec<Output> {
    conn.handle_text(now, frame).unwrap();
    drain(conn)
}

const CONNECTED_1: &str = r#"{"action":4,"connectionId":"conn1","connectionKey":"conn1!key","connectionDetails":{"connectionKey":"conn1!key","maxMessageSize":65536,"connectionStateTtl":120000,"maxIdleInterval":15000}}"#;
const CONNECTED_1_AGAIN: &str = r#"{"action":4,"connectionId":"conn1","connectionDetails":{"connectionKey":"conn1!key2","maxIdleInterval":15000}}"#;
const CONNECTED_3_FAILED_RESUME: &str = r#"{"action":4,"connectionId":"conn3","connectionDetails":{"connectionKey":"conn3!key","maxIdleInterval":15000},"error":{"code":80008,"statusCode":400,"message":"Unable to recover connection (connection expired)"}}"#;

pub(super) fn channel() -> ChannelName {
    ChannelName::from("ai:test")
}

/// Connected and attached with `rewind`, outputs drained.
pub(super) fn attached() -> Connection {
    let mut conn = Connection::new(config());
    conn.connect(T0);
    text(&mut conn, at(5), CONNECTED_1);
    conn.attach(at(6), channel(), AttachOptions::rewind(10))
        .unwrap();
    drain(&mut conn);
    text(
        &mut conn,
        at(7),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs0","flags":983040}"#,
    );
    conn
}

pub(super) fn publish_text(conn: &mut Connection, now: Instant, data: &str) -> PublishId {
    let message = Message {
        name: Some("response".into()),
        data: Some(data.into()),
        ..Message::default()
    };
    conn.publish(now, &channel(), vec![message]).unwrap()
}

#[test]
fn connect_attach_publish_ack_transcript() {
    let mut conn = Connection::new(config());
    assert_eq!(conn.state(), ConnectionState::Initialized);
    conn.connect(T0);
    let out = drain(&mut conn);
    assert_eq!(names(&out), ["State(connecting)", "Open"]);
    let Output::Transmit(Transmit::Open { url }) = &out[1] else {
        panic!()
    };
    assert!(
        url.starts_with("ws://127.0.0.1:6001/?key=appId.keyId%3Asecret&echo=false&format=json"),
        "{url}"
    );

    let out = text(&mut conn, at(5), CONNECTED_1);
    assert_eq!(names(&out), ["State(connected)"]);
    assert_eq!(conn.connection_key().unwrap().as_str(), "conn1!key");

    conn.attach(at(6), channel(), AttachOptions::rewind(10))
        .unwrap();
    let out = drain(&mut conn);
    assert_eq!(names(&out), ["Send(ATTACH)", "Channel(attaching)"]);
    assert_eq!(frames(&out)[0].params.as_ref().unwrap()["rewind"], "10");

    let out = text(
        &mut conn,
        at(7),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs0","flags":983042}"#,
    );
    assert_eq!(names(&out), ["Channel(attached)"]);
    let Output::Event(Event::ChannelStateChanged { has_backlog, .. }) = &out[0] else {
        panic!()
    };
    assert!(has_backlog);
    assert_eq!(conn.attach_serial(&channel()).unwrap().as_str(), "chs0");

    let id = publish_text(&mut conn, at(8), "");
    let out = drain(&mut conn);
    let sent = frames(&out);
    assert_eq!(sent[0].action, Action::MESSAGE);
    assert_eq!(sent[0].msg_serial, Some(crate::ids::MsgSerial(0)));
    assert_eq!(
        sent[0].messages.as_ref().unwrap()[0]
            .id
            .as_ref()
            .unwrap()
            .as_str(),
        "pub1-0:0"
    );

    let out = text(
        &mut conn,
        at(9),
        r#"{"action":1,"msgSerial":0,"count":1,"res":[{"serials":["S1"]}]}"#,
    );
    assert_eq!(
        out,
        [Output::Event(Event::Published {
            id,
            outcome: Ok(vec![Some(Serial::from("S1"))])
        })]
    );
    assert!(!conn.has_pending_publishes());
}

#[test]
fn delivered_messages_get_ids_and_connection_from_the_frame() {
    let mut conn = attached();
    let out = text(
        &mut conn,
        at(10),
        r#"{"action":15,"id":"conn2:4","connectionId":"conn2","channel":"ai:test","channelSerial":"chs1","timestamp":77,"messages":[{"name":"response","data":"Hi","serial":"S1"},{"serial":"S1","action":5,"data":"!","version":{"serial":"S2"}}]}"#,
    );
    let messages: Vec<&Message> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Message { message, .. }) => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].id.as_ref().unwrap().as_str(), "conn2:4:0");
    assert_eq!(messages[1].id.as_ref().unwrap().as_str(), "conn2:4:1");
    assert_eq!(
        messages[0].connection_id.as_ref().unwrap().as_str(),
        "conn2"
    );
    assert_eq!(messages[0].timestamp, Some(77));
    assert_eq!(messages[0].version_serial().unwrap().as_str(), "S1");
    assert_eq!(messages[1].version_serial().unwrap().as_str(), "S2");

    // A message for a channel that is not attached is not delivered.
    let out = text(
        &mut conn,
        at(11),
        r#"{"action":15,"channel":"other","messages":[{"data":"x"}]}"#,
    );
    assert!(out.is_empty());
}

#[test]
fn nack_rejects_the_publish_with_its_error() {
    let mut conn = attached();
    let id = publish_text(&mut conn, at(8), "y");
    drain(&mut conn);
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":2,"msgSerial":0,"count":1,"error":{"code":40160,"statusCode":401,"message":"not permitted"}}"#,
    );
    let Output::Event(Event::Published {
        id: got,
        outcome: Err(err),
    }) = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*got, id);
    assert_eq!(err.code, 40160);
}

#[test]
fn idle_timeout_disconnects_and_resumes_at_once() {
    let mut conn = attached();
    // maxIdleInterval 15 s + request timeout 10 s after the last frame (at 7 ms).
    assert_eq!(conn.poll_timeout(), Some(at(7 + 25_000)));
    conn.handle_timeout(at(7 + 24_999));
    assert!(drain(&mut conn).is_empty());
    // Any frame, even a heartbeat, pushes the deadline out.
    text(&mut conn, at(10_000), r#"{"action":0}"#);
    assert_eq!(conn.poll_timeout(), Some(at(35_000)));
    conn.handle_timeout(at(35_000));
    let out = drain(&mut conn);
    assert_eq!(
        names(&out),
        [
            "Send(DISCONNECT)",
            "Close",
            "State(disconnected)",
            "State(connecting)",
            "Open(resume)"
        ]
    );
    let Output::Event(Event::StateChanged {
        reason: Some(reason),
        ..
    }) = &out[2]
    else {
        panic!()
    };
    assert_eq!(reason.code, 80003);
}

#[test]
fn successful_resume_resends_unacked_frames_with_the_same_msg_serial_before_reattaching() {
    let mut conn = attached();
    text(
        &mut conn,
        at(8),
        r#"{"action":15,"channel":"ai:test","channelSerial":"chs1","messages":[{"data":"a","serial":"S0"}]}"#,
    );
    publish_text(&mut conn, at(9), "a");
    publish_text(&mut conn, at(9), "b");
    let first = frames(&drain(&mut conn));
    text(
        &mut conn,
        at(10),
        r#"{"action":1,"msgSerial":0,"count":1,"res":[{"serials":["S1"]}]}"#,
    );

    conn.handle_transport_closed(at(11), None);
    let out = drain(&mut conn);
    assert_eq!(
        names(&out),
        ["State(disconnected)", "State(connecting)", "Open(resume)"]
    );
    let Output::Transmit(Transmit::Open { url }) = &out[2] else {
        panic!()
    };
    assert!(url.contains("resume=conn1!key"), "{url}");

    let out = text(&mut conn, at(20), CONNECTED_1_AGAIN);
    assert_eq!(
        names(&out),
        [
            "State(connected)",
            "Send(MESSAGE)",
            "Send(ATTACH)",
            "Channel(attaching)"
        ]
    );
    let sent = frames(&out);
    assert_eq!(
        sent[0], first[1],
        "the unacked frame is resent unchanged, msgSerial 1 and same id"
    );
    assert_eq!(sent[1].channel_serial.as_ref().unwrap().as_str(), "chs1");
    assert!(
        sent[1].params.is_none(),
        "rewind is not repeated on a re-attach"
    );
    assert_eq!(conn.connection_key().unwrap().as_str(), "conn1!key2");

    let out = text(
        &mut conn,
        at(21),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs2","flags":983044}"#,
    );
    assert_eq!(names(&out), ["Channel(attached,resumed)"]);
    let out = text(
        &mut conn,
        at(22),
        r#"{"action":1,"msgSerial":1,"count":1,"res":[{"serials":["S2"]}]}"#,
    );
    assert_eq!(names(&out), ["Published(ok)"]);
    assert_eq!(
        conn.attach_serial(&channel()).unwrap().as_str(),
        "chs0",
        "a resumed attach keeps the attach serial"
    );
}

#[test]
fn failed_resume_is_reported_and_renumbers_pending_frames() {
    let mut conn = attached();
    publish_text(&mut conn, at(8), "a");
    publish_text(&mut conn, at(8), "b");
    let first = frames(&drain(&mut conn));
    text(
        &mut conn,
        at(9),
        r#"{"action":1,"msgSerial":0,"count":1,"res":[{"serials":["S1"]}]}"#,
    );
    conn.handle_transport_closed(at(10), Some("reset by peer".into()));
    drain(&mut conn);

    let out = text(&mut conn, at(20), CONNECTED_3_FAILED_RESUME);
    assert_eq!(
        names(&out),
        [
            "ResumeFailed",
            "State(connected)",
            "Send(MESSAGE)",
            "Send(ATTACH)",
            "Channel(attaching)"
        ]
    );
    let Output::Event(Event::ResumeFailed {
        reason: Some(reason),
    }) = &out[0]
    else {
        panic!()
    };
    assert_eq!(reason.code, 80008);
    let resent = &frames(&out)[0];
    assert_eq!(
        resent.msg_serial,
        Some(crate::ids::MsgSerial(0)),
        "msgSerial restarts at 0"
    );
    assert_eq!(
        resent.messages, first[1].messages,
        "same message ids, so the server can drop a copy it applied"
    );
    assert_eq!(conn.connection_id().unwrap().as_str(), "conn3");

    // Not resumed: the ATTACHED without RESUMED makes a new attach serial.
    let out = text(
        &mut conn,
        at(21),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs9","flags":983040}"#,
    );
    assert_eq!(names(&out), ["Channel(attached)"]);
    assert_eq!(conn.attach_serial(&channel()).unwrap().as_str(), "chs9");
}

#[test]
fn reconnects_back_off_then_suspend_after_the_state_ttl() {
    let mut conn = attached();
    publish_text(&mut conn, at(8), "a");
    drain(&mut conn);
    conn.handle_transport_closed(at(100), None);
    assert_eq!(
        names(&drain(&mut conn)),
        ["State(disconnected)", "State(connecting)", "Open(resume)"]
    );
    let mut now = at(100);
    let mut delays = Vec::new();
    loop {
        conn.handle_transport_closed(now, Some("refused".into()));
        let out = drain(&mut conn);
        if conn.state() == ConnectionState::Suspended {
            assert!(
                names(&out).contains(&"Published(err)".to_string()),
                "{out:?}"
            );
            assert!(
                names(&out).contains(&"Channel(suspended)".to_string()),
                "{out:?}"
            );
            break;
        }
        assert_eq!(conn.state(), ConnectionState::Disconnected);
        let next = conn.poll_timeout().unwrap();
        delays.push(next - now);
        conn.handle_timeout(next);
        assert_eq!(
            names(&drain(&mut conn)),
            ["State(connecting)", "Open(resume)"]
        );
        now = next;
    }
    // Backoff grows from about the base delay to about twice it, with at most 20 % jitter.
    assert!(
        delays[0] >= Duration::from_secs(12) && delays[0] <= Duration::from_secs(15),
        "{delays:?}"
    );
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(30)),
        "{delays:?}"
    );
    assert!(now - at(100) >= Duration::from_secs(120) - Duration::from_secs(30));
    assert_eq!(
        conn.publish(now, &channel(), vec![Message::default()]),
        Err(CommandError::ConnectionState(ConnectionState::Suspended))
    );
    // Suspended keeps retrying every 30 s, and a success re-attaches the channel.
    let retry = conn.poll_timeout().unwrap();
    assert_eq!(retry - now, Duration::from_secs(30));
    conn.handle_timeout(retry);
    drain(&mut conn);
    let out = text(&mut conn, retry, CONNECTED_3_FAILED_RESUME);
    assert!(names(&out).contains(&"Send(ATTACH)".to_string()), "{out:?}");
}

#[test]
fn key_auth_token_error_and_fatal_error_fail_the_connection() {
    let mut conn = attached();
    publish_text(&mut conn, at(8), "a");
    drain(&mut conn);
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":9,"error":{"code":40101,"statusCode":401,"message":"Invalid key"}}"#,
    );
    assert_eq!(
        names(&out),
        [
            "Close",
            "Published(err)",
            "Channel(failed)",
            "State(failed)"
        ]
    );
    assert_eq!(conn.error_reason().unwrap().code, 40101);
    assert_eq!(conn.poll_timeout(), None);
    // Frames after the failure are ignored; connect() starts afresh.
    conn.handle_text(at(10), CONNECTED_1).unwrap();
    assert!(drain(&mut conn).is_empty());
    conn.connect(at(11));
    assert_eq!(names(&drain(&mut conn)), ["State(connecting)", "Open"]);
}

#[test]
fn channel_error_fails_only_that_channel() {
    let mut conn = attached();
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":9,"channel":"ai:test","error":{"code":40160,"statusCode":401,"message":"denied"}}"#,
    );
    assert_eq!(names(&out), ["Channel(failed)"]);
    assert_eq!(conn.state(), ConnectionState::Connected);
    assert!(matches!(
        conn.publish(at(10), &channel(), vec![Message::default()]),
        Err(CommandError::ChannelState { .. })
    ));
}

#[test]
fn attach_timeout_suspends_then_retries() {
    let mut conn = Connection::new(config());
    conn.connect(T0);
    text(&mut conn, at(1), CONNECTED_1);
    conn.attach(at(2), channel(), AttachOptions::default())
        .unwrap();
    drain(&mut conn);
    // Keep the connection alive with heartbeats; no ATTACHED arrives.
    text(&mut conn, at(9_000), r#"{"action":0}"#);
    conn.handle_timeout(at(10_002));
    let out = drain(&mut conn);
    assert_eq!(names(&out), ["Channel(suspended)"]);
    let Output::Event(Event::ChannelStateChanged {
        reason: Some(reason),
        ..
    }) = &out[0]
    else {
        panic!()
    };
    assert_eq!(reason.code, 90007);
    text(&mut conn, at(20_000), r#"{"action":0}"#);
    conn.handle_timeout(at(25_002));
    assert_eq!(
        names(&drain(&mut conn)),
        ["Send(ATTACH)", "Channel(attaching)"]
    );
}

#[test]
fn server_detach_reattaches_and_lost_continuity_is_reported() {
    let mut conn = attached();
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":13,"channel":"ai:test","error":{"code":90198,"message":"x"}}"#,
    );
    assert_eq!(names(&out), ["Send(ATTACH)", "Channel(attaching)"]);
    assert_eq!(
        frames(&out)[0].channel_serial.as_ref().unwrap().as_str(),
        "chs0"
    );
    text(
        &mut conn,
        at(10),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs5","flags":983044}"#,
    );
    // An unsolicited ATTACHED without RESUMED while attached: continuity lost.
    let out = text(
        &mut conn,
        at(11),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs6","flags":983040}"#,
    );
    assert_eq!(names(&out), ["Channel(attached)"]);
    // With RESUMED it is silent.
    assert!(text(
        &mut conn,
        at(12),
        r#"{"action":11,"channel":"ai:test","flags":983044}"#
    )
    .is_empty());
}

#[test]
fn detach_clears_continuity_and_the_next_attach_rewinds_again() {
    let mut conn = attached();
    conn.detach(at(8), &channel());
    assert_eq!(
        names(&drain(&mut conn)),
        ["Send(DETACH)", "Channel(detaching)"]
    );
    assert_eq!(
        names(&text(
            &mut conn,
            at(9),
            r#"{"action":13,"channel":"ai:test"}"#
        )),
        ["Channel(detached)"]
    );
    conn.attach(at(10), channel(), AttachOptions::rewind(5))
        .unwrap();
    let sent = frames(&drain(&mut conn));
    assert!(sent[0].channel_serial.is_none());
    assert_eq!(sent[0].params.as_ref().unwrap()["rewind"], "5");
}

#[test]
fn close_sends_close_and_fails_what_is_pending() {
    let mut conn = attached();
    publish_text(&mut conn, at(8), "a");
    drain(&mut conn);
    conn.close(at(9));
    assert_eq!(names(&drain(&mut conn)), ["Send(CLOSE)", "State(closing)"]);
    let out = text(&mut conn, at(10), r#"{"action":8}"#);
    assert_eq!(
        names(&out),
        [
            "Close",
            "Published(err)",
            "Channel(detached)",
            "State(closed)"
        ]
    );
    assert!(conn.connection_key().is_none());
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn publishes_queue_while_connecting_and_respect_max_message_size() {
    let mut conn = Connection::new(config());
    publish_text(&mut conn, T0, "early");
    conn.connect(T0);
    drain(&mut conn);
    let out = text(
        &mut conn,
        at(1),
        r#"{"action":4,"connectionId":"c","connectionDetails":{"connectionKey":"c!k","maxMessageSize":100}}"#,
    );
    assert_eq!(names(&out), ["State(connected)", "Send(MESSAGE)"]);
    assert_eq!(conn.max_message_size(), 100);
    let big = Message {
        data: Some("x".repeat(101).into()),
        ..Message::default()
    };
    let err = conn.publish(at(2), &channel(), vec![big]).unwrap_err();
    assert_eq!(
        err,
        CommandError::TooLarge {
            size: 101,
            max: 100
        }
    );
    assert_eq!(err.to_error_info().code, 40009);
    assert_eq!(
        conn.publish(at(2), &channel(), vec![]),
        Err(CommandError::Empty)
    );
}

#[test]
fn malformed_frames_are_errors_and_change_nothing() {
    let mut conn = attached();
    for bad in [
        "",
        "not json",
        "[1]",
        r#"{"action":"x"}"#,
        r#"{"action":15,"messages":"#,
    ] {
        assert!(conn.handle_text(at(9), bad).is_err(), "{bad}");
    }
    assert!(drain(&mut conn).is_empty());
    assert_eq!(conn.state(), ConnectionState::Connected);
    assert_eq!(conn.channel_state(&channel()), ChannelState::Attached);
    // ACKs that match nothing, or lack a msgSerial, are ignored.
    assert!(text(&mut conn, at(10), r#"{"action":1,"count":1}"#).is_empty());
    assert!(text(
        &mut conn,
        at(10),
        r#"{"action":1,"msgSerial":40,"count":1,"res":[]}"#
    )
    .is_empty());
}

#[test]
fn connect_timeout_retries_with_backoff() {
    let mut conn = Connection::new(config());
    conn.connect(T0);
    drain(&mut conn);
    assert_eq!(conn.poll_timeout(), Some(T0 + Duration::from_secs(15)));
    conn.handle_timeout(T0 + Duration::from_secs(15));
    let out = drain(&mut conn);
    assert_eq!(names(&out), ["Close", "State(disconnected)"]);
    assert!(conn.poll_timeout().unwrap() > T0 + Duration::from_secs(25));
}

#[test]
fn ack_result_serials_match_messages_by_position() {
    let mut conn = attached();
    let two = vec![Message::default(), Message::default()];
    let id = conn.publish(at(8), &channel(), two).unwrap();
    drain(&mut conn);
    conn.handle_frame(
        at(9),
        ProtocolMessage {
            msg_serial: Some(crate::ids::MsgSerial(0)),
            count: Some(1),
            res: Some(vec![PublishResult {
                serials: vec![Some(Serial::from("A")), None],
            }]),
            ..ProtocolMessage::new(Action::ACK)
        },
    );
    let out = drain(&mut conn);
    assert_eq!(
        out,
        [Output::Event(Event::Published {
            id,
            outcome: Ok(vec![Some(Serial::from("A")), None])
        })]
    );
}

mod robustness {
    use proptest::prelude::*;

    use super::*;

    /// Fragments of real frames, recombined and cut at random to make hostile input.
    const PIECES: &[&str] = &[
        r#"{"action":"#,
        "4",
        "15",
        "1",
        "2",
        "11",
        "13",
        "9",
        "6",
        "99",
        "-1",
        "1e3",
        r#","channel":"ai:test""#,
        r#","msgSerial":0"#,
        r#","count":3"#,
        r#","res":[{"serials":["S1",null]}]"#,
        r#","res":{}"#,
        r#","messages":[{"data":"x","serial":"S1","action":5}]"#,
        r#","messages":[{"action":300}]"#,
        r#","error":{"code":40142}"#,
        r#","connectionDetails":{"maxIdleInterval":0}"#,
        r#","flags":-5"#,
        r#","params":{"rewind":[1]}"#,
        "}",
        "]",
        "\"",
        "\\u00",
        "\u{1F600}",
        "null",
        "{",
        ",",
    ];

    proptest! {

        /// No input makes the machine panic, and a transient state always has a deadline.
        #[test]
        fn arbitrary_frames_never_panic(parts in proptest::collection::vec(0..PIECES.len(), 0..12),
                                        cut in 0usize..200) {
            let mut conn = attached();
            let text: String = parts.iter().map(|&i| PIECES[i]).collect();
            let cut = text.char_indices().map(|(i, _)| i).find(|&i| i >= cut).unwrap_or(text.len());
            for frame in [&text[..], &text[..cut]] {
                let _ = conn.handle_text(at(50), frame);
                drain(&mut conn);
            }
            conn.handle_timeout(at(1_000_000));
            drain(&mut conn);
            // Key auth never waits for a token, so every transient state has a deadline.
            let transient = matches!(
                conn.state(),
                ConnectionState::Connecting | ConnectionState::Disconnected | ConnectionState::Suspended | ConnectionState::Closing
            );
            prop_assert!(!transient || conn.poll_timeout().is_some(), "{:?} without a deadline", conn.state());
        }
    }
}

#[test]
fn appends_updates_and_deletes_target_a_serial_and_get_their_version_serial() {
    let mut conn = attached();
    let target = Serial::from("S1");
    let ops = [
        (
            Message::append(&target, " World"),
            MessageAction::APPEND,
            "V2",
        ),
        (
            Message::update(&target, "Hello World"),
            MessageAction::UPDATE,
            "V3",
        ),
        (Message::delete(&target), MessageAction::DELETE, "V4"),
    ];
    for (n, (message, action, version)) in ops.into_iter().enumerate() {
        let id = conn.publish(at(8), &channel(), vec![message]).unwrap();
        let sent = frames(&drain(&mut conn));
        let m = &sent[0].messages.as_ref().unwrap()[0];
        assert_eq!((m.action(), m.serial.as_ref()), (action, Some(&target)));
        assert_eq!(m.id.as_ref().unwrap().as_str(), format!("pub1-{n}:0"));
        let ack = format!(
            r#"{{"action":1,"msgSerial":{n},"count":1,"res":[{{"serials":["{version}"]}}]}}"#
        );
        let out = text(&mut conn, at(9), &ack);
        assert_eq!(
            out,
            [Output::Event(Event::Published {
                id,
                outcome: Ok(vec![Some(Serial::from(version))])
            })]
        );
    }
}

#[test]
fn a_channel_class_error_for_the_whole_connection_starts_a_fresh_one() {
    let mut conn = attached();
    text(
        &mut conn,
        at(8),
        r#"{"action":15,"channel":"ai:test","channelSerial":"chs5","messages":[{"data":"a","serial":"S0"}]}"#,
    );
    let id = publish_text(&mut conn, at(9), "pending");
    let first = frames(&drain(&mut conn));
    // Sockudo: the send queue overflowed while replaying a backlog.
    let out = text(
        &mut conn,
        at(10),
        r#"{"action":9,"error":{"code":90003,"statusCode":500,"message":"outbound queue overflow; recover the channel from canonical history"}}"#,
    );
    assert_eq!(
        names(&out),
        ["Close", "State(disconnected)", "State(connecting)", "Open"],
        "not failed, and no resume"
    );
    assert_ne!(conn.state(), ConnectionState::Failed);
    let out = text(&mut conn, at(20), CONNECTED_3_FAILED_RESUME.replace(",\"error\":{\"code\":80008,\"statusCode\":400,\"message\":\"Unable to recover connection (connection expired)\"}", "").as_str());
    let sent = frames(&out);
    assert_eq!(
        sent[0].msg_serial,
        Some(MsgSerial(0)),
        "renumbered on the new connection"
    );
    assert_eq!(sent[0].messages, first[0].messages, "same message, same id");
    let attach = &sent[1];
    assert_eq!(attach.action, Action::ATTACH);
    assert_eq!(
        attach.channel_serial, None,
        "no position: the backlog is not replayed"
    );
    let out = text(
        &mut conn,
        at(21),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs9","flags":983040}"#,
    );
    assert_eq!(
        names(&out),
        ["Channel(attached)"],
        "continuity lost, and said so"
    );
    let out = text(
        &mut conn,
        at(22),
        r#"{"action":1,"msgSerial":0,"count":1,"res":[{"serials":["S9"]}]}"#,
    );
    assert!(
        matches!(&out[0], Output::Event(Event::Published { id: got, outcome: Ok(_) }) if *got == id)
    );
    // Other connection-level errors still end the connection.
    let out = text(
        &mut conn,
        at(23),
        r#"{"action":9,"error":{"code":50000,"statusCode":500,"message":"internal"}}"#,
    );
    assert!(names(&out).contains(&"State(failed)".to_owned()));
}

#[test]
fn a_live_only_channel_re_attaches_without_its_position() {
    let mut conn = Connection::new(config());
    conn.connect(T0);
    text(&mut conn, at(5), CONNECTED_1);
    conn.attach(at(6), channel(), AttachOptions::live_only())
        .unwrap();
    drain(&mut conn);
    text(
        &mut conn,
        at(7),
        r#"{"action":11,"channel":"ai:test","channelSerial":"chs0","flags":983040}"#,
    );
    text(
        &mut conn,
        at(8),
        r#"{"action":15,"channel":"ai:test","channelSerial":"chs7","messages":[{"name":"cancel","data":"x","serial":"S0"}]}"#,
    );
    conn.handle_transport_closed(at(9), None);
    drain(&mut conn);
    let out = text(&mut conn, at(20), CONNECTED_1_AGAIN);
    let attach = frames(&out)
        .into_iter()
        .find(|f| f.action == Action::ATTACH)
        .unwrap();
    assert_eq!(attach.channel_serial, None);
}
