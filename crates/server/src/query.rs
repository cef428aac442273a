//! Queries: persons, families, timelines and match review, answered from the projections.
//!
//! Every event a query returns passes one check, [`Policy::visible`], between the projection
//! and the response; what it withholds is counted in the answer, never silently dropped. The
//! policy here admits every authenticated caller; consent and access rules replace it.
//! [`QueryGrpc`] is the gRPC adapter: authenticate, wait for the requested log offset to be
//! applied (read-your-writes), ask the projection, convert.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tellonce_domain::identity::{
    Candidate, CandidateStatus, Decision, LinkWhy, MatchDecision, Score, SubjectRecord,
};
use tellonce_domain::record::HUB_SOURCE;
use tellonce_domain::view::FamilyView;
use tellonce_domain::{Date, Record, Timestamp};
use tellonce_log::{AppendOutcome, Log, NewEntry};
use tellonce_projection::{
    CandidateView, EventMeta, PersonQuery, PersonView, Projection, Scope, TimelineFilter,
};
use tellonce_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::auth::{Authenticator, Partner};
use crate::ingest::Clock;
use crate::ServerError;

/// Default wait for `Consistency.min_offset`.
const DEFAULT_WAIT_MS: u32 = 5_000;
/// Longest wait for `Consistency.min_offset`.
const MAX_WAIT_MS: u32 = 30_000;
/// Default page size.
const DEFAULT_PAGE: usize = 50;

/// Decides, for every event, whether a viewer may see it.
pub trait Policy: Send + Sync + 'static {
    /// Whether `viewer` may see the event described by `event`.
    fn visible(&self, viewer: &Partner, event: &EventMeta) -> bool;
}

/// Every authenticated caller sees every event (until consent and access rules are in).
#[derive(Debug, Default)]
pub struct AllowAuthenticated;

impl Policy for AllowAuthenticated {
    fn visible(&self, _viewer: &Partner, _event: &EventMeta) -> bool {
        true
    }
}

/// The query core.
#[derive(Clone)]
pub struct Query {
    projection: Arc<Projection>,
    log: Arc<dyn Log>,
    policy: Arc<dyn Policy>,
    clock: Clock,
    wake: Arc<tokio::sync::Notify>,
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
            field: f.field.clone(),
            agreement: f.agreement.clone(),
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
    /// A query core over `projection`, appending decisions to `log`.
    pub fn new(
        projection: Arc<Projection>,
        log: Arc<dyn Log>,
        policy: Arc<dyn Policy>,
        clock: Clock,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        Query {
            projection,
            log,
            policy,
            clock,
            wake,
        }
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

    /// FindPerson.
    pub fn find_person(&self, req: pb::FindPersonRequest) -> Result<Vec<pb::Person>, ServerError> {
        use pb::find_person_request::By;
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
        Ok(self
            .projection
            .find_person(&q)
            .into_iter()
            .map(person_pb)
            .collect())
    }

    /// GetFamily, as seen by `viewer`.
    pub async fn get_family(
        &self,
        viewer: &Partner,
        req: pb::GetFamilyRequest,
    ) -> Result<pb::GetFamilyResponse, ServerError> {
        use pb::get_family_request::By;
        let scope = match req.by {
            Some(By::FamilyId(id)) => Scope::Family(id),
            Some(By::PersonId(id)) => Scope::Person(id),
            None => {
                return Err(ServerError::BadRequest(
                    "give a family_id or a member's person_id".into(),
                ))
            }
        };
        let visible = |m: &EventMeta| self.policy.visible(viewer, m);
        let (view, withheld) = self
            .projection
            .family(self.log.as_ref(), &scope, (self.clock)(), &visible)
            .await?;
        Ok(pb::GetFamilyResponse {
            family: Some(family_pb(view)),
            withheld,
        })
    }

    /// GetTimeline, as seen by `viewer`.
    pub fn get_timeline(
        &self,
        viewer: &Partner,
        req: pb::GetTimelineRequest,
    ) -> Result<pb::GetTimelineResponse, ServerError> {
        use pb::get_timeline_request::Scope as S;
        let scope = match req.scope {
            Some(S::FamilyId(id)) => Scope::Family(id),
            Some(S::PersonId(id)) => Scope::Person(id),
            None => {
                return Err(ServerError::BadRequest(
                    "give a family_id or a person_id".into(),
                ))
            }
        };
        let filter = TimelineFilter {
            sources: req.sources,
            kinds: req.kinds,
            from: time_arg(&req.from, "from")?,
            to: time_arg(&req.to, "to")?,
        };
        let visible = |m: &EventMeta| self.policy.visible(viewer, m);
        let page = self.projection.timeline(
            &scope,
            &filter,
            page_size(req.page_size),
            &req.cursor,
            &visible,
        )?;
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
                })
                .collect(),
            next_cursor: page.next_cursor,
            withheld: page.withheld,
            total: page.total,
        })
    }

    /// ListMatchCandidates.
    pub fn list_candidates(
        &self,
        req: pb::ListMatchCandidatesRequest,
    ) -> Result<pb::ListMatchCandidatesResponse, ServerError> {
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
        Ok(pb::ListMatchCandidatesResponse {
            candidates: all
                .into_iter()
                .skip(skip)
                .take(size)
                .map(candidate_pb)
                .collect(),
            next_cursor: next,
        })
    }

    /// ResolveMatch by `who`: appends the decision and waits until it is applied.
    pub async fn resolve(
        &self,
        who: &Partner,
        req: pb::ResolveMatchRequest,
    ) -> Result<pb::ResolveMatchResponse, ServerError> {
        use pb::resolve_match_request::Target;
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
        if reason.is_empty() || reason.chars().count() > 2000 {
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
        let outcomes = self
            .log
            .append(vec![NewEntry {
                source: HUB_SOURCE.into(),
                id: decision_id.clone(),
                recorded_at_ms: now.0,
                body: rec.encode(),
            }])
            .await?;
        let offset = match outcomes.first() {
            Some(AppendOutcome::Appended(o)) | Some(AppendOutcome::Duplicate(o)) => *o,
            None => return Err(ServerError::Unavailable("the log did not answer".into())),
        };
        info!(by = %who.id, %decision_id, offset, "match decision recorded");
        self.wait_for(Some(&pb::Consistency {
            min_offset: offset,
            wait_ms: DEFAULT_WAIT_MS,
        }))
        .await?;
        Ok(pb::ResolveMatchResponse {
            offset,
            decision_id,
        })
    }
}

/// The gRPC adapter of [`Query`].
pub struct QueryGrpc {
    query: Query,
    auth: Arc<dyn Authenticator>,
}

impl QueryGrpc {
    /// Serves `query` to callers `auth` recognises.
    pub fn new(query: Query, auth: Arc<dyn Authenticator>) -> Self {
        QueryGrpc { query, auth }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Partner, Status> {
        self.auth
            .partner(req.metadata(), req.extensions())
            .map_err(|e| {
                warn!(error = %e, "unauthenticated query");
                Status::unauthenticated(e.to_string())
            })
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryGrpc {
    async fn find_person(
        &self,
        request: Request<pb::FindPersonRequest>,
    ) -> Result<Response<pb::FindPersonResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        let persons = self.query.find_person(req)?;
        Ok(Response::new(pb::FindPersonResponse { persons }))
    }

    async fn get_family(
        &self,
        request: Request<pb::GetFamilyRequest>,
    ) -> Result<Response<pb::GetFamilyResponse>, Status> {
        let viewer = self.caller(&request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        Ok(Response::new(self.query.get_family(&viewer, req).await?))
    }

    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        let viewer = self.caller(&request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        Ok(Response::new(self.query.get_timeline(&viewer, req)?))
    }

    async fn list_match_candidates(
        &self,
        request: Request<pb::ListMatchCandidatesRequest>,
    ) -> Result<Response<pb::ListMatchCandidatesResponse>, Status> {
        self.caller(&request)?;
        Ok(Response::new(
            self.query.list_candidates(request.into_inner())?,
        ))
    }

    async fn resolve_match(
        &self,
        request: Request<pb::ResolveMatchRequest>,
    ) -> Result<Response<pb::ResolveMatchResponse>, Status> {
        let who = self.caller(&request)?;
        Ok(Response::new(
            self.query.resolve(&who, request.into_inner()).await?,
        ))
    }
}
