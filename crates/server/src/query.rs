//! Queries: persons, families, timelines and match review, answered from the projections
//! under the access rule, with every read written to the access log.
//!
//! Only people read. Each family read asks the projection to decide standing and per-event
//! visibility for the viewer ([`tellonce_domain::access`]); a read without standing is refused
//! unless the viewer breaks glass with a reason. Every call, allowed, filtered or refused,
//! appends an [`AccessEntry`] to the log and waits until it is durable before answering.
//! [`QueryGrpc`] is the gRPC adapter: authenticate, wait for the requested log offset to be
//! applied (read-your-writes), ask the core, convert.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tellonce_domain::access::{AccessEntry, AccessOutcome, Role, Viewer, Withheld};
use tellonce_domain::identity::{
    Candidate, CandidateStatus, Decision, LinkWhy, MatchDecision, Score, SubjectRecord,
};
use tellonce_domain::view::FamilyView;
use tellonce_domain::{Date, Record, Timestamp};
use tellonce_log::{AppendOutcome, Log, NewEntry};
use tellonce_projection::{
    CandidateView, PersonQuery, PersonView, Projection, ReadAs, Reading, Scope, TimelineFilter,
};
use tellonce_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::auth::{Authenticator, Caller};
use crate::ingest::Clock;
use crate::ServerError;

/// Default wait for `Consistency.min_offset`.
const DEFAULT_WAIT_MS: u32 = 5_000;
/// Longest wait for `Consistency.min_offset`.
const MAX_WAIT_MS: u32 = 30_000;
/// Default page size.
pub(crate) const DEFAULT_PAGE: usize = 50;
/// The longest reason a caller may give.
const MAX_REASON_CHARS: usize = 2000;

/// Whether reads are under the access rule and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The access rule decides and every read is logged (the hub always runs so).
    Enforced,
    /// No access rule and no access log: only for a benchmark's baseline, never served.
    BenchmarkBaseline,
}

/// The query core.
#[derive(Clone)]
pub struct Query {
    pub(crate) projection: Arc<Projection>,
    pub(crate) log: Arc<dyn Log>,
    pub(crate) clock: Clock,
    wake: Arc<tokio::sync::Notify>,
    break_glass_ms: i64,
    guard: Guard,
}

/// What a read is about, for the access log.
pub(crate) struct Asked<'a> {
    /// The call.
    pub method: &'static str,
    /// What was asked, in words.
    pub what: String,
    /// The reason the caller gave.
    pub reason: &'a str,
}

fn text<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn record_pb(r: &SubjectRecord) -> pb::PartnerRecord {
    pb::PartnerRecord {
        key: r.key.clone(),
        source: r.source.clone(),
        name: r.display_name.clone(),
        date_of_birth: text(r.dob),
        nhs_number: r.nhs_number.clone().unwrap_or_default(),
        upn: r.upn.clone().unwrap_or_default(),
        postcodes: r.postcodes.clone(),
    }
}

fn fields_pb(s: &Score) -> Vec<pb::FieldAgreement> {
    s.fields
        .iter()
        .map(|f| pb::FieldAgreement {
            field: f.field.to_string(),
            agreement: f.agreement.to_string(),
            weight: f.weight,
        })
        .collect()
}

fn person_pb(p: PersonView) -> pb::Person {
    pb::Person {
        person_id: p.person_id,
        family_id: p.family_id,
        name: p.name,
        date_of_birth: text(p.date_of_birth),
        records: p.records.iter().map(record_pb).collect(),
        links: p
            .links
            .into_iter()
            .map(|l| {
                let mut out = pb::LinkExplanation {
                    record_a: l.record_a,
                    record_b: l.record_b,
                    ..Default::default()
                };
                match l.why {
                    LinkWhy::SameNhsNumber => out.why = "same_nhs_number".into(),
                    LinkWhy::SameUpn => out.why = "same_upn".into(),
                    LinkWhy::Scored { score } => {
                        out.why = "scored".into();
                        out.score = score.total;
                        out.fields = fields_pb(&score);
                    }
                    LinkWhy::Confirmed {
                        decided_by,
                        reason,
                        decided_at,
                    } => {
                        out.why = "confirmed".into();
                        out.decided_by = decided_by;
                        out.reason = reason;
                        out.decided_at = decided_at.to_string();
                    }
                }
                out
            })
            .collect(),
        score: p.score.unwrap_or(0.0),
    }
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn family_pb(v: FamilyView) -> pb::FamilyView {
    pb::FamilyView {
        family_id: v.family_id,
        members: v
            .members
            .into_iter()
            .map(|m| pb::Member {
                person_id: m.person_id,
                name: m.name,
                date_of_birth: text(m.date_of_birth),
                age: m.age.unwrap_or(-1),
                sex: m.sex.map(|s| snake(&s)).unwrap_or_default(),
            })
            .collect(),
        partners: v
            .partners
            .into_iter()
            .map(|p| pb::Involvement {
                partner: p.partner,
                open: p.open,
                first_seen: p.first_seen.to_string(),
                last_seen: p.last_seen.to_string(),
            })
            .collect(),
        lead_practitioner: v.lead_practitioner.map(|l| pb::LeadPractitioner {
            practitioner_id: l.practitioner_id,
            name: l.name,
            organisation: l.organisation,
            since: l.since.to_string(),
        }),
        threshold_level: v.threshold_level.map(|t| snake(&t)).unwrap_or_default(),
        open_referrals: v
            .open_referrals
            .into_iter()
            .map(|r| pb::Referral {
                referral_id: r.referral_id,
                service: r.service,
                referred_by: r.referred_by,
                made_at: r.made_at.to_string(),
                state: r.state,
            })
            .collect(),
        flags: Some(pb::Flags {
            ppn_last_30_days: v.flags.ppn_last_30_days,
            excluded_this_term: v.flags.excluded_this_term,
            youth_justice_involvement: v.flags.youth_justice_involvement,
            repeat_referral_within_12_months: v.flags.repeat_referral_within_12_months,
        }),
        outcomes: v
            .outcomes
            .into_iter()
            .map(|o| pb::OutcomeScore {
                person_id: o.person_id,
                instrument: o.instrument,
                start: o.start,
                latest: o.latest,
                change: o.change,
            })
            .collect(),
        event_count: v.event_count as u64,
    }
}

fn candidate_pb(c: CandidateView) -> pb::MatchCandidate {
    let Candidate {
        id, score, status, ..
    } = c.candidate;
    let (status, decided_by) = match status {
        CandidateStatus::Open if c.open => ("open", String::new()),
        CandidateStatus::Open => ("superseded", String::new()),
        CandidateStatus::Confirmed { decided_by } => ("confirmed", decided_by),
        CandidateStatus::Rejected { decided_by } => ("rejected", decided_by),
    };
    pb::MatchCandidate {
        candidate_id: id,
        record_a: Some(record_pb(&c.record_a)),
        record_b: Some(record_pb(&c.record_b)),
        score: score.total,
        fields: fields_pb(&score),
        status: status.into(),
        decided_by,
    }
}

fn time_arg(s: &str, field: &str) -> Result<Option<Timestamp>, ServerError> {
    if s.is_empty() {
        return Ok(None);
    }
    Timestamp::parse(s)
        .map(Some)
        .map_err(|e| ServerError::BadRequest(format!("{field}: {e}")))
}

fn page_size(n: u32) -> usize {
    if n == 0 {
        DEFAULT_PAGE
    } else {
        n as usize
    }
}

impl Query {
    /// A query core over `projection`, appending to `log`; break-glass grants last
    /// `break_glass_minutes`.
    pub fn new(
        projection: Arc<Projection>,
        log: Arc<dyn Log>,
        clock: Clock,
        wake: Arc<tokio::sync::Notify>,
        break_glass_minutes: u32,
    ) -> Self {
        Query {
            projection,
            log,
            clock,
            wake,
            break_glass_ms: i64::from(break_glass_minutes) * 60_000,
            guard: Guard::Enforced,
        }
    }

    /// The same core with `guard` (benchmarks compare [`Guard::BenchmarkBaseline`] with the
    /// enforced rule).
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }

    /// Waits until the projection has applied the entry at `min_offset`.
    pub async fn wait_for(&self, c: Option<&pb::Consistency>) -> Result<(), ServerError> {
        let Some(c) = c.filter(|c| c.min_offset > 0) else {
            return Ok(());
        };
        let wait = match c.wait_ms {
            0 => DEFAULT_WAIT_MS,
            w => w.min(MAX_WAIT_MS),
        };
        let mut rx = self.projection.watch_applied();
        self.wake.notify_one();
        let target = c.min_offset + 1;
        let reached = tokio::time::timeout(
            Duration::from_millis(u64::from(wait)),
            rx.wait_for(|&applied| applied >= target),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ServerError::Unavailable(format!(
                "this hub has applied the log up to offset {} and did not reach offset {} within {wait} ms; retry, or ask another replica",
                self.projection.applied(),
                c.min_offset
            ))),
        }
    }

    /// Waits until the projection has applied everything in the log now (so that an access
    /// log read includes every access entry written before it).
    pub(crate) async fn wait_for_head(&self) -> Result<(), ServerError> {
        let head = self.log.head().next_offset;
        self.wait_for(Some(&pb::Consistency {
            min_offset: head.saturating_sub(1),
            wait_ms: DEFAULT_WAIT_MS,
        }))
        .await
    }

    /// Appends one of the hub's own records (under its own key); returns its offset once
    /// durable, and whether it was new.
    pub(crate) async fn append_hub(
        &self,
        rec: &Record,
        now: Timestamp,
    ) -> Result<(u64, bool), ServerError> {
        // The follower is not woken: access entries are applied with the next batch (at most
        // 50 ms later), in large batches rather than one lock each; callers that need the
        // entry applied wait for it ([`Query::wait_for`] wakes the follower).
        let outcomes = self.log.append(vec![NewEntry::of(rec, now.0)]).await?;
        match outcomes.first() {
            Some(AppendOutcome::Appended(o)) => Ok((*o, true)),
            Some(AppendOutcome::Duplicate(o)) => Ok((*o, false)),
            None => Err(ServerError::Unavailable("the log did not answer".into())),
        }
    }

    /// Appends a record and waits until the projection has applied it.
    pub(crate) async fn append_applied(
        &self,
        rec: &Record,
        now: Timestamp,
    ) -> Result<(u64, bool), ServerError> {
        let (offset, new) = self.append_hub(rec, now).await?;
        self.wait_for(Some(&pb::Consistency {
            min_offset: offset,
            wait_ms: DEFAULT_WAIT_MS,
        }))
        .await?;
        Ok((offset, new))
    }

    /// Writes an access entry and waits until it is durable. Returns its id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn log_access(
        &self,
        caller: &Caller,
        asked: &Asked<'_>,
        reading: &Reading,
        shown: u64,
        withheld: u64,
        break_glass_until: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(String, u64), ServerError> {
        if self.guard == Guard::BenchmarkBaseline {
            return Ok((String::new(), 0));
        }
        let access_id = format!("{:016x}{:016x}", now.0, rand::rng().random::<u64>());
        let outcome = if reading.refused {
            AccessOutcome::Refused
        } else if withheld > 0 {
            AccessOutcome::Filtered
        } else {
            AccessOutcome::Allowed
        };
        let rec = Record::Access(AccessEntry {
            access_id: access_id.clone(),
            at: now,
            user_id: caller.id.clone(),
            organisation: caller.organisation.clone(),
            roles: caller.roles.clone(),
            method: asked.method.to_string(),
            asked: asked.what.clone(),
            family_id: reading.family_id.clone(),
            person_ids: reading.person_ids.clone(),
            shown,
            withheld,
            outcome,
            standing: reading.standing.clone(),
            reason: asked.reason.to_string(),
            break_glass: reading.break_glass && break_glass_until.is_some(),
            break_glass_until,
        });
        let (offset, _) = self.append_hub(&rec, now).await?;
        Ok((access_id, offset))
    }

    /// Refuses and logs a call the caller's roles do not allow.
    pub(crate) async fn refuse_role(
        &self,
        caller: &Caller,
        asked: &Asked<'_>,
        needs: &str,
    ) -> ServerError {
        let reading = Reading {
            refused: true,
            standing: format!("role: {needs}"),
            ..Reading::default()
        };
        let now = (self.clock)();
        if let Err(e) = self
            .log_access(caller, asked, &reading, 0, 0, None, now)
            .await
        {
            return e;
        }
        warn!(caller = %caller.id, method = asked.method, "refused: {needs}");
        ServerError::PermissionDenied(format!("{} needs {needs}", asked.method))
    }

    /// Logs a read that failed before the access rule could decide (no such family or person,
    /// a bad argument), then passes the error on.
    async fn log_failed(&self, caller: &Caller, asked: &Asked<'_>, e: ServerError) -> ServerError {
        let reading = Reading {
            refused: true,
            standing: format!("not answered: {e}"),
            ..Reading::default()
        };
        let now = (self.clock)();
        match self
            .log_access(caller, asked, &reading, 0, 0, None, now)
            .await
        {
            Ok(_) => e,
            Err(log) => log,
        }
    }

    fn check_reason(reason: &str, field: &str) -> Result<(), ServerError> {
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(ServerError::BadRequest(format!(
                "{field} is longer than {MAX_REASON_CHARS} characters"
            )));
        }
        Ok(())
    }

    /// Reads as `caller` with the access rule, breaking glass if the caller asked to and has
    /// no standing. `read` runs the projection read for a given `ReadAs`.
    async fn guarded<T>(
        &self,
        caller: &Caller,
        asked: &Asked<'_>,
        break_glass_reason: &str,
        read: impl Fn(&ReadAs<'_>) -> Result<(T, Reading, u64, u64), ServerError>,
    ) -> Result<(T, Reading, pb::AccessDecision), ServerError> {
        let now = (self.clock)();
        let viewer: Viewer = caller.viewer();
        let as_viewer = |grant| match self.guard {
            Guard::Enforced => ReadAs::Viewer {
                viewer: &viewer,
                now,
                grant,
            },
            Guard::BenchmarkBaseline => ReadAs::Everything,
        };
        let first = read(&as_viewer(None));
        let (mut value, mut reading, mut shown, mut withheld) = match first {
            Ok(v) => v,
            Err(e) => return Err(self.log_failed(caller, asked, e).await),
        };
        let mut until = None;
        let glass = break_glass_reason.trim();
        if reading.refused && !glass.is_empty() && viewer.reads_families() {
            let grant = Timestamp(now.0 + self.break_glass_ms);
            (value, reading, shown, withheld) = read(&as_viewer(Some(grant)))?;
            until = Some(grant);
        }
        let reason = if until.is_some() {
            format!("BREAK GLASS: {glass}")
        } else {
            asked.reason.to_string()
        };
        let asked = Asked {
            method: asked.method,
            what: asked.what.clone(),
            reason: &reason,
        };
        let (access_id, offset) = self
            .log_access(caller, &asked, &reading, shown, withheld, until, now)
            .await?;
        if reading.refused {
            warn!(caller = %caller.id, family = %reading.family_id, method = asked.method, "read refused");
            return Err(ServerError::PermissionDenied(format!(
                "{}: {}",
                reading.family_id, reading.standing
            )));
        }
        if until.is_some() {
            warn!(caller = %caller.id, family = %reading.family_id, "break glass");
            // Later reads must find the grant.
            self.wait_for(Some(&pb::Consistency {
                min_offset: offset,
                wait_ms: DEFAULT_WAIT_MS,
            }))
            .await?;
        }
        let decision = pb::AccessDecision {
            standing: reading.standing.clone(),
            break_glass: reading.break_glass,
            withheld: reading
                .withheld_by()
                .into_iter()
                .map(|(w, n)| withheld_pb(w, n))
                .collect(),
            access_id,
        };
        Ok((value, reading, decision))
    }

    /// FindPerson by `caller`.
    pub async fn find_person(
        &self,
        caller: &Caller,
        req: pb::FindPersonRequest,
    ) -> Result<Vec<pb::Person>, ServerError> {
        use pb::find_person_request::By;
        let asked = Asked {
            method: "FindPerson",
            what: describe_find(&req),
            reason: &req.reason,
        };
        if self.guard == Guard::Enforced && !caller.viewer().reads_families() {
            return Err(self
                .refuse_role(caller, &asked, "the practitioner or safeguarding_lead role")
                .await);
        }
        Self::check_reason(&req.reason, "reason")?;
        let q = match req.by {
            Some(By::NhsNumber(n)) => PersonQuery::NhsNumber(n.replace(' ', "")),
            Some(By::Upn(u)) => PersonQuery::Upn(u.trim().to_uppercase()),
            Some(By::Local(l)) => PersonQuery::Local {
                source: l.source,
                local_id: l.local_id,
            },
            Some(By::PersonId(id)) => PersonQuery::Id(id),
            Some(By::Name(n)) => {
                if n.given_name.trim().is_empty() || n.family_name.trim().is_empty() {
                    return Err(ServerError::BadRequest(
                        "name search needs given_name, family_name and date_of_birth".into(),
                    ));
                }
                let dob = Date::parse(&n.date_of_birth)
                    .map_err(|e| ServerError::BadRequest(format!("name.date_of_birth: {e}")))?;
                PersonQuery::Name {
                    given: n.given_name,
                    family: n.family_name,
                    dob,
                }
            }
            None => {
                return Err(ServerError::BadRequest(
                    "say how to find the person: nhs_number, upn, local, name or person_id".into(),
                ))
            }
        };
        let mut found = self.projection.find_person(&q);
        let now = (self.clock)();
        if self.guard == Guard::Enforced {
            // Without standing to a person's family, a viewer learns that the person exists
            // and their ids, and only their own organisation's records: not which other
            // partners know them.
            let viewer = caller.viewer();
            let read = ReadAs::Viewer {
                viewer: &viewer,
                now,
                grant: None,
            };
            for p in &mut found {
                let stands = self
                    .projection
                    .standing(&Scope::Person(p.person_id.clone()), &read)
                    .is_ok_and(|r| !r.refused);
                if !stands {
                    p.records.retain(|r| r.source == caller.organisation);
                    p.links.clear();
                }
            }
        }
        let reading = Reading {
            family_id: found
                .first()
                .map(|p| p.family_id.clone())
                .unwrap_or_default(),
            person_ids: found.iter().map(|p| p.person_id.clone()).collect(),
            standing: "identity search".into(),
            ..Reading::default()
        };
        self.log_access(caller, &asked, &reading, found.len() as u64, 0, None, now)
            .await?;
        Ok(found.into_iter().map(person_pb).collect())
    }

    /// GetFamily, as seen by `caller`.
    pub async fn get_family(
        &self,
        caller: &Caller,
        req: pb::GetFamilyRequest,
    ) -> Result<pb::GetFamilyResponse, ServerError> {
        use pb::get_family_request::By;
        let (scope, what) = match &req.by {
            Some(By::FamilyId(id)) => (Scope::Family(id.clone()), format!("family view of {id}")),
            Some(By::PersonId(id)) => (
                Scope::Person(id.clone()),
                format!("family view of the family of {id}"),
            ),
            None => {
                return Err(ServerError::BadRequest(
                    "give a family_id or a member's person_id".into(),
                ))
            }
        };
        Self::check_reason(&req.reason, "reason")?;
        Self::check_reason(&req.break_glass_reason, "break_glass_reason")?;
        let asked = Asked {
            method: "GetFamily",
            what,
            reason: &req.reason,
        };
        // The family view folds events read from the log: decide access first (from memory),
        // log it, then read only the events the viewer may see.
        let (events, reading, access) = self
            .guarded(caller, &asked, &req.break_glass_reason, |read| {
                let (events, r) = self.projection.family_access(&scope, read)?;
                let withheld = r.withheld_no_consent + r.withheld_safeguarding;
                let shown = events.len() as u64;
                Ok((events, r, shown, withheld))
            })
            .await?;
        let now = (self.clock)();
        let view = self
            .projection
            .family_view_of(self.log.as_ref(), &scope, now, &events)
            .await?;
        Ok(pb::GetFamilyResponse {
            family: Some(family_pb(view)),
            withheld: reading.withheld_no_consent + reading.withheld_safeguarding,
            access: Some(access),
        })
    }

    /// GetTimeline, as seen by `caller`.
    pub async fn get_timeline(
        &self,
        caller: &Caller,
        req: pb::GetTimelineRequest,
    ) -> Result<pb::GetTimelineResponse, ServerError> {
        use pb::get_timeline_request::Scope as S;
        let (scope, what) = match &req.scope {
            Some(S::FamilyId(id)) => (Scope::Family(id.clone()), format!("timeline of {id}")),
            Some(S::PersonId(id)) => (Scope::Person(id.clone()), format!("timeline of {id}")),
            None => {
                return Err(ServerError::BadRequest(
                    "give a family_id or a person_id".into(),
                ))
            }
        };
        Self::check_reason(&req.reason, "reason")?;
        Self::check_reason(&req.break_glass_reason, "break_glass_reason")?;
        let filter = TimelineFilter {
            sources: req.sources.clone(),
            kinds: req.kinds.clone(),
            from: time_arg(&req.from, "from")?,
            to: time_arg(&req.to, "to")?,
        };
        let mut what = what;
        for (name, v) in [("sources", &req.sources), ("kinds", &req.kinds)] {
            if !v.is_empty() {
                what.push_str(&format!(", {name} {}", v.join(",")));
            }
        }
        if !req.cursor.is_empty() {
            what.push_str(", next page");
        }
        let asked = Asked {
            method: "GetTimeline",
            what,
            reason: &req.reason,
        };
        let size = page_size(req.page_size);
        let (mut page, _, access) = self
            .guarded(caller, &asked, &req.break_glass_reason, |read| {
                let page = self
                    .projection
                    .timeline(&scope, &filter, size, &req.cursor, read)?;
                let reading = page.reading.clone();
                let (shown, withheld) = (page.items.len() as u64, page.withheld);
                Ok((page, reading, shown, withheld))
            })
            .await?;
        // Decided and logged from memory; summaries not read before come from the log now.
        self.projection
            .open_summaries(self.log.as_ref(), &mut page)
            .await?;
        Ok(pb::GetTimelineResponse {
            items: page
                .items
                .into_iter()
                .map(|i| pb::TimelineItem {
                    offset: i.offset,
                    occurred_at: i.occurred_at.to_string(),
                    source: i.source,
                    event_id: i.event_id,
                    kind: i.kind,
                    summary: i.summary,
                    person_ids: i.person_ids,
                    erased: i.erased,
                })
                .collect(),
            next_cursor: page.next_cursor,
            withheld: page.withheld,
            total: page.total,
            access: Some(access),
        })
    }

    fn reviewer(&self, caller: &Caller) -> bool {
        self.guard == Guard::BenchmarkBaseline
            || caller.has_any(&[Role::SafeguardingLead, Role::Admin])
    }

    /// ListMatchCandidates (safeguarding leads and admins).
    pub async fn list_candidates(
        &self,
        caller: &Caller,
        req: pb::ListMatchCandidatesRequest,
    ) -> Result<pb::ListMatchCandidatesResponse, ServerError> {
        let asked = Asked {
            method: "ListMatchCandidates",
            what: "match candidates".into(),
            reason: "",
        };
        if !self.reviewer(caller) {
            return Err(self
                .refuse_role(caller, &asked, "the safeguarding_lead or admin role")
                .await);
        }
        let skip: usize = if req.cursor.is_empty() {
            0
        } else {
            req.cursor.parse().map_err(|_| {
                ServerError::BadRequest(format!(
                    "cursor {:?} is not one this hub issued",
                    req.cursor
                ))
            })?
        };
        let size = page_size(req.page_size).min(500);
        let all = self.projection.candidates(!req.include_resolved);
        let next = if all.len() > skip + size {
            (skip + size).to_string()
        } else {
            String::new()
        };
        let page: Vec<pb::MatchCandidate> = all
            .into_iter()
            .skip(skip)
            .take(size)
            .map(candidate_pb)
            .collect();
        let reading = Reading {
            standing: "match review".into(),
            ..Reading::default()
        };
        let now = (self.clock)();
        self.log_access(caller, &asked, &reading, page.len() as u64, 0, None, now)
            .await?;
        Ok(pb::ListMatchCandidatesResponse {
            candidates: page,
            next_cursor: next,
        })
    }

    /// ResolveMatch by `who` (safeguarding leads and admins): appends the decision and waits
    /// until it is applied.
    pub async fn resolve(
        &self,
        who: &Caller,
        req: pb::ResolveMatchRequest,
    ) -> Result<pb::ResolveMatchResponse, ServerError> {
        use pb::resolve_match_request::Target;
        if !self.reviewer(who) {
            let asked = Asked {
                method: "ResolveMatch",
                what: "resolve a match".into(),
                reason: &req.reason,
            };
            return Err(self
                .refuse_role(who, &asked, "the safeguarding_lead or admin role")
                .await);
        }
        let decision = match pb::MatchDecision::try_from(req.decision) {
            Ok(pb::MatchDecision::Confirm) => Decision::Confirm,
            Ok(pb::MatchDecision::Reject) => Decision::Reject,
            _ => {
                return Err(ServerError::BadRequest(
                    "decision must be MATCH_DECISION_CONFIRM or MATCH_DECISION_REJECT".into(),
                ))
            }
        };
        let reason = req.reason.trim().to_string();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ServerError::BadRequest(
                "reason is required (at most 2000 characters): say why these are or are not the same person".into(),
            ));
        }
        let (candidate_id, a, b) = match req.target {
            Some(Target::CandidateId(id)) => {
                let c = self
                    .projection
                    .candidate(&id)
                    .ok_or_else(|| ServerError::NotFound(format!("no match candidate {id:?}")))?;
                if c.candidate.status != CandidateStatus::Open {
                    return Err(ServerError::FailedPrecondition(format!(
                        "candidate {id} was already decided; to change it, decide the record pair ({} and {})",
                        c.record_a.key, c.record_b.key
                    )));
                }
                (Some(id), c.record_a.key, c.record_b.key)
            }
            Some(Target::Records(p)) => {
                for k in [&p.record_a, &p.record_b] {
                    if !self.projection.has_record(k) {
                        return Err(ServerError::NotFound(format!(
                            "no partner record {k:?} (keys look like source/local_id)"
                        )));
                    }
                }
                if p.record_a == p.record_b {
                    return Err(ServerError::BadRequest(
                        "record_a and record_b are the same record".into(),
                    ));
                }
                (None, p.record_a, p.record_b)
            }
            None => {
                return Err(ServerError::BadRequest(
                    "give a candidate_id or a pair of records".into(),
                ))
            }
        };
        let now = (self.clock)();
        let decision_id = format!("decision-{:016x}", rand::rng().random::<u64>());
        let rec = Record::MatchDecision(MatchDecision {
            decision_id: decision_id.clone(),
            candidate_id,
            record_a: a,
            record_b: b,
            decision,
            decided_by: who.id.clone(),
            reason,
            decided_at: now,
        });
        let (offset, _) = self.append_applied(&rec, now).await?;
        info!(by = %who.id, %decision_id, offset, "match decision recorded");
        Ok(pb::ResolveMatchResponse {
            offset,
            decision_id,
        })
    }
}

fn describe_find(req: &pb::FindPersonRequest) -> String {
    use pb::find_person_request::By;
    match &req.by {
        Some(By::NhsNumber(_)) => "find person by NHS number".into(),
        Some(By::Upn(_)) => "find person by UPN".into(),
        Some(By::Local(l)) => format!("find person by {} local id", l.source),
        Some(By::Name(_)) => "find person by name and date of birth".into(),
        Some(By::PersonId(id)) => format!("find person {id}"),
        None => "find person".into(),
    }
}

/// A withheld reason for the response.
pub(crate) fn withheld_pb(w: Withheld, count: u64) -> pb::WithheldReason {
    pb::WithheldReason {
        reason: w.name().into(),
        explanation: w.explain().into(),
        count,
    }
}

/// The gRPC adapter of [`Query`].
pub struct QueryGrpc {
    query: Query,
    auth: Arc<dyn Authenticator>,
}

/// Authenticates a request, or answers UNAUTHENTICATED.
pub(crate) fn authenticate<T>(
    auth: &dyn Authenticator,
    req: &Request<T>,
) -> Result<Caller, Status> {
    auth.caller(req.metadata(), req.extensions()).map_err(|e| {
        warn!(error = %e, "unauthenticated call");
        Status::unauthenticated(e.to_string())
    })
}

impl QueryGrpc {
    /// Serves `query` to callers `auth` recognises.
    pub fn new(query: Query, auth: Arc<dyn Authenticator>) -> Self {
        QueryGrpc { query, auth }
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryGrpc {
    async fn find_person(
        &self,
        request: Request<pb::FindPersonRequest>,
    ) -> Result<Response<pb::FindPersonResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        let persons = self.query.find_person(&caller, req).await?;
        Ok(Response::new(pb::FindPersonResponse { persons }))
    }

    async fn get_family(
        &self,
        request: Request<pb::GetFamilyRequest>,
    ) -> Result<Response<pb::GetFamilyResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        Ok(Response::new(self.query.get_family(&caller, req).await?))
    }

    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        Ok(Response::new(self.query.get_timeline(&caller, req).await?))
    }

    async fn list_match_candidates(
        &self,
        request: Request<pb::ListMatchCandidatesRequest>,
    ) -> Result<Response<pb::ListMatchCandidatesResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        Ok(Response::new(
            self.query
                .list_candidates(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn resolve_match(
        &self,
        request: Request<pb::ResolveMatchRequest>,
    ) -> Result<Response<pb::ResolveMatchResponse>, Status> {
        let who = authenticate(self.auth.as_ref(), &request)?;
        Ok(Response::new(
            self.query.resolve(&who, request.into_inner()).await?,
        ))
    }
}
