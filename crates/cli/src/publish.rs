//! `tellonce publish FILE.jsonl`: send events written as JSON lines to a running hub.
//!
//! Each line is one event in the domain's JSON form (see `samples/events.jsonl`). Events are
//! grouped by their `source` and sent in batches with that partner's token, from `--token` or
//! from a credentials file (by default the development credentials a dev hub writes).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use tellonce_domain::Event;
use tellonce_proto::v1 as pb;
use tellonce_server::convert::event_to_pb;

use crate::client;

/// Options of `tellonce publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The JSON-lines file, one event per line.
    file: PathBuf,
    /// The hub's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// One bearer token for every event (they must then all have that partner's source).
    #[arg(long)]
    token: Option<String>,
    /// A TOML file with `[[partners]]` id and token entries; defaults to the development
    /// credentials in ./data.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

struct Line {
    number: usize,
    event: Event,
}

#[derive(Default)]
struct Summary {
    accepted: u64,
    duplicate: u64,
    rejected: Vec<(usize, String, String)>,
}

/// Runs `tellonce publish`.
pub fn run(args: PublishArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let mut summary = Summary::default();
    let mut by_source: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(event) => by_source
                .entry(event.source.clone())
                .or_default()
                .push(Line { number, event }),
            Err(e) => {
                summary
                    .rejected
                    .push((number, String::new(), format!("not a valid event: {e}")))
            }
        }
    }
    let tokens = load_tokens(&args)?;
    let total: usize = by_source.values().map(Vec::len).sum();
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = client::connect(&args.addr).await?;
        for (source, lines) in by_source {
            let token = match args.token.as_ref().or_else(|| tokens.get(&source)) {
                Some(t) => t.clone(),
                None => {
                    for l in &lines {
                        summary.rejected.push((
                            l.number,
                            l.event.event_id.clone(),
                            format!("not sent: no credential for source {source:?} (use --token or --credentials)"),
                        ));
                    }
                    bar.inc(lines.len() as u64);
                    continue;
                }
            };
            let mut ingest = client::ingest(channel.clone(), &token)?;
            for chunk in lines.chunks(args.batch.max(1)) {
                let request = pb::PublishRequest {
                    events: chunk.iter().map(|l| event_to_pb(&l.event)).collect(),
                    request_id: 0,
                };
                let response = ingest
                    .publish(request)
                    .await
                    .map_err(|s| format!("the hub refused the batch: {:?}: {}", s.code(), s.message()))?
                    .into_inner();
                for (line, result) in chunk.iter().zip(response.results) {
                    match result.outcome {
                        Some(pb::event_result::Outcome::Accepted(_)) => summary.accepted += 1,
                        Some(pb::event_result::Outcome::Duplicate(_)) => summary.duplicate += 1,
                        Some(pb::event_result::Outcome::Rejected(r)) => summary.rejected.push((
                            line.number,
                            result.event_id,
                            format!("{} ({}): {}", r.reason, r.field, r.message),
                        )),
                        None => summary.rejected.push((line.number, result.event_id, "no answer".into())),
                    }
                }
                bar.inc(chunk.len() as u64);
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    bar.finish_and_clear();
    summary.rejected.sort();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "accepted": summary.accepted,
                "duplicate": summary.duplicate,
                "rejected": summary.rejected.len(),
                "rejections": summary.rejected.iter().map(|(line, id, why)| serde_json::json!({"line": line, "event_id": id, "reason": why})).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "accepted {}, duplicate {}, rejected {}",
            summary.accepted,
            summary.duplicate,
            summary.rejected.len()
        );
        for (line, id, why) in &summary.rejected {
            println!("  line {line} {id}: {why}");
        }
    }
    Ok(if summary.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load_tokens(args: &PublishArgs) -> Result<HashMap<String, String>, String> {
    if args.credentials.is_none() && args.token.is_some() {
        return Ok(HashMap::new());
    }
    client::partner_tokens(args.credentials.as_deref())
}

#[cfg(test)]
mod tests {
    use tellonce_domain::{check, Event, Timestamp};

    #[test]
    fn the_sample_file_has_fifteen_valid_events_and_one_bad_one() {
        let now = Timestamp::parse("2026-11-25T12:00:00Z").unwrap();
        let mut rejected = Vec::new();
        let lines: Vec<&str> = include_str!("../../../samples/events.jsonl")
            .lines()
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let event: Event = serde_json::from_str(line).unwrap();
            let source = event.source.clone();
            if let Err(e) = check(event, &source, now) {
                rejected.push((i + 1, e.reason));
            }
        }
        assert_eq!(lines.len(), 16);
        assert_eq!(rejected, vec![(16, "nhs_number_check_digit")]);
    }
}
