//! `publisher serve` end to end against a real Sockudo and the replay server: prompts,
//! concurrent answers, cancel (here and from another client), tokens, guards, bad requests,
//! metrics and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use publisher::ably::rest::exchange_token;
use publisher::ably::Realtime;
use publisher::answer::SHUTDOWN_ERROR;
use publisher::replay::Synth;
use serde_json::{json, Value};
use shared::auth::TokenRequest;
use shared::connection::{AttachOptions, Auth, Config, ConnectionState, Endpoint};
use shared::headers::{self, Status};
use shared::protocol::Message;
use shared::{ChannelName, Serial};
use tests::harness::{history, named, Daemon, Replay};
use tests::realtime::{connect, Subscriber};
use tests::sockudo::Sockudo;

const WAIT: Duration = Duration::from_secs(30);
/// A quick synthesized answer.
const QUICK: &str = "synth:tokens=40,rate=400";
/// An answer slow enough to be stopped mid-stream (about 20 s).
const SLOW: &str = "synth:tokens=400,rate=20";

struct System {
    server: Sockudo,
    _replay: Replay,
    daemon: Daemon,
    http: reqwest::Client,
}

impl System {
    async fn start(model: &str, extra: &[&str]) -> Self {
        let server = Sockudo::start().unwrap();
        let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
        let daemon = Daemon::start(&server.endpoint(), &replay.base_url, model, extra)
            .await
            .unwrap();
        Self {
            server,
            _replay: replay,
            daemon,
            http: reqwest::Client::new(),
        }
    }

    async fn viewer(&self, channel: &str) -> Subscriber {
        Subscriber::attach(
            &self.server.endpoint(),
            "viewer",
            channel,
            AttachOptions::default(),
        )
        .await
        .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.daemon.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.daemon.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until `/metrics` holds `line` (counters settle once the last ACKs arrive).
    async fn wait_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, metrics) = self.get("/metrics").await;
            if metrics.lines().any(|l| l == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{line}` in:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn prompt(&self, channel: &str, input: &str) -> Serial {
        let (status, body) = self
            .post("/v1/prompts", json!({"channel": channel, "input": input}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["channel"], channel);
        Serial::from(body["serial"].as_str().unwrap())
    }
}

fn synth_text(model: &str, input: &str) -> String {
    Synth::for_request(model, Some(input))
        .unwrap()
        .unwrap()
        .text()
}

/// Waits until the answer has some text (it is streaming).
async fn wait_for_text(viewer: &mut Subscriber, serial: &Serial) {
    let started = viewer
        .until(WAIT, |view| {
            view.answer(serial).is_some_and(|a| !a.text().is_empty())
        })
        .await;
    assert!(started, "answer {serial} never showed text");
}

async fn wait_status(viewer: &mut Subscriber, serial: &Serial, status: Status) {
    let done = viewer
        .until(WAIT, |view| {
            view.answer(serial).is_some_and(|a| a.status() == status)
        })
        .await;
    let seen = viewer
        .view
        .answer(serial)
        .map(|a| (a.status(), a.text().to_owned()));
    assert!(
        done,
        "answer {serial} did not reach {status}; it is {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_and_its_answer_reach_viewers_and_history() {
    let system = System::start(QUICK, &[]).await;
    let channel = "ai:daemon-prompt";
    let mut viewer = system.viewer(channel).await;

    let (status, body) = system
        .post(
            "/v1/prompts",
            json!({"channel": channel, "input": "Tell me a short joke"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let serial = Serial::from(body["serial"].as_str().unwrap());
    let prompt_serial = body["prompt"].as_str().unwrap().to_owned();

    wait_status(&mut viewer, &serial, Status::Completed).await;
    let answer = viewer.view.answer(&serial).unwrap();
    assert_eq!(answer.text(), synth_text(QUICK, "Tell me a short joke"));
    assert_eq!(answer.header(headers::PROMPT), Some(prompt_serial.as_str()));
    assert_eq!(answer.header(headers::SOURCE), Some("openai"));
    let prompt = viewer
        .view
        .prompts()
        .find(|p| p.serial().as_str() == prompt_serial)
        .expect("the prompt was delivered");
    assert_eq!(prompt.text(), "Tell me a short joke");

    // The channel is the record: one prompt, one answer with the full text.
    let history = history(&system.server.endpoint(), channel).await.unwrap();
    assert_eq!(named(&history, headers::PROMPT_NAME).len(), 1);
    let answers = named(&history, headers::ANSWER_NAME);
    assert_eq!(answers.len(), 1, "{history:?}");
    assert_eq!(answers[0].text().unwrap(), answer.text());

    // A second turn is answered with the first as context, and both stay in order.
    let second = system.prompt(channel, "Another one").await;
    wait_status(&mut viewer, &second, Status::Completed).await;
    let history = tests::harness::history(&system.server.endpoint(), channel)
        .await
        .unwrap();
    assert_eq!(named(&history, headers::PROMPT_NAME).len(), 2);
    assert_eq!(named(&history, headers::ANSWER_NAME).len(), 2);

    viewer.close().await;
    system.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_answers_on_one_channel_stay_separate() {
    let system = System::start(QUICK, &[]).await;
    let channel = "ai:daemon-twenty";
    let mut viewer = system.viewer(channel).await;

    let inputs: Vec<String> = (0..20).map(|i| format!("question number {i}")).collect();
    let posts = inputs.iter().map(|input| system.prompt(channel, input));
    let serials = futures_util::future::join_all(posts).await;

    let done = viewer
        .until(WAIT, |view| {
            serials.iter().all(|s| {
                view.answer(s)
                    .is_some_and(|a| a.status() == Status::Completed)
            })
        })
        .await;
    assert!(done, "not every answer completed");
    for (serial, input) in serials.iter().zip(&inputs) {
        let answer = viewer.view.answer(serial).unwrap();
        assert_eq!(
            answer.text(),
            synth_text(QUICK, input),
            "answer to {input:?}"
        );
    }
    let history = history(&system.server.endpoint(), channel).await.unwrap();
    assert_eq!(named(&history, headers::ANSWER_NAME).len(), 20);

    system.wait_metric("relay_answers_completed_total 20").await;
    system.wait_metric("relay_prompts_accepted_total 20").await;
    viewer.close().await;
    system.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_works_through_the_api_and_through_a_cancel_message() {
    let system = System::start(SLOW, &[]).await;
    let channel = "ai:daemon-cancel";
    let mut viewer = system.viewer(channel).await;

    // Through the API.
    let serial = system.prompt(channel, "a long story").await;
    wait_for_text(&mut viewer, &serial).await;
    let (status, body) = system
        .post(
            &format!("/v1/responses/{}/cancel?channel={channel}", serial.as_str()),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["streamingHere"], true);
    wait_status(&mut viewer, &serial, Status::Cancelled).await;
    let full = synth_text(SLOW, "a long story");
    let text = viewer.view.answer(&serial).unwrap().text().to_owned();
    assert!(
        !text.is_empty() && text.len() < full.len() && full.starts_with(&text),
        "{text:?}"
    );

    // Through a `cancel` message, as another replica or a page would send it.
    let serial = system.prompt(channel, "another long story").await;
    wait_for_text(&mut viewer, &serial).await;
    let other = connect(&system.server.endpoint(), "other-replica", false).unwrap();
    let cancel = Message {
        name: Some(headers::CANCEL_NAME.to_owned()),
        data: Some(Value::String(serial.as_str().to_owned())),
        ..Message::default()
    };
    other
        .publish(&ChannelName::from(channel), vec![cancel])
        .await
        .unwrap();
    wait_status(&mut viewer, &serial, Status::Cancelled).await;

    system.wait_metric("relay_answers_cancelled_total 2").await;
    other.close(WAIT).await;
    viewer.close().await;
    system.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_hands_out_a_narrow_token_sockudo_accepts() {
    let system = System::start(QUICK, &[]).await;
    let (status, body) = system
        .get("/v1/token?channel=ai:daemon-token&clientId=viewer-1")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("app-secret"),
        "the key's secret never leaves the daemon"
    );
    let request: TokenRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(request.key_name, "app-key");
    assert_eq!(request.client_id.as_deref(), Some("viewer-1"));
    let capability: Value = serde_json::from_str(request.capability.as_deref().unwrap()).unwrap();
    assert_eq!(
        capability,
        json!({"ai:daemon-token": ["history", "subscribe"]})
    );
    assert!(request.ttl.is_some_and(|ttl| ttl <= 3_600_000));

    // Sockudo accepts it; the token subscribes to that channel and nothing more.
    let endpoint = Endpoint::parse(&system.server.endpoint()).unwrap();
    let details = exchange_token(&reqwest::Client::new(), &endpoint, &request)
        .await
        .unwrap();
    let mut config = Config::new(endpoint, Auth::Token(details.token), "viewer");
    config.echo = false;
    let (viewer, _) = Realtime::start(config, None);
    viewer.wait_connected(WAIT).await.unwrap();
    let channel = ChannelName::from("ai:daemon-token");
    viewer
        .attach(&channel, AttachOptions::default())
        .await
        .unwrap();
    let refused = viewer
        .publish(&channel, vec![Message::create("response", "forged")])
        .await;
    assert!(
        refused.is_err(),
        "a viewer token must not publish: {refused:?}"
    );
    assert_ne!(viewer.snapshot().state, ConnectionState::Initialized);
    viewer.close(WAIT).await;

    // A channel outside the namespace gets no token.
    let (status, body) = system.get("/v1/token?channel=other:x").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown_channel_namespace"), "{body}");
    system.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_nothing_breaks() {
    let system = System::start(QUICK, &["--max-input-chars", "50"]).await;
    let url = format!("{}/v1/prompts", system.daemon.url);
    let send = |body: String| {
        let http = system.http.clone();
        let url = url.clone();
        async move {
            let response = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let cases = [
        ("{not json".to_owned(), 400, "malformed_json"),
        (
            json!({"channel": "ai:x", "input": "  "}).to_string(),
            400,
            "empty_input",
        ),
        (json!({"channel": "ai:x"}).to_string(), 400, "empty_input"),
        (
            json!({"channel": "ai:x", "input": "x".repeat(51)}).to_string(),
            413,
            "input_too_long",
        ),
        (
            json!({"channel": "secret:x", "input": "hi"}).to_string(),
            400,
            "unknown_channel_namespace",
        ),
        (
            json!({"channel": "ai:*", "input": "hi"}).to_string(),
            400,
            "invalid_channel",
        ),
        (
            json!({"channel": "ai:x", "input": "hi", "extra": 1}).to_string(),
            400,
            "malformed_json",
        ),
        (
            format!("{{\"input\":\"{}\"}}", "x".repeat(70_000)),
            413,
            "body_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let shown: String = body.chars().take(60).collect();
        assert_eq!(send(body).await, (status, code.to_owned()), "{shown}");
    }
    let (status, body) = system.get("/v1/nowhere").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"));

    let (status, body) = system.get("/v1/config").await;
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        config,
        json!({"ablyEndpoint": system.server.endpoint(), "channel": "ai:demo", "authUrl": "/v1/token"})
    );
    let (status, body) = system.get("/healthz").await;
    assert_eq!((status, body.contains("connected")), (200, true), "{body}");
    let (_, metrics) = system.get("/metrics").await;
    assert!(
        metrics.contains("relay_requests_rejected_total 8\n"),
        "{metrics}"
    );
    for secret in ["app-secret", "sk-test-not-a-real-key"] {
        assert!(!metrics.contains(secret) && !body.contains(secret));
    }

    // Still serving after all that.
    let channel = "ai:daemon-after-bad";
    let mut viewer = system.viewer(channel).await;
    let serial = system.prompt(channel, "still there?").await;
    wait_status(&mut viewer, &serial, Status::Completed).await;
    viewer.close().await;
    system.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_origins_and_rate_limit_guard_the_api() {
    let system = System::start(
        QUICK,
        &[
            "--api-secret",
            "let-me-in",
            "--allowed-origins",
            "https://ok.example",
            "--rate-limit-per-minute",
            "3",
        ],
    )
    .await;
    let token_url = format!("{}/v1/token?channel=ai:guarded", system.daemon.url);
    let call = |auth: Option<&'static str>, origin: Option<&'static str>| {
        let mut request = system.http.get(&token_url);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.unwrap() }
    };
    assert_eq!(call(None, None).await.status().as_u16(), 401);
    assert_eq!(
        call(Some("Bearer wrong"), None).await.status().as_u16(),
        401
    );
    let foreign = call(Some("Bearer let-me-in"), Some("https://evil.example")).await;
    assert_eq!(foreign.status().as_u16(), 403);

    let allowed = call(Some("Bearer let-me-in"), Some("https://ok.example")).await;
    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ok.example"
    );
    // Three requests a minute: the fourth and later are refused with a Retry-After.
    assert_eq!(
        call(Some("Bearer let-me-in"), None).await.status().as_u16(),
        200
    );
    assert_eq!(
        call(Some("Bearer let-me-in"), None).await.status().as_u16(),
        200
    );
    let limited = call(Some("Bearer let-me-in"), None).await;
    assert_eq!(limited.status().as_u16(), 429);
    assert!(limited.headers().contains_key("retry-after"));

    // Unguarded endpoints stay open.
    assert_eq!(system.get("/v1/config").await.0, 200);
    system.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streaming_answers_with_a_terminal_status() {
    let system = System::start(SLOW, &[]).await;
    let channel = "ai:daemon-shutdown";
    let mut viewer = system.viewer(channel).await;
    let serial = system.prompt(channel, "a long story").await;
    wait_for_text(&mut viewer, &serial).await;

    let state = system.daemon.state.clone();
    let System {
        daemon,
        server,
        _replay,
        ..
    } = system;
    daemon.stop().await.unwrap();
    wait_status(&mut viewer, &serial, Status::Failed).await;
    let answer = viewer.view.answer(&serial).unwrap();
    assert_eq!(answer.header(headers::ERROR), Some(SHUTDOWN_ERROR));
    assert_eq!(
        state.answers.realtime.snapshot().state,
        ConnectionState::Closed,
        "the Ably connection was closed cleanly"
    );
    viewer.close().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replay_dir_and_no_model_configured_the_built_in_replay_answers() {
    // Without REPLAY_DIR the local model answers instead (tests/tests/local_model.rs).
    let server = Sockudo::start().unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai");
    let argv = [
        "publisher",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ably-endpoint",
        &server.endpoint(),
        "--ably-api-key",
        tests::sockudo::API_KEY,
        "--openai-api-key",
        "",
        "--openai-base-url",
        "",
        "--replay-dir",
        fixtures,
    ];
    let cli = <publisher::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let publisher::cli::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    let daemon = Daemon::from_args(&args).await.unwrap();
    let channel = "ai:daemon-offline";
    let mut viewer = Subscriber::attach(
        &server.endpoint(),
        "viewer",
        channel,
        AttachOptions::default(),
    )
    .await
    .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/prompts", daemon.url))
        .json(&json!({"channel": channel, "input": "Is anyone there?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    let serial = Serial::from(body["serial"].as_str().unwrap());
    wait_status(&mut viewer, &serial, Status::Completed).await;
    let answer = viewer.view.answer(&serial).unwrap();
    assert_eq!(answer.header(headers::SOURCE), Some("replay"));
    assert_eq!(
        answer.text(),
        publisher::replay::friendly_text(Some("Is anyone there?"))
    );
    viewer.close().await;
    daemon.stop().await.unwrap();
}
