use super::*;

#[test]
fn names_in_the_namespace_pass() {
    for name in ["ai:demo", "ai:team-7/room_1", "ai:日本", "ai:a:b"] {
        assert_eq!(parse(name, Some("ai")).unwrap().as_str(), name);
    }
}

#[test]
fn other_namespaces_and_lookalikes_are_refused() {
    for name in ["other:x", "aix:demo", "ai", "ai:", "demo", "AI:demo"] {
        let err = parse(name, Some("ai")).unwrap_err();
        assert!(
            matches!(
                err,
                ChannelError::UnknownNamespace { .. } | ChannelError::Invalid(_)
            ),
            "{name}: {err:?}"
        );
    }
    assert_eq!(
        parse("other:x", Some("ai")).unwrap_err().code(),
        "unknown_channel_namespace"
    );
}

#[test]
fn wildcards_qualifiers_and_whitespace_are_refused() {
    for name in [
        "ai:*",
        "[?rewind=10]ai:demo",
        "ai:de mo",
        "ai:demo\n",
        "ai:x#y",
        "",
    ] {
        assert!(parse(name, None).is_err(), "{name:?}");
    }
    assert_eq!(
        parse(&format!("ai:{}", "x".repeat(MAX_CHANNEL_LEN)), None),
        Err(ChannelError::TooLong)
    );
    assert_eq!(parse("ai:*", None).unwrap_err().code(), "invalid_channel");
}
