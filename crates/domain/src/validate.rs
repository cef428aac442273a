//! Validation of published events: the rules an event must meet before it may enter the log.
//!
//! [`check`] normalises an event (trims text, strips spaces from NHS numbers, upper-cases UPNs
//! and postcodes) and then checks it, returning the first rule it breaks as a [`ValidationError`]
//! with a stable reason code, the field path at fault and a message a partner's developer can act
//! on. It is pure: the current time and the publishing partner come in as arguments.

use crate::access::{
    category_allowed, category_of, ConsentGiven, ConsentWithdrawn, SharingDecision,
};
use crate::event::{
    Address, Event, ExclusionKind, LawfulBasis, OutcomeInstrument, Payload, Subject,
};
use crate::time::{Date, Timestamp};

/// The most subjects one event may name.
pub const MAX_SUBJECTS: usize = 20;
/// The most relationships one event may state.
pub const MAX_RELATIONSHIPS: usize = 100;
/// The longest id (event id, local id, referral id, ...), in characters.
pub const MAX_ID_CHARS: usize = 128;
/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest free-text field (summary, reason, note), in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// How far in the future `occurred_at` may be, to allow for clock skew: five minutes.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// The most attendees one Team Around the Family meeting may list.
pub const MAX_ATTENDEES: usize = 50;

/// How a rejection maps onto a gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The event itself is malformed (gRPC INVALID_ARGUMENT).
    InvalidArgument,
    /// The publisher may not publish this event (gRPC PERMISSION_DENIED).
    PermissionDenied,
    /// The event needs something recorded first, such as the consent it cites (gRPC
    /// FAILED_PRECONDITION).
    FailedPrecondition,
}

/// Why an event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The kind of failure.
    pub code: RejectCode,
    /// A stable, machine-readable reason, e.g. `nhs_number_check_digit`.
    pub reason: &'static str,
    /// The field path at fault, e.g. `subjects[0].nhs_number`.
    pub field: String,
    /// A message a partner's developer can act on.
    pub message: String,
}

impl ValidationError {
    /// The same error with its field placed under `prefix` (`name` becomes `prefix.name`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }

    /// An INVALID_ARGUMENT rejection.
    pub fn invalid(
        reason: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            code: RejectCode::InvalidArgument,
            reason,
            field: field.into(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ValidationError>;

/// Normalises and validates an event published by `publisher` at `now`.
pub fn check(mut event: Event, publisher: &str, now: Timestamp) -> Result<Event> {
    normalise(&mut event);
    check_id(&event.event_id, "event_id")?;
    if event.source.is_empty() {
        return Err(ValidationError::invalid(
            "missing_field",
            "source",
            "source is required: set it to your partner id",
        ));
    }
    if event.source != publisher {
        return Err(ValidationError {
            code: RejectCode::PermissionDenied,
            reason: "wrong_source",
            field: "source".into(),
            message: format!(
                "this credential belongs to partner {publisher:?} and may publish only events whose source is {publisher:?}, not {:?}",
                event.source
            ),
        });
    }
    if event.occurred_at.0 > now.0 + MAX_CLOCK_SKEW_MS {
        return Err(ValidationError::invalid(
            "in_future",
            "occurred_at",
            format!(
                "occurred_at {} is in the future (now {now})",
                event.occurred_at
            ),
        ));
    }
    if event.occurred_at
        < Date::new(1900, 1, 1)
            .map(Date::start)
            .unwrap_or(Timestamp(0))
    {
        return Err(ValidationError::invalid(
            "too_old",
            "occurred_at",
            "occurred_at is before 1900",
        ));
    }
    if event.subjects.is_empty() {
        return Err(ValidationError::invalid(
            "missing_field",
            "subjects",
            "at least one subject is required",
        ));
    }
    if event.subjects.len() > MAX_SUBJECTS {
        return Err(ValidationError::invalid(
            "too_many",
            "subjects",
            format!(
                "at most {MAX_SUBJECTS} subjects per event, got {}",
                event.subjects.len()
            ),
        ));
    }
    let today = Date::of(now);
    for (i, subject) in event.subjects.iter().enumerate() {
        check_subject(subject, today).map_err(|e| e.under(&format!("subjects[{i}]")))?;
    }
    if event.relationships.len() > MAX_RELATIONSHIPS {
        return Err(ValidationError::invalid(
            "too_many",
            "relationships",
            format!("at most {MAX_RELATIONSHIPS} relationships per event"),
        ));
    }
    for (i, rel) in event.relationships.iter().enumerate() {
        let n = event.subjects.len() as u32;
        if rel.from >= n || rel.to >= n || rel.from == rel.to {
            return Err(ValidationError::invalid(
                "bad_relationship",
                format!("relationships[{i}]"),
                format!(
                    "from ({}) and to ({}) must be different indexes into subjects (0..{n})",
                    rel.from, rel.to
                ),
            ));
        }
    }
    check_basis(event.lawful_basis.as_ref())?;
    if let Some(c) = event.category {
        if !category_allowed(event.payload.kind(), c) {
            return Err(ValidationError::invalid(
                "category_mismatch",
                "category",
                format!(
                    "a {} event is always {}; leave category empty",
                    event.payload.kind(),
                    category_of(event.payload.kind(), None).name()
                ),
            ));
        }
    }
    check_payload(&event.payload, today).map_err(|e| e.under("payload"))?;
    Ok(event)
}

fn normalise(event: &mut Event) {
    trim(&mut event.event_id);
    trim(&mut event.source);
    for s in &mut event.subjects {
        for field in [
            &mut s.local_id,
            &mut s.given_name,
            &mut s.middle_names,
            &mut s.family_name,
        ] {
            trim_opt(field);
        }
        if let Some(nhs) = &mut s.nhs_number {
            nhs.retain(|c| c != ' ' && c != '-');
        }
        trim_opt(&mut s.nhs_number);
        if let Some(upn) = &mut s.upn {
            *upn = upn.trim().to_ascii_uppercase();
        }
        trim_opt(&mut s.upn);
        if let Some(a) = &mut s.address {
            for field in [&mut a.line1, &mut a.line2, &mut a.town] {
                trim(field);
            }
            if !is_valid_postcode(&a.postcode) {
                a.postcode = normalise_postcode(&a.postcode);
            }
        }
    }
}

fn trim(s: &mut String) {
    let t = s.trim();
    if t.len() != s.len() {
        *s = t.to_string();
    }
}

fn trim_opt(s: &mut Option<String>) {
    if let Some(v) = s {
        trim(v);
        if v.is_empty() {
            *s = None;
        }
    }
}

/// Upper-cases a postcode and puts one space before the inward code ("nn15ab" → "NN1 5AB").
pub fn normalise_postcode(raw: &str) -> String {
    if is_valid_postcode(raw) {
        return raw.to_string();
    }
    let mut compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if compact.len() > 3 && compact.is_ascii() {
        compact.insert(compact.len() - 3, ' ');
    }
    compact
}

/// Whether a normalised postcode has the shape of a UK postcode (outward code, space, digit and
/// two letters).
pub fn is_valid_postcode(p: &str) -> bool {
    let Some((out, inward)) = p.split_once(' ') else {
        return false;
    };
    let ib = inward.as_bytes();
    let ob = out.as_bytes();
    (2..=4).contains(&ob.len())
        && ob[0].is_ascii_uppercase()
        && ob.iter().all(u8::is_ascii_alphanumeric)
        && ob.iter().any(u8::is_ascii_digit)
        && ib.len() == 3
        && ib[0].is_ascii_digit()
        && ib[1].is_ascii_uppercase()
        && ib[2].is_ascii_uppercase()
}

/// Whether a 10-digit NHS number has a valid modulus 11 check digit.
pub fn is_valid_nhs_number(n: &str) -> bool {
    let b = n.as_bytes();
    if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..9]
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (10 - i as u32))
        .sum();
    let check = 11 - sum % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == u32::from(b[9] - b'0')
}

const UPN_LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

/// Whether a 13-character Unique Pupil Number has a valid shape and check letter.
///
/// A UPN is a check letter followed by 12 digits (a permanent UPN) or by 11 digits and a letter
/// (a temporary UPN). The check letter is `Σ value(c[i]) × i` for i = 2..13, modulo 23, as a
/// letter of `ABCDEFGHJKLMNPQRTUVWXYZ`.
pub fn is_valid_upn(upn: &str) -> bool {
    let b = upn.as_bytes();
    if b.len() != 13 || !b[1..12].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let last = if b[12].is_ascii_digit() {
        u32::from(b[12] - b'0')
    } else {
        match UPN_LETTERS.iter().position(|&l| l == b[12]) {
            Some(p) => p as u32,
            None => return false,
        }
    };
    let sum: u32 = b[1..12]
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (i as u32 + 2))
        .sum::<u32>()
        + last * 13;
    UPN_LETTERS[(sum % 23) as usize] == b[0]
}

fn check_id(value: &str, field: &str) -> Result<()> {
    if value.is_empty() {
        return Err(ValidationError::invalid(
            "missing_field",
            field,
            format!("{field} is required"),
        ));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(ValidationError::invalid(
            "too_long",
            field,
            format!("{field} is longer than {MAX_ID_CHARS} characters"),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::invalid(
            "bad_characters",
            field,
            format!("{field} may contain only printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

fn check_text(value: &str, field: &str, max: usize) -> Result<()> {
    // A string has at most as many characters as bytes: count only when it could be too long.
    if value.len() > max {
        let n = value.chars().count();
        if n > max {
            return Err(ValidationError::invalid(
                "too_long",
                field,
                format!("{field} is {n} characters; the limit is {max}"),
            ));
        }
    }
    let allowed = |c: char| !c.is_control() || c == '\n' || c == '\t' || c == '\r';
    let clean = if value.is_ascii() {
        value.bytes().all(|b| allowed(char::from(b)))
    } else {
        value.chars().all(allowed)
    };
    if !clean {
        return Err(ValidationError::invalid(
            "bad_characters",
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

fn check_required_text(value: &str, field: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(ValidationError::invalid(
            "missing_field",
            field,
            format!("{field} is required"),
        ));
    }
    check_text(value, field, max)
}

fn check_subject(s: &Subject, today: Date) -> Result<()> {
    let has_name_dob = s.family_name.is_some() && s.date_of_birth.is_some();
    if s.local_id.is_none() && s.nhs_number.is_none() && s.upn.is_none() && !has_name_dob {
        return Err(ValidationError::invalid(
            "no_identifier",
            "",
            "a subject needs at least one identifier: local_id, nhs_number, upn, or family_name with date_of_birth",
        ));
    }
    if let Some(id) = &s.local_id {
        check_id(id, "local_id")?;
    }
    if let Some(nhs) = &s.nhs_number {
        if !is_valid_nhs_number(nhs) {
            return Err(ValidationError::invalid(
                "nhs_number_check_digit",
                "nhs_number",
                format!("{nhs:?} is not a valid NHS number: it needs 10 digits with a correct modulus 11 check digit"),
            ));
        }
    }
    if let Some(upn) = &s.upn {
        if !is_valid_upn(upn) {
            return Err(ValidationError::invalid(
                "upn_check_letter",
                "upn",
                format!("{upn:?} is not a valid UPN: it needs a check letter and 12 more characters (12 digits, or 11 digits and a letter) with a correct check letter"),
            ));
        }
    }
    for (name, value) in [
        ("given_name", &s.given_name),
        ("middle_names", &s.middle_names),
        ("family_name", &s.family_name),
    ] {
        if let Some(v) = value {
            check_text(v, name, MAX_NAME_CHARS)?;
        }
    }
    if let Some(dob) = s.date_of_birth {
        if dob > today || dob.year < 1900 {
            return Err(ValidationError::invalid(
                "bad_date_of_birth",
                "date_of_birth",
                format!("date of birth {dob} must be between 1900-01-01 and today ({today})"),
            ));
        }
    }
    if let Some(a) = &s.address {
        check_address(a).map_err(|e| e.under("address"))?;
    }
    Ok(())
}

fn check_address(a: &Address) -> Result<()> {
    for (name, v) in [("line1", &a.line1), ("line2", &a.line2), ("town", &a.town)] {
        check_text(v, name, MAX_NAME_CHARS)?;
    }
    if !a.postcode.is_empty() && !is_valid_postcode(&a.postcode) {
        return Err(ValidationError::invalid(
            "bad_postcode",
            "postcode",
            format!("{:?} is not a UK postcode such as \"NN1 5AB\"", a.postcode),
        ));
    }
    Ok(())
}

/// The most persons or records one consent may name.
pub const MAX_CONSENT_PERSONS: usize = 50;

/// Checks a consent before it is recorded. `today` is the day of recording.
pub fn check_consent(c: &ConsentGiven, today: Date) -> Result<()> {
    check_id(&c.consent_id, "consent_id")?;
    check_required_text(&c.given_by, "given_by", MAX_NAME_CHARS)?;
    if c.records.is_empty() {
        return Err(ValidationError::invalid(
            "no_persons",
            "persons",
            "name the family members the consent covers: person ids, or partner records (source/local_id)",
        ));
    }
    if c.persons.len() > MAX_CONSENT_PERSONS || c.records.len() > MAX_CONSENT_PERSONS * 10 {
        return Err(ValidationError::invalid(
            "too_many",
            "persons",
            format!("at most {MAX_CONSENT_PERSONS} persons per consent"),
        ));
    }
    for (i, r) in c.records.iter().enumerate() {
        if r.split_once('/')
            .is_none_or(|(s, l)| s.is_empty() || l.is_empty())
        {
            return Err(ValidationError::invalid(
                "bad_record",
                format!("records[{i}]"),
                format!("{r:?} is not a partner record key such as \"school-001/P123\""),
            ));
        }
    }
    if c.grants.is_empty() {
        return Err(ValidationError::invalid(
            "no_scope",
            "scope",
            "say which partners may see which categories (at least one scope entry)",
        ));
    }
    for (i, g) in c.grants.iter().enumerate() {
        let field = format!("scope[{i}]");
        if g.partners.is_empty() || g.categories.is_empty() {
            return Err(ValidationError::invalid(
                "empty_scope",
                field,
                "each scope entry needs partners (or \"*\" for every partner) and categories",
            ));
        }
        for p in &g.partners {
            check_id(p, &format!("{field}.partners"))?;
        }
    }
    check_required_text(&c.purpose, "purpose", MAX_TEXT_CHARS)?;
    if c.given_on > today {
        return Err(ValidationError::invalid(
            "future_date",
            "given_on",
            format!("given_on {} is after today ({today})", c.given_on),
        ));
    }
    for (d, field) in [(c.review_on, "review_on"), (c.expires_on, "expires_on")] {
        if d.is_some_and(|d| d < c.given_on) {
            return Err(ValidationError::invalid(
                "bad_date",
                field,
                format!("{field} is before given_on ({})", c.given_on),
            ));
        }
    }
    Ok(())
}

/// Checks a withdrawal before it is recorded.
pub fn check_withdrawal(w: &ConsentWithdrawn) -> Result<()> {
    check_id(&w.consent_id, "consent_id")?;
    check_text(&w.reason, "reason", MAX_TEXT_CHARS)
}

/// Checks a sharing decision before it is recorded.
pub fn check_sharing_decision(d: &SharingDecision) -> Result<()> {
    check_required_text(&d.family_id, "family_id", MAX_ID_CHARS)?;
    check_required_text(&d.reason, "reason", MAX_TEXT_CHARS)?;
    for p in &d.with_partners {
        check_id(p, "with_partners")?;
    }
    Ok(())
}

/// What the hub knows of the consent an event cites: `None` if it has no such consent, else
/// the consent and whether it has been withdrawn.
pub type CitedConsent<'a> = Option<(&'a ConsentGiven, bool)>;

/// Health and criminal-offence data shared on consent must cite a consent the hub holds, that
/// names the event's category and has not been withdrawn. Events of other categories, and
/// events on a safeguarding basis, pass.
pub fn check_special_consent(event: &Event, cited: CitedConsent<'_>) -> Result<()> {
    let category = category_of(event.payload.kind(), event.category);
    let Some(LawfulBasis::Consent { consent_reference }) = &event.lawful_basis else {
        return Ok(());
    };
    if !category.special() {
        return Ok(());
    }
    let fail = |reason: &'static str, message: String| {
        Err(ValidationError {
            code: RejectCode::FailedPrecondition,
            reason,
            field: "lawful_basis.consent.consent_reference".into(),
            message,
        })
    };
    match cited {
        None => fail(
            "unknown_consent",
            format!(
                "{} data shared on consent must cite a consent recorded with ConsentService; {consent_reference:?} is not one (if it was just recorded, retry), or use a safeguarding basis",
                category.name()
            ),
        ),
        Some((_, true)) => fail(
            "consent_withdrawn",
            format!("consent {consent_reference:?} has been withdrawn; use a safeguarding basis if one applies"),
        ),
        Some((c, false)) if !c.names_category(category) => fail(
            "consent_scope",
            format!(
                "consent {consent_reference:?} does not name {}; record a consent that does, or use a safeguarding basis",
                category.name()
            ),
        ),
        Some(_) => Ok(()),
    }
}

fn check_basis(basis: Option<&LawfulBasis>) -> Result<()> {
    match basis {
        None => Err(ValidationError::invalid(
            "missing_lawful_basis",
            "lawful_basis",
            "every event needs a lawful basis for sharing: a consent reference, or a safeguarding basis with a written reason",
        )),
        Some(LawfulBasis::Consent { consent_reference }) => {
            check_id(consent_reference, "lawful_basis.consent.consent_reference")
        }
        Some(LawfulBasis::Safeguarding {
            statutory_basis,
            reason,
        }) => {
            check_required_text(statutory_basis, "lawful_basis.safeguarding.statutory_basis", MAX_ID_CHARS * 2)?;
            check_required_text(reason, "lawful_basis.safeguarding.reason", MAX_TEXT_CHARS)
        }
    }
}

fn check_payload(p: &Payload, today: Date) -> Result<()> {
    let text = |v: &str, f: &str| check_text(v, f, MAX_TEXT_CHARS);
    let id = |v: &str, f: &str| check_id(v, f);
    let name = |v: &str, f: &str| check_required_text(v, f, MAX_ID_CHARS);
    match p {
        Payload::ReferralMade {
            referral_id,
            service,
            reason,
            ..
        } => {
            id(referral_id, "referral_id")?;
            name(service, "service")?;
            text(reason, "reason")
        }
        Payload::ReferralDecided {
            referral_id,
            reason,
            ..
        } => {
            id(referral_id, "referral_id")?;
            text(reason, "reason")
        }
        Payload::PublicProtectionNotification { summary, .. } => text(summary, "summary"),
        Payload::AttendanceConcern {
            attendance_percent,
            term_start,
            note,
        } => {
            if !(0.0..=100.0).contains(attendance_percent) {
                return Err(ValidationError::invalid(
                    "out_of_range",
                    "attendance_percent",
                    format!("attendance_percent must be 0-100, got {attendance_percent}"),
                ));
            }
            if let Some(t) = term_start {
                if *t > today {
                    return Err(ValidationError::invalid(
                        "in_future",
                        "term_start",
                        "term_start is in the future",
                    ));
                }
            }
            text(note, "note")
        }
        Payload::Exclusion {
            exclusion_kind,
            days,
            reason,
        } => {
            match exclusion_kind {
                ExclusionKind::FixedTerm if !(1..=45).contains(days) => {
                    return Err(ValidationError::invalid(
                        "out_of_range",
                        "days",
                        format!("a fixed-term exclusion lasts 1-45 school days, got {days}"),
                    ))
                }
                ExclusionKind::Permanent if *days != 0 => {
                    return Err(ValidationError::invalid(
                        "out_of_range",
                        "days",
                        "a permanent exclusion has no length: leave days at 0",
                    ))
                }
                _ => {}
            }
            text(reason, "reason")
        }
        Payload::HealthContact { service, concern } => {
            name(service, "service")?;
            text(concern, "concern")
        }
        Payload::YouthJusticeContact { note, .. } => text(note, "note"),
        Payload::EarlyHelpAssessment {
            assessment_id,
            summary,
            ..
        } => {
            id(assessment_id, "assessment_id")?;
            text(summary, "summary")
        }
        Payload::TeamAroundFamilyMeeting { attendees, summary } => {
            if attendees.len() > MAX_ATTENDEES {
                return Err(ValidationError::invalid(
                    "too_many",
                    "attendees",
                    format!("at most {MAX_ATTENDEES} attendees"),
                ));
            }
            for (i, a) in attendees.iter().enumerate() {
                id(a, &format!("attendees[{i}]"))?;
            }
            text(summary, "summary")
        }
        Payload::LeadPractitionerAssigned {
            practitioner_id,
            practitioner_name,
            organisation,
        } => {
            id(practitioner_id, "practitioner_id")?;
            check_text(practitioner_name, "practitioner_name", MAX_NAME_CHARS)?;
            id(organisation, "organisation")
        }
        Payload::InterventionStarted {
            intervention_id,
            programme,
            planned_weeks,
        } => {
            id(intervention_id, "intervention_id")?;
            name(programme, "programme")?;
            if *planned_weeks > 260 {
                return Err(ValidationError::invalid(
                    "out_of_range",
                    "planned_weeks",
                    "planned_weeks must be at most 260 (five years)",
                ));
            }
            Ok(())
        }
        Payload::InterventionEnded {
            intervention_id,
            outcome,
        } => {
            id(intervention_id, "intervention_id")?;
            check_text(outcome, "outcome", MAX_ID_CHARS)
        }
        Payload::OutcomeMeasured {
            instrument,
            score,
            intervention_id,
            ..
        } => {
            let (lo, hi) = match instrument {
                OutcomeInstrument::Wemwbs => (14.0, 70.0),
                OutcomeInstrument::OutcomeStar => (1.0, 10.0),
            };
            if !(lo..=hi).contains(score) {
                return Err(ValidationError::invalid(
                    "out_of_range",
                    "score",
                    format!("a {instrument:?} score must be {lo}-{hi}, got {score}"),
                ));
            }
            if !intervention_id.is_empty() {
                id(intervention_id, "intervention_id")?;
            }
            Ok(())
        }
        Payload::CaseClosed { note, .. } => text(note, "note"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Payload, Relationship, RelationshipKind};
    use crate::sample;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-25T12:00:00Z").unwrap()
    }

    fn good() -> Event {
        sample::ppn(
            "police",
            "ppn-1",
            1,
            Timestamp::parse("2026-11-24T22:40:00Z").unwrap(),
        )
    }

    fn reject(e: Event) -> ValidationError {
        check(e, "police", now()).unwrap_err()
    }

    #[test]
    fn sample_event_is_valid() {
        check(good(), "police", now()).unwrap();
    }

    #[test]
    fn nhs_numbers() {
        assert!(is_valid_nhs_number("9434765919"));
        assert!(!is_valid_nhs_number("9434765918"));
        assert!(!is_valid_nhs_number("943476591"));
        assert!(!is_valid_nhs_number("94347659a9"));
        // Check digit would be 10: never valid.
        assert!(!is_valid_nhs_number("0000000060"));
        let mut e = good();
        e.subjects[0].nhs_number = Some("943 476 5919".into());
        let ok = check(e, "police", now()).unwrap();
        assert_eq!(ok.subjects[0].nhs_number.as_deref(), Some("9434765919"));
        let mut e = good();
        e.subjects[0].nhs_number = Some("9434765918".into());
        let err = reject(e);
        assert_eq!(err.reason, "nhs_number_check_digit");
        assert_eq!(err.field, "subjects[0].nhs_number");
    }

    #[test]
    fn upns() {
        assert!(is_valid_upn("B801200005001"));
        assert!(!is_valid_upn("A801200005001"));
        assert!(!is_valid_upn("B80120000500"));
        assert!(!is_valid_upn("B8012000050I1"));
        let mut e = good();
        e.subjects[0].upn = Some("b801200005001".into());
        assert!(check(e, "police", now()).is_ok());
    }

    #[test]
    fn wrong_source_is_permission_denied() {
        let err = check(good(), "school-001", now()).unwrap_err();
        assert_eq!(err.code, RejectCode::PermissionDenied);
        assert_eq!(err.reason, "wrong_source");
    }

    #[test]
    fn future_events_are_rejected_beyond_skew() {
        let mut e = good();
        e.occurred_at = Timestamp(now().0 + MAX_CLOCK_SKEW_MS - 1);
        assert!(check(e.clone(), "police", now()).is_ok());
        e.occurred_at = Timestamp(now().0 + MAX_CLOCK_SKEW_MS + 1);
        assert_eq!(reject(e).reason, "in_future");
    }

    #[test]
    fn lawful_basis_is_required() {
        let mut e = good();
        e.lawful_basis = None;
        assert_eq!(reject(e).reason, "missing_lawful_basis");
        let mut e = good();
        e.lawful_basis = Some(LawfulBasis::Safeguarding {
            statutory_basis: "Children Act 1989 s47".into(),
            reason: "  ".into(),
        });
        let err = reject(e);
        assert_eq!(err.field, "lawful_basis.safeguarding.reason");
    }

    #[test]
    fn oversized_text_is_rejected() {
        let mut e = good();
        if let Payload::PublicProtectionNotification { summary, .. } = &mut e.payload {
            *summary = "x".repeat(MAX_TEXT_CHARS + 1);
        }
        let err = reject(e);
        assert_eq!(
            (err.reason, err.field.as_str()),
            ("too_long", "payload.summary")
        );
    }

    #[test]
    fn control_characters_are_rejected_but_line_breaks_are_not() {
        for (text, ok) in [
            ("two\nlines\tand a tab", true),
            ("café, naïve", true),
            ("bell\u{7}", false),
            ("next line\u{85}", false),
        ] {
            let mut e = good();
            if let Payload::PublicProtectionNotification { summary, .. } = &mut e.payload {
                *summary = text.into();
            }
            assert_eq!(check(e, "police", now()).is_ok(), ok, "{text:?}");
        }
        // Limits count characters, not bytes.
        let mut e = good();
        if let Payload::PublicProtectionNotification { summary, .. } = &mut e.payload {
            *summary = "é".repeat(MAX_TEXT_CHARS);
        }
        assert!(check(e, "police", now()).is_ok());
    }

    #[test]
    fn subjects_need_an_identifier() {
        let mut e = good();
        e.subjects[1] = Subject {
            given_name: Some("Kelly".into()),
            ..Subject::default()
        };
        assert_eq!(reject(e).reason, "no_identifier");
    }

    #[test]
    fn relationships_must_point_at_subjects() {
        let mut e = good();
        e.relationships.push(Relationship {
            from: 0,
            to: 5,
            kind: RelationshipKind::SiblingOf,
        });
        assert_eq!(reject(e).field, "relationships[1]");
    }

    #[test]
    fn postcodes_are_normalised_and_checked() {
        assert_eq!(normalise_postcode("nn15ab"), "NN1 5AB");
        assert!(is_valid_postcode("NN1 5AB"));
        assert!(is_valid_postcode("SW1A 1AA"));
        assert!(!is_valid_postcode("NN1 5A1"));
        assert!(!is_valid_postcode("12 3AB"));
    }

    #[test]
    fn scores_are_range_checked() {
        let mut e = good();
        e.payload = Payload::OutcomeMeasured {
            instrument: OutcomeInstrument::Wemwbs,
            score: 71.0,
            point: crate::event::MeasurePoint::End,
            intervention_id: String::new(),
        };
        assert_eq!(reject(e).reason, "out_of_range");
    }

    #[test]
    fn json_round_trips() {
        let e = good();
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"kind\":\"public_protection_notification\""));
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let rec = crate::Record::PartnerEvent(e);
        let bytes = rec.encode();
        assert!(
            (700..1400).contains(&bytes.len()),
            "sample is about 1 KiB, got {}",
            bytes.len()
        );
        assert_eq!(crate::Record::decode(&bytes).unwrap(), rec);
    }

    proptest! {
        #[test]
        fn generated_identifiers_are_valid(n in any::<u64>()) {
            prop_assert!(is_valid_nhs_number(&sample::nhs_number(n)));
            prop_assert!(is_valid_upn(&sample::upn(n)));
        }

        #[test]
        fn one_changed_nhs_digit_is_caught(n in any::<u64>(), pos in 0usize..10, delta in 1u8..10) {
            let good = sample::nhs_number(n);
            let mut b = good.into_bytes();
            b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
            prop_assert!(!is_valid_nhs_number(std::str::from_utf8(&b).unwrap()));
        }

        #[test]
        fn validation_never_panics(id in ".{0,200}", src in "[a-z-]{0,12}", nhs in ".{0,14}", upn in ".{0,14}", pc in ".{0,10}") {
            let mut e = good();
            e.event_id = id;
            e.source = src;
            e.subjects[0].nhs_number = Some(nhs);
            e.subjects[0].upn = Some(upn);
            if let Some(a) = &mut e.subjects[0].address { a.postcode = pc; }
            let _ = check(e, "police", now());
        }
    }
}
