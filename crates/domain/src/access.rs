//! Consent, lawful basis and the access rule: who may see which event of a family, and why.
//!
//! Everything here is decided from values: the viewer, facts folded from the family's events,
//! the consents recorded in the log, and the time of reading passed in. The server gathers the
//! values and records every decision in the access log; this module makes the decision.
//!
//! The rule, in order:
//! 1. **Standing.** The viewer must be the family's lead practitioner, belong to an
//!    organisation that attended a Team Around the Family meeting in the last 12 months, or
//!    belong to an organisation with an open involvement (its latest event about the family is
//!    not a case closure). Otherwise the read is refused, unless the viewer holds an unexpired
//!    break-glass grant for the family.
//! 2. **Per event.** An event is shown if the viewer's organisation published it; or consent
//!    active at the time of reading covers the viewer's organisation and the event's category
//!    for every person the event is about; or its basis is safeguarding and the viewer is a
//!    safeguarding lead. Anything else is withheld and counted under a general reason.

use serde::{Deserialize, Serialize};

use crate::event::{LawfulBasis, Payload};
use crate::time::{Date, Timestamp, MS_PER_DAY};

/// Categories of information a consent can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Schools: attendance, exclusions.
    Education,
    /// Health services (a special category).
    Health,
    /// Police information (criminal-offence data: a special category).
    Police,
    /// Youth justice (criminal-offence data: a special category).
    YouthJustice,
    /// Children's social care.
    SocialCare,
    /// Early help: referrals, assessments, meetings, interventions, outcomes.
    EarlyHelp,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 6] = [
        Category::Education,
        Category::Health,
        Category::Police,
        Category::YouthJustice,
        Category::SocialCare,
        Category::EarlyHelp,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Category::Education => "education",
            Category::Health => "health",
            Category::Police => "police",
            Category::YouthJustice => "youth_justice",
            Category::SocialCare => "social_care",
            Category::EarlyHelp => "early_help",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == s)
    }

    /// This category's bit in a set of categories (see [`consented_categories`]).
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Health and criminal-offence data: consent must name the category, or the basis must be
    /// safeguarding.
    pub fn special(self) -> bool {
        matches!(
            self,
            Category::Health | Category::Police | Category::YouthJustice
        )
    }
}

/// The category of an event of payload kind `kind`: fixed for kinds that only one kind of
/// service records; otherwise the partner's stated category, or early help.
pub fn category_of(kind: &str, stated: Option<Category>) -> Category {
    match kind {
        "health_contact" => Category::Health,
        "public_protection_notification" => Category::Police,
        "youth_justice_contact" => Category::YouthJustice,
        "attendance_concern" | "exclusion" => Category::Education,
        _ => stated.unwrap_or(Category::EarlyHelp),
    }
}

/// Whether a partner may state `stated` for an event of payload kind `kind` (kinds with a
/// fixed category accept only that one).
pub fn category_allowed(kind: &str, stated: Category) -> bool {
    category_of(kind, Some(stated)) == stated
}

/// Whether an event of this kind closes its publisher's involvement with the family.
pub fn closes_involvement(kind: &str) -> bool {
    kind == "case_closed"
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the families they work with; records consent and sharing decisions.
    Practitioner,
    /// A designated safeguarding lead: a practitioner who also sees safeguarding-basis events.
    SafeguardingLead,
    /// Reads the access log and audits the log.
    Auditor,
    /// The data protection officer: reads the access log.
    Dpo,
    /// Administers the hub; reviews match candidates.
    Admin,
}

impl Role {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Practitioner => "practitioner",
            Role::SafeguardingLead => "safeguarding_lead",
            Role::Auditor => "auditor",
            Role::Dpo => "dpo",
            Role::Admin => "admin",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Practitioner,
            Role::SafeguardingLead,
            Role::Auditor,
            Role::Dpo,
            Role::Admin,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
}

/// A person reading the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    /// The user id (a JWT's `sub`).
    pub user_id: String,
    /// Their organisation: a partner id.
    pub organisation: String,
    /// Their roles.
    pub roles: Vec<Role>,
}

impl Viewer {
    /// Whether the viewer holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the viewer may read families at all (practitioners and safeguarding leads).
    pub fn reads_families(&self) -> bool {
        self.has(Role::Practitioner) || self.has(Role::SafeguardingLead)
    }
}

/// Who gave a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentGiver {
    /// The young person themself.
    YoungPerson,
    /// A person with parental responsibility.
    ParentalResponsibility,
}

/// Which partners may see which categories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Partner ids; `*` means every partner.
    pub partners: Vec<String>,
    /// The categories those partners may see.
    pub categories: Vec<Category>,
}

impl Grant {
    fn names(&self, organisation: &str) -> bool {
        self.partners.iter().any(|p| p == "*" || p == organisation)
    }

    fn covers(&self, organisation: &str, category: Category) -> bool {
        self.categories.contains(&category) && self.names(organisation)
    }
}

/// A consent given, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentGiven {
    /// The consent's id: the reference events cite.
    pub consent_id: String,
    /// The name of the person who gave it.
    pub given_by: String,
    /// The young person, or someone with parental responsibility.
    pub giver: ConsentGiver,
    /// The persons it covers, by person id when recorded.
    pub persons: Vec<String>,
    /// The partner records (`source/local_id`) it covers: the persons' records when recorded,
    /// and any named directly. Coverage is decided on these, which do not change when people
    /// are re-linked.
    pub records: Vec<String>,
    /// What may be shared with whom.
    pub grants: Vec<Grant>,
    /// Why (the purpose told to the family).
    pub purpose: String,
    /// The day it was given.
    pub given_on: Date,
    /// When it is to be reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_on: Option<Date>,
    /// The last day it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<Date>,
    /// Who recorded it (user id).
    pub recorded_by: String,
    /// Their organisation.
    pub organisation: String,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

impl ConsentGiven {
    /// Whether it names `category` for some partner.
    pub fn names_category(&self, category: Category) -> bool {
        self.grants.iter().any(|g| g.categories.contains(&category))
    }

    /// Whether it lets `organisation` see `category`.
    pub fn grants_to(&self, organisation: &str, category: Category) -> bool {
        self.grants.iter().any(|g| g.covers(organisation, category))
    }

    /// Whether it names any of these partner records.
    pub fn names_any(&self, records: &[&str]) -> bool {
        self.records.iter().any(|r| records.contains(&r.as_str()))
    }

    /// Whether it holds at `now`, given the time it was withdrawn from (if it was).
    pub fn active_at(&self, now: Timestamp, withdrawn_from: Option<Timestamp>) -> bool {
        let today = Date::of(now);
        self.given_on <= today
            && self.expires_on.is_none_or(|e| today <= e)
            && withdrawn_from.is_none_or(|w| now < w)
    }
}

/// A consent withdrawn, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentWithdrawn {
    /// This withdrawal's id.
    pub withdrawal_id: String,
    /// The consent withdrawn.
    pub consent_id: String,
    /// From when it no longer holds.
    pub effective_from: Timestamp,
    /// Why, as the family put it.
    #[serde(default)]
    pub reason: String,
    /// Who recorded it.
    pub recorded_by: String,
    /// Their organisation.
    pub organisation: String,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

/// A practitioner's decision to share or not to share, with the reason (golden rule 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingDecision {
    /// The decision's id.
    pub decision_id: String,
    /// The family it is about.
    pub family_id: String,
    /// The persons it is about.
    #[serde(default)]
    pub person_ids: Vec<String>,
    /// Share (true) or not (false).
    pub share: bool,
    /// With which partners.
    #[serde(default)]
    pub with_partners: Vec<String>,
    /// What information.
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Why: the reason for sharing, or for not sharing.
    pub reason: String,
    /// The practitioner.
    pub decided_by: String,
    /// Their organisation.
    pub organisation: String,
    /// When.
    pub decided_at: Timestamp,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessOutcome {
    /// Everything asked for was shown.
    Allowed,
    /// Some events were withheld.
    Filtered,
    /// The read was refused.
    Refused,
}

/// One read of the hub, as recorded in the access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEntry {
    /// This entry's id.
    pub access_id: String,
    /// When.
    pub at: Timestamp,
    /// Who (user id, or partner id for a system).
    pub user_id: String,
    /// Their organisation.
    pub organisation: String,
    /// Their roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The call, e.g. `GetTimeline`.
    pub method: String,
    /// What was asked, in words.
    pub asked: String,
    /// The family concerned, if one was.
    #[serde(default)]
    pub family_id: String,
    /// The persons concerned.
    #[serde(default)]
    pub person_ids: Vec<String>,
    /// Events shown.
    #[serde(default)]
    pub shown: u64,
    /// Events withheld.
    #[serde(default)]
    pub withheld: u64,
    /// Allowed, filtered or refused.
    pub outcome: AccessOutcome,
    /// Why it was refused, or how the viewer stands to the family.
    #[serde(default)]
    pub standing: String,
    /// The reason the viewer gave.
    #[serde(default)]
    pub reason: String,
    /// Whether the viewer broke glass.
    #[serde(default)]
    pub break_glass: bool,
    /// Until when a break-glass grant made by this read holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_until: Option<Timestamp>,
}

/// How long a TAF meeting's attendees keep their standing.
pub const TEAM_STANDING_MS: i64 = 365 * MS_PER_DAY;

/// Facts about a family that decide standing, folded from all its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyFacts {
    /// The current lead practitioner: (user id, organisation).
    pub lead: Option<(String, String)>,
    /// Organisations at TAF meetings, with the latest meeting each attended.
    pub team: Vec<(String, Timestamp)>,
    /// Organisations with events about the family, and whether their involvement is open.
    pub involvements: Vec<(String, bool)>,
}

/// What standing needs from one event (all of a family's events, in time order).
#[derive(Debug, Clone, Copy)]
pub enum Fact<'a> {
    /// Any event: its publisher and kind.
    Event {
        /// Publisher.
        source: &'a str,
        /// Payload kind.
        kind: &'a str,
    },
    /// A lead practitioner was assigned.
    Lead {
        /// User id.
        practitioner_id: &'a str,
        /// Organisation.
        organisation: &'a str,
    },
    /// A TAF meeting took place.
    Team {
        /// Attending partner ids.
        attendees: &'a [String],
        /// When.
        at: Timestamp,
    },
}

impl FamilyFacts {
    /// Folds one fact in (call in time order).
    pub fn add(&mut self, fact: Fact<'_>) {
        match fact {
            Fact::Event { source, kind } => {
                let open = !closes_involvement(kind);
                match self.involvements.iter_mut().find(|(s, _)| s == source) {
                    Some(x) => x.1 = open,
                    None => self.involvements.push((source.to_string(), open)),
                }
            }
            Fact::Lead {
                practitioner_id,
                organisation,
            } => self.lead = Some((practitioner_id.to_string(), organisation.to_string())),
            Fact::Team { attendees, at } => {
                for a in attendees {
                    match self.team.iter_mut().find(|(s, _)| s == a) {
                        Some(x) => x.1 = x.1.max(at),
                        None => self.team.push((a.clone(), at)),
                    }
                }
            }
        }
    }

    /// The facts beyond publisher and kind that a payload carries.
    pub fn payload_fact(p: &Payload, at: Timestamp) -> Option<Fact<'_>> {
        match p {
            Payload::LeadPractitionerAssigned {
                practitioner_id,
                organisation,
                ..
            } => Some(Fact::Lead {
                practitioner_id,
                organisation,
            }),
            Payload::TeamAroundFamilyMeeting { attendees, .. } => {
                Some(Fact::Team { attendees, at })
            }
            _ => None,
        }
    }
}

/// A break-glass grant: a viewer's time-limited access to a family without standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The viewer.
    pub user_id: String,
    /// The family, when granted.
    pub family_id: String,
    /// Its members, when granted (a grant follows them if the family id changes).
    pub person_ids: Vec<String>,
    /// Until when.
    pub until: Timestamp,
}

/// How a viewer stands to a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The family's lead practitioner.
    LeadPractitioner,
    /// Their organisation attended a TAF meeting in the last 12 months.
    TeamMember,
    /// Their organisation's involvement is open.
    OpenInvolvement,
    /// A break-glass grant holds until the time given.
    BreakGlass(Timestamp),
}

impl Standing {
    /// A short description for the access log.
    pub fn describe(&self) -> String {
        match self {
            Standing::LeadPractitioner => "lead practitioner".into(),
            Standing::TeamMember => "team around the family".into(),
            Standing::OpenInvolvement => "open involvement".into(),
            Standing::BreakGlass(until) => format!("break glass until {until}"),
        }
    }
}

/// The viewer's standing to the family, if any. `grant` is the viewer's latest break-glass
/// grant for the family, if they have one.
pub fn standing(
    viewer: &Viewer,
    facts: &FamilyFacts,
    grant: Option<Timestamp>,
    now: Timestamp,
) -> Option<Standing> {
    if !viewer.reads_families() {
        return None;
    }
    if facts
        .lead
        .as_ref()
        .is_some_and(|(id, org)| *id == viewer.user_id && *org == viewer.organisation)
    {
        return Some(Standing::LeadPractitioner);
    }
    if facts
        .team
        .iter()
        .any(|(org, at)| *org == viewer.organisation && now.0 - at.0 <= TEAM_STANDING_MS)
    {
        return Some(Standing::TeamMember);
    }
    if facts
        .involvements
        .iter()
        .any(|(org, open)| *open && *org == viewer.organisation)
    {
        return Some(Standing::OpenInvolvement);
    }
    grant.filter(|until| now < *until).map(Standing::BreakGlass)
}

/// Why an event was withheld, in general terms a worker can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Withheld {
    /// No active consent lets the viewer's organisation see this category about everyone the
    /// event is about.
    NoConsent,
    /// Shared on a safeguarding basis: only safeguarding leads see it without consent.
    SafeguardingLeadsOnly,
}

impl Withheld {
    /// Both reasons.
    pub const ALL: [Withheld; 2] = [Withheld::NoConsent, Withheld::SafeguardingLeadsOnly];

    /// The reason's stable name.
    pub fn name(self) -> &'static str {
        match self {
            Withheld::NoConsent => "no_consent",
            Withheld::SafeguardingLeadsOnly => "safeguarding_leads_only",
        }
    }

    /// The reason in words, for a practitioner.
    pub fn explain(self) -> &'static str {
        match self {
            Withheld::NoConsent => {
                "the family's consent does not cover your organisation for this kind of information; ask the lead practitioner"
            }
            Withheld::SafeguardingLeadsOnly => {
                "shared without consent on a safeguarding basis: your designated safeguarding lead can see it"
            }
        }
    }
}

/// What the per-event rule needs to know of an event.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// Publisher.
    pub source: &'a str,
    /// Its category.
    pub category: Category,
    /// Whether its lawful basis is safeguarding.
    pub safeguarding: bool,
}

/// Whether active consent lets `organisation` see `category` about the person whose partner
/// records are `records`. `consents` are the consents to look at, each with the time it was
/// withdrawn from, if it was.
pub fn covers_person<'a>(
    consents: impl IntoIterator<Item = (&'a ConsentGiven, Option<Timestamp>)>,
    records: &[&str],
    organisation: &str,
    category: Category,
    now: Timestamp,
) -> bool {
    consented_categories(consents, records, organisation, now) & category.bit() != 0
}

/// The categories active consent lets `organisation` see about the person whose partner
/// records are `records`, as a set of [`Category::bit`]s.
pub fn consented_categories<'a>(
    consents: impl IntoIterator<Item = (&'a ConsentGiven, Option<Timestamp>)>,
    records: &[&str],
    organisation: &str,
    now: Timestamp,
) -> u8 {
    granted_categories(
        consents.into_iter().filter(|(c, _)| c.names_any(records)),
        organisation,
        now,
    )
}

/// The categories (as bits) that `consents`, already known to name the person, grant
/// `organisation` at `now`: [`consented_categories`] without the check of the records named.
pub fn granted_categories<'a>(
    consents: impl IntoIterator<Item = (&'a ConsentGiven, Option<Timestamp>)>,
    organisation: &str,
    now: Timestamp,
) -> u8 {
    let mut bits = 0;
    for (c, withdrawn) in consents {
        if c.active_at(now, withdrawn) {
            for g in c.grants.iter().filter(|g| g.names(organisation)) {
                for cat in &g.categories {
                    bits |= cat.bit();
                }
            }
        }
    }
    bits
}

/// Whether a lawful basis is safeguarding.
pub fn is_safeguarding(basis: Option<&LawfulBasis>) -> bool {
    matches!(basis, Some(LawfulBasis::Safeguarding { .. }))
}

/// The per-event rule. `consented` says whether active consent covers the viewer's
/// organisation and the event's category for every person the event is about; it is asked only
/// when needed.
pub fn decide(
    viewer: &Viewer,
    event: &EventFacts<'_>,
    consented: impl FnOnce() -> bool,
) -> Result<(), Withheld> {
    // Every way to be shown is tried, the cheap ones first.
    let lead = viewer.has(Role::SafeguardingLead);
    if event.source == viewer.organisation || (event.safeguarding && lead) || consented() {
        return Ok(());
    }
    if event.safeguarding {
        return Err(Withheld::SafeguardingLeadsOnly);
    }
    Err(Withheld::NoConsent)
}

#[cfg(test)]
mod tests;
