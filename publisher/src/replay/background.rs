//! Background answers the replay server keeps, so that `GET /v1/responses/{id}?stream=true`
//! streams one again after `starting_after`, as OpenAI does for `background: true`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::openai::{Attempt, Replay, Step};

use super::plan::Plan;

/// How many background answers are kept; the oldest is forgotten first.
const KEPT: usize = 1_000;

/// What streaming a kept answer again plays.
#[derive(Debug)]
enum Kept {
    /// A recorded background response: its attempt, replayed after the event asked for.
    Recording {
        attempt: Attempt,
        interval: Duration,
    },
    /// A synthesized answer's whole stream, begun at `started`.
    Synth { plan: Plan, started: Instant },
}

/// The kept answers by response id.
#[derive(Debug, Default)]
pub(crate) struct Background {
    answers: HashMap<String, Kept>,
    order: VecDeque<String>,
}

impl Background {
    /// Keeps a synthesized answer whose whole stream is `plan`, begun now.
    pub fn keep_synth(&mut self, response_id: String, plan: Plan) {
        let started = Instant::now();
        self.keep(response_id, Kept::Synth { plan, started });
    }

    /// Keeps a recorded attempt if its events say it is a background response.
    pub fn keep_recording(&mut self, attempt: &Attempt, interval: Duration) {
        if let Some(id) = background_id(attempt) {
            let attempt = attempt.clone();
            self.keep(id, Kept::Recording { attempt, interval });
        }
    }

    /// The stream of `response_id` after event `after` (all of it without one), or `None`
    /// for an answer not kept.
    pub fn resume(&self, response_id: &str, after: Option<u64>) -> Option<Plan> {
        Some(match self.answers.get(response_id)? {
            Kept::Recording { attempt, interval } => {
                let replay = after.map_or(Replay::Full, Replay::ResumeAfter);
                Plan::from_chunks(attempt, replay, *interval)
            }
            Kept::Synth { plan, started } => plan.resumed(after, started.elapsed()),
        })
    }

    fn keep(&mut self, response_id: String, kept: Kept) {
        if self.answers.insert(response_id.clone(), kept).is_none() {
            self.order.push_back(response_id);
        }
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

/// The response id of a recorded attempt whose response object says `background: true`.
fn background_id(attempt: &Attempt) -> Option<String> {
    attempt.steps.iter().find_map(|step| {
        let Step::Sse { data, .. } = step else {
            return None;
        };
        let response = data.get("response")?;
        if response.get("background").and_then(Value::as_bool) != Some(true) {
            return None;
        }
        response.get("id")?.as_str().map(str::to_owned)
    })
}
