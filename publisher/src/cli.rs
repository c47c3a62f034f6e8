//! The command line: `publisher ask`, `publisher serve`, `publisher model` and
//! `publisher replay`. Every option
//! has an environment variable twin, so the daemon can be configured either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shared::connection::{ApiKey, Endpoint, PRODUCTION_ENDPOINT};
use shared::openai::RetryPolicy;

use crate::openai::OpenAiConfig;

/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "gpt-5.4-mini";

/// OpenAI's API base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Streams OpenAI Responses answers to Ably channels: one Ably message per answer, created
/// empty and appended to as the model writes, so any number of viewers see it live.
#[derive(Debug, Parser)]
#[command(name = "publisher", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream one answer to a channel, print its text on stdout as it arrives, and exit
    /// 0 if it completed. The serial and final status go to stderr.
    Ask(AskArgs),
    /// Run the daemon: an HTTP API that takes prompts and streams their answers, hands
    /// browsers short-lived Ably tokens, and serves the page.
    Serve(ServeArgs),
    /// Run the local language model (a GGUF file, SmolLM2-135M-Instruct by default) as an
    /// OpenAI-compatible server of streamed Responses.
    Model(ModelArgs),
    /// Run a local OpenAI-compatible server that replays recorded Responses streams,
    /// synthesizes long answers and injects faults (for offline use, tests, benchmarks).
    Replay(ReplayArgs),
}

/// Where answers are published.
#[derive(Clone, Debug, Args)]
pub struct AblyArgs {
    /// Ably API key, `appId.keyId:secret` (or any `name:secret` for an Ably-compatible
    /// server). It never leaves this process: browsers get signed token requests.
    #[arg(long, env = "ABLY_API_KEY", hide_env_values = true)]
    pub ably_api_key: Option<String>,

    /// Base URL of the Ably-compatible service. `https://host` means wss:// and https://,
    /// `http://host:port` means plain ws:// and http:// (e.g. a local Sockudo at
    /// http://127.0.0.1:6001).
    #[arg(long, env = "ABLY_ENDPOINT", default_value = PRODUCTION_ENDPOINT)]
    pub ably_endpoint: String,

    /// Connect with short-lived tokens signed by the key (renewed automatically) instead
    /// of sending the key itself on the connection.
    #[arg(long, env = "ABLY_TOKEN_AUTH")]
    pub ably_token_auth: bool,

    /// Ably's own server-side append rollup window in milliseconds (the
    /// `appendRollupWindow` transport parameter); unset leaves Ably's default.
    #[arg(long, env = "ABLY_APPEND_ROLLUP_WINDOW")]
    pub append_rollup_window: Option<u32>,

    /// Messages per second this connection may publish (Ably's default limit is 50). Under
    /// load, the coalescing window widens to stay within it. 0 = unlimited (local
    /// benchmarks).
    #[arg(long, env = "ABLY_MESSAGE_RATE", default_value_t = 50)]
    pub ably_message_rate: u32,

    /// Messages per second this daemon may publish on any one channel (Ably's limit is 50
    /// per channel, whoever publishes). Answers on a busy channel widen their windows to
    /// stay within it; prompts and cancels count too. 0 = unlimited (local benchmarks).
    #[arg(long, env = "ABLY_CHANNEL_RATE", default_value_t = 50)]
    pub ably_channel_rate: u32,

    /// Our publisher-side coalescing window in milliseconds: after an answer's first
    /// append, at most one append per window. 0 sends one append per token.
    #[arg(long, env = "ROLLUP_MS", default_value_t = 40)]
    pub rollup_ms: u64,

    /// Seconds of the liveness lease every streaming answer carries (the `lease` header):
    /// refreshed by its appends, and by an empty append when the model is quiet. Viewers
    /// show an answer whose lease lapsed as stalled, and `serve` ends it `failed`. 0 = off.
    #[arg(long, env = "ANSWER_LEASE", default_value_t = 10)]
    pub answer_lease: u64,
}

/// Where answers come from.
#[derive(Clone, Debug, Args)]
pub struct OpenAiArgs {
    /// OpenAI API key (Bearer). Without it and without OPENAI_BASE_URL, answers come from
    /// the built-in local model (or, with REPLAY_DIR, the built-in replay server), so the
    /// system runs offline.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,

    /// Base URL of the Responses API, including `/v1` (OpenAI or a compatible server such
    /// as vLLM, Ollama or llama.cpp). [default: https://api.openai.com/v1]
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,

    /// Model to ask.
    #[arg(long, env = "OPENAI_MODEL", default_value = DEFAULT_MODEL)]
    pub openai_model: String,

    /// System instructions sent with every request.
    #[arg(long, env = "OPENAI_INSTRUCTIONS")]
    pub instructions: Option<String>,

    /// Upper bound on output tokens per answer.
    #[arg(long, env = "OPENAI_MAX_OUTPUT_TOKENS")]
    pub max_output_tokens: Option<u32>,

    /// Retries of a request that fails before its stream starts (429, 5xx, connection
    /// errors). A stream that has begun is never requested again.
    #[arg(long, env = "OPENAI_MAX_RETRIES", default_value_t = 2)]
    pub openai_max_retries: u32,

    /// Seconds without any byte from the model before the answer fails as stalled.
    #[arg(long, env = "OPENAI_IDLE_TIMEOUT", default_value_t = 60)]
    pub openai_idle_timeout: u64,

    /// Background mode: the model keeps generating when the stream drops, and the answer
    /// is streamed again from where it stopped instead of failing. `auto` is on for
    /// api.openai.com and off for other servers (most do not support it). OpenAI stores
    /// background responses for about ten minutes, so it is not for zero-retention
    /// projects.
    #[arg(long, env = "OPENAI_BACKGROUND", value_enum, default_value_t = BackgroundMode::Auto)]
    pub openai_background: BackgroundMode,

    /// Directory of recorded streams (`*.jsonl`): with no API key and no base URL, the
    /// built-in replay server answers from them instead of the local model.
    #[arg(long, env = "REPLAY_DIR")]
    pub replay_dir: Option<PathBuf>,

    /// The `source` header of answers: `openai`, or `local` / `replay` (the defaults when
    /// the built-in model or replay server answers).
    #[arg(long, env = "ANSWER_SOURCE")]
    pub source: Option<String>,

    #[command(flatten)]
    pub local: LocalModelArgs,
}

/// The local model: which file, how many answers at once, how it samples.
#[derive(Clone, Debug, Args)]
pub struct LocalModelArgs {
    /// A GGUF model of the llama family. [default: target/models/SmolLM2-135M-Instruct.Q4_1.gguf,
    /// which scripts/run fetches]
    #[arg(long, env = "MODEL_PATH")]
    pub model_path: Option<PathBuf>,

    /// Keep the model's weights quantized in memory instead of widening them to floats at
    /// load (less memory, much slower for formats candle has no fast kernel for, like Q4_1).
    #[arg(long, env = "MODEL_KEEP_QUANTIZED")]
    pub model_keep_quantized: bool,

    /// Answers generated at once; more wait in a queue.
    #[arg(long, env = "MODEL_WORKERS", default_value_t = 2)]
    pub model_workers: usize,

    /// Sampling temperature when a request gives none; 0 is greedy.
    #[arg(long, env = "MODEL_TEMPERATURE", default_value_t = 0.2)]
    pub model_temperature: f64,

    /// Nucleus sampling (top_p) when a request gives none.
    #[arg(long, env = "MODEL_TOP_P", default_value_t = 0.9)]
    pub model_top_p: f64,

    /// Sampling seed when a request gives none: the same prompt gets the same answer.
    #[arg(long, env = "MODEL_SEED", default_value_t = 42)]
    pub model_seed: u64,

    /// Upper bound on output tokens when a request gives none.
    #[arg(long, env = "MODEL_MAX_OUTPUT_TOKENS", default_value_t = 512)]
    pub model_max_output_tokens: u32,
}

impl LocalModelArgs {
    /// The model file: `--model-path`, or the default cache.
    pub fn path(&self) -> PathBuf {
        self.model_path
            .clone()
            .filter(|path| !path.as_os_str().is_empty())
            .unwrap_or_else(crate::model::default_path)
    }

    /// Loads the model these options name (blocking: it reads the whole file).
    pub fn load(
        &self,
    ) -> Result<(crate::model::Model, std::time::Duration), crate::model::ModelError> {
        let weights = if self.model_keep_quantized {
            crate::model::Weights::Quantized
        } else {
            crate::model::Weights::Widened
        };
        crate::model::Model::load_with(&self.path(), weights)
    }

    /// What requests get when they do not say.
    pub fn defaults(&self) -> crate::model::server::Defaults {
        crate::model::server::Defaults {
            max_output_tokens: self.model_max_output_tokens.max(1),
            sampling: crate::model::Sampling {
                temperature: self.model_temperature,
                top_p: self.model_top_p,
                seed: self.model_seed,
            },
        }
    }
}

/// The options of `publisher model`.
#[derive(Clone, Debug, Args)]
pub struct ModelArgs {
    /// Address to listen on.
    #[arg(long, env = "MODEL_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,

    /// Measure the model instead of serving it: load time, time to first token, tokens/s
    /// for one answer and for four at once, peak memory. Prints them and exits.
    #[arg(long)]
    pub bench: bool,

    #[command(flatten)]
    pub local: LocalModelArgs,
}

#[derive(Clone, Debug, Args)]
pub struct AskArgs {
    /// Channel to publish the answer on.
    #[arg(long, env = "CHANNEL", default_value = "ai:demo")]
    pub channel: String,

    /// The prompt.
    pub prompt: String,

    #[command(flatten)]
    pub ably: AblyArgs,

    #[command(flatten)]
    pub openai: OpenAiArgs,
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Directory of the built page (`web/dist`), served at `/`.
    #[arg(long, env = "WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// The channel the page shows when its URL names none.
    #[arg(long, env = "DEFAULT_CHANNEL", default_value = "ai:demo")]
    pub default_channel: String,

    /// Channel namespace this daemon serves: prompts and tokens are only for
    /// `<namespace>:<name>` channels.
    #[arg(long, env = "CHANNEL_NAMESPACE", default_value = "ai")]
    pub namespace: String,

    /// The Ably endpoint pages are told to use (`/v1/config`), when browsers reach the
    /// service by another URL than the daemon does. Default: ABLY_ENDPOINT.
    #[arg(long, env = "PUBLIC_ABLY_ENDPOINT")]
    pub public_ably_endpoint: Option<String>,

    /// Secret that prompts, cancels and token requests must carry as
    /// `Authorization: Bearer <secret>`. Unset: open to every allowed origin.
    #[arg(long, env = "API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,

    /// Origins (e.g. `https://chat.example.com`) whose pages may call the API from a
    /// browser, comma-separated. The daemon's own origin is always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Requests per minute each client (IP address) may make to the prompt, cancel and
    /// token endpoints. 0 = unlimited.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 60)]
    pub rate_limit_per_minute: u32,

    /// Identify clients by the first address of `X-Forwarded-For` (only behind a proxy
    /// you trust to set it).
    #[arg(long, env = "TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Lifetime of the tokens handed to browsers, in seconds (they renew through
    /// /v1/token before expiry).
    #[arg(long, env = "TOKEN_TTL", default_value_t = 900)]
    pub token_ttl: u64,

    /// Also let browser tokens publish on their channel, so pages can cancel by publishing
    /// a `cancel` message themselves (otherwise they cancel through this API).
    #[arg(long, env = "TOKEN_ALLOWS_PUBLISH")]
    pub token_allows_publish: bool,

    /// Earlier prompts and answers of the channel given to the model as context.
    #[arg(long, env = "CONTEXT_TURNS", default_value_t = 6)]
    pub context_turns: u32,

    /// Longest prompt accepted, in characters.
    #[arg(long, env = "MAX_INPUT_CHARS", default_value_t = 8000)]
    pub max_input_chars: usize,

    #[command(flatten)]
    pub ably: AblyArgs,

    #[command(flatten)]
    pub openai: OpenAiArgs,
}

#[derive(Clone, Debug, Args)]
pub struct ReplayArgs {
    /// Address to listen on.
    #[arg(long, env = "REPLAY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Directory of recorded streams (`*.jsonl`); the model name picks one by file stem.
    #[arg(long, env = "REPLAY_DIR", default_value = "fixtures/openai")]
    pub dir: PathBuf,

    /// Recording served for model names that match no recording (default: a synthesized
    /// answer quoting the prompt).
    #[arg(long, env = "REPLAY_DEFAULT")]
    pub default: Option<String>,

    /// Milliseconds between the events of a recording.
    #[arg(long, env = "REPLAY_INTERVAL_MS", default_value_t = 30)]
    pub interval_ms: u64,
}

/// A server started inside the process when no model service is configured.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Builtin {
    /// The local language model (`source: local`).
    Model,
    /// The replay server (`source: replay`).
    Replay,
}

/// A configuration problem, said in words.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "ABLY_API_KEY is not set (give --ably-api-key or the ABLY_API_KEY environment variable)"
    )]
    MissingAblyKey,
    #[error("ABLY_API_KEY is not a key: expected `appId.keyId:secret` or `name:secret`")]
    BadAblyKey,
    #[error("ABLY_ENDPOINT: {0}")]
    BadEndpoint(String),
    #[error("channel `{0}` is not valid: use `namespace:name` with no spaces or wildcards")]
    BadChannel(String),
}

impl AblyArgs {
    /// The key, parsed.
    pub fn key(&self) -> Result<ApiKey, ConfigError> {
        let text = self
            .ably_api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or(ConfigError::MissingAblyKey)?;
        ApiKey::parse(text).map_err(|_| ConfigError::BadAblyKey)
    }

    /// The endpoint, parsed.
    pub fn endpoint(&self) -> Result<Endpoint, ConfigError> {
        Endpoint::parse(&self.ably_endpoint).map_err(|e| ConfigError::BadEndpoint(e.to_string()))
    }

    /// The publisher-side coalescing window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.rollup_ms)
    }

    /// The answers' liveness lease, if any.
    pub fn lease(&self) -> Option<Duration> {
        (self.answer_lease > 0).then(|| Duration::from_secs(self.answer_lease))
    }
}

/// When answers ask for background mode.
#[derive(Clone, Copy, Debug, Eq, PartialEq, ValueEnum)]
pub enum BackgroundMode {
    /// On for OpenAI's own API, off for any other server.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl OpenAiArgs {
    /// Whether requests ask for background mode.
    pub fn background(&self) -> bool {
        match self.openai_background {
            BackgroundMode::On => true,
            BackgroundMode::Off => false,
            BackgroundMode::Auto => {
                self.builtin().is_none()
                    && self
                        .openai_base_url
                        .as_deref()
                        .filter(|url| !url.is_empty())
                        .unwrap_or(OPENAI_BASE_URL)
                        .trim_end_matches('/')
                        == OPENAI_BASE_URL
            }
        }
    }

    /// Which built-in server answers, if one does: with no API key and no base URL, the
    /// replay server when REPLAY_DIR is set, else the local model.
    pub fn builtin(&self) -> Option<Builtin> {
        let external = self
            .openai_api_key
            .as_deref()
            .is_some_and(|k| !k.is_empty())
            || self
                .openai_base_url
                .as_deref()
                .is_some_and(|u| !u.is_empty());
        match (&self.replay_dir, external) {
            (_, true) => None,
            (Some(_), false) => Some(Builtin::Replay),
            (None, false) => Some(Builtin::Model),
        }
    }

    /// The client configuration for `base_url`.
    pub fn client_config(&self, base_url: String) -> OpenAiConfig {
        OpenAiConfig {
            base_url,
            api_key: self.openai_api_key.clone().filter(|k| !k.is_empty()),
            retry: RetryPolicy {
                max_retries: self.openai_max_retries,
                ..RetryPolicy::default()
            },
            idle_timeout: Duration::from_secs(self.openai_idle_timeout.max(1)),
            connect_timeout: Duration::from_secs(10),
        }
    }
}
