//! The TellOnce server: the gRPC edge around the domain and the log.
//!
//! It converts the contract's messages to domain types at its edge ([`convert`]), decides who
//! is calling ([`auth`]), runs the ingest core ([`ingest`]) and serves it over tonic together
//! with the gRPC health and reflection services. [`run`] takes a bound listener and a shutdown
//! signal, so the binary and the tests start the hub the same way.

use std::future::Future;
use std::sync::Arc;

use tellonce_log::storage::FsDir;
use tellonce_log::{EmbeddedLog, EmbeddedOptions, Log, OpenReport};
use tellonce_log_nats::{NatsLog, NatsOptions};
use tellonce_projection::{KeyStore, Projection};
use tellonce_proto::v1::access_log_service_server::AccessLogServiceServer;
use tellonce_proto::v1::audit_service_server::AuditServiceServer;
use tellonce_proto::v1::consent_service_server::ConsentServiceServer;
use tellonce_proto::v1::ingest_service_server::IngestServiceServer;
use tellonce_proto::v1::query_service_server::QueryServiceServer;
use tokio::net::TcpListener;
use tracing::info;

pub mod audit;
pub mod auth;
pub mod config;
pub mod consent;
pub mod convert;
pub mod erasure;
mod error;
pub mod ingest;
pub mod jwt;
pub mod query;
pub mod telemetry;

pub use config::{Config, Overrides};
pub use error::ServerError;

/// The log engine the hub runs on by default.
pub type EmbeddedFsLog = EmbeddedLog<FsDir>;

/// An opened log engine.
pub enum Engine {
    /// Segment files in the data folder.
    Embedded(Arc<EmbeddedFsLog>, OpenReport),
    /// A JetStream stream.
    Nats(Arc<NatsLog>),
}

impl Engine {
    /// The log, as the services use it.
    pub fn log(&self) -> Arc<dyn Log> {
        match self {
            Engine::Embedded(log, _) => log.clone(),
            Engine::Nats(log) => log.clone(),
        }
    }

    /// Finishes pending writes and releases the storage.
    pub fn close(&self) {
        if let Engine::Embedded(log, _) = self {
            log.close();
        }
    }
}

/// Opens the log engine `config` names: the embedded log in `DATA_DIR/log`, or the JetStream
/// stream of `[storage.nats]`.
pub async fn open_engine(config: &Config) -> Result<Engine, ServerError> {
    match config.storage.engine.as_str() {
        "nats" => {
            let n = &config.storage.nats;
            let log = NatsLog::open(NatsOptions {
                url: n.url.clone(),
                stream: n.stream.clone(),
                subject_prefix: n.subject_prefix.clone(),
                replicas: n.replicas,
                ..NatsOptions::default()
            })
            .await?;
            Ok(Engine::Nats(Arc::new(log)))
        }
        _ => {
            let dir = FsDir::new(config.storage.data_dir.join("log"))?;
            let opts = EmbeddedOptions {
                segment_bytes: config.storage.segment_mib * 1024 * 1024,
                ..EmbeddedOptions::default()
            };
            let (log, report) = EmbeddedLog::open(dir, opts)?;
            Ok(Engine::Embedded(Arc::new(log), report))
        }
    }
}

/// Opens the key store when the hub seals payloads, or when one exists (a log written with
/// sealing on needs its keys to be read).
pub fn open_key_store(config: &Config) -> Result<Option<Arc<KeyStore>>, ServerError> {
    let dir = config.key_store_dir();
    if !config.seals() && !dir.join("keys.dat").exists() {
        return Ok(None);
    }
    let ks = KeyStore::open(&dir).map_err(|e| ServerError::Config(e.to_string()))?;
    Ok(Some(Arc::new(ks)))
}

/// The folder of the projections inside a data folder.
pub fn projections_dir(config: &Config) -> std::path::PathBuf {
    config.storage.data_dir.join("projections")
}

/// Serves the hub on `listener` until `shutdown` completes, then stops accepting calls and
/// finishes the ones in flight. Opens the projections in the data folder and keeps them
/// applying the log while it serves.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    log: Arc<dyn Log>,
    auth: Arc<dyn auth::Authenticator>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    run_guarded(
        listener,
        config,
        log,
        auth,
        query::Guard::Enforced,
        shutdown,
    )
    .await
}

/// [`run`], with reads under `guard`: only benchmarks pass anything but
/// [`query::Guard::Enforced`], to measure the cost of the access rule and the access log.
pub async fn run_guarded(
    listener: TcpListener,
    config: &Config,
    log: Arc<dyn Log>,
    auth: Arc<dyn auth::Authenticator>,
    guard: query::Guard,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let keys = open_key_store(config)?;
    let links = telemetry::TraceLinks::default();
    let projection = {
        let links = links.clone();
        Arc::new(
            Projection::open(&projections_dir(config), log.as_ref(), keys.clone())
                .await?
                .with_apply_hook(Box::new(move |from, to| links.link_applied(from, to))),
        )
    };
    info!(
        applied = projection.applied(),
        head = log.head().next_offset,
        "projections open"
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(tellonce_projection::follow(
        projection.clone(),
        log.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
    let clock = ingest::system_clock();
    let lookup = projection.clone();
    let ingest = ingest::Ingest::new(log.clone(), clock.clone(), config.server.max_batch)
        .with_wake(wake.clone())
        .with_trace_links(links)
        .with_consents(Arc::new(move |id: &str| lookup.consent(id)));
    let ingest = match (&keys, config.seals()) {
        (Some(ks), true) => ingest.with_sealing(ks.clone()),
        _ => ingest,
    };
    let ingest = IngestServiceServer::new(ingest::IngestGrpc::new(
        ingest,
        auth.clone(),
        config.server.stream_window,
    ))
    .max_decoding_message_size(16 * 1024 * 1024);
    let query = query::Query::new(
        projection.clone(),
        log.clone(),
        clock.clone(),
        wake,
        config.access.break_glass_minutes,
    )
    .with_guard(guard);
    let consent = ConsentServiceServer::new(consent::ConsentGrpc::new(query.clone(), auth.clone()));
    let eraser = erasure::Eraser::new(query.clone(), keys.clone());
    let access_log = AccessLogServiceServer::new(
        consent::AccessLogGrpc::new(query.clone(), auth.clone()).with_eraser(eraser.clone()),
    )
    .max_encoding_message_size(16 * 1024 * 1024);
    let retention = {
        let r = &config.privacy.retention;
        let rule = tellonce_domain::seal::RetentionRule {
            after_last_activity_years: r.after_last_activity_years,
            until_age_years: r.until_age_years,
        };
        let every = r.check_every_s.max(1);
        let enabled = r.enabled && keys.is_some();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            if !enabled {
                return;
            }
            let mut wait = every.min(60);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(wait)) => {}
                    _ = stop.changed() => return,
                }
                wait = every;
                match eraser.sweep(&rule).await {
                    Ok(done) if !done.is_empty() => {
                        info!(persons = done.len(), "retention: content erased")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "retention sweep failed; retrying next period")
                    }
                }
            }
        })
    };
    let audit = Arc::new(audit::Audit::new(
        log.clone(),
        audit::signing_key(config)?,
        clock.clone(),
    ));
    let every = config.audit.checkpoint_every_s;
    let checkpoints = {
        let audit = audit.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(every)) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = audit.checkpoint_if_grown().await {
                    tracing::warn!(error = %e, "periodic checkpoint failed; retrying next period");
                }
            }
        })
    };
    let audit_service =
        AuditServiceServer::new(audit::AuditGrpc::new(audit, query.clone(), auth.clone()))
            .max_encoding_message_size(16 * 1024 * 1024);
    let query = QueryServiceServer::new(query::QueryGrpc::new(query, auth))
        .max_encoding_message_size(16 * 1024 * 1024);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServiceServer<ingest::IngestGrpc>>()
        .await;
    health_reporter
        .set_serving::<QueryServiceServer<query::QueryGrpc>>()
        .await;
    health_reporter
        .set_serving::<ConsentServiceServer<consent::ConsentGrpc>>()
        .await;
    health_reporter
        .set_serving::<AccessLogServiceServer<consent::AccessLogGrpc>>()
        .await;
    health_reporter
        .set_serving::<AuditServiceServer<audit::AuditGrpc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tellonce_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
    info!(addr = %listener.local_addr()?, "serving gRPC");
    let served = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(8 * 1024 * 1024))
        .add_service(health)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(query)
        .add_service(consent)
        .add_service(access_log)
        .add_service(audit_service)
        .serve_with_incoming_shutdown(
            // Small answers must not wait for Nagle's algorithm.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)));
    let _ = stop_tx.send(true);
    let _ = follower.await;
    let _ = checkpoints.await;
    let _ = retention.await;
    projection.close()?;
    info!("gRPC server stopped");
    served
}
