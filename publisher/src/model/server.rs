//! The local model as an OpenAI-compatible server: `POST /v1/responses` (and
//! `POST /responses`) with `stream: true` answers with the Responses event sequence, written
//! as the model generates; the daemon's ordinary OpenAI client reads it.
//!
//! The request's `input` (a string or message items) and `instructions` become the chat;
//! `max_output_tokens`, `temperature` and `top_p` are honoured, and `seed` (not an OpenAI
//! field) picks the sampling seed. `model` is accepted but not used: answers report the
//! loaded model's name. A request that does not stream gets a 400.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{chat, Engine, Generated, ModelError, Sampling, StopReason, Turn};
use crate::replay::events::AnswerEvents;
use crate::replay::request::{json_object, RequestError};

/// What a request gets when it does not say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    /// Tokens per answer at most.
    pub max_output_tokens: u32,
    /// Sampling temperature and nucleus, and the seed.
    pub sampling: Sampling,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            max_output_tokens: 512,
            sampling: Sampling {
                temperature: 0.2,
                top_p: 0.9,
                seed: 42,
            },
        }
    }
}

struct Server {
    engine: Engine,
    defaults: Defaults,
    answers: AtomicU64,
}

/// The model server's routes, answering with `engine`.
pub fn router(engine: Engine, defaults: Defaults) -> Router {
    let state = Arc::new(Server {
        engine,
        defaults,
        answers: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/responses", post(create_response))
        .route("/responses", post(create_response))
        .fallback(|| async {
            RequestError::new(
                StatusCode::NOT_FOUND,
                "Unknown request URL. The local model server serves POST /v1/responses.",
                "unknown_url",
            )
            .into_response()
        })
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    defaults: Defaults,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(engine, defaults))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The parts of a create request this server uses.
#[derive(Clone, Debug, PartialEq)]
struct Request {
    turns: Vec<Turn>,
    max_output_tokens: u32,
    sampling: Sampling,
    instructions: Option<String>,
}

impl Request {
    fn parse(body: &[u8], defaults: &Defaults) -> Result<Self, RequestError> {
        let fields = json_object(body)?;
        if fields.get("stream") != Some(&Value::Bool(true)) {
            return Err(RequestError::bad(
                "The local model server only streams: set 'stream' to true.",
                "unsupported_value",
            ));
        }
        let instructions = match fields.get("instructions") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err(invalid_type("instructions", "a string")),
        };
        let input = fields.get("input").unwrap_or(&Value::Null);
        let turns = chat::turns(instructions.as_deref(), input).ok_or_else(|| {
            invalid_type(
                "input",
                "a string or an array of messages with a role and text content",
            )
        })?;
        if !turns.iter().any(|turn| turn.role == "user") {
            return Err(RequestError::bad(
                "The input has no user message to answer.",
                "missing_required_parameter",
            ));
        }
        let number = |name: &str| match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Some)
                .ok_or_else(|| invalid_type(name, "a number, 0 or more")),
        };
        let max_output_tokens = match number("max_output_tokens")? {
            None => defaults.max_output_tokens,
            Some(n) if n >= 1.0 => n.min(f64::from(u32::MAX)) as u32,
            Some(_) => return Err(invalid_type("max_output_tokens", "an integer, 1 or more")),
        };
        let sampling = Sampling {
            temperature: number("temperature")?.unwrap_or(defaults.sampling.temperature),
            top_p: number("top_p")?.unwrap_or(defaults.sampling.top_p),
            seed: number("seed")?.map_or(defaults.sampling.seed, |n| n as u64),
        };
        Ok(Self {
            turns,
            max_output_tokens,
            sampling,
            instructions,
        })
    }
}

fn invalid_type(name: &str, expected: &str) -> RequestError {
    RequestError::bad(
        format!("Invalid value for '{name}': expected {expected}."),
        "invalid_type",
    )
}

async fn create_response(
    State(server): State<Arc<Server>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match body {
        Err(rejection) => Err(RequestError::new(
            rejection.status(),
            rejection.body_text(),
            "invalid_body",
        )),
        Ok(body) => Request::parse(&body, &server.defaults),
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(status = %error.status, message = %error.message, "rejected a request");
            return error.into_response();
        }
    };
    let max_tokens = request.max_output_tokens as usize;
    let prompt = match server.engine.model().prompt(&request.turns, max_tokens) {
        Ok(prompt) => prompt,
        Err(error @ ModelError::TooLong { .. }) => {
            return RequestError::bad(error.to_string(), "context_length_exceeded").into_response()
        }
        Err(error) => {
            return RequestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                error.to_string(),
                "server_error",
            )
            .into_response()
        }
    };
    let number = server.answers.fetch_add(1, Ordering::Relaxed) + 1;
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let events = AnswerEvents::new(
        format!("resp_local_{number}"),
        format!("msg_local_{number}"),
        server.engine.model().name(),
        created_at,
        prompt.len() as u64,
    )
    .with_settings(json!({
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
    }));
    tracing::info!(
        id = number,
        prompt_tokens = prompt.len(),
        max_tokens,
        "generating"
    );
    let generated = server.engine.generate(prompt, max_tokens, request.sampling);
    let body = Body::from_stream(frames(
        events,
        generated,
        request.max_output_tokens,
        created_at,
    ));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(id) = HeaderValue::from_str(&format!("req_local_{number}")) {
        headers.insert("x-request-id", id);
    }
    response
}

/// The SSE frames of one answer: the opening, a delta per piece of text, the ending. When
/// the client goes away the stream is dropped, and with it `generated`, which stops the
/// worker.
fn frames(
    mut events: AnswerEvents,
    generated: UnboundedReceiver<Generated>,
    max_output_tokens: u32,
    created_at: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    struct Answer {
        events: AnswerEvents,
        generated: UnboundedReceiver<Generated>,
        pending: std::collections::VecDeque<Bytes>,
        text: String,
        over: bool,
        max_output_tokens: u32,
        created: std::time::Instant,
        created_at: u64,
    }
    let answer = Answer {
        pending: events.opening().into(),
        events,
        generated,
        text: String::new(),
        over: false,
        max_output_tokens,
        created: std::time::Instant::now(),
        created_at,
    };
    futures_util::stream::unfold(answer, |mut answer| async move {
        loop {
            if let Some(frame) = answer.pending.pop_front() {
                return Some((Ok(frame), answer));
            }
            if answer.over {
                return None;
            }
            let ending = match answer.generated.recv().await {
                Some(Generated::Text(piece)) => {
                    answer.text.push_str(&piece);
                    let frame = answer.events.delta(&piece);
                    answer.pending.push_back(frame);
                    continue;
                }
                Some(Generated::Done {
                    reason,
                    output_tokens,
                }) => {
                    let tokens = output_tokens as u64;
                    match reason {
                        StopReason::End => {
                            let done = answer
                                .created_at
                                .saturating_add(answer.created.elapsed().as_secs());
                            answer.events.completed(&answer.text, tokens, done)
                        }
                        StopReason::MaxTokens => answer.events.incomplete(
                            &answer.text,
                            u64::from(answer.max_output_tokens),
                            tokens,
                        ),
                    }
                }
                Some(Generated::Failed(message)) => {
                    vec![answer.events.failed(&answer.text, &message, 0)]
                }
                None => vec![answer
                    .events
                    .failed(&answer.text, "the model's worker stopped", 0)],
            };
            answer.pending.extend(ending);
            answer.over = true;
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
