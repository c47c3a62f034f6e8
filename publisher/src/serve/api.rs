//! The HTTP handlers: prompts, cancel, token, config, health and metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State as Extract};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::{Capability, TokenParams};
use shared::connection::{AttachOptions, ConnectionState};
use shared::headers::{CANCEL_NAME, PROMPT_NAME};
use shared::protocol::Message;
use shared::{ChannelName, Serial};
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::guard::client_address;
use super::{context, State};
use crate::answer::{Job, Observer, Stop};
use crate::cancel::Registering;
use crate::channel;
use crate::openai::ResponseRequest;

type Shared = Extract<Arc<State>>;
type Peer = ConnectInfo<SocketAddr>;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a prompt request waits for its prompt to be published and its answer's create
/// to be ACKed before it replies that the answer is pending.
const REPLY_WAIT: Duration = Duration::from_secs(25);

/// How much history to read for context.
const HISTORY_LIMIT: u32 = 100;

/// Runs the checks of a guarded endpoint; returns the CORS origin to echo, if any.
fn admit(state: &State, headers: &HeaderMap, peer: SocketAddr) -> Result<Option<String>, ApiError> {
    let origin = state.origins.check(headers).map_err(|e| reject(state, e))?;
    state.gate.check(headers).map_err(|e| reject(state, e))?;
    let client = client_address(headers, peer.ip(), state.settings.trust_forwarded_for);
    let now_ms = u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    state
        .limiter
        .check(client, now_ms)
        .map_err(|wait| reject(state, ApiError::rate_limited(wait)))?;
    Ok(origin)
}

/// Adds CORS headers for an allowed cross-origin caller.
fn with_cors(mut response: Response, origin: Option<String>) -> Response {
    if let Some(origin) = origin {
        if let Ok(value) = HeaderValue::from_str(&origin) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(header::VARY, HeaderValue::from_static("origin"));
        }
    }
    response
}

/// Answers a guarded endpoint: the handler's result, or its error, with CORS headers.
fn respond(origin: Option<String>, result: Result<Response, ApiError>) -> Response {
    with_cors(result.unwrap_or_else(IntoResponse::into_response), origin)
}

fn reject(state: &State, error: ApiError) -> ApiError {
    state
        .metrics
        .requests_rejected
        .fetch_add(1, Ordering::Relaxed);
    error
}

/// CORS preflight for the guarded endpoints.
pub(super) async fn preflight(Extract(state): Shared, headers: HeaderMap) -> Response {
    match state.origins.check(&headers) {
        Ok(origin) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let h = response.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            with_cors(response, origin)
        }
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PromptBody {
    channel: Option<String>,
    input: Option<String>,
}

/// `POST /v1/prompts`: publishes the prompt, starts the answer, replies once it exists.
pub(super) async fn prompt(
    Extract(state): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = match admit(&state, &headers, peer) {
        Ok(origin) => origin,
        Err(err) => return err.into_response(),
    };
    let result = start_answer(&state, body).await;
    respond(origin, result)
}

async fn start_answer(state: &Arc<State>, body: Body) -> Result<Response, ApiError> {
    if state.stopping.load(Ordering::SeqCst) {
        return Err(ApiError::shutting_down());
    }
    let bytes = read_body(body).await.map_err(|e| reject(state, e))?;
    let body: PromptBody = serde_json::from_slice(&bytes).map_err(|e| {
        reject(
            state,
            ApiError::bad_request(
                "malformed_json",
                format!("the body must be JSON {{\"channel\": \"...\", \"input\": \"...\"}}: {e}"),
            ),
        )
    })?;
    let channel = match &body.channel {
        Some(name) => channel::parse(name, Some(&state.settings.namespace)),
        None => Ok(state.settings.default_channel.clone()),
    }
    .map_err(|e| reject(state, ApiError::bad_request(e.code(), e.to_string())))?;
    let input = body.input.unwrap_or_default();
    if input.trim().is_empty() {
        return Err(reject(
            state,
            ApiError::bad_request("empty_input", "`input` must be a non-empty string"),
        ));
    }
    let chars = input.chars().count();
    if chars > state.settings.max_input_chars {
        return Err(reject(
            state,
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "input_too_long",
                format!(
                    "`input` has {chars} characters; at most {} are accepted",
                    state.settings.max_input_chars
                ),
            ),
        ));
    }

    // A namespace without the appends rule is found before the model is called, so that no
    // prompt is published that could not be answered.
    if let Err(err) = state.answers.check_appends(&channel).await {
        return Err(reject(
            state,
            ApiError::bad_request("appends_not_enabled", crate::answer::describe_refusal(&err)),
        ));
    }
    listen(state, &channel).await?;
    // Context first, so the new prompt is not read back as history.
    let history = if state.settings.context_turns == 0 {
        Vec::new()
    } else {
        match state.rest.history(&channel, HISTORY_LIMIT).await {
            Ok(history) => history,
            Err(err) => {
                tracing::warn!(%channel, error = %err, "no history for context; answering without it");
                Vec::new()
            }
        }
    };
    let model_input = context::conversation(
        &history,
        usize::try_from(state.settings.context_turns).unwrap_or(usize::MAX),
        &input,
    );

    let job = Job {
        channel: channel.clone(),
        request: ResponseRequest {
            model: state.settings.model.clone(),
            input: model_input,
            instructions: state.settings.instructions.clone(),
            max_output_tokens: state.settings.max_output_tokens,
            background: state.settings.background,
        },
        prompt: None,
    };
    // The prompt and its answer go on in a task of their own, so that a client that gives
    // up or disconnects cannot leave a published prompt without its answer.
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    spawn_tracked(state, ask(Arc::clone(state), job, input, progress_tx));
    let deadline = tokio::time::Instant::now() + REPLY_WAIT;
    let mut prompt_serial: Option<Serial> = None;
    loop {
        match tokio::time::timeout_at(deadline, progress.recv()).await {
            Ok(Some(Progress::Prompted(serial))) => prompt_serial = serial,
            Ok(Some(Progress::Refused(err))) => return Err(err),
            Ok(Some(Progress::Created(Ok(serial)))) => {
                return Ok(accepted(&channel, Some(&serial), prompt_serial.as_ref()));
            }
            Ok(Some(Progress::Created(Err(error)))) => {
                return Err(ApiError::upstream(format!(
                    "the answer could not be created: {error}"
                )));
            }
            Ok(None) => {
                return Err(ApiError::upstream(
                    "the answer ended before its message was acknowledged",
                ));
            }
            // The connection is slow (down, resuming, its channel suspended): the prompt
            // and the answer go on, and the session sees to it that a published prompt gets
            // an answer on the channel, or one born `failed`. The caller finds it there by
            // its `prompt` header.
            Err(_) => return Ok(accepted(&channel, None, prompt_serial.as_ref())),
        }
    }
}

/// What became of a prompt, for the request that posted it.
enum Progress {
    /// The prompt is on the channel (with its serial, if the ACK carried one).
    Prompted(Option<Serial>),
    /// The prompt could not be published.
    Refused(ApiError),
    /// The answer's create was ACKed, or the answer could not be started.
    Created(Result<Serial, String>),
}

/// `202 Accepted`: the answer's serial, or `pending` while its create is not ACKed.
fn accepted(channel: &ChannelName, serial: Option<&Serial>, prompt: Option<&Serial>) -> Response {
    let mut body = json!({
        "channel": channel.as_str(),
        "serial": serial.map(Serial::as_str),
        "prompt": prompt.map(Serial::as_str),
    });
    if serial.is_none() {
        body["pending"] = Value::Bool(true);
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Publishes the prompt, then runs its answer; tells `progress` how far it got, while anyone
/// listens.
async fn ask(
    state: Arc<State>,
    mut job: Job,
    input: String,
    progress: mpsc::UnboundedSender<Progress>,
) {
    let prompt_message = Message {
        name: Some(PROMPT_NAME.to_owned()),
        data: Some(Value::String(input)),
        ..Message::default()
    };
    let prompt_serial = match state.answers.post(&job.channel, prompt_message).await {
        Ok(serials) => serials.into_iter().next().flatten(),
        Err(err) => {
            ended_on(&state, &job.channel);
            let _ = progress.send(Progress::Refused(ApiError::upstream(format!(
                "the prompt could not be published: {}",
                crate::answer::describe_refusal(&err)
            ))));
            return;
        }
    };
    state
        .metrics
        .prompts_accepted
        .fetch_add(1, Ordering::Relaxed);
    let _ = progress.send(Progress::Prompted(prompt_serial.clone()));
    job.prompt = prompt_serial;
    let (created_tx, created_rx) = oneshot::channel();
    let forward = async move {
        if let Ok(created) = created_rx.await {
            let _ = progress.send(Progress::Created(created));
        }
    };
    tokio::join!(run_answer(&state, job, created_tx), forward);
}

/// Runs one answer, registered for cancel and shutdown.
async fn run_answer(
    state: &Arc<State>,
    job: Job,
    created: oneshot::Sender<Result<Serial, String>>,
) {
    let (registration, stop) = state.registry.register();
    let mut created = Some(created);
    let mut observer = Registering {
        registration: &registration,
        inner: &mut created as &mut (dyn Observer + Send),
    };
    let channel = job.channel.clone();
    let report = state.answers.run(job, stop, &mut observer).await;
    ended_on(state, &channel);
    tracing::info!(
        %channel,
        serial = report.serial.as_ref().map(Serial::as_str).unwrap_or("-"),
        status = %report.status,
        detail = report.detail.as_deref().unwrap_or(""),
        messages = report.messages,
        "answer ended"
    );
}

/// Runs `task` in the background among the tasks that shutdown waits for.
fn spawn_tracked(state: &State, task: impl std::future::Future<Output = ()> + Send + 'static) {
    match state.tasks.lock() {
        Ok(mut tasks) => {
            // Reap finished tasks so the set does not grow without bound.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(task);
        }
        Err(_) => {
            tokio::spawn(task);
        }
    }
}

/// Makes sure `channel` is attached, so that `cancel` messages on it reach this daemon,
/// and counts one more answer streaming there (until [`ended_on`]).
async fn listen(state: &State, channel: &ChannelName) -> Result<(), ApiError> {
    let known = match state.listening.lock() {
        Ok(mut map) => match map.get_mut(channel) {
            Some(listening) => {
                listening.running += 1;
                listening.idle_since = None;
                true
            }
            None => false,
        },
        Err(_) => false,
    };
    if known {
        return Ok(());
    }
    let realtime = &state.answers.realtime;
    let mut attached = realtime.attach(channel, AttachOptions::live_only()).await;
    if attached.is_err() {
        // The channel may have been detaching as idle just now: try once more.
        tokio::time::sleep(Duration::from_millis(300)).await;
        attached = realtime.attach(channel, AttachOptions::live_only()).await;
    }
    attached.map_err(|err| {
        ApiError::upstream(format!(
            "cannot attach `{channel}`: {}",
            crate::answer::describe_refusal(&err)
        ))
    })?;
    if let Ok(mut map) = state.listening.lock() {
        let listening = map.entry(channel.clone()).or_insert(super::Listening {
            running: 0,
            idle_since: None,
        });
        listening.running += 1;
        listening.idle_since = None;
    }
    Ok(())
}

/// An answer on `channel` ended (or never started).
fn ended_on(state: &State, channel: &ChannelName) {
    if let Ok(mut map) = state.listening.lock() {
        if let Some(listening) = map.get_mut(channel) {
            listening.running = listening.running.saturating_sub(1);
            if listening.running == 0 {
                listening.idle_since = Some(tokio::time::Instant::now());
            }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct CancelQuery {
    channel: Option<String>,
}

/// `POST /v1/responses/{serial}/cancel`: stops the answer here if it runs here, and
/// publishes a `cancel` message so that whichever replica streams it stops it.
pub(super) async fn cancel(
    Extract(state): Shared,
    ConnectInfo(peer): Peer,
    Path(serial): Path<String>,
    Query(query): Query<CancelQuery>,
    headers: HeaderMap,
) -> Response {
    let origin = match admit(&state, &headers, peer) {
        Ok(origin) => origin,
        Err(err) => return err.into_response(),
    };
    let result = async {
        let serial = serial.trim();
        if serial.is_empty() || serial.len() > 200 || serial.contains(char::is_whitespace) {
            return Err(reject(
                &state,
                ApiError::bad_request("invalid_serial", "not an answer's serial"),
            ));
        }
        let channel = match &query.channel {
            Some(name) => channel::parse(name, Some(&state.settings.namespace)),
            None => Ok(state.settings.default_channel.clone()),
        }
        .map_err(|e| reject(&state, ApiError::bad_request(e.code(), e.to_string())))?;
        let serial = Serial::from(serial);
        let here = state.registry.stop(&serial, Stop::Cancel);
        if !here {
            let message = Message {
                name: Some(CANCEL_NAME.to_owned()),
                data: Some(Value::String(serial.as_str().to_owned())),
                ..Message::default()
            };
            if let Err(err) = state.answers.post(&channel, message).await {
                return Err(ApiError::upstream(format!(
                    "the cancel could not be published: {}",
                    crate::answer::describe_refusal(&err)
                )));
            }
        }
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"serial": serial.as_str(), "channel": channel.as_str(), "streamingHere": here})),
        )
            .into_response())
    }
    .await;
    respond(origin, result)
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    channel: Option<String>,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

/// `GET /v1/token`: a TokenRequest signed with the key, good for one channel only.
pub(super) async fn token(
    Extract(state): Shared,
    ConnectInfo(peer): Peer,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let origin = match admit(&state, &headers, peer) {
        Ok(origin) => origin,
        Err(err) => return err.into_response(),
    };
    let result = (|| {
        let channel = match &query.channel {
            Some(name) => channel::parse(name, Some(&state.settings.namespace)),
            None => Ok(state.settings.default_channel.clone()),
        }
        .map_err(|e| reject(&state, ApiError::bad_request(e.code(), e.to_string())))?;
        let client_id = match query.client_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => {
                if id.len() > 100 || id.contains(|c: char| c.is_control() || c == '*') {
                    return Err(reject(
                        &state,
                        ApiError::bad_request("invalid_client_id", "clientId is not acceptable"),
                    ));
                }
                id.to_owned()
            }
            _ => format!("viewer-{:08x}", rand::random::<u32>()),
        };
        let mut operations = vec!["subscribe", "history"];
        if state.settings.token_allows_publish {
            operations.push("publish");
        }
        let params = TokenParams {
            ttl: Some(state.settings.token_ttl),
            capability: Some(Capability::new().allow(channel.as_str(), &operations)),
            client_id: Some(client_id),
        };
        let request = state.rest.sign(&params).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "signing_failed",
                e.to_string(),
            )
        })?;
        let mut response = Json(request).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    })();
    respond(origin, result)
}

/// `GET /v1/config`: what the page needs to connect.
pub(super) async fn config(Extract(state): Shared) -> Response {
    Json(json!({
        "ablyEndpoint": state.settings.ably_endpoint,
        "channel": state.settings.default_channel.as_str(),
        "authUrl": "/v1/token",
    }))
    .into_response()
}

/// `GET /healthz`: 200 while the Ably connection is up, 503 otherwise.
pub(super) async fn healthz(Extract(state): Shared) -> Response {
    let snapshot = state.answers.realtime.snapshot();
    let ready =
        snapshot.state == ConnectionState::Connected && !state.stopping.load(Ordering::SeqCst);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ok" } else { "unavailable" },
            "ably": snapshot.state.as_str(),
            "answersStreaming": state.registry.len(),
        })),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(Extract(state): Shared) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&format!(
        "# HELP relay_answers_streaming Answers streaming now.\n# TYPE relay_answers_streaming gauge\nrelay_answers_streaming {}\n",
        state.registry.len()
    ));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Unknown paths and methods.
pub(super) async fn not_found(method: Method) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint for {method}"),
    )
    .into_response()
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })
}
