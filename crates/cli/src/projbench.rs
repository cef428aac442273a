//! `tellonce rebuild` and the benchmarks of the read side: `bench link` (linkage quality against
//! the demo's ground truth), `bench replay` (a full rebuild of the projections), `bench query`
//! (GetTimeline and GetFamily over gRPC on the demo county).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tellonce_demo::County;
use tellonce_domain::identity::Linker;
use tellonce_domain::{seal, Record};
use tellonce_log::storage::FsDir;
use tellonce_log::{EmbeddedLog, EmbeddedOptions, Log, NewEntry};
use tellonce_projection::Projection;
use tellonce_proto::v1 as pb;
use tellonce_server::auth::Tokens;
use tellonce_server::config::PractitionerConfig;
use tellonce_server::query::Guard;
use tellonce_server::{Config, Overrides};

use crate::bench::percentile;
use crate::client;

/// Peak resident memory of this process so far, in MiB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time this process has used so far (user and system, every thread), in seconds (Linux;
/// 0 elsewhere). Less disturbed than elapsed time by other work on a shared machine.
pub fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, after the command name in parentheses, in clock
    // ticks of 1/100 s (the kernel's USER_HZ on every Linux platform this builds for).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Bytes this process has had written to storage so far (`write_bytes` of /proc/self/io,
/// counted when a write dirties the page cache); `None` where the kernel does not say.
pub fn disk_written_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Options shared by the demo-based benchmarks.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoSize {
    /// Families in the demo county.
    #[arg(long, default_value_t = 10_000)]
    families: usize,
    /// Events in the demo county.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Seed.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Write payloads in the clear instead of sealed under per-record data keys (the hub's
    /// default for the embedded engine is sealed).
    #[arg(long)]
    plain: bool,
    /// (`bench link`) Also print up to this many false merges, missed links and open
    /// candidates, with the records involved.
    #[arg(long, default_value_t = 0)]
    show_errors: usize,
}

fn county(size: &DemoSize) -> County {
    crate::demo::county(size.seed, size.families, size.events)
}

/// A temporary folder for a benchmark in the current directory (so it is on the disk the hub
/// would use), and a multi-threaded runtime.
pub fn bench_setup() -> Result<(tempfile::TempDir, tokio::runtime::Runtime), std::io::Error> {
    let base = tempfile::Builder::new()
        .prefix(".tellonce-bench-")
        .tempdir_in(".")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok((base, runtime))
}

fn bar(len: u64, json: bool, what: &str) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs `tellonce bench link`.
pub fn link(size: DemoSize) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut c = county(&size);
    let mut linker = Linker::new();
    let progress = bar(size.events, size.json, "events");
    let started = Instant::now();
    for (i, e) in c.events().enumerate() {
        linker.apply_event(i as u64, &e);
        if i % 10_000 == 0 {
            progress.set_position(i as u64);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let truth = c.truth();
    let q = tellonce_demo::score_linking(&linker, &truth);
    if size.show_errors > 0 {
        eprint!(
            "{}",
            tellonce_demo::explain_errors(&linker, &truth, size.show_errors)
        );
    }
    let review_fraction = q.persons_in_review as f64 / q.persons.max(1) as f64;
    let out = serde_json::json!({
        "precision": q.precision,
        "recall": q.recall,
        "false_merges": q.false_merges,
        "missed_links": q.missed_links,
        "review_fraction": review_fraction,
        "persons_in_review": q.persons_in_review,
        "true_persons": q.persons,
        "linked_persons": linker.person_count(),
        "records": linker.record_count(),
        "families": linker.family_count(),
        "conflicts": linker.conflicts().len(),
        "events": size.events,
        "events_per_sec": size.events as f64 / secs,
    });
    if size.json {
        println!("{out}");
    } else {
        println!(
            "linked {} partner records of {} true persons into {} persons and {} families ({} events, {:.0} events/s)",
            linker.record_count(), q.persons, linker.person_count(), linker.family_count(), size.events, size.events as f64 / secs
        );
        println!(
            "pairwise precision {:.5}  recall {:.5}",
            q.precision, q.recall
        );
        println!(
            "false merges {}  missed links {}",
            q.false_merges, q.missed_links
        );
        println!(
            "persons sent to review {} ({:.2}% of persons)  identifier conflicts {}",
            q.persons_in_review,
            review_fraction * 100.0,
            linker.conflicts().len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the demo county straight into an embedded log (not through gRPC: this sets up a
/// benchmark, it does not measure ingest): every family's consent, then the events, sealed
/// under data keys from `keys` unless `--plain`.
async fn fill_log(
    log: &dyn Log,
    size: &DemoSize,
    keys: &Path,
) -> Result<County, Box<dyn std::error::Error>> {
    let keys = if size.plain {
        None
    } else {
        Some(tellonce_projection::KeyStore::open(keys)?)
    };
    let mut rng = rand::rng();
    let mut c = county(size);
    let consents: Vec<NewEntry> = (0..c.families.len() as u32)
        .map(|f| NewEntry::of(&Record::ConsentGiven(c.consent_for(f)), 0))
        .collect();
    for chunk in consents.chunks(1000) {
        log.append(chunk.to_vec()).await?;
    }
    let progress = bar(size.events, size.json, "events written");
    let mut events = c.events();
    loop {
        let batch: Vec<_> = events.by_ref().take(1000).collect();
        if batch.is_empty() {
            break;
        }
        let chunk = entries_of(batch, keys.as_ref(), &mut rng)?;
        progress.inc(chunk.len() as u64);
        log.append(chunk).await?;
    }
    drop(events);
    progress.finish_and_clear();
    Ok(c)
}

/// Log entries for demo events: sealed under their subjects' data keys from `keys`, or plain.
fn entries_of(
    batch: Vec<tellonce_domain::Event>,
    keys: Option<&tellonce_projection::KeyStore>,
    rng: &mut impl rand::Rng,
) -> Result<Vec<NewEntry>, tellonce_projection::KeyError> {
    Ok(match keys {
        None => batch
            .into_iter()
            .map(|e| NewEntry::of(&Record::PartnerEvent(e), 0))
            .collect(),
        Some(ks) => {
            let names: Vec<Vec<String>> = batch.iter().map(seal::key_names).collect();
            let k = ks.keys_for_many(&names)?;
            batch
                .into_iter()
                .zip(k)
                .map(|(e, k)| {
                    let sealed = seal::seal(e, &k, rng.random());
                    NewEntry::of(&Record::SealedEvent(sealed), 0)
                })
                .collect()
        }
    })
}

/// Writes the events of the county made with `settings` (the one in the log) again, under
/// new ids (`live-N-...`, so they are not duplicates), into `log` at about `rate` per second
/// until `stop` turns true, as a live hub keeps receiving events while it is read. Their
/// subject records are the log's, so every data key already exists. Returns how many it wrote.
async fn live_ingest(
    log: Arc<dyn Log>,
    settings: tellonce_demo::Settings,
    plain: bool,
    keys: PathBuf,
    rate: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, String> {
    let keys = match plain {
        true => None,
        false => Some(tellonce_projection::KeyStore::open(&keys).map_err(|e| e.to_string())?),
    };
    // Not the thread's generator: this future moves between threads.
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::from_rng(&mut rand::rng());
    let mut c = County::new(settings);
    let mut events = c.events();
    // Batches of about 10 ms' worth, at least one event.
    let per_batch = rate.div_ceil(100).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        f64::from(per_batch) / f64::from(rate.max(1)),
    ));
    let mut written = 0u64;
    while !*stop.borrow_and_update() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let batch: Vec<_> = events
            .by_ref()
            .take(per_batch as usize)
            .map(|mut e| {
                e.event_id = format!("live-{written}-{}", e.event_id);
                e
            })
            .collect();
        if batch.is_empty() {
            break;
        }
        let entries = entries_of(batch, keys.as_ref(), &mut rng).map_err(|e| e.to_string())?;
        written += entries.len() as u64;
        log.append(entries).await.map_err(|e| e.to_string())?;
    }
    Ok(written)
}

/// What a rebuild did.
pub struct Rebuilt {
    /// Entries applied.
    pub entries: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// The projection.
    pub projection: Projection,
}

/// Drops the projections in `dir` and replays all of `log` into new ones.
pub async fn rebuild_into(
    dir: &Path,
    log: &dyn Log,
    keys: Option<std::sync::Arc<tellonce_projection::KeyStore>>,
    progress: &ProgressBar,
) -> Result<Rebuilt, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let p = Projection::rebuild(dir, log, keys).await?;
    let head = log.head().next_offset;
    progress.set_length(head);
    p.catch_up_while(log, |applied| {
        progress.set_position(applied);
        true
    })
    .await?;
    p.close()?;
    Ok(Rebuilt {
        entries: p.applied(),
        elapsed: started.elapsed(),
        projection: p,
    })
}

/// Options of `tellonce bench replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    size: DemoSize,
    /// Rebuilds of the same log, one after another; the figures are their median (the
    /// machine is shared and noisy), and every rebuild must give the same projections.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The median of `v` (0 for none): the middle value, or the mean of the middle two.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n => (v[(n - 1) / 2] + v[n / 2]) / 2.0,
    }
}

/// Runs `tellonce bench replay`.
pub fn replay(args: ReplayArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let size = args.size;
    let runs = args.runs.max(1);
    let (base, runtime) = bench_setup()?;
    runtime.block_on(async {
        let (log, _) = EmbeddedLog::open(FsDir::new(base.path().join("log"))?, EmbeddedOptions::default())?;
        fill_log(&log, &size, &base.path().join("keys")).await?;
        let keys = match size.plain {
            true => None,
            false => Some(Arc::new(tellonce_projection::KeyStore::open(&base.path().join("keys"))?)),
        };
        let rss_before = peak_rss_mb();
        let mut rates = Vec::with_capacity(runs);
        let mut seconds = Vec::with_capacity(runs);
        let mut cpu_per_million = Vec::with_capacity(runs);
        let mut disk_per_million = Vec::with_capacity(runs);
        let mut snapshot_seconds = Vec::with_capacity(runs);
        let mut snapshots = 0;
        let mut first_digest = None;
        let mut last = None;
        for run in 0..runs {
            let progress = bar(0, size.json, &format!("entries applied (rebuild {} of {runs})", run + 1));
            // The previous rebuild's projection is dropped first, so only one is in memory.
            drop(last.take());
            let cpu = cpu_seconds();
            let written = disk_written_bytes();
            let r = rebuild_into(&base.path().join(format!("projections-{run}")), &log, keys.clone(), &progress).await?;
            progress.finish_and_clear();
            cpu_per_million.push((cpu_seconds() - cpu) * 1e6 / r.entries.max(1) as f64);
            if let (Some(before), Some(after)) = (written, disk_written_bytes()) {
                // MB written per million entries = bytes per entry.
                disk_per_million.push(after.saturating_sub(before) as f64 / r.entries.max(1) as f64);
            }
            let timings = r.projection.timings();
            snapshot_seconds.push(timings.snapshot_writing.as_secs_f64());
            snapshots = timings.snapshots;
            rates.push(r.entries as f64 / r.elapsed.as_secs_f64());
            seconds.push(r.elapsed.as_secs_f64());
            let digest = r.projection.digest();
            if *first_digest.get_or_insert(digest) != digest {
                return Err(format!("rebuild {} of the same log gave different projections than the first", run + 1).into());
            }
            last = Some(r);
        }
        let r = last.ok_or("no rebuild ran")?;
        let (records, persons, families, open) = r.projection.counts();
        let entries = r.entries;
        drop(r);
        // A restart, as a hub restarts: the log opened again (every segment read and
        // verified), then the last rebuild's projections opened from disk (its snapshot and
        // stored lines) and caught up with it.
        log.close();
        drop(log);
        let started = Instant::now();
        let (log, _) = EmbeddedLog::open(FsDir::new(base.path().join("log"))?, EmbeddedOptions::default())?;
        let log_open_seconds = started.elapsed().as_secs_f64();
        let restarted = Projection::open(&base.path().join(format!("projections-{}", runs - 1)), &log, keys.clone()).await?;
        let resumed_at = restarted.applied();
        restarted.catch_up(&log).await?;
        let restart_seconds = started.elapsed().as_secs_f64();
        let opened = restarted.timings();
        if Some(restarted.digest()) != first_digest {
            return Err("the projections reopened from disk differ from the rebuilt ones".into());
        }
        drop(restarted);
        let eps = median(&rates);
        let out = serde_json::json!({
            "events_per_sec": eps,
            "runs_events_per_sec": rates,
            "runs": runs,
            "same_projections": true,
            "entries": entries,
            "restart_seconds": restart_seconds,
            "restart_resumed_at": resumed_at,
            "restart_log_open_seconds": log_open_seconds,
            "restart_snapshot_read_seconds": opened.snapshot_read.as_secs_f64(),
            "restart_lines_loaded_seconds": opened.lines_loaded.as_secs_f64(),
            "snapshots_per_rebuild": snapshots,
            "snapshot_seconds": median(&snapshot_seconds),
            "runs_snapshot_seconds": snapshot_seconds,
            "seconds": median(&seconds),
            "cpu_seconds_per_million": median(&cpu_per_million),
            "runs_cpu_seconds_per_million": cpu_per_million,
            "disk_written_mb_per_million": (disk_per_million.len() == runs).then(|| median(&disk_per_million)),
            "runs_disk_written_mb_per_million": disk_per_million,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_mb_before_replay": rss_before,
            "sealed": !size.plain,
            "records": records, "persons": persons, "families": families, "open_candidates": open,
        });
        if size.json {
            println!("{out}");
        } else {
            let each: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "rebuilt the projections from {} entries {runs} times: median {eps:.0} events/s (each: {}), {:.1} CPU-seconds per million entries, the same projections every time; peak RSS {:.0} MiB ({:.0} MiB before the replays)",
                entries, each.join(", "), median(&cpu_per_million), peak_rss_mb(), rss_before
            );
            println!(
                "of each rebuild's time, {:.2} s went to writing its {snapshots} snapshots of the linking state (the applying thread waits for them)",
                median(&snapshot_seconds)
            );
            println!(
                "a restart (the log opened and verified, the stored projections opened from disk, from the snapshot at {resumed_at}, then caught up) took {restart_seconds:.2} s: {log_open_seconds:.2} s opening the log, {:.2} s reading the snapshot, {:.2} s loading the stored timeline lines",
                opened.snapshot_read.as_secs_f64(),
                opened.lines_loaded.as_secs_f64()
            );
            if disk_per_million.len() == runs {
                println!("each rebuild wrote {:.0} MB to disk per million entries (projection store and snapshots)", median(&disk_per_million));
            }
            println!("{records} partner records, {persons} persons, {families} families, {open} open match candidates");
        }
        log.close();
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `tellonce bench verify`: a full offline verification of the demo log (every checksum,
/// the hash chain, unique keys, and the Merkle tree over every entry), then the latency of
/// inclusion and consistency proofs made from that tree and checked with the domain's
/// verifier.
pub fn verify(size: DemoSize) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use tellonce_domain::merkle::{verify_consistency, verify_inclusion};
    use tellonce_log::{embedded, merkle::LeafHasher};
    let (base, runtime) = bench_setup()?;
    runtime.block_on(async {
        let dir = base.path().join("log");
        let (log, _) = EmbeddedLog::open(FsDir::new(&dir)?, EmbeddedOptions::default())?;
        fill_log(&log, &size, &base.path().join("keys")).await?;
        log.close();
        drop(log);
        // Chain and checksums alone (the `log verify` baseline), then with the Merkle tree.
        let started = Instant::now();
        let (head, _) = embedded::verify(&FsDir::new(&dir)?)?;
        let chain_secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut hasher = LeafHasher::new();
        embedded::verify_each(&FsDir::new(&dir)?, &mut |v| hasher.push(v.stored))?;
        let tree = hasher.finish().ok_or("the leaf hashing thread failed")?;
        let secs = started.elapsed().as_secs_f64();
        let n = head.next_offset;
        let mut rng = tellonce_demo::Rng::new(size.seed);
        let mut proofs = Vec::with_capacity(20_000);
        for i in 0..20_000 {
            let second = 1 + rng.below(n);
            let t = Instant::now();
            if i % 2 == 0 {
                let index = rng.below(second);
                let path = tree.inclusion_proof(index, second)?;
                let root = tree.root(second)?;
                let leaf = tree.leaf(index)?;
                verify_inclusion(&leaf, index, second, &path, &root)?;
            } else {
                let first = rng.below(second + 1);
                let path = tree.consistency_proof(first, second)?;
                verify_consistency(first, second, &tree.root(first)?, &tree.root(second)?, &path)?;
            }
            proofs.push(t.elapsed());
        }
        proofs.sort();
        let out = serde_json::json!({
            "entries_per_sec": n as f64 / secs,
            "entries": n,
            "seconds": secs,
            "chain_only_entries_per_sec": n as f64 / chain_secs,
            "proof_p50_ms": percentile(&proofs, 0.50),
            "proof_p99_ms": percentile(&proofs, 0.99),
            "proofs": proofs.len(),
        });
        if size.json {
            println!("{out}");
        } else {
            println!(
                "verified {n} entries (checksums, chain, keys, Merkle tree) in {secs:.2} s: {:.0} entries/s (checksums and chain alone: {:.0}/s)",
                n as f64 / secs,
                n as f64 / chain_secs
            );
            println!(
                "{} inclusion and consistency proofs, made and verified: p50 {:.3} ms, p99 {:.3} ms",
                proofs.len(),
                percentile(&proofs, 0.5),
                percentile(&proofs, 0.99)
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `tellonce rebuild`.
#[derive(clap::Args, Debug)]
pub struct RebuildArgs {
    /// A TOML config file (as for `serve`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data folder (overrides the config file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `tellonce rebuild`: the hub must be stopped (the log's folder lock says so).
pub fn rebuild(args: RebuildArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = Config::load(
        args.config.as_deref(),
        &Overrides {
            data_dir: args.data_dir,
            ..Overrides::default()
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let engine = tellonce_server::open_engine(&config).await.map_err(|e| {
            format!("{e} (stop the hub before `tellonce rebuild`: they share the data folder)")
        })?;
        let log = engine.log();
        let progress = bar(0, false, "entries applied");
        let keys = tellonce_server::open_key_store(&config)?;
        let cpu = cpu_seconds();
        let r = rebuild_into(&tellonce_server::projections_dir(&config), log.as_ref(), keys, &progress).await?;
        let cpu = cpu_seconds() - cpu;
        progress.finish_and_clear();
        let (records, persons, families, open) = r.projection.counts();
        println!(
            "rebuilt the projections from {} entries in {:.2} s ({:.0}/s, {cpu:.1} CPU-seconds): {records} partner records, {persons} persons, {families} families, {open} open match candidates",
            r.entries,
            r.elapsed.as_secs_f64(),
            r.entries as f64 / r.elapsed.as_secs_f64().max(1e-9)
        );
        engine.close();
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `tellonce bench query`.
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    size: DemoSize,
    /// Seconds of load per query kind.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent callers, each asking again as soon as it is answered (a closed loop: the
    /// hub's most queries per second, and its latency at that load).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Instead of callers: offer this many queries per second, each sent when due whether
    /// or not earlier ones were answered (an open loop), and time each from when it was due.
    /// The latency at a given load; 0 for the closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// gRPC connections they share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Timeline page size.
    #[arg(long, default_value_t = 50)]
    page_size: u32,
    /// Without the access rule and the access log (the baseline to compare with).
    #[arg(long)]
    no_policy: bool,
    /// Events per second written into the log while the queries run (a live hub keeps
    /// receiving events while it is read); 0 for none.
    #[arg(long, default_value_t = 0)]
    ingest_rate: u32,
    /// Rounds of load (a timeline phase, then a family phase) on the same hub; the figures
    /// are their median (the machine is shared and noisy).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The hub's log, timing every one-entry append made while `on` is set: the access entries
/// reads write and wait for (the queries' own share of each read's latency is the rest).
struct TimedAppends {
    inner: Arc<dyn Log>,
    on: std::sync::atomic::AtomicBool,
    times: std::sync::Mutex<Vec<Duration>>,
}

impl TimedAppends {
    /// Starts timing, forgetting earlier times.
    fn start(&self) {
        self.times.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.on.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops timing; the times since [`TimedAppends::start`], sorted.
    fn stop(&self) -> Vec<Duration> {
        self.on.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut times = std::mem::take(&mut *self.times.lock().unwrap_or_else(|p| p.into_inner()));
        times.sort();
        times
    }
}

impl Log for TimedAppends {
    fn append(
        &self,
        entries: Vec<NewEntry>,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<tellonce_log::AppendOutcome>, tellonce_log::LogError>,
    > {
        let timed = entries.len() == 1 && self.on.load(std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let started = Instant::now();
            let out = self.inner.append(entries).await;
            if timed {
                self.times
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(started.elapsed());
            }
            out
        })
    }

    fn read(
        &self,
        from: u64,
        max: usize,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<tellonce_log::StoredEntry>, tellonce_log::LogError>,
    > {
        self.inner.read(from, max)
    }

    fn head(&self) -> tellonce_log::Head {
        self.inner.head()
    }

    fn refresh(&self) -> futures::future::BoxFuture<'_, Result<(), tellonce_log::LogError>> {
        self.inner.refresh()
    }

    fn read_blocking(
        &self,
        from: u64,
        max: usize,
    ) -> Option<Result<Vec<tellonce_log::StoredEntry>, tellonce_log::LogError>> {
        self.inner.read_blocking(from, max)
    }
}

/// The figures of one round of `bench query`.
struct Round {
    timeline: Vec<Duration>,
    timeline_qps: f64,
    family: Vec<Duration>,
    family_qps: f64,
    /// The access entries' appends during the timeline phase.
    appends: Vec<Duration>,
    /// CPU time of the whole process (hub and callers) per timeline query, in ms.
    timeline_cpu_ms: f64,
    /// In the open loop, how late each timeline query was sent (part of its latency).
    late: Vec<Duration>,
}

/// One phase of load: every query's latency (sorted), the queries answered per second, and
/// in the open loop how late each was sent, sorted (empty in the closed loop).
type Phase = (Vec<Duration>, f64, Vec<Duration>);

#[derive(Clone, Copy)]
enum Kind {
    Timeline,
    Family,
}

/// One query of `kind` about family `f`.
async fn ask(
    mut c: client::Query,
    kind: Kind,
    f: String,
    page_size: u32,
) -> Result<(), tonic::Status> {
    match kind {
        Kind::Timeline => {
            c.get_timeline(pb::GetTimelineRequest {
                scope: Some(pb::get_timeline_request::Scope::FamilyId(f)),
                page_size,
                ..Default::default()
            })
            .await?;
        }
        Kind::Family => {
            c.get_family(pb::GetFamilyRequest {
                by: Some(pb::get_family_request::By::FamilyId(f)),
                ..Default::default()
            })
            .await?;
        }
    }
    Ok(())
}

/// Runs one phase of load, closed or open loop as `args` says.
async fn load(
    clients: &[Vec<client::Query>],
    families: Arc<Vec<(String, usize)>>,
    kind: Kind,
    args: &QueryArgs,
) -> Result<Phase, Box<dyn std::error::Error>> {
    if args.rate > 0 {
        return load_at_rate(clients, families, kind, args).await;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let conn = clients[i % clients.len()].clone();
        let families = families.clone();
        let page_size = args.page_size;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut rng = tellonce_demo::Rng::new(i as u64 + 1);
            while Instant::now() < deadline {
                let (f, viewer) = rng.pick(&families).clone();
                let t = Instant::now();
                ask(conn[viewer].clone(), kind, f, page_size).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(phase(all, started, Vec::new()))
}

/// A phase's figures from the latencies of every query answered since `started` (and, in the
/// open loop, how late each was sent).
fn phase(mut all: Vec<Duration>, started: Instant, mut late: Vec<Duration>) -> Phase {
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    late.sort();
    let qps = all.len() as f64 / secs;
    (all, qps, late)
}

/// The open loop: `args.rate` queries a second for `args.seconds`, sent by a thread of
/// their own that sleeps until each is due (a runtime timer ticks only every millisecond),
/// each timed from when it was due, so a hub that falls behind shows in the latencies
/// rather than slowing the load (no coordinated omission). A late sender only adds to them.
async fn load_at_rate(
    clients: &[Vec<client::Query>],
    families: Arc<Vec<(String, usize)>>,
    kind: Kind,
    args: &QueryArgs,
) -> Result<Phase, Box<dyn std::error::Error>> {
    let rate = f64::from(args.rate);
    let total = (rate * args.seconds as f64) as u64;
    let runtime = tokio::runtime::Handle::current();
    let clients = clients.to_vec();
    let page_size = args.page_size;
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut rng = tellonce_demo::Rng::new(1);
        let mut sent = Vec::with_capacity(total as usize);
        let mut late = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            late.push(due.elapsed());
            let (f, viewer) = rng.pick(&families).clone();
            let c = clients[i as usize % clients.len()][viewer].clone();
            sent.push(
                runtime
                    .spawn(async move { ask(c, kind, f, page_size).await.map(|()| due.elapsed()) }),
            );
        }
        (sent, late)
    });
    let (sent, late) = tokio::task::spawn_blocking(move || sender.join())
        .await?
        .map_err(|_| "the load sender panicked")?;
    let mut all = Vec::with_capacity(sent.len());
    for answer in sent {
        all.push(answer.await??);
    }
    Ok(phase(all, started, late))
}

/// Runs `tellonce bench query`: an in-process hub on a temporary folder holding the demo
/// county, queried over gRPC on loopback by concurrent callers.
pub fn query(args: QueryArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (base, runtime) = bench_setup()?;
    let json = args.size.json;
    runtime.block_on(async {
        let mut rng = tellonce_demo::Rng::new(std::process::id() as u64);
        let mut config = Config::default();
        config.storage.data_dir = base.path().join("hub");
        // One practitioner per partner; each family is read by someone whose organisation
        // knows one of its children.
        config.practitioners = tellonce_demo::PARTNERS
            .iter()
            .map(|(org, _)| PractitionerConfig {
                user_id: format!("bench-{org}"),
                organisation: org.to_string(),
                roles: vec!["practitioner".into()],
                name: String::new(),
                token: format!("bench-{org}-{:016x}", rng.next_u64()),
            })
            .collect();
        let orgs: Vec<String> = config.practitioners.iter().map(|p| p.organisation.clone()).collect();
        let guard = if args.no_policy { Guard::BenchmarkBaseline } else { Guard::Enforced };
        let engine = tellonce_server::open_engine(&config).await?;
        let timed = Arc::new(TimedAppends {
            inner: engine.log(),
            on: Default::default(),
            times: Default::default(),
        });
        let log: Arc<dyn Log> = timed.clone();
        config.privacy.seal_payloads = Some(!args.size.plain);
        let c = fill_log(log.as_ref(), &args.size, &config.key_store_dir()).await?;
        let head = log.head().next_offset;
        let log_head = log.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let auth = Arc::new(Tokens::new(&config.partners, &config.practitioners));
        let server_config = config.clone();
        let server = tokio::spawn(async move {
            tellonce_server::run_guarded(listener, &server_config, log, auth, guard, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let mut clients = Vec::new();
        for _ in 0..args.connections.max(1) {
            let channel = client::connect(&addr).await?;
            let per_org = config
                .practitioners
                .iter()
                .map(|p| client::query(channel.clone(), &p.token))
                .collect::<Result<Vec<_>, _>>()?;
            clients.push(per_org);
        }
        // Family ids as a practitioner finds them: by NHS numbers of children.
        let mut families = Vec::new();
        let mut q = clients[0][0].clone();
        let applying = Instant::now();
        for (i, p) in c.people.iter().filter(|p| p.child).enumerate().step_by(7).take(2_000) {
            let consistency = (i == 0).then_some(pb::Consistency { min_offset: head.saturating_sub(1), wait_ms: 30_000 });
            let mut found = None;
            for _ in 0..40 {
                match q.find_person(pb::FindPersonRequest {
                    by: Some(pb::find_person_request::By::NhsNumber(p.nhs.clone())),
                    consistency,
                    ..Default::default()
                }).await {
                    Ok(r) => { found = Some(r.into_inner()); break; }
                    Err(s) if s.code() == tonic::Code::Unavailable => continue,
                    Err(s) => return Err(client::status(s).into()),
                }
            }
            let found = found.ok_or("the hub did not apply the demo within 20 minutes")?;
            if let Some(person) = found.persons.first() {
                // A partner that knows the child and stands in a relationship to the family
                // (its involvement is open) reads it; families no partner of the child stands
                // to are left out.
                let mut knows: Vec<usize> = person
                    .records
                    .iter()
                    .filter_map(|r| orgs.iter().position(|o| *o == r.source))
                    .collect();
                knows.sort_unstable();
                knows.dedup();
                for viewer in knows {
                    let mut as_viewer = clients[0][viewer].clone();
                    let tried = as_viewer
                        .get_timeline(pb::GetTimelineRequest {
                            scope: Some(pb::get_timeline_request::Scope::FamilyId(person.family_id.clone())),
                            page_size: 1,
                            ..Default::default()
                        })
                        .await;
                    match tried {
                        Ok(_) => {
                            families.push((person.family_id.clone(), viewer));
                            break;
                        }
                        Err(s) if s.code() == tonic::Code::PermissionDenied => continue,
                        Err(s) => return Err(client::status(s).into()),
                    }
                }
            }
        }
        let apply_secs = applying.elapsed().as_secs_f64();
        families.sort();
        families.dedup();
        if families.is_empty() {
            return Err("no families found".into());
        }
        let families = Arc::new(families);
        let log_before = log_head.head().next_offset;
        let (stop_ingest, ingest_stopped) = tokio::sync::watch::channel(false);
        let ingest = (args.ingest_rate > 0).then(|| {
            tokio::spawn(live_ingest(
                // Not through the timing wrapper: only the access entries are timed.
                engine.log(),
                c.settings.clone(),
                args.size.plain,
                config.key_store_dir(),
                args.ingest_rate,
                ingest_stopped,
            ))
        });
        let mut rounds = Vec::with_capacity(args.runs.max(1));
        for _ in 0..args.runs.max(1) {
            timed.start();
            let cpu = cpu_seconds();
            let (timeline, timeline_qps, late) = load(&clients, families.clone(), Kind::Timeline, &args).await?;
            let timeline_cpu_ms = (cpu_seconds() - cpu) * 1e3 / timeline.len().max(1) as f64;
            let appends = timed.stop();
            let (family, family_qps, _) = load(&clients, families.clone(), Kind::Family, &args).await?;
            rounds.push(Round { timeline, timeline_qps, family, family_qps, appends, timeline_cpu_ms, late });
        }
        let of = |f: &dyn Fn(&Round) -> f64| -> (f64, Vec<f64>) {
            let each: Vec<f64> = rounds.iter().map(f).collect();
            (median(&each), each)
        };
        let (tl_qps, tl_qps_each) = of(&|r| r.timeline_qps);
        let (tl_p50, _) = of(&|r| percentile(&r.timeline, 0.50));
        let (tl_p99, tl_p99_each) = of(&|r| percentile(&r.timeline, 0.99));
        let (fam_qps, _) = of(&|r| r.family_qps);
        let (fam_p50, _) = of(&|r| percentile(&r.family, 0.50));
        let (fam_p99, _) = of(&|r| percentile(&r.family, 0.99));
        let (tl_cpu, tl_cpu_each) = of(&|r| r.timeline_cpu_ms);
        let (append_p50, _) = of(&|r| percentile(&r.appends, 0.50));
        let (append_p99, _) = of(&|r| percentile(&r.appends, 0.99));
        let (late_p99, _) = of(&|r| percentile(&r.late, 0.99));
        let _ = stop_ingest.send(true);
        let ingested = match ingest {
            Some(task) => task.await??,
            None => 0,
        };
        let log_after = log_head.head().next_offset;
        let out = serde_json::json!({
            "policy": !args.no_policy,
            "access_entries_written": log_after.saturating_sub(log_before + ingested),
            "events_ingested_meanwhile": ingested,
            "ingest_rate": args.ingest_rate,
            "timeline_p50_ms": tl_p50,
            "timeline_p99_ms": tl_p99,
            "queries_per_sec": tl_qps,
            "runs": rounds.len(),
            "runs_queries_per_sec": tl_qps_each,
            "runs_timeline_p99_ms": tl_p99_each,
            "timeline_cpu_ms_per_query": tl_cpu,
            "runs_timeline_cpu_ms_per_query": tl_cpu_each,
            "access_append_p50_ms": append_p50,
            "access_append_p99_ms": append_p99,
            "family_p50_ms": fam_p50,
            "family_p99_ms": fam_p99,
            "family_queries_per_sec": fam_qps,
            "families_sampled": families.len(),
            "events": head,
            "concurrency": if args.rate > 0 { 0 } else { args.concurrency },
            "offered_rate": args.rate,
            "sender_late_p99_ms": late_p99,
            "page_size": args.page_size,
            "initial_apply_seconds": apply_secs,
            "peak_rss_mb": peak_rss_mb(),
        });
        if json {
            println!("{out}");
        } else {
            let load = if args.rate > 0 {
                format!("{} queries/s offered (open loop, each timed from when it was due)", args.rate)
            } else {
                format!("{} callers", args.concurrency)
            };
            println!("{} events, {} families sampled; {load} on {} connections, {} s per kind (hub and callers share this machine); access rule and access log {}",
                head, families.len(), args.connections, args.seconds,
                if args.no_policy { "OFF (baseline)" } else { "on" });
            println!("access entries written: {}", log_after.saturating_sub(log_before + ingested));
            if args.ingest_rate > 0 {
                println!("events written into the log meanwhile: {ingested} (--ingest-rate {})", args.ingest_rate);
            }
            let each: Vec<String> = tl_qps_each.iter().map(|q| format!("{q:.0}")).collect();
            println!("medians of {} rounds:", rounds.len());
            println!("GetTimeline (page {}): p50 {tl_p50:.2} ms  p99 {tl_p99:.2} ms  {tl_qps:.0} queries/s (each round: {})", args.page_size, each.join(", "));
            if !args.no_policy {
                println!("  of which waiting for the access entry to be durable: p50 {append_p50:.2} ms  p99 {append_p99:.2} ms");
            }
            if args.rate > 0 {
                println!("  of which the sender's own lateness (it shares the machine): p99 {late_p99:.2} ms");
            }
            println!("  CPU time of this process (hub and callers) per query: {tl_cpu:.3} ms");
            println!("GetFamily:          p50 {fam_p50:.2} ms  p99 {fam_p99:.2} ms  {fam_qps:.0} queries/s");
            println!("initial projection of the log took {apply_secs:.1} s; peak RSS {:.0} MiB", peak_rss_mb());
        }
        let _ = stop_tx.send(());
        server.await??;
        engine.close();
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
