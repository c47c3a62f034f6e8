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
mod tests {
    use super::*;

    #[test]
    fn names_in_the_namespace_pass() {
        for name in ["ai:demo", "ai:team-7/room_1", "ai:日本", "ai:a:b"] {
            assert_eq!(parse(name, Some("ai")).unwrap().as_str(), name);
        }
    }

    #[test]
    fn other_namespaces_and_lookalikes_are_refused() {
        for name in ["other:x", "aix:demo", "ai", "ai:", "demo", "AI:demo"] {
            let err = parse(name, Some("ai")).unwrap_err();
            assert!(
                matches!(
                    err,
                    ChannelError::UnknownNamespace { .. } | ChannelError::Invalid(_)
                ),
                "{name}: {err:?}"
            );
        }
        assert_eq!(
            parse("other:x", Some("ai")).unwrap_err().code(),
            "unknown_channel_namespace"
        );
    }

    #[test]
    fn wildcards_qualifiers_and_whitespace_are_refused() {
        for name in [
            "ai:*",
            "[?rewind=10]ai:demo",
            "ai:de mo",
            "ai:demo\n",
            "ai:x#y",
            "",
        ] {
            assert!(parse(name, None).is_err(), "{name:?}");
        }
        assert_eq!(
            parse(&format!("ai:{}", "x".repeat(MAX_CHANNEL_LEN)), None),
            Err(ChannelError::TooLong)
        );
        assert_eq!(parse("ai:*", None).unwrap_err().code(), "invalid_channel");
    }
}
