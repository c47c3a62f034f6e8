//! Interop with the official JS clients (npm `ably` 2.28.0 and `openai` 4.95.0) against a
//! real Sockudo: the seed guide's publisher and subscriber (`tests/interop/*.mjs`, which
//! make exactly the guide's calls) talking to our publisher and our subscriber, one to one
//! and many at once on one channel, and channel history read by ably-js.
//!
//! The guide's publisher sets no headers and sends no final update, so its answers have no
//! `status` header: our assembler reads them as `streaming`, and their text is what is
//! compared. Ours end with a full-text `message.update` carrying the terminal status.
//!
//! Needs `tests/interop/node_modules` (`npm ci` in tests/interop; scripts/test runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use publisher::replay::Synth;
use serde_json::Value;
use shared::assembler::Assembler;
use shared::connection::AttachOptions;
use shared::headers::{self, Status};
use shared::Serial;
use tests::harness::{ask, history, named, AskOutcome, Replay};
use tests::js::{guide_publisher, guide_subscriber, js_history, JsAnswer, Protocol, Script};
use tests::realtime::Subscriber;
use tests::sockudo::Sockudo;

const WAIT: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(8);
/// The seed guide's own recorded stream: a reasoning item, then the message item.
const SEED_JOKE: &str = "00_seed_joke";
const SEED_JOKE_TEXT: &str = "Why don't scientists trust atoms? Because they make up everything.";

fn synth_text(model: &str, prompt: &str) -> String {
    Synth::for_request(model, Some(prompt))
        .unwrap()
        .unwrap()
        .text()
}

struct System {
    server: Sockudo,
    replay: Replay,
}

impl System {
    async fn start() -> Self {
        tests::js::require_packages().unwrap();
        let server = Sockudo::start().unwrap();
        let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
        Self { server, replay }
    }

    fn ably(&self) -> String {
        self.server.endpoint()
    }

    /// Runs the guide's publisher to the end: its serial and the text it appended.
    async fn guide_publish(
        &self,
        protocol: Protocol,
        channel: &str,
        model: &str,
        prompt: &str,
    ) -> (String, String) {
        let script = guide_publisher(
            &self.ably(),
            protocol,
            &self.replay.base_url,
            channel,
            model,
            prompt,
        )
        .unwrap();
        finish_publisher(script).await
    }

    /// Runs `publisher ask` with the default coalescing window.
    async fn ask(&self, channel: &str, model: &str, prompt: &str) -> AskOutcome {
        ask(
            &self.ably(),
            &self.replay.base_url,
            model,
            channel,
            prompt,
            &[],
        )
        .await
        .unwrap()
    }
}

/// Reads a guide publisher's `created` and `done` lines and its clean exit.
async fn finish_publisher(mut script: Script) -> (String, String) {
    let created = script.until_event(WAIT, "created").await.unwrap();
    let serial = created["serial"].as_str().unwrap().to_owned();
    let done = script.until_event(WAIT, "done").await.unwrap();
    assert_eq!(done["serial"], serial.as_str(), "{done}");
    assert_eq!(
        done["failedAppends"].as_array().map(Vec::len),
        Some(0),
        "every append was ACKed: {done}"
    );
    assert_eq!(done["terminal"], "response.completed", "{done}");
    let text = done["text"].as_str().unwrap().to_owned();
    let finished = script.finish(STOP).await.unwrap();
    assert!(
        finished.status.success(),
        "publisher.mjs exited {}: {}",
        finished.status,
        finished.stderr
    );
    assert!(
        finished
            .events
            .iter()
            .any(|v| v["event"] == "closed" && v["state"] == "closed"),
        "the connection closed cleanly: {:?}",
        finished.events
    );
    (serial, text)
}

/// Waits until a native subscriber holds `serial` with `text` (and `status`, when given).
async fn native_sees(
    sub: &mut Subscriber,
    serial: &str,
    text: &str,
    status: Status,
) -> Result<(), String> {
    let serial = Serial::from(serial);
    let done = sub
        .until(WAIT, |view| {
            view.answer(&serial)
                .is_some_and(|a| a.text() == text && a.status() == status)
        })
        .await;
    if done {
        return Ok(());
    }
    let seen = sub
        .view
        .answer(&serial)
        .map(|a| (a.status(), a.text().to_owned()));
    Err(format!(
        "native subscriber: answer {serial} is {seen:?}, expected ({status}, {text:?})"
    ))
}

/// Waits until a guide subscriber gets the closing full-text `message.update` of our answer
/// `serial` (status `completed`); returns the answer as it holds it then.
async fn final_update(script: &mut Script, serial: &str) -> JsAnswer {
    script
        .until(WAIT, &format!("the closing update of {serial}"), |v| {
            v["event"] == "message"
                && v["serial"] == serial
                && v["action"] == "message.update"
                && v["headers"]["status"] == "completed"
        })
        .await
        .unwrap();
    script.until_answer(WAIT, serial, |_| true).await.unwrap()
}

/// Closes a guide subscriber; returns its closing answers by serial.
async fn finish_subscriber(script: Script) -> BTreeMap<String, JsAnswer> {
    let finished = script.finish(STOP).await.unwrap();
    assert!(
        finished.status.success(),
        "subscriber.mjs exited {}: {}",
        finished.status,
        finished.stderr
    );
    finished
        .answers()
        .unwrap()
        .into_iter()
        .map(|a| (a.serial.clone(), a))
        .collect()
}

/// The actions of the messages a guide subscriber saw for `serial`, in order.
fn actions(events: &[Value], serial: &str) -> Vec<String> {
    messages(events, serial)
        .into_iter()
        .map(|v| v["action"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn messages<'a>(events: &'a [Value], serial: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|v| v["event"] == "message" && v["serial"] == serial)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_js_publisher_reaches_our_native_subscriber() {
    let system = System::start().await;
    let ably = system.ably();
    let channel = "ai:interop-guide-to-native";
    let mut live = Subscriber::attach(&ably, "native-live", channel, AttachOptions::default())
        .await
        .unwrap();

    let synth = "synth:tokens=40,rate=200";
    let prompt = "interop: the guide's publisher";
    let cases = [
        (
            SEED_JOKE,
            "Tell me a short joke",
            SEED_JOKE_TEXT.to_owned(),
            Protocol::MsgPack,
        ),
        (synth, prompt, synth_text(synth, prompt), Protocol::Json),
    ];
    let mut published = Vec::new();
    for (model, prompt, expected, protocol) in &cases {
        let (serial, text) = system
            .guide_publish(*protocol, channel, model, prompt)
            .await;
        assert_eq!(
            &text, expected,
            "{model}: what the guide's publisher appended"
        );
        // The guide sets no status header: our assembler reads the answer as streaming.
        native_sees(&mut live, &serial, expected, Status::Streaming)
            .await
            .unwrap();
        let answer = live.view.answer(&Serial::from(serial.as_str())).unwrap();
        assert_eq!(answer.name(), Some(headers::ANSWER_NAME));
        assert_eq!(answer.header(headers::STATUS), None);
        assert!(!answer.is_partial(), "live from its create: {model}");
        published.push((serial, expected.clone()));
    }
    assert_eq!(live.view.answer_count(), 2, "nothing else was assembled");

    // A native late joiner (rewind) gets both answers whole.
    let mut late = Subscriber::attach(&ably, "native-rewind", channel, AttachOptions::rewind(100))
        .await
        .unwrap();
    for (serial, text) in &published {
        native_sees(&mut late, serial, text, Status::Streaming)
            .await
            .unwrap();
    }

    // History holds one message per answer, with the whole text.
    let history = history(&ably, channel).await.unwrap();
    let stored = named(&history, headers::ANSWER_NAME);
    assert_eq!(stored.len(), 2, "{history:?}");
    for (serial, text) in &published {
        let message = stored
            .iter()
            .find(|m| m.serial.as_ref().map(Serial::as_str) == Some(serial.as_str()))
            .unwrap_or_else(|| panic!("no {serial} in {history:?}"));
        assert_eq!(message.text().unwrap(), text.as_str());
        assert_eq!(message.header(headers::STATUS), None);
    }
    live.close().await;
    late.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_publisher_reaches_the_guides_js_subscriber_live_and_with_rewind() {
    let system = System::start().await;
    let ably = system.ably();
    let channel = "ai:interop-ours-to-guide";
    let mut live = guide_subscriber(&ably, Protocol::MsgPack, channel, None, WAIT)
        .await
        .unwrap();

    // About 2.5 s of streaming, so a subscriber can join in the middle.
    let model = "synth:tokens=100,rate=40";
    let prompt = "interop: our publisher to the guide's subscriber";
    let expected = synth_text(model, prompt);
    let asking = {
        let (ably, openai) = (ably.clone(), system.replay.base_url.clone());
        tokio::spawn(async move { ask(&ably, &openai, model, channel, prompt, &[]).await })
    };

    // Once text streams, a guide subscriber joins with the guide's `rewind: '2m'`.
    let streaming = live
        .until(WAIT, "streamed text", |v| {
            v["event"] == "answer" && v["text"].as_str().is_some_and(|t| !t.is_empty())
        })
        .await
        .unwrap();
    let serial = streaming["serial"].as_str().unwrap().to_owned();
    let mut joined = guide_subscriber(&ably, Protocol::Json, channel, Some("2m"), WAIT)
        .await
        .unwrap();

    let outcome = asking.await.unwrap().unwrap();
    let report = &outcome.report;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.text, expected);
    assert_eq!(
        report.serial.as_ref().map(Serial::as_str),
        Some(serial.as_str())
    );

    let seen_live = final_update(&mut live, &serial).await;
    assert_eq!(seen_live.text, expected, "live guide subscriber");
    let seen_joined = final_update(&mut joined, &serial).await;
    assert_eq!(
        seen_joined.text, expected,
        "guide subscriber joined mid-stream"
    );

    // After the end: the guide's rewind by time, and rewind by count.
    let mut after = Vec::new();
    for (rewind, protocol) in [("2m", Protocol::MsgPack), ("1", Protocol::Json)] {
        let mut late = guide_subscriber(&ably, protocol, channel, Some(rewind), WAIT)
            .await
            .unwrap();
        let seen = final_update(&mut late, &serial).await;
        assert_eq!(seen.text, expected, "guide subscriber with rewind {rewind}");
        after.push((rewind, late));
    }

    // What the live one saw: the create, appends of fragments each repeating the headers,
    // and the closing full-text update with the terminal status.
    let live_actions = actions(live.events(), &serial);
    assert_eq!(
        live_actions.first().map(String::as_str),
        Some("message.create")
    );
    let tail: Vec<String> = messages(live.events(), &serial)
        .into_iter()
        .rev()
        .take(4)
        .map(Value::to_string)
        .collect();
    assert_eq!(
        live_actions.last().map(String::as_str),
        Some("message.update"),
        "{tail:#?}"
    );
    assert!(
        live_actions
            .iter()
            .filter(|a| *a == "message.append")
            .count()
            >= 2,
        "{live_actions:?}"
    );
    // Every message repeats the headers; the status only moves forward (our last append
    // may already say `completed`, right before the closing update).
    let statuses: Vec<&str> = messages(live.events(), &serial)
        .iter()
        .map(|m| m["headers"]["status"].as_str().unwrap_or("(none)"))
        .collect();
    let first_terminal = statuses
        .iter()
        .position(|s| *s != "streaming")
        .unwrap_or(statuses.len());
    assert!(
        statuses[..first_terminal].iter().all(|s| *s == "streaming")
            && statuses[first_terminal..].iter().all(|s| *s == "completed")
            && first_terminal >= statuses.len().saturating_sub(2),
        "{statuses:?}"
    );
    let joined_appends = actions(joined.events(), &serial)
        .iter()
        .filter(|a| *a == "message.append")
        .count();
    eprintln!(
        "live saw {} messages; the mid-stream joiner saw {} ({joined_appends} live appends)",
        live_actions.len(),
        actions(joined.events(), &serial).len()
    );

    // Each closes cleanly holding exactly that one answer.
    let mut scripts = vec![("live", live), ("joined", joined)];
    scripts.extend(after);
    for (which, script) in scripts {
        let answers = finish_subscriber(script).await;
        assert_eq!(answers.len(), 1, "{which}: {answers:?}");
        let answer = &answers[&serial];
        assert_eq!(
            (answer.text.as_str(), answer.status.as_str(), answer.deleted),
            (expected.as_str(), "completed", false),
            "{which}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_guide_and_three_native_publishers_share_a_channel_without_mixing() {
    let system = System::start().await;
    let ably = system.ably();
    let channel = "ai:interop-six";
    // About 1.2 s each, all at once.
    let model = "synth:tokens=60,rate=50";

    // ably-js speaks MessagePack by default in Node, JSON in browsers: both, mixed.
    let protocol = |i: usize| {
        if i.is_multiple_of(2) {
            Protocol::MsgPack
        } else {
            Protocol::Json
        }
    };
    let mut js_subs = Vec::new();
    for i in 0..3 {
        js_subs.push(
            guide_subscriber(&ably, protocol(i), channel, None, WAIT)
                .await
                .unwrap(),
        );
    }
    let mut native_subs = Vec::new();
    for i in 0..3 {
        native_subs.push(
            Subscriber::attach(
                &ably,
                &format!("native-{i}"),
                channel,
                AttachOptions::default(),
            )
            .await
            .unwrap(),
        );
    }

    let guide_prompts: Vec<String> = (0..3).map(|i| format!("guide publisher {i}")).collect();
    let our_prompts: Vec<String> = (0..3).map(|i| format!("our publisher {i}")).collect();
    let guides: Vec<_> = guide_prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            let openai = &system.replay.base_url;
            let script =
                guide_publisher(&ably, protocol(i + 1), openai, channel, model, prompt).unwrap();
            tokio::spawn(finish_publisher(script))
        })
        .collect();
    let ours: Vec<_> = our_prompts
        .iter()
        .map(|prompt| {
            let (ably, openai, prompt) =
                (ably.clone(), system.replay.base_url.clone(), prompt.clone());
            tokio::spawn(async move { ask(&ably, &openai, model, channel, &prompt, &[]).await })
        })
        .collect();

    // serial -> (text, status) for all six answers.
    let mut expected: BTreeMap<String, (String, Status)> = BTreeMap::new();
    for (task, prompt) in guides.into_iter().zip(&guide_prompts) {
        let (serial, text) = task.await.unwrap();
        assert_eq!(text, synth_text(model, prompt), "{prompt}");
        expected.insert(serial, (text, Status::Streaming));
    }
    for (task, prompt) in ours.into_iter().zip(&our_prompts) {
        let report = task.await.unwrap().unwrap().report;
        assert_eq!(report.status, Status::Completed, "{prompt}: {report:?}");
        assert_eq!(report.text, synth_text(model, prompt), "{prompt}");
        expected.insert(
            report.serial.unwrap().as_str().to_owned(),
            (report.text, Status::Completed),
        );
    }
    assert_eq!(expected.len(), 6, "six distinct serials");
    let texts: BTreeSet<&String> = expected.values().map(|(t, _)| t).collect();
    assert_eq!(texts.len(), 6, "six distinct texts, so a mix would show");

    for (i, sub) in native_subs.iter_mut().enumerate() {
        for (serial, (text, status)) in &expected {
            native_sees(sub, serial, text, *status)
                .await
                .unwrap_or_else(|e| panic!("native-{i}: {e}"));
        }
        assert_eq!(sub.view.answer_count(), 6, "native-{i}");
        assert_all_match(&sub.view, &expected);
    }

    for (i, mut sub) in js_subs.into_iter().enumerate() {
        let mut state: BTreeMap<String, JsAnswer> = BTreeMap::new();
        let settled = |state: &BTreeMap<String, JsAnswer>| {
            expected.iter().all(|(serial, (text, status))| {
                state
                    .get(serial)
                    .is_some_and(|a| &a.text == text && a.status == status.as_str())
            })
        };
        sub.until(WAIT, "all six answers whole", |v| {
            if let Some(answer) = JsAnswer::from_value(v).filter(|_| v["event"] == "answer") {
                state.insert(answer.serial.clone(), answer);
            }
            settled(&state)
        })
        .await
        .unwrap_or_else(|e| panic!("js-{i}: {e}\nstate: {state:?}"));
        let strays: Vec<&str> = sub
            .events()
            .iter()
            .filter(|v| v["event"] == "message")
            .filter_map(|v| v["serial"].as_str())
            .filter(|s| !expected.contains_key(*s))
            .collect();
        assert!(
            strays.is_empty(),
            "js-{i}: messages of unknown answers: {strays:?}"
        );
        let answers = finish_subscriber(sub).await;
        assert_eq!(answers.len(), 6, "js-{i}: {answers:?}");
        for (serial, (text, status)) in &expected {
            let answer = &answers[serial];
            assert_eq!(
                (answer.text.as_str(), answer.status.as_str()),
                (text.as_str(), status.as_str()),
                "js-{i}: {serial}"
            );
        }
    }
    for sub in native_subs {
        sub.close().await;
    }
}

fn assert_all_match(view: &Assembler, expected: &BTreeMap<String, (String, Status)>) {
    for answer in view.answers() {
        let serial = answer.serial().as_str();
        let (text, status) = expected
            .get(serial)
            .unwrap_or_else(|| panic!("an answer nobody published: {serial}"));
        assert_eq!((answer.text(), answer.status()), (text.as_str(), *status));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_read_by_ably_js_holds_one_whole_message_per_answer() {
    let system = System::start().await;
    let ably = system.ably();
    let channel = "ai:interop-history";

    let ours = [
        (
            "synth:tokens=30,rate=0",
            "history: completed",
            Status::Completed,
        ),
        (
            "synth:tokens=30,rate=0,fault=incomplete@12",
            "history: incomplete",
            Status::Incomplete,
        ),
        (
            "synth:tokens=30,rate=0,fault=error@7",
            "history: failed",
            Status::Failed,
        ),
    ];
    let mut reports = Vec::new();
    for (model, prompt, status) in ours {
        let report = system.ask(channel, model, prompt).await.report;
        assert_eq!(report.status, status, "{model}: {report:?}");
        assert!(
            synth_text(model, prompt).starts_with(&report.text),
            "{model}: {report:?}"
        );
        reports.push((model, report));
    }
    let guide_model = "synth:tokens=30,rate=0";
    let (guide_serial, guide_text) = system
        .guide_publish(
            Protocol::MsgPack,
            channel,
            guide_model,
            "history: the guide",
        )
        .await;

    // Everything was ACKed before this point; if Sockudo stored history behind its ACKs, a
    // read could be stale, so it is read again (briefly) until it holds every final text.
    let finals: BTreeSet<String> = reports
        .iter()
        .map(|(_, r)| r.text.clone())
        .chain([guide_text.clone()])
        .collect();
    let mut reads = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let history = loop {
        reads += 1;
        let history = js_history(&ably, Protocol::MsgPack, channel).await.unwrap();
        let stored: BTreeSet<String> = history
            .iter()
            .filter_map(|m| m["data"].as_str().map(str::to_owned))
            .collect();
        if finals.is_subset(&stored) || tokio::time::Instant::now() >= deadline {
            break history;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if reads > 1 {
        eprintln!("history held every final text only at read {reads}");
    }
    // The same page over JSON.
    assert_eq!(
        js_history(&ably, Protocol::Json, channel).await.unwrap(),
        history,
        "history over JSON and over MessagePack"
    );
    let answers: Vec<&Value> = history
        .iter()
        .filter(|m| m["name"] == headers::ANSWER_NAME)
        .collect();
    assert_eq!(answers.len(), 4, "one message per answer: {history:?}");
    let by_serial = |serial: &str| -> &Value {
        let found: Vec<&&Value> = answers.iter().filter(|m| m["serial"] == serial).collect();
        assert_eq!(found.len(), 1, "{serial} in {history:?}");
        found[0]
    };

    for (model, report) in &reports {
        let serial = report.serial.as_ref().unwrap().as_str();
        let message = by_serial(serial);
        let headers = &message["headers"];
        assert_eq!(message["data"], report.text.as_str(), "{model}: {message}");
        assert_eq!(message["action"], "message.update", "{model}: {message}");
        assert_eq!(
            headers[headers::STATUS],
            report.status.as_str(),
            "{model}: {message}"
        );
        assert_eq!(headers[headers::SOURCE], "openai", "{model}: {message}");
        assert_eq!(headers[headers::MODEL], *model, "{model}: {message}");
        assert!(
            headers[headers::RESPONSE_ID]
                .as_str()
                .is_some_and(|id| id.starts_with("resp_synth_")),
            "{model}: {message}"
        );
        match report.status {
            Status::Incomplete => {
                assert_eq!(headers[headers::REASON], "max_output_tokens", "{message}");
                assert_eq!(report.detail.as_deref(), Some("max_output_tokens"));
            }
            Status::Failed => {
                assert_eq!(
                    headers[headers::ERROR].as_str(),
                    report.detail.as_deref(),
                    "{message}"
                );
                assert!(report.detail.is_some());
            }
            _ => {
                assert!(headers.get(headers::REASON).is_none(), "{message}");
                assert!(headers.get(headers::ERROR).is_none(), "{message}");
            }
        }
    }

    // The guide's answer: the whole text, no status (it sets no headers).
    let message = by_serial(&guide_serial);
    assert_eq!(guide_text, synth_text(guide_model, "history: the guide"));
    assert_eq!(message["data"], guide_text.as_str(), "{message}");
    assert!(
        message["headers"].get(headers::STATUS).is_none(),
        "{message}"
    );
}
