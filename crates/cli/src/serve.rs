//! `tellonce serve`: run the hub until SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tellonce_log::Log;
use tellonce_server::auth::Tokens;
use tellonce_server::config::{dev_credentials, dev_credentials_path};
use tellonce_server::{Config, Overrides};
use tracing::{info, warn};

/// Options of `tellonce serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A TOML config file (see deploy/tellonce.example.toml). Without one: defaults and
    /// development credentials.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The gRPC listen address (overrides the config file). Port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The data folder (overrides the config file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The log engine: `embedded` or `nats` (overrides the config file).
    #[arg(long)]
    engine: Option<String>,
    /// With `--engine nats`: the NATS server URL(s) (overrides the config file).
    #[arg(long)]
    nats_url: Option<String>,
}

/// Completes at SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: the hub says it is listening before it serves, and a SIGTERM
/// sent as soon as it says so must stop it cleanly rather than kill it.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("shutting down");
    })
}

/// Runs `tellonce serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        engine: args.engine,
        nats_url: args.nats_url,
    };
    let mut config = Config::load(args.config.as_deref(), &overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tellonce")
        .build()?;
    // Logs, and traces over OTLP when configured (the exporter runs on the runtime).
    let telemetry =
        runtime.block_on(async { tellonce_server::telemetry::init(&config.telemetry) })?;
    if config.partners.is_empty() {
        let dev = dev_credentials(&config.storage.data_dir)?;
        config.partners = dev.partners;
        if config.practitioners.is_empty() && config.auth.jwt.is_none() {
            config.practitioners = dev.practitioners;
        }
        warn!(
            file = %dev_credentials_path(&config.storage.data_dir).display(),
            "no partners configured: using development credentials (not for real data)"
        );
        eprintln!(
            "development partner credentials (also in {}):",
            dev_credentials_path(&config.storage.data_dir).display()
        );
        for p in &config.partners {
            eprintln!("  {:<20} {}", p.id, p.token);
        }
        eprintln!("development people (user, organisation, roles):");
        for p in &config.practitioners {
            eprintln!(
                "  {:<16} {:<20} {:<30} {}",
                p.user_id,
                p.organisation,
                p.roles.join(","),
                p.token
            );
        }
    }
    let served = runtime.block_on(async move {
        let engine = tellonce_server::open_engine(&config).await?;
        match &engine {
            tellonce_server::Engine::Embedded(_, report) => info!(
                entries = report.entries,
                segments = report.segments,
                torn_bytes = report.torn_bytes,
                data_dir = %config.storage.data_dir.display(),
                "embedded log opened"
            ),
            tellonce_server::Engine::Nats(log) => info!(
                entries = log.head().next_offset,
                url = %config.storage.nats.url,
                stream = %config.storage.nats.stream,
                "jetstream log opened"
            ),
        }
        let log = engine.log();
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        println!("tellonce listening on {addr}");
        std::io::stdout().flush()?;
        let auth = Arc::new(Tokens::from_config(
            &config,
            tellonce_server::ingest::system_clock(),
        )?);
        tellonce_server::run(listener, &config, log, auth, shutdown).await?;
        engine.close();
        info!("log closed");
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    runtime.block_on(async { telemetry.shutdown() });
    served?;
    Ok(ExitCode::SUCCESS)
}
