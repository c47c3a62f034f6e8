//! A refused append is repaired: the answer runner, publishing through a wrapper that makes
//! the second append reuse the first one's message id (which Sockudo refuses), still
//! leaves every subscriber and history with the full text, by a full-text update.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use publisher::ably::{Published, Realtime};
use publisher::answer::{Job, Publish, Stop};
use publisher::cli::{Cli, Command};
use publisher::metrics::Metrics;
use publisher::openai::ResponseRequest;
use shared::connection::AttachOptions;
use shared::headers::Status;
use shared::ids::MessageId;
use shared::protocol::{Message, MessageAction};
use shared::ChannelName;
use tests::harness::{history, named, Replay};
use tests::realtime::Subscriber;
use tests::sockudo::{Sockudo, API_KEY};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_is_repaired_by_a_full_text_update() {
    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
    let channel = "ai:repair";
    let mut viewer = Subscriber::attach(
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
    let wrapper = ReuseIdOnSecondAppend {
        inner: parts.answers.realtime.clone(),
        appends: AtomicUsize::new(0),
    };
    let answers = parts.answers.clone().with_publish(Arc::new(wrapper));
    let job = Job {
        channel: ChannelName::from(channel),
        request: ResponseRequest {
            model: "00_seed_joke".to_owned(),
            input: "x".into(),
            instructions: None,
            max_output_tokens: None,
        },
        prompt: None,
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(Stop::No);
    let report = answers.run(job, stop, &mut ()).await;

    let joke = "Why don't scientists trust atoms? Because they make up everything.";
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        report.repairs, 1,
        "Sockudo refused the append with the reused id: {report:?}"
    );
    assert_eq!(report.publish_error, None, "{report:?}");
    let serial = report.serial.clone().unwrap();
    let done = viewer
        .until(Duration::from_secs(20), |view| {
            view.answer(&serial)
                .is_some_and(|a| a.status() == Status::Completed)
        })
        .await;
    assert!(done, "{:?}", viewer.log);
    assert_eq!(viewer.view.answer(&serial).unwrap().text(), joke);
    let history = history(&server.endpoint(), channel).await.unwrap();
    let answers = named(&history, "response");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].text().unwrap(), joke);
    viewer.close().await;
    parts.answers.realtime.close(Duration::from_secs(5)).await;
}
