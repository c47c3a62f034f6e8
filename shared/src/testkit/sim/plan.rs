//! Which faults a seed turns on and how hard: drawn once per seed, before the world runs.

use std::fmt;

use super::rng::SimRng;
use crate::connection::errors;

/// A set of fault classes; [`Faults::ALL`] by default, narrowed with [`Faults::parse`] to
/// find out which class a failure needs.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Faults(u32);

impl Faults {
    /// Transport cuts before, inside and after a batch of frames, in either direction
    /// (some silent, found only by the idle timer).
    pub const CUTS: Self = Self(1 << 0);
    /// Resumes refused with a new connectionId and error 80008.
    pub const RESUME_FAILURES: Self = Self(1 << 1);
    /// After a resumed re-attach, the replay of missed messages comes after live ones
    /// (Sockudo's order), as append fragments.
    pub const REPLAY_REORDER: Self = Self(1 << 2);
    /// Resumed re-attaches whose channel position cannot be served (ATTACHED without
    /// RESUMED).
    pub const ATTACH_LOSS: Self = Self(1 << 3);
    /// ACKs held back and released out of order.
    pub const ACK_REORDER: Self = Self(1 << 4);
    /// Appends (and a few updates) refused with NACK 50001.
    pub const NACKS: Self = Self(1 << 5);
    /// Appends applied but never ACKed, so a later ACK skips their msgSerial.
    pub const SKIPPED_ACKS: Self = Self(1 << 6);
    /// Consecutive appends to one subscriber rolled up into one delivery.
    pub const CONFLATION: Self = Self(1 << 7);
    /// Viewers that join while answers stream, with rewind.
    pub const LATE_JOINS: Self = Self(1 << 8);
    /// History reads (on first attach and after a continuity loss, as the page does them)
    /// served and returned with delays, so they race live appends.
    pub const HISTORY_RACE: Self = Self(1 << 9);
    /// Viewer tokens that expire (DISCONNECTED or ERROR 40142).
    pub const TOKEN_EXPIRY: Self = Self(1 << 10);
    /// ATTACHes the service never answers, so the channel goes SUSPENDED at the attach
    /// timeout and retries later (RTL4f, RTL13b): the publisher's publishes wait for it.
    pub const ATTACH_SILENCE: Self = Self(1 << 11);
    /// A per-connection inbound message rate the service enforces by NACKing 42911.
    pub const RATE_LIMIT: Self = Self(1 << 12);
    /// Every fault class.
    pub const ALL: Self = Self((1 << 13) - 1);
    /// No faults at all: the calm baseline.
    pub const NONE: Self = Self(0);

    const NAMES: [(&'static str, Faults); 13] = [
        ("cuts", Self::CUTS),
        ("resume-fail", Self::RESUME_FAILURES),
        ("replay-reorder", Self::REPLAY_REORDER),
        ("attach-loss", Self::ATTACH_LOSS),
        ("ack-reorder", Self::ACK_REORDER),
        ("nack", Self::NACKS),
        ("skip-ack", Self::SKIPPED_ACKS),
        ("conflate", Self::CONFLATION),
        ("late-join", Self::LATE_JOINS),
        ("history", Self::HISTORY_RACE),
        ("token", Self::TOKEN_EXPIRY),
        ("attach-silence", Self::ATTACH_SILENCE),
        ("rate-limit", Self::RATE_LIMIT),
    ];

    /// Parses a comma-separated list of class names (`cuts,resume-fail,replay-reorder,
    /// attach-loss,ack-reorder,nack,skip-ack,conflate,late-join,history,token,
    /// attach-silence,rate-limit`), `all` or
    /// `none`. Returns the unknown name on error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut faults = Self::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            faults = match name {
                "all" => Self::ALL,
                "none" => faults,
                _ => match Self::NAMES.iter().find(|(n, _)| *n == name) {
                    Some((_, f)) => faults.with(*f),
                    None => return Err(name.to_owned()),
                },
            };
        }
        Ok(faults)
    }

    /// This set plus `other`.
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every class of `other` is in this set.
    pub fn has(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, c)| self.has(*c))
            .map(|(n, _)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// How a rewind backlog is replayed.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Rewind {
    /// Each message once, in its latest aggregate (real Ably).
    Aggregate,
    /// Each message's create, then one update per version with the text so far (Sockudo).
    PerVersion,
}

/// One seed's fault intensities, in per mille unless named otherwise. A class that is off,
/// or that the seed did not pick, has intensity 0.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) answers: usize,
    pub(super) viewers: usize,
    /// Viewers after the first join at a random time up to this instant (ms), else at 0.
    pub(super) late_join_until: u64,
    /// After this instant (ms) no new fault is injected, so the world can quiesce.
    pub(super) horizon: u64,
    /// The relay's coalescing window.
    pub(super) window_ms: u64,
    /// Chance that a batch of frames put on a link is followed by a cut.
    pub(super) cut: u32,
    /// Chance that a cut is not noticed by the client (the idle timer finds it).
    pub(super) silent_cut: u32,
    pub(super) resume_fail: u32,
    pub(super) attach_loss: u32,
    /// Chance that an ATTACH gets no reply at all.
    pub(super) attach_silence: u32,
    /// Messages a second a connection may publish, if the service limits it.
    pub(super) inbound_rate: Option<u32>,
    /// The code of the NACK for a publish over it (42911 for the connection, 42913 for the
    /// channel).
    pub(super) rate_code: u32,
    /// Chance that a resumed re-attach's replay waits (ms range) behind live deliveries.
    pub(super) replay_defer: u32,
    pub(super) replay_defer_ms: (u64, u64),
    pub(super) hold_ack: u32,
    pub(super) nack: u32,
    pub(super) skip_ack: u32,
    /// How long a subscriber's outbound frames wait (and may be conflated); 0 = no wait.
    pub(super) conflate_ms: u64,
    pub(super) rewind: Rewind,
    /// Viewer token lifetime (ms), if tokens expire.
    pub(super) token_ttl: Option<u64>,
    /// The longest a history read takes to be served and to come back (ms each way); 0
    /// reads history at the instant it is asked for.
    pub(super) history_delay: u64,
    /// Whether frames travel as JSON text through the codec (slower; every fourth seed).
    pub(super) wire_json: bool,
}

impl Plan {
    /// Draws one seed's plan within `faults`.
    pub(super) fn draw(rng: &mut SimRng, faults: Faults, seed: u64) -> Self {
        let mut pick = |class: Faults, lo: u64, hi: u64| -> u32 {
            if faults.has(class) && rng.chance(600) {
                u32::try_from(rng.range(lo, hi)).unwrap_or(0)
            } else {
                0
            }
        };
        let cut = pick(Faults::CUTS, 5, 60);
        let silent_cut = pick(Faults::CUTS, 20, 150);
        let resume_fail = pick(Faults::RESUME_FAILURES, 100, 500);
        let attach_loss = pick(Faults::ATTACH_LOSS, 50, 300);
        let replay_defer = pick(Faults::REPLAY_REORDER, 300, 1000);
        let hold_ack = pick(Faults::ACK_REORDER, 50, 400);
        let nack = pick(Faults::NACKS, 10, 80);
        let skip_ack = pick(Faults::SKIPPED_ACKS, 10, 60);
        let conflate = pick(Faults::CONFLATION, 5, 40);
        let late = pick(Faults::LATE_JOINS, 1, 1);
        let token = pick(Faults::TOKEN_EXPIRY, 800, 6000);
        let history = faults.has(Faults::HISTORY_RACE);
        let answers = usize::try_from(rng.range(1, 3)).unwrap_or(1);
        let viewers = usize::try_from(rng.range(1, 3)).unwrap_or(1);
        let window_ms = [0, 0, 10, 40][rng.index(4)];
        let rewind = if rng.chance(500) {
            Rewind::Aggregate
        } else {
            Rewind::PerVersion
        };
        // Drawn last, so that the seeds drawn before this class existed keep their plans.
        let attach_silence = if faults.has(Faults::ATTACH_SILENCE) && rng.chance(300) {
            u32::try_from(rng.range(200, 700)).unwrap_or(0)
        } else {
            0
        };
        let inbound_rate = (faults.has(Faults::RATE_LIMIT) && rng.chance(300))
            .then(|| u32::try_from(rng.range(10, 60)).unwrap_or(50));
        // The one channel's limit or the connection's: the same rate, told by another code.
        let rate_code = if inbound_rate.is_some() && rng.chance(500) {
            errors::RATE_LIMIT_CHANNEL_PUBLISH
        } else {
            errors::RATE_LIMIT_CONNECTION_PUBLISH
        };
        Self {
            answers,
            viewers,
            late_join_until: if late > 0 { 2_500 } else { 0 },
            horizon: 4_000,
            window_ms,
            cut,
            silent_cut,
            resume_fail,
            attach_loss,
            attach_silence,
            inbound_rate,
            rate_code,
            replay_defer,
            replay_defer_ms: (1, rng.range(2, 60)),
            hold_ack,
            nack,
            skip_ack,
            conflate_ms: u64::from(conflate),
            rewind,
            token_ttl: (token > 0).then_some(u64::from(token)),
            history_delay: if history { rng.range(20, 200) } else { 0 },
            wire_json: seed.is_multiple_of(4),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "answers={} viewers={} window={}ms cut={} silent={} resume_fail={} attach_loss={} \
             attach_silence={} inbound_rate={:?} (NACK {}) replay_defer={} ({}..{}ms) hold_ack={} nack={} skip_ack={} conflate={}ms rewind={:?} \
             token_ttl={:?} history_delay={}ms late_joins={} json={}",
            self.answers,
            self.viewers,
            self.window_ms,
            self.cut,
            self.silent_cut,
            self.resume_fail,
            self.attach_loss,
            self.attach_silence,
            self.inbound_rate,
            self.rate_code,
            self.replay_defer,
            self.replay_defer_ms.0,
            self.replay_defer_ms.1,
            self.hold_ack,
            self.nack,
            self.skip_ack,
            self.conflate_ms,
            self.rewind,
            self.token_ttl,
            self.history_delay,
            self.late_join_until > 0,
            self.wire_json,
        )
    }
}
