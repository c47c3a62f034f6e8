//! Tests of the simulation's own parts: the PRNG, fault names, the service's Sockudo-order
//! replay, the prefix check with its exemption, and the publisher's resend of a
//! final update overtaken by an earlier publish.

use std::collections::BTreeMap;

use super::check;
use super::model::ModelAnswer;
use super::net::{Down, LinkId, Up};
use super::plan::{Faults, Plan, Rewind};
use super::publisher::Publisher;
use super::rng::SimRng;
use super::service::{self, Service};
use super::trace::Trace;
use super::viewer::Viewer;
use crate::connection::{ApiKey, Auth, Config, Connection, Endpoint, Output, Transmit};
use crate::headers;
use crate::ids::{ChannelName, ChannelSerial, MsgSerial, Serial};
use crate::protocol::{Action, ErrorInfo, Message, MessageAction, ProtocolMessage, PublishResult};
use crate::time::Instant;

#[test]
fn the_rng_is_a_pure_function_of_its_seed() {
    let draw = |seed| {
        let mut rng = SimRng::new(seed);
        (0..64).map(|_| rng.below(1000)).collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    let mut rng = SimRng::new(1);
    assert!((0..1000).all(|_| rng.range(3, 5) >= 3 && rng.range(3, 5) <= 5));
    assert_eq!(rng.below(0), 0);
}

#[test]
fn fault_classes_parse_from_their_names_and_print_back() {
    let faults = Faults::parse("cuts, replay-reorder").unwrap();
    assert!(faults.has(Faults::CUTS) && faults.has(Faults::REPLAY_REORDER));
    assert!(!faults.has(Faults::NACKS));
    assert_eq!(faults.to_string(), "cuts,replay-reorder");
    assert_eq!(
        Faults::parse(&Faults::ALL.to_string()).unwrap(),
        Faults::ALL
    );
    assert_eq!(Faults::parse("none").unwrap(), Faults::NONE);
    assert_eq!(Faults::parse("cuts,teleport").unwrap_err(), "teleport");
}

/// A plan with every fault off except a deferred replay, always taken, 20 ms late.
fn deferring_plan() -> Plan {
    let mut plan = Plan::draw(&mut SimRng::new(0), Faults::NONE, 1);
    plan.replay_defer = 1000;
    plan.replay_defer_ms = (20, 20);
    plan.rewind = Rewind::Aggregate;
    plan
}

/// What the service sent, kept per link until a test reads it.
#[derive(Default)]
struct Sent(BTreeMap<LinkId, Vec<ProtocolMessage>>);

impl Sent {
    fn take(&mut self, service: &mut Service, link: LinkId) -> Vec<ProtocolMessage> {
        while let Some((l, item)) = service.poll_transmit() {
            if let Down::Frame(frame) = item {
                self.0.entry(l).or_default().push(frame);
            }
        }
        self.0.remove(&link).unwrap_or_default()
    }
}

fn publish(
    service: &mut Service,
    sent: &mut Sent,
    now: u64,
    serial: u64,
    msg: Message,
    trace: &mut Trace,
) -> Option<Serial> {
    let frame = ProtocolMessage {
        channel: Some(ChannelName::new("ai:sim")),
        msg_serial: Some(MsgSerial(serial)),
        messages: Some(vec![msg]),
        ..ProtocolMessage::new(Action::MESSAGE)
    };
    service.handle_up(
        Instant::from_millis(now),
        LinkId(0),
        Up::Frame(frame),
        trace,
    );
    sent.take(service, LinkId(0))
        .into_iter()
        .find(|f| f.action == Action::ACK)
        .and_then(|f| f.res)
        .and_then(|res| res.into_iter().next())
        .and_then(|r| r.serials.into_iter().next().flatten())
}

/// A viewer attached to a message, away while "a" and "b" were appended, re-attached from
/// its position with the replay deferred, and "c" published live before the replay is due.
/// Returns the service, what it sent, and the viewer's position before it went away.
fn reattach_overtaken_by_live_append(trace: &mut Trace) -> (Service, Sent, ChannelSerial) {
    let mut service = Service::new(ChannelName::new("ai:sim"), deferring_plan(), SimRng::new(3));
    let (publisher, first, second) = (LinkId(0), LinkId(1), LinkId(2));
    let mut sent = Sent::default();
    let at = Instant::from_millis;
    service.handle_up(
        at(0),
        publisher,
        Up::Open("ws://x/?key=a%3Ab".to_owned()),
        trace,
    );
    service.handle_up(
        at(0),
        first,
        Up::Open("ws://x/?access_token=t".to_owned()),
        trace,
    );
    let key = sent
        .take(&mut service, first)
        .into_iter()
        .find_map(|f| f.connection_details.and_then(|d| d.connection_key))
        .unwrap();
    let attach = ProtocolMessage {
        channel: Some(ChannelName::new("ai:sim")),
        ..ProtocolMessage::new(Action::ATTACH)
    };
    service.handle_up(at(1), first, Up::Frame(attach), trace);
    let serial = publish(
        &mut service,
        &mut sent,
        2,
        0,
        Message::create("response", ""),
        trace,
    )
    .unwrap();
    let position = sent
        .take(&mut service, first)
        .last()
        .and_then(|f| f.channel_serial.clone())
        .unwrap();

    // The viewer's transport drops; two appends land while it is away.
    service.handle_up(at(3), first, Up::Closed, trace);
    publish(
        &mut service,
        &mut sent,
        4,
        1,
        Message::append(&serial, "a"),
        trace,
    )
    .unwrap();
    publish(
        &mut service,
        &mut sent,
        5,
        2,
        Message::append(&serial, "b"),
        trace,
    )
    .unwrap();
    service.handle_up(
        at(6),
        second,
        Up::Open(format!("ws://x/?access_token=t&resume={key}")),
        trace,
    );
    let reattach = ProtocolMessage {
        channel: Some(ChannelName::new("ai:sim")),
        channel_serial: Some(ChannelSerial::new(position.as_str())),
        ..ProtocolMessage::new(Action::ATTACH)
    };
    service.handle_up(at(7), second, Up::Frame(reattach), trace);
    // A live append slips in before the deferred replay.
    publish(
        &mut service,
        &mut sent,
        8,
        3,
        Message::append(&serial, "c"),
        trace,
    )
    .unwrap();
    (service, sent, position)
}

#[test]
fn a_resumed_reattach_can_replay_behind_a_live_append_as_sockudo_does() {
    let mut trace = Trace::default();
    let (mut service, mut sent, _) = reattach_overtaken_by_live_append(&mut trace);
    let second = LinkId(2);
    service.handle_timeout(Instant::from_millis(30), &mut trace);

    let got: Vec<String> = sent
        .take(&mut service, second)
        .into_iter()
        .filter(|f| f.action != Action::CONNECTED)
        .map(|f| match f.action {
            Action::ATTACHED => format!(
                "ATTACHED resumed={}",
                f.has_flag(crate::protocol::Flags::RESUMED)
            ),
            _ => f
                .messages
                .unwrap_or_default()
                .iter()
                .map(|m| format!("{:?} {}", m.action(), m.text().unwrap_or_default()))
                .collect(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "ATTACHED resumed=true",
            "APPEND c",
            "APPEND a",
            "APPEND b",
            "APPEND c"
        ],
        "{}",
        trace.render(None, None, 50)
    );
}

/// RTL15b: the channelSerial of a delivery is where a re-attach continues from. A live
/// append that overtakes a deferred replay carries the attach point, not its own position:
/// with its own, a transport lost before the replay arrived made the next re-attach start
/// after the messages never replayed, and the viewer, told `resumed`, never got them
/// (seeds 18790, 5193, 8766).
#[test]
fn rtl15b_a_live_append_overtaking_a_deferred_replay_keeps_the_resume_point() {
    let mut trace = Trace::default();
    let (mut service, mut sent, position) = reattach_overtaken_by_live_append(&mut trace);
    let (second, third) = (LinkId(2), LinkId(3));
    let at = Instant::from_millis;
    let before_replay = sent.take(&mut service, second);
    let live = before_replay
        .iter()
        .find(|f| f.action == Action::MESSAGE)
        .expect("the live append is sent before the replay");
    assert_eq!(live.channel_serial.as_ref(), Some(&position));
    let resume_from = before_replay
        .iter()
        .rev()
        .find_map(|f| f.channel_serial.clone())
        .unwrap();

    // The transport drops before the replay: re-attaching from the last channelSerial the
    // viewer saw brings back everything it missed.
    service.handle_up(at(9), second, Up::Closed, &mut trace);
    let key = before_replay
        .iter()
        .find_map(|f| f.connection_details.clone().and_then(|d| d.connection_key))
        .unwrap();
    service.handle_up(
        at(10),
        third,
        Up::Open(format!("ws://x/?access_token=t&resume={key}")),
        &mut trace,
    );
    let reattach = ProtocolMessage {
        channel: Some(ChannelName::new("ai:sim")),
        channel_serial: Some(resume_from),
        ..ProtocolMessage::new(Action::ATTACH)
    };
    service.handle_up(at(11), third, Up::Frame(reattach), &mut trace);
    service.handle_timeout(at(60), &mut trace);
    let texts: String = sent
        .take(&mut service, third)
        .into_iter()
        .flat_map(|f| f.messages.unwrap_or_default())
        .map(|m| m.text().unwrap_or_default().to_owned())
        .collect();
    assert!(
        texts.starts_with("abc"),
        "replayed {texts:?}\n{}",
        trace.render(None, None, 50)
    );
}

/// RTN7a: on a live connection every frame gets an ACK or NACK. The skip-ack fault leaves a
/// frame's own ACK out only when a later ACK answers past it; when none follows, the ACK
/// comes late. Before, a skipped ACK with nothing published after it left the publish
/// pending forever, and the world never quiesced (seeds 14761, 19069).
#[test]
fn rtn7a_a_skipped_ack_is_skipped_by_a_later_ack_or_else_sent_late() {
    let mut trace = Trace::default();
    let mut plan = Plan::draw(&mut SimRng::new(0), Faults::NONE, 1);
    plan.skip_ack = 1000;
    let mut service = Service::new(ChannelName::new("ai:sim"), plan, SimRng::new(5));
    let mut sent = Sent::default();
    let at = Instant::from_millis;
    service.handle_up(
        at(0),
        LinkId(0),
        Up::Open("ws://x/?key=a%3Ab".to_owned()),
        &mut trace,
    );
    sent.take(&mut service, LinkId(0));
    let serial = publish(
        &mut service,
        &mut sent,
        1,
        0,
        Message::create("response", ""),
        &mut trace,
    )
    .unwrap();
    let acks = |service: &mut Service, sent: &mut Sent| -> Vec<u64> {
        sent.take(service, LinkId(0))
            .into_iter()
            .filter(|f| f.action == Action::ACK)
            .filter_map(|f| f.msg_serial.map(|m| m.0))
            .collect()
    };

    // Skipped, then skipped past by the next frame's ACK: its own never comes.
    assert_eq!(
        publish(
            &mut service,
            &mut sent,
            2,
            1,
            Message::append(&serial, "a"),
            &mut trace
        ),
        None
    );
    publish(
        &mut service,
        &mut sent,
        3,
        2,
        Message::create("response", ""),
        &mut trace,
    )
    .unwrap();
    service.handle_timeout(at(5_000), &mut trace);
    assert_eq!(acks(&mut service, &mut sent), Vec::<u64>::new());

    // Skipped with nothing after it: ACKed late.
    assert_eq!(
        publish(
            &mut service,
            &mut sent,
            5_001,
            3,
            Message::append(&serial, "b"),
            &mut trace
        ),
        None
    );
    assert!(service.poll_timeout().is_some_and(|t| t <= at(10_000)));
    assert!(!service.is_quiet());
    service.handle_timeout(at(10_000), &mut trace);
    assert_eq!(
        acks(&mut service, &mut sent),
        [3],
        "{}",
        trace.render(None, None, 50)
    );
}

fn viewer() -> Viewer {
    let config = Config::new(
        Endpoint::parse("http://sim.invalid:80").unwrap(),
        Auth::Key(ApiKey::parse("a:b").unwrap()),
        "t",
    );
    Viewer::new(Connection::new(config), Instant::default())
}

fn answer_message(action: MessageAction, version: &str, text: &str) -> Message {
    let mut msg = Message {
        serial: Some(Serial::new("s1")),
        action: Some(action),
        data: Some(serde_json::Value::String(text.to_owned())),
        version: Some(crate::protocol::MessageVersion {
            serial: Some(Serial::new(version)),
            ..Default::default()
        }),
        ..Message::default()
    };
    let mut headers = BTreeMap::new();
    headers.insert(headers::PROMPT.to_owned(), "prompt-0".to_owned());
    msg.set_headers(&headers);
    msg
}

#[test]
fn the_prefix_check_flags_a_hole_unless_a_told_loss_is_unrepaired() {
    let mut model = ModelAnswer::draw(&mut SimRng::new(5), 0, 0);
    model.text = "hello world".to_owned();
    let models = [model];
    let serial = Serial::new("s1");
    let now = Instant::default();
    let mut v = viewer();
    v.assembler
        .apply(&answer_message(MessageAction::CREATE, "s1", ""))
        .unwrap();
    v.assembler
        .apply(&answer_message(MessageAction::APPEND, "s2", "hello"))
        .unwrap();
    assert!(check::prefix(now, 0, &v, &serial, &models).is_none());
    // " wor" missed: the text has a hole.
    v.assembler
        .apply(&answer_message(MessageAction::APPEND, "s4", "ld"))
        .unwrap();
    assert!(check::prefix(now, 0, &v, &serial, &models).is_some());
    v.continuity_lost();
    assert!(check::prefix(now, 0, &v, &serial, &models).is_none());
    // A full version ends the exemption, whether or not it repairs the text.
    v.full_version(&serial);
    assert!(check::prefix(now, 0, &v, &serial, &models).is_some());
    v.assembler
        .apply(&answer_message(MessageAction::UPDATE, "s5", "hello world"))
        .unwrap();
    assert!(check::prefix(now, 0, &v, &serial, &models).is_none());
}

/// Drains the publisher's connection: events go to the publisher, frames are returned.
fn drain_publisher(
    publisher: &mut Publisher,
    now: Instant,
    trace: &mut Trace,
) -> Vec<ProtocolMessage> {
    let mut frames = Vec::new();
    while let Some(output) = publisher.conn.poll_output() {
        match output {
            Output::Transmit(Transmit::Frame(frame)) => frames.push(frame),
            Output::Event(event) => publisher.handle_event(now, event, trace),
            Output::Transmit(_) => {}
        }
    }
    frames
}

fn outcome_frame(action: Action, msg_serial: MsgSerial, serial: Option<&str>) -> ProtocolMessage {
    ProtocolMessage {
        msg_serial: Some(msg_serial),
        count: Some(1),
        res: (action == Action::ACK).then(|| {
            vec![PublishResult {
                serials: vec![serial.map(Serial::new)],
            }]
        }),
        error: (action == Action::NACK)
            .then(|| ErrorInfo::new(service::INTERNAL_ERROR, 500, "refused")),
        ..ProtocolMessage::new(action)
    }
}

/// Seed 773's failure: an append's NACK was lost with the transport, the resume was refused,
/// and the append, renumbered and resent (RTN19a2), was applied after the final update the
/// service had already applied, so history's text ended with a stray fragment. An append
/// ACKed with a version serial above the final update's makes the publisher send the final
/// update again; one ACKed below it does not.
#[test]
fn an_append_applied_after_the_final_update_makes_the_publisher_send_it_again() {
    let mut trace = Trace::default();
    let answer = ModelAnswer::draw(&mut SimRng::new(5), 0, 0);
    let channel = ChannelName::new("ai:sim");
    let endpoint = Endpoint::parse("http://sim.invalid:80").unwrap();
    let mut config = Config::new(
        endpoint,
        Auth::Key(ApiKey::parse("sim.publisher:secret").unwrap()),
        "pubtest",
    );
    config.echo = false;
    let mut conn = Connection::new(config);
    let t0 = Instant::from_millis(0);
    conn.connect(t0);
    conn.handle_text(
        t0,
        r#"{"action":4,"connectionId":"c1","connectionDetails":{"connectionKey":"c1!k","maxMessageSize":65536,"connectionStateTtl":120000,"maxIdleInterval":15000}}"#,
    )
    .unwrap();
    let mut publisher = Publisher::new(conn, channel, 0, std::slice::from_ref(&answer));

    // Run the whole stream, ACKing the create at once and leaving the rest unsettled.
    let mut appends = Vec::new();
    let mut updates = Vec::new();
    let mut now = t0;
    // Until the final update is out: after it, the next deadline is the session's drain
    // timeout, which would give the answer up.
    for _ in 0..10_000 {
        let Some(at) = publisher.poll_timeout().filter(|_| updates.is_empty()) else {
            break;
        };
        now = now.max(at);
        publisher.handle_timeout(now, &mut trace);
        for frame in drain_publisher(&mut publisher, now, &mut trace) {
            let (Some(msg_serial), Some([msg])) = (frame.msg_serial, frame.messages.as_deref())
            else {
                continue;
            };
            match msg.action() {
                MessageAction::CREATE => {
                    let ack = outcome_frame(Action::ACK, msg_serial, Some("s-answer"));
                    publisher.conn.handle_frame(now, ack);
                }
                MessageAction::APPEND => appends.push(msg_serial),
                _ => updates.push(msg_serial),
            }
            drain_publisher(&mut publisher, now, &mut trace);
        }
    }
    let [final_update] = updates.as_slice() else {
        panic!("expected one update, the final one, got {updates:?}");
    };
    assert!(
        appends.len() >= 3,
        "the answer sent {} appends",
        appends.len()
    );
    let late = appends.pop().unwrap();
    let early = appends.pop().unwrap();

    // The final update and the appends before `early` are ACKed in order.
    for (n, msg_serial) in appends.iter().enumerate() {
        let version = format!("v{n:04}");
        let ack = outcome_frame(Action::ACK, *msg_serial, Some(&version));
        publisher.conn.handle_frame(now, ack);
    }
    let ack = outcome_frame(Action::ACK, *final_update, Some("v5000"));
    publisher.conn.handle_frame(now, ack);
    // `early` went before the final update: nothing to do.
    let ack = outcome_frame(Action::ACK, early, Some("v4999"));
    publisher.conn.handle_frame(now, ack);
    let sent = drain_publisher(&mut publisher, now, &mut trace);
    assert!(
        sent.is_empty(),
        "sent for an append applied before: {sent:?}"
    );

    // `late` was applied after the final update: the final update goes out again.
    let ack = outcome_frame(Action::ACK, late, Some("v5001"));
    publisher.conn.handle_frame(now, ack);
    let sent = drain_publisher(&mut publisher, now, &mut trace);
    let [again] = sent.as_slice() else {
        panic!("expected the final update alone, got {sent:?}");
    };
    let message = again.messages.as_deref().and_then(|m| m.first()).unwrap();
    assert_eq!(message.action(), MessageAction::UPDATE);
    assert_eq!(
        message.data.as_ref().and_then(|d| d.as_str()),
        Some(answer.text.as_str())
    );
    assert_eq!(
        message.header(headers::STATUS),
        Some(headers::Status::Completed.as_str())
    );
    assert!(!publisher.is_done());

    // Its ACK is the latest version: the answer is settled, and nothing more is sent.
    let ack = outcome_frame(Action::ACK, again.msg_serial.unwrap(), Some("v5002"));
    publisher.conn.handle_frame(now, ack);
    let sent = drain_publisher(&mut publisher, now, &mut trace);
    assert!(sent.is_empty(), "sent after the answer settled: {sent:?}");
    assert!(publisher.is_done());
}
