//! Short names for the messages a publisher sends, so tests read as the operations they
//! perform.

use crate::ids::Serial;
use crate::protocol::Message;

/// A create named `name` with text data ([`Message::create`]).
pub fn create(name: &str, text: &str) -> Message {
    Message::create(name, text)
}

/// An append of a text fragment to the message `serial` ([`Message::append`]).
pub fn append(serial: &Serial, fragment: &str) -> Message {
    Message::append(serial, fragment)
}

/// An update replacing the text of the message `serial` ([`Message::update`]).
pub fn update(serial: &Serial, text: &str) -> Message {
    Message::update(serial, text)
}

/// A delete of the message `serial`, leaving its data as it was ([`Message::delete`]).
pub fn delete(serial: &Serial) -> Message {
    Message::delete(serial)
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
