//! Chaos: many long answers stream while a seeded proxy between every client and Sockudo
//! cuts connections (often in the middle of a WebSocket frame), stalls them and refuses
//! reconnects. The daemon's Ably connection and REST calls and every viewer go through the
//! proxy. When the network heals, every answer must be `completed` everywhere, and every
//! viewer's text must equal history's and the model's, character for character.
//!
//! `CHAOS_SEED` (default [`DEFAULT_SEED`]), `CHAOS_SECONDS` (default 50) and `CHAOS_ANSWERS`
//! (default 50) tune a run; `scripts/chaos` runs it long. A failure prints its seed and the
//! command that runs the same schedule again.
//!
//! The daemon runs with the default message rate (50 messages/s on its connection), as in
//! production: coalescing widens under load, so appends carry several words each and a cut
//! lands inside multi-word appends, while Sockudo and the viewers stay well within what two
//! cores can carry next to the test.
//!
//! The bug these tests found, kept as their reason to exist: when a connection resumed
//! after missing more than about 1,000 messages, Sockudo's per-connection outbound queue
//! (1,000 frames by default) overflowed while it replayed the gap, and it sent a
//! connection-level ERROR 90003 ("outbound queue overflow; recover the channel from
//! canonical history"), which the shared `Connection` took as fatal. The daemon hit it on
//! its first resume once its channels were busy: it publishes with `echo=false`, so it
//! re-attached from its attach serial and Sockudo replayed its own messages anyway. Now
//! the daemon attaches its channels live-only (no backlog on re-attach), a channel-class
//! connection error starts a fresh connection instead of failing, a failed connection is
//! replaced, and a final update lost with the connection is sent again.
//! `one_cut_after_a_busy_stretch_leaves_no_answer_behind` reproduces the original sequence
//! with one cut.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use publisher::ably::{Realtime, Subscription};
use publisher::replay::Synth;
use serde_json::{json, Value};
use shared::assembler::{Assembler, Change};
use shared::connection::{AttachOptions, ChannelState, ConnectionState, Event};
use shared::headers::{self, Status};
use shared::protocol::{Message, MessageAction};
use shared::{ChannelName, Serial};
use tests::harness::{history, Daemon, Replay};
use tests::proxy::{ChaosConfig, Proxy};
use tests::realtime::connect;
use tests::sockudo::Sockudo;
use tokio::sync::watch;
use tokio::time::Instant;

/// Long answers: 300 words at 10 a second, about 30 s each.
const MODEL: &str = "synth:tokens=300,rate=10";
/// How long one answer streams when nothing delays it.
const ANSWER_TIME: Duration = Duration::from_secs(30);
/// The schedule's seed when `CHAOS_SEED` is not set.
const DEFAULT_SEED: u64 = 0x00c0_ffee_5eed;
const DEFAULT_SECONDS: u64 = 50;
const DEFAULT_ANSWERS: usize = 50;
/// Answers per channel: with their prompts they fit one page of history (100 messages),
/// which is what a viewer reads to catch up.
const ANSWERS_PER_CHANNEL: usize = 25;
/// Viewers attached before the first prompt; one more joins later with rewind.
const EARLY_VIEWERS: usize = 4;
/// How long a prompt may take to be accepted.
const POST_TIMEOUT: Duration = Duration::from_secs(60);
/// After the chaos stops: how long the daemon and history may take to finish every answer,
/// then how long viewers may take to show them. A viewer refused twice waits about 15 s and
/// 20 s before its next tries (the connection's backoff), so both leave room for that.
const SETTLE: Duration = Duration::from_secs(60);
const VIEWER_WAIT: Duration = Duration::from_secs(45);
/// Tries at reading history (through the proxy) to catch up.
const CATCH_UP_TRIES: u32 = 10;

/// What a run is asked to do, from the environment.
struct Settings {
    seed: u64,
    seconds: u64,
    answers: usize,
}

impl Settings {
    fn from_env() -> Self {
        let seed = match std::env::var("CHAOS_SEED") {
            Ok(text) => parse_seed(&text)
                .unwrap_or_else(|| panic!("CHAOS_SEED={text:?} is not a number (decimal or 0x…)")),
            Err(_) => DEFAULT_SEED,
        };
        Self {
            seed,
            seconds: env_number("CHAOS_SECONDS", DEFAULT_SECONDS),
            answers: usize::try_from(env_number("CHAOS_ANSWERS", DEFAULT_ANSWERS as u64))
                .unwrap()
                .max(1),
        }
    }

    fn rerun(&self) -> String {
        format!(
            "CHAOS_SEED={:#x} CHAOS_SECONDS={} CHAOS_ANSWERS={} cargo test -p tests \
             --test chaos -- --exact \
             every_answer_survives_a_network_that_keeps_breaking --nocapture",
            self.seed, self.seconds, self.answers
        )
    }

    /// When the prompts go out: spread so that answers stream while the chaos lasts.
    fn post_window(&self) -> Duration {
        Duration::from_secs(self.seconds).saturating_sub(ANSWER_TIME + Duration::from_secs(5))
    }
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => text.replace('_', "").parse().ok(),
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// What one viewer saw of the network.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Connected → disconnected or suspended.
    drops: u64,
    /// Back to connected after a drop.
    reconnects: u64,
    /// Reconnects the server did not resume (a new connection).
    resume_failures: u64,
    /// Times the connection went `failed` (it does not come back by itself).
    failures: u64,
    /// Re-attaches without RESUMED: messages may have been missed.
    continuity_losses: u64,
    /// Of those, re-attaches after a reconnect (the channel was `attaching` before).
    losses_on_reattach: u64,
    /// History pages read and applied (after a loss, or on joining late).
    catch_ups: u64,
    catch_up_failures: u64,
    /// The same version of a message delivered more than once (the assembler absorbs it).
    duplicate_deliveries: u64,
    /// Gaps the assembler reported: an append that arrived before the one it follows (held
    /// until the gap filled) or that contradicted the text.
    gaps: u64,
    /// Moments when an answer's live text was not a prefix of the model's text.
    divergences: u64,
    /// Of those, with no open continuity loss for that answer: no loss on its channel since
    /// the last full version of the answer the viewer applied. Nothing explains them.
    unexplained_divergences: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.drops += other.drops;
        self.reconnects += other.reconnects;
        self.resume_failures += other.resume_failures;
        self.failures += other.failures;
        self.continuity_losses += other.continuity_losses;
        self.losses_on_reattach += other.losses_on_reattach;
        self.catch_ups += other.catch_ups;
        self.catch_up_failures += other.catch_up_failures;
        self.duplicate_deliveries += other.duplicate_deliveries;
        self.gaps += other.gaps;
        self.divergences += other.divergences;
        self.unexplained_divergences += other.unexplained_divergences;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "drops {}, reconnects {} (resumed {}, failed resumes {}), connection failures {}, \
             continuity losses {} ({} on re-attach), catch-ups {} ({} failed), duplicate \
             deliveries {}, gaps held {}, live divergences {} ({} unexplained)",
            self.drops,
            self.reconnects,
            self.reconnects.saturating_sub(self.resume_failures),
            self.resume_failures,
            self.failures,
            self.continuity_losses,
            self.losses_on_reattach,
            self.catch_ups,
            self.catch_up_failures,
            self.duplicate_deliveries,
            self.gaps,
            self.divergences,
            self.unexplained_divergences,
        )
    }
}

/// The continuity losses still open on one channel, as a viewer saw them.
#[derive(Debug, Default)]
struct OpenLosses {
    /// A loss was reported on the channel at some point.
    any: bool,
    /// Answers held at a loss that have had no full version since.
    answers: BTreeSet<Serial>,
    /// Answers that have had a full version applied: a loss before that is closed for them.
    repaired: BTreeSet<Serial>,
}

/// What the viewers must hold before they stop: these answers, terminal and whole.
struct Goal {
    answers: Vec<(String, Serial)>,
    deadline: Instant,
}

/// A native viewer on every channel over one connection (through the proxy), rebuilding
/// answers with the shared assembler and catching up from history when continuity is lost,
/// as the page does.
struct Viewer {
    name: String,
    endpoint: String,
    realtime: Realtime,
    events: Subscription,
    views: BTreeMap<String, Assembler>,
    /// Channels attached at least once (a later ATTACHED is a re-attach).
    attached: BTreeSet<String>,
    /// Per channel, the answers a continuity loss left open: those the viewer held when the
    /// loss was reported, until a full version of each is applied. Answers first seen after
    /// a loss are open too, until their first full version.
    open_losses: HashMap<String, OpenLosses>,
    /// Versions delivered so far, per answer: (serial, version serial).
    seen: HashSet<(String, String)>,
    /// The model's text for each prompt.
    expected: Arc<HashMap<String, String>>,
    connected_once: bool,
    dropped: bool,
    tally: Tally,
    /// The first few divergences, described.
    notes: Vec<String>,
}

impl Viewer {
    /// Connects through `endpoint` and attaches every channel with `options`.
    async fn join(
        name: &str,
        endpoint: &str,
        channels: &[String],
        options: &AttachOptions,
        expected: &Arc<HashMap<String, String>>,
    ) -> Result<Self, String> {
        let realtime = connect(endpoint, name, true)?;
        let events = realtime.subscribe();
        for channel in channels {
            let mut tries = 0;
            loop {
                match realtime
                    .attach(&ChannelName::from(channel.as_str()), options.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(err) if tries < 5 => {
                        eprintln!(
                            "{name}: attaching {channel} failed ({}); again",
                            err.message
                        );
                        tries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(err) => {
                        return Err(format!(
                            "{name} could not attach {channel}: {}",
                            err.message
                        ))
                    }
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            realtime,
            events,
            views: BTreeMap::new(),
            attached: BTreeSet::new(),
            open_losses: HashMap::new(),
            seen: HashSet::new(),
            expected: Arc::clone(expected),
            connected_once: false,
            dropped: false,
            tally: Tally::default(),
            notes: Vec::new(),
        })
    }

    /// Applies events until `goal` holds or its deadline passes (no goal yet: until one
    /// is set).
    async fn run(mut self, mut goal: watch::Receiver<Option<Arc<Goal>>>) -> Self {
        loop {
            let current = goal.borrow_and_update().clone();
            if let Some(current) = &current {
                // A failed connection does not come back by itself: no use waiting.
                if self.holds(current)
                    || self.tally.failures > 0
                    || Instant::now() >= current.deadline
                {
                    return self;
                }
            }
            let deadline = current.as_ref().map(|g| g.deadline);
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => return self,
                },
                changed = goal.changed() => if changed.is_err() { return self },
                () = sleep_until(deadline) => return self,
            }
        }
    }

    fn holds(&self, goal: &Goal) -> bool {
        goal.answers.iter().all(|(channel, serial)| {
            self.views
                .get(channel)
                .and_then(|view| view.answer(serial))
                .is_some_and(|a| a.status().is_terminal() && !a.is_partial())
        })
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::StateChanged {
                previous,
                current: ConnectionState::Failed,
                reason,
            } if previous != ConnectionState::Failed => {
                self.tally.failures += 1;
                let reason = reason.map(|r| format!("{} (code {})", r.message, r.code));
                self.note(format!("the connection failed: {reason:?}"));
            }
            Event::StateChanged {
                previous, current, ..
            } if previous != current => match current {
                ConnectionState::Disconnected | ConnectionState::Suspended
                    if self.connected_once && !self.dropped =>
                {
                    self.dropped = true;
                    self.tally.drops += 1;
                }
                ConnectionState::Connected => {
                    if self.dropped {
                        self.dropped = false;
                        self.tally.reconnects += 1;
                    }
                    self.connected_once = true;
                }
                _ => {}
            },
            Event::ResumeFailed { .. } => self.tally.resume_failures += 1,
            Event::ChannelStateChanged {
                channel,
                previous,
                current: ChannelState::Attached,
                resumed,
                ..
            } => {
                let channel = channel.as_str().to_owned();
                let first = self.attached.insert(channel.clone());
                if !first && !resumed {
                    self.tally.continuity_losses += 1;
                    if previous != ChannelState::Attached {
                        self.tally.losses_on_reattach += 1;
                    }
                    let held: BTreeSet<Serial> = self
                        .views
                        .get(&channel)
                        .map(|view| view.answers().map(|a| a.serial().clone()).collect())
                        .unwrap_or_default();
                    let open = self.open_losses.entry(channel.clone()).or_default();
                    open.answers.extend(held);
                    open.any = true;
                    self.catch_up(&channel).await;
                }
            }
            Event::Message { channel, message } => self.apply(channel.as_str(), &message),
            _ => {}
        }
    }

    /// Reads the channel's newest page of history through the proxy and applies it.
    async fn catch_up(&mut self, channel: &str) {
        for _ in 0..CATCH_UP_TRIES {
            match history(&self.endpoint, channel).await {
                Ok(mut page) => {
                    page.reverse();
                    for message in &page {
                        self.apply(channel, message);
                    }
                    self.tally.catch_ups += 1;
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        self.tally.catch_up_failures += 1;
    }

    fn apply(&mut self, channel: &str, message: &Message) {
        let view = self.views.entry(channel.to_owned()).or_default();
        if let (Some(serial), Some(version)) = (&message.serial, message.version_serial()) {
            let key = (serial.as_str().to_owned(), version.as_str().to_owned());
            if !self.seen.insert(key) {
                self.tally.duplicate_deliveries += 1;
            }
        }
        let changes = match view.apply(message) {
            Ok(changes) => changes,
            Err(err) => {
                self.note(format!("{channel}: the assembler refused a message: {err}"));
                return;
            }
        };
        self.tally.gaps += changes
            .iter()
            .filter(|c| matches!(c, Change::Gap { .. }))
            .count() as u64;
        let full = message.action() != MessageAction::APPEND;
        // Live, every whole answer's text must be a beginning of the model's text.
        let Some(serial) = &message.serial else {
            return;
        };
        let Some(answer) = view.answer(serial) else {
            return;
        };
        if answer.is_partial() {
            return;
        }
        let Some(prompt) = answer
            .header(headers::PROMPT)
            .and_then(|p| view.prompt(&Serial::from(p)))
        else {
            return;
        };
        let Some(expected) = self.expected.get(prompt.text()) else {
            return;
        };
        let open = self.open_losses.entry(channel.to_owned()).or_default();
        if full {
            // A full version repairs whatever the loss took from this answer.
            open.answers.remove(serial);
            open.repaired.insert(serial.clone());
        }
        if !expected.starts_with(answer.text()) {
            self.tally.divergences += 1;
            let explained =
                open.answers.contains(serial) || (open.any && !open.repaired.contains(serial));
            if !explained {
                self.tally.unexplained_divergences += 1;
            }
            let text = answer.text().to_owned();
            let expected = expected.clone();
            self.note(format!(
                "{channel} {serial}: live text is not a prefix of the model's ({}): {}",
                if explained {
                    "a continuity loss is still open for it"
                } else {
                    "no open continuity loss explains it"
                },
                difference(&expected, &text)
            ));
        }
    }

    fn note(&mut self, note: String) {
        if self.notes.len() < 10 {
            self.notes.push(note);
        }
    }
}

/// Where two texts first differ, with some text around it.
fn difference(expected: &str, actual: &str) -> String {
    let position = expected
        .chars()
        .zip(actual.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let around = |text: &str| -> String {
        text.chars()
            .skip(position.saturating_sub(20))
            .take(60)
            .collect()
    };
    format!(
        "first difference at char {position} (expected {} chars, got {}): \
         expected …{:?}…, got …{:?}…",
        expected.chars().count(),
        actual.chars().count(),
        around(expected),
        around(actual)
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One prompt posted to the daemon, and how it went.
struct Post {
    channel: String,
    input: String,
    /// The answer's serial (none while the daemon says it is pending) and the prompt's, or
    /// why the daemon did not accept it.
    outcome: Result<(Option<String>, Option<String>), String>,
    took: Duration,
}

async fn post(http: reqwest::Client, daemon: String, channel: String, input: String) -> Post {
    let started = Instant::now();
    let outcome = async {
        let response = http
            .post(format!("{daemon}/v1/prompts"))
            .json(&json!({"channel": channel, "input": input}))
            .timeout(POST_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.as_u16() != 202 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let serial = body["serial"].as_str().map(str::to_owned);
        if serial.is_none() && body["pending"] != true {
            return Err(format!("neither a serial nor pending: {body}"));
        }
        Ok((serial, body["prompt"].as_str().map(str::to_owned)))
    }
    .await;
    Post {
        channel,
        input,
        outcome,
        took: started.elapsed(),
    }
}

/// One counter from the daemon's Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn metrics(http: &reqwest::Client, daemon: &str) -> String {
    match http.get(format!("{daemon}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One channel's history, read straight from Sockudo: prompts and answers by serial.
#[derive(Default)]
struct Record {
    prompts: BTreeMap<String, String>,
    /// Serial → (text, status header, prompt header).
    answers: BTreeMap<String, (String, String, Option<String>)>,
    /// Serials that appear more than once.
    repeated: Vec<String>,
}

impl Record {
    async fn read(server: &str, channel: &str) -> Result<Self, String> {
        let page = history(server, channel).await?;
        let mut record = Self::default();
        for message in &page {
            let serial = message
                .serial
                .as_ref()
                .map_or("", Serial::as_str)
                .to_owned();
            let text = message.text().unwrap_or_default();
            let fresh = match message.name.as_deref() {
                Some(headers::PROMPT_NAME) => record.prompts.insert(serial.clone(), text).is_none(),
                Some(headers::ANSWER_NAME) => {
                    let status = message
                        .header(headers::STATUS)
                        .unwrap_or("streaming")
                        .to_owned();
                    let prompt = message.header(headers::PROMPT).map(str::to_owned);
                    record
                        .answers
                        .insert(serial.clone(), (text, status, prompt))
                        .is_none()
                }
                _ => true,
            };
            if !fresh {
                record.repeated.push(serial);
            }
        }
        Ok(record)
    }

    fn all_terminal(&self) -> bool {
        self.answers
            .values()
            .all(|(_, status, _)| Status::parse(status).is_some_and(Status::is_terminal))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_survives_a_network_that_keeps_breaking() {
    let settings = Settings::from_env();
    let seed = settings.seed;
    eprintln!(
        "chaos: seed {seed:#x}, {} s, {} answers of {MODEL}; the same schedule again: {}",
        settings.seconds,
        settings.answers,
        settings.rerun()
    );
    let began = Instant::now();

    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
    let proxy = Proxy::in_front_of(&server.endpoint()).await.unwrap();
    let capture = std::env::var("CHAOS_CAPTURE").ok();
    if let Some(path) = &capture {
        proxy.capture_to(std::path::Path::new(path)).unwrap();
    }
    let daemon = Daemon::start(
        &proxy.endpoint(),
        &replay.base_url,
        MODEL,
        &["--rate-limit-per-minute", "0"],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(20);
    loop {
        let health = http.get(format!("{}/healthz", daemon.url)).send().await;
        if health.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < ready, "the daemon never connected to Ably");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let channel_count = settings.answers.div_ceil(ANSWERS_PER_CHANNEL);
    let channels: Vec<String> = (0..channel_count)
        .map(|c| format!("ai:chaos-{c}"))
        .collect();
    let inputs: Vec<(String, String)> = (0..settings.answers)
        .map(|i| {
            let channel = channels[i % channel_count].clone();
            (
                channel,
                format!("Chaos question {i} of run {seed:#x}: a long story, please."),
            )
        })
        .collect();
    let expected: Arc<HashMap<String, String>> = Arc::new(
        inputs
            .iter()
            .map(|(_, input)| {
                let synth = Synth::for_request(MODEL, Some(input)).unwrap().unwrap();
                (input.clone(), synth.text())
            })
            .collect(),
    );

    let (goal_tx, goal_rx) = watch::channel::<Option<Arc<Goal>>>(None);
    let mut viewer_tasks = Vec::new();
    for k in 0..EARLY_VIEWERS {
        let viewer = Viewer::join(
            &format!("viewer-{k}"),
            &proxy.endpoint(),
            &channels,
            &AttachOptions::default(),
            &expected,
        )
        .await
        .unwrap();
        viewer_tasks.push(tokio::spawn(viewer.run(goal_rx.clone())));
    }
    let setup_took = began.elapsed();

    // The chaos, and the prompts spread over its first part.
    proxy.start_chaos(ChaosConfig::seeded(seed));
    let chaos_began = Instant::now();
    let window = settings.post_window();
    let count = u32::try_from(settings.answers).unwrap();
    let posts: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, (channel, input))| {
            let at = chaos_began + window * u32::try_from(i).unwrap() / count;
            let task = post(
                http.clone(),
                daemon.url.clone(),
                channel.clone(),
                input.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                task.await
            })
        })
        .collect();

    // A late joiner, halfway through the prompts: rewind, then a page of history (as the
    // page's "Load earlier").
    let mut problems: Vec<String> = Vec::new();
    tokio::time::sleep_until(chaos_began + (window / 2).max(Duration::from_secs(5))).await;
    match Viewer::join(
        "late",
        &proxy.endpoint(),
        &channels,
        &AttachOptions::rewind(100),
        &expected,
    )
    .await
    {
        Ok(mut late) => {
            for channel in &channels {
                late.catch_up(channel).await;
            }
            viewer_tasks.push(tokio::spawn(late.run(goal_rx.clone())));
        }
        Err(err) => problems.push(format!("the late viewer could not join: {err}")),
    }

    tokio::time::sleep_until(chaos_began + Duration::from_secs(settings.seconds)).await;
    proxy.stop_chaos();
    let chaos_took = chaos_began.elapsed();
    eprintln!("chaos stopped after {chaos_took:.1?}: {}", proxy.stats());

    let mut outcomes = Vec::new();
    for task in posts {
        outcomes.push(task.await.unwrap());
    }
    let accepted = outcomes.iter().filter(|p| p.outcome.is_ok()).count();
    for refused in outcomes.iter().filter(|p| p.outcome.is_err()) {
        eprintln!(
            "a prompt was not accepted after {:.1?} ({}: {:?}): {}",
            refused.took,
            refused.channel,
            refused.input,
            refused.outcome.as_ref().err().map_or("", String::as_str)
        );
    }

    // Until the daemon has ended every answer and history holds them all terminal.
    let settle_began = Instant::now();
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    let mut settled = false;
    while settle_began.elapsed() < SETTLE {
        let text = metrics(&http, &daemon.url).await;
        let started = metric(&text, "relay_answers_started_total");
        let ended: u64 = [
            "relay_answers_completed_total",
            "relay_answers_incomplete_total",
            "relay_answers_failed_total",
            "relay_answers_cancelled_total",
        ]
        .iter()
        .map(|name| metric(&text, name))
        .sum();
        records.clear();
        for channel in &channels {
            if let Ok(record) = Record::read(&server.endpoint(), channel).await {
                records.insert(channel.clone(), record);
            }
        }
        let answers: usize = records.values().map(|r| r.answers.len()).sum();
        if started == ended
            && records.len() == channels.len()
            && answers >= accepted
            && records.values().all(Record::all_terminal)
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_took = settle_began.elapsed();
    if !settled {
        let snapshot = daemon.state.answers.realtime.snapshot();
        let waiting = daemon.state.answers.describe().await;
        problems.push(format!(
            "the daemon and history did not settle within {SETTLE:?} after the chaos; its \
             connection is {} (blocked channels {:?}), and its session says:\n    {}",
            snapshot.state,
            snapshot.blocked,
            waiting.join("\n    ")
        ));
    }

    // History against the model, prompt by prompt.
    let mut completed = 0;
    for (channel, record) in &records {
        for serial in &record.repeated {
            problems.push(format!("{channel}: {serial} appears twice in history"));
        }
        let mut answered: HashMap<&str, Vec<&str>> = HashMap::new();
        for (serial, (text, status, prompt)) in &record.answers {
            if status != Status::Completed.as_str() {
                problems.push(format!(
                    "{channel} {serial}: history says `{status}`, not completed ({} chars)",
                    text.chars().count()
                ));
            } else {
                completed += 1;
            }
            let Some(prompt) = prompt else {
                problems.push(format!("{channel} {serial}: no prompt header"));
                continue;
            };
            answered.entry(prompt.as_str()).or_default().push(serial);
            let Some(input) = record.prompts.get(prompt) else {
                problems.push(format!(
                    "{channel} {serial}: its prompt {prompt} is not in history"
                ));
                continue;
            };
            match expected.get(input) {
                Some(model) if model == text => {}
                Some(model) => problems.push(format!(
                    "{channel} {serial}: history's text differs from the model's: {}",
                    difference(model, text)
                )),
                None => problems.push(format!("{channel} {serial}: answers {input:?}, not ours")),
            }
        }
        for (prompt, input) in &record.prompts {
            match answered.get(prompt.as_str()).map(Vec::len) {
                Some(1) => {}
                Some(n) => problems.push(format!("{channel}: prompt {input:?} has {n} answers")),
                None => problems.push(format!("{channel}: prompt {input:?} has no answer")),
            }
        }
    }
    for post in &outcomes {
        let record = records.get(&post.channel);
        match &post.outcome {
            Ok((Some(serial), _)) => {
                if !record.is_some_and(|r| r.answers.contains_key(serial)) {
                    problems.push(format!(
                        "{}: accepted answer {serial} to {:?} is not in history",
                        post.channel, post.input
                    ));
                }
            }
            // Pending: its answer is found by its prompt, and the prompt by its serial or,
            // when its ACK had not come either, by its text.
            Ok((None, prompt)) => {
                let answered = record.is_some_and(|r| {
                    let prompt = prompt.clone().or_else(|| {
                        r.prompts
                            .iter()
                            .find(|(_, text)| **text == post.input)
                            .map(|(serial, _)| serial.clone())
                    });
                    r.answers
                        .values()
                        .any(|(_, _, of)| of.is_some() && *of == prompt)
                });
                if !answered {
                    problems.push(format!(
                        "{}: the pending answer to {:?} (prompt {prompt:?}) is not in history",
                        post.channel, post.input
                    ));
                }
            }
            Err(_) => {}
        }
    }
    if completed == 0 {
        problems.push("no answer completed at all".to_owned());
    }

    // Every viewer against history.
    let goal = Goal {
        answers: records
            .iter()
            .flat_map(|(channel, record)| {
                record
                    .answers
                    .keys()
                    .map(|serial| (channel.clone(), Serial::from(serial.as_str())))
            })
            .collect(),
        deadline: Instant::now() + VIEWER_WAIT,
    };
    let viewers_began = Instant::now();
    goal_tx.send_replace(Some(Arc::new(goal)));
    let mut viewers = Vec::new();
    for task in viewer_tasks {
        viewers.push(task.await.unwrap());
    }
    let viewers_took = viewers_began.elapsed();
    let mut tally = Tally::default();
    for viewer in &viewers {
        tally.add(&viewer.tally);
        for (channel, record) in &records {
            let empty = Assembler::new();
            let view = viewer.views.get(channel).unwrap_or(&empty);
            for (serial, (text, status, _)) in &record.answers {
                let who = format!("{} {channel} {serial}", viewer.name);
                let Some(answer) = view.answer(&Serial::from(serial.as_str())) else {
                    problems.push(format!("{who}: never seen"));
                    continue;
                };
                if answer.status().as_str() != status {
                    problems.push(format!(
                        "{who}: `{}` here, `{status}` in history ({} of {} chars)",
                        answer.status(),
                        answer.text().chars().count(),
                        text.chars().count()
                    ));
                }
                if answer.is_partial() {
                    problems.push(format!("{who}: still partial"));
                }
                if answer.text() != text {
                    problems.push(format!(
                        "{who}: text differs from history's: {}",
                        difference(text, answer.text())
                    ));
                }
            }
            for answer in view.answers() {
                if !record.answers.contains_key(answer.serial().as_str()) {
                    problems.push(format!(
                        "{} {channel}: holds answer {} that history does not ({}, {} chars)",
                        viewer.name,
                        answer.serial(),
                        answer.status(),
                        answer.text().chars().count()
                    ));
                }
            }
            let prompts: BTreeSet<&str> = view.prompts().map(|p| p.serial().as_str()).collect();
            let recorded: BTreeSet<&str> = record.prompts.keys().map(String::as_str).collect();
            if prompts != recorded {
                problems.push(format!(
                    "{} {channel}: {} prompts, history has {}",
                    viewer.name,
                    prompts.len(),
                    recorded.len()
                ));
            }
        }
        let t = &viewer.tally;
        if t.unexplained_divergences > 0 || t.catch_up_failures > 0 || t.failures > 0 {
            problems.push(format!(
                "{}: {} live divergences no open continuity loss explains, {} failed \
                 catch-ups, {} connection failures: {}",
                viewer.name,
                t.unexplained_divergences,
                t.catch_up_failures,
                t.failures,
                viewer.notes.join("; ")
            ));
        }
        eprintln!("{}: {}", viewer.name, viewer.tally);
    }

    let health = http
        .get(format!("{}/healthz", daemon.url))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok();
    if health != Some(200) {
        problems.push(format!(
            "the daemon's /healthz says {health:?} at the end: its Ably connection is down"
        ));
    }
    let text = metrics(&http, &daemon.url).await;
    let daemon_completed = metric(&text, "relay_answers_completed_total");
    if daemon_completed != completed {
        problems.push(format!(
            "the daemon counts {daemon_completed} completed answers, history {completed}"
        ));
    }
    let stats = proxy.stats();
    let mut summary = String::new();
    let _ = write!(
        summary,
        "CHAOS seed={seed:#x} seconds={} answers={}: posts accepted {accepted}/{}, \
         answers completed {completed}, viewers {} | proxy: {stats} | viewers: {tally} | \
         daemon: healthz {health:?}, disconnects {}, reconnects {}, resume failures {}, \
         repairs {}, answers completed {daemon_completed} failed {} incomplete {} | took {:.0?} \
         (setup {:.0?}, chaos {:.0?}, settle {:.0?}, viewers {:.0?})",
        settings.seconds,
        settings.answers,
        outcomes.len(),
        viewers.len(),
        metric(&text, "relay_ably_disconnects_total"),
        metric(&text, "relay_ably_reconnects_total"),
        metric(&text, "relay_ably_resume_failures_total"),
        metric(&text, "relay_repairs_total"),
        metric(&text, "relay_answers_failed_total"),
        metric(&text, "relay_answers_incomplete_total"),
        began.elapsed(),
        setup_took,
        chaos_took,
        settle_took,
        viewers_took,
    );
    eprintln!("{summary}");

    if !problems.is_empty() {
        eprintln!("faults applied:");
        for fault in proxy.faults() {
            eprintln!("  {fault}");
        }
        eprintln!("Sockudo's log ends:\n{}", server.log_tail());
        let shown = problems.len().min(40);
        let capture = match &capture {
            Some(path) => format!("every frame is in {path}"),
            None => "CHAOS_CAPTURE=FILE records every frame through the proxy".to_owned(),
        };
        panic!(
            "{} problems under chaos seed {seed:#x} (first {shown}):\n  {}\nrun the same \
             schedule again with: {} ({capture})",
            problems.len(),
            problems[..shown].join("\n  "),
            settings.rerun()
        );
    }

    for viewer in viewers {
        viewer.realtime.close(Duration::from_secs(5)).await;
    }
    daemon.stop().await.unwrap();
}

/// The smallest sequence that ended answers `streaming` in the chaos runs, without
/// randomness: a channel gets busy (about 1,500 appends), then the daemon's connection is
/// cut once while an answer streams. The daemon must come back, finish that answer and
/// answer the next prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cut_after_a_busy_stretch_leaves_no_answer_behind() {
    // One append per word, unpaced: 15 answers of 100 words make ~1,500 messages quickly.
    const QUICK: &str = "synth:tokens=100,rate=50";
    let server = Sockudo::start().unwrap();
    let replay = Replay::start(Duration::from_millis(2)).await.unwrap();
    let proxy = Proxy::in_front_of(&server.endpoint()).await.unwrap();
    if let Ok(path) = std::env::var("CHAOS_CAPTURE") {
        proxy.capture_to(std::path::Path::new(&path)).unwrap();
    }
    let daemon = Daemon::start(
        &proxy.endpoint(),
        &replay.base_url,
        QUICK,
        &[
            "--rate-limit-per-minute",
            "0",
            "--ably-message-rate",
            "0",
            "--ably-channel-rate",
            "0",
            "--rollup-ms",
            "0",
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let channel = "ai:chaos-busy";
    let busy: Vec<_> = (0..15)
        .map(|i| {
            post(
                http.clone(),
                daemon.url.clone(),
                channel.to_owned(),
                format!("Busy question {i}"),
            )
        })
        .collect();
    for done in futures_util::future::join_all(busy).await {
        done.outcome.unwrap();
    }
    let completed = |n: u64| {
        let http = http.clone();
        let url = daemon.url.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if metric(&metrics(&http, &url).await, "relay_answers_completed_total") >= n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(completed(15).await, "the busy answers did not complete");

    // One more answer; cut every link (the daemon's too) while it streams.
    let input = "The answer that is streaming during the cut";
    let streaming = tokio::spawn(post(
        http.clone(),
        daemon.url.clone(),
        channel.to_owned(),
        input.to_owned(),
    ));
    let during = streaming.await.unwrap();
    let serial = during
        .outcome
        .unwrap()
        .0
        .expect("no cut yet: the create is ACKed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(proxy.cut_all() >= 1);

    // The daemon is back, its answer ends completed in history, and the next prompt works.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Ok(record) = Record::read(&server.endpoint(), channel).await {
            answer = record.answers.get(&serial).cloned();
            if answer
                .as_ref()
                .is_some_and(|(_, status, _)| status == "completed")
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let health = http
        .get(format!("{}/healthz", daemon.url))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok();
    let expected = Synth::for_request(QUICK, Some(input))
        .unwrap()
        .unwrap()
        .text();
    let (text, status, _) = answer.expect("the answer is in history");
    assert_eq!(
        (status.as_str(), health),
        ("completed", Some(200)),
        "after one cut the answer is left `{status}` with {} of {} chars and /healthz says \
         {health:?}; /metrics:\n{}",
        text.chars().count(),
        expected.chars().count(),
        metrics(&http, &daemon.url).await
    );
    assert_eq!(text, expected);
    let next = post(
        http.clone(),
        daemon.url.clone(),
        channel.to_owned(),
        "And one after the cut".to_owned(),
    )
    .await;
    next.outcome.unwrap();
    assert!(
        completed(17).await,
        "the prompt after the cut did not complete"
    );
    daemon.stop().await.unwrap();
}
