//! The core running against a real local Sockudo: starts Sockudo on a free loopback port,
//! relays recorded OpenAI streams to `ai:demo` through the publisher connection, prints what
//! a live subscriber sees as it arrives, then what a late joiner gets by rewind.
//!
//! Run with `cargo run -p tests --example live -- [RECORDING.jsonl …]`.

use std::error::Error;
use std::io::Write as _;
use std::time::Duration;

use shared::assembler::{Assembler, Change};
use shared::connection::{ApiKey, AttachOptions, Auth, Config, Endpoint, Event};
use shared::openai::StreamEvent;
use shared::relay::RelayConfig;
use tests::publish::relay_events;
use tests::realtime::Client;
use tests::sockudo::{Sockudo, API_KEY};

const CHANNEL: &str = "ai:demo";
/// Time between two stream events, so the answer visibly streams.
const GAP: Duration = Duration::from_millis(40);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        paths.push(
            tests::fixtures_dir()
                .join("00_seed_joke.jsonl")
                .display()
                .to_string(),
        );
    }
    let server = Sockudo::start()?;
    println!(
        "Sockudo (Ably-compatible) listening at {}, key {API_KEY}",
        server.endpoint()
    );
    let config = |name: &str, echo: bool| -> Result<Config, Box<dyn Error>> {
        let mut config = Config::new(
            Endpoint::parse(&server.endpoint())?,
            Auth::Key(ApiKey::parse(API_KEY)?),
            name,
        );
        config.echo = echo;
        Ok(config)
    };

    let mut live = Client::start(config("live", true)?);
    live.attach(CHANNEL, AttachOptions::default());
    attached(&mut live).await?;
    let printer = tokio::spawn(async move {
        let mut view = Assembler::new();
        while let Some(event) = live.events.recv().await {
            let Event::Message { message, .. } = event else {
                continue;
            };
            for change in view.apply(&message).unwrap_or_default() {
                match change {
                    Change::Created { .. } => print!("\n[live] "),
                    Change::Appended { delta, .. } => print!("{delta}"),
                    Change::StatusChanged { status, .. } if status.is_terminal() => {
                        print!("  [{status}]")
                    }
                    _ => {}
                }
                let _ = std::io::stdout().flush();
            }
        }
    });

    let publisher = Client::start(config("publisher", false)?);
    for path in &paths {
        let recording =
            shared::openai::recording::Recording::parse(&std::fs::read_to_string(path)?)?;
        let Some(attempt) = recording.attempts.iter().rev().find(|a| a.status == 200) else {
            println!("\n{path}: no successful attempt, skipped");
            continue;
        };
        let events: Vec<StreamEvent> = attempt.events().collect::<Result<_, _>>()?;
        let relay_config = RelayConfig {
            source: "replay".into(),
            ..RelayConfig::default()
        };
        let relay = relay_events(&publisher, CHANNEL, &events, relay_config, GAP, None).await?;
        // Let the last deliveries reach the live subscriber before the next answer starts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !relay.is_finished() {
            println!("\n{path}: the stream ended without a terminal event");
        }
    }

    let mut late = Client::start(config("late", true)?);
    late.attach(CHANNEL, AttachOptions::rewind(100));
    attached(&mut late).await?;
    let mut view = Assembler::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, late.events.recv()).await {
        if let Event::Message { message, .. } = event {
            view.apply(&message)?;
        }
    }
    println!(
        "\n\nA late joiner attached with rewind and got {} whole answer(s):",
        view.answer_count()
    );
    for answer in view.answers() {
        println!("[{}] {}", answer.status(), answer.text());
    }
    publisher.close().await;
    late.close().await;
    printer.abort();
    Ok(())
}

async fn attached(client: &mut Client) -> Result<(), Box<dyn Error>> {
    if client.wait_attached(Duration::from_secs(15)).await {
        Ok(())
    } else {
        Err(format!("could not attach to {CHANNEL}").into())
    }
}
