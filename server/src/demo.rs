//! `serve --demo`: a realistic demo campaign, loaded through the engine's own commands, and
//! the tokens and curl commands to try it.
//!
//! 200 clinics in 4 regions and 2 time zones, 14 days of 15-minute slots (08:00-18:00 local),
//! 2 vaccines with different rules, stock by batch, 20,000 citizens. Loading is idempotent:
//! catalogue writes are upserts that change nothing the second time, and a delivery is made
//! only when its batch is not stocked yet, so loading again adds nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone};
use holdfast_engine::command::{PutCitizen, PutClinic, PutSlots, PutVaccine, ReceiveStock};
use holdfast_engine::model::{CitizenRecord, ClinicInfo, DoseRecord, SlotSpec, VaccineRules};
use holdfast_engine::{Command, Node, UnixMs};
use holdfast_gateway::app::AppState;
use holdfast_gateway::auth::{Claims, Role};

pub const CLINICS: usize = 200;
pub const CITIZENS: usize = 20_000;
pub const DAYS: i64 = 14;
const SLOT_MINUTES: i64 = 15;
const OPEN_HOUR: u32 = 8;
const CLOSE_HOUR: u32 = 18;
const SLOT_CAPACITY: u32 = 4;
const REGIONS: [&str; 4] = ["north", "east", "south", "west"];
/// Commands per message when loading: large enough to amortise the hop, small enough that a
/// shard answers other callers between batches.
const LOAD_BATCH_COMMANDS: usize = 512;

pub struct DemoSummary {
    pub clinics: usize,
    pub slots: usize,
    pub citizens: usize,
    pub first_slot_id: String,
}

fn timezone_of(region: &str) -> &'static str {
    match region {
        "north" | "east" => "Europe/Berlin",
        _ => "Europe/London",
    }
}

pub fn clinic_id(i: usize) -> String {
    format!("clinic-{i:03}")
}

/// The one batch of `vaccine` at clinic `i`.
pub fn batch_id(i: usize, vaccine: &str) -> String {
    format!("B-{i:03}-{vaccine}-1")
}

pub fn citizen_id(i: usize) -> String {
    format!("c{i:05}")
}

fn vaccines() -> Vec<(String, VaccineRules)> {
    vec![
        (
            "pfz".into(),
            VaccineRules {
                min_age: Some(12),
                max_age: None,
                regions: vec![],
                series_doses: 2,
                min_interval_days: 21,
                contraindications: vec!["peg".into()],
            },
        ),
        (
            "mdn".into(),
            VaccineRules {
                min_age: Some(18),
                max_age: Some(64),
                regions: vec!["north".into(), "east".into()],
                series_doses: 2,
                min_interval_days: 28,
                contraindications: vec!["polysorbate".into()],
            },
        ),
    ]
}

/// Slots of one clinic: 15-minute slots from 08:00 to 18:00 local time, for 14 days from the
/// day after `now_ms` (in the clinic's zone).
fn clinic_slots(timezone: &str, now_ms: UnixMs) -> Vec<(String, SlotSpec)> {
    let tz: chrono_tz::Tz = timezone.parse().expect("demo zones are valid");
    let today = tz
        .timestamp_millis_opt(now_ms)
        .single()
        .expect("valid instant")
        .date_naive();
    let mut slots = Vec::new();
    for day in 1..=DAYS {
        let date = today + Duration::days(day);
        let mut minute = i64::from(OPEN_HOUR) * 60;
        while minute < i64::from(CLOSE_HOUR) * 60 {
            let time = NaiveTime::from_hms_opt((minute / 60) as u32, (minute % 60) as u32, 0)
                .expect("valid time");
            let Some(start) = tz.from_local_datetime(&date.and_time(time)).earliest() else {
                minute += SLOT_MINUTES;
                continue;
            };
            let start_ms = start.timestamp_millis();
            slots.push((
                format!(
                    "d{:04}{:02}{:02}-{:02}{:02}",
                    date.year(),
                    date.month(),
                    date.day(),
                    minute / 60,
                    minute % 60
                ),
                SlotSpec {
                    start_ms,
                    end_ms: start_ms + SLOT_MINUTES * 60_000,
                    capacity: SLOT_CAPACITY,
                    vaccines: vec!["pfz".into(), "mdn".into()],
                    priority_reserve: 0,
                },
            ));
            minute += SLOT_MINUTES;
        }
    }
    slots
}

/// Citizen `i` (1-based). Citizen 1 is the one the printed curl commands book for: 41 years
/// old, in the north, no allergies, no doses, so every rule passes.
fn citizen(i: usize) -> CitizenRecord {
    let birth_year = 1940 + (i * 7919 % 73) as i32;
    let birth_date = NaiveDate::from_ymd_opt(birth_year, 1 + (i % 12) as u32, 1 + (i % 28) as u32)
        .expect("valid date");
    let mut record = CitizenRecord {
        birth_date,
        region: REGIONS[i % 4].to_string(),
        allergies: if i.is_multiple_of(50) {
            vec!["peg".into()]
        } else {
            vec![]
        },
        insurance_id: format!("I-{i:05}"),
        doses: if i.is_multiple_of(5) {
            vec![DoseRecord {
                vaccine: "pfz".into(),
                date: NaiveDate::from_ymd_opt(2026, 9, 1).expect("valid"),
            }]
        } else {
            vec![]
        },
    };
    if i == 1 {
        record.birth_date = NaiveDate::from_ymd_opt(1985, 4, 2).expect("valid");
        record.region = "north".into();
    }
    record
}

async fn run_grouped(node: &Node, commands: Vec<(u32, Command)>) -> Result<(), String> {
    let mut by_shard: BTreeMap<u32, Vec<Command>> = BTreeMap::new();
    for (shard, command) in commands {
        by_shard.entry(shard).or_default().push(command);
    }
    for (shard, commands) in by_shard {
        let mut rest = commands;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(LOAD_BATCH_COMMANDS));
            for result in node
                .exec_batch(shard, rest)
                .await
                .map_err(|e| e.to_string())?
            {
                result.map_err(|e| format!("demo load failed: {e}"))?;
            }
            rest = tail;
        }
    }
    Ok(())
}

/// Loads the demo campaign into `node` (idempotently).
pub async fn load(node: &Node, now_ms: UnixMs) -> Result<DemoSummary, String> {
    for (name, rules) in vaccines() {
        node.broadcast(Command::PutVaccine(PutVaccine { name, rules }))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut catalogue = Vec::new();
    let mut slots_total = 0;
    let mut first_slot_id = String::new();
    for i in 1..=CLINICS {
        let id = clinic_id(i);
        let region = REGIONS[(i - 1) % 4];
        let timezone = timezone_of(region);
        let shard = node.clinic_shard(&id);
        catalogue.push((
            shard,
            Command::PutClinic(PutClinic {
                clinic_id: id.clone(),
                info: ClinicInfo {
                    name: format!("Vaccination centre {i:03} ({region})"),
                    region: region.into(),
                    timezone: timezone.into(),
                },
            }),
        ));
        let slots = clinic_slots(timezone, now_ms);
        if i == 1 {
            first_slot_id = slots[0].0.clone();
        }
        slots_total += slots.len();
        catalogue.push((
            shard,
            Command::PutSlots(PutSlots {
                clinic_id: id.clone(),
                slots,
            }),
        ));
    }
    run_grouped(node, catalogue).await?;

    let mut deliveries = Vec::new();
    for i in 1..=CLINICS {
        let id = clinic_id(i);
        let shard = node.clinic_shard(&id);
        for (vaccine, quantity) in [("pfz", 1500), ("mdn", 800)] {
            let batch = batch_id(i, vaccine);
            let stocked = node
                .has_batch(&id, vaccine, &batch)
                .await
                .map_err(|e| e.to_string())?;
            if !stocked {
                deliveries.push((
                    shard,
                    Command::ReceiveStock(ReceiveStock {
                        clinic_id: id.clone(),
                        vaccine: vaccine.into(),
                        batch,
                        quantity,
                        expires_on: NaiveDate::from_ymd_opt(2027, 6, 30).expect("valid"),
                    }),
                ));
            }
        }
    }
    run_grouped(node, deliveries).await?;

    let citizens = (1..=CITIZENS)
        .map(|i| {
            let id = citizen_id(i);
            (
                node.citizen_shard(&id),
                Command::PutCitizen(PutCitizen {
                    citizen_id: id,
                    record: citizen(i),
                }),
            )
        })
        .collect();
    run_grouped(node, citizens).await?;
    Ok(DemoSummary {
        clinics: CLINICS,
        slots: slots_total,
        citizens: CITIZENS,
        first_slot_id,
    })
}

/// Prints tokens and the curl commands that book, confirm and read an appointment, then check
/// it in and administer it as staff of its clinic.
pub fn print_banner(state: &AppState, addr: SocketAddr, summary: &DemoSummary, secret_path: &Path) {
    let exp = chrono::Utc::now().timestamp() + 24 * 3600;
    let sign = |sub: &str, role: Role, citizen: Option<&str>, clinic: Option<&str>| {
        state.jwt.sign(&Claims {
            sub: sub.into(),
            role,
            exp,
            citizen_id: citizen.map(Into::into),
            clinic_id: clinic.map(Into::into),
        })
    };
    let authority = sign("demo-authority", Role::Authority, None, None);
    let operator = sign("demo-operator", Role::Operator, None, None);
    let citizen = citizen_id(1);
    let citizen_token = sign(
        &format!("citizen:{citizen}"),
        Role::Citizen,
        Some(&citizen),
        None,
    );
    let clinic = clinic_id(1);
    let staff_token = sign(&format!("staff:{clinic}"), Role::Staff, None, Some(&clinic));
    let base = format!("http://{addr}");
    println!(
        r#"
holdfast demo is ready on {base}
  {clinics} clinics, {slots} slots, {citizens} citizens, vaccines pfz and mdn (secret: {secret})

Tokens (valid 24 h):
  export AUTHORITY={authority}
  export OPERATOR={operator}
  export CITIZEN={citizen_token}
  export STAFF={staff_token}

Try it (copy-paste; the first command keeps the appointment id in $ID):
  ID=$(curl -s -X POST {base}/v1/appointments -H "Authorization: Bearer $CITIZEN" -H 'Content-Type: application/json' -H "Idempotency-Key: demo-$RANDOM" -d '{{"clinic_id":"{clinic}","slot_id":"{slot}","vaccine":"pfz","citizen_id":"{citizen}"}}' | tee /dev/stderr | sed -E 's/.*"appointment_id":"([^"]+)".*/\1/')
  QR=$(curl -s -X POST {base}/v1/appointments/$ID/confirm -H "Authorization: Bearer $CITIZEN" | tee /dev/stderr | sed -E 's/.*"qr_token":"([^"]+)".*/\1/')
  curl -s -w '\n' {base}/v1/appointments/$ID -H "Authorization: Bearer $CITIZEN"

At the clinic (staff scan the QR code, then give the dose from the clinic's batch):
  curl -s -w '\n' -X POST {base}/v1/checkin -H "Authorization: Bearer $STAFF" -H 'Content-Type: application/json' -d "{{\"qr_token\":\"$QR\"}}"
  curl -s -w '\n' -X POST {base}/v1/appointments/$ID/administer -H "Authorization: Bearer $STAFF" -H 'Content-Type: application/json' -d "{{\"qr_token\":\"$QR\",\"batch\":\"{batch}\"}}"

Also: curl -s '{base}/v1/clinics/{clinic}/availability?vaccine=pfz'  |  curl -s {base}/v1/admin/shards -H "Authorization: Bearer $OPERATOR"

Operator console (open in a browser; the token after # is not sent to the server):
  {base}/console#token={operator}
"#,
        clinics = summary.clinics,
        slots = summary.slots,
        citizens = summary.citizens,
        secret = secret_path.display(),
        batch = batch_id(1, "pfz"),
        slot = summary.first_slot_id,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_engine::ring::Ring;
    use holdfast_engine::{NodeConfig, SystemClock};
    use std::sync::Arc;

    async fn totals(node: &Node) -> (u64, u64, i64) {
        let mut totals = (0, 0, 0);
        for shard in 0..node.shards() {
            let (counts, _) = node.status_of(shard).await.unwrap();
            totals.0 += counts.clinics;
            totals.1 += counts.slots;
        }
        totals.2 = node
            .clinics(None, None)
            .await
            .unwrap()
            .iter()
            .flat_map(|c| c.available_doses.iter().map(|(_, n)| *n))
            .sum();
        totals
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loading_twice_adds_nothing() {
        let node = Node::start(
            NodeConfig::embedded(8),
            Ring::single("local"),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let now_ms = node.now_ms();
        let first = load(&node, now_ms).await.unwrap();
        let after_first = totals(&node).await;
        assert_eq!(after_first.0, CLINICS as u64);
        assert_eq!(after_first.1, first.slots as u64);
        assert_eq!(after_first.2, CLINICS as i64 * (1500 + 800));
        load(&node, now_ms).await.unwrap();
        assert_eq!(totals(&node).await, after_first);
        // The printed walk-through books citizen 1 at clinic 1's first slot: it must be eligible.
        let booked = node
            .book_and_wait(holdfast_engine::BookRequest {
                clinic_id: clinic_id(1),
                slot_id: first.first_slot_id.clone(),
                vaccine: "pfz".into(),
                citizen_id: citizen_id(1),
                hold_ms: 60_000,
            })
            .await
            .unwrap();
        assert_eq!(booked.status, holdfast_engine::Status::Pending);
        node.stop().await;
    }

    #[test]
    fn slots_are_local_quarter_hours() {
        // 2026-11-22 12:00 UTC; Berlin is UTC+1 in November.
        let now_ms = 1_763_812_800_000;
        let slots = clinic_slots("Europe/Berlin", now_ms);
        assert_eq!(slots.len(), (DAYS as usize) * 40);
        let (id, first) = &slots[0];
        assert_eq!(id, "d20251123-0800");
        assert_eq!(first.end_ms - first.start_ms, 15 * 60_000);
        let utc = chrono::DateTime::from_timestamp_millis(first.start_ms).unwrap();
        assert_eq!(utc.format("%H:%M").to_string(), "07:00");
    }
}
