//! The benchmark `scripts/bench` runs: our stack against the seed guide's Node stack on the
//! same Sockudo, the same replayed streams and the same machine, in one run. It prints a
//! Markdown table (and writes it to `target/bench/stack.md`); it asserts nothing about
//! speed.
//!
//! Ours: the daemon (`publisher serve`, a separate process) streaming answers posted to it,
//! and native subscribers (the daemon's driver plus the shared assembler) in this process.
//! The guide's: `tests/interop/bench-publisher.mjs` (openai-node + ably-js making the
//! guide's calls, many answers in one process) and `tests/interop/bench-subscriber.mjs`.
//! Latency is measured from the moment the replay server writes a delta (its delta log) to
//! the moment a subscriber holds the text up to the end of that delta.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: a panic is a failed run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use publisher::ably::Realtime;
use publisher::replay::{self, DeltaLog, DeltaSent, ReplayConfig, Synth};
use serde_json::json;
use shared::assembler::Assembler;
use shared::connection::{AttachOptions, Event};
use shared::headers;
use shared::ChannelName;
use tests::js::{ably_args, Protocol, Script};
use tests::realtime::connect;
use tests::sockudo::{Sockudo, API_KEY};

const PROMPT_PREFIX: &str = "bench question";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one run measured.
#[derive(Default)]
struct Run {
    /// Latencies (ms) of every delta of every answer.
    latencies: Vec<f64>,
    /// Ably messages delivered per answer.
    messages_per_answer: Vec<usize>,
    /// CPU seconds the publisher process used.
    cpu_seconds: f64,
    /// Wall seconds from the first delta leaving the replay server to the last one arriving.
    wall_seconds: f64,
    /// Tokens (deltas) in the run.
    tokens: usize,
    /// Answers whose text differed from the expected text (should be 0).
    wrong: usize,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let at = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[at]
    }

    fn messages(&self) -> f64 {
        if self.messages_per_answer.is_empty() {
            return f64::NAN;
        }
        self.messages_per_answer.iter().sum::<usize>() as f64
            / self.messages_per_answer.len() as f64
    }
}

/// The replay server in this process, with its delta log.
struct ReplayServer {
    base_url: String,
    log: DeltaLog,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_replay() -> ReplayServer {
    let log = DeltaLog::default();
    let config = ReplayConfig {
        delta_log: Some(log.clone()),
        ..ReplayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(replay::serve(listener, config, async move {
        let _ = stopped.await;
    }));
    ReplayServer {
        base_url: format!("http://{addr}/v1"),
        log,
        _stop: stop,
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here (0-based, state first).
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The daemon as its own process.
struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(ably: &str, openai: &str, model: &str, rollup_ms: u64) -> Daemon {
        let port = free_port();
        let child = Command::new(root().join("target/release/publisher"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ABLY_API_KEY", API_KEY)
            .env("ABLY_ENDPOINT", ably)
            .env("OPENAI_BASE_URL", openai)
            .env("OPENAI_API_KEY", "sk-bench")
            .env("OPENAI_MODEL", model)
            .env("ROLLUP_MS", rollup_ms.to_string())
            .env("ABLY_MESSAGE_RATE", "0")
            .env("ABLY_CHANNEL_RATE", "0")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("CONTEXT_TURNS", "0")
            .env("LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("target/release/publisher (scripts/bench builds it)");
        let url = format!("http://127.0.0.1:{port}");
        Daemon { child, url }
    }

    async fn ready(&self, http: &reqwest::Client) {
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the daemon did not become ready");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Arrival times of text per answer: (length reached, when).
type Arrivals = HashMap<String, Vec<(usize, SystemTime)>>;

/// What a native subscriber saw, by response id: text arrivals, messages, final texts.
type Watched = (Arrivals, HashMap<String, usize>, HashMap<String, String>);

/// A native subscriber recording when each answer's text grows, keyed by response id.
struct Watcher {
    realtime: Realtime,
    task: tokio::task::JoinHandle<Watched>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn watch(ably: &str, channel: &str) -> Watcher {
    let realtime = connect(ably, "bench-sub", true).unwrap();
    let mut events = realtime.subscribe();
    realtime
        .attach(&ChannelName::from(channel), AttachOptions::default())
        .await
        .unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut view = Assembler::new();
        let mut arrivals: Arrivals = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut texts: HashMap<String, String> = HashMap::new();
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = &mut stopped => None,
            };
            let Some(Event::Message { message, .. }) = event else {
                if event.is_none() {
                    break;
                }
                continue;
            };
            let at = SystemTime::now();
            if message.name.as_deref() != Some(headers::ANSWER_NAME) {
                continue;
            }
            let Some(serial) = message.serial.clone() else {
                continue;
            };
            let _ = view.apply(&message);
            let Some(answer) = view.answer(&serial) else {
                continue;
            };
            let Some(id) = answer.header(headers::RESPONSE_ID).map(str::to_owned) else {
                continue;
            };
            *counts.entry(id.clone()).or_default() += 1;
            arrivals
                .entry(id.clone())
                .or_default()
                .push((answer.text().len(), at));
            texts.insert(id, answer.text().to_owned());
        }
        (arrivals, counts, texts)
    });
    Watcher {
        realtime,
        task,
        stop,
    }
}

/// Latencies of every delta: when the subscriber first held the text through that delta,
/// minus when the replay server wrote it. `ends` gives each answer's delta end offsets.
fn latencies(
    sent: &[DeltaSent],
    arrivals: &Arrivals,
    ends: &HashMap<String, Vec<usize>>,
) -> Vec<f64> {
    let mut out = Vec::new();
    for delta in sent {
        let (Some(seen), Some(ends)) = (
            arrivals.get(&delta.response_id),
            ends.get(&delta.response_id),
        ) else {
            continue;
        };
        let Some(end) = ends.get(delta.index as usize) else {
            continue;
        };
        if let Some((_, at)) = seen.iter().find(|(len, _)| len >= end) {
            if let Ok(latency) = at.duration_since(delta.at) {
                out.push(latency.as_secs_f64() * 1000.0);
            } else {
                out.push(0.0);
            }
        }
    }
    out
}

/// Cumulative end offsets (in `unit`s) of each delta of the synth answer for `prompt`.
fn delta_ends(model: &str, prompt: &str, unit: fn(&str) -> usize) -> (Vec<usize>, String) {
    let synth = Synth::for_request(model, Some(prompt)).unwrap().unwrap();
    let mut end = 0;
    let ends = synth
        .deltas()
        .iter()
        .map(|d| {
            end += unit(d);
            end
        })
        .collect();
    (ends, synth.text())
}

/// Runs `answers` answers of `tokens` tokens at `rate` tokens/s through our daemon.
async fn ours(
    ably: &str,
    replay: &ReplayServer,
    answers: usize,
    tokens: u32,
    rate: u32,
    rollup_ms: u64,
) -> Run {
    let model = format!("synth:tokens={tokens},rate={rate}");
    let daemon = Daemon::start(ably, &replay.base_url, &model, rollup_ms);
    let http = reqwest::Client::new();
    daemon.ready(&http).await;
    let channel = format!(
        "ai:bench-ours-{answers}-{tokens}-{rollup_ms}-{}",
        rand_suffix()
    );
    let watcher = watch(ably, &channel).await;
    replay.log.take();
    let cpu_before = cpu_seconds(daemon.child.id());
    let posts = (0..answers).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/prompts", daemon.url);
        let channel = channel.clone();
        async move {
            let r = http
                .post(url)
                .json(&json!({"channel": channel, "input": format!("{PROMPT_PREFIX} {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
    });
    futures_util::future::join_all(posts).await;
    wait_idle(&daemon, &http).await;
    let cpu = cpu_seconds(daemon.child.id()) - cpu_before;
    finish(watcher, replay, answers, tokens, cpu, str::len).await
}

/// Waits until the daemon has no answer streaming.
async fn wait_idle(daemon: &Daemon, http: &reqwest::Client) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6000 {
        let metrics = http
            .get(format!("{}/metrics", daemon.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("\nrelay_answers_streaming 0\n") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("answers never finished");
}

async fn finish(
    watcher: Watcher,
    replay: &ReplayServer,
    answers: usize,
    tokens: u32,
    cpu: f64,
    unit: fn(&str) -> usize,
) -> Run {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = watcher.stop.send(());
    let (arrivals, counts, texts) = watcher.task.await.unwrap();
    watcher.realtime.close(Duration::from_secs(5)).await;
    let sent = replay.log.take();
    // Each answer's expected text and delta ends, found through its response id: the
    // prompt that produced it is not known here, so match on the text.
    let mut ends = HashMap::new();
    let mut wrong = 0;
    for (id, text) in &texts {
        let found = (0..answers).find_map(|i| {
            let (e, expected) = delta_ends(
                &format!("synth:tokens={tokens}"),
                &format!("{PROMPT_PREFIX} {i}"),
                unit,
            );
            (expected == *text).then_some(e)
        });
        match found {
            Some(e) => {
                ends.insert(id.clone(), e);
            }
            None => wrong += 1,
        }
    }
    let wall = wall_seconds(&sent, &arrivals);
    Run {
        latencies: latencies(&sent, &arrivals, &ends),
        messages_per_answer: counts.values().copied().collect(),
        cpu_seconds: cpu,
        wall_seconds: wall,
        tokens: sent.len(),
        wrong: wrong + answers.saturating_sub(texts.len()),
    }
}

/// Runs `answers` answers of `tokens` tokens at `rate` tokens/s through the guide's Node
/// publisher, watched by the guide's Node subscriber.
async fn guide(ably: &str, replay: &ReplayServer, answers: usize, tokens: u32, rate: u32) -> Run {
    let channel = format!("ai:bench-guide-{answers}-{tokens}-{}", rand_suffix());
    let mut watcher = Script::start(
        "bench-subscriber",
        &ably_args(ably, Protocol::MsgPack, &channel),
        &[],
    )
    .unwrap();
    watcher
        .until_event(Duration::from_secs(20), "attached")
        .await
        .unwrap();
    let model = format!("synth:tokens={tokens},rate={rate}");
    replay.log.take();
    let mut args = ably_args(ably, Protocol::MsgPack, &channel);
    args.extend(
        [
            "--openai-base-url",
            &replay.base_url,
            "--model",
            &model,
            "--answers",
            &answers.to_string(),
            "--prompt-prefix",
            PROMPT_PREFIX,
        ]
        .map(str::to_owned),
    );
    let publisher = Script::start("bench-publisher", &args, &[]).unwrap();
    let published = publisher.finish(Duration::from_secs(600)).await.unwrap();
    assert!(published.status.success(), "{}", published.stderr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watched = watcher.finish(Duration::from_secs(60)).await.unwrap();

    // serial -> (response id, prompt)
    let mut created = HashMap::new();
    let mut cpu = f64::NAN;
    for event in &published.events {
        match event["event"].as_str() {
            Some("created") => {
                created.insert(
                    event["serial"].as_str().unwrap_or("").to_owned(),
                    (
                        event["responseId"].as_str().unwrap_or("").to_owned(),
                        event["prompt"].as_str().unwrap_or("").to_owned(),
                    ),
                );
            }
            Some("done") => cpu = event["cpuSeconds"].as_f64().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    let mut arrivals: Arrivals = HashMap::new();
    let mut counts = Vec::new();
    let mut ends = HashMap::new();
    let mut wrong = 0;
    for event in watched.events.iter().filter(|e| e["event"] == "answer") {
        let serial = event["serial"].as_str().unwrap_or("");
        let Some((id, prompt)) = created.get(serial) else {
            continue;
        };
        let (e, expected) = delta_ends(&format!("synth:tokens={tokens}"), prompt, utf16_len);
        if event["text"].as_str() != Some(expected.as_str()) {
            wrong += 1;
        }
        ends.insert(id.clone(), e);
        counts.push(event["messages"].as_u64().unwrap_or(0) as usize);
        let points = event["arrivals"].as_array().cloned().unwrap_or_default();
        arrivals.insert(
            id.clone(),
            points
                .iter()
                .map(|p| {
                    let len = p[0].as_u64().unwrap_or(0) as usize;
                    let ms = p[1].as_f64().unwrap_or(0.0);
                    (
                        len,
                        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(ms / 1000.0),
                    )
                })
                .collect(),
        );
    }
    let sent = replay.log.take();
    let wall = wall_seconds(&sent, &arrivals);
    Run {
        latencies: latencies(&sent, &arrivals, &ends),
        wrong: wrong + answers.saturating_sub(counts.len()),
        messages_per_answer: counts,
        cpu_seconds: cpu,
        wall_seconds: wall,
        tokens: sent.len(),
    }
}

/// Seconds from the first delta leaving the replay server to the last text arriving.
fn wall_seconds(sent: &[DeltaSent], arrivals: &Arrivals) -> f64 {
    let first = sent.iter().map(|s| s.at).min();
    let last = arrivals
        .values()
        .flat_map(|v| v.iter().map(|(_, at)| *at))
        .max();
    match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).unwrap_or_default().as_secs_f64(),
        _ => f64::NAN,
    }
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

fn rand_suffix() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let table = runtime.block_on(bench());
    println!("{table}");
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("stack.md"), &table).unwrap();
}

async fn bench() -> String {
    let server = Sockudo::start().unwrap();
    let ably = server.endpoint();
    let replay = start_replay().await;
    let mut table = String::new();
    let _ = writeln!(table, "| Measure | Ours | Guide's Node stack |");
    let _ = writeln!(table, "|---|---|---|");

    // Throughput and CPU: one answer of 10,000 tokens, as fast as the replay writes them,
    // one append per token on both sides (our rollup 0).
    let ours_fast = ours(&ably, &replay, 1, 10_000, 0, 0).await;
    let guide_fast = guide(&ably, &replay, 1, 10_000, 0).await;
    let per_10k = |run: &Run| run.cpu_seconds * 10_000.0 / run.tokens.max(1) as f64;
    let _ = writeln!(
        table,
        "| publisher CPU s per 10,000 appended tokens (one append per token) | {:.2} | {:.2} |",
        per_10k(&ours_fast),
        per_10k(&guide_fast)
    );
    let _ = writeln!(
        table,
        "| sustained tokens/s, one answer, replay unpaced (first delta sent → last received) | {:.0} | {:.0} |",
        ours_fast.tokens as f64 / ours_fast.wall_seconds,
        guide_fast.tokens as f64 / guide_fast.wall_seconds
    );
    let _ = writeln!(
        table,
        "| texts not identical to the model's (must be 0) | {} | {} |",
        ours_fast.wrong, guide_fast.wrong
    );
    for answers in [1, 10, 100] {
        let theirs = guide(&ably, &replay, answers, 100, 50).await;
        for rollup in [0, 40] {
            let run = ours(&ably, &replay, answers, 100, 50, rollup).await;
            let guide_cell = if rollup == 0 {
                format!(
                    "{:.1} / {:.1} (wrong texts: {})",
                    theirs.percentile(0.5),
                    theirs.percentile(0.99),
                    theirs.wrong
                )
            } else {
                "(no coalescing)".to_owned()
            };
            let _ = writeln!(
                table,
                "| delta latency p50 / p99 ms, {answers} answer(s) at 50 tokens/s, our rollup {rollup} ms | {:.1} / {:.1} (wrong texts: {}) | {guide_cell} |",
                run.percentile(0.5),
                run.percentile(0.99),
                run.wrong
            );
        }
    }
    let ours_500 = ours(&ably, &replay, 1, 500, 50, 40).await;
    let guide_500 = guide(&ably, &replay, 1, 500, 50).await;
    let _ = writeln!(
        table,
        "| Ably messages per 500-token answer at 50 tokens/s (ours: rollup 40 ms) | {:.0} | {:.0} |",
        ours_500.messages(),
        guide_500.messages()
    );
    table
}
