//! Drives one [`Relay`] against a [`SimChannel`] with simulated time: the publisher half of
//! an offline pipeline, shared by the demo and the end-to-end tests.

use std::time::Duration;

use crate::ids::Serial;
use crate::openai::StreamEvent;
use crate::relay::{PublishOp, Relay, RelayConfig};
use crate::time::Instant;

use super::SimChannel;

/// A relay whose publishes go straight into a [`SimChannel`], as an ideal connection would
/// carry them: in order, each ACKed at once, except that the create's serial may reach the
/// relay later (`create_ack_delay`), as it does over a real network.
#[derive(Debug)]
pub struct RelayDriver {
    relay: Relay,
    now: Instant,
    create_ack_delay: Duration,
    /// The create's serial and when its ACK arrives.
    pending_create: Option<(Serial, Instant)>,
    ops: Vec<(Instant, PublishOp)>,
}

impl RelayDriver {
    /// A driver starting at `start` whose create ACKs arrive `create_ack_delay` later.
    pub fn new(config: RelayConfig, start: Instant, create_ack_delay: Duration) -> Self {
        Self {
            relay: Relay::new(config),
            now: start,
            create_ack_delay,
            pending_create: None,
            ops: Vec::new(),
        }
    }

    /// Feeds one stream event at the current time, then publishes what it caused.
    pub fn event(&mut self, channel: &mut SimChannel, event: &StreamEvent) {
        self.relay.handle_event(self.now, event);
        self.pump(channel);
    }

    /// Moves time forward by `by`, stopping at every deadline on the way.
    pub fn advance(&mut self, channel: &mut SimChannel, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [
                self.relay.poll_timeout(),
                self.pending_create.as_ref().map(|(_, at)| *at),
            ]
            .into_iter()
            .flatten()
            .filter(|&at| at > self.now && at <= end)
            .min();
            let Some(next) = next else { break };
            self.now = next;
            self.pump(channel);
        }
        self.now = end;
        self.pump(channel);
    }

    /// Ends the stream (EOF) and runs time until the relay has queued its last publish.
    /// Gives up after a simulated minute, which no window or ACK delay comes near.
    pub fn finish(&mut self, channel: &mut SimChannel) {
        self.relay.handle_stream_end(self.now);
        self.pump(channel);
        let deadline = self.now + Duration::from_secs(60);
        while !self.relay.is_finished() && self.now < deadline {
            self.advance(channel, Duration::from_millis(10));
        }
    }

    /// The relay, for its text, status and headers.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The relay, for cancelling or reporting stream errors.
    pub fn relay_mut(&mut self) -> &mut Relay {
        &mut self.relay
    }

    /// Every publish so far, with the time it was made.
    pub fn ops(&self) -> &[(Instant, PublishOp)] {
        &self.ops
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn pump(&mut self, channel: &mut SimChannel) {
        if let Some((serial, at)) = self.pending_create.take() {
            if at <= self.now {
                self.relay.handle_created(self.now, serial);
            } else {
                self.pending_create = Some((serial, at));
            }
        }
        self.relay.handle_timeout(self.now);
        while let Some(op) = self.relay.poll_op() {
            let is_create = matches!(op, PublishOp::Create(_));
            let result = channel.publish(op.message().clone());
            self.ops.push((self.now, op));
            match result {
                Ok(serial) if is_create => {
                    if self.create_ack_delay.is_zero() {
                        self.relay.handle_created(self.now, serial);
                    } else {
                        self.pending_create = Some((serial, self.now + self.create_ack_delay));
                    }
                }
                Ok(_) => {}
                Err(err) if is_create => self.relay.handle_create_failed(&err.message),
                Err(_) => self.relay.handle_append_failed(self.now),
            }
        }
    }
}
