//! Liveness of a streaming answer: the [`LEASE`] header a publisher keeps refreshing, and
//! how anyone reading the channel tells that it lapsed.
//!
//! A publisher stamps every message of a streaming answer with a lease: a wall-clock time
//! (ms since the Unix epoch) by which it promises another message or the answer's end. Its
//! appends refresh it, and when the model is quiet it sends an empty append
//! ([`Lease::heartbeat`]). The final update carries no lease. A streaming answer whose lease
//! has passed lost its publisher: viewers show it `stalled` from the channel's data alone
//! (a rewind or history read gives the latest headers), and a daemon's sweeper ends it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::headers::{Status, STATUS};
use crate::time::Instant;

/// The header: ms since the Unix epoch, on the publisher's clock, by which the answer gets
/// another message or its end. Only streaming messages carry it.
pub const LEASE: &str = "lease";

/// How long a lease lasts by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Leases are rounded up to whole seconds, so that the header (and the headers' encoding)
/// changes at most once a second, not on every append.
const GRANULE_MS: i64 = 1000;

/// Maps the core's [`Instant`]s to wall-clock time: the driver says what Unix time its
/// monotonic epoch was, once. The core still reads no clock.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct UnixClock {
    origin_ms: i64,
}

impl UnixClock {
    /// A clock whose [`Instant`] zero was `origin_ms` ms after the Unix epoch.
    pub const fn new(origin_ms: i64) -> Self {
        Self { origin_ms }
    }

    /// `now` in ms since the Unix epoch.
    pub fn at(self, now: Instant) -> i64 {
        self.origin_ms
            .saturating_add(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
    }
}

/// How a publisher keeps its answers' leases.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Lease {
    /// How long each refresh promises.
    pub duration: Duration,
    /// The wall clock the lease is written in.
    pub clock: UnixClock,
}

impl Lease {
    /// The header value of a message published at `now`.
    pub fn until(&self, now: Instant) -> i64 {
        let ms = i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX);
        let end = self.clock.at(now).saturating_add(ms);
        end.div_euclid(GRANULE_MS)
            .saturating_add(i64::from(end.rem_euclid(GRANULE_MS) != 0))
            .saturating_mul(GRANULE_MS)
    }

    /// How long a streaming answer may go without a message before it sends an empty
    /// append: a third of the lease, so that one lost or late heartbeat does not let it
    /// lapse.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.duration.as_millis() / 3).unwrap_or(u64::MAX))
    }
}

/// The lease in `headers`, if they carry a valid one.
pub fn lease_of(headers: &BTreeMap<String, String>) -> Option<i64> {
    headers.get(LEASE).and_then(|v| parse(v))
}

/// Reads a [`LEASE`] value: plain decimal ms.
pub fn parse(value: &str) -> Option<i64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Whether an answer with these headers lost its publisher: it says `streaming`, carries a
/// lease, and `now_ms` (Unix ms) is more than `grace` past it. Answers without a lease (an
/// older publisher's, another system's) never count as stalled.
pub fn is_lapsed(headers: &BTreeMap<String, String>, now_ms: i64, grace: Duration) -> bool {
    let streaming = headers
        .get(STATUS)
        .and_then(|s| Status::parse(s))
        .is_none_or(|s| s == Status::Streaming);
    let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    streaming && lease_of(headers).is_some_and(|lease| now_ms > lease.saturating_add(grace))
}

/// A viewer's estimate of the publishers' wall clock, so that a browser whose clock is off
/// still tells a lapsed lease from a live one. Fed pairs of (local time, a server's time
/// taken at about that moment), such as a token's `issued` time when it arrives; keeps the
/// offset of the latest.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ClockSkew {
    /// Local minus server, in ms.
    offset_ms: i64,
}

impl ClockSkew {
    /// Notes that the server's clock said `server_ms` when the local one said `local_ms`.
    pub fn observe(&mut self, local_ms: i64, server_ms: i64) {
        self.offset_ms = local_ms.saturating_sub(server_ms);
    }

    /// The server's time when the local clock says `local_ms`.
    pub fn server_time(&self, local_ms: i64) -> i64 {
        local_ms.saturating_sub(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_lease_is_rounded_up_to_the_second_on_the_wall_clock() {
        let lease = Lease {
            duration: Duration::from_secs(10),
            clock: UnixClock::new(1_700_000_000_000),
        };
        assert_eq!(lease.until(Instant::from_millis(0)), 1_700_000_010_000);
        assert_eq!(lease.until(Instant::from_millis(1)), 1_700_000_011_000);
        assert_eq!(lease.until(Instant::from_millis(999)), 1_700_000_011_000);
        assert_eq!(lease.until(Instant::from_millis(1000)), 1_700_000_011_000);
        assert_eq!(lease.heartbeat(), Duration::from_millis(3333));
    }

    #[test]
    fn only_a_streaming_answer_past_its_lease_and_the_grace_has_lapsed() {
        let grace = Duration::from_secs(2);
        let live = headers(&[("status", "streaming"), ("lease", "10000")]);
        assert!(!is_lapsed(&live, 10_000, grace));
        assert!(!is_lapsed(&live, 12_000, grace));
        assert!(is_lapsed(&live, 12_001, grace));
        let ended = headers(&[("status", "completed"), ("lease", "10000")]);
        assert!(!is_lapsed(&ended, 99_000, grace));
        let unleased = headers(&[("status", "streaming")]);
        assert!(!is_lapsed(&unleased, 99_000, grace));
        let garbled = headers(&[("status", "streaming"), ("lease", "-5")]);
        assert!(!is_lapsed(&garbled, 99_000, grace));
    }

    #[test]
    fn the_skew_maps_local_time_to_the_servers() {
        let mut skew = ClockSkew::default();
        assert_eq!(skew.server_time(5_000), 5_000);
        // The local clock runs 90 s fast.
        skew.observe(1_000_090_000, 1_000_000_000);
        assert_eq!(skew.server_time(1_000_100_000), 1_000_010_000);
    }
}
