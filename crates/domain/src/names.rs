//! Comparing names and dates the way partner records differ: typos, nicknames, hyphenated and
//! changed surnames, transposed birth dates.
//!
//! All functions are pure and work on names already passed through [`normalise`].

use crate::time::Date;

/// Lower-cases a name, keeps letters, digits, hyphens and single spaces, and trims it.
pub fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut space = false;
    for c in name.trim().chars() {
        if c.is_alphanumeric() || c == '-' {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        } else if c.is_whitespace() {
            space = true;
        }
        // Apostrophes and full stops are dropped: O'Neil = ONeil, St. John = St John.
    }
    out
}

/// Groups of given names that are the same name: the formal one and its common short forms.
const NICKNAMES: &[&[&str]] = &[
    &[
        "william", "will", "bill", "billy", "liam", "willy", "willie",
    ],
    &["robert", "rob", "bob", "bobby", "robbie", "bert"],
    &[
        "elizabeth",
        "liz",
        "lizzie",
        "beth",
        "betty",
        "eliza",
        "libby",
        "lily",
    ],
    &["margaret", "maggie", "peggy", "meg", "megan"],
    &["james", "jim", "jimmy", "jamie"],
    &["thomas", "tom", "tommy"],
    &["alexander", "alex", "xander"],
    &["alexandra", "alex", "lexi", "sandra", "alexa"],
    &["charlotte", "lottie", "charlie"],
    &["charles", "charlie", "chas"],
    &["daniel", "dan", "danny"],
    &["joseph", "joe", "joey"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammy"],
    &["jessica", "jess", "jessie"],
    &["rebecca", "becky", "becca"],
    &["katherine", "kate", "katie", "kath", "kathy", "kitty"],
    &["catherine", "cath", "cathy", "kate", "katie"],
    &["michael", "mike", "mikey", "mick"],
    &["matthew", "matt", "matty"],
    &["christopher", "chris", "kit"],
    &["jonathan", "jon", "jonny"],
    &["nicholas", "nick", "nicky"],
    &["benjamin", "ben", "benny"],
    &["edward", "ed", "eddie", "ted", "teddy"],
    &["oliver", "ollie", "olly"],
    &["henry", "harry", "hal"],
    &["isabella", "bella", "izzy", "issy"],
    &["isabelle", "bella", "izzy", "issy"],
    &["olivia", "liv", "livvy", "livia"],
    &["amelia", "millie", "mia"],
    &["emily", "em", "emmy"],
    &["jacob", "jake"],
    &["joshua", "josh"],
    &["anthony", "tony", "ant"],
    &["stephen", "steve", "stevie"],
    &["steven", "steve", "stevie"],
    &["victoria", "vicky", "tori"],
    &["abigail", "abi", "abby", "gail"],
    &["frederick", "fred", "freddie", "freddy"],
    &["theodore", "theo", "ted"],
    &["zachary", "zach", "zack"],
    &["gabriella", "gabby", "ella"],
    &["eleanor", "ellie", "nell", "nora"],
    &["florence", "flo", "florrie"],
    &["sophia", "sophie"],
    &["harriet", "hattie"],
    &["jennifer", "jen", "jenny"],
    &["susan", "sue", "susie"],
    &["deborah", "debbie", "deb"],
    &["patricia", "pat", "tricia", "patty"],
    &["kimberley", "kim"],
    &["nathaniel", "nathan", "nate"],
    &["mohammed", "muhammad", "mohammad", "mohamed"],
];

/// Whether `a` and `b` are forms of the same given name (e.g. `william` and `bill`).
pub fn are_nicknames(a: &str, b: &str) -> bool {
    a != b && nickname_groups_of(a) & nickname_groups_of(b) != 0
}

/// The groups of [`NICKNAMES`] that `name` is in, one bit each (group `i` is bit `i`); 0 for
/// most names. Two different names are nicknames of each other exactly when their groups
/// overlap, so a record can keep this and compare it with one `&`.
pub fn nickname_groups_of(name: &str) -> u64 {
    if !could_be_nickname(name) {
        return 0;
    }
    nickname_groups().get(name).copied().unwrap_or(0)
}

/// Whether `name` has the first byte and length of some name in [`NICKNAMES`]: most names
/// do not, and are ruled out without hashing them.
fn could_be_nickname(name: &str) -> bool {
    static SHAPES: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        let mut shapes = [0u32; 256];
        for n in NICKNAMES.iter().flat_map(|g| g.iter()) {
            if let Some(&first) = n.as_bytes().first() {
                if n.len() < 32 {
                    shapes[first as usize] |= 1 << n.len();
                }
            }
        }
        shapes
    });
    match name.as_bytes().first() {
        Some(&first) if name.len() < 32 => shapes[first as usize] & (1 << name.len()) != 0,
        // No nickname is that long (the table's names are all shorter than 32 bytes).
        _ => false,
    }
}

/// For each name in [`NICKNAMES`], the groups it belongs to as a bit set (built once: a name
/// compared against thousands of others should not scan every group each time).
fn nickname_groups() -> &'static foldhash::HashMap<&'static str, u64> {
    // One bit per group.
    const _: () = assert!(NICKNAMES.len() <= 64);
    static GROUPS: std::sync::OnceLock<foldhash::HashMap<&'static str, u64>> =
        std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        let mut m: foldhash::HashMap<&'static str, u64> = Default::default();
        for (i, g) in NICKNAMES.iter().enumerate() {
            for n in g.iter() {
                *m.entry(n).or_default() |= 1 << i;
            }
        }
        m
    })
}

/// Damerau-Levenshtein (optimal string alignment) distance, stopping early above `limit`:
/// returns `limit + 1` when the distance is larger.
pub fn edit_distance(a: &str, b: &str, limit: usize) -> usize {
    /// Names up to this many characters are compared without allocating.
    const SHORT: usize = 32;
    let (mut sa, mut sb) = (['\0'; SHORT], ['\0'; SHORT]);
    match (chars_into(a, &mut sa), chars_into(b, &mut sb)) {
        (Some(la), Some(lb)) => {
            let mut rows = [0usize; 3 * (SHORT + 1)];
            osa_distance(&sa[..la], &sb[..lb], limit, &mut rows[..3 * (lb + 1)])
        }
        _ => {
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            let mut rows = vec![0usize; 3 * (b.len() + 1)];
            osa_distance(&a, &b, limit, &mut rows)
        }
    }
}

/// Copies the characters of `s` into `buf`, returning how many, or `None` if they do not fit.
fn chars_into(s: &str, buf: &mut [char]) -> Option<usize> {
    let mut n = 0;
    for c in s.chars() {
        *buf.get_mut(n)? = c;
        n += 1;
    }
    Some(n)
}

/// The optimal string alignment distance, capped at `limit + 1`, keeping three rows of the
/// table in `rows` (`3 * (b.len() + 1)` cells).
fn osa_distance(a: &[char], b: &[char], limit: usize, rows: &mut [usize]) -> usize {
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let w = b.len() + 1;
    let (mut older, rest) = rows.split_at_mut(w);
    let (mut prev, mut cur) = rest.split_at_mut(w);
    for (j, cell) in prev.iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(older[j - 2] + 1);
            }
            cur[j] = v;
            row_min = row_min.min(v);
        }
        if row_min > limit {
            return limit + 1;
        }
        // The rows move up: the current one becomes the previous, the previous the older.
        std::mem::swap(&mut older, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(limit + 1)
}

/// Whether two different spellings are close enough to be a typo of each other: one edit for
/// names of 4 to 7 letters, two for longer ones, none for very short names.
pub fn is_typo(a: &str, b: &str) -> bool {
    // Letters, not bytes; for the usual ASCII names they are the same and need no counting.
    let (la, lb) = if a.is_ascii() && b.is_ascii() {
        (a.len(), b.len())
    } else {
        (a.chars().count(), b.chars().count())
    };
    let limit = match la.min(lb) {
        0..=3 => return false,
        4..=7 => 1,
        _ => 2,
    };
    // More letters apart than the edits allowed: no need to align them.
    la.abs_diff(lb) <= limit && edit_distance(a, b, limit) <= limit
}

/// Whether two spellings, the shorter of three letters, are one edit apart (`teo` and `theo`,
/// `mai` and `mia`). Too weak for linking, where [`is_typo`] allows very short names no edit
/// (Leo and Teo may be twins); a name search counts it, since it lists every match with its
/// score for a person to choose from.
pub fn is_short_typo(a: &str, b: &str) -> bool {
    let (la, lb) = (a.chars().count(), b.chars().count());
    la.min(lb) == 3 && la.abs_diff(lb) <= 1 && edit_distance(a, b, 1) <= 1
}

/// American Soundex code of a name (first letter and three digits), for blocking.
pub fn soundex(name: &str) -> [u8; 4] {
    fn code(c: u8) -> u8 {
        match c {
            b'b' | b'f' | b'p' | b'v' => b'1',
            b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => b'2',
            b'd' | b't' => b'3',
            b'l' => b'4',
            b'm' | b'n' => b'5',
            b'r' => b'6',
            _ => b'0',
        }
    }
    let mut out = [b'0'; 4];
    // The letters read in place (a list of them was an allocation per name, several per new
    // record's block keys).
    let mut letters = name
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase());
    let Some(first) = letters.next() else {
        return out;
    };
    out[0] = first.to_ascii_uppercase();
    let mut last = code(first);
    let mut n = 1;
    for c in letters {
        if n == 4 {
            break;
        }
        let k = code(c);
        if k != b'0' && k != last {
            out[n] = k;
            n += 1;
        }
        if c != b'h' && c != b'w' {
            last = k;
        }
    }
    out
}

/// How two dates of birth compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateAgreement {
    /// The same date.
    Exact,
    /// Day and month swapped (03/04 and 04/03).
    Swapped,
    /// One digit different (a keying error).
    OneDigit,
    /// Different.
    Different,
}

/// Compares two dates of birth, allowing the keying errors partners make.
pub fn compare_dates(a: Date, b: Date) -> DateAgreement {
    if a == b {
        return DateAgreement::Exact;
    }
    if a.year == b.year && a.month == b.day && a.day == b.month {
        return DateAgreement::Swapped;
    }
    // Compare the eight digits of YYYYMMDD without formatting.
    let digits = |d: Date| -> [u32; 8] {
        let y = d.year.rem_euclid(10_000) as u32;
        let (m, dd) = (u32::from(d.month), u32::from(d.day));
        [
            y / 1000,
            y / 100 % 10,
            y / 10 % 10,
            y % 10,
            m / 10,
            m % 10,
            dd / 10,
            dd % 10,
        ]
    };
    let (da, db) = (digits(a), digits(b));
    let diff = da.iter().zip(db.iter()).filter(|(x, y)| x != y).count();
    if diff == 1 {
        DateAgreement::OneDigit
    } else {
        DateAgreement::Different
    }
}

/// The date with day and month swapped, if that is a date.
pub fn swapped(d: Date) -> Option<Date> {
    if d.day == d.month {
        return None;
    }
    Date::new(d.year, d.day, d.month).ok()
}

/// The parts of a hyphenated or double-barrelled surname.
pub fn surname_parts(family: &str) -> impl Iterator<Item = &str> {
    family.split(['-', ' ']).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names() {
        assert_eq!(normalise("  O'Neil "), "oneil");
        assert_eq!(normalise("Smith-Jones"), "smith-jones");
        assert_eq!(normalise("Mary   Anne"), "mary anne");
    }

    #[test]
    fn nickname_table_names_are_short_and_normalised() {
        for n in NICKNAMES.iter().flat_map(|g| g.iter()) {
            assert!(n.len() < 32, "{n}");
            assert_eq!(normalise(n), *n);
        }
    }

    #[test]
    fn nicknames_and_typos() {
        assert!(are_nicknames("william", "bill"));
        assert!(are_nicknames("bill", "liam"));
        assert!(!are_nicknames("william", "william"));
        assert!(!are_nicknames("william", "oliver"));
        assert!(is_typo("jonson", "johnson"));
        assert!(is_typo("catherine", "cathrine"));
        assert!(is_typo("amleia", "amelia"));
        assert!(!is_typo("amy", "ami"));
        assert!(!is_typo("jack", "jake"));
        assert!(is_short_typo("teo", "theo"));
        assert!(is_short_typo("mai", "mia"));
        assert!(is_short_typo("leo", "teo"));
        assert!(!is_short_typo("te", "teo"));
        assert!(!is_short_typo("al", "ali"));
        assert!(!is_short_typo("amy", "anne"));
        assert!(!is_short_typo("teo", "theon"));
        assert_eq!(edit_distance("kitten", "sitting", 5), 3);
        assert_eq!(edit_distance("abc", "abcdef", 1), 2);
    }

    #[test]
    fn soundex_codes() {
        assert_eq!(&soundex("robert"), b"R163");
        assert_eq!(&soundex("rupert"), b"R163");
        assert_eq!(&soundex("ashcraft"), b"A261");
        assert_eq!(&soundex("tymczak"), b"T522");
        assert_eq!(&soundex(""), b"0000");
    }

    #[test]
    fn dates() -> Result<(), crate::time::TimeParseError> {
        let d = Date::parse("2015-03-04")?;
        assert_eq!(compare_dates(d, d), DateAgreement::Exact);
        assert_eq!(
            compare_dates(d, Date::parse("2015-04-03")?),
            DateAgreement::Swapped
        );
        assert_eq!(
            compare_dates(d, Date::parse("2015-03-07")?),
            DateAgreement::OneDigit
        );
        assert_eq!(
            compare_dates(d, Date::parse("2016-05-04")?),
            DateAgreement::Different
        );
        assert_eq!(swapped(d), Some(Date::parse("2015-04-03")?));
        assert_eq!(swapped(Date::parse("2015-03-25")?), None);
        Ok(())
    }

    /// The full-table optimal string alignment distance the three-row version must equal.
    fn full_table_distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let w = b.len() + 1;
        let mut d = vec![0usize; (a.len() + 1) * w];
        for (j, cell) in d.iter_mut().enumerate().take(w) {
            *cell = j;
        }
        for i in 1..=a.len() {
            d[i * w] = i;
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                d[i * w + j] = v;
            }
        }
        d[a.len() * w + b.len()]
    }

    proptest::proptest! {
        /// Short names (on the stack) and long ones (on the heap), ASCII or not, get the
        /// distance of the full table, capped at the limit plus one.
        #[test]
        fn edit_distance_equals_the_full_table(
            a in "[abé -]{0,40}",
            b in "[abé -]{0,40}",
            limit in 0usize..4,
        ) {
            proptest::prop_assert_eq!(
                edit_distance(&a, &b, limit),
                full_table_distance(&a, &b).min(limit + 1)
            );
        }

        /// Any two names: nicknames exactly when some group holds both (the quick filter
        /// by first letter and length rules out no pair that the groups hold).
        #[test]
        fn nicknames_equal_the_table(a in "[a-z]{1,9}|william|bill|liz|beth|alex|sandra", b in "[a-z]{1,9}|will|liam|lily|alexa|alexander") {
            let expected = a != b && NICKNAMES.iter().any(|g| g.contains(&a.as_str()) && g.contains(&b.as_str()));
            proptest::prop_assert_eq!(are_nicknames(&a, &b), expected);
        }

        /// A nickname pair is one that some group holds both of, whichever way round.
        #[test]
        fn nicknames_are_pairs_within_a_group(g in 0..NICKNAMES.len(), i in 0usize..8, j in 0usize..8) {
            let group = NICKNAMES[g];
            let (a, b) = (group[i % group.len()], group[j % group.len()]);
            proptest::prop_assert_eq!(are_nicknames(a, b), a != b);
            proptest::prop_assert_eq!(are_nicknames(b, a), a != b);
        }
    }
}
