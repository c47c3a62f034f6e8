//! One browser WebSocket for the page's driver: opened without waiting (the browser connects
//! in the background), written by a local task of its own, closed when dropped.

use futures::channel::mpsc;
use futures::stream::SplitStream;
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::Message as WsMessage;

/// What the socket brings: a text frame, or its end and why.
pub enum Incoming {
    Text(String),
    Closed(String),
}

/// An open socket: its reading half, and the queue of its writing task. Dropping it closes
/// the socket once what is queued has gone.
pub struct Socket {
    source: SplitStream<WebSocket>,
    writes: mpsc::UnboundedSender<String>,
    failed: mpsc::UnboundedReceiver<String>,
}

impl Socket {
    /// Starts opening a WebSocket to `url`; frames queued before it is open wait for it.
    pub fn open(url: &str) -> Result<Self, String> {
        let ws = WebSocket::open(url).map_err(|err| format!("cannot open the WebSocket: {err}"))?;
        let (mut sink, source) = ws.split();
        let (writes, mut queue) = mpsc::unbounded::<String>();
        let (report, failed) = mpsc::unbounded();
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(text) = queue.next().await {
                if let Err(err) = sink.send(WsMessage::Text(text)).await {
                    let _ = report.unbounded_send(format!("send failed: {err}"));
                    return;
                }
            }
            let _ = sink.close().await;
        });
        Ok(Self {
            source,
            writes,
            failed,
        })
    }

    /// Queues a text frame. If the writing task has stopped, it said why first, and
    /// [`Self::next`] returns that: the frame goes with the socket.
    pub fn send(&self, text: String) {
        let _ = self.writes.unbounded_send(text);
    }

    /// The next text frame, or why the socket ended (a failed write ends it too).
    pub async fn next(&mut self) -> Incoming {
        loop {
            let frame = {
                let mut frame = self.source.next().fuse();
                futures::select! {
                    frame = frame => frame,
                    why = self.failed.select_next_some() => return Incoming::Closed(why),
                }
            };
            return match frame {
                Some(Ok(WsMessage::Text(text))) => Incoming::Text(text),
                Some(Ok(WsMessage::Bytes(_))) => continue,
                Some(Err(err)) => Incoming::Closed(format!("WebSocket closed: {err}")),
                None => Incoming::Closed("WebSocket closed".to_owned()),
            };
        }
    }
}
