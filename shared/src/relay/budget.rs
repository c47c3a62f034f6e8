//! A connection's message-rate budget: when the next publish may go, and how wide each
//! answer's coalescing window must be for all answers together to stay under the rate.
//!
//! Ably limits how many messages a connection may publish per second (50 by default).
//! Rather than have publishes refused, the daemon paces them with this token bucket and
//! widens every relay's window as more answers stream at once, so each answer sends
//! fewer, larger appends.

use std::time::Duration;

use crate::time::Instant;

/// Share of the rate the appends of all answers may use; the rest is for creates, final
/// updates and prompts.
const APPEND_SHARE: f64 = 0.8;

/// A token bucket of `per_second` messages with a one-second burst. Zero means unlimited.
#[derive(Clone, Debug)]
pub struct Budget {
    per_second: u32,
    /// Thousandths of a message available now.
    milli: u64,
    last: Option<Instant>,
}

impl Budget {
    /// A budget of `per_second` messages per second (0 = unlimited), starting full.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            milli: u64::from(per_second) * 1000,
            last: None,
        }
    }

    /// A budget of `per_second` messages per second with nothing available at `now`: after
    /// the server refused publishes as too fast, no burst follows.
    pub fn drained(per_second: u32, now: Instant) -> Self {
        Self {
            per_second,
            milli: 0,
            last: Some(now),
        }
    }

    /// Takes one message from the budget, or says when one will be available.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(at) = self.ready_at(now) {
            return Err(at);
        }
        if self.per_second > 0 {
            self.milli -= 1000;
        }
        Ok(())
    }

    /// When one message will be available: `None` if one is now (nothing is taken).
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        if self.per_second == 0 {
            return None;
        }
        self.refill(now);
        if self.milli >= 1000 {
            return None;
        }
        let missing = 1000 - self.milli;
        let wait_ms = missing.div_ceil(u64::from(self.per_second));
        Some(now + Duration::from_millis(wait_ms))
    }

    /// The coalescing window for each of `active` streaming answers: `base`, or wider when
    /// `active` answers each appending once per window would exceed the budget.
    pub fn window(&self, base: Duration, active: usize) -> Duration {
        if self.per_second == 0 || active == 0 {
            return base;
        }
        let appends_per_second = f64::from(self.per_second) * APPEND_SHARE;
        let needed = Duration::from_secs_f64(active as f64 / appends_per_second);
        base.max(needed)
    }

    /// The configured rate (0 = unlimited).
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    fn refill(&mut self, now: Instant) {
        let capacity = u64::from(self.per_second) * 1000;
        if let Some(last) = self.last {
            let elapsed = now.saturating_since(last).as_millis();
            let gained = u64::try_from(elapsed)
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(self.per_second));
            self.milli = self.milli.saturating_add(gained).min(capacity);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
