//! A local OpenAI-compatible server that replays recorded Responses streams, synthesizes long
//! answers and injects faults, for offline runs, tests and benchmarks.
//!
//! It answers `POST /v1/responses` (and `POST /responses`) with a streamed Responses answer
//! chosen by the request's `model`:
//!
//! 1. the name of a recording (a fixture's file stem, such as `01_plain_text`) replays it;
//! 2. `synth` or `synth:key=value,...` plays a synthesized answer (see [`Synth`]);
//! 3. anything else plays the configured default recording, or, without one, a short
//!    synthesized answer that says where it comes from and quotes the user's last input.
//!
//! A recording with several attempts answers its k-th request (counting from 0) with
//! attempt `k % attempts`, so a recorded HTTP 429 followed by a stream lets a retrying client
//! succeed. Recorded framing is written byte for byte (see [`shared::openai::recording`]);
//! each step goes out as its own chunk, [`ReplayConfig::interval`] apart. A recording with a
//! `disconnect_after_seq` marker is played up to the marker, then the connection is dropped.
//!
//! A request with `background: true` for a synthesized answer, and a recorded background
//! response, are kept: `GET /v1/responses/{id}?stream=true&starting_after=N` streams the
//! answer's events after N (all of them without it), the time the client was away already
//! passed, as OpenAI does for background responses. A `drop@K` fault breaks only the first
//! connection.
//!
//! No `Accept` header or credentials are required; a body that is not a streaming create
//! request gets a 400 with an OpenAI-shaped error.

mod background;
pub(crate) mod events;
mod plan;
pub(crate) mod request;
mod synth;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::{fs, io};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use shared::openai::{Recording, RecordingError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use background::Background;
use plan::{Closing, Plan};
use request::{CreateRequest, RequestError};
pub use synth::{friendly_text, Fault, Synth, DEFAULT_RATE, DEFAULT_TOKENS, MAX_TOKENS};

/// What the replay server serves.
#[derive(Clone, Debug, Default)]
pub struct ReplayConfig {
    /// Recordings by name; a request whose `model` is a name gets that recording.
    pub recordings: BTreeMap<String, Recording>,
    /// The recording for models that are neither a recording's name nor a `synth` spec.
    /// Without one (or when it names no recording) those get a short synthesized answer.
    pub default: Option<String>,
    /// The pause between the chunks (SSE events, comments, raw bytes) of a recording;
    /// [`Duration::ZERO`] writes them as fast as possible. Synthesized answers are paced by
    /// their own `rate` instead.
    pub interval: Duration,
    /// When set, the time each synthesized text delta is written is recorded here (for
    /// latency benchmarks).
    pub delta_log: Option<DeltaLog>,
}

/// When each synthesized delta left the server: shared with whoever measures latency.
#[derive(Clone, Default)]
pub struct DeltaLog(std::sync::Arc<Mutex<Vec<DeltaSent>>>);

/// One synthesized delta, written.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaSent {
    /// The answer's id (`resp_synth_<n>`, the `response-id` header of its Ably message).
    pub response_id: String,
    /// The delta's position in the answer, from 0.
    pub index: u32,
    /// When it was handed to the connection.
    pub at: std::time::SystemTime,
}

impl DeltaLog {
    /// Every delta recorded so far, leaving the log empty.
    pub fn take(&self) -> Vec<DeltaSent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn record(&self, response_id: &str, index: u32) {
        let sent = DeltaSent {
            response_id: response_id.to_owned(),
            index,
            at: std::time::SystemTime::now(),
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sent);
    }
}

impl std::fmt::Debug for DeltaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeltaLog")
    }
}

impl PartialEq for DeltaLog {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ReplayConfig {
    /// Loads every `*.jsonl` file of `dir` as a recording named after the file's stem.
    /// Other files are ignored. A file that cannot be read or parsed is an error naming it
    /// (and, for a parse error, the line).
    pub fn load_dir(dir: &Path) -> Result<Self, ReplayError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplayError::Io { path, source }
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            if path.extension().is_some_and(|ext| ext == "jsonl") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut recordings = BTreeMap::new();
        for path in paths {
            let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
                return Err(ReplayError::FileName { path });
            };
            let name = name.to_owned();
            let text = fs::read_to_string(&path).map_err(io_error(&path))?;
            let recording = Recording::parse(&text).map_err(|source| ReplayError::Recording {
                path: path.clone(),
                source,
            })?;
            recordings.insert(name, recording);
        }
        if recordings.is_empty() {
            warn!(dir = %dir.display(), "no *.jsonl recordings found");
        } else {
            info!(dir = %dir.display(), count = recordings.len(), "loaded recordings");
        }
        Ok(Self {
            recordings,
            ..Self::default()
        })
    }

    /// Sets the default recording, which must be one of the loaded ones.
    pub fn with_default(mut self, name: &str) -> Result<Self, ReplayError> {
        if !self.recordings.contains_key(name) {
            return Err(ReplayError::UnknownRecording {
                name: name.to_owned(),
            });
        }
        self.default = Some(name.to_owned());
        Ok(self)
    }

    /// Sets the pause between the chunks of a recording.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

/// What can go wrong configuring the replay server, or with a `synth` model.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A recordings directory or file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A recording file does not parse.
    #[error("{}: {source}", path.display())]
    Recording {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        source: RecordingError,
    },
    /// A recording's file name is not UTF-8, so it cannot be a model name.
    #[error("{}: the file name is not UTF-8", path.display())]
    FileName {
        /// The file.
        path: PathBuf,
    },
    /// The default names no loaded recording.
    #[error("no recording named `{name}`")]
    UnknownRecording {
        /// The name asked for.
        name: String,
    },
    /// A `synth` model string that does not follow the grammar.
    #[error("bad synth model `{model}`: {reason} (expected synth:tokens=N,rate=R,fault=KIND[@K],seed=S, every part optional)")]
    Synth {
        /// The model string.
        model: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The replay server's routes: `POST /v1/responses` and `POST /responses`. Any other path
/// gets an OpenAI-shaped 404. A bare router never ends a stalled stream itself; [`serve`]
/// ends them at shutdown.
pub fn router(config: ReplayConfig) -> Router {
    app(config, Closing::never())
}

/// Serves [`router`] on `listener` until `shutdown` completes. At shutdown, streams still
/// running (paced, stalled) are cut so that the server stops promptly.
pub async fn serve(
    listener: TcpListener,
    config: ReplayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    let app = app(config, Closing::on(closing_rx));
    match listener.local_addr() {
        Ok(addr) => info!(%addr, "replay server listening"),
        Err(error) => warn!(%error, "replay server listening on an unknown address"),
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("replay server shutting down");
            // Nobody listening is fine: no stream is running.
            let _ = closing_tx.send(true);
        })
        .await
}

fn app(config: ReplayConfig, closing: Closing) -> Router {
    let state = Arc::new(Server::new(config, closing));
    Router::new()
        .route("/v1/responses", post(create_response))
        .route("/responses", post(create_response))
        .route("/v1/responses/{id}", get(retrieve_response))
        .route("/responses/{id}", get(retrieve_response))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .with_state(state)
}

async fn create_response(
    State(server): State<Arc<Server>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let plan = match body {
        Err(rejection) => Err(RequestError::new(
            rejection.status(),
            rejection.body_text(),
            "invalid_body",
        )),
        Ok(body) => CreateRequest::parse(&body).and_then(|request| server.select(&request)),
    };
    match plan {
        Ok(plan) => plan.into_response(server.closing.clone()),
        Err(error) => {
            warn!(status = %error.status, message = %error.message, "rejected a request");
            error.into_response()
        }
    }
}

/// The query of `GET /responses/{id}`.
#[derive(Debug, serde::Deserialize)]
struct RetrieveQuery {
    #[serde(default)]
    stream: bool,
    starting_after: Option<u64>,
}

async fn retrieve_response(
    State(server): State<Arc<Server>>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<RetrieveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let plan = match query {
        Err(rejection) => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            rejection.body_text(),
            "invalid_query",
        )),
        Ok(Query(query)) if !query.stream => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            "The local replay server only streams responses: add stream=true.".to_owned(),
            "unsupported_value",
        )),
        Ok(Query(query)) => server.resume(&id, query.starting_after),
    };
    match plan {
        Ok(plan) => plan.into_response(server.closing.clone()),
        Err(error) => {
            warn!(status = %error.status, message = %error.message, "rejected a retrieve");
            error.into_response()
        }
    }
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    RequestError::new(
        StatusCode::NOT_FOUND,
        format!(
            "Unknown request URL: {method} {uri}. The replay server serves POST /v1/responses \
             and GET /v1/responses/{{id}}?stream=true."
        ),
        "unknown_url",
    )
    .into_response()
}

/// The server's state: what it serves and how many requests each name has had.
#[derive(Debug)]
struct Server {
    recordings: BTreeMap<String, Recording>,
    default: Option<String>,
    interval: Duration,
    /// Requests so far per recording name (and per `synth` model with an HTTP fault).
    requests: Mutex<HashMap<String, u64>>,
    /// Synthesized answers so far; numbers their ids.
    synthesized: AtomicU64,
    closing: Closing,
    delta_log: Option<DeltaLog>,
    /// Background answers, to be streamed again.
    background: Mutex<Background>,
}

impl Server {
    fn new(config: ReplayConfig, closing: Closing) -> Self {
        if let Some(name) = &config.default {
            if !config.recordings.contains_key(name) {
                warn!(%name, "the default recording does not exist; unknown models get a synthesized answer");
            }
        }
        Self {
            recordings: config.recordings,
            default: config.default,
            interval: config.interval,
            requests: Mutex::new(HashMap::new()),
            synthesized: AtomicU64::new(0),
            closing,
            delta_log: config.delta_log,
            background: Mutex::new(Background::default()),
        }
    }

    /// Chooses what to play for a request.
    fn select(&self, request: &CreateRequest) -> Result<Plan, RequestError> {
        let model = request.model.as_str();
        if let Some(recording) = self.recordings.get(model) {
            return Ok(self.replay(model, recording, model));
        }
        match Synth::for_request(model, request.last_input_text.as_deref()) {
            Ok(Some(synth)) => return Ok(self.synthesize(&synth, request)),
            Ok(None) => {}
            Err(error) => {
                return Err(RequestError::new(
                    StatusCode::BAD_REQUEST,
                    error.to_string(),
                    "invalid_synth_model",
                ))
            }
        }
        if let Some((name, recording)) = self
            .default
            .as_ref()
            .and_then(|name| Some((name, self.recordings.get(name)?)))
        {
            return Ok(self.replay(name, recording, model));
        }
        let number = self.next_answer();
        info!(%model, id = number, "playing the friendly synthesized answer");
        Ok(synth::friendly(
            &synth::Context::new(number, model, request),
            request.last_input_text.as_deref(),
        ))
    }

    fn replay(&self, name: &str, recording: &Recording, model: &str) -> Plan {
        let count = recording.attempts.len();
        let request = self.next_request(name);
        let index = usize::try_from(request % count.max(1) as u64).unwrap_or(0);
        let Some(attempt) = recording.attempts.get(index) else {
            warn!(%name, "the recording has no attempts");
            return Plan::server_error("the recording has no attempts");
        };
        self.background().keep_recording(attempt, self.interval);
        info!(
            %model,
            recording = %name,
            attempt = index + 1,
            attempts = count,
            status = attempt.status,
            "replaying"
        );
        Plan::from_attempt(attempt, self.interval)
    }

    fn synthesize(&self, synth: &Synth, request: &CreateRequest) -> Plan {
        let model = request.model.as_str();
        let number = self.next_answer();
        let mut context = synth::Context::new(number, model, request);
        context.delta_log = self.delta_log.clone();
        let fails = match synth.fault {
            // `n` requests fail, then one succeeds, starting with the first: a client that
            // retries `n` times gets the answer.
            Some(Fault::Http429(n) | Fault::Http500(n)) => {
                (self.next_request(model) % (u64::from(n) + 1)) < u64::from(n)
            }
            Some(Fault::Http401 | Fault::Quota) => true,
            _ => false,
        };
        info!(%model, id = number, fails, "playing a synthesized answer");
        if request.background && !fails {
            self.background()
                .keep_synth(context.response_id(), synth.background_plan(&context));
        }
        synth.plan(&context, fails)
    }

    /// The stream of a kept background answer after event `after`.
    fn resume(&self, id: &str, after: Option<u64>) -> Result<Plan, RequestError> {
        let plan = self.background().resume(id, after).ok_or_else(|| {
            RequestError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "No background response with id '{id}' is kept here (only background \
                     answers can be streamed again)."
                ),
                "not_found",
            )
        })?;
        info!(%id, ?after, "streaming a background answer again");
        Ok(plan)
    }

    fn background(&self) -> std::sync::MutexGuard<'_, Background> {
        self.background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request for `name`, returning how many came before it.
    fn next_request(&self, name: &str) -> u64 {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let count = requests.entry(name.to_owned()).or_insert(0);
        let before = *count;
        *count = count.saturating_add(1);
        before
    }

    fn next_answer(&self) -> u64 {
        self.synthesized
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
