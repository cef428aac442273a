//! Sealed events read in place: what applying a sealed event whose payload it does not open
//! needs (most entries of a rebuild), read from the entry's body without a string per field.
//!
//! [`EventRef`] mirrors `Event<Sealed>` field for field (the same names, defaults and refusals
//! of unknown fields), with its strings borrowed from the body; [`SealedAt`] keeps the
//! subjects' fields copied one after another into one string, with their places in it
//! ([`Text`]), and [`SubjectIn`] reads them on the thread that applies the event. Decoding the
//! owned event allocated about twenty strings per event, and freeing them after applying (on
//! memory the other core had last touched) cost about as much again: together about half of
//! the decoding threads' time. Keeping places in the entry's body instead had the applying
//! thread check each field's UTF-8 again (about 3% of its time) and read the body's cache
//! lines from the other core.
//!
//! [`EventRef::read`] first tries [`canonical`], which reads only the exact form the log
//! writes (fields in order, no spaces, no escapes): in a profiled 1M-entry rebuild, reading
//! in place took 43% fewer samples with it. Anything else goes to `serde_json`, which reads
//! every form JSON allows.

mod canonical;

pub(crate) use canonical::special;

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use tellonce_domain::access::Category;
use tellonce_domain::event::{Relationship, Sex, SubjectFields, SubjectRole};
use tellonce_domain::time::{Date, Timestamp};

/// A JSON string of the body: borrowed where it has no escapes, else unescaped into a copy.
#[derive(Debug, PartialEq)]
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl Str<'_> {
    /// The string.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `Event<Sealed>` as read in place.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventRef<'a> {
    #[serde(borrow)]
    pub(crate) event_id: Str<'a>,
    #[serde(borrow)]
    pub(crate) source: Str<'a>,
    pub(crate) occurred_at: Timestamp,
    #[serde(borrow)]
    subjects: Vec<SubjectRef<'a>>,
    #[serde(default)]
    relationships: Vec<Relationship>,
    #[serde(borrow)]
    lawful_basis: Option<LawfulBasisRef<'a>>,
    #[serde(default)]
    pub(crate) category: Option<Category>,
    #[serde(borrow)]
    pub(crate) payload: SealedRef<'a>,
}

/// `Subject` as read in place.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRef<'a> {
    #[serde(default, borrow)]
    local_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    nhs_number: Option<Str<'a>>,
    #[serde(default, borrow)]
    upn: Option<Str<'a>>,
    #[serde(default, borrow)]
    given_name: Option<Str<'a>>,
    #[serde(default, borrow)]
    middle_names: Option<Str<'a>>,
    #[serde(default, borrow)]
    family_name: Option<Str<'a>>,
    #[serde(default)]
    date_of_birth: Option<Date>,
    #[serde(default)]
    sex: Option<Sex>,
    #[serde(default, borrow)]
    address: Option<AddressRef<'a>>,
    #[serde(default)]
    #[allow(dead_code)]
    role: Option<SubjectRole>,
}

/// `Address` as read in place (only its postcode is kept).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AddressRef<'a> {
    #[serde(default, borrow)]
    line1: Str<'a>,
    #[serde(default, borrow)]
    line2: Str<'a>,
    #[serde(default, borrow)]
    town: Str<'a>,
    #[serde(default, borrow)]
    postcode: Str<'a>,
}

impl Default for Str<'_> {
    fn default() -> Self {
        Str(Cow::Borrowed(""))
    }
}

/// `LawfulBasis` as read in place (only which one it is is kept).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
enum LawfulBasisRef<'a> {
    Consent {
        #[serde(borrow)]
        consent_reference: Str<'a>,
    },
    Safeguarding {
        #[serde(borrow)]
        statutory_basis: Str<'a>,
        #[serde(borrow)]
        reason: Str<'a>,
    },
}

/// `Sealed` as read in place (its nonce and ciphertext only checked to be strings).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SealedRef<'a> {
    #[serde(borrow)]
    pub(crate) kind: Str<'a>,
    #[serde(borrow)]
    pub(crate) keys: Vec<Str<'a>>,
    #[serde(borrow)]
    nonce: Str<'a>,
    #[serde(borrow)]
    ciphertext: Str<'a>,
}

impl<'a> EventRef<'a> {
    /// The sealed event in `body`, if it is one whose tag comes first (as the log's records
    /// are written); `None` for anything else, which the general decoder then reads (and
    /// refuses what this refuses).
    pub(crate) fn read(body: &'a [u8]) -> Option<EventRef<'a>> {
        if !body.starts_with(br#"{"record":"sealed_event","#) {
            return None;
        }
        let text = std::str::from_utf8(body).ok()?;
        canonical::read(text).or_else(|| Self::read_any(text))
    }

    /// [`EventRef::read`] by `serde_json`, for a body in any form JSON allows.
    fn read_any(text: &'a str) -> Option<EventRef<'a>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let event = serde::Deserializer::deserialize_map(&mut de, TagThenEvent).ok()?;
        de.end().ok()?;
        Some(event)
    }

    /// Whether its basis is safeguarding (`access::is_safeguarding` of the owned event).
    pub(crate) fn safeguarding(&self) -> bool {
        matches!(self.lawful_basis, Some(LawfulBasisRef::Safeguarding { .. }))
    }

    /// What applying keeps of it: its subjects' fields, copied into one string, and its
    /// relationships.
    pub(crate) fn kept(self) -> SealedAt {
        let mut texts = String::with_capacity(TEXTS_CAPACITY);
        let mut text = |s: Option<Str<'_>>| s.map(|s| Text::of(&mut texts, s));
        let subjects = self
            .subjects
            .into_iter()
            .map(|s| SubjectAt {
                local_id: text(s.local_id),
                nhs_number: text(s.nhs_number),
                upn: text(s.upn),
                given_name: text(s.given_name),
                middle_names: text(s.middle_names),
                family_name: text(s.family_name),
                date_of_birth: s.date_of_birth,
                sex: s.sex,
                postcode: text(s.address.map(|a| a.postcode)),
            })
            .collect();
        SealedAt {
            texts,
            subjects,
            relationships: self.relationships,
        }
    }
}

/// Room for the subjects' strings of a typical event (one or two subjects) in one allocation.
const TEXTS_CAPACITY: usize = 128;

/// Reads the tag (the first field, checked by [`EventRef::read`]), then the rest of the same
/// object as the event, as the domain's tag-first decoding does.
struct TagThenEvent;

impl<'de> serde::de::Visitor<'de> for TagThenEvent {
    type Value = EventRef<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sealed event")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let tag = map.next_entry::<Str<'de>, Str<'de>>()?;
        if !tag.is_some_and(|(k, v)| k.as_str() == "record" && v.as_str() == "sealed_event") {
            return Err(A::Error::custom("not a sealed event"));
        }
        EventRef::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// A string of a subject, as applying keeps it: where it is in [`SealedAt`]'s `texts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Text(u32, u32);

impl Text {
    /// `s`, added to `texts`.
    fn of(texts: &mut String, s: Str<'_>) -> Text {
        let start = texts.len();
        texts.push_str(&s.0);
        // One event's subject strings are far below 4 GiB (the log refuses larger entries).
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Text(at(start), at(texts.len()))
    }

    /// The string, from `texts` (the strings it was added to).
    fn get<'t>(&self, texts: &'t str) -> Option<&'t str> {
        texts.get(self.0 as usize..self.1 as usize)
    }
}

/// What applying needs of a sealed event it does not open: its subjects' strings copied into
/// one string (validated UTF-8, so the applying thread reads them without checking them again,
/// and in one or two cache lines rather than spread over the body), and its relationships.
#[derive(Debug)]
pub(crate) struct SealedAt {
    texts: String,
    subjects: Vec<SubjectAt>,
    pub(crate) relationships: Vec<Relationship>,
}

impl SealedAt {
    /// Its subjects.
    pub(crate) fn subjects(&self) -> impl Iterator<Item = SubjectIn<'_>> {
        let texts = self.texts.as_str();
        self.subjects.iter().map(move |at| SubjectIn { texts, at })
    }
}

/// A subject's fields, as places in its event's `texts`.
#[derive(Debug)]
struct SubjectAt {
    local_id: Option<Text>,
    nhs_number: Option<Text>,
    upn: Option<Text>,
    given_name: Option<Text>,
    middle_names: Option<Text>,
    family_name: Option<Text>,
    date_of_birth: Option<Date>,
    sex: Option<Sex>,
    postcode: Option<Text>,
}

/// A subject read in place: its fields, from its entry's body.
pub(crate) struct SubjectIn<'b> {
    texts: &'b str,
    at: &'b SubjectAt,
}

impl SubjectIn<'_> {
    /// A field's string.
    fn text(&self, field: &Option<Text>) -> Option<&str> {
        field.as_ref()?.get(self.texts)
    }
}

impl SubjectFields for SubjectIn<'_> {
    fn local_id(&self) -> Option<&str> {
        self.text(&self.at.local_id)
    }
    fn nhs_number(&self) -> Option<&str> {
        self.text(&self.at.nhs_number)
    }
    fn upn(&self) -> Option<&str> {
        self.text(&self.at.upn)
    }
    fn given_name(&self) -> Option<&str> {
        self.text(&self.at.given_name)
    }
    fn middle_names(&self) -> Option<&str> {
        self.text(&self.at.middle_names)
    }
    fn family_name(&self) -> Option<&str> {
        self.text(&self.at.family_name)
    }
    fn date_of_birth(&self) -> Option<Date> {
        self.at.date_of_birth
    }
    fn sex(&self) -> Option<Sex> {
        self.at.sex
    }
    fn postcode(&self) -> Option<&str> {
        self.text(&self.at.postcode)
    }
}

#[cfg(test)]
mod tests {
    use tellonce_domain::event::{Address, Event, LawfulBasis};
    use tellonce_domain::record::Record;
    use tellonce_domain::seal::{self, Sealed};

    use super::*;

    /// What `Record::decode` reads of `body`, if a sealed event.
    fn general(body: &[u8]) -> Option<Event<Sealed>> {
        match Record::decode(body) {
            Ok(Record::SealedEvent(se)) => Some(se),
            _ => None,
        }
    }

    /// Reading `body` in place agrees with the general decoder: it reads exactly the sealed
    /// events whose tag comes first, and then the same fields.
    fn agrees(body: &[u8]) -> bool {
        let read = EventRef::read(body);
        let se = general(body);
        let first = body.starts_with(br#"{"record":"sealed_event","#);
        let Some(ev) = read else {
            assert!(se.is_none() || !first, "{}", String::from_utf8_lossy(body));
            return false;
        };
        let se = se.expect("read in place, so the general decoder reads it");
        assert_eq!(ev.event_id.as_str(), se.event_id);
        assert_eq!(ev.source.as_str(), se.source);
        assert_eq!(ev.occurred_at, se.occurred_at);
        assert_eq!(ev.category, se.category);
        let safeguarding = tellonce_domain::access::is_safeguarding(se.lawful_basis.as_ref());
        assert_eq!(ev.safeguarding(), safeguarding);
        assert_eq!(ev.payload.kind.as_str(), se.payload.kind);
        let keys: Vec<&str> = ev.payload.keys.iter().map(Str::as_str).collect();
        assert_eq!(keys, se.payload.keys);
        let kept = ev.kept();
        assert_eq!(kept.relationships, se.relationships);
        let subjects: Vec<SubjectIn<'_>> = kept.subjects().collect();
        assert_eq!(subjects.len(), se.subjects.len());
        for (a, b) in subjects.iter().zip(&se.subjects) {
            assert_eq!(a.local_id(), b.local_id());
            assert_eq!(a.nhs_number(), b.nhs_number());
            assert_eq!(a.upn(), b.upn());
            assert_eq!(a.given_name(), b.given_name());
            assert_eq!(a.middle_names(), b.middle_names());
            assert_eq!(a.family_name(), b.family_name());
            assert_eq!(a.date_of_birth(), b.date_of_birth());
            assert_eq!(a.sex(), b.sex());
            assert_eq!(a.postcode(), b.postcode());
        }
        true
    }

    /// Whether the canonical reader reads `body`; where it does, `serde_json` reads the same.
    fn canonical_agrees(body: &str) -> bool {
        let Some(fast) = canonical::read(body) else {
            return false;
        };
        let general = EventRef::read_any(body);
        assert_eq!(Some(&fast), general.as_ref(), "{body}");
        true
    }

    fn sealed(e: Event) -> String {
        let keys: Vec<(String, seal::DataKey)> = seal::key_names(&e)
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, [i as u8; 32]))
            .collect();
        String::from_utf8(Record::SealedEvent(seal::seal(e, &keys, [5; 12])).encode())
            .expect("JSON")
    }

    #[test]
    fn what_is_read_in_place_is_what_the_general_decoder_reads() {
        let mut county = tellonce_demo::County::new(tellonce_demo::Settings {
            seed: 11,
            families: 30,
            events: 2_000,
            end: tellonce_domain::time::Timestamp(1_790_000_000_000),
        });
        let (mut read, mut canonical) = (0, 0);
        for e in county.events() {
            let body = sealed(e);
            read += usize::from(agrees(body.as_bytes()));
            canonical += usize::from(canonical_agrees(&body));
        }
        assert_eq!(
            read, 2_000,
            "every sealed event the log holds is read in place"
        );
        assert_eq!(
            canonical, 2_000,
            "every sealed event the log holds is in the form the canonical reader reads"
        );
    }

    /// Bodies changed from `good` (a PPN with an address without a postcode) in every way
    /// that matters to reading in place, each with whether `serde_json` reads it in place and
    /// whether the canonical reader does.
    fn changed(good: &str) -> Vec<(String, bool, bool)> {
        let refused = [
            good.replace(r#""given_name":"Zo"#, r#""given_name":null,"x":"Zo"#),
            good.replacen(r#""sex":""#, r#""sex":"x"#, 1),
            good.replacen(r#""sex":""#, r#""sex":null,"s":""#, 1),
            good.replace(
                r#""line1":"1 High St""#,
                r#""line1":"1 High St","postcode":null"#,
            ),
            good.replace(
                r#""line1":"1 High St""#,
                r#""line1":"1 High St","county":"X""#,
            ),
            good.replace(r#""role":"child""#, r#""role":"child","extra":1"#),
            good.replace(r#""nonce":""#, r#""nonce":7,"was":""#),
            good.replace(r#""keys":["#, r#""keys":[1,"#),
            good.replace(r#""category":"police""#, r#""category":"nope""#),
            good.replace(
                r#""statutory_basis":"#,
                r#""reason":"x","statutory_basis":"#,
            ),
            good.replace(r#""statutory_basis":"s47","#, ""),
            good.replacen(
                r#""record":"sealed_event","#,
                r#""record":"sealed_event","record":"sealed_event","#,
                1,
            ),
            good.replacen(r#""from":1"#, r#""from":01"#, 1),
            good.replacen(r#""from":1"#, r#""from":1.0"#, 1),
            good.replacen(r#""from":1"#, r#""from":4294967296"#, 1),
            good.replacen(r#""occurred_at":""#, r#""occurred_at":"x"#, 1),
            good.replacen(r#""date_of_birth":""#, r#""date_of_birth":"x"#, 1),
            {
                // The tag last: the general decoder reads it, reading in place does not.
                let mut last = good.replacen(r#""record":"sealed_event","#, "", 1);
                last.pop();
                last + r#","record":"sealed_event"}"#
            },
            format!("{good}x"),
        ];
        // Events still, in forms the log does not write: an escaped id, fields out of order,
        // spaces.
        let other_forms = [
            good.replace(r#""event_id":"ppn-1""#, r#""event_id":"ppn\u002d1""#),
            good.replacen(r#""local_id":"#, r#""upn":"1","local_id":"#, 1),
            good.replacen(r#"{"kind":"#, r#"{ "kind":"#, 1),
            format!("{good} "),
        ];
        let mut all: Vec<(String, bool, bool)> =
            refused.into_iter().map(|b| (b, false, false)).collect();
        all.extend(other_forms.into_iter().map(|b| (b, true, false)));
        // As the log writes it: another relationship.
        all.push((
            good.replace(
                r#""relationships":["#,
                r#""relationships":[{"from":0,"to":1,"kind":"sibling_of"},"#,
            ),
            true,
            true,
        ));
        all
    }

    /// A PPN with an address without a postcode, a safeguarding basis and a stated category,
    /// and `given` as the child's given name.
    fn ppn_body(given: &str) -> String {
        let at = tellonce_domain::time::Timestamp(1_700_000_000_000);
        let mut e = tellonce_domain::sample::ppn("police", "ppn-1", 1, at);
        e.subjects[0].given_name = Some(given.into());
        e.subjects[1].address = Some(Address {
            line1: "1 High St".into(),
            ..Address::default()
        });
        e.lawful_basis = Some(LawfulBasis::Safeguarding {
            statutory_basis: "s47".into(),
            reason: "risk".into(),
        });
        e.category = Some(Category::Police);
        sealed(e)
    }

    #[test]
    fn bodies_changed_in_every_way_that_matters_are_read_as_the_general_decoder_reads_them() {
        // Escapes in a name: copied, not borrowed.
        let good = ppn_body("Zoë \"Jo\" \\ Ann");
        assert!(agrees(good.as_bytes()));
        for (body, in_place, _) in changed(&good) {
            assert_eq!(agrees(body.as_bytes()), in_place, "{body}");
        }
        let last = changed(&good).swap_remove(17).0;
        assert!(last.ends_with(r#""record":"sealed_event"}"#));
        assert!(
            general(last.as_bytes()).is_some(),
            "the tag last is an event"
        );
        let mut bytes = good.into_bytes();
        let i = bytes.iter().position(|&b| b == b'Z').expect("a Z");
        bytes[i] = 0xff;
        assert!(!agrees(&bytes));
    }

    #[test]
    fn the_canonical_reader_reads_only_what_the_log_writes_and_as_serde_json_does() {
        let good = ppn_body("Zoë Jo Ann");
        assert!(canonical_agrees(&good), "the log's form is read");
        assert!(
            !canonical_agrees(&ppn_body("Zoë \"Jo\"")),
            "escapes are not"
        );
        for (body, _, canonical) in changed(&good) {
            assert_eq!(canonical_agrees(&body), canonical, "{body}");
        }
    }

    mod props {
        use proptest::prelude::*;
        use tellonce_domain::event::{
            Address, Event, LawfulBasis, Relationship, RelationshipKind, Sex, Subject, SubjectRole,
        };
        use tellonce_domain::time::{Date, Timestamp};

        use super::*;

        /// Short strings with what JSON must escape (quotes, backslashes, control characters)
        /// now and then, and characters beyond ASCII.
        fn text() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9 '\\-]{0,6}|[a-zé\"\\\u{1}\u{7f}\u{2028}]{0,4}"
        }

        fn subject() -> impl Strategy<Value = Subject> {
            let names = (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            );
            let rest = (
                proptest::option::of((1990i32..2025, 1u8..13, 1u8..29)),
                proptest::option::of(0..4usize),
                proptest::option::of((text(), text(), text(), text())),
                proptest::option::of(0..5usize),
            );
            (names, rest).prop_map(|((l, n, u, g, m, f), (dob, sex, address, role))| Subject {
                local_id: l,
                nhs_number: n,
                upn: u,
                given_name: g,
                middle_names: m,
                family_name: f,
                date_of_birth: dob.and_then(|(y, m, d)| Date::new(y, m, d).ok()),
                sex: sex.map(|i| [Sex::Female, Sex::Male, Sex::Other, Sex::Unknown][i]),
                address: address.map(|(line1, line2, town, postcode)| Address {
                    line1,
                    line2,
                    town,
                    postcode,
                }),
                role: role.map(|i| {
                    [
                        SubjectRole::Child,
                        SubjectRole::ParentCarer,
                        SubjectRole::Sibling,
                        SubjectRole::AdultHouseholdMember,
                        SubjectRole::Other,
                    ][i]
                }),
            })
        }

        fn event() -> impl Strategy<Value = Event> {
            let kinds = [
                RelationshipKind::ParentCarerOf,
                RelationshipKind::SiblingOf,
                RelationshipKind::HouseholdMember,
            ];
            (
                (text(), text(), 0i64..4_000_000_000_000),
                proptest::collection::vec(subject(), 0..3),
                proptest::collection::vec((any::<u32>(), 0..3u32, 0..3usize), 0..3),
                proptest::option::of((any::<bool>(), text(), text())),
                proptest::option::of(0..6usize),
            )
                .prop_map(
                    move |((id, source, at), subjects, rels, basis, category)| {
                        let mut e = tellonce_domain::sample::ppn("police", "x", 1, Timestamp(at));
                        e.event_id = id;
                        e.source = source;
                        e.subjects = subjects;
                        e.relationships = rels
                            .into_iter()
                            .map(|(from, to, k)| Relationship {
                                from,
                                to,
                                kind: kinds[k],
                            })
                            .collect();
                        e.lawful_basis = basis.map(|(consent, a, b)| match consent {
                            true => LawfulBasis::Consent {
                                consent_reference: a,
                            },
                            false => LawfulBasis::Safeguarding {
                                statutory_basis: a,
                                reason: b,
                            },
                        });
                        e.category = category.map(|i| {
                            use tellonce_domain::access::Category as C;
                            [
                                C::Education,
                                C::Health,
                                C::Police,
                                C::YouthJustice,
                                C::SocialCare,
                                C::EarlyHelp,
                            ][i]
                        });
                        e
                    },
                )
        }

        proptest! {
            /// The canonical reader reads every sealed event the log writes without escapes,
            /// and reads it as `serde_json` does; one written with escapes is left to
            /// `serde_json`.
            #[test]
            fn it_reads_what_the_log_writes_as_serde_json_does(e in event()) {
                let body = sealed(e);
                let read = canonical_agrees(&body);
                prop_assert_eq!(read, !body.contains('\\'), "{}", body);
            }

            /// Whatever a changed byte makes of a body, what the canonical reader reads,
            /// `serde_json` reads the same way.
            #[test]
            fn what_it_reads_of_any_changed_body_serde_json_reads_the_same(
                e in event(),
                at in any::<prop::sample::Index>(),
                how in 0..3u8,
                byte in prop::sample::select(b" ,:\"{}[]0nl1-\\x\t\n\x01".to_vec()),
            ) {
                let mut body = sealed(e).into_bytes();
                let (i, len) = (at.index(body.len()), body.len());
                match how {
                    0 => { body.remove(i); }
                    // Inserted anywhere, after the last byte too.
                    1 => body.insert(at.index(len + 1), byte),
                    _ => body[i] = byte,
                }
                if let Ok(text) = std::str::from_utf8(&body) {
                    canonical_agrees(text);
                }
            }
        }
    }
}
