//! The JetStream engine against a real nats-server (started here, on a free loopback port with
//! its own storage): the shared engine suite, reopening, two writers on one stream, and a
//! server restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tellonce_log::suite::{self, entry};
use tellonce_log::{AppendOutcome, Log};
use tellonce_log_nats::server::NatsServer;
use tellonce_log_nats::{NatsLog, NatsOptions};

static STREAMS: AtomicUsize = AtomicUsize::new(0);

fn options(server: &NatsServer) -> NatsOptions {
    let n = STREAMS.fetch_add(1, Ordering::Relaxed);
    NatsOptions {
        url: server.url.clone(),
        stream: format!("TEST{n}"),
        subject_prefix: format!("test{n}.log"),
        ..NatsOptions::default()
    }
}

fn start(dir: &std::path::Path) -> NatsServer {
    NatsServer::start(dir).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_jetstream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start(tmp.path());
    let url = server.url.clone();
    suite::run_all(|| {
        let opts = NatsOptions {
            url: url.clone(),
            ..options(&server)
        };
        async move { Arc::new(NatsLog::open(opts).await.expect("open")) as Arc<dyn Log> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_rebuilds_idempotency_from_the_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start(tmp.path());
    let opts = options(&server);
    {
        let log = NatsLog::open(opts.clone()).await.expect("open");
        let batch = (0..30).map(|i| entry("police", &format!("r{i}"))).collect();
        log.append(batch).await.expect("append");
    }
    let log = NatsLog::open(opts).await.expect("reopen");
    assert_eq!(log.head().next_offset, 30);
    let out = log
        .append(vec![entry("police", "r7"), entry("police", "new")])
        .await
        .expect("append");
    assert_eq!(
        out,
        vec![AppendOutcome::Duplicate(7), AppendOutcome::Appended(30)]
    );
    assert_eq!(suite::read_all(&log).await.len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_stream_keep_one_chain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start(tmp.path());
    let opts = options(&server);
    let a = Arc::new(NatsLog::open(opts.clone()).await.expect("open a"));
    let b = Arc::new(NatsLog::open(opts.clone()).await.expect("open b"));
    let mut tasks = Vec::new();
    for (w, log) in [(0, a.clone()), (1, b.clone())] {
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60u32 {
                // Both writers publish overlapping keys in different orders.
                let k = if w == 0 { i } else { 59 - i };
                let batch = vec![
                    entry("police", &format!("k{k}")),
                    entry("nhs-community", &format!("w{w}-{i}")),
                ];
                let out = log.append(batch).await.expect("append");
                acked.push((format!("k{k}"), out[0].offset()));
            }
            acked
        }));
    }
    let mut offsets = std::collections::HashMap::new();
    for t in tasks {
        for (k, o) in t.await.expect("writer") {
            if let Some(prev) = offsets.insert(k.clone(), o) {
                assert_eq!(prev, o, "{k} has one offset for both writers");
            }
        }
    }
    // A third reader sees one dense chain with each key once.
    let c = NatsLog::open(opts).await.expect("open c");
    let all = suite::read_all(&c).await;
    assert_eq!(all.len(), 60 + 120, "60 shared keys once, 120 private ones");
    let mut keys = std::collections::HashSet::new();
    for e in &all {
        assert!(
            keys.insert((e.source.clone(), e.id.clone())),
            "{} once",
            e.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_a_server_kill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = start(tmp.path());
    let opts = options(&server);
    {
        let log = NatsLog::open(opts.clone()).await.expect("open");
        for b in 0..10 {
            let batch = (0..10).map(|i| entry("yos", &format!("{b}-{i}"))).collect();
            log.append(batch).await.expect("append");
        }
    }
    server.kill();
    // Same storage folder, same port: the restarted server finds its stream.
    let restarted = NatsServer::start(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
    let opts = NatsOptions {
        url: restarted.url.clone(),
        ..opts
    };
    let log = NatsLog::open(opts).await.expect("reopen after kill");
    assert_eq!(suite::read_all(&log).await.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_larger_than_the_clients_ack_window_does_not_stall() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start(tmp.path());
    let log = NatsLog::open(options(&server)).await.expect("open");
    let batch: Vec<_> = (0..6000)
        .map(|i| entry("police", &format!("big-{i}")))
        .collect();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), log.append(batch))
        .await
        .expect("6000 entries within 60 s")
        .expect("append");
    assert_eq!(out.last(), Some(&AppendOutcome::Appended(5999)));
}
