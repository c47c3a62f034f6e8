//! Outbound publishes: queued until a transport is up, in flight until ACKed or NACKed.

use std::collections::VecDeque;

use crate::ids::{ChannelName, MsgSerial, Serial};
use crate::protocol::{Action, ErrorInfo, Message, ProtocolMessage, PublishResult};

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
}

impl PublishQueue {
    pub(crate) fn push(&mut self, id: PublishId, channel: ChannelName, messages: Vec<Message>) {
        self.unsent.push_back(Pending {
            id,
            channel,
            messages,
            msg_serial: None,
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
        while let Some(pending) = self.in_flight.pop_back() {
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
    }

    /// Applies an ACK (`error == None`) or NACK for `count` frames from `first`.
    /// In-flight frames before `first` were skipped by the server: they count as NACKed.
    /// A repeated ACK for frames already completed finds nothing and is ignored.
    pub(crate) fn complete(
        &mut self,
        first: MsgSerial,
        count: u32,
        res: Option<Vec<PublishResult>>,
        error: Option<ErrorInfo>,
    ) -> Vec<(PublishId, PublishOutcome)> {
        let end = first.0.saturating_add(u64::from(count.max(1)));
        let mut results = res.unwrap_or_default().into_iter();
        let mut done = Vec::new();
        while let Some(front) = self.in_flight.front() {
            let Some(serial) = front.msg_serial else {
                break;
            };
            if serial.0 >= end {
                break;
            }
            let Some(pending) = self.in_flight.pop_front() else {
                break;
            };
            let outcome = if serial.0 < first.0 {
                Err(ErrorInfo::new(
                    50001,
                    500,
                    "frame skipped by the server (implicit NACK)",
                ))
            } else if let Some(err) = &error {
                Err(err.clone())
            } else {
                Ok(results.next().map(|r| r.serials).unwrap_or_default())
            };
            done.push((pending.id, outcome));
        }
        done
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
