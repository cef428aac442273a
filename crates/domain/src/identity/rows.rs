//! The snapshot's compact form of the linker's two largest parts, its records and links: each
//! as a JSON array of values in a fixed order instead of an object naming every field (field
//! names were about half of a snapshot's bytes). Only [`Linker`](super::Linker)'s own
//! serialization uses it; the types keep their named form everywhere else.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::borrow::Cow;

use super::{Chunked, FieldScore, Link, LinkWhy, Score, SubjectRecord, SCORE_WORDS};
use crate::event::Sex;
use crate::time::{Date, Timestamp};

/// A record as written: the fields of [`SubjectRecord`] in declaration order.
#[derive(Serialize)]
struct RecordRef<'a>(
    &'a str,
    &'a str,
    u64,
    &'a Option<String>,
    &'a Option<String>,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a Option<Date>,
    &'a Option<Sex>,
    &'a [String],
);

/// A record as read back.
#[derive(Deserialize)]
struct RecordRow(
    String,
    String,
    u64,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<Date>,
    Option<Sex>,
    Vec<String>,
);

/// Writes records as rows.
pub(super) fn ser_records<S: Serializer>(
    v: &Chunked<SubjectRecord>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|r| {
        RecordRef(
            &r.key,
            &r.source,
            r.first_offset,
            &r.nhs_number,
            &r.upn,
            &r.given,
            &r.middle,
            &r.family,
            &r.display_name,
            &r.dob,
            &r.sex,
            &r.postcodes,
        )
    }))
}

/// Reads records written by [`ser_records`].
pub(super) fn de_records<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Chunked<SubjectRecord>, D::Error> {
    let rows = Vec::<RecordRow>::deserialize(d)?;
    Ok(rows
        .into_iter()
        .map(|r| SubjectRecord {
            key: r.0,
            source: r.1,
            first_offset: r.2,
            nhs_number: r.3,
            upn: r.4,
            given: r.5,
            middle: r.6,
            family: r.7,
            display_name: r.8,
            dob: r.9,
            sex: r.10,
            postcodes: r.11,
        })
        .collect())
}

/// Why a link was made, as read back (written as [`WhyRef`]): one letter for the variant (serde's external tag), then its
/// values in order; a score's fields as `[field, agreement, weight]`, each word its place in
/// [`SCORE_WORDS`] (or the word, where it is not one of them, as older snapshots wrote all).
#[derive(Deserialize)]
enum Why {
    /// [`LinkWhy::SameNhsNumber`].
    N,
    /// [`LinkWhy::SameUpn`].
    U,
    /// [`LinkWhy::Scored`]: total, eligible, fields.
    S(f64, bool, Vec<(Word, Word, f64)>),
    /// [`LinkWhy::Confirmed`]: decided by, reason, decided at.
    C(String, String, Timestamp),
}

/// [`Why`] as written, borrowing from the link.
#[derive(Serialize)]
#[serde(rename = "Why")]
enum WhyRef<'a> {
    /// [`LinkWhy::SameNhsNumber`].
    N,
    /// [`LinkWhy::SameUpn`].
    U,
    /// [`LinkWhy::Scored`].
    S(f64, bool, FieldsRef<'a>),
    /// [`LinkWhy::Confirmed`].
    C(&'a str, &'a str, Timestamp),
}

/// A score's fields, written as `[field, agreement, weight]` each, the words as [`WordRef`]s.
struct FieldsRef<'a>(&'a [FieldScore]);

impl Serialize for FieldsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|f| (WordRef(&f.field), WordRef(&f.agreement), f.weight)),
        )
    }
}

/// A word of a score's explanation as written: its place in [`SCORE_WORDS`] where it is one of
/// them (written out, the words were two fifths of a snapshot's links: 14.6 MB against
/// 8.9 MB at the 1M demo), else the word.
struct WordRef<'a>(&'a str);

impl Serialize for WordRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match SCORE_WORDS.iter().position(|w| *w == self.0) {
            Some(i) => s.serialize_u8(i as u8),
            None => s.serialize_str(self.0),
        }
    }
}

/// A word of a score's explanation as read back ([`WordRef`]), borrowed from [`SCORE_WORDS`]
/// where it is one of them.
struct Word(Cow<'static, str>);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Word;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a score word, or its place in the list of them")
            }
            fn visit_u64<E: serde::de::Error>(self, i: u64) -> Result<Word, E> {
                let word = usize::try_from(i).ok().and_then(|i| SCORE_WORDS.get(i));
                word.map(|w| Word(Cow::Borrowed(*w)))
                    .ok_or_else(|| E::custom(format!("no score word number {i}")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Word, E> {
                Ok(Word(match SCORE_WORDS.iter().find(|w| **w == s) {
                    Some(w) => Cow::Borrowed(*w),
                    None => Cow::Owned(s.to_string()),
                }))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A link as read back: `a`, `b`, why, offset, active.
#[derive(Deserialize)]
struct LinkRow(u32, u32, Why, u64, bool);

/// A link as written.
#[derive(Serialize)]
struct LinkRef<'a>(u32, u32, WhyRef<'a>, u64, bool);

/// Writes links as rows.
pub(super) fn ser_links<S: Serializer>(v: &[Link], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|l| {
        let why = match &l.why {
            LinkWhy::SameNhsNumber => WhyRef::N,
            LinkWhy::SameUpn => WhyRef::U,
            LinkWhy::Scored { score } => {
                WhyRef::S(score.total, score.eligible, FieldsRef(&score.fields))
            }
            LinkWhy::Confirmed {
                decided_by,
                reason,
                decided_at,
            } => WhyRef::C(decided_by, reason, *decided_at),
        };
        LinkRef(l.a, l.b, why, l.offset, l.active)
    }))
}

/// Reads links written by [`ser_links`].
pub(super) fn de_links<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Link>, D::Error> {
    let rows = Vec::<LinkRow>::deserialize(d)?;
    Ok(rows
        .into_iter()
        .map(|LinkRow(a, b, why, offset, active)| Link {
            a,
            b,
            why: match why {
                Why::N => LinkWhy::SameNhsNumber,
                Why::U => LinkWhy::SameUpn,
                Why::S(total, eligible, fields) => LinkWhy::Scored {
                    score: Score {
                        total,
                        eligible,
                        fields: fields
                            .into_iter()
                            .map(|(field, agreement, weight)| FieldScore {
                                field: field.0,
                                agreement: agreement.0,
                                weight,
                            })
                            .collect(),
                    },
                },
                Why::C(decided_by, reason, decided_at) => LinkWhy::Confirmed {
                    decided_by,
                    reason,
                    decided_at,
                },
            },
            offset,
            active,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::Linker;
    use super::*;

    fn record(i: u64) -> SubjectRecord {
        SubjectRecord {
            key: format!("police/P{i}"),
            source: "police".into(),
            first_offset: i,
            nhs_number: Some("9434765919".into()),
            upn: i.is_multiple_of(2).then(|| "A123456789012".into()),
            given: "amelia".into(),
            middle: "rose \"rosie\"".into(),
            family: "smith-jones".into(),
            display_name: "Amelia Rose Smith-Jones".into(),
            dob: Some(Date::new(2015, 4, 1).expect("date")),
            sex: Some(Sex::Female),
            postcodes: vec!["NN1 1AA".into(), "NN2 2BB".into()],
        }
    }

    /// Every field of a record and every kind of link comes back as it was written, and the
    /// rows carry no field names.
    #[test]
    fn records_and_links_come_back_from_their_rows() {
        let mut l = Linker::new();
        l.records = [record(0), record(1)].into_iter().collect();
        l.records[1].nhs_number = None;
        l.records[1].dob = None;
        l.records[1].sex = None;
        l.records[1].postcodes.clear();
        let score = Score {
            total: 14.5,
            eligible: true,
            fields: vec![
                FieldScore {
                    field: "given_name".into(),
                    agreement: "nickname".into(),
                    weight: 3.0,
                },
                FieldScore {
                    field: "date_of_birth".into(),
                    agreement: "day_month_swapped".into(),
                    weight: 2.5,
                },
                FieldScore {
                    field: "postcode".into(),
                    agreement: "a word this version does not use".into(),
                    weight: 0.0,
                },
            ],
        };
        let why = [
            LinkWhy::SameNhsNumber,
            LinkWhy::SameUpn,
            LinkWhy::Scored { score },
            LinkWhy::Confirmed {
                decided_by: "sw-1".into(),
                reason: "same child, \u{e9}cole records".into(),
                decided_at: Timestamp(1_700_000_000_123),
            },
        ];
        l.links = why
            .into_iter()
            .enumerate()
            .map(|(i, why)| Link {
                a: (i % 2) as u32,
                b: 1 - (i % 2) as u32,
                why,
                offset: 100 + i as u64,
                active: i != 2,
            })
            .collect();
        // Each record its own person and family (loading works each record's out from them).
        l.members = (0..2).map(|r| (r, vec![r])).collect();
        l.family_members = l.members.clone();
        let json = serde_json::to_string(&l).expect("save");
        for name in [
            "\"given\"",
            "\"display_name\"",
            "\"agreement\"",
            "\"active\"",
        ] {
            assert!(!json.contains(name), "{name} is not written: {json}");
        }
        let back: Linker = serde_json::from_str(&json).expect("load");
        assert_eq!(back.records, l.records);
        assert_eq!(back.links, l.links);
        // The scorer's words come back borrowed; any other word as it was.
        let LinkWhy::Scored { score } = &back.links[2].why else {
            panic!("a scored link");
        };
        let borrowed = |c: &Cow<'static, str>| matches!(c, Cow::Borrowed(_));
        assert!(score.fields.iter().all(|f| borrowed(&f.field)));
        assert!(borrowed(&score.fields[0].agreement) && borrowed(&score.fields[1].agreement));
        assert!(!borrowed(&score.fields[2].agreement));
        // Known words are written as their places; a snapshot that wrote them out (as older
        // ones did) reads the same.
        let placed = "[0,13,3.0]";
        assert!(json.contains(placed), "{json}");
        let older = json.replace(placed, "[\"given_name\",\"nickname\",3.0]");
        assert_ne!(older, json);
        let back: Linker = serde_json::from_str(&older).expect("load an older snapshot");
        assert_eq!(back.links, l.links);
        let unknown = json.replace(placed, "[0,99,3.0]");
        let err = serde_json::from_str::<Linker>(&unknown).expect_err("no word 99");
        assert!(err.to_string().contains("no score word number 99"), "{err}");
    }

    /// The words are distinct, every field a score compares is one of them, and their places
    /// are the ones snapshots were written with.
    #[test]
    fn the_score_words_hold_every_field() {
        let words: std::collections::BTreeSet<&str> = SCORE_WORDS.into_iter().collect();
        assert_eq!(words.len(), SCORE_WORDS.len());
        // The list as snapshots were first written with it, one string (a copy of the list
        // would only follow it).
        let written = "given_name family_name date_of_birth sex postcode day_month_swapped \
                       different exact first_middle_swap given_is_middle hyphenated_part \
                       initial missing nickname one_digit_off same typo";
        let written: Vec<&str> = written.split_whitespace().collect();
        assert_eq!(
            SCORE_WORDS[..written.len()],
            written[..],
            "add words at the end only"
        );
        for (field, _) in super::super::FIELDS {
            assert!(words.contains(field), "{field}");
        }
    }
}
