//! Ably error codes the connection reads or reports, by name, and the one place that sorts
//! an error into what the connection does about it.
//!
//! Codes and their meanings follow Ably's public error list (`ably/ably-common`,
//! `protocol/errors.json`); the ranges follow the features spec (RSA4, RTN14, RTN15).

use crate::protocol::ErrorInfo;

/// The generic "bad request": Sockudo NACKs every refused publish with it.
pub const GENERIC_BAD_REQUEST: u32 = 40000;
/// The request was malformed (here: nothing to publish).
pub const BAD_REQUEST: u32 = 40003;
/// The message is larger than `maxMessageSize` (RSL1i).
pub const MESSAGE_TOO_LARGE: u32 = 40009;
/// The key is invalid or unknown.
pub const INVALID_CREDENTIALS: u32 = 40101;
/// First token error: 40140 ≤ code < 40150 means "get a new token" (RSA4b, RTN14b, RTN15h).
pub const TOKEN_ERROR_FIRST: u32 = 40140;
/// Token expired, the token error servers send most often.
pub const TOKEN_EXPIRED: u32 = 40142;
/// One past the last token error.
pub const TOKEN_ERROR_END: u32 = 40150;
/// The operation is not permitted by the token's capability.
pub const OPERATION_NOT_PERMITTED: u32 = 40160;
/// The application's token source failed without an Ably error (RSA4e).
pub const TOKEN_CALLBACK_FAILED: u32 = 40170;
/// A token was rejected and there is no way to renew it (RSA4a2).
pub const TOKEN_RENEWAL_NOT_CONFIGURED: u32 = 40171;
/// A system rate limit was exceeded; the operation may be retried.
pub const RATE_LIMIT_GENERIC: u32 = 42910;
/// The connection published faster than its inbound rate allows (`maxInboundRate`).
pub const RATE_LIMIT_CONNECTION_PUBLISH: u32 = 42911;
/// Another channel enumeration is running (a REST limit, listed for completeness).
pub const RATE_LIMIT_CHANNEL_ENUMERATION: u32 = 42912;
/// A channel's publish rate was exceeded: the limit is the channel's, not the connection's.
pub const RATE_LIMIT_CHANNEL_PUBLISH: u32 = 42913;
/// The connection's outbound message rate was exceeded.
pub const RATE_LIMIT_CONNECTION_OUTBOUND: u32 = 42915;
/// The connection was closed by a fatal rate limit.
pub const RATE_LIMIT_CONNECTION_TERMINATED: u32 = 42920;
/// The connection was closed for far exceeding its publish rate.
pub const RATE_LIMIT_PUBLISH_TERMINATED: u32 = 42921;
/// The connection's protocol message rate was exceeded.
pub const RATE_LIMIT_CONNECTION_PROTOCOL: u32 = 42924;
/// Internal server error.
pub const INTERNAL_ERROR: u32 = 50000;
/// The server refused a message without saying why (a NACK without an error).
pub const MESSAGE_REJECTED: u32 = 50001;
/// The connection failed (a terminal state).
pub const CONNECTION_FAILED: u32 = 80000;
/// The connection was suspended: disconnected longer than `connectionStateTtl` (RTN14e).
pub const CONNECTION_SUSPENDED: u32 = 80002;
/// The connection to the server was lost.
pub const DISCONNECTED: u32 = 80003;
/// A resume was refused by a server speaking an older protocol (still seen from Sockudo).
pub const RESUME_REFUSED: u32 = 80008;
/// CONNECTED did not arrive in time (RTN14c).
pub const CONNECTION_TIMED_OUT: u32 = 80014;
/// The connection was closed on request.
pub const CONNECTION_CLOSED: u32 = 80017;
/// A token could not be obtained (RSA4c1, RSA4d).
pub const TOKEN_REQUEST_FAILED: u32 = 80019;
/// A channel operation failed.
pub const CHANNEL_OPERATION_FAILED: u32 = 90000;
/// The channel is in a state that does not allow the operation.
pub const CHANNEL_INVALID_STATE: u32 = 90001;
/// Channel continuity could not be kept (Sockudo also sends it for the whole connection
/// when its send queue overflowed).
pub const CHANNEL_CONTINUITY_LOST: u32 = 90003;
/// ATTACHED or DETACHED did not arrive in time (RTL4f).
pub const CHANNEL_TIMED_OUT: u32 = 90007;
/// The channel's namespace has no rule enabling message updates, deletes and appends.
pub const APPENDS_NOT_ENABLED: u32 = 93002;

/// What the connection does about an error the server sent for the whole connection.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ErrorClass {
    /// The token must be renewed (40140–40149).
    Token,
    /// A rate limit (the 429xx family): wait with backoff before trying again; neither
    /// fatal nor a reason to resend at once.
    RateLimited,
    /// A channel-class error (90000–90999) sent for the connection: start afresh.
    Channel,
    /// Anything else on ERROR ends the connection (RTN14g, RTN15j).
    Fatal,
}

/// Sorts a connection-level error.
pub fn classify(err: &ErrorInfo) -> ErrorClass {
    if is_token_error(err) {
        ErrorClass::Token
    } else if is_rate_limit(err) {
        ErrorClass::RateLimited
    } else if (90_000..91_000).contains(&err.code) {
        ErrorClass::Channel
    } else {
        ErrorClass::Fatal
    }
}

/// Whether the error asks for a new token (RSA4b: 40140 ≤ code < 40150).
pub fn is_token_error(err: &ErrorInfo) -> bool {
    (TOKEN_ERROR_FIRST..TOKEN_ERROR_END).contains(&err.code)
}

/// Whether the error is a rate limit (codes 42900–42999, HTTP status 429).
pub fn is_rate_limit(err: &ErrorInfo) -> bool {
    (42_900..43_000).contains(&err.code)
}

/// Whether a DISCONNECTED with this error means "try another host" (RTN17f1: a status
/// from 500 to 504).
pub fn wants_fallback(err: &ErrorInfo) -> bool {
    err.status_code.is_some_and(|s| (500..=504).contains(&s))
}

/// Whether a refused publish says the message is too large: Ably's 40009, or the generic
/// 40000 that Sockudo sends for every refusal, with its "message exceeds N bytes" text.
pub fn is_too_large(err: &ErrorInfo) -> bool {
    if err.code == MESSAGE_TOO_LARGE {
        return true;
    }
    let text = err.message.to_ascii_lowercase();
    err.code == GENERIC_BAD_REQUEST && (text.contains("exceeds") || text.contains("too large"))
}

#[cfg(test)]
mod tests;
