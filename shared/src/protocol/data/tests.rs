//! Tests: The encoding chain, both ways, and bad payloads.

use super::*;

fn msg(data: Value, encoding: Option<&str>) -> Message {
    Message {
        data: Some(data),
        encoding: encoding.map(str::to_owned),
        ..Message::default()
    }
}

#[test]
fn decodes_the_three_json_protocol_shapes() {
    assert_eq!(
        msg("Hello".into(), None).payload(),
        Ok(Payload::Text("Hello".into()))
    );
    assert_eq!(
        msg("{\"a\":1}".into(), Some("json")).payload(),
        Ok(Payload::Json(serde_json::json!({"a": 1})))
    );
    assert_eq!(
        msg("AQID".into(), Some("base64")).payload(),
        Ok(Payload::Binary(vec![1, 2, 3]))
    );
    assert_eq!(
        msg("aGk=".into(), Some("utf-8/base64")).payload(),
        Ok(Payload::Text("hi".into()))
    );
    assert_eq!(Message::default().payload(), Ok(Payload::Empty));
}

#[test]
fn bad_encodings_are_errors_not_panics() {
    assert!(matches!(
        msg("!!".into(), Some("base64")).payload(),
        Err(DataError::Base64(_))
    ));
    assert!(matches!(
        msg("{".into(), Some("json")).payload(),
        Err(DataError::Json(_))
    ));
    assert_eq!(
        msg("eHg=".into(), Some("utf-8/cipher+aes-256-cbc/base64")).payload(),
        Err(DataError::UnsupportedEncoding("cipher+aes-256-cbc".into()))
    );
    assert!(matches!(
        msg("/w==".into(), Some("utf-8/base64")).payload(),
        Err(DataError::Utf8)
    ));
    assert!(msg(serde_json::json!(5), Some("base64")).payload().is_err());
}

#[test]
fn set_payload_round_trips() {
    for payload in [
        Payload::Empty,
        Payload::Text("héllo".into()),
        Payload::Json(serde_json::json!([1, {"b": null}])),
        Payload::Binary(vec![0, 255, 7]),
    ] {
        let mut m = Message::default();
        m.set_payload(payload.clone());
        assert_eq!(m.payload(), Ok(payload));
    }
}
