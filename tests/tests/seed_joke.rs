//! The seed guide's own example, end to end through the core: the recorded stream (a
//! reasoning item, then a message item with 13 deltas) → relay → a channel with Ably's
//! delivery rules → subscribers' assemblers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use shared::assembler::Assembler;
use shared::headers::{self, Status};
use shared::relay::{PublishOp, RelayConfig};
use shared::testkit::{RelayDriver, RewindStyle, SimChannel};
use shared::Instant;
use tests::recorded_events;

const JOKE: &str = "Why don't scientists trust atoms? Because they make up everything.";

fn run(window: Duration) -> (RelayDriver, SimChannel, Assembler) {
    let events = recorded_events("00_seed_joke.jsonl").unwrap();
    let mut channel = SimChannel::new();
    let live = channel.subscribe(None);
    let mut view = Assembler::new();
    let config = RelayConfig {
        window,
        ..RelayConfig::default()
    };
    let mut driver = RelayDriver::new(config, Instant::from_millis(0), Duration::from_millis(30));
    for event in &events {
        driver.event(&mut channel, event);
        driver.advance(&mut channel, Duration::from_millis(20));
        for message in channel.drain(live) {
            view.apply(&message).unwrap();
        }
    }
    driver.finish(&mut channel);
    for message in channel.drain(live) {
        view.apply(&message).unwrap();
    }
    (driver, channel, view)
}

/// The data of every append the relay published, in order.
fn appended_texts(driver: &RelayDriver) -> Vec<&str> {
    driver
        .ops()
        .iter()
        .filter(|(_, op)| matches!(op, PublishOp::Append(_)))
        .map(|(_, op)| op.text())
        .collect()
}

fn only_answer(view: &Assembler) -> &shared::assembler::Answer {
    let answers: Vec<_> = view.answers().collect();
    assert_eq!(answers.len(), 1, "exactly one answer");
    answers[0]
}

#[test]
fn live_subscriber_gets_exactly_the_joke_completed() {
    let (driver, _, view) = run(Duration::from_millis(40));
    let answer = only_answer(&view);
    assert_eq!(answer.text(), JOKE);
    assert_eq!(answer.status(), Status::Completed);
    assert!(!answer.is_partial());
    assert_eq!(answer.header(headers::RESPONSE_ID), Some("resp_abc123"));
    assert_eq!(driver.relay().text(), JOKE);
    // Coalescing: fewer messages than deltas, the first delta alone and at once.
    let appends = appended_texts(&driver);
    assert!(appends.len() < 13, "{appends:?}");
    assert_eq!(appends[0], "Why");
    assert_eq!(appends.concat(), JOKE);
}

#[test]
fn window_zero_appends_each_of_the_guides_thirteen_deltas() {
    let (driver, _, view) = run(Duration::ZERO);
    let appends = appended_texts(&driver);
    assert_eq!(
        appends,
        [
            "Why",
            " don",
            "'t",
            " scientists",
            " trust",
            " atoms",
            "?",
            " Because",
            " they",
            " make",
            " up",
            " everything",
            "."
        ]
    );
    assert_eq!(only_answer(&view).text(), JOKE);
}

#[test]
fn only_the_message_item_is_published_and_history_holds_one_message() {
    let (driver, channel, _) = run(Duration::ZERO);
    let (first, rest) = driver.ops().split_first().unwrap();
    assert!(matches!(first.1, PublishOp::Create(_)));
    assert_eq!(first.1.text(), "", "the create is empty");
    assert_eq!(
        first.1.message().name.as_deref(),
        Some(headers::ANSWER_NAME)
    );
    // The appends carry exactly the message item's text, the final update all of it.
    assert_eq!(appended_texts(&driver).concat(), JOKE);
    let last = rest.last().map(|(_, op)| op).unwrap();
    assert!(matches!(last, PublishOp::Update(_)));
    assert_eq!(last.text(), JOKE);
    let history = channel.history();
    assert_eq!(history.len(), 1, "one message per answer in history");
    assert_eq!(history[0].text().unwrap(), JOKE);
    assert_eq!(history[0].header(headers::STATUS), Some("completed"));
}

#[test]
fn late_joiners_get_the_whole_answer_at_once_in_both_rewind_styles() {
    let (_, mut channel, _) = run(Duration::from_millis(40));
    for style in [RewindStyle::Aggregate, RewindStyle::PerVersion] {
        let late = channel.subscribe_with(Some(100), style);
        let mut view = Assembler::new();
        let outcome = view.apply_all(&channel.drain(late));
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let answer = only_answer(&view);
        assert_eq!(answer.text(), JOKE, "{style:?}");
        assert_eq!(answer.status(), Status::Completed, "{style:?}");
    }
}
