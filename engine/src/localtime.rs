//! Clinic-local time: what an instant is on the wall clock of a clinic's time zone.
//!
//! Instants are stored and compared in UTC (unix ms) everywhere; a clinic's IANA zone
//! (`ClinicInfo::timezone`, validated on `PUT /v1/clinics`) only decides how an instant
//! reads locally. Two things read it: "the slot's date" of the rules (a citizen's age and
//! dose interval, and a batch's expiry on administration) is the clinic's local calendar
//! date, and the availability answers show `start_local`/`end_local` with the zone's UTC
//! offset at that instant (so a slot across a daylight-saving change shows +01:00 on one
//! side and +02:00 on the other). Every such reading goes through this module.
//!
//! A zone name that does not parse (never stored through the API, which validates it) reads
//! as UTC rather than failing a booking.

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::clock::UnixMs;

/// The IANA zone `name` (`Europe/Berlin`), or `None` when it is not one.
pub fn zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// `at_ms` as the wall clock of zone `timezone` shows it, with the zone's UTC offset at that
/// instant (`2027-03-28T03:00:00+02:00`).
pub fn local_time(at_ms: UnixMs, timezone: &str) -> DateTime<FixedOffset> {
    let utc = DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap_or_default();
    match zone(timezone) {
        Some(tz) => {
            let local = tz.from_utc_datetime(&utc.naive_utc());
            local.with_timezone(&local.offset().fix())
        }
        None => utc.fixed_offset(),
    }
}

/// The calendar date at the clinic when `at_ms` happens: "the slot's date" of the rules.
pub fn local_date(at_ms: UnixMs, timezone: &str) -> NaiveDate {
    local_time(at_ms, timezone).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> UnixMs {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn berlin_switches_offset_at_the_daylight_saving_changes_of_2027() {
        let berlin = |at: &str| local_time(ms(at), "Europe/Berlin").to_rfc3339();
        // 28 March 2027: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        assert_eq!(berlin("2027-03-28T00:59:00Z"), "2027-03-28T01:59:00+01:00");
        assert_eq!(berlin("2027-03-28T01:00:00Z"), "2027-03-28T03:00:00+02:00");
        // 31 October 2027: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
        assert_eq!(berlin("2027-10-31T00:30:00Z"), "2027-10-31T02:30:00+02:00");
        assert_eq!(berlin("2027-10-31T01:30:00Z"), "2027-10-31T02:30:00+01:00");
    }

    #[test]
    fn the_local_date_can_be_the_next_day_and_an_unknown_zone_reads_as_utc() {
        assert_eq!(
            local_date(ms("2027-06-14T23:30:00Z"), "Europe/Berlin"),
            NaiveDate::from_ymd_opt(2027, 6, 15).unwrap()
        );
        assert_eq!(
            local_date(ms("2027-06-14T23:30:00Z"), "Not/AZone"),
            NaiveDate::from_ymd_opt(2027, 6, 14).unwrap()
        );
        assert!(zone("Not/AZone").is_none());
        assert_eq!(
            local_time(ms("2027-06-14T23:30:00Z"), "UTC").to_rfc3339(),
            "2027-06-14T23:30:00+00:00"
        );
    }
}
