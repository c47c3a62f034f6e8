//! The HTTP side: `POST {base}/responses` with `"stream": true`, retried per the shared
//! [`RetryPolicy`] until a 2xx event stream begins, then handed to the SSE layer.
//!
//! A request is sent again only when it failed before its stream began. Once a stream has
//! started nothing is ever re-posted, because that would generate (and bill) a second answer.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, Url};
use serde::Serialize;

use shared::openai::{ApiError, Decision, Failure, RetryPolicy, StreamEvent};

use super::error::OpenAiError;
use super::sse::{self, Events, StreamError};

/// Where and how to reach an OpenAI-compatible Responses endpoint.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API base, such as `https://api.openai.com/v1`, with or without a trailing slash;
    /// requests go to `{base_url}/responses`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when present. Never printed.
    pub api_key: Option<String>,
    /// When a request that failed before its stream began is tried again.
    pub retry: RetryPolicy,
    /// How long to wait for response headers, and then for each next byte of the stream.
    pub idle_timeout: Duration,
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: None,
            retry: RetryPolicy::default(),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The body of a streaming `POST /responses`.
///
/// Serialises with `"stream": true` and without the fields that are `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseRequest {
    /// The model, such as `gpt-5.4-mini`.
    pub model: String,
    /// A string (one user message) or an array of input items such as
    /// `{"role": "user", "content": "..."}`.
    pub input: serde_json::Value,
    /// System-level instructions.
    pub instructions: Option<String>,
    /// The token budget for reasoning and visible output together.
    pub max_output_tokens: Option<u32>,
    /// Asks for a background response, which goes on generating when the connection
    /// drops and can be streamed again ([`OpenAi::resume`]). OpenAI stores such responses.
    pub background: bool,
}

impl ResponseRequest {
    /// A request for `model` to answer `input`, with no instructions and no token limit.
    pub fn new(model: impl Into<String>, input: impl Into<serde_json::Value>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            instructions: None,
            max_output_tokens: None,
            background: false,
        }
    }
}

impl Serialize for ResponseRequest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The wire shape: the request's fields plus `stream`.
        #[derive(Serialize)]
        struct Wire<'a> {
            model: &'a str,
            input: &'a serde_json::Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            instructions: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            max_output_tokens: Option<u32>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            background: bool,
            stream: bool,
        }
        Wire {
            model: &self.model,
            input: &self.input,
            instructions: self.instructions.as_deref(),
            max_output_tokens: self.max_output_tokens,
            background: self.background,
            stream: true,
        }
        .serialize(serializer)
    }
}

/// A client for streaming Responses. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct OpenAi {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: Url,
    base_url: String,
    retry: RetryPolicy,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// Kept only to scrub it from anything a server or library says back.
    api_key: Option<String>,
}

impl fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAi")
            .field("url", &self.inner.url.as_str())
            .field(
                "api_key",
                &self.inner.api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("retry", &self.inner.retry)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended.
enum Outcome {
    /// A 2xx event stream began.
    Stream(Response),
    /// Failed in a way the retry policy judges; the error is what to report if it gives up.
    Failed(Failure, OpenAiError),
    /// Failed in a way no retry can fix.
    Fatal(OpenAiError),
}

/// At most this much of an error body is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

impl OpenAi {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let url = Url::parse(&format!("{base}/responses"))
            .map_err(|e| OpenAiError::Config(format!("base URL `{base}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OpenAiError::Config(format!(
                "base URL `{base}` is not an http or https URL"
            )));
        }
        let api_key = config.api_key.filter(|key| !key.is_empty());
        let mut headers = HeaderMap::new();
        if let Some(key) = &api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                OpenAiError::Config("the API key holds characters an HTTP header cannot".into())
            })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("publisher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OpenAiError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                url,
                base_url: base.to_owned(),
                retry: config.retry,
                idle_timeout: config.idle_timeout,
                connect_timeout: config.connect_timeout,
                api_key,
            }),
        })
    }

    /// Starts a streamed response: `POST {base}/responses`.
    ///
    /// Retries only before a 2xx stream has begun, as the shared [`RetryPolicy`] decides:
    /// connection failures and 408, 409, 429 and 5xx answers, waiting as `retry-after-ms` or
    /// `retry-after` ask when they are within the policy's limit, else backing off
    /// exponentially with jitter. Never 400, 401, 403, 404 or a 429 for `insufficient_quota`;
    /// an `x-should-retry` header overrides the status rule. Once a stream has begun, nothing
    /// is ever sent again.
    pub async fn stream(&self, request: &ResponseRequest) -> Result<ResponseStream, OpenAiError> {
        let body = serde_json::to_vec(request)
            .map(Bytes::from)
            .map_err(|e| OpenAiError::Request(e.to_string()))?;
        let inner = &*self.inner;
        self.open(|| {
            inner
                .http
                .post(inner.url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    /// Streams a background response again after the event numbered `starting_after`
    /// (from its start without one): `GET {base}/responses/{id}?stream=true
    /// &starting_after=N`, retried like a create until a stream begins (asking again costs
    /// nothing: nothing new is generated).
    pub async fn resume(
        &self,
        response_id: &str,
        starting_after: Option<u64>,
    ) -> Result<ResponseStream, OpenAiError> {
        let inner = &*self.inner;
        let mut url = inner.url.clone();
        url.path_segments_mut()
            .map_err(|()| OpenAiError::Config("the base URL cannot take a path".into()))?
            .push(response_id);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("stream", "true");
            if let Some(after) = starting_after {
                query.append_pair("starting_after", &after.to_string());
            }
        }
        self.open(|| inner.http.get(url.clone())).await
    }

    /// Sends the request `build` makes until a 2xx event stream begins or the retry
    /// policy gives up.
    async fn open(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<ResponseStream, OpenAiError> {
        let mut retries = 0;
        loop {
            let (failure, error) = match self.attempt(build()).await {
                Outcome::Stream(response) => {
                    return Ok(ResponseStream::open(
                        response,
                        retries,
                        self.inner.idle_timeout,
                    ))
                }
                Outcome::Fatal(error) => return Err(error),
                Outcome::Failed(failure, error) => (failure, error),
            };
            let jitter: f64 = rand::random();
            match self.inner.retry.decide(&failure, retries, jitter) {
                Decision::RetryAfter(delay) => {
                    retries += 1;
                    tracing::warn!(
                        retry = retries,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "OpenAI request failed, retrying: {error}"
                    );
                    tokio::time::sleep(delay).await;
                }
                Decision::GiveUp => return Err(error.after_attempts(retries + 1)),
            }
        }
    }

    /// Sends the request once and sorts out what came back.
    async fn attempt(&self, request: reqwest::RequestBuilder) -> Outcome {
        let inner = &*self.inner;
        let send = request.send();
        let response = match tokio::time::timeout(inner.idle_timeout, send).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return self.unreachable(self.describe_send_error(&error)),
            Err(_) => {
                return self.unreachable(format!(
                    "no response within {}",
                    sse::human(inner.idle_timeout)
                ))
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            let content_type = header_text(response.headers(), header::CONTENT_TYPE.as_str());
            let is_event_stream = content_type.as_deref().is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
            });
            return if is_event_stream {
                Outcome::Stream(response)
            } else {
                Outcome::Fatal(OpenAiError::NotAStream {
                    status,
                    content_type: content_type.map(|ct| self.redact(ct)),
                })
            };
        }
        let headers = response.headers();
        let retry_after_ms = header_text(headers, "retry-after-ms");
        let retry_after = header_text(headers, "retry-after");
        let should_retry = header_text(headers, "x-should-retry");
        let text = self.error_body(response).await;
        let error = self.scrub(ApiError::from_body(status, &text));
        let failure = Failure::Http {
            error: error.clone(),
            retry_after_ms,
            retry_after,
            should_retry,
        };
        Outcome::Failed(failure, OpenAiError::Http { error, attempts: 1 })
    }

    /// Reads at most [`ERROR_BODY_LIMIT`] bytes of an error response, within the idle
    /// timeout; whatever could be read is kept.
    async fn error_body(&self, mut response: Response) -> String {
        let mut body = Vec::new();
        let read = async {
            while body.len() < ERROR_BODY_LIMIT {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
        };
        // A body that stalls keeps what arrived; the status already says enough.
        let _ = tokio::time::timeout(self.inner.idle_timeout, read).await;
        body.truncate(ERROR_BODY_LIMIT);
        String::from_utf8_lossy(&body).into_owned()
    }

    fn unreachable(&self, reason: String) -> Outcome {
        let error = OpenAiError::Unreachable {
            base_url: self.inner.base_url.clone(),
            attempts: 1,
            reason: self.redact(reason),
        };
        Outcome::Failed(Failure::Connection, error)
    }

    /// A short reason for a request that got no response.
    fn describe_send_error(&self, error: &reqwest::Error) -> String {
        if error.is_connect() && error.is_timeout() {
            return format!(
                "no connection within {}",
                sse::human(self.inner.connect_timeout)
            );
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind;
                let known = match io.kind() {
                    ErrorKind::ConnectionRefused => Some("connection refused"),
                    ErrorKind::ConnectionReset => Some("connection reset"),
                    ErrorKind::ConnectionAborted => Some("connection aborted"),
                    ErrorKind::TimedOut => Some("timed out"),
                    _ => None,
                };
                if let Some(known) = known {
                    return known.to_owned();
                }
            }
            source = cause.source();
        }
        sse::error_chain(error)
    }

    /// Removes the API key from text that came from elsewhere, should it have been echoed.
    fn redact(&self, text: String) -> String {
        match &self.inner.api_key {
            Some(key) if text.contains(key.as_str()) => text.replace(key.as_str(), "[redacted]"),
            _ => text,
        }
    }

    fn scrub(&self, error: ApiError) -> ApiError {
        let clean = |text: Option<String>| text.map(|t| self.redact(t));
        ApiError {
            status: error.status,
            message: clean(error.message),
            error_type: clean(error.error_type),
            code: clean(error.code),
            param: clean(error.param),
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A Responses event stream that has begun.
pub struct ResponseStream {
    events: Events,
    retries: u32,
    request_id: Option<String>,
}

impl ResponseStream {
    /// A stream over any event-stream body, as [`OpenAi::stream`] builds it over HTTP; for
    /// replaying recorded bodies and for tests.
    pub fn from_body<S, E>(bytes: S, idle_timeout: Duration) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::error::Error,
    {
        Self {
            events: sse::events(bytes, idle_timeout),
            retries: 0,
            request_id: None,
        }
    }

    fn open(response: Response, retries: u32, idle_timeout: Duration) -> Self {
        let request_id = header_text(response.headers(), "x-request-id");
        Self {
            events: sse::events(response.bytes_stream(), idle_timeout),
            retries,
            request_id,
        }
    }

    /// The next event. Every decoded event is `Ok`, unknown types included (as
    /// [`StreamEvent::Unknown`]); `[DONE]` ends the stream. `None` means the stream ended:
    /// whether a terminal event came first is for the caller to judge. After a fatal error,
    /// `None` follows.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, StreamError>> {
        self.events.next().await
    }

    /// How many retries the request needed before its stream began.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The server's `x-request-id` for this response, for logs and support requests.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

impl fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseStream")
            .field("retries", &self.retries)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Stream for ResponseStream {
    type Item = Result<StreamEvent, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
