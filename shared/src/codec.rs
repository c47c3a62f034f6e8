//! JSON text frames to and from [`ProtocolMessage`]: the only place that knows the encoding.

use crate::protocol::ProtocolMessage;

/// Largest inbound frame accepted by [`decode`] (Ably's documented maximum frame size).
pub const MAX_FRAME_BYTES: usize = 512 * 1024;

/// Why a frame could not be decoded or encoded.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame is not a JSON object")]
    NotAnObject,
    #[error("malformed frame at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("binary frames (msgpack) are not supported; connect with format=json")]
    Binary,
    #[error("could not encode frame: {0}")]
    Encode(String),
}

/// Decodes one WebSocket text frame.
pub fn decode(text: &str) -> Result<ProtocolMessage, CodecError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            len: text.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    if !text.trim_start().starts_with('{') {
        return Err(CodecError::NotAnObject);
    }
    serde_json::from_str(text).map_err(|e| CodecError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Encodes one frame as compact JSON text.
pub fn encode(message: &ProtocolMessage) -> Result<String, CodecError> {
    serde_json::to_string(message).map_err(|e| CodecError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests;
