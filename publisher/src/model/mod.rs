//! A real language model on the CPU, served as an OpenAI-compatible Responses stream: the
//! offline default of `publisher serve`, and `publisher model` on its own.
//!
//! [`Model::load`] reads a GGUF file of the llama family (by default SmolLM2-135M-Instruct,
//! Q4_1, which `scripts/run` fetches once into `target/models/`): candle's quantized llama
//! weights, a tokenizer built from the file's own vocabulary and merges ([`tokenizer`]), and
//! the file's chat template ([`chat`]). [`Engine`] runs answers on worker threads, away from
//! the async runtime, token by token, and stops one as soon as its receiver goes away.
//! [`server`] turns those tokens into the Responses event sequence over HTTP.
//!
//! Nothing here downloads anything: a missing or broken file is an error that names the
//! command that fetches it.

pub mod bench;
pub mod chat;
mod engine;
pub mod server;
pub mod tokenizer;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::Device;
use candle_transformers::models::quantized_llama::ModelWeights;

pub use chat::{ChatTemplate, Turn};
pub use engine::{Engine, Generated, Sampling, StopReason};
pub use tokenizer::TextStream;

/// The file name of the default model inside `target/models/`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The command that fetches the default model.
pub const FETCH_COMMAND: &str = "scripts/run (or: source scripts/lib.sh && ensure_model)";

/// The longest sequence (prompt and answer, in tokens) the quantized llama runs.
pub const CONTEXT_TOKENS: usize = candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is not there.
    #[error("no model file at {}: fetch the default one with {FETCH_COMMAND}, or give another GGUF with --model-path", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file is there but is not a usable GGUF model.
    #[error("{} is not a usable GGUF model ({reason}): fetch it again with {FETCH_COMMAND} after deleting it", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file's metadata lacks something the model needs.
    #[error("the model's metadata: {0}")]
    Metadata(String),
    /// The chat template does not render.
    #[error("the chat template: {0}")]
    Template(String),
    /// The prompt does not fit the model's context.
    #[error("the prompt is {tokens} tokens; with the answer it must fit in {limit}")]
    TooLong {
        /// The prompt's length in tokens.
        tokens: usize,
        /// The context, less the room kept for the answer.
        limit: usize,
    },
    /// Tokenizing or running the network failed.
    #[error("inference: {0}")]
    Inference(String),
}

impl ModelError {
    fn inference(error: impl std::fmt::Display) -> Self {
        Self::Inference(error.to_string())
    }
}

/// A loaded model: its weights (cloned per answer, sharing the tensors), tokenizer, chat
/// template and the tokens that end an answer.
#[derive(Clone)]
pub struct Model {
    name: String,
    weights: ModelWeights,
    tokenizer: tokenizers::Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("stop_ids", &self.stop_ids)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a GGUF model from `path`, its quantized weights widened (see [`Weights`]), and
    /// reports how long that took.
    pub fn load(path: &Path) -> Result<(Self, Duration), ModelError> {
        Self::load_with(path, Weights::Widened)
    }

    /// Loads a GGUF model from `path`, keeping or widening its weights, and reports how
    /// long that took.
    pub fn load_with(path: &Path, weights: Weights) -> Result<(Self, Duration), ModelError> {
        let started = Instant::now();
        let file = File::open(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing {
                path: path.to_path_buf(),
            },
            _ => ModelError::Corrupt {
                path: path.to_path_buf(),
                reason: error.to_string(),
            },
        })?;
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| corrupt(e.to_string()))?;
        let tokenizer = tokenizer::from_gguf(&content)?;
        let template = ChatTemplate::from_gguf(&content)?;
        let stop_ids = stop_ids(&content, &tokenizer);
        let name = name(&content, path);
        let weights = match weights {
            Weights::Quantized => ModelWeights::from_gguf(content, &mut reader, &Device::Cpu),
            Weights::Widened => widened(&content, &mut reader).and_then(|(content, mut bytes)| {
                ModelWeights::from_gguf(content, &mut bytes, &Device::Cpu)
            }),
        }
        .map_err(|e| corrupt(e.to_string()))?;
        let model = Self {
            name,
            weights,
            tokenizer,
            template,
            stop_ids,
        };
        Ok((model, started.elapsed()))
    }

    /// The model's name, as answers report it (the file's stem, e.g.
    /// `SmolLM2-135M-Instruct.Q4_1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer built from the file.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// The token ids of a conversation rendered with the chat template, ready for the
    /// model to answer. Control tokens inside the turns' text are defused first. Oldest turns (after a leading system turn) are dropped until the
    /// prompt leaves `answer_room` tokens of the context free.
    pub fn prompt(&self, turns: &[Turn], answer_room: usize) -> Result<Vec<u32>, ModelError> {
        let limit = CONTEXT_TOKENS.saturating_sub(answer_room.max(1));
        let turns: Vec<Turn> = turns
            .iter()
            .map(|turn| Turn::new(&turn.role, self.defuse(&turn.content)))
            .collect();
        let turns = turns.as_slice();
        let keep_first = usize::from(turns.first().is_some_and(|t| t.role == "system"));
        let mut dropped = 0;
        loop {
            let kept: Vec<Turn> = turns
                .iter()
                .take(keep_first)
                .chain(turns.iter().skip(keep_first + dropped))
                .cloned()
                .collect();
            let text = self.template.render(&kept)?;
            let ids = self.encode(&text)?;
            let last = keep_first + dropped + 1 >= turns.len();
            if ids.len() <= limit || last {
                if ids.len() > limit {
                    return Err(ModelError::TooLong {
                        tokens: ids.len(),
                        limit,
                    });
                }
                return Ok(ids);
            }
            dropped += 1;
        }
    }

    /// `text` with every control token written in it (such as `<|im_start|>`) broken by a
    /// zero-width space, so that what a person types can never open or close a turn.
    fn defuse(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for token in self.tokenizer.get_added_tokens_decoder().values() {
            let content = token.content.as_str();
            if token.special && content.len() > 1 && text.contains(content) {
                let split = content.chars().next().map_or(1, char::len_utf8);
                let (head, tail) = content.split_at(split);
                text = text.replace(content, &format!("{head}\u{200B}{tail}"));
            }
        }
        text
    }

    /// Token ids of `text`; control tokens written in it (such as `<|im_start|>`) count as
    /// those tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(ModelError::inference)
    }

    fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }
}

/// How the weights are held in memory.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum Weights {
    /// Widened to floats at load: 4 bytes a parameter (about 0.55 GB for SmolLM2-135M), but
    /// candle then multiplies with its SIMD float kernels. It has none for some quantized
    /// formats, Q4_1 among them; measured on this project's 2-core machine, SmolLM2 Q4_1
    /// kept quantized spends about 3 CPU-seconds on a short prompt and 0.2 s a token;
    /// widened, the first token comes after 135-170 ms and the rest at 16-25 tokens/s.
    #[default]
    Widened,
    /// As stored in the file: least memory, for models too big to widen.
    Quantized,
}

/// The same GGUF with every quantized tensor converted to f16, in memory: candle widens
/// f16 weights to f32 tensors when it builds the model.
fn widened<R: std::io::Read + std::io::Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
) -> candle_core::Result<(gguf_file::Content, std::io::Cursor<Vec<u8>>)> {
    use candle_core::quantized::{GgmlDType, QTensor};
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let tensor = content.tensor(reader, name, &Device::Cpu)?;
        let tensor = match tensor.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => tensor,
            _ => QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, GgmlDType::F16)?,
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &tensors)?;
    bytes.set_position(0);
    let content = gguf_file::Content::read(&mut bytes)?;
    Ok((content, bytes))
}

/// The tokens that end an answer: the end-of-sequence token, and the template's end of turn
/// and end of text when the vocabulary has them.
fn stop_ids(content: &gguf_file::Content, tokenizer: &tokenizers::Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = content
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
        .into_iter()
        .collect();
    for token in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"] {
        if let Some(id) = tokenizer.token_to_id(token) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// The name answers report: the file's stem.
fn name(content: &gguf_file::Content, path: &Path) -> String {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .map(str::to_owned)
        .or_else(|| {
            content
                .metadata
                .get("general.name")
                .and_then(|v| v.to_string().ok())
                .cloned()
        })
        .unwrap_or_else(|| "local".to_owned())
}

/// Where the default model is unpacked: `$MODEL_PATH`, else `target/models/` of the
/// workspace this binary was built in (the cache `scripts/run` fills).
pub fn default_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MODEL_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("models")
        .join(DEFAULT_MODEL_FILE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

/// The default model, loaded once for all the tests of this binary, with two workers.
#[cfg(test)]
pub(crate) fn test_engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let (model, took) = Model::load(&default_path()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("loaded {} in {took:?}", model.name());
        Engine::start(model, 2).unwrap_or_else(|e| panic!("{e}"))
    })
}
