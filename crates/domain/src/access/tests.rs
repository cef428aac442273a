use proptest::prelude::*;

use super::*;

const DAY: i64 = MS_PER_DAY;
/// "Now" in the table: 2026-06-01.
fn now() -> Timestamp {
    Date {
        year: 2026,
        month: 6,
        day: 1,
    }
    .start()
}

fn day(y: i32, m: u8, d: u8) -> Date {
    Date {
        year: y,
        month: m,
        day: d,
    }
}

fn viewer(user: &str, org: &str, roles: &[Role]) -> Viewer {
    Viewer {
        user_id: user.into(),
        organisation: org.into(),
        roles: roles.to_vec(),
    }
}

/// The family: a child (records at the school and the NHS) and a mother (a police record).
const CHILD: &[&str] = &["school-001/C1", "nhs-community/N1"];
const MOTHER: &[&str] = &["police/P1"];

/// The family's history: the school and early intervention are involved, early intervention's
/// worker `ei-worker` leads, the YOS attended a TAF meeting two months ago, the police closed
/// their case.
fn facts() -> FamilyFacts {
    let mut f = FamilyFacts::default();
    let attendees = vec!["yos".to_string(), "school-001".to_string()];
    for fact in [
        Fact::Event {
            source: "police",
            kind: "public_protection_notification",
        },
        Fact::Event {
            source: "school-001",
            kind: "attendance_concern",
        },
        Fact::Event {
            source: "early-intervention",
            kind: "lead_practitioner_assigned",
        },
        Fact::Lead {
            practitioner_id: "ei-worker",
            organisation: "early-intervention",
        },
        Fact::Event {
            source: "early-intervention",
            kind: "team_around_family_meeting",
        },
        Fact::Team {
            attendees: &attendees,
            at: Timestamp(now().0 - 60 * DAY),
        },
        Fact::Event {
            source: "police",
            kind: "case_closed",
        },
    ] {
        f.add(fact);
    }
    f
}

#[derive(Debug, Clone, Copy)]
enum ConsentState {
    None,
    /// Every partner, every category, both persons.
    All,
    /// Every partner, every category, the child only.
    ChildOnly,
    /// Education and early help only, every partner.
    NoSpecial,
    /// Health named, for the school only.
    HealthForSchool,
    /// All, withdrawn yesterday.
    Withdrawn,
    /// All, withdrawal effective tomorrow.
    WithdrawnTomorrow,
    /// All, expired last month.
    Expired,
}

fn consent(records: &[&str], grants: Vec<Grant>, expires_on: Option<Date>) -> ConsentGiven {
    ConsentGiven {
        consent_id: "C-1".into(),
        given_by: "Jo Bloggs".into(),
        giver: ConsentGiver::ParentalResponsibility,
        persons: vec![],
        records: records.iter().map(|r| r.to_string()).collect(),
        grants,
        purpose: "early help".into(),
        given_on: day(2026, 1, 10),
        review_on: None,
        expires_on,
        recorded_by: "ei-worker".into(),
        organisation: "early-intervention".into(),
        recorded_at: day(2026, 1, 10).start(),
    }
}

fn all_grants() -> Vec<Grant> {
    vec![Grant {
        partners: vec!["*".into()],
        categories: Category::ALL.to_vec(),
    }]
}

fn consents(s: ConsentState) -> Vec<(ConsentGiven, Option<Timestamp>)> {
    let both: Vec<&str> = CHILD.iter().chain(MOTHER).copied().collect();
    match s {
        ConsentState::None => vec![],
        ConsentState::All => vec![(consent(&both, all_grants(), None), None)],
        ConsentState::ChildOnly => vec![(consent(CHILD, all_grants(), None), None)],
        ConsentState::NoSpecial => vec![(
            consent(
                &both,
                vec![Grant {
                    partners: vec!["*".into()],
                    categories: vec![Category::Education, Category::EarlyHelp],
                }],
                None,
            ),
            None,
        )],
        ConsentState::HealthForSchool => vec![(
            consent(
                &both,
                vec![Grant {
                    partners: vec!["school-001".into()],
                    categories: vec![Category::Health],
                }],
                None,
            ),
            None,
        )],
        ConsentState::Withdrawn => vec![(
            consent(&both, all_grants(), None),
            Some(Timestamp(now().0 - DAY)),
        )],
        ConsentState::WithdrawnTomorrow => vec![(
            consent(&both, all_grants(), None),
            Some(Timestamp(now().0 + DAY)),
        )],
        ConsentState::Expired => vec![(consent(&both, all_grants(), Some(day(2026, 5, 1))), None)],
    }
}

/// The family's events: (name, source, category, safeguarding basis, persons).
#[derive(Debug, Clone, Copy)]
enum Ev {
    /// The school's attendance concern about the child, on consent.
    School,
    /// A health visitor's contact with the child, on consent.
    Health,
    /// A PPN about the child and mother, on a safeguarding basis.
    Ppn,
    /// A youth justice contact about the child, on a safeguarding basis.
    Yos,
    /// Early intervention's assessment of child and mother, on consent.
    EarlyHelp,
}

fn event(e: Ev) -> (EventFacts<'static>, Vec<&'static [&'static str]>) {
    let (source, category, safeguarding, persons): (_, _, _, Vec<&[&str]>) = match e {
        Ev::School => ("school-001", Category::Education, false, vec![CHILD]),
        Ev::Health => ("nhs-community", Category::Health, false, vec![CHILD]),
        Ev::Ppn => ("police", Category::Police, true, vec![CHILD, MOTHER]),
        Ev::Yos => ("yos", Category::YouthJustice, true, vec![CHILD]),
        Ev::EarlyHelp => (
            "early-intervention",
            Category::EarlyHelp,
            false,
            vec![CHILD, MOTHER],
        ),
    };
    (
        EventFacts {
            source,
            category,
            safeguarding,
        },
        persons,
    )
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Expect {
    Shown,
    Withheld(Withheld),
    Refused,
}

/// One read of one event, through the same functions the projection uses.
fn read(v: &Viewer, grant: Option<Timestamp>, c: ConsentState, e: Ev) -> Expect {
    let n = now();
    if standing(v, &facts(), grant, n).is_none() {
        return Expect::Refused;
    }
    let cs = consents(c);
    let (ev, persons) = event(e);
    let consented = || {
        persons.iter().all(|p| {
            covers_person(
                cs.iter().map(|(c, w)| (c, *w)),
                p,
                &v.organisation,
                ev.category,
                n,
            )
        })
    };
    match decide(v, &ev, consented) {
        Ok(()) => Expect::Shown,
        Err(w) => Expect::Withheld(w),
    }
}

#[test]
fn the_table_of_cases() {
    use self::Withheld::{NoConsent, SafeguardingLeadsOnly};
    use ConsentState as C;
    use Expect::{Refused, Shown, Withheld as W};
    let school = viewer("teacher", "school-001", &[Role::Practitioner]);
    let school_dsl = viewer(
        "dsl",
        "school-001",
        &[Role::Practitioner, Role::SafeguardingLead],
    );
    let lead = viewer("ei-worker", "early-intervention", &[Role::Practitioner]);
    let other_ei = viewer("ei-other", "early-intervention", &[Role::Practitioner]);
    let yos = viewer("yot", "yos", &[Role::Practitioner]);
    let trust = viewer("sw", "childrens-trust", &[Role::Practitioner]);
    let trust_dsl = viewer("sw-lead", "childrens-trust", &[Role::SafeguardingLead]);
    let police = viewer("pc", "police", &[Role::Practitioner]);
    let nhs = viewer("hv", "nhs-community", &[Role::Practitioner]);
    let auditor = viewer("aud", "childrens-trust", &[Role::Auditor]);
    let admin = viewer("adm", "early-intervention", &[Role::Admin]);
    let glass = Some(Timestamp(now().0 + 3_600_000));
    let lapsed = Some(Timestamp(now().0 - 1));

    #[rustfmt::skip]
    type Case<'a> = (&'a str, &'a Viewer, Option<Timestamp>, ConsentState, Ev, Expect);
    let cases: Vec<Case> = vec![
        // A practitioner with an open involvement.
        (
            "school sees its own event without consent",
            &school,
            None,
            C::None,
            Ev::School,
            Shown,
        ),
        (
            "school: health withheld without consent",
            &school,
            None,
            C::None,
            Ev::Health,
            W(NoConsent),
        ),
        (
            "school: early help withheld without consent",
            &school,
            None,
            C::None,
            Ev::EarlyHelp,
            W(NoConsent),
        ),
        (
            "school: PPN is safeguarding, leads only",
            &school,
            None,
            C::None,
            Ev::Ppn,
            W(SafeguardingLeadsOnly),
        ),
        (
            "school: full consent shows health",
            &school,
            None,
            C::All,
            Ev::Health,
            Shown,
        ),
        (
            "school: full consent shows early help",
            &school,
            None,
            C::All,
            Ev::EarlyHelp,
            Shown,
        ),
        (
            "school: full consent shows the PPN",
            &school,
            None,
            C::All,
            Ev::Ppn,
            Shown,
        ),
        (
            "school: child-only consent hides the event about the mother too",
            &school,
            None,
            C::ChildOnly,
            Ev::EarlyHelp,
            W(NoConsent),
        ),
        (
            "school: child-only consent shows the child's health contact",
            &school,
            None,
            C::ChildOnly,
            Ev::Health,
            Shown,
        ),
        (
            "school: child-only consent, PPN about the mother too",
            &school,
            None,
            C::ChildOnly,
            Ev::Ppn,
            W(SafeguardingLeadsOnly),
        ),
        (
            "school: consent without special categories hides health",
            &school,
            None,
            C::NoSpecial,
            Ev::Health,
            W(NoConsent),
        ),
        (
            "school: consent without special categories shows early help",
            &school,
            None,
            C::NoSpecial,
            Ev::EarlyHelp,
            Shown,
        ),
        (
            "school: health consent for the school shows health",
            &school,
            None,
            C::HealthForSchool,
            Ev::Health,
            Shown,
        ),
        (
            "school: health consent does not cover youth justice",
            &school,
            None,
            C::HealthForSchool,
            Ev::Yos,
            W(SafeguardingLeadsOnly),
        ),
        (
            "school: withdrawn consent hides health",
            &school,
            None,
            C::Withdrawn,
            Ev::Health,
            W(NoConsent),
        ),
        (
            "school: withdrawn consent still shows its own",
            &school,
            None,
            C::Withdrawn,
            Ev::School,
            Shown,
        ),
        (
            "school: withdrawal effective tomorrow, still shown",
            &school,
            None,
            C::WithdrawnTomorrow,
            Ev::Health,
            Shown,
        ),
        (
            "school: expired consent hides early help",
            &school,
            None,
            C::Expired,
            Ev::EarlyHelp,
            W(NoConsent),
        ),
        // A designated safeguarding lead.
        (
            "school DSL sees the PPN without consent",
            &school_dsl,
            None,
            C::None,
            Ev::Ppn,
            Shown,
        ),
        (
            "school DSL sees youth justice (safeguarding) without consent",
            &school_dsl,
            None,
            C::None,
            Ev::Yos,
            Shown,
        ),
        (
            "school DSL: health on consent still needs consent",
            &school_dsl,
            None,
            C::None,
            Ev::Health,
            W(NoConsent),
        ),
        (
            "school DSL: withdrawn consent, safeguarding still shown",
            &school_dsl,
            None,
            C::Withdrawn,
            Ev::Ppn,
            Shown,
        ),
        // The lead practitioner and their colleagues.
        (
            "lead practitioner sees own org's event",
            &lead,
            None,
            C::None,
            Ev::EarlyHelp,
            Shown,
        ),
        (
            "lead practitioner: school event needs consent",
            &lead,
            None,
            C::None,
            Ev::School,
            W(NoConsent),
        ),
        (
            "lead practitioner: consent shows school event",
            &lead,
            None,
            C::NoSpecial,
            Ev::School,
            Shown,
        ),
        (
            "colleague of the lead has open involvement through the org",
            &other_ei,
            None,
            C::All,
            Ev::Health,
            Shown,
        ),
        // Team around the family.
        (
            "YOS attended TAF: sees own event",
            &yos,
            None,
            C::None,
            Ev::Yos,
            Shown,
        ),
        (
            "YOS attended TAF: health needs consent",
            &yos,
            None,
            C::HealthForSchool,
            Ev::Health,
            W(NoConsent),
        ),
        (
            "YOS attended TAF: full consent shows health",
            &yos,
            None,
            C::All,
            Ev::Health,
            Shown,
        ),
        // No standing.
        (
            "children's trust has no relationship: refused",
            &trust,
            None,
            C::All,
            Ev::School,
            Refused,
        ),
        (
            "a safeguarding lead without relationship: refused",
            &trust_dsl,
            None,
            C::None,
            Ev::Ppn,
            Refused,
        ),
        (
            "police closed their case: refused even for own event",
            &police,
            None,
            C::All,
            Ev::Ppn,
            Refused,
        ),
        (
            "NHS has no events about the family: refused",
            &nhs,
            None,
            C::All,
            Ev::Health,
            Refused,
        ),
        (
            "auditor cannot read families",
            &auditor,
            None,
            C::All,
            Ev::School,
            Refused,
        ),
        (
            "admin cannot read families",
            &admin,
            None,
            C::All,
            Ev::School,
            Refused,
        ),
        // Break glass.
        (
            "break glass grants standing: own category rules still apply",
            &trust,
            glass,
            C::None,
            Ev::School,
            W(NoConsent),
        ),
        (
            "break glass with consent shows the event",
            &trust,
            glass,
            C::All,
            Ev::School,
            Shown,
        ),
        (
            "break-glass safeguarding lead sees the PPN",
            &trust_dsl,
            glass,
            C::None,
            Ev::Ppn,
            Shown,
        ),
        (
            "police break glass sees its own event",
            &police,
            glass,
            C::None,
            Ev::Ppn,
            Shown,
        ),
        (
            "a lapsed break-glass grant: refused",
            &trust,
            lapsed,
            C::All,
            Ev::School,
            Refused,
        ),
        (
            "an auditor cannot break glass",
            &auditor,
            glass,
            C::All,
            Ev::School,
            Refused,
        ),
    ];
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, v, grant, c, e, want) in &cases {
        let got = read(v, *grant, *c, *e);
        if got != *want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn standing_is_explained() {
    let f = facts();
    let n = now();
    let lead = viewer("ei-worker", "early-intervention", &[Role::Practitioner]);
    assert_eq!(
        standing(&lead, &f, None, n),
        Some(Standing::LeadPractitioner)
    );
    let yos = viewer("y", "yos", &[Role::Practitioner]);
    assert_eq!(standing(&yos, &f, None, n), Some(Standing::TeamMember));
    // A year and a day after the meeting the TAF standing lapses.
    let later = Timestamp(n.0 + 306 * DAY);
    assert_eq!(standing(&yos, &f, None, later), None);
}

#[test]
fn categories_by_kind() {
    assert_eq!(category_of("health_contact", None), Category::Health);
    assert_eq!(
        category_of("health_contact", Some(Category::Education)),
        Category::Health
    );
    assert_eq!(
        category_of("referral_made", Some(Category::SocialCare)),
        Category::SocialCare
    );
    assert_eq!(category_of("referral_made", None), Category::EarlyHelp);
    assert!(category_allowed("referral_made", Category::Health));
    assert!(!category_allowed("exclusion", Category::Health));
    for c in Category::ALL {
        assert_eq!(Category::parse(c.name()), Some(c));
    }
}

#[test]
fn consent_is_active_between_given_and_expiry_until_withdrawn() {
    let c = consent(CHILD, all_grants(), Some(day(2026, 12, 31)));
    assert!(!c.active_at(day(2026, 1, 9).start(), None));
    assert!(c.active_at(day(2026, 1, 10).start(), None));
    assert!(c.active_at(Timestamp(day(2026, 12, 31).start().0 + DAY - 1), None));
    assert!(!c.active_at(day(2027, 1, 1).start(), None));
    let w = day(2026, 3, 1).start();
    assert!(c.active_at(Timestamp(w.0 - 1), Some(w)));
    assert!(!c.active_at(w, Some(w)));
}

/// One fact of a generated family history.
#[derive(Debug, Clone)]
enum Gen {
    Event(usize, usize),
    Lead(usize),
    Team(Vec<usize>),
}

const ORGS: [&str; 6] = [
    "police",
    "childrens-trust",
    "yos",
    "nhs-community",
    "school-001",
    "early-intervention",
];
const KINDS: [&str; 4] = [
    "referral_made",
    "health_contact",
    "case_closed",
    "public_protection_notification",
];

fn gen_fact() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (0..ORGS.len(), 0..KINDS.len()).prop_map(|(o, k)| Gen::Event(o, k)),
        (0..ORGS.len()).prop_map(Gen::Lead),
        proptest::collection::vec(0..ORGS.len(), 0..4).prop_map(Gen::Team),
    ]
}

proptest! {
    /// Whatever a family's history, consents and the viewer's roles, a viewer whose
    /// organisation never published about the family, never led it, never attended its TAF
    /// meetings and holds no break-glass grant sees nothing: the read is refused before any
    /// event is looked at.
    #[test]
    fn no_standing_sees_nothing(
        history in proptest::collection::vec(gen_fact(), 0..40),
        viewer_org in 0..ORGS.len(),
        lead_role in any::<bool>(),
        grant_lapsed_by in 0i64..10_000_000,
    ) {
        let org = ORGS[viewer_org];
        let mut f = FamilyFacts::default();
        let attendees: Vec<Vec<String>> = history
            .iter()
            .map(|g| match g {
                Gen::Team(a) => a
                    .iter()
                    .filter(|&&o| o != viewer_org)
                    .map(|&o| ORGS[o].to_string())
                    .collect(),
                _ => vec![],
            })
            .collect();
        for (i, g) in history.iter().enumerate() {
            match g {
                Gen::Event(o, k) if *o != viewer_org => f.add(Fact::Event { source: ORGS[*o], kind: KINDS[*k] }),
                Gen::Lead(o) if *o != viewer_org => f.add(Fact::Lead { practitioner_id: "someone", organisation: ORGS[*o] }),
                Gen::Team(_) => f.add(Fact::Team { attendees: &attendees[i], at: Timestamp(now().0 - DAY) }),
                _ => {}
            }
        }
        let mut roles = vec![Role::Practitioner];
        if lead_role { roles.push(Role::SafeguardingLead); }
        let v = viewer("someone-else", org, &roles);
        // A grant that has lapsed counts for nothing, and consent is not standing: it is
        // consulted only per event, after standing.
        let grant = Some(Timestamp(now().0 - grant_lapsed_by));
        prop_assert_eq!(standing(&v, &f, grant, now()), None);
    }

    /// An organisation whose latest event about a family is a case closure, and that holds no
    /// other standing, is refused; one whose latest event is anything else stands.
    #[test]
    fn closing_the_case_ends_the_involvement(
        kinds in proptest::collection::vec(0..KINDS.len(), 1..20),
    ) {
        let mut f = FamilyFacts::default();
        for &k in &kinds {
            f.add(Fact::Event { source: "school-001", kind: KINDS[k] });
        }
        let v = viewer("t", "school-001", &[Role::Practitioner]);
        let last_closes = KINDS[*kinds.last().unwrap_or(&0)] == "case_closed";
        prop_assert_eq!(standing(&v, &f, None, now()).is_none(), last_closes);
    }
}
