//! `tellonce audit`: save a signed checkpoint, prove later that the log only grew, and prove
//! that an entry is in the log, checking every proof with the domain's own verifier.

use std::path::PathBuf;
use std::process::ExitCode;

use tellonce_domain::merkle::{verify_consistency, verify_inclusion};
use tellonce_proto::v1 as pb;
use tellonce_proto::v1::audit_service_client::AuditServiceClient;
use tellonce_server::audit::{parse_hash, verify_checkpoint};

use crate::client;
use crate::consent::Who;

/// `tellonce audit ...`
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Fetch a signed checkpoint (a new one with --fresh), check its signature, and save it
    /// with the hub's public key, to pin.
    Checkpoint {
        /// Make and sign a new checkpoint of the log as it is now.
        #[arg(long)]
        fresh: bool,
        /// Where to save it (JSON).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        who: Who,
    },
    /// Prove that the log only grew since a saved checkpoint: fetch a fresh one, check its
    /// signature with the pinned key, and verify a consistency proof between the two.
    Grew {
        /// A checkpoint saved by `audit checkpoint`.
        #[arg(long)]
        since: PathBuf,
        #[command(flatten)]
        who: Who,
    },
    /// Prove that the entry at an offset is in the log of a saved checkpoint.
    Included {
        /// The entry's offset.
        #[arg(long)]
        offset: u64,
        /// A checkpoint saved by `audit checkpoint`.
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        who: Who,
    },
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn to_json(c: &pb::SignedCheckpoint) -> serde_json::Value {
    serde_json::json!({
        "tree_size": c.tree_size, "root_hash": c.root_hash, "signed_at": c.signed_at,
        "signature": c.signature, "message": c.message, "public_key_pem": c.public_key_pem,
        "offset": c.offset,
    })
}

fn from_file(path: &PathBuf) -> Result<pb::SignedCheckpoint, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or_default();
    Ok(pb::SignedCheckpoint {
        tree_size: n("tree_size"),
        root_hash: s("root_hash"),
        signed_at: s("signed_at"),
        signature: s("signature"),
        message: s("message"),
        public_key_pem: s("public_key_pem"),
        offset: n("offset"),
    })
}

/// Runs `tellonce audit`.
pub fn run(cmd: AuditCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let who = match &cmd {
            AuditCommand::Checkpoint { who, .. }
            | AuditCommand::Grew { who, .. }
            | AuditCommand::Included { who, .. } => who.clone(),
        };
        let (channel, token) = who.channel_and_token().await?;
        let mut c = AuditServiceClient::with_interceptor(channel, client::bearer(&token)?);
        match cmd {
            AuditCommand::Checkpoint { fresh, out, .. } => {
                let cp = c
                    .get_checkpoint(pb::GetCheckpointRequest { fresh })
                    .await
                    .map_err(status)?
                    .into_inner();
                verify_checkpoint(&cp, &cp.public_key_pem)?;
                std::fs::write(&out, serde_json::to_string_pretty(&to_json(&cp))?)?;
                println!(
                    "checkpoint: {} entries, root {}, signed {} (signature verified); saved to {}",
                    cp.tree_size,
                    cp.root_hash,
                    cp.signed_at,
                    out.display()
                );
            }
            AuditCommand::Grew { since, .. } => {
                let old = from_file(&since)?;
                verify_checkpoint(&old, &old.public_key_pem)
                    .map_err(|e| format!("the saved checkpoint: {e}"))?;
                let new = c
                    .get_checkpoint(pb::GetCheckpointRequest { fresh: true })
                    .await
                    .map_err(status)?
                    .into_inner();
                verify_checkpoint(&new, &old.public_key_pem)
                    .map_err(|e| format!("the hub's new checkpoint: {e}"))?;
                let proof = c
                    .prove_consistency(pb::ProveConsistencyRequest {
                        first: old.tree_size,
                        second: new.tree_size,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                let path = proof
                    .path
                    .iter()
                    .map(|h| parse_hash(h))
                    .collect::<Result<Vec<_>, _>>()?;
                verify_consistency(
                    old.tree_size,
                    new.tree_size,
                    &parse_hash(&old.root_hash)?,
                    &parse_hash(&new.root_hash)?,
                    &path,
                )
                .map_err(|e| {
                    format!("LOG NOT CONSISTENT with the saved checkpoint: {e}")
                })?;
                println!(
                    "the log only grew: {} entries (root {}) extend the saved {} (root {}); proof of {} hashes verified, signature by the pinned key",
                    new.tree_size, new.root_hash, old.tree_size, old.root_hash, path.len()
                );
            }
            AuditCommand::Included {
                offset, checkpoint, ..
            } => {
                let cp = from_file(&checkpoint)?;
                verify_checkpoint(&cp, &cp.public_key_pem)?;
                let proof = c
                    .prove_inclusion(pb::ProveInclusionRequest {
                        index: offset,
                        tree_size: cp.tree_size,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                let path = proof
                    .path
                    .iter()
                    .map(|h| parse_hash(h))
                    .collect::<Result<Vec<_>, _>>()?;
                verify_inclusion(
                    &parse_hash(&proof.leaf_hash)?,
                    offset,
                    cp.tree_size,
                    &path,
                    &parse_hash(&cp.root_hash)?,
                )
                .map_err(|e| format!("NOT INCLUDED: {e}"))?;
                println!(
                    "entry {offset} (leaf {}) is in the log of {} entries signed at {}",
                    proof.leaf_hash, cp.tree_size, cp.signed_at
                );
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}
