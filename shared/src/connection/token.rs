//! The token's life as the connection sees it: when it needs a new one, whether a request
//! is out, and whether the token in use replaced a rejected one (RSA4b's single attempt).
//! The driver only fetches; every decision about when is made here.

use std::time::Duration;

/// Where the connection stands with its token.
#[derive(Debug, Default)]
pub(crate) struct TokenState {
    /// The token was rejected, or is about to expire: get a new one before the next
    /// connection attempt.
    pub(crate) stale: bool,
    /// [`crate::connection::Event::TokenRequired`] was emitted and not yet answered.
    pub(crate) fetching: bool,
    /// The transport being opened carries a token fetched to replace a rejected one; if
    /// that one is rejected too, the connection waits (DISCONNECTED with backoff) instead
    /// of asking again at once (RSA4b, RTN14b, RTN15h2).
    pub(crate) fresh: bool,
    /// Failed fetches in a row while connected, for the backoff of the next renewal.
    pub(crate) renew_failures: u32,
}

/// How long after receiving a token with this lifetime to ask for the next one: `margin`
/// before it expires, or half-way through a lifetime shorter than twice the margin.
pub(crate) fn renew_after(lifetime: Duration, margin: Duration) -> Duration {
    if lifetime >= margin * 2 {
        lifetime - margin
    } else {
        lifetime / 2
    }
}
