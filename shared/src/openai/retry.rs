//! When to retry a `POST /responses` that failed before its stream began, and how long to
//! wait: the official SDKs' policy, as a pure function of the failure and the attempt.
//!
//! Only failures before a 2xx stream starts are ever retried: re-posting once a stream has
//! begun would generate, and bill, a second answer.

use std::time::Duration;

use serde_json::Value;

use super::events::code_text;

/// An HTTP error body from an OpenAI-compatible server: `{"error": {message, type, code, param}}`.
/// `code` may be a string or (vLLM, llama.cpp) an integer.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: Option<String>,
    pub error_type: Option<String>,
    pub code: Option<String>,
    pub param: Option<String>,
}

impl ApiError {
    /// Reads an error response; a body that is not the documented shape keeps its first
    /// 200 characters as the message, so nothing the server said is lost.
    pub fn from_body(status: u16, body: &str) -> Self {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let error = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .filter(|e| e.is_object());
        let text = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match error {
            Some(e) => Self {
                status,
                message: text("message"),
                error_type: text("type"),
                code: e.get("code").and_then(code_text),
                param: text("param"),
            },
            None => {
                let trimmed: String = body.trim().chars().take(200).collect();
                Self {
                    status,
                    message: (!trimmed.is_empty()).then_some(trimmed),
                    ..Self::default()
                }
            }
        }
    }

    /// A message fit for a person, naming the status.
    pub fn describe(&self) -> String {
        let what = self
            .message
            .as_deref()
            .or(self.code.as_deref())
            .unwrap_or("no details");
        format!("OpenAI request failed with HTTP {}: {what}", self.status)
    }

    /// Billing exhaustion: a 429 that no retry will fix.
    pub fn is_insufficient_quota(&self) -> bool {
        self.code.as_deref() == Some("insufficient_quota")
            || self.error_type.as_deref() == Some("insufficient_quota")
    }
}

/// What went wrong with one attempt.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Failure {
    /// The connection failed or timed out before a response arrived.
    Connection,
    /// A non-2xx response, with the headers that steer retrying.
    Http {
        error: ApiError,
        retry_after_ms: Option<String>,
        retry_after: Option<String>,
        should_retry: Option<String>,
    },
}

/// Retry or give up.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Decision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Report the failure.
    GiveUp,
}

/// The SDKs' retry policy.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// A server-requested delay longer than this is not honoured (backoff is used instead).
    pub max_retry_after: Duration,
    /// First backoff delay, doubled each retry.
    pub initial_backoff: Duration,
    /// Longest backoff delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            max_retry_after: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Decides after a failed attempt; `retries_done` counts retries already made and
    /// `jitter` is a caller-drawn number in `[0, 1)` (the core draws no randomness).
    ///
    /// Retried: connection failures, 408, 409, 429 and 5xx; never 400, 401, 403, 404, other
    /// 4xx, or a 429 for `insufficient_quota`. An `x-should-retry: true|false` header
    /// overrides the status rule. The delay is `retry-after-ms`, else `retry-after` (seconds),
    /// when positive and within `max_retry_after`; else exponential backoff, 0.5 s doubling
    /// up to 8 s, shortened by up to 25 % of jitter.
    pub fn decide(&self, failure: &Failure, retries_done: u32, jitter: f64) -> Decision {
        if retries_done >= self.max_retries {
            return Decision::GiveUp;
        }
        let (retry, requested) = match failure {
            Failure::Connection => (true, None),
            Failure::Http {
                error,
                retry_after_ms,
                retry_after,
                should_retry,
            } => {
                let by_status = matches!(error.status, 408 | 409 | 500..=599)
                    || (error.status == 429 && !error.is_insufficient_quota());
                let retry = match should_retry.as_deref().map(str::trim) {
                    Some("true") => true,
                    Some("false") => false,
                    _ => by_status,
                };
                let requested = parse_ms(retry_after_ms.as_deref())
                    .or_else(|| parse_seconds(retry_after.as_deref()))
                    .filter(|d| !d.is_zero() && *d <= self.max_retry_after);
                (retry, requested)
            }
        };
        if !retry {
            return Decision::GiveUp;
        }
        Decision::RetryAfter(requested.unwrap_or_else(|| self.backoff(retries_done, jitter)))
    }

    fn backoff(&self, retries_done: u32, jitter: f64) -> Duration {
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << retries_done.min(16));
        let capped = doubled.min(self.max_backoff);
        capped.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }
}

fn parse_ms(value: Option<&str>) -> Option<Duration> {
    let ms: f64 = value?.trim().parse().ok()?;
    (ms.is_finite() && (0.0..1e12).contains(&ms)).then(|| Duration::from_secs_f64(ms / 1000.0))
}

fn parse_seconds(value: Option<&str>) -> Option<Duration> {
    // An HTTP-date form would need the clock; it falls back to backoff.
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
