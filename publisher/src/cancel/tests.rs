use super::*;
use shared::protocol::Message;
use shared::ChannelName;

fn message(name: &str, data: Value) -> Event {
    Event::Message {
        channel: ChannelName::from("ai:x"),
        message: Message {
            name: Some(name.to_owned()),
            data: Some(data),
            ..Message::default()
        },
    }
}

#[test]
fn only_cancel_messages_with_a_serial_count() {
    assert_eq!(
        cancel_request(&message("cancel", Value::from("s1"))),
        Some(Serial::from("s1"))
    );
    assert_eq!(cancel_request(&message("cancel", Value::from(" "))), None);
    assert_eq!(cancel_request(&message("cancel", Value::from(3))), None);
    assert_eq!(cancel_request(&message("prompt", Value::from("s1"))), None);
}

#[test]
fn stop_reaches_the_answer_with_that_serial_only() {
    let registry = Registry::default();
    let (a, a_stop) = registry.register();
    let (b, b_stop) = registry.register();
    a.set_serial(&Serial::from("s-a"));
    b.set_serial(&Serial::from("s-b"));
    assert!(registry.stop(&Serial::from("s-a"), Stop::Cancel));
    assert!(!registry.stop(&Serial::from("elsewhere"), Stop::Cancel));
    assert_eq!(*a_stop.borrow(), Stop::Cancel);
    assert_eq!(*b_stop.borrow(), Stop::No);
    drop(a);
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.stop_all(Stop::Shutdown), 1);
    assert_eq!(*b_stop.borrow(), Stop::Shutdown);
    // An answer whose prompt was still being published when every answer was stopped
    // starts stopped, so it ends at once instead of streaming past the shutdown.
    let (_late, late_stop) = registry.register();
    assert_eq!(*late_stop.borrow(), Stop::Shutdown);
}
