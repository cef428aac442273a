//! Calendar dates and instants, parsed and formatted without a clock or a time library.
//!
//! The domain never reads the clock: the current time comes in as a [`Timestamp`] argument.
//! Instants are milliseconds since the Unix epoch (UTC); dates are proleptic Gregorian.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds in one day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// A calendar date (no time of day, no zone), e.g. a date of birth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2014.
    pub year: i32,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month, 1-31.
    pub day: u8,
}

/// Why a date or timestamp string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeParseError(pub String);

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

fn digits(s: &str, what: &str) -> Result<u32, TimeParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimeParseError(format!("{what} must be digits, got {s:?}")));
    }
    s.parse()
        .map_err(|_| TimeParseError(format!("{what} out of range: {s:?}")))
}

impl Date {
    /// Builds a date, checking that the day exists in that month.
    pub fn new(year: i32, month: u8, day: u8) -> Result<Self, TimeParseError> {
        if !(1..=12).contains(&month) {
            return Err(TimeParseError(format!("month {month} is not 1-12")));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(TimeParseError(format!(
                "{year:04}-{month:02} has no day {day}"
            )));
        }
        Ok(Date { year, month, day })
    }

    /// Parses an ISO 8601 calendar date, `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Self, TimeParseError> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(TimeParseError(format!(
                "expected a date as YYYY-MM-DD, got {s:?}"
            )));
        }
        let year = digits(&s[0..4], "year")? as i32;
        let month = digits(&s[5..7], "month")? as u8;
        let day = digits(&s[8..10], "day")? as u8;
        Date::new(year, month, day)
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// The date on which an instant falls, in UTC.
    pub fn of(ts: Timestamp) -> Self {
        let (year, month, day) = civil_from_days(ts.0.div_euclid(MS_PER_DAY));
        Date { year, month, day }
    }

    /// The instant at 00:00 UTC of this date.
    pub fn start(self) -> Timestamp {
        Timestamp(self.days_since_epoch() * MS_PER_DAY)
    }

    /// Age in whole years on `on`.
    pub fn age_on(self, on: Date) -> i32 {
        let mut age = on.year - self.year;
        if (on.month, on.day) < (self.month, self.day) {
            age -= 1;
        }
        age
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Timestamp {
    /// Parses an RFC 3339 timestamp such as `2026-03-04T09:30:00Z`,
    /// `2026-03-04T09:30:00.250+01:00` (fractions beyond milliseconds are truncated).
    pub fn parse(s: &str) -> Result<Self, TimeParseError> {
        let bad = || {
            TimeParseError(format!(
                "expected an RFC 3339 timestamp like 2026-03-04T09:30:00Z, got {s:?}"
            ))
        };
        if s.len() < 20 || !s.is_char_boundary(10) || !s.is_char_boundary(19) {
            return Err(bad());
        }
        let date = Date::parse(&s[..10])?;
        let b = s.as_bytes();
        if !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let hour = digits(&s[11..13], "hour")?;
        let minute = digits(&s[14..16], "minute")?;
        let second = digits(&s[17..19], "second")?;
        if hour > 23 || minute > 59 || second > 60 {
            return Err(TimeParseError(format!("time of day out of range in {s:?}")));
        }
        let mut rest = &s[19..];
        let mut millis = 0i64;
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(bad());
            }
            let ms_digits = &frac[..n.min(3)];
            millis =
                i64::from(digits(ms_digits, "fraction")?) * 10i64.pow(3 - ms_digits.len() as u32);
            rest = &frac[n..];
        }
        let offset_minutes: i64 = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6
                && (rest.starts_with('+') || rest.starts_with('-'))
                && &rest[3..4] == ":" =>
            {
                let h = i64::from(digits(&rest[1..3], "offset hours")?);
                let m = i64::from(digits(&rest[4..6], "offset minutes")?);
                if h > 23 || m > 59 {
                    return Err(bad());
                }
                let sign = if rest.starts_with('-') { -1 } else { 1 };
                sign * (h * 60 + m)
            }
            _ => return Err(bad()),
        };
        let second = i64::from(second.min(59));
        let local = date.days_since_epoch() * MS_PER_DAY
            + (i64::from(hour) * 3600 + i64::from(minute) * 60 + second) * 1000
            + millis;
        Ok(Timestamp(local - offset_minutes * 60_000))
    }
}

impl fmt::Display for Timestamp {
    /// Formats as RFC 3339 in UTC with milliseconds when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = Date::of(*self);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (h, m, s, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        if (0..=9999).contains(&date.year) {
            // The common case, written digit by digit: timelines format thousands a second.
            let mut out = *b"0000-00-00T00:00:00.000Z";
            let mut put = |at: usize, width: usize, mut n: i64| {
                for i in (at..at + width).rev() {
                    out[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                }
            };
            put(0, 4, i64::from(date.year));
            put(5, 2, i64::from(date.month));
            put(8, 2, i64::from(date.day));
            put(11, 2, h);
            put(14, 2, m);
            put(17, 2, s);
            let text = if ms != 0 {
                put(20, 3, ms);
                &out[..]
            } else {
                out[19] = b'Z';
                &out[..20]
            };
            // Only ASCII digits and punctuation were written.
            return f.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?);
        }
        write!(f, "{date}T{h:02}:{m:02}:{s:02}")?;
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        write!(f, "Z")
    }
}

/// A serde visitor that reads a string with a function (the `&str` it is given, borrowed or
/// the deserializer's scratch space: nothing is copied first, and a log replay reads millions),
/// and says what it expected.
pub(crate) struct Parsed<T, E>(pub fn(&str) -> Result<T, E>, pub &'static str);

impl<T, E: fmt::Display> serde::de::Visitor<'_> for Parsed<T, E> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<Er: serde::de::Error>(self, v: &str) -> Result<T, Er> {
        (self.0)(v).map_err(Er::custom)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Parsed(Timestamp::parse, "an RFC 3339 instant"))
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Parsed(Date::parse, "a date (YYYY-MM-DD)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_rfc3339() {
        let t = Timestamp::parse("2026-03-04T09:30:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-03-04T09:30:00Z");
        let t2 = Timestamp::parse("2026-03-04T10:30:00.250+01:00").unwrap();
        assert_eq!(t2.0 - t.0, 250);
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_bad_dates() {
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::parse("2024-02-29").is_ok());
        assert!(Date::parse("2024-13-01").is_err());
        assert!(Date::parse("24-01-01").is_err());
        assert!(Timestamp::parse("2024-01-01").is_err());
        assert!(Timestamp::parse("2024-01-01T25:00:00Z").is_err());
        assert!(Timestamp::parse("2024-01-01T10:00:00").is_err());
        assert!(Timestamp::parse("2024-01-01T10:00:00ééééé").is_err());
    }

    #[test]
    fn age_counts_birthdays() {
        let dob = Date::parse("2014-07-21").unwrap();
        assert_eq!(dob.age_on(Date::parse("2026-07-20").unwrap()), 11);
        assert_eq!(dob.age_on(Date::parse("2026-07-21").unwrap()), 12);
    }

    proptest! {
        #[test]
        fn timestamp_round_trips(ms in -2_000_000_000_000i64..5_000_000_000_000i64) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn timestamps_format_as_the_plain_format_does(ms in -2_000_000_000_000i64..5_000_000_000_000i64) {
            let t = Timestamp(ms);
            let (d, of_day) = (Date::of(t), ms.rem_euclid(MS_PER_DAY));
            let mut plain = format!(
                "{d}T{:02}:{:02}:{:02}",
                of_day / 3_600_000,
                of_day / 60_000 % 60,
                of_day / 1000 % 60
            );
            if of_day % 1000 != 0 {
                plain.push_str(&format!(".{:03}", of_day % 1000));
            }
            plain.push('Z');
            prop_assert_eq!(t.to_string(), plain);
        }

        #[test]
        fn date_round_trips(days in -100_000i64..100_000i64) {
            let d = Date::of(Timestamp(days * MS_PER_DAY));
            prop_assert_eq!(d.days_since_epoch(), days);
            prop_assert_eq!(Date::parse(&d.to_string()).unwrap(), d);
        }
    }
}
