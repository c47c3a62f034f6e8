//! [`Engine`]: answers generated on worker threads, off the async runtime, one token at a
//! time. Jobs wait in a queue for a free worker; a job whose receiver is gone is skipped, or
//! stopped before its next token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{Model, ModelError, TextStream, CONTEXT_TOKENS};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 (or less) picks the likeliest token every time (greedy); higher spreads the choice.
    pub temperature: f64,
    /// Nucleus sampling: only the likeliest tokens whose probabilities add up to this are
    /// candidates; 1 (or more) keeps them all.
    pub top_p: f64,
    /// Seeds the choice, so the same prompt and settings give the same answer.
    pub seed: u64,
}

impl Sampling {
    /// Always the likeliest token.
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };

    fn to_candle(self) -> CandleSampling {
        if self.temperature <= 0.0 || !self.temperature.is_finite() {
            CandleSampling::ArgMax
        } else if self.top_p > 0.0 && self.top_p < 1.0 {
            CandleSampling::TopP {
                p: self.top_p,
                temperature: self.temperature,
            }
        } else {
            CandleSampling::All {
                temperature: self.temperature,
            }
        }
    }
}

/// Penalty on tokens seen in the last [`REPEAT_WINDOW`] tokens, which keeps a small model
/// from looping on one phrase.
const REPEAT_PENALTY: f32 = 1.1;
/// How far back [`REPEAT_PENALTY`] looks, in tokens.
const REPEAT_WINDOW: usize = 64;

/// One answer to generate, waiting for a worker.
#[derive(Debug)]
struct Job {
    /// The prompt's token ids (see [`Model::prompt`]).
    prompt: Vec<u32>,
    /// The most tokens the answer may have.
    max_tokens: usize,
    sampling: Sampling,
    out: UnboundedSender<Generated>,
}

/// What a worker reports about a job, in order: text, then one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Generated {
    /// More of the answer: whole characters only.
    Text(String),
    /// The answer is over.
    Done {
        /// Why it ended.
        reason: StopReason,
        /// Tokens in the answer (the end-of-turn token not counted).
        output_tokens: usize,
    },
    /// Inference failed.
    Failed(String),
}

/// Why an answer ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum StopReason {
    /// The model ended its turn.
    End,
    /// It reached the token limit (the request's, or the context's).
    MaxTokens,
}

/// Counters shared by the workers.
#[derive(Debug, Default)]
struct Stats {
    sampled: AtomicU64,
    finished: AtomicU64,
}

/// The model and its workers. Clones share both; the workers stop when the last clone is
/// dropped and their current job ends.
#[derive(Clone, Debug)]
pub struct Engine {
    model: Arc<Model>,
    jobs: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    workers: usize,
}

impl Engine {
    /// Starts `workers` threads (at least one) answering jobs for `model`.
    pub fn start(model: Model, workers: usize) -> Result<Self, ModelError> {
        let model = Arc::new(model);
        let stats = Arc::new(Stats::default());
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let workers = workers.max(1);
        for index in 0..workers {
            let (model, stats, queue) = (model.clone(), stats.clone(), queue.clone());
            std::thread::Builder::new()
                .name(format!("model-{index}"))
                .spawn(move || work(&model, &stats, &queue))
                .map_err(|e| ModelError::Inference(format!("cannot start a worker: {e}")))?;
        }
        Ok(Self {
            model,
            jobs,
            stats,
            workers,
        })
    }

    /// The model the workers run.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How many workers answer at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues an answer to `prompt`; its text arrives on the receiver. Dropping the
    /// receiver stops the answer before its next token.
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        max_tokens: usize,
        sampling: Sampling,
    ) -> UnboundedReceiver<Generated> {
        let (out, receiver) = unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            sampling,
            out,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // Unreachable while `self` holds the queue; said anyway rather than hung.
            let _ = job
                .out
                .send(Generated::Failed("the model's workers stopped".into()));
        }
        receiver
    }

    /// Tokens sampled so far, over all jobs (for tests and benchmarks).
    pub fn tokens_sampled(&self) -> u64 {
        self.stats.sampled.load(Ordering::SeqCst)
    }

    /// Jobs finished so far, however they ended.
    pub fn jobs_finished(&self) -> u64 {
        self.stats.finished.load(Ordering::SeqCst)
    }
}

fn work(model: &Model, stats: &Stats, queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        match run(model, &job, stats) {
            Ok(Some(done)) => {
                let _ = job.out.send(done);
            }
            Ok(None) => tracing::debug!("the client left; generation stopped"),
            Err(error) => {
                tracing::warn!(%error, "generation failed");
                let _ = job.out.send(Generated::Failed(error.to_string()));
            }
        }
        stats.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// Generates one answer. `None` when the receiver went away first.
fn run(model: &Model, job: &Job, stats: &Stats) -> Result<Option<Generated>, ModelError> {
    if job.prompt.is_empty() {
        return Ok(Some(Generated::Failed("the prompt has no tokens".into())));
    }
    if job.out.is_closed() {
        return Ok(None);
    }
    let failed = ModelError::inference;
    let mut weights = model.weights.clone();
    let mut sampler = LogitsProcessor::from_sampling(job.sampling.seed, job.sampling.to_candle());
    let mut text = TextStream::new(&model.tokenizer);
    let mut context = job.prompt.clone();
    let input = Tensor::new(job.prompt.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .map_err(failed)?;
    let mut logits = weights.forward(&input, 0).map_err(failed)?;
    let mut output_tokens = 0;
    let reason = loop {
        let scores = logits
            .squeeze(0)
            .and_then(|l| l.to_dtype(DType::F32))
            .map_err(failed)?;
        let start = context.len().saturating_sub(REPEAT_WINDOW);
        let recent = context.get(start..).unwrap_or_default();
        let scores =
            candle_transformers::utils::apply_repeat_penalty(&scores, REPEAT_PENALTY, recent)
                .map_err(failed)?;
        let next = sampler.sample(&scores).map_err(failed)?;
        stats.sampled.fetch_add(1, Ordering::SeqCst);
        if model.is_stop(next) {
            break StopReason::End;
        }
        output_tokens += 1;
        context.push(next);
        if let Some(piece) = text.push(next)? {
            if job.out.send(Generated::Text(piece)).is_err() {
                return Ok(None);
            }
        }
        if output_tokens >= job.max_tokens || context.len() >= CONTEXT_TOKENS {
            break StopReason::MaxTokens;
        }
        if job.out.is_closed() {
            return Ok(None);
        }
        let input = Tensor::new(&[next], &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(failed)?;
        logits = weights.forward(&input, context.len() - 1).map_err(failed)?;
    };
    if let Some(rest) = text.finish()? {
        if job.out.send(Generated::Text(rest)).is_err() {
            return Ok(None);
        }
    }
    Ok(Some(Generated::Done {
        reason,
        output_tokens,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
