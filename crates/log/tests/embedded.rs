//! The embedded engine: the shared engine suite on a real folder and on the simulated disk,
//! recovery, corruption detection, property tests and the power-loss test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use tellonce_log::sim::SimDisk;
use tellonce_log::storage::FsDir;
use tellonce_log::suite::{self, entry};
use tellonce_log::{embedded, AppendOutcome, EmbeddedLog, EmbeddedOptions, Log, LogError};

fn small_segments() -> EmbeddedOptions {
    EmbeddedOptions {
        segment_bytes: 512,
        ..EmbeddedOptions::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[tokio::test]
async fn suite_on_a_real_folder() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    suite::run_all(|| {
        let dirs = dirs.clone();
        async move {
            let tmp = tempfile::tempdir().expect("tempdir");
            let (log, _) =
                EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments())
                    .expect("open");
            dirs.lock().expect("lock").push(tmp);
            Arc::new(log) as Arc<dyn Log>
        }
    })
    .await;
}

#[tokio::test]
async fn suite_on_the_simulated_disk() {
    suite::run_all(|| async {
        let (log, _) = EmbeddedLog::open(SimDisk::new(1), small_segments()).expect("open");
        Arc::new(log) as Arc<dyn Log>
    })
    .await;
}

#[tokio::test]
async fn reopen_keeps_entries_and_idempotency() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let (log, report) =
            EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments())
                .expect("open");
        assert_eq!(report.entries, 0);
        for b in 0..20 {
            let batch = (0..5)
                .map(|i| entry("police", &format!("{b}-{i}")))
                .collect();
            log.append(batch).await.expect("append");
        }
    }
    let (log, report) =
        EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments()).expect("reopen");
    assert_eq!(report.entries, 100);
    assert!(report.segments >= 10, "small segments roll: {report:?}");
    assert_eq!(report.torn_bytes, 0);
    let out = log
        .append(vec![entry("police", "7-3"), entry("police", "new")])
        .await
        .expect("append");
    assert_eq!(
        out,
        vec![AppendOutcome::Duplicate(38), AppendOutcome::Appended(100)]
    );
    assert_eq!(suite::read_all(&log).await.len(), 101);
}

#[test]
fn a_second_process_cannot_open_the_same_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_log, _) =
        EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments()).expect("open");
    let second = EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments());
    assert!(matches!(second, Err(LogError::Io(_))));
}

/// The segment files in `dir`, in order.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    segments(dir).pop().expect("a segment")
}

async fn write_some(path: &std::path::Path, n: usize, opts: EmbeddedOptions) {
    let (log, _) = EmbeddedLog::open(FsDir::new(path).expect("dir"), opts).expect("open");
    for i in 0..n {
        log.append(vec![entry("school-001", &format!("x{i}"))])
            .await
            .expect("append");
    }
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_some(tmp.path(), 10, EmbeddedOptions::default()).await;
    let seg = last_segment(tmp.path());
    let good_len = std::fs::metadata(&seg).expect("meta").len();
    // Half of a frame: the start of a real entry, cut short.
    let mut torn = Vec::new();
    tellonce_log::frame::encode(&mut torn, 10, &[0; 32], &entry("school-001", "x10"));
    torn.truncate(torn.len() / 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &torn))
        .expect("append torn bytes");
    // Reported up to its last byte that is not zero (zeros are room prepared for appends).
    let reported = torn.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
    let (head, report) = embedded::verify(&FsDir::new(tmp.path()).expect("dir")).expect("verify");
    assert_eq!(
        (head.next_offset, report.torn_bytes),
        (10, reported),
        "verify reports without repairing"
    );
    let (log, report) = EmbeddedLog::open(
        FsDir::new(tmp.path()).expect("dir"),
        EmbeddedOptions::default(),
    )
    .expect("open");
    assert_eq!(report.entries, 10);
    assert_eq!(report.torn_bytes, reported);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), good_len);
    assert_eq!(suite::read_all(&log).await.len(), 10);
}

/// Copies the files of a log folder (as a power loss would find them, when all was synced).
fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    for seg in segments(from) {
        let name = seg.file_name().expect("a file name");
        std::fs::copy(&seg, to.join(name)).expect("copy");
    }
}

#[tokio::test]
async fn small_appends_go_into_zeros_that_read_as_a_clean_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (log, _) = EmbeddedLog::open(
        FsDir::new(tmp.path()).expect("dir"),
        EmbeddedOptions::default(),
    )
    .expect("open");
    for i in 0..10 {
        log.append(vec![entry("school-001", &format!("x{i}"))])
            .await
            .expect("append");
    }
    let seg = last_segment(tmp.path());
    let bytes = std::fs::read(&seg).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("entries") + 1;
    assert_eq!(
        bytes.len() as u64,
        tellonce_log::storage::ZERO_AHEAD,
        "room for the next appends, written as zeros"
    );
    // Read beside the running log, the zeros are a clean end, not a torn entry.
    let (head, report) = embedded::verify(&FsDir::new(tmp.path()).expect("dir")).expect("verify");
    assert_eq!((head.next_offset, report.torn_bytes), (10, 0));

    // After a power loss the copy has the room; it opens cleanly, gives the room back and
    // takes appends after the last entry.
    let lost = tempfile::tempdir().expect("tempdir");
    copy_folder(tmp.path(), lost.path());
    {
        let (copy, report) = EmbeddedLog::open(
            FsDir::new(lost.path()).expect("dir"),
            EmbeddedOptions::default(),
        )
        .expect("open the copy");
        assert_eq!((report.entries, report.torn_bytes), (10, 0));
        copy.append(vec![entry("school-001", "x10")])
            .await
            .expect("append");
        assert_eq!(suite::read_all(&copy).await.len(), 11);
    }
    // A torn entry in the room is reported as torn (up to its last byte that is not zero).
    let torn_copy = tempfile::tempdir().expect("tempdir");
    copy_folder(tmp.path(), torn_copy.path());
    let mut torn = Vec::new();
    tellonce_log::frame::encode(&mut torn, 10, &[7; 32], &entry("school-001", "x10"));
    torn.truncate(torn.len() / 2);
    let copied = torn_copy.path().join(seg.file_name().expect("name"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copied)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &torn, end as u64))
        .expect("write torn bytes");
    let (copy, report) = EmbeddedLog::open(
        FsDir::new(torn_copy.path()).expect("dir"),
        EmbeddedOptions::default(),
    )
    .expect("open the torn copy");
    assert_eq!((report.entries, report.torn_bytes), (10, torn.len() as u64));
    assert_eq!(std::fs::metadata(&copied).expect("meta").len(), end as u64);
    drop(copy);

    // A clean close leaves only the entries.
    drop(log);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), end as u64);
    let (_, report) = EmbeddedLog::open(
        FsDir::new(tmp.path()).expect("dir"),
        EmbeddedOptions::default(),
    )
    .expect("reopen");
    assert_eq!((report.entries, report.torn_bytes), (10, 0));
}

#[tokio::test]
async fn a_full_segment_keeps_no_room_after_its_entries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (log, _) =
        EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments()).expect("open");
    for i in 0..30 {
        log.append(vec![entry("police", &format!("{i}"))])
            .await
            .expect("append");
    }
    let mut segs = segments(tmp.path());
    segs.pop();
    assert!(segs.len() >= 3, "{segs:?}");
    for seg in segs {
        // 512-byte segments: room would be half a MiB.
        let len = std::fs::metadata(&seg).expect("meta").len();
        assert!(len < 4096, "{} holds {len} bytes", seg.display());
    }
    let (head, report) = embedded::verify(&FsDir::new(tmp.path()).expect("dir")).expect("verify");
    assert_eq!((head.next_offset, report.torn_bytes), (30, 0));
}

#[tokio::test]
async fn a_flipped_byte_is_corruption_not_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_some(tmp.path(), 10, EmbeddedOptions::default()).await;
    let seg = last_segment(tmp.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write");
    match EmbeddedLog::open(
        FsDir::new(tmp.path()).expect("dir"),
        EmbeddedOptions::default(),
    ) {
        Err(LogError::Corrupt { offset, detail }) => {
            assert!(offset < 10, "names the damaged offset: {offset} {detail}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, the log opened"),
    }
}

#[tokio::test]
async fn a_missing_segment_is_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_some(tmp.path(), 40, small_segments()).await;
    let segs = segments(tmp.path());
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).expect("remove");
    assert!(matches!(
        EmbeddedLog::open(FsDir::new(tmp.path()).expect("dir"), small_segments()),
        Err(LogError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_log_and_acknowledges_nothing() {
    let disk = SimDisk::new(3);
    let (log, _) = EmbeddedLog::open(disk.clone(), EmbeddedOptions::default()).expect("open");
    log.append(vec![entry("police", "ok")])
        .await
        .expect("append");
    disk.crash_after(1); // the append lands, its fsync fails
    assert!(matches!(
        log.append(vec![entry("police", "lost")]).await,
        Err(LogError::Poisoned(_))
    ));
    assert!(matches!(
        log.append(vec![entry("police", "later")]).await,
        Err(LogError::Poisoned(_))
    ));
    assert_eq!(
        log.head().next_offset,
        1,
        "nothing unacknowledged is visible"
    );
}

fn arb_batches() -> impl Strategy<Value = Vec<Vec<(u8, u16)>>> {
    // Few sources and a small id space, so retries and duplicates are common.
    prop::collection::vec(prop::collection::vec((0u8..3, 0u16..60), 1..12), 1..25)
}

fn to_entries(batches: &[Vec<(u8, u16)>]) -> Vec<Vec<tellonce_log::NewEntry>> {
    const SOURCES: [&str; 3] = ["police", "nhs", "school-001"];
    batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|&(s, i)| entry(SOURCES[s as usize], &format!("ev-{i}")))
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any sequence of batches with retries and duplicates: offsets are dense, each
    /// (source, id) appears once, and the chain verifies; also after a reopen.
    #[test]
    fn any_history_keeps_the_log_invariants(batches in arb_batches(), seed in any::<u64>()) {
        runtime().block_on(async {
            let disk = SimDisk::new(seed);
            {
                let (log, _) = EmbeddedLog::open(disk.clone(), small_segments()).expect("open");
                suite::check_history(&log, to_entries(&batches)).await;
            }
            let (log, report) = EmbeddedLog::open(disk.after_crash(seed), small_segments()).expect("reopen");
            assert_eq!(report.torn_bytes, 0, "a clean close leaves nothing torn");
            let again = suite::read_all(&log).await;
            assert_eq!(again.len() as u64, report.entries);
        });
    }

    /// Power loss at any moment: after recovery every acknowledged entry is present exactly
    /// once at the offset it was acknowledged with, and the chain verifies.
    #[test]
    fn power_loss_keeps_every_acknowledged_entry(crash_at in 0u64..400, seed in any::<u64>(), publishers in 1usize..6) {
        runtime().block_on(async move {
            let disk = SimDisk::new(seed);
            let (log, _) = EmbeddedLog::open(disk.clone(), small_segments()).expect("open");
            let log = Arc::new(log);
            disk.crash_after(crash_at);
            let acked: Arc<Mutex<HashMap<(String, String), u64>>> = Arc::default();
            let mut tasks = Vec::new();
            for p in 0..publishers {
                let (log, acked) = (log.clone(), acked.clone());
                tasks.push(tokio::spawn(async move {
                    for b in 0..200u32 {
                        // Each publisher retries its previous batch half of the time.
                        let base = if b % 2 == 1 { b - 1 } else { b };
                        let batch: Vec<_> = (0..3).map(|i| entry("police", &format!("p{p}-{base}-{i}"))).collect();
                        let keys: Vec<_> = batch.iter().map(|e| (e.source.clone(), e.id.clone())).collect();
                        match log.append(batch).await {
                            Ok(out) => {
                                let mut a = acked.lock().expect("lock");
                                for (k, o) in keys.into_iter().zip(out) {
                                    let prev = a.insert(k.clone(), o.offset());
                                    assert!(prev.is_none() || prev == Some(o.offset()), "{k:?} moved");
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.expect("publisher");
            }
            drop(log);
            let (log, report) = EmbeddedLog::open(disk.after_crash(seed), small_segments()).expect("recovery opens");
            let all = suite::read_all(&log).await;
            assert_eq!(all.len() as u64, report.entries);
            let mut seen: HashMap<(String, String), u64> = HashMap::new();
            for e in &all {
                assert!(seen.insert((e.source.clone(), e.id.clone()), e.offset).is_none(), "{} once", e.id);
            }
            let acked = acked.lock().expect("lock").clone();
            for (k, off) in acked.iter() {
                assert_eq!(seen.get(k), Some(off), "acknowledged {k:?} survives at offset {off}");
            }
            // The recovered log keeps working.
            let out = log.append(vec![entry("police", "after-recovery")]).await.expect("append");
            assert_eq!(out[0], AppendOutcome::Appended(report.entries));
        });
    }
}

/// A segment big enough that opening it works out its hashes on several threads: it opens
/// with the same head and keys as written, and an entry rewritten with a valid checksum
/// (content changed on purpose, not by accident) breaks the chain at the entry after it.
#[tokio::test]
async fn a_large_segment_is_verified_on_several_threads() {
    const N: u64 = 10_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let written = {
        let (log, _) = EmbeddedLog::open(
            FsDir::new(tmp.path()).expect("dir"),
            EmbeddedOptions::default(),
        )
        .expect("open");
        for chunk in 0..N / 1_000 {
            let batch = (chunk * 1_000..(chunk + 1) * 1_000)
                .map(|i| entry("school-001", &format!("x{i}")))
                .collect();
            log.append(batch).await.expect("append");
        }
        let head = log.head();
        log.close();
        head
    };
    assert_eq!(segments(tmp.path()).len(), 1, "one segment");
    let (log, report) = EmbeddedLog::open(
        FsDir::new(tmp.path()).expect("dir"),
        EmbeddedOptions::default(),
    )
    .expect("reopen");
    assert_eq!(report.entries, N);
    assert_eq!(log.head(), written, "the same head, hash included");
    let again = log
        .append(vec![
            entry("school-001", "x9999"),
            entry("school-001", "x0"),
        ])
        .await
        .expect("append");
    assert_eq!(
        again,
        vec![AppendOutcome::Duplicate(9_999), AppendOutcome::Duplicate(0)]
    );
    log.close();
    drop(log);

    // Rewrite one byte of entry 7,500's body and its checksum.
    let seg = last_segment(tmp.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    let mut at = 0usize;
    for _ in 0..7_500 {
        match tellonce_log::frame::peek(&bytes[at..]) {
            tellonce_log::frame::Peek::Frame { len } => at += len,
            _ => panic!("a frame at byte {at}"),
        }
    }
    let tellonce_log::frame::Peek::Frame { len } = tellonce_log::frame::peek(&bytes[at..]) else {
        panic!("entry 7,500 is a frame");
    };
    let last = at + len - 1;
    bytes[last] ^= 0x01;
    let crc = crc32c::crc32c(&bytes[at + tellonce_log::frame::HEADER_LEN..at + len]);
    bytes[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).expect("write");
    match EmbeddedLog::open(
        FsDir::new(tmp.path()).expect("dir"),
        EmbeddedOptions::default(),
    ) {
        Err(LogError::Corrupt { offset, detail }) => {
            assert_eq!(offset, 7_501, "{detail}");
            assert!(detail.contains("hash chain"), "{detail}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, the log opened"),
    }
}
