//! What scoring reads first of each record, kept together and apart from the record.
//!
//! Scoring a new record against the persons sharing a block with it first asks whether a
//! date of birth and a given name agree (without both, no link is possible). Read from the
//! records, each comparison waited for memory: the record (large, and scattered among the
//! others), then the given name's and the middle names' bytes on the heap. A [`Card`] holds
//! those fields inline, one cache line per record, in a list beside the records; the record
//! itself is read only for the persons that pass, and for names too long for a card.

use super::inline::Short;
use super::{first_word, SubjectRecord};
use crate::names;
use crate::time::Date;

/// The parts of a record's names that decide whether given names agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Given<'a> {
    /// The given name, normalised.
    pub(super) name: &'a str,
    /// Its nickname groups (`names::nickname_groups_of`).
    pub(super) nicknames: u64,
    /// The first of the middle names, normalised (empty without middle names).
    pub(super) middle_first: &'a str,
}

impl<'a> Given<'a> {
    /// The parts of record `r` (its nickname groups looked up: a card keeps them).
    pub(super) fn of(r: &'a SubjectRecord) -> Given<'a> {
        Given {
            name: &r.given,
            nicknames: names::nickname_groups_of(&r.given),
            middle_first: first_word(&r.middle),
        }
    }
}

/// The longest given or middle name a card keeps, in bytes (normalised given names are mostly
/// under 12; the card then fits a cache line).
const GIVEN_CAP: usize = 20;

/// What scoring compares first of one record: date of birth and the given-name parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Card {
    nicknames: u64,
    /// The record's date of birth.
    pub(super) dob: Option<Date>,
    given: Short<GIVEN_CAP>,
    middle_first: Short<GIVEN_CAP>,
}

impl Card {
    /// The card of record `r`.
    pub(super) fn of(r: &SubjectRecord) -> Card {
        let g = Given::of(r);
        Card {
            nicknames: g.nicknames,
            dob: r.dob,
            given: Short::of(g.name),
            middle_first: Short::of(g.middle_first),
        }
    }

    /// The given-name parts, or `None` when a name was too long to keep (then the record's
    /// are compared).
    pub(super) fn given(&self) -> Option<Given<'_>> {
        Some(Given {
            name: self.given.get()?,
            nicknames: self.nicknames,
            middle_first: self.middle_first.get()?,
        })
    }
}

/// The longest postcode or identifier a [`Seen`] keeps, in bytes (NHS numbers have 10, UPNs 13).
const ID_CAP: usize = 15;

/// A postcode or identifier as a [`Seen`] keeps it.
pub(super) type Id = Short<ID_CAP>;

/// What an event about a known record is compared with first: the record's newest postcode
/// and its identifiers, inline (`None` where it has none), so that an event that changes
/// nothing of them reads no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// The postcode added last.
    pub(super) postcode: Option<Id>,
    /// The NHS number.
    pub(super) nhs: Option<Id>,
    /// The UPN.
    pub(super) upn: Option<Id>,
}

impl Seen {
    /// What record `r` holds.
    pub(super) fn of(r: &SubjectRecord) -> Seen {
        let short = |s: &String| Short::of(s);
        Seen {
            postcode: r.postcodes.last().map(short),
            nhs: r.nhs_number.as_ref().map(short),
            upn: r.upn.as_ref().map(short),
        }
    }

    /// Whether `held` (one of these fields) is `s`, when it can tell (`None`: the record
    /// holds none, or one too long to keep).
    pub(super) fn holds(held: Option<Id>, s: &str) -> bool {
        held.and_then(|k| k.is(s)) == Some(true)
    }
}

/// The distinct cards of one person's records, each with the first of its records (in record
/// order) that has it, in that order: what scoring asks of a person first (does a date of birth
/// agree, does a given name), kept in one place. Asked of the person's records one by one,
/// each question read the person's member list and then each record's card, all scattered in
/// memory; most persons' records share one card. The best agreement over these is the best
/// over all the records, and the first of equals is the same record's: equal cards agree
/// equally, and each card comes with its first record.
///
/// A card that could not keep a given name ([`Card::given`] is `None`) is never taken for
/// another: the comparison reads its record, which may differ.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Faces {
    /// A person whose records all have one card (most persons; no list on the heap).
    One((u32, Card)),
    /// More cards, ascending by record.
    Many(Vec<(u32, Card)>),
}

impl Faces {
    /// No faces (a record that is no person's first).
    pub(super) fn none() -> Faces {
        Faces::Many(Vec::new())
    }

    /// The faces of a person of one record, `r`, with card `card`.
    pub(super) fn one(r: u32, card: Card) -> Faces {
        Faces::One((r, card))
    }

    /// The cards with their records, ascending by record.
    pub(super) fn as_slice(&self) -> &[(u32, Card)] {
        match self {
            Faces::One(one) => std::slice::from_ref(one),
            Faces::Many(v) => v,
        }
    }

    /// The faces of `records` (ascending), each with its card from `card_of`.
    pub(super) fn of(records: &[u32], card_of: impl Fn(u32) -> Card) -> Faces {
        let mut faces: Option<Faces> = None;
        for &r in records {
            let one = Faces::one(r, card_of(r));
            match &mut faces {
                None => faces = Some(one),
                Some(f) => f.join(one),
            }
        }
        faces.unwrap_or_else(Faces::none)
    }

    /// Adds the faces of another person (whose records join this one's).
    pub(super) fn join(&mut self, other: Faces) {
        // Most joins are of two persons with one card each, the same.
        if let (Faces::One(a), Faces::One(b)) = (&mut *self, &other) {
            if a.1 == b.1 && a.1.given().is_some() {
                a.0 = a.0.min(b.0);
                return;
            }
        }
        let mut all: Vec<(u32, Card)> = self.as_slice().to_vec();
        all.extend_from_slice(other.as_slice());
        all.sort_unstable_by_key(|&(r, _)| r);
        let mut kept: Vec<(u32, Card)> = Vec::with_capacity(all.len());
        for (r, c) in all {
            let seen = c.given().is_some() && kept.iter().any(|(_, k)| *k == c);
            if !seen {
                kept.push((r, c));
            }
        }
        *self = match kept.as_slice() {
            [one] => Faces::One(*one),
            _ => Faces::Many(kept),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_fits_a_cache_line() {
        assert!(std::mem::size_of::<Card>() <= 64);
        assert!(std::mem::size_of::<Seen>() <= 64);
    }
}
