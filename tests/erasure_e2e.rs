//! End-to-end erasure and retention: the real `tellonce` binary.
//!
//! Payloads are sealed at rest (no payload text in the log's files). The data protection
//! officer erases one child: their events stay in the timeline as erased markers, the other
//! family's do not change, the subject access export lists them without content, a second
//! erasure is refused, and other roles may not erase. After a restart the markers stay, a new
//! event about the child reads as usual, and `tellonce audit verify` finds the log, its
//! checkpoints and the projections intact. A retention rule of zero years erases a family
//! whose case is closed and leaves a family with an open involvement alone.

mod common;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use common::{access_log_client, query_client, Hub, DPO_TOKEN, OFFICER_TOKEN, POLICE_TOKEN};
use tellonce_domain::event::{CaseClosureReason, Payload};
use tellonce_domain::{Event, Timestamp};
use tellonce_proto::v1 as pb;
use tellonce_server::convert::event_to_pb;

const SECRET: &str = "Disclosed the stepfather's name during the visit";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A PPN about child `NP-n` and their mother `NP-(n+1)`, `hours_ago`.
fn ppn(id: &str, n: u64, hours_ago: i64) -> Event {
    let mut e =
        tellonce_domain::sample::ppn("police", id, n, Timestamp(now_ms() - hours_ago * 3_600_000));
    if let Payload::PublicProtectionNotification { summary, .. } = &mut e.payload {
        *summary = format!("{SECRET} (family {n})");
    }
    e
}

fn closed(id: &str, n: u64) -> Event {
    let mut e = ppn(id, n, 1);
    e.payload = Payload::CaseClosed {
        reason: CaseClosureReason::NeedsMet,
        note: "No further police action.".into(),
    };
    e
}

/// Publishes `events`; returns a consistency that waits for them.
async fn publish(hub: &Hub, events: Vec<Event>) -> Option<pb::Consistency> {
    let mut c = hub.client(POLICE_TOKEN).await;
    let r = c
        .publish(pb::PublishRequest {
            events: events.iter().map(event_to_pb).collect(),
            request_id: 0,
        })
        .await
        .expect("publish")
        .into_inner();
    let mut last = 0;
    for x in &r.results {
        match x.outcome {
            Some(pb::event_result::Outcome::Accepted(pb::Accepted { offset })) => {
                last = last.max(offset)
            }
            _ => panic!("{x:?}"),
        }
    }
    Some(pb::Consistency {
        min_offset: last,
        wait_ms: 10_000,
    })
}

async fn person_of(hub: &Hub, local: &str, after: Option<pb::Consistency>) -> String {
    let mut q = query_client(&hub.addr, OFFICER_TOKEN).await;
    let r = q
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Local(pb::LocalId {
                source: "police".into(),
                local_id: local.into(),
            })),
            consistency: after,
            reason: "erasure test".into(),
        })
        .await
        .expect("find person")
        .into_inner();
    r.persons.first().expect("the person").person_id.clone()
}

async fn timeline(
    hub: &Hub,
    person: &str,
    after: Option<pb::Consistency>,
) -> Vec<pb::TimelineItem> {
    let mut q = query_client(&hub.addr, OFFICER_TOKEN).await;
    q.get_timeline(pb::GetTimelineRequest {
        scope: Some(pb::get_timeline_request::Scope::PersonId(person.into())),
        reason: "erasure test".into(),
        consistency: after,
        page_size: 500,
        ..Default::default()
    })
    .await
    .expect("timeline")
    .into_inner()
    .items
}

async fn erase(
    hub: &Hub,
    token: &str,
    person: &str,
    reference: &str,
) -> Result<pb::EraseSubjectResponse, tonic::Status> {
    let mut a = access_log_client(&hub.addr, token).await;
    a.erase_subject(pb::EraseSubjectRequest {
        person_id: person.into(),
        reference: reference.into(),
        note: "Right-to-erasure request granted by the DPO".into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn export(hub: &Hub, person: &str) -> pb::ExportSubjectResponse {
    let mut a = access_log_client(&hub.addr, DPO_TOKEN).await;
    a.export_subject(pb::ExportSubjectRequest {
        person_id: person.into(),
        consistency: None,
    })
    .await
    .expect("export")
    .into_inner()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn holds(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_destroys_content_and_the_log_still_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let at = publish(
        &hub,
        vec![
            ppn("PPN-1", 1, 30),
            ppn("PPN-2", 1, 20),
            ppn("PPN-3", 10, 10),
        ],
    )
    .await;
    // Sealed at rest: the log's files hold no payload text.
    assert!(holds(&hub.data_dir.join("log"), SECRET).is_empty());

    let child = person_of(&hub, "NP-00000001", at).await;
    let other = person_of(&hub, "NP-00000010", None).await;
    let before = timeline(&hub, &child, None).await;
    assert_eq!(before.len(), 2);
    assert!(before
        .iter()
        .all(|i| !i.erased && i.summary.contains("Disclosed")));

    // Only the DPO erases, and only with a reference and a note.
    let denied = erase(&hub, OFFICER_TOKEN, &child, "SAR-7")
        .await
        .expect_err("officer");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bad = erase(&hub, DPO_TOKEN, &child, " ")
        .await
        .expect_err("no reference");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let done = erase(&hub, DPO_TOKEN, &child, "SAR-7")
        .await
        .expect("erase");
    assert!(done.keys_destroyed >= 1, "{done:?}");
    assert_eq!(done.events_erased, 2);
    assert_eq!(done.events_left, 0);

    let after = timeline(&hub, &child, None).await;
    assert_eq!(after.len(), 2, "the events stay, their content goes");
    for i in &after {
        assert!(i.erased, "{i:?}");
        assert!(i.summary.starts_with("[erased on ") && i.summary.contains("right to erasure"));
        assert_eq!(i.kind, "public_protection_notification");
    }
    let untouched = timeline(&hub, &other, None).await;
    assert_eq!(untouched.len(), 1);
    assert!(!untouched[0].erased && untouched[0].summary.contains("Disclosed"));

    let sar = export(&hub, &child).await;
    assert_eq!((sar.events, sar.erased_events), (0, 2));
    assert!(!sar.json.contains(SECRET));

    let again = erase(&hub, DPO_TOKEN, &child, "SAR-7")
        .await
        .expect_err("nothing left");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    // A new event about the child is sealed under a new key and reads as usual.
    let at = publish(&hub, vec![ppn("PPN-4", 1, 1)]).await;
    let newest = timeline(&hub, &child, at).await;
    assert_eq!(newest.len(), 3);
    assert!(newest
        .iter()
        .any(|i| i.event_id == "PPN-4" && !i.erased && i.summary.contains("Disclosed")));

    // After a restart the markers stay.
    let data = hub.data_dir.clone();
    assert!(hub.stop(), "clean stop");
    let hub = Hub::start(tmp.path());
    let restarted = timeline(&hub, &child, None).await;
    assert_eq!(
        restarted.iter().filter(|i| i.erased).count(),
        2,
        "{restarted:?}"
    );
    assert!(hub.stop(), "clean stop");

    // The projections' store holds none of the erased content, and the log still verifies:
    // checksums, the chain, every signed checkpoint's root, and the projections against a
    // rebuild from the log.
    let leaks = holds(&data.join("projections"), "(family 1)");
    assert!(leaks.is_empty(), "erased content in {leaks:?}");
    let text = common::run_ok([
        OsStr::new("audit"),
        "verify".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ])
    .text();
    assert!(text.contains("audit ok"), "{text}");
    assert!(
        text.contains("projections: the stored ones equal a rebuild"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_closed_families_and_keeps_open_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_configured(
        tmp.path(),
        "[privacy.retention]\nafter_last_activity_years = 0\nuntil_age_years = 0\ncheck_every_s = 1\n",
        &[],
    );
    // Family 1: a PPN, then the police close their involvement. Family 20: still open.
    let at = publish(
        &hub,
        vec![
            ppn("PPN-1", 1, 30),
            closed("CLOSE-1", 1),
            ppn("PPN-20", 20, 5),
        ],
    )
    .await;
    let child = person_of(&hub, "NP-00000001", at).await;
    let open = person_of(&hub, "NP-00000020", None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sar = export(&hub, &child).await;
        if sar.erased_events == 2 {
            assert_eq!(sar.events, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not erase the closed family within 30 s: {sar:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = export(&hub, &open).await;
    assert_eq!((kept.events, kept.erased_events), (1, 0));
    // The erasure is in the log, decided by the retention rule.
    let data = hub.data_dir.clone();
    assert!(hub.stop(), "clean stop");
    let text = common::run_ok([
        OsStr::new("log"),
        "dump".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ])
    .stdout;
    assert!(
        text.contains("by hub:retention (retention period ended)"),
        "{text}"
    );
}
