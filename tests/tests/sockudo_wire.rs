//! The sans-IO core against a real Ably-compatible server: Sockudo on loopback, driven by a
//! daemon's tokio driver. The seed guide's joke goes relay → publisher connection → Sockudo
//! → subscriber connections → assembler, live and by rewind, also across transport cuts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use publisher::ably::Realtime;
use shared::connection::{AttachOptions, Event};
use shared::headers::Status;
use shared::relay::{Relay, RelayConfig};
use tests::publish::relay_events;
use tests::realtime::{connect, Subscriber};
use tests::recorded_events;
use tests::sockudo::Sockudo;

const JOKE: &str = "Why don't scientists trust atoms? Because they make up everything.";
const WAIT: Duration = Duration::from_secs(15);

/// Attaches and waits until the channel is attached.
async fn attached(
    server: &Sockudo,
    name: &str,
    channel: &str,
    options: AttachOptions,
) -> Subscriber {
    match Subscriber::attach(&server.endpoint(), name, channel, options).await {
        Ok(sub) => sub,
        Err(err) => panic!("{err}; server log:\n{}", server.log_tail()),
    }
}

/// Reads deliveries until an answer reaches a terminal status.
async fn assemble_until_done(sub: &mut Subscriber) {
    let done = sub
        .until(WAIT, |view| {
            view.answers().any(|a| a.status().is_terminal())
        })
        .await;
    assert!(done, "no terminal status within {WAIT:?}");
}

/// Streams the recorded joke through a relay over `publisher`, `gap` apart, cutting its
/// transport before event `cut_at` if given.
async fn publish_joke(
    publisher: &Realtime,
    channel: &str,
    gap: Duration,
    cut_at: Option<usize>,
) -> Relay {
    let events = recorded_events("00_seed_joke.jsonl").unwrap();
    let config = RelayConfig {
        max_message_size: Some(65_536),
        ..RelayConfig::default()
    };
    let relay = relay_events(publisher, channel, &events, config, gap, cut_at)
        .await
        .unwrap();
    assert!(
        relay.is_finished(),
        "the recording ends with response.completed"
    );
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_joke_reaches_live_and_late_subscribers_exactly() {
    let server = Sockudo::start().unwrap();
    let channel = "ai:wire-seed";
    let mut live = attached(&server, "live", channel, AttachOptions::default()).await;
    let publisher = connect(&server.endpoint(), "pub", false).unwrap();

    let relay = publish_joke(&publisher, channel, Duration::from_millis(5), None).await;
    assert_eq!(relay.text(), JOKE);

    assemble_until_done(&mut live).await;
    let answer = live.view.answers().next().unwrap();
    assert_eq!((answer.text(), answer.status()), (JOKE, Status::Completed));
    assert_eq!(Some(answer.serial()), relay.serial());

    let mut late = attached(&server, "late", channel, AttachOptions::rewind(10)).await;
    assemble_until_done(&mut late).await;
    let answer = late.view.answers().next().unwrap();
    assert_eq!((answer.text(), answer.status()), (JOKE, Status::Completed));
    assert!(!answer.is_partial());

    publisher.close(WAIT).await;
    live.close().await;
    late.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_transports_mid_stream_still_end_with_identical_text() {
    let server = Sockudo::start().unwrap();
    let channel = "ai:wire-cuts";
    let mut live = attached(&server, "live", channel, AttachOptions::default()).await;
    let publisher = connect(&server.endpoint(), "pub", false).unwrap();
    let mut publisher_events = publisher.subscribe();

    let cutter = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        live.realtime.cut();
    };
    let (relay, ()) = tokio::join!(
        publish_joke(&publisher, channel, Duration::from_millis(20), Some(8)),
        cutter
    );
    assert_eq!(relay.text(), JOKE);

    assemble_until_done(&mut live).await;
    let answer = live.view.answers().next().unwrap();
    assert_eq!((answer.text(), answer.status()), (JOKE, Status::Completed));

    // The publisher's transport really was cut, and the connection came back by itself.
    let mut states = Vec::new();
    while let Some(event) = publisher_events
        .wait_for(Duration::from_millis(50), |e| Some(e.clone()))
        .await
    {
        match event {
            Event::StateChanged { current, .. } => states.push(current.as_str().to_owned()),
            Event::ResumeFailed { reason } => states.push(format!("resume-failed({reason:?})")),
            _ => {}
        }
    }
    eprintln!("publisher states: {states:?}");
    let disconnected = states
        .iter()
        .position(|s| s == "disconnected")
        .expect("a cut");
    assert!(
        states[disconnected..].iter().any(|s| s == "connected"),
        "{states:?}"
    );

    publisher.close(WAIT).await;
    live.close().await;
}
