//! Streams OpenAI events through a `Relay` over a live `Client`: the publisher half of the
//! pipeline against a real server, as the daemon will run it (create awaited, appends
//! pipelined, every outcome checked at the end).

use std::time::Duration;

use shared::openai::StreamEvent;
use shared::relay::{PublishOp, Relay, RelayConfig};
use shared::Instant;
use tokio::sync::oneshot;

use crate::realtime::Client;

/// How long to wait for any one ACK.
const ACK_WAIT: Duration = Duration::from_secs(15);

/// Relays `events` to `channel`, `gap` apart, cutting the transport before event `cut_at`
/// if given. Returns the relay once every publish was acknowledged, or the first refusal.
pub async fn relay_events(
    client: &Client,
    channel: &str,
    events: &[StreamEvent],
    config: RelayConfig,
    gap: Duration,
    cut_at: Option<usize>,
) -> Result<Relay, String> {
    let epoch = std::time::Instant::now();
    let now =
        || Instant::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut relay = Relay::new(config);
    let mut pending: Vec<oneshot::Receiver<_>> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if cut_at == Some(i) {
            client.cut();
        }
        relay.handle_event(now(), event);
        relay.handle_timeout(now());
        while let Some(op) = relay.poll_op() {
            match op {
                PublishOp::Create(message) => match client.publish(channel, vec![message]).await {
                    Ok(serials) => match serials.first().cloned().flatten() {
                        Some(serial) => relay.handle_created(now(), serial),
                        None => return Err("the create's ACK carried no serial".into()),
                    },
                    Err(err) => return Err(format!("create refused: {err}")),
                },
                other => {
                    pending.push(client.publish_pipelined(channel, vec![other.into_message()]))
                }
            }
        }
        tokio::time::sleep(gap).await;
    }
    for outcome in pending {
        match tokio::time::timeout(ACK_WAIT, outcome).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(err))) => return Err(format!("publish refused: {err}")),
            Ok(Err(_)) => return Err("the driver stopped".into()),
            Err(_) => return Err(format!("no ACK within {ACK_WAIT:?}")),
        }
    }
    Ok(relay)
}
