//! What the replay server plays for one request (a status, headers and a script of writes,
//! pauses, stalls and drops), and the HTTP response that plays it.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use shared::openai::{Attempt, Replay, Step};
use tokio::sync::watch;
use tracing::{debug, warn};

/// How long a stream that is about to drop its connection waits first, so that the bytes
/// already handed to the HTTP layer reach the socket (hyper discards unflushed bytes when a
/// body fails).
const FLUSH_GRACE: Duration = Duration::from_millis(20);

/// One request's answer, before it is played.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub actions: Vec<Action>,
}

/// One step of a body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Write these bytes as one chunk.
    Write(Bytes),
    /// Write one SSE frame, the stream event numbered `seq`, as one chunk.
    Event { seq: u64, frame: Bytes },
    /// Wait this long before the next action.
    Pause(Duration),
    /// Send nothing more, keeping the connection open until the client leaves or the server
    /// shuts down.
    Stall,
    /// Drop the connection without ending the body.
    Drop,
    /// Record in `log` that delta `index` of `response_id` is being written now.
    Sent {
        log: super::DeltaLog,
        response_id: String,
        index: u32,
    },
}

impl Plan {
    /// The plan for a recorded attempt: its status, headers and rendered chunks, `interval`
    /// apart. An attempt with a disconnect marker is played up to it, then dropped.
    pub fn from_attempt(attempt: &Attempt, interval: Duration) -> Self {
        let disconnects = attempt
            .steps
            .iter()
            .any(|step| matches!(step, Step::DisconnectAfterSeq { .. }));
        let replay = if disconnects {
            Replay::UntilDisconnect
        } else {
            Replay::Full
        };
        let mut plan = Self::from_chunks(attempt, replay, interval);
        if disconnects {
            plan.actions.push(Action::Drop);
        }
        plan
    }

    /// The attempt's status, headers and chunks for one way of replaying it, `interval`
    /// apart.
    pub fn from_chunks(attempt: &Attempt, replay: Replay, interval: Duration) -> Self {
        let mut actions = Vec::new();
        for (index, chunk) in attempt.render_chunks(replay).into_iter().enumerate() {
            if index > 0 && !interval.is_zero() {
                actions.push(Action::Pause(interval));
            }
            actions.push(Action::Write(Bytes::from(chunk)));
        }
        Self {
            status: attempt.status,
            headers: attempt
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            actions,
        }
    }

    /// What a client streaming the same answer again after event `after` (from its start
    /// without one) gets, `elapsed`
    /// after the answer began: the actions after that event, without the pauses that have
    /// passed meanwhile (a background response kept being generated), and without a drop
    /// (that fault breaks only the first connection).
    pub fn resumed(&self, after: Option<u64>, elapsed: Duration) -> Self {
        let start = after
            .and_then(|after| {
                self.actions.iter().rposition(
                    |action| matches!(action, Action::Event { seq, .. } if *seq <= after),
                )
            })
            .map_or(0, |last| last + 1);
        let mut clock = Duration::ZERO;
        let mut actions = Vec::new();
        for (index, action) in self.actions.iter().enumerate() {
            if let Action::Pause(pause) = action {
                let before = clock;
                clock = clock.saturating_add(*pause);
                if index >= start && clock > elapsed {
                    actions.push(Action::Pause(clock - elapsed.max(before)));
                }
                continue;
            }
            if index >= start && !matches!(action, Action::Drop) {
                actions.push(action.clone());
            }
        }
        Self {
            status: self.status,
            headers: self.headers.clone(),
            actions,
        }
    }

    /// A JSON error answer.
    pub fn json(status: u16, mut headers: Vec<(String, String)>, body: &Value) -> Self {
        headers.insert(0, ("content-type".into(), "application/json".into()));
        Self {
            status,
            headers,
            actions: vec![Action::Write(Bytes::from(body.to_string()))],
        }
    }

    /// A 500 for a server that cannot play what it was asked to.
    pub fn server_error(message: &str) -> Self {
        let body = json!({
            "error": {
                "message": message,
                "type": "server_error",
                "param": null,
                "code": "server_error",
            }
        });
        Self::json(500, Vec::new(), &body)
    }

    /// The HTTP response that plays the plan. A body of one write is sent whole (with a
    /// length); anything else streams chunk by chunk.
    pub fn into_response(self, closing: Closing) -> Response {
        let Ok(status) = StatusCode::from_u16(self.status) else {
            return Self::server_error("the recorded status is not valid").into_response(closing);
        };
        if status.is_informational() {
            return Self::server_error("the recorded status is informational")
                .into_response(closing);
        }
        let body = match self.actions.as_slice() {
            [] => Body::empty(),
            [Action::Write(bytes)] => Body::from(bytes.clone()),
            _ => Body::from_stream(play(self.actions, closing)),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            let parsed = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            );
            match parsed {
                (Ok(name), Ok(value)) if !is_framing_header(&name) => {
                    headers.append(name, value);
                }
                (Ok(name), Ok(_)) => debug!(%name, "leaving a framing header to the server"),
                _ => warn!(%name, %value, "skipping a header that is not valid HTTP"),
            }
        }
        response
    }
}

/// Headers that describe the message framing, which the HTTP layer writes itself.
fn is_framing_header(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
}

/// Tells running streams that the server is shutting down.
#[derive(Clone, Debug)]
pub(crate) struct Closing(Option<watch::Receiver<bool>>);

impl Closing {
    /// A server that never shuts its streams down (a bare router).
    pub fn never() -> Self {
        Self(None)
    }

    /// Streams end once `receiver` reads `true` (or its sender is gone).
    pub fn on(receiver: watch::Receiver<bool>) -> Self {
        Self(Some(receiver))
    }

    async fn wait(&mut self) {
        match &mut self.0 {
            None => std::future::pending().await,
            Some(receiver) => {
                // An error means the sender is gone, which also means the server is.
                let _ = receiver.wait_for(|closing| *closing).await;
            }
        }
    }
}

/// The body stream for a script of actions.
fn play(
    actions: Vec<Action>,
    closing: Closing,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let script = (VecDeque::from(actions), closing);
    futures_util::stream::unfold(Some(script), |script| async move {
        let (mut actions, mut closing) = script?;
        loop {
            match actions.pop_front()? {
                Action::Write(bytes) | Action::Event { frame: bytes, .. } => {
                    return Some((Ok(bytes), Some((actions, closing))))
                }
                Action::Pause(pause) => {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = closing.wait() => return Some((Err(cut("the server is shutting down")), None)),
                    }
                }
                Action::Stall => {
                    debug!("stalling the stream");
                    closing.wait().await;
                    return Some((Err(cut("the server is shutting down")), None));
                }
                Action::Sent {
                    log,
                    response_id,
                    index,
                } => log.record(&response_id, index),
                Action::Drop => {
                    tokio::time::sleep(FLUSH_GRACE).await;
                    debug!("dropping the connection as recorded");
                    return Some((Err(cut("recorded disconnect")), None));
                }
            }
        }
    })
}

fn cut(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason.to_owned())
}
