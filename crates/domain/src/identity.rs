//! Identity linking: partner records of one person joined into one person, and people joined by
//! stated relationships into one family.
//!
//! A *subject record* is a person as one partner knows them: keyed by `(source, local_id)`, so
//! every event a partner publishes about its own record lands on the same record. Records are
//! linked into persons:
//! - deterministically, by a shared NHS number or UPN, unless the two disagree on both date of
//!   birth and given name: then they are kept apart and a [`Conflict`] is flagged for review;
//! - by score, for records without a shared key: agreement on given name (exact, nickname,
//!   typo, first/middle swap), family name (exact, typo, hyphenated part, changed), date of
//!   birth (exact, day/month swapped, one digit off), sex and postcode, compared against every
//!   record of a candidate person found by blocking (date of birth; surname sound + initial;
//!   given-name sound + birth year), so the cost per record stays near constant. A date of birth
//!   that agrees is required for any link: names alone never link. At or above
//!   [`LINK_THRESHOLD`] the records link; in `[REVIEW_THRESHOLD, LINK_THRESHOLD)` a
//!   [`Candidate`] goes to a person to confirm or reject;
//! - by decision: a [`MatchDecision`] in the log confirms or rejects a pair. A rejected pair is
//!   never linked again, and if it was linked the person is split.
//!
//! Persons never join across two different NHS numbers. Person and family ids are derived from
//! the earliest record of the person or family (a hash of its key), so replaying the same log
//! yields the same ids. [`Linker`] is the whole state; it is a plain value that serializes, so
//! the projection can snapshot it.

use std::borrow::Cow;
use std::collections::BTreeSet;

// A fast hash (seeded per process, like std's): the linker looks up keys several times per
// event, and SipHash was a visible part of a replay's profile.
use foldhash::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Event, Relationship, RelationshipKind, Sex, SubjectFields};
use crate::names::{self, DateAgreement};
use crate::time::{Date, Timestamp};
use card::{Card, Faces, Given, Seen};
use chunked::Chunked;
use inline::Key;

/// At or above this score two records are linked without review.
pub const LINK_THRESHOLD: f64 = 13.0;
/// From this score up to [`LINK_THRESHOLD`] a pair goes to review as a match candidate.
pub const REVIEW_THRESHOLD: f64 = 9.0;
/// Largest block scanned for one record (protects the cost against a pathological block).
const MAX_BLOCK_SCAN: usize = 64;
/// Most match candidates one record opens (the best-scoring persons).
const MAX_CANDIDATES_PER_RECORD: usize = 3;

/// A record in a block: its index, and its date of birth (what a scan reads first), kept in
/// the block's list so that scanning a block touches no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Blocked {
    record: u32,
    dob: Date,
}

/// A person as one partner knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectRecord {
    /// `source/local_id`, or `@offset.index` for a subject without a local id.
    pub key: String,
    /// The partner.
    pub source: String,
    /// The offset of the first event that named this record.
    pub first_offset: u64,
    /// NHS number, if the partner gave one.
    pub nhs_number: Option<String>,
    /// UPN, if the partner gave one.
    pub upn: Option<String>,
    /// Given name, normalised.
    pub given: String,
    /// Middle names, normalised.
    pub middle: String,
    /// Family name, normalised.
    pub family: String,
    /// The name as the partner wrote it.
    pub display_name: String,
    /// Date of birth.
    pub dob: Option<Date>,
    /// Recorded sex.
    pub sex: Option<Sex>,
    /// Postcodes seen for this record, oldest first.
    pub postcodes: Vec<String>,
}

/// How one field compared, and what it added to the score. The words are the scorer's own
/// (borrowed, not copied: every score and every scored link held ten small strings on the
/// heap), or owned where read back from elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldScore {
    /// The field: `given_name`, `family_name`, `date_of_birth`, `sex`, `postcode`.
    pub field: Cow<'static, str>,
    /// How it compared, e.g. `exact`, `nickname`, `typo`, `swapped`, `different`.
    pub agreement: Cow<'static, str>,
    /// The weight added.
    pub weight: f64,
}

/// The score of a record against a person, with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Sum of the field weights.
    pub total: f64,
    /// Each field's contribution.
    pub fields: Vec<FieldScore>,
    /// Whether the date of birth and given name agree enough for any link.
    pub eligible: bool,
}

/// Why two records are one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum LinkWhy {
    /// Same NHS number.
    SameNhsNumber,
    /// Same UPN.
    SameUpn,
    /// Scored above the link threshold.
    Scored {
        /// The score and its explanation.
        score: Score,
    },
    /// Confirmed by a person.
    Confirmed {
        /// Who decided.
        decided_by: String,
        /// Why.
        reason: String,
        /// When.
        decided_at: Timestamp,
    },
}

/// A link between two records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// One record (index).
    pub a: u32,
    /// The other record (index).
    pub b: u32,
    /// Why.
    pub why: LinkWhy,
    /// The offset of the log entry that made it.
    pub offset: u64,
    /// False once a decision removed it.
    pub active: bool,
}

/// The state of a match candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CandidateStatus {
    /// Waiting for a person.
    Open,
    /// Confirmed: the records are one person.
    Confirmed {
        /// Who decided.
        decided_by: String,
    },
    /// Rejected: the records are different people, for good.
    Rejected {
        /// Who decided.
        decided_by: String,
    },
}

/// A possible match for a person to confirm or reject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `m-N`, stable under replay.
    pub id: String,
    /// The new record.
    pub a: u32,
    /// A record of the person it may be.
    pub b: u32,
    /// The score and explanation.
    pub score: Score,
    /// Open, confirmed or rejected.
    pub status: CandidateStatus,
}

/// Two records that share an identifier but cannot be the same person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// One record.
    pub a: u32,
    /// The other.
    pub b: u32,
    /// What they share or disagree on.
    pub detail: String,
    /// The offset where it was found.
    pub offset: u64,
}

/// A person's decision on a pair of records (a log entry, so replay reproduces it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDecision {
    /// The decision's id (the log key, with source `hub`).
    pub decision_id: String,
    /// The candidate decided, if the decision answers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<String>,
    /// One record key.
    pub record_a: String,
    /// The other record key.
    pub record_b: String,
    /// Same person, or not.
    pub decision: Decision,
    /// Who decided (user id).
    pub decided_by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub decided_at: Timestamp,
}

/// Confirm or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The records are the same person.
    Confirm,
    /// The records are different people.
    Reject,
}

/// Why a decision could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// A record key is not known.
    #[error("no subject record {0:?}")]
    UnknownRecord(String),
    /// A candidate id is not known.
    #[error("no match candidate {0:?}")]
    UnknownCandidate(String),
    /// Both keys name the same record.
    #[error("a record cannot be matched with itself")]
    SameRecord,
}

/// A record as the table of keys holds it: its number, and what later events about it are
/// compared with first, in the same slot. Most events are about known records that they change
/// nothing of; kept in a list by record of their own, the [`Seen`]s were a second cache miss per
/// subject (about 7% of applying, profiled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// The record's number.
    record: u32,
    /// Its newest postcode and its identifiers.
    seen: Seen,
}

/// The linking state: records, persons, families, candidates and conflicts. Serialized
/// without the indexes worked out from the records alone (by key, by short hash, the blocks),
/// which deserializing rebuilds in record order, as the records made them, and without what
/// its lists say (each record's person, family and links, the relationships' pairs), which it
/// works out again from them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Linker {
    #[serde(
        serialize_with = "rows::ser_records",
        deserialize_with = "rows::de_records"
    )]
    records: Chunked<SubjectRecord>,
    /// Records by key, each with what later events about it are compared with first.
    #[serde(skip)]
    by_key: HashMap<Key, Held>,
    #[serde(skip)]
    by_hash: HashMap<u64, u32>,
    /// The short hash of each record's key (ids are asked for on every query).
    #[serde(skip)]
    hashes: Vec<u64>,
    by_nhs: HashMap<String, u32>,
    by_upn: HashMap<String, u32>,
    /// Records by block key, each list in record order.
    #[serde(skip)]
    blocks: HashMap<u64, Vec<Blocked>>,
    /// Each record's [`Card`], in record order.
    #[serde(skip)]
    cards: Chunked<Card>,
    /// Each record's person (its members say it: worked out again on load).
    #[serde(skip)]
    person: Vec<u32>,
    members: HashMap<u32, Vec<u32>>,
    /// Each person's distinct cards ([`Faces`]), by person (empty for a record that is no
    /// person's first).
    #[serde(skip)]
    faces: Chunked<Faces>,
    /// Each record's family (its members say it: worked out again on load).
    #[serde(skip)]
    family: Vec<u32>,
    family_members: HashMap<u32, Vec<u32>>,
    #[serde(
        serialize_with = "rows::ser_links",
        deserialize_with = "rows::de_links"
    )]
    links: Vec<Link>,
    /// Each record's links, by their place in `links` (worked out again on load).
    #[serde(skip)]
    links_of: Vec<Vec<u32>>,
    rels: Vec<(u32, u32, RelationshipKind)>,
    /// The record pairs of `rels` ([`pair`]; worked out again on load).
    #[serde(skip)]
    rel_seen: HashSet<u64>,
    cannot: HashMap<u32, Vec<u32>>,
    candidates: Vec<Candidate>,
    candidate_pairs: HashMap<u64, u32>,
    conflicts: Vec<Conflict>,
    conflict_pairs: HashSet<u64>,
    /// Families whose persons or members changed since [`Linker::take_changed_families`]
    /// last drained them (not state: a replay or a snapshot does not need it).
    #[serde(skip)]
    changed: ChangedFamilies,
}

impl Serialize for Linker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Linker::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Linker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut l = Linker::deserialize(d)?;
        // First, so that member lists naming records that are not there are refused before
        // the faces are worked out from them.
        l.derive_from_lists().map_err(serde::de::Error::custom)?;
        l.index_records();
        Ok(l)
    }
}

/// Which families changed since they were last asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChangedFamilies {
    /// These families (by index; a merged-away family is listed with the one it joined).
    Some(Vec<u32>),
    /// Any family may have changed (persons and families were recomputed).
    #[default]
    All,
}

fn pair(a: u32, b: u32) -> u64 {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    (u64::from(x) << 32) | u64::from(y)
}

fn block_key(tag: u8, parts: &[&[u8]]) -> u64 {
    // FNV-1a: stable across runs and platforms (unlike the std hasher), cheap.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(tag);
    for p in parts {
        for &b in *p {
            eat(b);
        }
        eat(0xff);
    }
    h
}

/// A record's short hash: the first eight bytes of the SHA-256 of its key, which public ids
/// show as 16 lowercase hex digits ([`id_of`]).
fn short_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// The public id of the person or family (`kind`: `p` or `f`) whose first record has short
/// hash `hash`: the kind, a dash and the hash in 16 lowercase hex digits.
fn id_of(kind: char, hash: u64) -> String {
    format!("{kind}-{hash:016x}")
}

/// The short hash that `hex` writes, if it is written as ids write one ([`id_of`]): exactly
/// 16 lowercase hex digits, nothing else.
fn parse_short_hash(hex: &str) -> Option<u64> {
    let digits = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    digits.then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

fn date_bytes(d: Date) -> [u8; 4] {
    let y = d.year.to_be_bytes();
    [y[2], y[3], d.month, d.day]
}

fn record_from(source: &str, key: String, offset: u64, s: impl SubjectFields) -> SubjectRecord {
    let given = s.given_name().map(names::normalise).unwrap_or_default();
    let middle = s.middle_names().map(names::normalise).unwrap_or_default();
    let family = s.family_name().map(names::normalise).unwrap_or_default();
    let display_name = [s.given_name(), s.middle_names(), s.family_name()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    SubjectRecord {
        key,
        source: source.to_string(),
        first_offset: offset,
        nhs_number: s.nhs_number().map(String::from),
        upn: s.upn().map(String::from),
        given,
        middle,
        family,
        display_name,
        dob: s.date_of_birth(),
        sex: s.sex(),
        postcodes: s
            .postcode()
            .filter(|p| !p.is_empty())
            .map(String::from)
            .into_iter()
            .collect(),
    }
}

fn first_word(s: &str) -> &str {
    s.split(' ').next().unwrap_or("")
}

fn given_agreement(a: &SubjectRecord, b: &SubjectRecord) -> (&'static str, f64) {
    given_parts_agreement(Given::of(a), Given::of(b), Purpose::Link)
}

/// What a score is for: linking records, or a person's search by name and date of birth,
/// which also counts a letter wrong in a three-letter given name ([`names::is_short_typo`]):
/// it lists every match with its score for the person to choose from, where linking would
/// join two people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Link,
    Search,
}

/// [`given_agreement`] of two records from their cards (`ac`, `bc`), reading a record only
/// when its card could not keep a name.
fn given_card_agreement(
    (ac, a): (&Card, &SubjectRecord),
    (bc, b): (&Card, &SubjectRecord),
    purpose: Purpose,
) -> (&'static str, f64) {
    given_parts_agreement(
        ac.given().unwrap_or_else(|| Given::of(a)),
        bc.given().unwrap_or_else(|| Given::of(b)),
        purpose,
    )
}

/// How two given names agree, from the parts of the records that decide it.
fn given_parts_agreement(a: Given<'_>, b: Given<'_>, purpose: Purpose) -> (&'static str, f64) {
    if a.name.is_empty() || b.name.is_empty() {
        return ("missing", 0.0);
    }
    if a.name == b.name {
        return ("exact", 4.0);
    }
    // Different names in a common group (`names::are_nicknames`).
    if a.nicknames & b.nicknames != 0 {
        return ("nickname", 3.0);
    }
    if names::is_typo(a.name, b.name)
        || (purpose == Purpose::Search && names::is_short_typo(a.name, b.name))
    {
        return ("typo", 3.0);
    }
    // The names are not empty, so an empty middle name never matches.
    let a_is_bs_middle = a.name == b.middle_first;
    let b_is_as_middle = a.middle_first == b.name;
    if a_is_bs_middle && b_is_as_middle {
        return ("first_middle_swap", 3.0);
    }
    if a_is_bs_middle || b_is_as_middle {
        // One record's given name is the other's middle name: the same person known by their
        // middle name, or a twin whose middle name is their sibling's name. Weak evidence.
        return ("given_is_middle", 1.0);
    }
    let (ca, cb) = (a.name.chars().count(), b.name.chars().count());
    if (ca == 1 || cb == 1) && a.name.chars().next() == b.name.chars().next() {
        return ("initial", 1.0);
    }
    ("different", -5.0)
}

fn family_agreement(a: &SubjectRecord, b: &SubjectRecord) -> (&'static str, f64) {
    if a.family.is_empty() || b.family.is_empty() {
        return ("missing", 0.0);
    }
    if a.family == b.family {
        return ("exact", 3.0);
    }
    if names::is_typo(&a.family, &b.family) {
        return ("typo", 2.0);
    }
    if names::surname_parts(&a.family).any(|p| names::surname_parts(&b.family).any(|q| p == q)) {
        return ("hyphenated_part", 2.0);
    }
    // Surnames change (marriage, a step-parent's name): weak evidence against.
    ("different", -1.0)
}

/// Whether two dates of birth agree enough for a link.
fn dates_agree(a: Date, b: Date) -> bool {
    dates_agreement(Some(a), Some(b)).1 > 0.0
}

fn dob_agreement(a: &SubjectRecord, b: &SubjectRecord) -> (&'static str, f64) {
    dates_agreement(a.dob, b.dob)
}

/// How two dates of birth agree.
fn dates_agreement(a: Option<Date>, b: Option<Date>) -> (&'static str, f64) {
    match (a, b) {
        (Some(x), Some(y)) => match names::compare_dates(x, y) {
            DateAgreement::Exact => ("exact", 5.0),
            DateAgreement::Swapped => ("day_month_swapped", 3.0),
            DateAgreement::OneDigit => ("one_digit_off", 2.5),
            DateAgreement::Different => ("different", -10.0),
        },
        _ => ("missing", 0.0),
    }
}

fn sex_agreement(a: &SubjectRecord, b: &SubjectRecord) -> (&'static str, f64) {
    match (a.sex, b.sex) {
        (Some(x), Some(y)) if x == y && x != Sex::Unknown => ("same", 0.5),
        (Some(x), Some(y)) if x != Sex::Unknown && y != Sex::Unknown && x != y => {
            ("different", -3.0)
        }
        _ => ("missing", 0.0),
    }
}

fn postcode_agreement(a: &SubjectRecord, b: &SubjectRecord) -> (&'static str, f64) {
    if a.postcodes.is_empty() || b.postcodes.is_empty() {
        return ("missing", 0.0);
    }
    if a.postcodes.iter().any(|p| b.postcodes.contains(p)) {
        return ("exact", 3.0);
    }
    // Families move, so a different postcode is only weak evidence against.
    ("different", -1.5)
}

type Cmp = fn(&SubjectRecord, &SubjectRecord) -> (&'static str, f64);

/// Every word a score's explanation uses, for a field or an agreement: read back from a
/// snapshot, they are borrowed from here rather than kept as copies ([`FieldScore`]). A
/// snapshot writes each as its place in this list, so add words at the end only: never
/// reorder or remove one (a test pins the list).
pub(crate) const SCORE_WORDS: [&str; 17] = [
    "given_name",
    "family_name",
    "date_of_birth",
    "sex",
    "postcode",
    "day_month_swapped",
    "different",
    "exact",
    "first_middle_swap",
    "given_is_middle",
    "hyphenated_part",
    "initial",
    "missing",
    "nickname",
    "one_digit_off",
    "same",
    "typo",
];

/// The fields a score compares, in the order its explanation lists them.
const FIELDS: [(&str, Cmp); 5] = [
    ("given_name", given_agreement),
    ("family_name", family_agreement),
    ("date_of_birth", dob_agreement),
    ("sex", sex_agreement),
    ("postcode", postcode_agreement),
];

/// The best agreement of one field between `r` and any record of a person.
fn best_of<'a>(
    r: &SubjectRecord,
    person: impl Iterator<Item = &'a SubjectRecord>,
    cmp: Cmp,
) -> (&'static str, f64) {
    best(person.map(|m| cmp(r, m)))
}

/// The best of one field's agreements (the first of equals), `missing` for none.
fn best(agreements: impl Iterator<Item = (&'static str, f64)>) -> (&'static str, f64) {
    let mut best: Option<(&'static str, f64)> = None;
    for v in agreements {
        if best.is_none_or(|b| v.1 > b.1) {
            best = Some(v);
        }
    }
    best.unwrap_or(("missing", 0.0))
}

/// Builds a score from each field's best agreement, in [`FIELDS`] order.
fn score_of(best: [(&'static str, f64); 5]) -> Score {
    let mut total = 0.0;
    let mut eligible = true;
    let mut fields = Vec::with_capacity(5);
    for ((field, _), (agreement, weight)) in FIELDS.iter().zip(best) {
        if (*field == "date_of_birth" || *field == "given_name") && weight <= 0.0 {
            eligible = false;
        }
        total += weight;
        fields.push(FieldScore {
            field: Cow::Borrowed(field),
            agreement: Cow::Borrowed(agreement),
            weight,
        });
    }
    Score {
        total,
        fields,
        eligible,
    }
}

/// Scores record `r` against the records of one person: for each field, the best agreement
/// with any of them.
pub fn score_against(r: &SubjectRecord, person: &[&SubjectRecord]) -> Score {
    score_of(FIELDS.map(|(_, cmp)| best_of(r, person.iter().copied(), cmp)))
}

/// [`score_against`] for a person who could be linked, else `None` (without comparing the
/// other fields) once the date of birth or the given name does not agree; and `None` for a
/// total below `at_least`, before any explanation is built. Those two fields are read from
/// the cards: the person's distinct ones (`faces`: [`Faces`]), each with its record, and the
/// record's own (`rc`). `person` gives all the person's records, for the other fields.
fn eligible_score<'a, P: Iterator<Item = &'a SubjectRecord> + Clone>(
    (rc, r): (&Card, &SubjectRecord),
    faces: impl Iterator<Item = (&'a Card, &'a SubjectRecord)> + Clone,
    person: impl FnOnce() -> P,
    at_least: f64,
    purpose: Purpose,
) -> Option<Score> {
    let dob = best(faces.clone().map(|(c, _)| dates_agreement(rc.dob, c.dob)));
    if dob.1 <= 0.0 {
        return None;
    }
    let given = best(faces.map(|m| given_card_agreement((rc, r), m, purpose)));
    if given.1 <= 0.0 {
        return None;
    }
    let person = person();
    let family = best_of(r, person.clone(), family_agreement);
    let sex = best_of(r, person.clone(), sex_agreement);
    let postcode = best_of(r, person, postcode_agreement);
    let best = [given, family, dob, sex, postcode];
    if best.iter().map(|b| b.1).sum::<f64>() < at_least {
        return None;
    }
    Some(score_of(best))
}

/// Whether two records that share an identifier disagree on both date of birth and given name.
fn identity_conflict(a: &SubjectRecord, b: &SubjectRecord) -> bool {
    dob_agreement(a, b).1 < 0.0 && given_agreement(a, b).1 < 0.0
}

/// The identifiers that link records deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identifier {
    Nhs,
    Upn,
}

impl Identifier {
    fn name(self) -> &'static str {
        match self {
            Identifier::Nhs => "NHS number",
            Identifier::Upn => "UPN",
        }
    }

    fn of_subject(self, s: &impl SubjectFields) -> Option<&str> {
        match self {
            Identifier::Nhs => s.nhs_number(),
            Identifier::Upn => s.upn(),
        }
    }

    fn of_record(self, r: &SubjectRecord) -> Option<&String> {
        match self {
            Identifier::Nhs => r.nhs_number.as_ref(),
            Identifier::Upn => r.upn.as_ref(),
        }
    }

    fn of_seen(self, s: &Seen) -> Option<card::Id> {
        match self {
            Identifier::Nhs => s.nhs,
            Identifier::Upn => s.upn,
        }
    }

    fn slot(self, r: &mut SubjectRecord) -> &mut Option<String> {
        match self {
            Identifier::Nhs => &mut r.nhs_number,
            Identifier::Upn => &mut r.upn,
        }
    }
}

/// A person found by a search, with how well they matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The person (cluster id).
    pub person: u32,
    /// The score (`None` for an exact identifier match).
    pub score: Option<Score>,
}

impl Linker {
    /// An empty linker.
    pub fn new() -> Self {
        Linker::default()
    }

    /// The number of subject records.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// A record by index.
    pub fn record(&self, r: u32) -> &SubjectRecord {
        &self.records[r as usize]
    }

    /// A record's index by key (`source/local_id`).
    pub fn record_by_key(&self, key: &str) -> Option<u32> {
        self.by_key.get(key.as_bytes()).map(|h| h.record)
    }

    /// The person (cluster id: its earliest record) a record belongs to.
    pub fn person_of(&self, r: u32) -> u32 {
        self.person[r as usize]
    }

    /// The family (cluster id: its earliest record) a record belongs to.
    pub fn family_of(&self, r: u32) -> u32 {
        self.family[r as usize]
    }

    /// The records of a person, in order of first appearance.
    pub fn person_records(&self, person: u32) -> &[u32] {
        self.members.get(&person).map_or(&[], Vec::as_slice)
    }

    /// The records of a family.
    pub fn family_records(&self, family: u32) -> &[u32] {
        self.family_members.get(&family).map_or(&[], Vec::as_slice)
    }

    /// The persons of a family, in order of first appearance.
    pub fn family_persons(&self, family: u32) -> Vec<u32> {
        let set: BTreeSet<u32> = self
            .family_records(family)
            .iter()
            .map(|&r| self.person[r as usize])
            .collect();
        set.into_iter().collect()
    }

    /// The number of persons.
    pub fn person_count(&self) -> usize {
        self.members.len()
    }

    /// The number of families.
    pub fn family_count(&self) -> usize {
        self.family_members.len()
    }

    /// Every person (cluster id), ascending.
    pub fn persons(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.members.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The public id of a person: `p-` and a hash of its earliest record's key.
    pub fn person_id(&self, person: u32) -> String {
        id_of('p', self.hashes[person as usize])
    }

    /// The public id of a family: `f-` and a hash of its earliest record's key.
    pub fn family_id(&self, family: u32) -> String {
        id_of('f', self.hashes[family as usize])
    }

    /// The person a public id names; an id of a person since merged into another names that one.
    pub fn person_by_id(&self, id: &str) -> Option<u32> {
        let r = *self
            .by_hash
            .get(&parse_short_hash(id.strip_prefix("p-")?)?)?;
        Some(self.person[r as usize])
    }

    /// The family a public id names (following merges).
    pub fn family_by_id(&self, id: &str) -> Option<u32> {
        let r = *self
            .by_hash
            .get(&parse_short_hash(id.strip_prefix("f-")?)?)?;
        Some(self.family[r as usize])
    }

    /// The person holding an NHS number.
    pub fn find_by_nhs(&self, nhs: &str) -> Option<u32> {
        self.by_nhs.get(nhs).map(|&r| self.person[r as usize])
    }

    /// The person holding a UPN.
    pub fn find_by_upn(&self, upn: &str) -> Option<u32> {
        self.by_upn.get(upn).map(|&r| self.person[r as usize])
    }

    /// The person a partner's local id belongs to.
    pub fn find_by_local(&self, source: &str, local_id: &str) -> Option<u32> {
        self.record_by_local(source, local_id)
            .map(|r| self.person[r as usize])
    }

    /// A record's index by the partner and the partner's local id.
    pub fn record_by_local(&self, source: &str, local_id: &str) -> Option<u32> {
        self.record_by_key(&format!("{source}/{local_id}"))
    }

    /// Persons matching a name and date of birth, tolerant of typos (also a letter wrong in a
    /// three-letter given name, which linking does not count), nicknames and swapped dates:
    /// everyone scoring at least one below [`REVIEW_THRESHOLD`] (a search gives no sex or
    /// postcode), best first.
    pub fn find_by_name(&self, given: &str, family: &str, dob: Date) -> Vec<Found> {
        let given = names::normalise(given);
        let probe = SubjectRecord {
            key: String::new(),
            source: String::new(),
            first_offset: 0,
            nhs_number: None,
            upn: None,
            given,
            middle: String::new(),
            family: names::normalise(family),
            display_name: String::new(),
            dob: Some(dob),
            sex: None,
            postcodes: Vec::new(),
        };
        // Without sex and postcode a perfect match scores 12.
        let card = Card::of(&probe);
        self.score_persons(
            (&card, &probe),
            None,
            REVIEW_THRESHOLD - 1.0,
            Purpose::Search,
        )
        .into_iter()
        .map(|(person, score)| Found {
            person,
            score: Some(score),
        })
        .collect()
    }

    /// The links that hold a person's records together.
    pub fn person_links(&self, person: u32) -> Vec<&Link> {
        let mut idx: BTreeSet<u32> = BTreeSet::new();
        for &r in self.person_records(person) {
            idx.extend(self.links_of[r as usize].iter().copied());
        }
        idx.into_iter()
            .map(|i| &self.links[i as usize])
            .filter(|l| l.active)
            .collect()
    }

    /// Every match candidate, in order of creation.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// A candidate by id (`m-N` is the N-th candidate made).
    pub fn candidate(&self, id: &str) -> Option<&Candidate> {
        self.candidates.get(self.candidate_index(id)?)
    }

    fn candidate_index(&self, id: &str) -> Option<usize> {
        let n: usize = id.strip_prefix("m-")?.parse().ok()?;
        n.checked_sub(1).filter(|&i| i < self.candidates.len())
    }

    /// Whether a candidate still waits for a person: open, and its records not yet one person.
    pub fn is_open(&self, c: &Candidate) -> bool {
        c.status == CandidateStatus::Open && self.person[c.a as usize] != self.person[c.b as usize]
    }

    /// Flagged identifier conflicts.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Applies one partner event at `offset`; returns the record of each subject, in order.
    pub fn apply_event<P>(&mut self, offset: u64, event: &Event<P>) -> Vec<u32> {
        self.apply_subjects(offset, &event.source, &event.subjects, &event.relationships)
    }

    /// Applies the subjects and relationships of an event of `source` at `offset`, as
    /// [`Linker::apply_event`] does (in whatever form the subjects come); returns the record
    /// of each subject, in order.
    pub fn apply_subjects<S: SubjectFields>(
        &mut self,
        offset: u64,
        source: &str,
        subjects: impl IntoIterator<Item = S>,
        relationships: &[Relationship],
    ) -> Vec<u32> {
        use std::fmt::Write as _;
        let subjects = subjects.into_iter();
        let mut recs = Vec::with_capacity(subjects.size_hint().0);
        // One key buffer for the event's subjects: most are known records, looked up only.
        let mut key = String::with_capacity(source.len() + 24);
        for (i, s) in subjects.enumerate() {
            key.clear();
            match s.local_id() {
                Some(l) => {
                    key.push_str(source);
                    key.push('/');
                    key.push_str(l);
                }
                None => {
                    // Writing into a String cannot fail.
                    let _ = write!(key, "@{offset}.{i}");
                }
            }
            let r = match self.by_key.get(key.as_bytes()) {
                Some(&Held { record: r, seen }) => {
                    self.update_record(r, seen, s, offset);
                    r
                }
                None => self.new_record(record_from(source, key.clone(), offset, s), offset),
            };
            recs.push(r);
        }
        for rel in relationships {
            let (Some(&a), Some(&b)) = (recs.get(rel.from as usize), recs.get(rel.to as usize))
            else {
                continue;
            };
            if a != b && self.rel_seen.insert(pair(a, b)) {
                self.rels.push((a, b, rel.kind));
                self.union_families(a, b);
            }
        }
        recs
    }

    /// Applies a person's decision. A rejection splits a person if it was linked.
    pub fn apply_decision(&mut self, offset: u64, d: &MatchDecision) -> Result<(), DecisionError> {
        let a = self
            .record_by_key(&d.record_a)
            .ok_or_else(|| DecisionError::UnknownRecord(d.record_a.clone()))?;
        let b = self
            .record_by_key(&d.record_b)
            .ok_or_else(|| DecisionError::UnknownRecord(d.record_b.clone()))?;
        if a == b {
            return Err(DecisionError::SameRecord);
        }
        if let Some(c) = &d.candidate_id {
            let idx = self
                .candidate_index(c)
                .ok_or_else(|| DecisionError::UnknownCandidate(c.clone()))?;
            self.candidates[idx].status = match d.decision {
                Decision::Confirm => CandidateStatus::Confirmed {
                    decided_by: d.decided_by.clone(),
                },
                Decision::Reject => CandidateStatus::Rejected {
                    decided_by: d.decided_by.clone(),
                },
            };
        }
        match d.decision {
            Decision::Confirm => {
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(v) = self.cannot.get_mut(&x) {
                        v.retain(|&z| z != y);
                    }
                }
                let why = LinkWhy::Confirmed {
                    decided_by: d.decided_by.clone(),
                    reason: d.reason.clone(),
                    decided_at: d.decided_at,
                };
                if let Err(detail) = self.union_persons(a, b, why, offset) {
                    self.flag_conflict(a, b, detail, offset);
                }
            }
            Decision::Reject => {
                self.cannot.entry(a).or_default().push(b);
                self.cannot.entry(b).or_default().push(a);
                if self.person[a as usize] == self.person[b as usize] {
                    for l in &mut self.links {
                        if l.active && pair(l.a, l.b) == pair(a, b) {
                            l.active = false;
                        }
                    }
                    self.recluster();
                }
            }
        }
        Ok(())
    }

    /// Adds record `r` (the next, `rec`) to the indexes worked out from records alone.
    fn index_record(&mut self, r: u32, rec: &SubjectRecord) {
        let seen = Seen::of(rec);
        self.by_key
            .insert(Key::of(&rec.key), Held { record: r, seen });
        let hash = short_hash(&rec.key);
        self.by_hash.insert(hash, r);
        self.hashes.push(hash);
        self.cards.push(Card::of(rec));
        // Only records with a date of birth have block keys.
        if let Some(dob) = rec.dob {
            for k in Self::block_keys(rec, false) {
                self.blocks
                    .entry(k)
                    .or_default()
                    .push(Blocked { record: r, dob });
            }
        }
    }

    /// Works out again what a snapshot leaves out because its lists say it (after
    /// deserializing): each record's person and family from the members of each, each record's
    /// links from the links in order (as linking added them), and the pairs of the stated
    /// relationships. (About a tenth of a snapshot's bytes.) `Err` where the lists name a
    /// record that is not there, or leave one out.
    fn derive_from_lists(&mut self) -> Result<(), String> {
        let n = self.records.len();
        let owners = |groups: &HashMap<u32, Vec<u32>>, what: &str| -> Result<Vec<u32>, String> {
            let mut of = vec![u32::MAX; n];
            for (&g, recs) in groups {
                if g as usize >= n {
                    return Err(format!("{what} {g} is not a record, of {n}"));
                }
                for &r in recs {
                    match of.get_mut(r as usize) {
                        Some(slot) if *slot == u32::MAX => *slot = g,
                        Some(_) => return Err(format!("record {r} is in two {what}s")),
                        None => return Err(format!("a {what} names record {r}, of {n}")),
                    }
                }
            }
            match of.iter().position(|&g| g == u32::MAX) {
                Some(r) => Err(format!("record {r} is in no {what}")),
                None => Ok(of),
            }
        };
        self.person = owners(&self.members, "person")?;
        self.family = owners(&self.family_members, "family")?;
        self.links_of = vec![Vec::new(); n];
        for (i, link) in self.links.iter().enumerate() {
            for r in [link.a, link.b] {
                self.links_of
                    .get_mut(r as usize)
                    .ok_or_else(|| format!("a link names record {r}, of {n}"))?
                    .push(i as u32);
            }
        }
        self.rel_seen = self.rels.iter().map(|&(a, b, _)| pair(a, b)).collect();
        Ok(())
    }

    /// Rebuilds the indexes worked out from records alone (after deserializing), in record
    /// order, so they are what adding the records one by one made.
    fn index_records(&mut self) {
        let records = std::mem::take(&mut self.records);
        self.by_key = HashMap::default();
        self.by_hash = HashMap::default();
        self.hashes = Vec::with_capacity(records.len());
        self.cards = Chunked::default();
        self.blocks = HashMap::default();
        for (r, rec) in records.iter().enumerate() {
            self.index_record(r as u32, rec);
        }
        self.records = records;
        self.faces = (0..self.records.len()).map(|_| Faces::none()).collect();
        for (&p, recs) in &self.members {
            self.faces[p as usize] = Faces::of(recs, |r| self.cards[r as usize]);
        }
    }

    fn new_record(&mut self, rec: SubjectRecord, offset: u64) -> u32 {
        let r = self.records.len() as u32;
        self.index_record(r, &rec);
        let ids = [
            (Identifier::Nhs, rec.nhs_number.clone()),
            (Identifier::Upn, rec.upn.clone()),
        ];
        self.records.push(rec);
        self.person.push(r);
        self.members.insert(r, vec![r]);
        self.faces.push(Faces::one(r, self.cards[r as usize]));
        self.family.push(r);
        self.family_members.insert(r, vec![r]);
        self.links_of.push(Vec::new());
        for (id, value) in ids {
            if let Some(v) = value {
                self.link_identifier(r, v, id, offset);
            }
        }
        // Also when linked by an identifier: the record may carry what joins its person to
        // records of the same person that have no identifier.
        self.link_by_score(r, offset);
        r
    }

    /// Updates known record `r` (which `seen`, its [`Held`] entry, describes) with subject
    /// `s` of the event at `offset`.
    fn update_record(&mut self, r: u32, mut seen: Seen, s: impl SubjectFields, offset: u64) {
        let ri = r as usize;
        if let Some(p) = s.postcode() {
            // Most events give the postcode added last: `seen` says so without the record.
            let known = Seen::holds(seen.postcode, p);
            if !p.is_empty() && !known && !self.records[ri].postcodes.iter().any(|x| x == p) {
                self.records[ri].postcodes.push(p.to_string());
                seen = self.reseen(ri);
                // A new address may be what a partner that met the family after a move has.
                self.link_by_score(r, offset);
            }
        }
        for id in [Identifier::Nhs, Identifier::Upn] {
            let Some(v) = id.of_subject(&s) else { continue };
            // Most events give the identifier the record holds: nothing to do.
            if Seen::holds(id.of_seen(&seen), v) {
                continue;
            }
            match id.of_record(&self.records[ri]) {
                None => {
                    let theirs = self.nhs_numbers(self.person[ri]);
                    if id == Identifier::Nhs && !theirs.is_empty() && !theirs.contains(v) {
                        let detail = format!(
                            "record {} now gives NHS number {v}, but its person has {}; not added",
                            self.records[ri].key,
                            theirs.into_iter().collect::<Vec<_>>().join(", ")
                        );
                        self.flag_conflict(r, r, detail, offset);
                        continue;
                    }
                    *id.slot(&mut self.records[ri]) = Some(v.to_string());
                    seen = self.reseen(ri);
                    self.link_identifier(r, v.to_string(), id, offset);
                }
                Some(held) if held.as_str() != v => {
                    let detail = format!(
                        "record {} changed {} from {held} to {v}; kept the first",
                        self.records[ri].key,
                        id.name()
                    );
                    self.flag_conflict(r, r, detail, offset);
                }
                Some(_) => {}
            }
        }
    }

    /// Works out record `ri`'s [`Seen`] again (it changed), keeps it in its [`Held`] entry,
    /// and returns it.
    fn reseen(&mut self, ri: usize) -> Seen {
        let rec = &self.records[ri];
        let seen = Seen::of(rec);
        if let Some(held) = self.by_key.get_mut(rec.key.as_bytes()) {
            held.seen = seen;
        }
        seen
    }

    /// Links `r` to the holder of identifier `v`, or registers `r` as its holder.
    fn link_identifier(&mut self, r: u32, v: String, id: Identifier, offset: u64) {
        let index = match id {
            Identifier::Nhs => &mut self.by_nhs,
            Identifier::Upn => &mut self.by_upn,
        };
        let Some(&holder) = index.get(&v) else {
            index.insert(v, r);
            return;
        };
        if holder == r {
            return;
        }
        let what = id.name();
        if identity_conflict(&self.records[r as usize], &self.records[holder as usize]) {
            let detail = format!(
                "same {what} {v} but different date of birth and given name; kept apart for review"
            );
            self.flag_conflict(r, holder, detail, offset);
            return;
        }
        let why = match id {
            Identifier::Nhs => LinkWhy::SameNhsNumber,
            Identifier::Upn => LinkWhy::SameUpn,
        };
        if let Err(detail) = self.union_persons(r, holder, why, offset) {
            self.flag_conflict(r, holder, format!("same {what} {v}: {detail}"), offset);
        }
    }

    fn flag_conflict(&mut self, a: u32, b: u32, detail: String, offset: u64) {
        if self.conflict_pairs.insert(pair(a, b)) {
            self.conflicts.push(Conflict {
                a,
                b,
                detail,
                offset,
            });
        }
    }

    /// Blocking keys: the exact date of birth (probed also day/month swapped), and for dates
    /// one digit off, the surname's sound with two of the three date parts, and the given
    /// name's sound with month and day. Every block is small, so the cost per record is
    /// near constant however large the county grows.
    fn block_keys(rec: &SubjectRecord, probe: bool) -> Vec<u64> {
        let mut keys = Vec::with_capacity(8);
        let Some(d) = rec.dob else {
            return keys;
        };
        keys.push(block_key(b'd', &[&date_bytes(d)]));
        if probe {
            if let Some(s) = names::swapped(d) {
                keys.push(block_key(b'd', &[&date_bytes(s)]));
            }
        }
        let y = d.year.to_be_bytes();
        for part in names::surname_parts(&rec.family) {
            let sx = names::soundex(part);
            keys.push(block_key(b'm', &[&sx, &y, &[d.month]]));
            keys.push(block_key(b'k', &[&sx, &y, &[d.day]]));
        }
        if !rec.given.is_empty() {
            keys.push(block_key(
                b'y',
                &[&names::soundex(&rec.given), &[d.month, d.day]],
            ));
        }
        keys
    }

    /// Scores `r` (with its card: a record's own from `cards`, so it is not worked out again)
    /// against every person sharing a block with it (other than `skip`) who could be linked
    /// to it and scores at least `at_least`, best first.
    fn score_persons(
        &self,
        (card, r): (&Card, &SubjectRecord),
        skip: Option<u32>,
        at_least: f64,
        purpose: Purpose,
    ) -> Vec<(u32, Score)> {
        let mut persons: Vec<u32> = Vec::new();
        for k in Self::block_keys(r, true) {
            if let Some(list) = self.blocks.get(&k) {
                for b in list.iter().rev().take(MAX_BLOCK_SCAN) {
                    // A link needs an agreeing date of birth: skip the rest before scoring
                    // (read from the block, not the record, which is elsewhere in memory).
                    if r.dob.is_some_and(|d| dates_agree(d, b.dob)) {
                        persons.push(b.record);
                    }
                }
            }
        }
        // Records to persons in a pass of their own: the lookups (scattered, most missing the
        // cache) do not wait on each other there, where between date checks few overlapped.
        for x in &mut persons {
            *x = self.person[*x as usize];
        }
        persons.sort_unstable();
        persons.dedup();
        let mut scored: Vec<(u32, Score)> = persons
            .into_iter()
            .filter(|&p| Some(p) != skip)
            .filter_map(|p| {
                let faces = self.faces[p as usize]
                    .as_slice()
                    .iter()
                    .map(|(x, c)| (c, &self.records[*x as usize]));
                let recs = || {
                    self.person_records(p)
                        .iter()
                        .map(|&x| &self.records[x as usize])
                };
                eligible_score((card, r), faces, recs, at_least, purpose).map(|s| (p, s))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total.total_cmp(&a.1.total).then(a.0.cmp(&b.0)));
        scored
    }

    fn link_by_score(&mut self, r: u32, offset: u64) {
        let (ri, own) = (r as usize, self.person[r as usize]);
        let scored = self.score_persons(
            (&self.cards[ri], &self.records[ri]),
            Some(own),
            REVIEW_THRESHOLD,
            Purpose::Link,
        );
        let above: Vec<&(u32, Score)> = scored
            .iter()
            .filter(|(_, s)| s.total >= LINK_THRESHOLD)
            .collect();
        if above.len() == 1 {
            let (p, s) = above[0].clone();
            // A partner that keeps two records usually knows two people (twins, namesakes):
            // such a pair is for a person to decide.
            if self.share_a_partner(self.person[r as usize], p) {
                self.add_candidate(r, p, s);
                return;
            }
            if self
                .union_persons(r, p, LinkWhy::Scored { score: s.clone() }, offset)
                .is_err()
            {
                self.add_candidate(r, p, s);
            }
            return;
        }
        // Two or more persons above the threshold is ambiguous: all go to review.
        for (p, s) in scored
            .into_iter()
            .filter(|(_, s)| s.total >= REVIEW_THRESHOLD)
            .take(MAX_CANDIDATES_PER_RECORD)
        {
            self.add_candidate(r, p, s);
        }
    }

    fn add_candidate(&mut self, a: u32, b: u32, score: Score) {
        if self.forbidden(a, b) {
            return;
        }
        let key = pair(a, b);
        if self.candidate_pairs.contains_key(&key) {
            return;
        }
        let idx = self.candidates.len() as u32;
        self.candidate_pairs.insert(key, idx);
        self.candidates.push(Candidate {
            id: format!("m-{}", idx + 1),
            a,
            b,
            score,
            status: CandidateStatus::Open,
        });
    }

    /// Whether a rejected pair lies between the persons of `a` and `b`.
    fn forbidden(&self, a: u32, b: u32) -> bool {
        let (pa, pb) = (self.person[a as usize], self.person[b as usize]);
        self.person_records(pa).iter().any(|m| {
            self.cannot
                .get(m)
                .is_some_and(|v| v.iter().any(|&c| self.person[c as usize] == pb))
        })
    }

    /// Whether both persons hold a record of the same partner.
    fn share_a_partner(&self, pa: u32, pb: u32) -> bool {
        let a = self.person_records(pa);
        self.person_records(pb).iter().any(|&y| {
            a.iter()
                .any(|&x| self.records[x as usize].source == self.records[y as usize].source)
        })
    }

    /// Whether both persons hold NHS numbers and share none ([`Linker::nhs_numbers`] of each
    /// both non-empty and disjoint), without gathering them: asked at every union.
    fn nhs_apart(&self, pa: u32, pb: u32) -> bool {
        let of = |p: u32| {
            self.person_records(p)
                .iter()
                .filter_map(|&m| self.records[m as usize].nhs_number.as_deref())
        };
        if of(pa).next().is_none() || of(pb).next().is_none() {
            return false;
        }
        !of(pa).any(|x| of(pb).any(|y| x == y))
    }

    fn nhs_numbers(&self, person: u32) -> BTreeSet<&str> {
        self.person_records(person)
            .iter()
            .filter_map(|&m| self.records[m as usize].nhs_number.as_deref())
            .collect()
    }

    /// Joins the persons of `a` and `b`, unless a rejected pair or two different NHS numbers
    /// stand between them.
    fn union_persons(&mut self, a: u32, b: u32, why: LinkWhy, offset: u64) -> Result<(), String> {
        let (pa, pb) = (self.person[a as usize], self.person[b as usize]);
        if pa == pb {
            return Ok(());
        }
        if self.forbidden(a, b) {
            return Err("a person decided these are different people".into());
        }
        if self.nhs_apart(pa, pb) {
            return Err("the records carry different NHS numbers".into());
        }
        let i = self.links.len() as u32;
        self.links.push(Link {
            a,
            b,
            why,
            offset,
            active: true,
        });
        self.links_of[a as usize].push(i);
        self.links_of[b as usize].push(i);
        self.merge_persons(pa, pb);
        self.union_families(a, b);
        Ok(())
    }

    /// Notes that family `f` changed.
    fn family_changed(&mut self, f: u32) {
        if let ChangedFamilies::Some(v) = &mut self.changed {
            v.push(f);
        }
    }

    /// The families whose persons or members changed since the last call (or since the
    /// linker was made or loaded: then all), and forgets them. Whoever keeps anything worked
    /// out from a family drops it for these.
    pub fn take_changed_families(&mut self) -> ChangedFamilies {
        std::mem::replace(&mut self.changed, ChangedFamilies::Some(Vec::new()))
    }

    fn merge_persons(&mut self, pa: u32, pb: u32) {
        let (keep, gone) = if pa < pb { (pa, pb) } else { (pb, pa) };
        self.family_changed(self.family[keep as usize]);
        self.family_changed(self.family[gone as usize]);
        let moved = self.members.remove(&gone).unwrap_or_default();
        for &m in &moved {
            self.person[m as usize] = keep;
        }
        let faces = std::mem::replace(&mut self.faces[gone as usize], Faces::none());
        self.faces[keep as usize].join(faces);
        let list = self.members.entry(keep).or_default();
        list.extend(moved);
        list.sort_unstable();
    }

    fn union_families(&mut self, a: u32, b: u32) {
        let (fa, fb) = (self.family[a as usize], self.family[b as usize]);
        if fa == fb {
            return;
        }
        let (keep, gone) = if fa < fb { (fa, fb) } else { (fb, fa) };
        self.family_changed(keep);
        self.family_changed(gone);
        let moved = self.family_members.remove(&gone).unwrap_or_default();
        for &m in &moved {
            self.family[m as usize] = keep;
        }
        let list = self.family_members.entry(keep).or_default();
        list.extend(moved);
        list.sort_unstable();
    }

    /// Recomputes persons and families from the links still active and the stated
    /// relationships, in their original order, dropping any link a rejection now forbids.
    fn recluster(&mut self) {
        self.changed = ChangedFamilies::All;
        let n = self.records.len() as u32;
        self.person = (0..n).collect();
        self.family = (0..n).collect();
        self.members = (0..n).map(|r| (r, vec![r])).collect();
        self.faces = (0..n)
            .map(|r| Faces::one(r, self.cards[r as usize]))
            .collect();
        self.family_members = (0..n).map(|r| (r, vec![r])).collect();
        for i in 0..self.links.len() {
            if !self.links[i].active {
                continue;
            }
            let (a, b) = (self.links[i].a, self.links[i].b);
            let (pa, pb) = (self.person[a as usize], self.person[b as usize]);
            if pa == pb {
                continue;
            }
            if self.forbidden(a, b) {
                self.links[i].active = false;
                continue;
            }
            self.merge_persons(pa, pb);
            self.union_families(a, b);
        }
        for i in 0..self.rels.len() {
            let (a, b, _) = self.rels[i];
            self.union_families(a, b);
        }
    }

    /// A digest of everything the linker decided (records, persons, families, links,
    /// candidates, conflicts), for comparing an incremental projection with a rebuilt one.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (i, r) in self.records.iter().enumerate() {
            h.update(r.key.as_bytes());
            h.update(self.person[i].to_be_bytes());
            h.update(self.family[i].to_be_bytes());
            h.update(r.postcodes.join(",").as_bytes());
            h.update(r.nhs_number.as_deref().unwrap_or("-").as_bytes());
        }
        for l in &self.links {
            h.update(l.a.to_be_bytes());
            h.update(l.b.to_be_bytes());
            h.update([u8::from(l.active)]);
        }
        for c in &self.candidates {
            h.update(c.id.as_bytes());
            h.update(format!("{:?}", c.status).as_bytes());
        }
        for c in &self.conflicts {
            h.update(c.detail.as_bytes());
        }
        h.finalize().into()
    }
}

mod card;
mod chunked;
mod inline;
mod rows;
#[cfg(test)]
mod tests;
