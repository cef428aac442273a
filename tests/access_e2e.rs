//! End-to-end consent and access: the real `tellonce` binary, three partners and five people.
//!
//! A health visitor's contact on consent is refused until the family's consent naming health
//! is recorded. A teacher then sees it; once the consent is withdrawn she no longer does, while
//! the NHS still sees its own event. A social worker with no relationship is refused until she
//! breaks glass; a partner system cannot read at all. Every read, allowed or refused, appears
//! in the access log exactly once, and the family's transparency report lists them.

mod common;

use std::collections::HashMap;

use common::{
    access_log_client, consent_client, query_client, Hub, DPO_TOKEN, DSL_TOKEN, NHS_TOKEN,
    OFFICER_TOKEN, POLICE_TOKEN, SCHOOL_TOKEN, SOCIAL_WORKER_TOKEN, TEACHER_TOKEN,
};
use tellonce_domain::event::{Address, LawfulBasis, Payload, PpnIncidentType, RiskGrade, Subject};
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

fn child(local: &str) -> Subject {
    Subject {
        local_id: Some(local.into()),
        nhs_number: Some("4857773015".into()),
        given_name: Some("Mia".into()),
        family_name: Some("Carter".into()),
        date_of_birth: Date::parse("2017-02-11").ok(),
        address: Some(Address {
            line1: "14 Abington Avenue".into(),
            town: "Northampton".into(),
            postcode: "NN1 4PA".into(),
            ..Address::default()
        }),
        ..Subject::default()
    }
}

fn event(source: &str, id: &str, days_ago: i64, basis: LawfulBasis, payload: Payload) -> pb::Event {
    event_to_pb(&Event {
        event_id: id.into(),
        source: source.into(),
        occurred_at: Timestamp(now_ms() - days_ago * DAY),
        subjects: vec![child(&format!("{source}-mia"))],
        relationships: vec![],
        lawful_basis: Some(basis),
        category: None,
        payload,
    })
}

fn consent(reference: &str) -> LawfulBasis {
    LawfulBasis::Consent {
        consent_reference: reference.into(),
    }
}

fn safeguarding() -> LawfulBasis {
    LawfulBasis::Safeguarding {
        statutory_basis: "UK GDPR Art 6(1)(e); DPA 2018 Sch 1 para 18".into(),
        reason: "Child present at a domestic abuse incident.".into(),
    }
}

/// Publishes one event; returns its result.
async fn publish(hub: &Hub, token: &str, e: pb::Event) -> pb::EventResult {
    let mut c = hub.client(token).await;
    c.publish(pb::PublishRequest {
        events: vec![e],
        request_id: 0,
    })
    .await
    .expect("publish")
    .into_inner()
    .results
    .remove(0)
}

fn accepted(r: &pb::EventResult) -> u64 {
    match &r.outcome {
        Some(pb::event_result::Outcome::Accepted(a)) => a.offset,
        other => panic!("{} not accepted: {other:?}", r.event_id),
    }
}

/// Reads the family's timeline as `token`; returns the answer or the refusal.
async fn timeline(
    hub: &Hub,
    token: &str,
    family: &str,
    min_offset: u64,
    break_glass: &str,
) -> Result<pb::GetTimelineResponse, tonic::Status> {
    let mut q = query_client(&hub.addr, token).await;
    q.get_timeline(pb::GetTimelineRequest {
        scope: Some(pb::get_timeline_request::Scope::FamilyId(family.into())),
        consistency: Some(pb::Consistency {
            min_offset,
            wait_ms: 10_000,
        }),
        reason: "e2e".into(),
        break_glass_reason: break_glass.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

fn kinds(t: &pb::GetTimelineResponse) -> Vec<&str> {
    t.items.iter().map(|i| i.kind.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawal_break_glass_and_the_access_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    // Reads whose access ids we expect in the log, and refusals we expect logged.
    let mut reads: Vec<String> = Vec::new();
    let mut refusals = 0u64;

    let ppn = Payload::PublicProtectionNotification {
        incident_type: PpnIncidentType::DomesticAbuse,
        children_present: true,
        risk_grade: RiskGrade::Medium,
        summary: "Officers attended.".into(),
    };
    let attendance = Payload::AttendanceConcern {
        attendance_percent: 84.0,
        term_start: None,
        note: "Late most mornings.".into(),
    };
    let health = Payload::HealthContact {
        service: "Health visiting".into(),
        concern: "Missed appointments.".into(),
    };
    accepted(
        &publish(
            &hub,
            POLICE_TOKEN,
            event("police", "PPN-1", 20, safeguarding(), ppn),
        )
        .await,
    );
    let last = accepted(
        &publish(
            &hub,
            SCHOOL_TOKEN,
            event("school-001", "ATT-1", 10, consent("EH-1"), attendance),
        )
        .await,
    );

    // Health data on consent needs a consent the hub holds that names health.
    let refused = publish(
        &hub,
        NHS_TOKEN,
        event("nhs-community", "HV-1", 5, consent("EH-1"), health.clone()),
    )
    .await;
    match &refused.outcome {
        Some(pb::event_result::Outcome::Rejected(r)) => {
            assert_eq!(r.code, tonic::Code::FailedPrecondition as i32, "{r:?}");
            assert_eq!(r.reason, "unknown_consent");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    // The school's DSL finds Mia (the school and the police know her by one NHS number).
    let mut dsl = query_client(&hub.addr, DSL_TOKEN).await;
    let found = dsl
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::NhsNumber("4857773015".into())),
            consistency: Some(pb::Consistency {
                min_offset: last,
                wait_ms: 10_000,
            }),
            reason: "attendance concern".into(),
        })
        .await
        .expect("find")
        .into_inner();
    assert_eq!(found.persons.len(), 1);
    let mia = found.persons[0].clone();
    let family = mia.family_id.clone();

    // A teacher records the family's consent: everyone may see education and health.
    let mut consents = consent_client(&hub.addr, TEACHER_TOKEN).await;
    let given = consents
        .give_consent(pb::GiveConsentRequest {
            consent_id: "EH-1".into(),
            given_by: "Sarah Carter".into(),
            giver: "parental_responsibility".into(),
            person_ids: vec![mia.person_id.clone()],
            scope: vec![pb::ConsentScope {
                partners: vec!["*".into()],
                categories: vec!["education".into(), "health".into()],
            }],
            purpose: "Early help assessment".into(),
            ..Default::default()
        })
        .await
        .expect("give consent")
        .into_inner();
    assert_eq!(given.records.len(), 2, "{:?}", given.records);
    // A different consent under the same id is refused; the same one again is idempotent.
    let clash = consents
        .give_consent(pb::GiveConsentRequest {
            consent_id: "EH-1".into(),
            given_by: "Someone Else".into(),
            person_ids: vec![mia.person_id.clone()],
            scope: vec![pb::ConsentScope {
                partners: vec!["*".into()],
                categories: vec!["health".into()],
            }],
            purpose: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("clash");
    assert_eq!(clash.code(), tonic::Code::AlreadyExists);

    // Now the health visitor's event is accepted.
    let hv = accepted(
        &publish(
            &hub,
            NHS_TOKEN,
            event("nhs-community", "HV-1", 5, consent("EH-1"), health),
        )
        .await,
    );

    // The teacher sees her school's event and, by consent, the health contact; the PPN was
    // shared on a safeguarding basis, for safeguarding leads.
    let t = timeline(&hub, TEACHER_TOKEN, &family, hv, "")
        .await
        .expect("teacher reads");
    assert_eq!(kinds(&t), vec!["health_contact", "attendance_concern"]);
    assert_eq!(t.withheld, 1);
    let access = t.access.clone().expect("access decision");
    assert_eq!(access.standing, "open involvement");
    assert_eq!(access.withheld[0].reason, "safeguarding_leads_only");
    reads.push(access.access_id);
    // The DSL sees all three.
    let t = timeline(&hub, DSL_TOKEN, &family, hv, "")
        .await
        .expect("dsl reads");
    assert_eq!(t.items.len(), 3);
    reads.push(t.access.expect("access").access_id);

    // The family withdraws consent: at once, the teacher no longer sees the health contact,
    // and the NHS still sees its own.
    let w = consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: "EH-1".into(),
            reason: "We would rather not share health records".into(),
            ..Default::default()
        })
        .await
        .expect("withdraw")
        .into_inner();
    let t = timeline(&hub, TEACHER_TOKEN, &family, w.offset, "")
        .await
        .expect("teacher reads after withdrawal");
    assert_eq!(kinds(&t), vec!["attendance_concern"]);
    assert_eq!(t.withheld, 2);
    reads.push(t.access.expect("access").access_id);
    // A police officer (open involvement through the PPN) sees the PPN, not the rest.
    let t = timeline(&hub, OFFICER_TOKEN, &family, w.offset, "")
        .await
        .expect("officer reads");
    assert_eq!(kinds(&t), vec!["public_protection_notification"]);
    reads.push(t.access.expect("access").access_id);
    // And after withdrawal, health on this consent is refused at ingest.
    let after = publish(
        &hub,
        NHS_TOKEN,
        event(
            "nhs-community",
            "HV-2",
            1,
            consent("EH-1"),
            Payload::HealthContact {
                service: "Health visiting".into(),
                concern: String::new(),
            },
        ),
    )
    .await;
    assert!(
        matches!(&after.outcome, Some(pb::event_result::Outcome::Rejected(r)) if r.reason == "consent_withdrawn"),
        "{after:?}"
    );

    // A social worker with no relationship is refused...
    let denied = timeline(&hub, SOCIAL_WORKER_TOKEN, &family, 0, "")
        .await
        .expect_err("no relationship");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("break glass"),
        "{}",
        denied.message()
    );
    refusals += 1;
    // She can find Mia, but not learn which partners know her.
    let mut sw = query_client(&hub.addr, SOCIAL_WORKER_TOKEN).await;
    let seen = sw
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::NhsNumber("4857773015".into())),
            ..Default::default()
        })
        .await
        .expect("find")
        .into_inner();
    assert_eq!(seen.persons.len(), 1);
    assert!(seen.persons[0].records.is_empty() && seen.persons[0].links.is_empty());
    // ...until she breaks glass with a reason; the grant then holds for later reads.
    let t = timeline(
        &hub,
        SOCIAL_WORKER_TOKEN,
        &family,
        0,
        "Mia reported missing tonight; checking for known risks",
    )
    .await
    .expect("break glass");
    let access = t.access.expect("access");
    assert!(access.break_glass);
    assert_eq!(
        t.items.len(),
        0,
        "no consent covers the trust; own events: none"
    );
    assert_eq!(t.withheld, 3);
    reads.push(access.access_id);
    let t = timeline(&hub, SOCIAL_WORKER_TOKEN, &family, 0, "")
        .await
        .expect("grant holds");
    assert!(t.access.as_ref().is_some_and(|a| a.break_glass));
    reads.push(t.access.expect("access").access_id);

    // A partner system's credential publishes, but cannot read.
    let system = timeline(&hub, POLICE_TOKEN, &family, 0, "")
        .await
        .expect_err("systems do not read");
    assert_eq!(system.code(), tonic::Code::PermissionDenied);
    refusals += 1;
    // Nor may a teacher read the access log.
    let mut not_dpo = access_log_client(&hub.addr, TEACHER_TOKEN).await;
    let no = not_dpo
        .get_access_log(pb::GetAccessLogRequest::default())
        .await
        .expect_err("teachers do not read the access log");
    assert_eq!(no.code(), tonic::Code::PermissionDenied);

    // The DPO reads the family's access log: every timeline read exactly once, refusals too.
    let mut dpo = access_log_client(&hub.addr, DPO_TOKEN).await;
    let log = family_log(&hub.addr, &family, 500, String::new()).await;
    let seen = times_listed(&log);
    for id in &reads {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&1),
            "read {id} logged once: {log:?}"
        );
    }
    let refused_timelines = log
        .entries
        .iter()
        .filter(|e| e.method == "GetTimeline" && e.outcome == "refused")
        .count();
    assert_eq!(
        refused_timelines as u64, refusals,
        "the social worker's and the partner system's refusals are logged against the family"
    );
    let glass: Vec<_> = log.entries.iter().filter(|e| e.break_glass).collect();
    assert_eq!(glass.len(), 1);
    assert!(glass[0].reason.contains("missing tonight"));
    // The system's refusal is also found by who asked.
    let by_system = dpo
        .get_access_log(pb::GetAccessLogRequest {
            user_id: "police".into(),
            ..Default::default()
        })
        .await
        .expect("access log by user")
        .into_inner();
    assert!(
        by_system.entries.iter().any(|e| e.outcome == "refused"),
        "{by_system:?}"
    );

    // A subject access export of Mia, by the DPO: her records, every event, the consent and
    // the reads about her.
    let export = dpo
        .export_subject(pb::ExportSubjectRequest {
            person_id: mia.person_id.clone(),
            ..Default::default()
        })
        .await
        .expect("export")
        .into_inner();
    let doc: serde_json::Value = serde_json::from_str(&export.json).expect("json");
    assert_eq!(export.events, 3, "PPN, attendance, health contact");
    assert_eq!(doc["events"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["consents"][0]["consent"]["consent_id"], "EH-1");
    assert!(doc["consents"][0]["withdrawn_from"].is_string());
    assert!(
        export.accesses as usize >= reads.len(),
        "{}",
        export.accesses
    );
    assert_eq!(doc["person"]["records"].as_array().map(Vec::len), Some(3));
    let refused = report_refused(&hub, &mia.person_id).await;
    assert_eq!(refused, tonic::Code::PermissionDenied);

    // The transparency report, printed for the family by the DSL.
    let mut report = access_log_client(&hub.addr, DSL_TOKEN).await;
    let r = report
        .get_transparency_report(pb::GetTransparencyReportRequest {
            scope: Some(pb::get_transparency_report_request::Scope::FamilyId(
                family.clone(),
            )),
            ..Default::default()
        })
        .await
        .expect("report")
        .into_inner();
    assert!(r.rows.len() >= reads.len(), "{r:?}");
    assert!(
        r.text.contains("sw-1") && r.text.contains("EMERGENCY ACCESS"),
        "{}",
        r.text
    );
    assert!(hub.stop(), "clean stop");

    // Stopped, the hub wrote a snapshot and moved the access log's index out of memory into
    // its projection store; started again, the DPO reads the same entries, each once.
    let before: Vec<String> = log.entries.iter().map(|e| e.access_id.clone()).collect();
    let hub = Hub::start(tmp.path());
    let again = family_log(&hub.addr, &family, 500, String::new()).await;
    let seen = times_listed(&again);
    for id in &before {
        assert_eq!(seen.get(id.as_str()), Some(&1), "{id} after a restart");
    }
    // Also a page at a time, newest first, from below the newest entry listed (reading the
    // log is itself logged, so newer entries may have arrived since).
    assert!(again.entries.len() >= 5, "{}", again.entries.len());
    let first = family_log(&hub.addr, &family, 2, again.entries[0].offset.to_string()).await;
    let second = family_log(&hub.addr, &family, 2, first.next_cursor.clone()).await;
    let paged: Vec<&str> = first
        .entries
        .iter()
        .chain(&second.entries)
        .map(|e| e.access_id.as_str())
        .collect();
    let listed: Vec<&str> = again.entries[1..5]
        .iter()
        .map(|e| e.access_id.as_str())
        .collect();
    assert_eq!(paged, listed);
    assert!(hub.stop(), "clean stop");
}

/// A page of `family`'s access log, as the DPO reads it.
async fn family_log(
    addr: &str,
    family: &str,
    page_size: u32,
    cursor: String,
) -> pb::GetAccessLogResponse {
    access_log_client(addr, DPO_TOKEN)
        .await
        .get_access_log(pb::GetAccessLogRequest {
            family_id: family.into(),
            page_size,
            cursor,
            ..Default::default()
        })
        .await
        .expect("access log")
        .into_inner()
}

/// How many times each access id is listed.
fn times_listed(log: &pb::GetAccessLogResponse) -> HashMap<&str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &log.entries {
        *seen.entry(e.access_id.as_str()).or_default() += 1;
    }
    seen
}

/// A teacher asking for a subject access export is refused.
async fn report_refused(hub: &Hub, person: &str) -> tonic::Code {
    let mut c = access_log_client(&hub.addr, TEACHER_TOKEN).await;
    c.export_subject(pb::ExportSubjectRequest {
        person_id: person.into(),
        ..Default::default()
    })
    .await
    .expect_err("teachers do not export")
    .code()
}
