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
