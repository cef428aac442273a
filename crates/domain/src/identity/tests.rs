use proptest::prelude::*;

use super::*;
use crate::event::{Address, LawfulBasis, Payload, Subject};

fn subject(local: &str, given: &str, family: &str, dob: &str, postcode: &str) -> Subject {
    Subject {
        local_id: Some(local.to_string()),
        given_name: Some(given.to_string()),
        family_name: Some(family.to_string()),
        date_of_birth: Date::parse(dob).ok(),
        sex: None,
        address: Some(Address {
            postcode: postcode.to_string(),
            ..Address::default()
        }),
        ..Subject::default()
    }
}

fn with_nhs(mut s: Subject, nhs: &str) -> Subject {
    s.nhs_number = Some(nhs.to_string());
    s
}

fn event(source: &str, subjects: Vec<Subject>, rels: Vec<(u32, u32)>) -> Event {
    Event {
        event_id: "e".into(),
        source: source.into(),
        occurred_at: Timestamp(0),
        subjects,
        relationships: rels
            .into_iter()
            .map(|(from, to)| Relationship {
                from,
                to,
                kind: RelationshipKind::ParentCarerOf,
            })
            .collect(),
        lawful_basis: Some(LawfulBasis::Consent {
            consent_reference: "c".into(),
        }),
        category: None,
        payload: Payload::CaseClosed {
            reason: crate::event::CaseClosureReason::NeedsMet,
            note: String::new(),
        },
    }
}

fn one(l: &mut Linker, offset: u64, source: &str, s: Subject) -> u32 {
    l.apply_event(offset, &event(source, vec![s], vec![]))[0]
}

fn decision(a: &str, b: &str, d: Decision, candidate: Option<String>) -> MatchDecision {
    MatchDecision {
        decision_id: "d1".into(),
        candidate_id: candidate,
        record_a: a.into(),
        record_b: b.into(),
        decision: d,
        decided_by: "worker-7".into(),
        reason: "checked with the school".into(),
        decided_at: Timestamp(5),
    }
}

#[test]
fn same_local_id_is_one_record() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "police",
        subject("P1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P1", "Mia", "Carter", "2017-02-11", "NN2 1AA"),
    );
    assert_eq!(a, b);
    assert_eq!(l.record_count(), 1);
    assert_eq!(l.record(a).postcodes, vec!["NN1 4PA", "NN2 1AA"]);
}

#[test]
fn same_nhs_number_links_across_partners() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "nhs-community",
        with_nhs(
            subject("H1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
            "9434765919",
        ),
    );
    let b = one(
        &mut l,
        1,
        "childrens-trust",
        with_nhs(
            subject("C1", "Mia", "Carter-Jones", "2017-02-11", "NN9 9ZZ"),
            "9434765919",
        ),
    );
    assert_eq!(l.person_of(a), l.person_of(b));
    let links = l.person_links(l.person_of(a));
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].why, LinkWhy::SameNhsNumber);
    assert_eq!(l.find_by_nhs("9434765919"), Some(l.person_of(a)));
}

#[test]
fn same_nhs_number_with_different_dob_and_name_is_a_conflict() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "nhs-community",
        with_nhs(
            subject("H1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
            "9434765919",
        ),
    );
    let b = one(
        &mut l,
        1,
        "police",
        with_nhs(
            subject("X1", "Kevin", "Carter", "1990-07-30", "NN1 4PA"),
            "9434765919",
        ),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
    assert_eq!(l.conflicts().len(), 1);
    assert!(l.conflicts()[0].detail.contains("NHS number"));
}

#[test]
fn scored_link_with_nickname_explains_itself() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "nhs-community",
        with_nhs(
            subject("H1", "Oliver", "Bennett", "2014-05-20", "NN3 2AB"),
            "9434765919",
        ),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P9", "Ollie", "Bennett", "2014-05-20", "NN3 2AB"),
    );
    assert_eq!(l.person_of(a), l.person_of(b));
    let links = l.person_links(l.person_of(a));
    let LinkWhy::Scored { score } = &links[0].why else {
        panic!("expected a scored link, got {:?}", links[0].why);
    };
    assert!(score.total >= LINK_THRESHOLD);
    let given = score.fields.iter().find(|f| f.field == "given_name");
    assert_eq!(given.map(|f| &*f.agreement), Some("nickname"));
}

#[test]
fn transposed_dob_and_typo_still_link_with_address() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Amelia", "Johnson", "2013-04-03", "NN3 2AB"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P1", "Amelia", "Jonson", "2013-03-04", "NN3 2AB"),
    );
    // 4 + 2 + 3 + 2 = 11: below the link threshold, so a person reviews it.
    assert_ne!(l.person_of(a), l.person_of(b));
    assert_eq!(l.candidates().len(), 1);
    assert!(l.is_open(&l.candidates()[0]));
}

#[test]
fn twins_are_never_merged() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Jack", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let b = one(
        &mut l,
        1,
        "school-001",
        subject("S2", "Jake", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let c = one(
        &mut l,
        2,
        "police",
        subject("P1", "Jake", "Smith", "2015-06-01", "NN1 1AA"),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
    assert_eq!(l.person_of(b), l.person_of(c));
    assert_ne!(l.person_of(a), l.person_of(c));
    assert!(l.candidates().is_empty());
}

#[test]
fn common_name_and_dob_without_address_is_not_linked() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Oliver", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P1", "Oliver", "Smith", "2015-06-01", "MK9 3XY"),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
    assert_eq!(l.candidates().len(), 1, "goes to review instead");
}

#[test]
fn name_alone_never_links() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Oliver", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P1", "Oliver", "Smith", "2011-12-25", "NN1 1AA"),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
    assert!(l.candidates().is_empty());
}

#[test]
fn different_nhs_numbers_never_join() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "nhs-community",
        with_nhs(
            subject("H1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
            "9434765919",
        ),
    );
    let b = one(
        &mut l,
        1,
        "childrens-trust",
        with_nhs(
            subject("C1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
            "4010232137",
        ),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
}

#[test]
fn confirm_and_reject_candidates() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Oliver", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P1", "Oliver", "Smith", "2015-06-01", "MK9 3XY"),
    );
    let c = l.candidates()[0].id.clone();
    l.apply_decision(
        2,
        &decision("school-001/S1", "police/P1", Decision::Confirm, Some(c)),
    )
    .expect("decision applies");
    assert_eq!(l.person_of(a), l.person_of(b));
    assert!(!l.is_open(&l.candidates()[0]));
    let links = l.person_links(l.person_of(a));
    assert!(
        matches!(&links[0].why, LinkWhy::Confirmed { decided_by, .. } if decided_by == "worker-7")
    );

    // Rejecting the same pair splits the person again, and it stays split.
    l.apply_decision(
        3,
        &decision("school-001/S1", "police/P1", Decision::Reject, None),
    )
    .expect("decision applies");
    assert_ne!(l.person_of(a), l.person_of(b));
    let d = one(
        &mut l,
        4,
        "early-intervention",
        subject("E1", "Oliver", "Smith", "2015-06-01", "MK9 3XY"),
    );
    assert_eq!(l.person_of(d), l.person_of(b));
    assert_ne!(l.person_of(d), l.person_of(a));
}

#[test]
fn rejecting_a_scored_link_splits_and_stays_rejected() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Oliver", "Bennett", "2014-05-20", "NN3 2AB"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P9", "Ollie", "Bennett", "2014-05-20", "NN3 2AB"),
    );
    assert_eq!(l.person_of(a), l.person_of(b));
    l.apply_decision(
        2,
        &decision("police/P9", "school-001/S1", Decision::Reject, None),
    )
    .expect("decision applies");
    assert_ne!(l.person_of(a), l.person_of(b));
    // The police record seen again does not re-link.
    one(
        &mut l,
        3,
        "police",
        subject("P9", "Ollie", "Bennett", "2014-05-20", "NN3 2AB"),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
    assert!(l
        .apply_decision(
            4,
            &decision("police/P9", "nobody/1", Decision::Reject, None)
        )
        .is_err());
}

#[test]
fn families_form_merge_and_split() {
    let mut l = Linker::new();
    // Police: mother and child.
    let recs = l.apply_event(
        0,
        &event(
            "police",
            vec![
                subject("P1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
                subject("P2", "Donna", "Carter", "1988-05-03", "NN1 4PA"),
            ],
            vec![(1, 0)],
        ),
    );
    assert_eq!(l.family_of(recs[0]), l.family_of(recs[1]));
    // School: the child and a sibling.
    let s = l.apply_event(
        1,
        &event(
            "school-001",
            vec![
                subject("S1", "Mia", "Carter", "2017-02-11", "NN1 4PA"),
                subject("S2", "Tyler", "Carter", "2012-09-30", "NN1 4PA"),
            ],
            vec![(0, 1)],
        ),
    );
    // Mia links across partners (name, dob, postcode), so the two families merge.
    assert_eq!(l.person_of(s[0]), l.person_of(recs[0]));
    let fam = l.family_of(recs[1]);
    assert_eq!(l.family_of(s[1]), fam);
    assert_eq!(l.family_persons(fam).len(), 3);
    let fam_id = l.family_id(fam);
    assert_eq!(l.family_by_id(&fam_id), Some(fam));
    // Rejecting the link splits the families again.
    l.apply_decision(
        2,
        &decision("school-001/S1", "police/P1", Decision::Reject, None),
    )
    .expect("decision applies");
    assert_ne!(l.family_of(s[1]), l.family_of(recs[1]));
    assert_eq!(l.family_persons(l.family_of(recs[1])).len(), 2);
}

#[test]
fn find_by_name_tolerates_typos_and_swaps() {
    let mut l = Linker::new();
    let a = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Amelia", "Johnson", "2013-04-03", "NN3 2AB"),
    );
    let dob = Date::parse("2013-03-04").expect("date");
    let found = l.find_by_name("Amelia", "Jonson", dob);
    assert_eq!(found.first().map(|f| f.person), Some(l.person_of(a)));
    let other = Date::parse("2001-01-01").expect("date");
    assert!(l.find_by_name("Amelia", "Johnson", other).is_empty());
}

#[test]
fn find_by_name_tolerates_a_letter_wrong_in_a_three_letter_name_but_linking_does_not() {
    let mut l = Linker::new();
    let theo = one(
        &mut l,
        0,
        "school-001",
        subject("S1", "Theo", "Rogers", "2014-04-05", "NN3 2AB"),
    );
    // Twins: one letter apart, the same birth date and address.
    let leo = one(
        &mut l,
        1,
        "nhs-community",
        subject("H1", "Leo", "Rogers", "2014-04-05", "NN3 2AB"),
    );
    let teo = one(
        &mut l,
        2,
        "police",
        subject("P1", "Teo", "Rogers", "2014-04-05", "NN3 2AB"),
    );
    // Linking counts no edit in a three-letter name: three people, none joined.
    let persons = BTreeSet::from([theo, leo, teo].map(|r| l.person_of(r)));
    assert_eq!(persons.len(), 3);
    let dob = Date::parse("2014-04-05").expect("date");
    let found: Vec<u32> = l
        .find_by_name("Teo", "Rogers", dob)
        .iter()
        .map(|f| f.person)
        .collect();
    // The exact name first, then both names one letter off, each scored as a typo.
    assert_eq!(found.first(), Some(&l.person_of(teo)));
    assert!(found.contains(&l.person_of(theo)));
    assert!(found.contains(&l.person_of(leo)));
    let typo = l.find_by_name("Mai", "Rogers", dob);
    assert!(typo.is_empty(), "Mai is two edits from Leo and Teo");
    let mut m = Linker::new();
    let mia = one(
        &mut m,
        0,
        "school-001",
        subject("S1", "Mia", "Carter", "2017-02-11", "NN3 2AB"),
    );
    let found = m.find_by_name("Mai", "Carter", Date::parse("2017-02-11").expect("date"));
    assert_eq!(found.first().map(|f| f.person), Some(m.person_of(mia)));
    let given = found[0]
        .score
        .as_ref()
        .and_then(|s| s.fields.iter().find(|f| f.field == "given_name"))
        .map(|f| f.agreement.to_string());
    assert_eq!(given.as_deref(), Some("typo"));
}

/// A small world of people with overlapping names, for property tests.
fn arb_subject() -> impl Strategy<Value = Subject> {
    (
        0u8..12,
        prop::sample::select(vec!["Mia", "Mya", "Oliver", "Ollie", "Jack", "Jake"]),
        prop::sample::select(vec!["Smith", "Smyth", "Carter"]),
        prop::sample::select(vec!["2015-06-01", "2015-01-06", "2015-06-02", "1990-01-01"]),
        prop::sample::select(vec!["NN1 1AA", "NN1 2BB", "MK9 3XY"]),
        prop::option::of(prop::sample::select(vec!["9434765919", "4010232137"])),
    )
        .prop_map(|(local, g, f, d, p, nhs)| {
            let mut s = subject(&format!("L{local}"), g, f, d, p);
            s.nhs_number = nhs.map(str::to_string);
            s
        })
}

#[derive(Debug, Clone)]
enum Step {
    Event(String, Vec<Subject>),
    Decide(u8, u8, bool),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::sample::select(vec!["police", "school-001", "nhs-community"]), prop::collection::vec(arb_subject(), 1..3))
            .prop_map(|(s, subs)| Step::Event(s.to_string(), subs)),
        1 => (0u8..12, 0u8..12, any::<bool>()).prop_map(|(a, b, c)| Step::Decide(a, b, c)),
    ]
}

fn run(steps: &[Step]) -> (Linker, Vec<(u32, u32)>) {
    let mut l = Linker::new();
    let mut rejected = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Event(src, subs) => {
                let rels = if subs.len() > 1 { vec![(0, 1)] } else { vec![] };
                l.apply_event(i as u64, &event(src, subs.clone(), rels));
            }
            Step::Decide(a, b, confirm) => {
                if (*a as usize) < l.record_count() && (*b as usize) < l.record_count() && a != b {
                    let (ka, kb) = (
                        l.record(u32::from(*a)).key.clone(),
                        l.record(u32::from(*b)).key.clone(),
                    );
                    let d = if *confirm {
                        Decision::Confirm
                    } else {
                        Decision::Reject
                    };
                    if l.apply_decision(i as u64, &decision(&ka, &kb, d, None))
                        .is_ok()
                    {
                        rejected.retain(|&(x, y)| {
                            (x, y) != (u32::from(*a), u32::from(*b))
                                && (y, x) != (u32::from(*a), u32::from(*b))
                        });
                        if !*confirm {
                            rejected.push((u32::from(*a), u32::from(*b)));
                        }
                    }
                }
            }
        }
    }
    (l, rejected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever arrives: a rejected pair is never one person; no person holds two NHS numbers;
    /// every record belongs to exactly one person and one family; replay gives the same state.
    #[test]
    fn linking_rules_always_hold(steps in prop::collection::vec(arb_step(), 1..40)) {
        let (l, rejected) = run(&steps);
        for (a, b) in rejected {
            prop_assert_ne!(l.person_of(a), l.person_of(b));
        }
        let mut seen = 0;
        for p in l.persons() {
            prop_assert!(l.nhs_numbers(p).len() <= 1);
            // A person's faces are its records' distinct cards, whatever joined or split it.
            prop_assert_eq!(
                &l.faces[p as usize],
                &Faces::of(l.person_records(p), |r| l.cards[r as usize])
            );
            for &r in l.person_records(p) {
                prop_assert_eq!(l.person_of(r), p);
                prop_assert_eq!(l.family_of(r), l.family_of(p));
                seen += 1;
            }
        }
        prop_assert_eq!(seen, l.record_count());
        for pa in l.persons() {
            for pb in l.persons() {
                let (na, nb) = (l.nhs_numbers(pa), l.nhs_numbers(pb));
                let apart = !na.is_empty() && !nb.is_empty() && na.is_disjoint(&nb);
                prop_assert_eq!(l.nhs_apart(pa, pb), apart);
            }
        }
        let (again, _) = run(&steps);
        prop_assert_eq!(again.digest(), l.digest());
        for c in l.candidates() {
            prop_assert!(c.score.total >= REVIEW_THRESHOLD);
        }
    }
}

/// The indexes a snapshot leaves out, as comparable values.
#[allow(clippy::type_complexity)]
fn derived(
    l: &Linker,
) -> (
    Vec<(String, Held)>,
    Vec<(u64, u32)>,
    Vec<u64>,
    Vec<(u64, Vec<(u32, Date)>)>,
    Chunked<Card>,
    Chunked<Faces>,
) {
    let mut by_hash: Vec<(u64, u32)> = l.by_hash.iter().map(|(&k, &r)| (k, r)).collect();
    by_hash.sort();
    let mut by_key: Vec<(String, Held)> = l
        .by_key
        .iter()
        .map(|(k, &h)| (String::from_utf8_lossy(k.as_bytes()).into_owned(), h))
        .collect();
    // Keys are unique, so ordering by them alone is total.
    by_key.sort_by(|a, b| a.0.cmp(&b.0));
    let mut blocks: Vec<(u64, Vec<(u32, Date)>)> = l
        .blocks
        .iter()
        .map(|(k, v)| (*k, v.iter().map(|b| (b.record, b.dob)).collect()))
        .collect();
    blocks.sort();
    (
        by_key,
        by_hash,
        l.hashes.clone(),
        blocks,
        l.cards.clone(),
        l.faces.clone(),
    )
}

/// What a snapshot leaves out because its lists say it: each record's person and family and
/// links, and the pairs of the stated relationships (sorted).
#[allow(clippy::type_complexity)]
fn from_lists(l: &Linker) -> (Vec<u32>, Vec<u32>, Vec<Vec<u32>>, Vec<u64>) {
    let mut rel_seen: Vec<u64> = l.rel_seen.iter().copied().collect();
    rel_seen.sort();
    (
        l.person.clone(),
        l.family.clone(),
        l.links_of.clone(),
        rel_seen,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A linker saved and loaded midway (its snapshot leaves out the indexes worked out from
    /// the records) has the indexes of one that never was, and goes on to link the same.
    #[test]
    fn a_reloaded_linker_equals_one_never_saved(
        steps in prop::collection::vec(arb_step(), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(steps.len());
        let (kept, _) = run(&steps[..cut]);
        let json = serde_json::to_string(&kept).expect("save");
        let loaded: Linker = serde_json::from_str(&json).expect("load");
        prop_assert_eq!(&loaded.records, &kept.records);
        prop_assert_eq!(&loaded.links, &kept.links);
        prop_assert_eq!(derived(&loaded), derived(&kept));
        prop_assert_eq!(from_lists(&loaded), from_lists(&kept));
        prop_assert_eq!(loaded.digest(), kept.digest());
        // Both go on with the rest of the steps (offsets continue after the cut).
        let (mut a, mut b) = (kept, loaded);
        for (i, step) in steps[cut..].iter().enumerate() {
            let offset = (cut + i) as u64;
            if let Step::Event(src, subs) = step {
                let rels = if subs.len() > 1 { vec![(0, 1)] } else { vec![] };
                let ev = event(src, subs.clone(), rels);
                prop_assert_eq!(a.apply_event(offset, &ev), b.apply_event(offset, &ev));
            }
        }
        prop_assert_eq!(derived(&a), derived(&b));
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert_eq!(a.candidates(), b.candidates());
    }
}

#[test]
fn a_twin_whose_middle_name_is_the_other_twins_name_is_not_merged() {
    let mut l = Linker::new();
    let mut charlie = subject("P1", "Charlie", "Williams", "2015-04-01", "NN5 5WB");
    charlie.middle_names = Some("Ethan".into());
    let a = one(&mut l, 0, "police", charlie);
    let b = one(
        &mut l,
        1,
        "early-intervention",
        subject("E1", "Ethan", "Williams", "2015-04-01", "NN5 5WB"),
    );
    assert_ne!(l.person_of(a), l.person_of(b));
    // The twins are a pair for review (12 points), never a link. A third record matching both
    // goes to review too, not to either.
    let mut swapped = subject("S1", "Ethan", "Williams", "2015-04-01", "NN5 5WB");
    swapped.middle_names = Some("Charlie".into());
    let c = one(&mut l, 2, "school-001", swapped);
    assert_ne!(l.person_of(c), l.person_of(a));
    assert_ne!(l.person_of(c), l.person_of(b));
    assert_eq!(l.candidates().iter().filter(|x| l.is_open(x)).count(), 3);
}

#[test]
fn crossed_first_and_middle_names_link() {
    let mut l = Linker::new();
    let mut a = subject("P1", "Charlie", "Williams", "2015-04-01", "NN5 5WB");
    a.middle_names = Some("Ethan".into());
    let a = one(&mut l, 0, "police", a);
    let mut b = subject("S1", "Ethan", "Williams", "2015-04-01", "NN5 5WB");
    b.middle_names = Some("Charlie".into());
    let b = one(&mut l, 1, "school-001", b);
    assert_eq!(l.person_of(a), l.person_of(b));
}

proptest! {
    /// The scorer's short cut (stop at a disagreeing birth date or given name, skip a low
    /// total, ask those two of the person's distinct cards only) keeps exactly the persons the
    /// full score calls eligible and high enough, with the same score and explanation. The
    /// person's records are drawn from a few subjects, so many share a card, and some names
    /// are too long for one.
    #[test]
    fn the_short_cut_score_equals_the_full_one(
        (r, r_names) in (arb_subject(), prop::option::of(arb_given())),
        pool in prop::collection::vec((arb_subject(), arb_given()), 1..4),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
        at_least in prop::sample::select(vec![f64::NEG_INFINITY, REVIEW_THRESHOLD - 1.0, REVIEW_THRESHOLD, LINK_THRESHOLD]),
    ) {
        let mut r = record_from("police", "police/x".into(), 0, &r);
        if let Some((given, middle)) = r_names {
            (r.given, r.middle) = (given, middle);
        }
        let person: Vec<SubjectRecord> = picks
            .iter()
            .enumerate()
            .map(|(i, pick)| {
                let (s, (given, middle)) = &pool[pick.index(pool.len())];
                let mut rec = record_from("school-001", format!("school-001/{i}"), 1, s);
                if i % 2 == 1 {
                    (rec.given, rec.middle) = (given.clone(), middle.clone());
                }
                rec
            })
            .collect();
        let refs: Vec<&SubjectRecord> = person.iter().collect();
        let full = score_against(&r, &refs);
        let expected = (full.eligible && full.total >= at_least).then_some(full);
        let numbers: Vec<u32> = (0..person.len() as u32).collect();
        let faces = Faces::of(&numbers, |x| Card::of(&person[x as usize]));
        prop_assert_eq!(
            eligible_score(
                (&Card::of(&r), &r),
                faces.as_slice().iter().map(|(x, c)| (c, &person[*x as usize])),
                || person.iter(),
                at_least,
                Purpose::Link,
            ),
            expected
        );
    }

    /// Given names compared from cards agree as compared from the records, whether or not a
    /// card could keep the names (long ones, and names that are not ASCII, included).
    #[test]
    fn cards_compare_given_names_as_records_do(
        a in arb_given(),
        b in arb_given(),
    ) {
        let (a, b) = (given_record(&a.0, &a.1), given_record(&b.0, &b.1));
        let (ac, bc) = (Card::of(&a), Card::of(&b));
        prop_assert_eq!(
            given_card_agreement((&ac, &a), (&bc, &b), Purpose::Link),
            given_agreement(&a, &b)
        );
    }
}

/// A given name and middle names: short and long, some alike, some not ASCII.
fn arb_given() -> impl Strategy<Value = (String, String)> {
    let name = prop::sample::select(vec![
        "",
        "a",
        "mia",
        "mya",
        "ollie",
        "oliver",
        "zo\u{eb}",
        "zoe",
        "maximilian-alexander",
        "maximilian-alexandra",
        "maximilian-alexanders",
        "\u{e9}l\u{e9}onore-marguerite-ang\u{e8}le",
        "\u{e9}l\u{e9}onore-marguerite-ang\u{e8}la",
    ]);
    let middle = prop::collection::vec(name.clone(), 0..3).prop_map(|v| v.join(" "));
    (name, middle).prop_map(|(n, m)| (n.to_string(), m))
}

/// A record with only these names.
fn given_record(given: &str, middle: &str) -> SubjectRecord {
    let mut s = subject("L1", "x", "Smith", "2015-06-01", "NN1 1AA");
    s.given_name = Some(given.to_string());
    s.middle_names = (!middle.is_empty()).then(|| middle.to_string());
    record_from("police", "police/L1".into(), 0, &s)
}

/// The families the linker names as changed, once each.
fn changed_set(l: &mut Linker) -> BTreeSet<u32> {
    match l.take_changed_families() {
        ChangedFamilies::Some(v) => v.into_iter().collect(),
        ChangedFamilies::All => panic!("some families, not all"),
    }
}

#[test]
fn the_linker_says_which_families_changed() {
    let mut l = Linker::new();
    assert_eq!(
        l.take_changed_families(),
        ChangedFamilies::All,
        "a new linker: all"
    );
    let a = one(
        &mut l,
        0,
        "police",
        subject("P1", "Mia", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let b = one(
        &mut l,
        1,
        "police",
        subject("P2", "Jack", "Carter", "2012-02-02", "MK9 3XY"),
    );
    let c = one(
        &mut l,
        2,
        "police",
        subject("P3", "Ollie", "Carter", "2010-03-03", "MK9 3XY"),
    );
    let _ = l.take_changed_families();
    // An event about one known record changes no family.
    one(
        &mut l,
        3,
        "police",
        subject("P1", "Mia", "Smith", "2015-06-01", "NN1 1AA"),
    );
    assert_eq!(l.take_changed_families(), ChangedFamilies::Some(vec![]));
    // A stated relationship joins two families: both are named.
    let (fb, fc) = (l.family_of(b), l.family_of(c));
    let p2 = subject("P2", "Jack", "Carter", "2012-02-02", "MK9 3XY");
    let p3 = subject("P3", "Ollie", "Carter", "2010-03-03", "MK9 3XY");
    l.apply_event(4, &event("police", vec![p2, p3], vec![(0, 1)]));
    assert_eq!(changed_set(&mut l), BTreeSet::from([fb, fc]));
    assert_ne!(l.family_of(a), l.family_of(b));
    // A confirmed link joins two persons (and their families): both families are named.
    let (ka, kb) = (l.record(a).key.clone(), l.record(b).key.clone());
    let (fa, fb) = (l.family_of(a), l.family_of(b));
    l.apply_decision(5, &decision(&ka, &kb, Decision::Confirm, None))
        .expect("confirm");
    assert_eq!(changed_set(&mut l), BTreeSet::from([fa, fb]));
    // Rejecting it splits them again, recomputing persons and families: all may have changed.
    l.apply_decision(6, &decision(&ka, &kb, Decision::Reject, None))
        .expect("reject");
    assert_eq!(l.take_changed_families(), ChangedFamilies::All);
    assert_ne!(l.person_of(a), l.person_of(b));
}

#[test]
fn short_hashes_are_the_first_eight_bytes_of_the_keys_sha256_in_lowercase_hex() {
    for key in [
        "",
        "police/NP-00000001",
        "school/ü-7",
        "a".repeat(300).as_str(),
    ] {
        let d = Sha256::digest(key.as_bytes());
        let expected: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id_of('p', short_hash(key)), format!("p-{expected}"));
        assert_eq!(parse_short_hash(&expected), Some(short_hash(key)));
    }
}

#[test]
fn ids_are_found_only_as_they_are_written() {
    let mut l = Linker::new();
    let r = one(
        &mut l,
        0,
        "police",
        subject("P1", "Mia", "Smith", "2015-06-01", "NN1 1AA"),
    );
    let (person, family) = (l.person_id(l.person_of(r)), l.family_id(l.family_of(r)));
    assert_eq!(person.len(), 18);
    assert_eq!(l.person_by_id(&person), Some(l.person_of(r)));
    assert_eq!(l.family_by_id(&family), Some(l.family_of(r)));
    let hex = &person[2..];
    for wrong in [
        format!("f-{hex}"),
        format!("p-{}", hex.to_uppercase()),
        format!("p-{}", &hex[1..]),
        format!("p-0{hex}"),
        format!("p-+{}", &hex[1..]),
        format!("p- {}", &hex[1..]),
        hex.to_string(),
    ] {
        assert_eq!(l.person_by_id(&wrong), None, "{wrong}");
    }
    assert_eq!(l.family_by_id(&person), None);
}

#[test]
fn faces_keep_each_distinct_card_with_its_first_record() {
    let rec = |given: &str, dob: &str| {
        let mut s = subject("L1", "x", "Smith", dob, "NN1 1AA");
        s.given_name = Some(given.to_string());
        record_from("police", "police/L1".into(), 0, &s)
    };
    let records = [
        rec("Mia", "2015-06-01"),
        rec("Mia", "2015-06-01"),
        rec("Mya", "2015-06-01"),
        rec("Mia", "2015-01-06"),
        // Too long for a card: two different names whose cards are alike.
        rec("Maximilian-Alexanders", "2015-06-01"),
        rec("Maximilian-Alexandras", "2015-06-01"),
    ];
    let cards: Vec<Card> = records.iter().map(Card::of).collect();
    assert_eq!(cards[4], cards[5], "long names leave alike cards");
    let faces = Faces::of(&[0, 1, 2, 3, 4, 5], |r| cards[r as usize]);
    let kept: Vec<u32> = faces.as_slice().iter().map(|(r, _)| *r).collect();
    assert_eq!(kept, [0, 2, 3, 4, 5]);
    // Joined in any order, the first record of each card is kept.
    let mut joined = Faces::of(&[1, 5], |r| cards[r as usize]);
    joined.join(Faces::of(&[0, 2], |r| cards[r as usize]));
    joined.join(Faces::of(&[3, 4], |r| cards[r as usize]));
    assert_eq!(joined, faces);
    let mut one = Faces::one(1, cards[1]);
    one.join(Faces::one(0, cards[0]));
    assert_eq!(one, Faces::one(0, cards[0]));
}

/// A snapshot whose member lists do not account for every record, or name one that is not
/// there, does not load (the person and family of each record are worked out from them).
#[test]
fn a_snapshot_with_broken_member_lists_does_not_load() {
    let (l, _) = run(&[
        Step::Event(
            "police".into(),
            vec![subject("P1", "amelia", "smith", "2015-04-01", "NN1 1AA")],
        ),
        Step::Event(
            "school-001".into(),
            vec![subject("S1", "zara", "jones", "2012-09-30", "NN2 2BB")],
        ),
    ]);
    let json: serde_json::Value = serde_json::to_value(&l).expect("save");
    serde_json::from_value::<Linker>(json.clone()).expect("the snapshot as written loads");
    for (list, change, why) in [
        ("members", serde_json::json!({"0": [0]}), "in no person"),
        (
            "family_members",
            serde_json::json!({"0": [0, 1, 7]}),
            "names record 7",
        ),
        (
            "members",
            serde_json::json!({"0": [0, 1], "1": [1]}),
            "in two persons",
        ),
        (
            "members",
            serde_json::json!({"0": [0], "9": [1]}),
            "person 9 is not a record",
        ),
    ] {
        let mut broken = json.clone();
        broken[list] = change;
        let err = serde_json::from_value::<Linker>(broken).expect_err("does not load");
        assert!(err.to_string().contains(why), "{list}: {err}");
    }
}
