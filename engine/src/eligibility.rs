//! Eligibility rules of a booking, checked while its seat and dose are held (docs/API.md,
//! "Rules a booking must pass"). Pure functions of the rules, the citizen and the slot.

use chrono::{Datelike, NaiveDate};

use crate::localtime::local_date;
use crate::model::{CitizenRecord, VaccineRules};
use crate::view::HoldContext;

/// Every rule the citizen fails, in a fixed order; empty means eligible.
pub fn check(vaccine: &str, citizen: Option<&CitizenRecord>, context: &HoldContext) -> Vec<String> {
    let Some(citizen) = citizen else {
        return vec!["unknown_citizen".to_string()];
    };
    let rules: &VaccineRules = &context.rules;
    let slot_date = local_date(context.slot_start_ms, &context.clinic_timezone);
    let mut reasons = Vec::new();
    let age = age_on(citizen.birth_date, slot_date);
    if rules.min_age.is_some_and(|min| age < i64::from(min)) {
        reasons.push("below_min_age".to_string());
    }
    if rules.max_age.is_some_and(|max| age > i64::from(max)) {
        reasons.push("above_max_age".to_string());
    }
    if !rules.regions.is_empty() && !rules.regions.contains(&citizen.region) {
        reasons.push("region_not_eligible".to_string());
    }
    if rules
        .contraindications
        .iter()
        .any(|c| citizen.allergies.contains(c))
    {
        reasons.push("contraindication".to_string());
    }
    let previous: Vec<NaiveDate> = citizen
        .doses
        .iter()
        .filter(|d| d.vaccine == vaccine)
        .map(|d| d.date)
        .collect();
    if rules.series_doses > 0 && previous.len() >= rules.series_doses as usize {
        reasons.push("series_complete".to_string());
    }
    if let Some(last) = previous.iter().max() {
        if (slot_date - *last).num_days() < i64::from(rules.min_interval_days) {
            reasons.push("min_interval_not_met".to_string());
        }
    }
    reasons
}

/// Whole years between birth and `on`.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> i64 {
    let mut years = i64::from(on.year() - birth.year());
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DoseRecord;
    use std::sync::Arc;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn context(rules: VaccineRules, start: &str, tz: &str) -> HoldContext {
        HoldContext {
            slot_start_ms: chrono::DateTime::parse_from_rfc3339(start)
                .unwrap()
                .timestamp_millis(),
            clinic_region: "north".into(),
            clinic_timezone: tz.into(),
            rules: Arc::new(rules),
        }
    }

    fn rules() -> VaccineRules {
        VaccineRules {
            min_age: Some(12),
            max_age: Some(64),
            regions: vec!["north".into()],
            series_doses: 2,
            min_interval_days: 21,
            contraindications: vec!["peg".into()],
        }
    }

    fn citizen() -> CitizenRecord {
        CitizenRecord {
            birth_date: date("2000-06-15"),
            region: "north".into(),
            allergies: vec![],
            insurance_id: "I-1".into(),
            doses: vec![],
        }
    }

    #[test]
    fn eligible_citizen_passes() {
        let ctx = context(rules(), "2026-12-01T09:00:00Z", "Europe/Berlin");
        assert!(check("pfz", Some(&citizen()), &ctx).is_empty());
    }

    #[test]
    fn unknown_citizen() {
        let ctx = context(rules(), "2026-12-01T09:00:00Z", "UTC");
        assert_eq!(check("pfz", None, &ctx), vec!["unknown_citizen"]);
    }

    #[test]
    fn every_failed_rule_is_listed() {
        let mut c = citizen();
        c.birth_date = date("2020-01-01");
        c.region = "south".into();
        c.allergies = vec!["peg".into()];
        c.doses = vec![
            DoseRecord {
                vaccine: "pfz".into(),
                date: date("2026-11-01"),
            },
            DoseRecord {
                vaccine: "pfz".into(),
                date: date("2026-11-25"),
            },
        ];
        let ctx = context(rules(), "2026-12-01T09:00:00Z", "UTC");
        assert_eq!(
            check("pfz", Some(&c), &ctx),
            vec![
                "below_min_age",
                "region_not_eligible",
                "contraindication",
                "series_complete",
                "min_interval_not_met"
            ]
        );
        // Doses of another vaccine do not count.
        c.doses.iter_mut().for_each(|d| d.vaccine = "mod".into());
        assert!(!check("pfz", Some(&c), &ctx).contains(&"series_complete".to_string()));
    }

    #[test]
    fn age_is_counted_on_the_clinics_local_date() {
        // 23:30 UTC on 14 June is already 15 June in Berlin: the citizen turns 12 there.
        let mut c = citizen();
        c.birth_date = date("2014-06-15");
        let utc = context(rules(), "2026-06-14T23:30:00Z", "UTC");
        let berlin = context(rules(), "2026-06-14T23:30:00Z", "Europe/Berlin");
        assert_eq!(check("pfz", Some(&c), &utc), vec!["below_min_age"]);
        assert!(check("pfz", Some(&c), &berlin).is_empty());
    }

    #[test]
    fn age_counts_whole_years() {
        assert_eq!(age_on(date("2000-03-01"), date("2026-02-28")), 25);
        assert_eq!(age_on(date("2000-03-01"), date("2026-03-01")), 26);
    }
}
