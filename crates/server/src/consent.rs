//! Consent, sharing decisions and the access log over gRPC.
//!
//! [`ConsentGrpc`] records consents, withdrawals and sharing decisions as log entries (each
//! call waits until the projection has applied its entry, so the next read or publish sees
//! it) and lists a family's consents to people with a relationship to it. [`AccessLogGrpc`]
//! serves the access log to the data protection officer, auditors and admins, and the
//! family's transparency report ("who looked at our records, when, and why") to them and to
//! practitioners with a relationship to the family. Reads here are access-logged too.

use rand::Rng;
use tellonce_domain::access::{
    AccessEntry, AccessOutcome, Category, ConsentGiven, ConsentGiver, ConsentWithdrawn, Grant,
    Role, SharingDecision,
};
use tellonce_domain::validate::{check_consent, check_sharing_decision, check_withdrawal};
use tellonce_domain::{Date, Record, Timestamp};
use tellonce_projection::{ReadAs, Reading, Scope};
use tellonce_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::{Authenticator, Caller, CallerKind};
use crate::erasure::Eraser;
use crate::query::{authenticate, Asked, Query, DEFAULT_PAGE};
use crate::ServerError;
use tellonce_domain::seal::ErasureReason;

/// Roles that read the whole access log.
const LOG_READERS: [Role; 3] = [Role::Dpo, Role::Auditor, Role::Admin];
/// The most rows a transparency report shows.
const MAX_REPORT_ROWS: usize = 10_000;

fn bad(e: tellonce_domain::ValidationError) -> ServerError {
    ServerError::BadRequest(e.to_string())
}

fn date_arg(s: &str, field: &str) -> Result<Option<Date>, ServerError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    Date::parse(s.trim())
        .map(Some)
        .map_err(|e| ServerError::BadRequest(format!("{field}: {e}")))
}

fn categories(names: &[String], field: &str) -> Result<Vec<Category>, ServerError> {
    names
        .iter()
        .map(|n| {
            Category::parse(n.trim()).ok_or_else(|| {
                ServerError::BadRequest(format!(
                    "{field}: {n:?} is not a category; use education, health, police, youth_justice, social_care or early_help"
                ))
            })
        })
        .collect()
}

fn scope_of(family_id: Option<String>, person_id: Option<String>) -> Result<Scope, ServerError> {
    match (family_id, person_id) {
        (Some(f), _) => Ok(Scope::Family(f)),
        (None, Some(p)) => Ok(Scope::Person(p)),
        (None, None) => Err(ServerError::BadRequest(
            "give a family_id or a member's person_id".into(),
        )),
    }
}

fn status_of(c: &ConsentGiven, withdrawn: Option<Timestamp>, now: Timestamp) -> &'static str {
    let today = Date::of(now);
    if withdrawn.is_some_and(|w| w <= now) {
        "withdrawn"
    } else if c.given_on > today {
        "not_yet_given"
    } else if c.expires_on.is_some_and(|e| e < today) {
        "expired"
    } else {
        "active"
    }
}

fn consent_pb(c: ConsentGiven, withdrawn: Option<Timestamp>, now: Timestamp) -> pb::Consent {
    let status = status_of(&c, withdrawn, now).to_string();
    pb::Consent {
        consent_id: c.consent_id,
        given_by: c.given_by,
        giver: match c.giver {
            ConsentGiver::YoungPerson => "young_person".into(),
            ConsentGiver::ParentalResponsibility => "parental_responsibility".into(),
        },
        person_ids: c.persons,
        records: c.records,
        scope: c
            .grants
            .into_iter()
            .map(|g| pb::ConsentScope {
                partners: g.partners,
                categories: g.categories.iter().map(|c| c.name().to_string()).collect(),
            })
            .collect(),
        purpose: c.purpose,
        given_on: c.given_on.to_string(),
        review_on: c.review_on.map(|d| d.to_string()).unwrap_or_default(),
        expires_on: c.expires_on.map(|d| d.to_string()).unwrap_or_default(),
        recorded_by: c.recorded_by,
        organisation: c.organisation,
        recorded_at: c.recorded_at.to_string(),
        status,
        withdrawn_from: withdrawn.map(|w| w.to_string()).unwrap_or_default(),
    }
}

fn sharing_pb(d: SharingDecision) -> pb::SharingDecision {
    pb::SharingDecision {
        decision_id: d.decision_id,
        family_id: d.family_id,
        person_ids: d.person_ids,
        share: d.share,
        with_partners: d.with_partners,
        categories: d.categories.iter().map(|c| c.name().to_string()).collect(),
        reason: d.reason,
        decided_by: d.decided_by,
        organisation: d.organisation,
        decided_at: d.decided_at.to_string(),
    }
}

fn entry_pb(offset: u64, a: AccessEntry) -> pb::AccessLogEntry {
    pb::AccessLogEntry {
        offset,
        access_id: a.access_id,
        at: a.at.to_string(),
        user_id: a.user_id,
        organisation: a.organisation,
        roles: a.roles.iter().map(|r| r.name().to_string()).collect(),
        method: a.method,
        asked: a.asked,
        family_id: a.family_id,
        person_ids: a.person_ids,
        shown: a.shown,
        withheld: a.withheld,
        outcome: outcome_name(a.outcome).into(),
        standing: a.standing,
        reason: a.reason,
        break_glass: a.break_glass,
        break_glass_until: a
            .break_glass_until
            .map(|t| t.to_string())
            .unwrap_or_default(),
    }
}

fn outcome_name(o: AccessOutcome) -> &'static str {
    match o {
        AccessOutcome::Allowed => "allowed",
        AccessOutcome::Filtered => "filtered",
        AccessOutcome::Refused => "refused",
    }
}

/// Whether a caller may record consents and decisions: partner systems and practitioners.
fn records_consent(c: &Caller) -> bool {
    c.kind == CallerKind::System || c.has_any(&[Role::Practitioner, Role::SafeguardingLead])
}

/// The gRPC adapter for consents and sharing decisions.
pub struct ConsentGrpc {
    query: Query,
    auth: std::sync::Arc<dyn Authenticator>,
}

impl ConsentGrpc {
    /// Serves consent calls over the query core.
    pub fn new(query: Query, auth: std::sync::Arc<dyn Authenticator>) -> Self {
        ConsentGrpc { query, auth }
    }

    async fn give(
        &self,
        caller: &Caller,
        r: pb::GiveConsentRequest,
    ) -> Result<pb::GiveConsentResponse, ServerError> {
        let q = &self.query;
        if !records_consent(caller) {
            return Err(ServerError::PermissionDenied(
                "recording consent needs a partner system's credential or the practitioner role"
                    .into(),
            ));
        }
        let now = (q.clock)();
        let giver = match r.giver.trim() {
            "young_person" => ConsentGiver::YoungPerson,
            "parental_responsibility" | "" => ConsentGiver::ParentalResponsibility,
            g => {
                return Err(ServerError::BadRequest(format!(
                    "giver {g:?}: use young_person or parental_responsibility"
                )))
            }
        };
        let mut records = q.projection.person_record_keys(&r.person_ids)?;
        records.extend(r.records.iter().map(|k| k.trim().to_string()));
        records.sort();
        records.dedup();
        let grants = r
            .scope
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(Grant {
                    partners: s.partners.iter().map(|p| p.trim().to_string()).collect(),
                    categories: categories(&s.categories, &format!("scope[{i}].categories"))?,
                })
            })
            .collect::<Result<Vec<_>, ServerError>>()?;
        let consent = ConsentGiven {
            consent_id: r.consent_id.trim().to_string(),
            given_by: r.given_by.trim().to_string(),
            giver,
            persons: r.person_ids.clone(),
            records,
            grants,
            purpose: r.purpose.trim().to_string(),
            given_on: date_arg(&r.given_on, "given_on")?.unwrap_or(Date::of(now)),
            review_on: date_arg(&r.review_on, "review_on")?,
            expires_on: date_arg(&r.expires_on, "expires_on")?,
            recorded_by: caller.id.clone(),
            organisation: caller.organisation.clone(),
            recorded_at: now,
        };
        check_consent(&consent, Date::of(now)).map_err(bad)?;
        if let Some((held, _)) = q.projection.consent(&consent.consent_id) {
            let same = ConsentGiven {
                recorded_by: held.recorded_by.clone(),
                organisation: held.organisation.clone(),
                recorded_at: held.recorded_at,
                ..consent.clone()
            };
            if same != held {
                return Err(ServerError::AlreadyExists(format!(
                    "consent {:?} is already recorded with different content; choose another consent_id",
                    consent.consent_id
                )));
            }
        }
        let records = consent.records.clone();
        let consent_id = consent.consent_id.clone();
        let (offset, new) = q
            .append_applied(&Record::ConsentGiven(consent), now)
            .await?;
        if new {
            info!(by = %caller.id, %consent_id, offset, "consent recorded");
        }
        Ok(pb::GiveConsentResponse {
            consent_id,
            offset,
            records,
        })
    }

    async fn withdraw(
        &self,
        caller: &Caller,
        r: pb::WithdrawConsentRequest,
    ) -> Result<pb::WithdrawConsentResponse, ServerError> {
        let q = &self.query;
        if !records_consent(caller) {
            return Err(ServerError::PermissionDenied(
                "withdrawing consent needs a partner system's credential or the practitioner role"
                    .into(),
            ));
        }
        let consent_id = r.consent_id.trim().to_string();
        if q.projection.consent(&consent_id).is_none() {
            return Err(ServerError::NotFound(format!("no consent {consent_id:?}")));
        }
        let now = (q.clock)();
        let effective_from = if r.effective_from.trim().is_empty() {
            now
        } else {
            Timestamp::parse(r.effective_from.trim())
                .map_err(|e| ServerError::BadRequest(format!("effective_from: {e}")))?
        };
        let withdrawal_id = format!("withdrawal-{:016x}", rand::rng().random::<u64>());
        let w = ConsentWithdrawn {
            withdrawal_id: withdrawal_id.clone(),
            consent_id: consent_id.clone(),
            effective_from,
            reason: r.reason.trim().to_string(),
            recorded_by: caller.id.clone(),
            organisation: caller.organisation.clone(),
            recorded_at: now,
        };
        check_withdrawal(&w).map_err(bad)?;
        let (offset, _) = q.append_applied(&Record::ConsentWithdrawn(w), now).await?;
        info!(by = %caller.id, %consent_id, offset, "consent withdrawn");
        Ok(pb::WithdrawConsentResponse {
            withdrawal_id,
            offset,
        })
    }

    async fn list(
        &self,
        caller: &Caller,
        r: pb::ListConsentsRequest,
    ) -> Result<pb::ListConsentsResponse, ServerError> {
        use pb::list_consents_request::Scope as S;
        let q = &self.query;
        let scope = match r.scope {
            Some(S::FamilyId(f)) => scope_of(Some(f), None)?,
            Some(S::PersonId(p)) => scope_of(None, Some(p))?,
            None => scope_of(None, None)?,
        };
        let what = match &scope {
            Scope::Family(f) => format!("consents of {f}"),
            Scope::Person(p) => format!("consents of the family of {p}"),
        };
        let asked = Asked {
            method: "ListConsents",
            what,
            reason: &r.reason,
        };
        let now = (q.clock)();
        let viewer = caller.viewer();
        let reading = q.projection.standing(
            &scope,
            &ReadAs::Viewer {
                viewer: &viewer,
                now,
                grant: None,
            },
        )?;
        let (consents, decisions) = if reading.refused {
            (Vec::new(), Vec::new())
        } else {
            q.projection.family_consents(&scope)?
        };
        let shown = (consents.len() + decisions.len()) as u64;
        q.log_access(caller, &asked, &reading, shown, 0, None, now)
            .await?;
        if reading.refused {
            return Err(ServerError::PermissionDenied(format!(
                "{}: {}",
                reading.family_id, reading.standing
            )));
        }
        Ok(pb::ListConsentsResponse {
            consents: consents
                .into_iter()
                .map(|(c, w)| consent_pb(c, w, now))
                .collect(),
            decisions: decisions.into_iter().map(sharing_pb).collect(),
        })
    }

    async fn share(
        &self,
        caller: &Caller,
        r: pb::RecordSharingDecisionRequest,
    ) -> Result<pb::RecordSharingDecisionResponse, ServerError> {
        use pb::record_sharing_decision_request::Scope as S;
        let q = &self.query;
        if !caller.has_any(&[Role::Practitioner, Role::SafeguardingLead]) {
            return Err(ServerError::PermissionDenied(
                "sharing decisions are recorded by practitioners".into(),
            ));
        }
        let scope = match r.scope {
            Some(S::FamilyId(f)) => scope_of(Some(f), None)?,
            Some(S::PersonId(p)) => scope_of(None, Some(p))?,
            None => scope_of(None, None)?,
        };
        let (family_id, person_ids) = q.projection.family_members(&scope)?;
        let now = (q.clock)();
        let decision_id = format!("sharing-{:016x}", rand::rng().random::<u64>());
        let d = SharingDecision {
            decision_id: decision_id.clone(),
            family_id,
            person_ids,
            share: r.share,
            with_partners: r
                .with_partners
                .iter()
                .map(|p| p.trim().to_string())
                .collect(),
            categories: categories(&r.categories, "categories")?,
            reason: r.reason.trim().to_string(),
            decided_by: caller.id.clone(),
            organisation: caller.organisation.clone(),
            decided_at: now,
        };
        check_sharing_decision(&d).map_err(bad)?;
        let (offset, _) = q.append_applied(&Record::SharingDecision(d), now).await?;
        Ok(pb::RecordSharingDecisionResponse {
            decision_id,
            offset,
        })
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentGrpc {
    async fn give_consent(
        &self,
        request: Request<pb::GiveConsentRequest>,
    ) -> Result<Response<pb::GiveConsentResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        Ok(Response::new(self.give(&caller, req).await?))
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        Ok(Response::new(
            self.withdraw(&caller, request.into_inner()).await?,
        ))
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        Ok(Response::new(self.list(&caller, req).await?))
    }

    async fn record_sharing_decision(
        &self,
        request: Request<pb::RecordSharingDecisionRequest>,
    ) -> Result<Response<pb::RecordSharingDecisionResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        Ok(Response::new(
            self.share(&caller, request.into_inner()).await?,
        ))
    }
}

/// The gRPC adapter for the access log.
pub struct AccessLogGrpc {
    query: Query,
    auth: std::sync::Arc<dyn Authenticator>,
    eraser: Option<Eraser>,
}

impl AccessLogGrpc {
    /// Serves the access log over the query core.
    pub fn new(query: Query, auth: std::sync::Arc<dyn Authenticator>) -> Self {
        AccessLogGrpc {
            query,
            auth,
            eraser: None,
        }
    }

    /// Serves EraseSubject with `eraser` (without one, it is refused).
    pub fn with_eraser(mut self, eraser: Eraser) -> Self {
        self.eraser = Some(eraser);
        self
    }

    async fn erase(
        &self,
        caller: &Caller,
        r: pb::EraseSubjectRequest,
    ) -> Result<pb::EraseSubjectResponse, ServerError> {
        let q = &self.query;
        let person_id = r.person_id.trim().to_string();
        if !caller.has_any(&[Role::Dpo]) {
            let asked = Asked {
                method: "EraseSubject",
                what: format!("erase {person_id}"),
                reason: r.note.trim(),
            };
            return Err(q.refuse_role(caller, &asked, "the dpo role").await);
        }
        for (field, v) in [
            ("person_id", &person_id),
            ("reference", &r.reference),
            ("note", &r.note),
        ] {
            if v.trim().is_empty() {
                return Err(ServerError::BadRequest(format!(
                    "{field} is required: say whose content to erase, the request's reference and why it was granted"
                )));
            }
        }
        let Some(eraser) = &self.eraser else {
            return Err(ServerError::FailedPrecondition(
                "this hub does not erase content".into(),
            ));
        };
        let reason = ErasureReason::Request {
            reference: r.reference.trim().into(),
            note: r.note.trim().into(),
        };
        let e = eraser.erase(&person_id, reason, &caller.id).await?;
        Ok(pb::EraseSubjectResponse {
            erasure_id: e.erasure_id,
            offset: e.offset,
            keys_destroyed: e.keys_destroyed,
            events_erased: e.events_erased,
            events_left: e.events_left,
        })
    }

    async fn access_log(
        &self,
        caller: &Caller,
        r: pb::GetAccessLogRequest,
    ) -> Result<pb::GetAccessLogResponse, ServerError> {
        let q = &self.query;
        let mut keys = Vec::new();
        let mut what = String::from("access log");
        for (prefix, v) in [("f", &r.family_id), ("p", &r.person_id), ("u", &r.user_id)] {
            if !v.trim().is_empty() {
                keys.push(format!("{prefix}/{}", v.trim()));
                what.push_str(&format!(" {prefix}={}", v.trim()));
            }
        }
        let asked = Asked {
            method: "GetAccessLog",
            what,
            reason: "",
        };
        if !caller.has_any(&LOG_READERS) {
            return Err(q
                .refuse_role(caller, &asked, "the dpo, auditor or admin role")
                .await);
        }
        let before = if r.cursor.is_empty() {
            None
        } else {
            Some(r.cursor.parse::<u64>().map_err(|_| {
                ServerError::BadRequest(format!("cursor {:?} is not one this hub issued", r.cursor))
            })?)
        };
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(500),
        };
        let offsets = q.projection.access_offsets(&keys, before, size + 1)?;
        let more = offsets.len() > size;
        let page = &offsets[..offsets.len().min(size)];
        let entries = q.projection.access_entries(q.log.as_ref(), page).await?;
        let next_cursor = match (more, page.last()) {
            (true, Some(o)) => o.to_string(),
            _ => String::new(),
        };
        let now = (q.clock)();
        let reading = Reading {
            family_id: r.family_id.trim().to_string(),
            standing: "access log reader".into(),
            ..Reading::default()
        };
        q.log_access(caller, &asked, &reading, entries.len() as u64, 0, None, now)
            .await?;
        Ok(pb::GetAccessLogResponse {
            entries: entries.into_iter().map(|(o, a)| entry_pb(o, a)).collect(),
            next_cursor,
        })
    }

    async fn transparency(
        &self,
        caller: &Caller,
        r: pb::GetTransparencyReportRequest,
    ) -> Result<pb::GetTransparencyReportResponse, ServerError> {
        use pb::get_transparency_report_request::Scope as S;
        let q = &self.query;
        let scope = match r.scope {
            Some(S::FamilyId(f)) => scope_of(Some(f), None)?,
            Some(S::PersonId(p)) => scope_of(None, Some(p))?,
            None => scope_of(None, None)?,
        };
        let now = (q.clock)();
        let viewer = caller.viewer();
        let mut reading = q.projection.standing(
            &scope,
            &ReadAs::Viewer {
                viewer: &viewer,
                now,
                grant: None,
            },
        )?;
        if reading.refused && caller.has_any(&LOG_READERS) {
            reading.refused = false;
            reading.standing = "access log reader".into();
        }
        let asked = Asked {
            method: "GetTransparencyReport",
            what: format!("transparency report of {}", reading.family_id),
            reason: "",
        };
        if reading.refused {
            q.log_access(caller, &asked, &reading, 0, 0, None, now)
                .await?;
            return Err(ServerError::PermissionDenied(format!(
                "{}: {}",
                reading.family_id, reading.standing
            )));
        }
        let mut keys = vec![format!("f/{}", reading.family_id)];
        keys.extend(reading.person_ids.iter().map(|p| format!("p/{p}")));
        let offsets = q.projection.access_offsets(&keys, None, MAX_REPORT_ROWS)?;
        let entries = q
            .projection
            .access_entries(q.log.as_ref(), &offsets)
            .await?;
        let rows: Vec<pb::TransparencyRow> = entries
            .into_iter()
            .map(|(_, a)| pb::TransparencyRow {
                at: a.at.to_string(),
                who: a.user_id,
                organisation: a.organisation,
                role: a
                    .roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(","),
                what: a.asked,
                reason: a.reason,
                outcome: match a.outcome {
                    AccessOutcome::Allowed => format!("shown {}", a.shown),
                    AccessOutcome::Filtered => {
                        format!("shown {}, {} withheld", a.shown, a.withheld)
                    }
                    AccessOutcome::Refused => "refused".into(),
                },
                break_glass: a.break_glass,
            })
            .collect();
        let text = report_text(&reading.family_id, now, &rows);
        q.log_access(caller, &asked, &reading, rows.len() as u64, 0, None, now)
            .await?;
        Ok(pb::GetTransparencyReportResponse {
            family_id: reading.family_id,
            rows,
            text,
        })
    }
}

impl AccessLogGrpc {
    async fn export(
        &self,
        caller: &Caller,
        r: pb::ExportSubjectRequest,
    ) -> Result<pb::ExportSubjectResponse, ServerError> {
        let q = &self.query;
        let person_id = r.person_id.trim().to_string();
        let asked = Asked {
            method: "ExportSubject",
            what: format!("subject access export of {person_id}"),
            reason: "subject access request",
        };
        if !caller.has_any(&[Role::Dpo]) {
            return Err(q.refuse_role(caller, &asked, "the dpo role").await);
        }
        let subject = q.projection.subject(q.log.as_ref(), &person_id).await?;
        let offsets = q
            .projection
            .access_offsets(&[format!("p/{person_id}")], None, usize::MAX)?;
        let accesses = q
            .projection
            .access_entries(q.log.as_ref(), &offsets)
            .await?;
        let now = (q.clock)();
        let doc = serde_json::json!({
            "person_id": person_id,
            "exported_at": now.to_string(),
            "exported_by": caller.id,
            "person": subject.person,
            "events": subject.events.iter().map(|(o, e)| serde_json::json!({"offset": o, "event": e})).collect::<Vec<_>>(),
            "erased_events": subject.erased.iter().map(|(o, m)| serde_json::json!({"offset": o, "erased": m})).collect::<Vec<_>>(),
            "consents": subject.consents.iter().map(|(c, w)| serde_json::json!({"consent": c, "withdrawn_from": w})).collect::<Vec<_>>(),
            "access_log": accesses.iter().map(|(o, a)| serde_json::json!({"offset": o, "access": a})).collect::<Vec<_>>(),
        });
        let reading = Reading {
            family_id: subject.person.family_id.clone(),
            person_ids: vec![person_id.clone()],
            standing: "data protection officer".into(),
            ..Reading::default()
        };
        q.log_access(
            caller,
            &asked,
            &reading,
            subject.events.len() as u64,
            0,
            None,
            now,
        )
        .await?;
        Ok(pb::ExportSubjectResponse {
            person_id,
            json: serde_json::to_string_pretty(&doc)
                .map_err(|e| ServerError::Unavailable(e.to_string()))?,
            events: subject.events.len() as u64,
            accesses: accesses.len() as u64,
            erased_events: subject.erased.len() as u64,
        })
    }
}

/// The transparency report as text a practitioner can print for the family.
pub fn report_text(family_id: &str, now: Timestamp, rows: &[pb::TransparencyRow]) -> String {
    let mut out = format!(
        "Who has looked at your family's records ({family_id})\nPrinted {}. Newest first.\n\n",
        now
    );
    if rows.is_empty() {
        out.push_str("No one has looked at these records.\n");
    }
    for r in rows {
        let when = r.at.get(..16).unwrap_or(&r.at).replace('T', " ");
        out.push_str(&format!(
            "{when}  {} ({}, {})\n    looked at: {}\n    reason: {}\n    result: {}{}\n",
            r.who,
            r.organisation,
            if r.role.is_empty() { "system" } else { &r.role },
            r.what,
            if r.reason.is_empty() {
                "(none given)"
            } else {
                &r.reason
            },
            r.outcome,
            if r.break_glass {
                "\n    EMERGENCY ACCESS (break glass): reviewed by the data protection officer"
            } else {
                ""
            }
        ));
    }
    out
}

#[tonic::async_trait]
impl pb::access_log_service_server::AccessLogService for AccessLogGrpc {
    async fn get_access_log(
        &self,
        request: Request<pb::GetAccessLogRequest>,
    ) -> Result<Response<pb::GetAccessLogResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        self.query.wait_for_head().await?;
        Ok(Response::new(self.access_log(&caller, req).await?))
    }

    async fn export_subject(
        &self,
        request: Request<pb::ExportSubjectRequest>,
    ) -> Result<Response<pb::ExportSubjectResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        self.query.wait_for_head().await?;
        Ok(Response::new(self.export(&caller, req).await?))
    }

    async fn erase_subject(
        &self,
        request: Request<pb::EraseSubjectRequest>,
    ) -> Result<Response<pb::EraseSubjectResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        Ok(Response::new(self.erase(&caller, req).await?))
    }

    async fn get_transparency_report(
        &self,
        request: Request<pb::GetTransparencyReportRequest>,
    ) -> Result<Response<pb::GetTransparencyReportResponse>, Status> {
        let caller = authenticate(self.auth.as_ref(), &request)?;
        let req = request.into_inner();
        self.query.wait_for(req.consistency.as_ref()).await?;
        self.query.wait_for_head().await?;
        Ok(Response::new(self.transparency(&caller, req).await?))
    }
}
