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
use crate::time::{Parsed, Timestamp};

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
        match Self::decode_tag_first(bytes) {
            Some(record) => Ok(record),
            None => Ok(serde_json::from_slice(bytes)?),
        }
    }

    /// The fast way to read what [`Record::encode`] wrote: the tag comes first
    /// (`{"record":"NAME",` and then the variant's fields), so the rest of the object is read
    /// straight into the variant's struct, without the buffering serde needs for an internally
    /// tagged enum whose tag might come anywhere (it halved decoding speed), and without
    /// copying the body. `None` for any other shape or any error: the general way then
    /// decides, so both accept the same bodies (every variant denies unknown fields, so a
    /// second tag is refused either way).
    fn decode_tag_first(bytes: &[u8]) -> Option<Self> {
        // Checked as UTF-8 once, whole, rather than string by string as a byte slice is (a
        // body that is not UTF-8 is not JSON either: the general way refuses it).
        let text = std::str::from_utf8(bytes).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let record = serde::Deserializer::deserialize_map(&mut de, TagFirst).ok()??;
        de.end().ok()?;
        Some(record)
    }
}

/// The kinds of [`Record`], by their tag.
#[derive(Clone, Copy)]
enum Kind {
    PartnerEvent,
    SealedEvent,
    Erasure,
    MatchDecision,
    ConsentGiven,
    ConsentWithdrawn,
    SharingDecision,
    Access,
    Checkpoint,
}

impl Kind {
    fn of_tag(tag: &str) -> Result<Kind, &'static str> {
        Ok(match tag {
            "partner_event" => Kind::PartnerEvent,
            "sealed_event" => Kind::SealedEvent,
            "erasure" => Kind::Erasure,
            "match_decision" => Kind::MatchDecision,
            "consent_given" => Kind::ConsentGiven,
            "consent_withdrawn" => Kind::ConsentWithdrawn,
            "sharing_decision" => Kind::SharingDecision,
            "access" => Kind::Access,
            "checkpoint" => Kind::Checkpoint,
            _ => return Err("unknown record tag"),
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Parsed(Kind::of_tag, "a record tag"))
    }
}

/// Whether a map key is `record`, read without allocating.
struct IsTag(bool);

impl<'de> Deserialize<'de> for IsTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let is_tag = |v: &str| Ok::<_, std::convert::Infallible>(IsTag(v == "record"));
        d.deserialize_str(Parsed(is_tag, "a field name"))
    }
}

/// Reads an object whose first field is the tag: the tag, then the rest of the same object
/// as the variant's struct. `None` if the first field is not the tag.
struct TagFirst;

impl<'de> serde::de::Visitor<'de> for TagFirst {
    type Value = Option<Record>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a record")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match map.next_key::<IsTag>()? {
            Some(IsTag(true)) => {}
            _ => return Ok(None),
        }
        let kind: Kind = map.next_value()?;
        let rest = serde::de::value::MapAccessDeserializer::new(map);
        Ok(Some(match kind {
            Kind::PartnerEvent => Record::PartnerEvent(Deserialize::deserialize(rest)?),
            Kind::SealedEvent => Record::SealedEvent(Deserialize::deserialize(rest)?),
            Kind::Erasure => Record::Erasure(Deserialize::deserialize(rest)?),
            Kind::MatchDecision => Record::MatchDecision(Deserialize::deserialize(rest)?),
            Kind::ConsentGiven => Record::ConsentGiven(Deserialize::deserialize(rest)?),
            Kind::ConsentWithdrawn => Record::ConsentWithdrawn(Deserialize::deserialize(rest)?),
            Kind::SharingDecision => Record::SharingDecision(Deserialize::deserialize(rest)?),
            Kind::Access => Record::Access(Deserialize::deserialize(rest)?),
            Kind::Checkpoint => Record::Checkpoint(Deserialize::deserialize(rest)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sample, seal};

    fn records() -> Vec<Record> {
        let at = Timestamp(1_700_000_000_000);
        let event = sample::ppn("police", "ppn-1", 1, at);
        let names = seal::key_names(&event);
        let keys: Vec<(String, seal::DataKey)> = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, [i as u8; 32]))
            .collect();
        vec![
            Record::PartnerEvent(event.clone()),
            Record::SealedEvent(seal::seal(event, &keys, [7; 12])),
            Record::Checkpoint(Checkpoint {
                tree_size: 3,
                root_hash: "ab".into(),
                signed_at: at,
                key_id: "cd".into(),
                signature: "ef".into(),
            }),
        ]
    }

    #[test]
    fn the_fast_way_reads_what_encode_wrote_as_the_general_way_does() {
        for r in records() {
            let bytes = r.encode();
            assert_eq!(Record::decode_tag_first(&bytes).as_ref(), Some(&r));
            let general: Record = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(general, r);
            assert_eq!(Record::decode(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn a_tag_anywhere_else_is_read_the_general_way() {
        let body = br#"{"tree_size":3,"root_hash":"ab","record":"checkpoint","signed_at":"2023-11-14T22:13:20Z","key_id":"cd","signature":"ef"}"#;
        assert_eq!(Record::decode_tag_first(body), None);
        assert_eq!(Record::decode(body).unwrap(), records()[2]);
    }

    #[test]
    fn both_ways_refuse_the_same_bodies() {
        let bad: [&[u8]; 5] = [
            br#"{"record":"checkpoint","record":"checkpoint","tree_size":3,"root_hash":"ab","signed_at":"2023-11-14T22:13:20Z","key_id":"cd","signature":"ef"}"#,
            br#"{"record":"no_such_record","tree_size":3}"#,
            br#"{"record":"checkpoint","tree_size":"three"}"#,
            br#"{"record":"checkpoint","#,
            // Not UTF-8 inside a string (the fast way checks the whole body first).
            b"{\"record\":\"checkpoint\",\"tree_size\":3,\"root_hash\":\"a\xff\",\"signed_at\":\"2023-11-14T22:13:20Z\",\"key_id\":\"cd\",\"signature\":\"ef\"}",
        ];
        for body in bad {
            assert_eq!(Record::decode_tag_first(body), None);
            assert!(Record::decode(body).is_err());
        }
    }
}
