//! Realistic example events, for tests, benchmarks and documentation.
//!
//! Deterministic: the same arguments give the same event.

use crate::event::{
    Address, Event, LawfulBasis, Payload, PpnIncidentType, Relationship, RelationshipKind,
    RiskGrade, Sex, Subject, SubjectRole,
};
use crate::time::{Date, Timestamp};

/// A valid NHS number derived from `n` (nine digits from `n`, plus the check digit).
pub fn nhs_number(n: u64) -> String {
    let mut base = n % 1_000_000_000;
    loop {
        let digits = format!("{base:09}");
        let sum: u32 = digits
            .bytes()
            .enumerate()
            .map(|(i, d)| u32::from(d - b'0') * (10 - i as u32))
            .sum();
        let check = (11 - sum % 11) % 11;
        if check != 10 {
            return format!("{digits}{check}");
        }
        base = (base + 1) % 1_000_000_000;
    }
}

/// A valid permanent UPN derived from `n`.
pub fn upn(n: u64) -> String {
    const LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";
    let digits = format!("{:012}", n % 1_000_000_000_000);
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (i as u32 + 2))
        .sum();
    format!("{}{digits}", LETTERS[(sum % 23) as usize] as char)
}

/// A police Public Protection Notification about a child and their mother, about 1 KiB as JSON:
/// the size of a typical event.
pub fn ppn(source: &str, event_id: &str, n: u64, occurred_at: Timestamp) -> Event {
    let child = Subject {
        local_id: Some(format!("NP-{n:08}")),
        nhs_number: Some(nhs_number(n * 7 + 1)),
        given_name: Some("Jordan".into()),
        family_name: Some("Whitfield".into()),
        date_of_birth: Date::new(2014, 7, (n % 28 + 1) as u8).ok(),
        sex: Some(Sex::Male),
        address: Some(Address {
            line1: format!("{} Harborough Road", n % 200 + 1),
            line2: String::new(),
            town: "Northampton".into(),
            postcode: "NN2 8DL".into(),
        }),
        role: Some(SubjectRole::Child),
        ..Subject::default()
    };
    let mother = Subject {
        local_id: Some(format!("NP-{:08}", n + 1)),
        given_name: Some("Kelly".into()),
        family_name: Some("Whitfield".into()),
        date_of_birth: Date::new(1990, 3, 14).ok(),
        sex: Some(Sex::Female),
        address: child.address.clone(),
        role: Some(SubjectRole::ParentCarer),
        ..Subject::default()
    };
    Event {
        event_id: event_id.into(),
        source: source.into(),
        occurred_at,
        subjects: vec![child, mother],
        relationships: vec![Relationship {
            from: 1,
            to: 0,
            kind: RelationshipKind::ParentCarerOf,
        }],
        lawful_basis: Some(LawfulBasis::Safeguarding {
            statutory_basis: "UK GDPR Art 6(1)(e); DPA 2018 Sch 1 para 18".into(),
            reason: "Domestic abuse incident with a child present; the school must be told before the next school day.".into(),
        }),
        category: None,
        payload: Payload::PublicProtectionNotification {
            incident_type: PpnIncidentType::DomesticAbuse,
            children_present: true,
            risk_grade: RiskGrade::Medium,
            summary: "Officers attended a verbal argument between the adults at the home address at 22:40. The child was present and was upstairs at the time. No injuries. Mother reports previous incidents not reported to police. DASH completed and graded medium. Referral to domestic abuse support offered.".into(),
        },
    }
}
