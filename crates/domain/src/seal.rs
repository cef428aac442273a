//! Sealing event payloads under the subjects' data keys, so that erasure can destroy content
//! without rewriting the log.
//!
//! Every subject record (a person as one partner knows them) has a 32-byte data key, kept in a
//! key store apart from the log. An event's payload is encrypted with AES-256-GCM (hardware
//! accelerated; about a quarter of the cost of ChaCha20-Poly1305 here for payload-sized
//! messages) under a key derived from the keys of *all* its subjects, with the event's envelope
//! (source, id, kind, time) as associated data, so a ciphertext cannot be moved to another
//! event. The log's checksum, hash chain and Merkle leaf cover the ciphertext; destroying any
//! one subject's key makes the payload unreadable for good while every proof still verifies.
//!
//! Pure: keys and nonces come in as arguments (the server draws them from the OS).

use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Event, Payload};
use crate::time::{Date, Timestamp};

/// A data key.
pub type DataKey = [u8; 32];

/// A payload sealed under its subjects' data keys: what the log keeps instead of [`Payload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The payload kind, in the clear (access rules and timelines need it).
    pub kind: String,
    /// Ids of the data keys it is sealed under, one per distinct subject record.
    pub keys: Vec<String>,
    /// Base64 of the 12-byte nonce.
    pub nonce: String,
    /// Base64 of the AES-256-GCM ciphertext of the payload's JSON, tag included.
    pub ciphertext: String,
}

/// Why a sealed payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The number of keys given does not match the key ids.
    #[error("expected {expected} data keys, got {got}")]
    KeyCount {
        /// Key ids in the sealed payload.
        expected: usize,
        /// Keys given.
        got: usize,
    },
    /// Base64 or nonce length wrong.
    #[error("sealed payload is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: a wrong key, or altered ciphertext or envelope.
    #[error("sealed payload does not authenticate (wrong key, or altered content)")]
    Authentication,
    /// The decrypted bytes are not a payload.
    #[error("opened payload does not decode: {0}")]
    Decode(String),
}

/// The key-store name of each subject's record, in subject order (repeats kept): the
/// partner's local id where there is one, otherwise the event itself and the subject's place.
pub fn key_names<P>(event: &Event<P>) -> Vec<String> {
    event
        .subjects
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.local_id {
            Some(l) => format!("{}/{l}", event.source),
            None => format!("{}@{}#{i}", event.source, event.event_id),
        })
        .collect()
}

/// The key an event's payload is sealed under, derived from its subjects' data keys: what
/// [`open_keyed`] gives, so that text derived from the event is sealed without deriving the key
/// again ([`seal_text_keyed`]).
#[derive(Clone)]
pub struct EventKey(DataKey);

impl EventKey {
    /// The key of an event sealed under `keys` (in the order of its key ids): SHA-256 over a
    /// label and every subject key, so it can be derived only while all of them exist.
    pub fn of(keys: &[DataKey]) -> EventKey {
        let mut h = Sha256::new();
        h.update(b"tellonce event key v1\0");
        h.update((keys.len() as u64).to_be_bytes());
        for k in keys {
            h.update(k);
        }
        EventKey(h.finalize().into())
    }
}

impl std::fmt::Debug for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventKey(..)")
    }
}

/// The associated data: the envelope fields a ciphertext is bound to, as
/// `tellonce sealed payload v1\0{source}\0{event_id}\0{kind}\0{milliseconds}` (put
/// together piece by piece: formatting it was about a tenth of opening a payload).
fn aad(source: &str, event_id: &str, kind: &str, at: Timestamp) -> Vec<u8> {
    use std::io::Write as _;
    const LABEL: &[u8] = b"tellonce sealed payload v1\0";
    let mut out = Vec::with_capacity(LABEL.len() + source.len() + event_id.len() + kind.len() + 24);
    out.extend_from_slice(LABEL);
    for part in [source, event_id, kind] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", at.0);
    out
}

/// Seals `event`'s payload under `keys` (id and key, one per distinct subject record) with
/// `nonce`, which must never repeat for the same keys.
pub fn seal(event: Event, keys: &[(String, DataKey)], nonce: [u8; 12]) -> Event<Sealed> {
    let kind = event.payload.kind().to_string();
    // Serialising a payload to JSON cannot fail (plain data).
    let plain = serde_json::to_vec(&event.payload).unwrap_or_default();
    let raw: Vec<DataKey> = keys.iter().map(|(_, k)| *k).collect();
    let cipher = Aes256Gcm::new(&EventKey::of(&raw).0.into());
    let aad = aad(&event.source, &event.event_id, &kind, event.occurred_at);
    // Encryption into a Vec fails only for messages beyond the cipher's 256 GiB limit.
    let ct = cipher
        .encrypt(
            &nonce.into(),
            AeadPayload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    let sealed = Sealed {
        kind,
        keys: keys.iter().map(|(id, _)| id.clone()).collect(),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(ct),
    };
    event.with_payload(sealed)
}

/// Opens a sealed event with its data keys (in the order of `payload.keys`).
pub fn open(event: &Event<Sealed>, keys: &[DataKey]) -> Result<Payload, OpenError> {
    open_keyed(event, keys).map(|(payload, _)| payload)
}

/// [`open`], and the event's key.
pub fn open_keyed(
    event: &Event<Sealed>,
    keys: &[DataKey],
) -> Result<(Payload, EventKey), OpenError> {
    let s = &event.payload;
    if keys.len() != s.keys.len() {
        return Err(OpenError::KeyCount {
            expected: s.keys.len(),
            got: keys.len(),
        });
    }
    let nonce: [u8; 12] = B64
        .decode(&s.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or(OpenError::Malformed("nonce"))?;
    let ct = B64
        .decode(&s.ciphertext)
        .map_err(|_| OpenError::Malformed("ciphertext"))?;
    let key = EventKey::of(keys);
    let cipher = Aes256Gcm::new(&key.0.into());
    let aad = aad(&event.source, &event.event_id, &s.kind, event.occurred_at);
    let plain = cipher
        .decrypt(
            &nonce.into(),
            AeadPayload {
                msg: &ct,
                aad: &aad,
            },
        )
        .map_err(|_| OpenError::Authentication)?;
    // Checked as UTF-8 once, whole, rather than string by string.
    let plain = String::from_utf8(plain).map_err(|e| OpenError::Decode(e.to_string()))?;
    let payload: Payload =
        serde_json::from_str(&plain).map_err(|e| OpenError::Decode(e.to_string()))?;
    if payload.kind() != s.kind {
        return Err(OpenError::Decode(format!(
            "sealed as {} but holds {}",
            s.kind,
            payload.kind()
        )));
    }
    Ok((payload, key))
}

/// The key for derived text of an event (a projection's summary line), apart from the
/// payload's key so their nonces never meet.
fn text_key(key: &EventKey) -> DataKey {
    let mut h = Sha256::new();
    h.update(b"tellonce derived text key v1\0");
    h.update(key.0);
    h.finalize().into()
}

fn text_nonce(offset: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&offset.to_be_bytes());
    n
}

/// Seals text derived from the event at log `offset` (e.g. its timeline summary) under the
/// event's data keys, so a projection's store holds no readable content once a key is
/// destroyed. Deterministic: the same text at the same offset gives the same ciphertext.
pub fn seal_text(text: &str, keys: &[DataKey], offset: u64) -> String {
    seal_text_keyed(text, &EventKey::of(keys), offset)
}

/// [`seal_text`] with the event's key already derived.
pub fn seal_text_keyed(text: &str, key: &EventKey, offset: u64) -> String {
    let cipher = Aes256Gcm::new(&text_key(key).into());
    let ct = cipher
        .encrypt(
            &text_nonce(offset).into(),
            AeadPayload {
                msg: text.as_bytes(),
                aad: &offset.to_be_bytes(),
            },
        )
        .unwrap_or_default();
    B64.encode(ct)
}

/// Opens text sealed by [`seal_text`].
pub fn open_text(sealed: &str, keys: &[DataKey], offset: u64) -> Result<String, OpenError> {
    let ct = B64
        .decode(sealed)
        .map_err(|_| OpenError::Malformed("sealed text"))?;
    let cipher = Aes256Gcm::new(&text_key(&EventKey::of(keys)).into());
    let plain = cipher
        .decrypt(
            &text_nonce(offset).into(),
            AeadPayload {
                msg: &ct,
                aad: &offset.to_be_bytes(),
            },
        )
        .map_err(|_| OpenError::Authentication)?;
    String::from_utf8(plain).map_err(|e| OpenError::Decode(e.to_string()))
}

/// Why content was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "basis", deny_unknown_fields)]
pub enum ErasureReason {
    /// A right-to-erasure request the data protection officer granted.
    Request {
        /// The request's reference (e.g. the DPO's case number).
        reference: String,
        /// Why it was granted.
        note: String,
    },
    /// The retention period ran out.
    Retention {
        /// The rule, in words.
        rule: String,
    },
}

impl ErasureReason {
    /// A short label for timelines.
    pub fn label(&self) -> &'static str {
        match self {
            ErasureReason::Request { .. } => "right to erasure",
            ErasureReason::Retention { .. } => "retention period ended",
        }
    }
}

/// What a timeline shows instead of erased content.
pub fn erased_marker(label: &str, erased_at: Timestamp) -> String {
    format!("[erased on {}: {label}]", Date::of(erased_at))
}

/// The erasure of a person's content: their data keys destroyed, recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    /// Unique id.
    pub erasure_id: String,
    /// The person whose content is erased.
    pub person_id: String,
    /// The data keys destroyed.
    pub key_ids: Vec<String>,
    /// The log offsets of the events whose payloads become unreadable.
    pub offsets: Vec<u64>,
    /// Why.
    pub reason: ErasureReason,
    /// Who decided (a user id, or `hub:retention`).
    pub decided_by: String,
    /// When.
    pub erased_at: Timestamp,
}

/// A retention rule: keep a person's content until both the family's last activity is
/// `after_last_activity_years` behind and the person is `until_age_years` old (when their
/// birth date is known), and never while any service is involved with the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRule {
    /// Years after the family's last event (normally its case closure).
    pub after_last_activity_years: u32,
    /// The person's age until which content is kept.
    pub until_age_years: u32,
}

impl RetentionRule {
    /// The rule in words (recorded in erasure entries).
    pub fn describe(&self) -> String {
        format!(
            "{} years after the family's last activity with no service involved, and not before the {}th birthday",
            self.after_last_activity_years, self.until_age_years
        )
    }

    /// Whether a person's content is due for erasure at `now`.
    pub fn due(
        &self,
        date_of_birth: Option<Date>,
        last_activity: Timestamp,
        involved: bool,
        now: Timestamp,
    ) -> bool {
        if involved {
            return false;
        }
        let today = Date::of(now);
        let years = |from: Date| i64::from(from.age_on(today));
        let quiet = years(Date::of(last_activity)) >= i64::from(self.after_last_activity_years);
        let old_enough = date_of_birth.is_none_or(|d| years(d) >= i64::from(self.until_age_years));
        quiet && old_enough
    }
}

#[cfg(test)]
mod tests;
