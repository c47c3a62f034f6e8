//! Turns the command line into running parts: the Ably connection, the model client (with the
//! built-in local model, or replay server, when no model service is configured) and the
//! answer runner they feed.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use shared::auth::TokenParams;
use shared::connection::{Auth, Config, Endpoint};

use crate::ably::rest::{KeyTokens, Rest};
use crate::ably::{Realtime, TokenSource};
use crate::answer::Answers;
use crate::cli::{AblyArgs, Builtin, OpenAiArgs, OPENAI_BASE_URL};
use crate::metrics::Metrics;
use crate::model::{self, Engine};
use crate::openai::OpenAi;
use crate::replay::{self, ReplayConfig};

/// How long to wait for the first Ably connection.
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// Pause between the events of the built-in replay server's answers.
const BUILTIN_REPLAY_INTERVAL: Duration = Duration::from_millis(30);

/// Why the parts could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::cli::ConfigError),
    #[error("{0}")]
    Ably(String),
    #[error("OpenAI client: {0}")]
    OpenAi(String),
    #[error("built-in replay server: {0}")]
    Replay(String),
    #[error("built-in model: {0}")]
    Model(String),
}

/// The running parts every command shares.
pub struct Parts {
    pub answers: Answers,
    pub rest: Rest,
    pub endpoint: Endpoint,
    /// The built-in model or replay server, if one answers; it stops when this is dropped.
    pub replay: Option<ReplayGuard>,
}

/// Keeps the built-in model or replay server running; dropping it stops the server.
pub struct ReplayGuard {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Connects to Ably, prepares the model client and waits until the connection is up.
pub async fn start(
    ably: &AblyArgs,
    openai: &OpenAiArgs,
    metrics: Arc<Metrics>,
) -> Result<Parts, StartError> {
    let endpoint = ably.endpoint()?;
    let key = ably.key()?;
    let rest =
        Rest::new(endpoint.clone(), key.clone()).map_err(|e| StartError::Ably(e.to_string()))?;

    let (auth, tokens): (Auth, Option<Arc<dyn TokenSource>>) = if ably.ably_token_auth {
        let source = KeyTokens {
            rest: rest.clone(),
            params: TokenParams::default(),
        };
        let token = source.token().await.map_err(StartError::Ably)?;
        (Auth::Token(token), Some(source.shared()))
    } else {
        (Auth::Key(key), None)
    };
    let id_prefix = format!("pub{:08x}", rand::rng().random::<u32>());
    let mut config = Config::new(endpoint.clone(), auth, id_prefix);
    config.echo = false;
    config.jitter_seed = rand::rng().random();
    if let Some(window) = ably.append_rollup_window {
        config
            .transport_params
            .push(("appendRollupWindow".to_owned(), window.to_string()));
    }
    let (realtime, _task) = Realtime::start(config, tokens);
    realtime
        .wait_connected(CONNECT_WAIT)
        .await
        .map_err(StartError::Ably)?;

    let builtin = openai.builtin();
    let (base_url, replay) = match builtin {
        Some(Builtin::Model) => {
            let (url, stop) = start_builtin_model(openai).await?;
            tracing::warn!("OPENAI_API_KEY is not set: answers come from the local model ({url})");
            (url, Some(stop))
        }
        Some(Builtin::Replay) => {
            let (url, stop) = start_builtin_replay(openai).await?;
            tracing::warn!(
                "OPENAI_API_KEY is not set: answers come from the built-in replay server ({url})"
            );
            (url, Some(stop))
        }
        None => {
            let base = openai
                .openai_base_url
                .clone()
                .filter(|url| !url.is_empty())
                .unwrap_or_else(|| OPENAI_BASE_URL.to_owned());
            (base, None)
        }
    };
    let source = openai.source.clone().unwrap_or_else(|| {
        match builtin {
            Some(Builtin::Model) => "local",
            Some(Builtin::Replay) => "replay",
            None => "openai",
        }
        .to_owned()
    });
    let client = OpenAi::new(openai.client_config(base_url))
        .map_err(|e| StartError::OpenAi(e.to_string()))?;
    let answers = Answers::new(
        realtime,
        client,
        metrics,
        ably.window(),
        ably.ably_message_rate,
        &source,
    )
    .with_channel_rate(ably.ably_channel_rate)
    .with_lease(ably.lease())
    .with_find(Arc::new(rest.clone()));
    Ok(Parts {
        answers,
        rest,
        endpoint,
        replay: replay.map(|stop| ReplayGuard { _stop: stop }),
    })
}

/// Loads the local model (off the runtime: it reads ~100 MB) and serves it on a free
/// loopback port.
async fn start_builtin_model(
    openai: &OpenAiArgs,
) -> Result<(String, tokio::sync::oneshot::Sender<()>), StartError> {
    let local = openai.local.clone();
    let loading = local.clone();
    let (model, took) = tokio::task::spawn_blocking(move || loading.load())
        .await
        .map_err(|e| StartError::Model(e.to_string()))?
        .map_err(|e| StartError::Model(e.to_string()))?;
    tracing::info!(
        model = model.name(),
        load_ms = took.as_millis(),
        "loaded the local model"
    );
    let engine =
        Engine::start(model, local.model_workers).map_err(|e| StartError::Model(e.to_string()))?;
    let defaults = local.defaults();
    on_loopback("model", move |listener, shutdown| {
        model::server::serve(listener, engine, defaults, shutdown)
    })
    .await
    .map_err(StartError::Model)
}

/// Binds a free loopback port and runs the built-in server `kind` there (started by `serve`
/// with its listener and shutdown signal) until the returned sender is dropped; gives its
/// base URL.
async fn on_loopback<F, S>(
    kind: &'static str,
    serve: S,
) -> Result<(String, tokio::sync::oneshot::Sender<()>), String>
where
    S: FnOnce(tokio::net::TcpListener, futures_util::future::BoxFuture<'static, ()>) -> F,
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = Box::pin(async move {
        let _ = stopped.await;
    });
    let server = serve(listener, shutdown);
    tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(error = %err, "the built-in {kind} server stopped");
        }
    });
    Ok((format!("http://{addr}/v1"), stop))
}

async fn start_builtin_replay(
    openai: &OpenAiArgs,
) -> Result<(String, tokio::sync::oneshot::Sender<()>), StartError> {
    let mut config = match &openai.replay_dir {
        Some(dir) => ReplayConfig::load_dir(dir).map_err(|e| StartError::Replay(e.to_string()))?,
        None => ReplayConfig::default(),
    };
    config.interval = BUILTIN_REPLAY_INTERVAL;
    on_loopback("replay", move |listener, shutdown| {
        replay::serve(listener, config, shutdown)
    })
    .await
    .map_err(StartError::Replay)
}
