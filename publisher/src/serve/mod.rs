//! `publisher serve`: the daemon's HTTP API around the answer runner.
//!
//! ```text
//! POST /v1/prompts                  publish the prompt, start the answer, 202 {channel, serial}
//! POST /v1/responses/{serial}/cancel  stop an answer (here, or on another replica via Ably)
//! GET  /v1/token?channel=&clientId=   a signed TokenRequest: subscribe + history on one channel
//! GET  /v1/config                     {ablyEndpoint, channel, authUrl} for the page
//! GET  /healthz, GET /metrics         readiness and Prometheus metrics
//! GET  /*                             the built page, with --web-dir
//! ```
//!
//! The daemon keeps no state another replica would need: the channel is the conversation's
//! record (prompts and answers are messages), and cancels travel as channel messages.

mod api;
mod context;
pub mod error;
pub mod guard;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use shared::connection::Endpoint;
use shared::ChannelName;
use tokio::task::JoinSet;

use crate::ably::rest::Rest;
use crate::answer::{Answers, Stop};
use crate::cancel::Registry;
use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::recovery::Sweeper;
use crate::setup::{self, StartError};
use guard::{BearerSecret, Gate, Origins, RateLimiter};

pub use context::conversation;

/// How long in-flight answers get to finish their final update on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("default channel: {0}")]
    Channel(#[from] crate::channel::ChannelError),
}

/// The settings the handlers read.
pub struct Settings {
    pub default_channel: ChannelName,
    pub namespace: String,
    /// The Ably endpoint handed to pages.
    pub ably_endpoint: String,
    pub model: String,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    /// Whether answers ask for background mode.
    pub background: bool,
    pub token_ttl: Duration,
    pub token_allows_publish: bool,
    pub context_turns: u32,
    pub max_input_chars: usize,
    pub trust_forwarded_for: bool,
}

/// Everything the handlers share.
pub struct State {
    pub settings: Settings,
    pub answers: Answers,
    pub rest: Rest,
    pub endpoint: Endpoint,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub gate: Box<dyn Gate>,
    pub origins: Origins,
    pub limiter: RateLimiter,
    /// Channels attached so that `cancel` messages reach this daemon, with the answers
    /// streaming on each (idle ones are detached, see [`Listening`]).
    pub listening: Mutex<HashMap<ChannelName, Listening>>,
    /// Running answer tasks, awaited on shutdown.
    pub tasks: Mutex<JoinSet<()>>,
    /// Set once shutdown begins: new prompts are refused.
    pub stopping: std::sync::atomic::AtomicBool,
    pub started: tokio::time::Instant,
    /// Keeps the built-in model or replay server (if any) running as long as the daemon.
    pub replay: Option<setup::ReplayGuard>,
}

/// How long a channel stays attached after its last answer ended.
const IDLE_DETACH: Duration = Duration::from_secs(60);

/// One attached channel: how many answers stream on it, and since when none has.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub running: usize,
    pub idle_since: Option<tokio::time::Instant>,
}

/// Detaches channels no answer has used for [`IDLE_DETACH`], so that a long-running daemon
/// stays within the connection's channel limit (Ably allows 200 by default).
async fn detach_idle_channels(state: Arc<State>) {
    let mut tick = tokio::time::interval(IDLE_DETACH / 2);
    loop {
        tick.tick().await;
        let idle: Vec<ChannelName> = match state.listening.lock() {
            Ok(mut map) => {
                let now = tokio::time::Instant::now();
                let idle: Vec<ChannelName> = map
                    .iter()
                    .filter(|(_, l)| {
                        l.running == 0 && l.idle_since.is_some_and(|t| now - t >= IDLE_DETACH)
                    })
                    .map(|(c, _)| c.clone())
                    .collect();
                for channel in &idle {
                    map.remove(channel);
                }
                idle
            }
            Err(_) => Vec::new(),
        };
        for channel in idle {
            tracing::debug!(%channel, "detaching an idle channel");
            state.answers.realtime.detach(&channel);
        }
    }
}

/// A daemon bound to its address, ready to run.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    web_dir: Option<PathBuf>,
}

impl Server {
    /// Connects to Ably, prepares the model client and binds the listen address.
    pub async fn bind(args: &ServeArgs) -> Result<Self, ServeError> {
        Self::bind_with_gate(args, Box::new(BearerSecret(args.api_secret.clone()))).await
    }

    /// As [`Server::bind`], with the embedder's own check of who may call the API.
    pub async fn bind_with_gate(args: &ServeArgs, gate: Box<dyn Gate>) -> Result<Self, ServeError> {
        let default_channel = crate::channel::parse(&args.default_channel, Some(&args.namespace))?;
        let metrics = Arc::new(Metrics::default());
        let mut parts = setup::start(&args.ably, &args.openai, Arc::clone(&metrics)).await?;
        if args.ably.lease().is_some() {
            parts.answers = parts
                .answers
                .with_ledger(shared::recovery::ledger_channel(&args.namespace));
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: args.listen,
                source,
            })?;
        let registry = Registry::default();
        registry.listen(&parts.answers.realtime);
        metrics.watch_connection(&parts.answers.realtime);
        let state = State {
            settings: Settings {
                default_channel,
                namespace: args.namespace.clone(),
                ably_endpoint: args
                    .public_ably_endpoint
                    .clone()
                    .unwrap_or_else(|| args.ably.ably_endpoint.clone()),
                model: args.openai.openai_model.clone(),
                instructions: args.openai.instructions.clone(),
                max_output_tokens: args.openai.max_output_tokens,
                background: args.openai.background(),
                token_ttl: Duration::from_secs(args.token_ttl.clamp(60, 86_400)),
                token_allows_publish: args.token_allows_publish,
                context_turns: args.context_turns,
                max_input_chars: args.max_input_chars,
                trust_forwarded_for: args.trust_forwarded_for,
            },
            replay: parts.replay,
            answers: parts.answers,
            rest: parts.rest,
            endpoint: parts.endpoint,
            metrics,
            registry,
            gate,
            origins: Origins::new(&args.allowed_origins),
            limiter: RateLimiter::new(args.rate_limit_per_minute),
            listening: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            started: tokio::time::Instant::now(),
        };
        Ok(Self {
            listener,
            state: Arc::new(state),
            web_dir: args.web_dir.clone(),
        })
    }

    /// The address the daemon listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (for embedders and tests).
    pub fn state(&self) -> Arc<State> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` resolves; then stops accepting, ends every running answer
    /// with a terminal status and closes the Ably connection cleanly.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = Arc::clone(&self.state);
        let app = router(Arc::clone(&self.state), self.web_dir.as_deref());
        let sweeper = tokio::spawn(detach_idle_channels(Arc::clone(&state)));
        let recovery = Sweeper::new(state.answers.clone(), state.rest.clone())
            .map(|sweeper| tokio::spawn(sweeper.run()));
        let graceful = {
            let state = Arc::clone(&state);
            async move {
                shutdown.await;
                state
                    .stopping
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let stopped = state.registry.stop_all(Stop::Shutdown);
                tracing::info!(answers = stopped, "shutting down");
            }
        };
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(graceful)
        .await;
        sweeper.abort();
        if let Some(recovery) = recovery {
            recovery.abort();
        }
        finish(&state).await;
        served.map_err(ServeError::Http)
    }
}

/// Waits for the running answers' final updates, then closes the connection.
async fn finish(state: &State) {
    state.registry.stop_all(Stop::Shutdown);
    let mut tasks = match state.tasks.lock() {
        Ok(mut tasks) => std::mem::take(&mut *tasks),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some answers did not finish within {SHUTDOWN_GRACE:?}");
    }
    state.answers.realtime.close(Duration::from_secs(5)).await;
    tracing::info!("stopped");
}

fn router(state: Arc<State>, web_dir: Option<&std::path::Path>) -> Router {
    let routes = Router::new()
        .route("/v1/prompts", post(api::prompt).options(api::preflight))
        .route(
            "/v1/responses/{serial}/cancel",
            post(api::cancel).options(api::preflight),
        )
        .route("/v1/token", get(api::token).options(api::preflight))
        .route("/v1/config", get(api::config))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/v1/{*rest}", axum::routing::any(api::not_found));
    let routes = match web_dir {
        Some(dir) => routes.fallback_service(
            tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true),
        ),
        None => routes.fallback(api::not_found),
    };
    routes.with_state(state)
}

/// Runs the daemon from its command line until SIGINT or SIGTERM.
pub async fn main(args: &ServeArgs) -> Result<(), ServeError> {
    let server = Server::bind(args).await?;
    let addr = server.local_addr().map_err(ServeError::Http)?;
    tracing::info!(%addr, "listening");
    println!("publisher listening on http://{addr}/");
    server.run(signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
