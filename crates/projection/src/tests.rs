use std::sync::Arc;

use tellonce_demo::{County, Settings};
use tellonce_domain::identity::{Decision, MatchDecision};
use tellonce_domain::record::HUB_SOURCE;
use tellonce_log::storage::FsDir;
use tellonce_log::{EmbeddedLog, EmbeddedOptions, NewEntry};

use tellonce_domain::access::{ConsentGiver, Grant, Role};

use super::*;

const END: Timestamp = Timestamp(1_790_000_000_000);

fn open_log(dir: &Path) -> Arc<EmbeddedLog<FsDir>> {
    let (log, _) = EmbeddedLog::open(
        FsDir::new(dir.join("log")).expect("log folder"),
        EmbeddedOptions::default(),
    )
    .expect("log opens");
    Arc::new(log)
}

/// The projection in `dir` opened over `log` and caught up with it.
async fn open_caught_up(dir: &Path, log: &dyn Log, keys: Option<Arc<KeyStore>>) -> Projection {
    let p = Projection::open(dir, log, keys).await.expect("open");
    p.catch_up(log).await.expect("catch up");
    p
}

/// The projection in `dir` rebuilt from the whole of `log`: one pass from an empty folder.
async fn rebuilt(dir: &Path, log: &dyn Log, keys: Option<Arc<KeyStore>>) -> Projection {
    let p = Projection::rebuild(dir, log, keys).await.expect("rebuild");
    p.catch_up(log).await.expect("replay");
    p
}

/// The demo county of `seed`, `families` and `events`, ending at [`END`].
fn county(seed: u64, families: usize, events: u64) -> County {
    County::new(Settings {
        seed,
        families,
        events,
        end: END,
    })
}

async fn fill(log: &dyn Log, families: usize, events: u64) {
    fill_with(log, "", families, events).await
}

/// Appends the demo county, with `tag` appended to every event id (the same tag twice gives
/// duplicates, which the log drops).
async fn fill_with(log: &dyn Log, tag: &str, families: usize, events: u64) {
    let mut county = county(11, families, events);
    let entries: Vec<NewEntry> = county
        .events()
        .map(|mut e| {
            e.event_id.push_str(tag);
            NewEntry::of(&Record::PartnerEvent(e), END.0)
        })
        .collect();
    for chunk in entries.chunks(500) {
        log.append(chunk.to_vec()).await.expect("append");
    }
}

/// A log of the demo county (`families`, `events`) in `tmp`, and its projection in
/// `tmp/proj` caught up and closed: the log, that folder, and the projection's digest.
async fn closed_projection(
    tmp: &Path,
    families: usize,
    events: u64,
) -> (Arc<EmbeddedLog<FsDir>>, std::path::PathBuf, [u8; 32]) {
    let log = open_log(tmp);
    fill(log.as_ref(), families, events).await;
    let dir = tmp.join("proj");
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    p.close().expect("close");
    (log, dir, p.digest())
}

const ALL: ReadAs<'static> = ReadAs::Everything;

#[tokio::test]
async fn incremental_with_restarts_equals_rebuild() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 60, 3_000).await;

    // Incremental: small batches, with a restart in the middle.
    let dir = tmp.path().join("proj");
    {
        let p = Projection::open(&dir, log.as_ref(), None)
            .await
            .expect("open");
        let entries = log.read(0, 1_200).await.expect("read");
        for chunk in entries.chunks(37) {
            p.apply(chunk).expect("apply");
        }
        p.close().expect("close");
    }
    // A decision arrives between restarts.
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), 1_200, "resumes from its snapshot");
    p.catch_up(log.as_ref()).await.expect("catch up");
    let open = p.candidates(true);
    let person = p.find_person(&PersonQuery::Id(
        p.with_linker(|l| l.person_id(l.person_of(0))),
    ));
    let (a, b) = match open.first() {
        Some(c) => (c.record_a.key.clone(), c.record_b.key.clone()),
        None => (person[0].records[0].key.clone(), "police/none".into()),
    };
    let d = Record::MatchDecision(MatchDecision {
        decision_id: "d-1".into(),
        candidate_id: open.first().map(|c| c.candidate.id.clone()),
        record_a: a,
        record_b: b,
        decision: Decision::Reject,
        decided_by: "worker-1".into(),
        reason: "different children".into(),
        decided_at: END,
    });
    log.append(vec![NewEntry {
        source: HUB_SOURCE.into(),
        id: "d-1".into(),
        recorded_at_ms: END.0,
        body: d.encode(),
    }])
    .await
    .expect("append decision");
    p.catch_up(log.as_ref()).await.expect("catch up");
    let incremental = p.digest();
    let counts = p.counts();
    p.close().expect("close");
    drop(p);

    // Rebuilt: one pass from an empty folder.
    let q = rebuilt(&tmp.path().join("proj2"), log.as_ref(), None).await;
    assert_eq!(q.applied(), 3_001);
    assert_eq!(q.digest(), incremental);
    assert_eq!(q.counts(), counts);
    assert!(counts.1 > 100 && counts.2 > 20, "{counts:?}");
}

#[tokio::test]
async fn timeline_pages_filters_and_withholding() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 2_000).await;
    let p = open_caught_up(&tmp.path().join("proj"), log.as_ref(), None).await;
    let (fam, _) = largest_family(&p);
    let scope = Scope::Family(fam.clone());
    let full = p
        .timeline(&scope, &TimelineFilter::default(), MAX_PAGE, "", &ALL)
        .expect("timeline");
    assert!(full.items.len() > 20, "{}", full.items.len());
    assert!(full
        .items
        .windows(2)
        .all(|w| (w[0].occurred_at, w[0].offset) > (w[1].occurred_at, w[1].offset)));
    // Paging returns the same items.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let page = p
            .timeline(&scope, &TimelineFilter::default(), 7, &cursor, &ALL)
            .expect("page");
        paged.extend(page.items);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(paged, full.items);
    // Filters.
    let police = TimelineFilter {
        sources: vec!["police".into()],
        ..TimelineFilter::default()
    };
    let only = p
        .timeline(&scope, &police, MAX_PAGE, "", &ALL)
        .expect("filtered");
    assert!(only.items.iter().all(|i| i.source == "police"));
    let mid = full.items[full.items.len() / 2].occurred_at;
    let since = TimelineFilter {
        from: Some(mid),
        ..TimelineFilter::default()
    };
    let recent = p
        .timeline(&scope, &since, MAX_PAGE, "", &ALL)
        .expect("range");
    assert!(recent.items.iter().all(|i| i.occurred_at >= mid));
    // Withholding: with no consent recorded, a police officer sees the police's own events
    // and the rest is counted, not shown.
    let officer = police_officer();
    let as_officer = as_at_end(&officer);
    let seen = p
        .timeline(
            &scope,
            &TimelineFilter::default(),
            MAX_PAGE,
            "",
            &as_officer,
        )
        .expect("withheld");
    assert!(!seen.reading.refused, "{:?}", seen.reading);
    assert_eq!(seen.items.len(), only.items.len());
    assert_eq!(seen.withheld as usize, full.items.len() - only.items.len());
    assert_eq!(
        seen.reading.withheld_no_consent + seen.reading.withheld_safeguarding,
        seen.withheld
    );
    // A bad cursor is a clear error.
    assert!(matches!(
        p.timeline(&scope, &TimelineFilter::default(), 5, "nonsense", &ALL),
        Err(ProjectionError::Invalid(_))
    ));
    // The family view folds the same events.
    let (view, reading) = p
        .family(log.as_ref(), &scope, END, &ALL)
        .await
        .expect("family");
    let view = view.expect("not refused");
    assert_eq!(view.event_count, full.items.len());
    assert_eq!(reading.withheld_by(), vec![]);
    assert_eq!(view.family_id, fam);
    assert!(!view.members.is_empty());
}

#[tokio::test]
async fn each_records_index_is_in_time_order_though_events_arrive_out_of_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    // The county's events, every third chunk of 100 in reverse: many arrive before events
    // that happened earlier (most partners send in time order, but not all, nor always).
    let mut county = county(11, 20, 2_000);
    let events: Vec<Event> = county.events().collect();
    for (i, chunk) in events.chunks(100).enumerate() {
        let mut chunk = chunk.to_vec();
        if i % 3 == 0 {
            chunk.reverse();
        }
        let entries = chunk
            .iter()
            .map(|e| NewEntry::of(&Record::PartnerEvent(e.clone()), END.0))
            .collect();
        log.append(entries).await.expect("append");
    }
    let p = open_caught_up(&tmp.path().join("proj"), log.as_ref(), None).await;
    let st = p.read_state();
    let key = |x: &Indexed| (x.at, x.offset);
    assert!(
        st.by_record
            .iter()
            .any(|l| l.windows(2).any(|w| w[0].offset > w[1].offset)),
        "some record's events arrived out of time order"
    );
    for (r, list) in st.by_record.iter().enumerate() {
        assert!(
            list.windows(2).all(|w| key(&w[0]) < key(&w[1])),
            "record {r}: in time order, each event once"
        );
    }
}

/// A police practitioner.
fn police_officer() -> Viewer {
    Viewer {
        user_id: "pc-1".into(),
        organisation: "police".into(),
        roles: vec![Role::Practitioner],
    }
}

/// A read by `viewer` at [`END`], without break-glass.
fn as_at_end(viewer: &Viewer) -> ReadAs<'_> {
    ReadAs::Viewer {
        viewer,
        now: END,
        grant: None,
    }
}

/// The id of the family with the most partner records, and how many it has.
fn largest_family(p: &Projection) -> (String, usize) {
    p.with_linker(|l| {
        let mut best = (0, 0);
        for person in l.persons() {
            let f = l.family_of(person);
            let n = l.family_records(f).len();
            if n > best.1 {
                best = (f, n);
            }
        }
        (l.family_id(best.0), best.1)
    })
}

/// The family view as `read` would see it folded from whole events: each event it may see,
/// read from the log, with the persons of its subjects, folded by `view::family_view`.
async fn view_from_the_log(
    p: &Projection,
    log: &dyn Log,
    scope: &Scope,
    read: &ReadAs<'_>,
    members_of: &FamilyView,
) -> FamilyView {
    let (events, _) = p.family_access(scope, read).expect("access");
    let mut folded = Vec::new();
    for offset in events.offsets() {
        let entry = log.read(offset, 1).await.expect("read").remove(0);
        let Ok(Record::PartnerEvent(event)) = Record::decode(&entry.body) else {
            panic!("an event at {offset}");
        };
        let persons = p.with_linker(|l| {
            event
                .subjects
                .iter()
                .map(|s| {
                    s.local_id
                        .as_deref()
                        .and_then(|id| l.find_by_local(&event.source, id))
                        .map(|q| l.person_id(q))
                        .unwrap_or_default()
                })
                .collect()
        });
        folded.push(view::FamilyEvent {
            offset,
            event,
            persons,
        });
    }
    let (id, members) = (members_of.family_id.clone(), members_of.members.clone());
    view::family_view(id, members, &folded, END)
}

#[test]
fn a_fact_worked_out_from_the_kind_is_the_fact_of_the_payload() {
    let mut county = county(5, 40, 8_000);
    let mut from_kind = std::collections::BTreeSet::new();
    let mut read = std::collections::BTreeSet::new();
    for e in county.events() {
        let kind = e.payload.kind();
        match ViewFact::of_kind(kind) {
            Some(fact) => {
                assert_eq!(fact, ViewFact::of(&e.payload), "{kind}");
                from_kind.insert(kind);
            }
            None => {
                read.insert(kind);
            }
        }
    }
    // Every kind the demo makes is seen: nine from their kind, five read.
    assert_eq!(
        (from_kind.len(), read.len()),
        (9, 5),
        "{from_kind:?} {read:?}"
    );
}

#[tokio::test]
async fn a_family_view_folds_kept_facts_as_it_would_the_events() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 2_000).await;
    let p = open_caught_up(&tmp.path().join("proj"), log.as_ref(), None).await;
    let scope = Scope::Family(largest_family(&p).0);
    let held = |p: &Projection| p.read_state().memo.lock().expect("memo").bytes;
    p.family_access(&scope, &ALL).expect("access");
    let memo_only = held(&p);
    assert!(memo_only > 0);
    // The first view reads the log, and what it keeps is counted with the memo.
    let (first, _) = p
        .family(log.as_ref(), &scope, END, &ALL)
        .await
        .expect("view");
    let first = first.expect("not refused");
    assert!(held(&p) > memo_only + first.event_count * 8, "{}", held(&p));
    assert!(first.event_count > 20, "{}", first.event_count);
    // Outcome measures name their person: the fold reads the first subject's person.
    assert!(
        first.outcomes.iter().any(|o| o.person_id.starts_with("p-")),
        "{:?}",
        first.outcomes
    );
    let expected = view_from_the_log(&p, log.as_ref(), &scope, &ALL, &first).await;
    assert_eq!(first, expected);
    // Later views fold what it kept: a log with nothing in it gives the same view.
    let other = tempfile::tempdir().expect("tmp");
    let empty = open_log(other.path());
    let (again, _) = p
        .family(empty.as_ref(), &scope, END, &ALL)
        .await
        .expect("kept");
    assert_eq!(again, Some(first.clone()));
    // A reader who may see less is shown less, from the same facts.
    let officer = police_officer();
    let as_officer = as_at_end(&officer);
    let (theirs, reading) = p
        .family(empty.as_ref(), &scope, END, &as_officer)
        .await
        .expect("kept");
    let theirs = theirs.expect("not refused");
    assert!(reading.withheld_no_consent > 0, "{reading:?}");
    assert_eq!(
        theirs.event_count as u64 + reading.withheld_no_consent + reading.withheld_safeguarding,
        first.event_count as u64
    );
    let expected = view_from_the_log(&p, log.as_ref(), &scope, &as_officer, &theirs).await;
    assert_eq!(theirs, expected);

    // A new event about a member is in the next view (the kept facts are dropped with the
    // family's memo).
    let key = p.with_linker(|l| {
        let Scope::Family(id) = &scope else {
            unreachable!()
        };
        let fam = l.family_by_id(id).expect("family");
        l.record(l.family_records(fam)[0]).key.clone()
    });
    let (source, local) = key.split_once('/').expect("source/local");
    let mut e = tellonce_domain::sample::ppn(source, "one-more", 1, END);
    e.subjects.truncate(1);
    e.relationships.clear();
    e.subjects[0].local_id = Some(local.into());
    log.append(vec![NewEntry::of(&Record::PartnerEvent(e), END.0)])
        .await
        .expect("append");
    p.catch_up(log.as_ref()).await.expect("apply");
    assert_eq!(held(&p), 0, "the family's memo and its facts are dropped");
    let (after, _) = p
        .family(log.as_ref(), &scope, END, &ALL)
        .await
        .expect("view");
    let after = after.expect("not refused");
    assert_eq!(after.event_count, first.event_count + 1);
    assert_eq!(
        after.flags.ppn_last_30_days,
        first.flags.ppn_last_30_days + 1
    );
    let expected = view_from_the_log(&p, log.as_ref(), &scope, &ALL, &after).await;
    assert_eq!(after, expected);
}

#[tokio::test]
async fn a_projection_of_another_log_is_rebuilt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 5, 100).await;
    let dir = tmp.path().join("proj");
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    p.close().expect("close");
    drop(p);
    log.close();
    drop(log);

    let other = tempfile::tempdir().expect("tmp");
    let log2 = open_log(other.path());
    let mut county = county(99, 5, 100);
    let e = county.events().next().expect("an event");
    let rec = Record::PartnerEvent(e);
    let mut entries = Vec::new();
    for i in 0..100 {
        entries.push(NewEntry {
            source: "police".into(),
            id: format!("x{i}"),
            recorded_at_ms: 0,
            body: rec.encode(),
        });
    }
    log2.append(entries).await.expect("append");
    let q = Projection::open(&dir, log2.as_ref(), None)
        .await
        .expect("open");
    assert_eq!(q.applied(), 0, "a snapshot of another log is not used");
}

#[tokio::test]
async fn a_crash_after_the_snapshot_resumes_from_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 30, 1_500).await;
    let dir = tmp.path().join("proj");
    {
        let p = Projection::open(&dir, log.as_ref(), None)
            .await
            .expect("open");
        p.apply(&log.read(0, 500).await.expect("read"))
            .expect("apply");
        p.close().expect("close");
    }
    {
        // Applied further, then "crashed": no snapshot beyond 500, sled ahead of it.
        let p = Projection::open(&dir, log.as_ref(), None)
            .await
            .expect("reopen");
        p.apply(&log.read(500, 700).await.expect("read"))
            .expect("apply");
        assert_eq!(p.applied(), 1_200);
    }
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), 500, "resumes from the snapshot");
    p.catch_up(log.as_ref()).await.expect("catch up");
    let q = rebuilt(&tmp.path().join("proj2"), log.as_ref(), None).await;
    assert_eq!(p.digest(), q.digest());
}

/// A consent given 30 days before `END` for these partner records, granting `partners` the
/// `categories`.
fn consent_for(
    id: &str,
    records: Vec<String>,
    partners: &[&str],
    categories: &[Category],
) -> ConsentGiven {
    ConsentGiven {
        consent_id: id.into(),
        given_by: "A parent".into(),
        giver: ConsentGiver::ParentalResponsibility,
        persons: vec![],
        records,
        grants: vec![Grant {
            partners: partners.iter().map(|s| s.to_string()).collect(),
            categories: categories.to_vec(),
        }],
        purpose: "early help".into(),
        given_on: Date::of(Timestamp(END.0 - 86_400_000 * 30)),
        review_on: None,
        expires_on: None,
        recorded_by: "w".into(),
        organisation: "early-intervention".into(),
        recorded_at: Timestamp(END.0 - 86_400_000 * 30),
    }
}

/// Appends hub records and applies them.
async fn record(p: &Projection, log: &dyn Log, recs: Vec<Record>) {
    let entries = recs.iter().map(|rec| NewEntry::of(rec, END.0)).collect();
    log.append(entries).await.expect("append");
    p.catch_up(log).await.expect("apply");
}

#[tokio::test]
async fn consent_withdrawal_and_break_glass_change_what_a_viewer_sees() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 2_000).await;
    let dir = tmp.path().join("proj");
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    // A family the police know and the early intervention team do not.
    let (fam, police_events) = largest_family(&p);
    assert!(police_events > 0);
    let scope = Scope::Family(fam.clone());
    let full = p
        .timeline(&scope, &TimelineFilter::default(), MAX_PAGE, "", &ALL)
        .expect("timeline");
    let officer = police_officer();
    let read = |v: &Viewer| {
        p.timeline(
            &scope,
            &TimelineFilter::default(),
            MAX_PAGE,
            "",
            &as_at_end(v),
        )
        .expect("timeline")
    };
    let before = read(&officer);
    assert!(!before.reading.refused);
    assert!(before.withheld > 0);

    // Consent for every member, every partner, every category: the officer sees it all.
    let keys = p.with_linker(|l| {
        let f = l.family_by_id(&fam).expect("family");
        l.family_records(f)
            .iter()
            .map(|&r| l.record(r).key.clone())
            .collect::<Vec<_>>()
    });
    let consent = consent_for("C-test", keys, &["*"], &Category::ALL);
    record(&p, log.as_ref(), vec![Record::ConsentGiven(consent)]).await;
    let consented = read(&officer);
    // Events about people outside the family (no consent of theirs) may still be withheld.
    assert!(
        consented.withheld < before.withheld,
        "{:?}",
        consented.reading
    );
    assert_eq!(
        consented.items.len() as u64 + consented.withheld,
        full.items.len() as u64
    );

    // Withdrawn an hour before the read: back to the police's own events.
    record(
        &p,
        log.as_ref(),
        vec![Record::ConsentWithdrawn(ConsentWithdrawn {
            withdrawal_id: "W-1".into(),
            consent_id: "C-test".into(),
            effective_from: Timestamp(END.0 - 3_600_000),
            reason: "changed their mind".into(),
            recorded_by: "w".into(),
            organisation: "early-intervention".into(),
            recorded_at: Timestamp(END.0 - 3_600_000),
        })],
    )
    .await;
    let withdrawn = read(&officer);
    assert_eq!(withdrawn.items, before.items);
    assert_eq!(withdrawn.withheld, before.withheld);

    // A worker with no relationship is refused; a break-glass entry in the access log grants
    // them standing until it lapses.
    let stranger = Viewer {
        user_id: "sw-9".into(),
        organisation: "childrens-trust-other".into(),
        roles: vec![Role::Practitioner],
    };
    let refused = read(&stranger);
    assert!(refused.reading.refused);
    assert!(refused.items.is_empty());
    let entry = AccessEntry {
        access_id: "a-1".into(),
        at: Timestamp(END.0 - 60_000),
        user_id: "sw-9".into(),
        organisation: "childrens-trust-other".into(),
        roles: vec![Role::Practitioner],
        method: "GetTimeline".into(),
        asked: "timeline".into(),
        family_id: fam.clone(),
        person_ids: vec![],
        shown: 0,
        withheld: 0,
        outcome: access::AccessOutcome::Filtered,
        standing: "break glass".into(),
        reason: "child missing tonight".into(),
        break_glass: true,
        break_glass_until: Some(Timestamp(END.0 + 3_600_000)),
    };
    record(&p, log.as_ref(), vec![Record::Access(entry)]).await;
    let glass = read(&stranger);
    assert!(!glass.reading.refused);
    assert!(glass.reading.break_glass);
    let later = ReadAs::Viewer {
        viewer: &stranger,
        now: Timestamp(END.0 + 3_600_000),
        grant: None,
    };
    let lapsed = p
        .timeline(&scope, &TimelineFilter::default(), MAX_PAGE, "", &later)
        .expect("timeline");
    assert!(lapsed.reading.refused);
    assert_eq!(
        p.access_offsets(&[format!("f/{fam}")], None, 10)
            .expect("index")
            .len(),
        1,
        "the access entry is indexed by family"
    );

    // All of it survives a restart and equals a rebuild.
    let digest = p.digest();
    p.close().expect("close");
    drop(p);
    let reopened = open_caught_up(&dir, log.as_ref(), None).await;
    assert_eq!(reopened.digest(), digest);
    let rebuilt = rebuilt(&tmp.path().join("proj2"), log.as_ref(), None).await;
    assert_eq!(rebuilt.digest(), digest);
}

/// A log of sealed demo events, with the key store they were sealed under.
async fn fill_sealed(log: &dyn Log, keys: &KeyStore, families: usize, events: u64) {
    let mut county = county(5, families, events);
    let mut n = 0u64;
    let entries: Vec<NewEntry> = county
        .events()
        .map(|e| {
            n += 1;
            let k = keys.keys_for(&seal::key_names(&e)).expect("keys");
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_be_bytes());
            NewEntry::of(&Record::SealedEvent(seal::seal(e, &k, nonce)), END.0)
        })
        .collect();
    for chunk in entries.chunks(500) {
        log.append(chunk.to_vec()).await.expect("append");
    }
}

/// In `tmp`: a log of sealed demo events, its key store, and a projection (in `proj`) caught
/// up with it.
async fn sealed_projection(
    tmp: &Path,
    families: usize,
    events: u64,
) -> (
    Arc<EmbeddedLog<FsDir>>,
    Arc<KeyStore>,
    std::path::PathBuf,
    Projection,
) {
    let log = open_log(tmp);
    let keys = Arc::new(KeyStore::open(&tmp.join("keys")).expect("keys"));
    fill_sealed(log.as_ref(), &keys, families, events).await;
    let dir = tmp.join("proj");
    let p = open_caught_up(&dir, log.as_ref(), Some(keys.clone())).await;
    (log, keys, dir, p)
}

fn erasure_of(p: &Projection, keys: &KeyStore, person: &str, id: &str) -> Record {
    let plan = p.erasure_plan(person).expect("plan");
    Record::Erasure(seal::Erasure {
        erasure_id: id.into(),
        person_id: person.into(),
        key_ids: keys.current(&plan.key_names),
        offsets: plan.offsets,
        reason: seal::ErasureReason::Request {
            reference: "SAR-1".into(),
            note: "granted".into(),
        },
        decided_by: "dpo-1".into(),
        erased_at: END,
    })
}

#[tokio::test]
async fn erasure_blanks_content_keeps_links_and_equals_a_rebuild() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (log, keys, dir, p) = sealed_projection(tmp.path(), 30, 1_500).await;
    let counts = p.counts();

    // The person with the most events, and their family.
    let person = p.with_linker(|l| {
        (0..l.record_count() as u32)
            .map(|r| l.person_id(l.person_of(r)))
            .max_by_key(|id| p.erasure_plan(id).map(|x| x.offsets.len()).unwrap_or(0))
            .expect("a person")
    });
    let scope = Scope::Person(person.clone());
    let all = async |p: &Projection, scope: &Scope| read_all(p, log.as_ref(), scope).await;
    let before = all(&p, &scope).await;
    assert!(before.len() >= 3 && before.iter().all(|i| !i.erased));
    let family = Scope::Family(
        p.find_person(&PersonQuery::Id(person.clone()))[0]
            .family_id
            .clone(),
    );
    let family_before = all(&p, &family).await;

    let x = erasure_of(&p, &keys, &person, "x-1");
    let Record::Erasure(plan) = &x else {
        unreachable!()
    };
    assert!(!plan.key_ids.is_empty());
    log.append(vec![NewEntry::of(&x, END.0)])
        .await
        .expect("append");
    p.catch_up(log.as_ref()).await.expect("apply erasure");

    // Every event about the person now shows the marker; their keys are destroyed.
    let after = all(&p, &scope).await;
    assert_eq!(after.len(), before.len(), "events stay, content goes");
    for i in &after {
        assert!(i.erased, "{i:?}");
        assert!(i.summary.starts_with("[erased on "), "{}", i.summary);
    }
    for id in &plan.key_ids {
        assert!(matches!(keys.get(id), KeyState::Erased(_)));
    }
    // The rest of the family keeps what is not about the person.
    let family_after = all(&p, &family).await;
    let untouched = family_after.iter().filter(|i| !i.erased).count();
    let about: std::collections::HashSet<u64> = after.iter().map(|i| i.offset).collect();
    assert_eq!(
        untouched,
        family_before
            .iter()
            .filter(|i| !about.contains(&i.offset))
            .count()
    );
    // Links are kept: the same persons and families.
    assert_eq!(p.counts(), counts);
    // The subject access export lists the erased events, without content.
    let subject = p.subject(log.as_ref(), &person).await.expect("subject");
    assert!(subject.events.is_empty());
    assert_eq!(subject.erased.len(), before.len());
    // The family view still folds (from what is left).
    p.family(log.as_ref(), &scope, END, &ALL)
        .await
        .expect("family view");

    // A later event about one of the person's records is sealed under a new key and reads.
    let names = p.erasure_plan(&person).expect("plan").key_names;
    let rec_name = names
        .iter()
        .find(|n| !n.contains('@'))
        .expect("a record with a local id")
        .clone();
    let (source, local) = rec_name.split_once('/').expect("source/local");
    let mut e = tellonce_domain::sample::ppn(source, "after-erasure", 1, END);
    e.subjects.truncate(1);
    e.relationships.clear();
    e.subjects[0].local_id = Some(local.into());
    let k = keys.keys_for(&seal::key_names(&e)).expect("keys");
    assert!(!plan.key_ids.contains(&k[0].0), "a new key");
    log.append(vec![NewEntry::of(
        &Record::SealedEvent(seal::seal(e, &k, [9; 12])),
        END.0,
    )])
    .await
    .expect("append");
    p.catch_up(log.as_ref()).await.expect("apply");
    let newest = all(&p, &scope).await;
    assert!(newest
        .iter()
        .any(|i| i.event_id == "after-erasure" && !i.erased));

    // Restart, and rebuild from the log with the same key store: the same answers.
    let incremental = p.digest();
    p.close().expect("close");
    drop(p);
    let p = open_caught_up(&dir, log.as_ref(), Some(keys.clone())).await;
    assert_eq!(p.digest(), incremental);
    let q = rebuilt(&tmp.path().join("proj2"), log.as_ref(), Some(keys.clone())).await;
    assert_eq!(q.first_difference(&p), None);
    assert_eq!(q.digest(), incremental);
    // Nothing of the erased content stays in the projection's store.
    drop(p);
    let marker = before[0].summary.clone();
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} still holds erased content",
            entry.display()
        );
    }
}

/// In a long catch-up the storer thread stores lines while the next batch is applied; a batch
/// with an erasure waits for it, then rewrites the chunks it stored. A rebuild with the erasure
/// a batch after the lines it erases equals the incremental projection, before and after a
/// restart.
#[tokio::test]
async fn an_erasure_in_a_long_catch_up_rewrites_what_the_storer_stored() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (log, keys, _dir, p) = sealed_projection(tmp.path(), 30, 1_500).await;
    let person = p.with_linker(|l| l.person_id(l.person_of(0)));
    let scope = Scope::Person(person.clone());
    let before = read_all(&p, log.as_ref(), &scope).await;
    assert!(!before.is_empty() && before.iter().all(|i| !i.erased));
    assert!(before.iter().all(|i| i.offset < APPLY_BATCH as u64));
    // The erasure comes in the second full batch of a replay, after the first is stored.
    fill_with(log.as_ref(), "-filler", 5, 1_000).await;
    let at = log.head().next_offset;
    assert!(
        at > APPLY_BATCH as u64 && at < 2 * APPLY_BATCH as u64,
        "{at}"
    );
    let x = erasure_of(&p, &keys, &person, "x-long");
    log.append(vec![NewEntry::of(&x, END.0)])
        .await
        .expect("append");
    fill_with(log.as_ref(), "-after", 20, 5_000).await;
    let head = log.head().next_offset;
    assert!(head > at + 2 * APPLY_BATCH as u64, "{head}");

    p.catch_up(log.as_ref()).await.expect("catch up");
    let dir = tmp.path().join("rebuilt");
    let q = rebuilt(&dir, log.as_ref(), Some(keys.clone())).await;
    assert_eq!(q.applied(), head);
    let erased = read_all(&q, log.as_ref(), &scope).await;
    assert_eq!(erased.len(), before.len());
    assert!(erased.iter().all(|i| i.erased), "{erased:?}");
    assert_eq!(q.first_difference(&p), None);
    assert_eq!(q.digest(), p.digest());
    q.close().expect("close");
    drop(q);
    let r = open_caught_up(&dir, log.as_ref(), Some(keys.clone())).await;
    assert_eq!(r.first_difference(&p), None);
    assert_eq!(r.digest(), p.digest());
}

#[tokio::test]
async fn sealed_summaries_are_read_from_the_log_when_first_shown_and_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (log, keys, dir, p) = sealed_projection(tmp.path(), 12, 600).await;
    let digest = p.digest();
    // The family with the most events.
    let family = {
        let st = p.read_state();
        let l = &st.linker;
        let f = (0..l.record_count() as u32)
            .map(|r| l.family_of(r))
            .max_by_key(|&f| st.entries_of(l.family_records(f)).len())
            .expect("a family");
        l.family_id(f)
    };
    let scope = Scope::Family(family);
    let page = |p: &Projection| {
        p.timeline(&scope, &TimelineFilter::default(), MAX_PAGE, "", &ALL)
            .expect("timeline")
    };
    // Applying opened only the payloads standing reads (lead practitioners, TAF meetings).
    let first = page(&p);
    assert!(first.items.len() >= 20, "{} events", first.items.len());
    for i in &first.items {
        assert_eq!(i.unread, !standing_reads_payload(&i.kind), "{i:?}");
        assert_eq!(i.unread, i.summary.is_empty(), "{i:?}");
    }
    assert!(first.items.iter().any(|i| i.unread));
    assert!(first.items.iter().any(|i| !i.unread));

    // Read from the log: each is the summary line of the event there.
    let mut read = first.clone();
    p.open_summaries(log.as_ref(), &mut read)
        .await
        .expect("summaries");
    for i in &read.items {
        let event = p.load_event(log.as_ref(), i.offset).await.expect("read");
        let event = event.expect("not erased");
        assert_eq!(i.summary, view::summary_line(&event));
        assert!(!i.unread && !i.erased);
    }
    // Kept: the next read has them without the log, from the family's memo.
    let next = page(&p);
    assert_eq!(next.items, read.items);
    assert_eq!(next.deferred_in, None, "the memo holds them now");
    // Reading them changes nothing an audit compares: the digest is a rebuild's.
    assert_eq!(p.digest(), digest);
    let q = rebuilt(&tmp.path().join("proj2"), log.as_ref(), Some(keys.clone())).await;
    assert_eq!(q.digest(), digest);
    assert_eq!(q.first_difference(&p), None);

    // A family view reads the events its fold needs, and keeps their summaries too.
    let unread = |p: &Projection| page(p).items.iter().filter(|i| i.unread).count();
    let before = unread(&q);
    q.family(log.as_ref(), &scope, END, &ALL)
        .await
        .expect("family view");
    assert!(
        unread(&q) < before,
        "{} of {before} still unread",
        unread(&q)
    );
    let mut again = page(&q);
    q.open_summaries(log.as_ref(), &mut again)
        .await
        .expect("summaries");
    assert_eq!(again.items, read.items);

    // A restart keeps them deferred (the store never held them), and reads them the same.
    p.close().expect("close");
    drop(p);
    let p = open_caught_up(&dir, log.as_ref(), Some(keys.clone())).await;
    assert_eq!(p.digest(), digest);
    let mut restarted = page(&p);
    assert_eq!(restarted.items, first.items);
    p.open_summaries(log.as_ref(), &mut restarted)
        .await
        .expect("summaries");
    assert_eq!(restarted.items, read.items);
}

#[test]
fn only_the_kinds_standing_reads_are_opened_when_applied() {
    // Every kind the county publishes: the payload gives a standing fact exactly when
    // `standing_reads_payload` says it must be opened to find one.
    let mut kinds = std::collections::BTreeMap::new();
    for e in county(9, 40, 3_000).events() {
        let kind = e.payload.kind();
        let Decoded::Event(_, line) = plain_event(e) else {
            panic!("an event decodes as one");
        };
        kinds.insert(kind, line.fact.is_some());
        assert_eq!(line.fact.is_some(), standing_reads_payload(kind), "{kind}");
    }
    assert_eq!(kinds.len(), 14, "every kind: {kinds:?}");
}

/// The whole timeline of `scope` as a reader gets it: decided from memory, then the summaries
/// not yet read read from `log`.
async fn read_all(p: &Projection, log: &dyn Log, scope: &Scope) -> Vec<TimelineItem> {
    let mut page = p
        .timeline(scope, &TimelineFilter::default(), MAX_PAGE, "", &ALL)
        .expect("timeline");
    p.open_summaries(log, &mut page).await.expect("summaries");
    page.items
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn sealed_events_without_their_keys_stop_the_projection() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    let keys = KeyStore::open(&tmp.path().join("keys")).expect("keys");
    fill_sealed(log.as_ref(), &keys, 3, 50).await;
    // No key store at all.
    let p = Projection::open(&tmp.path().join("a"), log.as_ref(), None)
        .await
        .expect("open");
    let err = p.catch_up(log.as_ref()).await.expect_err("refused");
    assert!(err.to_string().contains("no key store"), "{err}");
    assert_eq!(p.applied(), 0, "nothing applied");
    // A key store that lost its keys (not erased): an error, never a blank.
    let empty = Arc::new(KeyStore::open(&tmp.path().join("other-keys")).expect("keys"));
    let p = Projection::open(&tmp.path().join("b"), log.as_ref(), Some(empty))
        .await
        .expect("open");
    let err = p.catch_up(log.as_ref()).await.expect_err("refused");
    assert!(err.to_string().contains("no record of erasing"), "{err}");
}

#[tokio::test]
async fn family_memos_follow_the_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 10, 600).await;
    let p = open_caught_up(&tmp.path().join("proj"), log.as_ref(), None).await;
    let fam = p.with_linker(|l| l.family_id(l.family_of(l.person_of(0))));
    let scope = Scope::Family(fam.clone());
    let read = |p: &Projection| {
        p.timeline(&scope, &TimelineFilter::default(), MAX_PAGE, "", &ALL)
            .expect("timeline")
    };
    let kept = |p: &Projection| p.read_state().memo.lock().expect("memo").by_family.len();
    let before = read(&p);
    assert_eq!(kept(&p), 1, "the first read works the memo out");

    // An entry that is not about families keeps the memo.
    let checkpoint = Record::Checkpoint(tellonce_domain::record::Checkpoint {
        tree_size: 1,
        root_hash: "00".into(),
        signed_at: END,
        key_id: "00".into(),
        signature: "00".into(),
    });
    log.append(vec![NewEntry::of(&checkpoint, END.0)])
        .await
        .expect("append");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(kept(&p), 1);

    // Events of the log by source and family, to make new ones from.
    let mut events: Vec<(String, Event<Payload>)> = Vec::new();
    for e in log.read(0, 1_000).await.expect("read") {
        if let Ok(Record::PartnerEvent(ev)) = Record::decode(&e.body) {
            let fam = p.with_linker(|l| {
                l.family_id(
                    l.family_of(
                        l.record_by_key(&format!(
                            "{}/{}",
                            ev.source,
                            ev.subjects[0].local_id.as_deref().unwrap_or_default()
                        ))
                        .expect("record"),
                    ),
                )
            });
            events.push((fam, ev));
        }
    }
    let memo_of = |p: &Projection, fam: &str| {
        p.read_state()
            .memo
            .lock()
            .expect("memo")
            .by_family
            .values()
            .find(|m| m.family_id == fam)
            .cloned()
    };
    // Three other families, read, so their memos are kept.
    let mut others: Vec<String> = events.iter().map(|(f, _)| f.clone()).collect();
    others.sort();
    others.dedup();
    others.retain(|f| *f != fam);
    assert!(others.len() >= 3, "{others:?}");
    for f in &others[..3] {
        p.timeline(
            &Scope::Family(f.clone()),
            &TimelineFilter::default(),
            MAX_PAGE,
            "",
            &ALL,
        )
        .expect("timeline");
    }
    assert_eq!(kept(&p), 4);
    let untouched = memo_of(&p, &others[2]).expect("kept");

    // A new event about a member drops that family's memo only, and the next read shows it.
    let newest = &before.items[0];
    let old = log.read(newest.offset, 1).await.expect("read");
    let Ok(Record::PartnerEvent(mut event)) = Record::decode(&old[0].body) else {
        panic!("an event");
    };
    event.event_id = format!("{}-again", event.event_id);
    event.occurred_at = Timestamp(newest.occurred_at.0 + 1);
    log.append(vec![NewEntry::of(&Record::PartnerEvent(event), END.0)])
        .await
        .expect("append");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(kept(&p), 3, "an event drops its family's memo");
    assert!(memo_of(&p, &fam).is_none());
    let after = read(&p);
    assert_eq!(after.total, before.total + 1);
    assert!(after.items[0].event_id.ends_with("-again"));
    assert_eq!(&after.items[1..], &before.items[..]);

    // An event that joins two families (a partner states two of their children share a
    // household) drops both memos; a third family's stays as it was.
    let (a, b) = (&others[0], &others[1]);
    let (ea, eb) = events
        .iter()
        .filter(|(f, _)| f == a)
        .find_map(|(_, ea)| {
            events
                .iter()
                .find(|(f, eb)| f == b && eb.source == ea.source)
                .map(|(_, eb)| (ea.clone(), eb.clone()))
        })
        .expect("events of both families from one partner");
    let mut joined = ea.clone();
    joined.event_id = "joined-1".into();
    joined.subjects = vec![ea.subjects[0].clone(), eb.subjects[0].clone()];
    joined.relationships = vec![tellonce_domain::event::Relationship {
        from: 0,
        to: 1,
        kind: tellonce_domain::event::RelationshipKind::HouseholdMember,
    }];
    log.append(vec![NewEntry::of(&Record::PartnerEvent(joined), END.0)])
        .await
        .expect("append");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert!(memo_of(&p, a).is_none() && memo_of(&p, b).is_none());
    let still = memo_of(&p, &others[2]).expect("a third family's memo is kept");
    assert!(Arc::ptr_eq(&still, &untouched));
    assert_eq!(
        kept(&p),
        2,
        "the first family's (read again above) and the third's"
    );

    // Reads through memos answer as a projection that never kept one.
    let q = rebuilt(&tmp.path().join("proj2"), log.as_ref(), None).await;
    assert_eq!(read(&q).items, read(&p).items);
    for f in &others {
        let scope = Scope::Family(f.clone());
        let page = |p: &Projection| {
            p.timeline(&scope, &TimelineFilter::default(), MAX_PAGE, "", &ALL)
                .expect("timeline")
        };
        assert_eq!(page(&q), page(&p), "family {f}");
    }
}

/// A catch-up over several batches (each decoded while the one before is applied): when it
/// returns, sled holds every line, in order, and the applied offset, and a projection
/// reopened without a snapshot answers the same.
#[tokio::test]
async fn a_catch_up_over_several_batches_leaves_sled_complete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 100, 21_000).await;
    let head = log.head().next_offset;
    // Each helper decodes at least two full batches (with two helpers; the test runs with
    // one and with two, whatever the machine's cores), and the storer indexes what it wrote
    // both on the way (every `INDEX_EVERY` chunks) and at the end.
    assert!(head > 5 * APPLY_BATCH as u64, "several batches: {head}");
    let chunks = head as usize / APPLY_BATCH * APPLY_BATCH.div_ceil(LINES_PER_CHUNK);
    assert!(chunks > INDEX_EVERY, "{chunks} chunks");
    let dir = tmp.path().join("proj");
    let p = Projection::rebuild(&dir, log.as_ref(), None)
        .await
        .expect("rebuild")
        .with_decoding_helpers(2);
    let mut seen = Vec::new();
    let applied = p
        .catch_up_while(log.as_ref(), |at| {
            seen.push(at);
            true
        })
        .await
        .expect("catch up");
    assert_eq!(applied, head);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(stored_applied(&p), head);
    assert_eq!(*p.watch_applied().borrow(), head);
    let mut lines = 0;
    let mut last = None;
    for (_, body) in p.store.chunks().expect("chunks") {
        let chunk: Vec<(u64, Line)> = serde_json::from_slice(&body).expect("lines");
        for (o, _) in chunk {
            assert!(last.is_none_or(|l| l < o), "lines in order");
            last = Some(o);
            lines += 1;
        }
    }
    let events = p.read_state().lines.iter().flatten().count();
    assert_eq!(lines, events, "every line in memory is in sled");
    let digest = p.digest();
    drop(p);
    // Reopened without a snapshot, the projection is built from the log again, the same.
    let q = open_caught_up(&dir, log.as_ref(), None).await;
    assert_eq!(q.digest(), digest);

    // Told to stop after two batches (while helpers are reading ahead), a catch-up stops
    // there, with nothing read ahead applied; the next catch-up goes on from there to the
    // same projection. (With one helper: the same as with two.)
    let r = Projection::rebuild(&tmp.path().join("stopped"), log.as_ref(), None)
        .await
        .expect("rebuild")
        .with_decoding_helpers(1);
    let stop_at = 2 * APPLY_BATCH as u64;
    let applied = r
        .catch_up_while(log.as_ref(), |at| at < stop_at)
        .await
        .expect("catch up");
    assert_eq!((applied, r.applied()), (stop_at, stop_at));
    assert_eq!(
        r.catch_up(log.as_ref()).await.expect("go on"),
        head - stop_at
    );
    assert_eq!(r.digest(), digest);
}

/// A log whose reads need the runtime (as NATS reads do): the embedded log without
/// `read_blocking`.
struct AsyncReadsOnly(Arc<EmbeddedLog<FsDir>>);

impl Log for AsyncReadsOnly {
    fn append(
        &self,
        entries: Vec<NewEntry>,
    ) -> tellonce_log::BoxFuture<'_, Result<Vec<tellonce_log::AppendOutcome>, LogError>> {
        self.0.append(entries)
    }
    fn read(
        &self,
        from: u64,
        max: usize,
    ) -> tellonce_log::BoxFuture<'_, Result<Vec<StoredEntry>, LogError>> {
        self.0.read(from, max)
    }
    fn head(&self) -> tellonce_log::Head {
        self.0.head()
    }
}

#[tokio::test]
async fn a_catch_up_reads_the_same_whether_or_not_the_log_reads_without_the_runtime() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 40, 5_000).await;
    let head = log.head().next_offset;
    assert!(
        head > 2 * APPLY_BATCH as u64,
        "several full batches: {head}"
    );
    let async_only = AsyncReadsOnly(log.clone());
    assert!(async_only.read_blocking(0, 0).is_none());
    assert!(log.read_blocking(0, 0).is_some());
    let helper_reads = open_caught_up(&tmp.path().join("a"), log.as_ref(), None).await;
    let reads_here = open_caught_up(&tmp.path().join("b"), &async_only, None).await;
    assert_eq!(helper_reads.applied(), head);
    assert_eq!(reads_here.applied(), head);
    assert_eq!(helper_reads.digest(), reads_here.digest());
    assert_eq!(helper_reads.first_difference(&reads_here), None);
    // The helpers' catch-up stored its lines on the storer thread: a restart reads them back.
    helper_reads.close().expect("close");
    drop(helper_reads);
    let restarted = open_caught_up(&tmp.path().join("a"), log.as_ref(), None).await;
    assert_eq!(restarted.applied(), head);
    assert_eq!(restarted.first_difference(&reads_here), None);
    assert_eq!(restarted.digest(), reads_here.digest());
}

mod stored_lines {
    use proptest::prelude::*;

    use super::*;

    prop_compose! {
        fn any_line()(
            at in 0i64..4_000_000_000_000,
            texts in proptest::collection::vec(any::<String>(), 4),
            records in proptest::collection::vec(any::<u32>(), 0..4),
            cat in any::<u8>(),
            safeguarding in any::<bool>(),
            fact in 0u8..3,
            sealed in proptest::option::of((proptest::collection::vec("[0-9a-f]{16}", 1..3), any::<String>())),
            deferred in any::<bool>(),
            erase in 0u8..3,
        ) -> Line {
            // A deferred line (a sealed event not opened when applied) has neither summary nor
            // sealed summary.
            let (summary, sealed) = match deferred {
                true => (String::new(), None),
                false => (texts[3].clone(), sealed),
            };
            let mut line = Line {
                at,
                source: texts[0].clone(),
                kind: texts[1].clone(),
                event_id: texts[2].clone(),
                summary,
                records: Vec::new(),
                category: Category::ALL[usize::from(cat % 6)],
                safeguarding,
                fact: match fact {
                    0 => None,
                    1 => Some(LineFact::Lead { practitioner_id: texts[0].clone(), organisation: texts[1].clone() }),
                    _ => Some(LineFact::Team { attendees: texts.clone() }),
                },
                erased: None,
                sealed: sealed.map(|(keys, text)| SealedLine { keys, text }),
                deferred,
                head: None,
                text: None,
            };
            let mark = ErasedMark { at: Timestamp(at / 2), erasure_id: texts[2].clone() };
            // Erased before the head is written (at decoding), after it (in the batch), or not.
            if erase == 1 {
                line.erase(&mark, "right to erasure");
            }
            line.write_head();
            if erase == 2 {
                line.erase(&mark, "retention");
            }
            line.records = records;
            line
        }
    }

    proptest! {
        /// A chunk written from the lines' heads is the chunk serde writes: the same JSON
        /// value, read back as the same lines.
        #[test]
        fn chunks_from_heads_equal_serialized_chunks(
            lines in proptest::collection::vec(any_line(), 1..6),
            first in any::<u32>(),
        ) {
            let chunk: Vec<(u64, Line)> = lines
                .into_iter()
                .enumerate()
                .map(|(i, l)| (u64::from(first) + i as u64, l))
                .collect();
            let fast = chunk_json(&chunk).expect("chunk");
            let value: serde_json::Value = serde_json::from_slice(&fast).expect("valid JSON");
            prop_assert_eq!(value, serde_json::to_value(&chunk).expect("serde"));
            let back: Vec<(u64, Line)> = serde_json::from_slice(&fast).expect("lines");
            prop_assert_eq!(serde_json::to_vec(&back).expect("again"), serde_json::to_vec(&chunk).expect("serde"));
        }

        /// A line's records in memory are the records it was given, whether inline or not
        /// (`NONE`, which marks an inline place not taken, among them too).
        #[test]
        fn line_records_hold_what_they_were_given(
            records in proptest::collection::vec(prop_oneof![Just(LineRecords::NONE), any::<u32>(), 0..4u32], 0..6),
        ) {
            let held = LineRecords::of(&records);
            prop_assert_eq!(&*held, records.as_slice());
            prop_assert_eq!(held.clone(), LineRecords::of(&records));
            prop_assert_eq!(std::mem::size_of::<LineRecords>(), std::mem::size_of::<Box<[u32]>>());
        }

        /// A plain line's head, written directly, is byte for byte the head `serde_json`
        /// writes; a line with anything else (escapes, facts, erasures, sealed summaries) is
        /// left to `serde_json`.
        #[test]
        fn plain_heads_are_what_serde_json_writes(
            mut line in any_line(),
            texts in proptest::collection::vec("[a-zA-Z0-9 ./:-]{0,12}|[a-z\"\\\\\u{1}\u{7f}é]{0,4}", 4),
        ) {
            line.source = texts[0].clone();
            line.kind = texts[1].clone();
            line.event_id = texts[2].clone();
            if !line.deferred && line.sealed.is_none() {
                line.summary = texts[3].clone();
            }
            let mut serde = serde_json::to_vec(&line.stored(None)).expect("serde");
            serde.pop();
            let escapes = serde.contains(&b'\\');
            let plain = line.fact.is_none() && line.erased.is_none() && line.sealed.is_none();
            match line.plain_head() {
                Some(head) => {
                    prop_assert!(plain && !escapes);
                    prop_assert_eq!(String::from_utf8_lossy(&head), String::from_utf8_lossy(&serde));
                }
                None => prop_assert!(!plain || escapes),
            }
        }
    }
}

/// Lines are stored as rows; chunks stored before that, as objects naming each field, still
/// read, and are written again as rows.
#[test]
fn stored_lines_are_rows_and_old_objects_still_read() {
    let old = br#"[[7,{"at":1701129540000,"source":"childrens-trust","kind":"referral_made","event_id":"CT-1","summary":"","category":"early_help","safeguarding":false,"deferred":true,"records":[0,1]}],[8,{"at":1701129634608,"source":"police","kind":"incident","event_id":"P-2","summary":"seen","records":[2]}]]"#;
    let lines: Vec<(u64, Line)> = serde_json::from_slice(old).expect("old chunk");
    assert_eq!(lines.len(), 2);
    let (offset, first) = &lines[0];
    assert_eq!(*offset, 7);
    assert!(first.deferred && !first.safeguarding);
    assert_eq!(first.records, vec![0, 1]);
    let second = &lines[1].1;
    assert_eq!(second.category, Category::EarlyHelp, "the default category");
    assert_eq!(
        (second.summary.as_str(), second.records.as_slice()),
        ("seen", &[2][..])
    );
    let rows = chunk_json(&lines).expect("rows");
    assert_eq!(
        String::from_utf8_lossy(&rows),
        r#"[[7,[1701129540000,"childrens-trust","referral_made","CT-1","","early_help",false,null,null,null,true,[0,1]]],[8,[1701129634608,"police","incident","P-2","seen","early_help",false,null,null,null,false,[2]]]]"#
    );
    let back: Vec<(u64, Line)> = serde_json::from_slice(&rows).expect("rows read");
    assert_eq!(chunk_json(&back).expect("again"), rows);
    // A head is the row without its records and closing bracket.
    let mut line = back.into_iter().next().expect("a line").1;
    line.write_head();
    let head = line.head.clone().expect("a plain head");
    assert_eq!(
        String::from_utf8_lossy(&head),
        r#"[1701129540000,"childrens-trust","referral_made","CT-1","","early_help",false,null,null,null,true"#
    );
}

#[tokio::test]
async fn the_gate_decides_each_members_consent_as_the_rule_does() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 2_000).await;
    let p = open_caught_up(&tmp.path().join("proj"), log.as_ref(), None).await;
    // The family with the most members.
    let (fam, members) = p.with_linker(|l| {
        let f = l
            .persons()
            .into_iter()
            .map(|person| l.family_of(person))
            .max_by_key(|&f| l.family_persons(f).len())
            .expect("a family");
        let keys: Vec<Vec<String>> = l
            .family_persons(f)
            .into_iter()
            .map(|m| {
                l.person_records(m)
                    .iter()
                    .map(|&r| l.record(r).key.clone())
                    .collect()
            })
            .collect();
        (f, keys)
    });
    assert!(members.len() >= 3, "{} members", members.len());
    // Consents naming some members and not others, one record of a member only, for some
    // partners and categories; one of them withdrawn a day before the last read.
    let recs = vec![
        Record::ConsentGiven(consent_for(
            "C-first",
            members[0].clone(),
            &["police"],
            &Category::ALL,
        )),
        Record::ConsentGiven(consent_for(
            "C-second-one-record",
            members[1][..1].to_vec(),
            &["*"],
            &[Category::Health, Category::Education],
        )),
        Record::ConsentGiven(consent_for(
            "C-first-and-third",
            members[0].iter().chain(&members[2]).cloned().collect(),
            &["school"],
            &[Category::EarlyHelp],
        )),
        Record::ConsentWithdrawn(ConsentWithdrawn {
            withdrawal_id: "W-1".into(),
            consent_id: "C-first".into(),
            effective_from: Timestamp(END.0 - 86_400_000),
            reason: "changed their mind".into(),
            recorded_by: "w".into(),
            organisation: "early-intervention".into(),
            recorded_at: Timestamp(END.0 - 86_400_000),
        }),
    ];
    record(&p, log.as_ref(), recs).await;
    let st = p.read_state();
    let l = &st.linker;
    let memo = st.family_memo(fam);
    let mut some_granted = false;
    for org in ["police", "school", "health", "early-intervention"] {
        let viewer = Viewer {
            user_id: "u".into(),
            organisation: org.into(),
            roles: vec![Role::SafeguardingLead],
        };
        for now in [Timestamp(END.0 - 2 * 86_400_000), END] {
            let read = ReadAs::Viewer {
                viewer: &viewer,
                now,
                grant: Some(Timestamp(now.0 + 60_000)),
            };
            let gate = st
                .gate(&memo, &read, &mut Reading::default())
                .expect("standing by the grant");
            assert_eq!(gate.seen.len(), l.family_persons(fam).len());
            for &(person, bits) in &gate.seen {
                let recs = l.person_records(person);
                let expected = access::consented_categories(
                    st.consents_naming(recs),
                    &keys_of(l, recs),
                    org,
                    now,
                );
                assert_eq!(bits, expected, "{org} at {now:?}, person {person}");
                some_granted |= bits != 0;
            }
        }
    }
    assert!(some_granted, "the consents grant something to someone");
}

/// An allowed GetTimeline by practitioner `user` of `family` (or of `persons`).
fn access_entry(
    access_id: String,
    at: Timestamp,
    user: &str,
    family: &str,
    persons: &[&str],
) -> AccessEntry {
    AccessEntry {
        access_id,
        at,
        user_id: user.into(),
        organisation: "childrens-trust".into(),
        roles: vec![Role::Practitioner],
        method: "GetTimeline".into(),
        asked: "timeline".into(),
        family_id: family.into(),
        person_ids: persons.iter().map(|p| p.to_string()).collect(),
        shown: 3,
        withheld: 0,
        outcome: access::AccessOutcome::Allowed,
        standing: "lead".into(),
        reason: String::new(),
        break_glass: false,
        break_glass_until: None,
    }
}

/// sled's applied offset, as stored.
fn stored_applied(p: &Projection) -> u64 {
    p.store.applied().expect("applied offset")
}

#[tokio::test]
async fn access_entries_leave_sled_alone_and_a_restart_still_resumes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 600).await;
    let events = log.head().next_offset;
    let dir = tmp.path().join("proj");
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    assert_eq!(stored_applied(&p), events);
    let fam = p.with_linker(|l| l.family_id(l.family_of(l.person_of(0))));
    let entry = |i: u64| {
        Record::Access(access_entry(
            format!("a-{i}"),
            Timestamp(END.0 + i as i64),
            "sw-1",
            &fam,
            &[],
        ))
    };
    for i in 0..3 {
        record(&p, log.as_ref(), vec![entry(2 * i), entry(2 * i + 1)]).await;
    }
    let head = log.head().next_offset;
    assert_eq!(p.applied(), head);
    assert_eq!(
        stored_applied(&p),
        events,
        "batches of access entries store nothing in sled"
    );
    let key = format!("f/{fam}");
    assert_eq!(
        p.access_offsets(std::slice::from_ref(&key), None, 10)
            .expect("index")
            .len(),
        6
    );
    let digest = p.digest();
    p.close().expect("close");
    assert_eq!(
        stored_applied(&p),
        head,
        "the snapshot stores the offset first"
    );
    drop(p);

    let reopened = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(reopened.applied(), head, "resumes from the snapshot");
    assert_eq!(reopened.digest(), digest);
    assert_eq!(
        reopened
            .access_offsets(&[key], None, 10)
            .expect("index")
            .len(),
        6
    );
}

/// A timeline chunk whose bytes no longer match its checksum (a disk fault, or a crash
/// between zeroing an old body and sled keeping the new index) makes the projection rebuild
/// from the log, and it answers as a fresh rebuild does.
#[tokio::test]
async fn a_damaged_line_store_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 800).await;
    let dir = tmp.path().join("proj");
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    let digest = p.digest();
    p.close().expect("close");
    drop(p);
    let path = dir.join("lines.dat");
    let mut bytes = std::fs::read(&path).expect("lines file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).expect("damage");
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(
        p.applied(),
        0,
        "starts again rather than serve damaged lines"
    );
    let why = p.damage().expect("the damage is reported");
    assert!(why.contains("checksum"), "{why}");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(p.digest(), digest);
    // And the store it wrote is whole again.
    p.close().expect("close");
    drop(p);
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    assert_eq!(p.digest(), digest);
    assert_eq!(p.damage(), None);
}

/// Closing a projection whose snapshot is recent (under one entry in
/// `CLOSE_KEEPS_SNAPSHOT` came after it) keeps that snapshot; a restart resumes from it and
/// re-applies the rest, answering as before.
#[tokio::test]
async fn a_close_soon_after_a_snapshot_keeps_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 20, 1_000).await;
    let head = log.head().next_offset;
    let dir = tmp.path().join("proj");
    let snapshot = dir.join(SNAPSHOT_FILE);
    {
        let p = open_caught_up(&dir, log.as_ref(), None).await;
        let opened = p.timings();
        assert_eq!(
            (opened.snapshot_read, opened.lines_loaded, opened.snapshots),
            (Duration::ZERO, Duration::ZERO, 0),
            "nothing to read at the first open, and no snapshot written yet"
        );
        p.close().expect("close");
        let closed = p.timings();
        assert_eq!(closed.snapshots, 1, "close wrote one snapshot");
        assert!(closed.snapshot_writing > Duration::ZERO);
    }
    let written = std::fs::read(&snapshot).expect("snapshot");
    fill_with(log.as_ref(), "-later", 1, 10).await;
    let later = log.head().next_offset;
    assert!(
        later > head && (later - head) * CLOSE_KEEPS_SNAPSHOT < later,
        "{head} {later}"
    );
    let digest = {
        let p = open_caught_up(&dir, log.as_ref(), None).await;
        assert_eq!(p.applied(), later);
        let opened = p.timings();
        assert!(
            opened.snapshot_read > Duration::ZERO && opened.lines_loaded > Duration::ZERO,
            "a resumed open reads its snapshot and loads its lines: {opened:?}"
        );
        p.close().expect("close");
        assert_eq!(p.timings().snapshots, 0, "the recent snapshot is kept");
        p.digest()
    };
    assert!(
        std::fs::read(&snapshot).expect("snapshot") == written,
        "the recent snapshot is kept"
    );
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), head, "resumes from the kept snapshot");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(p.digest(), digest);

    // Once more entries than that came after it, close writes a new one.
    fill_with(log.as_ref(), "-more", 20, 1_000).await;
    p.catch_up(log.as_ref()).await.expect("catch up");
    p.close().expect("close");
    drop(p);
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), log.head().next_offset);
}

/// A store written by an older version (the timeline lines inside sled, no layout mark) is
/// not resumed from, even with a matching snapshot: it is rebuilt from the log.
#[tokio::test]
async fn a_store_of_an_older_layout_is_rebuilt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (log, dir, digest) = closed_projection(tmp.path(), 10, 400).await;
    {
        let db = sled::open(dir.join("db")).expect("sled");
        db.remove(b"m/format").expect("remove");
        db.flush().expect("flush");
    }
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), 0, "not resumed");
    assert_eq!(p.damage(), None, "an older layout is not damage");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(p.digest(), digest);
    p.close().expect("close");
    drop(p);
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), log.head().next_offset, "resumed once rebuilt");
}

#[tokio::test]
async fn a_batch_that_breaks_the_hash_chain_is_applied_not_at_all() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 10, 600).await;
    let p = Projection::open(&tmp.path().join("proj"), log.as_ref(), None)
        .await
        .expect("open");
    p.apply(&log.read(0, 200).await.expect("read"))
        .expect("apply");
    let before = p.digest();

    // An entry in the middle of the next batch whose previous hash is not its predecessor's
    // (as if the log's files changed under the hub).
    let mut batch = log.read(200, 200).await.expect("read");
    batch[150].prev_hash[0] ^= 1;
    match p.apply(&batch) {
        Err(ProjectionError::Damaged(why)) => {
            assert!(
                why.contains("offset 350") && why.contains("hash chain"),
                "{why}"
            )
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
    assert_eq!(p.applied(), 200, "nothing of the batch is applied");
    assert_eq!(p.digest(), before);

    // A batch that does not start where the projection ends is refused the same way.
    let batch = log.read(201, 100).await.expect("read");
    assert!(matches!(p.apply(&batch), Err(ProjectionError::Damaged(_))));
    assert_eq!(p.applied(), 200);

    // The intact entries apply, and the result is the rebuilt one.
    p.catch_up(log.as_ref()).await.expect("catch up");
    let q = rebuilt(&tmp.path().join("proj2"), log.as_ref(), None).await;
    assert_eq!(p.digest(), q.digest());
}

/// A snapshot written by an earlier version (the linker's records as objects naming their
/// fields, not rows) does not parse: the projection says so and replays the log from the
/// start, to the same projections.
#[tokio::test]
async fn a_snapshot_in_an_older_layout_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (log, dir, digest) = closed_projection(tmp.path(), 20, 1_000).await;
    let file = dir.join(SNAPSHOT_FILE);
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("snapshot")).expect("json");
    let names = [
        "key",
        "source",
        "first_offset",
        "nhs_number",
        "upn",
        "given",
        "middle",
        "family",
        "display_name",
        "dob",
        "sex",
        "postcodes",
    ];
    let records = s["linker"]["records"].as_array_mut().expect("records");
    assert!(!records.is_empty());
    for r in records.iter_mut() {
        let row = r.as_array().expect("a row").clone();
        *r = serde_json::Value::Object(
            names
                .iter()
                .map(|n| n.to_string())
                .zip(row)
                .collect::<serde_json::Map<_, _>>(),
        );
    }
    std::fs::write(&file, serde_json::to_vec(&s).expect("json")).expect("write");
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("open");
    assert_eq!(p.applied(), 0, "the older snapshot is not used");
    p.catch_up(log.as_ref()).await.expect("replay");
    assert_eq!(p.digest(), digest);
}

/// The access log's index is written in key order and read back whole, however its keys
/// were inserted: a snapshot of equal indexes is the same bytes, and so is the digest.
#[test]
fn the_access_index_is_written_in_key_order_and_read_back() {
    let entry = |user: &str, family: &str, persons: &[&str]| {
        access_entry(format!("a-{user}-{family}"), END, user, family, persons)
    };
    let entries = [
        entry("zed", "F-2", &["P-9", "P-1"]),
        entry("amy", "", &["P-1"]),
        entry("zed", "F-1", &[]),
    ];
    let state = AccessState::default();
    let (mut forward, mut backward) = (AccessIndex::default(), AccessIndex::default());
    for (o, e) in entries.iter().enumerate() {
        forward.add(o as u64, e);
    }
    // The same index, its keys inserted in another order.
    backward.accesses = forward.accesses.clone();
    for key in ["p/P-9", "p/P-1", "f/F-1", "u/zed", "f/F-2", "u/amy"] {
        let offsets = forward.by[key].clone();
        backward.by.insert(key.to_string(), offsets);
    }
    let bytes = |ix: &AccessIndex| {
        serde_json::to_vec(&AccessSnapshotRef::of(&state, ix)).expect("serialise")
    };
    assert_eq!(bytes(&forward), bytes(&backward));
    let json: serde_json::Value = serde_json::from_slice(&bytes(&forward)).expect("json");
    let keys: Vec<&String> = json["access_by"].as_object().expect("map").keys().collect();
    assert_eq!(
        keys,
        ["f/F-1", "f/F-2", "p/P-1", "p/P-9", "u/amy", "u/zed"],
        "written in key order"
    );
    assert_eq!(json["access_by"]["p/P-1"], serde_json::json!([0, 1]));
    assert_eq!(json["accesses"], serde_json::json!([0, 1, 2]));
    let (_, back) = serde_json::from_slice::<AccessSnapshot>(&bytes(&forward))
        .expect("read back")
        .split();
    assert_eq!(back.accesses, forward.accesses);
    assert_eq!(back.by, forward.by);
    // The same object as before the index had a lock of its own (one struct held it all, in
    // this field order), so a hub upgrading resumes from its snapshot.
    let before = r#"{"consents":{},"withdrawn":{"c-1":"2023-11-14T22:13:20Z"},"sharing":[],"grants":[],"accesses":[0,1,2],"access_by":{"f/F-1":[2],"u/amy":[1]}}"#;
    let (state, index) = serde_json::from_str::<AccessSnapshot>(before)
        .expect("an older snapshot's access object reads")
        .split();
    assert_eq!(state.withdrawn["c-1"], Timestamp(1_700_000_000_000));
    assert_eq!(index.accesses, [0, 1, 2]);
    assert_eq!(index.by["f/F-1"], [2]);
    assert_eq!(index.by["u/amy"], [1]);
}

/// An access entry counts a third of any other entry towards the next periodic snapshot
/// (re-applying one costs about that), and a snapshot starts the count again.
#[tokio::test]
async fn access_entries_count_a_third_towards_the_next_snapshot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 5, 300).await;
    let events = log.head().next_offset;
    let p = open_caught_up(&tmp.path().join("proj"), log.as_ref(), None).await;
    let counts = |p: &Projection| {
        let st = p.read_state();
        (
            st.since_snapshot,
            st.replay_since_snapshot(),
            st.accesses_since_snapshot,
        )
    };
    assert_eq!(counts(&p), (events, 3 * events, 0));
    let fam = p.with_linker(|l| l.family_id(l.family_of(l.person_of(0))));
    let reads: Vec<Record> = (0..6)
        .map(|i| Record::Access(access_entry(format!("r-{i}"), END, "sw-1", &fam, &[])))
        .collect();
    record(&p, log.as_ref(), reads).await;
    assert_eq!(
        counts(&p),
        (events + 6, 3 * events + 6, 6),
        "six reads cost two entries' worth of re-applying"
    );
    p.close().expect("close");
    assert_eq!(counts(&p), (0, 0, 0), "the snapshot starts the count again");
}

/// A periodic snapshot comes every [`SNAPSHOT_EVERY`] entries in a small county, and every
/// [`SNAPSHOT_ENTRIES_PER_RECORD`] entries a record in a large one (a snapshot writes every
/// record), while access entries, which memory holds until a snapshot, bring one as often
/// whatever the county's size.
#[test]
fn snapshots_come_less_often_as_the_county_grows_but_not_for_reads() {
    let every = 3 * SNAPSHOT_EVERY;
    // The 1M demo's county, and a small one: every 500,000 entries.
    for records in [0, 1_000, SNAPSHOT_EVERY / SNAPSHOT_ENTRIES_PER_RECORD] {
        assert!(!snapshot_due(every - 3, 0, records), "{records}");
        assert!(snapshot_due(every, 0, records), "{records}");
    }
    // Ten times the demo's records: three entries a record.
    let records = 1_690_000;
    let due = 3 * SNAPSHOT_ENTRIES_PER_RECORD * records;
    assert!(!snapshot_due(every, 0, records));
    assert!(!snapshot_due(due - 3, 0, records));
    assert!(snapshot_due(due, 0, records));
    // Reads alone (a third each) bring a snapshot after as many as in a small county.
    assert!(!snapshot_due(every - 1, every - 1, records));
    assert!(snapshot_due(every, every, records));
    // No overflow at absurd sizes.
    assert!(!snapshot_due(u64::MAX - 1, 0, u64::MAX));
}

/// The access-log queries a test compares: every key alone and together, and pages of them.
fn access_answers(p: &Projection, keys: &[String], before: &[Option<u64>]) -> Vec<Vec<u64>> {
    let mut asks: Vec<Vec<String>> = keys.iter().map(|k| vec![k.clone()]).collect();
    asks.push(keys.to_vec());
    asks.push(Vec::new());
    let mut out = Vec::new();
    for ask in &asks {
        for &b in before {
            for limit in [1, 7, 1_000] {
                out.push(p.access_offsets(ask, b, limit).expect("access index"));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_access_index_moves_to_the_store_at_a_snapshot_and_answers_the_same() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = open_log(tmp.path());
    fill(log.as_ref(), 10, 300).await;
    let dir = tmp.path().join("proj");
    let p = open_caught_up(&dir, log.as_ref(), None).await;
    let fams: Vec<String> = p.with_linker(|l| {
        (0..3)
            .map(|r| l.family_id(l.family_of(l.person_of(r * 40))))
            .collect()
    });
    // Reads by two users of three families (two of whose ids share a prefix), in batches.
    let mut n = 0u64;
    let mut batch = |count: u64| {
        let recs: Vec<Record> = (0..count)
            .map(|_| {
                n += 1;
                let user = if n.is_multiple_of(3) { "sw-10" } else { "sw-1" };
                let fam = &fams[(n % 3) as usize];
                Record::Access(access_entry(
                    format!("a-{n}"),
                    Timestamp(END.0 + n as i64),
                    user,
                    fam,
                    &["p-1"],
                ))
            })
            .collect();
        recs
    };
    let mut keys: Vec<String> = fams.iter().map(|f| format!("f/{f}")).collect();
    keys.extend(["u/sw-1".into(), "u/sw-10".into(), "p/p-1".into()]);
    record(&p, log.as_ref(), batch(40)).await;
    let first_snapshot = log.head().next_offset;
    p.snapshot(p.read_state(), None).expect("snapshot");
    assert!(
        p.access_index().accesses.is_empty(),
        "memory holds none of it"
    );
    assert!(p.access_index().by.is_empty());
    assert_eq!(p.store.access_spilled().expect("spilled"), first_snapshot);
    let old_snapshot = std::fs::read(dir.join(SNAPSHOT_FILE)).expect("snapshot");
    record(&p, log.as_ref(), batch(25)).await;
    record(&p, log.as_ref(), batch(30)).await;
    p.snapshot(p.read_state(), None).expect("snapshot");
    record(&p, log.as_ref(), batch(20)).await;
    let head = log.head().next_offset;

    // The same answers as a projection that holds the whole index in memory.
    let whole = rebuilt(&tmp.path().join("whole"), log.as_ref(), None).await;
    assert_eq!(whole.access_index().spilled, 0);
    let mid = first_snapshot + 30;
    let before = [
        None,
        Some(head),
        Some(mid),
        Some(first_snapshot),
        Some(first_snapshot - 5),
    ];
    let expected = access_answers(&whole, &keys, &before);
    assert_eq!(access_answers(&p, &keys, &before), expected);
    assert_eq!(
        whole
            .access_offsets(&[], None, usize::MAX)
            .expect("all")
            .len(),
        115
    );
    assert_eq!(p.digest(), whole.digest());
    assert_eq!(p.first_difference(&whole), None);
    drop(p);

    // Reopened from its last snapshot: the same.
    let reopened = open_caught_up(&dir, log.as_ref(), None).await;
    assert_eq!(access_answers(&reopened, &keys, &before), expected);
    assert_eq!(reopened.digest(), whole.digest());
    drop(reopened);

    // A crash after the second move but before its snapshot was written: the older
    // snapshot's entries that the store now holds are not counted twice.
    std::fs::write(dir.join(SNAPSHOT_FILE), &old_snapshot).expect("older snapshot");
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(
        p.applied(),
        first_snapshot,
        "resumes from the older snapshot"
    );
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(access_answers(&p, &keys, &before), expected);
    assert_eq!(p.digest(), whole.digest());
    drop(p);

    // The same with the older snapshot as a version before this one wrote it: the whole
    // index in it, none in the store. What the store now holds is dropped from memory.
    let mut older: serde_json::Value = serde_json::from_slice(&old_snapshot).expect("json");
    {
        let index = whole.access_index();
        let below =
            |v: &[u64]| -> Vec<u64> { v.iter().copied().filter(|&o| o < first_snapshot).collect() };
        let by: BTreeMap<&String, Vec<u64>> = index.by.iter().map(|(k, v)| (k, below(v))).collect();
        older["access"]["accesses"] = serde_json::json!(below(&index.accesses));
        older["access"]["access_by"] = serde_json::json!(by);
        older
            .as_object_mut()
            .expect("object")
            .remove("access_spilled");
    }
    std::fs::write(dir.join(SNAPSHOT_FILE), older.to_string()).expect("older snapshot");
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), first_snapshot);
    assert!(
        p.access_index().accesses.is_empty(),
        "the store holds those"
    );
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(access_answers(&p, &keys, &before), expected);
    assert_eq!(p.digest(), whole.digest());
    drop(p);

    // A snapshot that counts on more of the index in the store than the store has (sled
    // lost a move): rebuilt from the log, and the same again.
    let text = String::from_utf8(old_snapshot).expect("json");
    let claims = text.replace(
        &format!("\"access_spilled\":{first_snapshot}"),
        &format!("\"access_spilled\":{}", head + 1),
    );
    assert_ne!(claims, text);
    std::fs::write(dir.join(SNAPSHOT_FILE), claims).expect("snapshot");
    let p = Projection::open(&dir, log.as_ref(), None)
        .await
        .expect("reopen");
    assert_eq!(p.applied(), 0, "rebuilt: the store is behind the snapshot");
    p.catch_up(log.as_ref()).await.expect("catch up");
    assert_eq!(access_answers(&p, &keys, &before), expected);
    assert_eq!(p.digest(), whole.digest());
}

mod record_events {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// However events arrive (out of time order, some again), a record's list holds each
        /// once, sorted by (time, offset), and the kept last key is the list's last entry's.
        #[test]
        fn a_records_events_are_each_once_in_order_and_its_last_key_is_kept(
            arrivals in proptest::collection::vec((0u64..40, 0usize..3), 0..80),
        ) {
            // An offset has one time; several offsets may share a time.
            let at = |offset: u64| Timestamp(((offset * 7) % 13) as i64);
            let mut events = RecordEvents::default();
            let mut expected: Vec<(i64, u64)> = Vec::new();
            for (offset, times) in arrivals {
                for _ in 0..=times {
                    events.add(Indexed { at: at(offset), offset, meta: 0 });
                }
                expected.push((at(offset).0, offset));
            }
            expected.sort_unstable();
            expected.dedup();
            let got: Vec<(i64, u64)> = events.iter().map(|x| (x.at.0, x.offset)).collect();
            prop_assert_eq!(&got, &expected);
            if let Some(&last) = expected.last() {
                prop_assert_eq!(events.last, last);
            }
        }
    }
}

/// The applying thread moves every decoded entry of a batch: events, lines and the rarer
/// records are boxed, so each is a few words (a decoded entry was 544 bytes, and copying
/// them was about 4% of the applying thread's samples).
#[test]
fn a_decoded_entry_stays_small() {
    assert!(
        std::mem::size_of::<DecodeResult>() <= 96,
        "{} bytes",
        std::mem::size_of::<DecodeResult>()
    );
}

/// Each partner record lists each consent naming it once, whether a consent names it twice or
/// several consents name it, the same when applied one by one and when worked out again (as
/// after loading a snapshot), and a consent applied twice is indexed once.
#[test]
fn consents_by_record_name_each_consent_once() {
    let recs = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect();
    let all = &[Category::EarlyHelp];
    let mut state = AccessState::default();
    for c in [
        consent_for(
            "C-2",
            recs(&["police/A", "school/B", "police/A"]),
            &["*"],
            all,
        ),
        consent_for("C-1", recs(&["school/B", "nhs/C"]), &["*"], all),
        consent_for("C-2", recs(&["nhs/D"]), &["*"], all),
    ] {
        state.apply(Decoded::Consent(Box::new(c)));
    }
    let named = |st: &AccessState, key: &str| {
        let mut ids: Vec<String> = st.consents_of(key).map(String::from).collect();
        ids.sort();
        ids
    };
    let expect = [
        ("police/A", vec!["C-2"]),
        ("school/B", vec!["C-1", "C-2"]),
        ("nhs/C", vec!["C-1"]),
        ("nhs/D", vec![]),
        ("police/Z", vec![]),
    ];
    for (key, ids) in &expect {
        assert_eq!(named(&state, key), *ids, "{key}");
        assert_eq!(
            state.consents_of(key).count(),
            ids.len(),
            "{key}: no repeats"
        );
    }
    state.reindex();
    for (key, ids) in &expect {
        assert_eq!(named(&state, key), *ids, "{key} after reindexing");
    }
}
