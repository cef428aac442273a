//! Conversion between the gRPC contract (`tellonce.v1`) and domain types: the server's edge.
//!
//! Proto to domain is where structural problems are found (an unset payload, an enum value this
//! hub does not know, a malformed timestamp); they come back as the same
//! [`ValidationError`] the domain's rules use, so every rejection looks alike to a partner.

use tellonce_domain::access::Category;
use tellonce_domain::event::{self as ev};
use tellonce_domain::{Date, Timestamp, ValidationError};
use tellonce_proto::v1 as pb;

macro_rules! enum_map {
    ($to:ident, $from:ident, $dm:ident :: $d:ident, $pm:ident :: $p:ident { $($dv:ident => $pv:ident),* $(,)? }) => {
        fn $to(v: $dm::$d) -> i32 {
            match v { $($dm::$d::$dv => $pm::$p::$pv as i32),* }
        }
        fn $from(v: i32) -> Option<$dm::$d> {
            match $pm::$p::try_from(v).ok()? {
                $($pm::$p::$pv => Some($dm::$d::$dv),)*
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }
    };
}

enum_map!(sex_to_pb, sex_from_pb, ev::Sex, pb::Sex {
    Female => Female, Male => Male, Other => Other, Unknown => Unknown,
});
enum_map!(role_to_pb, role_from_pb, ev::SubjectRole, pb::SubjectRole {
    Child => Child, ParentCarer => ParentCarer, Sibling => Sibling,
    AdultHouseholdMember => AdultHouseholdMember, Other => Other,
});
enum_map!(rel_to_pb, rel_from_pb, ev::RelationshipKind, pb::RelationshipKind {
    ParentCarerOf => ParentCarerOf, SiblingOf => SiblingOf, HouseholdMember => HouseholdMember,
});
enum_map!(level_to_pb, level_from_pb, ev::ThresholdLevel, pb::ThresholdLevel {
    Universal => Universal, EarlyHelp => EarlyHelp, TargetedEarlyHelp => TargetedEarlyHelp,
    Statutory => Statutory,
});
enum_map!(decision_to_pb, decision_from_pb, ev::ReferralDecision, pb::ReferralDecision {
    Accepted => Accepted, Declined => Declined,
});
enum_map!(ppn_to_pb, ppn_from_pb, ev::PpnIncidentType, pb::PpnIncidentType {
    DomesticAbuse => DomesticAbuse, MissingEpisode => MissingEpisode,
    ExploitationConcern => ExploitationConcern, ChildConcern => ChildConcern, Other => Other,
});
enum_map!(risk_to_pb, risk_from_pb, ev::RiskGrade, pb::RiskGrade {
    Standard => Standard, Medium => Medium, High => High,
});
enum_map!(excl_to_pb, excl_from_pb, ev::ExclusionKind, pb::ExclusionKind {
    FixedTerm => FixedTerm, Permanent => Permanent,
});
enum_map!(yj_to_pb, yj_from_pb, ev::YouthJusticeKind, pb::YouthJusticeKind {
    PreventionDiversion => PreventionDiversion, OutOfCourtDisposal => OutOfCourtDisposal,
    FirstTimeEntrant => FirstTimeEntrant,
});
enum_map!(instr_to_pb, instr_from_pb, ev::OutcomeInstrument, pb::OutcomeInstrument {
    Wemwbs => Wemwbs, OutcomeStar => OutcomeStar,
});
enum_map!(point_to_pb, point_from_pb, ev::MeasurePoint, pb::MeasurePoint {
    Start => Start, Review => Review, End => End,
});
enum_map!(closure_to_pb, closure_from_pb, ev::CaseClosureReason, pb::CaseClosureReason {
    NeedsMet => NeedsMet, SteppedUp => SteppedUp, SteppedDown => SteppedDown,
    Disengaged => Disengaged, Signposted => Signposted,
});

type Result<T> = std::result::Result<T, ValidationError>;

/// A required enum field: unset or unknown values are rejected.
fn required<T>(v: i32, from: fn(i32) -> Option<T>, field: &str) -> Result<T> {
    from(v).ok_or_else(|| {
        if v == 0 {
            ValidationError::invalid("missing_field", field, format!("{field} is required"))
        } else {
            ValidationError::invalid(
                "unknown_value",
                field,
                format!("{v} is not a value of {field} this hub knows"),
            )
        }
    })
}

/// An optional enum field: unset is `None`, unknown values are rejected.
fn optional<T>(v: i32, from: fn(i32) -> Option<T>, field: &str) -> Result<Option<T>> {
    if v == 0 {
        Ok(None)
    } else {
        required(v, from, field).map(Some)
    }
}

fn opt(s: String) -> Option<String> {
    if s.trim().is_empty() {
        None
    } else {
        Some(s)
    }
}

fn date(s: &str, field: &str) -> Result<Option<Date>> {
    if s.is_empty() {
        return Ok(None);
    }
    Date::parse(s)
        .map(Some)
        .map_err(|e| ValidationError::invalid("bad_date", field, e.0))
}

/// Converts a published event to the domain.
pub fn event_from_pb(e: pb::Event) -> Result<ev::Event> {
    if e.occurred_at.is_empty() {
        return Err(ValidationError::invalid(
            "missing_field",
            "occurred_at",
            "occurred_at is required (RFC 3339, e.g. 2026-03-04T09:30:00Z)",
        ));
    }
    let occurred_at = Timestamp::parse(&e.occurred_at)
        .map_err(|err| ValidationError::invalid("bad_timestamp", "occurred_at", err.0))?;
    let subjects = e
        .subjects
        .into_iter()
        .enumerate()
        .map(|(i, s)| subject_from_pb(s).map_err(|e| e.under(&format!("subjects[{i}]"))))
        .collect::<Result<Vec<_>>>()?;
    let relationships = e
        .relationships
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(ev::Relationship {
                from: r.from,
                to: r.to,
                kind: required(r.kind, rel_from_pb, "kind")
                    .map_err(|e| e.under(&format!("relationships[{i}]")))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let lawful_basis = e.lawful_basis.and_then(|b| b.basis).map(|b| match b {
        pb::lawful_basis::Basis::Consent(c) => ev::LawfulBasis::Consent {
            consent_reference: c.consent_reference,
        },
        pb::lawful_basis::Basis::Safeguarding(s) => ev::LawfulBasis::Safeguarding {
            statutory_basis: s.statutory_basis,
            reason: s.reason,
        },
    });
    let category = match e.category.trim() {
        "" => None,
        c => Some(Category::parse(c).ok_or_else(|| {
            ValidationError::invalid(
                "bad_category",
                "category",
                format!("{c:?} is not a category; use education, health, police, youth_justice, social_care or early_help"),
            )
        })?),
    };
    let payload = payload_from_pb(e.payload.ok_or_else(|| {
        ValidationError::invalid(
            "unknown_kind",
            "payload",
            "the event has no payload, or one of a kind this hub does not know (see tellonce.v1.Event.payload)",
        )
    })?)?;
    Ok(ev::Event {
        event_id: e.event_id,
        source: e.source,
        occurred_at,
        subjects,
        relationships,
        lawful_basis,
        category,
        payload,
    })
}

fn subject_from_pb(s: pb::Subject) -> Result<ev::Subject> {
    Ok(ev::Subject {
        local_id: opt(s.local_id),
        nhs_number: opt(s.nhs_number),
        upn: opt(s.upn),
        given_name: opt(s.given_name),
        middle_names: opt(s.middle_names),
        family_name: opt(s.family_name),
        date_of_birth: date(&s.date_of_birth, "date_of_birth")?,
        sex: optional(s.sex, sex_from_pb, "sex")?,
        address: s.address.map(|a| ev::Address {
            line1: a.line1,
            line2: a.line2,
            town: a.town,
            postcode: a.postcode,
        }),
        role: optional(s.role, role_from_pb, "role")?,
    })
}

fn payload_from_pb(p: pb::event::Payload) -> Result<ev::Payload> {
    use pb::event::Payload as P;
    Ok(match p {
        P::ReferralMade(r) => ev::Payload::ReferralMade {
            referral_id: r.referral_id,
            service: r.service,
            reason: r.reason,
            threshold_level: required(r.threshold_level, level_from_pb, "payload.threshold_level")?,
        },
        P::ReferralDecided(r) => ev::Payload::ReferralDecided {
            referral_id: r.referral_id,
            decision: required(r.decision, decision_from_pb, "payload.decision")?,
            reason: r.reason,
            feedback_sent: r.feedback_sent,
        },
        P::PublicProtectionNotification(p) => ev::Payload::PublicProtectionNotification {
            incident_type: required(p.incident_type, ppn_from_pb, "payload.incident_type")?,
            children_present: p.children_present,
            risk_grade: required(p.risk_grade, risk_from_pb, "payload.risk_grade")?,
            summary: p.summary,
        },
        P::AttendanceConcern(a) => ev::Payload::AttendanceConcern {
            attendance_percent: a.attendance_percent,
            term_start: date(&a.term_start, "payload.term_start")?,
            note: a.note,
        },
        P::Exclusion(x) => ev::Payload::Exclusion {
            exclusion_kind: required(x.kind, excl_from_pb, "payload.kind")?,
            days: x.days,
            reason: x.reason,
        },
        P::HealthContact(h) => ev::Payload::HealthContact {
            service: h.service,
            concern: h.concern,
        },
        P::YouthJusticeContact(y) => ev::Payload::YouthJusticeContact {
            contact_kind: required(y.kind, yj_from_pb, "payload.kind")?,
            note: y.note,
        },
        P::EarlyHelpAssessment(a) => ev::Payload::EarlyHelpAssessment {
            assessment_id: a.assessment_id,
            threshold_level: required(a.threshold_level, level_from_pb, "payload.threshold_level")?,
            summary: a.summary,
        },
        P::TeamAroundFamilyMeeting(m) => ev::Payload::TeamAroundFamilyMeeting {
            attendees: m.attendees,
            summary: m.summary,
        },
        P::LeadPractitionerAssigned(l) => ev::Payload::LeadPractitionerAssigned {
            practitioner_id: l.practitioner_id,
            practitioner_name: l.practitioner_name,
            organisation: l.organisation,
        },
        P::InterventionStarted(i) => ev::Payload::InterventionStarted {
            intervention_id: i.intervention_id,
            programme: i.programme,
            planned_weeks: i.planned_weeks,
        },
        P::InterventionEnded(i) => ev::Payload::InterventionEnded {
            intervention_id: i.intervention_id,
            outcome: i.outcome,
        },
        P::OutcomeMeasured(o) => ev::Payload::OutcomeMeasured {
            instrument: required(o.instrument, instr_from_pb, "payload.instrument")?,
            score: o.score,
            point: required(o.point, point_from_pb, "payload.point")?,
            intervention_id: o.intervention_id,
        },
        P::CaseClosed(c) => ev::Payload::CaseClosed {
            reason: required(c.reason, closure_from_pb, "payload.reason")?,
            note: c.note,
        },
    })
}

/// Converts a domain event to the contract (for clients such as `tellonce publish`).
pub fn event_to_pb(e: &ev::Event) -> pb::Event {
    pb::Event {
        event_id: e.event_id.clone(),
        source: e.source.clone(),
        occurred_at: e.occurred_at.to_string(),
        subjects: e.subjects.iter().map(subject_to_pb).collect(),
        relationships: e
            .relationships
            .iter()
            .map(|r| pb::Relationship {
                from: r.from,
                to: r.to,
                kind: rel_to_pb(r.kind),
            })
            .collect(),
        lawful_basis: e.lawful_basis.as_ref().map(|b| pb::LawfulBasis {
            basis: Some(match b {
                ev::LawfulBasis::Consent { consent_reference } => {
                    pb::lawful_basis::Basis::Consent(pb::ConsentBasis {
                        consent_reference: consent_reference.clone(),
                    })
                }
                ev::LawfulBasis::Safeguarding {
                    statutory_basis,
                    reason,
                } => pb::lawful_basis::Basis::Safeguarding(pb::SafeguardingBasis {
                    statutory_basis: statutory_basis.clone(),
                    reason: reason.clone(),
                }),
            }),
        }),
        category: e.category.map(|c| c.name().to_string()).unwrap_or_default(),
        payload: Some(payload_to_pb(&e.payload)),
    }
}

fn subject_to_pb(s: &ev::Subject) -> pb::Subject {
    let text = |o: &Option<String>| o.clone().unwrap_or_default();
    pb::Subject {
        local_id: text(&s.local_id),
        nhs_number: text(&s.nhs_number),
        upn: text(&s.upn),
        given_name: text(&s.given_name),
        middle_names: text(&s.middle_names),
        family_name: text(&s.family_name),
        date_of_birth: s.date_of_birth.map(|d| d.to_string()).unwrap_or_default(),
        sex: s.sex.map_or(0, sex_to_pb),
        address: s.address.as_ref().map(|a| pb::Address {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            town: a.town.clone(),
            postcode: a.postcode.clone(),
        }),
        role: s.role.map_or(0, role_to_pb),
    }
}

fn payload_to_pb(p: &ev::Payload) -> pb::event::Payload {
    use pb::event::Payload as P;
    match p.clone() {
        ev::Payload::ReferralMade {
            referral_id,
            service,
            reason,
            threshold_level,
        } => P::ReferralMade(pb::ReferralMade {
            referral_id,
            service,
            reason,
            threshold_level: level_to_pb(threshold_level),
        }),
        ev::Payload::ReferralDecided {
            referral_id,
            decision,
            reason,
            feedback_sent,
        } => P::ReferralDecided(pb::ReferralDecided {
            referral_id,
            decision: decision_to_pb(decision),
            reason,
            feedback_sent,
        }),
        ev::Payload::PublicProtectionNotification {
            incident_type,
            children_present,
            risk_grade,
            summary,
        } => P::PublicProtectionNotification(pb::PublicProtectionNotification {
            incident_type: ppn_to_pb(incident_type),
            children_present,
            risk_grade: risk_to_pb(risk_grade),
            summary,
        }),
        ev::Payload::AttendanceConcern {
            attendance_percent,
            term_start,
            note,
        } => P::AttendanceConcern(pb::AttendanceConcern {
            attendance_percent,
            term_start: term_start.map(|d| d.to_string()).unwrap_or_default(),
            note,
        }),
        ev::Payload::Exclusion {
            exclusion_kind,
            days,
            reason,
        } => P::Exclusion(pb::Exclusion {
            kind: excl_to_pb(exclusion_kind),
            days,
            reason,
        }),
        ev::Payload::HealthContact { service, concern } => {
            P::HealthContact(pb::HealthContact { service, concern })
        }
        ev::Payload::YouthJusticeContact { contact_kind, note } => {
            P::YouthJusticeContact(pb::YouthJusticeContact {
                kind: yj_to_pb(contact_kind),
                note,
            })
        }
        ev::Payload::EarlyHelpAssessment {
            assessment_id,
            threshold_level,
            summary,
        } => P::EarlyHelpAssessment(pb::EarlyHelpAssessment {
            assessment_id,
            threshold_level: level_to_pb(threshold_level),
            summary,
        }),
        ev::Payload::TeamAroundFamilyMeeting { attendees, summary } => {
            P::TeamAroundFamilyMeeting(pb::TeamAroundFamilyMeeting { attendees, summary })
        }
        ev::Payload::LeadPractitionerAssigned {
            practitioner_id,
            practitioner_name,
            organisation,
        } => P::LeadPractitionerAssigned(pb::LeadPractitionerAssigned {
            practitioner_id,
            practitioner_name,
            organisation,
        }),
        ev::Payload::InterventionStarted {
            intervention_id,
            programme,
            planned_weeks,
        } => P::InterventionStarted(pb::InterventionStarted {
            intervention_id,
            programme,
            planned_weeks,
        }),
        ev::Payload::InterventionEnded {
            intervention_id,
            outcome,
        } => P::InterventionEnded(pb::InterventionEnded {
            intervention_id,
            outcome,
        }),
        ev::Payload::OutcomeMeasured {
            instrument,
            score,
            point,
            intervention_id,
        } => P::OutcomeMeasured(pb::OutcomeMeasured {
            instrument: instr_to_pb(instrument),
            score,
            point: point_to_pb(point),
            intervention_id,
        }),
        ev::Payload::CaseClosed { reason, note } => P::CaseClosed(pb::CaseClosed {
            reason: closure_to_pb(reason),
            note,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_contract() {
        let e = tellonce_domain::sample::ppn("police", "x-1", 3, Timestamp(1_764_000_000_000));
        assert_eq!(event_from_pb(event_to_pb(&e)).unwrap(), e);
    }

    #[test]
    fn unknown_payload_and_enum_values_are_rejected() {
        let e = tellonce_domain::sample::ppn("police", "x-1", 3, Timestamp(1_764_000_000_000));
        let mut p = event_to_pb(&e);
        p.payload = None;
        assert_eq!(event_from_pb(p).unwrap_err().reason, "unknown_kind");
        let mut p = event_to_pb(&e);
        p.subjects[0].sex = 42;
        let err = event_from_pb(p).unwrap_err();
        assert_eq!(
            (err.reason, err.field.as_str()),
            ("unknown_value", "subjects[0].sex")
        );
        let mut p = event_to_pb(&e);
        p.occurred_at = "yesterday".into();
        assert_eq!(event_from_pb(p).unwrap_err().reason, "bad_timestamp");
    }
}
