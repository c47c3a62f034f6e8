//! Tests: the client against scripted local servers (retries, errors, streams that break),
//! the request body, and that the API key never shows in what it prints.

use std::convert::Infallible;
use std::fs;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap as AxumHeaders;
use axum::routing::post;
use axum::Router;
use futures_util::stream;
use serde_json::{json, Value};
use shared::openai::{Attempt, Recording, Replay};

use super::*;

const KEY: &str = "sk-test-Zq8vLk3NwX2pR7tY";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai/");

/// How a scripted answer ends once its chunks are written.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Close the body normally.
    Close,
    /// Fail the body, which aborts the connection mid-response.
    Break,
    /// Keep the connection open and send nothing more.
    Hang,
}

/// One scripted answer to one `POST /v1/responses`.
#[derive(Clone, Debug)]
struct Reply {
    /// Wait this long before answering at all.
    delay: Duration,
    status: u16,
    headers: Vec<(String, String)>,
    chunks: Vec<Bytes>,
    end: End,
}

impl Reply {
    fn error(status: u16, code: &str, message: &str) -> Self {
        let body = json!({"error": {"message": message, "type": "invalid_request_error",
            "param": null, "code": code}});
        Self::raw(status, "application/json", body.to_string())
    }

    fn raw(status: u16, content_type: &str, body: String) -> Self {
        Self {
            delay: Duration::ZERO,
            status,
            headers: vec![("content-type".into(), content_type.into())],
            chunks: vec![Bytes::from(body)],
            end: End::Close,
        }
    }

    /// A 200 event stream: created, two text deltas and completed, one chunk per frame.
    fn stream() -> Self {
        let mut reply = Self::raw(200, "text/event-stream; charset=utf-8", String::new());
        reply.chunks = sample_frames().into_iter().map(Bytes::from).collect();
        reply.header("x-request-id", "req_test_1")
    }

    fn from_attempt(attempt: &Attempt) -> Self {
        Self {
            delay: Duration::ZERO,
            status: attempt.status,
            headers: attempt.headers.clone().into_iter().collect(),
            chunks: vec![Bytes::from(attempt.render(Replay::Full))],
            end: End::Close,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn ending(mut self, end: End) -> Self {
        self.end = end;
        self
    }

    fn keep_first_frames(mut self, count: usize) -> Self {
        self.chunks.truncate(count);
        self
    }

    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

fn sample_frames() -> Vec<String> {
    let events = [
        json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_1", "status": "in_progress"}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": "Hi"}),
        json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": " there"}),
        json!({"type": "response.completed", "sequence_number": 3,
            "response": {"id": "resp_1", "status": "completed"}}),
    ];
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    /// The method and the path with its query.
    request: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

struct Script {
    replies: Vec<Reply>,
    seen: Mutex<Vec<Seen>>,
}

/// A local server answering `POST /v1/responses` from a script, one reply per request (the
/// last reply repeats).
struct Server {
    base_url: String,
    script: Arc<Script>,
}

impl Server {
    async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Script {
            replies,
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/responses", post(answer))
            .route("/v1/responses/{id}", axum::routing::get(answer))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: format!("http://{address}/v1"),
            script,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    fn posts(&self) -> usize {
        self.seen().len()
    }

    fn client(&self) -> OpenAi {
        OpenAi::new(config(&self.base_url)).unwrap()
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: AxumHeaders,
    body: Bytes,
) -> axum::response::Response {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let index = {
        let mut seen = script.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            request: format!("{method} {uri}"),
            authorization: text("authorization"),
            content_type: text("content-type"),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        seen.len() - 1
    };
    let reply = script
        .replies
        .get(index)
        .or(script.replies.last())
        .unwrap()
        .clone();
    tokio::time::sleep(reply.delay).await;
    let chunks = stream::iter(reply.chunks.into_iter().map(Ok::<_, io::Error>));
    let body = match reply.end {
        End::Close => Body::from_stream(chunks),
        // The pause lets the head and the chunks reach the client before the break.
        End::Break => Body::from_stream(chunks.chain(stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(io::Error::other("scripted break"))
        }))),
        End::Hang => Body::from_stream(chunks.chain(stream::pending())),
    };
    let mut response = axum::response::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    response.body(body).unwrap()
}

/// Retries that wait a few milliseconds, so the tests stay fast.
fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        max_retry_after: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn config(base_url: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base_url.to_owned(),
        api_key: Some(KEY.to_owned()),
        retry: fast_retries(),
        idle_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    }
}

fn request() -> ResponseRequest {
    ResponseRequest::new("gpt-5.4-mini", "Say hi")
}

/// Reads a stream to its end.
async fn drain(mut stream: ResponseStream) -> Vec<Result<StreamEvent, StreamError>> {
    let mut outcomes = Vec::new();
    while let Some(outcome) = stream.next().await {
        outcomes.push(outcome);
    }
    outcomes
}

fn text_of(outcomes: &[Result<StreamEvent, StreamError>]) -> String {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(StreamEvent::OutputTextDelta(d)) => Some(d.delta.as_str()),
            _ => None,
        })
        .collect()
}

fn gaps(seen: &[Seen]) -> Vec<Duration> {
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test]
async fn a_stream_is_posted_once_and_decoded() {
    let server = Server::start(vec![Reply::stream()]).await;
    let stream = server.client().stream(&request()).await.unwrap();
    assert_eq!(stream.retries(), 0);
    assert_eq!(stream.request_id(), Some("req_test_1"));
    let outcomes = drain(stream).await;
    assert_eq!(outcomes.len(), 4);
    assert_eq!(text_of(&outcomes), "Hi there");
    assert!(outcomes[3].as_ref().unwrap().is_terminal());

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen[0].body,
        json!({"model": "gpt-5.4-mini", "input": "Say hi", "stream": true})
    );
}

#[tokio::test]
async fn the_base_url_may_end_with_a_slash_and_every_field_is_sent() {
    let server = Server::start(vec![Reply::stream()]).await;
    let client = OpenAi::new(config(&format!("{}/", server.base_url))).unwrap();
    let request = ResponseRequest {
        model: "gpt-5.4".into(),
        input: json!([{"role": "user", "content": "Weather in Paris?"}]),
        instructions: Some("Be brief.".into()),
        max_output_tokens: Some(512),
        background: true,
    };
    let outcomes = drain(client.stream(&request).await.unwrap()).await;
    assert_eq!(outcomes.len(), 4);
    assert_eq!(
        server.seen()[0].body,
        json!({"model": "gpt-5.4", "input": [{"role": "user", "content": "Weather in Paris?"}],
            "instructions": "Be brief.", "max_output_tokens": 512, "background": true,
            "stream": true})
    );
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent() {
    let server = Server::start(vec![Reply::stream()]).await;
    let config = OpenAiConfig {
        api_key: None,
        ..config(&server.base_url)
    };
    let stream = OpenAi::new(config).unwrap().stream(&request()).await;
    assert_eq!(drain(stream.unwrap()).await.len(), 4);
    assert_eq!(server.seen()[0].authorization, None);
}

#[tokio::test]
async fn a_rate_limit_is_retried_once() {
    let server = Server::start(vec![
        Reply::error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "1"),
        Reply::stream(),
    ])
    .await;
    let stream = server.client().stream(&request()).await.unwrap();
    assert_eq!(stream.retries(), 1);
    assert_eq!(text_of(&drain(stream).await), "Hi there");
    assert_eq!(server.posts(), 2);
}

#[tokio::test]
async fn recorded_429_then_success_waits_the_requested_750_ms() {
    let text = fs::read_to_string(format!("{FIXTURES}09_http429_then_success.jsonl")).unwrap();
    let recording = Recording::parse(&text).unwrap();
    let server = Server::start(recording.attempts.iter().map(Reply::from_attempt).collect()).await;
    let config = OpenAiConfig {
        // Backoff would wait seconds: only the server's retry-after-ms makes this quick.
        retry: RetryPolicy {
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            ..fast_retries()
        },
        ..config(&server.base_url)
    };
    let stream = OpenAi::new(config)
        .unwrap()
        .stream(&request())
        .await
        .unwrap();
    assert_eq!(stream.retries(), 1);
    let outcomes = drain(stream).await;
    let want: Vec<_> = recording.attempts[1].events().map(Result::unwrap).collect();
    let got: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, want);
    let gap = gaps(&server.seen())[0];
    assert!(gap >= Duration::from_millis(750), "{gap:?}");
    assert!(gap < Duration::from_secs(10), "{gap:?}");
}

#[tokio::test]
async fn retry_after_ms_is_preferred_to_retry_after_and_to_backoff() {
    let server = Server::start(vec![
        Reply::error(503, "server_is_overloaded", "Slow down")
            .header("retry-after-ms", "300")
            .header("retry-after", "30"),
        Reply::stream(),
    ])
    .await;
    let config = OpenAiConfig {
        retry: RetryPolicy {
            initial_backoff: Duration::from_secs(20),
            max_backoff: Duration::from_secs(20),
            ..fast_retries()
        },
        ..config(&server.base_url)
    };
    let stream = OpenAi::new(config)
        .unwrap()
        .stream(&request())
        .await
        .unwrap();
    assert_eq!(stream.retries(), 1);
    let gap = gaps(&server.seen())[0];
    assert!(gap >= Duration::from_millis(300), "{gap:?}");
    assert!(gap < Duration::from_secs(10), "{gap:?}");
}

#[tokio::test]
async fn two_server_errors_then_success_take_two_retries() {
    let server = Server::start(vec![
        Reply::error(500, "server_error", "The server had an error"),
        Reply::error(502, "bad_gateway", "Bad gateway"),
        Reply::stream(),
    ])
    .await;
    let stream = server.client().stream(&request()).await.unwrap();
    assert_eq!(stream.retries(), 2);
    assert_eq!(text_of(&drain(stream).await), "Hi there");
    assert_eq!(server.posts(), 3);
}

#[tokio::test]
async fn three_server_errors_give_up_with_a_sentence() {
    let server = Server::start(vec![Reply::error(
        500,
        "server_error",
        "The server had an error while processing your request.",
    )])
    .await;
    let error = server.client().stream(&request()).await.unwrap_err();
    assert_eq!(server.posts(), 3);
    assert_eq!(error.status(), Some(500));
    assert_eq!(error.attempts(), 3);
    assert_eq!(
        error.to_string(),
        "OpenAI failed to answer the request (HTTP 500 server_error) after 3 attempts: \
         The server had an error while processing your request."
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let cases = [
        (
            Reply::error(401, "invalid_api_key", "Incorrect API key provided"),
            "OpenAI refused the request (HTTP 401 invalid_api_key): Incorrect API key provided",
        ),
        (
            Reply::error(400, "", "Invalid value for 'input'."),
            "OpenAI refused the request (HTTP 400 invalid_request_error): Invalid value for 'input'.",
        ),
        (
            Reply::error(403, "unsupported_country_region_territory", "Country not supported"),
            "OpenAI refused the request (HTTP 403 unsupported_country_region_territory): \
             Country not supported",
        ),
        (
            Reply::error(404, "model_not_found", "The model `gpt-9` does not exist"),
            "OpenAI refused the request (HTTP 404 model_not_found): The model `gpt-9` does not exist",
        ),
        (
            Reply::error(429, "insufficient_quota", "You exceeded your current quota"),
            "OpenAI refused the request (HTTP 429 insufficient_quota): You exceeded your current quota",
        ),
        (
            Reply::raw(404, "text/plain", "404 page not found".into()),
            "OpenAI refused the request (HTTP 404): 404 page not found",
        ),
    ];
    for (reply, sentence) in cases {
        let status = reply.status;
        let server = Server::start(vec![reply, Reply::stream()]).await;
        let error = server.client().stream(&request()).await.unwrap_err();
        assert_eq!(server.posts(), 1, "HTTP {status} was retried");
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.attempts(), 1);
        assert_eq!(error.to_string(), sentence);
    }
}

#[tokio::test]
async fn x_should_retry_overrides_the_status() {
    let server = Server::start(vec![
        Reply::error(500, "server_error", "Do not retry this").header("x-should-retry", "false"),
        Reply::stream(),
    ])
    .await;
    let error = server.client().stream(&request()).await.unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert_eq!(server.posts(), 1);

    let server = Server::start(vec![
        Reply::error(400, "flaky", "Retry this one").header("x-should-retry", "true"),
        Reply::stream(),
    ])
    .await;
    let stream = server.client().stream(&request()).await.unwrap();
    assert_eq!(stream.retries(), 1);
    assert_eq!(server.posts(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let started = Instant::now();
    let error = OpenAi::new(config(&base_url))
        .unwrap()
        .stream(&request())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(error.status(), None);
    assert_eq!(error.attempts(), 3);
    assert_eq!(
        error.to_string(),
        format!("could not reach OpenAI at {base_url} after 3 attempts: connection refused")
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = Server::start(vec![Reply::stream().delayed(Duration::from_secs(30))]).await;
    let config = OpenAiConfig {
        idle_timeout: Duration::from_millis(200),
        retry: RetryPolicy {
            max_retries: 1,
            ..fast_retries()
        },
        ..config(&server.base_url)
    };
    let error = OpenAi::new(config)
        .unwrap()
        .stream(&request())
        .await
        .unwrap_err();
    assert_eq!(server.posts(), 2);
    assert_eq!(
        error.to_string(),
        format!(
            "could not reach OpenAI at {} after 2 attempts: no response within 200 ms",
            server.base_url
        )
    );
}

#[tokio::test]
async fn json_instead_of_a_stream_is_an_error() {
    let body = json!({"id": "resp_1", "object": "response", "status": "completed"});
    let server = Server::start(vec![Reply::raw(200, "application/json", body.to_string())]).await;
    let error = server.client().stream(&request()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "expected an event stream, got application/json"
    );
    assert_eq!(error.status(), Some(200));
    assert_eq!(server.posts(), 1);
}

#[tokio::test]
async fn a_stream_that_breaks_is_never_posted_again() {
    let server = Server::start(vec![
        Reply::stream().keep_first_frames(2).ending(End::Break),
        Reply::stream(),
    ])
    .await;
    let stream = server.client().stream(&request()).await.unwrap();
    assert_eq!(stream.retries(), 0);
    let outcomes = drain(stream).await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(text_of(&outcomes), "Hi");
    let error = outcomes[2].as_ref().unwrap_err();
    assert!(matches!(error, StreamError::Transport(_)), "{error:?}");
    assert!(error
        .to_string()
        .starts_with("the connection to OpenAI broke mid-stream: "));
    assert!(error.is_fatal());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.posts(), 1);
}

#[tokio::test]
async fn a_stream_cut_mid_event_is_truncated_and_not_retried() {
    let mut reply = Reply::stream().keep_first_frames(2);
    reply.chunks.push(Bytes::from_static(
        b"event: response.output_text.delta\ndata: {\"ty",
    ));
    let server = Server::start(vec![reply, Reply::stream()]).await;
    let outcomes = drain(server.client().stream(&request()).await.unwrap()).await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(
        outcomes[2],
        Err(StreamError::Truncated {
            bytes: "event: response.output_text.delta\ndata: {\"ty".len()
        })
    );
    assert_eq!(server.posts(), 1);
}

#[tokio::test]
async fn a_silent_stream_goes_idle() {
    let server = Server::start(vec![Reply::stream().keep_first_frames(1).ending(End::Hang)]).await;
    let config = OpenAiConfig {
        idle_timeout: Duration::from_millis(300),
        ..config(&server.base_url)
    };
    let mut stream = OpenAi::new(config)
        .unwrap()
        .stream(&request())
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let started = Instant::now();
    assert_eq!(
        stream.next().await,
        Some(Err(StreamError::Idle(Duration::from_millis(300))))
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(stream.next().await, None);
    assert_eq!(server.posts(), 1);
}

#[tokio::test]
async fn the_api_key_is_never_printed() {
    let echo = format!("Incorrect API key provided: {KEY}");
    let server = Server::start(vec![
        Reply::error(401, KEY, &echo),
        Reply::raw(200, KEY, String::new()),
        Reply::error(500, "server_error", &echo),
    ])
    .await;
    let client = server.client();
    let mut errors = Vec::new();
    for _ in 0..3 {
        errors.push(client.stream(&request()).await.unwrap_err());
    }
    let refused = format!(
        "http://127.0.0.1:{}/v1",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    errors.push(
        OpenAi::new(config(&refused))
            .unwrap()
            .stream(&request())
            .await
            .unwrap_err(),
    );
    errors.push(OpenAi::new(config("not a url")).unwrap_err());
    errors.push(
        OpenAi::new(OpenAiConfig {
            api_key: Some(format!("{KEY}\n")),
            ..config(&server.base_url)
        })
        .unwrap_err(),
    );
    assert!(
        errors[0].to_string().contains("[redacted]"),
        "{}",
        errors[0]
    );
    for error in &errors {
        for printed in [error.to_string(), format!("{error:?}")] {
            assert!(!printed.contains(KEY), "{printed}");
        }
    }
    let config = config(&server.base_url);
    for printed in [format!("{config:?}"), format!("{client:?}")] {
        assert!(!printed.contains(KEY), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }
}

#[test]
fn invalid_configurations_are_rejected() {
    for base in ["", "not a url", "ftp://example.com/v1"] {
        let error = OpenAi::new(config(base)).unwrap_err();
        assert!(matches!(error, OpenAiError::Config(_)), "{base}: {error:?}");
    }
    let error = OpenAi::new(OpenAiConfig {
        api_key: Some("sk-\u{7}bell".into()),
        ..config("http://localhost/v1")
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid OpenAI client configuration: the API key holds characters an HTTP header cannot"
    );
}

#[test]
fn requests_serialise_with_stream_and_without_absent_fields() {
    let mut request = ResponseRequest::new("m", json!([{"role": "user", "content": "hi"}]));
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"model": "m", "input": [{"role": "user", "content": "hi"}], "stream": true})
    );
    request.instructions = Some("Be brief.".into());
    request.max_output_tokens = Some(64);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"model": "m", "input": [{"role": "user", "content": "hi"}],
            "instructions": "Be brief.", "max_output_tokens": 64, "stream": true})
    );
}

#[test]
fn error_sentences() {
    let error = |status, body: &str, attempts| OpenAiError::Http {
        error: ApiError::from_body(status, body),
        attempts,
    };
    assert_eq!(
        error(502, "", 1).to_string(),
        "OpenAI failed to answer the request (HTTP 502): no details given"
    );
    assert_eq!(
        error(
            429,
            r#"{"error":{"message":"Slow down","type":"requests"}}"#,
            3
        )
        .to_string(),
        "OpenAI refused the request (HTTP 429 requests) after 3 attempts: Slow down"
    );
    let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "é".repeat(600));
    let text = error(400, &long, 1).to_string();
    assert!(text.ends_with('…') && text.chars().count() < 600, "{text}");
    let unreachable = OpenAiError::Unreachable {
        base_url: "http://127.0.0.1:9/v1".into(),
        attempts: 1,
        reason: "connection refused".into(),
    };
    assert_eq!(
        unreachable.to_string(),
        "could not reach OpenAI at http://127.0.0.1:9/v1 after 1 attempt: connection refused"
    );
    let not_a_stream = OpenAiError::NotAStream {
        status: 200,
        content_type: None,
    };
    assert_eq!(
        not_a_stream.to_string(),
        "expected an event stream, got no content type"
    );
}

#[tokio::test]
async fn a_body_stream_can_be_read_without_http() {
    let frames = sample_frames().concat();
    let body = stream::iter([Ok::<_, Infallible>(Bytes::from(frames))]);
    let stream = ResponseStream::from_body(body, Duration::from_secs(1));
    assert_eq!(stream.retries(), 0);
    assert_eq!(text_of(&drain(stream).await), "Hi there");
}

#[test]
fn the_client_and_its_streams_can_move_between_tasks() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<OpenAi>();
    send_and_sync::<OpenAiError>();
    send::<ResponseStream>();
    send_and_sync::<StreamError>();
}

#[tokio::test]
async fn a_resume_is_a_get_after_the_last_event_retried_until_its_stream_begins() {
    let server = Server::start(vec![
        Reply::error(500, "server_error", "try again"),
        Reply::stream(),
    ])
    .await;
    let client = OpenAi::new(OpenAiConfig {
        retry: fast_retries(),
        ..config(&server.base_url)
    })
    .unwrap();
    let stream = client.resume("resp_1", Some(7)).await.unwrap();
    assert_eq!(stream.retries(), 1);
    assert_eq!(text_of(&drain(stream).await), "Hi there");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(
            request.request,
            "GET /v1/responses/resp_1?stream=true&starting_after=7"
        );
        assert_eq!(request.body, Value::Null, "a resume sends no body");
        assert_eq!(
            request.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
    }
}
