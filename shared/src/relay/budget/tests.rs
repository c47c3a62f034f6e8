use super::*;

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

#[test]
fn unlimited_never_waits_and_keeps_the_base_window() {
    let mut budget = Budget::new(0);
    for i in 0..10_000 {
        assert_eq!(budget.take(at(i / 100)), Ok(()));
    }
    assert_eq!(
        budget.window(Duration::from_millis(40), 500),
        Duration::from_millis(40)
    );
}

#[test]
fn a_full_bucket_allows_a_one_second_burst_then_paces() {
    let mut budget = Budget::new(50);
    for _ in 0..50 {
        assert_eq!(budget.take(at(0)), Ok(()));
    }
    // Empty: one message comes back every 20 ms.
    assert_eq!(budget.take(at(0)), Err(at(20)));
    assert_eq!(budget.take(at(19)), Err(at(20)));
    assert_eq!(budget.take(at(20)), Ok(()));
    assert_eq!(budget.take(at(20)), Err(at(40)));
}

#[test]
fn sustained_rate_matches_the_budget() {
    let mut budget = Budget::new(50);
    let mut now = at(0);
    let mut sent = 0;
    // Ten simulated seconds of a sender that always wants to send.
    while now < at(10_000) {
        match budget.take(now) {
            Ok(()) => sent += 1,
            Err(next) => now = next,
        }
    }
    // The burst of 50, then 50 per second.
    assert!((545..=551).contains(&sent), "sent {sent}");
}

#[test]
fn idle_time_refills_only_up_to_the_burst() {
    let mut budget = Budget::new(10);
    for _ in 0..10 {
        assert_eq!(budget.take(at(0)), Ok(()));
    }
    let mut burst = 0;
    while budget.take(at(60_000)).is_ok() {
        burst += 1;
    }
    assert_eq!(burst, 10);
}

#[test]
fn the_window_widens_with_the_number_of_answers() {
    let budget = Budget::new(50);
    let base = Duration::from_millis(40);
    assert_eq!(budget.window(base, 1), base);
    // 20 answers × one append per window ≤ 40 appends per second.
    assert_eq!(budget.window(base, 20), Duration::from_millis(500));
    assert!(budget.window(base, 100) >= Duration::from_millis(2_400));
    let total = 20.0 / budget.window(base, 20).as_secs_f64();
    assert!(total <= 50.0 * APPEND_SHARE + 1e-9, "{total}");
}
