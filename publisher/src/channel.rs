//! Which channel names the daemon accepts: `namespace:name`, printable, no wildcards or
//! qualifiers, so a prompt or a token can never reach beyond the channel it names.

use shared::ChannelName;

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 200;

/// Why a channel name was refused.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    #[error("channel name `{0}` contains spaces, control characters, wildcards or qualifiers")]
    Invalid(String),
    #[error("channel `{channel}` is outside the `{namespace}:` namespace this daemon serves")]
    UnknownNamespace { channel: String, namespace: String },
}

impl ChannelError {
    /// The machine-readable code of the HTTP error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownNamespace { .. } => "unknown_channel_namespace",
            _ => "invalid_channel",
        }
    }
}

/// Checks `name` and, when `namespace` is given, that it lies in `namespace:`.
pub fn parse(name: &str, namespace: Option<&str>) -> Result<ChannelName, ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '#');
    if name.starts_with('[') || name.starts_with(':') || name.ends_with(':') || name.contains(bad) {
        return Err(ChannelError::Invalid(name.to_owned()));
    }
    if let Some(namespace) = namespace {
        let inside = name
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with(':'));
        if !inside {
            return Err(ChannelError::UnknownNamespace {
                channel: name.to_owned(),
                namespace: namespace.to_owned(),
            });
        }
    }
    Ok(ChannelName::from(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
