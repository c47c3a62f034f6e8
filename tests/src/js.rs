//! Runs the scripts of `tests/interop/` (the seed guide's publisher and subscriber, and a
//! history reader, all on the official `ably` and `openai` npm clients) under Node, and
//! reads the JSON lines they print. A script is killed when its [`Script`] is dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::sockudo::API_KEY;

/// The npm package holding the scripts.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Fails with what to run unless the pinned npm packages are installed.
pub fn require_packages() -> Result<(), String> {
    let modules = interop_dir().join("node_modules");
    for package in ["ably", "openai"] {
        if !modules.join(package).join("package.json").is_file() {
            return Err(format!(
                "{} has no `{package}`: run `npm ci` in tests/interop (scripts/test does it)",
                modules.display()
            ));
        }
    }
    Ok(())
}

/// The wire protocol an ably-js client speaks.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Protocol {
    /// ably-js's default in Node, so what the guide's code speaks.
    MsgPack,
    /// What ably-js speaks in a browser.
    Json,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::MsgPack => "msgpack",
            Self::Json => "json",
        }
    }
}

/// `--ably-endpoint`, `--ably-api-key` (the local key), `--ably-protocol` and `--channel`.
pub fn ably_args(endpoint: &str, protocol: Protocol, channel: &str) -> Vec<String> {
    [
        "--ably-endpoint",
        endpoint,
        "--ably-api-key",
        API_KEY,
        "--ably-protocol",
        protocol.as_str(),
        "--channel",
        channel,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// What arrives from a script's stdout.
enum Line {
    Json(Value),
    /// A line that is not JSON: a bug in the script, reported as such.
    Garbled(String),
}

/// A running `node tests/interop/<name>.mjs`: its JSON lines, its stderr, its exit.
pub struct Script {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Line>,
    /// Every JSON line read so far, in order.
    events: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

/// How a script ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Every JSON line it printed.
    pub events: Vec<Value>,
    pub stderr: String,
}

/// The most of a script's stderr kept for reports.
const STDERR_KEPT: usize = 16_000;

impl Script {
    /// Starts `node tests/interop/<name>.mjs ARGS` with `env` added to the environment (the
    /// node binary is `NODE` or `node` on PATH).
    pub fn start(name: &str, args: &[String], env: &[(&str, &str)]) -> Result<Self, String> {
        require_packages()?;
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let script = interop_dir().join(format!("{name}.mjs"));
        let mut child = Command::new(&node)
            .arg(&script)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{node} {}: {e}", script.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().ok_or("no stderr pipe")?;

        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.get("event").is_some() => Line::Json(value),
                    _ => Line::Garbled(line),
                };
                if sender.send(parsed).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let kept = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut pipe = stderr_pipe;
            let mut buffer = [0_u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = kept.lock() {
                    text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    if text.len() > STDERR_KEPT * 2 {
                        let cut = text.len() - STDERR_KEPT;
                        let cut = (cut..text.len())
                            .find(|i| text.is_char_boundary(*i))
                            .unwrap_or(cut);
                        text.drain(..cut);
                    }
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            events: Vec::new(),
            stderr,
        })
    }

    /// Every JSON line read so far.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// What the script wrote on stderr (its last part).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads lines until one satisfies `want`, up to `limit`; returns it. Fails on a
    /// timeout, on the end of output, on a non-JSON line and on an `error` line.
    pub async fn until(
        &mut self,
        limit: Duration,
        what: &str,
        mut want: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => return Err(self.report(&format!("ended before {what}"))),
                Err(_) => {
                    return Err(
                        self.report(&format!("no {what} within {:.1} s", limit.as_secs_f64()))
                    )
                }
            };
            match line {
                Line::Json(value) => {
                    self.events.push(value.clone());
                    if value["event"] == "error" {
                        return Err(self.report(&format!("reported an error before {what}")));
                    }
                    if want(&value) {
                        return Ok(value);
                    }
                }
                Line::Garbled(text) => {
                    return Err(self.report(&format!("printed a line that is no event: {text}")))
                }
            }
        }
    }

    /// Reads lines until an event named `event`.
    pub async fn until_event(&mut self, limit: Duration, event: &str) -> Result<Value, String> {
        self.until(limit, &format!("`{event}` event"), |v| v["event"] == event)
            .await
    }

    /// Closes its stdin (the subscriber's signal to stop), reads what is left and waits for
    /// it to exit, killing it after `limit`.
    pub async fn finish(mut self, limit: Duration) -> Result<Finished, String> {
        drop(self.stdin.take());
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(Line::Json(value))) => self.events.push(value),
                Ok(Some(Line::Garbled(text))) => {
                    return Err(self.report(&format!("printed a line that is no event: {text}")))
                }
                Ok(None) => break,
                Err(_) => {
                    return Err(self.report(&format!(
                        "did not finish within {:.1} s",
                        limit.as_secs_f64()
                    )))
                }
            }
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => return Err(self.report("closed its stdout but did not exit")),
                Err(e) => return Err(self.report(&format!("wait failed: {e}"))),
            }
        };
        Ok(Finished {
            status,
            events: std::mem::take(&mut self.events),
            stderr: self.stderr(),
        })
    }

    /// A failure report: what happened, the last events and the end of stderr.
    pub fn report(&self, what: &str) -> String {
        let events: Vec<String> = self
            .events
            .iter()
            .rev()
            .take(8)
            .rev()
            .map(|v| {
                let text = v.to_string();
                match text.char_indices().nth(400) {
                    Some((at, _)) => format!("{}…", &text[..at]),
                    None => text,
                }
            })
            .collect();
        let stderr = self.stderr();
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        format!(
            "{}.mjs {what}\nlast events:\n  {}\nstderr (end):\n  {}",
            self.name,
            events.join("\n  "),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        )
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An answer as a JS script reports it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct JsAnswer {
    pub serial: String,
    pub name: Option<String>,
    pub text: String,
    pub status: String,
    pub deleted: bool,
}

impl JsAnswer {
    /// Reads an `answer` event, or one entry of an `answers` event.
    pub fn from_value(value: &Value) -> Option<Self> {
        Some(Self {
            serial: value["serial"].as_str()?.to_owned(),
            name: value["name"].as_str().map(str::to_owned),
            text: value["text"].as_str()?.to_owned(),
            status: value["status"].as_str()?.to_owned(),
            deleted: value["deleted"].as_bool().unwrap_or(false),
        })
    }
}

/// The guide's publisher streaming one answer to `prompt` from `model` at `openai`.
pub fn guide_publisher(
    ably: &str,
    protocol: Protocol,
    openai: &str,
    channel: &str,
    model: &str,
    prompt: &str,
) -> Result<Script, String> {
    let mut args = ably_args(ably, protocol, channel);
    args.extend(
        [
            "--openai-base-url",
            openai,
            "--model",
            model,
            "--prompt",
            prompt,
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    Script::start("publisher", &args, &[])
}

/// The guide's subscriber on `channel`, attaching with `rewind` when given; resolves once
/// it has attached.
pub async fn guide_subscriber(
    ably: &str,
    protocol: Protocol,
    channel: &str,
    rewind: Option<&str>,
    limit: Duration,
) -> Result<Script, String> {
    let mut args = ably_args(ably, protocol, channel);
    if let Some(rewind) = rewind {
        args.extend(["--rewind".to_owned(), rewind.to_owned()]);
    }
    let mut script = Script::start("subscriber", &args, &[])?;
    script.until_event(limit, "attached").await?;
    Ok(script)
}

impl Script {
    /// For a subscriber: reads until its answer `serial` satisfies `done`; returns it.
    pub async fn until_answer(
        &mut self,
        limit: Duration,
        serial: &str,
        mut done: impl FnMut(&JsAnswer) -> bool,
    ) -> Result<JsAnswer, String> {
        let mut last = None;
        let found = self
            .until(
                limit,
                &format!("the awaited state of answer {serial}"),
                |v| {
                    if v["event"] != "answer" || v["serial"] != serial {
                        return false;
                    }
                    let answer = JsAnswer::from_value(v);
                    let ok = answer.as_ref().is_some_and(&mut done);
                    last = answer;
                    ok
                },
            )
            .await;
        match found {
            Ok(value) => JsAnswer::from_value(&value).ok_or_else(|| format!("bad answer {value}")),
            Err(err) => Err(format!("{err}\nlast state of {serial}: {last:?}")),
        }
    }
}

impl Finished {
    /// A subscriber's closing `answers` list.
    pub fn answers(&self) -> Result<Vec<JsAnswer>, String> {
        let list = self
            .events
            .iter()
            .rev()
            .find(|v| v["event"] == "answers")
            .ok_or("no `answers` event")?;
        list["answers"]
            .as_array()
            .ok_or("`answers` is no list")?
            .iter()
            .map(|v| JsAnswer::from_value(v).ok_or_else(|| format!("bad answer {v}")))
            .collect()
    }
}

/// The channel's history read by ably-js (`channel.history()`), newest first: each
/// message as `{action, name, serial, versionSerial, data, headers}`.
pub async fn js_history(
    ably: &str,
    protocol: Protocol,
    channel: &str,
) -> Result<Vec<Value>, String> {
    let mut script = Script::start("history", &ably_args(ably, protocol, channel), &[])?;
    let found = script
        .until_event(Duration::from_secs(20), "history")
        .await?;
    let finished = script.finish(Duration::from_secs(5)).await?;
    if !finished.status.success() {
        return Err(format!(
            "history.mjs exited {}: {}",
            finished.status, finished.stderr
        ));
    }
    found["messages"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("history without messages: {found}"))
}
