//! Tests: MACs against a request ably-js signed, capabilities, and refused requests.

use super::*;

fn key() -> ApiKey {
    ApiKey::parse("appId.keyId:secret").unwrap()
}

#[test]
fn mac_matches_the_request_ably_js_signed() {
    // Captured from ably-js 2.28.0: no ttl, capability or clientId.
    let request = TokenRequest::sign(
        &key(),
        &TokenParams::default(),
        1_795_755_526_586,
        "7680679348716890",
    )
    .unwrap();
    assert_eq!(
        request.signing_text(),
        "appId.keyId\n\n\n\n1795755526586\n7680679348716890\n"
    );
    assert_eq!(request.mac, "5z840tpMiXTAgvf6Wh+CkM8YyB0WoTGl1xlYtvNOdos=");
    assert!(request.verify(&key()));
    let json = serde_json::to_string(&request).unwrap();
    assert_eq!(
        json,
        r#"{"keyName":"appId.keyId","timestamp":1795755526586,"nonce":"7680679348716890","mac":"5z840tpMiXTAgvf6Wh+CkM8YyB0WoTGl1xlYtvNOdos="}"#
    );
}

#[test]
fn every_field_is_signed() {
    let params = TokenParams {
        ttl: Some(Duration::from_secs(3600)),
        capability: Some(Capability::new().allow("ai:demo", &["subscribe", "history"])),
        client_id: Some("viewer-1".into()),
    };
    let request = TokenRequest::sign(&key(), &params, 1_000, "0123456789abcdef").unwrap();
    assert_eq!(
        request.signing_text(),
        "appId.keyId\n3600000\n{\"ai:demo\":[\"history\",\"subscribe\"]}\nviewer-1\n1000\n0123456789abcdef\n"
    );
    for tamper in [
        |r: &mut TokenRequest| r.capability = Some(r#"{"*":["*"]}"#.into()),
        |r: &mut TokenRequest| r.client_id = Some("someone-else".into()),
        |r: &mut TokenRequest| r.ttl = Some(86_400_000),
        |r: &mut TokenRequest| r.timestamp += 1,
    ] {
        let mut forged = request.clone();
        tamper(&mut forged);
        assert!(!forged.verify(&key()));
    }
    assert!(!request.verify(&ApiKey::parse("appId.keyId:other").unwrap()));
}

#[test]
fn capability_is_canonical_and_matches_channels() {
    let cap = Capability::new()
        .allow("ai:*", &["subscribe", "history"])
        .allow("ai:demo", &["publish"])
        .allow("ai:*", &["history"]);
    assert_eq!(
        cap.canonical(),
        r#"{"ai:*":["history","subscribe"],"ai:demo":["publish"]}"#
    );
    assert_eq!(Capability::parse(&cap.canonical()).unwrap(), cap);
    assert!(cap.allows("ai:other", "subscribe"));
    assert!(cap.allows("ai:demo", "publish"));
    assert!(!cap.allows("ai:other", "publish"));
    assert!(!cap.allows("chat:x", "subscribe"));
    assert!(Capability::new()
        .allow("*", &["*"])
        .allows("anything", "publish"));
}

#[test]
fn bad_requests_are_refused() {
    let sign = |params: &TokenParams, nonce: &str| TokenRequest::sign(&key(), params, 0, nonce);
    assert_eq!(
        sign(&TokenParams::default(), "short"),
        Err(AuthError::ShortNonce)
    );
    let too_long = TokenParams {
        ttl: Some(MAX_TTL + Duration::from_millis(1)),
        ..TokenParams::default()
    };
    assert_eq!(sign(&too_long, "0123456789abcdef"), Err(AuthError::BadTtl));
    let nothing = TokenParams {
        capability: Some(Capability::new().allow("ai:x", &[])),
        ..TokenParams::default()
    };
    assert_eq!(
        sign(&nothing, "0123456789abcdef"),
        Err(AuthError::EmptyCapability)
    );
    assert!(matches!(
        Capability::parse(r#"{"ai:x":"subscribe"}"#),
        Err(AuthError::BadCapability(_))
    ));
    assert!(matches!(
        Capability::parse("[]"),
        Err(AuthError::BadCapability(_))
    ));
}

#[test]
fn token_details_read_what_the_server_returns() {
    let details: TokenDetails = serde_json::from_str(
        r#"{"token":"emutoken.1795755526615","keyName":"appId.keyId","issued":1795755526615,"expires":1795759126615,"capability":"{\"*\":[\"*\"]}"}"#,
    )
    .unwrap();
    assert_eq!(details.token, "emutoken.1795755526615");
    assert_eq!(details.expires - details.issued, 3_600_000);
}
