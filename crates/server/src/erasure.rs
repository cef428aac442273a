//! Erasure and retention: a person's content made unreadable for good by destroying their
//! data keys, while the log, its hash chain and every Merkle proof stay intact.
//!
//! [`Eraser::erase`] holds the key store's sealing lock for writing (so no event is being
//! sealed under a key it destroys), waits until the projection has applied the whole log,
//! asks it for the person's partner records and the offsets of every event about them, and
//! appends a [`tellonce_domain::seal::Erasure`] entry naming the live keys. The projection
//! destroys the keys when it applies that entry (tombstone first, then the key's bytes
//! overwritten, both fsynced) and rewrites the stored timeline lines with the erased marker;
//! a crash in between is finished when the entry is applied again at the next start.
//! [`Eraser::sweep`] applies the retention rule the same way, as `hub:retention`.

use std::sync::Arc;

use rand::Rng;
use tellonce_domain::seal::{Erasure, ErasureReason, RetentionRule};
use tellonce_domain::Record;
use tellonce_projection::KeyStore;
use tracing::{debug, info};

use crate::query::Query;
use crate::ServerError;

/// Who decides erasures made by the retention rule.
pub const RETENTION_DECIDER: &str = "hub:retention";

/// What one erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    /// The erasure entry's id.
    pub erasure_id: String,
    /// Its log offset.
    pub offset: u64,
    /// Data keys destroyed.
    pub keys_destroyed: u64,
    /// Events about the person whose content is erased now (including earlier erasures).
    pub events_erased: u64,
    /// Events about the person still readable: written before payloads were sealed.
    pub events_left: u64,
}

/// Erases content on request and by the retention rule.
#[derive(Clone)]
pub struct Eraser {
    query: Query,
    keys: Option<Arc<KeyStore>>,
}

impl Eraser {
    /// An eraser over `query`'s projection and log, destroying keys in `keys` (`None`: the
    /// hub does not seal payloads, and every erasure is refused).
    pub fn new(query: Query, keys: Option<Arc<KeyStore>>) -> Self {
        Eraser { query, keys }
    }

    /// Erases everything held about `person_id` that is sealed under a live key.
    pub async fn erase(
        &self,
        person_id: &str,
        reason: ErasureReason,
        decided_by: &str,
    ) -> Result<Erased, ServerError> {
        self.erase_checked(person_id, reason, decided_by, None)
            .await
    }

    /// [`Eraser::erase`]; with `retention`, the rule is checked again once the sealing lock
    /// is held and the projection is at the head.
    async fn erase_checked(
        &self,
        person_id: &str,
        reason: ErasureReason,
        decided_by: &str,
        retention: Option<&RetentionRule>,
    ) -> Result<Erased, ServerError> {
        let Some(ks) = &self.keys else {
            return Err(ServerError::FailedPrecondition(
                "this hub does not seal payloads ([privacy] seal_payloads = false), so content cannot be erased by destroying keys".into(),
            ));
        };
        let _writing = ks.sealing().write().await;
        let q = &self.query;
        q.wait_for_head().await?;
        if let (ErasureReason::Retention { .. }, Some(rule)) = (&reason, retention) {
            // The family may have become active since the sweep chose this person.
            if !q
                .projection
                .retention_due_person(person_id, rule, (q.clock)())?
            {
                return Err(ServerError::FailedPrecondition(format!(
                    "person {person_id} is no longer due for erasure under the retention rule"
                )));
            }
        }
        let plan = q.projection.erasure_plan(person_id)?;
        let key_ids = ks.current(&plan.key_names);
        if key_ids.is_empty() {
            return Err(ServerError::FailedPrecondition(format!(
                "person {} has no live data key: their content is already erased ({} of {} events), or was written before payloads were sealed",
                plan.person_id,
                plan.offsets.len() - plan.live,
                plan.offsets.len()
            )));
        }
        let now = (q.clock)();
        let erasure_id = format!("erasure-{:016x}", rand::rng().random::<u64>());
        let keys_destroyed = key_ids.len() as u64;
        let rec = Record::Erasure(Erasure {
            erasure_id: erasure_id.clone(),
            person_id: plan.person_id.clone(),
            key_ids,
            offsets: plan.offsets.clone(),
            reason,
            decided_by: decided_by.into(),
            erased_at: now,
        });
        let (offset, _) = q.append_applied(&rec, now).await?;
        let after = q.projection.erasure_plan(&plan.person_id)?;
        let events_left = after.live as u64;
        info!(
            person = %plan.person_id,
            %erasure_id,
            offset,
            keys_destroyed,
            events_left,
            by = decided_by,
            "content erased"
        );
        Ok(Erased {
            erasure_id,
            offset,
            keys_destroyed,
            events_erased: (after.offsets.len() - after.live) as u64,
            events_left,
        })
    }

    /// Erases the content of every person `rule` says is due now. Persons with nothing
    /// sealed left to erase are passed over.
    pub async fn sweep(&self, rule: &RetentionRule) -> Result<Vec<Erased>, ServerError> {
        if self.keys.is_none() {
            return Ok(Vec::new());
        }
        self.query.wait_for_head().await?;
        let now = (self.query.clock)();
        // The scan reads every family (tens of milliseconds at the demo's size): on the
        // blocking pool, so the runtime's workers go on answering reads meanwhile (on a
        // worker it held up the reads queued behind it for as long).
        let projection = self.query.projection.clone();
        let scan_rule = *rule;
        let due = tokio::task::spawn_blocking(move || projection.retention_due(&scan_rule, now))
            .await
            .map_err(|e| ServerError::Unavailable(format!("the retention scan stopped: {e}")))?;
        let mut done = Vec::new();
        for person in due {
            let reason = ErasureReason::Retention {
                rule: rule.describe(),
            };
            match self
                .erase_checked(&person, reason, RETENTION_DECIDER, Some(rule))
                .await
            {
                Ok(e) => done.push(e),
                Err(ServerError::FailedPrecondition(why)) => {
                    debug!(%person, %why, "retention: nothing sealed left to erase");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
