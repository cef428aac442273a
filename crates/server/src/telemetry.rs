//! Logs and traces: `tracing` to stderr always, and OpenTelemetry traces over OTLP/gRPC when an
//! endpoint is configured (`[telemetry] otlp_endpoint`, or `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! A partner's publish is one trace: `ingest.publish` (a child of the partner's own span when
//! its request carries a W3C `traceparent`), with `ingest.validate`, `ingest.seal` and
//! `log.append` inside. The projection applies entries later, in batches, so its
//! `projection.apply` span is linked to the publish spans whose entries it applied
//! ([`TraceLinks`]). Log lines inside a publish carry its `trace_id`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::ServerError;

/// `[telemetry]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Absent: the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable, else no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The service name traces are reported under.
    #[serde(default = "default_service")]
    pub service_name: String,
}

fn default_service() -> String {
    "tellonce".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: default_service(),
        }
    }
}

impl TelemetryConfig {
    /// The collector to export to, if any.
    pub fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|e| !e.trim().is_empty())
    }
}

/// The trace exporter, flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: logs to stderr (`RUST_LOG`, default `info`), plus the
/// OpenTelemetry layer when `config` names a collector. Call inside the Tokio runtime (the
/// OTLP client runs on it).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, ServerError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files stay plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let Some(endpoint) = config.endpoint() else {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| ServerError::Config(format!("OTLP exporter to {endpoint}: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("tellonce");
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Reads a W3C `traceparent` from gRPC metadata.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Makes `span` a child of the caller's trace (if the request carries one) and records its
/// trace id in the span's `trace_id` field, so log lines inside it show it.
pub fn adopt(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Metadata(metadata)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let id = span.context().span().span_context().trace_id();
    if id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// Recent appends and the spans that made them, so the projection's apply span can link to
/// the publishes whose entries it applies. Bounded: the oldest are forgotten.
#[derive(Clone, Default)]
pub struct TraceLinks {
    recent: Arc<Mutex<VecDeque<(u64, u64, SpanContext)>>>,
}

/// Appends remembered for linking.
const LINKS_KEPT: usize = 4096;
/// Links added to one apply span at most.
const LINKS_PER_APPLY: usize = 64;

impl TraceLinks {
    /// Remembers that the current span appended offsets `first..=last`.
    pub fn appended(&self, first: u64, last: u64) {
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return;
        }
        let mut q = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == LINKS_KEPT {
            q.pop_front();
        }
        q.push_back((first, last, sc));
    }

    /// Links the current span to the appends within `from..to`, and forgets them.
    pub fn link_applied(&self, from: u64, to: u64) {
        let span = tracing::Span::current();
        let mut q = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut linked = 0;
        q.retain(|(first, last, sc)| {
            if *last < to {
                if *first >= from && linked < LINKS_PER_APPLY {
                    span.add_link(sc.clone());
                    linked += 1;
                }
                false
            } else {
                true
            }
        });
    }
}
