//! `tellonce consent`, `tellonce access-log`, `tellonce transparency`, and the development
//! identity provider: `tellonce keygen` and `tellonce token`.

use std::path::PathBuf;
use std::process::ExitCode;

use tellonce_proto::v1 as pb;

use crate::client;

/// Who calls, and where.
#[derive(clap::Args, Debug, Clone)]
pub struct Who {
    /// The hub's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Act as this person from the credentials file (development), e.g. `ei-worker`.
    #[arg(long = "as")]
    as_user: Option<String>,
    /// Bearer token: a JWT from the identity provider, or a partner system's token.
    #[arg(long)]
    token: Option<String>,
    /// A credentials file (default: ./data/dev-credentials.toml).
    #[arg(long)]
    credentials: Option<PathBuf>,
}

impl Who {
    pub async fn channel_and_token(&self) -> Result<(tonic::transport::Channel, String), String> {
        let token = client::person_token(
            self.token.as_deref(),
            self.as_user.as_deref(),
            self.credentials.as_deref(),
        )?;
        Ok((client::connect(&self.addr).await?, token))
    }
}

/// A family, or a person's family.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct FamilyArg {
    /// A family id (`f-...`).
    #[arg(long)]
    family: Option<String>,
    /// A member's person id (`p-...`).
    #[arg(long)]
    person: Option<String>,
}

impl FamilyArg {
    /// `(family id, person id)`: exactly one is set (clap enforces it).
    fn ids(self) -> Result<(Option<String>, Option<String>), String> {
        match (self.family, self.person) {
            (None, None) => Err("give --family or --person".into()),
            ids => Ok(ids),
        }
    }
}

/// `tellonce consent ...`
#[derive(clap::Subcommand, Debug)]
pub enum ConsentCommand {
    /// Record a family's consent to share.
    Give {
        /// The consent's reference (events cite it as their lawful basis).
        #[arg(long)]
        id: String,
        /// The name of the person giving consent.
        #[arg(long)]
        given_by: String,
        /// young_person or parental_responsibility.
        #[arg(long, default_value = "parental_responsibility")]
        giver: String,
        /// A family member it covers (repeatable).
        #[arg(long = "person")]
        persons: Vec<String>,
        /// Every member of this family.
        #[arg(long)]
        family: Option<String>,
        /// A partner record it covers, `source/local_id` (repeatable).
        #[arg(long = "record")]
        records: Vec<String>,
        /// Who may see what: `PARTNERS:CATEGORIES`, e.g. `*:education,early_help` or
        /// `school-001,police:health` (repeatable).
        #[arg(long = "share", required = true)]
        scope: Vec<String>,
        /// The purpose told to the family.
        #[arg(long)]
        purpose: String,
        /// When it was given, YYYY-MM-DD (default today).
        #[arg(long)]
        given_on: Option<String>,
        /// When to review it, YYYY-MM-DD.
        #[arg(long)]
        review_on: Option<String>,
        /// The last day it holds, YYYY-MM-DD.
        #[arg(long)]
        expires_on: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Withdraw a consent (from now, or from --from).
    Withdraw {
        /// The consent's reference.
        #[arg(long)]
        id: String,
        /// In the family's words.
        #[arg(long, default_value = "")]
        reason: String,
        /// RFC 3339 time it no longer holds from (default now).
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// List the consents and sharing decisions of a family.
    List {
        #[command(flatten)]
        family: FamilyArg,
        /// Why you are looking.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Record a decision to share (or with --not, not to share), with the reason.
    Decide {
        #[command(flatten)]
        family: FamilyArg,
        /// A decision not to share.
        #[arg(long)]
        not: bool,
        /// With which partners (repeatable).
        #[arg(long = "with")]
        with_partners: Vec<String>,
        /// Which categories (repeatable).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
}

fn parse_scope(s: &str) -> Result<pb::ConsentScope, String> {
    let (partners, categories) = s.split_once(':').ok_or_else(|| {
        format!("--share {s:?}: write PARTNERS:CATEGORIES, e.g. \"*:education,early_help\"")
    })?;
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    Ok(pb::ConsentScope {
        partners: list(partners),
        categories: list(categories),
    })
}

/// Runs `tellonce consent`.
pub fn run(cmd: ConsentCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cmd {
            ConsentCommand::Give {
                id,
                given_by,
                giver,
                mut persons,
                family,
                records,
                scope,
                purpose,
                given_on,
                review_on,
                expires_on,
                who,
            } => {
                let (channel, token) = who.channel_and_token().await?;
                if let Some(f) = family {
                    // Every member, as the family view lists them.
                    let mut q = client::query(channel.clone(), &token)?;
                    let fam = q
                        .get_family(pb::GetFamilyRequest {
                            by: Some(pb::get_family_request::By::FamilyId(f)),
                            reason: "recording the family's consent".into(),
                            ..Default::default()
                        })
                        .await
                        .map_err(client::status)?
                        .into_inner();
                    persons.extend(
                        fam.family
                            .iter()
                            .flat_map(|f| f.members.iter().map(|m| m.person_id.clone())),
                    );
                }
                let scope = scope
                    .iter()
                    .map(|s| parse_scope(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut c = client::consent(channel, &token)?;
                let r = c
                    .give_consent(pb::GiveConsentRequest {
                        consent_id: id,
                        given_by,
                        giver,
                        person_ids: persons,
                        records,
                        scope,
                        purpose,
                        given_on: given_on.unwrap_or_default(),
                        review_on: review_on.unwrap_or_default(),
                        expires_on: expires_on.unwrap_or_default(),
                        consistency: None,
                    })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                println!(
                    "consent {} recorded at offset {}, covering {} partner record(s)",
                    r.consent_id,
                    r.offset,
                    r.records.len()
                );
            }
            ConsentCommand::Withdraw {
                id,
                reason,
                from,
                who,
            } => {
                let (channel, token) = who.channel_and_token().await?;
                let mut c = client::consent(channel, &token)?;
                let r = c
                    .withdraw_consent(pb::WithdrawConsentRequest {
                        consent_id: id.clone(),
                        effective_from: from.unwrap_or_default(),
                        reason,
                    })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                println!(
                    "consent {id} withdrawn ({}, offset {}); other partners no longer see what it shared",
                    r.withdrawal_id, r.offset
                );
            }
            ConsentCommand::List {
                family,
                reason,
                who,
            } => {
                use pb::list_consents_request::Scope;
                let (channel, token) = who.channel_and_token().await?;
                let mut c = client::consent(channel, &token)?;
                let scope = match family.ids()? {
                    (Some(f), _) => Scope::FamilyId(f),
                    (None, p) => Scope::PersonId(p.unwrap_or_default()),
                };
                let r = c
                    .list_consents(pb::ListConsentsRequest {
                        scope: Some(scope),
                        reason,
                        consistency: None,
                    })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                if r.consents.is_empty() {
                    println!("no consent recorded for this family");
                }
                for k in &r.consents {
                    println!(
                        "{}  {}  given by {} ({}) on {}{}",
                        k.consent_id,
                        k.status.to_uppercase(),
                        k.given_by,
                        k.giver,
                        k.given_on,
                        if k.withdrawn_from.is_empty() {
                            String::new()
                        } else {
                            format!(", withdrawn from {}", k.withdrawn_from)
                        }
                    );
                    for s in &k.scope {
                        println!(
                            "    {} may see {}",
                            s.partners.join(", "),
                            s.categories.join(", ")
                        );
                    }
                    println!("    purpose: {}", k.purpose);
                }
                for d in &r.decisions {
                    println!(
                        "decision by {} ({}) on {}: {} with {} [{}]: {}",
                        d.decided_by,
                        d.organisation,
                        d.decided_at,
                        if d.share { "share" } else { "do NOT share" },
                        d.with_partners.join(", "),
                        d.categories.join(", "),
                        d.reason
                    );
                }
            }
            ConsentCommand::Decide {
                family,
                not,
                with_partners,
                categories,
                reason,
                who,
            } => {
                use pb::record_sharing_decision_request::Scope;
                let (channel, token) = who.channel_and_token().await?;
                let mut c = client::consent(channel, &token)?;
                let scope = match family.ids()? {
                    (Some(f), _) => Scope::FamilyId(f),
                    (None, p) => Scope::PersonId(p.unwrap_or_default()),
                };
                let r = c
                    .record_sharing_decision(pb::RecordSharingDecisionRequest {
                        scope: Some(scope),
                        share: !not,
                        with_partners,
                        categories,
                        reason,
                    })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                println!("decision {} recorded at offset {}", r.decision_id, r.offset);
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}

/// Options of `tellonce access-log`.
#[derive(clap::Args, Debug)]
pub struct AccessLogArgs {
    /// Only reads of this family.
    #[arg(long)]
    family: Option<String>,
    /// Only reads about this person.
    #[arg(long)]
    person: Option<String>,
    /// Only reads by this user.
    #[arg(long)]
    user: Option<String>,
    /// At most this many entries (newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    who: Who,
}

/// Runs `tellonce access-log`.
pub fn access_log(args: AccessLogArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (channel, token) = args.who.channel_and_token().await?;
        let mut c = client::access_log(channel, &token)?;
        client::paged(
            args.limit,
            String::new(),
            async |page_size, cursor| {
                let page = c
                    .get_access_log(pb::GetAccessLogRequest {
                        family_id: args.family.clone().unwrap_or_default(),
                        person_id: args.person.clone().unwrap_or_default(),
                        user_id: args.user.clone().unwrap_or_default(),
                        page_size,
                        cursor,
                        consistency: None,
                    })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                Ok((page.entries, page.next_cursor))
            },
            |entries| {
                for e in entries {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "offset": e.offset, "access_id": e.access_id, "at": e.at,
                                "user_id": e.user_id, "organisation": e.organisation,
                                "roles": e.roles, "method": e.method, "asked": e.asked,
                                "family_id": e.family_id, "person_ids": e.person_ids,
                                "shown": e.shown, "withheld": e.withheld,
                                "outcome": e.outcome, "standing": e.standing,
                                "reason": e.reason, "break_glass": e.break_glass,
                                "break_glass_until": e.break_glass_until,
                            })
                        );
                    } else {
                        println!(
                            "{}  {:<16} {:<20} {:<22} {:<9} shown {:<4} withheld {:<4} {}{}{}",
                            e.at.get(..19).unwrap_or(&e.at),
                            e.user_id,
                            e.organisation,
                            e.method,
                            e.outcome,
                            e.shown,
                            e.withheld,
                            e.asked,
                            if e.reason.is_empty() {
                                String::new()
                            } else {
                                format!(" | reason: {}", e.reason)
                            },
                            if e.break_glass { " | BREAK GLASS" } else { "" }
                        );
                    }
                }
            },
        )
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}

/// Options of `tellonce transparency`.
#[derive(clap::Args, Debug)]
pub struct TransparencyArgs {
    #[command(flatten)]
    family: FamilyArg,
    #[command(flatten)]
    who: Who,
}

/// Runs `tellonce transparency`: prints the family's report.
pub fn transparency(args: TransparencyArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use pb::get_transparency_report_request::Scope;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (channel, token) = args.who.channel_and_token().await?;
        let mut c = client::access_log(channel, &token)?;
        let scope = match args.family.ids()? {
            (Some(f), _) => Scope::FamilyId(f),
            (None, p) => Scope::PersonId(p.unwrap_or_default()),
        };
        let r = c
            .get_transparency_report(pb::GetTransparencyReportRequest {
                scope: Some(scope),
                consistency: None,
            })
            .await
            .map_err(client::status)?
            .into_inner();
        print!("{}", r.text);
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}

/// Options of `tellonce keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The folder to write `idp-private.pem` and `idp-public.pem` to.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Runs `tellonce keygen`: an Ed25519 key pair standing in for an identity provider.
pub fn keygen(args: KeygenArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use rand::Rng;
    let (private, public) = tellonce_server::jwt::keypair_pem(rand::rng().random());
    std::fs::create_dir_all(&args.out)?;
    let private_path = args.out.join("idp-private.pem");
    if private_path.exists() {
        return Err(format!("{} exists; not overwriting it", private_path.display()).into());
    }
    std::fs::write(&private_path, private)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let public_path = args.out.join("idp-public.pem");
    std::fs::write(&public_path, public)?;
    println!(
        "wrote {} (keep it secret) and {} (configure it as [auth.jwt] public_key_file)",
        private_path.display(),
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Options of `tellonce token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The identity provider's private key (from `tellonce keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The user id (`sub`).
    #[arg(long)]
    user: String,
    /// Their organisation, a partner id (`org`).
    #[arg(long)]
    org: String,
    /// Roles, comma separated: practitioner, safeguarding_lead, auditor, dpo, admin.
    #[arg(long, default_value = "practitioner")]
    roles: String,
    /// Issuer (`iss`), as configured in [auth.jwt].
    #[arg(long, default_value = "tellonce-dev-idp")]
    issuer: String,
    /// Audience (`aud`).
    #[arg(long, default_value = "tellonce")]
    audience: String,
    /// Hours until it expires.
    #[arg(long, default_value_t = 8)]
    hours: i64,
}

/// Runs `tellonce token`: prints a signed JWT.
pub fn token(args: TokenArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.key)
        .map_err(|e| format!("cannot read {}: {e}", args.key.display()))?;
    let key = tellonce_server::jwt::signing_key_from_pem(&text)?;
    let now = tellonce_server::ingest::system_clock()().0 / 1000;
    let claims = tellonce_server::jwt::Claims {
        sub: args.user,
        org: args.org,
        roles: args
            .roles
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
        name: String::new(),
        iss: args.issuer,
        aud: args.audience,
        exp: now + args.hours * 3600,
        nbf: Some(now - 60),
        iat: Some(now),
    };
    println!("{}", tellonce_server::jwt::mint(&key, &claims));
    Ok(ExitCode::SUCCESS)
}

/// Options of `tellonce export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The person (`p-...`).
    #[arg(long)]
    person: String,
    /// The file to write the export (JSON) to.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    who: Who,
}

/// Runs `tellonce export`: a subject access export of one person.
pub fn export(args: ExportArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (channel, token) = args.who.channel_and_token().await?;
        let mut c = client::access_log(channel, &token)?;
        let r = c
            .export_subject(pb::ExportSubjectRequest {
                person_id: args.person.clone(),
                consistency: None,
            })
            .await
            .map_err(client::status)?
            .into_inner();
        std::fs::write(&args.out, &r.json)?;
        println!(
            "wrote {}: {} events ({} more erased) and {} accesses about {}",
            args.out.display(),
            r.events,
            r.erased_events,
            r.accesses,
            r.person_id
        );
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}

/// `tellonce erase`.
#[derive(clap::Args, Debug)]
pub struct EraseArgs {
    /// The person (`p-...`).
    #[arg(long)]
    person: String,
    /// The erasure request's reference (e.g. the DPO's case number).
    #[arg(long)]
    reference: String,
    /// Why it was granted.
    #[arg(long)]
    note: String,
    #[command(flatten)]
    who: Who,
}

/// Runs `tellonce erase`: destroys a person's data keys (DPO).
pub fn erase(args: EraseArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (channel, token) = args.who.channel_and_token().await?;
        let mut c = client::access_log(channel, &token)?;
        let r = c
            .erase_subject(pb::EraseSubjectRequest {
                person_id: args.person.clone(),
                reference: args.reference.clone(),
                note: args.note.clone(),
            })
            .await
            .map_err(client::status)?
            .into_inner();
        println!(
            "erased {}: {} data key(s) destroyed, {} event(s) now show an erased marker (erasure {} at offset {})",
            args.person, r.keys_destroyed, r.events_erased, r.erasure_id, r.offset
        );
        if r.events_left > 0 {
            println!(
                "note: {} event(s) about {} were written before payloads were sealed and are still readable",
                r.events_left, args.person
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}
