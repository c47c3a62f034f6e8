//! One WebSocket for the driver: opened beside its loop, written by a task of its own (so a
//! socket whose peer stops reading never stalls the loop), closed in a task of its own.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the socket brings: a text frame, or its end and why.
pub(super) enum Incoming {
    Text(String),
    Closed(Option<String>),
}

/// How long a closing socket gets for its close handshake, in its own task.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// An open socket: its reading half, and the queue of its writing task. Dropping it closes
/// the socket: the writing task sends what is queued, then a close frame, and ends.
pub(super) struct Socket {
    source: SplitStream<Stream>,
    writes: mpsc::UnboundedSender<String>,
    /// Closed by the writing task when a write fails.
    failed: mpsc::UnboundedReceiver<String>,
    writer: tokio::task::JoinHandle<()>,
}

impl Socket {
    /// Opens a WebSocket; the URL carries the key or token, so an error never quotes it.
    pub(super) async fn open(url: String) -> Result<Self, String> {
        // Nagle's algorithm would hold each small frame until the peer acknowledges the
        // last one: one append per round trip. The writing task batches frames itself.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .map_err(|err| format!("could not open the WebSocket: {}", describe(&err)))?;
        let (sink, source) = ws.split();
        let (writes, queue) = mpsc::unbounded_channel();
        let (report, failed) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_all(sink, queue, report));
        Ok(Self {
            source,
            writes,
            failed,
            writer,
        })
    }

    /// Queues a text frame. If the writing task has stopped, it said why first, and
    /// [`Self::next`] returns that: the frame goes with the socket.
    pub(super) fn send(&self, text: String) {
        let _ = self.writes.send(text);
    }

    /// The next text frame, or why the socket ended (a failed write ends it too).
    pub(super) async fn next(&mut self) -> Incoming {
        loop {
            let frame = tokio::select! {
                frame = self.source.next() => frame,
                Some(why) = self.failed.recv() => return Incoming::Closed(Some(why)),
            };
            return match frame {
                Some(Ok(WsMessage::Text(text))) => Incoming::Text(text.as_str().to_owned()),
                Some(Ok(WsMessage::Close(close))) => {
                    Incoming::Closed(close.map(|c| format!("closed by the server: {}", c.reason)))
                }
                Some(Err(err)) => Incoming::Closed(Some(format!("transport error: {err}"))),
                None => Incoming::Closed(Some("transport closed".to_owned())),
                Some(Ok(_)) => continue,
            };
        }
    }

    /// Drops the socket at once, without a close frame, as a broken network would.
    pub(super) fn cut(self) {
        self.writer.abort();
    }
}

/// The writing task: feeds each queued frame, flushes once the queue is momentarily empty.
async fn write_all(
    mut sink: SplitSink<Stream, WsMessage>,
    mut queue: mpsc::UnboundedReceiver<String>,
    report: mpsc::UnboundedSender<String>,
) {
    while let Some(text) = queue.recv().await {
        let mut result = sink.feed(WsMessage::text(text)).await;
        while let (true, Ok(text)) = (result.is_ok(), queue.try_recv()) {
            result = sink.feed(WsMessage::text(text)).await;
        }
        if let Err(err) = result.and(sink.flush().await) {
            let _ = report.send(format!("send failed: {}", describe(&err)));
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

fn describe(err: &WsError) -> String {
    match err {
        WsError::Io(io) => io.to_string(),
        WsError::Http(response) => format!("HTTP {}", response.status()),
        WsError::Tls(tls) => format!("TLS: {tls}"),
        WsError::Url(_) => "invalid endpoint URL".to_owned(),
        other => other.to_string(),
    }
}
