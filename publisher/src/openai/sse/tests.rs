//! Tests: recorded streams decode the same however the bytes are chunked; UTF-8 split
//! across chunks, invalid UTF-8, SSE framing quirks, cut-off events and idle timing.

use std::convert::Infallible;
use std::fs;
use std::io;
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use shared::openai::{Attempt, Recording, Replay, Step};

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai/");
const IDLE: Duration = Duration::from_secs(60);

type Outcome = Result<StreamEvent, StreamError>;

/// Every `*.jsonl` recording, by file name.
fn recordings() -> Vec<(String, Recording)> {
    let mut names: Vec<String> = fs::read_dir(FIXTURES)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".jsonl"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures not found in {FIXTURES}");
    names
        .into_iter()
        .map(|name| {
            let text = fs::read_to_string(format!("{FIXTURES}{name}")).unwrap();
            let recording = Recording::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, recording)
        })
        .collect()
}

/// The attempt that answers with an event stream (earlier attempts are HTTP errors).
fn stream_attempt<'a>(name: &str, recording: &'a Recording) -> &'a Attempt {
    recording
        .attempts
        .iter()
        .find(|a| {
            (200..300).contains(&a.status)
                && a.content_type()
                    .is_some_and(|ct| ct.starts_with("text/event-stream"))
        })
        .unwrap_or_else(|| panic!("{name}: no event-stream attempt"))
}

/// What the SSE layer must yield for an attempt: the recording's own decoding of its frames,
/// then a truncation when the body ends with raw bytes of an unfinished frame.
fn expected(attempt: &Attempt) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = attempt
        .events()
        .map(|event| event.map_err(|e| StreamError::Malformed(e.to_string())))
        .collect();
    let last = attempt.steps.iter().rev().find(|s| **s != Step::Eof);
    if let Some(Step::PartialBytes { text }) = last {
        outcomes.push(Err(StreamError::Truncated { bytes: text.len() }));
    }
    outcomes
}

/// Malformed-event messages come from two decoders; only the fact matters here.
fn normalized(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Err(StreamError::Malformed(_)) => Err(StreamError::Malformed(String::new())),
            other => other,
        })
        .collect()
}

fn chunked(chunks: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
}

async fn decode(chunks: Vec<Vec<u8>>) -> Vec<Outcome> {
    events(chunked(chunks), IDLE).collect().await
}

async fn decode_whole(body: &[u8]) -> Vec<Outcome> {
    decode(vec![body.to_vec()]).await
}

/// Cuts `body` at the given ascending positions.
fn split_at(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        pieces.push(body[from..cut].to_vec());
        from = cut;
    }
    pieces.push(body[from..].to_vec());
    pieces
}

#[tokio::test]
async fn every_recording_decodes_the_same_at_every_split() {
    for (name, recording) in recordings() {
        let attempt = stream_attempt(&name, &recording);
        let body = attempt.render(Replay::Full);
        let want = normalized(expected(attempt));
        assert!(want.len() >= 3, "{name}: too few events to be a test");

        let whole = normalized(decode_whole(&body).await);
        assert_eq!(whole, want, "{name}: in one chunk");

        for cut in 0..=body.len() {
            let got = normalized(decode(split_at(&body, &[cut])).await);
            assert_eq!(got, want, "{name}: split at byte {cut}");
        }

        // Three chunks, at cuts spread over the body by a fixed pseudo-random walk.
        let mut seed: usize = 0x9e37_79b9;
        for _ in 0..40 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let a = (seed >> 16) % (body.len() + 1);
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let b = (seed >> 16) % (body.len() + 1);
            let cuts = [a.min(b), a.max(b)];
            let got = normalized(decode(split_at(&body, &cuts)).await);
            assert_eq!(got, want, "{name}: split at bytes {cuts:?}");
        }

        let bytewise = body.iter().map(|b| vec![*b]).collect();
        assert_eq!(
            normalized(decode(bytewise).await),
            want,
            "{name}: one byte per chunk"
        );
    }
}

#[tokio::test]
async fn truncated_recording_reports_the_cut_after_its_events() {
    let (_, recording) = recordings()
        .into_iter()
        .find(|(name, _)| name.starts_with("10_"))
        .unwrap();
    let got = decode_whole(&recording.attempts[0].render(Replay::Full)).await;
    let (last, events) = got.split_last().unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(Result::is_ok));
    assert!(matches!(last, Err(StreamError::Truncated { bytes }) if *bytes > 40));
    assert!(last.as_ref().unwrap_err().is_fatal());
}

#[tokio::test]
async fn llama_cpp_capture_decodes_to_a_completed_response() {
    let capture = fs::read(format!(
        "{FIXTURES}real_llamacpp_b11434_responses_stream.txt"
    ))
    .unwrap();
    let head_end = capture.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &capture[head_end..];
    let got = decode_whole(body).await;
    assert!(got.len() > 5);
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert!(got.last().unwrap().as_ref().unwrap().is_terminal());
    let bytewise = body.iter().map(|b| vec![*b]).collect();
    assert_eq!(decode(bytewise).await, got);
}

fn delta_frame(delta: &str) -> String {
    let data = json!({"type": "response.output_text.delta", "sequence_number": 4,
        "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": delta});
    format!("event: response.output_text.delta\ndata: {data}\n\n")
}

fn completed_frame() -> String {
    let data = json!({"type": "response.completed", "sequence_number": 9,
        "response": {"id": "resp_1", "status": "completed"}});
    format!("event: response.completed\ndata: {data}\n\n")
}

fn delta_text(outcome: &Outcome) -> &str {
    match outcome {
        Ok(StreamEvent::OutputTextDelta(delta)) => &delta.delta,
        other => panic!("not a text delta: {other:?}"),
    }
}

#[tokio::test]
async fn multibyte_characters_split_across_chunks_decode() {
    let text = "é 日 🙂";
    let body = delta_frame(text).into_bytes();
    for cut in 0..=body.len() {
        let got = decode(split_at(&body, &[cut])).await;
        assert_eq!(got.len(), 1, "split at {cut}: {got:?}");
        assert_eq!(delta_text(&got[0]), text, "split at {cut}");
    }
    let bytewise = body.iter().map(|b| vec![*b]).collect();
    assert_eq!(delta_text(&decode(bytewise).await[0]), text);
}

#[tokio::test]
async fn invalid_utf8_is_fatal() {
    let mut body = delta_frame("fine").into_bytes();
    body.extend_from_slice(b"data: {\"type\":\"x\",\"v\":\"\xff\"}\n\n");
    body.extend_from_slice(completed_frame().as_bytes());
    let got = decode_whole(&body).await;
    assert_eq!(got.len(), 2);
    assert_eq!(delta_text(&got[0]), "fine");
    assert_eq!(got[1], Err(StreamError::InvalidUtf8));

    // An overlong encoding and a lone continuation byte, each split from its neighbours.
    for bad in [&b"\xc0\xaf"[..], b"\x80", b"\xed\xa0\x80"] {
        let mut body = b"data: {\"a\":\"".to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(b"\"}\n\n");
        let bytewise = body.iter().map(|b| vec![*b]).collect();
        assert_eq!(
            decode(bytewise).await,
            vec![Err(StreamError::InvalidUtf8)],
            "{bad:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_utf8_is_reported_without_waiting_for_the_end() {
    let bad = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"data: \xff"))]);
    let body = bad.chain(stream::pending());
    let started = tokio::time::Instant::now();
    let mut events = events(body, IDLE);
    assert_eq!(events.next().await, Some(Err(StreamError::InvalidUtf8)));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(events.next().await, None);
}

#[tokio::test]
async fn a_character_cut_by_the_end_of_the_body_is_reported() {
    // Inside an event, the event is what was cut.
    let got = decode_whole(b"data: \"\xe6\x97").await;
    assert_eq!(got, vec![Err(StreamError::Truncated { bytes: 9 })]);
    // Inside a comment, only the encoding is wrong.
    let got = decode_whole(b": \xe6\x97").await;
    assert_eq!(got, vec![Err(StreamError::InvalidUtf8)]);
}

#[tokio::test]
async fn framing_quirks_are_tolerated() {
    let delta = json!({"type": "response.output_text.delta", "item_id": "m",
        "output_index": 0, "content_index": 0, "delta": "a\nb"});
    let unknown = json!({"type": "response.web_search_call.searching", "item_id": "ws_1"});
    let body = format!(
        "\u{feff}: leading comment\r\n\r\n\
         data: {delta}\r\n\r\n\
         event: whatever\rdata: {unknown}\r\r\
         :ping\n\n\
         event: response.output_text.delta\n\
         data: {{\"type\":\"response.output_text.delta\",\n\
         data: \"item_id\":\"m\",\"delta\":\"split\"}}\n\n\
         event: only-a-name\n\n\
         data:{completed}\n\n",
        completed = serde_json::to_string(&json!({"type": "response.completed",
            "response": {"status": "completed"}}))
        .unwrap(),
    );
    let want_kinds = [
        "response.output_text.delta",
        "response.web_search_call.searching",
        "response.output_text.delta",
        "response.completed",
    ];
    let body = body.into_bytes();
    for cut in 0..=body.len() {
        let got = decode(split_at(&body, &[cut])).await;
        let kinds: Vec<&str> = got.iter().map(|o| o.as_ref().unwrap().kind()).collect();
        assert_eq!(kinds, want_kinds, "split at {cut}");
        assert_eq!(delta_text(&got[0]), "a\nb");
        assert_eq!(delta_text(&got[2]), "split");
        assert!(
            matches!(&got[1], Ok(StreamEvent::Unknown { kind, .. }) if kind.contains("web_search"))
        );
    }
}

#[tokio::test]
async fn byte_order_marks_at_the_start_are_dropped() {
    // eventsource-stream would panic on a BOM (it slices one byte off a three-byte char).
    for prefix in ["\u{feff}", "\u{feff}\u{feff}"] {
        let body = format!("{prefix}{}", completed_frame()).into_bytes();
        for cut in 0..=body.len() {
            let got = decode(split_at(&body, &[cut])).await;
            assert_eq!(got.len(), 1, "{prefix:?} split at {cut}: {got:?}");
            assert!(got[0].as_ref().unwrap().is_terminal());
        }
    }
}

#[tokio::test]
async fn done_sentinel_ends_the_stream() {
    let body = format!(
        "{}data: [DONE]\n\n{}",
        completed_frame(),
        delta_frame("after the end")
    );
    let got = decode_whole(body.as_bytes()).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].as_ref().unwrap().is_terminal());
}

#[tokio::test]
async fn a_malformed_event_is_skipped_and_the_stream_goes_on() {
    let body = format!(
        "event: response.output_text.delta\ndata: {{not json\n\n\
         data: [1, 2]\n\n\
         data: {{\"type\":\"response.output_text.delta\",\"delta\":7}}\n\n{}",
        completed_frame()
    );
    let got = decode_whole(body.as_bytes()).await;
    assert_eq!(got.len(), 4, "{got:?}");
    for outcome in &got[..3] {
        let error = outcome.as_ref().unwrap_err();
        assert!(matches!(error, StreamError::Malformed(_)));
        assert!(!error.is_fatal());
    }
    assert!(got[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("response.output_text.delta"));
    assert!(got[3].as_ref().unwrap().is_terminal());
}

#[tokio::test]
async fn a_last_event_without_its_blank_line_is_a_truncation() {
    let frame = completed_frame();
    let body = frame.strip_suffix('\n').unwrap();
    let got = decode_whole(body.as_bytes()).await;
    assert_eq!(got, vec![Err(StreamError::Truncated { bytes: body.len() })]);
    // A trailing comment or stray blank lines are not an unfinished event.
    let body = format!("{frame}: bye\n\n\n");
    let got = decode_whole(body.as_bytes()).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].is_ok());
    let body = format!("{frame}: unterminated comment");
    assert_eq!(decode_whole(body.as_bytes()).await.len(), 1);
}

#[tokio::test]
async fn a_transport_error_ends_the_stream() {
    let body = stream::iter([
        Ok(Bytes::from(delta_frame("one"))),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer reset")),
        Ok(Bytes::from(completed_frame())),
    ]);
    let got: Vec<Outcome> = events(body, IDLE).collect().await;
    assert_eq!(got.len(), 2);
    assert_eq!(delta_text(&got[0]), "one");
    assert_eq!(got[1], Err(StreamError::Transport("peer reset".into())));
    assert!(got[1].as_ref().unwrap_err().is_fatal());
}

/// A body fed by the test, chunk by chunk, on paused time.
fn fed_body() -> (
    tokio::sync::mpsc::UnboundedSender<&'static str>,
    BoxStream<'static, Result<Bytes, Infallible>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let body = stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(Bytes::from_static(chunk.as_bytes())), rx))
    });
    (tx, body.boxed())
}

#[tokio::test(start_paused = true)]
async fn silence_longer_than_the_idle_timeout_fails_the_stream() {
    let (tx, body) = fed_body();
    let mut events = events(body, IDLE);
    tx.send("data: {\"type\":\"response.in_progress\",\"response\":{}}\n\n")
        .unwrap();
    assert!(events.next().await.unwrap().is_ok());

    let started = tokio::time::Instant::now();
    assert_eq!(events.next().await, Some(Err(StreamError::Idle(IDLE))));
    assert_eq!(started.elapsed(), IDLE);
    assert_eq!(events.next().await, None);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn keepalive_comments_and_partial_bytes_keep_the_stream_alive() {
    let (tx, body) = fed_body();
    let feeder = tokio::spawn(async move {
        // Ten minutes of keep-alives 45 s apart, then half an event and, 45 s later, the rest.
        for _ in 0..14 {
            tokio::time::sleep(Duration::from_secs(45)).await;
            tx.send(": keepalive\n\n").unwrap();
        }
        tokio::time::sleep(Duration::from_secs(45)).await;
        tx.send("data: {\"type\":\"response.completed\",").unwrap();
        tokio::time::sleep(Duration::from_secs(45)).await;
        tx.send("\"response\":{\"status\":\"completed\"}}\n\n")
            .unwrap();
        // Then silence, with the sender kept open.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(tx);
    });
    let started = tokio::time::Instant::now();
    let mut events = events(body, IDLE);
    let first = events.next().await.unwrap().unwrap();
    assert!(first.is_terminal());
    assert_eq!(started.elapsed(), Duration::from_secs(16 * 45));
    assert_eq!(events.next().await, Some(Err(StreamError::Idle(IDLE))));
    assert_eq!(started.elapsed(), Duration::from_secs(16 * 45) + IDLE);
    feeder.abort();
}

#[tokio::test(start_paused = true)]
async fn idle_counts_only_time_spent_waiting_for_bytes() {
    let (tx, body) = fed_body();
    let mut events = events(body, IDLE);
    // Two events arrive together; the consumer takes longer than the timeout over the first.
    let frame = "data: {\"type\":\"response.in_progress\",\"response\":{}}\n\n";
    tx.send(frame).unwrap();
    tx.send(frame).unwrap();
    assert!(events.next().await.unwrap().is_ok());
    tokio::time::sleep(IDLE * 2).await;
    assert!(events.next().await.unwrap().is_ok());
    tokio::time::sleep(IDLE * 2).await;
    let started = tokio::time::Instant::now();
    assert_eq!(events.next().await, Some(Err(StreamError::Idle(IDLE))));
    assert_eq!(started.elapsed(), IDLE);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn an_unrepresentably_long_idle_limit_never_trips() {
    let (tx, body) = fed_body();
    let mut events = events(body, Duration::MAX);
    tx.send("data: {\"type\":\"response.in_progress\",\"response\":{}}\n\n")
        .unwrap();
    assert!(events.next().await.unwrap().is_ok());
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(365 * 24 * 3600)).await;
        drop(tx);
    });
    assert_eq!(events.next().await, None);
    closer.await.unwrap();
}

#[test]
fn building_the_stream_needs_no_runtime() {
    drop(events(chunked(vec![b"data: x\n\n".to_vec()]), IDLE));
}

#[tokio::test]
async fn an_endless_event_is_cut_off() {
    let mut chunks = vec![b"data: \"".to_vec()];
    chunks.extend((0..5).map(|_| vec![b'a'; 4 << 20]));
    chunks.push(b"\"\n\n".to_vec());
    let got = decode(chunks).await;
    assert_eq!(got.len(), 1);
    assert!(
        matches!(&got[0], Err(StreamError::Transport(m)) if m.contains("16 MiB")),
        "{got:?}"
    );
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        StreamError::Idle(Duration::from_secs(60)).to_string(),
        "OpenAI sent nothing for 60 s"
    );
    assert_eq!(
        StreamError::Idle(Duration::from_millis(1500)).to_string(),
        "OpenAI sent nothing for 1500 ms"
    );
    assert_eq!(
        StreamError::Truncated { bytes: 12 }.to_string(),
        "the event stream ended in the middle of an event (12 bytes of it received)"
    );
    assert!(StreamError::InvalidUtf8.is_fatal());
    assert!(StreamError::Transport(String::new()).is_fatal());
    assert!(StreamError::Idle(IDLE).is_fatal());
    assert!(StreamError::Truncated { bytes: 0 }.is_fatal());
}
