//! Tests: Open newtypes for actions and flags.

use super::*;

#[test]
fn unknown_values_survive_and_print_their_number() {
    let unknown: Action = serde_json::from_str("42").unwrap();
    assert_eq!(unknown, Action(42));
    assert_eq!(format!("{unknown:?}"), "Action(42)");
    assert_eq!(serde_json::to_string(&unknown).unwrap(), "42");
    assert_eq!(format!("{:?}", Action::ATTACHED), "ATTACHED");
    assert_eq!(MessageAction(9).js_name(), "unknown");
    assert_eq!(MessageAction::APPEND.js_name(), "message.append");
}

#[test]
fn flags_decompose_the_real_server_default() {
    let flags = Flags(3_080_192 | Flags::HAS_BACKLOG);
    assert!(flags.has(Flags::SUBSCRIBE));
    assert!(flags.has(Flags::PUBLISH));
    assert!(flags.has(Flags::HAS_BACKLOG));
    assert!(!flags.has(Flags::RESUMED));
}
