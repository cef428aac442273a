//! End-to-end ingest: the real `tellonce` binary, spoken to over gRPC.
//!
//! - bad input is answered event by event with exact codes, and nothing of it is written;
//! - credentials: none or unknown is UNAUTHENTICATED, another partner's source PERMISSION_DENIED;
//! - SIGKILL mid-stream: after a restart every acknowledged event is present exactly once (a
//!   retry answers `duplicate` with the same offset) and the log's chain verifies.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{outcome, Hub, POLICE_TOKEN, SCHOOL_TOKEN};
use tellonce_domain::{sample, Timestamp};
use tellonce_proto::v1 as pb;
use tellonce_server::convert::event_to_pb;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn event(source: &str, id: &str, n: u64) -> pb::Event {
    event_to_pb(&sample::ppn(source, id, n, Timestamp(now_ms() - 3_600_000)))
}

fn request(events: Vec<pb::Event>) -> pb::PublishRequest {
    pb::PublishRequest {
        events,
        request_id: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_event_by_event_and_nothing_of_it_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let mut police = hub.client(POLICE_TOKEN).await;

    let good = event("police", "good-1", 1);
    let mut bad_nhs = event("police", "bad-nhs", 2);
    bad_nhs.subjects[0].nhs_number = "9434765918".into();
    let mut unknown_kind = event("police", "unknown-kind", 3);
    unknown_kind.payload = None;
    let mut oversized = event("police", "oversized", 4);
    if let Some(pb::event::Payload::PublicProtectionNotification(p)) = &mut oversized.payload {
        p.summary = "x".repeat(100 * 1024);
    }
    let mut long_text = event("police", "long-text", 5);
    if let Some(pb::event::Payload::PublicProtectionNotification(p)) = &mut long_text.payload {
        p.summary = "x".repeat(5000);
    }
    let mut no_basis = event("police", "no-basis", 6);
    no_basis.lawful_basis = None;
    let mut no_reason = event("police", "no-reason", 7);
    no_reason.lawful_basis = Some(pb::LawfulBasis {
        basis: Some(pb::lawful_basis::Basis::Safeguarding(
            pb::SafeguardingBasis {
                statutory_basis: "Children Act 1989 s47".into(),
                reason: String::new(),
            },
        )),
    });
    let wrong_partner = event("school-001", "wrong-partner", 8);
    let mut future = event("police", "future", 9);
    future.occurred_at = Timestamp(now_ms() + 3_600_000).to_string();

    let results = police
        .publish(request(vec![
            good,
            bad_nhs,
            unknown_kind,
            oversized,
            long_text,
            no_basis,
            no_reason,
            wrong_partner,
            future,
        ]))
        .await
        .expect("publish answers per event")
        .into_inner()
        .results;
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.event_id.as_str(), outcome(r)))
        .collect();
    let invalid = tonic::Code::InvalidArgument as i32;
    let denied = tonic::Code::PermissionDenied as i32;
    let expect = [
        ("good-1", ("accepted", 0, 0, "")),
        (
            "bad-nhs",
            ("rejected", 0, invalid, "nhs_number_check_digit"),
        ),
        ("unknown-kind", ("rejected", 0, invalid, "unknown_kind")),
        ("oversized", ("rejected", 0, invalid, "event_too_large")),
        ("long-text", ("rejected", 0, invalid, "too_long")),
        ("no-basis", ("rejected", 0, invalid, "missing_lawful_basis")),
        ("no-reason", ("rejected", 0, invalid, "missing_field")),
        ("wrong-partner", ("rejected", 0, denied, "wrong_source")),
        ("future", ("rejected", 0, invalid, "in_future")),
    ];
    assert_eq!(got.len(), expect.len());
    for ((id, (tag, off, code, reason)), (eid, (etag, eoff, ecode, ereason))) in
        got.iter().zip(expect)
    {
        assert_eq!(
            (*id, *tag, *off, *code, reason.as_str()),
            (eid, etag, eoff, ecode, ereason)
        );
    }
    for r in &results {
        if let Some(pb::event_result::Outcome::Rejected(x)) = &r.outcome {
            assert!(!x.message.is_empty(), "{} has a message", r.event_id);
        }
    }

    // Whole-call failures.
    let status = hub
        .anonymous()
        .await
        .publish(request(vec![event("police", "anon", 10)]))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = hub
        .client("not-a-real-token-at-all")
        .await
        .publish(request(vec![event("police", "badtoken", 11)]))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = police
        .publish(request(vec![]))
        .await
        .expect_err("empty batch");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // A school may publish its own events.
    let mut school = hub.client(SCHOOL_TOKEN).await;
    let r = school
        .publish(request(vec![event("school-001", "s-1", 12)]))
        .await
        .expect("school publish")
        .into_inner();
    assert_eq!(outcome(&r.results[0]).0, "accepted");

    assert!(hub.stop(), "the hub exits cleanly on SIGTERM");
    let v = common::verify(&tmp.path().join("data"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["entries"], 2,
        "only the two good events were written: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let batches: Vec<Vec<pb::Event>> = (0..400)
        .map(|b| {
            (0..25)
                .map(|i| event("police", &format!("k-{b}-{i}"), (b * 25 + i) as u64))
                .collect()
        })
        .collect();

    // Stream batches; kill the hub once some have been acknowledged.
    let mut police = hub.client(POLICE_TOKEN).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let to_send = batches.clone();
    let sender = tokio::spawn(async move {
        for (i, events) in to_send.into_iter().enumerate() {
            if tx
                .send(pb::PublishRequest {
                    events,
                    request_id: i as u64,
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut responses = police
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut killer = Some(hub);
    loop {
        match tokio::time::timeout(Duration::from_secs(30), responses.message()).await {
            Ok(Ok(Some(resp))) => {
                for r in &resp.results {
                    let (tag, offset, _, reason) = outcome(r);
                    assert!(
                        tag == "accepted" || tag == "duplicate",
                        "{} {tag} {reason}",
                        r.event_id
                    );
                    acked.insert(r.event_id.clone(), offset);
                }
                if acked.len() >= 2000 {
                    if let Some(hub) = killer.take() {
                        hub.kill();
                    }
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("no answer from the hub for 30 s"),
        }
    }
    sender.abort();
    if let Some(hub) = killer.take() {
        hub.kill();
    }
    assert!(
        acked.len() >= 2000,
        "some events were acknowledged before the kill"
    );
    assert!(
        acked.len() < 10_000,
        "the kill came mid-stream ({} acked)",
        acked.len()
    );

    // Restart on the same folder and publish everything again: every acknowledged event is a
    // duplicate at its original offset; the rest land now.
    let hub = Hub::start(tmp.path());
    let mut police = hub.client(POLICE_TOKEN).await;
    let mut offsets: HashMap<String, u64> = HashMap::new();
    for events in batches {
        let results = police
            .publish(request(events))
            .await
            .expect("republish")
            .into_inner()
            .results;
        for r in results {
            let (tag, offset, _, reason) = outcome(&r);
            match acked.get(&r.event_id) {
                Some(&original) => {
                    assert_eq!((tag, offset), ("duplicate", original), "{}", r.event_id)
                }
                None => assert!(
                    tag == "accepted" || tag == "duplicate",
                    "{} {tag} {reason}",
                    r.event_id
                ),
            }
            offsets.insert(r.event_id, offset);
        }
    }
    let mut distinct: Vec<u64> = offsets.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 10_000, "each event at its own offset");
    assert!(hub.stop(), "the hub exits cleanly on SIGTERM");
    let v = common::verify(&tmp.path().join("data"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 10_000, "every event exactly once: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", hub.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "tellonce.v1.IngestService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?} is serving"
        );
    }
    assert!(hub.stop(), "the hub exits cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_runs_on_jetstream_and_keeps_idempotency_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nats = tellonce_log_nats::server::NatsServer::start(&tmp.path().join("nats"))
        .unwrap_or_else(|e| panic!("{e}"));
    let args = ["--engine", "nats", "--nats-url", nats.url.as_str()];
    let events: Vec<pb::Event> = (0..40)
        .map(|i| event("police", &format!("js-{i}"), i))
        .collect();

    let hub = Hub::start_with(tmp.path(), &args);
    let mut police = hub.client(POLICE_TOKEN).await;
    let first = police
        .publish(request(events[..25].to_vec()))
        .await
        .expect("publish")
        .into_inner();
    let tags: Vec<_> = first.results.iter().map(|r| outcome(r).0).collect();
    assert!(tags.iter().all(|t| *t == "accepted"), "{tags:?}");
    hub.kill();

    // A new hub process on the same stream: old events are duplicates at their offsets.
    let hub = Hub::start_with(tmp.path(), &args);
    let mut police = hub.client(POLICE_TOKEN).await;
    let second = police
        .publish(request(events.clone()))
        .await
        .expect("publish")
        .into_inner();
    for (i, r) in second.results.iter().enumerate() {
        let (tag, offset, _, _) = outcome(r);
        if i < 25 {
            assert_eq!((tag, offset), ("duplicate", i as u64), "{}", r.event_id);
        } else {
            assert_eq!((tag, offset), ("accepted", i as u64), "{}", r.event_id);
        }
    }
    assert!(hub.stop(), "the hub exits cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hub_replicas_on_one_stream_serve_each_others_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nats = tellonce_log_nats::server::NatsServer::start(&tmp.path().join("nats"))
        .unwrap_or_else(|e| panic!("{e}"));
    let args = ["--engine", "nats", "--nats-url", nats.url.as_str()];
    // Two replicas, each with its own projections, on one stream.
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir).expect("mkdir");
    std::fs::create_dir_all(&b_dir).expect("mkdir");
    let a = Hub::start_with(&a_dir, &args);
    let b = Hub::start_with(&b_dir, &args);

    // The police publish to replica A; the police officer reads the family from replica B,
    // asking B to wait until it has applied the offset A answered. (A first event takes
    // offset 0, which `min_offset` cannot ask to wait for: 0 means no wait.)
    let mut police = a.client(POLICE_TOKEN).await;
    police
        .publish(request(vec![event("police", "replica-0", 3)]))
        .await
        .expect("publish to A");
    let answer = police
        .publish(request(vec![event("police", "replica-1", 7)]))
        .await
        .expect("publish to A")
        .into_inner();
    let (tag, offset, _, _) = outcome(&answer.results[0]);
    assert_eq!((tag, offset), ("accepted", 1));
    let mut q = common::query_client(&b.addr, common::OFFICER_TOKEN).await;
    let found = q
        .find_person(pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Local(pb::LocalId {
                source: "police".into(),
                local_id: sample::ppn("police", "x", 7, Timestamp(0)).subjects[0]
                    .local_id
                    .clone()
                    .expect("local id"),
            })),
            consistency: Some(pb::Consistency {
                min_offset: offset,
                wait_ms: 10_000,
            }),
            ..Default::default()
        })
        .await
        .expect("B applies A's write")
        .into_inner();
    assert_eq!(found.persons.len(), 1);
    let family = found.persons[0].family_id.clone();
    let tl = q
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(family.clone())),
            ..Default::default()
        })
        .await
        .expect("timeline from B")
        .into_inner();
    assert_eq!(tl.items.len(), 1);
    assert_eq!(tl.items[0].event_id, "replica-1");

    // And the other way: B accepts a write that A then serves; a retry through A is a
    // duplicate at B's offset (one idempotency for the lifetime of the stream).
    let mut police_b = b.client(POLICE_TOKEN).await;
    let second = police_b
        .publish(request(vec![event("police", "replica-2", 7)]))
        .await
        .expect("publish to B")
        .into_inner();
    let (tag, offset2, _, _) = outcome(&second.results[0]);
    assert_eq!(tag, "accepted");
    let mut qa = common::query_client(&a.addr, common::OFFICER_TOKEN).await;
    let tl = qa
        .get_timeline(pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(family)),
            consistency: Some(pb::Consistency {
                min_offset: offset2,
                wait_ms: 10_000,
            }),
            ..Default::default()
        })
        .await
        .expect("timeline from A")
        .into_inner();
    assert_eq!(tl.items.len(), 2);
    let retry = police
        .publish(request(vec![event("police", "replica-2", 7)]))
        .await
        .expect("retry through A")
        .into_inner();
    assert_eq!(outcome(&retry.results[0]).0, "duplicate");
    assert_eq!(outcome(&retry.results[0]).1, offset2);
    assert!(a.stop(), "A exits cleanly");
    assert!(b.stop(), "B exits cleanly");
}

/// The police local id of the child in `sample::ppn(.., n, ..)`.
fn child_local_id(n: u64) -> String {
    sample::ppn("police", "x", n, Timestamp(0)).subjects[0]
        .local_id
        .clone()
        .expect("local id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_catches_up_to_the_same_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nats = tellonce_log_nats::server::NatsServer::start(&tmp.path().join("nats"))
        .unwrap_or_else(|e| panic!("{e}"));
    let args = ["--engine", "nats", "--nats-url", nats.url.as_str()];
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir).expect("mkdir");
    std::fs::create_dir_all(&b_dir).expect("mkdir");
    let a = Hub::start_with(&a_dir, &args);
    let b = Hub::start_with(&b_dir, &args);

    // Ingest through A in batches; B is SIGKILLed part way, while A keeps accepting.
    let mut police = a.client(POLICE_TOKEN).await;
    let mut last = 0;
    let mut b = Some(b);
    for batch in 0..12u64 {
        if batch == 4 {
            b.take().expect("B").kill();
        }
        let events = (0..10)
            .map(|i| {
                let n = batch * 10 + i;
                event("police", &format!("kill-{n}"), n)
            })
            .collect();
        let r = police
            .publish(request(events))
            .await
            .expect("A accepts while B is down")
            .into_inner();
        for x in &r.results {
            let (tag, offset, _, _) = outcome(x);
            assert_eq!(tag, "accepted", "{}", x.event_id);
            last = last.max(offset);
        }
    }
    // B restarts on its own data folder and catches up from the stream.
    let b = Hub::start_with(&b_dir, &args);
    let mut qa = common::query_client(&a.addr, common::OFFICER_TOKEN).await;
    let mut qb = common::query_client(&b.addr, common::OFFICER_TOKEN).await;
    let at = Some(pb::Consistency {
        min_offset: last,
        wait_ms: 20_000,
    });
    for n in (0..120).step_by(7) {
        let find = |c: Option<pb::Consistency>| pb::FindPersonRequest {
            by: Some(pb::find_person_request::By::Local(pb::LocalId {
                source: "police".into(),
                local_id: child_local_id(n),
            })),
            consistency: c,
            ..Default::default()
        };
        let pa = qa.find_person(find(at)).await.expect("A").into_inner();
        let pb_ = qb.find_person(find(at)).await.expect("B").into_inner();
        let ids = |r: &pb::FindPersonResponse| {
            r.persons
                .iter()
                .map(|p| (p.person_id.clone(), p.family_id.clone(), p.records.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&pa), ids(&pb_), "person of event {n}");
        let family = pa.persons[0].family_id.clone();
        let tl = |q: &str| pb::GetTimelineRequest {
            scope: Some(pb::get_timeline_request::Scope::FamilyId(q.into())),
            page_size: 500,
            ..Default::default()
        };
        let ta = qa.get_timeline(tl(&family)).await.expect("A").into_inner();
        let tb = qb.get_timeline(tl(&family)).await.expect("B").into_inner();
        assert_eq!(ta.items, tb.items, "timeline of {family}");
        assert_eq!((ta.total, ta.withheld), (tb.total, tb.withheld));
    }
    assert!(a.stop(), "A exits cleanly");
    assert!(b.stop(), "B exits cleanly");
}
