//! `publisher ask` end to end: every recording, replayed by the replay server through the
//! real OpenAI client, streamed to a real Sockudo, seen by a native subscriber and by REST
//! history. Each recording's expected outcome is written down here with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use publisher::answer::Report;
use publisher::replay::Synth;
use shared::connection::AttachOptions;
use shared::headers::{self, Status};
use tests::harness::{ask, history, named, Replay};
use tests::realtime::Subscriber;
use tests::sockudo::Sockudo;

const WAIT: Duration = Duration::from_secs(20);
const SERVER_ERROR: &str =
    "The server had an error while processing your request. Sorry about that!";

/// What a recording must end as.
struct Expected {
    recording: &'static str,
    status: Status,
    text: &'static str,
    /// The `error` or `reason` header, when the answer carries one.
    detail: Option<&'static str>,
    why: &'static str,
}

const EXPECTED: &[Expected] = &[
    Expected { recording: "00_seed_joke", status: Status::Completed, text: "Why don't scientists trust atoms? Because they make up everything.", detail: None, why: "the seed guide's own stream" },
    Expected { recording: "01_plain_text", status: Status::Completed, text: "Hello! How can I help?", detail: None, why: "plain text deltas" },
    Expected { recording: "02_reasoning_then_message", status: Status::Completed, text: "2 + 2 = 4.", detail: None, why: "reasoning is never published, only the message item's text" },
    Expected { recording: "03_refusal", status: Status::Completed, text: "I'm sorry, but I can't help with that.", detail: None, why: "a refusal is the answer's text, flagged by the refusal header" },
    Expected { recording: "04_two_messages", status: Status::Completed, text: "Let me check that.\n\nThe answer is 42.", detail: None, why: "two message items, joined by a blank line" },
    Expected { recording: "05_function_call", status: Status::Completed, text: "", detail: None, why: "function-call arguments are not answer text" },
    Expected { recording: "06_incomplete_max_output_tokens", status: Status::Incomplete, text: "Once upon a time there was a very long", detail: Some("max_output_tokens"), why: "response.incomplete carries its reason" },
    Expected { recording: "07_response_failed", status: Status::Failed, text: "", detail: Some("The model failed to generate a response."), why: "response.failed carries the model's error message" },
    Expected { recording: "08_midstream_error_nested", status: Status::Failed, text: "Partial", detail: Some(SERVER_ERROR), why: "a nested error event ends the answer, keeping the text so far" },
    Expected { recording: "08b_midstream_error_flat", status: Status::Failed, text: "", detail: Some(SERVER_ERROR), why: "the documented flat error shape reads the same" },
    Expected { recording: "09_http429_then_success", status: Status::Completed, text: "Hi!", detail: None, why: "a 429 before the stream is retried once, then the stream succeeds" },
    Expected { recording: "10_truncated_no_terminal", status: Status::Failed, text: "Cut off", detail: None, why: "a stream that stops mid-event with no terminal event is a failure (message checked below)" },
    Expected { recording: "12_background_resume", status: Status::Completed, text: "Long answer", detail: None, why: "the connection drops after event 4; the background response is streamed again after it, never posted again" },
    Expected { recording: "11_framing_quirks", status: Status::Completed, text: "Framing quirks are fine.", detail: None, why: "CRLF, comments, split data lines and [DONE] are tolerated" },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recording_ends_with_its_expected_text_and_status_everywhere() {
    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
    let ably = server.endpoint();
    for expected in EXPECTED {
        let name = expected.recording;
        let channel = format!("ai:ask-{}", name.replace('_', "-"));
        let mut live = Subscriber::attach(&ably, "live", &channel, AttachOptions::default())
            .await
            .unwrap();

        let outcome = ask(
            &ably,
            &replay.base_url,
            name,
            &channel,
            "replayed",
            &["--rollup-ms", "0"],
        )
        .await
        .unwrap();
        let report = &outcome.report;
        let context = format!(
            "{name} ({}): {report:?}\nstderr:\n{}",
            expected.why, outcome.stderr
        );
        assert_eq!(report.status, expected.status, "{context}");
        assert_eq!(report.text, expected.text, "{context}");
        assert_eq!(
            outcome.stdout, expected.text,
            "stdout holds the text and nothing else; {context}"
        );
        let serial = report.serial.clone().expect("created");
        assert!(
            outcome.stderr.contains(&format!("serial: {serial}")),
            "{context}"
        );
        assert!(
            outcome
                .stderr
                .contains(&format!("status: {}", expected.status)),
            "{context}"
        );
        match expected.detail {
            Some(detail) => assert_eq!(report.detail.as_deref(), Some(detail), "{context}"),
            None if expected.status == Status::Failed => {
                assert!(
                    report.detail.as_deref().is_some_and(|d| !d.is_empty()),
                    "{context}"
                )
            }
            None => assert_eq!(report.detail, None, "{context}"),
        }
        if name == "09_http429_then_success" {
            assert_eq!(report.retries, 1, "{context}");
        }

        // The live subscriber rebuilt the same answer.
        let done = live
            .until(WAIT, |view| {
                view.answer(&serial)
                    .is_some_and(|a| a.status().is_terminal())
            })
            .await;
        assert!(done, "{context}\nlive saw: {:?}", live.log);
        let answer = live.view.answer(&serial).unwrap();
        assert_eq!(
            (answer.text(), answer.status()),
            (expected.text, expected.status),
            "{context}"
        );
        if name == "03_refusal" {
            assert_eq!(answer.header(headers::REFUSAL), Some("true"), "{context}");
        }
        assert_eq!(answer.header(headers::SOURCE), Some("openai"), "{context}");
        live.close().await;

        // History holds exactly one message for the answer, with the full text and status.
        let history = history(&ably, &channel).await.unwrap();
        let answers = named(&history, headers::ANSWER_NAME);
        assert_eq!(answers.len(), 1, "{context}\nhistory: {history:?}");
        let stored = answers[0];
        assert_eq!(stored.serial.as_ref(), Some(&serial), "{context}");
        assert_eq!(stored.text().unwrap(), expected.text, "{context}");
        assert_eq!(
            stored.header(headers::STATUS),
            Some(expected.status.as_str()),
            "{context}"
        );
        assert!(
            named(&history, headers::PROMPT_NAME).is_empty(),
            "ask publishes no prompt message"
        );
    }
}

/// What one `publisher ask` of a synthesized answer ended as, live and in history.
struct Seen {
    report: Report,
    live_text: String,
    live_status: Status,
    stored_text: String,
    response_id: Option<String>,
}

/// Asks for `model` on a fresh replay server (so its first answer is `resp_synth_1`), with
/// `extra` options, and waits for a live viewer to see the end.
async fn ask_synth(server: &Sockudo, channel: &str, model: &str, extra: &[&str]) -> Seen {
    let ably = server.endpoint();
    let replay = Replay::start(Duration::ZERO).await.unwrap();
    let mut live = Subscriber::attach(&ably, "live", channel, AttachOptions::default())
        .await
        .unwrap();
    let outcome = ask(&ably, &replay.base_url, model, channel, "go on", extra)
        .await
        .unwrap();
    let serial = outcome.report.serial.clone().expect("created");
    let done = live
        .until(WAIT, |view| {
            view.answer(&serial)
                .is_some_and(|a| a.status().is_terminal())
        })
        .await;
    assert!(done, "{:?}\nstderr: {}", outcome.report, outcome.stderr);
    let answer = live.view.answer(&serial).unwrap();
    let (live_text, live_status) = (answer.text().to_owned(), answer.status());
    let response_id = answer.header(headers::RESPONSE_ID).map(str::to_owned);
    live.close().await;
    let history = history(&ably, channel).await.unwrap();
    let answers = named(&history, headers::ANSWER_NAME);
    assert_eq!(answers.len(), 1, "history: {history:?}");
    Seen {
        report: outcome.report,
        live_text,
        live_status,
        stored_text: answers[0].text().unwrap(),
        response_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_answer_whose_stream_drops_is_continued_with_the_exact_text() {
    let server = Sockudo::start().unwrap();
    let model = "synth:tokens=80,rate=200,seed=9,fault=drop@30";
    let whole = Synth::parse(model).unwrap().unwrap().text();
    let seen = ask_synth(
        &server,
        "ai:ask-background-drop",
        model,
        &["--openai-background", "on", "--rollup-ms", "0"],
    )
    .await;
    assert_eq!(seen.report.status, Status::Completed, "{:?}", seen.report);
    assert_eq!(seen.report.text, whole);
    // A live viewer, who got the appends before and after the break, and history agree:
    // no character lost or doubled.
    assert_eq!(
        (seen.live_text.as_str(), seen.live_status),
        (whole.as_str(), Status::Completed)
    );
    assert_eq!(seen.stored_text, whole);
    // The first answer of the replay server: the request was never posted again.
    assert_eq!(seen.response_id.as_deref(), Some("resp_synth_1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreground_answer_whose_stream_drops_fails_with_the_text_so_far() {
    let server = Sockudo::start().unwrap();
    let model = "synth:tokens=80,rate=0,seed=9,fault=drop@30";
    let so_far = Synth::parse(model).unwrap().unwrap().streamed_text();
    // `auto` is off for any server but OpenAI's.
    let seen = ask_synth(&server, "ai:ask-foreground-drop", model, &[]).await;
    assert_eq!(seen.report.status, Status::Failed, "{:?}", seen.report);
    assert_eq!(seen.live_text, so_far);
    assert_eq!(seen.stored_text, so_far);
    assert_eq!(seen.live_status, Status::Failed);
}
