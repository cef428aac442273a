//! Sealed events in the form the log writes them, read without a general JSON parser.
//!
//! The hub writes each sealed event with `serde_json`: no spaces, the fields in the order
//! `Event` declares them, absent options left out, and strings escaped only where they must
//! be. [`read`] reads exactly that form and nothing else: at anything it does not expect (a
//! space, an escape, a field out of order, a `null` where the writer leaves the field out, a
//! number it would have to think about) it gives up with `None`, and the entry is read by
//! `serde_json` as before, which accepts or refuses it. So whatever this reads, `serde_json`
//! reads the same way (the tests compare the two on every case they have); it only reads it
//! faster, because it does not look up each field's name among all of them, or keep track of
//! which fields it has seen: order alone says which field comes next. Values that are not
//! plain strings (times, dates, the enums) are parsed by their own `Deserialize`, the same code
//! `serde_json` calls. Reading in place through `serde_json` was about 40% of the decoding
//! threads' time in a rebuild; this takes a little over half of that.

use std::borrow::Cow;

use serde::de::value::{BorrowedStrDeserializer, Error as ValueError};
use serde::Deserialize;
use tellonce_domain::event::{Relationship, RelationshipKind};

use super::{AddressRef, EventRef, LawfulBasisRef, SealedRef, Str, SubjectRef};

/// The sealed event in `text` (which starts with the tag, `{"record":"sealed_event",`), if it
/// is in the form the log writes; `None` for anything else, to be read by `serde_json`.
pub(super) fn read(text: &str) -> Option<EventRef<'_>> {
    let mut c = Cursor { text, at: 0 };
    c.lit(br#"{"record":"sealed_event","event_id":"#)?;
    let event_id = c.str()?;
    c.lit(br#","source":"#)?;
    let source = c.str()?;
    c.lit(br#","occurred_at":"#)?;
    let occurred_at = c.parsed()?;
    c.lit(br#","subjects":["#)?;
    let subjects = c.list(Cursor::subject)?;
    let relationships = if c.lit(br#","relationships":["#).is_some() {
        c.list(Cursor::relationship)?
    } else {
        Vec::new()
    };
    c.lit(br#","lawful_basis":"#)?;
    let lawful_basis = c.lawful_basis()?;
    let category = if c.lit(br#","category":"#).is_some() {
        Some(c.parsed()?)
    } else {
        None
    };
    c.lit(br#","payload":{"kind":"#)?;
    let kind = c.str()?;
    c.lit(br#","keys":["#)?;
    let keys = c.list(Cursor::str)?;
    c.lit(br#","nonce":"#)?;
    let nonce = c.str()?;
    c.lit(br#","ciphertext":"#)?;
    let ciphertext = c.str()?;
    c.lit(b"}}")?;
    if c.at != text.len() {
        return None;
    }
    Some(EventRef {
        event_id,
        source,
        occurred_at,
        subjects,
        relationships,
        lawful_basis,
        category,
        payload: SealedRef {
            kind,
            keys,
            nonce,
            ciphertext,
        },
    })
}

/// A place in the text being read.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The bytes not yet read.
    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    /// Steps over `l` if the text goes on with it.
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        self.rest().starts_with(l).then(|| self.at += l.len())
    }

    /// A string without escapes or control characters (borrowed from the text).
    fn str(&mut self) -> Option<Str<'a>> {
        self.text().map(|s| Str(Cow::Borrowed(s)))
    }

    /// [`Cursor::str`], as the text's own slice.
    fn text(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let start = self.at;
        let len = special(self.rest())?;
        if self.rest()[len] != b'"' {
            return None;
        }
        self.at += len + 1;
        // Between two ASCII bytes of valid UTF-8: always a whole string.
        self.text.get(start..start + len)
    }

    /// A string parsed by `T`'s own `Deserialize`, as `serde_json` hands it a string.
    fn parsed<T: Deserialize<'a>>(&mut self) -> Option<T> {
        T::deserialize(BorrowedStrDeserializer::<ValueError>::new(self.text()?)).ok()
    }

    /// A number that fits a `u32`, written as JSON writes it (no sign, no leading zero, no
    /// fraction: what follows is checked by the caller).
    fn u32(&mut self) -> Option<u32> {
        let digits = self
            .rest()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || (digits > 1 && self.rest()[0] == b'0') {
            return None;
        }
        let mut n: u32 = 0;
        for &d in &self.rest()[..digits] {
            n = n.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
        }
        self.at += digits;
        Some(n)
    }

    /// The items of a list whose `[` was read, up to and with its `]`.
    fn list<T>(&mut self, item: impl Fn(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut items = Vec::new();
        if self.lit(b"]").is_some() {
            return Some(items);
        }
        loop {
            items.push(item(self)?);
            if self.lit(b",").is_none() {
                self.lit(b"]")?;
                return Some(items);
            }
        }
    }

    /// Steps over field `name` (and the comma before it, but for the first) if it comes next.
    fn field(&mut self, name: &[u8], first: &mut bool) -> bool {
        let back = self.at;
        if !*first && self.lit(b",").is_none() {
            return false;
        }
        let found =
            self.lit(b"\"").is_some() && self.lit(name).is_some() && self.lit(b"\":").is_some();
        if found {
            *first = false;
        } else {
            self.at = back;
        }
        found
    }

    /// An optional field: its value (read by `value`) if it comes next, else `None`.
    fn opt<T>(
        &mut self,
        name: &[u8],
        first: &mut bool,
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.field(name, first) {
            Some(Some(value(self)?))
        } else {
            Some(None)
        }
    }

    /// A subject, its fields in `Subject`'s order, each there or left out.
    fn subject(&mut self) -> Option<SubjectRef<'a>> {
        self.lit(b"{")?;
        let first = &mut true;
        let local_id = self.opt(b"local_id", first, Self::str)?;
        let nhs_number = self.opt(b"nhs_number", first, Self::str)?;
        let upn = self.opt(b"upn", first, Self::str)?;
        let given_name = self.opt(b"given_name", first, Self::str)?;
        let middle_names = self.opt(b"middle_names", first, Self::str)?;
        let family_name = self.opt(b"family_name", first, Self::str)?;
        let date_of_birth = self.opt(b"date_of_birth", first, Self::parsed)?;
        let sex = self.opt(b"sex", first, Self::parsed)?;
        let address = self.opt(b"address", first, Self::address)?;
        let role = self.opt(b"role", first, Self::parsed)?;
        self.lit(b"}")?;
        Some(SubjectRef {
            local_id,
            nhs_number,
            upn,
            given_name,
            middle_names,
            family_name,
            date_of_birth,
            sex,
            address,
            role,
        })
    }

    /// An address, its fields in `Address`'s order, each there or left out (then empty).
    fn address(&mut self) -> Option<AddressRef<'a>> {
        self.lit(b"{")?;
        let first = &mut true;
        let mut line = |name: &[u8]| Some(self.opt(name, first, Self::str)?.unwrap_or_default());
        let (line1, line2) = (line(b"line1")?, line(b"line2")?);
        let (town, postcode) = (line(b"town")?, line(b"postcode")?);
        self.lit(b"}")?;
        Some(AddressRef {
            line1,
            line2,
            town,
            postcode,
        })
    }

    /// A relationship: `{"from":..,"to":..,"kind":".."}`.
    fn relationship(&mut self) -> Option<Relationship> {
        self.lit(br#"{"from":"#)?;
        let from = self.u32()?;
        self.lit(br#","to":"#)?;
        let to = self.u32()?;
        self.lit(br#","kind":"#)?;
        let kind: RelationshipKind = self.parsed()?;
        self.lit(b"}")?;
        Some(Relationship { from, to, kind })
    }

    /// The lawful basis: `null` or one of its two forms.
    fn lawful_basis(&mut self) -> Option<Option<LawfulBasisRef<'a>>> {
        if self.lit(b"null").is_some() {
            return Some(None);
        }
        let basis = if self.lit(br#"{"consent":{"consent_reference":"#).is_some() {
            LawfulBasisRef::Consent {
                consent_reference: self.str()?,
            }
        } else {
            self.lit(br#"{"safeguarding":{"statutory_basis":"#)?;
            let statutory_basis = self.str()?;
            self.lit(br#","reason":"#)?;
            LawfulBasisRef::Safeguarding {
                statutory_basis,
                reason: self.str()?,
            }
        };
        self.lit(b"}}")?;
        Some(Some(basis))
    }
}

/// Where the first quote, backslash or control character of `bytes` is (the bytes JSON
/// escapes in a string): the end of a string without escapes, or what makes this reader give
/// up; `None` for a text JSON writes as it is (as a line's plain head asks). Eight bytes at a
/// time (the ciphertext, most of an entry, is one long string): a word has one of them if one
/// of its bytes XORed with `"` or `\\` is zero or it is below 0x20, which the usual bit tricks
/// tell exactly.
pub(crate) fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let v = u64::from_le_bytes(word);
        if below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
            | below(v, 0x20)
            != 0
        {
            break;
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    let found = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(at + found)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time search finds what a byte-by-byte one finds.
        #[test]
        fn special_finds_the_first_quote_backslash_or_control_character(
            bytes in proptest::collection::vec(prop::sample::select(vec![b'a', b'"', b'\\', 0, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']']), 0..40),
            plain in 0..40usize,
        ) {
            let mut all = vec![b'x'; plain];
            all.extend(bytes);
            let expected = all.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(super::special(&all), expected);
        }
    }
}
