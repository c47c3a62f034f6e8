//! Runs one answer end to end: the OpenAI stream is read here and fed to the connection's
//! publisher session ([`shared::session`]), whose task ([`session`]) performs its
//! publishes over the shared Ably connection. Every publishing decision (pacing, repairs,
//! resends, the create's lookup, when the answer is over) is the session's; this module
//! opens and reads the model stream, forwards stops and reports.
//!
//! Reading stops once the session says the answer has ended, which also stops generation
//! on a cancel. A background response whose stream breaks is streamed again from its last
//! event, as [`shared::openai::Resumption`] decides, and never posted again.

mod session;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shared::connection::{errors, PublishOutcome};
use shared::headers::Status;
use shared::ids::MessageId;
use shared::lease::{Lease, UnixClock};
use shared::protocol::{ErrorInfo, Message, MessageAction};
use shared::recovery::{self, Entry};
use shared::relay::Continuation;
use shared::session::{AnswerId, AnswerSpec, Session, SessionConfig};
use shared::{ChannelName, Serial};
use tokio::sync::{mpsc, oneshot, watch};

use rand::Rng;

use crate::ably::rest::{unix_ms, Rest};
use crate::ably::{Published, Realtime, APPENDS_NOT_ENABLED};
use crate::metrics::Metrics;
use crate::openai::{OpenAi, OpenAiError, ResponseRequest, ResponseStream};
use session::{Command, Input, SessionTask, Update};
use shared::openai::{Resume, Resumption};

pub use shared::session::describe_refusal;

/// The channel, in each namespace, where [`Answers::check_appends`] probes for the rule.
pub const PROBE_CHANNEL: &str = "appends-probe";

/// The name of the probe's messages.
pub const PROBE_NAME: &str = "appends-probe";

/// How many of the channel's latest messages are searched for a create whose ACK was lost.
const CREATE_LOOKUP_LIMIT: u32 = 200;

/// Why an answer is asked to stop early.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Stop {
    /// Keep going.
    No,
    /// A user cancelled: the answer ends `cancelled`.
    Cancel,
    /// The daemon is shutting down: the answer ends `failed` saying so (or, a background
    /// answer, is handed over).
    Shutdown,
    /// Another daemon claimed the answer this one carries on: publish nothing more.
    Abandon,
}

/// The `error` header of answers cut short by a shutdown.
pub const SHUTDOWN_ERROR: &str = "the publisher shut down before the answer finished";

/// The `error` header of an answer whose task went away before its stream ended.
const ABANDONED_ERROR: &str = "the publisher stopped reading the answer's stream";

/// Where an answer's messages go: the connection itself, unless an embedder or a test wraps
/// it to observe or alter publishes.
pub trait Publish: Send + Sync + 'static {
    /// Publishes without waiting; the returned future gives the ACK or NACK.
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published;
}

impl Publish for Realtime {
    fn publish(&self, channel: &ChannelName, messages: Vec<Message>) -> Published {
        Realtime::publish(self, channel, messages)
    }
}

/// What every answer of one process shares: the connection, the model client, the
/// publisher session (started with the first answer), the metrics.
#[derive(Clone)]
pub struct Answers {
    pub realtime: Realtime,
    pub openai: OpenAi,
    pub metrics: Arc<Metrics>,
    /// The publisher-side coalescing window when the budget does not ask for more.
    pub window: Duration,
    /// The `source` header of every answer.
    pub source: String,
    rate: u32,
    channel_rate: u32,
    publish: Arc<dyn Publish>,
    find: Option<Arc<dyn FindMessage>>,
    /// The session task's commands, once started.
    session: Arc<OnceLock<mpsc::UnboundedSender<Command>>>,
    /// Names every create this process publishes: `<prefix>-answer-<n>`.
    create_ids: Arc<(String, AtomicU64)>,
    /// Namespaces whose channels were seen to accept appends.
    appends_ok: Arc<Mutex<HashSet<String>>>,
    active: Arc<AtomicUsize>,
    /// How long each answer's liveness lease lasts, if it keeps one.
    lease: Option<Duration>,
    /// Where answers in flight are recorded for a sweeper ([`shared::recovery`]), if
    /// anywhere.
    ledger: Option<ChannelName>,
    /// The creates of this process's answers in flight, which its own sweeper leaves alone.
    running: Arc<Mutex<HashSet<MessageId>>>,
    /// The answers this process carries on: the id of its claim and how to stop it.
    carrying: Arc<Mutex<HashMap<MessageId, Carried>>>,
}

/// An answer this process carries on: the id of its claim, and the stop that gives it up.
type Carried = (MessageId, watch::Sender<Stop>);

/// One answer to stream.
#[derive(Clone, Debug)]
pub struct Job {
    pub channel: ChannelName,
    pub request: ResponseRequest,
    /// The prompt message this answer responds to, if it was published.
    pub prompt: Option<Serial>,
}

/// How an answer went: the session's report, with the model request's retries.
pub use shared::session::Report;

/// A report of an answer that never reached the session.
fn failed_report(error: &str) -> Report {
    Report {
        serial: None,
        status: Status::Failed,
        text: String::new(),
        detail: None,
        publish_error: Some(error.to_owned()),
        appends: 0,
        messages: 0,
        repairs: 0,
        resends: 0,
        gave_up: false,
        retries: 0,
    }
}

/// Observes an answer while it runs.
pub trait Observer: Send {
    /// The create was ACKed (`Ok(serial)`) or refused.
    fn created(&mut self, _result: Result<&Serial, &str>) {}
    /// The answer's text so far, after each stream event that changed it (only when
    /// [`Observer::wants_text`] says so, since it costs a copy of the text).
    fn text(&mut self, _text: &str) {}
    /// Whether [`Observer::text`] is wanted.
    fn wants_text(&self) -> bool {
        false
    }
}

impl Observer for () {}

/// Delivers the serial (or the refusal) to whoever waits for it, once.
impl Observer for Option<oneshot::Sender<Result<Serial, String>>> {
    fn created(&mut self, result: Result<&Serial, &str>) {
        if let Some(tx) = self.take() {
            let _ = tx.send(result.cloned().map_err(str::to_owned));
        }
    }
}

/// Finds a message on a channel by its id: how a create whose ACK was lost, or that a
/// server refused as a reused id although it had stored it, is found again.
pub trait FindMessage: Send + Sync + 'static {
    /// The serial of the message with this id among the channel's latest messages.
    fn find(
        &self,
        channel: &ChannelName,
        id: &MessageId,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Serial>, String>> + Send>>;
}

impl FindMessage for Rest {
    fn find(
        &self,
        channel: &ChannelName,
        id: &MessageId,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Serial>, String>> + Send>> {
        let rest = self.clone();
        let channel = channel.clone();
        let id = id.clone();
        Box::pin(async move {
            let history = rest
                .history(&channel, CREATE_LOOKUP_LIMIT)
                .await
                .map_err(|e| e.to_string())?;
            Ok(history
                .into_iter()
                .find(|message| message.id.as_ref() == Some(&id))
                .and_then(|message| message.serial))
        })
    }
}

impl Answers {
    /// Shares `realtime` and `openai` among answers, publishing at most `rate` messages per
    /// second on the connection (0 = unlimited) with a base window of `window`.
    pub fn new(
        realtime: Realtime,
        openai: OpenAi,
        metrics: Arc<Metrics>,
        window: Duration,
        rate: u32,
        source: &str,
    ) -> Self {
        Self {
            publish: Arc::new(realtime.clone()),
            find: None,
            session: Arc::new(OnceLock::new()),
            create_ids: Arc::new((
                format!("{:016x}", rand::rng().random::<u64>()),
                AtomicU64::new(0),
            )),
            realtime,
            openai,
            metrics,
            window,
            rate,
            channel_rate: 0,
            source: source.to_owned(),
            appends_ok: Arc::new(Mutex::new(HashSet::new())),
            active: Arc::new(AtomicUsize::new(0)),
            lease: None,
            ledger: None,
            running: Arc::new(Mutex::new(HashSet::new())),
            carrying: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Keeps a liveness lease of `lease` on every answer ([`shared::lease`]), or none.
    pub fn with_lease(mut self, lease: Option<Duration>) -> Self {
        self.lease = lease;
        self.session = Arc::new(OnceLock::new());
        self
    }

    /// Records every answer in flight on `ledger`, so that a sweeper ends it if this
    /// process dies ([`shared::recovery`]).
    pub fn with_ledger(mut self, ledger: ChannelName) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The ledger channel, if answers are recorded.
    pub fn ledger(&self) -> Option<&ChannelName> {
        self.ledger.as_ref()
    }

    /// Whether the answer created with `id` is streaming in this process.
    pub fn is_running(&self, id: &MessageId) -> bool {
        self.running
            .lock()
            .is_ok_and(|running| running.contains(id))
    }

    /// Sends answers' messages through `publish` instead of straight to the connection
    /// (with a session of their own).
    pub fn with_publish(mut self, publish: Arc<dyn Publish>) -> Self {
        self.publish = publish;
        self.session = Arc::new(OnceLock::new());
        self.active = Arc::new(AtomicUsize::new(0));
        self
    }

    /// Publishes at most `rate` messages per second on any one channel (0 = unlimited).
    pub fn with_channel_rate(mut self, rate: u32) -> Self {
        self.channel_rate = rate;
        self.session = Arc::new(OnceLock::new());
        self
    }

    /// Publishes a message that is no answer's (a prompt, a cancel) under the same budgets
    /// as the answers, and waits for its ACK or NACK.
    /// A message without an id gets one, so that a post whose outcome is unclear is found
    /// on the channel rather than called refused while it is there.
    /// The post is handed to the session at once, before the returned future is polled,
    /// so posts and answers started one after another reach the session in that order.
    pub fn post(
        &self,
        channel: &ChannelName,
        mut message: Message,
    ) -> impl Future<Output = PublishOutcome> + Send + 'static {
        if message.id.is_none() {
            let (prefix, counter) = &*self.create_ids;
            let n = counter.fetch_add(1, Ordering::Relaxed);
            message.id = Some(MessageId::new(format!("{prefix}-post-{n}")));
        }
        let (reply, outcome) = oneshot::channel();
        let post = Command::Post {
            channel: channel.clone(),
            message: Box::new(message),
            reply,
        };
        let stopped = || {
            ErrorInfo::new(
                errors::CONNECTION_CLOSED,
                500,
                "the publisher session stopped",
            )
        };
        let sent = self.session().send(post).is_ok();
        async move {
            if !sent {
                return Err(stopped());
            }
            outcome.await.unwrap_or_else(|_| Err(stopped()))
        }
    }

    /// Searches the channel for a create whose ACK was lost or refused by mistake.
    pub fn with_find(mut self, find: Arc<dyn FindMessage>) -> Self {
        self.find = Some(find);
        self.session = Arc::new(OnceLock::new());
        self.active = Arc::new(AtomicUsize::new(0));
        self
    }

    fn next_create_id(&self) -> MessageId {
        let (prefix, counter) = &*self.create_ids;
        let n = counter.fetch_add(1, Ordering::Relaxed);
        MessageId::new(format!("{prefix}-answer-{n}"))
    }

    /// The session task's commands, starting it on first use.
    fn session(&self) -> &mpsc::UnboundedSender<Command> {
        self.session.get_or_init(|| {
            let (commands, command_rx) = mpsc::unbounded_channel();
            let epoch = tokio::time::Instant::now();
            let lease = self.lease.map(|duration| Lease {
                duration,
                clock: UnixClock::new(unix_ms()),
            });
            let task = SessionTask {
                session: Session::new(SessionConfig {
                    window: self.window,
                    rate: self.rate,
                    channel_rate: self.channel_rate,
                    source: self.source.clone(),
                    max_message_size: Some(self.realtime.snapshot().limits.max_message_size),
                    lookups: self.find.is_some(),
                    lease,
                    ..SessionConfig::default()
                }),
                commands: command_rx,
                publish: Arc::clone(&self.publish),
                find: self.find.clone(),
                snapshot: self.realtime.watch(),
                metrics: Arc::clone(&self.metrics),
                active: Arc::clone(&self.active),
                epoch,
            };
            tokio::spawn(task.run());
            commands
        })
    }

    /// Whether `channel`'s namespace accepts appends, found before any model is called: a
    /// probe message is created and appended to on a channel of the same namespace
    /// (`<namespace>:appends-probe`), since Ably sets the rule per namespace. Only a refusal
    /// with 93002 is an answer of "no"; anything else (no connection, another refusal) is
    /// left to the answer itself to report. A "yes" is remembered per namespace.
    pub async fn check_appends(&self, channel: &ChannelName) -> Result<(), ErrorInfo> {
        let namespace = channel
            .as_str()
            .split_once(':')
            .map_or("", |(namespace, _)| namespace)
            .to_owned();
        if self
            .appends_ok
            .lock()
            .is_ok_and(|known| known.contains(&namespace))
        {
            return Ok(());
        }
        let probe = ChannelName::from(if namespace.is_empty() {
            PROBE_CHANNEL.to_owned()
        } else {
            format!("{namespace}:{PROBE_CHANNEL}")
        });
        let message = |action, serial| Message {
            name: Some(PROBE_NAME.to_owned()),
            data: Some(serde_json::Value::String(PROBE_NAME.to_owned())),
            action,
            serial,
            ..Message::default()
        };
        let created = self
            .publish
            .publish(&probe, vec![message(None, None)])
            .await;
        let Some(serial) = created.ok().and_then(|s| s.into_iter().next().flatten()) else {
            return Ok(());
        };
        let appended = self
            .publish
            .publish(
                &probe,
                vec![message(Some(MessageAction::APPEND), Some(serial))],
            )
            .await;
        match appended {
            Err(err) if err.code == APPENDS_NOT_ENABLED => Err(err),
            Err(err) => {
                tracing::debug!(%probe, error = %err.message, code = err.code, "the appends probe was refused; not conclusive");
                Ok(())
            }
            Ok(_) => {
                if let Ok(mut known) = self.appends_ok.lock() {
                    known.insert(namespace);
                }
                Ok(())
            }
        }
    }

    /// Each running answer and what it is waiting for, in words (empty once the session
    /// has stopped).
    pub async fn describe(&self) -> Vec<String> {
        let (reply, described) = oneshot::channel();
        if self.session().send(Command::Describe { reply }).is_err() {
            return Vec::new();
        }
        described.await.unwrap_or_default()
    }

    /// How many answers are streaming or draining now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Streams one answer until it ends (or `stop` says so), reporting to `observer`.
    pub async fn run(
        &self,
        job: Job,
        mut stop: watch::Receiver<Stop>,
        observer: &mut dyn Observer,
    ) -> Report {
        self.metrics.answers_started.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            channel: job.channel.clone(),
            id: self.next_create_id(),
        };
        let _in_flight = self.record_begun(&entry);
        let openai = self.openai.clone();
        let request = job.request.clone();
        let opening: Opening = Box::pin(async move { openai.stream(&request).await });
        let spec = AnswerSpec {
            channel: job.channel.clone(),
            prompt: job.prompt.clone(),
            create_id: entry.id.clone(),
        };
        let report = self
            .stream(spec, None, opening, &entry, &mut stop, observer)
            .await;
        // An answer whose end may not have reached the channel, or that was handed over,
        // stays open for a sweeper, which closes the entry if the channel shows the end.
        if report.publish_error.is_none() && !report.gave_up && report.status.is_terminal() {
            self.record(&entry.ended()).await;
        }
        report
    }

    /// This process's name on the ledger's claims.
    pub fn process_id(&self) -> &str {
        &self.create_ids.0
    }

    /// Carries on `entry`'s answer, which another publisher left after streaming it as far
    /// as `from` says: background response `response_id` is streamed again from its start
    /// and its events after `from.through` appended to the same message. The answer counts
    /// as running here at once, before the returned future is polled, so this process's
    /// sweeper leaves it alone; its entry is closed at its end.
    pub fn carry_on(
        &self,
        entry: Entry,
        claim: MessageId,
        response_id: String,
        from: Continuation,
    ) -> impl Future<Output = Report> + Send + 'static {
        if let Ok(mut running) = self.running.lock() {
            running.insert(entry.id.clone());
        }
        let (stopper, mut stop) = watch::channel(Stop::No);
        if let Ok(mut carrying) = self.carrying.lock() {
            carrying.insert(entry.id.clone(), (claim, stopper));
        }
        let carrying = Arc::clone(&self.carrying);
        let in_flight = Running {
            running: Arc::clone(&self.running),
            id: entry.id.clone(),
        };
        let answers = self.clone();
        async move {
            let _in_flight = in_flight;
            answers
                .metrics
                .answers_started
                .fetch_add(1, Ordering::Relaxed);
            let openai = answers.openai.clone();
            let opening: Opening = Box::pin(async move { openai.resume(&response_id, None).await });
            let spec = AnswerSpec {
                channel: entry.channel.clone(),
                prompt: from
                    .headers
                    .get(shared::headers::PROMPT)
                    .map(|prompt| Serial::new(prompt.clone())),
                create_id: entry.id.clone(),
            };
            // Only a newer claim stops a carried-on answer (`Answers::abandon`); a shutdown
            // leaves it to the next sweeper, as it found it.
            let report = answers
                .stream(spec, Some(from), opening, &entry, &mut stop, &mut ())
                .await;
            if let Ok(mut carrying) = carrying.lock() {
                carrying.remove(&entry.id);
            }
            if report.publish_error.is_none() && !report.gave_up && report.status.is_terminal() {
                answers.record(&entry.ended()).await;
            }
            report
        }
    }

    /// The answers this process carries on, each with the id of its claim.
    pub fn carrying(&self) -> Vec<(MessageId, MessageId)> {
        self.carrying.lock().map_or_else(
            |_| Vec::new(),
            |carrying| {
                carrying
                    .iter()
                    .map(|(entry, (claim, _))| (entry.clone(), claim.clone()))
                    .collect()
            },
        )
    }

    /// Stops carrying on the answer created as `entry`: another daemon claimed it since.
    pub fn abandon(&self, entry: &MessageId) {
        if let Ok(carrying) = self.carrying.lock() {
            if let Some((_, stop)) = carrying.get(entry) {
                let _ = stop.send(Stop::Abandon);
            }
        }
    }

    /// Records `entry` on the ledger (if there is one). The post reaches the session before
    /// the answer's start, so its frame goes out ahead of the create on the same connection,
    /// without waiting a round trip for its ACK; the guard forgets the answer here when
    /// dropped.
    fn record_begun(&self, entry: &Entry) -> Running {
        if let Ok(mut running) = self.running.lock() {
            running.insert(entry.id.clone());
        }
        tokio::spawn(self.record(&entry.begun()));
        Running {
            running: Arc::clone(&self.running),
            id: entry.id.clone(),
        }
    }

    /// Posts one ledger message; a failure costs only the record (the lease still shows the
    /// answer stalled if this process dies), so it is logged, not fatal.
    fn record(&self, message: &Message) -> impl Future<Output = ()> + Send + 'static {
        let posted = self
            .ledger
            .as_ref()
            .map(|ledger| (ledger.clone(), self.post(ledger, message.clone())));
        async move {
            let Some((ledger, posted)) = posted else {
                return;
            };
            if let Err(err) = posted.await {
                tracing::warn!(%ledger, error = %err.message, code = err.code, "could not record an answer on the ledger");
            }
        }
    }

    /// Streams the model's answer from `opening` into the answer `spec` (or `from`, carried
    /// on), until it ends.
    async fn stream(
        &self,
        spec: AnswerSpec,
        from: Option<Continuation>,
        mut opening: Opening,
        entry: &Entry,
        stop: &mut watch::Receiver<Stop>,
        observer: &mut dyn Observer,
    ) -> Report {
        let channel = spec.channel.clone();
        let carried_on = from.is_some();
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + recovery::REFRESH_EVERY,
            recovery::REFRESH_EVERY,
        );
        let (updates_tx, mut updates) = mpsc::unbounded_channel();
        let (reply, id) = oneshot::channel();
        let start = Command::Start {
            spec,
            updates: updates_tx,
            reply,
            text: observer.wants_text(),
            from,
        };
        let commands = self.session().clone();
        if commands.send(start).is_err() {
            return failed_report("the publisher session stopped");
        }
        let Ok(answer) = id.await else {
            return failed_report("the publisher session stopped");
        };
        let mut feed = Feed {
            commands,
            answer,
            done: false,
        };

        let mut resumption = Resumption::new();
        // A carried-on answer's first stream is already a resumed one.
        let mut resuming = carried_on;
        let mut stream: Option<ResponseStream> = None;
        let mut opened = false;
        let mut stop_open = true;
        let mut reading = true;
        let mut retries = 0;
        loop {
            tokio::select! {
                _ = refresh.tick(), if self.ledger.is_some() => {
                    tokio::spawn(self.record(&entry.begun()));
                }
                update = updates.recv() => match update {
                    Some(Update::Created(result)) => {
                        observer.created(result.as_ref().map_err(String::as_str));
                    }
                    Some(Update::Text(text)) => observer.text(&text),
                    Some(Update::StopStream) => {
                        // The answer has ended: stop reading (and so stop generation).
                        reading = false;
                        stream = None;
                    }
                    Some(Update::Ended(report)) => {
                        feed.done = true;
                        return Report { retries, ..report };
                    }
                    None => {
                        feed.done = true;
                        return failed_report("the publisher session stopped");
                    }
                },
                changed = stop.changed(), if reading && stop_open => {
                    stop_open = changed.is_ok();
                    let reason = if stop_open { *stop.borrow() } else { Stop::No };
                    match reason {
                        Stop::No => {}
                        Stop::Cancel => feed.send(Input::Cancel),
                        // A background answer outlives this process: the next daemon's
                        // sweeper carries it on once its lease lapses.
                        Stop::Shutdown if resumption.is_background() && self.ledger.is_some() && self.lease.is_some() => {
                            tracing::info!(%channel, "handing a background answer over to the next daemon");
                            feed.send(Input::HandOver);
                        }
                        Stop::Shutdown => feed.send(Input::Error(SHUTDOWN_ERROR.to_owned())),
                        Stop::Abandon => {
                            tracing::warn!(%channel, "another daemon claimed the answer; stopping");
                            feed.send(Input::Abandon);
                        }
                    }
                    if reason != Stop::No {
                        reading = false;
                        stream = None;
                    }
                }
                result = &mut opening, if reading && !opened => {
                    opened = true;
                    match result {
                        Ok(s) => {
                            if !resuming {
                                retries = s.retries();
                            }
                            stream = Some(s);
                        }
                        Err(err) => {
                            tracing::warn!(channel = %channel, error = %err, resuming, "the model request failed");
                            reading = false;
                            feed.send(Input::Error(if resuming {
                                format!("the model stream broke and could not be continued: {err}")
                            } else {
                                err.to_string()
                            }));
                        }
                    }
                }
                item = next_event(&mut stream), if reading && stream.is_some() => match item {
                    Some(Ok(event)) => {
                        if resumption.accept(&event) {
                            feed.send(Input::Event(event));
                        }
                    }
                    Some(Err(err)) if !err.is_fatal() => {
                        tracing::warn!(channel = %channel, error = %err, "skipped a malformed stream event");
                    }
                    broken => {
                        stream = None;
                        if let Some(resume) = resumption.on_break() {
                            tracing::info!(
                                channel = %channel,
                                response = %resume.response_id,
                                after = resume.starting_after,
                                attempt = resume.attempt,
                                "the model stream broke; continuing the background response"
                            );
                            opening = resume_stream(self.openai.clone(), resume);
                            opened = false;
                            resuming = true;
                            continue;
                        }
                        reading = false;
                        match broken {
                            Some(Err(err)) => {
                                tracing::warn!(channel = %channel, error = %err, "the model stream failed");
                                feed.send(Input::Error(err.to_string()));
                            }
                            _ => feed.send(Input::End),
                        }
                    }
                },
            }
        }
    }
}

/// An answer in flight in this process, forgotten when dropped.
struct Running {
    running: Arc<Mutex<HashSet<MessageId>>>,
    id: MessageId,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.id);
        }
    }
}

/// Feeds one answer's stream to the session; if the answer's task goes away before the
/// answer ended, the session is told, so the answer still ends for its viewers.
struct Feed {
    commands: mpsc::UnboundedSender<Command>,
    answer: AnswerId,
    done: bool,
}

impl Feed {
    fn send(&self, input: Input) {
        let _ = self.commands.send(Command::Stream {
            answer: self.answer,
            input,
        });
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if !self.done {
            self.send(Input::Error(ABANDONED_ERROR.to_owned()));
        }
    }
}

/// A model stream being opened.
type Opening = Pin<Box<dyn Future<Output = Result<ResponseStream, OpenAiError>> + Send>>;

/// Opens a broken background response's stream again after `resume.delay`.
fn resume_stream(openai: OpenAi, resume: Resume) -> Opening {
    Box::pin(async move {
        tokio::time::sleep(resume.delay).await;
        openai
            .resume(&resume.response_id, Some(resume.starting_after))
            .await
    })
}

async fn next_event(
    stream: &mut Option<ResponseStream>,
) -> Option<Result<shared::openai::StreamEvent, crate::openai::StreamError>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
