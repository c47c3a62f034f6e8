use super::*;

#[test]
fn histograms_are_cumulative_with_sum_and_count() {
    let metrics = Metrics::default();
    for ms in [0, 3, 3, 40, 20_000] {
        metrics.ack_latency_ms.observe(ms);
    }
    let text = metrics.render();
    assert!(text.contains("relay_ack_latency_ms_bucket{le=\"1\"} 1\n"));
    assert!(text.contains("relay_ack_latency_ms_bucket{le=\"5\"} 3\n"));
    assert!(text.contains("relay_ack_latency_ms_bucket{le=\"50\"} 4\n"));
    assert!(text.contains("relay_ack_latency_ms_bucket{le=\"10000\"} 4\n"));
    assert!(text.contains("relay_ack_latency_ms_bucket{le=\"+Inf\"} 5\n"));
    assert!(text.contains("relay_ack_latency_ms_sum 20046\n"));
    assert!(text.contains("relay_ack_latency_ms_count 5\n"));
}

#[test]
fn answers_are_counted_by_status() {
    let metrics = Metrics::default();
    metrics.answer_ended(Status::Completed, 5);
    metrics.answer_ended(Status::Completed, 7);
    metrics.answer_ended(Status::Cancelled, 3);
    metrics.answer_ended(Status::Failed, 2);
    let text = metrics.render();
    assert!(text.contains("relay_answers_completed_total 2\n"));
    assert!(text.contains("relay_answers_cancelled_total 1\n"));
    assert!(text.contains("relay_answers_failed_total 1\n"));
    assert!(text.contains("relay_messages_per_answer_count 4\n"));
    // Every metric line is a HELP, a TYPE or `name value`.
    for line in text.lines() {
        assert!(
            line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line.split(' ').count() == 2,
            "{line}"
        );
    }
}
