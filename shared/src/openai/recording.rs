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
        let skip_through = match replay {
            Replay::ResumeAfter(after) => self.steps.iter().rposition(|step| {
                matches!(step, Step::Sse { data, .. }
                    if data.get("sequence_number").and_then(Value::as_u64).is_some_and(|seq| seq <= after))
            }),
            Replay::Full | Replay::UntilDisconnect => None,
        };
        let mut framing = Framing::default();
        let mut out = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
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
        }
        out
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
mod tests {
    use std::fs;

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai/");

    fn fixture(name: &str) -> Recording {
        let text = fs::read_to_string(format!("{FIXTURES}{name}")).unwrap();
        Recording::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A minimal SSE decoder for the tests: it joins `data:` lines with `\n`, accepts LF and
    /// CRLF, skips comments and drops a final frame that lacks its blank line, as
    /// eventsource-stream does.
    fn decode_sse(bytes: &[u8]) -> Vec<(Option<String>, String)> {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let mut frames = Vec::new();
        let mut event = None;
        let mut data: Vec<String> = Vec::new();
        let mut rest = text.as_str();
        while let Some(end) = rest.find('\n') {
            let line = rest[..end].strip_suffix('\r').unwrap_or(&rest[..end]);
            rest = &rest[end + 1..];
            if line.is_empty() {
                if !data.is_empty() {
                    frames.push((event.take(), data.join("\n")));
                }
                event = None;
                data.clear();
            } else if line.starts_with(':') {
                continue;
            } else if let Some(value) = line.strip_prefix("event:") {
                event = Some(value.strip_prefix(' ').unwrap_or(value).to_owned());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        frames
    }

    fn decoded_events(frames: &[(Option<String>, String)]) -> Vec<StreamEvent> {
        frames
            .iter()
            .filter_map(|(_, data)| match StreamEvent::from_data(data) {
                Ok(Decoded::Event(event)) => Some(event),
                Ok(Decoded::DoneSentinel) => None,
                Err(e) => panic!("frame {data:?} does not decode: {e}"),
            })
            .collect()
    }

    #[test]
    fn every_fixture_parses_and_its_events_decode() {
        let mut names: Vec<String> = fs::read_dir(FIXTURES)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".jsonl"))
            .collect();
        names.sort();
        assert!(names.len() >= 14, "fixtures found: {names:?}");
        for name in &names {
            let recording = fixture(name);
            for attempt in &recording.attempts {
                let events: Vec<StreamEvent> = attempt
                    .events()
                    .map(|e| e.unwrap_or_else(|e| panic!("{name}: {e}")))
                    .collect();
                // Sequence numbers, where present, are contiguous from 0.
                for (expected, event) in events.iter().enumerate() {
                    if let Some(seq) = event.sequence_number() {
                        assert_eq!(seq, expected as u64, "{name}: {}", event.kind());
                    }
                }
                // The SSE event name always equals data.type.
                for step in &attempt.steps {
                    if let Step::Sse {
                        event: Some(event),
                        data,
                    } = step
                    {
                        assert_eq!(Some(event.as_str()), data["type"].as_str(), "{name}");
                    }
                }
                // Whatever is rendered decodes back to the same events.
                if attempt
                    .content_type()
                    .is_some_and(|c| c.starts_with("text/event-stream"))
                {
                    let frames = decode_sse(&attempt.render_body());
                    assert_eq!(decoded_events(&frames), events, "{name}");
                }
            }
        }
    }

    #[test]
    fn plain_text_renders_event_data_and_blank_line() {
        let attempt = &fixture("01_plain_text.jsonl").attempts[0];
        assert_eq!(attempt.status, 200);
        assert_eq!(
            attempt.content_type(),
            Some("text/event-stream; charset=utf-8")
        );
        assert_eq!(attempt.steps.len(), 11);
        let body = String::from_utf8(attempt.render_body()).unwrap();
        assert!(body.starts_with("event: response.created\ndata: {"));
        assert!(body.ends_with("}\n\n"));
        assert_eq!(body.matches("\n\n").count(), 11);
        assert!(!body.contains('\r'));
        let frames = decode_sse(attempt.render_body().as_slice());
        assert_eq!(frames[4].0.as_deref(), Some("response.output_text.delta"));
    }

    #[test]
    fn http_error_then_retry_gives_two_attempts() {
        let recording = fixture("09_http429_then_success.jsonl");
        assert_eq!(recording.attempts.len(), 2);
        let first = &recording.attempts[0];
        assert_eq!(first.status, 429);
        assert_eq!(
            first.headers.get("retry-after-ms").map(String::as_str),
            Some("750")
        );
        assert_eq!(first.events().count(), 0);
        let body: Value = serde_json::from_slice(&first.render_body()).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(recording.attempts[1].status, 200);
        assert_eq!(recording.attempts[1].events().count(), 10);
    }

    #[test]
    fn framing_quirks_render_crlf_split_data_comments_and_done() {
        let attempt = &fixture("11_framing_quirks.jsonl").attempts[0];
        let bytes = attempt.render_body();
        let body = String::from_utf8(bytes.clone()).unwrap();
        assert!(body.starts_with(": keep-alive\r\n\r\nevent: response.created\r\ndata: {"));
        assert!(body.contains("\r\n\r\n: ping\r\n\r\nevent: response.completed\r\n"));
        assert!(body.ends_with("}\r\n\r\ndata: [DONE]\r\n\r\n"));
        assert!(
            !body.replace("\r\n", "").contains('\n'),
            "every line ends in CRLF"
        );
        // Exactly one frame is split across two data lines.
        let split_frames = body
            .split("\r\n\r\n")
            .filter(|frame| frame.matches("data: ").count() == 2)
            .collect::<Vec<_>>();
        assert_eq!(split_frames.len(), 1);
        assert!(split_frames[0].contains("\"delta\":\" quirks\""));
        let frames = decode_sse(&bytes);
        assert_eq!(frames.last().map(|f| f.1.as_str()), Some("[DONE]"));
        let events = decoded_events(&frames);
        assert_eq!(events.len(), 11);
        assert_eq!(
            events,
            attempt.events().collect::<Result<Vec<_>, _>>().unwrap()
        );
    }

    #[test]
    fn truncated_stream_ends_with_the_partial_bytes() {
        let attempt = &fixture("10_truncated_no_terminal.jsonl").attempts[0];
        let body = String::from_utf8(attempt.render_body()).unwrap();
        assert!(body.ends_with(
            "\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_te"
        ));
        assert_eq!(attempt.steps.last(), Some(&Step::Eof));
        // A decoder drops the cut frame: five whole frames remain.
        assert_eq!(decode_sse(body.as_bytes()).len(), 5);
    }

    #[test]
    fn background_stream_renders_until_disconnect_and_resumes() {
        let attempt = &fixture("12_background_resume.jsonl").attempts[0];
        assert!(attempt.steps.contains(&Step::DisconnectAfterSeq { seq: 4 }));
        let seqs = |bytes: Vec<u8>| {
            decoded_events(&decode_sse(&bytes))
                .iter()
                .map(|e| e.sequence_number().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(attempt.render(Replay::UntilDisconnect)),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            seqs(attempt.render(Replay::ResumeAfter(4))),
            vec![5, 6, 7, 8, 9, 10]
        );
        assert_eq!(seqs(attempt.render(Replay::ResumeAfter(7))), vec![8, 9, 10]);
        assert_eq!(
            seqs(attempt.render(Replay::Full)),
            (0..=10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn split_point_stays_outside_strings() {
        let json = r#"{"a":"x,y,z,w,v","b":1}"#;
        let at = split_point(json).unwrap();
        assert_eq!(&json[..at], r#"{"a":"x,y,z,w,v","#);
        let joined = format!("{}\n{}", &json[..at], &json[at..]);
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap()["b"], 1);
        assert_eq!(split_point(r#"{"a":"\",,,"}"#), None);
        assert_eq!(split_point("{}"), None);
    }

    #[test]
    fn string_data_is_written_verbatim_and_data_only_frames_have_no_event_line() {
        let recording = Recording::parse(concat!(
            "{\"kind\":\"http\",\"status\":200}\n",
            "\n",
            "{\"kind\":\"sse\",\"data\":{\"type\":\"response.output_text.delta\",\"delta\":\"a\"}}\n",
            "{\"kind\":\"sse\",\"event\":\"x\",\"data\":\"not json\"}\n",
            "{\"kind\":\"sse\",\"data\":\"[DONE]\"}\n",
        ))
        .unwrap();
        let attempt = &recording.attempts[0];
        let body = String::from_utf8(attempt.render_body()).unwrap();
        assert_eq!(
            body,
            "data: {\"delta\":\"a\",\"type\":\"response.output_text.delta\"}\n\nevent: x\ndata: not json\n\ndata: [DONE]\n\n"
        );
        let events: Vec<_> = attempt.events().collect();
        assert_eq!(events.len(), 2);
        assert!(events[0].is_ok());
        assert!(matches!(events[1], Err(EventError::NotJson(_))));
    }

    #[test]
    fn malformed_lines_name_their_line_number() {
        let http = "{\"kind\":\"http\",\"status\":200,\"headers\":{}}";
        let check = |text: String, line: usize, kind: RecordingErrorKind| {
            let err = Recording::parse(&text).unwrap_err();
            assert_eq!(err, RecordingError { line, kind }, "{text}");
        };
        check(format!("{http}\n[1]\n"), 2, RecordingErrorKind::NotAnObject);
        check(
            format!("{http}\n{{\"text\":\"x\"}}\n"),
            2,
            RecordingErrorKind::MissingKind,
        );
        check(
            format!("{http}\n\n{{\"kind\":\"smoke\"}}\n"),
            3,
            RecordingErrorKind::UnknownKind("smoke".into()),
        );
        check(
            "{\"kind\":\"eof\"}\n".into(),
            1,
            RecordingErrorKind::MissingHttp,
        );
        check(
            format!("{http}\n{http}\n"),
            2,
            RecordingErrorKind::MisplacedHttp,
        );
        check(
            format!("{http}\n{{\"kind\":\"next_attempt\"}}\n"),
            2,
            RecordingErrorKind::MissingHttp,
        );
        check(
            format!("{http}\n{{\"kind\":\"eof\"}}\n{{\"kind\":\"comment\",\"text\":\"x\"}}\n"),
            3,
            RecordingErrorKind::AfterEof("comment".into()),
        );
        check("\n\n".into(), 0, RecordingErrorKind::Empty);
        let bad = |field: &'static str, expected: &'static str, kind: &str| {
            RecordingErrorKind::BadField {
                kind: kind.into(),
                field,
                expected,
            }
        };
        check(
            "{\"kind\":\"http\",\"status\":\"200\"}".into(),
            1,
            bad("status", "a non-negative integer", "http"),
        );
        check(
            "{\"kind\":\"http\",\"status\":70000}".into(),
            1,
            bad("status", "an HTTP status code", "http"),
        );
        check(
            "{\"kind\":\"http\",\"status\":200,\"headers\":{\"a\":1}}".into(),
            1,
            bad("headers", "an object of strings", "http"),
        );
        check(
            format!("{http}\n{{\"kind\":\"sse\",\"event\":\"x\"}}"),
            2,
            bad("data", "present", "sse"),
        );
        check(
            format!("{http}\n{{\"kind\":\"comment\"}}"),
            2,
            bad("text", "a string", "comment"),
        );
        check(
            format!("{http}\n{{\"kind\":\"option\",\"crlf\":\"yes\"}}"),
            2,
            bad("crlf", "a boolean", "option"),
        );
        check(
            format!("{http}\n{{\"kind\":\"disconnect_after_seq\",\"seq\":-1}}"),
            2,
            bad("seq", "a non-negative integer", "disconnect_after_seq"),
        );
        let err = Recording::parse(&format!("{http}\n{{oops")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(matches!(err.kind, RecordingErrorKind::NotJson(_)));
        assert!(
            err.to_string().starts_with("recording line 2: not JSON: "),
            "{err}"
        );
    }
}
