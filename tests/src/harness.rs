//! What an end-to-end test starts besides Sockudo: the replay server on a free loopback
//! port, `publisher ask` run in-process from its command line, and the daemon in-process;
//! each stops when dropped or told to.

use std::time::Duration;

use clap::Parser;
use publisher::ably::rest::Rest;
use publisher::answer::Report;
use publisher::cli::{Cli, Command, ServeArgs};
use publisher::replay::{self, ReplayConfig};
use publisher::serve::{ServeError, Server};
use shared::connection::{ApiKey, Endpoint};
use shared::protocol::Message;
use shared::{ChannelName, Serial};
use tokio::sync::oneshot;

use crate::fixtures_dir;
use crate::sockudo::API_KEY;

/// The replay server, serving `fixtures/openai/`.
pub struct Replay {
    /// The base URL to give as OPENAI_BASE_URL (ends in `/v1`).
    pub base_url: String,
    _stop: oneshot::Sender<()>,
}

impl Replay {
    /// Starts it with `interval` between the events of a recording.
    pub async fn start(interval: Duration) -> Result<Self, String> {
        let mut config = ReplayConfig::load_dir(&fixtures_dir()).map_err(|e| e.to_string())?;
        config.interval = interval;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(replay::serve(listener, config, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            _stop: stop,
        })
    }
}

/// What `publisher ask` printed and how its answer ended.
#[derive(Debug)]
pub struct AskOutcome {
    pub report: Report,
    pub stdout: String,
    pub stderr: String,
}

/// The common options pointing the publisher at a local Sockudo and a model server.
pub(crate) fn base_args(ably: &str, openai: &str, model: &str) -> Vec<String> {
    [
        "--ably-endpoint",
        ably,
        "--ably-api-key",
        API_KEY,
        "--openai-base-url",
        openai,
        "--openai-api-key",
        "sk-test-not-a-real-key",
        "--openai-model",
        model,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Runs `publisher ask --channel CHANNEL PROMPT` with `extra` options, parsed from the
/// command line exactly as the binary parses it.
pub async fn ask(
    ably: &str,
    openai: &str,
    model: &str,
    channel: &str,
    prompt: &str,
    extra: &[&str],
) -> Result<AskOutcome, String> {
    let mut argv = vec!["publisher".to_owned(), "ask".to_owned()];
    argv.extend(base_args(ably, openai, model));
    argv.extend(["--channel".to_owned(), channel.to_owned()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv.push(prompt.to_owned());
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Ask(args) = cli.command else {
        return Err("not an ask command".to_owned());
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let report = publisher::ask::run(&args, &mut stdout, &mut stderr)
        .await
        .map_err(|e| e.to_string())?;
    Ok(AskOutcome {
        report,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// The daemon, running in-process on a free loopback port.
pub struct Daemon {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub state: std::sync::Arc<publisher::serve::State>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Daemon {
    /// Starts `publisher serve` with `extra` options.
    pub async fn start(
        ably: &str,
        openai: &str,
        model: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut argv = vec![
            "publisher".to_owned(),
            "serve".to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        argv.extend(base_args(ably, openai, model));
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
        let Command::Serve(args) = cli.command else {
            return Err("not a serve command".to_owned());
        };
        Self::from_args(&args).await
    }

    /// Starts the daemon with parsed options.
    pub async fn from_args(args: &ServeArgs) -> Result<Self, String> {
        let server = Server::bind(args).await.map_err(|e| e.to_string())?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop),
            task,
        })
    }

    /// Asks the daemon to shut down (as SIGTERM does) and waits until it has.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.task).await {
            Ok(Ok(result)) => result.map_err(|e| e.to_string()),
            Ok(Err(err)) => Err(format!("the daemon task panicked: {err}")),
            Err(_) => Err("the daemon did not stop within 30 s".to_owned()),
        }
    }
}

/// The channel's history (newest first), read over REST with the local key.
pub async fn history(ably: &str, channel: &str) -> Result<Vec<Message>, String> {
    let endpoint = Endpoint::parse(ably).map_err(|e| e.to_string())?;
    let key = ApiKey::parse(API_KEY).map_err(|e| e.to_string())?;
    let rest = Rest::new(endpoint, key).map_err(|e| e.to_string())?;
    rest.history(&ChannelName::from(channel), 100)
        .await
        .map_err(|e| e.to_string())
}

/// Asks the daemon at `url` for an answer on `channel` (`POST /v1/prompts`); gives the
/// answer's serial once the daemon accepted the prompt.
pub async fn prompt(url: &str, channel: &str, input: &str) -> Result<Serial, String> {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/prompts"))
        .json(&serde_json::json!({"channel": channel, "input": input}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 202 {
        return Err(format!("POST /v1/prompts: {status} {body}"));
    }
    body["serial"]
        .as_str()
        .map(Serial::from)
        .ok_or_else(|| format!("no serial in {body}"))
}

/// The messages named `name` in `history`.
pub fn named<'a>(history: &'a [Message], name: &str) -> Vec<&'a Message> {
    history
        .iter()
        .filter(|m| m.name.as_deref() == Some(name))
        .collect()
}
