//! End-to-end telemetry: the real `tellonce` binary exports traces over OTLP/gRPC to a small
//! collector this test runs on loopback.
//!
//! A partner publishes with a W3C `traceparent`: the hub's `ingest.publish` span joins the
//! partner's trace, `ingest.validate`, `ingest.seal` and `log.append` are its children, the
//! `projection.apply` span that applied the event links to it, and the hub's log lines inside
//! the publish carry the trace id.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Hub, POLICE_TOKEN};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tellonce_proto::v1 as pb;
use tellonce_server::convert::event_to_pb;

/// Collects every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_one_trace_from_the_partner_to_the_projection() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    // The hub inherits RUST_LOG: debug lines inside the publish show the trace id.
    std::env::set_var("RUST_LOG", "info,tellonce_server=debug");
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_configured(
        tmp.path(),
        &format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n"),
        &[],
    );
    let mut c = hub.client(POLICE_TOKEN).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let good = tellonce_domain::sample::ppn(
        "police",
        "PPN-T1",
        1,
        tellonce_domain::Timestamp(now - 3_600_000),
    );
    let mut bad = good.clone();
    bad.event_id = "PPN-T2".into();
    bad.subjects[0].nhs_number = Some("1234567890".into());
    let mut request = tonic::Request::new(pb::PublishRequest {
        events: vec![event_to_pb(&good), event_to_pb(&bad)],
        request_id: 0,
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN}-01")
            .parse()
            .expect("header"),
    );
    let r = c.publish(request).await.expect("publish").into_inner();
    assert!(matches!(
        r.results[0].outcome,
        Some(pb::event_result::Outcome::Accepted(_))
    ));

    // A clean stop flushes the spans still buffered.
    let data = tmp.path().to_path_buf();
    assert!(hub.stop(), "clean stop");
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = collector.spans.lock().expect("spans").clone();
        if spans.iter().any(|s| s.name == "projection.apply") || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = stop_tx.send(());
    let _ = server.await;

    let ours = |s: &Span| hex(&s.trace_id) == TRACE_ID;
    let publish = spans
        .iter()
        .find(|s| s.name == "ingest.publish" && ours(s))
        .unwrap_or_else(|| {
            panic!(
                "no ingest.publish in the partner's trace: {:?}",
                names(&spans)
            )
        });
    assert_eq!(
        hex(&publish.parent_span_id),
        PARENT_SPAN,
        "a child of the partner's span"
    );
    for child in ["ingest.validate", "ingest.seal", "log.append"] {
        let s = spans
            .iter()
            .find(|s| s.name == child && ours(s))
            .unwrap_or_else(|| panic!("no {child} span: {:?}", names(&spans)));
        assert_eq!(
            s.parent_span_id, publish.span_id,
            "{child} inside the publish"
        );
    }
    let linked = spans.iter().any(|s| {
        s.name == "projection.apply"
            && s.links
                .iter()
                .any(|l| hex(&l.trace_id) == TRACE_ID && l.span_id == publish.span_id)
    });
    assert!(
        linked,
        "projection.apply links to the publish: {:?}",
        names(&spans)
    );

    let log = std::fs::read_to_string(data.join("hub.log")).expect("hub log");
    assert!(
        log.lines()
            .any(|l| l.contains("event rejected") && l.contains(&format!("trace_id={TRACE_ID}"))),
        "the rejection's log line carries the trace id:\n{log}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn names(spans: &[Span]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}
