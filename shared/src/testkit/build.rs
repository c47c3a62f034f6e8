//! Builders for the messages a publisher sends, so tests read as the operations they perform.

use serde_json::Value;

use crate::ids::Serial;
use crate::protocol::{Message, MessageAction};

/// A create (action 0) named `name` with text data.
pub fn create(name: &str, text: &str) -> Message {
    Message {
        name: Some(name.to_owned()),
        data: Some(Value::String(text.to_owned())),
        action: Some(MessageAction::CREATE),
        ..Message::default()
    }
}

/// An append (action 5) of a text fragment to the message `serial`.
pub fn append(serial: &Serial, fragment: &str) -> Message {
    Message {
        serial: Some(serial.clone()),
        data: Some(Value::String(fragment.to_owned())),
        action: Some(MessageAction::APPEND),
        ..Message::default()
    }
}

/// An update (action 1) replacing the text of the message `serial`.
pub fn update(serial: &Serial, text: &str) -> Message {
    Message {
        serial: Some(serial.clone()),
        data: Some(Value::String(text.to_owned())),
        action: Some(MessageAction::UPDATE),
        ..Message::default()
    }
}

/// A delete (action 2) of the message `serial`, leaving its data as it was.
pub fn delete(serial: &Serial) -> Message {
    Message {
        serial: Some(serial.clone()),
        action: Some(MessageAction::DELETE),
        ..Message::default()
    }
}

/// `msg` with `extras` set to `{"headers": {…}}` holding `headers`.
pub fn with_headers(mut msg: Message, headers: &[(&str, &str)]) -> Message {
    let headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    msg.set_headers(&headers);
    msg
}
