//! Property: whatever the stream's timing, the relay's window, the ACK delay and the delivery
//! schedule (conflation, duplicates, lost deliveries repaired by a resync or only by the final
//! update, disconnects, late joins with either rewind style), every subscriber ends with
//! exactly the published text and the terminal status, never shows text that was not
//! published, and answers running at the same time never mix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use proptest::prelude::*;
use shared::assembler::Assembler;
use shared::headers::Status;
use shared::protocol::MessageAction;
use shared::relay::RelayConfig;
use shared::testkit::{RelayDriver, RewindStyle, SimChannel, SubscriberId};
use shared::Instant;
use tests::Events;

/// How an answer's stream ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Completed,
    Incomplete,
    ErrorEvent,
    Truncated,
    Cancelled,
}

impl Ending {
    fn status(self) -> Status {
        match self {
            Self::Completed => Status::Completed,
            Self::Incomplete => Status::Incomplete,
            Self::ErrorEvent | Self::Truncated => Status::Failed,
            Self::Cancelled => Status::Cancelled,
        }
    }
}

/// One answer to stream: its message text in deltas, reasoning interleaved, and its ending.
#[derive(Clone, Debug)]
struct Answer {
    deltas: Vec<String>,
    reasoning: Vec<String>,
    ending: Ending,
    window_ms: u64,
    ack_ms: u64,
}

/// Something that happens to a subscriber's deliveries between two steps.
#[derive(Clone, Debug)]
enum Fault {
    None,
    Conflate,
    Duplicate(usize),
    DropThenResync(usize),
    /// An append lost for good (as across a failed resume); only the lossy subscriber
    /// suffers it, and only the final full-text update can repair it.
    Lose(usize),
    Disconnect,
    Reconnect,
}

fn delta() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{1,6}",
        Just("é".to_owned()),
        Just("日本".to_owned()),
        Just("👍🏽".to_owned()),
        Just("\n".to_owned()),
        Just("<b>&amp;</b>".to_owned()),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop::collection::vec(delta(), 0..25),
        prop::collection::vec("[A-Z]{1,4}", 0..4),
        prop_oneof![
            4 => Just(Ending::Completed),
            1 => Just(Ending::Incomplete),
            1 => Just(Ending::ErrorEvent),
            1 => Just(Ending::Truncated),
            1 => Just(Ending::Cancelled),
        ],
        prop_oneof![Just(0u64), 1..80u64],
        0..60u64,
    )
        .prop_map(|(deltas, reasoning, ending, window_ms, ack_ms)| Answer {
            deltas,
            reasoning,
            ending,
            window_ms,
            ack_ms,
        })
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        2 => Just(Fault::Conflate),
        1 => (0..8usize).prop_map(Fault::Duplicate),
        1 => (0..8usize).prop_map(Fault::DropThenResync),
        1 => (0..8usize).prop_map(Fault::Lose),
        1 => Just(Fault::Disconnect),
        1 => Just(Fault::Reconnect),
    ]
}

/// One answer's publisher: its driver and the events still to send.
struct Publisher {
    driver: RelayDriver,
    script: Vec<shared::openai::StreamEvent>,
    next: usize,
    ending: Ending,
    ended: bool,
}

impl Publisher {
    fn new(index: usize, spec: &Answer) -> Self {
        let mut ev = Events::default();
        let mut script = vec![ev.created()];
        let reasoning_id = format!("rs_{index}");
        let message_id = format!("msg_{index}");
        script.push(ev.item_added(0, &reasoning_id, "reasoning"));
        for text in &spec.reasoning {
            script.push(ev.reasoning_delta(0, &reasoning_id, text));
        }
        script.push(ev.item_added(1, &message_id, "message"));
        for text in &spec.deltas {
            script.push(ev.text_delta(1, &message_id, text));
        }
        match spec.ending {
            Ending::Completed => script.push(ev.completed()),
            Ending::Incomplete => script.push(ev.incomplete("max_output_tokens")),
            Ending::ErrorEvent => script.push(ev.error("the model fell over")),
            Ending::Truncated | Ending::Cancelled => {}
        }
        let config = RelayConfig {
            window: Duration::from_millis(spec.window_ms),
            ..RelayConfig::default()
        };
        Self {
            driver: RelayDriver::new(
                config,
                Instant::from_millis(0),
                Duration::from_millis(spec.ack_ms),
            ),
            script,
            next: 0,
            ending: spec.ending,
            ended: false,
        }
    }

    /// Sends the next event, or ends the stream the way this answer ends.
    fn step(&mut self, channel: &mut SimChannel, gap: Duration) {
        if let Some(event) = self.script.get(self.next) {
            self.driver.event(channel, event);
            self.next += 1;
        } else if !self.ended {
            self.ended = true;
            match self.ending {
                Ending::Cancelled => {
                    let now = self.driver.now();
                    self.driver.relay_mut().cancel(now);
                }
                _ => self.driver.finish(channel),
            }
        }
        self.driver.advance(channel, gap);
    }

    fn done(&self) -> bool {
        self.ended && self.driver.relay().is_finished()
    }
}

struct Subscriber {
    id: SubscriberId,
    view: Assembler,
    /// Whether this subscriber may lose deliveries for good.
    lossy: bool,
    /// Whether it has lost one.
    lost: bool,
}

impl Subscriber {
    fn new(id: SubscriberId, lossy: bool) -> Self {
        Self {
            id,
            view: Assembler::new(),
            lossy,
            lost: false,
        }
    }
}

impl Subscriber {
    fn receive(&mut self, channel: &mut SimChannel, fault: &Fault) -> Result<(), TestCaseError> {
        match *fault {
            Fault::None => {}
            Fault::Conflate => {
                channel.conflate(self.id);
            }
            Fault::Duplicate(i) => {
                let queued = channel.pending(self.id).len();
                if queued > 0 {
                    channel.duplicate(self.id, i % queued, i % queued + 1 + i / 4);
                }
            }
            Fault::DropThenResync(i) => {
                let queued = channel.pending(self.id).len().max(1);
                if let Some(lost) = channel.drop_delivery(self.id, i % queued) {
                    if let Some(serial) = lost.serial {
                        // The resume brings the answer's latest state, after what is queued.
                        channel.resync(self.id, &serial);
                    }
                }
            }
            Fault::Lose(i) if self.lossy => {
                let queued = channel.pending(self.id).len().max(1);
                let is_append = channel
                    .pending(self.id)
                    .get(i % queued)
                    .is_some_and(|m| m.action() == MessageAction::APPEND);
                if is_append {
                    self.lost |= channel.drop_delivery(self.id, i % queued).is_some();
                }
            }
            Fault::Lose(_) => {}
            Fault::Disconnect => channel.disconnect(self.id),
            Fault::Reconnect => channel.reconnect(self.id),
        }
        for message in channel.drain(self.id) {
            self.view
                .apply(&message)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        Ok(())
    }
}

proptest! {

    #[test]
    fn every_subscriber_ends_with_every_answer_exactly(
        answers in prop::collection::vec(answer(), 1..4),
        faults in prop::collection::vec(prop::collection::vec(fault(), 3), 0..80),
        gap_ms in 1..40u64,
        late_at in 0..60usize,
        late_style in prop_oneof![Just(RewindStyle::Aggregate), Just(RewindStyle::PerVersion)],
    ) {
        let mut channel = SimChannel::new();
        let mut subscribers = vec![
            Subscriber::new(channel.subscribe(None), false),
            Subscriber::new(channel.subscribe(None), true),
        ];
        let mut publishers: Vec<Publisher> = answers.iter().enumerate().map(|(i, a)| Publisher::new(i, a)).collect();
        let gap = Duration::from_millis(gap_ms);
        let mut step = 0usize;
        while publishers.iter().any(|p| !p.done()) && step < 10_000 {
            for publisher in &mut publishers {
                publisher.step(&mut channel, gap);
            }
            if step == late_at {
                subscribers.push(Subscriber::new(channel.subscribe_with(Some(100), late_style), false));
            }
            let none = vec![Fault::None; 3];
            let these = faults.get(step).unwrap_or(&none);
            for (subscriber, fault) in subscribers.iter_mut().zip(these.iter().cycle()) {
                subscriber.receive(&mut channel, fault)?;
            }
            // Between steps a subscriber may lag, but never shows text that was not published:
            // its text is always a prefix of the answer's text so far.
            for publisher in &publishers {
                let relay = publisher.driver.relay();
                let Some(serial) = relay.serial() else { continue };
                for (n, subscriber) in subscribers.iter().enumerate().filter(|(_, s)| !s.lost) {
                    if let Some(got) = subscriber.view.answer(serial) {
                        prop_assert!(
                            relay.text().starts_with(got.text()),
                            "step {}: subscriber {} shows {:?}, not a prefix of {:?}", step, n, got.text(), relay.text()
                        );
                    }
                }
            }
            step += 1;
        }
        if step > late_at {
            // The late joiner attached while answers were still streaming (or just after).
        } else {
            subscribers.push(Subscriber::new(channel.subscribe_with(Some(100), late_style), false));
        }
        // The end of the run: transports come back and every queue is delivered.
        for subscriber in &mut subscribers {
            subscriber.receive(&mut channel, &Fault::Reconnect)?;
        }

        for (publisher, spec) in publishers.iter().zip(&answers) {
            let relay = publisher.driver.relay();
            prop_assert!(relay.is_finished());
            prop_assert_eq!(relay.status(), spec.ending.status());
            if matches!(spec.ending, Ending::Completed | Ending::Incomplete) {
                prop_assert_eq!(relay.text(), spec.deltas.concat());
            }
            let serial = relay.serial().cloned().ok_or_else(|| TestCaseError::fail("no serial"))?;
            for (n, subscriber) in subscribers.iter().enumerate() {
                let got = subscriber.view.answer(&serial)
                    .ok_or_else(|| TestCaseError::fail(format!("subscriber {n} lacks answer {serial}")))?;
                prop_assert_eq!(got.text(), relay.text(), "subscriber {}", n);
                prop_assert_eq!(got.status(), relay.status(), "subscriber {}", n);
                prop_assert!(!got.is_partial(), "subscriber {} still partial", n);
            }
        }
        for subscriber in &subscribers {
            prop_assert_eq!(subscriber.view.answer_count(), answers.len(), "no extra or mixed answers");
        }
    }
}
