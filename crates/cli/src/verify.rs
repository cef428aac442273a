//! `tellonce log verify`: check a data folder's log without changing it.

use std::path::Path;
use std::process::ExitCode;

use tellonce_log::embedded;
use tellonce_log::storage::FsDir;

/// Runs `tellonce log verify`.
pub fn run(data_dir: &Path, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        return Err(format!(
            "{} has no log (expected {})",
            data_dir.display(),
            log_dir.display()
        )
        .into());
    }
    let dir = FsDir::new(&log_dir)?;
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
