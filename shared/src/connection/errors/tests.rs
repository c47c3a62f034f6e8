//! Error classification against the code ranges the spec and Ably's error list give.

use super::*;

fn err(code: u32, status: u16) -> ErrorInfo {
    ErrorInfo::new(code, status, "x")
}

#[test]
fn rsa4b_token_errors_are_exactly_40140_to_40149() {
    assert_eq!(classify(&err(40139, 401)), ErrorClass::Fatal);
    assert_eq!(classify(&err(TOKEN_ERROR_FIRST, 401)), ErrorClass::Token);
    assert_eq!(classify(&err(TOKEN_EXPIRED, 401)), ErrorClass::Token);
    assert_eq!(classify(&err(40149, 401)), ErrorClass::Token);
    assert_eq!(classify(&err(TOKEN_ERROR_END, 401)), ErrorClass::Fatal);
}

#[test]
fn rate_limits_back_off_and_are_not_fatal() {
    for code in [
        RATE_LIMIT_GENERIC,
        RATE_LIMIT_CONNECTION_PUBLISH,
        RATE_LIMIT_CHANNEL_ENUMERATION,
        RATE_LIMIT_CONNECTION_OUTBOUND,
        RATE_LIMIT_CONNECTION_TERMINATED,
        RATE_LIMIT_PUBLISH_TERMINATED,
        RATE_LIMIT_CONNECTION_PROTOCOL,
    ] {
        assert_eq!(classify(&err(code, 429)), ErrorClass::RateLimited, "{code}");
    }
    assert_eq!(classify(&err(INTERNAL_ERROR, 500)), ErrorClass::Fatal);
    assert_eq!(
        classify(&err(CHANNEL_CONTINUITY_LOST, 500)),
        ErrorClass::Channel
    );
}

#[test]
fn rtn17f1_only_500_to_504_statuses_ask_for_a_fallback_host() {
    assert!(!wants_fallback(&err(DISCONNECTED, 499)));
    assert!(wants_fallback(&err(DISCONNECTED, 500)));
    assert!(wants_fallback(&err(DISCONNECTED, 504)));
    assert!(!wants_fallback(&err(DISCONNECTED, 505)));
    assert!(!wants_fallback(&ErrorInfo::default()));
}

#[test]
fn too_large_is_40009_or_sockudos_40000_with_its_size_text() {
    assert!(is_too_large(&ErrorInfo::new(
        40009,
        413,
        "Message too large"
    )));
    assert!(is_too_large(&ErrorInfo::new(
        40000,
        400,
        "Failed to publish message 0: invalid input: message exceeds 65536 bytes"
    )));
    assert!(!is_too_large(&ErrorInfo::new(
        40000,
        400,
        "invalid input: message.id was already used with a different payload"
    )));
    assert!(!is_too_large(&ErrorInfo::new(
        93002,
        400,
        "too large a request"
    )));
}
