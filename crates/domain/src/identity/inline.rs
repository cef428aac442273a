//! Short strings kept inline, so that the linker's per-event comparisons read them where it
//! already is (a table's slot, a card) rather than following a pointer to the heap: each such
//! pointer was a likely cache miss, and those misses were most of linking's time.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A string of up to `N` bytes kept inline, or the mark that it is longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Short<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Short<N> {
    /// The length that marks a string too long to keep.
    const LONG: u8 = u8::MAX;

    /// `s` inline, or the mark that it is too long.
    pub(super) fn of(s: &str) -> Self {
        let mut bytes = [0; N];
        match bytes.get_mut(..s.len()) {
            Some(room) if s.len() < usize::from(Self::LONG) => {
                room.copy_from_slice(s.as_bytes());
                Short {
                    len: s.len() as u8,
                    bytes,
                }
            }
            _ => Short {
                len: Self::LONG,
                bytes,
            },
        }
    }

    /// The string, or `None` when it was too long to keep.
    pub(super) fn get(&self) -> Option<&str> {
        // The bytes are a whole `&str`, so this never fails.
        std::str::from_utf8(self.kept()?).ok()
    }

    /// Whether this is `s`: `None` when the string was too long to keep (ask the original).
    pub(super) fn is(&self, s: &str) -> Option<bool> {
        Some(self.kept()? == s.as_bytes())
    }

    /// The bytes kept, `None` for a string too long to keep.
    fn kept(&self) -> Option<&[u8]> {
        if self.len == Self::LONG {
            return None;
        }
        self.bytes.get(..usize::from(self.len))
    }
}

/// A record key as a hash table keeps it: inline up to 31 bytes (every partner key the demo
/// makes is 30 or fewer), so a lookup compares it in the table's slot.
#[derive(Debug, Clone)]
pub(super) enum Key {
    /// Up to 31 bytes.
    Inline(Short<31>),
    /// Longer.
    Long(Box<str>),
}

impl Key {
    /// The key `s`.
    pub(super) fn of(s: &str) -> Key {
        let short = Short::of(s);
        match short.kept() {
            Some(_) => Key::Inline(short),
            None => Key::Long(s.into()),
        }
    }

    /// The key's bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(s) => s.kept().unwrap_or_default(),
            Key::Long(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

// Hashed as its bytes, so a table of keys is looked up with a `&[u8]` (`Borrow`).
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_string_keeps_up_to_its_capacity_and_marks_longer_ones() {
        for s in ["", "mia", "maximilian-alexander", "zo\u{eb}"] {
            assert_eq!(Short::<20>::of(s).get(), Some(s), "{s:?}");
            assert_eq!(Short::<20>::of(s).is(s), Some(true));
            assert_eq!(Short::<20>::of(s).is("mya"), Some(false));
        }
        assert_eq!("maximilian-alexander".len(), 20);
        assert_eq!(Short::<20>::of("maximilian-alexanders").get(), None);
        assert_eq!(Short::<20>::of("maximilian-alexanders").is(""), None);
        assert_eq!(
            Short::<20>::of(&"\u{eb}".repeat(11)).get(),
            None,
            "22 bytes"
        );
        // A capacity past what the length byte counts still marks the longest.
        assert_eq!(Short::<300>::of(&"a".repeat(255)).get(), None);
        assert_eq!(
            Short::<300>::of(&"a".repeat(254)).get().map(str::len),
            Some(254)
        );
    }

    #[test]
    fn keys_equal_and_hash_as_their_bytes_whether_inline_or_not() {
        use std::collections::HashMap;
        let long = "early-intervention-service/EIT-000000001028544";
        assert!(matches!(Key::of("police/NP-1"), Key::Inline(_)));
        assert!(matches!(Key::of(long), Key::Long(_)));
        assert!(matches!(Key::of(&"k".repeat(31)), Key::Inline(_)));
        assert!(matches!(Key::of(&"k".repeat(32)), Key::Long(_)));
        let mut m: HashMap<Key, u32> = HashMap::new();
        m.insert(Key::of("police/NP-1"), 1);
        m.insert(Key::of(long), 2);
        assert_eq!(m.get(b"police/NP-1".as_slice()), Some(&1));
        assert_eq!(m.get(long.as_bytes()), Some(&2));
        assert_eq!(m.get(b"police/NP-2".as_slice()), None);
        assert_eq!(Key::of(long), Key::of(long));
        assert_ne!(Key::of("police/NP-1"), Key::of("police/NP-10"));
    }
}
