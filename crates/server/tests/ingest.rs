//! The ingest core and its gRPC adapter in one process, over a log on the simulated disk:
//! per-event answers, duplicates, a failing disk, and stream ordering.

use std::sync::Arc;

use tellonce_domain::{sample, Timestamp};
use tellonce_log::sim::SimDisk;
use tellonce_log::{EmbeddedLog, EmbeddedOptions, Log};
use tellonce_proto::v1 as pb;
use tellonce_server::auth::{Caller, Tokens};
use tellonce_server::config::PartnerConfig;
use tellonce_server::convert::event_to_pb;
use tellonce_server::ingest::{Clock, Ingest};
use tellonce_server::{Config, ServerError};

const NOW: i64 = 1_764_072_000_000; // 2025-11-25T12:00:00Z

fn clock() -> Clock {
    Arc::new(|| Timestamp(NOW))
}

fn event(source: &str, id: &str) -> pb::Event {
    event_to_pb(&sample::ppn(source, id, 7, Timestamp(NOW - 60_000)))
}

fn police() -> Caller {
    Caller::system("police")
}

fn tag(r: &pb::EventResult) -> String {
    match &r.outcome {
        Some(pb::event_result::Outcome::Accepted(a)) => format!("accepted@{}", a.offset),
        Some(pb::event_result::Outcome::Duplicate(d)) => format!("duplicate@{}", d.offset),
        Some(pb::event_result::Outcome::Rejected(x)) => format!("rejected:{}:{}", x.code, x.reason),
        None => "none".into(),
    }
}

fn memory_log(disk: &SimDisk) -> Arc<EmbeddedLog<SimDisk>> {
    Arc::new(
        EmbeddedLog::open(disk.clone(), EmbeddedOptions::default())
            .expect("open")
            .0,
    )
}

#[tokio::test]
async fn a_mixed_batch_is_answered_event_by_event() {
    let disk = SimDisk::new(1);
    let log = memory_log(&disk);
    let ingest = Ingest::new(log.clone(), clock(), 1000);
    let mut bad = event("police", "bad");
    bad.subjects[0].upn = "A801200005001".into();
    let results = ingest
        .publish(
            &police(),
            vec![
                event("police", "a"),
                bad,
                event("police", "a"),
                event("nhs-community", "x"),
                event("police", "b"),
            ],
        )
        .await
        .expect("publish");
    let tags: Vec<String> = results.iter().map(tag).collect();
    assert_eq!(
        tags,
        [
            "accepted@0",
            "rejected:3:upn_check_letter",
            "duplicate@0",
            "rejected:7:wrong_source",
            "accepted@1",
        ]
    );
    assert_eq!(results[1].event_id, "bad");
    assert_eq!(
        log.head().next_offset,
        2,
        "only the good events were written"
    );
}

#[tokio::test]
async fn a_failing_disk_fails_the_call_as_unavailable_and_acknowledges_nothing() {
    let disk = SimDisk::new(2);
    let log = memory_log(&disk);
    let ingest = Ingest::new(log.clone(), clock(), 1000);
    disk.crash_after(0);
    let err = ingest
        .publish(&police(), vec![event("police", "a")])
        .await
        .expect_err("the disk is gone");
    assert!(matches!(err, ServerError::Log(_)));
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("retry"), "{}", status.message());
    assert_eq!(log.head().next_offset, 0);
}

#[tokio::test]
async fn batches_over_the_limit_or_empty_are_invalid() {
    let disk = SimDisk::new(3);
    let ingest = Ingest::new(memory_log(&disk), clock(), 2);
    let too_many = vec![
        event("police", "1"),
        event("police", "2"),
        event("police", "3"),
    ];
    let status = tonic::Status::from(
        ingest
            .publish(&police(), too_many)
            .await
            .expect_err("limit"),
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = tonic::Status::from(ingest.publish(&police(), vec![]).await.expect_err("empty"));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_answered_in_order() {
    let disk = SimDisk::new(4);
    let log: Arc<dyn Log> = memory_log(&disk);
    let token = "stream-test-token-0123456789";
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    // Projections, keys and the checkpoint key in a folder of the test's own.
    config.storage.data_dir = tmp.path().join("data");
    config.server.stream_window = 8;
    let partners = vec![PartnerConfig {
        id: "police".into(),
        name: String::new(),
        token: token.into(),
    }];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tellonce_server::run(
            listener,
            &config,
            log,
            Arc::new(Tokens::new(&partners, &[])),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("value");
    let mut client = pb::ingest_service_client::IngestServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    );
    // Batches of different sizes, so later ones could finish first if order were not kept.
    let requests: Vec<pb::PublishRequest> = (0..60u64)
        .map(|r| pb::PublishRequest {
            events: (0..(1 + (r * 7) % 40))
                .map(|i| event("police", &format!("s-{r}-{i}")))
                .collect(),
            request_id: 1000 + r,
        })
        .collect();
    let sizes: Vec<usize> = requests.iter().map(|r| r.events.len()).collect();
    let mut responses = client
        .publish_stream(tokio_stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(resp) = responses.message().await.expect("message") {
        assert_eq!(resp.results.len(), sizes[seen.len()]);
        assert!(resp.results.iter().all(|r| tag(r).starts_with("accepted@")));
        seen.push(resp.request_id);
    }
    assert_eq!(
        seen,
        (1000..1060).collect::<Vec<_>>(),
        "one answer per request, in order"
    );
    let _ = stop.send(());
    server.await.expect("server task").expect("server ran");
}
