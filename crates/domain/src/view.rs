//! What a practitioner sees: the family view folded from a family's events, and one readable
//! line per event for the timeline.
//!
//! [`family_view`] is a pure fold: the family's members (already linked) and its events, in
//! any order, and the time of the question go in; the view comes out. Ages and "in the last
//! 30 days" are relative to the `now` given, never a clock.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::{Event, Payload, ReferralDecision, Sex, ThresholdLevel, YouthJusticeKind};
use crate::time::{Date, Timestamp, MS_PER_DAY};

/// A family member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The person's id.
    pub person_id: String,
    /// Name as first recorded.
    pub name: String,
    /// Date of birth, if any partner gave one.
    pub date_of_birth: Option<Date>,
    /// Age in whole years at the time of the question.
    pub age: Option<i32>,
    /// Recorded sex.
    pub sex: Option<Sex>,
}

/// One event of the family, with the persons it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyEvent {
    /// Its log offset.
    pub offset: u64,
    /// The event.
    pub event: Event,
    /// The person id of each subject, in order.
    pub persons: Vec<String>,
}

/// A partner's involvement with the family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Involvement {
    /// The partner.
    pub partner: String,
    /// Open unless the partner's latest word was a case closure.
    pub open: bool,
    /// First event from this partner.
    pub first_seen: Timestamp,
    /// Latest event from this partner.
    pub last_seen: Timestamp,
}

/// The lead practitioner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lead {
    /// Practitioner id.
    pub practitioner_id: String,
    /// Name.
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Since when.
    pub since: Timestamp,
}

/// A referral and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referral {
    /// Referral id.
    pub referral_id: String,
    /// Service referred to.
    pub service: String,
    /// Who referred.
    pub referred_by: String,
    /// When.
    pub made_at: Timestamp,
    /// `awaiting_decision`, `accepted` or `declined`.
    pub state: String,
}

/// Flags a practitioner must not miss.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flags {
    /// Public Protection Notifications in the last 30 days.
    pub ppn_last_30_days: u32,
    /// An exclusion since the start of the current school term.
    pub excluded_this_term: bool,
    /// A youth justice contact in the last 12 months.
    pub youth_justice_involvement: bool,
    /// Two referrals to the same service within 12 months.
    pub repeat_referral_within_12_months: bool,
}

/// A person's outcome scores on one instrument.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The person measured.
    pub person_id: String,
    /// `wemwbs` or `outcome_star`.
    pub instrument: String,
    /// The first score (the start measure if any).
    pub start: f64,
    /// The latest score.
    pub latest: f64,
    /// `latest - start`.
    pub change: f64,
}

/// The single family view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FamilyView {
    /// The family's id.
    pub family_id: String,
    /// Members, in order of first appearance.
    pub members: Vec<Member>,
    /// Partners involved.
    pub partners: Vec<Involvement>,
    /// The current lead practitioner.
    pub lead_practitioner: Option<Lead>,
    /// The current threshold level (latest assessment or referral).
    pub threshold_level: Option<ThresholdLevel>,
    /// Referrals not declined and not followed by a case closure.
    pub open_referrals: Vec<Referral>,
    /// Flags.
    pub flags: Flags,
    /// Latest outcome scores with change from start.
    pub outcomes: Vec<Outcome>,
    /// Number of events.
    pub event_count: usize,
}

/// The start of the school term containing `d` (autumn from 1 September, spring from
/// 1 January, summer from 1 April).
pub fn term_start(d: Date) -> Date {
    let (month, year) = match d.month {
        9..=12 => (9, d.year),
        1..=3 => (1, d.year),
        _ => (4, d.year),
    };
    Date {
        year,
        month,
        day: 1,
    }
}

/// What one event adds to the family view: the part of its payload [`fold_family`] reads.
/// Small enough to keep in memory for every event of a family a practitioner opens.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewFact {
    /// A referral was made.
    ReferralMade {
        /// Referral id.
        referral_id: String,
        /// Service referred to.
        service: String,
        /// Threshold level it gives.
        threshold_level: ThresholdLevel,
    },
    /// A referral was accepted or declined.
    ReferralDecided {
        /// Referral id.
        referral_id: String,
        /// The decision.
        decision: ReferralDecision,
    },
    /// A Public Protection Notification.
    Ppn,
    /// An exclusion from school.
    Exclusion,
    /// A youth justice contact.
    YouthJustice,
    /// An early help assessment, with the threshold level it gives.
    Assessment(ThresholdLevel),
    /// A lead practitioner was assigned.
    Lead {
        /// Practitioner id.
        practitioner_id: String,
        /// Name.
        name: String,
        /// Organisation.
        organisation: String,
    },
    /// An outcome measure of the event's first subject.
    Outcome {
        /// `wemwbs` or `outcome_star`.
        instrument: &'static str,
        /// The score.
        score: f64,
        /// Whether it is the start measure.
        start: bool,
    },
    /// A partner closed its case.
    CaseClosed,
    /// Anything else: it counts, and keeps its partner involved.
    Other,
}

impl ViewFact {
    /// The fact of an event with this payload.
    pub fn of(p: &Payload) -> Self {
        match p {
            Payload::ReferralMade {
                referral_id,
                service,
                threshold_level,
                ..
            } => ViewFact::ReferralMade {
                referral_id: referral_id.clone(),
                service: service.clone(),
                threshold_level: *threshold_level,
            },
            Payload::ReferralDecided {
                referral_id,
                decision,
                ..
            } => ViewFact::ReferralDecided {
                referral_id: referral_id.clone(),
                decision: *decision,
            },
            Payload::PublicProtectionNotification { .. } => ViewFact::Ppn,
            Payload::Exclusion { .. } => ViewFact::Exclusion,
            Payload::YouthJusticeContact { contact_kind, .. } => {
                let _: YouthJusticeKind = *contact_kind;
                ViewFact::YouthJustice
            }
            Payload::EarlyHelpAssessment {
                threshold_level, ..
            } => ViewFact::Assessment(*threshold_level),
            Payload::LeadPractitionerAssigned {
                practitioner_id,
                practitioner_name,
                organisation,
            } => ViewFact::Lead {
                practitioner_id: practitioner_id.clone(),
                name: practitioner_name.clone(),
                organisation: organisation.clone(),
            },
            Payload::OutcomeMeasured {
                instrument,
                score,
                point,
                ..
            } => ViewFact::Outcome {
                instrument: match instrument {
                    crate::event::OutcomeInstrument::Wemwbs => "wemwbs",
                    crate::event::OutcomeInstrument::OutcomeStar => "outcome_star",
                },
                score: *score,
                start: *point == crate::event::MeasurePoint::Start,
            },
            Payload::CaseClosed { .. } => ViewFact::CaseClosed,
            _ => ViewFact::Other,
        }
    }

    /// The fact of an event of `kind` when its payload adds nothing to the fold, so the event
    /// need not be read: `None` for the kinds whose payload the fold reads (referrals and
    /// their decisions, assessments, lead practitioners, outcome measures) and for kinds
    /// this version does not know.
    pub fn of_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "public_protection_notification" => ViewFact::Ppn,
            "exclusion" => ViewFact::Exclusion,
            "youth_justice_contact" => ViewFact::YouthJustice,
            "case_closed" => ViewFact::CaseClosed,
            "attendance_concern"
            | "health_contact"
            | "team_around_family_meeting"
            | "intervention_started"
            | "intervention_ended" => ViewFact::Other,
            _ => return None,
        })
    }

    /// Whether the fold reads the person the event is about (only outcome measures do).
    pub fn names_person(&self) -> bool {
        matches!(self, ViewFact::Outcome { .. })
    }

    /// Roughly the bytes it holds, for a cache's budget.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                ViewFact::ReferralMade {
                    referral_id,
                    service,
                    ..
                } => referral_id.len() + service.len(),
                ViewFact::ReferralDecided { referral_id, .. } => referral_id.len(),
                ViewFact::Lead {
                    practitioner_id,
                    name,
                    organisation,
                } => practitioner_id.len() + name.len() + organisation.len(),
                _ => 0,
            }
    }
}

/// One event as the family view folds it.
#[derive(Debug, Clone, Copy)]
pub struct ViewEvent<'a> {
    /// Its log offset (orders events of the same instant).
    pub offset: u64,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// The partner that told it.
    pub source: &'a str,
    /// The person id of its first subject (read only when [`ViewFact::names_person`]).
    pub person: &'a str,
    /// What it adds.
    pub fact: &'a ViewFact,
}

/// Folds a family's events into its view, as of `now`.
pub fn family_view(
    family_id: String,
    members: Vec<Member>,
    events: &[FamilyEvent],
    now: Timestamp,
) -> FamilyView {
    let facts: Vec<ViewFact> = events
        .iter()
        .map(|e| ViewFact::of(&e.event.payload))
        .collect();
    let events = events
        .iter()
        .zip(&facts)
        .map(|(e, fact)| ViewEvent {
            offset: e.offset,
            occurred_at: e.event.occurred_at,
            source: &e.event.source,
            person: e.persons.first().map_or("", String::as_str),
            fact,
        })
        .collect();
    fold_family(family_id, members, events, now)
}

/// Folds a family's events, as their facts, into its view, as of `now` ([`family_view`]
/// from facts kept rather than events read).
pub fn fold_family(
    family_id: String,
    mut members: Vec<Member>,
    mut events: Vec<ViewEvent<'_>>,
    now: Timestamp,
) -> FamilyView {
    let today = Date::of(now);
    for m in &mut members {
        m.age = m.date_of_birth.map(|d| d.age_on(today));
    }
    events.sort_by_key(|e| (e.occurred_at, e.offset));

    let mut partners: BTreeMap<&str, Involvement> = BTreeMap::new();
    let mut lead = None;
    let mut threshold = None;
    let mut referrals: BTreeMap<&str, Referral> = BTreeMap::new();
    let mut referral_times: BTreeMap<&str, Vec<Timestamp>> = BTreeMap::new();
    let mut last_closure: Option<Timestamp> = None;
    let mut flags = Flags::default();
    let mut outcomes: BTreeMap<(&str, &'static str), Outcome> = BTreeMap::new();
    let year_ago = Timestamp(now.0 - 365 * MS_PER_DAY);
    let month_ago = Timestamp(now.0 - 30 * MS_PER_DAY);
    let term = term_start(today).start();

    for e in &events {
        let at = e.occurred_at;
        let inv = partners.entry(e.source).or_insert(Involvement {
            partner: e.source.to_string(),
            open: true,
            first_seen: at,
            last_seen: at,
        });
        inv.last_seen = at;
        inv.open = *e.fact != ViewFact::CaseClosed;
        match e.fact {
            ViewFact::ReferralMade {
                referral_id,
                service,
                threshold_level,
            } => {
                threshold = Some(*threshold_level);
                referrals.insert(
                    referral_id,
                    Referral {
                        referral_id: referral_id.clone(),
                        service: service.clone(),
                        referred_by: e.source.to_string(),
                        made_at: at,
                        state: "awaiting_decision".into(),
                    },
                );
                let times = referral_times.entry(service).or_default();
                if at >= year_ago && times.iter().any(|&t| at.0 - t.0 <= 365 * MS_PER_DAY) {
                    flags.repeat_referral_within_12_months = true;
                }
                times.push(at);
            }
            ViewFact::ReferralDecided {
                referral_id,
                decision,
            } => {
                if let Some(r) = referrals.get_mut(referral_id.as_str()) {
                    r.state = match decision {
                        ReferralDecision::Accepted => "accepted".into(),
                        ReferralDecision::Declined => "declined".into(),
                    };
                }
            }
            ViewFact::Ppn if at >= month_ago && at <= now => {
                flags.ppn_last_30_days += 1;
            }
            ViewFact::Exclusion if at >= term && at <= now => {
                flags.excluded_this_term = true;
            }
            ViewFact::YouthJustice if at >= year_ago => {
                flags.youth_justice_involvement = true;
            }
            ViewFact::Assessment(level) => threshold = Some(*level),
            ViewFact::Lead {
                practitioner_id,
                name,
                organisation,
            } => {
                lead = Some(Lead {
                    practitioner_id: practitioner_id.clone(),
                    name: name.clone(),
                    organisation: organisation.clone(),
                    since: at,
                })
            }
            ViewFact::Outcome {
                instrument,
                score,
                start,
            } => {
                let o = outcomes.entry((e.person, instrument)).or_insert(Outcome {
                    person_id: e.person.to_string(),
                    instrument: instrument.to_string(),
                    start: *score,
                    latest: *score,
                    change: 0.0,
                });
                if *start {
                    o.start = *score;
                }
                o.latest = *score;
                o.change = o.latest - o.start;
            }
            ViewFact::CaseClosed => last_closure = Some(at),
            _ => {}
        }
    }
    let open_referrals = referrals
        .into_values()
        .filter(|r| r.state != "declined" && last_closure.is_none_or(|c| c < r.made_at))
        .collect();
    FamilyView {
        family_id,
        members,
        partners: partners.into_values().collect(),
        lead_practitioner: lead,
        threshold_level: threshold,
        open_referrals,
        flags,
        outcomes: outcomes.into_values().collect(),
        event_count: events.len(),
    }
}

fn level(t: ThresholdLevel) -> &'static str {
    match t {
        ThresholdLevel::Universal => "level 1",
        ThresholdLevel::EarlyHelp => "level 2",
        ThresholdLevel::TargetedEarlyHelp => "level 3",
        ThresholdLevel::Statutory => "level 4",
    }
}

fn snake(s: impl serde::Serialize) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

fn with_note(head: String, note: &str) -> String {
    if note.is_empty() {
        head
    } else {
        format!("{head}: {note}")
    }
}

/// One readable line saying what happened.
pub fn summary_line(e: &Event) -> String {
    match &e.payload {
        Payload::ReferralMade {
            service,
            reason,
            threshold_level,
            ..
        } => with_note(
            format!("Referral to {service} ({})", level(*threshold_level)),
            reason,
        ),
        Payload::ReferralDecided {
            decision, reason, ..
        } => with_note(format!("Referral {}", snake(decision)), reason),
        Payload::PublicProtectionNotification {
            incident_type,
            children_present,
            risk_grade,
            summary,
        } => with_note(
            format!(
                "PPN: {}{}, risk {}",
                snake(incident_type),
                if *children_present {
                    ", children present"
                } else {
                    ""
                },
                snake(risk_grade)
            ),
            summary,
        ),
        Payload::AttendanceConcern {
            attendance_percent,
            note,
            ..
        } => with_note(format!("Attendance {attendance_percent:.1}%"), note),
        Payload::Exclusion {
            exclusion_kind,
            days,
            reason,
        } => with_note(
            match exclusion_kind {
                crate::event::ExclusionKind::FixedTerm => format!("Suspended for {days} days"),
                crate::event::ExclusionKind::Permanent => "Permanently excluded".to_string(),
            },
            reason,
        ),
        Payload::HealthContact { service, concern } => {
            with_note(format!("Health contact ({service})"), concern)
        }
        Payload::YouthJusticeContact { contact_kind, note } => {
            with_note(format!("Youth justice: {}", snake(contact_kind)), note)
        }
        Payload::EarlyHelpAssessment {
            threshold_level,
            summary,
            ..
        } => with_note(
            format!("Early Help Assessment ({})", level(*threshold_level)),
            summary,
        ),
        Payload::TeamAroundFamilyMeeting { attendees, summary } => with_note(
            format!("TAF meeting ({} partners)", attendees.len()),
            summary,
        ),
        Payload::LeadPractitionerAssigned {
            practitioner_name,
            organisation,
            ..
        } => format!("Lead practitioner: {practitioner_name} ({organisation})"),
        Payload::InterventionStarted {
            programme,
            planned_weeks,
            ..
        } => format!("Started {programme} ({planned_weeks} weeks)"),
        Payload::InterventionEnded { outcome, .. } => {
            with_note("Intervention ended".into(), outcome)
        }
        Payload::OutcomeMeasured {
            instrument,
            score,
            point,
            ..
        } => format!(
            "{} {} score {score}",
            snake(instrument).to_uppercase(),
            snake(point)
        ),
        Payload::CaseClosed { reason, note } => {
            with_note(format!("Case closed ({})", snake(reason)), note)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LawfulBasis, MeasurePoint, OutcomeInstrument, PpnIncidentType, RiskGrade};

    fn ev(source: &str, day: i64, payload: Payload) -> FamilyEvent {
        FamilyEvent {
            offset: day as u64,
            event: Event {
                event_id: format!("e{day}"),
                source: source.into(),
                occurred_at: Timestamp(day * MS_PER_DAY),
                subjects: vec![],
                relationships: vec![],
                lawful_basis: Some(LawfulBasis::Consent {
                    consent_reference: "c".into(),
                }),
                category: None,
                payload,
            },
            persons: vec!["p-1".into()],
        }
    }

    #[test]
    fn folds_a_family() {
        let now = Timestamp(1000 * MS_PER_DAY);
        let events = vec![
            ev(
                "police",
                990,
                Payload::PublicProtectionNotification {
                    incident_type: PpnIncidentType::DomesticAbuse,
                    children_present: true,
                    risk_grade: RiskGrade::Medium,
                    summary: String::new(),
                },
            ),
            ev(
                "police",
                900,
                Payload::PublicProtectionNotification {
                    incident_type: PpnIncidentType::DomesticAbuse,
                    children_present: true,
                    risk_grade: RiskGrade::Medium,
                    summary: String::new(),
                },
            ),
            ev(
                "early-intervention",
                700,
                Payload::ReferralMade {
                    referral_id: "r1".into(),
                    service: "ACE".into(),
                    reason: String::new(),
                    threshold_level: ThresholdLevel::EarlyHelp,
                },
            ),
            ev(
                "early-intervention",
                800,
                Payload::ReferralMade {
                    referral_id: "r2".into(),
                    service: "ACE".into(),
                    reason: String::new(),
                    threshold_level: ThresholdLevel::TargetedEarlyHelp,
                },
            ),
            ev(
                "early-intervention",
                801,
                Payload::ReferralDecided {
                    referral_id: "r2".into(),
                    decision: ReferralDecision::Accepted,
                    reason: String::new(),
                    feedback_sent: true,
                },
            ),
            ev(
                "early-intervention",
                810,
                Payload::OutcomeMeasured {
                    instrument: OutcomeInstrument::Wemwbs,
                    score: 31.0,
                    point: MeasurePoint::Start,
                    intervention_id: "i1".into(),
                },
            ),
            ev(
                "early-intervention",
                890,
                Payload::OutcomeMeasured {
                    instrument: OutcomeInstrument::Wemwbs,
                    score: 44.0,
                    point: MeasurePoint::End,
                    intervention_id: "i1".into(),
                },
            ),
            ev(
                "school-001",
                100,
                Payload::CaseClosed {
                    reason: crate::event::CaseClosureReason::NeedsMet,
                    note: String::new(),
                },
            ),
        ];
        let members = vec![Member {
            person_id: "p-1".into(),
            name: "Mia Carter".into(),
            date_of_birth: Date::parse("1971-01-01").ok(),
            age: None,
            sex: None,
        }];
        let v = family_view("f-1".into(), members, &events, now);
        assert_eq!(v.members[0].age, Some(1));
        assert_eq!(v.flags.ppn_last_30_days, 1);
        assert!(v.flags.repeat_referral_within_12_months);
        assert!(!v.flags.youth_justice_involvement);
        assert_eq!(v.threshold_level, Some(ThresholdLevel::TargetedEarlyHelp));
        assert_eq!(v.open_referrals.len(), 2);
        assert_eq!(v.open_referrals[1].state, "accepted");
        assert_eq!(v.outcomes[0].change, 13.0);
        let school = v.partners.iter().find(|p| p.partner == "school-001");
        assert_eq!(school.map(|p| p.open), Some(false));
        assert_eq!(v.event_count, 8);
        assert!(summary_line(&events[0].event).starts_with("PPN: domestic abuse, children present"));
    }

    #[test]
    fn terms() -> Result<(), crate::time::TimeParseError> {
        assert_eq!(
            term_start(Date::parse("2026-11-25")?),
            Date::parse("2026-09-01")?
        );
        assert_eq!(
            term_start(Date::parse("2026-02-01")?),
            Date::parse("2026-01-01")?
        );
        assert_eq!(
            term_start(Date::parse("2026-06-30")?),
            Date::parse("2026-04-01")?
        );
        Ok(())
    }
}
