//! Criterion micro-benchmarks of the core's two per-token paths, with answers of 100 and
//! 10,000 tokens (the longer must not cost more per token):
//!
//! - `publish_per_token`: a text delta through the session and the relay to an encoded
//!   append frame on a connected `Connection`, and that frame's ACK back to the session;
//! - `deliver_per_append`: a delivered append frame through a subscriber's `Connection`
//!   (decode, channel position) into the `Assembler`.
//!
//! Each iteration is one whole answer; the reported throughput is in tokens (elements).
//! Run with `cargo bench -p shared --bench core` (also a stage of `scripts/bench`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: a panic is a failed run.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use shared::assembler::Assembler;
use shared::connection::{
    ApiKey, AttachOptions, Auth, Config, Connection, Endpoint, Event, Io, PublishId,
};
use shared::ids::{ChannelName, MessageId, Serial};
use shared::openai::StreamEvent;
use shared::session::{AnswerId, AnswerSpec, Output, Session, SessionConfig, Ticket};
use shared::Instant;

const LENGTHS: [usize; 2] = [100, 10_000];
const CHANNEL: &str = "ai:bench";

fn connection(prefix: &str) -> Connection {
    let key = ApiKey::parse("appId.keyId:secret").unwrap();
    let endpoint = Endpoint::parse("http://127.0.0.1:6001").unwrap();
    let mut config = Config::new(endpoint, Auth::Key(key), prefix);
    config.echo = false;
    let mut conn = Connection::new(config);
    let t = Instant::from_millis(0);
    conn.connect(t);
    conn.handle_text(
        t,
        r#"{"action":4,"connectionId":"c1","connectionDetails":{"connectionKey":"c1!k","maxMessageSize":65536}}"#,
    )
    .unwrap();
    conn.attach(t, ChannelName::from(CHANNEL), AttachOptions::default())
        .unwrap();
    conn.handle_text(
        t,
        &format!(r#"{{"action":11,"channel":"{CHANNEL}","channelSerial":"s:0"}}"#),
    )
    .unwrap();
    while conn.poll_io().is_some() {}
    conn
}

/// A token of about four bytes, as models write them.
fn token(i: usize) -> String {
    format!(" w{:02}", i % 100)
}

fn version(n: usize) -> String {
    format!("{n:020}:bench")
}

/// The daemon's publishing core, connected, with one answer created.
struct Publisher {
    conn: Connection,
    session: Session,
    answer: AnswerId,
    tickets: HashMap<PublishId, Ticket>,
    /// The ACK of each msgSerial, built in advance: what the server says is not our cost.
    acks: Vec<String>,
    acked: usize,
    now: u64,
}

impl Publisher {
    fn new(tokens: usize) -> Self {
        let mut session = Session::new(SessionConfig {
            window: Duration::ZERO,
            source: "replay".to_owned(),
            max_message_size: Some(65_536),
            ..SessionConfig::default()
        });
        let now = Instant::from_millis(1);
        let answer = session.start(
            now,
            AnswerSpec {
                channel: ChannelName::from(CHANNEL),
                prompt: Some(Serial::new("prompt-serial")),
                create_id: MessageId::new("bench-create"),
            },
        );
        let acks = (0..tokens + 8)
            .map(|n| {
                format!(
                    r#"{{"action":1,"msgSerial":{n},"count":1,"res":[{{"serials":["{}"]}}]}}"#,
                    version(n)
                )
            })
            .collect();
        let mut publisher = Self {
            conn: connection("pub"),
            session,
            answer,
            tickets: HashMap::new(),
            acks,
            acked: 0,
            now: 1,
        };
        for event in [
            json!({"type": "response.created", "sequence_number": 0,
                   "response": {"id": "resp_bench", "model": "bench", "status": "in_progress"}}),
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                   "item": {"id": "msg_bench", "type": "message", "role": "assistant"}}),
            json!({"type": "response.content_part.added", "sequence_number": 2,
                   "item_id": "msg_bench", "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": ""}}),
        ] {
            publisher.event(&StreamEvent::from_value(event).unwrap());
        }
        publisher
    }

    /// One stream event, everything it causes, and the ACKs of what it published.
    fn event(&mut self, event: &StreamEvent) {
        self.now += 1;
        let now = Instant::from_millis(self.now);
        self.session.handle_stream_event(now, self.answer, event);
        self.pump(now);
    }

    fn pump(&mut self, now: Instant) {
        loop {
            while let Some(output) = self.session.poll_output() {
                if let Output::Publish {
                    ticket,
                    channel,
                    message,
                    ..
                } = output
                {
                    let id = self.conn.publish(now, &channel, vec![message]).unwrap();
                    self.tickets.insert(id, ticket);
                }
            }
            let mut sent = 0;
            let mut outcomes = Vec::new();
            while let Some(io) = self.conn.poll_io() {
                match io {
                    Io::Send(text) => {
                        black_box(text.len());
                        sent += 1;
                    }
                    Io::Event(Event::Published { id, outcome }) => outcomes.push((id, outcome)),
                    _ => {}
                }
            }
            if sent == 0 && outcomes.is_empty() {
                return;
            }
            for (id, outcome) in outcomes {
                if let Some(ticket) = self.tickets.remove(&id) {
                    self.session.handle_outcome(now, ticket, outcome);
                }
            }
            for _ in 0..sent {
                let ack = &self.acks[self.acked];
                self.acked += 1;
                self.conn.handle_text(now, ack).unwrap();
            }
        }
    }
}

fn deltas(tokens: usize) -> Vec<StreamEvent> {
    (0..tokens)
        .map(|i| {
            StreamEvent::from_value(json!({
                "type": "response.output_text.delta", "sequence_number": 3 + i,
                "item_id": "msg_bench", "output_index": 0, "content_index": 0,
                "delta": token(i),
            }))
            .unwrap()
        })
        .collect()
}

/// Benchmarks `routine` under `name`, one whole answer per iteration, for each answer
/// length: `input` is built once per length, `setup` afresh for every answer (untimed).
fn per_answer<I, S, O>(
    c: &mut Criterion,
    name: &str,
    input: impl Fn(usize) -> I,
    setup: impl Fn(usize) -> S,
    routine: impl Fn(S, &I, usize) -> O,
) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for tokens in LENGTHS {
        let input = input(tokens);
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_with_input(BenchmarkId::from_parameter(tokens), &input, |b, input| {
            b.iter_batched(
                || setup(tokens),
                |state| routine(state, input, tokens),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn publish_per_token(c: &mut Criterion) {
    per_answer(
        c,
        "publish_per_token",
        deltas,
        Publisher::new,
        |mut publisher, events, tokens| {
            for event in events {
                publisher.event(event);
            }
            assert!(publisher.acked > tokens / 2, "appends were published");
            publisher
        },
    );
}

/// The frames a subscriber receives for one answer: its create, then one append per token.
fn delivered(tokens: usize) -> Vec<String> {
    let serial = version(0);
    let mut frames = Vec::with_capacity(tokens + 1);
    let message = |n: usize, action: u8, data: &str, length: usize| {
        json!({
            "action": 15, "channel": CHANNEL, "channelSerial": format!("s:{}", n + 1),
            "messages": [{
                "id": format!("pub-{n}:0"), "name": "response", "action": action,
                "serial": serial, "data": data,
                "version": {"serial": version(n)},
                "extras": {"headers": {"status": "streaming", "length": length.to_string()}},
            }],
        })
        .to_string()
    };
    frames.push(message(0, 0, "", 0));
    let mut length = 0;
    for i in 0..tokens {
        let fragment = token(i);
        length += fragment.len();
        frames.push(message(i + 1, 5, &fragment, length));
    }
    frames
}

fn deliver_per_append(c: &mut Criterion) {
    let setup = |_| (connection("sub"), Assembler::new());
    per_answer(
        c,
        "deliver_per_append",
        delivered,
        setup,
        |(mut conn, mut view), frames, tokens| {
            let now = Instant::from_millis(1);
            for frame in frames {
                conn.handle_text(now, frame).unwrap();
                while let Some(io) = conn.poll_io() {
                    if let Io::Event(Event::Message { message, .. }) = io {
                        black_box(view.apply(&message).unwrap());
                    }
                }
            }
            let answer = view.answer(&Serial::new(version(0))).unwrap();
            assert_eq!(answer.text().len(), tokens * 4);
            (conn, view)
        },
    );
}

criterion_group!(benches, publish_per_token, deliver_per_append);
criterion_main!(benches);
