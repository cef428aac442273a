//! `tellonce audit`: save a signed checkpoint, prove later that the log only grew, and prove
//! that an entry is in the log, checking every proof with the domain's own verifier.

use std::path::PathBuf;
use std::process::ExitCode;

use tellonce_domain::merkle::{verify_consistency, verify_inclusion};
use tellonce_proto::v1 as pb;
use tellonce_proto::v1::audit_service_client::AuditServiceClient;
use tellonce_server::audit::{parse_hash, parse_hashes, verify_checkpoint};

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
    /// Verify a data folder end to end (stop the hub first): every checksum and the hash
    /// chain, the Merkle root against every signed checkpoint in the log and against a saved
    /// one, and the stored projections against a rebuild. Names the first offset that differs.
    Verify {
        /// The hub's data folder.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// A checkpoint saved by `audit checkpoint`, to check the log against.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The hub's checkpoint public key (PEM); default: the saved checkpoint's pinned key,
        /// or the development key in the data folder.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The key store, to open sealed events when rebuilding the projections (default
        /// `DATA_DIR/keys`; read from a copy, never changed).
        #[arg(long)]
        key_store: Option<PathBuf>,
    },
    /// Verify a running hub's log through AuditService: read every entry, recompute each hash,
    /// the chain and the Merkle root, and check them against a fresh signed checkpoint (and a
    /// saved one, whose pinned key must have signed it).
    VerifyRemote {
        /// A checkpoint saved by `audit checkpoint`.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
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
            | AuditCommand::VerifyRemote { who, .. }
            | AuditCommand::Included { who, .. } => who.clone(),
            AuditCommand::Verify {
                data_dir,
                checkpoint,
                public_key,
                key_store,
            } => {
                let keys = key_store.clone().unwrap_or_else(|| data_dir.join("keys"));
                return verify(data_dir, checkpoint.as_deref(), public_key.as_deref(), &keys)
                    .await;
            }
        };
        let (channel, token) = who.channel_and_token().await?;
        let mut c = AuditServiceClient::with_interceptor(channel, client::bearer(&token)?);
        match cmd {
            AuditCommand::Checkpoint { fresh, out, .. } => {
                let cp = c
                    .get_checkpoint(pb::GetCheckpointRequest { fresh })
                    .await
                    .map_err(client::status)?
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
                    .map_err(client::status)?
                    .into_inner();
                verify_checkpoint(&new, &old.public_key_pem)
                    .map_err(|e| format!("the hub's new checkpoint: {e}"))?;
                let proof = c
                    .prove_consistency(pb::ProveConsistencyRequest {
                        first: old.tree_size,
                        second: new.tree_size,
                    })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                let path = parse_hashes(&proof.path)?;
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
            AuditCommand::Verify { .. } => unreachable!("answered above"),
            AuditCommand::VerifyRemote { checkpoint, .. } => {
                return verify_remote(&mut c, checkpoint.as_deref()).await;
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
                    .map_err(client::status)?
                    .into_inner();
                let path = parse_hashes(&proof.path)?;
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

/// What `audit verify` found wrong, in order.
fn fail(problems: &[String]) -> ExitCode {
    for p in problems {
        println!("NOT OK: {p}");
    }
    ExitCode::from(2)
}

/// Runs `tellonce audit verify`.
async fn verify(
    data_dir: &std::path::Path,
    saved: Option<&std::path::Path>,
    public_key: Option<&std::path::Path>,
    key_store: &std::path::Path,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use tellonce_domain::record::Checkpoint;
    use tellonce_domain::Record;
    use tellonce_log::merkle::LeafHasher;
    use tellonce_log::{embedded, storage::FsDir};

    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        return Err(format!("{} has no log", data_dir.display()).into());
    }
    let saved = saved.map(|p| from_file(&p.to_path_buf())).transpose()?;
    // The key checkpoints must be signed with.
    let pinned = match (public_key, &saved) {
        (Some(p), _) => Some(std::fs::read_to_string(p)?),
        (None, Some(s)) => Some(s.public_key_pem.clone()),
        (None, None) => std::fs::read_to_string(data_dir.join("audit-signing-key.pem"))
            .ok()
            .and_then(|pem| tellonce_server::jwt::signing_key_from_pem(&pem).ok())
            .map(|k| tellonce_server::jwt::keypair_pem(k.to_bytes()).1),
    };

    // 1. Checksums, the hash chain, unique keys; the Merkle tree; the checkpoints in the log.
    let dir = FsDir::new(&log_dir)?;
    let mut hasher = LeafHasher::new();
    let mut checkpoints: Vec<(u64, Checkpoint)> = Vec::new();
    let scanned = embedded::verify_each(&dir, &mut |v| {
        hasher.push(v.stored);
        if v.source == tellonce_domain::record::HUB_SOURCE && v.id.starts_with("checkpoint/") {
            if let Ok(Record::Checkpoint(c)) = Record::decode(v.body) {
                checkpoints.push((v.offset, c));
            }
        }
    });
    let head = match scanned {
        Ok((head, report)) => {
            if report.torn_bytes > 0 {
                println!(
                    "note: {} bytes of a torn entry at the end of {} (an interrupted write, never acknowledged)",
                    report.torn_bytes,
                    report.torn_segment.unwrap_or_default()
                );
            }
            head
        }
        Err(e) => return Ok(fail(&[format!("the log: {e}")])),
    };
    let tree = hasher.finish().ok_or("the leaf hashing thread failed")?;
    println!(
        "log: {} entries, checksums and hash chain ok",
        head.next_offset
    );
    let mut problems = Vec::new();
    let root_at = |size: u64| tree.root(size).map(hex::encode).ok();
    for (offset, c) in &checkpoints {
        match root_at(c.tree_size) {
            Some(r) if r == c.root_hash => {}
            _ => problems.push(format!(
                "the checkpoint at offset {offset} (size {}) does not match the log's root: an entry below offset {} was changed",
                c.tree_size, c.tree_size
            )),
        }
        if let Some(pem) = &pinned {
            let signed = pb::SignedCheckpoint {
                tree_size: c.tree_size,
                root_hash: c.root_hash.clone(),
                signed_at: c.signed_at.to_string(),
                signature: c.signature.clone(),
                message: Checkpoint::message(c.tree_size, &c.root_hash, c.signed_at),
                public_key_pem: pem.clone(),
                offset: *offset,
            };
            if let Err(e) = verify_checkpoint(&signed, pem) {
                problems.push(format!("the checkpoint at offset {offset}: {e}"));
            }
        }
    }
    println!(
        "checkpoints in the log: {}{}",
        checkpoints.len(),
        if pinned.is_some() {
            " (signatures checked)"
        } else {
            " (no public key: signatures not checked)"
        }
    );
    if let Some(s) = &saved {
        if let Err(e) = verify_checkpoint(s, &s.public_key_pem) {
            problems.push(format!("the saved checkpoint: {e}"));
        }
        match root_at(s.tree_size) {
            _ if s.tree_size > head.next_offset => problems.push(format!(
                "the log has {} entries, fewer than the {} of the saved checkpoint: entries were removed",
                head.next_offset, s.tree_size
            )),
            Some(r) if r == s.root_hash => println!(
                "the saved checkpoint ({} entries) is a prefix of this log",
                s.tree_size
            ),
            _ => problems.push(format!(
                "the log's first {} entries do not have the saved checkpoint's root: history was rewritten",
                s.tree_size
            )),
        }
    }

    // 2. The stored projections against a rebuild in a temporary folder.
    let stored_dir = data_dir.join("projections");
    if stored_dir.is_dir() {
        let (log, _) = tellonce_log::EmbeddedLog::open(
            FsDir::new(&log_dir)?,
            tellonce_log::EmbeddedOptions::default(),
        )
        .map_err(|e| format!("cannot open the log (is the hub still running?): {e}"))?;
        // Work on a copy, so that nothing in the data folder changes.
        let scratch = tempfile::tempdir()?;
        let copy = scratch.path().join("stored");
        copy_dir(&stored_dir, &copy)?;
        let keys = if key_store.join("keys.dat").exists() {
            let keys_copy = scratch.path().join("keys");
            copy_dir(key_store, &keys_copy)?;
            Some(std::sync::Arc::new(tellonce_projection::KeyStore::open(
                &keys_copy,
            )?))
        } else {
            None
        };
        let stored = tellonce_projection::Projection::open(&copy, &log, keys.clone())
            .await
            .map_err(|e| format!("cannot open the stored projections: {e}"))?;
        if let Some(why) = stored.damage() {
            problems.push(format!("stored projections are damaged: {why}"));
        } else if stored.applied() == 0 && head.next_offset > 0 {
            println!(
                "note: the stored projections have no snapshot matching this log (the hub was not stopped cleanly, or they were dropped); the hub rebuilds them at start"
            );
        }
        stored.catch_up(&log).await?;
        let rebuilt =
            tellonce_projection::Projection::rebuild(&scratch.path().join("rebuilt"), &log, keys)
                .await?;
        rebuilt.catch_up(&log).await?;
        match stored.first_difference(&rebuilt) {
            None => println!("projections: the stored ones equal a rebuild from the log"),
            Some(d) => problems.push(format!("projections differ from a rebuild: {d}")),
        }
        log.close();
    }
    if problems.is_empty() {
        println!("audit ok");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(fail(&problems))
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Runs `tellonce audit verify-remote`.
async fn verify_remote(
    c: &mut AuditServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, client::Bearer>,
    >,
    saved: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use sha2::{Digest, Sha256};
    use tellonce_log::merkle::MerkleTree;
    let saved = saved.map(|p| from_file(&p.to_path_buf())).transpose()?;
    let now = c
        .get_checkpoint(pb::GetCheckpointRequest { fresh: true })
        .await
        .map_err(client::status)?
        .into_inner();
    let pinned = saved
        .as_ref()
        .map_or(now.public_key_pem.clone(), |s| s.public_key_pem.clone());
    let mut problems = Vec::new();
    if let Err(e) = verify_checkpoint(&now, &pinned) {
        problems.push(format!("the hub's checkpoint: {e}"));
    }
    let mut stream = c
        .read_log(pb::ReadLogRequest {
            from_offset: 0,
            limit: now.tree_size,
        })
        .await
        .map_err(client::status)?
        .into_inner();
    let mut tree = MerkleTree::new();
    let mut prev = [0u8; 32];
    while let Some(e) = stream.message().await.map_err(client::status)? {
        let at = tree.len();
        if e.offset != at {
            problems.push(format!("expected offset {at}, the hub sent {}", e.offset));
            break;
        }
        let stored = tellonce_log::frame::stored_bytes(&tellonce_log::StoredEntry {
            offset: e.offset,
            prev_hash: parse_hash(&e.prev_hash)?,
            hash: parse_hash(&e.hash)?,
            recorded_at_ms: e.recorded_at_ms,
            source: e.source.clone(),
            id: e.id.clone(),
            body: e.body.clone(),
        });
        let hash: [u8; 32] = Sha256::digest(&stored).into();
        if parse_hash(&e.prev_hash)? != prev {
            problems.push(format!("the hash chain breaks at offset {at}"));
            break;
        }
        if hash != parse_hash(&e.hash)? {
            problems.push(format!(
                "the entry at offset {at} does not have the hash the hub states"
            ));
            break;
        }
        prev = hash;
        tree.push(tellonce_domain::merkle::leaf_hash(&stored));
    }
    if problems.is_empty() {
        if tree.len() != now.tree_size {
            problems.push(format!(
                "the hub sent {} entries for a checkpoint of {}",
                tree.len(),
                now.tree_size
            ));
        } else if hex::encode(tree.root(now.tree_size)?) != now.root_hash {
            problems.push("the entries do not have the checkpoint's root".into());
        }
        if let Some(s) = &saved {
            match tree.root(s.tree_size) {
                Ok(r) if hex::encode(r) == s.root_hash => println!(
                    "the saved checkpoint ({} entries) is a prefix of the hub's log",
                    s.tree_size
                ),
                Ok(_) => problems.push(format!(
                    "the hub's first {} entries do not have the saved checkpoint's root: history was rewritten",
                    s.tree_size
                )),
                Err(_) => problems.push(format!(
                    "the hub's log has fewer entries than the saved checkpoint's {}",
                    s.tree_size
                )),
            }
        }
    }
    if problems.is_empty() {
        println!(
            "audit ok: {} entries read from the hub, every hash, the chain and the root of its signed checkpoint recomputed",
            tree.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(fail(&problems))
    }
}
