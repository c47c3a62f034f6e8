use super::*;
use axum::http::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn the_bearer_secret_must_match_exactly() {
    let gate = BearerSecret(Some("s3cret".to_owned()));
    assert!(gate
        .check(&headers(&[("authorization", "Bearer s3cret")]))
        .is_ok());
    for bad in [
        "Bearer s3cre",
        "Bearer s3cret!",
        "s3cret",
        "Basic s3cret",
        "",
    ] {
        let err = gate.check(&headers(&[("authorization", bad)])).unwrap_err();
        assert_eq!(err.status.as_u16(), 401, "{bad}");
    }
    assert!(gate.check(&HeaderMap::new()).is_err());
    assert!(BearerSecret(None).check(&HeaderMap::new()).is_ok());
}

#[test]
fn origins_same_listed_and_foreign() {
    let origins = Origins::new(&["https://chat.example.com/".to_owned()]);
    assert_eq!(origins.check(&HeaderMap::new()).unwrap(), None);
    let same = headers(&[
        ("origin", "http://127.0.0.1:8787"),
        ("host", "127.0.0.1:8787"),
    ]);
    assert_eq!(origins.check(&same).unwrap(), None);
    let listed = headers(&[
        ("origin", "https://chat.example.com"),
        ("host", "api.example.com"),
    ]);
    assert_eq!(
        origins.check(&listed).unwrap().as_deref(),
        Some("https://chat.example.com")
    );
    let foreign = headers(&[
        ("origin", "https://evil.example"),
        ("host", "api.example.com"),
    ]);
    assert_eq!(origins.check(&foreign).unwrap_err().status.as_u16(), 403);
}

#[test]
fn each_client_gets_its_own_budget_refilled_over_time() {
    let limiter = RateLimiter::new(3);
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let b: IpAddr = "10.0.0.2".parse().unwrap();
    for _ in 0..3 {
        assert!(limiter.check(a, 0).is_ok());
    }
    let wait = limiter.check(a, 0).unwrap_err();
    assert_eq!(wait, Duration::from_secs(20));
    assert!(limiter.check(b, 0).is_ok());
    assert!(limiter.check(a, 19_999).is_err());
    assert!(limiter.check(a, 20_000).is_ok());
    assert!(RateLimiter::new(0).check(a, 0).is_ok());
}

#[test]
fn forwarded_for_counts_only_when_trusted() {
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.1")]);
    assert_eq!(client_address(&h, peer, false), peer);
    assert_eq!(
        client_address(&h, peer, true),
        "203.0.113.9".parse::<IpAddr>().unwrap()
    );
}
