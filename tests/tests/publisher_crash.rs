//! A daemon that dies mid-answer, as a real process killed with SIGKILL, against a real
//! Sockudo: viewers see the answer stall once its lease lapses (from the channel's data
//! alone), and a restarted daemon or another replica ends it `failed` with its text so far,
//! within 30 s of the death. Issue 11, parts 1 and 2.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::Duration;

use publisher::ably::rest::unix_ms;
use publisher::replay::Synth;
use shared::connection::AttachOptions;
use shared::headers::{self, Status};
use shared::recovery::{self, PUBLISHER_LOST};
use shared::{lease, Serial};
use tests::harness::{history, named, prompt, Replay};
use tests::process::DaemonProcess;
use tests::realtime::Subscriber;
use tests::sockudo::Sockudo;

/// About 40 s of answer: still streaming when the daemon is killed.
const LONG: &str = "synth:tokens=800,rate=20";
/// How soon after the death the answer must be ended.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

async fn viewer(server: &Sockudo, channel: &str, options: AttachOptions) -> Subscriber {
    Subscriber::attach(&server.endpoint(), "viewer", channel, options)
        .await
        .unwrap()
}

/// Waits until the answer shows `min_len` bytes of text.
async fn streaming(viewer: &mut Subscriber, serial: &Serial, min_len: usize) {
    let found = viewer
        .until(Duration::from_secs(30), |view| {
            view.answer(serial)
                .is_some_and(|a| a.text().len() >= min_len)
        })
        .await;
    assert!(found, "answer {serial} never showed {min_len} bytes");
}

/// What a viewer sees of a publisher's death: the answer goes on saying `streaming`, its
/// lease lapses, then a final update ends it. Returns (seconds until it looked stalled,
/// seconds until it ended, its final text), timed from `died_ms`.
async fn watch_recovery(
    viewer: &mut Subscriber,
    serial: &Serial,
    died_ms: i64,
) -> (f64, f64, String) {
    let secs = |ms: i64| (ms - died_ms) as f64 / 1000.0;
    let mut stalled = None;
    loop {
        let answer = viewer.view.answer(serial).unwrap();
        let now = unix_ms();
        if answer.status().is_terminal() {
            let text = answer.text().to_owned();
            assert_eq!(answer.status(), Status::Failed);
            assert_eq!(answer.header(headers::ERROR), Some(PUBLISHER_LOST));
            let stalled = stalled.expect("the answer never looked stalled before it ended");
            return (secs(stalled), secs(now), text);
        }
        if stalled.is_none() && lease::is_lapsed(answer.headers(), now, Duration::ZERO) {
            stalled = Some(now);
        }
        assert!(
            now - died_ms < RECOVERY_LIMIT.as_millis() as i64,
            "not ended within {RECOVERY_LIMIT:?} of the death: {:?}",
            answer.headers()
        );
        viewer.until(Duration::from_millis(100), |_| false).await;
    }
}

/// The text ends as a prefix of the model's and holds at least what viewers had when the
/// publisher died; a rewind viewer and history agree with the live viewer.
async fn check_the_end(
    server: &Sockudo,
    channel: &str,
    serial: &Serial,
    text: &str,
    seen: usize,
    full: &str,
) {
    assert!(full.starts_with(text), "not the model's text: {text:?}");
    assert!(text.len() >= seen, "lost text: {} < {seen}", text.len());
    assert!(
        text.len() < full.len(),
        "the whole answer arrived; the kill came too late"
    );
    let mut late = viewer(server, channel, AttachOptions::rewind(10)).await;
    let ended = late
        .until(Duration::from_secs(10), |view| {
            view.answer(serial)
                .is_some_and(|a| a.status() == Status::Failed)
        })
        .await;
    assert!(ended, "a rewind viewer does not see the end");
    assert_eq!(late.view.answer(serial).unwrap().text(), text);
    let stored = history(&server.endpoint(), channel).await.unwrap();
    let answer = named(&stored, headers::ANSWER_NAME)
        .into_iter()
        .find(|m| m.serial.as_ref() == Some(serial))
        .expect("the answer is not in history");
    assert_eq!(answer.header(headers::STATUS), Some("failed"));
    assert_eq!(answer.text().unwrap(), text);
    late.close().await;
}

fn full_text(input: &str) -> String {
    Synth::for_request(LONG, Some(input))
        .unwrap()
        .unwrap()
        .text()
}

/// A real Sockudo and the replay server, with daemons started as processes against them.
struct Rig {
    server: Sockudo,
    replay: Replay,
}

impl Rig {
    async fn new() -> Self {
        Self {
            server: Sockudo::start().unwrap(),
            replay: Replay::start(Duration::from_millis(2)).await.unwrap(),
        }
    }

    async fn daemon(&self) -> DaemonProcess {
        DaemonProcess::start(&self.server.endpoint(), &self.replay.base_url, LONG, &[])
            .await
            .unwrap()
    }

    async fn live_viewer(&self, channel: &str) -> Subscriber {
        viewer(&self.server, channel, AttachOptions::default()).await
    }

    /// Starts a daemon, asks it for a long answer on `channel`, and SIGKILLs it once a live
    /// viewer shows some text. Gives the viewer, the answer, when it died and how many
    /// bytes the viewer had then.
    async fn kill_mid_answer(
        &self,
        channel: &str,
        input: &str,
    ) -> (Subscriber, Serial, i64, usize) {
        let daemon = self.daemon().await;
        let mut live = self.live_viewer(channel).await;
        let serial = prompt(&daemon.url, channel, input).await.unwrap();
        streaming(&mut live, &serial, 40).await;
        daemon.kill().await;
        let died = unix_ms();
        let seen = live.view.answer(&serial).unwrap().text().len();
        (live, serial, died, seen)
    }

    /// The ledger's history.
    async fn ledger(&self) -> Vec<shared::protocol::Message> {
        history(
            &self.server.endpoint(),
            recovery::ledger_channel("ai").as_str(),
        )
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_answer_and_restarted_ends_the_answer_failed_with_its_text() {
    let rig = Rig::new().await;
    let channel = "ai:crash-restart";
    let input = "tell me a long story";
    let (mut live, serial, died, seen) = rig.kill_mid_answer(channel, input).await;
    // systemd restarts it (deploy/publisher.service: RestartSec=2).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _second = rig.daemon().await;
    let (stalled, ended, text) = watch_recovery(&mut live, &serial, died).await;
    eprintln!(
        "restart: stalled after {stalled:.1} s, ended after {ended:.1} s, {} bytes",
        text.len()
    );
    assert!(
        stalled <= lease::DEFAULT_LEASE.as_secs_f64() + 1.5,
        "stalled after {stalled} s"
    );
    check_the_end(
        &rig.server,
        channel,
        &serial,
        &text,
        seen,
        &full_text(input),
    )
    .await;
    // The ledger closed the entry: nothing of it is left open.
    let ledger = rig.ledger().await;
    assert!(recovery::open_entries(&ledger).is_empty(), "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_of_two_replicas_dies_the_other_ends_its_answer() {
    let rig = Rig::new().await;
    let channel = "ai:crash-replicas";
    let doomed = rig.daemon().await;
    let survivor = rig.daemon().await;
    let mut live = rig.live_viewer(channel).await;
    let lost_input = "a story that will be cut";
    let kept_input = "a story that carries on";
    let lost = prompt(&doomed.url, channel, lost_input).await.unwrap();
    let kept = prompt(&survivor.url, channel, kept_input).await.unwrap();
    streaming(&mut live, &lost, 40).await;
    streaming(&mut live, &kept, 40).await;
    doomed.kill().await;
    let died = unix_ms();
    let seen = live.view.answer(&lost).unwrap().text().len();
    let (stalled, ended, text) = watch_recovery(&mut live, &lost, died).await;
    eprintln!(
        "replicas: stalled after {stalled:.1} s, ended after {ended:.1} s, {} bytes",
        text.len()
    );
    check_the_end(
        &rig.server,
        channel,
        &lost,
        &text,
        seen,
        &full_text(lost_input),
    )
    .await;
    // The survivor's own answer was never touched and completes whole.
    let kept_text = full_text(kept_input);
    let done = live
        .until(Duration::from_secs(60), |view| {
            view.answer(&kept)
                .is_some_and(|a| a.status() == Status::Completed)
        })
        .await;
    assert!(done, "the survivor's answer did not complete");
    assert_eq!(live.view.answer(&kept).unwrap().text(), kept_text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_while_it_recovers_leaves_the_next_one_to_end_the_answer_once() {
    let rig = Rig::new().await;
    let channel = "ai:crash-twice";
    let input = "a story told by three daemons";
    let (mut live, serial, died, seen) = rig.kill_mid_answer(channel, input).await;
    // The second daemon starts sweeping, finds the lease still running, and dies too.
    let second = rig.daemon().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.kill().await;
    let _third = rig.daemon().await;
    let (_, ended, text) = watch_recovery(&mut live, &serial, died).await;
    eprintln!("twice: ended after {ended:.1} s, {} bytes", text.len());
    check_the_end(
        &rig.server,
        channel,
        &serial,
        &text,
        seen,
        &full_text(input),
    )
    .await;
    let ledger = rig.ledger().await;
    let closed = named(&ledger, recovery::ENDED_NAME)
        .into_iter()
        .filter(|m| m.text().is_ok_and(|t| t.contains(channel)))
        .count();
    assert_eq!(closed, 1, "the entry was closed {closed} times");
    assert!(recovery::open_entries(&ledger).is_empty());
}
