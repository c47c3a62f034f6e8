//! Tests: which failures are retried, and after how long.

use super::*;
use crate::openai::recording::Recording;

fn http(status: u16, body: &str) -> Failure {
    Failure::Http {
        error: ApiError::from_body(status, body),
        retry_after_ms: None,
        retry_after: None,
        should_retry: None,
    }
}

const QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

#[test]
fn retryable_statuses_and_connection_errors_back_off_exponentially() {
    let policy = RetryPolicy::default();
    for failure in [
        Failure::Connection,
        http(408, ""),
        http(409, ""),
        http(429, "{}"),
        http(500, ""),
        http(503, ""),
    ] {
        assert_eq!(
            policy.decide(&failure, 0, 0.0),
            Decision::RetryAfter(Duration::from_millis(500)),
            "{failure:?}"
        );
        assert_eq!(
            policy.decide(&failure, 1, 0.0),
            Decision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            policy.decide(&failure, 2, 0.0),
            Decision::GiveUp,
            "two retries by default"
        );
    }
    let patient = RetryPolicy {
        max_retries: 10,
        ..RetryPolicy::default()
    };
    assert_eq!(
        patient.decide(&Failure::Connection, 9, 0.0),
        Decision::RetryAfter(Duration::from_secs(8))
    );
    assert_eq!(
        patient.decide(&Failure::Connection, 0, 0.999),
        Decision::RetryAfter(Duration::from_secs_f64(0.5 * (1.0 - 0.25 * 0.999)))
    );
}

#[test]
fn client_errors_and_quota_exhaustion_are_never_retried() {
    let policy = RetryPolicy::default();
    for status in [400, 401, 403, 404, 422] {
        assert_eq!(
            policy.decide(&http(status, ""), 0, 0.5),
            Decision::GiveUp,
            "{status}"
        );
    }
    assert_eq!(policy.decide(&http(429, QUOTA), 0, 0.5), Decision::GiveUp);
}

#[test]
fn server_headers_steer_the_decision() {
    let policy = RetryPolicy::default();
    let with = |status, ms: Option<&str>, secs: Option<&str>, should: Option<&str>| Failure::Http {
        error: ApiError::from_body(status, ""),
        retry_after_ms: ms.map(str::to_owned),
        retry_after: secs.map(str::to_owned),
        should_retry: should.map(str::to_owned),
    };
    assert_eq!(
        policy.decide(&with(429, Some("750"), Some("1"), None), 0, 0.0),
        Decision::RetryAfter(Duration::from_millis(750))
    );
    assert_eq!(
        policy.decide(&with(429, None, Some("1.5"), None), 0, 0.0),
        Decision::RetryAfter(Duration::from_millis(1500))
    );
    // Longer than 60 s, zero, or an HTTP date: ignored in favour of backoff.
    for secs in [
        "61",
        "0",
        "-1",
        "NaN",
        "1e300",
        "Wed, 21 Oct 2026 07:28:00 GMT",
    ] {
        assert_eq!(
            policy.decide(&with(503, None, Some(secs), None), 0, 0.0),
            Decision::RetryAfter(Duration::from_millis(500)),
            "{secs}"
        );
    }
    assert_eq!(
        policy.decide(&with(503, None, None, Some("false")), 0, 0.0),
        Decision::GiveUp
    );
    assert_eq!(
        policy.decide(&with(400, None, None, Some("true")), 0, 0.0),
        Decision::RetryAfter(Duration::from_millis(500))
    );
}

#[test]
fn error_bodies_become_readable_messages() {
    let quota = ApiError::from_body(429, QUOTA);
    assert!(quota.is_insufficient_quota());
    assert_eq!(
        quota.describe(),
        "OpenAI request failed with HTTP 429: You exceeded your current quota."
    );
    let llama = ApiError::from_body(
        401,
        r#"{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}"#,
    );
    assert_eq!(llama.code.as_deref(), Some("401"));
    let html = ApiError::from_body(502, "<html>Bad gateway</html>");
    assert_eq!(
        html.describe(),
        "OpenAI request failed with HTTP 502: <html>Bad gateway</html>"
    );
    assert_eq!(
        ApiError::from_body(500, "").describe(),
        "OpenAI request failed with HTTP 500: no details"
    );
}

#[test]
fn the_recorded_429_is_retried_after_its_retry_after_ms() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/openai/09_http429_then_success.jsonl"
    ))
    .unwrap();
    let recording = Recording::parse(&text).unwrap();
    let first = &recording.attempts[0];
    let body = String::from_utf8(first.render_body()).unwrap();
    let header = |name: &str| {
        first
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let failure = Failure::Http {
        error: ApiError::from_body(first.status, &body),
        retry_after_ms: header("retry-after-ms"),
        retry_after: header("retry-after"),
        should_retry: header("x-should-retry"),
    };
    assert_eq!(
        RetryPolicy::default().decide(&failure, 0, 0.3),
        Decision::RetryAfter(Duration::from_millis(750))
    );
    assert_eq!(recording.attempts[1].status, 200);
}
