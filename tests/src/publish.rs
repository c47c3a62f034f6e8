//! Streams OpenAI events through a `Relay` over a live connection: the publisher half of the
//! pipeline against a real server, driven event by event (create awaited, appends
//! pipelined, every outcome checked at the end), for tests that need to cut the transport
//! at an exact point.

use std::time::Duration;

use publisher::ably::{Published, Realtime};
use shared::openai::StreamEvent;
use shared::relay::{PublishOp, Relay, RelayConfig};
use shared::{ChannelName, Instant};

/// How long to wait for any one ACK.
const ACK_WAIT: Duration = Duration::from_secs(15);

/// Relays `events` to `channel`, `gap` apart, cutting the transport before event `cut_at`
/// if given. Returns the relay once every publish was acknowledged, or the first refusal.
pub async fn relay_events(
    realtime: &Realtime,
    channel: &str,
    events: &[StreamEvent],
    config: RelayConfig,
    gap: Duration,
    cut_at: Option<usize>,
) -> Result<Relay, String> {
    let channel = ChannelName::from(channel);
    let epoch = std::time::Instant::now();
    let now =
        || Instant::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut relay = Relay::new(config);
    let mut pending: Vec<Published> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if cut_at == Some(i) {
            realtime.cut();
        }
        relay.handle_event(now(), event);
        relay.handle_timeout(now());
        while let Some(op) = relay.poll_op() {
            match op {
                PublishOp::Create(message) => {
                    match realtime.publish(&channel, vec![message]).await {
                        Ok(serials) => match serials.first().cloned().flatten() {
                            Some(serial) => relay.handle_created(now(), serial),
                            None => return Err("the create's ACK carried no serial".into()),
                        },
                        Err(err) => return Err(format!("create refused: {err}")),
                    }
                }
                other => pending.push(realtime.publish(&channel, vec![other.into_message()])),
            }
        }
        tokio::time::sleep(gap).await;
    }
    for outcome in pending {
        match tokio::time::timeout(ACK_WAIT, outcome).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("publish refused: {err}")),
            Err(_) => return Err(format!("no ACK within {ACK_WAIT:?}")),
        }
    }
    Ok(relay)
}
