//! A refused publish costs as little as it can and never leaves a prompt without an answer.
//! The answer runner publishes through wrappers that make Sockudo, or the wrapper itself,
//! refuse appends and creates:
//! - an append that reuses another's id is repaired by one full-text update;
//! - a burst of refused appends (Sockudo refusing resent frames as reused ids after a
//!   resume) costs one repair, not one per refusal;
//! - a create refused although the server stored it is found on the channel by its id, and
//!   the answer goes on under its serial;
//! - a create refused for good ends the answer `failed` with a replacement create that
//!   carries the reason, so the prompt still has its answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use publisher::ably::{Published, Realtime};
use publisher::answer::{Answers, Job, Publish, Report, Stop};
use publisher::cli::{Cli, Command};
use publisher::metrics::Metrics;
use publisher::openai::ResponseRequest;
use shared::connection::{AttachOptions, PublishOutcome};
use shared::headers::Status;
use shared::ids::MessageId;
use shared::protocol::{ErrorInfo, Message, MessageAction};
use shared::ChannelName;
use tests::harness::{history, named, Replay};
use tests::realtime::Subscriber;
use tests::sockudo::{Sockudo, API_KEY};

const JOKE: &str = "Why don't scientists trust atoms? Because they make up everything.";

/// Sockudo's refusal of a resent frame whose first copy it stored (fixtures/sockudo).
fn reused_id() -> ErrorInfo {
    ErrorInfo::new(
        40000,
        400,
        "invalid input: message.id was already used with a different payload",
    )
}

/// Gives the first two appends the same message id.
struct ReuseIdOnSecondAppend {
    inner: Realtime,
    appends: AtomicUsize,
}

const APPEND_ID: &str = "repair-test-append:0";

impl Publish for ReuseIdOnSecondAppend {
    fn publish(&self, channel: &ChannelName, mut messages: Vec<Message>) -> Published {
        for message in &mut messages {
            if message.action == Some(MessageAction::APPEND)
                && self.appends.fetch_add(1, Ordering::SeqCst) < 2
            {
                message.id = Some(MessageId::new(APPEND_ID));
            }
        }
        self.inner.publish(channel, messages)
    }
}

/// Publishes every append for real, but answers appends 2 to 5 late, each with Sockudo's
/// reused-id refusal: one refusal arrives as each of appends 5 to 8 goes out, so that fresh
/// appends are sent between the refusals, as after a resume.
struct RefuseABurstOfAppends {
    inner: Realtime,
    appends: AtomicUsize,
    held: Mutex<std::collections::VecDeque<tokio::sync::oneshot::Sender<PublishOutcome>>>,
}

impl Publish for RefuseABurstOfAppends {
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        let is_append = messages[0].action == Some(MessageAction::APPEND);
        let n = if is_append {
            self.appends.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        let mut held = self.held.lock().unwrap();
        if (5..=8).contains(&n) {
            if let Some(tx) = held.pop_front() {
                let _ = tx.send(Err(reused_id()));
            }
        }
        if !(2..=5).contains(&n) {
            return self.inner.publish(channel, messages);
        }
        drop(self.inner.publish(channel, messages));
        let (tx, published) = Published::pending();
        held.push_back(tx);
        published
    }
}

/// Publishes the create for real but reports Sockudo's reused-id refusal for it.
struct StoreTheCreateButRefuseIt {
    inner: Realtime,
}

impl Publish for StoreTheCreateButRefuseIt {
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        let is_create = messages[0].action.is_none() && messages[0].id.is_some();
        let published = self.inner.publish(channel, messages);
        if !is_create {
            return published;
        }
        let (tx, refused) = Published::pending();
        tokio::spawn(async move {
            let _ = published.await;
            let _ = tx.send(Err(reused_id()));
        });
        refused
    }
}

/// Refuses the first create without publishing it.
struct RefuseTheCreate {
    inner: Realtime,
    refused: AtomicUsize,
}

impl Publish for RefuseTheCreate {
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        if messages[0].action.is_none() && self.refused.fetch_add(1, Ordering::SeqCst) == 0 {
            return Published::ready(Err(ErrorInfo::new(
                40160,
                401,
                "action not permitted by the key",
            )));
        }
        self.inner.publish(channel, messages)
    }
}

/// A daemon's answer runner on a real Sockudo, publishing through `wrap`, and a viewer.
struct Rig {
    server: Sockudo,
    _replay: Replay,
    answers: Answers,
    viewer: Subscriber,
    channel: &'static str,
}

impl Rig {
    async fn start(channel: &'static str) -> Self {
        let server = Sockudo::start().unwrap();
        let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
        let viewer = Subscriber::attach(
            &server.endpoint(),
            "viewer",
            channel,
            AttachOptions::default(),
        )
        .await
        .unwrap();
        let cli = Cli::try_parse_from([
            "publisher",
            "ask",
            "--ably-endpoint",
            &server.endpoint(),
            "--ably-api-key",
            API_KEY,
            "--openai-base-url",
            &replay.base_url,
            "--rollup-ms",
            "0",
            "x",
        ])
        .unwrap();
        let Command::Ask(args) = cli.command else {
            unreachable!()
        };
        let parts = publisher::setup::start(&args.ably, &args.openai, Arc::new(Metrics::default()))
            .await
            .unwrap();
        Self {
            server,
            _replay: replay,
            answers: parts.answers.clone(),
            viewer,
            channel,
        }
    }

    fn realtime(&self) -> Realtime {
        self.answers.realtime.clone()
    }

    async fn run(&self, publish: Arc<dyn Publish>) -> Report {
        self.run_model(publish, "00_seed_joke").await
    }

    async fn run_model(&self, publish: Arc<dyn Publish>, model: &str) -> Report {
        let answers = self.answers.clone().with_publish(publish);
        let job = Job {
            channel: ChannelName::from(self.channel),
            request: ResponseRequest::new(model, "x"),
            prompt: None,
        };
        let (_stop_tx, stop) = tokio::sync::watch::channel(Stop::No);
        answers.run(job, stop, &mut ()).await
    }

    /// Waits until the viewer holds a terminal answer, and returns its text and status;
    /// checks history holds exactly one answer message with the same text.
    async fn settled(&mut self) -> (String, Status) {
        let done = self
            .viewer
            .until(Duration::from_secs(20), |view| {
                view.answers().any(|a| a.status().is_terminal())
            })
            .await;
        assert!(done, "{:?}", self.viewer.log);
        let answers: Vec<_> = self.viewer.view.answers().collect();
        assert_eq!(answers.len(), 1, "one answer on the channel: {answers:?}");
        let (text, status) = (answers[0].text().to_owned(), answers[0].status());
        let history = history(&self.server.endpoint(), self.channel)
            .await
            .unwrap();
        let stored = named(&history, "response");
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].text().unwrap(), text);
        (text, status)
    }

    async fn close(self) {
        self.viewer.close().await;
        self.answers.realtime.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_is_repaired_by_a_full_text_update() {
    let mut rig = Rig::start("ai:repair").await;
    let report = rig
        .run(Arc::new(ReuseIdOnSecondAppend {
            inner: rig.realtime(),
            appends: AtomicUsize::new(0),
        }))
        .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        report.repairs, 1,
        "Sockudo refused the append with the reused id: {report:?}"
    );
    assert_eq!(report.publish_error, None, "{report:?}");
    assert_eq!(rig.settled().await, (JOKE.to_owned(), Status::Completed));
    rig.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_refused_appends_costs_one_repair() {
    let mut rig = Rig::start("ai:repair-burst").await;
    // Forty words at 50 a second: appends go on well after the burst.
    let report = rig
        .run_model(
            Arc::new(RefuseABurstOfAppends {
                inner: rig.realtime(),
                appends: AtomicUsize::new(0),
                held: Mutex::new(std::collections::VecDeque::new()),
            }),
            "synth:tokens=40,rate=50",
        )
        .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(report.appends > 10, "{report:?}");
    assert_eq!(report.repairs, 1, "four refusals, one repair: {report:?}");
    // Every ACK after the final update's is older than it: nothing is sent again.
    assert_eq!(report.resends, 0, "{report:?}");
    assert_eq!(report.publish_error, None, "{report:?}");
    assert_eq!(
        rig.settled().await,
        (report.text.clone(), Status::Completed)
    );
    rig.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refused_although_stored_is_found_by_its_id() {
    let mut rig = Rig::start("ai:repair-create-stored").await;
    let report = rig
        .run(Arc::new(StoreTheCreateButRefuseIt {
            inner: rig.realtime(),
        }))
        .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(report.serial.is_some(), "{report:?}");
    assert_eq!(report.publish_error, None, "{report:?}");
    assert_eq!(rig.settled().await, (JOKE.to_owned(), Status::Completed));
    rig.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refused_for_good_ends_failed_with_a_replacement_answer() {
    let mut rig = Rig::start("ai:repair-create-refused").await;
    let report = rig
        .run(Arc::new(RefuseTheCreate {
            inner: rig.realtime(),
            refused: AtomicUsize::new(0),
        }))
        .await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    assert!(
        report
            .publish_error
            .as_deref()
            .is_some_and(|e| e.contains("40160")),
        "{report:?}"
    );
    let (_, status) = rig.settled().await;
    assert_eq!(status, Status::Failed);
    let answer = rig.viewer.view.answers().next().unwrap();
    assert!(
        answer
            .header(shared::headers::ERROR)
            .is_some_and(|e| e.contains("action not permitted")),
        "{:?}",
        answer.headers()
    );
    rig.close().await;
}

/// Refuses every append with 93002, as Ably does on a namespace without the rule
/// "Message annotations, updates, deletes and appends" (Sockudo has no such rule to turn off).
struct NoAppendsRule {
    inner: Realtime,
    refuse: bool,
    probes: AtomicUsize,
}

impl Publish for NoAppendsRule {
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        if channel.as_str().ends_with(publisher::answer::PROBE_CHANNEL) {
            self.probes.fetch_add(1, Ordering::SeqCst);
        }
        if self.refuse && messages[0].action == Some(MessageAction::APPEND) {
            return Published::ready(Err(ErrorInfo::new(
                93002,
                400,
                "action not permitted: the channel has no mutable messages rule",
            )));
        }
        self.inner.publish(channel, messages)
    }
}

/// 93002 is found by a probe on the namespace before any model is called, and a "yes" is
/// remembered, so the probe runs once per namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_without_the_appends_rule_is_found_before_the_model_is_called() {
    let rig = Rig::start("ai:probe-rule").await;
    let channel = ChannelName::from("ai:probe-rule");
    let refusing = Arc::new(NoAppendsRule {
        inner: rig.realtime(),
        refuse: true,
        probes: AtomicUsize::new(0),
    });
    let answers = rig
        .answers
        .clone()
        .with_publish(Arc::clone(&refusing) as Arc<dyn Publish>);
    let err = answers.check_appends(&channel).await.unwrap_err();
    assert_eq!(err.code, 93002);
    let said = publisher::answer::describe_refusal(&err);
    assert!(said.contains("updates, deletes, and appends"), "{said}");
    assert_eq!(
        refusing.probes.load(Ordering::SeqCst),
        2,
        "a create and an append"
    );
    // Refused again next time: a "no" is not remembered (the rule may be turned on).
    assert!(answers.check_appends(&channel).await.is_err());
    assert_eq!(refusing.probes.load(Ordering::SeqCst), 4);

    // On Sockudo, which accepts appends everywhere, the probe says yes once per namespace.
    let passing = Arc::new(NoAppendsRule {
        inner: rig.realtime(),
        refuse: false,
        probes: AtomicUsize::new(0),
    });
    let plain = rig
        .answers
        .clone()
        .with_publish(Arc::clone(&passing) as Arc<dyn Publish>);
    plain.check_appends(&channel).await.unwrap();
    plain
        .check_appends(&ChannelName::from("ai:other"))
        .await
        .unwrap();
    assert_eq!(
        passing.probes.load(Ordering::SeqCst),
        2,
        "probed once for `ai`"
    );
    rig.close().await;
}

type HeldAppend = (Vec<Message>, tokio::sync::oneshot::Sender<PublishOutcome>);

/// Holds append 3 back and publishes it only after the final update, as a frame whose
/// outcome was lost with a connection and that was resent after a failed resume (RTN19a2)
/// would land.
struct LandAnAppendAfterTheEnd {
    inner: Realtime,
    appends: AtomicUsize,
    held: Mutex<Option<HeldAppend>>,
}

impl Publish for LandAnAppendAfterTheEnd {
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        let first = &messages[0];
        if first.action == Some(MessageAction::APPEND)
            && self.appends.fetch_add(1, Ordering::SeqCst) == 2
        {
            let (tx, published) = Published::pending();
            *self.held.lock().unwrap() = Some((messages, tx));
            return published;
        }
        let is_final = first.action == Some(MessageAction::UPDATE)
            && first.header(shared::headers::STATUS) == Some("completed");
        let published = self.inner.publish(channel, messages);
        if is_final {
            if let Some((held, tx)) = self.held.lock().unwrap().take() {
                let late = self.inner.publish(channel, held);
                tokio::spawn(async move {
                    let _ = tx.send(late.await);
                });
            }
        }
        published
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_lands_after_the_final_update_is_covered_by_sending_it_again() {
    let mut rig = Rig::start("ai:repair-late-append").await;
    let report = rig
        .run_model(
            Arc::new(LandAnAppendAfterTheEnd {
                inner: rig.realtime(),
                appends: AtomicUsize::new(0),
                held: Mutex::new(None),
            }),
            "synth:tokens=20,rate=200",
        )
        .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.resends, 1, "{report:?}");
    assert_eq!(report.publish_error, None, "{report:?}");
    // History and the viewer end on the whole text, not the text plus a stray fragment.
    assert_eq!(
        rig.settled().await,
        (report.text.clone(), Status::Completed)
    );
    rig.close().await;
}
