//! The read-side benchmarks run end to end on a small county: `bench query` reports the
//! median of its rounds and how long reads waited for their access entries (with callers, or
//! offering a rate), and `bench replay`
//! rebuilds the same log more than once and finds the same projections each time.

mod common;

/// Runs `tellonce bench <args> --json` on a small county and returns its JSON object.
fn bench(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend(args);
    all.extend(["--families", "20", "--events", "2000", "--json"]);
    let ran = common::run_ok(all);
    let line = ran.stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn number(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[test]
fn bench_query_reports_the_median_round_and_the_wait_for_access_entries() {
    let v = bench(&[
        "query",
        "--seconds",
        "1",
        "--runs",
        "3",
        "--concurrency",
        "4",
    ]);
    assert_eq!(v["policy"], true);
    assert_eq!(v["runs"], 3);
    let each: Vec<f64> = v["runs_queries_per_sec"]
        .as_array()
        .expect("runs_queries_per_sec")
        .iter()
        .filter_map(|q| q.as_f64())
        .collect();
    assert_eq!(each.len(), 3);
    assert!(each.iter().all(|&q| q > 0.0), "{each:?}");
    // The reported rate is the middle one of the three rounds.
    let mut sorted = each.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(number(&v, "queries_per_sec"), sorted[1]);
    // Every read wrote an access entry, and the reads waited for them.
    assert!(number(&v, "access_entries_written") > 0.0, "{v}");
    assert!(number(&v, "access_append_p50_ms") > 0.0, "{v}");
    assert!(number(&v, "access_append_p99_ms") >= number(&v, "access_append_p50_ms"));
    assert!(number(&v, "timeline_p99_ms") >= number(&v, "timeline_p50_ms"));
    assert!(number(&v, "family_queries_per_sec") > 0.0, "{v}");
    // A second of reads takes CPU time (counted in ticks of 10 ms) in every round.
    assert_eq!(
        v["runs_timeline_cpu_ms_per_query"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(number(&v, "timeline_cpu_ms_per_query") > 0.0, "{v}");
}

#[test]
fn bench_query_without_the_policy_writes_and_waits_for_nothing() {
    let v = bench(&["query", "--seconds", "1", "--runs", "1", "--no-policy"]);
    assert_eq!(v["policy"], false);
    assert_eq!(number(&v, "access_entries_written"), 0.0);
    assert_eq!(number(&v, "access_append_p50_ms"), 0.0);
    assert!(number(&v, "queries_per_sec") > 0.0, "{v}");
}

#[test]
fn bench_query_at_a_rate_offers_that_many_queries_and_times_them_from_when_due() {
    let v = bench(&["query", "--seconds", "2", "--runs", "1", "--rate", "150"]);
    assert_eq!(number(&v, "offered_rate"), 150.0);
    assert_eq!(
        number(&v, "concurrency"),
        0.0,
        "no callers in the open loop"
    );
    // Every query offered was asked and logged: 300 timeline reads and 300 family reads.
    assert_eq!(number(&v, "access_entries_written"), 600.0, "{v}");
    // Answered at about the rate offered (the last ones finish a little after 2 s).
    let qps = number(&v, "queries_per_sec");
    assert!((100.0..=151.0).contains(&qps), "{v}");
    assert!(number(&v, "timeline_p99_ms") >= number(&v, "timeline_p50_ms"));
    // The sender's lateness is measured, and is part of each latency.
    assert!(number(&v, "sender_late_p99_ms") > 0.0, "{v}");
    assert!(
        number(&v, "timeline_p99_ms") >= number(&v, "sender_late_p99_ms"),
        "{v}"
    );
}

#[test]
fn bench_replay_rebuilds_the_same_projections_each_run() {
    let v = bench(&["replay", "--runs", "2"]);
    assert_eq!(v["runs"], 2);
    assert_eq!(v["same_projections"], true);
    assert_eq!(v["runs_events_per_sec"].as_array().map(Vec::len), Some(2));
    // CPU time is counted in ticks of 10 ms: a rebuild this small may take none.
    assert_eq!(
        v["runs_cpu_seconds_per_million"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(number(&v, "cpu_seconds_per_million") >= 0.0, "{v}");
    // Every rebuild stores its lines and a snapshot, so writes something (where the kernel
    // counts a process's writes, as Linux does in /proc/self/io).
    if std::fs::read_to_string("/proc/self/io").is_ok_and(|s| s.contains("write_bytes:")) {
        assert_eq!(
            v["runs_disk_written_mb_per_million"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(number(&v, "disk_written_mb_per_million") > 0.0, "{v}");
    }
    assert!(number(&v, "entries") >= 2000.0, "{v}");
    assert!(number(&v, "events_per_sec") > 0.0, "{v}");
    assert!(number(&v, "persons") > 0.0, "{v}");
    // The restart (same projections, or the bench fails) resumed from the snapshot written
    // at close: a rebuild this small has no periodic one.
    assert_eq!(
        number(&v, "restart_resumed_at"),
        number(&v, "entries"),
        "{v}"
    );
    assert!(number(&v, "restart_log_open_seconds") > 0.0, "{v}");
    assert!(
        number(&v, "restart_seconds") > number(&v, "restart_log_open_seconds"),
        "{v}"
    );
}
