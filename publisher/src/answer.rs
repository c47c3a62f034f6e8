//! Runs one answer end to end: the OpenAI stream goes through a `Relay`, whose publishes go
//! out over the shared Ably connection, paced by the connection's budget.
//!
//! The create is published first and awaited (its serial names the answer); appends are
//! pipelined and never awaited one by one; a refused append is repaired by a full-text
//! update; the final update carries the terminal status. The loop stops reading the stream
//! once the answer has ended, which also stops generation on a cancel.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use shared::connection::{errors, PublishOutcome};
use shared::headers::{self, Status};
use shared::ids::MessageId;
use shared::protocol::{ErrorInfo, Message, MessageAction};
use shared::relay::{Budget, PublishOp, Relay, RelayConfig};
use shared::{ChannelName, Instant, Serial};
use tokio::sync::{oneshot, watch};

use rand::Rng;

use crate::ably::rest::Rest;
use crate::ably::{Published, Realtime, APPENDS_NOT_ENABLED, APPENDS_NOT_ENABLED_HELP};
use crate::metrics::Metrics;
use crate::openai::{OpenAi, ResponseRequest, ResponseStream};

/// How long the create's ACK may take before the answer stops waiting for it and looks for
/// the message on the channel instead. Longer than Ably's default connectionStateTtl (2 min),
/// by which time the connection has either resent it or failed it (RTN14e).
const CREATE_TIMEOUT: Duration = Duration::from_secs(150);

/// The channel, in each namespace, where [`Answers::check_appends`] probes for the rule.
pub const PROBE_CHANNEL: &str = "appends-probe";

/// The name of the probe's messages.
pub const PROBE_NAME: &str = "appends-probe";

/// How many of the channel's latest messages are searched for a create whose ACK was lost.
const CREATE_LOOKUP_LIMIT: u32 = 200;

/// How long the last publishes' ACKs may take once the answer has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(75);

/// How often a full-text update refused for want of a connection is sent again, once the
/// connection is back.
const UPDATE_RESENDS: u32 = 3;

/// How long a resend waits for the connection to come back.
const RECONNECT_WAIT: Duration = Duration::from_secs(60);

/// Why an answer is asked to stop early.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Stop {
    /// Keep going.
    No,
    /// A user cancelled: the answer ends `cancelled`.
    Cancel,
    /// The daemon is shutting down: the answer ends `failed` saying so.
    Shutdown,
}

/// The `error` header of answers cut short by a shutdown.
pub const SHUTDOWN_ERROR: &str = "the publisher shut down before the answer finished";

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

/// What every answer of one process shares: the connection, the model client, the rate
/// budget, the metrics.
#[derive(Clone)]
pub struct Answers {
    pub realtime: Realtime,
    pub openai: OpenAi,
    pub metrics: Arc<Metrics>,
    /// The publisher-side coalescing window when the budget does not ask for more.
    pub window: Duration,
    /// The `source` header of every answer.
    pub source: String,
    publish: Arc<dyn Publish>,
    find: Option<Arc<dyn FindMessage>>,
    /// Names every create this process publishes: `<prefix>-answer-<n>`.
    create_ids: Arc<(String, AtomicU64)>,
    budget: Arc<Mutex<Budget>>,
    /// Namespaces whose channels were seen to accept appends.
    appends_ok: Arc<Mutex<HashSet<String>>>,
    active: Arc<AtomicUsize>,
    epoch: tokio::time::Instant,
}

/// One answer to stream.
#[derive(Clone, Debug)]
pub struct Job {
    pub channel: ChannelName,
    pub request: ResponseRequest,
    /// The prompt message this answer responds to, if it was published.
    pub prompt: Option<Serial>,
}

/// How an answer went.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The answer message's serial, if its create was ACKed.
    pub serial: Option<Serial>,
    pub status: Status,
    pub text: String,
    /// The `error` (or `reason`) header, or why publishing failed.
    pub detail: Option<String>,
    /// Publishing problems (refused update, missing ACKs): subscribers may lack the end.
    pub publish_error: Option<String>,
    pub appends: u64,
    pub messages: u64,
    pub repairs: u64,
    /// Retries the OpenAI request needed before its stream began.
    pub retries: u32,
    /// Times the final update was sent again (lost with the connection, or overtaken by a
    /// publish that landed after it).
    pub resends: u32,
}

/// Observes an answer while it runs.
pub trait Observer: Send {
    /// The create was ACKed (`Ok(serial)`) or refused.
    fn created(&mut self, _result: Result<&Serial, &str>) {}
    /// The answer's text so far, after each stream event that changed it.
    fn text(&mut self, _text: &str) {}
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

type InFlight = Pin<Box<dyn Future<Output = (Kind, PublishOutcome)> + Send>>;

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

/// What a publish in flight was. Appends carry their place in the answer's sequence of
/// publishes, so a refusal of one that a later full-text update already covers costs no
/// repair.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Kind {
    Create,
    /// The channel searched for a create whose outcome was unclear.
    CreateLookup,
    /// The replacement create of an answer whose create failed, born `failed`.
    Replacement,
    Append {
        /// Its number among the answer's publishes.
        seq: u64,
        /// Where its fragment starts in the answer's text, in bytes.
        start: usize,
    },
    Update {
        /// Its number among the answer's publishes.
        seq: u64,
    },
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
            create_ids: Arc::new((
                format!("{:016x}", rand::rng().random::<u64>()),
                AtomicU64::new(0),
            )),
            realtime,
            openai,
            metrics,
            window,
            source: source.to_owned(),
            budget: Arc::new(Mutex::new(Budget::new(rate))),
            appends_ok: Arc::new(Mutex::new(HashSet::new())),
            active: Arc::new(AtomicUsize::new(0)),
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Sends answers' messages through `publish` instead of straight to the connection.
    pub fn with_publish(mut self, publish: Arc<dyn Publish>) -> Self {
        self.publish = publish;
        self
    }

    /// Searches the channel for a create whose ACK was lost or refused by mistake.
    pub fn with_find(mut self, find: Arc<dyn FindMessage>) -> Self {
        self.find = Some(find);
        self
    }

    fn next_create_id(&self) -> MessageId {
        let (prefix, counter) = &*self.create_ids;
        let n = counter.fetch_add(1, Ordering::Relaxed);
        MessageId::new(format!("{prefix}-answer-{n}"))
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

    /// How many answers are streaming now.
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
        let _active = ActiveGuard::new(&self.active);
        self.metrics.answers_started.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let mut relay = Relay::new(RelayConfig {
            window: self.current_window(),
            source: self.source.clone(),
            prompt: job.prompt.clone(),
            max_message_size: Some(self.realtime.snapshot().max_message_size),
        });
        let mut run = Run {
            answers: self,
            channel: &job.channel,
            in_flight: FuturesUnordered::new(),
            report: Report {
                serial: None,
                status: Status::Streaming,
                text: String::new(),
                detail: None,
                publish_error: None,
                appends: 0,
                messages: 0,
                repairs: 0,
                retries: 0,
                resends: 0,
            },
            first_text: None,
            started,
            create_sent: None,
            fatal: None,
            last_update: None,
            update_resends: 0,
            create_id: self.next_create_id(),
            looked_up: false,
            create_failed: false,
            sent: 0,
            last_update_seq: 0,
            final_version: None,
            other_version: None,
        };
        relay.start();
        run.pump(&mut relay).await;

        let openai = self.openai.clone();
        let request = job.request.clone();
        let mut opening: Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { openai.stream(&request).await });
        let mut stream: Option<ResponseStream> = None;
        let mut opened = false;
        let mut last_text_len = 0;
        let mut stop_open = true;

        loop {
            if run.fatal.is_some() {
                break;
            }
            if relay.is_finished() {
                // Everything is queued and sent; `drain` waits for the last ACKs.
                break;
            }
            let ended = relay.is_finished() || relay.status().is_terminal();
            let reading = !ended && stream.is_some();
            let timeout = relay.poll_timeout().map(|at| self.at(at));
            let create_deadline = run
                .create_sent
                .filter(|_| run.report.serial.is_none())
                .map(|sent| sent + CREATE_TIMEOUT);
            tokio::select! {
                changed = stop.changed(), if !ended && stop_open => {
                    stop_open = changed.is_ok();
                    let reason = if stop_open { *stop.borrow() } else { Stop::No };
                    match reason {
                        Stop::No => {}
                        Stop::Cancel => relay.cancel(self.now()),
                        Stop::Shutdown => relay.handle_stream_error(self.now(), SHUTDOWN_ERROR),
                    }
                    if reason != Stop::No {
                        stream = None;
                    }
                }
                result = &mut opening, if !opened && !ended => {
                    opened = true;
                    match result {
                        Ok(s) => {
                            run.report.retries = s.retries();
                            stream = Some(s);
                        }
                        Err(err) => {
                            tracing::warn!(channel = %job.channel, error = %err, "the model request failed");
                            relay.handle_stream_error(self.now(), &err.to_string());
                        }
                    }
                }
                item = next_event(&mut stream), if reading => {
                    match item {
                        Some(Ok(event)) => relay.handle_event(self.now(), &event),
                        Some(Err(err)) if !err.is_fatal() => {
                            tracing::warn!(channel = %job.channel, error = %err, "skipped a malformed stream event");
                        }
                        Some(Err(err)) => {
                            tracing::warn!(channel = %job.channel, error = %err, "the model stream failed");
                            relay.handle_stream_error(self.now(), &err.to_string());
                        }
                        None => relay.handle_stream_end(self.now()),
                    }
                    if relay.text().len() != last_text_len {
                        last_text_len = relay.text().len();
                        observer.text(relay.text());
                    }
                }
                Some((kind, outcome)) = run.in_flight.next(), if !run.in_flight.is_empty() => {
                    run.settle(&mut relay, kind, outcome, observer);
                }
                () = crate::wait::sleep_until(timeout), if timeout.is_some() => relay.handle_timeout(self.now()),
                () = crate::wait::sleep_until(create_deadline), if create_deadline.is_some() => {
                    run.create_sent = None;
                    let error = format!("no ACK for the answer's create within {CREATE_TIMEOUT:?}");
                    run.create_refused(&mut relay, error, observer);
                }
            }
            if relay.status().is_terminal() {
                // The answer has ended: stop reading (and so stop generation).
                stream = None;
            }
            relay.set_window(self.current_window());
            run.pump(&mut relay).await;
        }
        // Stop reading the model's stream (closing it stops generation) before waiting.
        drop(stream);
        if run.fatal.is_none() && !run.in_flight.is_empty() {
            run.drain(&mut relay, observer).await;
        }

        let mut report = run.report;
        report.resends = run.update_resends;
        report.status = relay.status();
        report.text = relay.text().to_owned();
        report.detail = relay
            .headers()
            .get(headers::ERROR)
            .or_else(|| relay.headers().get(headers::REASON))
            .cloned();
        if let Some(fatal) = run.fatal {
            report.publish_error = Some(fatal);
            if report.serial.is_none() {
                report.status = Status::Failed;
            }
        }
        // An answer whose end never reached the channel did not complete for its viewers.
        let counted = if report.publish_error.is_some() {
            Status::Failed
        } else {
            report.status
        };
        self.metrics.answer_ended(counted, report.messages);
        report
    }

    fn current_window(&self) -> Duration {
        let active = self.active();
        match self.budget.lock() {
            Ok(budget) => budget.window(self.window, active),
            Err(_) => self.window,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn at(&self, at: Instant) -> tokio::time::Instant {
        self.epoch + Duration::from_millis(at.as_millis())
    }

    /// Waits until the budget allows one more message.
    async fn pace(&self) {
        loop {
            let wait = match self.budget.lock() {
                Ok(mut budget) => budget.take(self.now()),
                Err(_) => Ok(()),
            };
            match wait {
                Ok(()) => return,
                Err(at) => tokio::time::sleep_until(self.at(at)).await,
            }
        }
    }
}

/// The state of one running answer besides its relay.
struct Run<'a> {
    answers: &'a Answers,
    channel: &'a ChannelName,
    in_flight: FuturesUnordered<InFlight>,
    report: Report,
    first_text: Option<Duration>,
    started: tokio::time::Instant,
    create_sent: Option<tokio::time::Instant>,
    /// Publishing cannot go on (appends refused for good, create never ACKed).
    fatal: Option<String>,
    /// The latest full-text update, kept to send again if the connection drops it.
    last_update: Option<Message>,
    update_resends: u32,
    /// The create's message id, to find it on the channel if its outcome is unclear.
    create_id: MessageId,
    /// The channel was searched for the create already.
    looked_up: bool,
    /// The create failed for good; what follows is the replacement born `failed`.
    create_failed: bool,
    /// Publishes pumped so far, numbering each.
    sent: u64,
    /// The number of the latest full-text update pumped.
    last_update_seq: u64,
    /// The highest version serial ACKed for the final update.
    final_version: Option<Serial>,
    /// The highest version serial ACKed for any other publish of the answer.
    other_version: Option<Serial>,
}

impl Run<'_> {
    /// Sends every operation the relay has queued.
    async fn pump(&mut self, relay: &mut Relay) {
        while let Some(op) = relay.poll_op() {
            self.sent += 1;
            let kind = match &op {
                PublishOp::Create(_) if self.create_failed => Kind::Replacement,
                PublishOp::Create(_) => Kind::Create,
                PublishOp::Append(append) => Kind::Append {
                    seq: self.sent,
                    start: append_start(append),
                },
                PublishOp::Update(_) => {
                    self.last_update_seq = self.sent;
                    Kind::Update { seq: self.sent }
                }
            };
            self.answers.pace().await;
            let metrics = &self.answers.metrics;
            metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
            self.report.messages += 1;
            if matches!(kind, Kind::Append { .. }) {
                metrics.appends_sent.fetch_add(1, Ordering::Relaxed);
                self.report.appends += 1;
            }
            if kind != Kind::Create && self.first_text.is_none() && !op.text().is_empty() {
                let elapsed = self.started.elapsed();
                self.first_text = Some(elapsed);
                metrics.first_token_ms.observe_duration(elapsed);
            }
            if kind == Kind::Create {
                self.create_sent = Some(tokio::time::Instant::now());
            }
            let mut message = op.into_message();
            if kind == Kind::Create {
                // Our own id, so the create can be found on the channel if its ACK is lost.
                message.id = Some(self.create_id.clone());
            }
            if matches!(kind, Kind::Update { .. } | Kind::Replacement) {
                self.last_update = Some(message.clone());
                self.update_resends = 0;
            }
            self.send(kind, message);
        }
    }

    fn send(&mut self, kind: Kind, message: Message) {
        let published = self.answers.publish.publish(self.channel, vec![message]);
        let metrics = Arc::clone(&self.answers.metrics);
        let sent = tokio::time::Instant::now();
        self.in_flight.push(Box::pin(async move {
            let outcome = published.await;
            metrics.ack_latency_ms.observe_duration(sent.elapsed());
            (kind, outcome)
        }));
    }

    /// The create's outcome says it failed, or nothing was heard in time. The server may
    /// have stored it all the same (an ACK lost with the connection, or Sockudo refusing a
    /// resent create as a reused id), so the channel is searched for it by id once; only
    /// when it is not there does the answer end `failed`, with a replacement create.
    fn create_refused(&mut self, relay: &mut Relay, error: String, observer: &mut dyn Observer) {
        match &self.answers.find {
            Some(find) if !self.looked_up => {
                self.looked_up = true;
                tracing::warn!(channel = %self.channel, %error, "the answer's create may have been stored; looking for it on the channel");
                let find = Arc::clone(find);
                let realtime = self.answers.realtime.clone();
                let channel = self.channel.clone();
                let id = self.create_id.clone();
                self.in_flight.push(Box::pin(async move {
                    let refused = || ErrorInfo::new(50000, 500, error.clone());
                    // History is read once the connection is back, so a create that is
                    // still being resent has had its chance.
                    let _ = realtime.wait_connected(RECONNECT_WAIT).await;
                    match find.find(&channel, &id).await {
                        Ok(Some(serial)) => (Kind::CreateLookup, Ok(vec![Some(serial)])),
                        Ok(None) => (Kind::CreateLookup, Err(refused())),
                        Err(why) => {
                            tracing::warn!(%channel, error = %why, "could not search the channel for the create");
                            (Kind::CreateLookup, Err(refused()))
                        }
                    }
                }));
            }
            _ => {
                tracing::error!(channel = %self.channel, %error, "the answer's create failed; publishing it as failed");
                observer.created(Err(&error));
                self.create_failed = true;
                relay.handle_create_failed(&error);
                self.report.publish_error = Some(error);
            }
        }
    }

    /// Publishes `update` again once the connection is up (or fails it after a while).
    fn resend_when_connected(&mut self, update: Message) {
        let realtime = self.answers.realtime.clone();
        let publish = Arc::clone(&self.answers.publish);
        let channel = self.channel.clone();
        let kind = if self.create_failed {
            Kind::Replacement
        } else {
            Kind::Update {
                seq: self.last_update_seq,
            }
        };
        self.in_flight.push(Box::pin(async move {
            if let Err(why) = realtime.wait_connected(RECONNECT_WAIT).await {
                return (
                    kind,
                    Err(ErrorInfo::new(
                        80000,
                        503,
                        format!("no connection to resend on: {why}"),
                    )),
                );
            }
            (kind, publish.publish(&channel, vec![update]).await)
        }));
    }

    /// Keeps the highest version serial ACKed for the final update and for every other
    /// publish of the answer. A publish whose outcome was lost with a connection is resent
    /// after a failed resume (RTN19a2) and may land after the final update, leaving history
    /// with a stray fragment on top of the full text; an ACK above the final update's
    /// version says so, and the final update goes out again, once per such ACK, a bounded
    /// number of times.
    fn note_version(&mut self, relay: &Relay, kind: Kind, serials: Vec<Option<Serial>>) {
        let Some(version) = serials.into_iter().next().flatten() else {
            return;
        };
        let is_final = matches!(kind, Kind::Update { seq } if seq == self.last_update_seq)
            && relay.is_finished();
        let slot = if is_final {
            &mut self.final_version
        } else {
            &mut self.other_version
        };
        if slot.as_ref().is_none_or(|known| &version > known) {
            *slot = Some(version);
        }
        let overtaken = matches!(
            (&self.final_version, &self.other_version),
            (Some(last), Some(other)) if other > last
        );
        if overtaken && self.update_resends < UPDATE_RESENDS {
            if let Some(update) = self.last_update.clone() {
                self.final_version = None;
                self.update_resends += 1;
                tracing::warn!(channel = %self.channel, "a publish landed after the final update; sending the final update again");
                self.resend_when_connected(update);
            }
        }
    }

    /// Applies one ACK or NACK.
    fn settle(
        &mut self,
        relay: &mut Relay,
        kind: Kind,
        outcome: PublishOutcome,
        observer: &mut dyn Observer,
    ) {
        let now = self.answers.now();
        match (kind, outcome) {
            (Kind::Create | Kind::CreateLookup, Ok(serials)) if self.report.serial.is_none() => {
                match serials.into_iter().next().flatten() {
                    Some(serial) => {
                        tracing::debug!(channel = %self.channel, %serial, "answer created");
                        self.create_sent = None;
                        self.report.serial = Some(serial.clone());
                        observer.created(Ok(&serial));
                        relay.handle_created(now, serial);
                    }
                    None => {
                        let error = "the create's ACK carried no serial".to_owned();
                        self.create_refused(relay, error, observer);
                    }
                }
            }
            (Kind::Create | Kind::CreateLookup, Ok(_)) => {}
            (Kind::Create, Err(err)) if err.code == APPENDS_NOT_ENABLED => {
                let error = describe_refusal(&err);
                observer.created(Err(&error));
                relay.handle_create_failed(&error);
                self.fatal = Some(error);
            }
            (Kind::Create | Kind::CreateLookup, Err(err)) => {
                if self.report.serial.is_none() {
                    self.create_sent = None;
                    self.create_refused(relay, describe_refusal(&err), observer);
                }
            }
            (_, Err(err)) if err.code == APPENDS_NOT_ENABLED => {
                let error = describe_refusal(&err);
                tracing::error!(channel = %self.channel, %error, "appends refused");
                self.fatal = Some(error);
            }
            (Kind::Append { start, .. }, Err(err)) if errors::is_too_large(&err) => {
                tracing::warn!(channel = %self.channel, error = %err.message, "an append was refused as too large; ending the answer incomplete");
                relay.handle_too_large(now, start);
            }
            (Kind::Update { .. }, Err(err)) if errors::is_too_large(&err) => {
                tracing::warn!(channel = %self.channel, error = %err.message, "an update was refused as too large; cutting the answer");
                relay.handle_too_large(now, relay.text().len() * 3 / 4);
            }
            (Kind::Append { seq, .. }, Err(err)) if seq < self.last_update_seq => {
                // A full-text update sent after this append already carries its text.
                tracing::debug!(channel = %self.channel, error = %err.message, code = err.code, "an append was refused; a later update covers it");
            }
            (Kind::Append { .. }, Err(err)) => {
                tracing::warn!(channel = %self.channel, error = %err.message, code = err.code, "an append was refused; repairing with a full-text update");
                self.answers.metrics.repairs.fetch_add(1, Ordering::Relaxed);
                self.report.repairs += 1;
                relay.handle_append_failed(now);
            }
            (Kind::Update { .. } | Kind::Replacement, Err(err))
                if worth_resending(&err) && self.update_resends < UPDATE_RESENDS =>
            {
                // The connection failed or dropped the frame, or the server refused a
                // resent frame as a reused id: send the whole text again, with a new id,
                // once connected, so subscribers and history still get the end.
                if let Some(update) = self.last_update.clone() {
                    self.update_resends += 1;
                    tracing::warn!(channel = %self.channel, error = %err.message, "an update was lost with the connection; sending it again when connected");
                    self.resend_when_connected(update);
                }
            }
            (Kind::Update { .. } | Kind::Replacement, Err(err)) => {
                let error = format!("an update was refused: {}", describe_refusal(&err));
                tracing::error!(channel = %self.channel, %error);
                self.report.publish_error = Some(error);
            }
            (Kind::Append { .. } | Kind::Update { .. }, Ok(serials)) => {
                self.note_version(relay, kind, serials);
            }
            (Kind::Replacement, Ok(_)) => {}
        }
    }

    /// Waits for the outstanding ACKs once the answer has ended.
    async fn drain(&mut self, relay: &mut Relay, observer: &mut dyn Observer) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                Ok(Some((kind, outcome))) => {
                    self.settle(relay, kind, outcome, observer);
                    self.pump(relay).await;
                }
                Ok(None) => break,
                Err(_) => {
                    self.fatal = Some(format!(
                        "{} publishes had no ACK within {DRAIN_TIMEOUT:?}",
                        self.in_flight.len()
                    ));
                    break;
                }
            }
        }
    }
}

/// Where an append's fragment starts in the answer's text: its `length` header less the
/// fragment's bytes.
fn append_start(append: &Message) -> usize {
    let fragment = append
        .data
        .as_ref()
        .and_then(|d| d.as_str())
        .map_or(0, str::len);
    append
        .header(headers::LENGTH)
        .and_then(headers::parse_length)
        .map_or(0, |length| length.saturating_sub(fragment))
}

/// Whether a refused update may succeed when sent again: not when the key lacks the
/// capability (401xx), the channel refuses appends and updates (93002) or the message is
/// too large (40009). A connection that failed or dropped the frame (800xx, 50001), or a
/// server that refuses a frame resent after a reconnect as a reused id (Sockudo: 40000), is
/// worth another try with a fresh id.
fn worth_resending(err: &ErrorInfo) -> bool {
    !((40100..40200).contains(&err.code) || err.code == APPENDS_NOT_ENABLED || err.code == 40009)
}

/// A refusal in words, with what to do about the known ones.
pub fn describe_refusal(err: &ErrorInfo) -> String {
    if err.code == APPENDS_NOT_ENABLED {
        format!(
            "{APPENDS_NOT_ENABLED_HELP} (Ably error {}: {})",
            err.code, err.message
        )
    } else {
        format!("{} (Ably error {})", err.message, err.code)
    }
}

/// Counts an answer as active while it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(active))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
