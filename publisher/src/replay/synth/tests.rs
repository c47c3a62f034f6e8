//! Tests: the `synth` grammar, the deterministic text and the friendly answer's text.

use super::*;

fn parse(model: &str) -> Synth {
    Synth::parse(model)
        .unwrap_or_else(|e| panic!("{model}: {e}"))
        .unwrap_or_else(|| panic!("{model} is not a synth model"))
}

fn reason(model: &str) -> String {
    match Synth::parse(model) {
        Err(ReplayError::Synth { model: m, reason }) => {
            assert_eq!(m, model);
            reason
        }
        other => panic!("{model}: expected a synth error, got {other:?}"),
    }
}

#[test]
fn other_models_are_not_synth() {
    for model in [
        "gpt-5.4-mini",
        "synthetic",
        "synth-1",
        "Synth",
        "",
        "01_plain_text",
    ] {
        assert_eq!(Synth::parse(model).unwrap(), None, "{model}");
    }
}

#[test]
fn bare_synth_has_the_defaults() {
    let defaults = Synth {
        tokens: 60,
        rate: 50.0,
        fault: None,
        seed: 0,
    };
    assert_eq!(parse("synth"), defaults);
    assert_eq!(parse("synth:"), defaults);
    assert_eq!(Synth::default(), defaults);
}

#[test]
fn every_key_parses_in_any_order() {
    assert_eq!(
        parse("synth:seed=7,fault=error@3,rate=0,tokens=5"),
        Synth {
            tokens: 5,
            rate: 0.0,
            fault: Some(Fault::Error(3)),
            seed: 7,
        }
    );
    assert_eq!(parse("synth: tokens = 8 , rate=2.5").rate, 2.5);
    let faults = [
        ("http429", Fault::Http429(1)),
        ("http500", Fault::Http500(1)),
        ("http500@2", Fault::Http500(2)),
        ("http401", Fault::Http401),
        ("quota", Fault::Quota),
        ("error@0", Fault::Error(0)),
        ("truncate@4", Fault::Truncate(4)),
        ("stall@2", Fault::Stall(2)),
        ("incomplete@60", Fault::Incomplete(60)),
        ("failed@1", Fault::Failed(1)),
    ];
    for (text, fault) in faults {
        assert_eq!(parse(&format!("synth:fault={text}")).fault, Some(fault));
        assert_eq!(fault.to_string(), text);
    }
}

#[test]
fn display_gives_a_model_string_that_parses_back() {
    for model in [
        "synth",
        "synth:tokens=0",
        "synth:tokens=100000,rate=0.25,fault=stall@99999,seed=18446744073709551615",
        "synth:fault=quota",
    ] {
        let synth = parse(model);
        assert_eq!(parse(&synth.to_string()), synth, "{model}");
    }
    assert_eq!(
        parse("synth:fault=failed@2,tokens=3").to_string(),
        "synth:tokens=3,rate=50,fault=failed@2,seed=0"
    );
}

#[test]
fn malformed_specs_say_what_is_wrong() {
    let cases = [
        ("synth:tokens", "`tokens` is not key=value"),
        ("synth:tokens=5,", "an empty part"),
        ("synth:tokens=5,,seed=1", "an empty part"),
        (
            "synth:tokens=-1",
            "tokens must be a whole number from 0 to 100000",
        ),
        ("synth:tokens=100001", "not `100001`"),
        ("synth:tokens=ten", "not `ten`"),
        ("synth:rate=-3", "rate must be 0"),
        ("synth:rate=inf", "rate must be 0"),
        ("synth:rate=NaN", "rate must be 0"),
        ("synth:rate=0.001", "at least 0.01"),
        ("synth:seed=x", "seed must be"),
        ("synth:speed=3", "unknown key `speed`"),
        ("synth:tokens=3,tokens=4", "`tokens` is given twice"),
        ("synth:fault=boom", "unknown fault `boom`"),
        ("synth:fault=error", "fault=error needs a position"),
        ("synth:fault=stall@", "must be a whole number"),
        ("synth:fault=truncate@x", "must be a whole number"),
        ("synth:fault=http401@3", "fault=http401 takes no @position"),
        ("synth:fault=http429@x", "must be a whole number"),
        (
            "synth:tokens=5,fault=error@6",
            "after 6 deltas but the answer has only tokens=5",
        ),
    ];
    for (model, expected) in cases {
        let reason = reason(model);
        assert!(reason.contains(expected), "{model}: {reason}");
    }
    let message = Synth::parse("synth:x=1").unwrap_err().to_string();
    assert!(
        message.starts_with("bad synth model `synth:x=1`: unknown key"),
        "{message}"
    );
    assert!(
        message.contains("synth:tokens=N,rate=R,fault=KIND[@K],seed=S"),
        "{message}"
    );
}

#[test]
fn text_is_deterministic_words_with_multibyte_characters() {
    let synth = parse("synth:tokens=60,seed=42");
    let deltas = synth.deltas();
    assert_eq!(deltas.len(), 60);
    assert_eq!(deltas, parse("synth:seed=42,rate=0").deltas());
    assert_eq!(synth.text(), deltas.concat());
    assert_ne!(synth.text(), parse("synth:seed=43").text());

    assert!(!deltas[0].starts_with(' '));
    assert!(deltas[1..]
        .iter()
        .all(|d| d.starts_with(' ') && d.len() > 1));
    assert!(synth.text().ends_with('.'));
    let first = synth.text().chars().next().unwrap();
    assert!(!first.is_lowercase(), "{first}");
    // Every fifth word is multi-byte: two-, three- and four-byte characters all show up
    // across a few seeds.
    assert!(
        deltas[2].len() > deltas[2].chars().count(),
        "{:?}",
        deltas[2]
    );
    let texts: String = (0..8)
        .map(|seed| {
            Synth {
                seed,
                ..synth.clone()
            }
            .text()
        })
        .collect();
    for width in [2, 3, 4] {
        assert!(
            texts.chars().any(|c| c.len_utf8() == width),
            "no {width}-byte character in {texts}"
        );
    }

    assert_eq!(parse("synth:tokens=0").text(), "");
    assert_eq!(parse("synth:tokens=1").deltas().len(), 1);
}

#[test]
fn streamed_text_stops_at_the_fault() {
    let full = parse("synth:tokens=10,seed=3");
    let deltas = full.deltas();
    assert_eq!(full.streamed_text(), full.text());
    for kind in ["error", "truncate", "stall", "incomplete", "failed"] {
        let cut = parse(&format!("synth:tokens=10,seed=3,fault={kind}@4"));
        assert_eq!(cut.text(), full.text(), "{kind}");
        assert_eq!(cut.streamed_text(), deltas[..4].concat(), "{kind}");
    }
    let http = parse("synth:tokens=10,seed=3,fault=http500");
    assert_eq!(http.streamed_text(), full.text());
}

#[test]
fn rate_sets_the_pause_between_deltas() {
    assert_eq!(parse("synth").delta_pause(), Duration::from_millis(20));
    assert_eq!(
        parse("synth:rate=4").delta_pause(),
        Duration::from_millis(250)
    );
    assert_eq!(parse("synth:rate=0").delta_pause(), Duration::ZERO);
    assert_eq!(
        parse("synth:rate=0.01").delta_pause(),
        Duration::from_secs(100)
    );
}

#[test]
fn friendly_text_quotes_the_input() {
    let text = friendly_text(Some("  What is\n the weather in Zürich? 🙂 "));
    assert!(text.contains("local replay server"), "{text}");
    assert!(
        text.contains("You wrote: “What is the weather in Zürich? 🙂”"),
        "{text}"
    );
    let words = text.split_whitespace().count();
    assert!((55..=80).contains(&words), "{words} words: {text}");

    let long = "é".repeat(500);
    let text = friendly_text(Some(&long));
    assert!(text.contains(&format!("“{}…”", "é".repeat(200))), "{text}");

    for nothing in [None, Some(""), Some(" \n ")] {
        let text = friendly_text(nothing);
        assert!(text.contains("You sent no text I could quote."), "{text}");
    }
}

#[test]
fn without_a_seed_the_prompt_picks_the_words() {
    let a = Synth::for_request("synth:tokens=12", Some("first question"))
        .unwrap()
        .unwrap();
    let b = Synth::for_request("synth:tokens=12", Some("second question"))
        .unwrap()
        .unwrap();
    let a_again = Synth::for_request("synth:tokens=12", Some("first question"))
        .unwrap()
        .unwrap();
    assert_ne!(a.text(), b.text());
    assert_eq!(a.text(), a_again.text());
    // An explicit seed wins over the prompt.
    let seeded = Synth::for_request("synth:tokens=12,seed=7", Some("first question"))
        .unwrap()
        .unwrap();
    assert_eq!(seeded.seed, 7);
    assert_eq!(Synth::for_request("gpt-5", Some("x")).unwrap(), None);
}
