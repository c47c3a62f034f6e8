//! Who may call the API: the bearer secret (or a check of the embedder's own), allowed
//! origins, and a per-client request budget, so nobody else spends the model budget or
//! reads other conversations.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap};

use super::error::ApiError;

/// Decides whether a request may use the guarded endpoints (prompts, cancel, token).
/// The default is [`BearerSecret`]; an embedder can plug in its own (sessions, JWTs, ...).
pub trait Gate: Send + Sync + 'static {
    /// `Ok` to let the request through, or the error to answer with.
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError>;
}

/// Requires `Authorization: Bearer <secret>` when a secret is configured; lets everything
/// through otherwise.
pub struct BearerSecret(pub Option<String>);

impl Gate for BearerSecret {
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(secret) = &self.0 else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), secret.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal how much
/// of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The browser origins allowed to call the API.
#[derive(Clone, Debug, Default)]
pub struct Origins(Vec<String>);

impl Origins {
    /// Allows these origins (`scheme://host[:port]`, compared without a trailing slash).
    pub fn new(origins: &[String]) -> Self {
        Self(
            origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    /// Checks the request's `Origin`. Requests without one (not from a browser page) and
    /// same-origin requests pass; a listed origin passes and is returned so the response
    /// can carry CORS headers for it.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !host.is_empty() && authority == Some(host) {
            return Ok(None);
        }
        if self.0.iter().any(|allowed| allowed == origin) {
            return Ok(Some(origin.to_owned()));
        }
        Err(ApiError::origin_not_allowed(origin))
    }
}

/// A token bucket per client: `per_minute` requests a minute, with a burst of as many.
pub struct RateLimiter {
    per_minute: u32,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Requests available, in units of 1/60 000 of a request, so that a minute's refill
    /// of `per_minute` requests is exactly `per_minute` units per millisecond.
    units: u64,
    /// When the bucket was last refilled (milliseconds on the caller's clock).
    at_ms: u64,
}

/// Units one request costs.
const REQUEST: u64 = 60_000;

/// Forget clients idle this long (their buckets are full again anyway).
const IDLE_FORGET: Duration = Duration::from_secs(120);

impl RateLimiter {
    /// `per_minute` requests per client per minute; 0 = unlimited.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `client`'s budget at `now_ms`, or says how long to wait.
    pub fn check(&self, client: IpAddr, now_ms: u64) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = u64::from(self.per_minute) * REQUEST;
        let mut clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if clients.len() > 10_000 {
            let forget = u64::try_from(IDLE_FORGET.as_millis()).unwrap_or(u64::MAX);
            clients.retain(|_, b| now_ms.saturating_sub(b.at_ms) < forget);
        }
        let bucket = clients.entry(client).or_insert(Bucket {
            units: capacity,
            at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.at_ms);
        let gained = elapsed.saturating_mul(u64::from(self.per_minute));
        bucket.units = bucket.units.saturating_add(gained).min(capacity);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if bucket.units >= REQUEST {
            bucket.units -= REQUEST;
            Ok(())
        } else {
            let missing = REQUEST - bucket.units;
            Err(Duration::from_millis(
                missing.div_ceil(u64::from(self.per_minute)),
            ))
        }
    }
}

/// The client's address: the peer's, or the first `X-Forwarded-For` entry when the proxy
/// in front is trusted to set it.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
