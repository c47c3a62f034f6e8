//! The sans-IO core against a real Ably-compatible server: Sockudo on loopback, driven by a
//! minimal tokio driver. The seed guide's joke goes relay → publisher connection → Sockudo
//! → subscriber connections → assembler, live and by rewind, also across transport cuts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use shared::assembler::Assembler;
use shared::connection::{ApiKey, AttachOptions, Auth, Config, Endpoint, Event};
use shared::headers::Status;
use shared::relay::{Relay, RelayConfig};
use tests::publish::relay_events;
use tests::realtime::Client;
use tests::recorded_events;
use tests::sockudo::{Sockudo, API_KEY};

const JOKE: &str = "Why don't scientists trust atoms? Because they make up everything.";
const WAIT: Duration = Duration::from_secs(15);

fn config(server: &Sockudo, name: &str, echo: bool) -> Config {
    let endpoint = Endpoint::parse(&server.endpoint()).unwrap();
    let mut config = Config::new(endpoint, Auth::Key(ApiKey::parse(API_KEY).unwrap()), name);
    config.echo = echo;
    config
}

/// Attaches and waits until the channel is attached.
async fn attached(server: &Sockudo, name: &str, channel: &str, options: AttachOptions) -> Client {
    let mut client = Client::start(config(server, name, true));
    client.attach(channel, options);
    let ok = client.wait_attached(WAIT).await;
    assert!(
        ok,
        "{name} did not attach; server log:\n{}",
        server.log_tail()
    );
    client
}

/// Reads delivered messages into an assembler until the answer reaches a terminal status.
async fn assemble_until_done(client: &mut Client) -> Assembler {
    let mut view = Assembler::new();
    let done = tokio::time::timeout(WAIT, async {
        while let Some(event) = client.events.recv().await {
            if let Event::Message { message, .. } = event {
                view.apply(&message).unwrap();
                if view.answers().any(|a| a.status().is_terminal()) {
                    return;
                }
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no terminal status within {WAIT:?}");
    view
}

/// Streams the recorded joke through a relay over `publisher`, `gap` apart, cutting its
/// transport before event `cut_at` if given.
async fn publish_joke(
    publisher: &Client,
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
    let publisher = Client::start(config(&server, "pub", false));

    let relay = publish_joke(&publisher, channel, Duration::from_millis(5), None).await;
    assert_eq!(relay.text(), JOKE);

    let view = assemble_until_done(&mut live).await;
    let answer = view.answers().next().unwrap();
    assert_eq!((answer.text(), answer.status()), (JOKE, Status::Completed));
    assert_eq!(Some(answer.serial()), relay.serial());

    let mut late = attached(&server, "late", channel, AttachOptions::rewind(10)).await;
    let view = assemble_until_done(&mut late).await;
    let answer = view.answers().next().unwrap();
    assert_eq!((answer.text(), answer.status()), (JOKE, Status::Completed));
    assert!(!answer.is_partial());

    publisher.close().await;
    live.close().await;
    late.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_transports_mid_stream_still_end_with_identical_text() {
    let server = Sockudo::start().unwrap();
    let channel = "ai:wire-cuts";
    let mut live = attached(&server, "live", channel, AttachOptions::default()).await;
    let mut publisher = Client::start(config(&server, "pub", false));

    let cutter = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        live.cut();
    };
    let (relay, ()) = tokio::join!(
        publish_joke(&publisher, channel, Duration::from_millis(20), Some(8)),
        cutter
    );
    assert_eq!(relay.text(), JOKE);

    let view = assemble_until_done(&mut live).await;
    let answer = view.answers().next().unwrap();
    assert_eq!((answer.text(), answer.status()), (JOKE, Status::Completed));

    // The publisher's transport really was cut, and the connection came back by itself.
    let mut states = Vec::new();
    while let Ok(event) = publisher.events.try_recv() {
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

    publisher.close().await;
    live.close().await;
}
