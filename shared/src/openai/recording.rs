//! Recorded OpenAI streams: the JSON-lines fixture format and the exact bytes a replay
//! server writes for it.
//!
//! One line is one step; `next_attempt` separates the answers to successive requests, and
//! every attempt starts with an `http` line. Rendering is pure: the replay server decides
//! when to write, this module only says what.
//!
//! ```text
//! {"kind":"http","status":200,"headers":{...}}          first line of each attempt
//! {"kind":"sse","event":"<type>","data":{...}}          event: line, data: line(s), blank line
//! {"kind":"body","json":{...}}                          a non-SSE JSON body (HTTP errors)
//! {"kind":"comment","text":" keep-alive"}               ": keep-alive" and a blank line
//! {"kind":"option","crlf":true,"split_data_lines":true} framing from here on in this attempt
//! {"kind":"done_sentinel","text":"data: [DONE]\n\n"}    raw bytes
//! {"kind":"partial_bytes","text":"..."}                 raw bytes, no terminating blank line
//! {"kind":"eof"}                                        close the body
//! {"kind":"next_attempt"}                               the next request gets what follows
//! {"kind":"disconnect_after_seq","seq":4}               drop the connection here (resume)
//! ```

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::events::{Decoded, EventError, StreamEvent};

/// A parsed recording: what successive requests to the mocked endpoint get.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// One entry per request, in order.
    pub attempts: Vec<Attempt>,
}

/// The answer to one request: an HTTP head, then body steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers, by name as recorded.
    pub headers: BTreeMap<String, String>,
    /// The body, step by step. An `eof` step, when present, is the last one.
    pub steps: Vec<Step>,
}

/// One body step of an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// One SSE frame. `event` is the SSE event name (a frame without one is data-only);
    /// `data` is written as compact JSON, or verbatim when it is a JSON string.
    Sse {
        /// The SSE `event:` name, if the frame has one.
        event: Option<String>,
        /// The frame's data.
        data: Value,
    },
    /// A non-SSE JSON body, such as an HTTP error's.
    Body {
        /// The body.
        json: Value,
    },
    /// An SSE comment, written as `:` followed by the text.
    Comment {
        /// The comment text, usually starting with a space.
        text: String,
    },
    /// Framing options for the rest of the attempt; an absent field keeps its value.
    Options {
        /// Use `\r\n` line endings.
        crlf: Option<bool>,
        /// Break each JSON data payload across two `data:` lines, just after a comma outside
        /// any string so that the lines still parse once joined; a payload without such a
        /// comma stays on one line.
        split_data_lines: Option<bool>,
    },
    /// The `[DONE]` sentinel, as raw bytes.
    DoneSentinel {
        /// The bytes to write.
        text: String,
    },
    /// Raw bytes without a terminating blank line (a frame cut short).
    PartialBytes {
        /// The bytes to write.
        text: String,
    },
    /// Close the body.
    Eof,
    /// Resume scenario: drop the connection here, after the frame with this sequence number.
    DisconnectAfterSeq {
        /// The last sequence number the first connection delivers.
        seq: u64,
    },
}

/// Which bytes of an attempt's body to render.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Replay {
    /// The whole body up to `eof`, as if no connection dropped (disconnect markers ignored).
    Full,
    /// The bytes the first connection delivers: up to the first disconnect marker, or the
    /// whole body when there is none.
    UntilDisconnect,
    /// The bytes a resume request with `starting_after=N` receives: every step after the
    /// last SSE frame whose `sequence_number` is at most N.
    ResumeAfter(u64),
}

/// A malformed recording line.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("recording line {line}: {kind}")]
pub struct RecordingError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: RecordingErrorKind,
}

/// What is wrong with a recording line.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum RecordingErrorKind {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The line is JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// The object has no string `kind`.
    #[error("no string `kind` field")]
    MissingKind,
    /// The `kind` is not one of the format's.
    #[error("unknown kind `{0}`")]
    UnknownKind(String),
    /// A field is missing or of the wrong type.
    #[error("`{kind}` line needs `{field}` to be {expected}")]
    BadField {
        /// The line's kind.
        kind: String,
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// An attempt's first line is not an `http` line.
    #[error("an attempt must start with an `http` line")]
    MissingHttp,
    /// An `http` line in the middle of an attempt.
    #[error("an `http` line must start an attempt (use `next_attempt` before it)")]
    MisplacedHttp,
    /// A step after `eof` in the same attempt.
    #[error("`{0}` line after `eof` in the same attempt")]
    AfterEof(String),
    /// The recording holds no attempt at all.
    #[error("the recording has no attempts")]
    Empty,
}

impl Recording {
    /// Parses the JSON-lines text of a recording. Blank lines are skipped.
    pub fn parse(text: &str) -> Result<Self, RecordingError> {
        let mut attempts = Vec::new();
        let mut current: Option<Attempt> = None;
        let mut expecting_http = true;
        let mut last_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            last_line = line;
            let err = |kind| RecordingError { line, kind };
            let Line { kind, entry } = parse_line(raw).map_err(err)?;
            match entry {
                Entry::Http { status, headers } => {
                    if !expecting_http {
                        return Err(err(RecordingErrorKind::MisplacedHttp));
                    }
                    expecting_http = false;
                    current = Some(Attempt {
                        status,
                        headers,
                        steps: Vec::new(),
                    });
                }
                Entry::NextAttempt => {
                    let Some(attempt) = current.take() else {
                        return Err(err(RecordingErrorKind::MissingHttp));
                    };
                    attempts.push(attempt);
                    expecting_http = true;
                }
                Entry::Step(step) => {
                    let Some(attempt) = current.as_mut() else {
                        return Err(err(RecordingErrorKind::MissingHttp));
                    };
                    if attempt.steps.last() == Some(&Step::Eof) {
                        return Err(err(RecordingErrorKind::AfterEof(kind)));
                    }
                    attempt.steps.push(step);
                }
            }
        }
        match current {
            Some(attempt) => attempts.push(attempt),
            None if expecting_http && !attempts.is_empty() => {
                // A trailing `next_attempt` announces an attempt that never comes.
                return Err(RecordingError {
                    line: last_line,
                    kind: RecordingErrorKind::MissingHttp,
                });
            }
            None => {}
        }
        if attempts.is_empty() {
            return Err(RecordingError {
                line: last_line,
                kind: RecordingErrorKind::Empty,
            });
        }
        Ok(Self { attempts })
    }
}

impl FromStr for Recording {
    type Err = RecordingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Attempt {
    /// The `content-type` header, matched without regard to case.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str())
    }

    /// The whole body, as a server that never drops the connection writes it.
    pub fn render_body(&self) -> Vec<u8> {
        self.render(Replay::Full)
    }

    /// The body bytes for one way of replaying the attempt, exactly as written on the wire:
    /// `event:` line, `data:` line(s) and a blank line per frame; comments as `:text`; raw
    /// bytes for `done_sentinel` and `partial_bytes`; `option` steps switch to CRLF line
    /// endings or two `data:` lines per JSON payload. Options start from their defaults
    /// (LF, one data line) in every attempt.
    pub fn render(&self, replay: Replay) -> Vec<u8> {
        self.render_chunks(replay).concat()
    }

    /// The same bytes as [`Attempt::render`], one chunk per step that writes any: a whole
    /// SSE frame, a comment, a JSON body, a sentinel or a run of partial bytes. A server that
    /// paces its writes sends each chunk on its own; steps that write nothing (`option`,
    /// `eof`, disconnect markers) yield no chunk.
    pub fn render_chunks(&self, replay: Replay) -> Vec<Vec<u8>> {
        let skip_through = match replay {
            Replay::ResumeAfter(after) => self.steps.iter().rposition(|step| {
                matches!(step, Step::Sse { data, .. }
                    if data.get("sequence_number").and_then(Value::as_u64).is_some_and(|seq| seq <= after))
            }),
            Replay::Full | Replay::UntilDisconnect => None,
        };
        let mut framing = Framing::default();
        let mut chunks = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            let mut out = Vec::new();
            match step {
                Step::Options {
                    crlf,
                    split_data_lines,
                } => {
                    framing.crlf = crlf.unwrap_or(framing.crlf);
                    framing.split_data_lines = split_data_lines.unwrap_or(framing.split_data_lines);
                    continue;
                }
                Step::Eof => break,
                Step::DisconnectAfterSeq { .. } if replay == Replay::UntilDisconnect => break,
                Step::DisconnectAfterSeq { .. } => continue,
                _ if skip_through.is_some_and(|last| index <= last) => continue,
                Step::Sse { event, data } => framing.write_frame(&mut out, event.as_deref(), data),
                Step::Body { json } => out.extend_from_slice(json.to_string().as_bytes()),
                Step::Comment { text } => {
                    out.push(b':');
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(framing.eol().as_bytes());
                    out.extend_from_slice(framing.eol().as_bytes());
                }
                Step::DoneSentinel { text } | Step::PartialBytes { text } => {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            if !out.is_empty() {
                chunks.push(out);
            }
        }
        chunks
    }

    /// The decoded events of the attempt's SSE steps, in order. A step whose data is the
    /// `[DONE]` sentinel yields nothing; a step that does not decode yields its error.
    pub fn events(&self) -> impl Iterator<Item = Result<StreamEvent, EventError>> + '_ {
        self.steps.iter().filter_map(|step| {
            let Step::Sse { data, .. } = step else {
                return None;
            };
            let decoded = match data {
                Value::String(text) => StreamEvent::from_data(text),
                other => StreamEvent::from_value(other.clone()).map(Decoded::Event),
            };
            match decoded {
                Ok(Decoded::Event(event)) => Some(Ok(event)),
                Ok(Decoded::DoneSentinel) => None,
                Err(error) => Some(Err(error)),
            }
        })
    }
}

/// The framing state while rendering an attempt.
#[derive(Clone, Copy, Debug, Default)]
struct Framing {
    crlf: bool,
    split_data_lines: bool,
}

impl Framing {
    fn eol(self) -> &'static str {
        if self.crlf {
            "\r\n"
        } else {
            "\n"
        }
    }

    fn write_frame(self, out: &mut Vec<u8>, event: Option<&str>, data: &Value) {
        let eol = self.eol();
        if let Some(event) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.extend_from_slice(eol.as_bytes());
        }
        let text = match data {
            Value::String(text) => text.clone(),
            other => {
                let json = other.to_string();
                match split_point(&json).filter(|_| self.split_data_lines) {
                    Some(at) => format!("{}\n{}", &json[..at], &json[at..]),
                    None => json,
                }
            }
        };
        for line in text.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
            out.extend_from_slice(eol.as_bytes());
        }
        out.extend_from_slice(eol.as_bytes());
    }
}

/// Where compact JSON can be broken across two lines and still parse once the SSE decoder
/// joins them with `\n`: just after a comma outside any string, the one nearest the middle.
fn split_point(json: &str) -> Option<usize> {
    let middle = json.len() / 2;
    let mut best: Option<usize> = None;
    let mut in_string = false;
    let mut escaped = false;
    for (index, byte) in json.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b',' {
            let candidate = index + 1;
            if best.is_none_or(|b| candidate.abs_diff(middle) < b.abs_diff(middle)) {
                best = Some(candidate);
            }
        }
    }
    best
}

/// One parsed line: its kind (for messages) and what it means.
struct Line {
    kind: String,
    entry: Entry,
}

enum Entry {
    Http {
        status: u16,
        headers: BTreeMap<String, String>,
    },
    NextAttempt,
    Step(Step),
}

fn parse_line(raw: &str) -> Result<Line, RecordingErrorKind> {
    let value: Value =
        serde_json::from_str(raw).map_err(|e| RecordingErrorKind::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(RecordingErrorKind::NotAnObject);
    };
    let Some(kind) = obj.get("kind").and_then(Value::as_str).map(str::to_owned) else {
        return Err(RecordingErrorKind::MissingKind);
    };
    let f = LineFields {
        kind: &kind,
        obj: &obj,
    };
    let entry = match kind.as_str() {
        "http" => {
            let status = f.u64("status")?;
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| f.bad("status", "an HTTP status code"))?;
            let headers = match obj.get("headers") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(name, value)| match value {
                        Value::String(s) => Ok((name.clone(), s.clone())),
                        _ => Err(f.bad("headers", "an object of strings")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(f.bad("headers", "an object of strings")),
            };
            Entry::Http { status, headers }
        }
        "next_attempt" => Entry::NextAttempt,
        "sse" => {
            let event = match obj.get("event") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(f.bad("event", "a string")),
            };
            let data = match obj.get("data") {
                None | Some(Value::Null) => return Err(f.bad("data", "present")),
                Some(data) => data.clone(),
            };
            Entry::Step(Step::Sse { event, data })
        }
        "body" => match obj.get("json") {
            None => return Err(f.bad("json", "present")),
            Some(json) => Entry::Step(Step::Body { json: json.clone() }),
        },
        "comment" => Entry::Step(Step::Comment {
            text: f.string("text")?,
        }),
        "option" => Entry::Step(Step::Options {
            crlf: f.opt_bool("crlf")?,
            split_data_lines: f.opt_bool("split_data_lines")?,
        }),
        "done_sentinel" => Entry::Step(Step::DoneSentinel {
            text: f.string("text")?,
        }),
        "partial_bytes" => Entry::Step(Step::PartialBytes {
            text: f.string("text")?,
        }),
        "eof" => Entry::Step(Step::Eof),
        "disconnect_after_seq" => Entry::Step(Step::DisconnectAfterSeq { seq: f.u64("seq")? }),
        _ => return Err(RecordingErrorKind::UnknownKind(kind)),
    };
    Ok(Line { kind, entry })
}

/// Typed reads from one recording line, naming the line's kind in errors.
struct LineFields<'a> {
    kind: &'a str,
    obj: &'a Map<String, Value>,
}

impl LineFields<'_> {
    fn bad(&self, field: &'static str, expected: &'static str) -> RecordingErrorKind {
        RecordingErrorKind::BadField {
            kind: self.kind.to_owned(),
            field,
            expected,
        }
    }

    fn string(&self, field: &'static str) -> Result<String, RecordingErrorKind> {
        self.obj
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.bad(field, "a string"))
    }

    fn u64(&self, field: &'static str) -> Result<u64, RecordingErrorKind> {
        self.obj
            .get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad(field, "a non-negative integer"))
    }

    fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, RecordingErrorKind> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(field, "a boolean")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
