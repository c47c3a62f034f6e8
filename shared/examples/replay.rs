//! Replays recorded OpenAI streams through the whole core, offline: relay → an in-memory
//! channel with Ably's delivery rules → a live subscriber, then a late joiner with rewind.
//!
//! Run with `cargo run -p shared --features testkit --example replay -- RECORDING.jsonl …`.

use std::error::Error;
use std::io::Write as _;
use std::time::Duration;

use shared::assembler::{Assembler, Change};
use shared::openai::recording::Recording;
use shared::openai::StreamEvent;
use shared::relay::RelayConfig;
use shared::testkit::{RelayDriver, SimChannel};
use shared::Instant;

/// Simulated time between two stream events.
const EVENT_GAP: Duration = Duration::from_millis(25);
/// Simulated time until the create's ACK reaches the publisher.
const ACK_DELAY: Duration = Duration::from_millis(30);

fn main() -> Result<(), Box<dyn Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: replay RECORDING.jsonl [RECORDING.jsonl …]".into());
    }
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let recording = Recording::parse(&text).map_err(|e| format!("{path}: {e}"))?;
        replay(&path, &recording)?;
    }
    Ok(())
}

fn replay(path: &str, recording: &Recording) -> Result<(), Box<dyn Error>> {
    println!("── {path}");
    let Some(attempt) = recording.attempts.iter().rev().find(|a| a.status == 200) else {
        println!("   no successful attempt in this recording (HTTP errors only)\n");
        return Ok(());
    };
    let mut channel = SimChannel::new();
    let live = channel.subscribe(None);
    let mut live_view = Assembler::new();
    let config = RelayConfig {
        source: "replay".into(),
        ..RelayConfig::default()
    };
    let mut driver = RelayDriver::new(config, Instant::from_millis(0), ACK_DELAY);
    let mut text_deltas = 0usize;
    print!("   ");

    let mut show = |channel: &mut SimChannel| -> Result<(), Box<dyn Error>> {
        for message in channel.drain(live) {
            for change in live_view.apply(&message)? {
                if let Change::Appended { delta, .. } = change {
                    print!("{delta}");
                }
            }
        }
        std::io::stdout().flush()?;
        Ok(())
    };

    for event in attempt.events() {
        match event {
            Ok(event) => {
                let is_text = matches!(
                    event,
                    StreamEvent::OutputTextDelta(_) | StreamEvent::RefusalDelta(_)
                );
                text_deltas += usize::from(is_text);
                driver.event(&mut channel, &event);
            }
            Err(err) => println!("\n   (undecodable event: {err})"),
        }
        show(&mut channel)?;
        driver.advance(&mut channel, EVENT_GAP);
        show(&mut channel)?;
    }
    driver.finish(&mut channel);
    show(&mut channel)?;

    // A late joiner attaches with rewind and gets each whole answer at once.
    let late = channel.subscribe(Some(100));
    let mut late_view = Assembler::new();
    late_view.apply_all(&channel.drain(late));
    println!();
    for answer in live_view.answers() {
        let converged = late_view
            .answer(answer.serial())
            .is_some_and(|a| a.text() == answer.text() && a.status() == answer.status());
        let detail = answer.header("reason").or(answer.header("error"));
        println!(
            "   status: {}{}  |  {} text deltas → {} Ably messages  |  late joiner: {}",
            answer.status(),
            detail.map(|d| format!(" ({d})")).unwrap_or_default(),
            text_deltas,
            driver.ops().len(),
            if converged {
                "same answer"
            } else {
                "DIFFERENT answer"
            },
        );
        if !converged {
            return Err(
                format!("{path}: the late joiner's answer differs from the live one").into(),
            );
        }
    }
    println!();
    Ok(())
}
