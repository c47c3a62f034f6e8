//! The fuzz corpora replayed as ordinary tests on the pinned stable toolchain: every file in
//! `fuzz/corpus/<target>/` goes through the same check its fuzz target runs
//! (`shared::fuzzing`, `publisher::fuzzing`), so an input a fuzzer once found stays covered.
//! Long fuzz runs are `scripts/fuzz`.
//!
//! Files named `regression-*` are inputs that once broke a property; they fail here until the
//! bug is fixed. The seed corpora were written from the fixtures by the ignored test at the
//! end: `cargo test -p tests --test fuzz_corpora -- --ignored` writes them into
//! `fuzz/corpus/` (or into `$FUZZ_SEED_DIR/<target>/`); fuzzing grew them and
//! `cargo fuzz cmin` shrank them (see `scripts/fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::collections::BTreeSet;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use shared::assembler::Assembler;
use shared::fuzzing::{check_assembler, check_codec, AssemblerInput};
use shared::headers;
use shared::openai::{Recording, Replay};
use shared::protocol::{Action, Message};
use shared::relay::RelayConfig;
use shared::testkit::{self, RelayDriver, RewindStyle, SimChannel};
use shared::Instant;
use tests::{fixtures_dir, recorded_events};

fn fuzz_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    root.join("fuzz")
}

/// Every file of one target's corpus, in name order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "{}: corpus too small", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// Runs `check` on every corpus file and fails with the name and panic of each that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let inputs = corpus(target);
    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|(path, input)| {
            let outcome = panic::catch_unwind(|| check(input));
            let payload = outcome.err()?;
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Some(format!("{}: {message}", path.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} `{target}` inputs fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn codec_corpus_holds() {
    replay("codec", check_codec);
}

#[test]
fn sse_corpus_holds() {
    replay("sse", publisher::fuzzing::check_sse);
}

#[test]
fn assembler_corpus_holds() {
    replay("assembler", check_assembler);
}

/// The encoder that wrote the assembler seeds still speaks the decoder's format.
#[test]
fn assembler_input_encoding_round_trips() {
    for (path, input) in corpus("assembler") {
        let decoded = AssemblerInput::decode(&input);
        let limits = input.first().copied().unwrap_or(0xff);
        let again = AssemblerInput::decode(&AssemblerInput::encode(limits, &decoded.messages));
        assert_eq!(again, decoded, "{}", path.display());
    }
}

// ---- Seeds ----------------------------------------------------------------------------------

/// Writes the seed corpora from the fixtures (run by hand; see the module docs).
#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seed_corpora() {
    let root = std::env::var_os("FUZZ_SEED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz_dir().join("corpus"));
    write_seeds(&root.join("codec"), codec_seeds());
    write_seeds(&root.join("sse"), sse_seeds());
    write_seeds(&root.join("assembler"), assembler_seeds());
}

fn write_seeds(dir: &Path, seeds: Vec<(String, Vec<u8>)>) {
    fs::create_dir_all(dir).unwrap();
    let mut seen = BTreeSet::new();
    for (name, bytes) in seeds {
        if seen.insert(bytes.clone()) {
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    println!("{}: {} seeds", dir.display(), seen.len());
}

/// Lines of a JSON-lines fixture in `fixtures/sockudo/`.
fn sockudo_capture(name: &str) -> Vec<Value> {
    let path = fixtures_dir().join("../sockudo").join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every frame Sockudo and the probe exchanged, as text.
fn codec_seeds() -> Vec<(String, Vec<u8>)> {
    sockudo_capture("probe-capture.jsonl")
        .iter()
        .enumerate()
        .map(|(line, record)| {
            let frame = record["frame"].to_string();
            (format!("sockudo-{line:03}"), frame.into_bytes())
        })
        .collect()
}

/// Sorted `fixtures/openai/` entries with this suffix.
fn fixture_names(suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Seeds stay small, so that the fuzzer runs fast: a seed holds consecutive frames up to this
/// many bytes (a bigger frame stands alone).
const SSE_SEED_BYTES: usize = 1500;

/// Runs of frames from every attempt of every recording and from the llama.cpp capture, in
/// one chunk; the first run of each attempt also cut in pieces, and one byte by byte.
fn sse_seeds() -> Vec<(String, Vec<u8>)> {
    let mut bodies = Vec::new();
    for name in fixture_names(".jsonl") {
        let text = fs::read_to_string(fixtures_dir().join(&name)).unwrap();
        let recording = Recording::parse(&text).unwrap();
        let stem = name.trim_end_matches(".jsonl").to_owned();
        for (index, attempt) in recording.attempts.iter().enumerate() {
            bodies.push((
                format!("{stem}-{index}"),
                attempt.render_chunks(Replay::Full),
            ));
        }
    }
    let capture =
        fs::read(fixtures_dir().join("real_llamacpp_b11434_responses_stream.txt")).unwrap();
    let head_end = capture.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let frames = capture[head_end..].split_inclusive(|&b| b == b'\n').fold(
        vec![Vec::new()],
        |mut frames: Vec<Vec<u8>>, line| {
            let last = frames.last_mut().unwrap();
            last.extend_from_slice(line);
            if line == b"\r\n" || line == b"\n" {
                frames.push(Vec::new());
            }
            frames
        },
    );
    bodies.push(("llamacpp".into(), frames));

    let mut seeds = Vec::new();
    for (stem, frames) in bodies {
        let mut runs = vec![Vec::new()];
        for frame in frames {
            let last = runs.last_mut().unwrap();
            if !last.is_empty() && last.len() + frame.len() > SSE_SEED_BYTES {
                runs.push(frame);
            } else {
                last.extend_from_slice(&frame);
            }
        }
        for (at, run) in runs.iter().enumerate() {
            seeds.push((format!("{stem}-{at}"), [&[0], &run[..]].concat()));
        }
        // Cuts near the start of the first run: a chunk may end anywhere.
        seeds.push((
            format!("{stem}-cut"),
            [&[3, 1, 7, 200], &runs[0][..]].concat(),
        ));
        if stem == "llamacpp" {
            seeds.push((format!("{stem}-bytewise"), [&[0xff], &runs[0][..]].concat()));
        }
    }
    seeds
}

/// Limits bytes: all defaults; one answer, one prompt and 5 text bytes.
const DEFAULT_LIMITS: u8 = 0xff;
const TIGHT_LIMITS: u8 = 0b01_0101;

/// What each Sockudo connection of the capture was delivered, and what subscribers of an
/// in-memory channel receive while the relay publishes each recording (live, and joining
/// afterwards with either rewind style), with a prompt before the answer.
fn assembler_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut by_conn: Vec<(String, Vec<Message>)> = Vec::new();
    for record in sockudo_capture("probe-capture.jsonl") {
        let frame = &record["frame"];
        if record["dir"] != "in" || frame["action"] != Action::MESSAGE.0 {
            continue;
        }
        let conn = record["conn"].as_str().unwrap().to_owned();
        let messages: Vec<Message> = serde_json::from_value(frame["messages"].clone()).unwrap();
        match by_conn.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, list)) => list.extend(messages),
            None => by_conn.push((conn, messages)),
        }
    }
    for (conn, messages) in by_conn {
        let conn = conn.replace('.', "_");
        seeds.push((
            format!("sockudo-{conn}"),
            AssemblerInput::encode(DEFAULT_LIMITS, &messages),
        ));
    }

    for name in fixture_names(".jsonl") {
        let Ok(events) = recorded_events(&name) else {
            continue;
        };
        let mut channel = SimChannel::new();
        let live = channel.subscribe(None);
        let prompt = channel
            .publish(testkit::create(headers::PROMPT_NAME, "Tell me a joke"))
            .unwrap();
        let config = RelayConfig {
            window: Duration::from_millis(40),
            prompt: Some(prompt),
            ..RelayConfig::default()
        };
        let mut driver =
            RelayDriver::new(config, Instant::from_millis(0), Duration::from_millis(30));
        for event in &events {
            driver.event(&mut channel, event);
            driver.advance(&mut channel, Duration::from_millis(20));
        }
        driver.finish(&mut channel);
        let aggregate = channel.subscribe_with(Some(10), RewindStyle::Aggregate);
        let per_version = channel.subscribe_with(Some(100), RewindStyle::PerVersion);
        let stem = name.trim_end_matches(".jsonl");
        for (label, sub) in [
            ("live", live),
            ("rewind", aggregate),
            ("versions", per_version),
        ] {
            let messages = channel.drain(sub);
            // Only seeds the assembler accepts as a whole make a useful start.
            let mut asm = Assembler::new();
            assert!(asm.apply_all(&messages).errors.is_empty(), "{stem} {label}");
            seeds.push((
                format!("{stem}-{label}"),
                AssemblerInput::encode(DEFAULT_LIMITS, &messages),
            ));
            if label == "live" {
                seeds.push((
                    format!("{stem}-{label}-tight"),
                    AssemblerInput::encode(TIGHT_LIMITS, &messages),
                ));
            }
        }
    }
    seeds
}
