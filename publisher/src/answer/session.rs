//! The task that drives the connection's publisher session ([`shared::session::Session`]):
//! it reads commands from answers, outcomes from the connection and history reads, calls
//! the session, performs what it returns and sleeps until its deadline. It decides nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use shared::connection::{ConnectionState, PublishOutcome};
use shared::headers::Status;
use shared::ids::MessageId;
use shared::openai::StreamEvent;
use shared::protocol::Message;
use shared::relay::Continuation;
use shared::session::{self, AnswerId, AnswerSpec, Output, PublishKind, Session, Ticket};
use shared::{ChannelName, Instant, Serial};
use tokio::sync::{mpsc, oneshot, watch};

use super::{FindMessage, Publish};
use crate::ably::Snapshot;
use crate::metrics::Metrics;

/// What an answer's task asks of the session.
pub(super) enum Command {
    /// Start an answer; its id comes back on `reply`, its news on `updates`.
    Start {
        spec: AnswerSpec,
        updates: mpsc::UnboundedSender<Update>,
        reply: oneshot::Sender<AnswerId>,
        /// Whether the answer's owner wants its text after every change.
        text: bool,
        /// Carry on an answer another publisher left, instead of creating one.
        from: Option<Continuation>,
    },
    /// Something about an answer's model stream.
    Stream { answer: AnswerId, input: Input },
    /// Publish a message that is no answer's (a prompt, a cancel) under the session's
    /// budgets; its outcome comes back on `reply`.
    Post {
        channel: ChannelName,
        message: Box<Message>,
        reply: oneshot::Sender<PublishOutcome>,
    },
    /// Each running answer and what it waits for, in words.
    Describe { reply: oneshot::Sender<Vec<String>> },
}

/// What happened to an answer's model stream.
pub(super) enum Input {
    Event(StreamEvent),
    Error(String),
    End,
    Cancel,
    /// The daemon shuts down and leaves the answer to the next one ([`Session::hand_over`]).
    HandOver,
    /// Another daemon claimed the answer ([`Session::abandon`]).
    Abandon,
}

/// News of an answer, for its task.
pub(super) enum Update {
    Created(Result<Serial, String>),
    Text(String),
    StopStream,
    Ended(session::Report),
}

type Outcome = Pin<Box<dyn Future<Output = (Ticket, PublishOutcome)> + Send>>;
/// A search of a channel for a message by id, with whose search it is.
type Search<K> = Pin<Box<dyn Future<Output = (K, Result<Option<Serial>, String>)> + Send>>;
type Found = Search<AnswerId>;
type PostFound = Search<Ticket>;

/// Who waits for an answer's news.
struct Owner {
    updates: mpsc::UnboundedSender<Update>,
    text: bool,
    text_len: usize,
    started: tokio::time::Instant,
    first_text: bool,
}

/// The session and everything it is waiting on.
pub(super) struct SessionTask {
    pub(super) session: Session,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) publish: Arc<dyn Publish>,
    pub(super) find: Option<Arc<dyn FindMessage>>,
    pub(super) snapshot: watch::Receiver<Snapshot>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) active: Arc<AtomicUsize>,
    pub(super) epoch: tokio::time::Instant,
}

impl SessionTask {
    /// Runs until every handle on the session is gone and its answers have ended.
    pub(super) async fn run(mut self) {
        let mut owners: HashMap<AnswerId, Owner> = HashMap::new();
        let mut posts: HashMap<Ticket, oneshot::Sender<PublishOutcome>> = HashMap::new();
        let mut outcomes: FuturesUnordered<Outcome> = FuturesUnordered::new();
        let mut found: FuturesUnordered<Found> = FuturesUnordered::new();
        let mut post_found: FuturesUnordered<PostFound> = FuturesUnordered::new();
        let mut commands_open = true;
        let mut snapshot_open = true;
        self.note_snapshot();
        loop {
            self.perform(
                &mut owners,
                &mut posts,
                &mut outcomes,
                &mut found,
                &mut post_found,
            );
            if !commands_open && self.session.active() == 0 {
                return;
            }
            let deadline = self.session.poll_timeout().map(|at| self.at(at));
            tokio::select! {
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.handle(command, &mut owners, &mut posts),
                    None => commands_open = false,
                },
                Some((ticket, outcome)) = outcomes.next(), if !outcomes.is_empty() => {
                    self.session.handle_outcome(self.now(), ticket, outcome);
                }
                Some((answer, result)) = found.next(), if !found.is_empty() => {
                    self.session.handle_lookup(self.now(), answer, result);
                }
                Some((ticket, result)) = post_found.next(), if !post_found.is_empty() => {
                    self.session.handle_post_lookup(ticket, result);
                }
                changed = self.snapshot.changed(), if snapshot_open => match changed {
                    Ok(()) => self.note_snapshot(),
                    Err(_) => {
                        snapshot_open = false;
                        self.session.set_connected(self.now(), false);
                    }
                },
                () = crate::wait::sleep_until(deadline), if deadline.is_some() => {
                    self.session.handle_timeout(self.now());
                }
            }
        }
    }

    fn note_snapshot(&mut self) {
        let snapshot = self.snapshot.borrow_and_update().clone();
        let now = self.now();
        self.session.set_limits(&snapshot.limits);
        self.session
            .set_connected(now, snapshot.state == ConnectionState::Connected);
        self.session.set_blocked(now, &snapshot.blocked);
    }

    fn handle(
        &mut self,
        command: Command,
        owners: &mut HashMap<AnswerId, Owner>,
        posts: &mut HashMap<Ticket, oneshot::Sender<PublishOutcome>>,
    ) {
        let now = self.now();
        match command {
            Command::Describe { reply } => {
                let _ = reply.send(self.session.describe(now));
            }
            Command::Post {
                channel,
                message,
                reply,
            } => {
                let ticket = self.session.post(now, channel, *message);
                posts.insert(ticket, reply);
            }
            Command::Start {
                spec,
                updates,
                reply,
                text,
                from,
            } => {
                let answer = match from {
                    Some(from) => self.session.continue_answer(now, spec, from),
                    None => self.session.start(now, spec),
                };
                self.active.store(self.session.active(), Ordering::Relaxed);
                owners.insert(
                    answer,
                    Owner {
                        updates,
                        text,
                        text_len: 0,
                        started: tokio::time::Instant::now(),
                        first_text: false,
                    },
                );
                let _ = reply.send(answer);
            }
            Command::Stream { answer, input } => {
                match input {
                    Input::Event(event) => self.session.handle_stream_event(now, answer, &event),
                    Input::Error(error) => self.session.handle_stream_error(now, answer, &error),
                    Input::End => self.session.handle_stream_end(now, answer),
                    Input::Cancel => self.session.cancel(now, answer),
                    Input::HandOver => self.session.hand_over(now, answer),
                    Input::Abandon => self.session.abandon(now, answer),
                }
                if let (Some(owner), Some(text)) =
                    (owners.get_mut(&answer), self.session.text(answer))
                {
                    if owner.text && text.len() != owner.text_len {
                        owner.text_len = text.len();
                        let _ = owner.updates.send(Update::Text(text.to_owned()));
                    }
                }
            }
        }
    }

    /// Does what the session asked for.
    fn perform(
        &mut self,
        owners: &mut HashMap<AnswerId, Owner>,
        posts: &mut HashMap<Ticket, oneshot::Sender<PublishOutcome>>,
        outcomes: &mut FuturesUnordered<Outcome>,
        found: &mut FuturesUnordered<Found>,
        post_found: &mut FuturesUnordered<PostFound>,
    ) {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Publish {
                    ticket,
                    answer,
                    kind,
                    channel,
                    message,
                } => {
                    self.count(owners.get_mut(&answer), kind, &message);
                    let published = self.publish.publish(&channel, vec![message]);
                    let metrics = Arc::clone(&self.metrics);
                    let sent = tokio::time::Instant::now();
                    outcomes.push(Box::pin(async move {
                        let outcome = published.await;
                        metrics.ack_latency_ms.observe_duration(sent.elapsed());
                        (ticket, outcome)
                    }));
                }
                Output::Post {
                    ticket,
                    channel,
                    message,
                } => {
                    self.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
                    let published = self.publish.publish(&channel, vec![message]);
                    outcomes.push(Box::pin(async move { (ticket, published.await) }));
                }
                Output::FindPost {
                    ticket,
                    channel,
                    id,
                } => {
                    tracing::warn!(%channel, %id, "a post's outcome is unclear; looking for it on the channel");
                    match self.search(&channel, &id, ticket) {
                        Ok(search) => post_found.push(search),
                        Err(why) => self.session.handle_post_lookup(ticket, Err(why)),
                    }
                }
                Output::Posted { ticket, outcome } => {
                    if let Some(reply) = posts.remove(&ticket) {
                        let _ = reply.send(outcome);
                    }
                }
                Output::Lookup {
                    answer,
                    channel,
                    id,
                } => {
                    tracing::warn!(%channel, %id, "the answer's create may have been stored; looking for it on the channel");
                    match self.search(&channel, &id, answer) {
                        Ok(search) => found.push(search),
                        Err(why) => self.session.handle_lookup(self.now(), answer, Err(why)),
                    }
                }
                Output::Created { answer, result } => {
                    if let Err(error) = &result {
                        tracing::error!(%answer, %error, "the answer could not be started");
                    }
                    if let Some(owner) = owners.get(&answer) {
                        let _ = owner.updates.send(Update::Created(result));
                    }
                }
                Output::StopStream { answer } => {
                    if let Some(owner) = owners.get(&answer) {
                        let _ = owner.updates.send(Update::StopStream);
                    }
                }
                Output::Ended { answer, report } => {
                    self.active.store(self.session.active(), Ordering::Relaxed);
                    self.metrics
                        .repairs
                        .fetch_add(report.repairs, Ordering::Relaxed);
                    // An answer whose end never reached the channel did not complete for
                    // its viewers.
                    let counted = if report.publish_error.is_some() {
                        Status::Failed
                    } else {
                        report.status
                    };
                    self.metrics.answer_ended(counted, report.messages);
                    if let Some(owner) = owners.remove(&answer) {
                        let _ = owner.updates.send(Update::Ended(*report));
                    }
                }
            }
        }
    }

    /// A search of `channel` for the message named `id`, whose result comes back with
    /// `key`; or why there can be none.
    fn search<K: Send + 'static>(
        &self,
        channel: &ChannelName,
        id: &MessageId,
        key: K,
    ) -> Result<Search<K>, String> {
        let find = self.find.as_ref().ok_or("no way to search the channel")?;
        let search = find.find(channel, id);
        Ok(Box::pin(async move { (key, search.await) }))
    }

    fn count(
        &self,
        owner: Option<&mut Owner>,
        kind: PublishKind,
        message: &shared::protocol::Message,
    ) {
        self.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
        if kind == PublishKind::Append {
            self.metrics.appends_sent.fetch_add(1, Ordering::Relaxed);
        }
        let has_text = message
            .data
            .as_ref()
            .and_then(|d| d.as_str())
            .is_some_and(|t| !t.is_empty());
        if let Some(owner) = owner {
            if kind != PublishKind::Create && has_text && !owner.first_text {
                owner.first_text = true;
                self.metrics
                    .first_token_ms
                    .observe_duration(owner.started.elapsed());
            }
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn at(&self, at: Instant) -> tokio::time::Instant {
        self.epoch + std::time::Duration::from_millis(at.as_millis())
    }
}
