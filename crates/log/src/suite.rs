//! The test suite every log engine must pass, written once.
//!
//! Each check takes a fresh, empty log and panics with a message naming the broken rule.
//! Engines run [`run_all`] from their own tests; [`check_history`] is also the oracle of the
//! property tests (any sequence of batches with retries and duplicates).

use std::collections::HashMap;
use std::sync::Arc;

use crate::{verify_chain, AppendOutcome, Head, Log, NewEntry, StoredEntry};
use sha2::Digest;

/// An entry for tests: body derived from the key so reads can be checked.
pub fn entry(source: &str, id: &str) -> NewEntry {
    NewEntry {
        source: source.to_string(),
        id: id.to_string(),
        recorded_at_ms: 1_764_000_000_000 + id.len() as i64,
        body: format!("{{\"body\":\"{source}/{id}\"}}").into_bytes(),
    }
}

/// Reads the whole log, checking the chain; panics on any error.
pub async fn read_all(log: &dyn Log) -> Vec<StoredEntry> {
    let mut out: Vec<StoredEntry> = Vec::new();
    loop {
        let batch = log
            .read(out.len() as u64, 1000)
            .await
            .expect("reading the log");
        if batch.is_empty() {
            break;
        }
        out.extend(batch);
    }
    let head = verify_chain(Head::EMPTY, &out).expect("hash chain verifies");
    assert_eq!(head, log.head(), "head matches the last entry read");
    // Each hash is the hash of the entry's own bytes, however the engine came by it.
    for e in &out {
        let own: crate::Hash = sha2::Sha256::digest(crate::frame::stored_bytes(e)).into();
        assert_eq!(e.hash, own, "the hash of entry {}", e.offset);
    }
    out
}

/// Appends `batches` in order and checks the result against a model: dense offsets, each key
/// once at its first offset, duplicates answered with the original offset, the chain intact.
pub async fn check_history(log: &dyn Log, batches: Vec<Vec<NewEntry>>) {
    let mut model: HashMap<(String, String), u64> = HashMap::new();
    let mut next = log.head().next_offset;
    for batch in batches {
        let keys: Vec<(String, String)> = batch
            .iter()
            .map(|e| (e.source.clone(), e.id.clone()))
            .collect();
        let outcomes = log.append(batch).await.expect("append succeeds");
        assert_eq!(outcomes.len(), keys.len(), "one outcome per entry");
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match model.get(&key) {
                Some(&offset) => assert_eq!(
                    outcome,
                    AppendOutcome::Duplicate(offset),
                    "{key:?} is a duplicate"
                ),
                None => {
                    assert_eq!(
                        outcome,
                        AppendOutcome::Appended(next),
                        "{key:?} gets the next dense offset"
                    );
                    model.insert(key, next);
                    next += 1;
                }
            }
        }
    }
    let all = read_all(log).await;
    assert_eq!(
        all.len() as u64,
        next,
        "log holds exactly the appended entries"
    );
    for e in &all {
        assert_eq!(
            model.get(&(e.source.clone(), e.id.clone())),
            Some(&e.offset),
            "entry at its offset"
        );
        assert_eq!(
            e.body,
            entry(&e.source, &e.id).body,
            "body read back intact"
        );
    }
}

/// Offsets are dense from 0 and the head follows the appends.
pub async fn dense_offsets(log: &dyn Log) {
    assert_eq!(log.head(), Head::EMPTY, "a new log is empty");
    let batches = (0..3)
        .map(|b| {
            (0..5)
                .map(|i| entry("police", &format!("e{b}-{i}")))
                .collect()
        })
        .collect();
    check_history(log, batches).await;
    assert_eq!(log.head().next_offset, 15);
}

/// A retried `(source, id)` is a duplicate, in a later batch or the same one; the same id
/// from another source is a different entry.
pub async fn duplicates(log: &dyn Log) {
    let out = log
        .append(vec![
            entry("police", "a"),
            entry("police", "b"),
            entry("police", "a"),
        ])
        .await
        .expect("append");
    assert_eq!(
        out,
        vec![
            AppendOutcome::Appended(0),
            AppendOutcome::Appended(1),
            AppendOutcome::Duplicate(0)
        ]
    );
    let out = log
        .append(vec![entry("police", "b"), entry("school-001", "a")])
        .await
        .expect("append");
    assert_eq!(
        out,
        vec![AppendOutcome::Duplicate(1), AppendOutcome::Appended(2)]
    );
    assert_eq!(read_all(log).await.len(), 3);
}

/// Reads return what was written, from any offset, and stop at the end.
pub async fn reads(log: &dyn Log) {
    let entries: Vec<NewEntry> = (0..50).map(|i| entry("nhs", &format!("h{i}"))).collect();
    log.append(entries.clone()).await.expect("append");
    let mid = log.read(20, 10).await.expect("read");
    assert_eq!(mid.len(), 10);
    assert_eq!(mid[0].offset, 20);
    assert_eq!(mid[0].id, "h20");
    assert_eq!(mid[0].recorded_at_ms, entries[20].recorded_at_ms);
    assert_eq!(log.read(45, 100).await.expect("read").len(), 5);
    assert!(log.read(50, 10).await.expect("read").is_empty());
    assert!(log.read(500, 10).await.expect("read").is_empty());
    let all = read_all(log).await;
    assert_eq!(all[49].hash, log.head().last_hash);
    // An engine that reads without the runtime reads the same there.
    if log.read_blocking(0, 0).is_some() {
        for (from, max) in [(0, 50), (20, 10), (45, 100), (50, 10), (500, 10)] {
            let blocking = log.read_blocking(from, max).expect("can").expect("read");
            let read = log.read(from, max).await.expect("read");
            assert_eq!(blocking, read, "read_blocking({from}, {max})");
            let mut each = Vec::new();
            let n = log
                .read_blocking_each(from, max, &mut |e| each.push(e.to_entry()))
                .expect("can")
                .expect("read");
            assert_eq!(n, read.len());
            assert_eq!(each, read, "read_blocking_each({from}, {max})");
        }
    }
}

/// Many concurrent appenders with overlapping keys: each key lands once, offsets stay dense.
pub async fn concurrent_appenders(log: Arc<dyn Log>) {
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..40u32 {
                // Keys overlap between neighbouring tasks, as retries from two connections do.
                let id = format!("k{}", (t / 2) * 1000 + i);
                let out = log.append(vec![entry("yos", &id)]).await.expect("append");
                seen.push((id, out[0].offset()));
            }
            seen
        }));
    }
    let mut offsets: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        for (id, offset) in t.await.expect("task") {
            if let Some(prev) = offsets.insert(id.clone(), offset) {
                assert_eq!(prev, offset, "{id} answered with one offset");
            }
        }
    }
    let all = read_all(log.as_ref()).await;
    assert_eq!(all.len(), offsets.len(), "each key once");
    assert_eq!(all.len(), 4 * 40);
}

/// Runs every check, each on a fresh log from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Log>>,
{
    dense_offsets(make().await.as_ref()).await;
    duplicates(make().await.as_ref()).await;
    reads(make().await.as_ref()).await;
    concurrent_appenders(make().await).await;
}
