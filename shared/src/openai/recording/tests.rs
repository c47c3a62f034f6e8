//! Tests: Every recording parses, and renders the bytes a replay server writes.

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
    assert!(body
        .ends_with("\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_te"));
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
    let bad =
        |field: &'static str, expected: &'static str, kind: &str| RecordingErrorKind::BadField {
            kind: kind.into(),
            field,
            expected,
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

#[test]
fn chunks_are_one_per_writing_step_and_join_into_the_rendered_body() {
    let names = [
        "01_plain_text.jsonl",
        "09_http429_then_success.jsonl",
        "10_truncated_no_terminal.jsonl",
        "11_framing_quirks.jsonl",
        "12_background_resume.jsonl",
    ];
    for name in names {
        for attempt in &fixture(name).attempts {
            for replay in [
                Replay::Full,
                Replay::UntilDisconnect,
                Replay::ResumeAfter(4),
            ] {
                let chunks = attempt.render_chunks(replay);
                assert_eq!(chunks.concat(), attempt.render(replay), "{name} {replay:?}");
                assert!(chunks.iter().all(|c| !c.is_empty()), "{name}");
            }
        }
    }

    // Framing quirks: the comments, every frame and the sentinel each come alone.
    let quirks = &fixture("11_framing_quirks.jsonl").attempts[0];
    let chunks: Vec<String> = quirks
        .render_chunks(Replay::Full)
        .into_iter()
        .map(|c| String::from_utf8(c).unwrap())
        .collect();
    assert_eq!(chunks.len(), 14);
    assert_eq!(chunks[0], ": keep-alive\r\n\r\n");
    assert!(chunks[1].starts_with("event: response.created\r\ndata: {"));
    assert_eq!(chunks[6].matches("data: ").count(), 2, "the split frame");
    assert_eq!(chunks[11], ": ping\r\n\r\n");
    assert_eq!(chunks[13], "data: [DONE]\r\n\r\n");
    for frame in &chunks[1..11] {
        assert!(frame.ends_with("}\r\n\r\n"), "{frame:?}");
        assert_eq!(decode_sse(frame.as_bytes()).len(), 1, "{frame:?}");
    }

    // A truncated stream's last chunk is the cut frame; an HTTP error is one JSON chunk.
    let truncated =
        fixture("10_truncated_no_terminal.jsonl").attempts[0].render_chunks(Replay::Full);
    assert_eq!(truncated.len(), 6);
    assert!(truncated[5].starts_with(b"event: response.output_text.delta\ndata: {\"type\""));
    let rate_limited =
        fixture("09_http429_then_success.jsonl").attempts[0].render_chunks(Replay::Full);
    assert_eq!(rate_limited.len(), 1);

    // Until the disconnect: the five frames before the marker.
    let resume = &fixture("12_background_resume.jsonl").attempts[0];
    assert_eq!(resume.render_chunks(Replay::UntilDisconnect).len(), 5);
    assert_eq!(resume.render_chunks(Replay::ResumeAfter(4)).len(), 6);
}
