//! The real local model end to end: `publisher serve` with no model service configured
//! answers with SmolLM2 through its built-in model server and the ordinary OpenAI client,
//! over a real Sockudo, to a native viewer. Needs the GGUF that `scripts/test` fetches
//! (`source scripts/lib.sh && ensure_model`); the model is loaded once per daemon.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use clap::Parser;
use publisher::cli::{Cli, Command};
use serde_json::json;
use shared::connection::AttachOptions;
use shared::headers::{self, Status};
use shared::Serial;
use tests::harness::{history, named, prompt, Daemon};
use tests::realtime::Subscriber;
use tests::sockudo::{Sockudo, API_KEY};

const WAIT: Duration = Duration::from_secs(60);

/// Starts the daemon with no OpenAI key or base URL, greedy, answers of at most 1000 tokens
/// (a dragon story runs for seconds, so a cancel lands mid-answer).
async fn daemon(server: &Sockudo) -> Daemon {
    let endpoint = server.endpoint();
    let argv = [
        "publisher",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ably-endpoint",
        &endpoint,
        "--ably-api-key",
        API_KEY,
        "--openai-api-key=",
        "--openai-base-url=",
        "--model-temperature",
        "0",
        "--model-max-output-tokens",
        "1000",
    ];
    let cli = Cli::try_parse_from(argv).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    Daemon::from_args(&args).await.unwrap()
}

async fn viewer(server: &Sockudo, channel: &str) -> Subscriber {
    Subscriber::attach(
        &server.endpoint(),
        "viewer",
        channel,
        AttachOptions::default(),
    )
    .await
    .unwrap()
}

/// Waits for the answer to end; returns its status and text.
async fn ended(viewer: &mut Subscriber, serial: &Serial) -> (Status, String) {
    let over = viewer
        .until(WAIT, |view| {
            view.answer(serial)
                .is_some_and(|a| !matches!(a.status(), Status::Streaming))
        })
        .await;
    let answer = viewer.view.answer(serial).expect("the answer arrived");
    assert!(over, "the answer is still {:?}", answer.status());
    (answer.status(), answer.text().to_owned())
}

/// One daemon (one model load) for the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_default_answers_with_the_real_model_and_stops_on_cancel() {
    let server = Sockudo::start().unwrap();
    let daemon = daemon(&server).await;
    let question = "What is the capital of France?";

    let mut texts = Vec::new();
    for channel in ["ai:local-1", "ai:local-2"] {
        let mut viewer = viewer(&server, channel).await;
        let serial = prompt(&daemon.url, channel, question).await.unwrap();
        let (status, text) = ended(&mut viewer, &serial).await;
        assert!(
            matches!(status, Status::Completed | Status::Incomplete),
            "{status:?}: {text:?}"
        );
        assert!(!text.trim().is_empty());
        assert!(!text.contains('\u{FFFD}'), "{text:?}");
        let answer = viewer.view.answer(&serial).unwrap();
        assert_eq!(answer.header(headers::SOURCE), Some("local"));
        assert_eq!(
            answer.header(headers::MODEL),
            Some("SmolLM2-135M-Instruct.Q4_1")
        );
        // The channel's record converges on the same text.
        let history = history(&server.endpoint(), channel).await.unwrap();
        let answers = named(&history, headers::ANSWER_NAME);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].text().unwrap(), text);
        texts.push(text);
        viewer.close().await;
    }
    // Greedy decoding of the same prompt on fresh channels: the same answer.
    assert_eq!(texts[0], texts[1]);

    // Stop mid-answer reaches the model: the answer ends cancelled, not at its limit.
    let channel = "ai:local-stop";
    let mut viewer = viewer(&server, channel).await;
    let serial = prompt(&daemon.url, channel, "Write a long story about a dragon.")
        .await
        .unwrap();
    let streaming = viewer
        .until(WAIT, |view| {
            view.answer(&serial).is_some_and(|a| !a.text().is_empty())
        })
        .await;
    assert!(streaming, "no text arrived");
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/responses/{}/cancel?channel={channel}",
            daemon.url,
            serial.as_str()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (status, text) = ended(&mut viewer, &serial).await;
    assert_eq!(status, Status::Cancelled, "{text:?}");
    viewer.close().await;
    daemon.stop().await.unwrap();
}
