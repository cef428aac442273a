//! What a log entry holds: the body of every fact the hub records, and its encoding.
//!
//! The log engines store opaque bytes with a `(source, id)` key; this module says what those
//! bytes mean. Bodies are JSON so that an auditor can read the log with ordinary tools and so
//! that new fields can be added without rewriting history. Later kinds of fact (consent, access
//! entries, match decisions) are new variants of [`Record`].

use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use crate::access::{AccessEntry, ConsentGiven, ConsentWithdrawn, SharingDecision};
use crate::event::Event;
use crate::identity::MatchDecision;
use crate::seal::{Erasure, Sealed};
use crate::time::Timestamp;

/// One fact in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// An event published by a partner system.
    PartnerEvent(Event),
    /// An event published by a partner system, its payload sealed under the subjects' data
    /// keys (see [`crate::seal`]).
    SealedEvent(Event<Sealed>),
    /// A person's content erased: their data keys destroyed.
    Erasure(Erasure),
    /// A person's decision that two subject records are, or are not, the same person.
    MatchDecision(MatchDecision),
    /// A family's consent to share, recorded by a practitioner or a partner system.
    ConsentGiven(ConsentGiven),
    /// A consent withdrawn.
    ConsentWithdrawn(ConsentWithdrawn),
    /// A practitioner's decision to share or not to share.
    SharingDecision(SharingDecision),
    /// A read of the hub: who asked for what, and what they were shown or refused.
    Access(AccessEntry),
    /// A signed checkpoint of the log's Merkle tree.
    Checkpoint(Checkpoint),
}

/// A signed statement of the log's Merkle tree: its size and root at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Entries covered (the first `tree_size`).
    pub tree_size: u64,
    /// Hex Merkle root of those entries.
    pub root_hash: String,
    /// When it was signed.
    pub signed_at: Timestamp,
    /// Hex of the first 8 bytes of SHA-256 of the signing public key.
    pub key_id: String,
    /// Hex Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes signed.
    pub fn message(tree_size: u64, root_hash: &str, signed_at: Timestamp) -> String {
        format!(
            "tellonce checkpoint v1\n{tree_size}\n{root_hash}\n{}\n",
            signed_at.0
        )
    }
}

/// The source under which the hub records its own entries (decisions, consents, accesses).
pub const HUB_SOURCE: &str = "hub";

/// A log body that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable log record: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl Record {
    /// The idempotency key of this record: who published it and their id for it. The hub's
    /// own records are kept apart by a prefix per kind (`consent/…`, `access/…`).
    pub fn key(&self) -> (&str, Cow<'_, str>) {
        match self {
            Record::PartnerEvent(e) => (&e.source, Cow::Borrowed(&e.event_id)),
            Record::SealedEvent(e) => (&e.source, Cow::Borrowed(&e.event_id)),
            Record::Erasure(x) => (HUB_SOURCE, format!("erasure/{}", x.erasure_id).into()),
            Record::MatchDecision(d) => (HUB_SOURCE, Cow::Borrowed(&d.decision_id)),
            Record::ConsentGiven(c) => (HUB_SOURCE, format!("consent/{}", c.consent_id).into()),
            Record::ConsentWithdrawn(w) => {
                (HUB_SOURCE, format!("withdrawal/{}", w.withdrawal_id).into())
            }
            Record::SharingDecision(d) => (HUB_SOURCE, format!("sharing/{}", d.decision_id).into()),
            Record::Access(a) => (HUB_SOURCE, format!("access/{}", a.access_id).into()),
            Record::Checkpoint(c) => (
                HUB_SOURCE,
                format!("checkpoint/{}/{}", c.tree_size, c.signed_at.0).into(),
            ),
        }
    }

    /// Encodes the record as the bytes stored in the log.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain data types to JSON cannot fail: there are no maps with
        // non-string keys and no custom serialisers that error.
        let mut out = Vec::with_capacity(1536);
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Decodes a record from the bytes stored in the log.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}
