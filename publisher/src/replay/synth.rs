//! Synthesized answers: the `synth:` model grammar, their deterministic text, and the
//! Responses stream (with an optional injected fault) the replay server plays for them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::json;

use super::events::AnswerEvents;
use super::plan::{Action, Plan};
use super::request::CreateRequest;
use super::ReplayError;

/// The number of deltas when `tokens` is not given.
pub const DEFAULT_TOKENS: u32 = 60;
/// Deltas per second when `rate` is not given.
pub const DEFAULT_RATE: f64 = 50.0;
/// The largest `tokens` accepted.
pub const MAX_TOKENS: u32 = 100_000;
/// The smallest positive `rate` accepted (one delta every 100 seconds).
const MIN_RATE: f64 = 0.01;

/// A parsed `synth` model: a synthesized answer, and the fault it carries.
///
/// ```text
/// synth
/// synth:tokens=N,rate=R,fault=KIND[@K],seed=S     every part optional, in any order
/// ```
///
/// - `tokens`: the number of `response.output_text.delta` events, 0 to 100000 (default 60).
///   Each delta is one word, with its leading space, sometimes followed by `,` or `.`.
/// - `rate`: deltas per second (default 50): each delta waits `1/rate` seconds; `0` sends
///   them as fast as possible. A positive rate must be at least 0.01.
/// - `seed`: picks the words (default 0). The same `tokens` and `seed` always give the same
///   text, which mixes in multi-byte words (`café`, `日本語`, `🙂`, ...).
/// - `fault`, one of:
///   - `http429`: HTTP 429 `rate_limit_exceeded` with `retry-after-ms: 10`, and `http500`:
///     HTTP 500 `server_error`, likewise. Both fail every other request for the same model
///     string, starting with the first, so a client that retries once gets the answer.
///     `http429@N` and `http500@N` fail N requests in a row before each one that succeeds.
///   - `http401`: HTTP 401 `invalid_api_key`, and `quota`: HTTP 429 `insufficient_quota`,
///     on every request.
///   - `error@K`: after K deltas, a nested `error` event, then the body ends.
///   - `truncate@K`: after K deltas the body ends, with no terminal event.
///   - `stall@K`: after K deltas nothing more is sent; the connection stays open.
///   - `incomplete@K`: after K deltas the message is closed and `response.incomplete` says
///     `max_output_tokens`.
///   - `failed@K`: after K deltas, `response.failed` with an error message.
///   - `drop@K`: after K deltas the connection drops. A request with `background: true`
///     can then stream the rest with `GET /v1/responses/{id}?stream=true&starting_after=N`;
///     without it the answer is lost, as OpenAI stops generating a foreground response
///     whose connection is gone.
///
///   K may not exceed `tokens`.
///
/// The stream: `response.created`, `response.in_progress`, `response.output_item.added`
/// (a message), `response.content_part.added`, the deltas, then `response.output_text.done`,
/// `response.content_part.done`, `response.output_item.done` and `response.completed` with
/// usage; every event has a `sequence_number` from 0, ids are `resp_synth_<n>` and
/// `msg_synth_<n>`, where n counts the server's synthesized answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Synth {
    /// The number of text deltas in a complete answer.
    pub tokens: u32,
    /// Deltas per second; 0 means no pacing.
    pub rate: f64,
    /// The fault to inject, if any.
    pub fault: Option<Fault>,
    /// Chooses the words.
    pub seed: u64,
}

/// A fault a synthesized answer can carry.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Fault {
    /// HTTP 429 `rate_limit_exceeded` on this many requests before each success.
    Http429(u32),
    /// HTTP 500 `server_error` on this many requests before each success.
    Http500(u32),
    /// HTTP 401 `invalid_api_key` on every request.
    Http401,
    /// HTTP 429 `insufficient_quota` on every request.
    Quota,
    /// A nested `error` event after this many deltas, then the end of the body.
    Error(u32),
    /// The end of the body after this many deltas, without a terminal event.
    Truncate(u32),
    /// Silence after this many deltas, with the connection left open.
    Stall(u32),
    /// `response.incomplete` (`max_output_tokens`) after this many deltas.
    Incomplete(u32),
    /// `response.failed` after this many deltas.
    Failed(u32),
    /// The connection dropped after this many deltas; a background answer goes on, to be
    /// streamed again with `starting_after`.
    Drop(u32),
}

impl Default for Synth {
    fn default() -> Self {
        Self {
            tokens: DEFAULT_TOKENS,
            rate: DEFAULT_RATE,
            fault: None,
            seed: 0,
        }
    }
}

impl Synth {
    /// Reads a model string: `Ok(None)` when it is not a `synth` model at all, an error
    /// saying what is wrong when it is one that does not follow the grammar.
    pub fn parse(model: &str) -> Result<Option<Self>, ReplayError> {
        let spec = match model.strip_prefix("synth") {
            Some("") => "",
            Some(rest) => match rest.strip_prefix(':') {
                Some(spec) => spec,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        let bad = |reason: String| ReplayError::Synth {
            model: model.to_owned(),
            reason,
        };
        let mut synth = Self::default();
        if spec.trim().is_empty() {
            return Ok(Some(synth));
        }
        let mut seen: Vec<&str> = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let Some((key, value)) = part.split_once('=') else {
                return Err(bad(if part.is_empty() {
                    "an empty part (a doubled or trailing comma?)".to_owned()
                } else {
                    format!("`{part}` is not key=value")
                }));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(bad(format!("`{key}` is given twice")));
            }
            seen.push(key);
            match key {
                "tokens" => {
                    synth.tokens = value
                        .parse::<u32>()
                        .ok()
                        .filter(|tokens| *tokens <= MAX_TOKENS)
                        .ok_or_else(|| {
                            bad(format!(
                                "tokens must be a whole number from 0 to {MAX_TOKENS}, not `{value}`"
                            ))
                        })?;
                }
                "rate" => {
                    synth.rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|rate| *rate == 0.0 || (rate.is_finite() && *rate >= MIN_RATE))
                        .ok_or_else(|| {
                            bad(format!(
                                "rate must be 0 (no pacing) or a number of deltas per second \
                                 of at least {MIN_RATE}, not `{value}`"
                            ))
                        })?;
                }
                "seed" => {
                    synth.seed = value.parse::<u64>().map_err(|_| {
                        bad(format!(
                            "seed must be a non-negative whole number, not `{value}`"
                        ))
                    })?;
                }
                "fault" => synth.fault = Some(Fault::parse(value).map_err(bad)?),
                _ => {
                    return Err(bad(format!(
                        "unknown key `{key}` (the keys are tokens, rate, fault and seed)"
                    )))
                }
            }
        }
        if let Some(after) = synth.fault.and_then(Fault::after) {
            if after > synth.tokens {
                return Err(bad(format!(
                    "the fault comes after {after} deltas but the answer has only tokens={}",
                    synth.tokens
                )));
            }
        }
        Ok(Some(synth))
    }

    /// Reads a model string for one request: as [`Synth::parse`], except that a model
    /// naming no `seed` takes its seed from the request's last user text, so different
    /// prompts get different answers and the same prompt the same one.
    pub fn for_request(model: &str, input: Option<&str>) -> Result<Option<Self>, ReplayError> {
        let mut synth = Self::parse(model)?;
        if let Some(synth) = &mut synth {
            if !names_seed(model) {
                synth.seed = input.map_or(0, fnv1a);
            }
        }
        Ok(synth)
    }

    /// The text deltas of the complete answer, in order: one word each, every one but the
    /// first with a leading space, the last ending in a full stop.
    pub fn deltas(&self) -> Vec<String> {
        let mut rng = SplitMix(self.seed);
        let mut sentence_start = true;
        (0..self.tokens)
            .map(|index| {
                // Every fifth word is a multi-byte one, so short answers have some too.
                let list = if index % 5 == 2 { WIDE_WORDS } else { WORDS };
                let word = list.get(rng.below(list.len())).copied().unwrap_or("word");
                let mut delta = String::new();
                if index > 0 {
                    delta.push(' ');
                }
                if sentence_start {
                    let mut chars = word.chars();
                    delta.extend(chars.next().into_iter().flat_map(char::to_uppercase));
                    delta.push_str(chars.as_str());
                } else {
                    delta.push_str(word);
                }
                let roll = rng.below(10);
                sentence_start = false;
                if index + 1 == self.tokens {
                    delta.push('.');
                } else if roll == 0 {
                    delta.push('.');
                    sentence_start = true;
                } else if roll == 1 {
                    delta.push(',');
                }
                delta
            })
            .collect()
    }

    /// The complete answer's text: what `response.output_text.done` carries when no fault
    /// cuts the stream short.
    pub fn text(&self) -> String {
        self.deltas().concat()
    }

    /// The text the stream carries before its fault: the first K deltas for a stream fault
    /// `KIND@K`, the whole text otherwise (HTTP faults have no text when they fire).
    pub fn streamed_text(&self) -> String {
        let deltas = self.deltas();
        let count = self.delivered(deltas.len());
        deltas.get(..count).unwrap_or_default().concat()
    }

    /// The pause before each delta.
    pub fn delta_pause(&self) -> Duration {
        if self.rate > 0.0 {
            Duration::try_from_secs_f64(1.0 / self.rate).unwrap_or(Duration::ZERO)
        } else {
            Duration::ZERO
        }
    }

    /// How many of `total` deltas are sent before the fault.
    fn delivered(&self, total: usize) -> usize {
        self.fault
            .and_then(Fault::after)
            .map_or(total, |after| total.min(after as usize))
    }

    /// What to play: the HTTP error of an HTTP fault when `http_fails`, else the stream.
    pub(crate) fn plan(&self, context: &Context, http_fails: bool) -> Plan {
        match self.fault {
            Some(fault) if http_fails && fault.after().is_none() => http_error(context, fault),
            _ => stream(context, &self.deltas(), self.fault, self.delta_pause()),
        }
    }

    /// The whole stream of a background answer, as a client that streams it again finds
    /// it: a drop broke only the first connection, so it is not in here.
    pub(crate) fn background_plan(&self, context: &Context) -> Plan {
        let fault = self.fault.filter(|fault| !matches!(fault, Fault::Drop(_)));
        stream(context, &self.deltas(), fault, self.delta_pause())
    }
}

impl fmt::Display for Synth {
    /// The canonical model string, which parses back to the same `Synth`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "synth:tokens={},rate={}", self.tokens, self.rate)?;
        if let Some(fault) = self.fault {
            write!(f, ",fault={fault}")?;
        }
        write!(f, ",seed={}", self.seed)
    }
}

impl Fault {
    /// The number of deltas sent before a stream fault; `None` for an HTTP fault.
    pub fn after(self) -> Option<u32> {
        match self {
            Self::Http429(_) | Self::Http500(_) | Self::Http401 | Self::Quota => None,
            Self::Error(after)
            | Self::Truncate(after)
            | Self::Stall(after)
            | Self::Incomplete(after)
            | Self::Failed(after)
            | Self::Drop(after) => Some(after),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let (kind, at) = match text.split_once('@') {
            Some((kind, at)) => (kind.trim(), Some(at.trim())),
            None => (text, None),
        };
        let positioned = |make: fn(u32) -> Self| match at {
            Some(at) => at.parse::<u32>().map(make).map_err(|_| {
                format!("the position in fault={text} must be a whole number of deltas")
            }),
            None => Err(format!(
                "fault={kind} needs a position: {kind}@K, the number of deltas before it"
            )),
        };
        let whole = |fault: Self| match at {
            None => Ok(fault),
            Some(_) => Err(format!("fault={kind} takes no @position")),
        };
        match kind {
            "http429" if at.is_none() => Ok(Self::Http429(1)),
            "http500" if at.is_none() => Ok(Self::Http500(1)),
            "http429" => positioned(Self::Http429),
            "http500" => positioned(Self::Http500),
            "http401" => whole(Self::Http401),
            "quota" => whole(Self::Quota),
            "error" => positioned(Self::Error),
            "truncate" => positioned(Self::Truncate),
            "stall" => positioned(Self::Stall),
            "incomplete" => positioned(Self::Incomplete),
            "failed" => positioned(Self::Failed),
            "drop" => positioned(Self::Drop),
            _ => Err(format!(
                "unknown fault `{kind}` (the faults are http429, http500, http401, quota, \
                 error@K, truncate@K, stall@K, incomplete@K, failed@K and drop@K)"
            )),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Http429(1) => return f.write_str("http429"),
            Self::Http500(1) => return f.write_str("http500"),
            Self::Http429(n) => return write!(f, "http429@{n}"),
            Self::Http500(n) => return write!(f, "http500@{n}"),
            Self::Http401 => "http401",
            Self::Quota => "quota",
            Self::Error(_) => "error",
            Self::Truncate(_) => "truncate",
            Self::Stall(_) => "stall",
            Self::Incomplete(_) => "incomplete",
            Self::Failed(_) => "failed",
            Self::Drop(_) => "drop",
        };
        match self.after() {
            Some(after) => write!(f, "{kind}@{after}"),
            None => f.write_str(kind),
        }
    }
}

/// The text of the answer for a model the server does not know (and no default recording):
/// it says where it comes from and quotes `input`, the user's last text.
pub fn friendly_text(input: Option<&str>) -> String {
    let quote = match input.map(|text| text.split_whitespace().collect::<Vec<_>>().join(" ")) {
        Some(text) if !text.is_empty() => {
            let mut quote: String = text.chars().take(QUOTE_CHARS).collect();
            if text.chars().count() > QUOTE_CHARS {
                quote.push('…');
            }
            format!("You wrote: “{quote}”")
        }
        _ => "You sent no text I could quote.".to_owned(),
    };
    format!(
        "Hello from the local replay server! This answer was made up on this machine: no \
         language model read your message, and nothing left the computer. {quote} To get \
         other answers, set the model to the name of a recording, or to synth:tokens=300 for \
         a long synthesized one, or synth:fault=error@5 to watch a stream fail. Configure an \
         OpenAI key for real answers."
    )
}

/// The longest quote of the user's input in [`friendly_text`], in characters.
const QUOTE_CHARS: usize = 200;

/// The friendly answer's stream, paced like a default `synth` answer.
pub(crate) fn friendly(context: &Context, input: Option<&str>) -> Plan {
    let text = friendly_text(input);
    let deltas: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(index, word)| {
            if index == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .filter(|delta| !delta.is_empty())
        .collect();
    stream(context, &deltas, None, Synth::default().delta_pause())
}

/// What a synthesized answer needs to know about its request.
#[derive(Clone, Debug)]
pub(crate) struct Context {
    /// Numbers the ids: `resp_synth_<n>`, `msg_synth_<n>`, `req_synth_<n>`.
    pub number: u64,
    /// The model string, echoed in the response object.
    pub model: String,
    /// Reported in `usage`.
    pub input_tokens: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Where to record when each delta is written, if anywhere.
    pub delta_log: Option<super::DeltaLog>,
    /// Whether the request asked for background mode (echoed in the response object).
    pub background: bool,
}

impl Context {
    pub fn new(number: u64, model: &str, request: &CreateRequest) -> Self {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Self {
            number,
            model: model.to_owned(),
            input_tokens: request.input_tokens,
            created_at,
            delta_log: None,
            background: request.background,
        }
    }

    /// The answer's response id, `resp_synth_<n>`.
    pub fn response_id(&self) -> String {
        format!("resp_synth_{}", self.number)
    }

    fn request_id(&self) -> String {
        format!("req_synth_{}", self.number)
    }

    /// The event writer of this answer: ids `resp_synth_<n>` and `msg_synth_<n>`.
    fn events(&self) -> AnswerEvents {
        AnswerEvents::new(
            self.response_id(),
            format!("msg_synth_{}", self.number),
            &self.model,
            self.created_at,
            self.input_tokens,
        )
        .with_settings(json!({ "background": self.background }))
    }
}

/// Builds the SSE body of a synthesized answer: the numbered frames, with pauses between.
struct Writer {
    events: AnswerEvents,
    actions: Vec<Action>,
    paused: Duration,
}

impl Writer {
    /// Writes frames the writer's events just numbered, each one as its own chunk.
    fn write(&mut self, frames: Vec<Bytes>) {
        let first = self
            .events
            .next_sequence()
            .saturating_sub(frames.len() as u64);
        self.actions.extend(
            (first..)
                .zip(frames)
                .map(|(seq, frame)| Action::Event { seq, frame }),
        );
    }

    fn pause(&mut self, pause: Duration) {
        if !pause.is_zero() {
            self.actions.push(Action::Pause(pause));
            self.paused = self.paused.saturating_add(pause);
        }
    }
}

/// The stream of a synthesized answer: its lifecycle events around one message whose text
/// arrives as `deltas`, `pause` apart, cut short or ended otherwise by a stream `fault`.
fn stream(context: &Context, deltas: &[String], fault: Option<Fault>, pause: Duration) -> Plan {
    let mut out = Writer {
        events: context.events(),
        actions: Vec::new(),
        paused: Duration::ZERO,
    };
    let opening = out.events.opening();
    out.write(opening);

    let sent = fault
        .and_then(Fault::after)
        .map_or(deltas.len(), |after| deltas.len().min(after as usize));
    let sent_deltas = deltas.get(..sent).unwrap_or_default();
    for (index, delta) in sent_deltas.iter().enumerate() {
        out.pause(pause);
        if let Some(log) = &context.delta_log {
            out.actions.push(Action::Sent {
                log: log.clone(),
                response_id: out.events.response_id().to_owned(),
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
        }
        let frame = out.events.delta(delta);
        out.write(vec![frame]);
    }
    let text = sent_deltas.concat();
    let output_tokens = sent as u64;
    let completed_at = context.created_at.saturating_add(out.paused.as_secs());

    let ending = match fault {
        Some(Fault::Error(_)) => vec![out.events.event(
            "error",
            json!({
                "error": {
                    "type": "server_error",
                    "code": "server_error",
                    "message": "The server had an error while processing your request \
                                (synthesized by the local replay server).",
                    "param": null,
                }
            }),
        )],
        Some(Fault::Truncate(_)) => Vec::new(),
        Some(Fault::Drop(_)) => {
            out.actions.push(Action::Drop);
            Vec::new()
        }
        Some(Fault::Stall(_)) => {
            out.actions.push(Action::Stall);
            Vec::new()
        }
        Some(Fault::Incomplete(after)) => {
            out.events
                .incomplete(&text, u64::from(after), output_tokens)
        }
        Some(Fault::Failed(_)) => vec![out.events.failed(
            &text,
            "The model failed to generate a response (synthesized by the local replay server).",
            output_tokens,
        )],
        None | Some(Fault::Http429(_) | Fault::Http500(_) | Fault::Http401 | Fault::Quota) => {
            out.events.completed(&text, output_tokens, completed_at)
        }
    };
    out.write(ending);
    Plan {
        status: 200,
        headers: vec![
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("x-request-id".into(), context.request_id()),
        ],
        actions: out.actions,
    }
}

/// The HTTP error answer of an HTTP fault.
fn http_error(context: &Context, fault: Fault) -> Plan {
    let (status, kind, code, message) = match fault {
        Fault::Http500(_) => (
            500,
            "server_error",
            "server_error",
            "The server had an error while processing your request (synthesized by the local \
             replay server)."
                .to_owned(),
        ),
        Fault::Http401 => (
            401,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided (synthesized by the local replay server).".to_owned(),
        ),
        Fault::Quota => (
            429,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details \
             (synthesized by the local replay server)."
                .to_owned(),
        ),
        _ => (
            429,
            "requests",
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for {} on requests per min (synthesized by the local replay \
                 server). Please try again in 10ms.",
                context.model
            ),
        ),
    };
    let mut headers = vec![("x-request-id".to_owned(), context.request_id())];
    if matches!(fault, Fault::Http429(_) | Fault::Http500(_)) {
        headers.push(("retry-after-ms".into(), "10".into()));
    }
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    Plan::json(status, headers, &body)
}

/// Words of the synthesized text.
const WORDS: &[&str] = &[
    "the", "stream", "answer", "token", "arrives", "steadily", "and", "every", "reader", "sees",
    "it", "grow", "on", "a", "page", "in", "real", "time", "while", "channel", "carries", "each",
    "small", "append", "to", "late", "joiners", "who", "still", "get", "whole", "text",
];

/// Words with multi-byte UTF-8 characters (two, three and four bytes).
const WIDE_WORDS: &[&str] = &[
    "café",
    "naïve",
    "résumé",
    "日本語",
    "🙂",
    "Zürich",
    "façade",
    "東京",
    "crème",
    "über",
    "piñata",
    "Ωmega",
    "🚀",
];

/// SplitMix64: a small, fixed pseudo-random sequence, so a seed means the same text in every
/// build.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound` (which must not be 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

/// Whether a synth model string sets `seed` itself.
fn names_seed(model: &str) -> bool {
    model.split_once(':').is_some_and(|(_, spec)| {
        spec.split(',')
            .any(|part| part.split('=').next().map(str::trim) == Some("seed"))
    })
}

/// FNV-1a: a fixed, dependency-free hash of the prompt, the same in every build.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
