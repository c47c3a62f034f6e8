//! Message payloads and the `encoding` chain (`json`, `utf-8`, `base64`) of the JSON protocol.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

use super::json_len::json_len;
use super::Message;

/// A decoded message payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// No data.
    Empty,
    /// A string, sent raw.
    Text(String),
    /// An object or array, sent as a JSON string with encoding `json`.
    Json(Value),
    /// Bytes, sent as base64 with encoding `base64`.
    Binary(Vec<u8>),
}

/// Why a payload could not be decoded.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error(
        "encoding step `{0}` is not supported (encrypted or delta payloads are not used here)"
    )]
    UnsupportedEncoding(String),
    #[error("encoding step `{step}` expects {expected}")]
    WrongType {
        step: String,
        expected: &'static str,
    },
    #[error("invalid base64 payload: {0}")]
    Base64(String),
    #[error("payload bytes are not UTF-8")]
    Utf8,
    #[error("payload marked `json` does not parse: {0}")]
    Json(String),
}

impl Message {
    /// Decodes `data` by undoing the `encoding` chain from right to left.
    pub fn payload(&self) -> Result<Payload, DataError> {
        let mut current = match &self.data {
            None | Some(Value::Null) => return Ok(Payload::Empty),
            Some(Value::String(s)) => Payload::Text(s.clone()),
            Some(other) => Payload::Json(other.clone()),
        };
        let Some(encoding) = self.encoding.as_deref() else {
            return Ok(current);
        };
        for step in encoding.rsplit('/').filter(|s| !s.is_empty()) {
            current = match (step, current) {
                ("base64", Payload::Text(s)) => Payload::Binary(
                    BASE64
                        .decode(s.as_bytes())
                        .map_err(|e| DataError::Base64(e.to_string()))?,
                ),
                ("utf-8" | "utf8", Payload::Binary(bytes)) => {
                    Payload::Text(String::from_utf8(bytes).map_err(|_| DataError::Utf8)?)
                }
                ("utf-8" | "utf8", text @ Payload::Text(_)) => text,
                ("json", Payload::Text(s)) => Payload::Json(
                    serde_json::from_str(&s).map_err(|e| DataError::Json(e.to_string()))?,
                ),
                ("base64", _) => return Err(wrong(step, "a string")),
                ("utf-8" | "utf8", _) => return Err(wrong(step, "bytes")),
                ("json", _) => return Err(wrong(step, "a string")),
                (other, _) => return Err(DataError::UnsupportedEncoding(other.to_owned())),
            };
        }
        Ok(current)
    }

    /// The payload as text: a string, or bytes that are valid UTF-8. Empty data is `""`.
    pub fn text(&self) -> Result<String, DataError> {
        match self.payload()? {
            Payload::Empty => Ok(String::new()),
            Payload::Text(s) => Ok(s),
            Payload::Binary(bytes) => String::from_utf8(bytes).map_err(|_| DataError::Utf8),
            Payload::Json(_) => Err(DataError::WrongType {
                step: "text".into(),
                expected: "a string",
            }),
        }
    }

    /// Encodes `payload` into `data` and `encoding` the way the JSON protocol sends it.
    pub fn set_payload(&mut self, payload: Payload) {
        let (data, encoding) = match payload {
            Payload::Empty => (None, None),
            Payload::Text(s) => (Some(Value::String(s)), None),
            Payload::Json(v) => (Some(Value::String(v.to_string())), Some("json".to_owned())),
            Payload::Binary(b) => (
                Some(Value::String(BASE64.encode(b))),
                Some("base64".to_owned()),
            ),
        };
        self.data = data;
        self.encoding = encoding;
    }

    /// The size Ably counts against `maxMessageSize`: name, clientId and extras (as JSON)
    /// plus the encoded data's bytes.
    pub fn wire_size(&self) -> usize {
        let data = match &self.data {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) => s.len(),
            Some(other) => json_len(other),
        };
        let extras = self.extras.as_ref().map_or(0, json_len);
        data + extras
            + self.name.as_deref().map_or(0, str::len)
            + self.client_id.as_deref().map_or(0, str::len)
    }
}

fn wrong(step: &str, expected: &'static str) -> DataError {
    DataError::WrongType {
        step: step.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests;
