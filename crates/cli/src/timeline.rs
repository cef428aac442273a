//! `tellonce timeline`: a family's or person's timeline, one readable line per event.

use std::path::PathBuf;
use std::process::ExitCode;

use tellonce_domain::time::{Date, Timestamp, MS_PER_DAY};
use tellonce_proto::v1 as pb;

use crate::client;

/// Options of `tellonce timeline`.
#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// A family id (`f-...`).
    #[arg(long)]
    family: Option<String>,
    /// A person id (`p-...`): shows that person's whole family.
    #[arg(long)]
    person: Option<String>,
    /// Find the person by NHS number and show their family.
    #[arg(long)]
    nhs_number: Option<String>,
    /// Find the person by UPN and show their family.
    #[arg(long)]
    upn: Option<String>,
    /// Find the person by name ("Given Family") with --dob, and show their family.
    #[arg(long, requires = "dob")]
    name: Option<String>,
    /// Date of birth for --name, YYYY-MM-DD.
    #[arg(long)]
    dob: Option<String>,
    /// Only events from this partner (repeatable).
    #[arg(long)]
    source: Vec<String>,
    /// Only events of this kind, e.g. public_protection_notification (repeatable).
    #[arg(long)]
    kind: Vec<String>,
    /// Only events on or after this day (YYYY-MM-DD) or instant (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only events on or before this day (YYYY-MM-DD, the whole day), or before this instant
    /// (RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// How many events to show (newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Go on from an earlier listing: the cursor it printed after its last event (give the
    /// same family and filters).
    #[arg(long)]
    cursor: Option<String>,
    /// The hub's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Read as this person from the credentials file (development), e.g. `teacher`.
    #[arg(long = "as")]
    as_user: Option<String>,
    /// Why you are looking (written to the access log).
    #[arg(long)]
    reason: Option<String>,
    /// Break glass: read a family you have no relationship with, giving the reason. The
    /// access is time-limited and flagged for review.
    #[arg(long)]
    break_glass: Option<String>,
    /// Bearer token: a JWT from the identity provider (default: --as from the development
    /// credentials in ./data).
    #[arg(long)]
    token: Option<String>,
    /// A credentials file to take a token from.
    #[arg(long)]
    credentials: Option<PathBuf>,
}

/// Resolves the arguments to a family id, through FindPerson where needed.
async fn family_of(q: &mut client::Query, args: &TimelineArgs) -> Result<String, String> {
    use pb::find_person_request::By;
    if let Some(f) = &args.family {
        return Ok(f.clone());
    }
    let by = if let Some(p) = &args.person {
        By::PersonId(p.clone())
    } else if let Some(n) = &args.nhs_number {
        By::NhsNumber(n.clone())
    } else if let Some(u) = &args.upn {
        By::Upn(u.clone())
    } else if let (Some(name), Some(dob)) = (&args.name, &args.dob) {
        let (given, family) = name
            .trim()
            .rsplit_once(' ')
            .ok_or("--name needs a given and a family name, e.g. --name \"Mia Carter\"")?;
        By::Name(pb::NameAndDob {
            given_name: given.into(),
            family_name: family.into(),
            date_of_birth: dob.clone(),
        })
    } else {
        return Err(
            "say whose timeline: --family, --person, --nhs-number, --upn or --name with --dob"
                .into(),
        );
    };
    let found = q
        .find_person(pb::FindPersonRequest {
            by: Some(by),
            reason: args.reason.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(client::status)?
        .into_inner();
    match found.persons.as_slice() {
        [] => Err("no person found".into()),
        [p] => Ok(p.family_id.clone()),
        many => {
            let mut msg = String::from("more than one person matches; pick one with --person:\n");
            for p in many {
                msg.push_str(&format!(
                    "  {}  {}  born {}  score {:.1}\n",
                    p.person_id, p.name, p.date_of_birth, p.score
                ));
            }
            Err(msg)
        }
    }
}

/// How a read went: standing and what was withheld, in words.
pub fn print_access(a: &pb::AccessDecision) {
    println!(
        "  your access: {}{}",
        a.standing,
        if a.break_glass {
            "  (BREAK GLASS: recorded and flagged for review)"
        } else {
            ""
        }
    );
    for w in &a.withheld {
        println!("  {} event(s) withheld: {}", w.count, w.explanation);
    }
}

/// Prints a family view's head lines.
pub fn print_family(f: &pb::FamilyView, withheld: u64) {
    println!("family {}  ({} events)", f.family_id, f.event_count);
    for m in &f.members {
        let age = if m.age >= 0 {
            format!("age {}", m.age)
        } else {
            "age unknown".into()
        };
        println!(
            "  {}  {}  {}  {}",
            m.person_id, m.name, m.date_of_birth, age
        );
    }
    if let Some(l) = &f.lead_practitioner {
        println!("  lead practitioner: {} ({})", l.name, l.organisation);
    }
    if !f.threshold_level.is_empty() {
        println!("  threshold: {}", f.threshold_level);
    }
    let open: Vec<&str> = f
        .partners
        .iter()
        .filter(|p| p.open)
        .map(|p| p.partner.as_str())
        .collect();
    println!("  partners involved (open): {}", open.join(", "));
    for r in &f.open_referrals {
        println!("  referral {} to {}: {}", r.referral_id, r.service, r.state);
    }
    if let Some(fl) = &f.flags {
        let mut flags = Vec::new();
        if fl.ppn_last_30_days > 0 {
            flags.push(format!(
                "{} PPN(s) in the last 30 days",
                fl.ppn_last_30_days
            ));
        }
        if fl.excluded_this_term {
            flags.push("excluded this term".into());
        }
        if fl.youth_justice_involvement {
            flags.push("youth justice involvement".into());
        }
        if fl.repeat_referral_within_12_months {
            flags.push("repeat referral within 12 months".into());
        }
        if !flags.is_empty() {
            println!("  flags: {}", flags.join("; "));
        }
    }
    for o in &f.outcomes {
        println!(
            "  {} {}: {} -> {} ({:+})",
            o.person_id, o.instrument, o.start, o.latest, o.change
        );
    }
    if withheld > 0 {
        println!("  {withheld} event(s) withheld from you (see below)");
    }
}

/// What a reader says about a read: their reason, and a break-glass reason if they break glass.
#[derive(Debug, Clone, Default)]
pub struct Why {
    /// Why they are looking.
    pub reason: String,
    /// Break glass, with this reason.
    pub break_glass: String,
}

/// Prints timeline items, one line each.
pub fn print_items(items: &[pb::TimelineItem]) {
    for i in items {
        let date = i.occurred_at.get(..10).unwrap_or(&i.occurred_at);
        let mut summary = i.summary.clone();
        if summary.chars().count() > 110 {
            summary = summary.chars().take(107).collect::<String>() + "...";
        }
        println!("{date}  {:<19} {summary}", i.source);
    }
}

/// Which of a family's events to list, and how many.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only these partners (all when empty).
    pub sources: Vec<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<String>,
    /// RFC 3339, inclusive; empty: from the start.
    pub from: String,
    /// RFC 3339, exclusive; empty: to now.
    pub to: String,
    /// Where an earlier listing ended (empty: the newest first).
    pub cursor: String,
    /// How many events to show.
    pub limit: usize,
}

/// `--from` or `--to` as the RFC 3339 instant GetTimeline takes: a day's start, or (`end`)
/// the next day's start, so that `--to` a day takes in all of it; an instant as given.
fn instant_of(flag: &str, text: &str, end: bool) -> Result<String, String> {
    if text.len() == 10 {
        let day = Date::parse(text).map_err(|e| format!("--{flag}: {e}"))?;
        let start = day.start().0 + if end { MS_PER_DAY } else { 0 };
        return Ok(Timestamp(start).to_string());
    }
    Timestamp::parse(text)
        .map(|t| t.to_string())
        .map_err(|e| format!("--{flag}: {e} (or a day as YYYY-MM-DD)"))
}

/// Fetches and prints a family's timeline items as `filter` says, newest first, then the
/// cursor to go on from when more are left.
pub async fn show(
    q: &mut client::Query,
    family_id: &str,
    filter: Filter,
    why: &Why,
) -> Result<(), String> {
    let fam = q
        .get_family(pb::GetFamilyRequest {
            by: Some(pb::get_family_request::By::FamilyId(family_id.into())),
            reason: why.reason.clone(),
            break_glass_reason: why.break_glass.clone(),
            ..Default::default()
        })
        .await
        .map_err(client::status)?
        .into_inner();
    if let Some(f) = &fam.family {
        print_family(f, fam.withheld);
    }
    if let Some(a) = &fam.access {
        print_access(a);
    }
    let mut total = 0;
    println!();
    let (shown, cursor) = client::paged(
        filter.limit,
        filter.cursor,
        async |page_size, cursor| {
            let page = q
                .get_timeline(pb::GetTimelineRequest {
                    scope: Some(pb::get_timeline_request::Scope::FamilyId(family_id.into())),
                    sources: filter.sources.clone(),
                    kinds: filter.kinds.clone(),
                    from: filter.from.clone(),
                    to: filter.to.clone(),
                    page_size,
                    cursor,
                    reason: why.reason.clone(),
                    ..Default::default()
                })
                .await
                .map_err(client::status)?
                .into_inner();
            total = page.total;
            Ok((page.items, page.next_cursor))
        },
        print_items,
    )
    .await?;
    if shown == 0 {
        println!("no events you may see match");
    } else if !cursor.is_empty() {
        println!(
            "{shown} shown of {total} you may see; older: tellonce timeline --family {family_id} \
             --cursor {cursor} (as the same person, with the same filters)"
        );
    }
    Ok(())
}

/// Runs `tellonce timeline`.
pub fn run(args: TimelineArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let token = client::person_token(
        args.token.as_deref(),
        args.as_user.as_deref(),
        args.credentials.as_deref(),
    )?;
    let why = Why {
        reason: args.reason.clone().unwrap_or_default(),
        break_glass: args.break_glass.clone().unwrap_or_default(),
    };
    let filter = Filter {
        sources: args.source.clone(),
        kinds: args.kind.clone(),
        from: args
            .from
            .as_deref()
            .map_or(Ok(String::new()), |t| instant_of("from", t, false))?,
        to: args
            .to
            .as_deref()
            .map_or(Ok(String::new()), |t| instant_of("to", t, true))?,
        cursor: args.cursor.clone().unwrap_or_default(),
        limit: args.limit,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = client::connect(&args.addr).await?;
        let mut q = client::query(channel, &token)?;
        let family = family_of(&mut q, &args).await?;
        show(&mut q, &family, filter, &why).await?;
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::instant_of;

    #[test]
    fn from_and_to_take_days_or_instants() {
        let day = |flag, end| instant_of(flag, "2026-10-31", end);
        assert_eq!(day("from", false).as_deref(), Ok("2026-10-31T00:00:00Z"));
        // A day given as --to takes in all of it: up to the next day's start.
        assert_eq!(day("to", true).as_deref(), Ok("2026-11-01T00:00:00Z"));
        assert_eq!(
            instant_of("to", "2026-12-31T23:30:00+01:00", true).as_deref(),
            Ok("2026-12-31T22:30:00Z")
        );
        let bad = instant_of("from", "2026-02-30", false).expect_err("no such day");
        assert!(bad.starts_with("--from: "), "{bad}");
        let bad = instant_of("to", "last week", true).expect_err("not a time");
        assert!(
            bad.contains("RFC 3339") && bad.contains("YYYY-MM-DD"),
            "{bad}"
        );
    }
}
