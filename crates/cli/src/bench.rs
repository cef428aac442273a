//! `tellonce bench ingest`: acknowledged events per second through gRPC, end to end.
//!
//! Unless given `--addr`, it starts its own hub in this process on a temporary data folder.
//! Three phases run in one go, so the figures share one machine state:
//! 1. streamed: several `PublishStream`s, each with a window of batches in flight;
//! 2. unary: many concurrent publishers, one event per `Publish` call;
//! 3. raw: the same entry bytes appended to a file in the same folder, one fdatasync per batch,
//!    which is what the disk alone allows. `ratio` = streamed rate / raw rate.
//!
//! Events are realistic PPNs of about 1 KiB, built before timing starts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tellonce_domain::{sample, Record, Timestamp};
use tellonce_proto::v1 as pb;
use tellonce_server::auth::Tokens;
use tellonce_server::config::PartnerConfig;
use tellonce_server::convert::event_to_pb;
use tellonce_server::Config;
use tokio::sync::{mpsc, Semaphore};

use crate::client;

/// Options of `tellonce bench ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Benchmark a running hub at this address instead of starting one.
    #[arg(long)]
    addr: Option<String>,
    /// With --addr: the bearer token of the partner named by --source.
    #[arg(long)]
    token: Option<String>,
    /// The partner id the events are published as.
    #[arg(long, default_value = "bench")]
    source: String,
    /// Events sent through the streams.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Concurrent PublishStreams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Events per streamed batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Batches in flight per stream.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Concurrent single-event publishers.
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// Connections the single-event publishers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events sent by the single-event publishers.
    #[arg(long, default_value_t = 40_000)]
    unary_events: usize,
    /// The log engine of the started hub: `embedded`, or `nats` (a nats-server of its own).
    #[arg(long, default_value = "embedded")]
    engine: String,
    /// With `--engine nats`: stream replicas, 1 (one server) or 3 (a three-server cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// With `--engine nats`: run the started servers with NATS's default `sync_interval` (an
    /// fsync every two minutes) instead of `always`, to measure what durability costs. An
    /// acknowledgement then does not mean the entry is on disk: never for real data.
    #[arg(long)]
    nats_lazy_sync: bool,
    /// Whether the started hub seals payloads (default: the hub's default, on for the
    /// embedded engine).
    #[arg(long)]
    seal: Option<bool>,
    /// Also start a second hub with sealing the other way and stream the same number of
    /// events through it, to report the cost of sealing measured in the same run.
    #[arg(long)]
    compare_sealing: bool,
    /// Where the started hub keeps its data (default: a temporary folder here).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The `p` quantile of sorted durations, in milliseconds (0 for none).
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

struct Phase {
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

fn make_events(source: &str, run: u64, prefix: &str, n: usize) -> Vec<pb::Event> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{run:016x}-{i}");
            event_to_pb(&sample::ppn(
                source,
                &id,
                i as u64,
                Timestamp(now - 3_600_000),
            ))
        })
        .collect()
}

fn count_accepted(results: &[pb::EventResult]) -> Result<u64, String> {
    let mut n = 0;
    for r in results {
        match &r.outcome {
            Some(pb::event_result::Outcome::Accepted(_)) => n += 1,
            Some(pb::event_result::Outcome::Rejected(rej)) => {
                return Err(format!(
                    "event {} rejected: {}: {}",
                    r.event_id, rej.reason, rej.message
                ))
            }
            _ => {}
        }
    }
    Ok(n)
}

async fn streamed(
    addr: &str,
    token: &str,
    events: Vec<pb::Event>,
    args: &IngestArgs,
) -> Result<Phase, String> {
    let streams = args.streams.max(1);
    let mut per_stream: Vec<Vec<pb::PublishRequest>> = vec![Vec::new(); streams];
    let mut request_id = 0u64;
    let mut iter = events.into_iter().peekable();
    while iter.peek().is_some() {
        let batch: Vec<pb::Event> = iter.by_ref().take(args.batch.max(1)).collect();
        per_stream[(request_id as usize) % streams].push(pb::PublishRequest {
            events: batch,
            request_id,
        });
        request_id += 1;
    }
    let mut channels = Vec::new();
    for _ in 0..streams {
        channels.push(client::connect(addr).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (requests, channel) in per_stream.into_iter().zip(channels) {
        let mut ingest = client::ingest(channel, token)?;
        let window = args.window.max(1);
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(window);
            let permits = Arc::new(Semaphore::new(window));
            let sent: Arc<Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
            let expected = requests.len();
            let sender = {
                let (permits, sent) = (permits.clone(), sent.clone());
                tokio::spawn(async move {
                    for req in requests {
                        match permits.acquire().await {
                            Ok(p) => p.forget(),
                            Err(_) => return,
                        }
                        if let Ok(mut s) = sent.lock() {
                            s.insert(req.request_id, Instant::now());
                        }
                        if tx.send(req).await.is_err() {
                            return;
                        }
                    }
                })
            };
            let mut responses = ingest
                .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|s| format!("PublishStream refused: {s}"))?
                .into_inner();
            let mut latencies = Vec::with_capacity(expected);
            let mut accepted = 0u64;
            while let Some(resp) = responses
                .message()
                .await
                .map_err(|s| format!("stream failed: {s}"))?
            {
                let t0 = sent
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&resp.request_id));
                if let Some(t0) = t0 {
                    latencies.push(t0.elapsed());
                }
                accepted += count_accepted(&resp.results)?;
                permits.add_permits(1);
                if latencies.len() == expected {
                    break;
                }
            }
            sender.abort();
            Ok::<_, String>((accepted, latencies))
        }));
    }
    let mut phase = Phase {
        events: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (accepted, lat) = t.await.map_err(|e| e.to_string())??;
        phase.events += accepted;
        phase.latencies.extend(lat);
    }
    phase.elapsed = start.elapsed();
    Ok(phase)
}

async fn unary(
    addr: &str,
    token: &str,
    events: Vec<pb::Event>,
    publishers: usize,
    connections: usize,
) -> Result<Phase, String> {
    let publishers = publishers.max(1);
    let mut per: Vec<Vec<pb::Event>> = vec![Vec::new(); publishers];
    for (i, e) in events.into_iter().enumerate() {
        per[i % publishers].push(e);
    }
    let conns = connections.clamp(1, publishers);
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(client::connect(addr).await?);
    }
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (p, events) in per.into_iter().enumerate() {
        let mut ingest = client::ingest(channels[p % conns].clone(), token)?;
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(events.len());
            for e in events {
                let t0 = Instant::now();
                let resp = ingest
                    .publish(pb::PublishRequest {
                        events: vec![e],
                        request_id: 0,
                    })
                    .await
                    .map_err(|s| format!("Publish failed: {s}"))?
                    .into_inner();
                latencies.push(t0.elapsed());
                accepted.fetch_add(count_accepted(&resp.results)?, Ordering::Relaxed);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(Phase {
        events: accepted.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        latencies,
    })
}

/// The nats-servers a benchmark started for itself.
enum NatsServers {
    One(tellonce_log_nats::server::NatsServer),
    Three(tellonce_log_nats::server::NatsCluster),
}

impl NatsServers {
    fn urls(&self) -> String {
        match self {
            NatsServers::One(s) => s.url.clone(),
            NatsServers::Three(c) => c.urls(),
        }
    }
}

/// The entry frames the hub would write for `n` sample events.
fn frames(source: &str, n: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(n);
    let mut prev = [0u8; 32];
    for i in 0..n {
        let event = sample::ppn(
            source,
            &format!("raw-{i}"),
            i as u64,
            Timestamp(1_764_000_000_000),
        );
        let entry = tellonce_log::NewEntry {
            source: source.into(),
            id: event.event_id.clone(),
            recorded_at_ms: 1_764_000_000_000,
            body: Record::PartnerEvent(event).encode(),
        };
        let mut buf = Vec::new();
        prev = tellonce_log::frame::encode(&mut buf, i as u64, &prev, &entry);
        frames.push(buf);
    }
    frames
}

/// Publishes the same entry bytes straight to a JetStream stream (file storage, same replicas)
/// with async-nats, `window` acknowledgements outstanding at a time: what NATS alone allows.
async fn raw_nats(
    url: &str,
    replicas: usize,
    source: &str,
    n: usize,
    window: usize,
) -> Result<Phase, String> {
    let frames = frames(source, n);
    let urls: Vec<&str> = url.split(',').collect();
    let client = async_nats::connect(urls).await.map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAWBASELINE".into(),
        subjects: vec!["rawbaseline.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut latencies = Vec::new();
    for chunk in frames.chunks(window.max(1)) {
        let t0 = Instant::now();
        let mut acks = Vec::with_capacity(chunk.len());
        for f in chunk {
            let ack = js
                .publish("rawbaseline.bench", bytes::Bytes::from(f.clone()))
                .await
                .map_err(|e| e.to_string())?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| e.to_string())?;
        }
        latencies.push(t0.elapsed());
    }
    Ok(Phase {
        events: n as u64,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Appends the same entry bytes the hub writes to a plain file, one fdatasync per `group`.
fn raw(dir: &std::path::Path, source: &str, n: usize, group: usize) -> Result<Phase, String> {
    use std::io::Write;
    let path = dir.join("raw-baseline.bin");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let frames = frames(source, n);
    let start = Instant::now();
    let mut latencies = Vec::new();
    for chunk in frames.chunks(group.max(1)) {
        let t0 = Instant::now();
        let buf: Vec<u8> = chunk.concat();
        file.write_all(&buf).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        latencies.push(t0.elapsed());
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(Phase {
        events: n as u64,
        elapsed,
        latencies,
    })
}

/// Runs `tellonce bench ingest`.
/// A hub started in this process, and how to stop it.
type OwnHub = (
    tellonce_server::Engine,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tellonce_server::ServerError>>,
);

/// The config of a hub of the benchmark's own in `dir`, with one partner `source` (and its
/// fresh token) and sealing as `seal` says (`None`: the hub's default).
fn hub_config(dir: &std::path::Path, source: &str, seal: Option<bool>) -> (Config, String) {
    let token = format!("bench-{:032x}", rand::rng().random::<u128>());
    let mut config = Config::default();
    config.storage.data_dir = dir.to_path_buf();
    config.partners = vec![PartnerConfig {
        id: source.into(),
        name: "benchmark".into(),
        token: token.clone(),
    }];
    config.privacy.seal_payloads = seal;
    (config, token)
}

/// Starts a hub with `config` on a free loopback port; returns its address.
async fn start_hub(config: Config) -> Result<(String, OwnHub), Box<dyn std::error::Error>> {
    let engine = tellonce_server::open_engine(&config).await?;
    let log = engine.log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let auth = Arc::new(Tokens::new(&config.partners, &config.practitioners));
    let server = tokio::spawn(async move {
        tellonce_server::run(listener, &config, log, auth, async {
            let _ = stop_rx.await;
        })
        .await
    });
    Ok((addr, (engine, stop_tx, server)))
}

pub fn run(args: IngestArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run_id: u64 = rand::rng().random();
    let base = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("tellonce-bench-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new()
            .prefix(".tellonce-bench-")
            .tempdir_in(".")?,
    };
    let report = runtime.block_on(async {
        // A hub of our own, unless one was given.
        let mut own = None;
        let mut nats: Option<NatsServers> = None;
        let mut sealed = false;
        let (addr, token) = match &args.addr {
            Some(a) => (
                a.clone(),
                args.token.clone().ok_or("--addr needs --token (the bearer token of --source)")?,
            ),
            None => {
                let (mut config, token) = hub_config(&base.path().join("hub"), &args.source, args.seal);
                if args.engine == "nats" {
                    let servers = match args.replicas {
                        1 => NatsServers::One(tellonce_log_nats::server::NatsServer::start_with(base.path(), !args.nats_lazy_sync)?),
                        3 => NatsServers::Three(tellonce_log_nats::server::NatsCluster::start_with(base.path(), 3, !args.nats_lazy_sync)?),
                        r => return Err(format!("--replicas {r}: use 1 or 3").into()),
                    };
                    config.storage.engine = "nats".into();
                    config.storage.nats.url = servers.urls();
                    config.storage.nats.replicas = args.replicas;
                    nats = Some(servers);
                } else if args.engine != "embedded" {
                    return Err(format!("unknown --engine {:?}: use embedded or nats", args.engine).into());
                }
                sealed = config.seals();
                let (addr, hub) = start_hub(config).await?;
                own = Some(hub);
                (addr, token)
            }
        };
        let stats = |own: &Option<(tellonce_server::Engine, _, _)>| match own {
            Some((tellonce_server::Engine::Embedded(log, _), _, _)) => Some(log.stats()),
            _ => None,
        };
        eprintln!("building {} events...", args.events + args.unary_events + 1000);
        let warm = make_events(&args.source, run_id, "warm", 1000);
        let stream_events = make_events(&args.source, run_id, "stream", args.events);
        let unary_events = make_events(&args.source, run_id, "unary", args.unary_events);
        let event_bytes = stream_events.first().map(prost::Message::encoded_len).unwrap_or(0);
        streamed(&addr, &token, warm, &args).await?;
        eprintln!("streamed: {} events over {} streams, batches of {}...", args.events, args.streams, args.batch);
        let s0 = stats(&own);
        let mut stream = streamed(&addr, &token, stream_events, &args).await?;
        let s1 = stats(&own);
        eprintln!("unary: {} events from {} publishers...", args.unary_events, args.publishers);
        let mut single = unary(&addr, &token, unary_events, args.publishers, args.connections).await?;
        let s2 = stats(&own);
        let mut contrast = serde_json::Value::Null;
        if let Some((engine, stop, server)) = own {
            let _ = stop.send(());
            let _ = server.await;
            engine.close();
            if args.compare_sealing && args.engine == "embedded" {
                let (config, token) = hub_config(&base.path().join("hub-contrast"), &args.source, Some(!sealed));
                eprintln!("contrast: {} events streamed to a hub with sealing {}...", args.events, if sealed { "off" } else { "on" });
                let (addr, (engine, stop, server)) = start_hub(config).await?;
                streamed(&addr, &token, make_events(&args.source, run_id, "warm2", 1000), &args).await?;
                let other = streamed(&addr, &token, make_events(&args.source, run_id, "contrast", args.events), &args).await?;
                let _ = stop.send(());
                let _ = server.await;
                engine.close();
                let (on, off) = if sealed { (stream.rate(), other.rate()) } else { (other.rate(), stream.rate()) };
                contrast = serde_json::json!({
                    "sealed_events_per_sec": on.round(),
                    "unsealed_events_per_sec": off.round(),
                    "sealed_over_unsealed": (on / off * 1000.0).round() / 1000.0,
                });
            }
        }
        // A new replica joining: open the stream afresh and time its catch-up (every entry read
        // and its chain and keys checked).
        let mut catch_up = serde_json::Value::Null;
        if let Some(server) = &nats {
            let defaults = Config::default();
            let started = Instant::now();
            let replica = tellonce_log_nats::NatsLog::open(tellonce_log_nats::NatsOptions {
                url: server.urls(),
                stream: defaults.storage.nats.stream.clone(),
                subject_prefix: defaults.storage.nats.subject_prefix.clone(),
                replicas: args.replicas,
                ..tellonce_log_nats::NatsOptions::default()
            })
            .await?;
            let secs = started.elapsed().as_secs_f64();
            let n = tellonce_log::Log::head(&replica).next_offset;
            eprintln!("catch-up: a new replica read {n} entries in {secs:.2} s");
            catch_up = serde_json::json!((n as f64 / secs).round());
        }
        let raw_phase = match &nats {
            Some(server) => {
                eprintln!("raw: {} entries published to a JetStream stream with async-nats, {} in flight...", args.events, args.batch);
                raw_nats(&server.urls(), args.replicas, &args.source, args.events, args.batch).await?
            }
            None => {
                eprintln!("raw: {} entries appended to a file, one fdatasync per {}...", args.events, args.batch);
                raw(base.path(), &args.source, args.events, args.batch)?
            }
        };
        drop(nats);
        stream.latencies.sort();
        single.latencies.sort();
        let group = |a: Option<tellonce_log::embedded::WriteStats>, b: Option<tellonce_log::embedded::WriteStats>| match (a, b) {
            (Some(a), Some(b)) if b.groups > a.groups => serde_json::json!((b.entries - a.entries) as f64 / (b.groups - a.groups) as f64),
            _ => serde_json::Value::Null,
        };
        Ok::<_, Box<dyn std::error::Error>>(serde_json::json!({
            "events_per_sec": stream.rate().round(),
            "p50_ms": percentile(&stream.latencies, 0.50),
            "p99_ms": percentile(&stream.latencies, 0.99),
            "unary_events_per_sec": single.rate().round(),
            "unary_p50_ms": percentile(&single.latencies, 0.50),
            "unary_p99_ms": percentile(&single.latencies, 0.99),
            "raw_events_per_sec": raw_phase.rate().round(),
            "ratio": (stream.rate() / raw_phase.rate() * 1000.0).round() / 1000.0,
            "engine": args.engine,
            "sealed": sealed,
            "sealing_contrast": contrast,
            "replica_catch_up_entries_per_sec": catch_up,
            "replicas": args.replicas,
            "nats_sync_interval": if args.engine == "nats" { if args.nats_lazy_sync { "default" } else { "always" } } else { "" },
            "events": stream.events,
            "unary_events": single.events,
            "event_bytes": event_bytes,
            "streams": args.streams,
            "batch": args.batch,
            "window": args.window,
            "publishers": args.publishers,
            "stream_entries_per_fsync": group(s0, s1),
            "unary_entries_per_fsync": group(s1, s2),
            "latency_note": "p50/p99_ms: per streamed batch, send to acknowledgement; unary_*: per call",
        }))
    })?;
    if args.json {
        println!("{report}");
    } else {
        let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
        println!(
            "streamed  {:>10.0} events/s   batch p50 {:.2} ms  p99 {:.2} ms",
            f("events_per_sec"),
            f("p50_ms"),
            f("p99_ms")
        );
        println!(
            "unary     {:>10.0} events/s   call  p50 {:.2} ms  p99 {:.2} ms",
            f("unary_events_per_sec"),
            f("unary_p50_ms"),
            f("unary_p99_ms")
        );
        println!(
            "raw disk  {:>10.0} events/s   (same bytes, one fdatasync per {})",
            f("raw_events_per_sec"),
            args.batch
        );
        println!("ratio hub/raw {:.3}", f("ratio"));
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
