//! Open newtypes for the numeric codes on the wire: values we do not know still decode.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares an open newtype over an integer with named constants. `Debug` prints the
/// constant's name when the value is known and `Name(value)` otherwise.
macro_rules! open_code {
    ($(#[$doc:meta])* $name:ident($repr:ty) { $($(#[$cdoc:meta])* $konst:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cdoc])* pub const $konst: Self = Self($value);)*

            /// The constant's name, if this value is one we know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($konst)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }
    };
}

open_code! {
    /// The `action` of a ProtocolMessage. A frame without one is a HEARTBEAT.
    Action(u8) {
        HEARTBEAT = 0,
        ACK = 1,
        NACK = 2,
        CONNECT = 3,
        CONNECTED = 4,
        DISCONNECT = 5,
        DISCONNECTED = 6,
        CLOSE = 7,
        CLOSED = 8,
        ERROR = 9,
        ATTACH = 10,
        ATTACHED = 11,
        DETACH = 12,
        DETACHED = 13,
        PRESENCE = 14,
        MESSAGE = 15,
        SYNC = 16,
        AUTH = 17,
        ACTIVATE = 18,
        OBJECT = 19,
        OBJECT_SYNC = 20,
        ANNOTATION = 21,
    }
}

open_code! {
    /// The `action` of a Message: what the message does to the message its serial names.
    MessageAction(u8) {
        /// A new message.
        CREATE = 0,
        /// The full latest version, replacing what came before (also aggregated appends).
        UPDATE = 1,
        /// A soft delete: the latest version, marked deleted.
        DELETE = 2,
        /// Ably-originated metadata.
        META = 3,
        /// An annotation summary.
        SUMMARY = 4,
        /// A fragment to concatenate onto the message's data.
        APPEND = 5,
    }
}

impl MessageAction {
    /// The name ably-js gives this action (`message.create`, …), or `unknown`.
    pub fn js_name(self) -> &'static str {
        match self {
            Self::CREATE => "message.create",
            Self::UPDATE => "message.update",
            Self::DELETE => "message.delete",
            Self::META => "meta",
            Self::SUMMARY => "message.summary",
            Self::APPEND => "message.append",
            _ => "unknown",
        }
    }
}

/// Bits of the `flags` field on ATTACH and ATTACHED.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Flags(pub u64);

impl Flags {
    /// The channel has presence members to sync.
    pub const HAS_PRESENCE: u64 = 1 << 0;
    /// A rewind or resume backlog follows the ATTACHED.
    pub const HAS_BACKLOG: u64 = 1 << 1;
    /// The attachment continued without loss from the channel serial the client sent.
    pub const RESUMED: u64 = 1 << 2;
    /// The channel is attached transiently.
    pub const TRANSIENT: u64 = 1 << 4;
    /// Deprecated client flag asking to resume an attachment.
    pub const ATTACH_RESUME: u64 = 1 << 5;
    /// The channel has LiveObjects state.
    pub const HAS_OBJECTS: u64 = 1 << 7;
    /// Mode: may enter presence.
    pub const PRESENCE: u64 = 1 << 16;
    /// Mode: may publish.
    pub const PUBLISH: u64 = 1 << 17;
    /// Mode: receives messages.
    pub const SUBSCRIBE: u64 = 1 << 18;
    /// Mode: receives presence.
    pub const PRESENCE_SUBSCRIBE: u64 = 1 << 19;

    /// Whether every bit of `bit` is set.
    pub fn has(self, bit: u64) -> bool {
        self.0 & bit == bit
    }
}

#[cfg(test)]
mod tests;
