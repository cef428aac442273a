//! The events partner agencies publish, as the domain sees them.
//!
//! These types mirror `tellonce.v1.Event` in the gRPC contract but belong to the domain: the
//! server converts at its edge. They serialize to the JSON used in the log and in the JSON-lines
//! files that `tellonce publish` reads (enums in snake_case, timestamps in RFC 3339, dates as
//! `YYYY-MM-DD`, the payload tagged by `kind`).

use serde::{Deserialize, Serialize};

use crate::access::Category;
use crate::time::{Date, Timestamp};

/// One event published by a partner system. `P` is what happened: the typed [`Payload`], or
/// in the log, the payload sealed under the subjects' data keys ([`crate::seal::Sealed`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event<P = Payload> {
    /// Chosen by the partner, unique per partner: the idempotency key.
    pub event_id: String,
    /// The publishing partner's id.
    pub source: String,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// The people the event is about.
    pub subjects: Vec<Subject>,
    /// Relationships the partner states between subjects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<Relationship>,
    /// Why the hub may share this event; `None` only before validation rejects it.
    pub lawful_basis: Option<LawfulBasis>,
    /// The category of information, for kinds that more than one kind of service records
    /// (see [`crate::access::category_of`]); early help when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// What happened.
    pub payload: P,
}

impl<P> Event<P> {
    /// The same event with its payload replaced by `payload`.
    pub fn with_payload<Q>(self, payload: Q) -> Event<Q> {
        Event {
            event_id: self.event_id,
            source: self.source,
            occurred_at: self.occurred_at,
            subjects: self.subjects,
            relationships: self.relationships,
            lawful_basis: self.lawful_basis,
            category: self.category,
            payload,
        }
    }
}

/// A person as the publishing partner knows them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The partner's own id for this person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    /// 10-digit NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    /// 13-character Unique Pupil Number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Given (first) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Middle names, space separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_names: Option<String>,
    /// Family name (surname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<Date>,
    /// Recorded sex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Home address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// What this subject is in this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<SubjectRole>,
}

/// The fields of a subject that identity linking reads: a [`Subject`] (borrowed), or another
/// form of one (the projection reads them in place in a log entry, without copying them).
pub trait SubjectFields {
    /// [`Subject::local_id`].
    fn local_id(&self) -> Option<&str>;
    /// [`Subject::nhs_number`].
    fn nhs_number(&self) -> Option<&str>;
    /// [`Subject::upn`].
    fn upn(&self) -> Option<&str>;
    /// [`Subject::given_name`].
    fn given_name(&self) -> Option<&str>;
    /// [`Subject::middle_names`].
    fn middle_names(&self) -> Option<&str>;
    /// [`Subject::family_name`].
    fn family_name(&self) -> Option<&str>;
    /// [`Subject::date_of_birth`].
    fn date_of_birth(&self) -> Option<Date>;
    /// [`Subject::sex`].
    fn sex(&self) -> Option<Sex>;
    /// The postcode of [`Subject::address`] (`None` without an address).
    fn postcode(&self) -> Option<&str>;
}

/// For a borrowed subject, as an event's list of them gives it.
impl SubjectFields for &Subject {
    fn local_id(&self) -> Option<&str> {
        self.local_id.as_deref()
    }
    fn nhs_number(&self) -> Option<&str> {
        self.nhs_number.as_deref()
    }
    fn upn(&self) -> Option<&str> {
        self.upn.as_deref()
    }
    fn given_name(&self) -> Option<&str> {
        self.given_name.as_deref()
    }
    fn middle_names(&self) -> Option<&str> {
        self.middle_names.as_deref()
    }
    fn family_name(&self) -> Option<&str> {
        self.family_name.as_deref()
    }
    fn date_of_birth(&self) -> Option<Date> {
        self.date_of_birth
    }
    fn sex(&self) -> Option<Sex> {
        self.sex
    }
    fn postcode(&self) -> Option<&str> {
        self.address.as_ref().map(|a| a.postcode.as_str())
    }
}

/// Recorded sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
    /// Not known.
    Unknown,
}

/// What a subject is in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRole {
    /// The child the event is about.
    Child,
    /// A parent or carer.
    ParentCarer,
    /// A sibling.
    Sibling,
    /// Another adult in the household.
    AdultHouseholdMember,
    /// Anyone else.
    Other,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// First line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub line1: String,
    /// Second line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub line2: String,
    /// Town.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub town: String,
    /// UK postcode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub postcode: String,
}

/// A stated relationship between two subjects of an event, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relationship {
    /// Index of the first person in `subjects`.
    pub from: u32,
    /// Index of the second person in `subjects`.
    pub to: u32,
    /// The kind of relationship.
    pub kind: RelationshipKind,
}

/// Kinds of stated relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationshipKind {
    /// `from` is a parent or carer of `to`.
    ParentCarerOf,
    /// Siblings.
    SiblingOf,
    /// Members of one household.
    HouseholdMember,
}

/// The lawful basis for sharing an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LawfulBasis {
    /// The family's consent.
    Consent {
        /// The reference of the consent record.
        consent_reference: String,
    },
    /// A statutory safeguarding basis, shared without consent.
    Safeguarding {
        /// E.g. "UK GDPR Art 6(1)(e); DPA 2018 Sch 1 para 18".
        statutory_basis: String,
        /// The written reason.
        reason: String,
    },
}

/// Pathways threshold levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdLevel {
    /// Level 1: universal services.
    Universal,
    /// Level 2: early help.
    EarlyHelp,
    /// Level 3: targeted early help.
    TargetedEarlyHelp,
    /// Level 4: statutory.
    Statutory,
}

/// What happened: one typed payload per kind of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// A referral to a service.
    ReferralMade {
        /// The referral's id.
        referral_id: String,
        /// The service referred to.
        service: String,
        /// Why.
        #[serde(default)]
        reason: String,
        /// Threshold level.
        threshold_level: ThresholdLevel,
    },
    /// A service's decision on a referral.
    ReferralDecided {
        /// The referral decided.
        referral_id: String,
        /// Accepted or declined.
        decision: ReferralDecision,
        /// Why.
        #[serde(default)]
        reason: String,
        /// Whether feedback was sent to the referrer.
        #[serde(default)]
        feedback_sent: bool,
    },
    /// A police Public Protection Notification.
    PublicProtectionNotification {
        /// Incident type.
        incident_type: PpnIncidentType,
        /// Whether children were present.
        children_present: bool,
        /// Risk grade.
        risk_grade: RiskGrade,
        /// Summary.
        #[serde(default)]
        summary: String,
    },
    /// A school's attendance concern.
    AttendanceConcern {
        /// Attendance this term, percent.
        attendance_percent: f64,
        /// When the term started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        term_start: Option<Date>,
        /// Note.
        #[serde(default)]
        note: String,
    },
    /// A school exclusion.
    Exclusion {
        /// Fixed-term or permanent.
        exclusion_kind: ExclusionKind,
        /// School days (fixed-term).
        #[serde(default)]
        days: u32,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// A health contact.
    HealthContact {
        /// The health service.
        service: String,
        /// The concern.
        #[serde(default)]
        concern: String,
    },
    /// A youth justice contact.
    YouthJusticeContact {
        /// Kind of contact.
        contact_kind: YouthJusticeKind,
        /// Note.
        #[serde(default)]
        note: String,
    },
    /// An Early Help Assessment.
    EarlyHelpAssessment {
        /// The assessment's id.
        assessment_id: String,
        /// Threshold level found.
        threshold_level: ThresholdLevel,
        /// Summary.
        #[serde(default)]
        summary: String,
    },
    /// A Team Around the Family meeting.
    TeamAroundFamilyMeeting {
        /// Partner ids attending.
        #[serde(default)]
        attendees: Vec<String>,
        /// Summary.
        #[serde(default)]
        summary: String,
    },
    /// A lead practitioner was assigned.
    LeadPractitionerAssigned {
        /// The practitioner's id.
        practitioner_id: String,
        /// The practitioner's name.
        #[serde(default)]
        practitioner_name: String,
        /// Their organisation (a partner id).
        organisation: String,
    },
    /// An intervention started.
    InterventionStarted {
        /// The intervention's id.
        intervention_id: String,
        /// The programme, e.g. "ACE support".
        programme: String,
        /// Planned length in weeks.
        #[serde(default)]
        planned_weeks: u32,
    },
    /// An intervention ended.
    InterventionEnded {
        /// The intervention's id.
        intervention_id: String,
        /// E.g. "completed".
        #[serde(default)]
        outcome: String,
    },
    /// An outcome measure was taken.
    OutcomeMeasured {
        /// The instrument.
        instrument: OutcomeInstrument,
        /// The score.
        score: f64,
        /// Start, review or end.
        point: MeasurePoint,
        /// The intervention measured, if any.
        #[serde(default)]
        intervention_id: String,
    },
    /// A case was closed.
    CaseClosed {
        /// Why.
        reason: CaseClosureReason,
        /// Note.
        #[serde(default)]
        note: String,
    },
}

/// Accepted or declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralDecision {
    /// Accepted.
    Accepted,
    /// Declined.
    Declined,
}

/// PPN incident types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PpnIncidentType {
    /// Domestic abuse incident.
    DomesticAbuse,
    /// Missing episode.
    MissingEpisode,
    /// Exploitation concern.
    ExploitationConcern,
    /// Child concern.
    ChildConcern,
    /// Other.
    Other,
}

/// Risk grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskGrade {
    /// Standard.
    Standard,
    /// Medium.
    Medium,
    /// High.
    High,
}

/// Exclusion kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionKind {
    /// Fixed-term (suspension).
    FixedTerm,
    /// Permanent.
    Permanent,
}

/// Youth justice contact kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum YouthJusticeKind {
    /// Prevention and diversion.
    PreventionDiversion,
    /// Out-of-court disposal.
    OutOfCourtDisposal,
    /// First-time entrant.
    FirstTimeEntrant,
}

/// Outcome instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeInstrument {
    /// Warwick-Edinburgh Mental Wellbeing Scale, 14-70.
    Wemwbs,
    /// Outcome Star, 1-10.
    OutcomeStar,
}

/// When a measure was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasurePoint {
    /// At the start.
    Start,
    /// At a review.
    Review,
    /// At the end.
    End,
}

/// Why a case was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseClosureReason {
    /// Needs met.
    NeedsMet,
    /// Stepped up to statutory services.
    SteppedUp,
    /// Stepped down to universal services.
    SteppedDown,
    /// The family disengaged.
    Disengaged,
    /// Signposted elsewhere.
    Signposted,
}

impl Payload {
    /// The payload's kind as a stable snake_case name.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::ReferralMade { .. } => "referral_made",
            Payload::ReferralDecided { .. } => "referral_decided",
            Payload::PublicProtectionNotification { .. } => "public_protection_notification",
            Payload::AttendanceConcern { .. } => "attendance_concern",
            Payload::Exclusion { .. } => "exclusion",
            Payload::HealthContact { .. } => "health_contact",
            Payload::YouthJusticeContact { .. } => "youth_justice_contact",
            Payload::EarlyHelpAssessment { .. } => "early_help_assessment",
            Payload::TeamAroundFamilyMeeting { .. } => "team_around_family_meeting",
            Payload::LeadPractitionerAssigned { .. } => "lead_practitioner_assigned",
            Payload::InterventionStarted { .. } => "intervention_started",
            Payload::InterventionEnded { .. } => "intervention_ended",
            Payload::OutcomeMeasured { .. } => "outcome_measured",
            Payload::CaseClosed { .. } => "case_closed",
        }
    }
}
