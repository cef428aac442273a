//! Fault tests on a three-node JetStream cluster (R3), each with its own servers on free
//! loopback ports: a writer keeps appending (retrying a failed batch, which is safe because
//! appends are idempotent) while a server is killed or paused; afterwards a checker reads the
//! log back and finds every acknowledged entry exactly once, at the offset it was acknowledged
//! with, on one unbroken chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tellonce_log::suite::{self, entry};
use tellonce_log::Log;
use tellonce_log_nats::server::NatsCluster;
use tellonce_log_nats::{NatsLog, NatsOptions};

type Acked = Arc<Mutex<HashMap<String, u64>>>;

fn options(cluster: &NatsCluster, name: &str) -> NatsOptions {
    NatsOptions {
        url: cluster.urls(),
        stream: name.to_uppercase(),
        subject_prefix: format!("{name}.log"),
        replicas: 3,
        timeout: Duration::from_secs(3),
        ..NatsOptions::default()
    }
}

/// Appends `batches` batches of 5, retrying each for up to 60 s; records what was acknowledged.
fn writer(log: Arc<NatsLog>, batches: u32, acked: Acked) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for b in 0..batches {
            let batch: Vec<_> = (0..5)
                .map(|i| entry("police", &format!("{b}-{i}")))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match log.append(batch.clone()).await {
                    Ok(out) => {
                        let mut a = acked.lock().expect("lock");
                        for (e, o) in batch.iter().zip(out) {
                            let prev = a.insert(e.id.clone(), o.offset());
                            assert!(prev.is_none() || prev == Some(o.offset()), "{} moved", e.id);
                        }
                        break;
                    }
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "batch {b} not accepted within 60 s: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    })
}

async fn wait_for(acked: &Acked, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < n {
        assert!(Instant::now() < deadline, "writer stalled before the fault");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the whole log through a fresh replica and checks it against what was acknowledged.
async fn check(opts: NatsOptions, acked: &Acked, expected: usize) {
    let log = NatsLog::open(opts).await.expect("checker opens the log");
    let all = suite::read_all(&log).await;
    let mut seen: HashMap<String, u64> = HashMap::new();
    for e in &all {
        assert!(
            seen.insert(e.id.clone(), e.offset).is_none(),
            "{} appears once",
            e.id
        );
    }
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(
        acked.len(),
        expected,
        "every batch was acknowledged in the end"
    );
    for (id, offset) in &acked {
        assert_eq!(
            seen.get(id),
            Some(offset),
            "acknowledged {id} is at offset {offset}"
        );
    }
    assert_eq!(all.len(), expected, "nothing but the acknowledged entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_servers_loses_no_acknowledged_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = NatsCluster::start(tmp.path(), 3).unwrap_or_else(|e| panic!("{e}"));
    let opts = options(&cluster, "killone");
    let log = Arc::new(NatsLog::open(opts.clone()).await.expect("open"));
    let acked: Acked = Arc::default();
    let w = writer(log.clone(), 80, acked.clone());
    wait_for(&acked, 100).await;
    cluster.nodes[0].kill();
    w.await.expect("writer");
    check(
        NatsOptions {
            url: format!("{},{}", cluster.nodes[1].url, cluster.nodes[2].url),
            ..opts.clone()
        },
        &acked,
        400,
    )
    .await;
    // The killed server comes back and catches up; the log reads the same through it too.
    cluster.restart(0).unwrap_or_else(|e| panic!("{e}"));
    check(opts, &acked, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_whole_cluster_keeps_everything_acknowledged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = NatsCluster::start(tmp.path(), 3).unwrap_or_else(|e| panic!("{e}"));
    let opts = options(&cluster, "restartall");
    let acked: Acked = Arc::default();
    {
        let log = Arc::new(NatsLog::open(opts.clone()).await.expect("open"));
        writer(log, 20, acked.clone()).await.expect("writer");
    }
    for node in &mut cluster.nodes {
        node.kill();
    }
    for i in 0..3 {
        cluster.restart(i).unwrap_or_else(|e| panic!("{e}"));
    }
    check(opts, &acked, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_server_beyond_the_election_timeout_loses_nothing_and_forks_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = NatsCluster::start(tmp.path(), 3).unwrap_or_else(|e| panic!("{e}"));
    let opts = options(&cluster, "pauseone");
    let log = Arc::new(NatsLog::open(opts.clone()).await.expect("open"));
    let acked: Acked = Arc::default();
    let w = writer(log.clone(), 80, acked.clone());
    wait_for(&acked, 100).await;
    // SIGSTOP for longer than JetStream's election timeout, then SIGCONT.
    cluster.nodes[0].pause();
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.nodes[0].resume();
    w.await.expect("writer");
    check(opts.clone(), &acked, 400).await;
    // The paused server caught up: the log reads the same through it alone (no divergent
    // history on the node that was away).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let only = NatsOptions {
            url: cluster.nodes[0].url.clone(),
            ..opts.clone()
        };
        match NatsLog::open(only).await {
            Ok(l) if l.head().next_offset == 400 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
            other => panic!(
                "the paused server did not catch up: {:?}",
                other.map(|l| l.head().next_offset).err()
            ),
        }
    }
    check(
        NatsOptions {
            url: cluster.nodes[0].url.clone(),
            ..opts
        },
        &acked,
        400,
    )
    .await;
}
