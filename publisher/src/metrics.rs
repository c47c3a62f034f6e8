//! The daemon's counters and histograms, rendered in Prometheus' text format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::headers::Status;

/// Upper bounds (milliseconds) of the latency histograms' buckets.
const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// Upper bounds of the messages-per-answer histogram's buckets.
const MESSAGE_BUCKETS: [u64; 9] = [2, 3, 5, 10, 25, 50, 100, 250, 1000];

/// A histogram with fixed buckets, safe to update from many tasks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Count per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: u64) {
        let slot = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(counter) = self.counts.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a duration in milliseconds.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, counter) in self.bounds.iter().zip(&self.counts) {
            cumulative += counter.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        if let Some(last) = self.counts.last() {
            cumulative += last.load(Ordering::Relaxed);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    pub answers_started: AtomicU64,
    pub answers_completed: AtomicU64,
    pub answers_incomplete: AtomicU64,
    pub answers_failed: AtomicU64,
    pub answers_cancelled: AtomicU64,
    pub appends_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    pub repairs: AtomicU64,
    pub prompts_accepted: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub ably_disconnects: AtomicU64,
    pub ably_reconnects: AtomicU64,
    pub ably_resume_failures: AtomicU64,
    pub messages_per_answer: Histogram,
    pub ack_latency_ms: Histogram,
    pub first_token_ms: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            answers_started: AtomicU64::new(0),
            answers_completed: AtomicU64::new(0),
            answers_incomplete: AtomicU64::new(0),
            answers_failed: AtomicU64::new(0),
            answers_cancelled: AtomicU64::new(0),
            appends_sent: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            prompts_accepted: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            ably_disconnects: AtomicU64::new(0),
            ably_reconnects: AtomicU64::new(0),
            ably_resume_failures: AtomicU64::new(0),
            messages_per_answer: Histogram::new(&MESSAGE_BUCKETS),
            ack_latency_ms: Histogram::new(&LATENCY_BUCKETS_MS),
            first_token_ms: Histogram::new(&LATENCY_BUCKETS_MS),
        }
    }
}

impl Metrics {
    /// Counts an answer that ended with `status`.
    pub fn answer_ended(&self, status: Status, messages: u64) {
        let counter = match status {
            Status::Completed => &self.answers_completed,
            Status::Incomplete => &self.answers_incomplete,
            Status::Failed | Status::Streaming => &self.answers_failed,
            Status::Cancelled => &self.answers_cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.messages_per_answer.observe(messages);
    }

    /// Counts the connection's drops, returns and refused resumes from its events.
    pub fn watch_connection(
        self: &std::sync::Arc<Self>,
        realtime: &crate::ably::Realtime,
    ) -> tokio::task::JoinHandle<()> {
        use shared::connection::{ConnectionState, Event};
        let metrics = std::sync::Arc::clone(self);
        let mut events = realtime.subscribe();
        tokio::spawn(async move {
            let mut dropped = false;
            while let Some(event) = events.recv().await {
                match event {
                    Event::StateChanged {
                        previous, current, ..
                    } if previous != current => match current {
                        ConnectionState::Disconnected | ConnectionState::Suspended if !dropped => {
                            dropped = true;
                            metrics.ably_disconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        ConnectionState::Connected if dropped => {
                            dropped = false;
                            metrics.ably_reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    Event::ResumeFailed { .. } => {
                        metrics.ably_resume_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "relay_answers_started_total",
                "Answers whose stream was started.",
                &self.answers_started,
            ),
            (
                "relay_answers_completed_total",
                "Answers that ended completed.",
                &self.answers_completed,
            ),
            (
                "relay_answers_incomplete_total",
                "Answers that ended incomplete (token limit, content filter, message size).",
                &self.answers_incomplete,
            ),
            (
                "relay_answers_failed_total",
                "Answers that ended failed.",
                &self.answers_failed,
            ),
            (
                "relay_answers_cancelled_total",
                "Answers stopped by a cancel.",
                &self.answers_cancelled,
            ),
            (
                "relay_appends_sent_total",
                "message.append publishes sent.",
                &self.appends_sent,
            ),
            (
                "relay_messages_sent_total",
                "Ably messages published (creates, appends, updates, prompts).",
                &self.messages_sent,
            ),
            (
                "relay_repairs_total",
                "Full-text updates sent because an append was refused.",
                &self.repairs,
            ),
            (
                "relay_prompts_accepted_total",
                "Prompts accepted by POST /v1/prompts.",
                &self.prompts_accepted,
            ),
            (
                "relay_requests_rejected_total",
                "HTTP requests refused (auth, origin, rate limit, bad input).",
                &self.requests_rejected,
            ),
            (
                "relay_ably_disconnects_total",
                "Times the Ably connection dropped.",
                &self.ably_disconnects,
            ),
            (
                "relay_ably_reconnects_total",
                "Times the Ably connection came back after a drop.",
                &self.ably_reconnects,
            ),
            (
                "relay_ably_resume_failures_total",
                "Reconnections where Ably refused to resume (a new connection; channels re-attached).",
                &self.ably_resume_failures,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        self.messages_per_answer.render(
            &mut out,
            "relay_messages_per_answer",
            "Ably messages published per answer.",
        );
        self.ack_latency_ms.render(
            &mut out,
            "relay_ack_latency_ms",
            "Milliseconds from sending a publish to its ACK.",
        );
        self.first_token_ms.render(
            &mut out,
            "relay_first_token_ms",
            "Milliseconds from starting an answer to publishing its first text.",
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
