//! Tests: the replay server on loopback, spoken to with reqwest: recordings byte for byte,
//! attempt rotation, synthesized answers and their faults, pacing, bad requests, shutdown.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use shared::headers::Status;
use shared::openai::{ApiError, Decoded, Replay, StreamEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai");

/// A replay server on a free loopback port, stopped when `stop` is called or it is dropped.
struct TestServer {
    base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl TestServer {
    async fn start(config: ReplayConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            base,
            client,
            shutdown: Some(shutdown),
            task,
        }
    }

    async fn fixtures() -> Self {
        Self::start(fixtures()).await
    }

    /// POSTs a streaming create request for `model` with `input`.
    async fn ask(&self, model: &str, input: Value) -> reqwest::Response {
        let body = json!({ "model": model, "input": input, "stream": true });
        self.post("/v1/responses", body.to_string()).await
    }

    /// POSTs raw text, with no content type and a made-up key.
    async fn post(&self, path: &str, body: String) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("authorization", "Bearer sk-anything")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Stops the server and waits for `serve` to return.
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returns promptly after shutdown");
        served.unwrap().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fixtures() -> ReplayConfig {
    ReplayConfig::load_dir(Path::new(FIXTURES)).unwrap()
}

/// A body read chunk by chunk: the chunks, when each arrived, and whether reading failed
/// (the connection dropped) rather than ending.
struct Body {
    chunks: Vec<(Instant, Bytes)>,
    failed: bool,
}

impl Body {
    async fn read(mut response: reqwest::Response) -> Self {
        let mut chunks = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => chunks.push((Instant::now(), chunk)),
                Ok(None) => {
                    return Self {
                        chunks,
                        failed: false,
                    }
                }
                Err(_) => {
                    return Self {
                        chunks,
                        failed: true,
                    }
                }
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(_, c)| c.to_vec()).collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes()).unwrap()
    }

    fn events(&self) -> Vec<Value> {
        sse_data(&self.bytes())
            .iter()
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }
}

/// The `data` of every complete SSE frame (LF or CRLF lines; comments skipped; a frame cut
/// before its blank line is left out, as SSE clients do).
fn sse_data(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut frames = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find('\n') {
        let line = rest[..end].trim_end_matches('\r');
        rest = &rest[end + 1..];
        if line.is_empty() {
            if !data.is_empty() {
                frames.push(data.join("\n"));
            }
            data.clear();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    frames
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn deltas(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks what every synthesized stream shares: numbered events that the project's decoder
/// reads, one message, and ids from the same answer number.
fn check_synth_stream(events: &[Value]) {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], index as u64, "{event}");
        match StreamEvent::from_data(&event.to_string()).unwrap() {
            Decoded::Event(StreamEvent::Unknown { kind, .. }) => panic!("unknown event {kind}"),
            Decoded::Event(_) => {}
            Decoded::DoneSentinel => panic!("no [DONE] expected"),
        }
    }
    assert_eq!(
        kinds(&events[..4]),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    let id = events[0]["response"]["id"].as_str().unwrap();
    let number = id.strip_prefix("resp_synth_").unwrap();
    assert_eq!(events[2]["item"]["id"], format!("msg_synth_{number}"));
}

fn last_event(events: &[Value]) -> StreamEvent {
    let last = events.last().unwrap().to_string();
    match StreamEvent::from_data(&last).unwrap() {
        Decoded::Event(event) => event,
        Decoded::DoneSentinel => panic!("[DONE]"),
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Asserts an OpenAI-shaped `invalid_request_error` and returns its message.
async fn expect_invalid(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    let body = Body::read(response).await.json();
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["param"], Value::Null, "{body}");
    assert_eq!(error["code"], code, "{body}");
    error["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_recording_is_replayed_byte_for_byte() {
    let config = fixtures();
    assert!(
        config.recordings.len() >= 14,
        "{:?}",
        config.recordings.keys()
    );
    let server = TestServer::start(config.clone()).await;
    for (name, recording) in &config.recordings {
        for attempt in &recording.attempts {
            let response = server.ask(name, json!("hi")).await;
            assert_eq!(response.status().as_u16(), attempt.status, "{name}");
            for (header_name, value) in &attempt.headers {
                assert_eq!(
                    header(&response, header_name),
                    Some(value.as_str()),
                    "{name}: {header_name}"
                );
            }
            let body = Body::read(response).await;
            let disconnects = attempt
                .steps
                .iter()
                .any(|s| matches!(s, shared::openai::Step::DisconnectAfterSeq { .. }));
            if disconnects {
                assert_eq!(
                    body.bytes(),
                    attempt.render(Replay::UntilDisconnect),
                    "{name}"
                );
                assert!(body.failed, "{name}: the connection should drop");
            } else {
                assert_eq!(body.bytes(), attempt.render(Replay::Full), "{name}");
                assert!(!body.failed, "{name}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn attempts_rotate_per_recording() {
    let config = fixtures();
    let recording = config.recordings["09_http429_then_success"].clone();
    let server = TestServer::start(config).await;
    let model = "09_http429_then_success";
    for (request, expected) in [429, 200, 429, 200, 429].into_iter().enumerate() {
        // Another recording in between does not move this one's counter.
        let other = server.ask("01_plain_text", json!("x")).await;
        assert_eq!(other.status(), 200);
        let response = server.ask(model, json!("hi")).await;
        assert_eq!(response.status().as_u16(), expected, "request {request}");
        let attempt = &recording.attempts[request % 2];
        if expected == 429 {
            assert_eq!(header(&response, "retry-after-ms"), Some("750"));
        }
        let body = Body::read(response).await;
        assert_eq!(body.bytes(), attempt.render_body(), "request {request}");
    }
    // The second path serves the same, and counts with the first.
    let response = server
        .post(
            "/responses",
            json!({"model": model, "stream": true}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn synth_text_matches_deltas_and_done_and_completes() {
    let server = TestServer::start(ReplayConfig::default()).await;
    let model = "synth:tokens=40,rate=0,seed=9";
    let synth = Synth::parse(model).unwrap().unwrap();
    let mut texts = Vec::new();
    for _ in 0..2 {
        let response = server.ask(model, json!("hello")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        let body = Body::read(response).await;
        assert!(!body.failed);
        let events = body.events();
        check_synth_stream(&events);
        assert_eq!(events.len(), 4 + 40 + 4);
        assert_eq!(
            kinds(&events[44..]),
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let text = deltas(&events).concat();
        assert_eq!(text, synth.text());
        assert_eq!(events[44]["text"], text);
        assert_eq!(events[45]["part"]["text"], text);
        assert_eq!(events[46]["item"]["content"][0]["text"], text);
        let completed = &events[47]["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output"][0]["content"][0]["text"], text);
        assert_eq!(completed["usage"]["output_tokens"], 40);
        assert_eq!(completed["model"], model);
        assert_eq!(
            last_event(&events).terminal_status(),
            Some(Status::Completed)
        );
        assert!(text.chars().any(|c| c.len_utf8() > 1), "{text}");
        texts.push((text, completed["id"].clone()));
    }
    assert_eq!(texts[0].0, texts[1].0, "the same seed gives the same text");
    assert_ne!(texts[0].1, texts[1].1, "every answer has its own id");

    let other = Body::read(
        server
            .ask("synth:tokens=40,rate=0,seed=10", json!("hello"))
            .await,
    )
    .await;
    assert_ne!(deltas(&other.events()).concat(), texts[0].0);
    server.stop().await;
}

#[tokio::test]
async fn retryable_http_faults_fail_every_other_request() {
    let server = TestServer::start(ReplayConfig::default()).await;
    for (fault, status, code) in [
        ("http429", 429, "rate_limit_exceeded"),
        ("http500", 500, "server_error"),
    ] {
        let model = format!("synth:tokens=3,rate=0,fault={fault}");
        for request in 0..4 {
            let response = server.ask(&model, json!("hi")).await;
            if request % 2 == 0 {
                assert_eq!(response.status().as_u16(), status, "{fault} {request}");
                assert_eq!(header(&response, "retry-after-ms"), Some("10"));
                assert_eq!(header(&response, "content-type"), Some("application/json"));
                let body = Body::read(response).await.json();
                assert_eq!(body["error"]["code"], code, "{body}");
                assert!(body["error"]["message"].is_string());
            } else {
                assert_eq!(response.status(), 200, "{fault} {request}");
                let events = Body::read(response).await.events();
                check_synth_stream(&events);
                assert_eq!(
                    last_event(&events).terminal_status(),
                    Some(Status::Completed)
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn fatal_http_faults_fail_every_request() {
    let server = TestServer::start(ReplayConfig::default()).await;
    for (fault, status, code) in [
        ("http401", 401, "invalid_api_key"),
        ("quota", 429, "insufficient_quota"),
    ] {
        let model = format!("synth:fault={fault}");
        for _ in 0..3 {
            let response = server.ask(&model, json!("hi")).await;
            assert_eq!(response.status().as_u16(), status, "{fault}");
            assert_eq!(header(&response, "retry-after-ms"), None);
            let text = String::from_utf8(Body::read(response).await.bytes()).unwrap();
            let error = ApiError::from_body(status, &text);
            assert_eq!(error.code.as_deref(), Some(code), "{text}");
            assert_eq!(error.is_insufficient_quota(), fault == "quota");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn stream_faults_end_the_stream_as_asked() {
    let server = TestServer::start(ReplayConfig::default()).await;
    let ask = |fault: &str| {
        let model = format!("synth:tokens=8,rate=0,seed=5,fault={fault}");
        let expected = Synth::parse(&model).unwrap().unwrap().streamed_text();
        (model, expected)
    };

    let (model, expected) = ask("error@3");
    let events = Body::read(server.ask(&model, json!("hi")).await)
        .await
        .events();
    check_synth_stream(&events);
    assert_eq!(deltas(&events).concat(), expected);
    assert_eq!(deltas(&events).len(), 3);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(
        last["error"]["code"], "server_error",
        "nested shape: {last}"
    );
    assert!(last_event(&events).is_terminal());

    let (model, expected) = ask("truncate@4");
    let body = Body::read(server.ask(&model, json!("hi")).await).await;
    assert!(!body.failed, "the body ends normally");
    let events = body.events();
    check_synth_stream(&events);
    assert_eq!(deltas(&events).concat(), expected);
    assert_eq!(events.last().unwrap()["type"], "response.output_text.delta");
    assert!(!last_event(&events).is_terminal());

    let (model, expected) = ask("incomplete@5");
    let events = Body::read(server.ask(&model, json!("hi")).await)
        .await
        .events();
    check_synth_stream(&events);
    assert_eq!(deltas(&events).concat(), expected);
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], expected);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 5);
    assert_eq!(
        last_event(&events).terminal_status(),
        Some(Status::Incomplete)
    );

    let (model, expected) = ask("failed@2");
    let events = Body::read(server.ask(&model, json!("hi")).await)
        .await
        .events();
    check_synth_stream(&events);
    assert_eq!(deltas(&events).concat(), expected);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert!(last["response"]["error"]["message"].as_str().unwrap().len() > 10);
    assert_eq!(last_event(&events).terminal_status(), Some(Status::Failed));

    // A fault at 0 comes before any text.
    let (model, _) = ask("error@0");
    let events = Body::read(server.ask(&model, json!("hi")).await)
        .await
        .events();
    assert_eq!(kinds(&events).len(), 5);
    assert!(deltas(&events).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_stall_keeps_the_connection_open_until_shutdown() {
    let server = TestServer::start(ReplayConfig::default()).await;
    let model = "synth:tokens=6,rate=0,fault=stall@2";
    let mut response = server.ask(model, json!("hi")).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    loop {
        match timeout(Duration::from_millis(400), response.chunk()).await {
            Ok(Ok(Some(chunk))) => received.extend_from_slice(&chunk),
            Ok(other) => panic!("the stream ended: {other:?}"),
            Err(_) => break,
        }
    }
    let events: Vec<Value> = sse_data(&received)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    check_synth_stream(&events);
    assert_eq!(deltas(&events).len(), 2);
    assert_eq!(events.len(), 6);
    // Shutting down cuts the stalled stream, so serve returns.
    let reader = tokio::spawn(async move { response.chunk().await.map(|c| c.map(|c| c.len())) });
    server.stop().await;
    let rest = timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(rest, Err(_) | Ok(None)), "{rest:?}");
}

#[tokio::test]
async fn interval_paces_recorded_chunks() {
    let interval = Duration::from_millis(40);
    let server = TestServer::start(fixtures().with_interval(interval)).await;
    let started = Instant::now();
    let response = server.ask("01_plain_text", json!("hi")).await;
    let body = Body::read(response).await;
    let elapsed = started.elapsed();
    // Eleven events, ten pauses between them.
    assert!(elapsed >= interval * 10, "{elapsed:?}");
    assert!(body.chunks.len() >= 2, "{} chunks", body.chunks.len());
    let first = body.chunks.first().unwrap().0;
    let last = body.chunks.last().unwrap().0;
    assert!(last - first >= interval * 5, "{:?}", last - first);
    server.stop().await;
}

#[tokio::test]
async fn rate_paces_synthesized_deltas() {
    let server = TestServer::start(ReplayConfig::default()).await;
    let started = Instant::now();
    let response = server.ask("synth:tokens=10,rate=40", json!("hi")).await;
    let body = Body::read(response).await;
    let elapsed = started.elapsed();
    // Ten pauses of 25 ms, one before each delta.
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(body.chunks.len() >= 5, "{} chunks", body.chunks.len());
    let first = body.chunks.first().unwrap().0;
    let last = body.chunks.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(200),
        "{:?}",
        last - first
    );
    assert_eq!(
        deltas(&body.events()).concat(),
        Synth::for_request("synth:tokens=10", Some("hi"))
            .unwrap()
            .unwrap()
            .text()
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_openai_shaped_400s() {
    let server = TestServer::fixtures().await;
    let post = |body: &str| server.post("/v1/responses", body.to_owned());
    let message = expect_invalid(post("{not json").await, 400, "invalid_json").await;
    assert!(message.contains("parse the JSON body"), "{message}");
    expect_invalid(post("").await, 400, "invalid_json").await;
    expect_invalid(post("[1,2]").await, 400, "invalid_json").await;
    let message = expect_invalid(
        post(r#"{"input":"hi","stream":true}"#).await,
        400,
        "missing_required_parameter",
    )
    .await;
    assert!(message.contains("'model'"), "{message}");
    expect_invalid(
        post(r#"{"model":7,"stream":true}"#).await,
        400,
        "invalid_type",
    )
    .await;
    expect_invalid(
        post(r#"{"model":"synth","input":5,"stream":true}"#).await,
        400,
        "invalid_type",
    )
    .await;
    expect_invalid(
        post(r#"{"model":"synth","stream":"yes"}"#).await,
        400,
        "invalid_type",
    )
    .await;
    let message = expect_invalid(
        post(r#"{"model":"synth","input":"hi"}"#).await,
        400,
        "unsupported_value",
    )
    .await;
    assert!(message.contains("stream"), "{message}");

    for (model, expected) in [
        ("synth:tokens=lots", "tokens must be a whole number"),
        ("synth:fault=meteor@3", "unknown fault `meteor`"),
        ("synth:tokens=2,fault=stall@3", "only tokens=2"),
    ] {
        let message = expect_invalid(
            server.ask(model, json!("hi")).await,
            400,
            "invalid_synth_model",
        )
        .await;
        assert!(message.contains(expected), "{model}: {message}");
        assert!(message.contains(model), "{model}: {message}");
    }

    let message = expect_invalid(
        server
            .client
            .get(format!("{}/v1/models", server.base))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_url",
    )
    .await;
    assert!(message.contains("GET /v1/models"), "{message}");
    expect_invalid(
        server
            .client
            .get(format!("{}/v1/responses", server.base))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_url",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_models_get_a_friendly_answer_quoting_the_input() {
    let server = TestServer::start(ReplayConfig::default()).await;
    let input = json!([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "An older question"},
        {"role": "assistant", "content": "An older answer"},
        {"role": "user", "content": [
            {"type": "input_text", "text": "Quel temps fait-il"},
            {"type": "input_image", "image_url": "data:,"},
            {"type": "input_text", "text": "à Zürich? 🙂"}
        ]},
        {"type": "function_call_output", "call_id": "c", "output": "ignored"}
    ]);
    let body = Body::read(server.ask("gpt-5.4-mini", input).await).await;
    let events = body.events();
    check_synth_stream(&events);
    let text = deltas(&events).concat();
    assert_eq!(
        text,
        friendly_text(Some("Quel temps fait-il\nà Zürich? 🙂"))
    );
    assert!(text.contains("local replay server"), "{text}");
    assert!(text.contains("“Quel temps fait-il à Zürich? 🙂”"), "{text}");
    assert_eq!(
        last_event(&events).terminal_status(),
        Some(Status::Completed)
    );
    assert_eq!(events[0]["response"]["model"], "gpt-5.4-mini");

    let body = Body::read(server.ask("gpt-5.4-mini", json!("Tell me a joke")).await).await;
    let text = deltas(&body.events()).concat();
    assert!(text.contains("“Tell me a joke”"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_models_get_the_default_recording_when_there_is_one() {
    let config = fixtures().with_default("00_seed_joke").unwrap();
    let expected = config.recordings["00_seed_joke"].attempts[0].render_body();
    let server = TestServer::start(config).await;
    for model in ["gpt-5.4-mini", "anything"] {
        let body = Body::read(server.ask(model, json!("hi")).await).await;
        assert_eq!(body.bytes(), expected, "{model}");
    }
    // Recording names and synth models still win over the default.
    let body = Body::read(server.ask("synth:tokens=2,rate=0", json!("hi")).await).await;
    assert_eq!(deltas(&body.events()).len(), 2);
    server.stop().await;
}

#[test]
fn load_dir_names_the_bad_file_and_line() {
    let dir = scratch_dir("load_dir");
    let good = fs::read_to_string(format!("{FIXTURES}/01_plain_text.jsonl")).unwrap();
    fs::write(dir.join("good.jsonl"), &good).unwrap();
    fs::write(dir.join("notes.txt"), "not a recording").unwrap();
    let config = ReplayConfig::load_dir(&dir).unwrap();
    assert_eq!(config.recordings.keys().collect::<Vec<_>>(), ["good"]);
    assert_eq!(config.default, None);
    assert_eq!(config.interval, Duration::ZERO);
    assert!(matches!(
        config.clone().with_default("missing"),
        Err(ReplayError::UnknownRecording { name }) if name == "missing"
    ));
    assert_eq!(
        config.with_default("good").unwrap().default.as_deref(),
        Some("good")
    );

    fs::write(
        dir.join("broken.jsonl"),
        "{\"kind\":\"http\",\"status\":200}\n\n{\"kind\":\"sse\"}\n",
    )
    .unwrap();
    let error = ReplayConfig::load_dir(&dir).unwrap_err();
    match &error {
        ReplayError::Recording { path, source } => {
            assert_eq!(path, &dir.join("broken.jsonl"));
            assert_eq!(source.line, 3);
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("broken.jsonl: recording line 3:"),
        "{message}"
    );

    let missing = dir.join("nowhere");
    let error = ReplayConfig::load_dir(&missing).unwrap_err();
    assert!(matches!(error, ReplayError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("nowhere"), "{error}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_last_user_text_is_what_gets_quoted() {
    let parse = |body: Value| CreateRequest::parse(body.to_string().as_bytes()).unwrap();
    let text =
        |input: Value| parse(json!({"model": "m", "stream": true, "input": input})).last_input_text;
    assert_eq!(text(json!("plain")), Some("plain".into()));
    assert_eq!(text(json!("  ")), None);
    assert_eq!(text(json!([])), None);
    assert_eq!(
        text(json!([{"role": "user", "content": "first"}, {"role": "user", "content": ""}])),
        Some("first".into())
    );
    assert_eq!(
        text(
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "typed"}]}])
        ),
        Some("typed".into())
    );
    assert_eq!(
        text(json!([{"role": "assistant", "content": "mine"}])),
        None
    );
    assert_eq!(text(json!([1, "x", null, {"role": "user"}])), None);
    assert_eq!(
        parse(json!({"model": "m", "stream": true})).last_input_text,
        None
    );
    assert!(
        parse(json!({"model": "m", "stream": true, "input": "x".repeat(400)})).input_tokens >= 100
    );
}

/// A fresh directory under the system's temporary directory.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("replay-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_delta_log_records_when_each_delta_leaves() {
    let log = super::DeltaLog::default();
    let config = ReplayConfig {
        delta_log: Some(log.clone()),
        ..ReplayConfig::default()
    };
    let server = TestServer::start(config).await;
    let before = std::time::SystemTime::now();
    let response = server.ask("synth:tokens=5,rate=100", json!("hi")).await;
    let body = Body::read(response).await;
    assert_eq!(deltas(&body.events()).len(), 5);
    let sent = log.take();
    assert_eq!(
        sent.iter().map(|s| s.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(sent.iter().all(|s| s.response_id == sent[0].response_id));
    assert!(sent[0].response_id.starts_with("resp_synth_"));
    assert!(sent.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(sent[0].at >= before);
    assert!(log.take().is_empty(), "take empties the log");
    server.stop().await;
}

impl TestServer {
    /// GETs `path` (a retrieve).
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// POSTs a streaming create request in background mode.
    async fn ask_background(&self, model: &str, input: Value) -> reqwest::Response {
        let body = json!({ "model": model, "input": input, "stream": true, "background": true });
        self.post("/v1/responses", body.to_string()).await
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_dropped_background_answer_streams_again_after_the_last_event_seen() {
    let server = TestServer::start(ReplayConfig::default()).await;
    let model = "synth:tokens=12,rate=0,seed=3,fault=drop@5";
    let whole = Synth::parse(model).unwrap().unwrap().text();

    let first = Body::read(server.ask_background(model, json!("hi")).await).await;
    assert!(first.failed, "the connection drops");
    let first = first.events();
    check_synth_stream(&first);
    assert_eq!(deltas(&first).len(), 5);
    assert_eq!(first[0]["response"]["background"], true);
    let id = first[0]["response"]["id"].as_str().unwrap().to_owned();
    let last = *seqs(&first).last().unwrap();

    let path = format!("/v1/responses/{id}?stream=true&starting_after={last}");
    let rest = Body::read(server.get(&path).await).await;
    assert!(!rest.failed, "the drop breaks only the first connection");
    let rest = rest.events();
    assert_eq!(seqs(&rest).first(), Some(&(last + 1)));
    let mut all = first.clone();
    all.extend(rest.iter().cloned());
    check_synth_stream(&all);
    assert_eq!(deltas(&all).concat(), whole);
    assert_eq!(last_event(&all).terminal_status(), Some(Status::Completed));

    // Without starting_after the whole stream comes again, as the SDKs ask for it; the
    // unversioned path serves it too.
    let again = Body::read(server.get(&format!("/responses/{id}?stream=true")).await)
        .await
        .events();
    assert_eq!(seqs(&again), (0..all.len() as u64).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn a_paced_background_answer_resumes_without_replaying_the_time_away() {
    let server = TestServer::start(ReplayConfig::default()).await;
    // 20 deltas at 50/s: 400 ms in all. The client is away for 300 ms after delta 2.
    let model = "synth:tokens=20,rate=50,seed=1,fault=drop@2";
    let first = Body::read(server.ask_background(model, json!("hi")).await)
        .await
        .events();
    let id = first[0]["response"]["id"].as_str().unwrap().to_owned();
    let last = *seqs(&first).last().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let path = format!("/v1/responses/{id}?stream=true&starting_after={last}");
    let rest = Body::read(server.get(&path).await).await;
    let took = asked.elapsed();
    assert_eq!(deltas(&rest.events()).len(), 18);
    // The deltas generated while the client was away come at once; only the remaining
    // ~60 ms (of 400) are paced.
    assert!(took < Duration::from_millis(250), "took {took:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_background_recording_streams_again_after_its_disconnect() {
    let server = TestServer::fixtures().await;
    let first = Body::read(server.ask("12_background_resume", json!("hi")).await).await;
    assert!(first.failed);
    let first = first.events();
    assert_eq!(seqs(&first), [0, 1, 2, 3, 4]);
    let id = first[0]["response"]["id"].as_str().unwrap();
    let rest = Body::read(
        server
            .get(&format!("/v1/responses/{id}?stream=true&starting_after=4"))
            .await,
    )
    .await;
    assert!(!rest.failed);
    let rest = rest.events();
    assert_eq!(seqs(&rest), [5, 6, 7, 8, 9, 10]);
    assert_eq!(deltas(&rest).concat(), "Long answer");
    server.stop().await;
}

#[tokio::test]
async fn only_kept_background_answers_stream_again() {
    let server = TestServer::start(ReplayConfig::default()).await;
    // A foreground answer is not kept: its drop loses it, as on OpenAI.
    let model = "synth:tokens=4,rate=0,fault=drop@2";
    let first = Body::read(server.ask(model, json!("hi")).await)
        .await
        .events();
    assert_eq!(first[0]["response"]["background"], false);
    let id = first[0]["response"]["id"].as_str().unwrap().to_owned();
    let message = expect_invalid(
        server.get(&format!("/v1/responses/{id}?stream=true")).await,
        404,
        "not_found",
    )
    .await;
    assert!(message.contains(&id), "{message}");
    expect_invalid(
        server.get("/v1/responses/resp_nobody?stream=true").await,
        404,
        "not_found",
    )
    .await;
    // Only streams are served, and the cursor is a number.
    let kept = Body::read(server.ask_background(model, json!("hi")).await)
        .await
        .events();
    let id = kept[0]["response"]["id"].as_str().unwrap().to_owned();
    expect_invalid(
        server.get(&format!("/v1/responses/{id}")).await,
        400,
        "unsupported_value",
    )
    .await;
    expect_invalid(
        server
            .get(&format!("/v1/responses/{id}?stream=true&starting_after=x"))
            .await,
        400,
        "invalid_query",
    )
    .await;
    let bad = json!({ "model": model, "stream": true, "background": "yes" });
    expect_invalid(
        server.post("/v1/responses", bad.to_string()).await,
        400,
        "invalid_type",
    )
    .await;
    server.stop().await;
}
