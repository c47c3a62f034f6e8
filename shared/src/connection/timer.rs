//! The connection's deadlines: a small table, the next deadline is its minimum.

use crate::time::Instant;

/// A connection-level timer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Timer {
    /// CONNECTED must arrive before this.
    Connect = 0,
    /// Some frame must arrive before this (maxIdleInterval + request timeout).
    Idle = 1,
    /// Open the next transport at this instant.
    Reconnect = 2,
    /// CLOSED must arrive before this.
    Close = 3,
    /// The token asked for must arrive before this (RSA4c: realtimeRequestTimeout).
    TokenFetch = 4,
    /// Ask for the next token at this instant (before the current one expires, or again
    /// after a failed renewal).
    Renew = 5,
    /// Replace a failed connection at this instant (the revival policy).
    Revive = 6,
}

const COUNT: usize = 7;

const TIMERS: [Timer; COUNT] = [
    Timer::Connect,
    Timer::Idle,
    Timer::Reconnect,
    Timer::Close,
    Timer::TokenFetch,
    Timer::Renew,
    Timer::Revive,
];

/// One optional deadline per [`Timer`].
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [None; COUNT];
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The timers due at `now`, clearing them.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let due: Vec<Timer> = TIMERS
            .into_iter()
            .filter(|&t| self.deadlines[t as usize].is_some_and(|at| at <= now))
            .collect();
        for &timer in &due {
            self.deadlines[timer as usize] = None;
        }
        due
    }
}
