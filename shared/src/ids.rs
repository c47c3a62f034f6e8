//! Newtypes for the identifiers that cross the wire, so a serial is never mistaken for a name.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value received from or destined for the wire.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value as it travels on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

string_id! {
    /// A message serial (also the type of a version serial). Opaque, but ordered: serials
    /// compare lexicographically, which is the order Ably assigns them in.
    Serial
}

string_id! {
    /// A channel's position marker, kept from ATTACHED and MESSAGE frames and sent back on
    /// re-attach so the server can preserve continuity.
    ChannelSerial
}

string_id! {
    /// A channel name, such as `ai:demo`.
    ChannelName
}

string_id! {
    /// The server's id for one connection; unchanged by a successful resume.
    ConnectionId
}

string_id! {
    /// The secret that lets a client resume its connection after a transport drop.
    ConnectionKey
}

string_id! {
    /// A message id. Set by the publisher so that a frame resent after a cut is applied once.
    MessageId
}

/// The per-connection sequence number of a frame that expects an ACK or NACK.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
#[serde(transparent)]
pub struct MsgSerial(pub u64);

impl fmt::Display for MsgSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
