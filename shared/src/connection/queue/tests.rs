//! Tests: ACK/NACK matching and msgSerial rules of the publish queue.

use std::time::Duration;

use super::*;

fn queue_with(n: u64) -> PublishQueue {
    let mut q = PublishQueue::default();
    for i in 0..n {
        q.push(
            PublishId(i),
            ChannelName::from("c"),
            vec![Message::default()],
        );
    }
    q
}

fn ok(serial: &str) -> PublishResult {
    PublishResult {
        serials: vec![Some(Serial::from(serial))],
    }
}

#[test]
fn ack_with_count_completes_in_order_by_position() {
    let mut q = queue_with(3);
    let frames = q.send_all();
    assert_eq!(
        frames
            .iter()
            .map(|f| f.msg_serial.unwrap().0)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let done = q.complete(
        Instant::from_millis(0),
        MsgSerial(0),
        2,
        Some(vec![ok("a"), ok("b")]),
        None,
    );
    assert_eq!(done.len(), 2);
    assert_eq!(done[1], (PublishId(1), Ok(vec![Some(Serial::from("b"))])));
    // A repeated ACK finds nothing.
    assert!(q
        .complete(Instant::from_millis(0), MsgSerial(0), 2, None, None)
        .is_empty());
    assert!(!q.is_empty());
}

#[test]
fn a_skipped_serial_waits_for_its_own_ack_then_counts_as_nacked() {
    let grace = Duration::from_secs(10);
    let at = Instant::from_millis;
    let mut q = queue_with(3);
    q.send_all();
    // The ACK for 1 comes first (out of order): 0 is skipped, not failed yet.
    let done = q.complete(at(100), MsgSerial(1), 1, Some(vec![ok("b")]), None);
    assert_eq!(
        done,
        vec![(PublishId(1), Ok(vec![Some(Serial::from("b"))]))]
    );
    assert_eq!(q.skipped_deadline(grace), Some(at(10_100)));
    // Its own ACK arrives late: a success after all.
    let done = q.complete(at(200), MsgSerial(0), 1, Some(vec![ok("a")]), None);
    assert_eq!(
        done,
        vec![(PublishId(0), Ok(vec![Some(Serial::from("a"))]))]
    );
    assert_eq!(q.skipped_deadline(grace), None);
    // 2 is skipped by a NACK for a later frame that never existed... and never ACKed.
    q.push(
        PublishId(3),
        ChannelName::from("c"),
        vec![Message::default()],
    );
    q.send_all();
    let done = q.complete(at(300), MsgSerial(3), 1, Some(vec![ok("d")]), None);
    assert_eq!(done.len(), 1);
    assert!(q.expire_skipped(at(10_299), grace).is_empty());
    let expired = q.expire_skipped(at(10_300), grace);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, PublishId(2));
    assert_eq!(expired[0].1.as_ref().unwrap_err().code, 50001);
    assert!(q.is_empty());
}

#[test]
fn a_resend_forgets_that_a_frame_was_skipped() {
    let grace = Duration::from_secs(10);
    let mut q = queue_with(2);
    q.send_all();
    q.complete(Instant::from_millis(0), MsgSerial(1), 1, None, None);
    q.requeue_in_flight();
    q.send_all();
    assert_eq!(q.skipped_deadline(grace), None);
    assert!(q
        .expire_skipped(Instant::from_millis(60_000), grace)
        .is_empty());
}

#[test]
fn resume_keeps_serials_and_failed_resume_renumbers() {
    let mut q = queue_with(2);
    q.send_all();
    q.push(
        PublishId(9),
        ChannelName::from("c"),
        vec![Message::default()],
    );
    q.requeue_in_flight();
    let resent = q.send_all();
    assert_eq!(
        resent
            .iter()
            .map(|f| f.msg_serial.unwrap().0)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    q.complete(Instant::from_millis(0), MsgSerial(0), 1, None, None);
    q.reset_serials();
    let renumbered = q.send_all();
    assert_eq!(
        renumbered
            .iter()
            .map(|f| f.msg_serial.unwrap().0)
            .collect::<Vec<_>>(),
        [0, 1]
    );
}

#[test]
fn nack_carries_the_error() {
    let mut q = queue_with(1);
    q.send_all();
    let err = ErrorInfo::new(40160, 401, "not permitted");
    let done = q.complete(
        Instant::from_millis(0),
        MsgSerial(0),
        1,
        None,
        Some(err.clone()),
    );
    assert_eq!(done, vec![(PublishId(0), Err(err))]);
}

/// The rules the queue keeps, written the plain way: every frame in flight looked at on
/// every ACK. The queue finds the same frames by position; this is its oracle.
#[derive(Default)]
struct Reference {
    /// (id, msgSerial, skipped since), in msgSerial order.
    in_flight: Vec<(PublishId, u64, Option<Instant>)>,
}

impl Reference {
    fn complete(&mut self, now: Instant, first: u64, count: u32) -> Vec<PublishId> {
        let end = first + u64::from(count.max(1));
        let mut done = Vec::new();
        self.in_flight.retain_mut(|(id, serial, skipped)| {
            if (first..end).contains(serial) {
                done.push(*id);
                return false;
            }
            if *serial < first && skipped.is_none() {
                *skipped = Some(now);
            }
            true
        });
        done
    }

    fn expire(&mut self, now: Instant, grace: Duration) -> Vec<PublishId> {
        let mut done = Vec::new();
        self.in_flight.retain(|(id, _, skipped)| {
            let expired = skipped.is_some_and(|since| since + grace <= now);
            if expired {
                done.push(*id);
            }
            !expired
        });
        done
    }

    fn deadline(&self, grace: Duration) -> Option<Instant> {
        let since = self.in_flight.iter().filter_map(|(_, _, s)| *s).min();
        since.map(|since| since + grace)
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Publish this many frames and send everything unsent.
    Send(u8),
    /// ACK `count` frames from the in-flight frame at this position (modulo), or past
    /// the last one.
    Ack { at: u8, count: u8, nack: bool },
    /// Time passes, then skipped frames past their grace are NACKed.
    Wait(u16),
    /// The transport drops and the frames in flight are sent again (a resume).
    Resend,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        2 => (1u8..5).prop_map(Step::Send),
        4 => (any::<u8>(), 1u8..4, any::<bool>())
            .prop_map(|(at, count, nack)| Step::Ack { at, count, nack }),
        2 => (0u16..6_000).prop_map(Step::Wait),
        1 => Just(Step::Resend),
    ]
}

proptest::proptest! {
    /// Out-of-order, repeated and counted ACKs, NACKs, skips, expiries and resends: the
    /// queue completes exactly the frames the plain reference does, in the same order,
    /// and arms the same skip deadline.
    #[test]
    fn acks_by_position_match_the_plain_reference(
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let grace = Duration::from_secs(10);
        let mut q = PublishQueue::default();
        let mut reference = Reference::default();
        let mut next_id = 0;
        let mut now = Instant::from_millis(0);
        let ids = |done: Vec<(PublishId, PublishOutcome)>| -> Vec<PublishId> {
            done.into_iter().map(|(id, _)| id).collect()
        };
        for step in steps {
            match step {
                Step::Send(n) => {
                    for _ in 0..n {
                        q.push(PublishId(next_id), ChannelName::from("c"), vec![Message::default()]);
                        next_id += 1;
                    }
                    q.send_all();
                    for pending in &q.in_flight {
                        if !reference.in_flight.iter().any(|(id, _, _)| *id == pending.id) {
                            let serial = pending.msg_serial.map_or(u64::MAX, |s| s.0);
                            reference.in_flight.push((pending.id, serial, None));
                        }
                    }
                }
                Step::Ack { at, count, nack } => {
                    let first = match reference.in_flight.len() {
                        0 => q.next_serial,
                        len => reference.in_flight[usize::from(at) % (len + 1)..]
                            .first()
                            .map_or(q.next_serial, |(_, s, _)| *s),
                    };
                    let error = nack.then(|| ErrorInfo::new(50000, 500, "refused"));
                    let got = ids(q.complete(now, MsgSerial(first), u32::from(count), None, error));
                    let want = reference.complete(now, first, u32::from(count));
                    proptest::prop_assert_eq!(got, want);
                }
                Step::Wait(ms) => {
                    now = now + Duration::from_millis(u64::from(ms));
                    let got = ids(q.expire_skipped(now, grace));
                    let want = reference.expire(now, grace);
                    proptest::prop_assert_eq!(got, want);
                }
                Step::Resend => {
                    q.requeue_in_flight();
                    q.send_all();
                    for slot in &mut reference.in_flight {
                        slot.2 = None;
                    }
                }
            }
            proptest::prop_assert_eq!(q.skipped_deadline(grace), reference.deadline(grace));
        }
    }
}
