//! `tellonce matches`: the review queue of uncertain matches. A safeguarding lead lists the
//! pairs of partner records linking left for a person, and confirms or rejects them (or splits
//! any two linked records); each decision is a log entry, so a replay reproduces it.

use std::process::ExitCode;

use tellonce_proto::v1 as pb;

use crate::client;
use crate::consent::Who;

/// The subcommands of `tellonce matches`.
#[derive(clap::Subcommand, Debug)]
pub enum MatchesCommand {
    /// List the match candidates waiting for a decision, oldest first.
    List {
        /// Also list confirmed, rejected and superseded candidates.
        #[arg(long)]
        all: bool,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Go on from an earlier listing: the cursor it printed last.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// The two records are the same person: link them.
    Confirm(DecideArgs),
    /// The two records are different people, for good (a linked pair is split).
    Reject(DecideArgs),
}

/// What a decision is about, and why.
#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    /// The candidate's id (`m-...`), as `matches list` shows it.
    #[arg(required_unless_present = "records", conflicts_with = "records")]
    candidate: Option<String>,
    /// Any two partner records instead (`source/local_id`), e.g. to split a link a person's
    /// explanation shows.
    #[arg(long, num_args = 2, value_names = ["RECORD_A", "RECORD_B"])]
    records: Option<Vec<String>>,
    /// Why (required; kept in the log with who decided and when).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    who: Who,
}

/// One record of a pair: key, name, date of birth and identifiers.
fn record_line(side: &str, r: Option<&pb::PartnerRecord>) -> String {
    let Some(r) = r else {
        return format!("  {side} (not shown)");
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "  {side} {:<28} {:<24} {:<10}  NHS {}  UPN {}  {}",
        r.key,
        r.name,
        or_dash(&r.date_of_birth),
        or_dash(&r.nhs_number),
        or_dash(&r.upn),
        r.postcodes.join(", ")
    )
}

/// Prints one candidate in three or four lines.
fn print_candidate(c: &pb::MatchCandidate) {
    let by = if c.decided_by.is_empty() {
        String::new()
    } else {
        format!(" by {}", c.decided_by)
    };
    println!("{}  score {}  {}{by}", c.candidate_id, c.score, c.status);
    println!("{}", record_line("A", c.record_a.as_ref()));
    println!("{}", record_line("B", c.record_b.as_ref()));
    let fields: Vec<String> = c
        .fields
        .iter()
        .map(|f| format!("{} {} {:+}", f.field, f.agreement, f.weight))
        .collect();
    if !fields.is_empty() {
        println!("  {}", fields.join(", "));
    }
}

/// Runs `tellonce matches`.
pub fn run(cmd: MatchesCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cmd {
            MatchesCommand::List {
                all,
                limit,
                cursor,
                who,
            } => {
                let (channel, token) = who.channel_and_token().await?;
                let mut q = client::query(channel, &token)?;
                let (shown, cursor) = client::paged(
                    limit,
                    cursor.unwrap_or_default(),
                    async |page_size, cursor| {
                        let page = q
                            .list_match_candidates(pb::ListMatchCandidatesRequest {
                                include_resolved: all,
                                page_size,
                                cursor,
                            })
                            .await
                            .map_err(client::status)?
                            .into_inner();
                        Ok((page.candidates, page.next_cursor))
                    },
                    |candidates| candidates.iter().for_each(print_candidate),
                )
                .await?;
                if shown == 0 {
                    println!("no match candidates{}", if all { "" } else { " waiting" });
                } else if !cursor.is_empty() {
                    println!("more: tellonce matches list --cursor {cursor}");
                }
                Ok(ExitCode::SUCCESS)
            }
            MatchesCommand::Confirm(args) => decide(args, pb::MatchDecision::Confirm).await,
            MatchesCommand::Reject(args) => decide(args, pb::MatchDecision::Reject).await,
        }
    })
}

/// Sends one decision and says where in the log it went.
async fn decide(
    args: DecideArgs,
    decision: pb::MatchDecision,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use pb::resolve_match_request::Target;
    let target = match (args.candidate, args.records) {
        (Some(c), _) => Target::CandidateId(c),
        (None, Some(r)) if r.len() == 2 => Target::Records(pb::RecordPair {
            record_a: r[0].clone(),
            record_b: r[1].clone(),
        }),
        _ => return Err("give a candidate id, or --records RECORD_A RECORD_B".into()),
    };
    let (channel, token) = args.who.channel_and_token().await?;
    let mut q = client::query(channel, &token)?;
    let done = q
        .resolve_match(pb::ResolveMatchRequest {
            target: Some(target),
            decision: decision as i32,
            reason: args.reason,
        })
        .await
        .map_err(client::status)?
        .into_inner();
    let what = match decision {
        pb::MatchDecision::Confirm => "confirmed",
        _ => "rejected",
    };
    println!(
        "{what}: decision {} at log offset {}",
        done.decision_id, done.offset
    );
    Ok(ExitCode::SUCCESS)
}
