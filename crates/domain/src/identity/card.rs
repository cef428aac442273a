//! What scoring reads first of each record, kept together and apart from the record.
//!
//! Scoring a new record against the persons sharing a block with it first asks whether a
//! date of birth and a given name agree (without both, no link is possible). Read from the
//! records, each comparison waited for memory: the record (large, and scattered among the
//! others), then the given name's and the middle names' bytes on the heap. A [`Card`] holds
//! those fields inline, one cache line per record, in a list beside the records; the record
//! itself is read only for the persons that pass, and for names too long for a card.

use super::{first_word, SubjectRecord};
use crate::time::Date;

/// A name of up to [`Short::CAP`] bytes kept inline, or the mark that it is longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Short {
    len: u8,
    bytes: [u8; Short::CAP],
}

impl Short {
    /// The longest name kept inline, in bytes (normalised given names are mostly under 12).
    pub(super) const CAP: usize = 20;
    /// The length that marks a name too long to keep.
    const LONG: u8 = u8::MAX;

    /// `name` inline, or the mark that it is too long.
    pub(super) fn of(name: &str) -> Short {
        let mut bytes = [0; Short::CAP];
        match bytes.get_mut(..name.len()) {
            Some(room) => {
                room.copy_from_slice(name.as_bytes());
                Short {
                    len: name.len() as u8,
                    bytes,
                }
            }
            None => Short {
                len: Short::LONG,
                bytes,
            },
        }
    }

    /// The name, or `None` when it was too long to keep.
    pub(super) fn get(&self) -> Option<&str> {
        let kept = self.bytes.get(..usize::from(self.len))?;
        // The bytes are a whole `&str`, so this never fails.
        std::str::from_utf8(kept).ok()
    }
}

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
    /// The parts of record `r`.
    pub(super) fn of(r: &'a SubjectRecord) -> Given<'a> {
        Given {
            name: &r.given,
            nicknames: r.given_nicknames,
            middle_first: first_word(&r.middle),
        }
    }
}

/// What scoring compares first of one record: date of birth and the given-name parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Card {
    nicknames: u64,
    /// The record's date of birth.
    pub(super) dob: Option<Date>,
    given: Short,
    middle_first: Short,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_keeps_names_up_to_its_capacity_and_marks_longer_ones() {
        for name in ["", "mia", "maximilian-alexander", "zo\u{eb}"] {
            assert_eq!(Short::of(name).get(), Some(name), "{name:?}");
        }
        assert_eq!("maximilian-alexander".len(), Short::CAP);
        assert_eq!(Short::of("maximilian-alexanders").get(), None);
        assert_eq!(Short::of(&"\u{eb}".repeat(11)).get(), None, "22 bytes");
    }

    #[test]
    fn a_card_fits_a_cache_line() {
        assert!(std::mem::size_of::<Card>() <= 64);
    }
}
