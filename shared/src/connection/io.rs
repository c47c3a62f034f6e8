//! What a socket driver does next, one step at a time: the connection's outputs with frames
//! already encoded and the token fetch spelled out, so a driver only carries them out.

use super::{errors, Connection, Event, Output, Transmit};
use crate::codec;
use crate::protocol::ErrorInfo;
use crate::time::Instant;

/// One thing for a driver to do.
// `Event` is nearly every step that is not a frame, and steps are drained one at a time:
// boxing it would cost an allocation per publish outcome for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Io {
    /// Open a WebSocket to this URL, dropping the current one.
    Open { url: String },
    /// Send this text frame on the open WebSocket; if there is one and it cannot take the
    /// frame, report the socket lost ([`Connection::handle_transport_closed`]).
    Send(String),
    /// A frame could not be encoded, so the peer would miss it: drop the socket and report
    /// it lost, and the connection recovers as from a cut. (Our own frames always encode.)
    Lost(String),
    /// Close the WebSocket.
    Close,
    /// Start fetching a token and give the result to [`Connection::set_token`] (or
    /// [`Connection::handle_token_failed`]); the connection asks once at a time.
    FetchToken,
    /// Tell the application.
    Event(Event),
}

impl Connection {
    /// The token fetch started for [`Io::FetchToken`] failed for `reason`, a readable
    /// sentence (a token source's own words, never a secret): as
    /// [`Connection::handle_token_failed`] with error 80019's cause (RSA4c1).
    pub fn handle_token_fetch_failed(&mut self, now: Instant, reason: String) {
        let cause = ErrorInfo::new(errors::TOKEN_CALLBACK_FAILED, 401, reason);
        self.handle_token_failed(now, cause);
    }

    /// The next thing for a driver to do; drain until `None` after every input. The same
    /// outputs as [`Connection::poll_output`], in the same order.
    pub fn poll_io(&mut self) -> Option<Io> {
        if self.fetch_owed {
            self.fetch_owed = false;
            return Some(Io::FetchToken);
        }
        Some(match self.poll_output()? {
            Output::Transmit(Transmit::Open { url }) => Io::Open { url },
            Output::Transmit(Transmit::Frame(frame)) => match codec::encode(&frame) {
                Ok(text) => Io::Send(text),
                Err(err) => Io::Lost(err.to_string()),
            },
            Output::Transmit(Transmit::Close) => Io::Close,
            Output::Event(event) => {
                self.fetch_owed = matches!(event, Event::TokenRequired { .. });
                Io::Event(event)
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::connection::tests::{at, config};
    use crate::connection::{AttachOptions, Auth};
    use crate::ids::ChannelName;

    fn drain(conn: &mut Connection) -> Vec<Io> {
        std::iter::from_fn(|| conn.poll_io()).collect()
    }

    /// The steps are the connection's outputs: an open, then encoded frames a peer decodes
    /// back to the same frames.
    #[test]
    fn frames_come_encoded_in_the_connections_order() {
        let mut conn = Connection::new(config());
        conn.connect(at(0));
        let opened = drain(&mut conn);
        let url = opened.iter().find_map(|io| match io {
            Io::Open { url } => Some(url.as_str()),
            _ => None,
        });
        assert!(
            url.is_some_and(|u| u.contains("127.0.0.1:6001")),
            "{opened:?}"
        );
        conn.handle_text(
            at(1),
            r#"{"action":4,"connectionId":"c1","connectionDetails":{"connectionKey":"c1!k"}}"#,
        )
        .unwrap();
        drain(&mut conn);
        conn.attach(at(2), ChannelName::from("ai:a"), AttachOptions::default())
            .unwrap();
        let sent: Vec<String> = drain(&mut conn)
            .into_iter()
            .filter_map(|io| match io {
                Io::Send(text) => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let frame = codec::decode(&sent[0]).unwrap();
        assert_eq!(
            frame.channel.as_ref().map(ChannelName::as_str),
            Some("ai:a")
        );
    }

    /// RTN22: a server's AUTH is told to the application and then asks the driver, once,
    /// for a token fetch.
    #[test]
    fn a_token_request_is_followed_by_one_fetch() {
        let mut config = config();
        config.auth = Auth::Token("old".into());
        let mut conn = Connection::new(config);
        conn.connect(at(0));
        conn.handle_text(
            at(1),
            r#"{"action":4,"connectionId":"c1","connectionDetails":{"connectionKey":"c1!k"}}"#,
        )
        .unwrap();
        drain(&mut conn);
        conn.handle_text(at(2), r#"{"action":17}"#).unwrap();
        let steps = drain(&mut conn);
        assert!(
            matches!(
                steps.as_slice(),
                [Io::Event(Event::TokenRequired { .. }), Io::FetchToken]
            ),
            "{steps:?}"
        );
        assert!(drain(&mut conn).is_empty());
    }
}
