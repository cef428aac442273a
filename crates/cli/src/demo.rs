//! `tellonce demo`: generate a synthetic county, publish it to a running hub over gRPC, and
//! print one family's timeline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use tellonce_demo::{County, Settings, PARTNERS};
use tellonce_proto::v1 as pb;
use tellonce_server::convert::event_to_pb;
use tokio::sync::mpsc;

use crate::client;

/// Options of `tellonce demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of families.
    #[arg(long, default_value_t = 10_000)]
    pub families: usize,
    /// Number of events (over the three years up to the start of today, UTC).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Seed: the same seed gives the same county all day (UTC; the county's three years end
    /// at the day's start).
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// The hub's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// A credentials file with every demo partner's token (default: ./data's development
    /// credentials).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

/// What a demo ingest did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ingested {
    /// Newly accepted events.
    pub accepted: u64,
    /// Events already in the log.
    pub duplicate: u64,
    /// Rejected events.
    pub rejected: u64,
    /// The highest offset answered.
    pub max_offset: u64,
}

/// The demo county of a seed and size, its three years ending a minute before the start of
/// today (UTC). The day, not the moment, so that runs of a benchmark on the same day see the
/// same county: the generator places events by the millisecond, so a county ending at another
/// moment differs a little, and so do its linking and benchmark figures. The minute keeps
/// every event in the past for a hub whose clock is a little behind.
pub fn county(seed: u64, families: usize, events: u64) -> County {
    let now = tellonce_server::ingest::system_clock()();
    let day = tellonce_domain::time::MS_PER_DAY;
    let day_start = now.0.div_euclid(day) * day;
    County::new(Settings {
        seed,
        families,
        events,
        end: tellonce_domain::Timestamp(day_start - 60_000),
    })
}

/// Records every family's consent (the one its consent-basis events cite) through
/// ConsentService, as the early intervention team's system, many at a time.
pub async fn record_consents(
    county: &County,
    addr: &str,
    tokens: &HashMap<String, String>,
) -> Result<(), Box<dyn std::error::Error>> {
    use futures::stream::StreamExt;
    let token = tokens.get("early-intervention").ok_or(
        "no credential for partner \"early-intervention\", which records the demo's consents",
    )?;
    let c = client::consent(client::connect(addr).await?, token)?;
    let requests: Vec<pb::GiveConsentRequest> = (0..county.families.len() as u32)
        .map(|f| {
            let g = county.consent_for(f);
            pb::GiveConsentRequest {
                consent_id: g.consent_id,
                given_by: g.given_by,
                giver: "parental_responsibility".into(),
                person_ids: Vec::new(),
                records: g.records,
                scope: g
                    .grants
                    .into_iter()
                    .map(|s| pb::ConsentScope {
                        partners: s.partners,
                        categories: s.categories.iter().map(|c| c.name().to_string()).collect(),
                    })
                    .collect(),
                purpose: g.purpose,
                given_on: g.given_on.to_string(),
                ..Default::default()
            }
        })
        .collect();
    let mut answers = futures::stream::iter(requests)
        .map(|r| {
            let mut c = c.clone();
            async move { c.give_consent(r).await }
        })
        .buffer_unordered(64);
    while let Some(a) = answers.next().await {
        a.map_err(|s| format!("recording consent: {:?}: {}", s.code(), s.message()))?;
    }
    Ok(())
}

/// Publishes the county's events to the hub at `addr`, one stream per partner.
pub async fn ingest(
    county: &mut County,
    addr: &str,
    tokens: &HashMap<String, String>,
    batch: usize,
    bar: &ProgressBar,
) -> Result<Ingested, Box<dyn std::error::Error>> {
    let channel = client::connect(addr).await?;
    let mut senders = HashMap::new();
    let mut tasks = Vec::new();
    for (source, _) in PARTNERS {
        let token = tokens.get(*source).ok_or_else(|| {
            format!("no credential for partner {source:?}: the demo publishes as every development partner (run it against a dev hub, or pass --credentials)")
        })?;
        let mut c = client::ingest(channel.clone(), token)?;
        let (tx, rx) = mpsc::channel::<pb::PublishRequest>(8);
        senders.insert(source.to_string(), tx);
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Ingested::default();
            let mut answers = c
                .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            while let Some(resp) = answers.message().await? {
                for r in &resp.results {
                    match &r.outcome {
                        Some(pb::event_result::Outcome::Accepted(a)) => {
                            out.accepted += 1;
                            out.max_offset = out.max_offset.max(a.offset);
                        }
                        Some(pb::event_result::Outcome::Duplicate(d)) => {
                            out.duplicate += 1;
                            out.max_offset = out.max_offset.max(d.offset);
                        }
                        _ => out.rejected += 1,
                    }
                }
                bar.inc(resp.results.len() as u64);
            }
            Ok::<_, tonic::Status>(out)
        }));
    }
    let mut buffers: HashMap<String, Vec<pb::Event>> = HashMap::new();
    for event in county.events() {
        let source = event.source.clone();
        let buf = buffers.entry(source.clone()).or_default();
        buf.push(event_to_pb(&event));
        if buf.len() >= batch {
            let events = std::mem::take(buf);
            if let Some(tx) = senders.get(&source) {
                tx.send(pb::PublishRequest {
                    events,
                    request_id: 0,
                })
                .await
                .map_err(|_| "the hub closed the stream")?;
            }
        }
    }
    for (source, events) in buffers {
        if let (Some(tx), false) = (senders.get(&source), events.is_empty()) {
            tx.send(pb::PublishRequest {
                events,
                request_id: 0,
            })
            .await
            .map_err(|_| "the hub closed the stream")?;
        }
    }
    drop(senders);
    let mut total = Ingested::default();
    for t in tasks {
        let r = t.await?.map_err(client::status)?;
        total.accepted += r.accepted;
        total.duplicate += r.duplicate;
        total.rejected += r.rejected;
        total.max_offset = total.max_offset.max(r.max_offset);
    }
    Ok(total)
}

/// Waits until the hub has applied `offset` (polling with bounded waits).
pub async fn wait_applied(
    q: &mut client::Query,
    family_id: &str,
    offset: u64,
) -> Result<(), String> {
    for _ in 0..60 {
        let r = q
            .get_timeline(pb::GetTimelineRequest {
                scope: Some(pb::get_timeline_request::Scope::FamilyId(family_id.into())),
                page_size: 1,
                consistency: Some(pb::Consistency {
                    min_offset: offset,
                    wait_ms: 10_000,
                }),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable => continue,
            Err(s) => return Err(client::status(s)),
        }
    }
    Err(format!(
        "the hub did not apply offset {offset} within 10 minutes"
    ))
}

/// Runs `tellonce demo`.
pub fn run(args: DemoArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let tokens = client::partner_tokens(args.credentials.as_deref())?;
    if tokens.is_empty() {
        return Err("no credentials: start a development hub first (`tellonce serve` writes data/dev-credentials.toml), run this from the same folder, or pass --credentials".into());
    }
    let mut county = county(args.seed, args.families, args.events);
    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    runtime.block_on(async {
        println!(
            "recording {} families' consents...",
            county.families.len()
        );
        record_consents(&county, &args.addr, &tokens).await?;
        let done = ingest(&mut county, &args.addr, &tokens, args.batch, &bar).await?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "published {} events in {secs:.1} s ({:.0}/s): accepted {}, duplicate {}, rejected {}",
            args.events,
            args.events as f64 / secs,
            done.accepted,
            done.duplicate,
            done.rejected
        );
        // The busiest family, found as a practitioner would: by a child's NHS number.
        let busiest = county
            .families
            .iter()
            .max_by_key(|f| f.weight)
            .ok_or("the county has no families")?;
        let child = busiest
            .members
            .iter()
            .map(|&m| &county.people[m as usize])
            .find(|p| p.child)
            .ok_or("no child")?;
        let channel = client::connect(&args.addr).await?;
        let people = client::people(args.credentials.as_deref())?;
        let first = people
            .first()
            .ok_or("the credentials name no people to read with")?;
        let mut q = client::query(channel.clone(), &first.token)?;
        let found = q
            .find_person(pb::FindPersonRequest {
                by: Some(pb::find_person_request::By::NhsNumber(child.nhs.clone())),
                consistency: Some(pb::Consistency {
                    min_offset: done.max_offset,
                    wait_ms: 30_000,
                }),
                reason: "demo: the busiest family".into(),
            })
            .await;
        let found = match found {
            Ok(f) => f.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                println!("waiting for the hub to apply the log...");
                q.find_person(pb::FindPersonRequest {
                    by: Some(pb::find_person_request::By::NhsNumber(child.nhs.clone())),
                    consistency: None,
                    reason: "demo: the busiest family".into(),
                })
                .await
                .map_err(client::status)?
                .into_inner()
            }
            Err(s) => return Err(client::status(s).into()),
        };
        let Some(person) = found.persons.first() else {
            println!(
                "(no partner has published {}'s NHS number yet)",
                child.given
            );
            return Ok(ExitCode::SUCCESS);
        };
        // Read as the development person of the partner that knows the child best.
        let org = person
            .records
            .iter()
            .map(|r| r.source.as_str())
            .max_by_key(|s| person.records.iter().filter(|r| r.source == *s).count())
            .unwrap_or_default();
        let reader = people
            .iter()
            .find(|p| p.organisation == org && p.roles.iter().any(|r| r == "practitioner"))
            .unwrap_or(first);
        let mut q = client::query(channel, &reader.token)?;
        wait_applied(&mut q, &person.family_id, done.max_offset).await?;
        println!(
            "\n{} (NHS {}), as every partner knows them, read by {} ({}):",
            person.name, child.nhs, reader.user_id, reader.organisation
        );
        println!(
            "try: tellonce timeline --as {} --nhs-number {}    or: tellonce timeline --as {} --family {}\n",
            reader.user_id, child.nhs, reader.user_id, person.family_id
        );
        let why = crate::timeline::Why {
            reason: "demo: the busiest family".into(),
            ..Default::default()
        };
        crate::timeline::show(
            &mut q,
            &person.family_id,
            crate::timeline::Filter {
                limit: 25,
                ..Default::default()
            },
            &why,
        )
        .await?;
        if let Some(lead) = people
            .iter()
            .find(|p| p.roles.iter().any(|r| r == "safeguarding_lead"))
        {
            println!(
                "\nuncertain matches wait for a person: tellonce matches list --as {}",
                lead.user_id
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
