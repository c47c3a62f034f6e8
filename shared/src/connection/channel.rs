//! Per-channel state: attach lifecycle, continuity serial and the attach options.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{ChannelName, ChannelSerial};
use crate::protocol::{Action, ErrorInfo, ProtocolMessage};
use crate::time::Instant;

/// Channel states, as Ably names them.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum ChannelState {
    Initialized,
    Attaching,
    Attached,
    Detaching,
    Detached,
    Suspended,
    Failed,
}

impl ChannelState {
    /// Ably's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialized => "initialized",
            Self::Attaching => "attaching",
            Self::Attached => "attached",
            Self::Detaching => "detaching",
            Self::Detached => "detached",
            Self::Suspended => "suspended",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ChannelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to attach.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct AttachOptions {
    /// Replay history on the first attach: `"100"` (messages) or `"2m"` (time).
    pub rewind: Option<String>,
    /// Other channel params, sent as they are.
    pub params: BTreeMap<String, String>,
    /// Re-attach without the channel position, so nothing missed is replayed: for clients
    /// that only listen for requests (the publisher listening for `cancel`), for which a
    /// replay of the whole channel would be all cost.
    pub skip_backlog: bool,
}

impl AttachOptions {
    /// Attach with a rewind of the last `n` messages.
    pub fn rewind(n: u32) -> Self {
        Self {
            rewind: Some(n.to_string()),
            ..Self::default()
        }
    }

    /// Attach from now on, and re-attach from now on after any gap (see `skip_backlog`).
    pub fn live_only() -> Self {
        Self {
            skip_backlog: true,
            ..Self::default()
        }
    }
}

/// What the connection keeps for one channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) name: ChannelName,
    pub(crate) state: ChannelState,
    pub(crate) options: AttachOptions,
    /// Last position seen; sent back on re-attach. Cleared when the channel goes
    /// `detached` or `failed`, kept when it goes `suspended` (RTL15b2).
    pub(crate) channel_serial: Option<ChannelSerial>,
    /// Position of the last non-resumed attach (for history `untilAttach`).
    pub(crate) attach_serial: Option<ChannelSerial>,
    /// ATTACHED (or DETACHED) must arrive before this, or a suspended channel retries then.
    pub(crate) deadline: Option<Instant>,
    pub(crate) reason: Option<ErrorInfo>,
    /// The application attached the channel and has not detached it since: a revived
    /// connection attaches it again.
    pub(crate) wanted: bool,
}

impl Channel {
    pub(crate) fn new(name: ChannelName, options: AttachOptions) -> Self {
        Self {
            name,
            state: ChannelState::Initialized,
            options,
            channel_serial: None,
            attach_serial: None,
            deadline: None,
            reason: None,
            wanted: false,
        }
    }

    /// The ATTACH frame: with the continuity serial when there is one, otherwise with
    /// the rewind and params (rewind applies to the first attach only).
    pub(crate) fn attach_frame(&self) -> ProtocolMessage {
        let mut frame = ProtocolMessage {
            channel: Some(self.name.clone()),
            ..ProtocolMessage::new(Action::ATTACH)
        };
        match &self.channel_serial {
            Some(serial) if !self.options.skip_backlog => {
                frame.channel_serial = Some(serial.clone());
            }
            _ => {
                let mut params = self.options.params.clone();
                if let Some(rewind) = &self.options.rewind {
                    params.insert("rewind".to_owned(), rewind.clone());
                }
                if !params.is_empty() {
                    frame.params = Some(params);
                }
            }
        }
        frame
    }

    pub(crate) fn detach_frame(&self) -> ProtocolMessage {
        ProtocolMessage {
            channel: Some(self.name.clone()),
            ..ProtocolMessage::new(Action::DETACH)
        }
    }

    /// Whether the channel wants to be attached whenever a transport is up.
    pub(crate) fn wants_attach(&self) -> bool {
        matches!(
            self.state,
            ChannelState::Attaching | ChannelState::Attached | ChannelState::Suspended
        )
    }
}
