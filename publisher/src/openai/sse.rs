//! The SSE layer: a body's byte chunks in, decoded Responses [`StreamEvent`]s out. No HTTP
//! here; [`super::client`] hands it `reqwest`'s byte stream, tests hand it any chunking.
//!
//! eventsource-stream does the SSE framing. It cannot see three things, so a guard sits
//! between the bytes and the parser:
//!
//! - **Idle time**, measured on bytes: a `: keepalive` comment yields no event but resets
//!   the timer, because it arrived.
//! - **A cut-off event**: the parser drops a final frame that lacks its blank line without a
//!   word; the guard follows the line structure itself and reports [`StreamError::Truncated`].
//! - **Invalid UTF-8**: the parser's own decoder would buffer invalid bytes until the end of
//!   the body; the guard rejects them as they arrive, while holding back the start of a
//!   character split across chunks until the rest of it comes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStream, EventStreamError};
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use shared::openai::{Decoded, StreamEvent};

/// What went wrong while reading an event stream that had begun.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum StreamError {
    /// No bytes at all (not even a keep-alive comment) arrived for this long.
    #[error("OpenAI sent nothing for {}", human(*.0))]
    Idle(Duration),
    /// The connection failed while the stream was being read.
    #[error("the connection to OpenAI broke mid-stream: {0}")]
    Transport(String),
    /// The body ended in the middle of an event; `bytes` of it had arrived.
    #[error("the event stream ended in the middle of an event ({bytes} bytes of it received)")]
    Truncated {
        /// How many bytes of the unfinished event arrived.
        bytes: usize,
    },
    /// The body is not valid UTF-8, which an event stream must be.
    #[error("the event stream is not valid UTF-8")]
    InvalidUtf8,
    /// One event's data is not a valid event. The stream goes on.
    #[error("skipped a malformed event: {0}")]
    Malformed(String),
}

impl StreamError {
    /// Whether the stream is over after this error: everything but [`StreamError::Malformed`].
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Malformed(_))
    }
}

/// Decodes an event-stream body given as byte chunks of any size.
///
/// Every decoded event comes out as `Ok`, unknown types included. `[DONE]` ends the stream
/// (it is not an item). After a fatal error the stream yields nothing more. `idle` is how
/// long the stream may wait for bytes before it fails with [`StreamError::Idle`]; it must be
/// polled inside a tokio runtime.
pub fn events<S, E>(bytes: S, idle: Duration) -> Events
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error,
{
    let bytes = bytes.map(|chunk| chunk.map_err(|error| error_chain(&error)));
    Events {
        parser: EventStream::new(Guard::new(Box::pin(bytes), idle)),
        finished: false,
    }
}

/// The stream [`events`] returns.
pub struct Events {
    parser: EventStream<Guard>,
    finished: bool,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Result<StreamEvent, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let item = match std::task::ready!(self.parser.poll_next_unpin(cx)) {
            Some(Ok(frame)) => match StreamEvent::from_data(&frame.data) {
                Ok(Decoded::Event(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(Decoded::DoneSentinel) => None,
                Err(error) => {
                    let name = frame.event;
                    return Poll::Ready(Some(Err(StreamError::Malformed(format!(
                        "`{name}` frame: {error}"
                    )))));
                }
            },
            Some(Err(EventStreamError::Transport(error))) => Some(Err(error)),
            Some(Err(EventStreamError::Utf8(_))) => Some(Err(StreamError::InvalidUtf8)),
            // Every line parses as a field, a comment or a blank line, so this is not expected;
            // the parser would report it again on every poll, so it ends the stream.
            Some(Err(EventStreamError::Parser(error))) => Some(Err(StreamError::Transport(
                format!("unparseable event stream: {error}"),
            ))),
            None => None,
        };
        self.finished = true;
        Poll::Ready(item)
    }
}

/// The most an event (with any comments inside it) may take; the parser buffers it whole.
const MAX_BLOCK_BYTES: usize = 16 << 20;

/// The byte stream as the parser sees it: whole UTF-8 characters only, and the guard's
/// findings as errors.
type Body = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Sits between the body and the parser: times idleness, validates UTF-8 and follows the
/// line structure to notice an event cut off by the end of the body.
struct Guard {
    body: Body,
    idle: Duration,
    /// Made when first needed, so that building the stream needs no runtime.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs: set when the body first has nothing to give, cleared by bytes.
    waiting: bool,
    /// The start of a UTF-8 character whose remaining bytes are still to come.
    partial_char: Vec<u8>,
    /// Whether any text has been passed on (a byte-order mark may only come first).
    started: bool,
    lines: Lines,
    /// An error found in a chunk whose valid beginning is passed on first.
    pending: Option<StreamError>,
    finished: bool,
}

impl Guard {
    fn new(body: Body, idle: Duration) -> Self {
        Self {
            body,
            idle,
            timer: None,
            waiting: false,
            partial_char: Vec::new(),
            started: false,
            lines: Lines::default(),
            pending: None,
            finished: false,
        }
    }

    /// Checks a chunk and returns the bytes that complete whole characters, up to the first
    /// invalid byte if there is one (the error then follows them).
    fn accept(&mut self, chunk: &[u8]) -> Bytes {
        self.lines.feed(chunk);
        if self.lines.block_bytes > MAX_BLOCK_BYTES {
            self.pending = Some(StreamError::Transport(format!(
                "the server sent over {} MiB without ending an event",
                MAX_BLOCK_BYTES >> 20
            )));
        }
        let joined;
        let bytes = if self.partial_char.is_empty() {
            chunk
        } else {
            joined = [std::mem::take(&mut self.partial_char).as_slice(), chunk].concat();
            &joined
        };
        let whole = match std::str::from_utf8(bytes) {
            Ok(_) => bytes,
            Err(error) => {
                let (whole, rest) = bytes.split_at(error.valid_up_to());
                // `error_len` is `None` only when the input ends inside a character that the
                // next chunk may complete.
                match error.error_len() {
                    None => self.partial_char = rest.to_vec(),
                    Some(_) => self.pending = Some(StreamError::InvalidUtf8),
                }
                whole
            }
        };
        // eventsource-stream strips a leading byte-order mark by slicing off one byte of it,
        // which panics; so it never gets to see one.
        let mut whole = whole;
        if !self.started {
            while let Some(rest) = whole.strip_prefix(BOM) {
                whole = rest;
            }
            self.started = !whole.is_empty();
        }
        Bytes::copy_from_slice(whole)
    }

    /// What the end of the body means: a clean end, or a cut.
    fn at_end(&self) -> Option<StreamError> {
        if let Some(bytes) = self.lines.unfinished_event() {
            Some(StreamError::Truncated { bytes })
        } else if !self.partial_char.is_empty() {
            Some(StreamError::InvalidUtf8)
        } else {
            None
        }
    }

    fn finish(&mut self, error: Option<StreamError>) -> Poll<Option<Result<Bytes, StreamError>>> {
        self.finished = true;
        Poll::Ready(error.map(Err))
    }
}

impl Stream for Guard {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(error) = this.pending.take() {
            return this.finish(Some(error));
        }
        loop {
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.waiting = false;
                    let whole = this.accept(&chunk);
                    if !whole.is_empty() {
                        return Poll::Ready(Some(Ok(whole)));
                    }
                    if let Some(error) = this.pending.take() {
                        return this.finish(Some(error));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return this.finish(Some(StreamError::Transport(error)));
                }
                Poll::Ready(None) => {
                    let outcome = this.at_end();
                    return this.finish(outcome);
                }
                Poll::Pending => {
                    let now = Instant::now();
                    if !this.waiting {
                        this.waiting = true;
                        // A limit too long to represent never trips.
                        let Some(deadline) = now.checked_add(this.idle) else {
                            return Poll::Pending;
                        };
                        match &mut this.timer {
                            Some(timer) => timer.as_mut().reset(deadline),
                            None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                    }
                    let Some(timer) = this.timer.as_mut() else {
                        return Poll::Pending;
                    };
                    // Checked before polling: tokio's cooperative budget can keep an elapsed
                    // timer pending.
                    if now >= timer.deadline() || timer.as_mut().poll(cx).is_ready() {
                        let idle = this.idle;
                        return this.finish(Some(StreamError::Idle(idle)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Follows the SSE line structure byte by byte, only far enough to know whether the bytes
/// since the last blank line hold the beginning of an event.
#[derive(Debug, Default)]
struct Lines {
    /// How many bytes of a leading byte-order mark have been skipped (modulo its length:
    /// the guard drops any number of them).
    bom_matched: usize,
    /// Whether the stream is past the place where byte-order marks may stand.
    past_bom: bool,
    /// What the current line is, as far as it has arrived.
    at: LinePos,
    /// The previous byte ended a line with `\r`; a `\n` right after belongs to it.
    after_cr: bool,
    /// A field line (`data:`, `event:`, …) began since the last blank line.
    in_event: bool,
    /// Bytes since the first field line after the last blank line.
    event_bytes: usize,
    /// Bytes since the last blank line, comments included.
    block_bytes: usize,
}

/// Where the tracker stands within a line.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
enum LinePos {
    /// Nothing of the line has arrived yet.
    #[default]
    Start,
    /// A line starting with `:`, which the parser ignores.
    Comment,
    /// Any other line: a field of the event being built.
    Field,
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl Lines {
    fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if !self.past_bom {
                if BOM.get(self.bom_matched) == Some(&byte) {
                    self.bom_matched = (self.bom_matched + 1) % BOM.len();
                    continue;
                }
                self.past_bom = true;
            }
            self.block_bytes += 1;
            let rest_of_crlf = std::mem::take(&mut self.after_cr) && byte == b'\n';
            if !rest_of_crlf {
                match (self.at, byte) {
                    (LinePos::Start, b'\r' | b'\n') => {
                        // A blank line: the event, if any, is complete.
                        self.in_event = false;
                        self.event_bytes = 0;
                        self.block_bytes = 0;
                    }
                    (_, b'\r' | b'\n') => self.at = LinePos::Start,
                    (LinePos::Start, b':') => self.at = LinePos::Comment,
                    (LinePos::Start, _) => {
                        self.at = LinePos::Field;
                        self.in_event = true;
                    }
                    (LinePos::Comment | LinePos::Field, _) => {}
                }
                self.after_cr = byte == b'\r';
            }
            if self.in_event {
                self.event_bytes += 1;
            }
        }
    }

    /// At the end of the body: the size of an event that began but never got its blank line.
    fn unfinished_event(&self) -> Option<usize> {
        self.in_event.then_some(self.event_bytes)
    }
}

/// An error and its causes, as one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A duration as people read it: whole seconds as `60 s`, anything else in milliseconds.
pub(crate) fn human(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
