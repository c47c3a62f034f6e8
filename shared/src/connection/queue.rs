//! Outbound publishes: queued until a transport is up, in flight until ACKed or NACKed.

use std::collections::VecDeque;
use std::time::Duration;

use crate::ids::{ChannelName, MsgSerial, Serial};
use crate::protocol::{Action, ErrorInfo, Message, ProtocolMessage, PublishResult};
use crate::time::Instant;

/// Identifies one `publish` call until its result arrives.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct PublishId(pub u64);

/// What became of one publish: a serial per message (`None` if conflated away), or the error.
pub type PublishOutcome = Result<Vec<Option<Serial>>, ErrorInfo>;

#[derive(Debug)]
struct Pending {
    id: PublishId,
    channel: ChannelName,
    messages: Vec<Message>,
    msg_serial: Option<MsgSerial>,
    /// When an ACK or NACK for a later frame arrived while this one had none.
    skipped_since: Option<Instant>,
}

impl Pending {
    fn frame(&self) -> ProtocolMessage {
        ProtocolMessage {
            channel: Some(self.channel.clone()),
            messages: Some(self.messages.clone()),
            msg_serial: self.msg_serial,
            ..ProtocolMessage::new(Action::MESSAGE)
        }
    }
}

/// The publish queue of one connection.
#[derive(Debug, Default)]
pub(crate) struct PublishQueue {
    /// Not yet sent on the current transport, oldest first.
    unsent: VecDeque<Pending>,
    /// Sent and awaiting ACK/NACK, in msgSerial order.
    in_flight: VecDeque<Pending>,
    /// The msgSerial the next new frame gets.
    next_serial: u64,
    /// Every frame in flight below this msgSerial has been skipped by a later ACK or NACK
    /// (has `skipped_since`), and none at or above it has: the skipped frames are a prefix
    /// of `in_flight`, noted in msgSerial order, so their times never decrease along it.
    skipped_below: u64,
}

impl PublishQueue {
    pub(crate) fn push(&mut self, id: PublishId, channel: ChannelName, messages: Vec<Message>) {
        self.unsent.push_back(Pending {
            id,
            channel,
            messages,
            msg_serial: None,
            skipped_since: None,
        });
    }

    /// Frames to send now: unsent publishes get the next msgSerial unless they already
    /// hold one (a frame resent after a successful resume keeps its msgSerial).
    pub(crate) fn send_all(&mut self) -> Vec<ProtocolMessage> {
        let mut frames = Vec::with_capacity(self.unsent.len());
        while let Some(mut pending) = self.unsent.pop_front() {
            if pending.msg_serial.is_none() {
                pending.msg_serial = Some(MsgSerial(self.next_serial));
                self.next_serial += 1;
            }
            frames.push(pending.frame());
            self.in_flight.push_back(pending);
        }
        frames
    }

    /// The transport dropped: everything in flight goes back to the front, in order.
    pub(crate) fn requeue_in_flight(&mut self) {
        self.skipped_below = 0;
        while let Some(mut pending) = self.in_flight.pop_back() {
            pending.skipped_since = None;
            self.unsent.push_front(pending);
        }
    }

    /// A new connection (failed resume): msgSerial restarts at 0 and pending frames are
    /// renumbered when next sent. Message ids are kept, so the server can still
    /// recognise a frame it already applied.
    pub(crate) fn reset_serials(&mut self) {
        self.requeue_in_flight();
        for pending in &mut self.unsent {
            pending.msg_serial = None;
        }
        self.next_serial = 0;
        self.skipped_below = 0;
    }

    /// Applies an ACK (`error == None`) or NACK for `count` frames from `first`, giving
    /// `res` to the acknowledged frames in msgSerial order. A repeated ACK for frames
    /// already completed finds nothing and is ignored.
    ///
    /// Frames before `first` still in flight were skipped by this ACK. The protocol counts
    /// them as NACKed at once; some servers (Sockudo under load) acknowledge out of order,
    /// so a skipped frame is only noted here, and NACKed by [`Self::expire_skipped`] if
    /// its own ACK does not follow within the grace period.
    ///
    /// `in_flight` is in msgSerial order, so the acknowledged frames are found by binary
    /// search (an ACK in order finds them at the front) and each skipped frame is noted
    /// once: the cost is the frames completed or newly skipped, not the frames in flight.
    pub(crate) fn complete(
        &mut self,
        now: Instant,
        first: MsgSerial,
        count: u32,
        res: Option<Vec<PublishResult>>,
        error: Option<ErrorInfo>,
    ) -> Vec<(PublishId, PublishOutcome)> {
        let end = first.0.saturating_add(u64::from(count.max(1)));
        let serial_of = |p: &Pending| p.msg_serial.map_or(u64::MAX, |s| s.0);
        let from = self.in_flight.partition_point(|p| serial_of(p) < first.0);
        let to = from
            + self
                .in_flight
                .range(from..)
                .take_while(|p| serial_of(p) < end)
                .count();
        if first.0 > self.skipped_below {
            let noted = self
                .in_flight
                .partition_point(|p| serial_of(p) < self.skipped_below);
            for pending in self.in_flight.range_mut(noted..from) {
                pending.skipped_since.get_or_insert(now);
            }
            self.skipped_below = first.0;
        }
        let mut results = res.unwrap_or_default().into_iter();
        self.in_flight
            .drain(from..to)
            .map(|pending| {
                let outcome = match &error {
                    Some(err) => Err(err.clone()),
                    None => Ok(results.next().map(|r| r.serials).unwrap_or_default()),
                };
                (pending.id, outcome)
            })
            .collect()
    }

    /// NACKs the skipped frames whose own ACK has not come within `grace`: a prefix of the
    /// frames in flight, since they were noted in order.
    pub(crate) fn expire_skipped(
        &mut self,
        now: Instant,
        grace: Duration,
    ) -> Vec<(PublishId, PublishOutcome)> {
        let mut done = Vec::new();
        while let Some(pending) = self.in_flight.front() {
            let expired = pending
                .skipped_since
                .is_some_and(|since| since + grace <= now);
            if !expired {
                break;
            }
            if let Some(pending) = self.in_flight.pop_front() {
                done.push((
                    pending.id,
                    Err(ErrorInfo::new(
                        50001,
                        500,
                        "frame skipped by the server (implicit NACK)",
                    )),
                ));
            }
        }
        done
    }

    /// When the oldest skipped frame's grace period ends, if any frame is skipped: the
    /// first in flight, when it is skipped at all.
    pub(crate) fn skipped_deadline(&self, grace: Duration) -> Option<Instant> {
        self.in_flight
            .front()
            .and_then(|p| p.skipped_since)
            .map(|since| since + grace)
    }

    /// Fails every publish, sent or not (connection suspended, closed or failed).
    pub(crate) fn fail_all(&mut self, error: &ErrorInfo) -> Vec<(PublishId, PublishOutcome)> {
        self.requeue_in_flight();
        self.unsent
            .drain(..)
            .map(|p| (p.id, Err(error.clone())))
            .collect()
    }

    /// Fails the unsent publishes of one channel (the channel failed).
    pub(crate) fn fail_channel(
        &mut self,
        channel: &ChannelName,
        error: &ErrorInfo,
    ) -> Vec<(PublishId, PublishOutcome)> {
        let (failed, kept): (VecDeque<_>, VecDeque<_>) =
            self.unsent.drain(..).partition(|p| &p.channel == channel);
        self.unsent = kept;
        failed
            .into_iter()
            .map(|p| (p.id, Err(error.clone())))
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.unsent.is_empty() && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests;
