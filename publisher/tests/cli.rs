//! The `publisher` binary's command line: help that names every option's environment
//! variable, and clear errors (never a panic, never a secret) for bad configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::process::{Command, Output};

fn publisher(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_publisher"));
    command.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_names_every_environment_variable() {
    let out = publisher(&["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for var in [
        "ABLY_API_KEY",
        "ABLY_ENDPOINT",
        "ABLY_TOKEN_AUTH",
        "ABLY_APPEND_ROLLUP_WINDOW",
        "ABLY_MESSAGE_RATE",
        "ROLLUP_MS",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "OPENAI_MAX_RETRIES",
        "OPENAI_IDLE_TIMEOUT",
        "LISTEN",
        "WEB_DIR",
        "API_SECRET",
        "ALLOWED_ORIGINS",
        "RATE_LIMIT_PER_MINUTE",
        "TOKEN_TTL",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from:\n{help}"
        );
    }
    let top = text(&publisher(&["--help"], &[]).stdout);
    for command in ["ask", "serve", "replay"] {
        assert!(top.contains(command), "{top}");
    }
}

#[test]
fn a_missing_key_is_a_clear_error() {
    let out = publisher(&["ask", "hello"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ABLY_API_KEY is not set"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_malformed_key_is_refused_without_echoing_it() {
    let out = publisher(
        &["ask", "hello"],
        &[("ABLY_API_KEY", "no-colon-secretvalue")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not a key"), "{stderr}");
    assert!(!stderr.contains("secretvalue"), "{stderr}");
}

#[test]
fn a_bad_endpoint_and_a_bad_channel_are_named() {
    let key = ("ABLY_API_KEY", "app-key:app-secret");
    let out = publisher(&["ask", "--ably-endpoint", "ftp://x", "hello"], &[key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ABLY_ENDPOINT"),
        "{}",
        text(&out.stderr)
    );
    let out = publisher(&["ask", "--channel", "ai:*", "hello"], &[key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("channel name `ai:*`"),
        "{}",
        text(&out.stderr)
    );
}
