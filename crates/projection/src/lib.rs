//! Projections: what the hub answers queries from, built by applying the log in order.
//!
//! [`Projection`] holds in memory the identity linker
//! ([`tellonce_domain::identity::Linker`]) and a timeline index: for every subject record, its
//! events as `(time, offset, source and kind)`, sorted by time, and each event's event id,
//! summary line and subject records. A sealed event's payload is opened when it is applied
//! only where standing needs a fact from it (a lead practitioner, a TAF meeting); the others
//! are read in place (`inplace.rs`), and their summaries read from the log the first time a
//! timeline shows them ([`Projection::open_summaries`]) and kept from then on. The durable
//! copy is the line store (`store.rs`): the timeline lines (time, partner, kind, event id,
//! summary, subject records) in chunks of up to 256, their bodies appended to a file and their index (first offset to place) and the
//! applied offset in sled, each applied chunk of the log in one atomic sled batch (in a long
//! catch-up, written by a storer thread while the next batch is applied). Every
//! [`SNAPSHOT_EVERY`] entries (an access entry counting a third; in a large county
//! [`SNAPSHOT_ENTRIES_PER_RECORD`] per subject record) and on close (unless the last one is
//! recent) the linker is snapshotted to a file, and the access log's index held
//! in memory moves to the line store (so neither grows with every read ever made). A restart loads
//! the snapshot, rebuilds the in-memory index and lines from the stored lines below it, and
//! re-applies the log from there (idempotent: the same lines again). Everything here
//! can be thrown away:
//! [`Projection::rebuild`] drops it and replays the whole log, and [`Projection::digest`] lets
//! a test or an auditor compare an incremental projection with a rebuilt one.
//!
//! Reads take a visibility predicate: the server's access policy decides, per event, what a
//! viewer sees, and the projection counts what it withheld. Timelines are answered from memory
//! (but for summaries not yet read); the family view folds full events, read from the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use foldhash::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tellonce_domain::access::{
    self, AccessEntry, BreakGlass, Category, ConsentGiven, ConsentWithdrawn, EventFacts, Fact,
    FamilyFacts, SharingDecision, Standing, Viewer, Withheld,
};
use tellonce_domain::identity::{Candidate, ChangedFamilies, LinkWhy, Linker, SubjectRecord};
use tellonce_domain::record::DecodeError;
use tellonce_domain::seal::{self, DataKey, Erasure, Sealed};
use tellonce_domain::view::{self, FamilyView, Member, ViewEvent, ViewFact};
use tellonce_domain::{Date, Event, Payload, Record, Timestamp};
use tellonce_log::{EntryView, Hash, Log, LogError, StoredEntry};
use tokio::sync::watch;

use store::LineStore;

mod inplace;
pub mod keys;
mod store;
pub use keys::{KeyError, KeyState, KeyStore, KeyView, Tombstone};
use tracing::{info, warn};

/// Entries between linker snapshots at least, counting an access entry as a third
/// ([`ACCESS_ENTRY_THIRDS`]); more in a large county ([`SNAPSHOT_ENTRIES_PER_RECORD`]).
pub const SNAPSHOT_EVERY: u64 = 500_000;
/// Entries between linker snapshots per subject record the linker holds, where that is more
/// than [`SNAPSHOT_EVERY`]. A snapshot writes every record, so at a fixed interval its cost per
/// entry grew with the county: at the 1M-event demo (169k records) the two snapshots of a
/// rebuild took 0.84 s of its 9–10 s, and ten times the county would have spent most of its
/// time applying on snapshots. Three entries a record keeps the demo's interval (507k entries)
/// and the snapshots' share of applying at any size; a restart after a crash re-applies at most
/// that many entries.
pub const SNAPSHOT_ENTRIES_PER_RECORD: u64 = 3;
/// What re-applying an access entry costs, in thirds of any other entry's cost (measured:
/// 262k–267k access entries/s against 80k–87k sealed demo events/s, a ratio of 0.30–0.33).
/// Every read writes one, and they change no linking: counted whole, a hub serving 10k
/// reads a second rewrote its linker snapshot (about 90 MB at 1M events) every 50 s.
pub const ACCESS_ENTRY_THIRDS: u64 = 1;
/// Entries read from the log per applied batch.
pub const APPLY_BATCH: usize = 2_000;
/// Most threads decoding ahead in a long catch-up ([`decoding_helpers`]).
pub const MAX_DECODING_HELPERS: usize = 2;
/// Decoded batches each of a long catch-up's decoding helpers keeps waiting besides the one it
/// hands over. While most subject records are new (a rebuild's first seconds) the applying
/// thread is the slower side, and the helpers decode ahead into this room instead of idling,
/// which leaves them less to do later, when they compete with it for the cores. Fresh
/// `tellonce rebuild`s of the 1M demo, alternated: 2 batches 232k/245k/241k/224k events/s,
/// 8 batches 248k/253k/250k/221k, 16 256k/262k/251k/233k, 32 256k/268k/260k/247k; peak RSS
/// 732-744 MB at 2, 784-808 at 16, 800-845 at 32, 979-1,007 at 64 (not faster in three runs).
/// With none (a rendezvous) rebuilds were ~8% slower. (Those were with two helpers; with one,
/// 64 was faster in only 7 of 12 alternated rounds and not in `bench replay`, and 128 was
/// slower.) A catch-up told to stop drops what was
/// decoded ahead (at most this many batches per helper).
pub const DECODED_AHEAD: usize = 32;
/// On close, a snapshot is kept (not written again) while fewer than one in this many of the
/// log's entries came after it.
pub const CLOSE_KEEPS_SNAPSHOT: u64 = 50;
/// How many threads decode ahead of the applying thread in a long catch-up: one per core
/// besides the one that applies, at least one and at most [`MAX_DECODING_HELPERS`]. Applying
/// is a rebuild's bottleneck, and it needs a core to itself: on two cores, two helpers (with
/// the storer) were three busy threads on two cores, and the applying thread often waited for
/// one. With one helper, fresh rebuilds of the 1M demo, alternated with two helpers', were
/// faster in 10 of 12 rounds (median events/s 1.033 and 1.077 in two sets), and four
/// `bench replay`s, each beside one with two helpers in the same minute, gave 236k-293k
/// events/s against 223k-235k, with 2-22% fewer CPU-seconds and 45-135 MB less peak memory.
pub fn decoding_helpers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .clamp(1, MAX_DECODING_HELPERS)
}

/// Largest timeline page.
pub const MAX_PAGE: usize = 500;

const SNAPSHOT_FILE: &str = "linker.snapshot.json";

/// Errors of the projection.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// sled failed.
    #[error("projection storage failed: {0}")]
    Store(#[from] sled::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Stored projection data does not decode.
    #[error("projection data is damaged ({0}); run `tellonce rebuild`")]
    Damaged(String),
    /// No such person or family.
    #[error("{0}")]
    NotFound(String),
    /// A bad argument (cursor, range).
    #[error("{0}")]
    Invalid(String),
    /// A sealed event cannot be opened: its key is missing (not erased) or does not fit.
    #[error("{0}")]
    Keys(String),
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyError),
}

#[derive(Deserialize)]
struct Snapshot {
    next_offset: u64,
    last_hash: Hash,
    linker: Linker,
    #[serde(default)]
    access: AccessSnapshot,
    /// Below this offset the access log's index is in the line store, not in `access`.
    #[serde(default)]
    access_spilled: u64,
}

/// The access state and the access log's index as a snapshot holds them: one object.
#[derive(Default, Deserialize)]
struct AccessSnapshot {
    #[serde(flatten)]
    state: AccessState,
    accesses: Vec<u64>,
    access_by: HashMap<String, Vec<u64>>,
}

impl AccessSnapshot {
    /// The access state (indexed) and the access log's index.
    fn split(self) -> (AccessState, AccessIndex) {
        let mut state = self.state;
        state.reindex();
        let index = AccessIndex {
            accesses: self.accesses,
            by: self.access_by,
            spilled: 0,
        };
        (state, index)
    }
}

/// [`AccessSnapshot`], written from the two parts without copying them.
#[derive(Serialize)]
struct AccessSnapshotRef<'a> {
    #[serde(flatten)]
    state: &'a AccessState,
    accesses: &'a [u64],
    /// In key order, so equal indexes are written alike.
    #[serde(serialize_with = "sorted_map")]
    access_by: &'a HashMap<String, Vec<u64>>,
}

impl<'a> AccessSnapshotRef<'a> {
    fn of(state: &'a AccessState, index: &'a AccessIndex) -> Self {
        AccessSnapshotRef {
            state,
            accesses: &index.accesses,
            access_by: &index.by,
        }
    }

    /// Feeds this state into `h`: equal for equal states.
    fn digest(&self, h: &mut Sha256) {
        // Serialising plain data cannot fail; an empty digest input would still differ.
        h.update(serde_json::to_vec(self).unwrap_or_default());
    }
}

/// Writes `map` as a JSON object in key order.
fn sorted_map<S: serde::Serializer>(
    map: &&HashMap<String, Vec<u64>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let sorted: BTreeMap<&String, &Vec<u64>> = map.iter().collect();
    sorted.serialize(s)
}

/// Consents, sharing decisions and break-glass grants: what the access rule reads.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AccessState {
    /// Consents by id.
    consents: BTreeMap<String, ConsentGiven>,
    /// Withdrawn consents: the earliest time each holds no more.
    withdrawn: BTreeMap<String, Timestamp>,
    /// Sharing decisions, in log order.
    sharing: Vec<SharingDecision>,
    /// Break-glass grants, in log order.
    grants: Vec<BreakGlass>,
    /// The consents naming each partner record (derived from `consents`).
    #[serde(skip)]
    consent_index: ConsentIndex,
}

/// The consents naming each partner record: numbers into one list of consent ids rather than
/// copies of the ids, as a county's consents name a quarter of a million records.
#[derive(Debug, Default)]
struct ConsentIndex {
    /// Places in `ids`, by partner record.
    by_record: HashMap<String, Vec<u32>>,
    /// The consents' ids, in the order they were added.
    ids: Vec<String>,
}

impl ConsentIndex {
    /// Adds consent `c` (not added before).
    fn add(&mut self, c: &ConsentGiven) {
        let n = self.ids.len() as u32;
        self.ids.push(c.consent_id.clone());
        for r in &c.records {
            match self.by_record.get_mut(r.as_str()) {
                Some(list) => {
                    if list.last() != Some(&n) {
                        list.push(n);
                    }
                }
                None => {
                    self.by_record.insert(r.clone(), vec![n]);
                }
            }
        }
    }

    /// The ids of the consents naming partner record `key`.
    fn of(&self, key: &str) -> impl Iterator<Item = &str> {
        let list = self.by_record.get(key).map_or(&[][..], Vec::as_slice);
        list.iter().map(|&n| self.ids[n as usize].as_str())
    }
}

/// The access log index's key for every access entry (the others are `u/`, `f/` and `p/` keys).
const ALL_ACCESSES: &str = "";

/// The access log's index: offsets of access entries, in log order and by family id,
/// person id and user id. Only access-log reads use it, so it is kept apart from the
/// state's lock: applying access entries (one per read) neither waits for reads nor holds
/// them up. Memory holds the entries from `spilled` on; those below are in the line store
/// (moved there at each snapshot), so memory and snapshots do not grow with every read ever made.
#[derive(Debug, Default)]
struct AccessIndex {
    /// Offsets of access entries, in log order.
    accesses: Vec<u64>,
    /// Offsets of access entries by `u/<user id>`, `f/<family id>` and `p/<person id>`.
    by: HashMap<String, Vec<u64>>,
    /// Entries below this offset are in the line store (and not here).
    spilled: u64,
}

impl AccessIndex {
    /// Indexes access entry `a`, at log `offset` (unless the line store has it already: a
    /// restart from a snapshot older than the last move re-applies such entries).
    fn add(&mut self, offset: u64, a: &AccessEntry) {
        if offset < self.spilled {
            return;
        }
        self.accesses.push(offset);
        let mut keys: Vec<String> = Vec::with_capacity(a.person_ids.len() + 2);
        keys.push(format!("u/{}", a.user_id));
        if !a.family_id.is_empty() {
            keys.push(format!("f/{}", a.family_id));
        }
        keys.extend(a.person_ids.iter().map(|p| format!("p/{p}")));
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            self.by.entry(k).or_default().push(offset);
        }
    }

    /// Moves every entry held to `store`, which then holds everything below `upto` (every
    /// access entry below `upto` was indexed), leaving memory empty.
    fn spill(&mut self, store: &LineStore, upto: u64) -> Result<(), ProjectionError> {
        let by = std::iter::once((ALL_ACCESSES, self.accesses.as_slice()))
            .chain(self.by.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        store.spill_access(by, upto)?;
        self.accesses = Vec::new();
        self.by = HashMap::default();
        self.spilled = upto;
        Ok(())
    }

    /// Forgets the entries below `spilled`, which the line store holds.
    fn stored_below(&mut self, spilled: u64) {
        self.spilled = spilled;
        self.accesses.retain(|&o| o >= spilled);
        for v in self.by.values_mut() {
            v.retain(|&o| o >= spilled);
        }
        self.by.retain(|_, v| !v.is_empty());
    }

    /// The whole index, the line store's part and memory's (for digests and comparisons).
    fn whole(&self, store: &LineStore) -> Result<AccessIndex, ProjectionError> {
        let mut stored = store.access_all()?;
        let mut accesses = stored.remove(ALL_ACCESSES).unwrap_or_default();
        accesses.extend_from_slice(&self.accesses);
        let mut by: HashMap<String, Vec<u64>> = stored.into_iter().collect();
        for (k, v) in &self.by {
            by.entry(k.clone()).or_default().extend_from_slice(v);
        }
        Ok(AccessIndex {
            accesses,
            by,
            spilled: 0,
        })
    }
}

impl AccessState {
    fn reindex(&mut self) {
        self.consent_index = ConsentIndex::default();
        for c in self.consents.values() {
            self.consent_index.add(c);
        }
    }

    /// The ids of the consents naming partner record `key`.
    fn consents_of(&self, key: &str) -> impl Iterator<Item = &str> {
        self.consent_index.of(key)
    }

    /// Applies a consent, withdrawal or sharing decision (access entries: [`AccessState::grant`]).
    fn apply(&mut self, d: Decoded) {
        match d {
            Decoded::Consent(c) => {
                if !self.consents.contains_key(&c.consent_id) {
                    self.consent_index.add(&c);
                    self.consents.insert(c.consent_id.clone(), *c);
                }
            }
            Decoded::Withdrawn(w) => {
                let at = self
                    .withdrawn
                    .entry(w.consent_id.clone())
                    .or_insert(w.effective_from);
                *at = (*at).min(w.effective_from);
            }
            Decoded::Sharing(d) => self.sharing.push(*d),
            Decoded::Access(_)
            | Decoded::Event(..)
            | Decoded::Sealed(..)
            | Decoded::InPlace(..)
            | Decoded::Erasure(_)
            | Decoded::Decision(_)
            | Decoded::Other => {}
        }
    }

    /// Keeps the break-glass grant access entry `a` records, if it records one.
    fn grant(&mut self, a: &AccessEntry) {
        if let (true, Some(until)) = (a.break_glass, a.break_glass_until) {
            self.grants.push(BreakGlass {
                user_id: a.user_id.clone(),
                family_id: a.family_id.clone(),
                person_ids: a.person_ids.clone(),
                until,
            });
        }
    }
}

struct State {
    linker: Linker,
    next_offset: u64,
    last_hash: Hash,
    /// Entries applied since the last snapshot (or since empty).
    since_snapshot: u64,
    /// Access entries among them: the access index holds them in memory until a snapshot.
    accesses_since_snapshot: u64,
    /// Per subject record: its events, sorted by (time, offset).
    by_record: Vec<RecordEvents>,
    /// Entries indexed but not yet added to `by_record`, in the order indexed (see
    /// [`State::add_indexed`]): empty whenever the state's lock is let go.
    unadded: Vec<(u32, Indexed)>,
    /// By log offset: what a timeline shows of the event there (`None` for other entries).
    lines: Vec<Option<Box<LineText>>>,
    /// Interned `(source, kind, category, safeguarding)`, referred to by [`Indexed::meta`].
    metas: Vec<MetaKey>,
    /// Per kind, the ids of its metas (a few each): looked up by `&str`, without building a key.
    meta_ids: HashMap<String, Vec<u32>>,
    /// Consents, decisions and grants.
    access: AccessState,
    /// Set when a store write failed after memory changed: the projection must be rebuilt.
    broken: Option<String>,
    /// What reads of a family need, worked out at the first read and kept until the log
    /// brings an event about the family or a change of its members (then its memo is
    /// dropped), or anything but events and access entries (then all are).
    memo: std::sync::Mutex<Memos>,
}

/// The families whose memos a batch makes stale. Not gathered while no family has a memo (in a
/// rebuild, or before the first read): the batch holds the state's write lock, so none can be
/// made until it is applied. Gathering read each event's records' families, a cache miss each.
struct Stale {
    gather: bool,
    families: Vec<u32>,
}

impl Stale {
    /// Gathers families if `gather`.
    fn gathered_if(gather: bool) -> Stale {
        Stale {
            gather,
            families: Vec::new(),
        }
    }

    /// Notes `families` (not worked out unless gathered).
    fn note(&mut self, families: impl Iterator<Item = u32>) {
        if self.gather {
            self.families.extend(families);
        }
    }
}

/// The family memos kept, and roughly how many bytes they hold.
#[derive(Default)]
struct Memos {
    by_family: HashMap<u32, Arc<FamilyMemo>>,
    bytes: usize,
}

/// One event of a [`FamilyMemo`].
#[derive(Clone)]
struct MemoEntry {
    ix: Indexed,
    /// Where its people are in [`FamilyMemo::people`].
    people: (u32, u32),
    /// Where its event id and summary are in [`FamilyMemo::texts`] (start, end of the id, end
    /// of the summary); `None` when it has no timeline line, which would be a bug.
    text: Option<(u32, u32, u32)>,
    /// Whether its content was erased.
    erased: bool,
    /// Whether its summary was deferred and not yet read when the memo was made (it is then
    /// looked up on its line, or read from the log, when shown).
    deferred: bool,
}

impl FamilyMemo {
    /// The people of event `e` (one of `entries`).
    fn people_of(&self, e: &MemoEntry) -> &[u32] {
        &self.people[e.people.0 as usize..e.people.1 as usize]
    }

    /// The bytes it holds, with its view cache.
    fn held(&self) -> usize {
        self.bytes + self.view.get().map_or(0, |v| v.bytes)
    }

    /// Roughly the bytes of its own parts (what [`FamilyMemo::bytes`] holds).
    fn own_bytes(&self) -> usize {
        self.texts.len()
            + self.entries.len() * std::mem::size_of::<MemoEntry>()
            + self.people.len() * 4
    }
}

/// What every read of a family needs that only its events, links and consents change.
#[derive(Clone)]
struct FamilyMemo {
    /// The family's events, newest first.
    entries: Vec<MemoEntry>,
    /// The person of each subject record of each event (in the order of its line's
    /// records), one event after another.
    people: Vec<u32>,
    /// Standing facts folded from the events.
    facts: FamilyFacts,
    /// The ids of the consents naming any member.
    consents: Vec<String>,
    /// For each member (as in `persons`), the positions in `consents` of those naming one of
    /// the member's records. Whether they are in force, and for whom, is decided per read.
    naming: Vec<Vec<u32>>,
    /// The family's public id.
    family_id: String,
    /// The members: index and public id.
    persons: Vec<(u32, String)>,
    /// The events' ids and summaries, one after another: a page of the timeline is copied
    /// from here rather than from lines all over memory (those reads were most of its cost).
    texts: String,
    /// Roughly the bytes it holds (counted in [`Memos::bytes`]).
    bytes: usize,
    /// The family (its index in the linker).
    family: u32,
    /// What the family view folds of each event, read from the log by the first family view
    /// of this memo (counted in [`Memos::bytes`] once kept).
    view: std::sync::OnceLock<Arc<ViewCache>>,
}

/// What the family view folds of each event of a [`FamilyMemo`] (a family view reads the log
/// only the first time).
struct ViewCache {
    /// One per entry of the memo, in its order: the record of the event's first subject, and
    /// its fact; `None` when its content was erased (nothing is folded, as it is not counted).
    facts: Vec<Option<(Option<u32>, ViewFact)>>,
    /// Roughly the bytes it holds.
    bytes: usize,
}

/// The events of a family a reader may see, as [`Projection::family_access`] chose them.
pub struct FamilyEvents {
    /// The memo they were chosen from.
    memo: Option<Arc<FamilyMemo>>,
    /// Their places in the memo's entries, oldest first.
    chosen: Vec<u32>,
}

impl FamilyEvents {
    /// How many there are.
    pub fn len(&self) -> usize {
        self.chosen.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }

    /// Their log offsets, oldest first.
    pub fn offsets(&self) -> Vec<u64> {
        match &self.memo {
            Some(m) => self
                .chosen
                .iter()
                .map(|&i| m.entries[i as usize].ix.offset)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Families whose memo is kept at most (beyond it, all are dropped and worked out again).
const MEMO_FAMILIES: usize = 20_000;
/// Bytes of memos kept at most, roughly (beyond it, all are dropped).
const MEMO_BYTES: usize = 256 << 20;

/// The partner keys of these subject records.
fn keys_of<'a>(l: &'a Linker, recs: &[u32]) -> Vec<&'a str> {
    recs.iter().map(|&r| l.record(r).key.as_str()).collect()
}

/// Whether a periodic snapshot is due, after entries whose re-applying costs
/// `replay_thirds` (thirds of an entry), `accesses` of them access entries, with the linker
/// holding `records` subject records: every [`SNAPSHOT_EVERY`] entries, or
/// [`SNAPSHOT_ENTRIES_PER_RECORD`] a record if that is more; and, however many records, after
/// as many access entries as [`SNAPSHOT_EVERY`] counts thirds of, so the access index that memory
/// holds until a snapshot stays as small as in a small county.
fn snapshot_due(replay_thirds: u64, accesses: u64, records: u64) -> bool {
    let every = SNAPSHOT_EVERY.max(SNAPSHOT_ENTRIES_PER_RECORD.saturating_mul(records));
    replay_thirds >= every.saturating_mul(3) || accesses >= 3 * SNAPSHOT_EVERY
}

impl State {
    /// What re-applying the entries since the last snapshot would cost, in thirds of an
    /// entry: an access entry counts [`ACCESS_ENTRY_THIRDS`], any other entry three.
    fn replay_since_snapshot(&self) -> u64 {
        let others = self.since_snapshot - self.accesses_since_snapshot;
        3 * others + ACCESS_ENTRY_THIRDS * self.accesses_since_snapshot
    }

    fn empty() -> Self {
        State {
            linker: Linker::new(),
            next_offset: 0,
            last_hash: [0; 32],
            since_snapshot: 0,
            accesses_since_snapshot: 0,
            by_record: Vec::new(),
            unadded: Vec::new(),
            lines: Vec::new(),
            metas: Vec::new(),
            meta_ids: HashMap::default(),
            access: AccessState::default(),
            broken: None,
            memo: std::sync::Mutex::new(Memos::default()),
        }
    }

    /// The memo of family `fam`, worked out now if it is not kept.
    fn family_memo(&self, fam: u32) -> Arc<FamilyMemo> {
        let kept = self
            .memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_family
            .get(&fam)
            .cloned();
        if let Some(m) = kept {
            return m;
        }
        let l = &self.linker;
        let index = self.entries_of(l.family_records(fam));
        let facts = self.family_facts(&index);
        let mut people = Vec::with_capacity(index.len() * 2);
        let mut entries = Vec::with_capacity(index.len());
        let mut texts = String::new();
        for ix in index {
            let from = people.len() as u32;
            let line = self.lines.get(ix.offset as usize).and_then(Option::as_ref);
            let text = line.map(|line| {
                people.extend(line.records.iter().map(|&r| l.person_of(r)));
                let start = texts.len() as u32;
                texts.push_str(&line.event_id);
                let id_end = texts.len() as u32;
                // A deferred summary not yet read is looked up on the line when shown.
                texts.push_str(line.summary.text().unwrap_or_default());
                (start, id_end, texts.len() as u32)
            });
            entries.push(MemoEntry {
                ix,
                people: (from, people.len() as u32),
                text,
                erased: line.is_some_and(|line| line.erased.is_some()),
                deferred: line.is_some_and(|line| line.summary.text().is_none()),
            });
        }
        let named = self.consents_naming(l.family_records(fam));
        let persons: Vec<(u32, String)> = l
            .family_persons(fam)
            .into_iter()
            .map(|p| (p, l.person_id(p)))
            .collect();
        let naming = persons
            .iter()
            .map(|&(p, _)| {
                let keys = keys_of(l, l.person_records(p));
                (0u32..)
                    .zip(&named)
                    .filter(|(_, (c, _))| c.names_any(&keys))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let mut memo = FamilyMemo {
            entries,
            people,
            facts,
            consents: named.iter().map(|(c, _)| c.consent_id.clone()).collect(),
            naming,
            family_id: l.family_id(fam),
            persons,
            texts,
            bytes: 0,
            family: fam,
            view: std::sync::OnceLock::new(),
        };
        memo.bytes = memo.own_bytes();
        let bytes = memo.bytes;
        let memo = Arc::new(memo);
        let mut kept = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if kept.by_family.len() >= MEMO_FAMILIES || kept.bytes + bytes > MEMO_BYTES {
            *kept = Memos::default();
        }
        kept.bytes += bytes;
        kept.by_family.insert(fam, memo.clone());
        memo
    }

    /// Replaces the kept memo of family `fam`, if some of its deferred summaries were read
    /// since it was made, with one holding them in its texts (a page is copied from there:
    /// looking each up on its line is a few cache misses per event). Its view cache is kept.
    fn refresh_texts(&self, fam: u32) {
        let mut kept = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = kept.by_family.get(&fam).cloned() else {
            return;
        };
        let read = |e: &MemoEntry| e.deferred.then(|| self.summary_read(e.ix.offset)).flatten();
        if !old.entries.iter().any(|e| read(e).is_some()) {
            return;
        }
        let mut fresh = FamilyMemo::clone(&old);
        fresh.texts = String::with_capacity(old.texts.len());
        for (e, was) in fresh.entries.iter_mut().zip(&old.entries) {
            let Some((start, id_end, end)) = was.text else {
                continue;
            };
            let from = fresh.texts.len() as u32;
            fresh
                .texts
                .push_str(&old.texts[start as usize..id_end as usize]);
            let id = fresh.texts.len() as u32;
            match read(was) {
                Some(summary) => {
                    fresh.texts.push_str(summary);
                    e.deferred = false;
                }
                None => fresh
                    .texts
                    .push_str(&old.texts[id_end as usize..end as usize]),
            }
            e.text = Some((from, id, fresh.texts.len() as u32));
        }
        fresh.bytes = fresh.own_bytes();
        kept.bytes = kept.bytes.saturating_sub(old.held()) + fresh.held();
        kept.by_family.insert(fam, Arc::new(fresh));
    }

    /// Adds a line to the in-memory index (with the text the decoding thread made of it,
    /// if it did).
    fn index(&mut self, offset: u64, line: &mut Line) {
        let slot = offset as usize;
        if self.lines.len() <= slot {
            self.lines.resize_with(slot + 1, || None);
        }
        let mut text = line
            .text
            .take()
            .unwrap_or_else(|| Box::new(LineText::of(line)));
        text.records = LineRecords::of(&line.records);
        self.lines[slot] = Some(text);
        let metas = &self.metas;
        let found = self.meta_ids.get(line.kind.as_str()).and_then(|ids| {
            ids.iter().copied().find(|&m| {
                let (source, _, category, safeguarding) = &metas[m as usize];
                *source == line.source
                    && *category == line.category
                    && *safeguarding == line.safeguarding
            })
        });
        let meta = match found {
            Some(m) => m,
            None => {
                let m = self.metas.len() as u32;
                self.metas.push((
                    line.source.clone(),
                    line.kind.clone(),
                    line.category,
                    line.safeguarding,
                ));
                self.meta_ids.entry(line.kind.clone()).or_default().push(m);
                m
            }
        };
        let entry = Indexed {
            at: Timestamp(line.at),
            offset,
            meta,
        };
        self.unadded
            .extend(line.records.iter().map(|&r| (r, entry)));
    }

    /// Adds the entries [`State::index`] gathered to their records' lists, in the order
    /// indexed. Called once per batch, before the state's lock is let go: each add is a likely
    /// cache miss (the record's list), and in a loop of their own the misses overlap, where
    /// between linking's work each was waited for alone (about 6% of applying, profiled).
    fn add_indexed(&mut self) {
        let mut unadded = std::mem::take(&mut self.unadded);
        if let Some(&(last, _)) = unadded.iter().max_by_key(|(r, _)| *r) {
            if self.by_record.len() <= last as usize {
                self.by_record
                    .resize_with(last as usize + 1, RecordEvents::default);
            }
        }
        for (r, entry) in unadded.drain(..) {
            self.by_record[r as usize].add(entry);
        }
        self.unadded = unadded;
    }

    /// Links event `ev` (at `offset`), then indexes its line (with the records the linker
    /// gave) and queues it for the store; notes the families it is about in `stale`.
    fn add_event<P>(
        &mut self,
        offset: u64,
        ev: &Event<P>,
        line: Box<Line>,
        lines: &mut Vec<(u64, Box<Line>)>,
        stale: &mut Stale,
    ) {
        let records = self.linker.apply_event(offset, ev);
        self.add_line(offset, records, line, lines, stale);
    }

    /// [`State::add_event`] for a sealed event read in place.
    fn add_in_place(
        &mut self,
        offset: u64,
        ev: &inplace::SealedAt,
        line: Box<Line>,
        lines: &mut Vec<(u64, Box<Line>)>,
        stale: &mut Stale,
    ) {
        let records =
            self.linker
                .apply_subjects(offset, &line.source, ev.subjects(), &ev.relationships);
        self.add_line(offset, records, line, lines, stale);
    }

    /// Indexes `line` of the event at `offset` about `records` (as the linker gave them) and
    /// queues it for the store; notes the families it is about in `stale`.
    fn add_line(
        &mut self,
        offset: u64,
        records: Vec<u32>,
        mut line: Box<Line>,
        lines: &mut Vec<(u64, Box<Line>)>,
        stale: &mut Stale,
    ) {
        line.records = records;
        line.records.sort_unstable();
        line.records.dedup();
        stale.note(line.records.iter().map(|&r| self.linker.family_of(r)));
        self.index(offset, &mut line);
        lines.push((offset, line));
    }

    /// Applies erasure `x` (at log offset `at`) to the lines in memory and to those of this
    /// batch not yet stored.
    fn erase_lines(&mut self, at: u64, x: &Erasure, lines: &mut [(u64, Box<Line>)]) {
        let mark = ErasedMark::of(x);
        let label = x.reason.label();
        for &off in x.offsets.iter().filter(|&&o| o < at) {
            if let Some(Some(lt)) = self.lines.get_mut(off as usize) {
                if mark.replaces(lt.erased.as_deref()) {
                    lt.summary = Summary::Text(seal::erased_marker(label, mark.at).into());
                    lt.fact = None;
                    lt.erased = Some(Box::new(mark.clone()));
                }
            }
            if let Ok(i) = lines.binary_search_by_key(&off, |(o, _)| *o) {
                lines[i].1.erase(&mark, label);
            }
        }
    }

    /// The persons of family `fam` whose content `rule` says is due for erasure at `now`
    /// and who still have content that is not erased.
    fn due_in_family(&self, fam: u32, rule: &seal::RetentionRule, now: Timestamp) -> Vec<String> {
        let l = &self.linker;
        // The newest event of the family: each record's list is in time order.
        let last = l
            .family_records(fam)
            .iter()
            .filter_map(|&r| self.by_record.get(r as usize).and_then(|v| v.last()))
            .map(|x| x.at)
            .max();
        let Some(last) = last else {
            return Vec::new();
        };
        if !rule.due(None, last, false, now) {
            return Vec::new();
        }
        let index = self.entries_of(l.family_records(fam));
        let involved = self
            .family_facts(&index)
            .involvements
            .iter()
            .any(|(_, open)| *open);
        let mut due = Vec::new();
        for p in l.family_persons(fam) {
            let recs = l.person_records(p);
            let dob = recs.iter().find_map(|&x| l.record(x).dob);
            if !rule.due(dob, last, involved, now) {
                continue;
            }
            let has_content = self.entries_of(recs).iter().any(|x| {
                self.lines
                    .get(x.offset as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|lt| lt.erased.is_none())
            });
            if has_content {
                due.push(l.person_id(p));
            }
        }
        due
    }

    /// The summary of the line at `offset` where it is known: `None` when it is deferred and
    /// not yet read (or there is no line).
    fn summary_read(&self, offset: u64) -> Option<&str> {
        self.line(offset).and_then(|lt| lt.summary.text())
    }

    /// Keeps `text`, read from the log, as the summary of the line at `offset`, if that was
    /// deferred and not yet read (an erasure since has replaced it with its marker).
    fn keep_summary(&self, offset: u64, text: impl FnOnce() -> String) {
        if let Some(LineText {
            summary: Summary::Deferred(cell),
            ..
        }) = self.line(offset)
        {
            if cell.get().is_none() {
                let _ = cell.set(text().into());
            }
        }
    }

    /// The line at `offset`, if the entry there is an event.
    fn line(&self, offset: u64) -> Option<&LineText> {
        self.lines.get(offset as usize).and_then(|l| l.as_deref())
    }

    fn event_meta(&self, ix: &Indexed) -> EventMeta<'_> {
        let (source, kind, category, safeguarding) = &self.metas[ix.meta as usize];
        EventMeta {
            offset: ix.offset,
            occurred_at: ix.at,
            source,
            kind,
            category: *category,
            safeguarding: *safeguarding,
        }
    }

    /// The consents naming any of `records`, each with the time it was withdrawn from.
    fn consents_naming(&self, records: &[u32]) -> Vec<(&ConsentGiven, Option<Timestamp>)> {
        let mut ids: Vec<&str> = Vec::new();
        for &r in records {
            ids.extend(self.access.consents_of(&self.linker.record(r).key));
        }
        ids.sort_unstable();
        ids.dedup();
        self.consents_by_id(ids)
    }

    /// The consents with these ids, each with the time it was withdrawn from.
    fn consents_by_id<'a>(
        &'a self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(&'a ConsentGiven, Option<Timestamp>)> {
        ids.into_iter()
            .filter_map(|id| self.consent_by_id(id))
            .collect()
    }

    /// The consent with this id, with the time it was withdrawn from.
    fn consent_by_id(&self, id: &str) -> Option<(&ConsentGiven, Option<Timestamp>)> {
        self.access
            .consents
            .get(id)
            .map(|c| (c, self.access.withdrawn.get(id).copied()))
    }

    /// Folds standing facts from the family's events (`newest_first`, as [`State::entries_of`]
    /// gives them).
    fn family_facts(&self, newest_first: &[Indexed]) -> FamilyFacts {
        let mut facts = FamilyFacts::default();
        for ix in newest_first.iter().rev() {
            let m = self.event_meta(ix);
            facts.add(Fact::Event {
                source: m.source,
                kind: m.kind,
            });
            let line = self.lines.get(ix.offset as usize).and_then(Option::as_ref);
            match line.and_then(|l| l.fact.as_deref()) {
                Some(LineFact::Lead {
                    practitioner_id,
                    organisation,
                }) => facts.add(Fact::Lead {
                    practitioner_id,
                    organisation,
                }),
                Some(LineFact::Team { attendees }) => facts.add(Fact::Team {
                    attendees,
                    at: ix.at,
                }),
                None => {}
            }
        }
        facts
    }

    /// Decides standing for a read of family `fam` (whose events are `family_entries`) and
    /// fills in `reading`. `None`: refused.
    fn gate<'a>(
        &'a self,
        memo: &FamilyMemo,
        read: &ReadAs<'a>,
        reading: &mut Reading,
    ) -> Option<Gate<'a>> {
        reading.family_id = memo.family_id.clone();
        reading.person_ids = memo.persons.iter().map(|(_, id)| id.clone()).collect();
        let (viewer, now, grant) = match *read {
            ReadAs::Everything => {
                return Some(Gate {
                    viewer: None,
                    seen: Vec::new(),
                })
            }
            ReadAs::Viewer { viewer, now, grant } => (viewer, now, grant),
        };
        let held = self
            .access
            .grants
            .iter()
            .filter(|g| {
                g.user_id == viewer.user_id
                    && (g.family_id == reading.family_id
                        || g.person_ids.iter().any(|p| reading.person_ids.contains(p)))
            })
            .map(|g| g.until)
            .chain(grant)
            .max();
        let Some(standing) = access::standing(viewer, &memo.facts, held, now) else {
            reading.refused = true;
            reading.standing = if viewer.reads_families() {
                "no relationship to this family: not its lead practitioner, not in its team around the family, and your organisation has no open involvement; break glass with a reason if a child is at risk".into()
            } else {
                "your role does not read families (practitioners and safeguarding leads do)".into()
            };
            return None;
        };
        reading.break_glass = matches!(standing, Standing::BreakGlass(_));
        reading.standing = standing.describe();
        // Consent is decided once per member and category here, not once per event, from
        // the consents the memo found naming each member.
        let consents: Vec<_> = memo
            .consents
            .iter()
            .map(|id| self.consent_by_id(id))
            .collect();
        let seen = if consents.iter().all(Option::is_none) {
            Vec::new()
        } else {
            memo.persons
                .iter()
                .zip(&memo.naming)
                .map(|(&(p, _), naming)| {
                    let bits = access::granted_categories(
                        naming.iter().filter_map(|&i| consents[i as usize]),
                        &viewer.organisation,
                        now,
                    );
                    (p, bits)
                })
                .collect()
        };
        Some(Gate {
            viewer: Some((viewer, now)),
            seen,
        })
    }

    /// Whether the gate lets the event at `ix` through; counts what it withholds.
    fn allowed(
        &self,
        gate: &Gate<'_>,
        ix: &Indexed,
        people: &[u32],
        reading: &mut Reading,
    ) -> bool {
        let Some((viewer, now)) = gate.viewer else {
            return true;
        };
        let m = self.event_meta(ix);
        let event = EventFacts {
            source: m.source,
            category: m.category,
            safeguarding: m.safeguarding,
        };
        let l = &self.linker;
        let bit = m.category.bit();
        let consented = || {
            // No consent names the family: at least one person of every family event is a
            // member without consent.
            if gate.seen.is_empty() {
                return false;
            }
            if people.is_empty() {
                return false;
            }
            people.iter().all(|&p| {
                let bits = match gate.seen.iter().find(|(q, _)| *q == p) {
                    Some(&(_, bits)) => bits,
                    // Someone outside the family: their own consents decide.
                    None => {
                        let recs = l.person_records(p);
                        access::consented_categories(
                            self.consents_naming(recs),
                            &keys_of(l, recs),
                            &viewer.organisation,
                            now,
                        )
                    }
                };
                bits & bit != 0
            })
        };
        match access::decide(viewer, &event, consented) {
            Ok(()) => true,
            Err(w) => {
                reading.count(w);
                false
            }
        }
    }

    /// The index entries of the records, newest first, without duplicates.
    fn entries_of(&self, recs: &[u32]) -> Vec<Indexed> {
        let lists = || recs.iter().filter_map(|&r| self.by_record.get(r as usize));
        let mut all: Vec<Indexed> = Vec::with_capacity(lists().map(|l| l.len()).sum());
        for list in lists() {
            all.extend_from_slice(list);
        }
        all.sort_unstable_by_key(|x| std::cmp::Reverse((x.at, x.offset)));
        all.dedup_by_key(|x| x.offset);
        all
    }
}

/// A log entry decoded, with the parts of its timeline line that need no linking. Events and
/// lines are boxed (a decoded entry is 80 bytes, not 544): the applying thread moves each
/// decoded entry of a batch, and each line into the batch's lines, and copying them had been
/// about 4% of its samples.
enum Decoded {
    Event(Box<Event>, Box<Line>),
    /// A sealed event not opened here: linked as usual, its line's summary deferred to its
    /// first read, or its content gone (a key an erasure destroyed).
    Sealed(Box<Event<Sealed>>, Box<Line>),
    /// The same, read in place ([`inplace`]): what linking needs of it, without the event.
    InPlace(inplace::SealedAt, Box<Line>),
    Decision(Box<tellonce_domain::identity::MatchDecision>),
    Consent(Box<ConsentGiven>),
    Withdrawn(Box<ConsentWithdrawn>),
    Sharing(Box<SharingDecision>),
    Access(Box<AccessEntry>),
    Erasure(Box<Erasure>),
    /// Entries the projections do not use (checkpoints).
    Other,
}

/// What applying a batch leaves behind: freed by the caller, off the thread that applies.
/// In a rebuild its emptied lists go back to the applying thread for the next batch, and the
/// decoded batch's list to the thread that decodes the next (see [`Spent::clear`]).
#[derive(Default)]
struct Spent {
    entries: Vec<Vec<StoredEntry>>,
    /// The batch's entries' places.
    heads: Vec<EntryAt>,
    // Boxed as decoded: moving an event out of its box would free the box here, on the
    // applying thread, instead of on the thread that allocated it.
    #[allow(clippy::vec_box)]
    events: Vec<Box<Event>>,
    /// Sealed events applied without opening them, read the general way.
    #[allow(clippy::vec_box)]
    sealed: Vec<Box<Event<Sealed>>>,
    /// Sealed events applied without opening them, read in place (most, in a rebuild).
    in_place: Vec<inplace::SealedAt>,
    lines: Vec<(u64, Box<Line>)>,
    /// The batch's decoded entries' list, emptied.
    decoded: Vec<DecodeResult>,
}

impl Spent {
    /// Frees what it holds, keeping its lists' room, and hands over the lists of the batch's
    /// entries' places and decoded entries, emptied, for the next batch read. A list of a
    /// batch's size is large enough that a fresh one was memory the kernel zeroed and faulted
    /// in: reusing them saved that on every batch.
    fn clear(&mut self) -> (Vec<EntryAt>, Vec<DecodeResult>) {
        self.entries.clear();
        self.events.clear();
        self.sealed.clear();
        self.in_place.clear();
        self.lines.clear();
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        (heads, std::mem::take(&mut self.decoded))
    }
}

/// What a decoding thread is handed to free: what applying a batch it decoded left behind,
/// or that batch's lines, once stored.
enum Garbage {
    /// What applying a batch left behind ([`Spent`]).
    Batch(Spent),
    /// A batch's lines, stored.
    Lines(Vec<(u64, Box<Line>)>),
}

/// Where an entry is in the log: what applying it needs besides what decoding it gave (so
/// a rebuild decodes entries where the log read them, and copies none).
#[derive(Debug, Clone, Copy)]
struct EntryAt {
    offset: u64,
    prev_hash: Hash,
    hash: Hash,
}

impl EntryAt {
    fn of(e: EntryView<'_>) -> Self {
        EntryAt {
            offset: e.offset,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }

    /// The places of `entries`.
    fn all(entries: &[StoredEntry]) -> Vec<EntryAt> {
        entries.iter().map(|e| EntryAt::of(e.view())).collect()
    }
}

/// What decoding one entry gave.
type DecodeResult = Result<Decoded, Undecodable>;

/// Why an entry could not be decoded.
enum Undecodable {
    /// The body is not a record this version knows: skipped, visibly.
    Record(DecodeError),
    /// A sealed event whose keys are missing or wrong: the projection must stop.
    Keys(String),
}

fn line_of<P>(ev: &Event<P>, kind: &str, summary: String, fact: Option<LineFact>) -> Line {
    let meta = LineMeta {
        at: ev.occurred_at,
        source: &ev.source,
        kind,
        event_id: &ev.event_id,
        category: ev.category,
        safeguarding: access::is_safeguarding(ev.lawful_basis.as_ref()),
    };
    meta.line(summary, fact)
}

/// What a line says of its event besides its summary and facts.
struct LineMeta<'a> {
    at: Timestamp,
    source: &'a str,
    kind: &'a str,
    event_id: &'a str,
    /// The category the event states.
    category: Option<Category>,
    safeguarding: bool,
}

impl LineMeta<'_> {
    /// The line, with `summary` and `fact`.
    fn line(&self, summary: String, fact: Option<LineFact>) -> Line {
        Line {
            at: self.at.0,
            source: self.source.to_string(),
            kind: self.kind.to_string(),
            event_id: self.event_id.to_string(),
            summary,
            records: Vec::new(),
            category: access::category_of(self.kind, self.category),
            safeguarding: self.safeguarding,
            fact,
            erased: None,
            sealed: None,
            deferred: false,
            head: None,
            text: None,
        }
    }
}

/// Whether the standing facts need the payload of an event of this kind ([`LineFact`], as
/// [`plain_event`] takes it): those of a sealed event are opened when it is applied, the rest
/// are read the first time they are shown.
fn standing_reads_payload(kind: &str) -> bool {
    matches!(
        kind,
        "lead_practitioner_assigned" | "team_around_family_meeting"
    )
}

fn plain_event(ev: Event) -> Decoded {
    let fact = match &ev.payload {
        Payload::LeadPractitionerAssigned {
            practitioner_id,
            organisation,
            ..
        } => Some(LineFact::Lead {
            practitioner_id: practitioner_id.clone(),
            organisation: organisation.clone(),
        }),
        Payload::TeamAroundFamilyMeeting { attendees, .. } => Some(LineFact::Team {
            attendees: attendees.clone(),
        }),
        _ => None,
    };
    let line = line_of(&ev, ev.payload.kind(), view::summary_line(&ev), fact);
    Decoded::Event(Box::new(ev), Box::new(line))
}

/// What opening a sealed event found.
enum Opened {
    /// Opened: the event, its key ids, and its key (derived from its subjects' keys).
    Event(Event, Vec<String>, seal::EventKey),
    /// Erased: the earliest erasure that destroyed one of its keys, and its label.
    Erased(Event<Sealed>, ErasedMark, String),
}

/// Looks up the keys `ids` in `keys` with `lookup` ([`KeyView::get`], or [`KeyView::state`]
/// where only whether they are live counts), for `what`, giving each live one to `live`;
/// `Ok(Some(..))` when an erasure destroyed one (the earliest such erasure, and its label);
/// `Err` when a key is missing without a record of erasing it, or there is no key store.
fn check_keys<'k, K>(
    keys: Option<&KeyView<'k>>,
    ids: impl IntoIterator<Item = impl AsRef<str>>,
    what: impl Fn() -> String,
    lookup: impl Fn(&KeyView<'k>, &str) -> KeyState<K>,
    mut live: impl FnMut(K),
) -> Result<Option<(ErasedMark, String)>, String> {
    let Some(ks) = keys else {
        return Err(format!(
            "{} is sealed but this hub has no key store; give it the key store the log was written with",
            what()
        ));
    };
    let mut erased: Option<(ErasedMark, String)> = None;
    for id in ids {
        let id = id.as_ref();
        match lookup(ks, id) {
            KeyState::Live(k) => live(k),
            KeyState::Erased(t) => {
                let mark = ErasedMark {
                    at: t.erased_at,
                    erasure_id: t.erasure_id,
                };
                if mark.replaces(erased.as_ref().map(|(m, _)| m)) {
                    erased = Some((mark, t.label));
                }
            }
            KeyState::Missing => {
                return Err(format!(
                    "the key store has no key {id} for {} and no record of erasing it; restore the key store from backup",
                    what()
                ))
            }
        }
    }
    Ok(erased)
}

/// The keys `ids` from `keys`, for `what` ([`check_keys`]); `Ok(Err(..))` when an erasure
/// destroyed one.
#[allow(clippy::type_complexity)]
fn gather_keys(
    keys: Option<&KeyView<'_>>,
    ids: &[impl AsRef<str>],
    what: impl Fn() -> String,
) -> Result<Result<Vec<DataKey>, (ErasedMark, String)>, String> {
    let mut raw = Vec::with_capacity(ids.len());
    Ok(
        match check_keys(keys, ids, what, KeyView::get, |k| raw.push(k))? {
            Some(e) => Err(e),
            None => Ok(raw),
        },
    )
}

/// A sealed event whose summary is deferred to its first read: linked and indexed from its
/// envelope, its payload not opened. Its keys are still checked, so that a key store that lost
/// them stops the projection here, as opening would, and a key an erasure destroyed marks the
/// line erased.
fn deferred_event(se: Event<Sealed>, keys: Option<&KeyView<'_>>) -> Result<Decoded, String> {
    let line = line_of(&se, &se.payload.kind, String::new(), None);
    let line = deferred_line(line, keys, &se.payload.keys)?;
    Ok(Decoded::Sealed(Box::new(se), Box::new(line)))
}

/// [`deferred_event`] for a sealed event read in place, its keys' check put off to `checks`
/// (its line made as if they are live).
fn deferred_in_place(ev: inplace::EventRef<'_>, checks: &mut KeyChecks) -> Decoded {
    let meta = LineMeta {
        at: ev.occurred_at,
        source: ev.source.as_str(),
        kind: ev.payload.kind.as_str(),
        event_id: ev.event_id.as_str(),
        category: ev.category,
        safeguarding: ev.safeguarding(),
    };
    let mut line = meta.line(String::new(), None);
    line.deferred = true;
    checks.put_off(&ev.payload.keys);
    Decoded::InPlace(ev.kept(), Box::new(line))
}

/// The key checks of the events a [`Decoder`] read in place, put off to the end of its batch:
/// each is a likely cache miss in the key store's table, and in a loop of their own the misses
/// overlap, where between decoding's work each was waited for alone (about a tenth of a
/// decoding thread's time, profiled).
#[derive(Default)]
struct KeyChecks {
    /// The ids, one after another.
    ids: String,
    /// Where each id ends in `ids`.
    ends: Vec<usize>,
    /// Per event put off: its place in the batch and how many ids `ends` has with its own.
    events: Vec<(usize, usize)>,
    /// The place in the batch of the event being decoded.
    at: usize,
}

impl KeyChecks {
    /// Puts off checking `ids`, the keys of the event being decoded.
    fn put_off(&mut self, ids: &[impl AsRef<str>]) {
        for id in ids {
            self.ids.push_str(id.as_ref());
            self.ends.push(self.ids.len());
        }
        self.events.push((self.at, self.ends.len()));
    }

    /// Checks the keys put off, as [`deferred_line`] would have: the line of an event with a
    /// key an erasure destroyed is erased, and an event with a missing key becomes `Err`.
    /// `batch` is the batch the events were decoded into.
    fn settle(&mut self, batch: &mut [DecodeResult], keys: Option<&KeyView<'_>>) {
        let (mut id, mut start) = (0, 0);
        for &(at, ids_to) in &self.events {
            let ids = self.ends[id..ids_to]
                .iter()
                .map(|&end| &self.ids[std::mem::replace(&mut start, end)..end]);
            id = ids_to;
            let Some(Ok(Decoded::InPlace(_, line))) = batch.get_mut(at) else {
                continue;
            };
            let what = || format!("event {}/{}", line.source, line.event_id);
            match check_keys(keys, ids, what, KeyView::state, |()| {}) {
                Ok(None) => {}
                Ok(Some((mark, label))) => {
                    line.erase(&mark, &label);
                    line.write_head();
                    line.make_text();
                }
                Err(why) => batch[at] = Err(Undecodable::Keys(why)),
            }
        }
        self.ids.clear();
        self.ends.clear();
        self.events.clear();
    }
}

/// Decodes a batch of entries, one after another, with the key checks of those read in place
/// put off to the end ([`KeyChecks`]).
struct Decoder<'k, 'v> {
    keys: Option<&'k KeyView<'v>>,
    checks: KeyChecks,
}

impl<'k, 'v> Decoder<'k, 'v> {
    /// A decoder checking keys in `keys`.
    fn new(keys: Option<&'k KeyView<'v>>) -> Self {
        Decoder {
            keys,
            checks: KeyChecks::default(),
        }
    }

    /// Decodes `e` onto the end of `batch` (its key checks may be left to [`Decoder::finish`]).
    fn push(&mut self, e: EntryView<'_>, batch: &mut Vec<DecodeResult>) {
        self.checks.at = batch.len();
        batch.push(decode_one(e, self));
    }

    /// Makes the key checks left for `batch`: its results are then final.
    fn finish(&mut self, batch: &mut [DecodeResult]) {
        self.checks.settle(batch, self.keys);
    }
}

/// `line` (of a sealed event, without a summary) deferred, or erased where an erasure
/// destroyed one of its keys `ids`; `Err` where a key is missing.
fn deferred_line(
    mut line: Line,
    keys: Option<&KeyView<'_>>,
    ids: &[impl AsRef<str>],
) -> Result<Line, String> {
    let what = || format!("event {}/{}", line.source, line.event_id);
    // Only whether the keys are there: the payload is not opened now.
    match check_keys(keys, ids, what, KeyView::state, |()| {})? {
        Some((mark, label)) => {
            line.erase(&mark, &label);
        }
        None => line.deferred = true,
    }
    Ok(line)
}

/// Opens a sealed event with the keys in `keys`.
fn open_sealed(mut se: Event<Sealed>, keys: Option<&KeyView<'_>>) -> Result<Opened, String> {
    let what = || format!("event {}/{}", se.source, se.event_id);
    let raw = match gather_keys(keys, &se.payload.keys, what)? {
        Ok(raw) => raw,
        Err((mark, label)) => return Ok(Opened::Erased(se, mark, label)),
    };
    match seal::open_keyed(&se, &raw) {
        Ok((payload, key)) => {
            // The sealed form is dropped here: its key ids move rather than being copied.
            let ids = std::mem::take(&mut se.payload.keys);
            Ok(Opened::Event(se.with_payload(payload), ids, key))
        }
        Err(e) => Err(format!("event {}/{}: {e}", se.source, se.event_id)),
    }
}

/// Decodes `e` with `d`'s keys, the key checks of an event read in place put off to `d`.
fn decode_one(e: EntryView<'_>, d: &mut Decoder<'_, '_>) -> Result<Decoded, Undecodable> {
    let mut decoded = decode_record(e, d)?;
    if let Decoded::Event(_, line) | Decoded::Sealed(_, line) | Decoded::InPlace(_, line) =
        &mut decoded
    {
        line.write_head();
        line.make_text();
    }
    Ok(decoded)
}

fn decode_record(e: EntryView<'_>, d: &mut Decoder<'_, '_>) -> Result<Decoded, Undecodable> {
    // Most entries are sealed events applied without opening their payloads: read in place.
    if let Some(ev) = inplace::EventRef::read(e.body) {
        if !standing_reads_payload(ev.payload.kind.as_str()) {
            return Ok(deferred_in_place(ev, &mut d.checks));
        }
    }
    let keys = d.keys;
    Ok(match Record::decode(e.body).map_err(Undecodable::Record)? {
        Record::PartnerEvent(ev) => plain_event(ev),
        Record::SealedEvent(se) if !standing_reads_payload(&se.payload.kind) => {
            deferred_event(se, keys).map_err(Undecodable::Keys)?
        }
        Record::SealedEvent(se) => match open_sealed(se, keys).map_err(Undecodable::Keys)? {
            Opened::Event(ev, ids, key) => match plain_event(ev) {
                Decoded::Event(ev, mut line) => {
                    line.seal_summary(e.offset, ids, &key);
                    Decoded::Event(ev, line)
                }
                other => other,
            },
            Opened::Erased(se, mark, label) => {
                let mut line = line_of(&se, &se.payload.kind, String::new(), None);
                line.erase(&mark, &label);
                Decoded::Sealed(Box::new(se), Box::new(line))
            }
        },
        Record::MatchDecision(d) => Decoded::Decision(Box::new(d)),
        Record::ConsentGiven(c) => Decoded::Consent(Box::new(c)),
        Record::ConsentWithdrawn(w) => Decoded::Withdrawn(Box::new(w)),
        Record::SharingDecision(d) => Decoded::Sharing(Box::new(d)),
        Record::Access(a) => Decoded::Access(Box::new(a)),
        Record::Erasure(x) => Decoded::Erasure(Box::new(x)),
        Record::Checkpoint(_) => Decoded::Other,
    })
}

/// Checks that the entries of `entries` from `next` on continue the applied prefix (which
/// ends in `last_hash`): dense offsets, and each entry's `prev_hash` the hash of the one
/// before, so every entry the projection applies extends the hash chain it has checked so
/// far. Checked before anything is applied: a batch that breaks is applied not at all. The
/// log verified its chain when it opened, so a break means its files changed under the hub,
/// or an engine returned the wrong entries. (The embedded engine gives each entry of one read
/// the next entry's `prev_hash` as its hash and hashes only the read's last entry, so within a
/// read the chain holds by construction: an entry rewritten on disk after the open, its
/// checksum made to fit, is found by `log verify`, `audit verify` and the next open, not here.)
fn check_continues(entries: &[EntryAt], next: u64, last_hash: Hash) -> Result<(), ProjectionError> {
    let (mut offset, mut hash) = (next, last_hash);
    for e in entries.iter().filter(|e| e.offset >= next) {
        if e.offset != offset {
            return Err(ProjectionError::Damaged(format!(
                "expected log offset {offset}, got {}",
                e.offset
            )));
        }
        if e.prev_hash != hash {
            return Err(ProjectionError::Damaged(format!(
                "the log entry at offset {offset} does not follow the one before it (its previous hash differs): the log's hash chain is broken; run `tellonce log verify`"
            )));
        }
        (offset, hash) = (e.offset + 1, e.hash);
    }
    Ok(())
}

/// Decodes entries one after another on this thread onto the end of `out`: one result per
/// entry, in order. The key store is read under one lock for all of them.
fn decode_each(entries: &[StoredEntry], keys: Option<&KeyStore>, out: &mut Vec<DecodeResult>) {
    let view = keys.map(KeyStore::view);
    let mut d = Decoder::new(view.as_ref());
    out.reserve(entries.len());
    for e in entries {
        d.push(e.view(), out);
    }
    d.finish(out);
}

/// Runs `f`, which keeps its thread busy (decoding, applying), without holding up the other
/// tasks of the runtime worker it is called on: on a multi-threaded runtime they move to
/// another thread meanwhile (`block_in_place`). Elsewhere `f` just runs. The follower calls
/// this: a batch of a few hundred access entries takes a millisecond or more, and the reads
/// queued behind it on that worker waited for all of it.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Decodes entries, on two threads when there are many (decoding JSON is most of the cost of
/// applying the log, and needs no lock). One result per entry, in order.
fn decode_all(entries: &[StoredEntry], keys: Option<&KeyStore>) -> Vec<DecodeResult> {
    // Room for all at once: growing it would copy the first half's results.
    let mut out = Vec::with_capacity(entries.len());
    if entries.len() < 512 {
        decode_each(entries, keys, &mut out);
        return out;
    }
    let (a, b) = entries.split_at(entries.len() / 2);
    std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            let mut rest = Vec::new();
            decode_each(b, keys, &mut rest);
            rest
        });
        decode_each(a, keys, &mut out);
        match second.join() {
            Ok(rest) => out.extend(rest),
            // A panic in decoding is a bug; decode the rest here so nothing is skipped.
            Err(_) => decode_each(b, keys, &mut out),
        }
        out
    })
}

/// A line's subject records in memory: one or two (97% of the demo's events) inline, more on
/// the heap, so indexing a line makes no allocation for them on the applying thread (as a
/// `Box<[u32]>` it made one per event, of 4 or 8 bytes). The same size as that box.
#[derive(Debug, Clone)]
enum LineRecords {
    /// Up to two, [`LineRecords::NONE`] in a place not taken.
    Inline([u32; 2]),
    /// Three or more (or any equal to [`LineRecords::NONE`]).
    Heap(Box<[u32]>),
}

impl LineRecords {
    /// An inline place not taken.
    const NONE: u32 = u32::MAX;

    /// Holds `records`.
    fn of(records: &[u32]) -> Self {
        const NONE: u32 = LineRecords::NONE;
        match *records {
            [] => LineRecords::Inline([NONE, NONE]),
            [a] if a != NONE => LineRecords::Inline([a, NONE]),
            [a, b] if a != NONE && b != NONE => LineRecords::Inline([a, b]),
            _ => LineRecords::Heap(records.into()),
        }
    }
}

impl Default for LineRecords {
    fn default() -> Self {
        LineRecords::of(&[])
    }
}

impl std::ops::Deref for LineRecords {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            LineRecords::Inline(ids) => {
                let n = ids.iter().take_while(|&&r| r != LineRecords::NONE).count();
                &ids[..n]
            }
            LineRecords::Heap(ids) => ids,
        }
    }
}

impl PartialEq for LineRecords {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// The part of a [`Line`] kept in memory beside the index (time, source and kind are there).
#[derive(Debug, Clone, PartialEq)]
struct LineText {
    event_id: Box<str>,
    summary: Summary,
    records: LineRecords,
    fact: Option<Box<LineFact>>,
    erased: Option<Box<ErasedMark>>,
}

impl LineText {
    /// The text of `line`, without its records (they come from linking, when it is applied).
    fn of(line: &Line) -> LineText {
        LineText {
            event_id: line.event_id.as_str().into(),
            // (A deferred line's summary is empty: one with text, which only an altered
            // store could give, keeps it, so a comparison with a rebuild shows the change.)
            summary: match line.deferred && line.summary.is_empty() {
                true => Summary::Deferred(std::sync::OnceLock::new()),
                false => Summary::Text(line.summary.as_str().into()),
            },
            records: LineRecords::default(),
            fact: line.fact.clone().map(Box::new),
            erased: line.erased.clone().map(Box::new),
        }
    }
}

/// A timeline line's summary in memory.
#[derive(Debug, Clone)]
enum Summary {
    /// Worked out when the entry was applied (a plain event, a lead practitioner or TAF
    /// event, whose facts standing needs), or the erased marker.
    Text(Box<str>),
    /// A sealed event's, worked out from the log the first time a page of a timeline shows
    /// it (or a family view reads the event), and kept from then on. A rebuild does not open
    /// the payloads of such events: that was a quarter of its work.
    Deferred(std::sync::OnceLock<Box<str>>),
}

impl Summary {
    /// The summary, where it is known (`None`: deferred and not yet read).
    fn text(&self) -> Option<&str> {
        match self {
            Summary::Text(t) => Some(t),
            Summary::Deferred(cell) => cell.get().map(|t| &**t),
        }
    }

    /// What a digest or a comparison of two projections takes of it: the text, or that it is
    /// deferred (the same in a rebuild and an incremental projection, whatever was read since).
    fn as_compared(&self) -> (bool, &str) {
        match self {
            Summary::Text(t) => (false, t),
            Summary::Deferred(_) => (true, ""),
        }
    }
}

impl PartialEq for Summary {
    fn eq(&self, other: &Self) -> bool {
        self.as_compared() == other.as_compared()
    }
}

/// Which erasure made a line's content unreadable (the earliest, when several did).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct ErasedMark {
    at: Timestamp,
    erasure_id: String,
}

impl ErasedMark {
    /// The mark erasure `x` leaves.
    fn of(x: &Erasure) -> Self {
        ErasedMark {
            at: x.erased_at,
            erasure_id: x.erasure_id.clone(),
        }
    }

    /// Whether `self` should replace `current` (the earliest erasure wins, in both an
    /// incremental projection and a rebuild).
    fn replaces(&self, current: Option<&ErasedMark>) -> bool {
        current.is_none_or(|c| self < c)
    }
}

/// `(source, kind, category, safeguarding basis)` of an event.
type MetaKey = (String, String, Category, bool);

/// What standing needs of an event beyond its source and kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LineFact {
    /// A lead practitioner was assigned.
    Lead {
        practitioner_id: String,
        organisation: String,
    },
    /// A TAF meeting, with its attendees.
    Team { attendees: Vec<String> },
}

fn early_help() -> Category {
    Category::EarlyHelp
}

/// What the projection keeps of a partner event for timelines (what the line store keeps of it).
/// It is stored as its [`StoredLine`] form: a row of its values in the order of its fields
/// (which `Deserialize` reads a row by), `records` last. Lines stored before rows (objects
/// naming each field) still read.
#[derive(Debug, Deserialize)]
struct Line {
    at: i64,
    source: String,
    kind: String,
    event_id: String,
    summary: String,
    /// The event's category.
    #[serde(default = "early_help")]
    category: Category,
    /// Whether its basis is safeguarding.
    #[serde(default)]
    safeguarding: bool,
    /// Lead practitioner and TAF facts.
    #[serde(default)]
    fact: Option<LineFact>,
    /// Set when the content was erased (the summary is then the erased marker).
    #[serde(default)]
    erased: Option<ErasedMark>,
    /// For a sealed event: the summary sealed under the event's data keys, sealed when the
    /// entry is decoded (off the thread that applies), or read from the line store (with
    /// `summary` empty until opened). The store is given only this, so it holds nothing readable
    /// once a key is destroyed.
    #[serde(default)]
    sealed: Option<SealedLine>,
    /// For a sealed event whose summary is worked out at its first read ([`Summary::Deferred`]):
    /// its payload was not opened when it was applied, and `summary` is empty.
    #[serde(default)]
    deferred: bool,
    /// The subject records, without repeats. Last, as a line's head is written without them
    /// (they come from linking, when it is applied).
    records: Vec<u32>,
    /// The stored JSON of the line without its records and closing bracket, written when the
    /// entry is decoded (off the thread that applies); `None` once the content changes.
    #[serde(skip)]
    head: Option<Vec<u8>>,
    /// What the in-memory index keeps of the line ([`LineText`], records aside), made when
    /// the entry is decoded (off the thread that applies, whose allocations and first touches
    /// of fresh memory were a tenth of a rebuild's applying); `None` once the content changes,
    /// and then made when the line is applied.
    #[serde(skip)]
    text: Option<Box<LineText>>,
}

/// A line as the line store keeps it: a sealed event's summary is sealed (and `summary` empty).
/// Written as a row, in [`Line`]'s order of fields: field names were about a third of a stored
/// line's bytes.
struct StoredLine<'a> {
    at: i64,
    source: &'a str,
    kind: &'a str,
    event_id: &'a str,
    summary: &'a str,
    category: Category,
    safeguarding: bool,
    fact: Option<&'a LineFact>,
    erased: Option<&'a ErasedMark>,
    sealed: Option<&'a SealedLine>,
    deferred: bool,
    /// Left out only in a line's head ([`Line::head`]), which the records are appended to.
    records: Option<&'a [u32]>,
}

impl Serialize for StoredLine<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple as _;
        let mut row = s.serialize_tuple(11 + usize::from(self.records.is_some()))?;
        row.serialize_element(&self.at)?;
        row.serialize_element(self.source)?;
        row.serialize_element(self.kind)?;
        row.serialize_element(self.event_id)?;
        row.serialize_element(self.summary)?;
        row.serialize_element(&self.category)?;
        row.serialize_element(&self.safeguarding)?;
        row.serialize_element(&self.fact)?;
        row.serialize_element(&self.erased)?;
        row.serialize_element(&self.sealed)?;
        row.serialize_element(&self.deferred)?;
        if let Some(records) = self.records {
            row.serialize_element(records)?;
        }
        row.end()
    }
}

impl Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.stored(Some(&self.records)).serialize(s)
    }
}

/// The JSON of a chunk of lines as the line store keeps it (`[[offset, row], ..]`): each line's head
/// with its records appended, or the whole line serialized where it has no head.
fn chunk_json(chunk: &[(u64, Line)]) -> Result<Vec<u8>, serde_json::Error> {
    let size = chunk
        .iter()
        .map(|(_, l)| l.head.as_ref().map_or(512, |h| h.len() + 64))
        .sum::<usize>();
    let mut out = Vec::with_capacity(size + 2);
    chunk_json_into(chunk, &mut out)?;
    Ok(out)
}

/// [`chunk_json`], appended to `out` (lines as read back, or boxed as a batch holds them).
fn chunk_json_into<L: std::borrow::Borrow<Line>>(
    chunk: &[(u64, L)],
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    // Numbers through `itoa`: through `write!` they were about a fifth of the storing thread's
    // time.
    let mut digits = itoa::Buffer::new();
    out.push(b'[');
    for (i, (offset, line)) in chunk.iter().enumerate() {
        let line: &Line = line.borrow();
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        out.extend_from_slice(digits.format(*offset).as_bytes());
        out.push(b',');
        match &line.head {
            Some(head) => {
                out.extend_from_slice(head);
                out.extend_from_slice(b",[");
                for (j, r) in line.records.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(digits.format(*r).as_bytes());
                }
                out.extend_from_slice(b"]]");
            }
            None => serde_json::to_writer(&mut *out, line)?,
        }
        out.push(b']');
    }
    out.push(b']');
    Ok(())
}

/// `lines` (in offset order) in chunks as the line store keeps them: each chunk's first offset
/// and its JSON, written into `buf`.
fn chunks_of<'b>(
    lines: &[(u64, Box<Line>)],
    buf: &'b mut Vec<u8>,
) -> Result<Vec<(u64, &'b [u8])>, ProjectionError> {
    buf.clear();
    let mut ends = Vec::with_capacity(lines.len().div_ceil(LINES_PER_CHUNK));
    for chunk in lines.chunks(LINES_PER_CHUNK) {
        chunk_json_into(chunk, buf).map_err(|e| ProjectionError::Damaged(e.to_string()))?;
        ends.push((chunk[0].0, buf.len()));
    }
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|(first, end)| (first, &buf[std::mem::replace(&mut start, end)..end]))
        .collect())
}

/// The lines of the stored chunk at `first` (its body at `slot`), as stored (sealed summaries
/// not yet opened).
fn read_chunk(
    store: &LineStore,
    first: u64,
    slot: store::Slot,
) -> Result<Vec<(u64, Line)>, ProjectionError> {
    let body = store.body(first, slot)?;
    serde_json::from_slice(&body)
        .map_err(|e| ProjectionError::Damaged(format!("timeline chunk at {first}: {e}")))
}

/// [`chunk_json`], for chunks written again (cut back at start-up, or with lines erased).
fn chunk_bytes(lines: &[(u64, Line)]) -> Result<Vec<u8>, ProjectionError> {
    chunk_json(lines).map_err(|e| ProjectionError::Damaged(e.to_string()))
}

/// A summary sealed with [`seal::seal_text`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SealedLine {
    keys: Vec<String>,
    text: String,
}

impl Line {
    /// Replaces the content with the erased marker of `mark` (labelled `label`), unless an
    /// earlier erasure already did.
    fn erase(&mut self, mark: &ErasedMark, label: &str) -> bool {
        if !mark.replaces(self.erased.as_ref()) {
            return false;
        }
        self.summary = seal::erased_marker(label, mark.at);
        self.fact = None;
        self.erased = Some(mark.clone());
        self.sealed = None;
        self.deferred = false;
        self.head = None;
        self.text = None;
        true
    }

    /// The stored form of the line (with `records`, or without them for its head).
    fn stored<'a>(&'a self, records: Option<&'a [u32]>) -> StoredLine<'a> {
        let sealed = self.sealed.as_ref();
        StoredLine {
            at: self.at,
            source: &self.source,
            kind: &self.kind,
            event_id: &self.event_id,
            summary: if sealed.is_some() { "" } else { &self.summary },
            category: self.category,
            safeguarding: self.safeguarding,
            fact: self.fact.as_ref(),
            erased: self.erased.as_ref(),
            sealed,
            deferred: self.deferred,
            records,
        }
    }

    /// Makes what the in-memory index keeps of the line (see [`Line::text`]), once its content
    /// is final, off the thread that applies.
    fn make_text(&mut self) {
        self.text = Some(Box::new(LineText::of(self)));
    }

    /// Writes the line's head (see [`Line::head`]).
    fn write_head(&mut self) {
        self.head = self.plain_head().or_else(|| {
            serde_json::to_vec(&self.stored(None)).ok().map(|mut json| {
                json.pop(); // the closing bracket
                json
            })
        });
    }

    /// The head of a line with nothing but plain fields (no fact, erasure or sealed summary,
    /// and no string JSON escapes), written directly: byte for byte what `serde_json` writes
    /// (a test holds it to that), without its serializer, which was about a sixth of decoding
    /// an entry in a rebuild. `None` for any other line.
    fn plain_head(&self) -> Option<Vec<u8>> {
        use std::io::Write as _;
        let texts = [&self.source, &self.kind, &self.event_id, &self.summary];
        let plain = |s: &&String| inplace::special(s.as_bytes()).is_none();
        if self.fact.is_some()
            || self.erased.is_some()
            || self.sealed.is_some()
            || !texts.iter().all(plain)
        {
            return None;
        }
        let mut out = Vec::with_capacity(64 + texts.iter().map(|s| s.len()).sum::<usize>());
        out.push(b'[');
        write!(out, "{}", self.at).ok()?;
        for value in texts {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
        }
        out.push(b',');
        serde_json::to_writer(&mut out, &self.category).ok()?;
        out.extend_from_slice(if self.safeguarding {
            b",true"
        } else {
            b",false"
        });
        // No fact, erasure or sealed summary.
        out.extend_from_slice(b",null,null,null");
        out.extend_from_slice(if self.deferred { b",true" } else { b",false" });
        Some(out)
    }

    /// Seals the summary of a sealed event at `offset` under the event's key (derived from
    /// the data keys `ids`), ready for the line store.
    fn seal_summary(&mut self, offset: u64, ids: Vec<String>, key: &seal::EventKey) {
        self.sealed = Some(SealedLine {
            keys: ids,
            text: seal::seal_text_keyed(&self.summary, key, offset),
        });
    }

    /// Opens a summary sealed for the line store, or marks the line erased if a key was destroyed.
    fn open_from_store(&mut self, offset: u64, keys: Option<&KeyView<'_>>) -> Result<(), String> {
        let Some(sealed) = self.sealed.take() else {
            return Ok(());
        };
        let what = || format!("the timeline line at offset {offset}");
        match gather_keys(keys, &sealed.keys, what)? {
            Err((mark, label)) => {
                self.erase(&mark, &label);
            }
            Ok(raw) => {
                self.summary = seal::open_text(&sealed.text, &raw, offset)
                    .map_err(|e| format!("{}: {e}", what()))?;
            }
        }
        Ok(())
    }
}

/// A snapshot written to its temporary file, not yet synced or in place
/// ([`Projection::install_snapshot`]).
struct SnapshotFile {
    file: std::fs::File,
    tmp: std::path::PathBuf,
    next_offset: u64,
    /// How long writing it took.
    took: std::time::Duration,
}

/// What the applying thread asks of the storer thread.
enum StoreJob {
    /// Store these lines, then this applied offset; then hand the lines to this decoding
    /// thread (the one that made them) to free.
    Lines(Vec<(u64, Box<Line>)>, u64, Option<usize>),
    /// Answer (whether all went well) once everything asked before is done.
    Flush(std::sync::mpsc::SyncSender<bool>),
    /// Finish this snapshot.
    Snapshot(SnapshotFile),
}

/// The applying thread's end of the storer thread, which in a long catch-up stores each
/// batch's lines while the next is applied (in a 1M rebuild, storing was about 7% of the
/// applying thread's time). Batches with erasures, which rewrite stored lines, are stored by
/// the applying thread once the storer has caught up ([`Storer::flush`]), as are snapshots'
/// first parts. A failure marks the projection broken: the applying thread stops at its next
/// batch, and the catch-up returns the failure.
struct Storer {
    jobs: std::sync::mpsc::SyncSender<StoreJob>,
    /// The decoding thread that made the batch being applied (see [`Storer::made_by`]).
    maker: std::cell::Cell<Option<usize>>,
}

/// The storer thread's end.
struct StorerEnd {
    jobs: std::sync::mpsc::Receiver<StoreJob>,
    /// The decoding threads, which free the lines they made once they are stored.
    makers: Vec<std::sync::mpsc::Sender<Garbage>>,
}

impl Storer {
    /// Both ends; up to `queued` batches wait to be stored. Stored lines go back to `makers`
    /// (by [`Storer::made_by`]) to be freed.
    fn new(queued: usize, makers: Vec<std::sync::mpsc::Sender<Garbage>>) -> (Storer, StorerEnd) {
        let (jobs_tx, jobs) = std::sync::mpsc::sync_channel(queued);
        (
            Storer {
                jobs: jobs_tx,
                maker: std::cell::Cell::new(None),
            },
            StorerEnd { jobs, makers },
        )
    }

    /// Notes that the lines handed over next were made by decoding thread `maker` (`None`:
    /// by this one), which frees them once they are stored. Freed by the storer, their memory
    /// went back to the decoding thread's heap from another thread, about a third of the
    /// storer's time, and the decoding thread reused it only once it had gathered it back.
    fn made_by(&self, maker: Option<usize>) {
        self.maker.set(maker);
    }

    fn send(&self, job: StoreJob) -> Result<(), ProjectionError> {
        self.jobs
            .send(job)
            .map_err(|_| ProjectionError::Damaged("the projection's storer thread stopped".into()))
    }

    /// Hands `lines` (then `next` as the applied offset) over to be stored.
    fn store(&self, lines: Vec<(u64, Box<Line>)>, next: u64) -> Result<(), ProjectionError> {
        self.send(StoreJob::Lines(lines, next, self.maker.get()))
    }

    /// Hands a snapshot over to be finished.
    fn install(&self, file: SnapshotFile) -> Result<(), ProjectionError> {
        self.send(StoreJob::Snapshot(file))
    }

    /// Waits until everything handed over is done; an error if something failed.
    fn flush(&self) -> Result<(), ProjectionError> {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        self.send(StoreJob::Flush(reply))?;
        match done.recv() {
            Ok(true) => Ok(()),
            _ => Err(ProjectionError::Damaged(
                "the projection store failed; restart the hub to rebuild the projections".into(),
            )),
        }
    }
}

/// The projections of one hub.
pub struct Projection {
    /// The durable copy of the timeline lines and the applied offset.
    store: LineStore,
    /// Why the stored projections could not be used at open, where they were damaged.
    damage: Option<String>,
    dir: std::path::PathBuf,
    state: RwLock<State>,
    applied: watch::Sender<u64>,
    /// Held for the whole of an apply, so that only one runs at a time while the state lock
    /// is held only for the in-memory part. It keeps the buffer a batch's new chunks of lines
    /// are written into, from one batch to the next (not allocated and faulted in afresh).
    applying: std::sync::Mutex<Vec<u8>>,
    /// The access log's index (locked after `state`, when both are).
    access_index: std::sync::Mutex<AccessIndex>,
    /// Data keys of sealed events.
    keys: Option<Arc<KeyStore>>,
    /// Called inside the `projection.apply` span with the offsets applied (`from..to`).
    on_apply: Option<ApplyHook>,
    /// Where time went: opening, and the snapshots written since.
    timings: Timings,
    /// Threads decoding ahead in a long catch-up ([`decoding_helpers`] unless set).
    helpers: usize,
}

/// Where a projection's time went outside applying events: at open (reading its snapshot,
/// loading its stored lines), and writing snapshots since (on the applying thread, which
/// waits for them).
#[derive(Debug, Default)]
struct Timings {
    /// Reading and parsing the snapshot at open (zero if there was none).
    snapshot_read: Duration,
    /// Loading the stored lines at open (zero if the projection started empty).
    lines_loaded: Duration,
    /// Snapshots written since open.
    snapshots: AtomicU64,
    /// Their total time (line store sync included), in microseconds.
    snapshot_micros: AtomicU64,
}

/// Where a projection's time went outside applying events (see [`Projection::timings`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionTimings {
    /// Reading and parsing the snapshot at open (zero if there was none).
    pub snapshot_read: Duration,
    /// Loading the stored lines at open (zero if the projection started empty).
    pub lines_loaded: Duration,
    /// Snapshots written since open.
    pub snapshots: u64,
    /// Their total time: the line store made durable, then the linker written and synced
    /// (the applying thread waits for each).
    pub snapshot_writing: Duration,
}

/// See [`Projection::with_apply_hook`].
pub type ApplyHook = Box<dyn Fn(u64, u64) + Send + Sync>;

/// What the visibility predicate sees of an event before deciding.
#[derive(Debug, Clone, Copy)]
pub struct EventMeta<'a> {
    /// Log offset.
    pub offset: u64,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// The publishing partner.
    pub source: &'a str,
    /// The payload kind.
    pub kind: &'a str,
    /// Its category of information.
    pub category: Category,
    /// Whether its lawful basis is safeguarding.
    pub safeguarding: bool,
}

/// One timeline index entry: an event of a subject record.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    at: Timestamp,
    offset: u64,
    /// Index into [`State::metas`].
    meta: u32,
}

/// A subject record's events, sorted by (time, offset), with the key of the last one kept
/// beside the list. Events nearly always arrive in time order, so adding one is an append;
/// deciding that from the list's last entry (on the heap) was a cache miss per event and
/// record, about two thirds of indexing's own time.
#[derive(Debug, Default)]
struct RecordEvents {
    /// `(at, offset)` of the list's last entry, in milliseconds (meaningless while the list
    /// is empty).
    last: (i64, u64),
    list: Vec<Indexed>,
}

impl RecordEvents {
    /// Adds `entry` in its place, unless an entry for its offset is there already (a batch
    /// applied again).
    fn add(&mut self, entry: Indexed) {
        let key = (entry.at.0, entry.offset);
        if self.list.is_empty() || self.last < key {
            self.list.push(entry);
            self.last = key;
        } else if self.last > key {
            // Older than the last: a search (it touches a cache line per step).
            let at = self.list.partition_point(|x| (x.at.0, x.offset) <= key);
            if self
                .list
                .get(at.wrapping_sub(1))
                .is_none_or(|x| x.offset != entry.offset)
            {
                self.list.insert(at, entry);
            }
        }
        // Equal to the last: already there.
    }
}

impl std::ops::Deref for RecordEvents {
    type Target = [Indexed];
    fn deref(&self) -> &[Indexed] {
        &self.list
    }
}

/// What erasing one person's content takes (see [`Projection::erasure_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasurePlan {
    /// The person.
    pub person_id: String,
    /// Key-store names of their partner records.
    pub key_names: Vec<String>,
    /// Offsets of every event about them, ascending.
    pub offsets: Vec<u64>,
    /// How many of those still have content.
    pub live: usize,
}

/// A family's consents (each with the time it was withdrawn from, if it was) and sharing
/// decisions.
pub type FamilyConsents = (Vec<(ConsentGiven, Option<Timestamp>)>, Vec<SharingDecision>);

/// Everything held about one person, for a subject access request.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    /// The person, their partner records and why they are linked.
    pub person: PersonView,
    /// Every event about them, with its log offset, oldest first.
    pub events: Vec<(u64, Event)>,
    /// Events whose content was erased: log offset and the erased marker.
    pub erased: Vec<(u64, String)>,
    /// Consents naming their records, with the time each was withdrawn from (if it was).
    pub consents: Vec<(ConsentGiven, Option<Timestamp>)>,
}

/// Who reads, and when.
#[derive(Debug, Clone, Copy)]
pub enum ReadAs<'a> {
    /// Everything, under no access rule (rebuild checks, benchmark baselines, tests).
    Everything,
    /// A viewer, under the access rule, at `now`.
    Viewer {
        /// Who.
        viewer: &'a Viewer,
        /// The time of reading.
        now: Timestamp,
        /// A break-glass grant this read makes (the access log records it for later reads).
        grant: Option<Timestamp>,
    },
}

/// What a read decided about access, for the response and the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// The family read (or the family of the person read).
    pub family_id: String,
    /// Its members.
    pub person_ids: Vec<String>,
    /// Whether the read was refused.
    pub refused: bool,
    /// How the viewer stands to the family, or why they were refused.
    pub standing: String,
    /// Whether standing came from a break-glass grant.
    pub break_glass: bool,
    /// Events withheld for lack of consent.
    pub withheld_no_consent: u64,
    /// Safeguarding-basis events withheld from a viewer who is not a safeguarding lead.
    pub withheld_safeguarding: u64,
}

impl Reading {
    fn count(&mut self, w: Withheld) {
        match w {
            Withheld::NoConsent => self.withheld_no_consent += 1,
            Withheld::SafeguardingLeadsOnly => self.withheld_safeguarding += 1,
        }
    }

    /// Withheld counts by reason (reasons with none left out).
    pub fn withheld_by(&self) -> Vec<(Withheld, u64)> {
        [
            (Withheld::NoConsent, self.withheld_no_consent),
            (Withheld::SafeguardingLeadsOnly, self.withheld_safeguarding),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// A read's decided access: the viewer and the family's consents.
struct Gate<'a> {
    viewer: Option<(&'a Viewer, Timestamp)>,
    /// Per family member: the categories active consent lets the viewer's organisation see
    /// about them, as [`Category::bit`]s (filled only when there are consents).
    seen: Vec<(u32, u8)>,
}

/// Which events a timeline shows.
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    /// Only these partners (all when empty).
    pub sources: Vec<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<String>,
    /// From this time (inclusive).
    pub from: Option<Timestamp>,
    /// Before this time (exclusive).
    pub to: Option<Timestamp>,
}

/// One timeline line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineItem {
    /// Log offset.
    pub offset: u64,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// The publishing partner.
    pub source: String,
    /// The partner's event id.
    pub event_id: String,
    /// Payload kind.
    pub kind: String,
    /// What happened, in one line.
    pub summary: String,
    /// The persons it is about.
    pub person_ids: Vec<String>,
    /// Whether its content was erased (`summary` is then the erased marker).
    pub erased: bool,
    /// Whether its summary is still to be read from the log ([`Projection::open_summaries`]).
    #[serde(skip)]
    unread: bool,
}

/// A page of a timeline, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePage {
    /// The items.
    pub items: Vec<TimelineItem>,
    /// Pass back to get the next (older) page; empty at the end.
    pub next_cursor: String,
    /// Events matching the filter that the predicate withheld (over the whole timeline).
    pub withheld: u64,
    /// Events matching the filter that the predicate allowed (over the whole timeline).
    pub total: u64,
    /// What the read decided about access.
    pub reading: Reading,
    /// The family whose memo held deferred summaries for this page (to be refreshed once
    /// [`Projection::open_summaries`] has read them).
    #[serde(skip)]
    deferred_in: Option<u32>,
}

/// Whose timeline.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A family, by id.
    Family(String),
    /// A person, by id.
    Person(String),
}

/// A person, with the records and links that make them.
#[derive(Debug, Clone, Serialize)]
pub struct PersonView {
    /// Person id.
    pub person_id: String,
    /// Family id.
    pub family_id: String,
    /// Name as first recorded.
    pub name: String,
    /// Date of birth (first recorded).
    pub date_of_birth: Option<Date>,
    /// The partner records linked into this person.
    pub records: Vec<SubjectRecord>,
    /// Why the records are linked.
    pub links: Vec<LinkView>,
    /// Match score when found by name (absent for identifier matches).
    pub score: Option<f64>,
}

/// A link, explained.
#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    /// One record key.
    pub record_a: String,
    /// The other.
    pub record_b: String,
    /// Why.
    pub why: LinkWhy,
}

/// A match candidate, with the records' keys.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateView {
    /// The candidate.
    pub candidate: Candidate,
    /// Key of record a.
    pub record_a: SubjectRecord,
    /// Key of record b.
    pub record_b: SubjectRecord,
    /// Whether it still waits for a decision.
    pub open: bool,
}

/// How to find a person.
#[derive(Debug, Clone)]
pub enum PersonQuery {
    /// NHS number.
    NhsNumber(String),
    /// UPN.
    Upn(String),
    /// A partner's local id.
    Local {
        /// Partner.
        source: String,
        /// Their id.
        local_id: String,
    },
    /// Name and date of birth (tolerant).
    Name {
        /// Given name.
        given: String,
        /// Family name.
        family: String,
        /// Date of birth.
        dob: Date,
    },
    /// A person id.
    Id(String),
}

/// A long catch-up's storer indexes the chunks it wrote once this many wait (eight full
/// batches' worth), in one sled batch: one per applied batch had it blocked in sled for
/// 0.4–0.9 s of each 1M rebuild, as sled wrote and synced a small buffer nearly every time.
const INDEX_EVERY: usize = 8 * APPLY_BATCH.div_ceil(LINES_PER_CHUNK);

/// Lines are stored in chunks of at most this many, keyed by the first one's offset: the
/// store is only their durable copy (read in order at start-up), and few large writes cost far
/// less than many small ones.
const LINES_PER_CHUNK: usize = 256;

fn encode_cursor(at: Timestamp, offset: u64) -> String {
    format!("{}.{}", at.0, offset)
}

fn decode_cursor(c: &str) -> Result<Option<(Timestamp, u64)>, ProjectionError> {
    if c.is_empty() {
        return Ok(None);
    }
    let bad = || ProjectionError::Invalid(format!("cursor {c:?} is not one this hub issued"));
    let (a, b) = c.split_once('.').ok_or_else(bad)?;
    Ok(Some((
        Timestamp(a.parse().map_err(|_| bad())?),
        b.parse().map_err(|_| bad())?,
    )))
}

impl Projection {
    /// Opens (or creates) the projections in `dir`, resuming from the last snapshot when it
    /// belongs to `log`; otherwise starts empty and will replay from the beginning.
    /// `keys` opens sealed events and destroys keys as erasures are applied; without a key
    /// store, a sealed event stops the projection with an error.
    pub async fn open(
        dir: &Path,
        log: &dyn Log,
        keys: Option<Arc<KeyStore>>,
    ) -> Result<Self, ProjectionError> {
        let (store, current) = LineStore::open(dir)?;
        let mut state = State::empty();
        let mut access_index = AccessIndex::default();
        let mut resumed = false;
        let mut timings = Timings::default();
        let started = Instant::now();
        if let Ok(file) = std::fs::File::open(dir.join(SNAPSHOT_FILE)) {
            match serde_json::from_reader::<_, Snapshot>(std::io::BufReader::new(file)) {
                Ok(s) => {
                    let ours = s.next_offset == 0
                        || log
                            .read(s.next_offset - 1, 1)
                            .await?
                            .first()
                            .is_some_and(|e| e.hash == s.last_hash);
                    // sled applies each batch atomically and recovers a prefix of them, and
                    // its flush is not a durable fsync: if it lost writes the snapshot
                    // depends on (or holds an older layout), start again.
                    let stored = if current { store.applied()? } else { 0 };
                    let spilled = if current { store.access_spilled()? } else { 0 };
                    let behind = stored < s.next_offset || spilled < s.access_spilled;
                    if ours && behind {
                        warn!(
                            stored,
                            snapshot = s.next_offset,
                            access_stored = spilled,
                            access_snapshot = s.access_spilled,
                            "projection store is behind its snapshot; rebuilding"
                        );
                    }
                    if ours && !behind {
                        info!(
                            offset = s.next_offset,
                            "projection resumes from its snapshot"
                        );
                        state.linker = s.linker;
                        (state.access, access_index) = s.access.split();
                        // A crash after the index moved to the store but before the snapshot
                        // that says so: the store's part is dropped from memory.
                        access_index.stored_below(spilled);
                        state.next_offset = s.next_offset;
                        state.last_hash = s.last_hash;
                        resumed = true;
                    } else {
                        warn!("projection snapshot does not match the log; rebuilding");
                    }
                }
                Err(e) => warn!(error = %e, "projection snapshot unreadable; rebuilding"),
            }
            timings.snapshot_read = started.elapsed();
        }
        let mut damage = None;
        if resumed {
            let started = Instant::now();
            let loaded = Self::load_lines(&store, &mut state, keys.as_deref());
            timings.lines_loaded = started.elapsed();
            match loaded {
                Ok(()) => {}
                Err(ProjectionError::Damaged(why)) => {
                    warn!(%why, "projection store damaged; rebuilding");
                    state = State::empty();
                    resumed = false;
                    damage = Some(why);
                }
                Err(e) => return Err(e),
            }
        }
        if !resumed {
            store.clear()?;
        }
        let (applied, _) = watch::channel(state.next_offset);
        Ok(Projection {
            store,
            damage,
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            applied,
            applying: std::sync::Mutex::new(Vec::new()),
            access_index: std::sync::Mutex::new(access_index),
            keys,
            on_apply: None,
            timings,
            helpers: decoding_helpers(),
        })
    }

    /// Where this projection's time went outside applying events: reading its snapshot and
    /// loading its stored lines at open, and the snapshots written since.
    pub fn timings(&self) -> ProjectionTimings {
        let t = &self.timings;
        ProjectionTimings {
            snapshot_read: t.snapshot_read,
            lines_loaded: t.lines_loaded,
            snapshots: t.snapshots.load(Relaxed),
            snapshot_writing: Duration::from_micros(t.snapshot_micros.load(Relaxed)),
        }
    }

    /// Loads the stored lines below the snapshot (`state.next_offset`) into `state`, and tidies
    /// the store so that every line is in exactly one chunk (the one with the greatest first
    /// offset at or below it, which is what an erasure rewrites): a chunk written before the
    /// snapshot may reach past it, and the re-applied part is written again in chunks of its
    /// own, so such a chunk is cut back to below the snapshot, later chunks are dropped, and
    /// bytes no chunk points at are zeroed. `Damaged` where a chunk does not match its index.
    fn load_lines(
        store: &LineStore,
        state: &mut State,
        keys: Option<&KeyStore>,
    ) -> Result<(), ProjectionError> {
        /// A chunk's lines (opened), and its body again if it was cut back.
        type Parsed = Result<(Vec<(u64, Line)>, Option<Vec<u8>>), ProjectionError>;
        let below = state.next_offset;
        // The index in order of first offset: chunks from `below` on are dropped.
        let all = store.slots_from(0)?;
        let (slots, removed) = all.split_at(all.partition_point(|(first, _)| *first < below));
        let parse = |first: u64, slot: store::Slot| -> Parsed {
            let mut lines = read_chunk(store, first, slot)?;
            let mut cut = None;
            if lines.iter().any(|(o, _)| *o >= below) {
                lines.retain(|(o, _)| *o < below);
                // Written as stored: before the sealed summaries are opened.
                cut = Some(chunk_bytes(&lines)?);
            }
            let view = keys.map(KeyStore::view);
            for (offset, line) in &mut lines {
                line.open_from_store(*offset, view.as_ref())
                    .map_err(ProjectionError::Keys)?;
                line.make_text();
            }
            Ok((lines, cut))
        };
        let mut rewritten = Vec::new();
        // Two helpers read, parse and open alternate chunks (the sealed summaries' AES is
        // most of the work); this thread indexes them in order.
        std::thread::scope(|scope| -> Result<(), ProjectionError> {
            let mut parsed = Vec::with_capacity(2);
            for h in 0..2 {
                let (give, take) = std::sync::mpsc::sync_channel::<Parsed>(2);
                parsed.push(take);
                let parse = &parse;
                scope.spawn(move || {
                    for &(first, slot) in slots.iter().skip(h).step_by(2) {
                        let chunk = parse(first, slot);
                        let failed = chunk.is_err();
                        if give.send(chunk).is_err() || failed {
                            break;
                        }
                    }
                });
            }
            for (k, &(first, slot)) in slots.iter().enumerate() {
                let (lines, cut) = parsed[k % 2].recv().map_err(|_| {
                    ProjectionError::Damaged("the timeline loader stopped".into())
                })??;
                if let Some(bytes) = cut {
                    rewritten.push((first, bytes, slot));
                }
                for (offset, mut line) in lines {
                    state.index(offset, &mut line);
                }
                state.add_indexed();
            }
            Ok(())
        })?;
        store.store(&[], &rewritten, removed, None)?;
        store.zero_unreferenced()
    }

    /// Calls `hook(from, to)` inside each `projection.apply` span once offsets `from..to`
    /// are applied (the server links the span to the publishes that wrote them).
    pub fn with_apply_hook(mut self, hook: ApplyHook) -> Self {
        self.on_apply = Some(hook);
        self
    }

    /// Decodes ahead on `helpers` threads (at least one) in a long catch-up, instead of
    /// [`decoding_helpers`]'s number for this machine.
    pub fn with_decoding_helpers(mut self, helpers: usize) -> Self {
        self.helpers = helpers.max(1);
        self
    }

    /// Drops the projections in `dir` and opens empty ones (they fill as the log is applied).
    pub async fn rebuild(
        dir: &Path,
        log: &dyn Log,
        keys: Option<Arc<KeyStore>>,
    ) -> Result<Self, ProjectionError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| ProjectionError::Store(e.into()))?;
        }
        Self::open(dir, log, keys).await
    }

    /// Why the stored projections found at open were damaged (and so rebuilt from the log),
    /// if they were; `None` where they were used or there were none.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The access log's index, locked.
    fn access_index(&self) -> std::sync::MutexGuard<'_, AccessIndex> {
        self.access_index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next offset to apply (= entries applied).
    pub fn applied(&self) -> u64 {
        self.read_state().next_offset
    }

    /// A receiver that sees the applied offset advance.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Applies entries that continue the applied prefix (others are skipped as already
    /// applied). Returns how many were new. Entries are decoded before the state is locked,
    /// so queries wait only for the linking itself.
    pub fn apply(&self, entries: &[StoredEntry]) -> Result<usize, ProjectionError> {
        let applied = self.applied();
        let todo = &entries[entries.partition_point(|e| e.offset < applied)..];
        let decoded = decode_all(todo, self.keys.as_deref());
        self.apply_decoded(&EntryAt::all(todo), decoded, &mut Spent::default(), None)
    }

    /// Applies `entries`, already decoded (`decoded` holds one result for each), under the
    /// state's lock. Entries already applied are skipped; a gap is refused. What is left
    /// over (decoded events, stored lines) goes to `spent`, for the caller to free.
    fn apply_decoded(
        &self,
        entries: &[EntryAt],
        mut decoded: Vec<DecodeResult>,
        spent: &mut Spent,
        storer: Option<&Storer>,
    ) -> Result<usize, ProjectionError> {
        let mut chunk_buf = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let applied = self.applied();
        let span = tracing::info_span!(
            "projection.apply",
            from = applied,
            entries = tracing::field::Empty
        );
        let _in_span = span.enter();
        if let Some((e, why)) = entries.iter().zip(&decoded).find_map(|(e, r)| match r {
            Err(Undecodable::Keys(why)) => Some((e, why)),
            _ => None,
        }) {
            return Err(ProjectionError::Keys(format!(
                "cannot apply the log at offset {}: {why}",
                e.offset
            )));
        }
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.broken {
            return Err(ProjectionError::Damaged(why.clone()));
        }
        check_continues(entries, st.next_offset, st.last_hash)?;
        let mut lines = std::mem::take(&mut spent.lines);
        lines.clear();
        lines.reserve(decoded.len());
        // Erasures in this batch (their earlier, stored lines are rewritten below).
        let mut erasures: Vec<Erasure> = Vec::new();
        let mut n = 0;
        // Access entries, indexed once the state's lock is let go.
        let mut accessed: Vec<(u64, AccessEntry)> = Vec::new();
        // Families whose memos the batch makes stale (the families of its events' records),
        // or all of them (for anything but events and access entries).
        let memos = st.memo.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut stale = Stale::gathered_if(!memos.by_family.is_empty());
        let mut all_stale = false;
        for (e, record) in entries.iter().zip(decoded.drain(..)) {
            if e.offset < st.next_offset {
                continue;
            }
            all_stale |= !matches!(
                record,
                Ok(Decoded::Event(..)
                    | Decoded::Sealed(..)
                    | Decoded::InPlace(..)
                    | Decoded::Access(_)
                    | Decoded::Other)
            );
            let is_access = matches!(record, Ok(Decoded::Access(_)));
            match record {
                Ok(Decoded::Event(ev, line)) => {
                    st.add_event(e.offset, &ev, line, &mut lines, &mut stale);
                    spent.events.push(ev);
                }
                Ok(Decoded::Sealed(ev, line)) => {
                    st.add_event(e.offset, &ev, line, &mut lines, &mut stale);
                    spent.sealed.push(ev);
                }
                Ok(Decoded::InPlace(ev, line)) => {
                    st.add_in_place(e.offset, &ev, line, &mut lines, &mut stale);
                    spent.in_place.push(ev);
                }
                Ok(Decoded::Erasure(x)) => {
                    st.erase_lines(e.offset, &x, &mut lines);
                    erasures.push(*x);
                }
                Ok(Decoded::Decision(d)) => {
                    if let Err(err) = st.linker.apply_decision(e.offset, &d) {
                        warn!(offset = e.offset, error = %err, "match decision not applied");
                    }
                }
                Ok(Decoded::Access(a)) => {
                    st.access.grant(&a);
                    accessed.push((e.offset, *a));
                }
                Ok(other) => st.access.apply(other),
                Err(Undecodable::Keys(_)) => {} // refused above
                Err(Undecodable::Record(err)) => {
                    // The log verified this entry, so it is what was written: an entry this
                    // version cannot read is skipped, visibly.
                    warn!(offset = e.offset, error = %err, "log entry not understood; skipped");
                }
            }
            st.next_offset = e.offset + 1;
            st.last_hash = e.hash;
            st.since_snapshot += 1;
            st.accesses_since_snapshot += u64::from(is_access);
            n += 1;
        }
        spent.decoded = decoded;
        st.add_indexed();
        match st.linker.take_changed_families() {
            ChangedFamilies::All => all_stale = true,
            ChangedFamilies::Some(merged) => stale.note(merged.into_iter()),
        }
        let memos = st.memo.get_mut().unwrap_or_else(|p| p.into_inner());
        if all_stale {
            *memos = Memos::default();
        } else {
            for f in stale.families {
                if let Some(m) = memos.by_family.remove(&f) {
                    memos.bytes = memos.bytes.saturating_sub(m.held());
                }
            }
        }
        if n == 0 {
            return Ok(0);
        }
        let next = st.next_offset;
        // The access index is taken before the state's lock is let go (state, then index, as
        // everywhere), so whoever reads both (the digest, a snapshot) sees them at one offset.
        let index = (!accessed.is_empty()).then(|| self.access_index());
        // Readers wait only for the in-memory part; the durable copy is written after.
        drop(st);
        if let Some(mut index) = index {
            for (offset, a) in &accessed {
                index.add(*offset, a);
            }
        }
        // A batch that stores nothing (access entries, consents, decisions: kept in memory
        // and in the snapshot) leaves the store alone: its applied offset may lag behind memory,
        // as a restart re-applies from the snapshot anyway, and the snapshot stores it first.
        let stores = !lines.is_empty() || !erasures.is_empty();
        let stored = match storer {
            _ if !stores => Ok(()),
            // The storer thread stores it while this thread goes on (not erasures: below).
            Some(storer) if erasures.is_empty() => storer.store(std::mem::take(&mut lines), next),
            _ => storer.map_or(Ok(()), Storer::flush).and_then(|()| {
                // Keys first: once the applied offset passes an erasure, its keys must be gone.
                for x in &erasures {
                    if let Some(ks) = &self.keys {
                        ks.destroy(&x.key_ids, &Tombstone::of(x))?;
                    }
                }
                let first_new = lines.first().map_or(u64::MAX, |(o, _)| *o);
                let rewritten = self.erase_stored(&erasures, first_new)?;
                self.store_lines(&lines, &rewritten, &mut chunk_buf, next)
            }),
        };
        spent.lines = lines;
        if let Err(err) = stored {
            self.broken_by(&err);
            return Err(err);
        }
        {
            let st = self.read_state();
            let records = st.linker.record_count() as u64;
            if snapshot_due(
                st.replay_since_snapshot(),
                st.accesses_since_snapshot,
                records,
            ) {
                self.snapshot(st, storer)?;
            }
        }
        span.record("entries", n);
        if let Some(hook) = &self.on_apply {
            hook(applied, next);
        }
        self.applied.send_replace(next);
        Ok(n)
    }

    /// Stores `lines` (in offset order) as chunks, with the chunks `rewritten` by erasures, and
    /// `next` as the applied offset; `buf` is room for the chunks' JSON.
    fn store_lines(
        &self,
        lines: &[(u64, Box<Line>)],
        rewritten: &[(u64, Vec<u8>, store::Slot)],
        buf: &mut Vec<u8>,
        next: u64,
    ) -> Result<(), ProjectionError> {
        let fresh = chunks_of(lines, buf)?;
        self.store.store(&fresh, rewritten, &[], Some(next))
    }

    /// Refuses to go on after the store failed with `err` while memory had moved on: a restart
    /// rebuilds.
    fn broken_by(&self, err: &ProjectionError) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.broken.get_or_insert_with(|| {
            format!("projection store failed ({err}); restart the hub to rebuild the projections")
        });
    }

    /// Stores the lines the applying thread hands `storer` (see [`Storer`]) until it is
    /// dropped. After a failure it stores nothing more (the projection is broken, which the
    /// applying thread sees at its next batch) and returns the failure.
    fn run_storer(&self, storer: StorerEnd) -> Result<(), ProjectionError> {
        let mut buf = Vec::new();
        let mut failed = None;
        // Bodies written, indexed every `INDEX_EVERY` chunks and before anything that reads the
        // index or the stored applied offset: a flush (after which the applying thread may
        // rewrite stored chunks), a snapshot, the end.
        let mut unindexed = store::Unindexed::default();
        for job in storer.jobs {
            // A flush is answered once what it asked is done, whether it went well.
            let mut answer = None;
            let done = match job {
                StoreJob::Flush(reply) => {
                    answer = Some(reply);
                    match failed {
                        None => self.store.index(&mut unindexed),
                        Some(_) => Ok(()),
                    }
                }
                _ if failed.is_some() => continue,
                StoreJob::Lines(lines, next, maker) => {
                    let done = chunks_of(&lines, &mut buf)
                        .and_then(|fresh| self.store.append(&fresh, next, &mut unindexed))
                        .and_then(|()| match unindexed.len() >= INDEX_EVERY {
                            true => self.store.index(&mut unindexed),
                            false => Ok(()),
                        });
                    // Freed here when this thread made them (the first batch), or when their
                    // decoding thread is gone (the send hands them back).
                    if let Some(to) = maker.and_then(|m| storer.makers.get(m)) {
                        drop(to.send(Garbage::Lines(lines)));
                    }
                    done
                }
                StoreJob::Snapshot(file) => self
                    .store
                    .index(&mut unindexed)
                    .and_then(|()| self.install_snapshot(file)),
            };
            if let Err(err) = done {
                self.broken_by(&err);
                failed = Some(err);
            }
            if let Some(reply) = answer {
                let _ = reply.send(failed.is_none());
            }
        }
        match failed {
            None => self
                .store
                .index(&mut unindexed)
                .inspect_err(|err| self.broken_by(err)),
            Some(err) => Err(err),
        }
    }

    /// The stored chunks holding lines (below `first_new`) that `erasures` reach, rewritten
    /// with those lines erased, and where their old bodies lie (zeroed once replaced), so no
    /// erased content stays in the store.
    fn erase_stored(
        &self,
        erasures: &[Erasure],
        first_new: u64,
    ) -> Result<Vec<(u64, Vec<u8>, store::Slot)>, ProjectionError> {
        let mut chunks: BTreeMap<u64, (store::Slot, Vec<(u64, Line)>)> = BTreeMap::new();
        for x in erasures {
            let mark = ErasedMark::of(x);
            for &off in x.offsets.iter().filter(|&&o| o < first_new) {
                let Some((first, slot)) = self.store.slot_at_or_below(off)? else {
                    continue;
                };
                // Each chunk is read once, however many of its lines are erased.
                let (_, lines) = match chunks.entry(first) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert((slot, read_chunk(&self.store, first, slot)?))
                    }
                };
                if let Ok(i) = lines.binary_search_by_key(&off, |(o, _)| *o) {
                    lines[i].1.erase(&mark, x.reason.label());
                }
            }
        }
        chunks
            .into_iter()
            .map(|(first, (old, lines))| Ok((first, chunk_bytes(&lines)?, old)))
            .collect()
    }

    /// Writes the linker and the offset it reflects to the snapshot file, through a temporary
    /// file and a rename, so a crash leaves the old or the new one; the line store is made
    /// durable first ([`Projection::install_snapshot`]).
    fn write_snapshot(&self, st: &State) -> Result<(), ProjectionError> {
        let file = self.snapshot_file(st)?;
        self.install_snapshot(file)
    }

    /// The first part of a snapshot, on the applying thread (under `applying`, after every line
    /// below `next_offset` is stored): the access log's index moves to the store, and the
    /// snapshot is written to its temporary file, not yet synced.
    fn snapshot_file(&self, st: &State) -> Result<SnapshotFile, ProjectionError> {
        #[derive(Serialize)]
        struct SnapshotRef<'a> {
            next_offset: u64,
            last_hash: Hash,
            linker: &'a Linker,
            access: AccessSnapshotRef<'a>,
            access_spilled: u64,
        }
        let started = Instant::now();
        // The access log's index moves to the store (made durable with it when the snapshot is
        // installed), so the snapshot holds none of it; its lock is let go at once, so
        // access-log reads do not wait for the snapshot (only this thread, the applier, adds to
        // it).
        let spilled = {
            let mut index = self.access_index();
            index.spill(&self.store, st.next_offset)?;
            index.spilled
        };
        let none = AccessIndex::default();
        let io = |e: std::io::Error| ProjectionError::Store(e.into());
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        serde_json::to_writer(
            &mut w,
            &SnapshotRef {
                next_offset: st.next_offset,
                last_hash: st.last_hash,
                linker: &st.linker,
                access: AccessSnapshotRef::of(&st.access, &none),
                access_spilled: spilled,
            },
        )
        .map_err(|e| ProjectionError::Damaged(e.to_string()))?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        Ok(SnapshotFile {
            file,
            tmp,
            next_offset: st.next_offset,
            took: started.elapsed(),
        })
    }

    /// The rest of a snapshot: makes the line store durable up to the snapshot's offset (a
    /// restart takes a snapshot only if the store is not behind it; batches that stored no
    /// lines did not move the stored applied offset), then the snapshot file, then puts it in
    /// place. On the applying thread, or on the storer thread in a long catch-up.
    fn install_snapshot(&self, f: SnapshotFile) -> Result<(), ProjectionError> {
        let started = Instant::now();
        let io = |e: std::io::Error| ProjectionError::Store(e.into());
        self.store.sync(f.next_offset)?;
        f.file.sync_data().map_err(io)?;
        std::fs::rename(&f.tmp, self.dir.join(SNAPSHOT_FILE)).map_err(io)?;
        let took = f.took + started.elapsed();
        let t = &self.timings;
        t.snapshots.fetch_add(1, Relaxed);
        t.snapshot_micros
            .fetch_add(took.as_micros().try_into().unwrap_or(u64::MAX), Relaxed);
        info!(
            offset = f.next_offset,
            seconds = took.as_secs_f64(),
            "projection snapshot written"
        );
        Ok(())
    }

    /// Writes a snapshot and makes the line store durable (on shutdown), unless the last
    /// snapshot is recent: fewer than one entry in [`CLOSE_KEEPS_SNAPSHOT`] came after it.
    /// A snapshot's cost grows with everything the linker holds, re-applying with the entries
    /// since, so a restart re-applies those few instead (as after a crash): a 1M rebuild ends
    /// 10,000 entries after its periodic snapshot, and wrote the 100 MB file again for them.
    pub fn close(&self) -> Result<(), ProjectionError> {
        // Not while a batch is half stored (memory is updated before the store).
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let st = self.read_state();
        // `since_snapshot` below `next_offset`: a snapshot was taken or loaded.
        let recent = st.since_snapshot < st.next_offset
            && st.since_snapshot.saturating_mul(CLOSE_KEEPS_SNAPSHOT) < st.next_offset;
        if recent {
            return Ok(());
        }
        self.snapshot(st, None)
    }

    /// Writes a snapshot of `st`, then counts the entries since it from zero (under
    /// `applying`). With a `storer`, once it has stored every line before; it then finishes the
    /// snapshot while this thread goes on (syncing the store and the file took about 90 ms of
    /// each 1M rebuild snapshot's 300 ms).
    fn snapshot(
        &self,
        st: RwLockReadGuard<'_, State>,
        storer: Option<&Storer>,
    ) -> Result<(), ProjectionError> {
        match storer {
            None => {
                self.write_snapshot(&st)?;
                drop(st);
            }
            Some(storer) => {
                // Not waited for under the state's lock: a store that fails marks the state
                // broken, under its lock. Only this thread (under `applying`) changes the
                // state, so it is the same when taken again.
                drop(st);
                storer.flush()?;
                let st = self.read_state();
                storer.install(self.snapshot_file(&st)?)?;
            }
        }
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.since_snapshot = 0;
        st.accesses_since_snapshot = 0;
        Ok(())
    }

    /// Applies the log from the applied offset to its current head. Returns entries applied.
    pub async fn catch_up(&self, log: &dyn Log) -> Result<u64, ProjectionError> {
        self.catch_up_while(log, |_| true).await
    }

    /// Applies the log from the applied offset to its current head, as long as `go_on` (told
    /// the applied offset after each batch) says so. Returns entries applied. While a full
    /// batch is applied (the log likely holds more), the batches after it are read and
    /// decoded ahead, so a long catch-up or a rebuild keeps the cores busy: by helper threads
    /// ([`decoding_helpers`]) taking batches in turn where the log can read without the runtime
    /// ([`Log::read_blocking`], the embedded engine), otherwise by one helper decoding the
    /// batch this thread read first. A short batch (a follower at the head) is applied on
    /// this thread alone.
    pub async fn catch_up_while(
        &self,
        log: &dyn Log,
        mut go_on: impl FnMut(u64) -> bool,
    ) -> Result<u64, ProjectionError> {
        let keys = self.keys.as_deref();
        let helper_reads = log.read_blocking(0, 0).is_some();
        let mut total = 0;
        let mut next = self.applied();
        let mut ready: Option<(Vec<StoredEntry>, Vec<DecodeResult>)> = None;
        let mut spent = Spent::default();
        loop {
            let Some((batch, decoded)) = ready.take() else {
                let entries = self.read_from(log, next).await?;
                let Some(last) = entries.last() else {
                    return Ok(total);
                };
                next = last.offset + 1;
                let decoded = off_the_runtime(|| decode_all(&entries, keys));
                ready = Some((entries, decoded));
                continue;
            };
            if helper_reads && batch.len() == APPLY_BATCH {
                let first = (EntryAt::all(&batch), decoded);
                drop(batch);
                let (applied, stop) =
                    off_the_runtime(|| self.apply_alternating(log, first, &mut go_on))?;
                total += applied;
                if stop {
                    return Ok(total);
                }
                next = self.applied();
                continue;
            }
            if batch.len() < APPLY_BATCH {
                // A short batch reached the head: nothing to overlap with, no helper.
                let at = EntryAt::all(&batch);
                total +=
                    off_the_runtime(|| self.apply_decoded(&at, decoded, &mut spent, None))? as u64;
                spent = Spent::default();
                if !go_on(self.applied()) {
                    return Ok(total);
                }
                continue;
            }
            // The log's reads need the runtime (NATS): the next batch is read here, then
            // decoded by a helper while this one is applied.
            let entries = self.read_from(log, next).await?;
            let garbage = std::mem::take(&mut spent);
            let (applied, ahead) = off_the_runtime(|| {
                std::thread::scope(|scope| {
                    let helper = scope.spawn(move || {
                        drop(garbage);
                        let decoded = decode_all(&entries, keys);
                        (entries, decoded)
                    });
                    let applied =
                        self.apply_decoded(&EntryAt::all(&batch), decoded, &mut spent, None);
                    (applied, helper.join())
                })
            });
            spent.entries.push(batch);
            total += applied? as u64;
            // A panic in the helper is a bug: the next batch is read and decoded again here.
            if let Ok((entries, decoded)) = ahead {
                if let Some(last) = entries.last() {
                    next = last.offset + 1;
                    ready = Some((entries, decoded));
                }
            }
            if !go_on(self.applied()) {
                return Ok(total);
            }
        }
    }

    /// Applies `first` (a full batch) and the full batches after it, read and decoded ahead by
    /// helper threads (`self.helpers`, see [`decoding_helpers`]) that take batches in turn (a
    /// log that reads without the runtime has dense offsets, so batch k starts
    /// `k * APPLY_BATCH` after `first`). What applying a batch leaves goes back to the helper
    /// that decoded it, to be freed where it was allocated. Ends after a short batch (the head, as it was when read), at `go_on`'s word
    /// (then `true`: stop), or if a helper is gone; the caller goes on from
    /// [`Projection::applied`]. Returns the entries applied.
    fn apply_alternating(
        &self,
        log: &dyn Log,
        first: (Vec<EntryAt>, Vec<DecodeResult>),
        go_on: &mut impl FnMut(u64) -> bool,
    ) -> Result<(u64, bool), ProjectionError> {
        type Batch = Result<(Vec<EntryAt>, Vec<DecodeResult>), LogError>;
        let keys = self.keys.as_deref();
        let start = first.0.first().map_or(0, |e| e.offset);
        std::thread::scope(|scope| {
            // At least one: `decoding_helpers` and `with_decoding_helpers` see to it.
            let n = self.helpers;
            let mut ahead = Vec::with_capacity(n);
            let mut garbage = Vec::with_capacity(n);
            let mut helpers = Vec::with_capacity(n);
            // Emptied leftovers, back from the helpers for the next batches (`Spent::clear`).
            let (recycle, recycled) = std::sync::mpsc::channel::<Spent>();
            for h in 0..n as u64 {
                let recycle = recycle.clone();
                let (give, take) = std::sync::mpsc::sync_channel::<Batch>(DECODED_AHEAD);
                let (spend, spent) = std::sync::mpsc::channel::<Garbage>();
                ahead.push(take);
                garbage.push(spend);
                helpers.push(scope.spawn(move || {
                    let mut k = h + 1;
                    // Emptied lists of a batch this helper decoded before, once they are back.
                    let mut spare = (Vec::new(), Vec::new());
                    loop {
                        while let Ok(g) = spent.try_recv() {
                            match g {
                                Garbage::Batch(mut g) => {
                                    spare = g.clear();
                                    let _ = recycle.send(g);
                                }
                                // Freed here, where they were made.
                                Garbage::Lines(lines) => drop(lines),
                            }
                        }
                        let from = start + k * APPLY_BATCH as u64;
                        // Each entry is decoded where the log read it, none copied.
                        let (mut heads, mut decoded) = std::mem::take(&mut spare);
                        // Until lists come back (a helper reads up to `DECODED_AHEAD` batches
                        // first), each batch's are made at their full size: grown entry by
                        // entry they were copied a dozen times and touched twice the memory.
                        heads.reserve(APPLY_BATCH);
                        decoded.reserve(APPLY_BATCH);
                        let view = keys.map(KeyStore::view);
                        let mut decoder = Decoder::new(view.as_ref());
                        let read = log
                            .read_blocking_each(from, APPLY_BATCH, &mut |e| {
                                heads.push(EntryAt::of(e));
                                decoder.push(e, &mut decoded);
                            })
                            .unwrap_or(Ok(0));
                        decoder.finish(&mut decoded);
                        drop(decoder);
                        drop(view);
                        let batch = read.map(|_| (heads, decoded));
                        let full = matches!(&batch, Ok((e, _)) if e.len() == APPLY_BATCH);
                        if give.send(batch).is_err() || !full {
                            break;
                        }
                        k += n as u64;
                    }
                    // What is still to be freed arrives until the applying thread is done.
                    for g in spent {
                        drop(g);
                    }
                }));
            }
            let (storer, storer_end) = Storer::new(2, garbage.clone());
            let storing = scope.spawn(move || self.run_storer(storer_end));
            let mut total = 0;
            let mut current = first;
            let mut k = 0usize;
            let apply = || loop {
                let (batch, decoded) = current;
                let full = batch.len() == APPLY_BATCH;
                let mut left = recycled.try_recv().unwrap_or_default();
                // Batch k (k >= 1) came from helper (k - 1) % n; the first from the caller.
                let maker = k.checked_sub(1).map(|k| k % n);
                storer.made_by(maker);
                let applied = self.apply_decoded(&batch, decoded, &mut left, Some(&storer));
                left.heads = batch;
                let _ = garbage[maker.unwrap_or(0)].send(Garbage::Batch(left));
                total += applied? as u64;
                if !go_on(self.applied()) {
                    return Ok((total, true));
                }
                if !full {
                    return Ok((total, false));
                }
                k += 1;
                let got = ahead[(k - 1) % n].recv();
                match got {
                    Ok(Ok(b)) if !b.0.is_empty() => current = b,
                    Ok(Ok(_)) => return Ok((total, false)),
                    Ok(Err(e)) => return Err(e.into()),
                    // A helper that panicked (a bug): the caller reads on from here.
                    Err(_) => return Ok((total, false)),
                }
            };
            let outcome: Result<(u64, bool), ProjectionError> = apply();
            // Helpers waiting to hand over a batch, or for what to free, are told to stop; they
            // free what the storer hands back until it is done, which it is once it has
            // finished what it was handed (so it is told before they are waited for).
            drop((ahead, garbage));
            drop(storer);
            for helper in helpers {
                // Joined here, so a helper's panic (a bug) does not unwind the caller, which
                // reads on from what was applied.
                let _ = helper.join();
            }
            // What failed in the storer is the catch-up's failure (the projection is then
            // broken: memory is ahead of the store).
            let stored = storing.join().unwrap_or_else(|_| {
                let err = ProjectionError::Damaged("the projection's storer thread failed".into());
                self.broken_by(&err);
                Err(err)
            });
            let (applied, stop) = outcome?;
            stored.map(|()| (applied, stop))
        })
    }

    /// Up to [`APPLY_BATCH`] entries of `log` from `from`; none at the head (after asking a
    /// shared log whether other replicas appended).
    async fn read_from(
        &self,
        log: &dyn Log,
        from: u64,
    ) -> Result<Vec<StoredEntry>, ProjectionError> {
        if from >= log.head().next_offset {
            log.refresh().await?;
            if from >= log.head().next_offset {
                return Ok(Vec::new());
            }
        }
        Ok(log.read(from, APPLY_BATCH).await?)
    }

    /// A digest of everything the projection answers from (linker decisions, the timeline
    /// index and every line), equal for an incremental and a rebuilt projection of the same log.
    pub fn digest(&self) -> [u8; 32] {
        let st = self.read_state();
        let mut h = Sha256::new();
        h.update(st.linker.digest());
        match self.access_digest(&st.access) {
            Ok(d) => h.update(d),
            Err(e) => h.update(format!("the access index could not be read: {e}")),
        }
        h.update(st.next_offset.to_be_bytes());
        for (r, list) in st.by_record.iter().enumerate() {
            for ix in list.iter() {
                let m = st.event_meta(ix);
                h.update((r as u32).to_be_bytes());
                h.update(ix.at.0.to_be_bytes());
                h.update(ix.offset.to_be_bytes());
                h.update(m.source.as_bytes());
                h.update(m.kind.as_bytes());
                h.update(m.category.name().as_bytes());
                h.update([u8::from(m.safeguarding)]);
            }
        }
        for (offset, line) in st.lines.iter().enumerate() {
            if let Some(l) = line {
                h.update((offset as u64).to_be_bytes());
                h.update(l.event_id.as_bytes());
                let (deferred, summary) = l.summary.as_compared();
                h.update([u8::from(deferred)]);
                h.update(summary.as_bytes());
                for r in l.records.iter() {
                    h.update(r.to_be_bytes());
                }
                if let Some(f) = &l.fact {
                    h.update(serde_json::to_vec(f).unwrap_or_default());
                }
                if let Some(m) = &l.erased {
                    h.update(m.erasure_id.as_bytes());
                    h.update(m.at.0.to_be_bytes());
                }
            }
        }
        h.finalize().into()
    }

    /// A digest of `access` (this projection's access state) and the whole access log index,
    /// the store's part and memory's: equal for equal ones, whatever moved to the store when.
    fn access_digest(&self, access: &AccessState) -> Result<[u8; 32], ProjectionError> {
        let index = self.access_index().whole(&self.store)?;
        let mut h = Sha256::new();
        AccessSnapshotRef::of(access, &index).digest(&mut h);
        Ok(h.finalize().into())
    }

    /// Where this projection first differs from `other` (for an auditor comparing a stored
    /// projection with a rebuilt one): the first log offset whose timeline line or index
    /// entries differ, or the part that differs. `None` when they are the same.
    pub fn first_difference(&self, other: &Projection) -> Option<String> {
        let a = self.read_state();
        let b = other.read_state();
        if a.next_offset != b.next_offset {
            return Some(format!(
                "applied {} entries, the other {}",
                a.next_offset, b.next_offset
            ));
        }
        let line = |st: &State, o: usize| {
            st.lines.get(o).and_then(Option::as_ref).map(|l| {
                (
                    l.event_id.clone(),
                    l.summary.clone(),
                    l.records.clone(),
                    l.fact.as_deref().cloned(),
                    l.erased.as_deref().cloned(),
                )
            })
        };
        for o in 0..a.lines.len().max(b.lines.len()) {
            if line(&a, o) != line(&b, o) {
                return Some(format!("the timeline line of the event at offset {o}"));
            }
        }
        let entries = |st: &State| -> Vec<(u32, u64, i64, String, String)> {
            let mut v = Vec::new();
            for (r, list) in st.by_record.iter().enumerate() {
                for ix in list.iter() {
                    let m = st.event_meta(ix);
                    v.push((r as u32, ix.offset, ix.at.0, m.source.into(), m.kind.into()));
                }
            }
            v.sort_by_key(|x| (x.1, x.0));
            v
        };
        let (ea, eb) = (entries(&a), entries(&b));
        if let Some(i) = (0..ea.len().max(eb.len())).find(|&i| ea.get(i) != eb.get(i)) {
            let at = ea.get(i).or(eb.get(i)).map_or(0, |x| x.1);
            return Some(format!("the timeline index at offset {at}"));
        }
        if a.linker.digest() != b.linker.digest() {
            return Some("identity links, persons or families".into());
        }
        match (
            self.access_digest(&a.access),
            other.access_digest(&b.access),
        ) {
            (Ok(da), Ok(db)) if da == db => None,
            (Ok(_), Ok(_)) => Some("consents, break-glass grants or the access-log index".into()),
            (Err(e), _) | (_, Err(e)) => {
                Some(format!("the access-log index (could not be read: {e})"))
            }
        }
    }

    /// What erasing a person's content would take: the key-store names of their partner
    /// records ([`seal::key_names`]) and the log offsets of every event about them.
    pub fn erasure_plan(&self, person_id: &str) -> Result<ErasurePlan, ProjectionError> {
        let st = self.read_state();
        let l = &st.linker;
        let p = Self::person_in(l, person_id)?;
        let recs = l.person_records(p);
        let mut names = Vec::with_capacity(recs.len());
        for &r in recs {
            let rec = l.record(r);
            match rec.key.strip_prefix('@') {
                // `@offset.index`: a subject without a local id, named by its event.
                Some(rest) => {
                    let (off, i) = rest.split_once('.').unwrap_or((rest, "0"));
                    let event_id = off
                        .parse::<usize>()
                        .ok()
                        .and_then(|o| st.lines.get(o))
                        .and_then(Option::as_ref)
                        .map(|lt| lt.event_id.to_string())
                        .unwrap_or_default();
                    names.push(format!("{}@{event_id}#{i}", rec.source));
                }
                None => names.push(rec.key.clone()),
            }
        }
        let mut offsets: Vec<u64> = st.entries_of(recs).iter().map(|x| x.offset).collect();
        offsets.sort_unstable();
        let live = offsets
            .iter()
            .filter(|&&o| {
                st.lines
                    .get(o as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|lt| lt.erased.is_none())
            })
            .count();
        Ok(ErasurePlan {
            person_id: l.person_id(p),
            key_names: names,
            offsets,
            live,
        })
    }

    /// Persons whose content `rule` says is due for erasure at `now` and who still have some
    /// content that is not erased: their family has no open involvement, its last event is
    /// old enough, and they are old enough (when their birth date is known). Families are
    /// checked a few hundred at a time, so applies are not held up for a whole sweep; a
    /// family whose last event is recent is passed over without folding its facts.
    pub fn retention_due(&self, rule: &seal::RetentionRule, now: Timestamp) -> Vec<String> {
        let families: Vec<u32> = {
            let st = self.read_state();
            let l = &st.linker;
            let mut seen = std::collections::HashSet::new();
            (0..l.record_count() as u32)
                .map(|r| l.family_of(l.person_of(r)))
                .filter(|f| seen.insert(*f))
                .collect()
        };
        let mut due = Vec::new();
        for chunk in families.chunks(256) {
            let st = self.read_state();
            for &fam in chunk {
                if fam as usize >= st.linker.record_count() {
                    continue;
                }
                due.extend(st.due_in_family(fam, rule, now));
            }
        }
        due.sort();
        due.dedup();
        due
    }

    /// Whether `rule` says `person_id`'s content is due for erasure at `now` (checked again
    /// just before a retention erasure, in case the family became active meanwhile).
    pub fn retention_due_person(
        &self,
        person_id: &str,
        rule: &seal::RetentionRule,
        now: Timestamp,
    ) -> Result<bool, ProjectionError> {
        let st = self.read_state();
        let p = Self::person_in(&st.linker, person_id)?;
        let fam = st.linker.family_of(p);
        let id = st.linker.person_id(p);
        Ok(st.due_in_family(fam, rule, now).contains(&id))
    }

    /// Numbers of records, persons, families and open candidates.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let st = self.read_state();
        let l = &st.linker;
        let open = l.candidates().iter().filter(|c| l.is_open(c)).count();
        (l.record_count(), l.person_count(), l.family_count(), open)
    }

    /// Runs `f` on the linker (for benchmarks and ground-truth comparison).
    pub fn with_linker<T>(&self, f: impl FnOnce(&Linker) -> T) -> T {
        f(&self.read_state().linker)
    }

    fn person_view(l: &Linker, p: u32, score: Option<f64>) -> PersonView {
        let first = l.record(p);
        PersonView {
            person_id: l.person_id(p),
            family_id: l.family_id(l.family_of(p)),
            name: first.display_name.clone(),
            date_of_birth: l.person_records(p).iter().find_map(|&r| l.record(r).dob),
            records: l
                .person_records(p)
                .iter()
                .map(|&r| l.record(r).clone())
                .collect(),
            links: l
                .person_links(p)
                .into_iter()
                .map(|k| LinkView {
                    record_a: l.record(k.a).key.clone(),
                    record_b: l.record(k.b).key.clone(),
                    why: k.why.clone(),
                })
                .collect(),
            score,
        }
    }

    /// Finds persons.
    pub fn find_person(&self, q: &PersonQuery) -> Vec<PersonView> {
        let st = self.read_state();
        let l = &st.linker;
        let one = |p: Option<u32>| -> Vec<PersonView> {
            p.map(|p| Self::person_view(l, p, None))
                .into_iter()
                .collect()
        };
        match q {
            PersonQuery::NhsNumber(n) => one(l.find_by_nhs(n)),
            PersonQuery::Upn(u) => one(l.find_by_upn(u)),
            PersonQuery::Local { source, local_id } => one(l.find_by_local(source, local_id)),
            PersonQuery::Id(id) => one(l.person_by_id(id)),
            PersonQuery::Name { given, family, dob } => l
                .find_by_name(given, family, *dob)
                .into_iter()
                .map(|f| Self::person_view(l, f.person, f.score.map(|s| s.total)))
                .collect(),
        }
    }

    fn family_in(l: &Linker, id: &str) -> Result<u32, ProjectionError> {
        l.family_by_id(id)
            .ok_or_else(|| ProjectionError::NotFound(format!("no family {id:?}")))
    }

    fn person_in(l: &Linker, id: &str) -> Result<u32, ProjectionError> {
        l.person_by_id(id)
            .ok_or_else(|| ProjectionError::NotFound(format!("no person {id:?}")))
    }

    /// The family of a scope (a family, or a person's family).
    fn scope_family(l: &Linker, scope: &Scope) -> Result<u32, ProjectionError> {
        match scope {
            Scope::Family(id) => Self::family_in(l, id),
            Scope::Person(id) => Ok(l.family_of(Self::person_in(l, id)?)),
        }
    }

    /// Everything held about a person (for a subject access request): their partner records
    /// and links, every event about them (read from the log, oldest first), and the consents
    /// naming their records, each with the time it was withdrawn from (if it was).
    pub async fn subject(
        &self,
        log: &dyn Log,
        person_id: &str,
    ) -> Result<Subject, ProjectionError> {
        let (person, offsets, consents) = {
            let st = self.read_state();
            let l = &st.linker;
            let p = Self::person_in(l, person_id)?;
            let recs = l.person_records(p);
            let mut offsets: Vec<u64> = st.entries_of(recs).iter().map(|x| x.offset).collect();
            offsets.reverse();
            let consents = st
                .consents_naming(recs)
                .into_iter()
                .map(|(c, w)| (c.clone(), w))
                .collect();
            (Self::person_view(l, p, None), offsets, consents)
        };
        let mut events = Vec::with_capacity(offsets.len());
        let mut erased = Vec::new();
        for o in offsets {
            match self.load_event(log, o).await? {
                Ok(e) => events.push((o, e)),
                Err(marker) => erased.push((o, marker)),
            }
        }
        Ok(Subject {
            person,
            events,
            erased,
            consents,
        })
    }

    /// Reads the event at `offset` from the log (events are not copied into the projection:
    /// the log is their one home), opening it if sealed. `Err(marker)` inside: its content
    /// was erased, and this is what shows instead.
    async fn load_event(
        &self,
        log: &dyn Log,
        offset: u64,
    ) -> Result<Result<Event, String>, ProjectionError> {
        let entry = log
            .read(offset, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ProjectionError::Damaged(format!("the log has no entry at offset {offset}"))
            })?;
        match Record::decode(&entry.body) {
            Ok(Record::PartnerEvent(e)) => Ok(Ok(e)),
            Ok(Record::SealedEvent(se)) => {
                match open_sealed(se, self.keys.as_deref().map(KeyStore::view).as_ref()) {
                    Ok(Opened::Event(e, ..)) => Ok(Ok(e)),
                    Ok(Opened::Erased(_, mark, label)) => {
                        Ok(Err(seal::erased_marker(&label, mark.at)))
                    }
                    Err(why) => Err(ProjectionError::Keys(why)),
                }
            }
            Ok(_) => Err(ProjectionError::Damaged(format!(
                "offset {offset} is not an event"
            ))),
            Err(e) => Err(ProjectionError::Damaged(e.to_string())),
        }
    }

    /// Reads from the log the summaries of `page`'s items that were deferred and not yet read
    /// (sealed events' summaries are worked out at their first read, not when applied), and
    /// keeps them on their lines for later reads. [`Projection::timeline`] decides the page
    /// from memory; call this once the read is decided and logged, as a family view reads its
    /// events after.
    pub async fn open_summaries(
        &self,
        log: &dyn Log,
        page: &mut TimelinePage,
    ) -> Result<(), ProjectionError> {
        // The items read (indices), whose summaries their lines keep.
        let mut read = Vec::new();
        for (i, item) in page.items.iter_mut().enumerate().filter(|(_, i)| i.unread) {
            match self.load_event(log, item.offset).await? {
                Ok(ev) if ev.event_id != item.event_id => {
                    return Err(ProjectionError::Damaged(format!(
                        "the log has event {} at offset {}, the timeline {}",
                        ev.event_id, item.offset, item.event_id
                    )));
                }
                Ok(ev) => {
                    item.summary = view::summary_line(&ev);
                    read.push(i);
                }
                // Its keys were destroyed since it was applied: the erasure's own entry
                // marks the line when the projection reaches it.
                Err(marker) => {
                    item.summary = marker;
                    item.erased = true;
                }
            }
            item.unread = false;
        }
        let st = self.read_state();
        for item in read.into_iter().map(|i| &page.items[i]) {
            st.keep_summary(item.offset, || item.summary.clone());
        }
        if let Some(fam) = page.deferred_in.take() {
            st.refresh_texts(fam);
        }
        Ok(())
    }

    /// A page of the timeline of a family or person, newest first, showing only the events
    /// the access rule lets the reader see and counting the others. A refused read gives an
    /// empty page with `reading.refused` set. Summaries not yet read are left empty: fill
    /// them with [`Projection::open_summaries`].
    pub fn timeline(
        &self,
        scope: &Scope,
        filter: &TimelineFilter,
        page_size: usize,
        cursor: &str,
        read: &ReadAs<'_>,
    ) -> Result<TimelinePage, ProjectionError> {
        let after = decode_cursor(cursor)?;
        let page_size = page_size.clamp(1, MAX_PAGE);
        let mut page = TimelinePage {
            items: Vec::new(),
            next_cursor: String::new(),
            withheld: 0,
            total: 0,
            reading: Reading::default(),
            deferred_in: None,
        };
        let st = self.read_state();
        let l = &st.linker;
        let (fam, person) = match scope {
            Scope::Family(id) => (Self::family_in(l, id)?, None),
            Scope::Person(id) => {
                let p = Self::person_in(l, id)?;
                (l.family_of(p), Some(p))
            }
        };
        let memo = st.family_memo(fam);
        let mut reading = Reading::default();
        let Some(gate) = st.gate(&memo, read, &mut reading) else {
            page.reading = reading;
            return Ok(page);
        };
        let mut last = None;
        for e in &memo.entries {
            let ix = e.ix;
            // A person's events are the family's events that name the person.
            let people = memo.people_of(e);
            if person.is_some_and(|p| !people.contains(&p)) {
                continue;
            }
            let m = st.event_meta(&ix);
            if filter.from.is_some_and(|f| ix.at < f) || filter.to.is_some_and(|t| ix.at >= t) {
                continue;
            }
            if !filter.sources.is_empty() && !filter.sources.iter().any(|s| s == m.source) {
                continue;
            }
            if !filter.kinds.is_empty() && !filter.kinds.iter().any(|k| k == m.kind) {
                continue;
            }
            if !st.allowed(&gate, &ix, people, &mut reading) {
                page.withheld += 1;
                continue;
            }
            page.total += 1;
            if after.is_some_and(|c| (ix.at, ix.offset) >= c) {
                continue;
            }
            if page.items.len() == page_size {
                if let Some((a, o)) = last {
                    page.next_cursor = encode_cursor(a, o);
                }
                last = None;
                continue;
            }
            let (start, id_end, end) = e.text.ok_or_else(|| {
                ProjectionError::Damaged(format!("no timeline line at {}", ix.offset))
            })?;
            let text = |from: u32, to: u32| String::from(&memo.texts[from as usize..to as usize]);
            // A deferred summary: read since the memo was made, or still to be read
            // (`open_summaries`), which then makes the memo again with it.
            let (summary, unread) = if e.deferred {
                page.deferred_in = Some(fam);
                match st.summary_read(ix.offset) {
                    Some(read) => (String::from(read), false),
                    None => (String::new(), true),
                }
            } else {
                (text(id_end, end), false)
            };
            page.items.push(TimelineItem {
                offset: ix.offset,
                occurred_at: ix.at,
                source: String::from(m.source),
                event_id: text(start, id_end),
                kind: String::from(m.kind),
                summary,
                unread,
                person_ids: people
                    .iter()
                    .map(|&p| match memo.persons.iter().find(|(q, _)| *q == p) {
                        Some((_, id)) => id.clone(),
                        None => l.person_id(p),
                    })
                    .collect(),
                erased: e.erased,
            });
            last = Some((ix.at, ix.offset));
        }
        page.reading = reading;
        Ok(page)
    }

    /// The family view of a family (by family id or a member's person id), as of `now`,
    /// from the events the access rule lets the reader see. `None` when the read is refused.
    pub async fn family(
        &self,
        log: &dyn Log,
        scope: &Scope,
        now: Timestamp,
        read: &ReadAs<'_>,
    ) -> Result<(Option<FamilyView>, Reading), ProjectionError> {
        let (events, reading) = self.family_access(scope, read)?;
        if reading.refused {
            return Ok((None, reading));
        }
        let view = self.family_view_of(log, scope, now, &events).await?;
        Ok((Some(view), reading))
    }

    /// The events of a family that `read` may see, and the access decision (none, and
    /// refused, when the reader has no standing).
    pub fn family_access(
        &self,
        scope: &Scope,
        read: &ReadAs<'_>,
    ) -> Result<(FamilyEvents, Reading), ProjectionError> {
        let mut reading = Reading::default();
        let st = self.read_state();
        let l = &st.linker;
        let fam = Self::scope_family(l, scope)?;
        let memo = st.family_memo(fam);
        let Some(gate) = st.gate(&memo, read, &mut reading) else {
            let none = FamilyEvents {
                memo: None,
                chosen: Vec::new(),
            };
            return Ok((none, reading));
        };
        let mut chosen = Vec::with_capacity(memo.entries.len());
        for (i, e) in memo.entries.iter().enumerate().rev() {
            if st.allowed(&gate, &e.ix, memo.people_of(e), &mut reading) {
                chosen.push(i as u32);
            }
        }
        drop(gate);
        let memo = Some(memo);
        Ok((FamilyEvents { memo, chosen }, reading))
    }

    /// The family view of a scope's family, folded from `events` (as
    /// [`Projection::family_access`] chose them) as of `now`. The first view of a family
    /// reads its events from the log and keeps what the view folds of them, until the family
    /// changes.
    pub async fn family_view_of(
        &self,
        log: &dyn Log,
        scope: &Scope,
        now: Timestamp,
        events: &FamilyEvents,
    ) -> Result<FamilyView, ProjectionError> {
        let cache = match &events.memo {
            Some(memo) => Some(match memo.view.get() {
                Some(c) => c.clone(),
                None => self.fill_view_cache(log, memo).await?,
            }),
            None => None,
        };
        let st = self.read_state();
        let l = &st.linker;
        let fam = Self::scope_family(l, scope)?;
        let members: Vec<Member> = l
            .family_persons(fam)
            .into_iter()
            .map(|p| {
                let r = l.record(p);
                Member {
                    person_id: l.person_id(p),
                    name: r.display_name.clone(),
                    date_of_birth: l.person_records(p).iter().find_map(|&x| l.record(x).dob),
                    age: None,
                    sex: l.person_records(p).iter().find_map(|&x| l.record(x).sex),
                }
            })
            .collect();
        let (Some(memo), Some(cache)) = (&events.memo, cache) else {
            return Ok(view::fold_family(
                l.family_id(fam),
                members,
                Vec::new(),
                now,
            ));
        };
        let chosen: Vec<(Indexed, Option<u32>, &ViewFact)> = events
            .chosen
            .iter()
            .filter_map(|&i| {
                let (first, fact) = cache.facts.get(i as usize)?.as_ref()?;
                Some((memo.entries[i as usize].ix, *first, fact))
            })
            .collect();
        // Only outcome measures name their person.
        let persons: Vec<String> = chosen
            .iter()
            .map(|(_, first, fact)| match first {
                Some(r) if fact.names_person() => l.person_id(l.person_of(*r)),
                _ => String::new(),
            })
            .collect();
        let folded = chosen
            .iter()
            .zip(&persons)
            .map(|((ix, _, fact), person)| ViewEvent {
                offset: ix.offset,
                occurred_at: ix.at,
                source: st.event_meta(ix).source,
                person,
                fact,
            })
            .collect();
        Ok(view::fold_family(l.family_id(fam), members, folded, now))
    }

    /// Works out what the family view folds of each event of `memo`, from its kind where that
    /// says all, else from the event read from the log, and keeps it in the memo (counting its
    /// bytes while the memo is kept).
    async fn fill_view_cache(
        &self,
        log: &dyn Log,
        memo: &Arc<FamilyMemo>,
    ) -> Result<Arc<ViewCache>, ProjectionError> {
        /// What the fold needs of one event.
        enum Need {
            /// Nothing: its content was erased. The memo's mark is what tells: an erasure
            /// marks lines (and drops memos) before it destroys the keys.
            Erased,
            /// Its kind says all (most events: contacts, notifications, closures).
            Kind(ViewFact),
            /// Its payload, read from the log.
            Read,
        }
        let needs: Vec<Need> = {
            let st = self.read_state();
            let need = |e: &MemoEntry| match e.erased {
                true => Need::Erased,
                false => {
                    ViewFact::of_kind(st.event_meta(&e.ix).kind).map_or(Need::Read, Need::Kind)
                }
            };
            memo.entries.iter().map(need).collect()
        };
        let mut loaded = Vec::with_capacity(needs.len());
        for (e, need) in memo.entries.iter().zip(&needs) {
            loaded.push(match need {
                Need::Read => self.load_event(log, e.ix.offset).await?.ok(),
                _ => None,
            });
        }
        let st = self.read_state();
        let l = &st.linker;
        // The events read for the view give the summaries a timeline would read later.
        for (e, event) in memo.entries.iter().zip(&loaded) {
            if let Some(event) = event {
                st.keep_summary(e.ix.offset, || view::summary_line(event));
            }
        }
        let mut bytes = std::mem::size_of::<ViewCache>();
        let facts = needs
            .into_iter()
            .zip(loaded)
            .map(|(need, event)| {
                let (first, fact) = match (need, event) {
                    (Need::Kind(fact), _) => (None, fact),
                    (Need::Read, Some(event)) => {
                        let first = event
                            .subjects
                            .first()
                            .and_then(|s| s.local_id.as_deref())
                            .and_then(|id| l.record_by_local(&event.source, id));
                        (first, ViewFact::of(&event.payload))
                    }
                    // Erased, or its keys destroyed since.
                    _ => return None,
                };
                bytes += fact.bytes() + 8;
                Some((first, fact))
            })
            .collect();
        let cache = Arc::new(ViewCache { facts, bytes });
        let mut kept = st.memo.lock().unwrap_or_else(|p| p.into_inner());
        let current = kept
            .by_family
            .get(&memo.family)
            .is_some_and(|m| Arc::ptr_eq(m, memo));
        // Another view may have filled it meanwhile: either is right, the first is kept.
        if memo.view.set(cache.clone()).is_ok() && current {
            kept.bytes += cache.bytes;
        }
        Ok(cache)
    }

    /// Match candidates (open ones only, or all), oldest first.
    pub fn candidates(&self, open_only: bool) -> Vec<CandidateView> {
        let st = self.read_state();
        let l = &st.linker;
        l.candidates()
            .iter()
            .filter(|c| !open_only || l.is_open(c))
            .map(|c| Self::candidate_view(l, c))
            .collect()
    }

    /// A candidate by id.
    pub fn candidate(&self, id: &str) -> Option<CandidateView> {
        let st = self.read_state();
        let l = &st.linker;
        l.candidate(id).map(|c| Self::candidate_view(l, c))
    }

    fn candidate_view(l: &Linker, c: &Candidate) -> CandidateView {
        CandidateView {
            candidate: c.clone(),
            record_a: l.record(c.a).clone(),
            record_b: l.record(c.b).clone(),
            open: l.is_open(c),
        }
    }

    /// A consent by id, with the time it was withdrawn from (if it was).
    pub fn consent(&self, id: &str) -> Option<(ConsentGiven, Option<Timestamp>)> {
        let st = self.read_state();
        st.access
            .consents
            .get(id)
            .map(|c| (c.clone(), st.access.withdrawn.get(id).copied()))
    }

    /// The partner record keys (`source/local_id`) of persons, for recording a consent.
    pub fn person_record_keys(
        &self,
        person_ids: &[String],
    ) -> Result<Vec<String>, ProjectionError> {
        let st = self.read_state();
        let l = &st.linker;
        let mut keys = Vec::new();
        for id in person_ids {
            let p = Self::person_in(l, id)?;
            keys.extend(l.person_records(p).iter().map(|&r| l.record(r).key.clone()));
        }
        Ok(keys)
    }

    /// The family of a scope, and how `read` stands to it (no events are read).
    pub fn standing(&self, scope: &Scope, read: &ReadAs<'_>) -> Result<Reading, ProjectionError> {
        let st = self.read_state();
        let l = &st.linker;
        let fam = Self::scope_family(l, scope)?;
        let mut reading = Reading::default();
        let _ = st.gate(&st.family_memo(fam), read, &mut reading);
        Ok(reading)
    }

    /// The consents naming a family's members (each with the time it was withdrawn from, if
    /// it was) and the sharing decisions about it, oldest first.
    pub fn family_consents(&self, scope: &Scope) -> Result<FamilyConsents, ProjectionError> {
        let st = self.read_state();
        let l = &st.linker;
        let fam = Self::scope_family(l, scope)?;
        let mut consents: Vec<(ConsentGiven, Option<Timestamp>)> = st
            .consents_naming(l.family_records(fam))
            .into_iter()
            .map(|(c, w)| (c.clone(), w))
            .collect();
        consents.sort_by_key(|(c, _)| c.recorded_at);
        let family_id = l.family_id(fam);
        let members: Vec<String> = l
            .family_persons(fam)
            .into_iter()
            .map(|p| l.person_id(p))
            .collect();
        let decisions = st
            .access
            .sharing
            .iter()
            .filter(|d| {
                d.family_id == family_id || d.person_ids.iter().any(|p| members.contains(p))
            })
            .cloned()
            .collect();
        Ok((consents, decisions))
    }

    /// Offsets of access entries, newest first, below `before` (all when `None`), at most
    /// `limit`: all of them when `keys` is empty, else those indexed under any of `keys`
    /// (`f/<family id>`, `p/<person id>`, `u/<user id>`).
    pub fn access_offsets(
        &self,
        keys: &[String],
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<u64>, ProjectionError> {
        let before = before.unwrap_or(u64::MAX);
        let lists: Vec<&str> = if keys.is_empty() {
            vec![ALL_ACCESSES]
        } else {
            keys.iter().map(String::as_str).collect()
        };
        // Memory's part of each list (all at or above `spilled`), newest first, taken under
        // the index's lock; the store's part is read after it is let go (the applier takes it
        // while it holds the state's lock, so a long read must not hold it). A move to the store
        // meanwhile only adds offsets at or above `spilled`, so reading below it sees the same.
        let (mut newest, spilled) = {
            let index = self.access_index();
            let newest: Vec<Vec<u64>> = lists
                .iter()
                .map(|&k| {
                    let held = match k {
                        ALL_ACCESSES => &index.accesses,
                        k => index.by.get(k).map_or(&[][..], Vec::as_slice),
                    };
                    held[..held.partition_point(|&o| o < before)]
                        .iter()
                        .rev()
                        .take(limit)
                        .copied()
                        .collect()
                })
                .collect();
            (newest, index.spilled)
        };
        for (k, out) in lists.iter().zip(&mut newest) {
            if out.len() < limit && spilled > 0 {
                let below = before.min(spilled);
                out.extend(self.store.access_offsets(k, below, limit - out.len())?);
            }
        }
        let mut all: Vec<u64> = newest.into_iter().flatten().collect();
        if lists.len() > 1 {
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.dedup();
        }
        all.truncate(limit);
        Ok(all)
    }

    /// The access entries at `offsets`, read from the log.
    pub async fn access_entries(
        &self,
        log: &dyn Log,
        offsets: &[u64],
    ) -> Result<Vec<(u64, AccessEntry)>, ProjectionError> {
        let mut out = Vec::with_capacity(offsets.len());
        for &o in offsets {
            let entry = log.read(o, 1).await?.into_iter().next().ok_or_else(|| {
                ProjectionError::Damaged(format!("the log has no entry at offset {o}"))
            })?;
            match Record::decode(&entry.body) {
                Ok(Record::Access(a)) => out.push((o, a)),
                _ => {
                    return Err(ProjectionError::Damaged(format!(
                        "offset {o} is not an access entry"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The members of a family (person ids), with its id; for a scope.
    pub fn family_members(&self, scope: &Scope) -> Result<(String, Vec<String>), ProjectionError> {
        let st = self.read_state();
        let l = &st.linker;
        let fam = Self::scope_family(l, scope)?;
        Ok((
            l.family_id(fam),
            l.family_persons(fam)
                .into_iter()
                .map(|p| l.person_id(p))
                .collect(),
        ))
    }

    /// Whether a subject record key is known.
    pub fn has_record(&self, key: &str) -> bool {
        self.read_state().linker.record_by_key(key).is_some()
    }
}

/// Applies `log` to `projection` until `stop` is set: reads after each notification on
/// `wake`, and at least every 50 ms. Errors are logged and retried after a pause.
pub async fn follow(
    projection: Arc<Projection>,
    log: Arc<dyn Log>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        // A stop is seen between batches.
        let go_on = |_| !*stop.borrow();
        match projection.catch_up_while(log.as_ref(), go_on).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, "projection could not apply the log; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests;
