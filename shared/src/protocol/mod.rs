//! Ably realtime wire types (JSON protocol, version 6): plain data, no behaviour.
//!
//! Every field is optional on the way in and omitted when empty on the way out; unknown
//! fields are ignored, unknown action numbers decode (see [`action`]).

pub mod action;
pub mod data;
pub mod json_len;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use action::{Action, Flags, MessageAction};
pub use data::{DataError, Payload};

use crate::ids::{
    ChannelName, ChannelSerial, ConnectionId, ConnectionKey, MessageId, MsgSerial, Serial,
};

/// The protocol version this core speaks (`v=` on the connect URL), as ably-js 2.20+ does.
pub const PROTOCOL_VERSION: u32 = 6;

/// One frame of the realtime protocol.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMessage {
    /// What the frame is; missing means HEARTBEAT (ably-go omits a zero action).
    #[serde(default)]
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Flags>,
    /// Number of frames an ACK or NACK covers, from `msg_serial` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// On inbound MESSAGE: `<publisher connectionId>:<msgSerial>`; on HEARTBEAT: the ping id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_serial: Option<ChannelSerial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    /// Deprecated top-level copy of `connection_details.connection_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_key: Option<ConnectionKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_details: Option<ConnectionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_serial: Option<MsgSerial>,
    /// Server time the frame was sent, in ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// Attach params (`rewind`, …) or publish params; numbers and booleans arrive as strings.
    #[serde(
        default,
        deserialize_with = "lenient_params",
        skip_serializing_if = "Option::is_none"
    )]
    pub params: Option<BTreeMap<String, String>>,
    /// ACK only: one result per acknowledged frame, in `msg_serial` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res: Option<Vec<PublishResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthDetails>,
    /// Presence members (kept opaque; this system does not use presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<Value>>,
    /// Annotations (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Value>>,
    /// LiveObjects state (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<Value>>,
}

impl ProtocolMessage {
    /// A frame with only its action set.
    pub fn new(action: Action) -> Self {
        Self {
            action,
            ..Self::default()
        }
    }

    /// Whether a flag bit is set on this frame.
    pub fn has_flag(&self, bit: u64) -> bool {
        self.flags.is_some_and(|flags| flags.has(bit))
    }
}

/// An Ably error, as carried on ERROR, DISCONNECTED, NACK, CONNECTED and ATTACHED frames.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    #[serde(default)]
    pub code: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

impl ErrorInfo {
    /// An error with a code, HTTP-like status and message.
    pub fn new(code: u32, status_code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status_code: Some(status_code),
            message: message.into(),
            href: None,
        }
    }

    /// Token errors (40140–40149) mean "renew the token and try again".
    pub fn is_token_error(&self) -> bool {
        (40140..40150).contains(&self.code)
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {}", self.message, self.code)?;
        if let Some(status) = self.status_code {
            write!(f, ", status {status}")?;
        }
        f.write_str(")")
    }
}

/// What the server says about the connection in CONNECTED.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The key to resume with; the only one ably-js reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_key: Option<ConnectionKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inbound_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outbound_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_code: Option<String>,
    /// How long the server keeps a dropped connection resumable, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state_ttl: Option<u64>,
    /// The longest the server stays silent, in ms; 0 or absent disables the idle check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_interval: Option<u64>,
}

/// The result of one acknowledged frame: one serial per message, `None` if conflated away.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct PublishResult {
    #[serde(default)]
    pub serials: Vec<Option<Serial>>,
}

/// Credentials sent in a client AUTH frame.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthDetails {
    pub access_token: String,
}

/// One message on a channel.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The payload as encoded on the wire; see [`Message::payload`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The transforms applied to `data`, `/`-separated, undone right to left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Opaque extras; this system keeps its metadata in `extras.headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Value>,
    /// The message's permanent serial, the same for every version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
    /// Missing means CREATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<MessageAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MessageVersion>,
    /// When the original was first received, in ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Client-computed size that ably-js sends; servers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Annotation summary (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl Message {
    /// A new message (action CREATE) named `name` with text data.
    pub fn create(name: &str, text: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            data: Some(Value::String(text.to_owned())),
            action: Some(MessageAction::CREATE),
            ..Self::default()
        }
    }

    /// An append (action APPEND) of a text fragment to the message `serial`.
    pub fn append(serial: &Serial, fragment: &str) -> Self {
        Self::targeting(serial, MessageAction::APPEND, Some(fragment))
    }

    /// An update (action UPDATE) replacing the text of the message `serial`.
    pub fn update(serial: &Serial, text: &str) -> Self {
        Self::targeting(serial, MessageAction::UPDATE, Some(text))
    }

    /// A delete (action DELETE) of the message `serial`, leaving its data as it was.
    pub fn delete(serial: &Serial) -> Self {
        Self::targeting(serial, MessageAction::DELETE, None)
    }

    fn targeting(serial: &Serial, action: MessageAction, text: Option<&str>) -> Self {
        Self {
            serial: Some(serial.clone()),
            data: text.map(|t| Value::String(t.to_owned())),
            action: Some(action),
            ..Self::default()
        }
    }

    /// The message's action, CREATE when the wire left it out.
    pub fn action(&self) -> MessageAction {
        self.action.unwrap_or(MessageAction::CREATE)
    }

    /// The version serial, which orders versions of one message.
    pub fn version_serial(&self) -> Option<&Serial> {
        self.version.as_ref().and_then(|v| v.serial.as_ref())
    }

    /// The string headers in `extras.headers`; non-string values are skipped.
    pub fn headers(&self) -> Option<BTreeMap<String, String>> {
        let headers = self.extras.as_ref()?.get("headers")?.as_object()?;
        Some(
            headers
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
        )
    }

    /// One header from `extras.headers`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.extras.as_ref()?.get("headers")?.get(name)?.as_str()
    }

    /// Sets `extras` to `{"headers": {…}}`.
    pub fn set_headers(&mut self, headers: &BTreeMap<String, String>) {
        let map = headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.extras = Some(serde_json::json!({ "headers": Value::Object(map) }));
    }

    /// Sets one string header in `extras.headers`, keeping the others (and creating `extras`
    /// when it is missing or not an object).
    pub fn insert_header(&mut self, name: &str, value: String) {
        let extras = self
            .extras
            .get_or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !extras.is_object() {
            *extras = Value::Object(serde_json::Map::new());
        }
        if let Some(extras) = extras.as_object_mut() {
            let headers = extras
                .entry("headers")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !headers.is_object() {
                *headers = Value::Object(serde_json::Map::new());
            }
            if let Some(headers) = headers.as_object_mut() {
                headers.insert(name.to_owned(), Value::String(value));
            }
        }
    }
}

/// Who changed a message, when, and why.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Accepts `{"rewind": "10"}` and `{"rewind": 10}` alike; drops nulls and nested values.
fn lenient_params<'de, D>(de: D) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(de)?;
    Ok(raw.map(|map| {
        map.into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Number(n) => Some((k, n.to_string())),
                Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect()
    }))
}
