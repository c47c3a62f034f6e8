//! Session transcripts on fake time: what each outcome costs, when answers end, pacing.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::connection::errors::{CONNECTION_FAILED, MESSAGE_REJECTED};
use crate::connection::Limits;
use crate::protocol::{ErrorInfo, MessageAction};

fn ms(t: u64) -> Instant {
    Instant::from_millis(t)
}

fn ev(value: serde_json::Value) -> StreamEvent {
    StreamEvent::from_value(value).unwrap()
}

fn created_event() -> StreamEvent {
    ev(json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}))
}

fn delta(text: &str) -> StreamEvent {
    ev(
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "content_index": 0, "delta": text}),
    )
}

fn completed() -> StreamEvent {
    ev(json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}))
}

fn spec(n: u32) -> AnswerSpec {
    AnswerSpec {
        channel: ChannelName::from("ai:test"),
        prompt: None,
        create_id: MessageId::new(format!("test-answer-{n}")),
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        window: Duration::ZERO,
        ..SessionConfig::default()
    }
}

/// A publish the session handed out.
#[derive(Debug)]
struct Sent {
    ticket: Ticket,
    kind: PublishKind,
    message: Message,
}

impl Sent {
    fn text(&self) -> &str {
        self.message
            .data
            .as_ref()
            .and_then(|d| d.as_str())
            .unwrap_or("")
    }
}

/// Everything the session said, split by kind.
#[derive(Debug, Default)]
struct Said {
    sent: Vec<Sent>,
    lookups: Vec<MessageId>,
    created: Vec<Result<Serial, String>>,
    stops: usize,
    ended: Vec<Report>,
    posts: Vec<(Ticket, ChannelName)>,
    posted: Vec<(Ticket, PublishOutcome)>,
    find_posts: Vec<(Ticket, MessageId)>,
}

fn drain(session: &mut Session) -> Said {
    let mut said = Said::default();
    while let Some(output) = session.poll_output() {
        match output {
            Output::Publish {
                ticket,
                kind,
                message,
                ..
            } => said.sent.push(Sent {
                ticket,
                kind,
                message,
            }),
            Output::Lookup { id, .. } => said.lookups.push(id),
            Output::Created { result, .. } => said.created.push(result),
            Output::StopStream { .. } => said.stops += 1,
            Output::Ended { report, .. } => said.ended.push(*report),
            Output::Post {
                ticket, channel, ..
            } => said.posts.push((ticket, channel)),
            Output::Posted { ticket, outcome } => said.posted.push((ticket, outcome)),
            Output::FindPost { ticket, id, .. } => said.find_posts.push((ticket, id)),
        }
    }
    said
}

fn ack(session: &mut Session, now: Instant, ticket: Ticket, serial: &str) {
    session.handle_outcome(now, ticket, Ok(vec![Some(Serial::new(serial))]));
}

fn nack(session: &mut Session, now: Instant, ticket: Ticket, code: u32) {
    session.handle_outcome(now, ticket, Err(ErrorInfo::new(code, 500, "refused")));
}

/// A prompt message with its own id, as the daemon posts it.
fn prompt(id: &str) -> Message {
    Message {
        id: Some(MessageId::new(id)),
        name: Some("prompt".to_owned()),
        ..Message::default()
    }
}

/// Fires the session's next deadline and returns what it said then.
fn next_deadline(session: &mut Session, what: &str) -> (Instant, Said) {
    let due = session.poll_timeout().expect(what);
    session.handle_timeout(due);
    (due, drain(session))
}

/// Starts one answer and ACKs its create as `s1`.
fn started(config: SessionConfig) -> (Session, AnswerId) {
    let mut session = Session::new(config);
    let id = session.start(ms(0), spec(0));
    let said = drain(&mut session);
    assert_eq!(said.sent.len(), 1);
    assert_eq!(said.sent[0].kind, PublishKind::Create);
    assert_eq!(
        said.sent[0].message.id,
        Some(MessageId::new("test-answer-0"))
    );
    ack(&mut session, ms(1), said.sent[0].ticket, "s1");
    let said = drain(&mut session);
    assert_eq!(said.created, vec![Ok(Serial::new("s1"))]);
    session.handle_stream_event(ms(2), id, &created_event());
    (session, id)
}

#[test]
fn an_answer_goes_create_appends_final_update_and_ends_once_drained() {
    let (mut session, id) = started(config());
    session.handle_stream_event(ms(3), id, &delta("Hello"));
    session.handle_stream_event(ms(4), id, &delta(" world"));
    session.handle_stream_event(ms(5), id, &completed());
    let said = drain(&mut session);
    let kinds: Vec<_> = said.sent.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            PublishKind::Append,
            PublishKind::Append,
            PublishKind::Update
        ]
    );
    assert_eq!(said.sent[2].text(), "Hello world");
    assert_eq!(said.stops, 1, "the stream is told to stop once");
    assert!(said.ended.is_empty(), "not over while outcomes are due");
    for (n, sent) in said.sent.iter().enumerate() {
        ack(&mut session, ms(6), sent.ticket, &format!("v{n}"));
    }
    let said = drain(&mut session);
    let report = said.ended.first().expect("ended");
    assert_eq!(report.status, Status::Completed);
    assert_eq!(report.text, "Hello world");
    assert_eq!((report.appends, report.messages, report.repairs), (2, 4, 0));
    assert_eq!(session.active(), 0);
}

#[test]
fn a_refused_append_costs_one_repair_and_none_once_an_update_covers_it() {
    let (mut session, id) = started(config());
    for word in ["a", "b", "c"] {
        session.handle_stream_event(ms(3), id, &delta(word));
    }
    let appends = drain(&mut session).sent;
    assert_eq!(appends.len(), 3);
    nack(&mut session, ms(4), appends[0].ticket, MESSAGE_REJECTED);
    let repair = drain(&mut session).sent;
    assert_eq!(repair.len(), 1);
    assert_eq!(repair[0].kind, PublishKind::Update);
    assert_eq!(repair[0].text(), "abc");
    // The other two were sent before the repair, which carries their text.
    nack(&mut session, ms(5), appends[1].ticket, MESSAGE_REJECTED);
    nack(&mut session, ms(5), appends[2].ticket, MESSAGE_REJECTED);
    assert!(drain(&mut session).sent.is_empty());
    ack(&mut session, ms(6), repair[0].ticket, "v1");
    session.handle_stream_event(ms(7), id, &completed());
    let last = drain(&mut session).sent;
    ack(&mut session, ms(8), last[0].ticket, "v2");
    let report = drain(&mut session).ended.pop().expect("ended");
    assert_eq!(report.repairs, 1);
    assert_eq!(report.status, Status::Completed);
}

#[test]
fn a_refused_create_is_looked_up_by_id_and_found() {
    let mut session = Session::new(config());
    let id = session.start(ms(0), spec(0));
    let create = drain(&mut session).sent.remove(0);
    nack(&mut session, ms(1), create.ticket, 40000);
    let said = drain(&mut session);
    assert_eq!(said.lookups, vec![MessageId::new("test-answer-0")]);
    assert!(
        said.created.is_empty(),
        "undecided until the channel answers"
    );
    session.handle_lookup(ms(2), id, Ok(Some(Serial::new("s1"))));
    assert_eq!(drain(&mut session).created, vec![Ok(Serial::new("s1"))]);
    session.handle_stream_event(ms(3), id, &delta("hi"));
    let append = drain(&mut session).sent.remove(0);
    assert_eq!(append.message.serial, Some(Serial::new("s1")));
    assert_eq!(append.message.action, Some(MessageAction::APPEND));
}

#[test]
fn a_create_refused_and_not_found_is_replaced_by_one_born_failed() {
    let mut session = Session::new(config());
    let id = session.start(ms(0), spec(0));
    session.handle_stream_event(ms(0), id, &delta("partial"));
    let create = drain(&mut session).sent.remove(0);
    nack(&mut session, ms(1), create.ticket, 40000);
    drain(&mut session);
    session.handle_lookup(ms(2), id, Ok(None));
    let said = drain(&mut session);
    assert!(matches!(&said.created[..], [Err(e)] if e.contains("40000")));
    let replacement = said.sent.first().expect("a replacement create");
    assert_eq!(replacement.kind, PublishKind::Create);
    assert_eq!(replacement.text(), "partial");
    assert_eq!(
        replacement.message.header(crate::headers::STATUS),
        Some("failed")
    );
    ack(&mut session, ms(3), replacement.ticket, "s2");
    let report = drain(&mut session).ended.pop().expect("ended");
    assert_eq!(report.status, Status::Failed);
    assert!(report.publish_error.is_some());
}

#[test]
fn a_silent_create_is_looked_up_after_the_create_timeout() {
    let mut session = Session::new(config());
    let _id = session.start(ms(0), spec(0));
    drain(&mut session);
    let due = session.poll_timeout().expect("a deadline");
    assert_eq!(due, ms(0) + SessionConfig::default().create_timeout);
    session.handle_timeout(due);
    assert_eq!(drain(&mut session).lookups.len(), 1);
}

#[test]
fn a_lookup_waits_for_the_connection() {
    let mut session = Session::new(config());
    let _id = session.start(ms(0), spec(0));
    let create = drain(&mut session).sent.remove(0);
    session.set_connected(ms(1), false);
    nack(&mut session, ms(1), create.ticket, CONNECTION_FAILED);
    assert!(drain(&mut session).lookups.is_empty());
    session.set_connected(ms(500), true);
    assert_eq!(drain(&mut session).lookups.len(), 1);
}

#[test]
fn ably_93002_on_the_create_ends_the_answer_at_once_saying_which_rule_to_enable() {
    let mut session = Session::new(config());
    let _id = session.start(ms(0), spec(0));
    let create = drain(&mut session).sent.remove(0);
    nack(&mut session, ms(1), create.ticket, APPENDS_NOT_ENABLED_CODE);
    let said = drain(&mut session);
    assert!(matches!(&said.created[..], [Err(e)] if e.contains("appends")));
    assert!(said.sent.is_empty(), "nothing more is published");
    let report = said.ended.first().expect("ended");
    assert_eq!(report.status, Status::Failed);
    assert_eq!(session.active(), 0);
}

const APPENDS_NOT_ENABLED_CODE: u32 = crate::connection::errors::APPENDS_NOT_ENABLED;

#[test]
fn a_final_update_lost_with_the_connection_is_sent_again_once_connected() {
    let (mut session, id) = started(config());
    session.handle_stream_event(ms(3), id, &delta("x"));
    session.handle_stream_event(ms(3), id, &completed());
    let sent = drain(&mut session).sent;
    ack(&mut session, ms(4), sent[0].ticket, "v1");
    session.set_connected(ms(5), false);
    nack(&mut session, ms(5), sent[1].ticket, CONNECTION_FAILED);
    assert!(
        drain(&mut session).sent.is_empty(),
        "held while disconnected"
    );
    session.set_connected(ms(900), true);
    let resent = drain(&mut session).sent;
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].kind, PublishKind::Update);
    assert_eq!(resent[0].text(), "x");
    ack(&mut session, ms(901), resent[0].ticket, "v2");
    let report = drain(&mut session).ended.pop().expect("ended");
    assert_eq!((report.resends, report.publish_error), (1, None));
}

#[test]
fn a_final_update_overtaken_by_an_earlier_publish_goes_out_again() {
    let (mut session, id) = started(config());
    session.handle_stream_event(ms(3), id, &delta("x"));
    session.handle_stream_event(ms(3), id, &completed());
    let sent = drain(&mut session).sent;
    ack(&mut session, ms(4), sent[1].ticket, "v1");
    // The append was resent on a new connection and applied after the final update.
    ack(&mut session, ms(5), sent[0].ticket, "v2");
    let resent = drain(&mut session).sent;
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].text(), "x");
    ack(&mut session, ms(6), resent[0].ticket, "v3");
    let report = drain(&mut session).ended.pop().expect("ended");
    assert_eq!(report.resends, 1);
}

#[test]
fn an_answer_whose_outcomes_never_come_ends_after_the_drain_timeout() {
    let (mut session, id) = started(config());
    session.handle_stream_event(ms(3), id, &completed());
    drain(&mut session);
    let due = session.poll_timeout().expect("the drain deadline");
    assert_eq!(due, ms(3) + SessionConfig::default().drain_timeout);
    let waiting = session.describe(ms(4)).join("\n");
    assert!(
        waiting.contains("publishes awaiting their outcome") && waiting.contains("drain deadline"),
        "{waiting}"
    );
    session.handle_timeout(due);
    let report = drain(&mut session).ended.pop().expect("ended");
    assert!(report.gave_up);
    assert!(report
        .publish_error
        .is_some_and(|e| e.contains("had no ACK")));
    assert_eq!(
        session.describe(due).len(),
        1,
        "only the session's own line is left"
    );
}

#[test]
fn a_cancel_stops_the_stream_and_ends_the_answer_cancelled() {
    let (mut session, id) = started(config());
    session.handle_stream_event(ms(3), id, &delta("so far"));
    session.cancel(ms(4), id);
    let said = drain(&mut session);
    assert_eq!(said.stops, 1);
    for sent in &said.sent {
        ack(&mut session, ms(5), sent.ticket, "v");
    }
    let report = drain(&mut session).ended.pop().expect("ended");
    assert_eq!(
        (report.status, report.text.as_str()),
        (Status::Cancelled, "so far")
    );
}

#[test]
fn the_budget_paces_every_answer_on_the_connection() {
    let mut session = Session::new(SessionConfig {
        rate: 2,
        ..config()
    });
    session.start(ms(0), spec(0));
    session.start(ms(0), spec(1));
    session.start(ms(0), spec(2));
    let first = drain(&mut session).sent;
    assert_eq!(first.len(), 2, "two messages in the first second's budget");
    let due = session.poll_timeout().expect("the budget's next slot");
    assert_eq!(due, ms(500));
    session.handle_timeout(due);
    assert_eq!(drain(&mut session).sent.len(), 1);
}

#[test]
fn the_window_widens_with_the_number_of_answers() {
    let mut session = Session::new(SessionConfig {
        rate: 10,
        window: Duration::from_millis(40),
        ..config()
    });
    let ids: Vec<_> = (0..20).map(|n| session.start(ms(0), spec(n))).collect();
    let window = session
        .answers
        .get(&ids[19])
        .map(|a| a.relay.config().window)
        .expect("answer");
    // 20 answers at 80% of 10 messages/s: one append each every 2.5 s.
    assert_eq!(window, Duration::from_millis(2500));
}

#[test]
fn prompts_and_cancels_go_through_the_budget_ahead_of_answers() {
    let (mut session, id) = started(SessionConfig {
        rate: 2,
        ..config()
    });
    // The create took one of two; the first append takes the other.
    session.handle_stream_event(ms(3), id, &delta("a"));
    assert_eq!(drain(&mut session).sent.len(), 1);
    let ticket = session.post(ms(4), ChannelName::from("ai:test"), prompt("p-1"));
    session.cancel(ms(4), id);
    let said = drain(&mut session);
    assert!(said.posts.is_empty() && said.sent.is_empty(), "{said:?}");
    // The next slot goes to the prompt, the one after to the answer's final update.
    let due = session.poll_timeout().expect("the budget's next slot");
    session.handle_timeout(due);
    let said = drain(&mut session);
    assert_eq!(said.posts.len(), 1);
    assert!(said.sent.is_empty(), "{said:?}");
    session.handle_outcome(due, ticket, Ok(vec![Some(Serial::new("p1"))]));
    let said = drain(&mut session);
    assert!(matches!(&said.posted[..], [(t, Ok(_))] if *t == ticket));
    let next = session.poll_timeout().expect("the budget's next slot");
    assert!(next > due);
    session.handle_timeout(next);
    let sent = drain(&mut session).sent;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, PublishKind::Update);
}

#[test]
fn a_busy_channel_widens_its_answers_windows_and_paces_them_apart_from_others() {
    let mut session = Session::new(SessionConfig {
        channel_rate: 10,
        window: Duration::from_millis(40),
        ..config()
    });
    let busy: Vec<_> = (0..8).map(|n| session.start(ms(0), spec(n))).collect();
    let quiet = session.start(
        ms(0),
        AnswerSpec {
            channel: ChannelName::from("ai:other"),
            ..spec(9)
        },
    );
    let window = |session: &Session, id: &AnswerId| {
        session
            .answers
            .get(id)
            .map(|a| a.relay.config().window)
            .expect("answer")
    };
    // 8 answers at 80% of 10 messages/s on one channel: one append each per second; the
    // other channel's one answer needs only an eighth of that.
    assert_eq!(window(&session, &busy[7]), Duration::from_secs(1));
    assert_eq!(window(&session, &quiet), Duration::from_millis(125));
    // Nine creates: the busy channel's burst of ten holds eight, the other its own.
    let said = drain(&mut session);
    assert_eq!(said.sent.len(), 9);
}

#[test]
fn cd2e_the_announced_max_inbound_rate_caps_the_connection_budget() {
    let mut session = Session::new(SessionConfig {
        rate: 50,
        ..config()
    });
    session.set_limits(&Limits {
        max_inbound_rate: Some(2),
        ..Limits::default()
    });
    for n in 0..3 {
        session.start(ms(0), spec(n));
    }
    assert_eq!(
        drain(&mut session).sent.len(),
        2,
        "two a second, as announced"
    );
    // A server that announces nothing leaves the configured rate.
    let mut session = Session::new(SessionConfig {
        rate: 3,
        ..config()
    });
    session.set_limits(&Limits::default());
    for n in 0..4 {
        session.start(ms(0), spec(n));
    }
    assert_eq!(drain(&mut session).sent.len(), 3);
}

#[test]
fn cd2d_an_answer_fits_in_one_frame_as_well_as_in_one_message() {
    let mut session = Session::new(config());
    // Sockudo announces a frame no larger than its largest message.
    session.set_limits(&Limits {
        max_message_size: 65_536,
        max_frame_size: 65_536,
        ..Limits::default()
    });
    let id = session.start(ms(0), spec(0));
    let limit = session
        .answers
        .get(&id)
        .and_then(|a| a.relay.config().max_message_size)
        .expect("a limit");
    assert_eq!(limit, 65_536 - FRAME_ENVELOPE);
    session.set_limits(&Limits::default());
    let id = session.start(ms(0), spec(1));
    let limit = session
        .answers
        .get(&id)
        .and_then(|a| a.relay.config().max_message_size);
    assert_eq!(
        limit,
        Some(65_536),
        "a 512 KiB frame holds a 64 KiB message"
    );
}

/// A prompt the server stored although its frame was NACKed (an implicit NACK of a frame it
/// applied: chaos seed 0xc0ffee5eed, 300 s) must not be reported refused, or its asker is
/// told it failed while it sits on the channel with no answer.
#[test]
fn a_post_refused_unclearly_is_looked_for_by_id_before_it_is_called_refused() {
    let mut session = Session::new(config());
    let stored = session.post(ms(0), ChannelName::from("ai:test"), prompt("p-1"));
    let lost = session.post(ms(0), ChannelName::from("ai:test"), prompt("p-2"));
    let refused = session.post(ms(0), ChannelName::from("ai:test"), prompt("p-3"));
    assert_eq!(drain(&mut session).posts.len(), 3);
    nack(&mut session, ms(1), stored, MESSAGE_REJECTED);
    nack(&mut session, ms(1), lost, CONNECTION_FAILED);
    nack(&mut session, ms(1), refused, 40160);
    let said = drain(&mut session);
    assert_eq!(
        said.find_posts,
        vec![
            (stored, MessageId::new("p-1")),
            (lost, MessageId::new("p-2"))
        ]
    );
    // A refusal for want of capability is final.
    assert!(matches!(&said.posted[..], [(t, Err(e))] if *t == refused && e.code == 40160));
    session.handle_post_lookup(stored, Ok(Some(Serial::new("s-p1"))));
    session.handle_post_lookup(lost, Ok(None));
    let said = drain(&mut session);
    assert!(
        matches!(&said.posted[0], (t, Ok(serials)) if *t == stored && serials == &vec![Some(Serial::new("s-p1"))])
    );
    assert!(matches!(&said.posted[1], (t, Err(e)) if *t == lost && e.code == CONNECTION_FAILED));
}

#[test]
fn rtl6c4_a_post_on_a_suspended_channel_waits_for_it_and_does_not_hold_up_others() {
    let (mut session, id) = started(config());
    let suspended = ChannelName::from("ai:other");
    session.set_blocked(ms(3), [&suspended]);
    let ticket = session.post(ms(3), suspended.clone(), prompt("p-1"));
    session.handle_stream_event(ms(4), id, &delta("Hi"));
    let said = drain(&mut session);
    assert!(said.posts.is_empty() && said.posted.is_empty(), "{said:?}");
    assert_eq!(said.sent.len(), 1, "the other channel's answer goes on");
    // RTL13b: the channel is attached again, and the prompt goes, unrefused.
    session.set_blocked(ms(5_000), []);
    let said = drain(&mut session);
    assert_eq!(said.posts, vec![(ticket, suspended)]);
    assert!(said.posted.is_empty());
}

#[test]
fn rtl6c4_an_answer_on_a_suspended_channel_holds_its_publishes_and_gives_up_after_the_wait() {
    let (mut session, id) = started(config());
    let channel = ChannelName::from("ai:test");
    session.set_blocked(ms(3), [&channel]);
    session.handle_stream_event(ms(4), id, &delta("Hello"));
    assert!(drain(&mut session).sent.is_empty(), "held while suspended");
    // Attached again: what was held goes.
    session.set_blocked(ms(10), []);
    let said = drain(&mut session);
    assert_eq!(said.sent.len(), 1);
    assert_eq!(said.sent[0].text(), "Hello");
    ack(&mut session, ms(11), said.sent[0].ticket, "v1");
    // Suspended again, for good: after reconnect_wait the publishes go, to be refused,
    // and the answer ends instead of waiting for ever.
    session.set_blocked(ms(20), [&channel]);
    session.handle_stream_event(ms(21), id, &delta(" world"));
    session.handle_stream_event(ms(22), id, &completed());
    let said = drain(&mut session);
    assert!(said.sent.is_empty(), "{said:?}");
    let due = session.poll_timeout().expect("the end of the wait");
    assert_eq!(due, ms(20) + config().reconnect_wait);
    session.set_blocked(due, [&channel]);
    session.handle_timeout(due);
    let said = drain(&mut session);
    assert!(!said.sent.is_empty(), "{said:?}");
    assert_eq!(said.sent.last().map(Sent::text), Some("Hello world"));
}

const TOO_FAST: u32 = crate::connection::errors::RATE_LIMIT_CONNECTION_PUBLISH;

#[test]
fn rate_limited_appends_halve_the_budget_cost_one_repair_and_the_budget_recovers() {
    let (mut session, id) = started(config());
    for word in ["a", "b", "c"] {
        session.handle_stream_event(ms(3), id, &delta(word));
    }
    let sent = drain(&mut session).sent;
    assert_eq!(sent.len(), 3, "unlimited: every append goes at once");
    // The burst is refused as too fast (42911), its NACKs arriving together.
    for s in &sent {
        nack(&mut session, ms(4), s.ticket, TOO_FAST);
    }
    session.handle_stream_event(ms(4), id, &delta("d"));
    let said = drain(&mut session);
    assert!(
        said.sent.is_empty(),
        "the lowered budget starts empty: {said:?}"
    );
    // Half of the assumed 50 a second: one message every 40 ms, and the one repair first.
    let due = session.poll_timeout().expect("the budget's next slot");
    assert_eq!(due, ms(44));
    session.handle_timeout(due);
    let sent = drain(&mut session).sent;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, PublishKind::Update);
    assert_eq!(
        sent[0].text(),
        "abc",
        "one repair carries all three refused appends"
    );
    ack(&mut session, due, sent[0].ticket, "v1");
    assert_eq!(drain(&mut session).sent.len(), 0);
    // The window has widened for the lowered budget; the budget's next slot is 40 ms on.
    let (next, sent) = loop {
        let next = session
            .poll_timeout()
            .expect("a window or the budget's next slot");
        session.handle_timeout(next);
        let sent = drain(&mut session).sent;
        if !sent.is_empty() {
            break (next, sent);
        }
    };
    assert_eq!(next, ms(84));
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].kind, sent[0].text()), (PublishKind::Append, "d"));
    ack(&mut session, next, sent[0].ticket, "v2");
    // After the backoff the budget is unlimited again.
    let later = ms(4) + super::pace::RATE_BACKOFF;
    session.handle_timeout(later);
    for word in ["e", "f"] {
        session.handle_stream_event(later, id, &delta(word));
    }
    assert_eq!(drain(&mut session).sent.len(), 2);
}

#[test]
fn a_create_refused_as_too_fast_goes_again_with_its_id() {
    let mut session = Session::new(config());
    let id = session.start(ms(0), spec(0));
    let said = drain(&mut session);
    nack(&mut session, ms(1), said.sent[0].ticket, TOO_FAST);
    let said = drain(&mut session);
    assert!(
        said.lookups.is_empty() && said.created.is_empty(),
        "{said:?}"
    );
    let (due, said) = next_deadline(&mut session, "the lowered budget's next slot");
    assert_eq!(said.sent.len(), 1);
    assert_eq!(said.sent[0].kind, PublishKind::Create);
    assert_eq!(
        said.sent[0].message.id,
        Some(MessageId::new("test-answer-0"))
    );
    ack(&mut session, due, said.sent[0].ticket, "s1");
    assert_eq!(drain(&mut session).created, vec![Ok(Serial::new("s1"))]);
    assert_eq!(session.status(id), Some(Status::Streaming));
}

#[test]
fn a_post_refused_as_too_fast_goes_again_and_then_succeeds() {
    let mut session = Session::new(config());
    let ticket = session.post(ms(0), ChannelName::from("ai:test"), prompt("p-1"));
    assert_eq!(drain(&mut session).posts.len(), 1);
    nack(&mut session, ms(1), ticket, TOO_FAST);
    let said = drain(&mut session);
    assert!(
        said.posted.is_empty() && said.find_posts.is_empty(),
        "{said:?}"
    );
    let (due, said) = next_deadline(&mut session, "the lowered budget's next slot");
    assert_eq!(said.posts, vec![(ticket, ChannelName::from("ai:test"))]);
    session.handle_outcome(due, ticket, Ok(vec![Some(Serial::new("p1"))]));
    let said = drain(&mut session);
    assert!(matches!(&said.posted[..], [(t, Ok(_))] if *t == ticket));
}

#[test]
fn a_post_whose_channel_stays_suspended_is_refused_after_the_post_wait_unsent() {
    let mut session = Session::new(config());
    let channel = ChannelName::from("ai:test");
    session.set_blocked(ms(0), [&channel]);
    let ticket = session.post(ms(0), channel.clone(), prompt("p-1"));
    assert!(drain(&mut session).posts.is_empty());
    let due = session.poll_timeout().expect("the post's deadline");
    assert_eq!(due, ms(0) + config().post_wait);
    session.handle_timeout(due);
    let said = drain(&mut session);
    assert!(said.posts.is_empty(), "never sent: {said:?}");
    assert!(
        matches!(&said.posted[..], [(t, Err(e))] if *t == ticket && e.code == errors::CHANNEL_INVALID_STATE),
        "{said:?}"
    );
    // Nothing is left to wake for but the channel's own wait.
    session.set_blocked(due, []);
    assert_eq!(session.poll_timeout(), None);
}

/// 42913 is a channel's publish rate: only that channel's budget is lowered, and an answer
/// on another channel of the same connection streams on at full rate.
#[test]
fn a_channel_rate_refusal_lowers_that_channels_budget_only() {
    let mut session = Session::new(config());
    let on = |channel: &str, n: u32| AnswerSpec {
        channel: ChannelName::from(channel),
        ..spec(n)
    };
    let a = session.start(ms(0), on("ai:a", 0));
    let b = session.start(ms(0), on("ai:b", 1));
    let creates = drain(&mut session).sent;
    assert_eq!(creates.len(), 2);
    ack(&mut session, ms(1), creates[0].ticket, "sa");
    ack(&mut session, ms(1), creates[1].ticket, "sb");
    for word in ["a", "b", "c"] {
        session.handle_stream_event(ms(3), a, &delta(word));
    }
    let sent = drain(&mut session).sent;
    assert_eq!(sent.len(), 3);
    for s in &sent {
        nack(
            &mut session,
            ms(4),
            s.ticket,
            crate::connection::errors::RATE_LIMIT_CHANNEL_PUBLISH,
        );
    }
    session.handle_stream_event(ms(5), a, &delta("d"));
    for word in ["x", "y"] {
        session.handle_stream_event(ms(5), b, &delta(word));
    }
    let texts: Vec<String> = drain(&mut session)
        .sent
        .iter()
        .map(|s| s.text().to_owned())
        .collect();
    assert_eq!(texts, ["x", "y"], "ai:b is not held back by ai:a's limit");
    // ai:a's budget is half the assumed 50 a second and starts empty: its repair goes at
    // its first slot, 40 ms on.
    let (due, said) = next_deadline(&mut session, "ai:a's next slot");
    assert_eq!(due, ms(44));
    assert_eq!(said.sent.len(), 1);
    assert_eq!(
        (said.sent[0].kind, said.sent[0].text()),
        (PublishKind::Update, "abc")
    );
}
