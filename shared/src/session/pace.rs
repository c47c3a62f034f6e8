//! A budget that the server's rate-limit refusals lower and time restores: halved on a
//! refusal (once per burst), doubled back after each quiet backoff until it is whole.

use std::time::Duration;

use crate::relay::Budget;
use crate::time::Instant;

/// How long a lowered budget stays at its rate before it doubles back.
pub(super) const RATE_BACKOFF: Duration = Duration::from_secs(10);

/// At most one halving per this long: the NACKs of one burst come together.
pub(super) const RATE_CUT_SPACING: Duration = Duration::from_secs(1);

/// The rate taken to be the server's when none is configured or announced and it refuses
/// publishes as too fast: Ably's default per-connection inbound rate.
pub(super) const ASSUMED_RATE: u32 = 50;

/// One scope's budget (the connection's, or a channel's) and how far it is lowered.
#[derive(Debug)]
pub(super) struct Pace {
    pub(super) budget: Budget,
    /// The rate from the configuration and the server's announcement (0 = unlimited).
    base: u32,
    throttle: Option<Throttle>,
}

#[derive(Clone, Copy, Debug)]
struct Throttle {
    /// When the lowered rate next doubles.
    until: Instant,
    /// When it was last halved.
    cut: Instant,
}

impl Pace {
    pub(super) fn new(base: u32) -> Self {
        Self {
            budget: Budget::new(base),
            base,
            throttle: None,
        }
    }

    /// A new configured or announced rate; a lowered budget keeps its rate until it
    /// recovers, then recovers to this one.
    pub(super) fn set_base(&mut self, base: u32) {
        if base != self.base {
            self.base = base;
            if self.throttle.is_none() {
                self.budget = Budget::new(base);
            }
        }
    }

    /// The server refused a publish as too fast: half the current rate (of
    /// [`ASSUMED_RATE`] when unlimited), starting empty so no burst follows.
    pub(super) fn cut(&mut self, now: Instant) {
        if self
            .throttle
            .is_some_and(|t| now < t.cut + RATE_CUT_SPACING)
        {
            return;
        }
        let current = match self.budget.per_second() {
            0 => ASSUMED_RATE,
            rate => rate,
        };
        self.budget = Budget::drained((current / 2).max(1), now);
        self.throttle = Some(Throttle {
            until: now + RATE_BACKOFF,
            cut: now,
        });
    }

    /// Time passed: a lowered rate that had a quiet backoff doubles, up to the base.
    pub(super) fn recover(&mut self, now: Instant) {
        let Some(throttle) = &mut self.throttle else {
            return;
        };
        if now < throttle.until {
            return;
        }
        let ceiling = match self.base {
            0 => ASSUMED_RATE,
            base => base,
        };
        let doubled = self.budget.per_second().saturating_mul(2);
        if doubled >= ceiling {
            self.budget = Budget::new(self.base);
            self.throttle = None;
        } else {
            self.budget = Budget::new(doubled);
            throttle.until = now + RATE_BACKOFF;
        }
    }

    /// When [`Self::recover`] is next due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.throttle.map(|t| t.until)
    }

    pub(super) fn is_lowered(&self) -> bool {
        self.throttle.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_refusal_halves_the_rate_and_quiet_backoffs_double_it_back() {
        let mut pace = Pace::new(200);
        pace.cut(at(0));
        assert_eq!(pace.budget.per_second(), 100);
        pace.cut(at(500));
        assert_eq!(pace.budget.per_second(), 100, "the same burst cuts once");
        pace.cut(at(1_000));
        assert_eq!(pace.budget.per_second(), 50);
        assert_eq!(pace.deadline(), Some(at(1_000) + RATE_BACKOFF));
        pace.recover(at(1_000) + RATE_BACKOFF);
        assert_eq!(
            pace.budget.per_second(),
            100,
            "one step back, not all the way"
        );
        assert!(pace.is_lowered());
        pace.recover(at(1_000) + RATE_BACKOFF * 2);
        assert_eq!(pace.budget.per_second(), 200);
        assert!(!pace.is_lowered());
        assert_eq!(pace.deadline(), None);
    }

    #[test]
    fn an_unlimited_rate_is_cut_from_the_assumed_one_and_comes_back_unlimited() {
        let mut pace = Pace::new(0);
        pace.cut(at(0));
        assert_eq!(pace.budget.per_second(), ASSUMED_RATE / 2);
        pace.recover(at(0) + RATE_BACKOFF);
        assert_eq!(pace.budget.per_second(), 0);
        assert!(!pace.is_lowered());
    }

    #[test]
    fn a_new_base_waits_for_the_recovery() {
        let mut pace = Pace::new(100);
        pace.cut(at(0));
        pace.set_base(400);
        assert_eq!(pace.budget.per_second(), 50);
        pace.recover(at(0) + RATE_BACKOFF);
        pace.recover(at(0) + RATE_BACKOFF * 2);
        pace.recover(at(0) + RATE_BACKOFF * 3);
        assert_eq!(pace.budget.per_second(), 400);
    }
}
