//! `publisher model --bench`: the local model's figures on this machine (load time, time to
//! first token, tokens per second for one answer and for four at once, peak memory),
//! measured on the engine directly, without HTTP. It asserts nothing.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{Engine, Generated, ModelError, Sampling, Turn};

/// The prompt of the time-to-first-token figure.
const SHORT_PROMPT: &str = "What is the capital of France?";
/// The prompt of the throughput figures: one the model answers at length.
const LONG_PROMPT: &str = "Write a long story about a dragon who learns to fly.";
/// Tokens per answer in the throughput figures.
const ANSWER_TOKENS: usize = 128;
/// Answers at once in the concurrent figure.
const AT_ONCE: usize = 4;

/// What the benchmark measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Loading the file (given by the caller).
    pub load: Duration,
    /// From queuing a short prompt to its first text, the best of three.
    pub first_token: Duration,
    /// Tokens per second of one answer, first token to last.
    pub one: f64,
    /// Tokens per second of [`AT_ONCE`] answers together, over their whole wall time.
    pub together: f64,
    /// The answers' lengths in the concurrent run.
    pub together_tokens: usize,
    /// The process's peak resident memory in bytes, when the OS says.
    pub peak_rss: Option<u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "load time                     {:>8.0} ms", ms(self.load))?;
        writeln!(
            f,
            "time to first token (short)   {:>8.0} ms",
            ms(self.first_token)
        )?;
        writeln!(f, "tokens/s, one answer          {:>8.1}", self.one)?;
        writeln!(
            f,
            "tokens/s, {AT_ONCE} answers at once    {:>8.1}  ({} tokens in all)",
            self.together, self.together_tokens
        )?;
        match self.peak_rss {
            Some(bytes) => write!(
                f,
                "peak RSS                      {:>8.0} MB",
                bytes as f64 / 1e6
            ),
            None => write!(f, "peak RSS                      (unknown)"),
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs the figures on `engine`, loaded in `load`.
pub async fn run(engine: &Engine, load: Duration) -> Result<Report, ModelError> {
    let short = engine
        .model()
        .prompt(&[Turn::new("user", SHORT_PROMPT)], 16)?;
    let mut first_token = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut answer = engine.generate(short.clone(), 1, Sampling::GREEDY);
        let (first, _) = drain(&mut answer, started).await?;
        first_token = first_token.min(first.unwrap_or(Duration::MAX));
    }

    let long = engine
        .model()
        .prompt(&[Turn::new("user", LONG_PROMPT)], ANSWER_TOKENS)?;
    let started = Instant::now();
    let mut answer = engine.generate(long.clone(), ANSWER_TOKENS, Sampling::GREEDY);
    let (first, tokens) = drain(&mut answer, started).await?;
    let streaming = started.elapsed().saturating_sub(first.unwrap_or_default());
    let one = tokens.saturating_sub(1) as f64 / streaming.as_secs_f64().max(1e-9);

    let started = Instant::now();
    let mut answers: Vec<_> = (0..AT_ONCE)
        .map(|_| engine.generate(long.clone(), ANSWER_TOKENS, Sampling::GREEDY))
        .collect();
    let mut together_tokens = 0;
    for answer in &mut answers {
        together_tokens += drain(answer, started).await?.1;
    }
    let together = together_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(Report {
        load,
        first_token,
        one,
        together,
        together_tokens,
        peak_rss: peak_rss(),
    })
}

/// Reads an answer to its end: when its first text came (after `started`), and its tokens.
async fn drain(
    answer: &mut UnboundedReceiver<Generated>,
    started: Instant,
) -> Result<(Option<Duration>, usize), ModelError> {
    let mut first = None;
    while let Some(event) = answer.recv().await {
        match event {
            Generated::Text(_) => {
                first.get_or_insert_with(|| started.elapsed());
            }
            Generated::Done { output_tokens, .. } => return Ok((first, output_tokens)),
            Generated::Failed(message) => return Err(ModelError::Inference(message)),
        }
    }
    Err(ModelError::Inference("the worker went away".into()))
}

/// `VmHWM` of `/proc/self/status`, in bytes (Linux only).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
