//! Tests: Endpoints, keys and the connect URL.

use super::*;

#[test]
fn endpoints_map_http_to_ws_and_https_to_wss() {
    let local = Endpoint::parse("http://127.0.0.1:6001/").unwrap();
    assert_eq!(local.realtime(), "ws://127.0.0.1:6001");
    assert_eq!(local.rest(), "http://127.0.0.1:6001");
    let ably = Endpoint::parse(PRODUCTION_ENDPOINT).unwrap();
    assert_eq!(ably, Endpoint::production());
    assert_eq!(
        Endpoint::parse("http://localhost").unwrap().realtime(),
        "ws://localhost:80"
    );
    for bad in [
        "ws://x",
        "127.0.0.1:6001",
        "http://",
        "https://h/path",
        "http://u@h",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn keys_parse_and_never_print_their_secret() {
    let key = ApiKey::parse("appId.keyId:s3cret").unwrap();
    assert_eq!(key.name(), "appId.keyId");
    assert!(!format!("{key:?} {:?}", Auth::Key(key.clone())).contains("s3cret"));
    for bad in ["nocolon", ":secret", "name:", "a:b:c"] {
        assert_eq!(ApiKey::parse(bad), Err(ConfigError::InvalidKey), "{bad}");
    }
}

#[test]
fn connect_url_carries_what_ably_js_sends() {
    let key = ApiKey::parse("appId.keyId:secret").unwrap();
    let mut config = Config::new(
        Endpoint::parse("http://127.0.0.1:6001").unwrap(),
        Auth::Key(key),
        "p",
    );
    config.client_id = Some("agent 1".into());
    config.echo = false;
    config
        .transport_params
        .push(("appendRollupWindow".into(), "100".into()));
    assert_eq!(
        config.connect_url(Some("conn1!key")),
        "ws://127.0.0.1:6001/?key=appId.keyId%3Asecret&resume=conn1!key&clientId=agent%201\
         &echo=false&format=json&heartbeats=true&v=6&agent=ably-openai-relay%2F0.1.0\
         &appendRollupWindow=100"
    );
    config.auth = Auth::Token("tok/en=".into());
    assert!(config
        .connect_url(None)
        .starts_with("ws://127.0.0.1:6001/?access_token=tok%2Fen%3D&clientId="));
}
