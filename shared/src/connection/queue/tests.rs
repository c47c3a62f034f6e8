//! Tests: ACK/NACK matching and msgSerial rules of the publish queue.

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
    let done = q.complete(MsgSerial(0), 2, Some(vec![ok("a"), ok("b")]), None);
    assert_eq!(done.len(), 2);
    assert_eq!(done[1], (PublishId(1), Ok(vec![Some(Serial::from("b"))])));
    // A repeated ACK finds nothing.
    assert!(q.complete(MsgSerial(0), 2, None, None).is_empty());
    assert!(!q.is_empty());
}

#[test]
fn skipped_serials_are_implicit_nacks() {
    let mut q = queue_with(2);
    q.send_all();
    let done = q.complete(MsgSerial(1), 1, Some(vec![ok("b")]), None);
    assert_eq!(done[0].0, PublishId(0));
    assert_eq!(done[0].1.as_ref().unwrap_err().code, 50001);
    assert!(done[1].1.is_ok());
    assert!(q.is_empty());
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
    q.complete(MsgSerial(0), 1, None, None);
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
    let done = q.complete(MsgSerial(0), 1, None, Some(err.clone()));
    assert_eq!(done, vec![(PublishId(0), Err(err))]);
}
