//! `tellonce log verify` and `tellonce log dump`: check and read a data folder's log without
//! changing it.

use std::path::Path;
use std::process::ExitCode;

use tellonce_domain::{Record, Timestamp};
use tellonce_log::embedded;
use tellonce_log::storage::FsDir;

fn log_dir(data_dir: &Path) -> Result<FsDir, Box<dyn std::error::Error>> {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        return Err(format!(
            "{} has no log (expected {})",
            data_dir.display(),
            log_dir.display()
        )
        .into());
    }
    Ok(FsDir::new(&log_dir)?)
}

/// Runs `tellonce log dump`.
pub fn dump(data_dir: &Path, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use std::io::Write;
    let dir = log_dir(data_dir)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_failed = false;
    let result = embedded::verify_each(&dir, &mut |e| {
        let record = Record::decode(e.body);
        let at = Timestamp(e.recorded_at_ms);
        let line = if json {
            serde_json::json!({
                "offset": e.offset,
                "recorded_at": at.to_string(),
                "source": e.source,
                "id": e.id,
                "hash": tellonce_log_hex(&e.hash),
                "record": record.as_ref().ok(),
            })
            .to_string()
        } else {
            let what = match &record {
                Ok(Record::PartnerEvent(ev)) => format!(
                    "{} about {} subject(s), occurred {}",
                    ev.payload.kind(),
                    ev.subjects.len(),
                    ev.occurred_at
                ),
                Ok(Record::SealedEvent(ev)) => format!(
                    "{} about {} subject(s), occurred {} (payload sealed under {} key(s))",
                    ev.payload.kind,
                    ev.subjects.len(),
                    ev.occurred_at,
                    ev.payload.keys.len()
                ),
                Ok(Record::Erasure(x)) => format!(
                    "erasure {} of {}: {} key(s) destroyed, {} event(s), by {} ({})",
                    x.erasure_id,
                    x.person_id,
                    x.key_ids.len(),
                    x.offsets.len(),
                    x.decided_by,
                    x.reason.label()
                ),
                Ok(Record::MatchDecision(d)) => format!(
                    "match decision: {:?} {} and {} by {}",
                    d.decision, d.record_a, d.record_b, d.decided_by
                ),
                Ok(Record::ConsentGiven(c)) => format!(
                    "consent {} given by {} for {} record(s), recorded by {}",
                    c.consent_id,
                    c.given_by,
                    c.records.len(),
                    c.recorded_by
                ),
                Ok(Record::ConsentWithdrawn(w)) => format!(
                    "consent {} withdrawn from {} (recorded by {})",
                    w.consent_id, w.effective_from, w.recorded_by
                ),
                Ok(Record::SharingDecision(d)) => format!(
                    "decision {} to share with {} about {} by {}",
                    if d.share { "" } else { "not" },
                    d.with_partners.join(","),
                    d.family_id,
                    d.decided_by
                ),
                Ok(Record::Access(a)) => format!(
                    "access by {} ({}): {} {} -> {:?}{}",
                    a.user_id,
                    a.organisation,
                    a.method,
                    a.asked,
                    a.outcome,
                    if a.break_glass { " BREAK GLASS" } else { "" }
                ),
                Ok(Record::Checkpoint(c)) => {
                    format!("checkpoint: {} entries, root {}", c.tree_size, c.root_hash)
                }
                Err(err) => format!("(undecodable: {err})"),
            };
            format!(
                "{:>8}  {at}  {:<20} {:<28} {what}",
                e.offset, e.source, e.id
            )
        };
        write_failed |= writeln!(out, "{line}").is_err();
    });
    let _ = out.flush();
    match result {
        Ok(_) if write_failed => Ok(ExitCode::FAILURE),
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("log NOT ok: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Runs `tellonce log verify`.
pub fn run(data_dir: &Path, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let dir = log_dir(data_dir)?;
    match embedded::verify(&dir) {
        Ok((head, report)) => {
            let hash = tellonce_log_hex(&head.last_hash);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "entries": head.next_offset,
                        "segments": report.segments,
                        "head_hash": hash,
                        "torn_bytes": report.torn_bytes,
                    })
                );
            } else {
                println!(
                    "log ok: {} entries in {} segments",
                    head.next_offset, report.segments
                );
                println!("head hash: {hash}");
                if report.torn_bytes > 0 {
                    println!(
                        "torn tail: {} bytes at the end of {} (cut off when the hub next starts)",
                        report.torn_bytes,
                        report.torn_segment.unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": e.to_string() })
                );
            } else {
                println!("log NOT ok: {e}");
            }
            Ok(ExitCode::from(2))
        }
    }
}

fn tellonce_log_hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
