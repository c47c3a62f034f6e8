//! Faults on the model's side and limits on Ably's, through `publisher ask` against a real
//! Sockudo: each answer ends with the right status and a readable message, and history
//! agrees.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use publisher::replay::Synth;
use shared::headers::{self, Status};
use shared::relay::MAX_MESSAGE_SIZE_REASON;
use tests::harness::{ask, history, named, AskOutcome, Replay};
use tests::sockudo::Sockudo;

/// Runs `ask` with `model` and checks history agrees with the report.
async fn run(server: &Sockudo, replay: &Replay, model: &str, extra: &[&str]) -> AskOutcome {
    let channel = format!("ai:fault-{}", model.replace([':', ',', '=', '@', '_'], "-"));
    let outcome = ask(
        &server.endpoint(),
        &replay.base_url,
        model,
        &channel,
        "go",
        extra,
    )
    .await
    .unwrap();
    let history = history(&server.endpoint(), &channel).await.unwrap();
    let answers = named(&history, headers::ANSWER_NAME);
    assert_eq!(answers.len(), 1, "{model}: {history:?}");
    let stored = answers[0];
    let report = &outcome.report;
    assert_eq!(stored.text().unwrap(), report.text, "{model}");
    assert_eq!(
        stored.header(headers::STATUS),
        Some(report.status.as_str()),
        "{model}"
    );
    let detail_header = stored
        .header(headers::ERROR)
        .or_else(|| stored.header(headers::REASON));
    assert_eq!(detail_header, report.detail.as_deref(), "{model}");
    outcome
}

fn synth(model: &str) -> Synth {
    Synth::for_request(model, Some("go")).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_faults_end_answers_with_the_right_status_and_message() {
    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::from_millis(1)).await.unwrap();

    // A 500 before the stream is retried, then the answer completes.
    let model = "synth:tokens=20,rate=0,fault=http500";
    let out = run(&server, &replay, model, &[]).await;
    assert_eq!(out.report.status, Status::Completed, "{out:?}");
    assert_eq!(out.report.retries, 1);
    assert_eq!(out.report.text, synth(model).text());

    // Two 500s in a row are retried twice (the default), then the answer completes.
    let model = "synth:tokens=20,rate=0,fault=http500@2";
    let out = run(&server, &replay, model, &[]).await;
    assert_eq!(out.report.status, Status::Completed, "{out:?}");
    assert_eq!(out.report.retries, 2);
    // With one retry allowed, the second 500 ends the answer, saying so.
    let model = "synth:tokens=20,rate=0,fault=http500@3";
    let out = run(&server, &replay, model, &["--openai-max-retries", "1"]).await;
    assert_eq!(out.report.status, Status::Failed, "{out:?}");
    let detail = out.report.detail.clone().unwrap();
    assert!(
        detail.contains("500") && detail.contains("2 attempts"),
        "{detail}"
    );

    // A wrong key and an exhausted quota are not retried; subscribers read why.
    let out = run(&server, &replay, "synth:tokens=5,rate=0,fault=http401", &[]).await;
    assert_eq!(out.report.status, Status::Failed);
    let detail = out.report.detail.clone().unwrap();
    assert!(
        detail.contains("401") && detail.contains("invalid_api_key"),
        "{detail}"
    );
    assert!(!detail.contains("sk-test"), "{detail}");
    let out = run(&server, &replay, "synth:tokens=5,rate=0,fault=quota", &[]).await;
    assert_eq!(out.report.status, Status::Failed);
    assert!(out
        .report
        .detail
        .clone()
        .unwrap()
        .contains("insufficient_quota"));

    // Mid-stream: an error event, a truncated body, a stall past the idle timeout.
    for (fault, needle) in [
        ("error@3", "error"),
        ("truncate@4", "ended"),
        ("stall@5", "sent nothing for"),
    ] {
        let model = format!("synth:tokens=10,rate=0,fault={fault}");
        let out = run(&server, &replay, &model, &["--openai-idle-timeout", "1"]).await;
        assert_eq!(out.report.status, Status::Failed, "{fault}: {out:?}");
        assert_eq!(out.report.text, synth(&model).streamed_text(), "{fault}");
        let detail = out.report.detail.clone().unwrap();
        assert!(detail.contains(needle), "{fault}: {detail}");
    }

    // Terminal events other than completed.
    let model = "synth:tokens=10,rate=0,fault=incomplete@4";
    let out = run(&server, &replay, model, &[]).await;
    assert_eq!(out.report.status, Status::Incomplete);
    assert_eq!(out.report.detail.as_deref(), Some("max_output_tokens"));
    assert_eq!(out.report.text, synth(model).streamed_text());
    let out = run(
        &server,
        &replay,
        "synth:tokens=10,rate=0,fault=failed@2",
        &[],
    )
    .await;
    assert_eq!(out.report.status, Status::Failed);
    assert!(out.report.detail.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_model_server_fails_the_answer_readably() {
    let server = Sockudo::start().unwrap();
    let channel = "ai:fault-unreachable";
    let outcome = ask(
        &server.endpoint(),
        "http://127.0.0.1:9/v1",
        "any",
        channel,
        "go",
        &["--openai-max-retries", "1"],
    )
    .await
    .unwrap();
    assert_eq!(outcome.report.status, Status::Failed);
    let detail = outcome.report.detail.clone().unwrap();
    assert!(detail.contains("could not reach"), "{detail}");
    let history = history(&server.endpoint(), channel).await.unwrap();
    assert_eq!(named(&history, headers::ANSWER_NAME).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_big_for_one_message_ends_incomplete_not_refused() {
    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::ZERO).await.unwrap();
    // About 130 kB of text, twice Sockudo's 64 KiB maxMessageSize.
    let model = "synth:tokens=20000,rate=0";
    let out = run(
        &server,
        &replay,
        model,
        &["--ably-message-rate", "0", "--ably-channel-rate", "0"],
    )
    .await;
    assert_eq!(
        out.report.status,
        Status::Incomplete,
        "{:?}",
        out.report.detail
    );
    assert_eq!(out.report.detail.as_deref(), Some(MAX_MESSAGE_SIZE_REASON));
    assert_eq!(out.report.publish_error, None);
    let full = synth(model).text();
    assert!(full.len() > 65_536);
    assert!(!out.report.text.is_empty() && full.starts_with(&out.report.text));
    assert!(out.report.text.len() < 65_536);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_on_the_publisher_connection_works() {
    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::from_millis(1)).await.unwrap();
    let out = run(&server, &replay, "01_plain_text", &["--ably-token-auth"]).await;
    assert_eq!(out.report.status, Status::Completed, "{out:?}");
    assert_eq!(out.report.text, "Hello! How can I help?");
}
