//! The `tellonce` command: run the hub, publish events, record consent, read timelines and the
//! access log, benchmark, verify the log.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, tuned for the hub (see the `tellonce-alloc` crate).
#[global_allocator]
static GLOBAL: tellonce_alloc::Allocator = tellonce_alloc::Allocator;

mod audit;
mod bench;
mod client;
mod consent;
mod demo;
mod matches;
mod projbench;
mod publish;
mod serve;
mod timeline;
mod verify;

/// TellOnce: an event-sourced data-sharing hub for early help and safeguarding of children.
#[derive(Parser, Debug)]
#[command(name = "tellonce", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the hub (gRPC on 127.0.0.1:50051, data in ./data unless configured).
    Serve(serve::ServeArgs),
    /// Publish events from a JSON-lines file (one event per line) to a running hub.
    Publish(publish::PublishArgs),
    /// Generate a synthetic county and publish it to a running hub, then show one family.
    Demo(demo::DemoArgs),
    /// Print a family's timeline: one line per event, newest first.
    Timeline(timeline::TimelineArgs),
    /// The review queue of uncertain matches: list them, confirm or reject (safeguarding lead).
    Matches {
        #[command(subcommand)]
        which: matches::MatchesCommand,
    },
    /// Record, withdraw and list a family's consent; record sharing decisions.
    Consent {
        #[command(subcommand)]
        which: consent::ConsentCommand,
    },
    /// Read the access log (data protection officer, auditors).
    AccessLog(consent::AccessLogArgs),
    /// Print a family's transparency report: who looked at its records, when, and why.
    Transparency(consent::TransparencyArgs),
    /// For auditors: signed checkpoints, and proofs that the log only grew.
    Audit {
        #[command(subcommand)]
        which: audit::AuditCommand,
    },
    /// Export everything held about a person, for a subject access request (DPO).
    Export(consent::ExportArgs),
    /// Erase a person's content by destroying their data keys (DPO); the log still verifies.
    Erase(consent::EraseArgs),
    /// Make an Ed25519 key pair standing in for the identity provider (development).
    Keygen(consent::KeygenArgs),
    /// Sign a practitioner's JWT with a key from `keygen` (development).
    Token(consent::TokenArgs),
    /// Drop the projections and rebuild them from the log (stop the hub first).
    Rebuild(projbench::RebuildArgs),
    /// Benchmarks (not tests): measure the hub against a baseline in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Work with the log on disk.
    Log {
        #[command(subcommand)]
        which: LogCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Ingest over gRPC end to end, streamed and unary, against the raw append rate of the disk.
    Ingest(bench::IngestArgs),
    /// Identity linking on the demo county, scored against its ground truth.
    Link(projbench::DemoSize),
    /// Full rebuilds of the projections from a demo log (the median of several).
    Replay(projbench::ReplayArgs),
    /// GetTimeline and GetFamily over gRPC on the demo county.
    Query(projbench::QueryArgs),
    /// A full verification of the demo log (checksums, chain, Merkle tree) and proof latency.
    Verify(projbench::DemoSize),
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Verify every checksum, the hash chain and key uniqueness of a data folder's log, without
    /// changing it.
    Verify {
        /// The hub's data folder.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the log's entries, one line each (offset, recorded at, source, id, kind), after
    /// verifying them.
    Dump {
        /// The hub's data folder.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Print each entry as a JSON line with its decoded record.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tellonce_alloc::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Timeline(args) => timeline::run(args),
        Command::Matches { which } => matches::run(which),
        Command::Rebuild(args) => projbench::rebuild(args),
        Command::Consent { which } => consent::run(which),
        Command::AccessLog(args) => consent::access_log(args),
        Command::Transparency(args) => consent::transparency(args),
        Command::Keygen(args) => consent::keygen(args),
        Command::Export(args) => consent::export(args),
        Command::Erase(args) => consent::erase(args),
        Command::Audit { which } => audit::run(which),
        Command::Token(args) => consent::token(args),
        Command::Bench {
            which: BenchCommand::Ingest(args),
        } => bench::run(args),
        Command::Bench {
            which: BenchCommand::Link(args),
        } => projbench::link(args),
        Command::Bench {
            which: BenchCommand::Replay(args),
        } => projbench::replay(args),
        Command::Bench {
            which: BenchCommand::Query(args),
        } => projbench::query(args),
        Command::Bench {
            which: BenchCommand::Verify(args),
        } => projbench::verify(args),
        Command::Log {
            which: LogCommand::Verify { data_dir, json },
        } => verify::run(&data_dir, json),
        Command::Log {
            which: LogCommand::Dump { data_dir, json },
        } => verify::dump(&data_dir, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
