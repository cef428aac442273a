use super::*;
use crate::sample;
use proptest::prelude::*;

fn keys(n: u8) -> Vec<(String, DataKey)> {
    (0..n).map(|i| (format!("k{i}"), [i + 1; 32])).collect()
}

fn raw(k: &[(String, DataKey)]) -> Vec<DataKey> {
    k.iter().map(|(_, k)| *k).collect()
}

#[test]
fn a_sealed_payload_opens_with_its_keys_only() {
    let e = sample::ppn("police", "e1", 1, Timestamp(1_700_000_000_000));
    let k = keys(2);
    let sealed = seal(e.clone(), &k, [7; 12]);
    assert_eq!(sealed.payload.kind, e.payload.kind());
    assert_eq!(sealed.payload.keys, vec!["k0", "k1"]);
    assert_eq!(open(&sealed, &raw(&k)).unwrap(), e.payload);
    // Any one key wrong, or missing, and it stays shut.
    let mut wrong = raw(&k);
    wrong[1][0] ^= 1;
    assert_eq!(open(&sealed, &wrong), Err(OpenError::Authentication));
    assert!(matches!(
        open(&sealed, &raw(&k)[..1]),
        Err(OpenError::KeyCount { .. })
    ));
}

#[test]
fn the_ciphertext_is_bound_to_its_envelope() {
    let e = sample::ppn("police", "e1", 1, Timestamp(1_700_000_000_000));
    let k = keys(1);
    let sealed = seal(e, &k, [1; 12]);
    let mut moved = sealed.clone();
    moved.event_id = "e2".into();
    assert_eq!(open(&moved, &raw(&k)), Err(OpenError::Authentication));
    let mut relabelled = sealed.clone();
    relabelled.payload.kind = "case_closed".into();
    assert_eq!(open(&relabelled, &raw(&k)), Err(OpenError::Authentication));
    let mut later = sealed;
    later.occurred_at = Timestamp(later.occurred_at.0 + 1);
    assert_eq!(open(&later, &raw(&k)), Err(OpenError::Authentication));
}

#[test]
fn no_plaintext_of_the_payload_is_in_the_sealed_record() {
    let mut e = sample::ppn("police", "e1", 1, Timestamp(1_700_000_000_000));
    e.payload = Payload::HealthContact {
        service: "health visiting".into(),
        concern: "unexplained bruising on the left arm".into(),
    };
    let sealed = seal(e, &keys(1), [3; 12]);
    let json = serde_json::to_string(&sealed).unwrap();
    assert!(!json.contains("bruising"), "{json}");
    assert!(!json.contains("health visiting"), "{json}");
}

#[test]
fn derived_text_is_bound_to_its_keys_and_offset() {
    let k = [[1u8; 32], [2u8; 32]];
    let ct = seal_text("Referral to CAMHS", &k, 42);
    assert_eq!(seal_text("Referral to CAMHS", &k, 42), ct, "deterministic");
    assert_eq!(open_text(&ct, &k, 42).unwrap(), "Referral to CAMHS");
    assert_eq!(open_text(&ct, &k, 43), Err(OpenError::Authentication));
    assert_eq!(open_text(&ct, &k[..1], 42), Err(OpenError::Authentication));
}

#[test]
fn the_key_an_open_gives_seals_text_as_the_data_keys_do() {
    let e = sample::ppn("police", "e1", 1, Timestamp(1_700_000_000_000));
    let k = keys(2);
    let sealed = seal(e.clone(), &k, [7; 12]);
    let (payload, key) = open_keyed(&sealed, &raw(&k)).unwrap();
    assert_eq!(payload, e.payload);
    let text = seal_text_keyed("Referral to CAMHS", &key, 42);
    assert_eq!(text, seal_text("Referral to CAMHS", &raw(&k), 42));
    assert_eq!(open_text(&text, &raw(&k), 42).unwrap(), "Referral to CAMHS");
    assert_eq!(format!("{key:?}"), "EventKey(..)", "a key is never printed");
}

#[test]
fn key_names_follow_local_ids_or_the_event() {
    let mut e = sample::ppn("police", "e9", 1, Timestamp(1_700_000_000_000));
    e.subjects[0].local_id = Some("L1".into());
    e.subjects.push(crate::Subject::default());
    let names = key_names(&e);
    assert_eq!(names[0], format!("{}/L1", e.source));
    assert_eq!(
        names[names.len() - 1],
        format!("{}@e9#{}", e.source, names.len() - 1)
    );
}

fn day(s: &str) -> Timestamp {
    Date::parse(s).unwrap().start()
}

#[test]
fn retention_waits_for_quiet_years_the_birthday_and_no_involvement() {
    let rule = RetentionRule {
        after_last_activity_years: 6,
        until_age_years: 25,
    };
    let dob = Date::parse("2000-03-01").ok();
    let closed = day("2018-06-01");
    // Quiet six years, and 25 on 2025-03-01.
    assert!(rule.due(dob, closed, false, day("2025-03-01")));
    assert!(!rule.due(dob, closed, false, day("2025-02-28")));
    // Still involved: never.
    assert!(!rule.due(dob, closed, true, day("2060-01-01")));
    // 25 long ago, but closed only five years ago.
    assert!(!rule.due(dob, day("2020-01-01"), false, day("2025-12-31")));
    assert!(rule.due(dob, day("2020-01-01"), false, day("2026-01-01")));
    // No birth date known: only the quiet years count.
    assert!(rule.due(None, closed, false, day("2024-06-01")));
    assert!(!rule.due(None, closed, false, day("2024-05-31")));
}

proptest! {
    #[test]
    fn sealing_round_trips_and_any_flipped_byte_is_caught(
        n in 1u8..4, nonce in any::<[u8; 12]>(), flip in any::<prop::sample::Index>(),
    ) {
        let e = sample::ppn("police", "p1", 1, Timestamp(1_700_000_000_000));
        let k = keys(n);
        let sealed = seal(e.clone(), &k, nonce);
        prop_assert_eq!(open(&sealed, &raw(&k)).unwrap(), e.payload);
        let mut ct = B64.decode(&sealed.payload.ciphertext).unwrap();
        let i = flip.index(ct.len());
        ct[i] ^= 0x40;
        let mut bad = sealed;
        bad.payload.ciphertext = B64.encode(ct);
        prop_assert_eq!(open(&bad, &raw(&k)), Err(OpenError::Authentication));
    }

    #[test]
    fn retention_is_never_due_while_involved(
        dob_days in 0i64..20_000, last in 0i64..25_000, now in 0i64..40_000,
        a in 0u32..10, b in 0u32..30,
    ) {
        let rule = RetentionRule { after_last_activity_years: a, until_age_years: b };
        let d = |n: i64| Timestamp(n * 86_400_000);
        prop_assert!(!rule.due(Some(Date::of(d(dob_days))), d(last), true, d(now)));
    }
}

/// What earlier versions sealed still opens, byte for byte: the tag of a fixed payload under
/// fixed keys and nonce (it covers the associated data, so the envelope's encoding cannot
/// drift), for a time after 1970 and one before it, and a sealed summary line.
#[test]
fn sealing_writes_the_bytes_earlier_versions_wrote() {
    for (at, tag) in [
        (1_700_000_000_123, "a0ed67e38930ff3560a85783a7476f30"),
        (-86_400_001, "29c52fac3176994be8a8c4dc27667e25"),
    ] {
        let e = sample::ppn("police", "e1", 1, Timestamp(at));
        let sealed = seal(e.clone(), &keys(2), [9; 12]);
        let ct = B64.decode(&sealed.payload.ciphertext).unwrap();
        assert_eq!(ct.len(), 434);
        let got: String = ct[ct.len() - 16..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, tag, "at {at}");
        assert_eq!(open(&sealed, &raw(&keys(2))).unwrap(), e.payload);
    }
    assert_eq!(
        seal_text("Referral to CAMHS", &[[1u8; 32], [2u8; 32]], 42),
        "hxvusRrdmUNbKDUod+wQYF96qBMMEztLqpk5yzRBfYQs"
    );
}
