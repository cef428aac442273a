//! End-to-end queries: the real `tellonce` binary, fed by two partners, asked over gRPC.
//!
//! A child known to the police (no NHS number, a nickname) and to her school (a UPN) is linked
//! into one person, and her family's timeline merges both partners' events newest first. An
//! uncertain match waits for review, is confirmed through ResolveMatch, and explains itself.
//! After a stop, `tellonce rebuild` gives the same answers. Errors carry precise codes.

mod common;

use std::ffi::OsStr;

use common::{query_client, Hub, DSL_TOKEN, POLICE_TOKEN, SCHOOL_TOKEN};
use tellonce_domain::event::{
    Address, LawfulBasis, Payload, PpnIncidentType, Relationship, RelationshipKind, RiskGrade, Sex,
    Subject,
};
use tellonce_domain::{Date, Event, Timestamp};
use tellonce_proto::v1 as pb;
use tellonce_server::convert::event_to_pb;

const DAY: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn person(local: &str, given: &str, family: &str, dob: &str, postcode: &str) -> Subject {
    Subject {
        local_id: Some(local.into()),
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        date_of_birth: Date::parse(dob).ok(),
        sex: Some(Sex::Female),
        address: Some(Address {
            line1: "14 Abington Avenue".into(),
            town: "Northampton".into(),
            postcode: postcode.into(),
            ..Address::default()
        }),
        ..Subject::default()
    }
}

fn event(
    source: &str,
    id: &str,
    days_ago: i64,
    subjects: Vec<Subject>,
    payload: Payload,
) -> pb::Event {
    let relationships = if subjects.len() > 1 {
        vec![Relationship {
            from: 1,
            to: 0,
            kind: RelationshipKind::ParentCarerOf,
        }]
    } else {
        vec![]
    };
    event_to_pb(&Event {
        event_id: id.into(),
        source: source.into(),
        occurred_at: Timestamp(now_ms() - days_ago * DAY),
        subjects,
        relationships,
        category: None,
        lawful_basis: Some(LawfulBasis::Safeguarding {
            statutory_basis: "UK GDPR Art 6(1)(e); DPA 2018 Sch 1 para 18".into(),
            reason: "Child present at a domestic abuse incident.".into(),
        }),
        payload,
    })
}

fn ppn() -> Payload {
    Payload::PublicProtectionNotification {
        incident_type: PpnIncidentType::DomesticAbuse,
        children_present: true,
        risk_grade: RiskGrade::Medium,
        summary: "Officers attended.".into(),
    }
}

fn attendance() -> Payload {
    Payload::AttendanceConcern {
        attendance_percent: 81.5,
        term_start: None,
        note: "Late most mornings.".into(),
    }
}

async fn publish(hub: &Hub, token: &str, events: Vec<pb::Event>) -> u64 {
    let mut c = hub.client(token).await;
    let r = c
        .publish(pb::PublishRequest {
            events,
            request_id: 0,
        })
        .await
        .expect("publish")
        .into_inner();
    let mut max = 0;
    for x in r.results {
        match x.outcome {
            Some(pb::event_result::Outcome::Accepted(a)) => max = max.max(a.offset),
            other => panic!("event {} not accepted: {other:?}", x.event_id),
        }
    }
    max
}

fn at(offset: u64) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        min_offset: offset,
        wait_ms: 10_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_family_timeline_from_two_partners_with_review_and_rebuild() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    publish(
        &hub,
        POLICE_TOKEN,
        vec![
            event(
                "police",
                "PPN-1",
                40,
                vec![
                    person("NP-1", "Lottie", "Carter", "2016-02-11", "NN1 4PA"),
                    person("NP-2", "Donna", "Carter", "1988-05-03", "NN1 4PA"),
                ],
                ppn(),
            ),
            event(
                "police",
                "PPN-2",
                3,
                vec![
                    person("NP-1", "Lottie", "Carter", "2016-02-11", "NN1 4PA"),
                    person("NP-2", "Donna", "Carter", "1988-05-03", "NN1 4PA"),
                ],
                ppn(),
            ),
            event(
                "police",
                "PPN-3",
                20,
                vec![person("NP-9", "Amelia", "Smith", "2015-06-01", "NN1 1AA")],
                ppn(),
            ),
        ],
    )
    .await;
    let mut charlotte = person("SCH-1", "Charlotte", "Carter", "2016-02-11", "NN1 4PA");
    charlotte.upn = Some(tellonce_domain::sample::upn(42));
    let last = publish(
        &hub,
        SCHOOL_TOKEN,
        vec![
            event("school-001", "ATT-1", 10, vec![charlotte], attendance()),
            // The same name and birth date at another address: for a person to decide.
            event(
                "school-001",
                "ATT-2",
                5,
                vec![person("SCH-7", "Amelia", "Smith", "2015-06-01", "MK9 3XY")],
                attendance(),
            ),
        ],
    )
    .await;

    let mut q = query_client(&hub.addr, DSL_TOKEN).await;
    let found = q
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Upn(
                tellonce_domain::sample::upn(42),
            )),
            consistency: at(last),
            ..Default::default()
        })
        .await
        .expect("find")
        .into_inner();
    assert_eq!(found.persons.len(), 1);
    let child = &found.persons[0];
    let keys: Vec<&str> = child.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["police/NP-1", "school-001/SCH-1"],
        "linked across partners"
    );
    let link = &child.links[0];
    assert_eq!(link.why, "scored");
    assert!(link
        .fields
        .iter()
        .any(|f| f.field == "given_name" && f.agreement == "nickname"));

    // The same person by name with a typo, and by the police's local id.
    let by_name = q
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Name(pb::NameAndDob {
                given_name: "Charlote".into(),
                family_name: "Carter".into(),
                date_of_birth: "2016-02-11".into(),
            })),
            consistency: None,
            ..Default::default()
        })
        .await
        .expect("find by name")
        .into_inner();
    assert_eq!(by_name.persons[0].person_id, child.person_id);

    // The family timeline: both partners, newest first.
    let tl = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(
                child.family_id.clone(),
            )),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    let ids: Vec<&str> = tl.items.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, vec!["PPN-2", "ATT-1", "PPN-1"]);
    assert_eq!(tl.withheld, 0);
    assert!(tl.items[0]
        .summary
        .starts_with("PPN: domestic abuse, children present"));
    // Paged by one, the same three.
    let first = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(
                child.family_id.clone(),
            )),
            page_size: 1,
            sources: vec!["police".into()],
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.total, 2);
    assert!(!first.next_cursor.is_empty());

    let fam = q
        .get_family(pb::GetFamilyRequest {
            by: Some(pb::get_family_request::By::PersonId(
                child.person_id.clone(),
            )),
            consistency: None,
            ..Default::default()
        })
        .await
        .expect("family")
        .into_inner()
        .family
        .expect("a family");
    assert_eq!(fam.family_id, child.family_id);
    assert_eq!(fam.members.len(), 2);
    assert_eq!(fam.flags.as_ref().map(|f| f.ppn_last_30_days), Some(1));
    assert_eq!(fam.event_count, 3);

    // Review: one open candidate, confirmed by the school.
    let cands = q
        .list_match_candidates(pb::ListMatchCandidatesRequest::default())
        .await
        .expect("candidates")
        .into_inner()
        .candidates;
    assert_eq!(cands.len(), 1, "{cands:?}");
    let no_reason = q
        .resolve_match(pb::ResolveMatchRequest {
            target: Some(pb::resolve_match_request::Target::CandidateId(
                cands[0].candidate_id.clone(),
            )),
            decision: pb::MatchDecision::Confirm as i32,
            reason: " ".into(),
        })
        .await
        .expect_err("a reason is required");
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);
    // The safeguarding lead reviews from the terminal: the queue, then the decision.
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", &hub.addr, "--token", DSL_TOKEN]);
        common::run_ok(all).stdout
    };
    let queue = cli(&["matches", "list"]);
    let id = cands[0].candidate_id.as_str();
    assert!(
        queue.starts_with(&format!("{id}  score ")) && queue.contains("open"),
        "{queue}"
    );
    assert!(queue.contains("police/NP-9"), "{queue}");
    let decided = cli(&[
        "matches",
        "confirm",
        id,
        "--reason",
        "Same child: the school has the police's address history",
    ]);
    assert!(decided.starts_with("confirmed: decision "), "{decided}");
    let resolved = cli(&["matches", "list", "--all"]);
    assert!(resolved.contains("confirmed by dsl-1"), "{resolved}");
    assert!(cli(&["matches", "list"]).contains("no match candidates waiting"));
    let again = q
        .resolve_match(pb::ResolveMatchRequest {
            target: Some(pb::resolve_match_request::Target::CandidateId(
                cands[0].candidate_id.clone(),
            )),
            decision: pb::MatchDecision::Reject as i32,
            reason: "changed my mind".into(),
        })
        .await
        .expect_err("already decided");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let amelia = q
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Local(pb::LocalId {
                source: "police".into(),
                local_id: "NP-9".into(),
            })),
            consistency: None,
            ..Default::default()
        })
        .await
        .expect("find")
        .into_inner()
        .persons
        .remove(0);
    assert_eq!(amelia.records.len(), 2);
    assert_eq!(amelia.links[0].why, "confirmed");
    assert_eq!(amelia.links[0].decided_by, "dsl-1");

    // Errors.
    let missing = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId("f-0000".into())),
            ..Default::default()
        })
        .await
        .expect_err("no such family");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let cursor = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(
                child.family_id.clone(),
            )),
            cursor: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(cursor.code(), tonic::Code::InvalidArgument);
    let future = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(
                child.family_id.clone(),
            )),
            consistency: Some(pb::Consistency {
                min_offset: 1_000_000,
                wait_ms: 100,
            }),
            ..Default::default()
        })
        .await
        .expect_err("not applied yet");
    assert_eq!(future.code(), tonic::Code::Unavailable);
    let mut anon = query_client(&hub.addr, "not-a-token").await;
    let denied = anon
        .list_match_candidates(pb::ListMatchCandidatesRequest::default())
        .await
        .expect_err("unknown token");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    // The CLI prints the timeline.
    let upn = tellonce_domain::sample::upn(42);
    let args = |more: &[&'static str]| {
        let mut args = vec!["timeline".to_string(), "--addr".into(), hub.addr.clone()];
        args.extend(["--token", DSL_TOKEN, "--upn"].map(String::from));
        args.push(upn.clone());
        args.extend(more.iter().map(|m| m.to_string()));
        args
    };
    let timeline = |more: &[&'static str]| common::run_ok(args(more)).stdout;
    let text = timeline(&[]);
    assert!(
        text.contains("school-001") && text.contains("police") && text.contains("Attendance 81.5%"),
        "{text}"
    );
    // One event at a time: the CLI prints where to go on from, and going on shows the next.
    let event_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.len() > 12 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b' ')
            .map(str::to_string)
            .collect()
    };
    let first = timeline(&["--limit", "1"]);
    let cursor = first
        .split("--cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cursor to go on from: {first}"));
    let mut more = args(&["--limit", "1", "--cursor"]);
    more.push(cursor.to_string());
    let next = common::run_ok(more).stdout;
    let (a, b) = (event_lines(&first), event_lines(&next));
    assert_eq!((a.len(), b.len()), (1, 1), "{first}\n{next}");
    assert!(
        a[0][..10] >= b[0][..10] && a[0] != b[0],
        "newest first: {a:?} then {b:?}"
    );
    // A date range before every event: none, and it says so.
    let none = timeline(&["--to", "2000-01-01"]);
    assert!(event_lines(&none).is_empty(), "{none}");
    assert!(none.contains("no events you may see match"), "{none}");
    let bad = common::run(args(&["--from", "2026-13-01"]));
    assert!(!bad.ok);
    assert!(bad.stderr.contains("--from: month 13"), "{}", bad.stderr);

    // Stop, rebuild, restart: the same answers.
    let before = tl.items.clone();
    assert!(hub.stop(), "clean stop");
    let config = tmp.path().join("tellonce.toml");
    let rebuilt = common::run_ok([
        OsStr::new("rebuild"),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    // Six partner events and one match decision; every read since was access-logged.
    let entries = common::verify(&tmp.path().join("data"))["entries"]
        .as_u64()
        .expect("entries");
    assert!(entries > 7, "{entries}");
    assert!(rebuilt
        .stdout
        .contains(&format!("rebuilt the projections from {entries} entries")));
    let hub = Hub::start(tmp.path());
    let mut q = query_client(&hub.addr, DSL_TOKEN).await;
    let tl = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(
                child.family_id.clone(),
            )),
            consistency: at(last + 1),
            ..Default::default()
        })
        .await
        .expect("timeline after rebuild")
        .into_inner();
    assert_eq!(tl.items, before);
    let amelia2 = q
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Local(pb::LocalId {
                source: "police".into(),
                local_id: "NP-9".into(),
            })),
            consistency: None,
            ..Default::default()
        })
        .await
        .expect("find")
        .into_inner()
        .persons
        .remove(0);
    assert_eq!(amelia2.person_id, amelia.person_id);
    assert!(hub.stop());
}
