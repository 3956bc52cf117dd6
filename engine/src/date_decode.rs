//! Decoding a date that chrono's serde wrote as text (`YYYY-MM-DD`) without chrono's general
//! parser. Every citizen's record holds a birth date, so a restart with 10 M citizens parses
//! 10 M of them: chrono's `parse_internal` and `to_naive_date` were 5.9% of such a restart's
//! samples (docs/PERFORMANCE.md). The text is the same as before (only decoding changes), and
//! anything but the plain ten-character form (a year past 9999, a sign) goes to chrono's own
//! parser, so exactly the same dates are accepted.

use std::fmt;

use chrono::NaiveDate;
use serde::de::{self, Deserializer, Visitor};

/// `#[serde(deserialize_with = "crate::date_decode::naive_date")]` on a `NaiveDate` field.
pub fn naive_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
    struct DateVisitor;

    impl Visitor<'_> for DateVisitor {
        type Value = NaiveDate;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a date, YYYY-MM-DD")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<NaiveDate, E> {
            match plain(text) {
                Some(date) => Ok(date),
                None => text.parse().map_err(E::custom),
            }
        }
    }

    deserializer.deserialize_str(DateVisitor)
}

/// `YYYY-MM-DD` with four-digit year, or None (not that form, or not a real date).
fn plain(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let year = number(&bytes[..4])?;
    let month = number(&bytes[5..7])?;
    let day = number(&bytes[8..])?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast(#[serde(deserialize_with = "naive_date")] NaiveDate);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Chrono(NaiveDate);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Text(String);

    #[test]
    fn decodes_what_chrono_writes_and_accepts_what_chrono_accepts() {
        use crate::journal::{decode, encode};
        let dates = [
            NaiveDate::from_ymd_opt(1980, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
            NaiveDate::from_ymd_opt(1, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(12345, 6, 7).unwrap(),
            NaiveDate::from_ymd_opt(-44, 3, 15).unwrap(),
        ];
        for date in dates {
            let back: Fast = decode(&encode(&Chrono(date))).unwrap();
            assert_eq!(back.0, date);
        }
        // Whatever the text, the same answer as chrono's: the same date, or refused by both
        // (chrono is lenient with some forms, such as a one-digit month).
        for text in [
            "2023-02-29",
            "2023-13-01",
            "20x3-01-01",
            "",
            "1980-01-01 ",
            "2023-1-01",
            "0999-09-09",
            "+12345-06-07",
        ] {
            let bytes = encode(&Text(text.to_string()));
            let fast = decode::<Fast>(&bytes).map(|d| d.0);
            let chrono = decode::<Chrono>(&bytes).map(|d| d.0);
            assert_eq!(
                fast.is_ok(),
                chrono.is_ok(),
                "{text:?}: {fast:?} {chrono:?}"
            );
            assert_eq!(fast.ok(), chrono.ok(), "{text:?}");
        }
        assert!(decode::<Fast>(&encode(&Text("2023-02-29".into()))).is_err());
    }
}
