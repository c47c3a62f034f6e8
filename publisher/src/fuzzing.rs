//! The check behind the `sse` fuzz target in `fuzz/` and its replay on stable in
//! `tests/tests/fuzz_corpora.rs`. Not part of the API: it takes raw fuzz input and panics
//! when a property of the SSE layer ([`crate::openai::events`]) does not hold.

use std::convert::Infallible;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};

use crate::openai::{events, StreamError, StreamEvent};

type Outcome = Result<StreamEvent, StreamError>;

/// Feeds an event-stream body to the SSE layer in the chunks the input describes, and checks,
/// panicking otherwise:
///
/// 1. No panic, and the layer never waits: the whole body is there, so it never polls
///    `Pending`; it ends, and stays ended.
/// 2. The chunking changes nothing: the outcomes equal those of the body in one chunk.
/// 3. Nothing from nothing: there are no more events and malformed-event errors than
///    occurrences of `data` (every event needs a `data` field) in the body.
/// 4. A fatal error is the last outcome.
///
/// Input: a first byte `c`, then the body. `c = 0xff` feeds the body one byte per chunk;
/// otherwise `c % 8` bytes follow `c`, each the length of one more chunk (cut short by the end
/// of the body), and the rest of the body is the last chunk.
pub fn check_sse(input: &[u8]) {
    let (chunks, body) = split(input);
    let whole = decode(vec![body.to_vec()], body.len());
    let pieces = decode(chunks, body.len());
    assert_eq!(
        pieces, whole,
        "chunked differently from the body in one chunk"
    );

    let fields = body.windows(4).filter(|w| *w == b"data").count();
    let decoded = whole
        .iter()
        .filter(|o| matches!(o, Ok(_) | Err(StreamError::Malformed(_))))
        .count();
    assert!(
        decoded <= fields,
        "{decoded} events from {fields} `data` fields"
    );
    if let Some(at) = whole
        .iter()
        .position(|o| o.as_ref().is_err_and(StreamError::is_fatal))
    {
        assert_eq!(at + 1, whole.len(), "outcomes after a fatal error");
    }
}

/// The chunks and the whole body described by the input (see [`check_sse`]).
fn split(input: &[u8]) -> (Vec<Vec<u8>>, &[u8]) {
    let Some((&c, rest)) = input.split_first() else {
        return (Vec::new(), &[]);
    };
    if c == 0xff {
        return (rest.chunks(1).map(<[u8]>::to_vec).collect(), rest);
    }
    let (lengths, mut body) = rest.split_at(usize::from(c % 8).min(rest.len()));
    let whole = body;
    let mut chunks = Vec::new();
    for &len in lengths {
        let (chunk, tail) = body.split_at(usize::from(len).min(body.len()));
        chunks.push(chunk.to_vec());
        body = tail;
    }
    chunks.push(body.to_vec());
    (chunks, whole)
}

/// Runs the SSE layer over in-memory chunks, by hand: no runtime is needed since the body
/// never waits, so the idle timer is never made.
fn decode(chunks: Vec<Vec<u8>>, body_len: usize) -> Vec<Outcome> {
    let body = stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Bytes::from(c))),
    );
    let mut events = events(body, Duration::from_secs(60));
    let mut cx = Context::from_waker(Waker::noop());
    let mut outcomes = Vec::new();
    loop {
        match events.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(outcome)) => {
                outcomes.push(outcome);
                assert!(
                    outcomes.len() <= body_len + 1,
                    "more outcomes than bytes: {outcomes:?}"
                );
            }
            Poll::Ready(None) => break,
            Poll::Pending => panic!("the SSE layer waited on a body that had all arrived"),
        }
    }
    assert!(
        matches!(events.poll_next_unpin(&mut cx), Poll::Ready(None)),
        "the stream went on after its end"
    );
    outcomes
}
