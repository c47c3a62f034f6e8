//! Transcripts named after the items of Ably's features spec (`ably/specification`,
//! `specifications/features.md`, spec version 6.1.1, protocol 6) that the connection
//! policy follows, on fake time.

use super::tests::{at, attached, channel, config, drain, frames, names, publish_text, text};
use super::*;
use crate::protocol::Flags;

const T0: Instant = Instant::from_millis(1_000);

/// CONNECTED without an idle limit, so fake time can run for hours without heartbeats.
const CONNECTED_QUIET: &str =
    r#"{"action":4,"connectionId":"c1","connectionDetails":{"connectionKey":"c1!k"}}"#;
const CONNECTED_QUIET_AGAIN: &str =
    r#"{"action":4,"connectionId":"c1","connectionDetails":{"connectionKey":"c1!k2"}}"#;
const TOKEN_EXPIRED: &str =
    r#"{"action":9,"error":{"code":40142,"statusCode":401,"message":"Token expired"}}"#;

fn token_config() -> Config {
    let mut config = config();
    config.auth = Auth::Token("old".into());
    config
}

fn open_url(out: &[Output]) -> Option<&str> {
    out.iter().find_map(|o| match o {
        Output::Transmit(Transmit::Open { url }) => Some(url.as_str()),
        _ => None,
    })
}

fn reason_of(out: &[Output], state: ConnectionState) -> Option<ErrorInfo> {
    out.iter().find_map(|o| match o {
        Output::Event(Event::StateChanged {
            current,
            reason: Some(reason),
            ..
        }) if *current == state => Some(reason.clone()),
        _ => None,
    })
}

/// Runs the clock to the next deadline and returns what happened there.
fn fire(conn: &mut Connection) -> (Instant, Vec<Output>) {
    let next = conn.poll_timeout().expect("a deadline");
    conn.handle_timeout(next);
    (next, drain(conn))
}

// ----- 1. resume and channel serials ---------------------------------------------------------

/// RTL4j was deleted in spec 6.1.0 ("SDKs need not set ATTACH_RESUME any more"): the
/// re-attach after a resume carries the channelSerial (RTL4c1) and no ATTACH_RESUME flag.
#[test]
fn rtl4j_deleted_reattach_carries_the_channel_serial_and_no_attach_resume_flag() {
    let mut conn = attached();
    conn.handle_transport_closed(at(10), None);
    drain(&mut conn);
    let out = text(
        &mut conn,
        at(20),
        r#"{"action":4,"connectionId":"conn1","connectionDetails":{"connectionKey":"conn1!k2"}}"#,
    );
    let attach = frames(&out)
        .into_iter()
        .find(|f| f.action == Action::ATTACH)
        .expect("re-attach");
    assert_eq!(attach.channel_serial.as_ref().unwrap().as_str(), "chs0");
    assert!(!attach.has_flag(Flags::ATTACH_RESUME), "{attach:?}");
}

/// RTL15b2 (replacing RTL15b1 in 6.1.0): the channelSerial is kept when the channel goes
/// SUSPENDED, so its re-attach still asks for continuity.
#[test]
fn rtl15b2_suspended_channel_keeps_its_serial() {
    let mut conn = attached();
    // Server DETACHED on an attached channel: re-attach (RTL13a), no answer, suspended (RTL4f).
    text(&mut conn, at(8), r#"{"action":13,"channel":"ai:test"}"#);
    text(&mut conn, at(9_000), r#"{"action":0}"#);
    conn.handle_timeout(at(10_008));
    assert_eq!(names(&drain(&mut conn)), ["Channel(suspended)"]);
    text(&mut conn, at(20_000), r#"{"action":0}"#);
    let (_, out) = fire(&mut conn);
    assert_eq!(names(&out), ["Send(ATTACH)", "Channel(attaching)"]);
    assert_eq!(
        frames(&out)[0].channel_serial.as_ref().unwrap().as_str(),
        "chs0"
    );
}

/// RTL15b2: the channelSerial is cleared when the channel goes FAILED, so the next attach
/// is a first attach again (with its rewind).
#[test]
fn rtl15b2_failed_channel_forgets_its_serial() {
    let mut conn = attached();
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":9,"channel":"ai:test","error":{"code":40160,"statusCode":401,"message":"denied"}}"#,
    );
    assert_eq!(names(&out), ["Channel(failed)"]);
    conn.attach(at(10), channel(), AttachOptions::rewind(3))
        .unwrap();
    let sent = frames(&drain(&mut conn));
    assert_eq!(sent[0].channel_serial, None);
    assert_eq!(sent[0].params.as_ref().unwrap()["rewind"], "3");
}

/// RTN15g was replaced by RTN14h in 6.1.0: the client always tries to resume, however long
/// it was away (also from SUSPENDED), and the server decides; RTN9d keeps the key while
/// suspended, and RTL15b2 keeps the channel's position.
#[test]
fn rtn14h_resume_is_attempted_even_after_suspension() {
    let mut conn = attached();
    conn.handle_transport_closed(at(100), None);
    drain(&mut conn);
    let mut now = at(100);
    while conn.state() != ConnectionState::Suspended {
        conn.handle_transport_closed(now, Some("refused".into()));
        drain(&mut conn);
        if conn.state() == ConnectionState::Suspended {
            break;
        }
        let (next, _) = fire(&mut conn);
        now = next;
    }
    assert!(now - at(100) >= Duration::from_secs(90));
    assert_eq!(conn.connection_key().unwrap().as_str(), "conn1!key");
    let (_, out) = fire(&mut conn);
    let url = open_url(&out).expect("a retry from suspended");
    assert!(url.contains("resume=conn1!key"), "{url}");
    let out = text(
        &mut conn,
        now + Duration::from_secs(31),
        r#"{"action":4,"connectionId":"conn1","connectionDetails":{"connectionKey":"conn1!k3"}}"#,
    );
    let attach = frames(&out)
        .into_iter()
        .find(|f| f.action == Action::ATTACH)
        .unwrap();
    assert_eq!(attach.channel_serial.as_ref().unwrap().as_str(), "chs0");
}

// ----- 2. tokens ----------------------------------------------------------------------------

/// RTN15h2: a token error while connected goes to CONNECTING, asks for a token, then
/// resumes with it. RTN22: a server AUTH asks for a token and the new one goes in an AUTH
/// frame; the next CONNECTED is an update (RTN24).
#[test]
fn rtn15h2_rtn22_token_error_while_connected_renews_and_resumes() {
    let mut conn = Connection::new(token_config());
    conn.connect(T0);
    text(&mut conn, at(1), CONNECTED_QUIET);
    let out = text(&mut conn, at(2), TOKEN_EXPIRED);
    assert_eq!(names(&out), ["Close", "State(connecting)", "TokenRequired"]);
    assert!(conn.is_awaiting_token());
    conn.set_token(at(3), "new".into());
    let url = open_url(&drain(&mut conn)).unwrap().to_owned();
    assert!(
        url.contains("access_token=new") && url.contains("resume=c1!k"),
        "{url}"
    );
    text(&mut conn, at(4), CONNECTED_QUIET_AGAIN);
    let out = text(&mut conn, at(5), r#"{"action":17}"#);
    assert_eq!(names(&out), ["TokenRequired"]);
    conn.set_token(at(6), "newer".into());
    let sent = frames(&drain(&mut conn));
    assert_eq!(sent[0].auth.as_ref().unwrap().access_token, "newer");
    let out = text(&mut conn, at(7), CONNECTED_QUIET_AGAIN);
    assert_eq!(
        names(&out),
        ["State(connected)"],
        "an update, not a new state"
    );
}

/// RSA4b / RTN14b: one new token per rejection. If the fresh token is rejected too, the
/// connection goes DISCONNECTED and waits out the backoff (RTB1) before asking again;
/// never a tight loop.
#[test]
fn rsa4b_rtn14b_a_rejected_fresh_token_waits_out_the_backoff() {
    let mut conn = Connection::new(token_config());
    conn.connect(T0);
    drain(&mut conn);
    let out = text(&mut conn, at(1), TOKEN_EXPIRED);
    assert_eq!(names(&out), ["Close", "TokenRequired"], "still connecting");
    conn.set_token(at(2), "fresh-but-bad".into());
    assert_eq!(names(&drain(&mut conn)), ["Open"]);
    let out = text(&mut conn, at(3), TOKEN_EXPIRED);
    assert_eq!(names(&out), ["Close", "State(disconnected)"]);
    assert_eq!(
        reason_of(&out, ConnectionState::Disconnected).unwrap().code,
        40142
    );
    let next = conn.poll_timeout().unwrap();
    assert!(
        next - at(3) >= Duration::from_secs(12),
        "{:?}",
        next - at(3)
    );
    let (_, out) = fire(&mut conn);
    assert_eq!(
        names(&out),
        ["State(connecting)", "TokenRequired"],
        "a token first, not the rejected one again"
    );
}

/// RSA4c1/RSA4c2: a token that cannot be had while connecting gives DISCONNECTED with
/// 80019 and a backoff, and past connectionStateTtl SUSPENDED (RTN14e); the number of
/// requests stays bounded by the backoff.
#[test]
fn rsa4c2_token_fetch_failures_disconnect_then_suspend() {
    let mut conn = Connection::new(token_config());
    conn.connect(T0);
    text(&mut conn, at(1), CONNECTED_QUIET);
    text(&mut conn, at(2), TOKEN_EXPIRED);
    conn.handle_token_failed(at(3), ErrorInfo::new(50300, 503, "auth server down"));
    let out = drain(&mut conn);
    assert_eq!(names(&out), ["State(disconnected)"]);
    let reason = reason_of(&out, ConnectionState::Disconnected).unwrap();
    assert_eq!(
        (reason.code, reason.status_code),
        (errors::TOKEN_REQUEST_FAILED, Some(401))
    );
    assert!(reason.message.contains("auth server down"), "{reason:?}");
    let mut requests = 0;
    let mut now = at(3);
    while conn.state() != ConnectionState::Suspended {
        let (next, out) = fire(&mut conn);
        now = next;
        requests += names(&out).iter().filter(|n| *n == "TokenRequired").count();
        if conn.is_awaiting_token() {
            conn.handle_token_failed(now, ErrorInfo::new(50300, 503, "down"));
            drain(&mut conn);
        }
        assert!(now - at(3) < Duration::from_secs(600), "never suspended");
    }
    assert!(now - at(2) >= Duration::from_secs(120));
    assert!(
        (4..=10).contains(&requests),
        "{requests} requests in {:?}",
        now - at(3)
    );
    // SUSPENDED retries every 30 s, asking for a token each time.
    let (next, out) = fire(&mut conn);
    assert_eq!(next - now, Duration::from_secs(30));
    assert!(names(&out).contains(&"TokenRequired".to_owned()), "{out:?}");
}

/// RSA4c: the token is due within realtimeRequestTimeout; a request that never returns
/// counts as failed.
#[test]
fn rsa4c_a_token_request_times_out_after_the_request_timeout() {
    let mut conn = Connection::new(token_config());
    conn.connect(T0);
    text(&mut conn, at(1), TOKEN_EXPIRED);
    assert_eq!(conn.poll_timeout(), Some(at(1) + Duration::from_secs(10)));
    let (_, out) = fire(&mut conn);
    assert_eq!(names(&out), ["State(disconnected)"]);
    assert!(!conn.is_awaiting_token());
    // A late answer still connects at once (RTC8c).
    conn.set_token(at(10_500), "late".into());
    assert_eq!(names(&drain(&mut conn)), ["State(connecting)", "Open"]);
}

/// RSA4d: a 403 from the token source fails the connection with 80019/403.
#[test]
fn rsa4d_forbidden_token_request_fails_the_connection() {
    let mut conn = Connection::new(token_config());
    conn.connect(T0);
    text(&mut conn, at(1), TOKEN_EXPIRED);
    conn.handle_token_failed(at(2), ErrorInfo::new(40300, 403, "forbidden"));
    let out = drain(&mut conn);
    let reason = reason_of(&out, ConnectionState::Failed).unwrap();
    assert_eq!((reason.code, reason.status_code), (80019, Some(403)));
    assert_eq!(conn.poll_timeout(), None);
}

/// RSA4a2: with no means to renew, a token error fails the connection with 40171.
#[test]
fn rsa4a2_token_error_without_renewal_fails_with_40171() {
    let mut config = token_config();
    config.token_renewable = false;
    let mut conn = Connection::new(config);
    conn.connect(T0);
    text(&mut conn, at(1), CONNECTED_QUIET);
    let out = text(&mut conn, at(2), TOKEN_EXPIRED);
    assert!(!names(&out).contains(&"TokenRequired".to_owned()));
    assert_eq!(
        reason_of(&out, ConnectionState::Failed).unwrap().code,
        errors::TOKEN_RENEWAL_NOT_CONFIGURED
    );
}

/// Proactive renewal (RSA4b1 lets a client act on expiry itself): the next token is asked
/// for `token_renew_margin` before expiry and sent in place (RTC8a); a failed renewal
/// keeps the connection CONNECTED (RSA4c3) and is tried again after a backoff.
#[test]
fn rsa4c3_renewal_before_expiry_and_a_failed_renewal_stays_connected() {
    let mut conn = Connection::new(token_config());
    conn.connect(T0);
    conn.set_token_with_lifetime(T0, "t1".into(), Duration::from_secs(3_600));
    drain(&mut conn);
    text(&mut conn, at(1), CONNECTED_QUIET);
    assert_eq!(conn.poll_timeout(), Some(T0 + Duration::from_secs(3_540)));
    let (now, out) = fire(&mut conn);
    assert_eq!(names(&out), ["TokenRequired"]);
    conn.set_token_with_lifetime(now, "t2".into(), Duration::from_secs(100));
    let sent = frames(&drain(&mut conn));
    assert_eq!(sent[0].auth.as_ref().unwrap().access_token, "t2");
    // Shorter than twice the margin: renewed half-way.
    assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(50)));
    let (now, out) = fire(&mut conn);
    assert_eq!(names(&out), ["TokenRequired"]);
    conn.handle_token_failed(now, ErrorInfo::new(50300, 503, "down"));
    assert!(drain(&mut conn).is_empty(), "no state change");
    assert_eq!(conn.state(), ConnectionState::Connected);
    assert_eq!(
        conn.error_reason().unwrap().code,
        errors::TOKEN_REQUEST_FAILED
    );
    let retry = conn.poll_timeout().unwrap();
    assert!(retry - now >= Duration::from_secs(12), "{:?}", retry - now);
    let (_, out) = fire(&mut conn);
    assert_eq!(names(&out), ["TokenRequired"]);
}

/// The first token's lifetime can be given after the fact; key auth never asks for tokens
/// (a server AUTH is ignored).
#[test]
fn the_first_tokens_lifetime_arms_renewal_and_key_auth_never_asks() {
    let mut conn = Connection::new(token_config());
    conn.set_token_lifetime(T0, Duration::from_secs(600));
    conn.connect(T0);
    drain(&mut conn);
    text(&mut conn, at(1), CONNECTED_QUIET);
    assert_eq!(conn.poll_timeout(), Some(T0 + Duration::from_secs(540)));
    let mut keyed = Connection::new(config());
    keyed.set_token_lifetime(T0, Duration::from_secs(600));
    keyed.connect(T0);
    drain(&mut keyed);
    text(&mut keyed, at(1), CONNECTED_QUIET);
    assert!(text(&mut keyed, at(2), r#"{"action":17}"#).is_empty());
    assert_eq!(keyed.poll_timeout(), None);
}

// ----- 3. failed connections, unsolicited CLOSED / DISCONNECTED, suspension -------------------

/// RTN27h: FAILED stays FAILED until connect(); the revival policy is off by default.
#[test]
fn rtn27h_failed_connection_stays_failed_by_default() {
    let mut conn = attached();
    text(
        &mut conn,
        at(9),
        r#"{"action":9,"error":{"code":50000,"statusCode":500,"message":"internal"}}"#,
    );
    assert_eq!(conn.state(), ConnectionState::Failed);
    assert_eq!(conn.poll_timeout(), None);
}

/// The revival policy (a daemon's choice, not the spec's): a failed connection is replaced
/// after the configured delay, fresh (no resume), and the channels the application still
/// wants attach again; a detached one does not.
#[test]
fn revival_policy_replaces_a_failed_connection_and_reattaches_wanted_channels() {
    let mut config = config();
    config.revive_failed_after = Some(Duration::from_secs(15));
    let mut conn = Connection::new(config);
    conn.connect(T0);
    text(&mut conn, at(1), CONNECTED_QUIET);
    let other = ChannelName::from("ai:other");
    conn.attach(at(2), channel(), AttachOptions::live_only())
        .unwrap();
    conn.attach(at(2), other.clone(), AttachOptions::default())
        .unwrap();
    text(
        &mut conn,
        at(3),
        r#"{"action":11,"channel":"ai:test","channelSerial":"x1"}"#,
    );
    text(
        &mut conn,
        at(3),
        r#"{"action":11,"channel":"ai:other","channelSerial":"y1"}"#,
    );
    conn.detach(at(4), &other);
    text(&mut conn, at(5), r#"{"action":13,"channel":"ai:other"}"#);
    drain(&mut conn);
    text(
        &mut conn,
        at(6),
        r#"{"action":9,"error":{"code":50000,"statusCode":500,"message":"internal"}}"#,
    );
    assert_eq!(conn.state(), ConnectionState::Failed);
    assert_eq!(conn.poll_timeout(), Some(at(6) + Duration::from_secs(15)));
    let (now, out) = fire(&mut conn);
    assert_eq!(
        names(&out),
        ["State(connecting)", "Open", "Channel(attaching)"]
    );
    assert!(!open_url(&out).unwrap().contains("resume="));
    let out = text(&mut conn, now, CONNECTED_QUIET);
    let attaches: Vec<_> = frames(&out)
        .into_iter()
        .filter(|f| f.action == Action::ATTACH)
        .collect();
    assert_eq!(attaches.len(), 1, "{attaches:?}");
    assert_eq!(attaches[0].channel.as_ref(), Some(&channel()));
    assert_eq!(attaches[0].channel_serial, None, "RTL15b2 cleared it");
    // Closing a failed connection cancels its revival.
    text(
        &mut conn,
        now,
        r#"{"action":9,"error":{"code":50000,"statusCode":500,"message":"internal"}}"#,
    );
    assert!(conn.poll_timeout().is_some());
    conn.close(now);
    assert_eq!(conn.poll_timeout(), None);
}

/// RTN15h3: a DISCONNECTED from the server (no token error) reconnects at once, resuming.
#[test]
fn rtn15h3_server_disconnected_reconnects_at_once_with_resume() {
    let mut conn = attached();
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":6,"error":{"code":80003,"statusCode":400,"message":"bye"}}"#,
    );
    assert_eq!(
        names(&out),
        [
            "Close",
            "State(disconnected)",
            "State(connecting)",
            "Open(resume)"
        ]
    );
}

/// A CLOSED the client did not ask for is not the user's close (RTN27g): the connection
/// reconnects and resumes as after a DISCONNECTED, instead of ending up CLOSED.
#[test]
fn unsolicited_closed_reconnects_and_resumes() {
    let mut conn = attached();
    let out = text(&mut conn, at(9), r#"{"action":8}"#);
    assert_eq!(
        names(&out),
        [
            "Close",
            "State(disconnected)",
            "State(connecting)",
            "Open(resume)"
        ]
    );
    assert_eq!(conn.channel_state(&channel()), ChannelState::Attached);
}

/// RTN14e / RTN7e: past connectionStateTtl the connection is SUSPENDED, queued publishes
/// fail with 80002, and new ones are refused with 80002 (RTL6c4).
#[test]
fn rtn14e_rtn7e_suspension_fails_queued_publishes_with_80002() {
    let mut conn = attached();
    let id = publish_text(&mut conn, at(8), "a");
    drain(&mut conn);
    conn.handle_transport_closed(at(100), None);
    drain(&mut conn);
    let mut failed = None;
    let mut now = at(100);
    while conn.state() != ConnectionState::Suspended {
        conn.handle_transport_closed(now, Some("refused".into()));
        for o in drain(&mut conn) {
            if let Output::Event(Event::Published {
                id: got,
                outcome: Err(err),
            }) = o
            {
                failed = Some((got, err));
            }
        }
        if conn.state() != ConnectionState::Suspended {
            now = fire(&mut conn).0;
        }
    }
    let (got, err) = failed.expect("the queued publish failed");
    assert_eq!((got, err.code), (id, errors::CONNECTION_SUSPENDED));
    let refused = conn
        .publish(now, &channel(), vec![Message::default()])
        .unwrap_err();
    assert_eq!(refused.to_error_info().code, errors::CONNECTION_SUSPENDED);
}

/// RTN19a: publishes awaiting an ACK on a lost transport are resent on the next one;
/// RTN19a2: after a failed resume (RTN15c7) they get new msgSerials from 0. They go first,
/// in their original order, before publishes made while disconnected and before the
/// re-attach. (Seed 18849's append applied out of order was not resent out of order: its
/// NACK was lost, so the new connection applied it for the first time after later appends
/// the old one had stored; the assembler's digest check keeps such aggregates off screen.)
#[test]
fn rtn19a_rtn19a2_after_a_failed_resume_pending_publishes_go_first_in_order() {
    let mut conn = attached();
    for data in ["a", "b", "c"] {
        publish_text(&mut conn, at(8), data);
    }
    drain(&mut conn);
    text(
        &mut conn,
        at(9),
        r#"{"action":1,"msgSerial":0,"count":1,"res":[{"serials":["S1"]}]}"#,
    );
    conn.handle_transport_closed(at(10), None);
    drain(&mut conn);
    for data in ["d", "e"] {
        publish_text(&mut conn, at(11), data);
    }
    assert!(frames(&drain(&mut conn)).is_empty(), "queued while away");
    let failed_resume = r#"{"action":4,"connectionId":"conn3","connectionDetails":{"connectionKey":"conn3!key"},"error":{"code":80008,"statusCode":400,"message":"Unable to recover connection"}}"#;
    let out = text(&mut conn, at(20), failed_resume);
    let sent: Vec<(Option<u64>, String)> = frames(&out)
        .iter()
        .map(|f| {
            let data = f
                .messages
                .iter()
                .flatten()
                .filter_map(|m| m.text().ok())
                .collect::<String>();
            let what = if f.action == Action::ATTACH {
                "ATTACH".to_owned()
            } else {
                data
            };
            (f.msg_serial.map(|m| m.0), what)
        })
        .collect();
    assert_eq!(
        sent,
        [
            (Some(0), "b".to_owned()),
            (Some(1), "c".to_owned()),
            (Some(2), "d".to_owned()),
            (Some(3), "e".to_owned()),
            (None, "ATTACH".to_owned()),
        ]
    );
}

// ----- 4. fallback hosts ----------------------------------------------------------------------

fn production_config() -> Config {
    let mut config = config();
    config.endpoint = Endpoint::parse(PRODUCTION_ENDPOINT).unwrap();
    config.fallback_hosts =
        Config::new(config.endpoint.clone(), config.auth.clone(), "p").fallback_hosts;
    config
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    rest.split([':', '/']).next().unwrap()
}

/// REC2c1/REC2c2: the production endpoint has the five default fallback domains; a custom
/// endpoint has none.
#[test]
fn rec2c_fallback_hosts_only_for_the_production_endpoint() {
    let auth = config().auth;
    let prod = Config::new(
        Endpoint::parse(PRODUCTION_ENDPOINT).unwrap(),
        auth.clone(),
        "p",
    );
    assert_eq!(prod.fallback_hosts, PRODUCTION_FALLBACK_HOSTS.to_vec());
    let custom = Config::new(
        Endpoint::parse("https://ably.example.com").unwrap(),
        auth,
        "p",
    );
    assert!(custom.fallback_hosts.is_empty());
}

/// RTN17i/RTN17j: every run of attempts starts on the primary domain; when it cannot be
/// reached, each fallback domain is tried once, at once and in random order, still
/// CONNECTING; when all fail, DISCONNECTED with backoff, and the next run starts on the
/// primary again.
#[test]
fn rtn17i_rtn17j_primary_first_then_each_fallback_once_in_random_order() {
    let mut conn = Connection::new(production_config());
    conn.connect(T0);
    let out = drain(&mut conn);
    assert_eq!(host_of(open_url(&out).unwrap()), "main.realtime.ably.net");
    assert_eq!(conn.current_host(), None);
    let mut tried = Vec::new();
    for n in 0..5 {
        conn.handle_transport_closed(at(n), Some("unreachable".into()));
        let out = drain(&mut conn);
        assert_eq!(names(&out), ["Open"], "straight to the next host");
        let url = open_url(&out).unwrap();
        assert!(url.starts_with("wss://") && url.contains(":443/?"), "{url}");
        tried.push(host_of(url).to_owned());
        assert_eq!(conn.current_host(), Some(tried[n as usize].as_str()));
    }
    let mut sorted = tried.clone();
    sorted.sort();
    assert_eq!(sorted, PRODUCTION_FALLBACK_HOSTS.to_vec(), "each once");
    assert_ne!(tried, PRODUCTION_FALLBACK_HOSTS.to_vec(), "shuffled");
    conn.handle_transport_closed(at(9), Some("unreachable".into()));
    assert_eq!(names(&drain(&mut conn)), ["State(disconnected)"]);
    let (_, out) = fire(&mut conn);
    assert_eq!(host_of(open_url(&out).unwrap()), "main.realtime.ably.net");
    // The second run shuffles again.
    let mut second = Vec::new();
    for n in 0..5 {
        conn.handle_transport_closed(at(60_000 + n), None);
        second.push(host_of(open_url(&drain(&mut conn)).unwrap()).to_owned());
    }
    assert_ne!(second, tried);
}

/// RTN17f1: a DISCONNECTED with a 5xx status while connecting tries a fallback; a connect
/// timeout (RSC15l2) too.
#[test]
fn rtn17f1_5xx_disconnected_or_timeout_while_connecting_uses_a_fallback() {
    let mut conn = Connection::new(production_config());
    conn.connect(T0);
    drain(&mut conn);
    let out = text(
        &mut conn,
        at(1),
        r#"{"action":6,"error":{"code":50003,"statusCode":503,"message":"unavailable"}}"#,
    );
    assert_eq!(names(&out), ["Close", "Open"]);
    assert!(host_of(open_url(&out).unwrap()).ends_with(".fallback.ably-realtime.com"));
    let (_, out) = fire(&mut conn);
    assert_eq!(names(&out), ["Close", "Open"], "timed out: next fallback");
    // Once connected through a fallback, a drop reconnects to the primary (RTN17i).
    text(&mut conn, at(20_000), CONNECTED_QUIET);
    conn.handle_transport_closed(at(20_001), None);
    let out = drain(&mut conn);
    assert_eq!(host_of(open_url(&out).unwrap()), "main.realtime.ably.net");
}

/// RTN17g: a custom endpoint never uses fallback hosts.
#[test]
fn rtn17g_custom_endpoint_never_uses_fallbacks() {
    let mut conn = Connection::new(config());
    conn.connect(T0);
    drain(&mut conn);
    conn.handle_transport_closed(at(1), Some("unreachable".into()));
    assert_eq!(names(&drain(&mut conn)), ["State(disconnected)"]);
    let (_, out) = fire(&mut conn);
    assert!(open_url(&out).unwrap().starts_with("ws://127.0.0.1:6001/"));
}

// ----- 5. connectionDetails limits and rate limits ---------------------------------------------

/// CD2c–CD2h / RTN21: the limits come from connectionDetails (defaults TO3l8, TO3l9 before
/// any), and the connectionStateTtl given there decides suspension (RTN14e, DF1a).
#[test]
fn cd2_rtn21_limits_come_from_connection_details() {
    let mut conn = Connection::new(config());
    assert_eq!(conn.limits().max_message_size, 65_536);
    assert_eq!(conn.limits().max_frame_size, 524_288);
    conn.connect(T0);
    text(
        &mut conn,
        at(1),
        r#"{"action":4,"connectionId":"c","connectionDetails":{"connectionKey":"c!k","maxMessageSize":16384,"maxFrameSize":262144,"maxInboundRate":50,"connectionStateTtl":20000,"maxIdleInterval":5000}}"#,
    );
    assert_eq!(
        *conn.limits(),
        Limits {
            max_message_size: 16_384,
            max_frame_size: 262_144,
            max_inbound_rate: Some(50),
            connection_state_ttl: Duration::from_secs(20),
            max_idle_interval: Some(Duration::from_secs(5)),
        }
    );
    conn.handle_transport_closed(at(2), None);
    drain(&mut conn);
    let mut now = at(2);
    while conn.state() != ConnectionState::Suspended {
        conn.handle_transport_closed(now, None);
        drain(&mut conn);
        if conn.state() != ConnectionState::Suspended {
            now = fire(&mut conn).0;
        }
    }
    assert!(
        now - at(2) >= Duration::from_secs(20) && now - at(2) < Duration::from_secs(60),
        "suspended after {:?}",
        now - at(2)
    );
}

/// Rate limits (429xx) for the whole connection are neither fatal (unlike RTN15j's other
/// ERRORs) nor a reason to reconnect at once (unlike RTN15h3): the connection waits out the
/// backoff, then resumes.
#[test]
fn rate_limit_errors_back_off_instead_of_failing_or_reconnecting_at_once() {
    for frame in [
        r#"{"action":9,"error":{"code":42910,"statusCode":429,"message":"rate limit"}}"#,
        r#"{"action":6,"error":{"code":42911,"statusCode":429,"message":"publish rate"}}"#,
    ] {
        let mut conn = attached();
        let out = text(&mut conn, at(9), frame);
        assert_eq!(names(&out), ["Close", "State(disconnected)"], "{frame}");
        let next = conn.poll_timeout().unwrap();
        assert!(
            next - at(9) >= Duration::from_secs(12),
            "{:?}",
            next - at(9)
        );
        let (_, out) = fire(&mut conn);
        assert!(open_url(&out).unwrap().contains("resume="));
    }
}

/// A publish NACKed for a rate limit fails once with that error and is not resent.
#[test]
fn rate_limited_nack_fails_the_publish_and_is_not_resent() {
    let mut conn = attached();
    let id = publish_text(&mut conn, at(8), "a");
    drain(&mut conn);
    let out = text(
        &mut conn,
        at(9),
        r#"{"action":2,"msgSerial":0,"count":1,"error":{"code":42911,"statusCode":429,"message":"too fast"}}"#,
    );
    let Output::Event(Event::Published {
        id: got,
        outcome: Err(err),
    }) = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*got, classify(err)), (id, ErrorClass::RateLimited));
    conn.handle_transport_closed(at(10), None);
    drain(&mut conn);
    let out = text(&mut conn, at(11), r#"{"action":4,"connectionId":"conn1"}"#);
    assert!(frames(&out).iter().all(|f| f.action != Action::MESSAGE));
}
