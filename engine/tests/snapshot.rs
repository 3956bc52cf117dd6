//! Snapshot + tail equivalence: a shard rebuilt from a snapshot taken at record k (encoded
//! and decoded as recovery does) plus the records after k equals the shard rebuilt from the
//! whole log, for every k.

use chrono::NaiveDate;
use holdfast_engine::command::{
    AdjustStock, Administer, Cancel, CancelSlot, Confirm, Hold, PutClinic, PutSlots, PutVaccine,
    ReceiveStock, Reject,
};
use holdfast_engine::journal::{decode, encode, LogRecord, Snapshot};
use holdfast_engine::model::{ClinicInfo, SlotSpec, VaccineRules};
use holdfast_engine::shard::ShardState;
use holdfast_engine::{Command, Event};

const NOW_MS: i64 = 1_800_000_000_000;

fn workload() -> Vec<Command> {
    let mut commands = vec![
        Command::PutVaccine(PutVaccine {
            name: "vx".into(),
            rules: VaccineRules {
                min_age: None,
                max_age: None,
                regions: vec![],
                series_doses: 2,
                min_interval_days: 0,
                contraindications: vec![],
            },
        }),
        Command::PutClinic(PutClinic {
            clinic_id: "k".into(),
            info: ClinicInfo {
                name: "k".into(),
                region: "r".into(),
                timezone: "UTC".into(),
            },
        }),
        Command::PutSlots(PutSlots {
            clinic_id: "k".into(),
            slots: (0..3)
                .map(|i| {
                    let start_ms = NOW_MS + 86_400_000 + i * 900_000;
                    (
                        format!("s{i}"),
                        SlotSpec {
                            start_ms,
                            end_ms: start_ms + 900_000,
                            capacity: 5,
                            vaccines: vec!["vx".into()],
                            priority_reserve: 1,
                        },
                    )
                })
                .collect(),
        }),
        Command::ReceiveStock(ReceiveStock {
            clinic_id: "k".into(),
            vaccine: "vx".into(),
            batch: "B".into(),
            quantity: 12,
            expires_on: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        }),
    ];
    for i in 0..14u64 {
        commands.push(Command::Hold(Hold {
            rebook_priority: i.is_multiple_of(5),
            ..Hold::new("k", &format!("s{}", i % 3), "vx", &format!("p{i}"), 60_000)
        }));
    }
    for seq in 1..=12u64 {
        commands.push(match seq % 4 {
            0 => Command::Cancel(Cancel { seq, citizen: None }),
            1 | 2 => Command::Confirm(Confirm { seq, citizen: None }),
            _ => Command::Reject(Reject {
                seq,
                reasons: vec!["test".into()],
            }),
        });
    }
    // Doses given from the batch (seqs 1 and 5 are CONFIRMED), and a repeat.
    for seq in [1, 5, 5] {
        commands.push(Command::Administer(Administer {
            seq,
            clinic_id: "k".into(),
            batch: "B".into(),
        }));
    }
    commands.push(Command::AdjustStock(AdjustStock {
        clinic_id: "k".into(),
        vaccine: "vx".into(),
        batch: "B".into(),
        delta: -8,
        reason: "loss".into(),
    }));
    commands.push(Command::CancelSlot(CancelSlot {
        clinic_id: "k".into(),
        slot_id: "s1".into(),
        reason: "closed".into(),
    }));
    commands
}

/// Everything a caller can observe of a shard.
fn observe(state: &ShardState) -> String {
    let mut out = format!("{:?}\n", state.counts());
    out += &format!("{:?}\n", state.availability("k", None, None, None).unwrap());
    for seq in 1..=20 {
        out += &format!("{:?}\n", state.get_appointment(seq));
    }
    out
}

#[test]
fn snapshot_plus_tail_equals_the_whole_log() {
    let mut live = ShardState::new(0);
    let mut log: Vec<Event> = Vec::new();
    for command in workload() {
        let _ = live.execute(command, NOW_MS, &mut log);
    }
    // The live path applied some events via derived decisions (at-risk flags); the log holds
    // every one of them.
    assert!(log.len() > 30, "the workload produced {} events", log.len());
    live.check_invariants().unwrap();
    let expected = observe(&live);

    let records: Vec<Vec<u8>> = log
        .into_iter()
        .map(|e| encode(&LogRecord::Event(e)))
        .collect();
    let replay = |state: &mut ShardState, records: &[Vec<u8>]| {
        for bytes in records {
            match decode::<LogRecord>(bytes).unwrap() {
                LogRecord::Event(e) => state.apply(&e),
                LogRecord::Idempotency(_) | LogRecord::Answer(_) => unreachable!(),
            }
        }
    };
    let mut full = ShardState::new(0);
    replay(&mut full, &records);
    assert_eq!(observe(&full), expected, "full log");

    for k in 0..=records.len() {
        let mut prefix = ShardState::new(0);
        replay(&mut prefix, &records[..k]);
        let snapshot = Snapshot {
            seq: k as u64,
            state: prefix,
            idempotency: vec![],
            unrecorded: vec![],
        };
        let mut recovered = decode::<Snapshot>(&encode(&snapshot)).unwrap().state;
        replay(&mut recovered, &records[k..]);
        recovered.check_invariants().unwrap();
        assert_eq!(observe(&recovered), expected, "snapshot at record {k}");
    }
}
