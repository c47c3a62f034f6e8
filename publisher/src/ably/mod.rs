//! Ably realtime from tokio: the WebSocket driver of `shared::connection::Connection` and the
//! REST calls the daemon makes (token exchange, history).

mod driver;
mod handle;
mod replies;
pub mod rest;
mod socket;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

pub use handle::{Published, Realtime, Snapshot, Subscription, TokenSource};

pub use shared::connection::errors::APPENDS_NOT_ENABLED;

/// What to tell a user whose channel refuses appends (Ably error 93002).
pub const APPENDS_NOT_ENABLED_HELP: &str = "the Ably channel does not accept appends: in the \
     Ably dashboard, add a channel rule for this namespace (e.g. `ai`) with \"Message \
     annotations, updates, deletes, and appends\" enabled";

/// Replaces every occurrence of `secret` in `text`, so that errors quoting a URL or a
/// header never carry the key.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "***")
}
