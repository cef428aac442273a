//! The auditor's service: read the log, signed checkpoints of its Merkle tree, and inclusion
//! and consistency proofs (RFC 9162).
//!
//! [`Audit`] keeps the tree (`tellonce_log::merkle::MerkleTree`, leaves from
//! `tellonce_log::frame::leaf_of`) and brings it up to the log's head before each answer. A
//! checkpoint (size, root, time) is signed with the hub's Ed25519 key and appended to the log
//! as a [`Checkpoint`] record, on demand and every `[audit] checkpoint_every_s` while the log
//! grows. [`AuditGrpc`] serves it to the auditor role only, and access-logs every call.

use std::pin::Pin;
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use tellonce_domain::access::Role;
use tellonce_domain::record::Checkpoint;
use tellonce_domain::{Record, Timestamp};
use tellonce_log::merkle::MerkleTree;
use tellonce_log::{frame, Log};
use tellonce_projection::Reading;
use tellonce_proto::v1 as pb;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::auth::{Authenticator, Caller};
use crate::ingest::Clock;
use crate::query::{authenticate, Asked, Query};
use crate::ServerError;

/// Entries read from the log per step when the tree catches up.
const TREE_BATCH: usize = 4096;

/// The hub's Merkle tree, signing key and latest checkpoint.
pub struct Audit {
    log: Arc<dyn Log>,
    key: SigningKey,
    public_pem: String,
    clock: Clock,
    state: Mutex<(MerkleTree, Option<pb::SignedCheckpoint>)>,
}

impl Audit {
    /// An auditor over `log` signing with `key`.
    pub fn new(log: Arc<dyn Log>, key: SigningKey, clock: Clock) -> Self {
        let (_, public_pem) = crate::jwt::keypair_pem(key.to_bytes());
        Audit {
            log,
            key,
            public_pem,
            clock,
            state: Mutex::new((MerkleTree::new(), None)),
        }
    }

    /// The key id: hex of the first 8 bytes of SHA-256 of the public key.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.key.verifying_key().as_bytes())[..8])
    }

    async fn catch_up(&self, tree: &mut MerkleTree) -> Result<(), ServerError> {
        let head = self.log.head().next_offset;
        while tree.len() < head {
            let entries = self.log.read(tree.len(), TREE_BATCH).await?;
            if entries.is_empty() {
                break;
            }
            for e in &entries {
                if e.offset != tree.len() {
                    return Err(ServerError::Unavailable(format!(
                        "the log answered offset {} where {} was expected",
                        e.offset,
                        tree.len()
                    )));
                }
                tree.push(frame::leaf_of(e));
            }
        }
        Ok(())
    }

    /// The latest checkpoint, or a new one (when `fresh`, or when none was made yet).
    pub async fn checkpoint(&self, fresh: bool) -> Result<pb::SignedCheckpoint, ServerError> {
        let mut st = self.state.lock().await;
        if let (false, Some(c)) = (fresh, &st.1) {
            return Ok(c.clone());
        }
        self.catch_up(&mut st.0).await?;
        let size = st.0.len();
        let root = hex::encode(
            st.0.root(size)
                .map_err(|e| ServerError::Unavailable(e.to_string()))?,
        );
        let now = (self.clock)();
        let message = Checkpoint::message(size, &root, now);
        let signature = hex::encode(self.key.sign(message.as_bytes()).to_bytes());
        let rec = Record::Checkpoint(Checkpoint {
            tree_size: size,
            root_hash: root.clone(),
            signed_at: now,
            key_id: self.key_id(),
            signature: signature.clone(),
        });
        let outcomes = self
            .log
            .append(vec![tellonce_log::NewEntry::of(&rec, now.0)])
            .await?;
        let offset = match outcomes.first() {
            Some(tellonce_log::AppendOutcome::Appended(o))
            | Some(tellonce_log::AppendOutcome::Duplicate(o)) => *o,
            None => return Err(ServerError::Unavailable("the log did not answer".into())),
        };
        info!(size, %root, offset, "signed checkpoint");
        let c = pb::SignedCheckpoint {
            tree_size: size,
            root_hash: root,
            signed_at: now.to_string(),
            signature,
            message,
            public_key_pem: self.public_pem.clone(),
            offset,
        };
        st.1 = Some(c.clone());
        Ok(c)
    }

    /// Makes a checkpoint if the log grew since the last one.
    pub async fn checkpoint_if_grown(&self) -> Result<(), ServerError> {
        let last = self.state.lock().await.1.as_ref().map(|c| c.offset);
        let head = self.log.head().next_offset;
        // The last checkpoint's own entry does not count as growth.
        if last.is_none_or(|o| head > o + 1) && head > 0 {
            self.checkpoint(true).await?;
        }
        Ok(())
    }

    /// An inclusion proof of entry `index` in the tree of `size`.
    pub async fn inclusion(
        &self,
        index: u64,
        size: u64,
    ) -> Result<pb::InclusionProof, ServerError> {
        let mut st = self.state.lock().await;
        self.catch_up(&mut st.0).await?;
        let bad = |e: tellonce_log::merkle::MerkleError| ServerError::BadRequest(e.to_string());
        if index >= size {
            return Err(ServerError::BadRequest(format!(
                "index {index} is not below tree_size {size}"
            )));
        }
        let path = st.0.inclusion_proof(index, size).map_err(bad)?;
        let root = st.0.root(size).map_err(bad)?;
        let leaf = self
            .log
            .read(index, 1)
            .await?
            .first()
            .map(frame::leaf_of)
            .ok_or_else(|| ServerError::NotFound(format!("no entry {index}")))?;
        Ok(pb::InclusionProof {
            leaf_hash: hex::encode(leaf),
            path: path.iter().map(hex::encode).collect(),
            root_hash: hex::encode(root),
        })
    }

    /// A consistency proof between the trees of `first` and `second` entries.
    pub async fn consistency(
        &self,
        first: u64,
        second: u64,
    ) -> Result<pb::ConsistencyProof, ServerError> {
        let mut st = self.state.lock().await;
        self.catch_up(&mut st.0).await?;
        let bad = |e: tellonce_log::merkle::MerkleError| ServerError::BadRequest(e.to_string());
        if first > second {
            return Err(ServerError::BadRequest(format!(
                "first ({first}) is larger than second ({second})"
            )));
        }
        Ok(pb::ConsistencyProof {
            path: st
                .0
                .consistency_proof(first, second)
                .map_err(bad)?
                .iter()
                .map(hex::encode)
                .collect(),
            first_root: hex::encode(st.0.root(first).map_err(bad)?),
            second_root: hex::encode(st.0.root(second).map_err(bad)?),
        })
    }
}

/// Loads the checkpoint signing key the config names, or the development key of the data
/// folder (made the first time).
pub fn signing_key(config: &crate::Config) -> Result<SigningKey, ServerError> {
    let (path, dev) = match &config.audit.signing_key_file {
        Some(p) => (p.clone(), false),
        None => (config.storage.data_dir.join("audit-signing-key.pem"), true),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => crate::jwt::signing_key_from_pem(&text)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display()))),
        Err(_) if dev => {
            use rand::Rng;
            warn!(file = %path.display(), "no [audit] signing_key_file: using a development checkpoint key");
            let secret: [u8; 32] = rand::rng().random();
            let (private, _) = crate::jwt::keypair_pem(secret);
            std::fs::create_dir_all(&config.storage.data_dir)?;
            std::fs::write(&path, private)?;
            Ok(SigningKey::from_bytes(&secret))
        }
        Err(e) => Err(ServerError::Config(format!(
            "audit.signing_key_file {}: {e}",
            path.display()
        ))),
    }
}

/// The gRPC adapter of [`Audit`].
pub struct AuditGrpc {
    audit: Arc<Audit>,
    query: Query,
    auth: Arc<dyn Authenticator>,
}

impl AuditGrpc {
    /// Serves `audit` to auditors, access-logging through `query`.
    pub fn new(audit: Arc<Audit>, query: Query, auth: Arc<dyn Authenticator>) -> Self {
        AuditGrpc { audit, query, auth }
    }

    /// Authenticates, checks the auditor role, and logs the call.
    async fn admit<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        what: String,
    ) -> Result<Caller, Status> {
        let caller = authenticate(self.auth.as_ref(), req)?;
        let asked = Asked {
            method,
            what,
            reason: "",
        };
        if !caller.has_any(&[Role::Auditor]) {
            return Err(self
                .query
                .refuse_role(&caller, &asked, "the auditor role")
                .await
                .into());
        }
        let reading = Reading {
            standing: "auditor".into(),
            ..Reading::default()
        };
        let now: Timestamp = (self.query.clock)();
        self.query
            .log_access(&caller, &asked, &reading, 0, 0, None, now)
            .await?;
        Ok(caller)
    }
}

type LogStream = Pin<Box<dyn futures::Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditGrpc {
    type ReadLogStream = LogStream;

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<Self::ReadLogStream>, Status> {
        let r = *request.get_ref();
        self.admit(
            &request,
            "ReadLog",
            format!("log from offset {} (limit {})", r.from_offset, r.limit),
        )
        .await?;
        let log = self.audit.log.clone();
        let head = log.head().next_offset;
        let end = match r.limit {
            0 => head,
            n => head.min(r.from_offset.saturating_add(n)),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut at = r.from_offset;
            while at < end {
                let want = ((end - at) as usize).min(1000);
                let entries = match log.read(at, want).await {
                    Ok(e) if !e.is_empty() => e,
                    Ok(_) => break,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                };
                for e in entries {
                    at = e.offset + 1;
                    let item = pb::LogEntry {
                        offset: e.offset,
                        prev_hash: hex::encode(e.prev_hash),
                        hash: hex::encode(e.hash),
                        leaf_hash: hex::encode(frame::leaf_of(&e)),
                        recorded_at_ms: e.recorded_at_ms,
                        source: e.source,
                        id: e.id,
                        body: e.body,
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        let fresh = request.get_ref().fresh;
        self.admit(
            &request,
            "GetCheckpoint",
            format!("checkpoint (fresh: {fresh})"),
        )
        .await?;
        Ok(Response::new(self.audit.checkpoint(fresh).await?))
    }

    async fn prove_inclusion(
        &self,
        request: Request<pb::ProveInclusionRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let r = *request.get_ref();
        self.admit(
            &request,
            "ProveInclusion",
            format!("inclusion of entry {} in {}", r.index, r.tree_size),
        )
        .await?;
        Ok(Response::new(
            self.audit.inclusion(r.index, r.tree_size).await?,
        ))
    }

    async fn prove_consistency(
        &self,
        request: Request<pb::ProveConsistencyRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let r = *request.get_ref();
        self.admit(
            &request,
            "ProveConsistency",
            format!("consistency of {} and {}", r.first, r.second),
        )
        .await?;
        Ok(Response::new(
            self.audit.consistency(r.first, r.second).await?,
        ))
    }
}

/// Checks a checkpoint against a pinned public key (PEM): its message states its own size,
/// root and time, and the signature over it verifies.
pub fn verify_checkpoint(c: &pb::SignedCheckpoint, pinned_pem: &str) -> Result<(), String> {
    let key = crate::jwt::public_key_from_pem(pinned_pem).map_err(|e| e.to_string())?;
    let at = Timestamp::parse(&c.signed_at).map_err(|e| format!("signed_at: {e}"))?;
    if c.message != Checkpoint::message(c.tree_size, &c.root_hash, at) {
        return Err(
            "the signed message does not state this checkpoint's size, root and time".into(),
        );
    }
    let sig: [u8; 64] = hex::decode(&c.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 bytes of hex")?;
    key.verify_strict(
        c.message.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .map_err(|_| "the signature does not verify against the pinned key".to_string())
}

/// Parses a proof's hex hashes.
pub fn parse_hashes(v: &[String]) -> Result<Vec<[u8; 32]>, String> {
    v.iter().map(|h| parse_hash(h)).collect()
}

/// Parses a hex hash.
pub fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{s:?} is not a 32-byte hex hash"))
}
