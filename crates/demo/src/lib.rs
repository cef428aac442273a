//! A synthetic county for demos and benchmarks: families, their children, and the events every
//! partner publishes about them over three years, with the identifier noise real partner
//! systems have, and the ground truth of who is who.
//!
//! [`County::new`] makes the people; [`County::events`] yields events in time order, as partner
//! systems would publish them. Each partner keeps one record per person (its own local id),
//! fixed when it first meets them, with that partner's habits: the police and schools often
//! lack NHS numbers, practitioners write nicknames, keying errors swap a birth date's day and
//! month or change one digit, names get typos, surnames change or become double-barrelled,
//! families move house. Twins and common names are there on purpose. [`County::truth`] maps
//! each record key (`source/local_id`) to the true person, so `tellonce bench link` can score
//! the linker. Deterministic: the same seed gives the same county and events. The generator
//! uses its own SplitMix64, so it needs nothing but the domain crate.

use std::collections::HashMap;

use tellonce_domain::access::{Category, ConsentGiven, ConsentGiver, Grant};
use tellonce_domain::event::{
    Address, CaseClosureReason, Event, ExclusionKind, LawfulBasis, MeasurePoint, OutcomeInstrument,
    Payload, PpnIncidentType, ReferralDecision, Relationship, RelationshipKind, RiskGrade, Sex,
    Subject, SubjectRole, ThresholdLevel, YouthJusticeKind,
};
use tellonce_domain::sample;
use tellonce_domain::time::{Date, Timestamp, MS_PER_DAY};

/// SplitMix64: a small, fast, seeded generator (deterministic, not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// A uniform choice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// A choice skewed towards the start of the list (common names first).
    pub fn pick_skewed<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let a = self.below(items.len() as u64);
        let b = self.below(items.len() as u64);
        &items[a.min(b) as usize]
    }
}

const GIRLS: &[&str] = &[
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Mia",
    "Ivy",
    "Lily",
    "Isabella",
    "Rosie",
    "Sophia",
    "Grace",
    "Willow",
    "Freya",
    "Florence",
    "Emily",
    "Ella",
    "Poppy",
    "Evie",
    "Elsie",
    "Charlotte",
    "Evelyn",
    "Sienna",
    "Daisy",
    "Phoebe",
    "Sophie",
    "Alice",
    "Harper",
    "Matilda",
    "Ruby",
    "Emilia",
    "Maya",
    "Millie",
    "Isabelle",
    "Eva",
    "Luna",
    "Jessica",
    "Harriet",
    "Eleanor",
    "Zara",
    "Aria",
    "Layla",
    "Hannah",
    "Chloe",
    "Amber",
    "Megan",
    "Rebecca",
    "Abigail",
    "Katie",
    "Lucy",
    "Holly",
];
const BOYS: &[&str] = &[
    "Oliver",
    "George",
    "Noah",
    "Arthur",
    "Harry",
    "Leo",
    "Muhammad",
    "Jack",
    "Charlie",
    "Oscar",
    "Jacob",
    "Henry",
    "Thomas",
    "Freddie",
    "Alfie",
    "Theo",
    "William",
    "Theodore",
    "Archie",
    "Joshua",
    "Alexander",
    "James",
    "Isaac",
    "Edward",
    "Lucas",
    "Tommy",
    "Finley",
    "Max",
    "Logan",
    "Ethan",
    "Teddy",
    "Benjamin",
    "Arlo",
    "Joseph",
    "Sebastian",
    "Harrison",
    "Elijah",
    "Adam",
    "Daniel",
    "Samuel",
    "Louie",
    "Mason",
    "Reuben",
    "Albie",
    "Rory",
    "Jaxon",
    "Hugo",
    "Luca",
    "Zachary",
    "Reggie",
    "Matthew",
    "Nathan",
    "Tyler",
    "Kyle",
    "Connor",
    "Liam",
    "Michael",
];
const WOMEN: &[&str] = &[
    "Sarah",
    "Emma",
    "Laura",
    "Rachel",
    "Kelly",
    "Gemma",
    "Lisa",
    "Claire",
    "Nicola",
    "Donna",
    "Michelle",
    "Stacey",
    "Samantha",
    "Jennifer",
    "Natalie",
    "Amy",
    "Victoria",
    "Kerry",
    "Hayley",
    "Danielle",
    "Leanne",
    "Joanne",
    "Charlotte",
    "Rebecca",
    "Zoe",
    "Louise",
    "Jade",
    "Chelsea",
];
const MEN: &[&str] = &[
    "David",
    "Paul",
    "Mark",
    "Andrew",
    "Richard",
    "Daniel",
    "Christopher",
    "James",
    "Steven",
    "Michael",
    "Matthew",
    "Lee",
    "Craig",
    "Wayne",
    "Darren",
    "Jason",
    "Robert",
    "Anthony",
    "Gary",
    "Stephen",
    "Jonathan",
    "Dean",
    "Ryan",
    "Carl",
    "Scott",
    "Nathan",
    "Adam",
    "Thomas",
];
const SURNAMES: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Thomas",
    "Clarke",
    "Jackson",
    "Wood",
    "Harris",
    "Edwards",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Hughes",
    "Moore",
    "Clark",
    "King",
    "Harrison",
    "Lewis",
    "Baker",
    "Lee",
    "Allen",
    "Morris",
    "Khan",
    "Scott",
    "Watson",
    "Davis",
    "Parker",
    "James",
    "Bennett",
    "Young",
    "Phillips",
    "Richardson",
    "Mitchell",
    "Bailey",
    "Carter",
    "Cook",
    "Singh",
    "Shaw",
    "Bell",
    "Collins",
    "Morgan",
    "Kelly",
    "Begum",
    "Miller",
    "Cox",
    "Hussain",
    "Marshall",
    "Simpson",
    "Price",
    "Anderson",
    "Adams",
    "Wilkinson",
    "Ali",
    "Ahmed",
    "Foster",
    "Ellis",
    "Murphy",
    "Chapman",
    "Mason",
    "Gray",
    "Richards",
    "Webb",
    "Griffiths",
    "Hunt",
    "Palmer",
    "Campbell",
    "Holmes",
    "Mills",
    "Rogers",
    "Barnes",
    "Knight",
    "Matthews",
    "Barker",
    "Powell",
    "Stevens",
    "Kaur",
    "Fisher",
    "Butler",
    "Dixon",
    "Russell",
    "Harvey",
    "Pearson",
    "Graham",
    "Nowak",
    "Kowalski",
    "Achterberg",
    "Oyelaran",
    "Whitfield",
    "Abbott",
    "Fairbrother",
    "Okonkwo",
];
const NICKS: &[(&str, &str)] = &[
    ("William", "Liam"),
    ("William", "Billy"),
    ("Oliver", "Ollie"),
    ("Alexander", "Alex"),
    ("Thomas", "Tom"),
    ("Joshua", "Josh"),
    ("Samuel", "Sam"),
    ("Benjamin", "Ben"),
    ("Daniel", "Danny"),
    ("Charlotte", "Lottie"),
    ("Isabella", "Izzy"),
    ("Jessica", "Jess"),
    ("Rebecca", "Becky"),
    ("Abigail", "Abi"),
    ("Matthew", "Matt"),
    ("Michael", "Mikey"),
    ("Harriet", "Hattie"),
    ("Eleanor", "Ellie"),
    ("Joseph", "Joe"),
    ("Theodore", "Theo"),
    ("Zachary", "Zach"),
    ("James", "Jamie"),
    ("Edward", "Eddie"),
    ("Florence", "Flo"),
    ("Samantha", "Sam"),
    ("Jennifer", "Jen"),
    ("Christopher", "Chris"),
    ("Jonathan", "Jon"),
    ("Stephen", "Steve"),
    ("Victoria", "Vicky"),
    ("Henry", "Harry"),
    ("Frederick", "Freddie"),
];
const STREETS: &[&str] = &[
    "Abington Avenue",
    "Harborough Road",
    "Wellingborough Road",
    "Kettering Road",
    "St Andrew's Road",
    "Billing Road",
    "Weedon Road",
    "Main Road",
    "Church Lane",
    "Mill Lane",
    "Park Avenue",
    "Station Road",
    "High Street",
    "Queen Street",
    "Victoria Road",
    "London Road",
];
const TOWNS: &[(&str, &str)] = &[
    ("Northampton", "NN1"),
    ("Northampton", "NN2"),
    ("Northampton", "NN3"),
    ("Northampton", "NN4"),
    ("Northampton", "NN5"),
    ("Daventry", "NN11"),
    ("Towcester", "NN12"),
    ("Kettering", "NN15"),
    ("Kettering", "NN16"),
    ("Corby", "NN17"),
    ("Corby", "NN18"),
    ("Wellingborough", "NN8"),
    ("Rushden", "NN10"),
    ("Brackley", "NN13"),
];

/// The partners of the demo and their local id prefixes.
pub const PARTNERS: &[(&str, &str)] = &[
    ("police", "NP"),
    ("childrens-trust", "CT"),
    ("yos", "YOS"),
    ("nhs-community", "RX"),
    ("school-001", "SCH"),
    ("early-intervention", "EIT"),
];

/// The generator's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seed.
    pub seed: u64,
    /// Number of families.
    pub families: usize,
    /// Number of events.
    pub events: u64,
    /// The last event's time; events span the three years before it.
    pub end: Timestamp,
}

impl Settings {
    /// The default demo: 10,000 families, 1,000,000 events, three years up to `end`.
    pub fn default_until(end: Timestamp) -> Self {
        Settings {
            seed: 2026,
            families: 10_000,
            events: 1_000_000,
            end,
        }
    }
}

/// A person of the county (the truth).
#[derive(Debug, Clone)]
pub struct Person {
    /// Index in [`County::people`].
    pub id: u32,
    /// Family index.
    pub family: u32,
    /// Given name.
    pub given: String,
    /// Middle name (may be empty).
    pub middle: String,
    /// Family name at birth.
    pub family_name: String,
    /// Family name after a change (and when it changed).
    pub new_family_name: Option<(String, Timestamp)>,
    /// Date of birth.
    pub dob: Date,
    /// Sex.
    pub sex: Sex,
    /// NHS number.
    pub nhs: String,
    /// UPN (school-age children).
    pub upn: Option<String>,
    /// A child (else a parent or carer).
    pub child: bool,
}

/// The NHS number of person `id` of the county.
fn nhs_of(id: u32) -> String {
    sample::nhs_number(1_000_000 + u64::from(id) * 13)
}

impl Person {
    /// A parent or carer.
    fn adult(
        id: u32,
        family: u32,
        given: String,
        family_name: String,
        dob: Date,
        sex: Sex,
    ) -> Self {
        Person {
            id,
            family,
            given,
            middle: String::new(),
            family_name,
            new_family_name: None,
            dob,
            sex,
            nhs: nhs_of(id),
            upn: None,
            child: false,
        }
    }
}

/// A family (the truth).
#[derive(Debug, Clone)]
pub struct Family {
    /// Members (indices into people); parents first.
    pub members: Vec<u32>,
    /// Address before the move.
    pub address: Address,
    /// Address after a move, and when.
    pub moved: Option<(Address, Timestamp)>,
    /// How often the family appears in events (relative).
    pub weight: u32,
}

#[derive(Debug, Clone)]
struct RecordNoise {
    local_id: String,
    subject: Subject,
}

/// The county: its people, its families, and each partner's records of them.
#[derive(Debug)]
pub struct County {
    /// Settings.
    pub settings: Settings,
    /// Every person.
    pub people: Vec<Person>,
    /// Every family.
    pub families: Vec<Family>,
    records: HashMap<(u8, u32), RecordNoise>,
    cumulative: Vec<u64>,
    rng: Rng,
    referrals: HashMap<u32, Vec<(String, String)>>,
    next_id: [u64; 6],
}

fn address(rng: &mut Rng) -> Address {
    let (town, outward) = rng.pick(TOWNS);
    let letters = b"ABDEFGHJLNPQRSTUWXYZ";
    Address {
        line1: format!("{} {}", rng.below(180) + 1, rng.pick(STREETS)),
        line2: String::new(),
        town: town.to_string(),
        postcode: format!(
            "{outward} {}{}{}",
            rng.below(9) + 1,
            letters[rng.below(20) as usize] as char,
            letters[rng.below(20) as usize] as char
        ),
    }
}

fn date_from_days(days: i64) -> Date {
    Date::of(Timestamp(days * MS_PER_DAY))
}

fn typo(rng: &mut Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 5 {
        return s.to_string();
    }
    let i = 1 + rng.below(c.len() as u64 - 2) as usize;
    if rng.chance(0.5) {
        c.swap(i, i + 1);
    } else {
        c.remove(i);
    }
    c.into_iter().collect()
}

impl County {
    /// Makes the county's people and families.
    pub fn new(settings: Settings) -> Self {
        let mut rng = Rng::new(settings.seed);
        let mut people = Vec::new();
        let mut families = Vec::new();
        let end_day = settings.end.0.div_euclid(MS_PER_DAY);
        let start_day = end_day - 3 * 365;
        for f in 0..settings.families as u32 {
            let surname = rng.pick_skewed(SURNAMES).to_string();
            let mut members = Vec::new();
            let mother_dob =
                date_from_days(end_day - 365 * (22 + rng.below(25) as i64) - rng.below(365) as i64);
            let mut push = |people: &mut Vec<Person>, p: Person| {
                members.push(p.id);
                people.push(p);
            };
            let mother_surname = if rng.chance(0.2) {
                rng.pick_skewed(SURNAMES).to_string()
            } else {
                surname.clone()
            };
            let id = people.len() as u32;
            let given = rng.pick_skewed(WOMEN).to_string();
            push(
                &mut people,
                Person::adult(id, f, given, mother_surname, mother_dob, Sex::Female),
            );
            if rng.chance(0.55) {
                let id = people.len() as u32;
                let given = rng.pick_skewed(MEN).to_string();
                let dob =
                    date_from_days(mother_dob.days_since_epoch() - 400 + rng.below(2000) as i64);
                push(
                    &mut people,
                    Person::adult(id, f, given, surname.clone(), dob, Sex::Male),
                );
            }
            let children = 1 + rng.below(4) as usize;
            let twins = children >= 2 && rng.chance(0.04);
            // Siblings: born at least 300 days apart unless twins, and never given the same
            // name or forms of one name (Theo and Theodore).
            let mut siblings: Vec<(Date, String)> = Vec::new();
            for c in 0..children {
                let dob = match siblings.last() {
                    Some((d, _)) if twins && c == 1 => *d,
                    _ => {
                        let mut d = date_from_days(end_day - 1000 - rng.below(16 * 365) as i64);
                        for _ in 0..20 {
                            let near = siblings.iter().any(|(o, _)| {
                                (o.days_since_epoch() - d.days_since_epoch()).abs() < 300
                            });
                            if !near {
                                break;
                            }
                            d = date_from_days(end_day - 1000 - rng.below(16 * 365) as i64);
                        }
                        d
                    }
                };
                let sex = if rng.chance(0.5) {
                    Sex::Female
                } else {
                    Sex::Male
                };
                let names = if sex == Sex::Female { GIRLS } else { BOYS };
                let mut given = rng.pick_skewed(names).to_string();
                for _ in 0..20 {
                    let g = given.to_lowercase();
                    let clash = siblings.iter().any(|(_, o)| {
                        let o = o.to_lowercase();
                        o == g || tellonce_domain::names::are_nicknames(&o, &g)
                    });
                    if !clash {
                        break;
                    }
                    given = rng.pick(names).to_string();
                }
                siblings.push((dob, given.clone()));
                let middle = if rng.chance(0.4) {
                    rng.pick(names).to_string()
                } else {
                    String::new()
                };
                let new_family_name = if rng.chance(0.05) {
                    let other = rng.pick_skewed(SURNAMES);
                    let name = if rng.chance(0.5) {
                        format!("{surname}-{other}")
                    } else {
                        other.to_string()
                    };
                    Some((
                        name,
                        Timestamp((start_day + rng.below(3 * 365) as i64) * MS_PER_DAY),
                    ))
                } else {
                    None
                };
                let age_days = end_day - dob.days_since_epoch();
                let id = people.len() as u32;
                push(
                    &mut people,
                    Person {
                        id,
                        family: f,
                        given,
                        middle,
                        family_name: surname.clone(),
                        new_family_name,
                        dob,
                        sex,
                        nhs: nhs_of(id),
                        upn: (age_days > 4 * 365).then(|| sample::upn(500_000 + u64::from(id) * 7)),
                        child: true,
                    },
                );
            }
            let home = address(&mut rng);
            let moved = rng.chance(0.15).then(|| {
                (
                    address(&mut rng),
                    Timestamp((start_day + rng.below(3 * 365) as i64) * MS_PER_DAY),
                )
            });
            // A few families appear in many events; most in a handful.
            let weight = 1 + (rng.below(100) * rng.below(100) / 400) as u32;
            families.push(Family {
                members,
                address: home,
                moved,
                weight,
            });
        }
        let mut acc = 0u64;
        let cumulative = families
            .iter()
            .map(|f| {
                acc += u64::from(f.weight);
                acc
            })
            .collect();
        County {
            settings,
            people,
            families,
            records: HashMap::new(),
            cumulative,
            rng,
            referrals: HashMap::new(),
            next_id: [0; 6],
        }
    }

    /// The partner's local id for a person: fixed in advance, so consent can name records
    /// before the partner first publishes about the person.
    fn local_id(prefix: &str, partner: u8, person: u32) -> String {
        format!(
            "{prefix}-{:07}",
            1_000_000 + u64::from(person) * 7 + u64::from(partner)
        )
    }

    /// The consent a family gives (the reference its consent-basis events cite): every
    /// member's record at every partner, and a scope that varies by family. Most families
    /// let every partner see everything; some keep health to health and early help; a few
    /// share only with the early intervention team and the NHS.
    pub fn consent_for(&self, family: u32) -> ConsentGiven {
        let f = &self.families[family as usize];
        let mut records = Vec::new();
        for &m in &f.members {
            for (p, (source, prefix)) in PARTNERS.iter().enumerate() {
                records.push(format!("{source}/{}", Self::local_id(prefix, p as u8, m)));
            }
        }
        let all = |partners: &[&str], categories: &[Category]| Grant {
            partners: partners.iter().map(|p| p.to_string()).collect(),
            categories: categories.to_vec(),
        };
        let grants = match Rng::new(self.settings.seed ^ u64::from(family)).below(10) {
            0..=5 => vec![all(&["*"], &Category::ALL)],
            6..=8 => vec![
                all(
                    &["*"],
                    &[
                        Category::Education,
                        Category::EarlyHelp,
                        Category::SocialCare,
                    ],
                ),
                all(
                    &["nhs-community", "early-intervention"],
                    &[Category::Health],
                ),
            ],
            _ => vec![all(
                &["nhs-community", "early-intervention"],
                &[Category::Health, Category::EarlyHelp],
            )],
        };
        let start = Timestamp(self.settings.end.0 - 3 * 365 * MS_PER_DAY - MS_PER_DAY);
        ConsentGiven {
            consent_id: format!("CONSENT-F{family:06}"),
            given_by: "A parent".into(),
            giver: ConsentGiver::ParentalResponsibility,
            persons: Vec::new(),
            records,
            grants,
            purpose: "Early help: so the family only tells its story once".into(),
            given_on: Date::of(start),
            review_on: None,
            expires_on: None,
            recorded_by: "demo".into(),
            organisation: "early-intervention".into(),
            recorded_at: start,
        }
    }

    /// The true person of every partner record made so far, by record key `source/local_id`.
    pub fn truth(&self) -> HashMap<String, u32> {
        self.records
            .iter()
            .map(|(&(p, person), r)| (format!("{}/{}", PARTNERS[p as usize].0, r.local_id), person))
            .collect()
    }

    fn address_at(&self, family: u32, at: Timestamp) -> Address {
        let f = &self.families[family as usize];
        match &f.moved {
            Some((a, when)) if at >= *when => a.clone(),
            _ => f.address.clone(),
        }
    }

    /// The partner's record of a person as of `at` (made on first contact, with its noise).
    fn subject(&mut self, partner: u8, person: u32, at: Timestamp, role: SubjectRole) -> Subject {
        let addr = self.address_at(self.people[person as usize].family, at);
        if let Some(r) = self.records.get(&(partner, person)) {
            let mut s = r.subject.clone();
            // Partners update addresses; names and dates stay as first keyed.
            if partner != 0 || self.rng.chance(0.7) {
                s.address = Some(addr);
            }
            s.role = Some(role);
            return s;
        }
        let p = self.people[person as usize].clone();
        let rng = &mut self.rng;
        let (source, prefix) = PARTNERS[partner as usize];
        let nhs_p = match (source, p.child) {
            ("nhs-community", _) => 1.0,
            ("childrens-trust", true) => 0.85,
            ("childrens-trust", false) => 0.5,
            ("early-intervention", _) => 0.5,
            ("yos", _) => 0.6,
            ("police", _) => 0.15,
            ("school-001", true) => 0.25,
            _ => 0.0,
        };
        let upn_p = match source {
            "school-001" => 1.0,
            "childrens-trust" => 0.4,
            "early-intervention" => 0.2,
            _ => 0.0,
        };
        let informal = matches!(source, "police" | "early-intervention" | "yos");
        let mut given = p.given.clone();
        let mut middle = p.middle.clone();
        if informal && rng.chance(0.12) {
            let nicks: Vec<&str> = NICKS
                .iter()
                .filter(|(f, _)| *f == p.given)
                .map(|(_, n)| *n)
                .collect();
            if !nicks.is_empty() {
                given = rng.pick(&nicks).to_string();
            }
        } else if rng.chance(0.03) {
            given = typo(rng, &given);
        } else if !middle.is_empty() && rng.chance(0.03) {
            std::mem::swap(&mut given, &mut middle);
        }
        let mut family = match &p.new_family_name {
            Some((n, when)) if at >= *when => n.clone(),
            _ => p.family_name.clone(),
        };
        if rng.chance(0.02) {
            family = typo(rng, &family);
        }
        let mut dob = Some(p.dob);
        if rng.chance(0.02) && p.dob.day <= 12 && p.dob.day != p.dob.month {
            dob = Date::new(p.dob.year, p.dob.day, p.dob.month).ok();
        } else if rng.chance(0.01) {
            let d = if p.dob.day >= 10 && p.dob.day < 20 {
                p.dob.day + 10
            } else {
                (p.dob.day % 10) + 10
            };
            dob = Date::new(p.dob.year, p.dob.month, d).ok().or(dob);
        } else if source == "police" && rng.chance(0.01) {
            dob = None;
        }
        let subject = Subject {
            local_id: Some(Self::local_id(prefix, partner, person)),
            nhs_number: rng.chance(nhs_p).then(|| p.nhs.clone()),
            upn: p.upn.clone().filter(|_| rng.chance(upn_p)),
            given_name: Some(given),
            middle_names: (!middle.is_empty()).then_some(middle),
            family_name: Some(family),
            // Without a date of birth the partner must give another identifier (the local id).
            date_of_birth: dob,
            sex: rng.chance(0.95).then_some(p.sex),
            address: Some(addr),
            role: Some(role),
        };
        let local_id = subject.local_id.clone().unwrap_or_default();
        self.records.insert(
            (partner, person),
            RecordNoise {
                local_id,
                subject: subject.clone(),
            },
        );
        subject
    }

    fn pick_family(&mut self) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = self.rng.below(total);
        self.cumulative.partition_point(|&c| c <= x) as u32
    }

    /// The events, in time order, as partner systems publish them.
    pub fn events(&mut self) -> impl Iterator<Item = Event> + '_ {
        let n = self.settings.events;
        let span = 3 * 365 * MS_PER_DAY;
        let start = self.settings.end.0 - span;
        (0..n).map(move |i| {
            let at = Timestamp(start + (i as i128 * span as i128 / n.max(1) as i128) as i64);
            self.event_at(at)
        })
    }

    fn event_at(&mut self, at: Timestamp) -> Event {
        let f = self.pick_family();
        let fam = self.families[f as usize].clone();
        let adults: Vec<u32> = fam
            .members
            .iter()
            .copied()
            .filter(|&m| !self.people[m as usize].child)
            .collect();
        let children: Vec<u32> = fam
            .members
            .iter()
            .copied()
            .filter(|&m| self.people[m as usize].child)
            .collect();
        let child = *self.rng.pick(&children);
        let child_age = self.people[child as usize].dob.age_on(Date::of(at));
        let roll = self.rng.below(100);
        let partner: u8 = match roll {
            0..=21 => 0,
            22..=37 => 4,
            38..=55 => 3,
            56..=59 if child_age >= 10 => 2,
            60..=79 => 5,
            _ => 1,
        };
        let (source, _) = PARTNERS[partner as usize];
        let mut subjects = vec![self.subject(partner, child, at, SubjectRole::Child)];
        let mut relationships = Vec::new();
        let with_parent = match partner {
            0 | 1 | 5 => self.rng.chance(0.6),
            _ => self.rng.chance(0.2),
        };
        if with_parent {
            let parent = adults[0];
            subjects.push(self.subject(partner, parent, at, SubjectRole::ParentCarer));
            relationships.push(Relationship {
                from: 1,
                to: 0,
                kind: RelationshipKind::ParentCarerOf,
            });
            if partner == 0 && children.len() > 1 && self.rng.chance(0.5) {
                let sib = *self.rng.pick(&children);
                if sib != child {
                    subjects.push(self.subject(partner, sib, at, SubjectRole::Sibling));
                    relationships.push(Relationship {
                        from: 1,
                        to: 2,
                        kind: RelationshipKind::ParentCarerOf,
                    });
                }
            }
        }
        let payload = self.payload(partner, f, child_age);
        let safeguarding = matches!(
            payload,
            Payload::PublicProtectionNotification { .. } | Payload::YouthJusticeContact { .. }
        );
        let lawful_basis = if safeguarding {
            LawfulBasis::Safeguarding {
                statutory_basis: "UK GDPR Art 6(1)(e); DPA 2018 Sch 1 para 18".into(),
                reason: "Risk to a child; partners must know to keep the child safe.".into(),
            }
        } else {
            LawfulBasis::Consent {
                consent_reference: format!("CONSENT-F{f:06}"),
            }
        };
        self.next_id[partner as usize] += 1;
        Event {
            event_id: format!(
                "{}-{:08}",
                PARTNERS[partner as usize].1, self.next_id[partner as usize]
            ),
            source: source.into(),
            occurred_at: at,
            subjects,
            relationships,
            lawful_basis: Some(lawful_basis),
            category: None,
            payload,
        }
    }

    fn payload(&mut self, partner: u8, family: u32, child_age: i32) -> Payload {
        let rng = &mut self.rng;
        match partner {
            0 => Payload::PublicProtectionNotification {
                incident_type: *rng.pick(&[
                    PpnIncidentType::DomesticAbuse,
                    PpnIncidentType::DomesticAbuse,
                    PpnIncidentType::MissingEpisode,
                    PpnIncidentType::ChildConcern,
                    PpnIncidentType::ExploitationConcern,
                ]),
                children_present: rng.chance(0.7),
                risk_grade: *rng.pick(&[
                    RiskGrade::Standard,
                    RiskGrade::Standard,
                    RiskGrade::Medium,
                    RiskGrade::High,
                ]),
                summary: "Officers attended; DASH completed; information about support given."
                    .into(),
            },
            4 => match rng.below(10) {
                0 if rng.chance(0.03) => Payload::Exclusion {
                    exclusion_kind: ExclusionKind::Permanent,
                    days: 0,
                    reason: "Serious breach of the behaviour policy".into(),
                },
                0 => Payload::Exclusion {
                    exclusion_kind: ExclusionKind::FixedTerm,
                    days: 1 + rng.below(5) as u32,
                    reason: "Persistent disruptive behaviour".into(),
                },
                _ => Payload::AttendanceConcern {
                    attendance_percent: 60.0 + rng.below(300) as f64 / 10.0,
                    term_start: None,
                    note: "Persistent absence; family contacted.".into(),
                },
            },
            3 => Payload::HealthContact {
                service: rng
                    .pick(&["health visiting", "school nursing", "CAMHS", "midwifery"])
                    .to_string(),
                concern: "Routine contact; emotional wellbeing discussed.".into(),
            },
            2 => Payload::YouthJusticeContact {
                contact_kind: *rng.pick(&[
                    YouthJusticeKind::PreventionDiversion,
                    YouthJusticeKind::OutOfCourtDisposal,
                    YouthJusticeKind::FirstTimeEntrant,
                ]),
                note: format!("Young person aged {child_age} seen with a parent."),
            },
            _ => {
                let pending = self.referrals.entry(family).or_default();
                if !pending.is_empty() && rng.chance(0.4) {
                    let (id, _) = pending.remove(0);
                    let (decision, reason) = if rng.chance(0.8) {
                        (
                            ReferralDecision::Accepted,
                            "Meets the threshold for the service.",
                        )
                    } else {
                        (
                            ReferralDecision::Declined,
                            "Below the threshold; signposted to universal services.",
                        )
                    };
                    return Payload::ReferralDecided {
                        referral_id: id,
                        decision,
                        reason: reason.into(),
                        feedback_sent: true,
                    };
                }
                match rng.below(10) {
                    0..=2 => {
                        let id = format!("REF-{family}-{}", rng.below(1_000_000));
                        let service = rng
                            .pick(&[
                                "ACE support",
                                "domestic abuse support",
                                "CIRV",
                                "youth team",
                                "Early Help MASH",
                            ])
                            .to_string();
                        pending.push((id.clone(), service.clone()));
                        Payload::ReferralMade {
                            referral_id: id,
                            service,
                            reason: "Concerns raised by partners about the family's wellbeing."
                                .into(),
                            threshold_level: *rng.pick(&[
                                ThresholdLevel::EarlyHelp,
                                ThresholdLevel::TargetedEarlyHelp,
                                ThresholdLevel::Statutory,
                            ]),
                        }
                    }
                    3 => Payload::EarlyHelpAssessment {
                        assessment_id: format!("EHA-{family}-{}", rng.below(1000)),
                        threshold_level: *rng
                            .pick(&[ThresholdLevel::EarlyHelp, ThresholdLevel::TargetedEarlyHelp]),
                        summary: "Family agreed a plan with three goals.".into(),
                    },
                    4 => Payload::TeamAroundFamilyMeeting {
                        attendees: vec![
                            "school-001".into(),
                            "early-intervention".into(),
                            "nhs-community".into(),
                        ],
                        summary: "Plan reviewed; attendance improving.".into(),
                    },
                    5 => Payload::LeadPractitionerAssigned {
                        practitioner_id: format!("W{:04}", family % 700),
                        practitioner_name: format!("{} {}", rng.pick(WOMEN), rng.pick(SURNAMES)),
                        organisation: PARTNERS[partner as usize].0.into(),
                    },
                    6 => Payload::InterventionStarted {
                        intervention_id: format!("INT-{family}"),
                        programme: "ACE support".into(),
                        planned_weeks: 12,
                    },
                    7 => Payload::OutcomeMeasured {
                        instrument: OutcomeInstrument::Wemwbs,
                        score: (14 + rng.below(57)) as f64,
                        point: *rng.pick(&[
                            MeasurePoint::Start,
                            MeasurePoint::Review,
                            MeasurePoint::End,
                        ]),
                        intervention_id: format!("INT-{family}"),
                    },
                    8 => Payload::InterventionEnded {
                        intervention_id: format!("INT-{family}"),
                        outcome: "completed".into(),
                    },
                    _ => Payload::CaseClosed {
                        reason: *rng.pick(&[
                            CaseClosureReason::NeedsMet,
                            CaseClosureReason::SteppedDown,
                            CaseClosureReason::Disengaged,
                        ]),
                        note: String::new(),
                    },
                }
            }
        }
    }
}

/// Pairwise linkage quality against the truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkQuality {
    /// Pairs linked that are the same person, over all pairs linked.
    pub precision: f64,
    /// Pairs linked that are the same person, over all same-person pairs.
    pub recall: f64,
    /// Predicted persons that contain records of more than one true person.
    pub false_merges: u64,
    /// Same-person record pairs left apart.
    pub missed_links: u64,
    /// True persons (with at least one record).
    pub persons: u64,
    /// Persons with an open match candidate.
    pub persons_in_review: u64,
}

/// Scores a linking: `assigned` is, for each record, (its predicted person, its true person),
/// and `review` the predicted persons with an open candidate.
pub fn link_quality(
    assigned: &[(u32, u32)],
    review: &std::collections::HashSet<u32>,
) -> LinkQuality {
    let c2 = |n: u64| n * n.saturating_sub(1) / 2;
    let mut pred: HashMap<u32, u64> = HashMap::new();
    let mut truth: HashMap<u32, u64> = HashMap::new();
    let mut both: HashMap<(u32, u32), u64> = HashMap::new();
    let mut truths_of: HashMap<u32, std::collections::HashSet<u32>> = HashMap::new();
    for &(p, t) in assigned {
        *pred.entry(p).or_default() += 1;
        *truth.entry(t).or_default() += 1;
        *both.entry((p, t)).or_default() += 1;
        truths_of.entry(p).or_default().insert(t);
    }
    let tp: u64 = both.values().map(|&n| c2(n)).sum();
    let pp: u64 = pred.values().map(|&n| c2(n)).sum();
    let tt: u64 = truth.values().map(|&n| c2(n)).sum();
    // A true person is "in review" if any of its predicted persons has an open candidate.
    let mut reviewed: std::collections::HashSet<u32> = std::collections::HashSet::new();
    for &(p, t) in assigned {
        if review.contains(&p) {
            reviewed.insert(t);
        }
    }
    LinkQuality {
        precision: if pp == 0 { 1.0 } else { tp as f64 / pp as f64 },
        recall: if tt == 0 { 1.0 } else { tp as f64 / tt as f64 },
        false_merges: truths_of.values().filter(|s| s.len() > 1).count() as u64,
        missed_links: tt - tp,
        persons: truth.len() as u64,
        persons_in_review: reviewed.len() as u64,
    }
}

/// Links every subject of `events` with a fresh linker and scores it against `truth`.
pub fn score_linking(
    linker: &tellonce_domain::identity::Linker,
    truth: &HashMap<String, u32>,
) -> LinkQuality {
    let mut assigned = Vec::with_capacity(linker.record_count());
    for r in 0..linker.record_count() as u32 {
        if let Some(&t) = truth.get(&linker.record(r).key) {
            assigned.push((linker.person_of(r), t));
        }
    }
    let review = linker
        .candidates()
        .iter()
        .filter(|c| linker.is_open(c))
        .flat_map(|c| [linker.person_of(c.a), linker.person_of(c.b)])
        .collect();
    link_quality(&assigned, &review)
}

/// A readable account of up to `max` of each kind of linking error against the truth: false
/// merges (with the links that made them), missed links, and open candidates.
pub fn explain_errors(
    linker: &tellonce_domain::identity::Linker,
    truth: &HashMap<String, u32>,
    max: usize,
) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write;
    let show = |r: u32| {
        let x = linker.record(r);
        format!(
            "{} [{} / {} / {}] {} {:?} nhs={} upn={} postcodes={:?}",
            x.key,
            x.given,
            x.middle,
            x.family,
            x.dob.map(|d| d.to_string()).unwrap_or_default(),
            x.sex,
            x.nhs_number.as_deref().unwrap_or("-"),
            x.upn.as_deref().unwrap_or("-"),
            x.postcodes
        )
    };
    let truth_of = |r: u32| truth.get(&linker.record(r).key).copied();
    let mut by_pred: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut by_truth: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for r in 0..linker.record_count() as u32 {
        by_pred.entry(linker.person_of(r)).or_default().push(r);
        if let Some(t) = truth_of(r) {
            by_truth.entry(t).or_default().push(r);
        }
    }
    let mut out = String::new();
    let merged = by_pred.values().filter(|rs| {
        rs.iter()
            .map(|&r| truth_of(r))
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    });
    for rs in merged.take(max) {
        let _ = writeln!(out, "FALSE MERGE");
        for &r in rs {
            let _ = writeln!(out, "   true person {:?}: {}", truth_of(r), show(r));
        }
        for l in linker.person_links(linker.person_of(rs[0])) {
            let _ = writeln!(
                out,
                "   link {} - {}: {:?}",
                linker.record(l.a).key,
                linker.record(l.b).key,
                l.why
            );
        }
    }
    let missed = by_truth.values().filter(|rs| {
        rs.iter()
            .map(|&r| linker.person_of(r))
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    });
    for rs in missed.take(max) {
        let _ = writeln!(out, "MISSED");
        for &r in rs {
            let _ = writeln!(out, "   person {}: {}", linker.person_of(r), show(r));
        }
    }
    for c in linker
        .candidates()
        .iter()
        .filter(|c| linker.is_open(c))
        .take(max)
    {
        let same = truth_of(c.a) == truth_of(c.b);
        let fields: Vec<String> = c
            .score
            .fields
            .iter()
            .map(|f| format!("{}={}", f.field, f.agreement))
            .collect();
        let _ = writeln!(
            out,
            "CANDIDATE {} same person: {same}, score {:.1} {fields:?}\n   {}\n   {}",
            c.id,
            c.score.total,
            show(c.a),
            show(c.b)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tellonce_domain::identity::Linker;

    fn run(families: usize, events: u64) -> (LinkQuality, usize) {
        let mut county = County::new(Settings {
            seed: 7,
            families,
            events,
            end: Timestamp(1_790_000_000_000),
        });
        let mut linker = Linker::new();
        for (i, e) in county.events().enumerate() {
            linker.apply_event(i as u64, &e);
        }
        let truth = county.truth();
        (score_linking(&linker, &truth), linker.record_count())
    }

    fn debug_dump() {
        let mut county = County::new(Settings {
            seed: 7,
            families: 1000,
            events: 100_000,
            end: Timestamp(1_790_000_000_000),
        });
        let mut linker = Linker::new();
        for (i, e) in county.events().enumerate() {
            linker.apply_event(i as u64, &e);
        }
        eprintln!("{}", explain_errors(&linker, &county.truth(), 25));
    }

    #[test]
    fn same_seed_same_events() {
        let s = Settings {
            seed: 3,
            families: 50,
            events: 200,
            end: Timestamp(1_790_000_000_000),
        };
        let a: Vec<Event> = County::new(s.clone()).events().collect();
        let b: Vec<Event> = County::new(s).events().collect();
        assert_eq!(a, b);
    }

    #[test]
    fn events_are_valid() {
        let end = Timestamp(1_790_000_000_000);
        let mut county = County::new(Settings {
            seed: 5,
            families: 200,
            events: 5_000,
            end,
        });
        for e in county.events() {
            let source = e.source.clone();
            if let Err(err) = tellonce_domain::check(e, &source, end) {
                panic!("generated an invalid event: {err:?}");
            }
        }
    }

    #[test]
    fn linking_meets_the_quality_targets_on_a_small_county() {
        let (q, records) = run(1_000, 100_000);
        eprintln!("{q:?} records {records}");
        if std::env::var("DEMO_DEBUG").is_ok() {
            debug_dump();
        }
        assert!(q.false_merges == 0 || q.precision >= 0.999, "{q:?}");
        assert!(q.recall >= 0.97, "{q:?}");
        assert!(
            (q.persons_in_review as f64) < 0.02 * q.persons as f64,
            "{q:?}"
        );
    }
}
