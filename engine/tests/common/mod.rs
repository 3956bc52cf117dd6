//! Fixtures shared by the engine's integration tests.

use chrono::NaiveDate;
use holdfast_engine::command::{PutCitizen, PutClinic, PutSlots, PutVaccine, ReceiveStock};
use holdfast_engine::error::JournalError;
use holdfast_engine::journal::{Done, Journal, Recovered};
use holdfast_engine::model::{CitizenRecord, ClinicInfo, SlotSpec, VaccineRules};
use holdfast_engine::{Clock, Command, Node, SystemClock};

/// A journal that stores at once until the test closes its gate, then holds every
/// completion (so every answer waits) until the test opens it again.
#[derive(Default)]
#[allow(dead_code)] // not every test binary gates its journal
pub struct GatedJournal {
    closed: std::sync::atomic::AtomicBool,
    fail_next: std::sync::atomic::AtomicBool,
    held: std::sync::Mutex<Vec<Done>>,
}

#[allow(dead_code)] // not every test binary gates its journal
impl GatedJournal {
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
    pub fn open(&self) {
        self.closed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for done in self.held.lock().unwrap().drain(..) {
            done(Ok(()));
        }
    }
    /// The next completion reports a failed write.
    #[allow(dead_code)] // not every test binary fails a write
    pub fn fail_next(&self) {
        self.fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    fn complete(&self, done: Done) {
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            done(Err(JournalError::Failed("injected by the test".into())));
        } else if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            self.held.lock().unwrap().push(done);
        } else {
            done(Ok(()));
        }
    }
}

impl Journal for GatedJournal {
    fn append(&self, _: u32, _: Vec<(u64, Vec<u8>)>, done: Done) -> Result<(), JournalError> {
        self.complete(done);
        Ok(())
    }
    fn snapshot(&self, _: u32, _: u64, _: Vec<u8>, done: Done) -> Result<(), JournalError> {
        self.complete(done);
        Ok(())
    }
    fn recover(&self, _: u32) -> Result<Recovered, JournalError> {
        Ok(Recovered::default())
    }
    fn failed(&self) -> Option<JournalError> {
        None
    }
    fn busy(&self) -> bool {
        false
    }
}

/// A vaccine's rules with no restriction but an optional minimum age.
#[allow(dead_code)] // not every test binary uses it
pub fn rules(min_age: Option<u32>) -> VaccineRules {
    VaccineRules {
        min_age,
        max_age: None,
        regions: vec![],
        series_doses: 0,
        min_interval_days: 0,
        contraindications: vec![],
    }
}

/// One vaccine (`vx`) on every shard, and on clinic `c1`'s shard the clinic, 10 doses of batch
/// `b1` and slot `s1` (5 seats, tomorrow); answers that shard.
#[allow(dead_code)] // not every test binary uses it
pub async fn clinic_c1(node: &Node) -> u32 {
    node.broadcast(Command::PutVaccine(PutVaccine {
        name: "vx".into(),
        rules: rules(None),
    }))
    .await
    .expect("vaccine");
    let shard = node.clinic_shard("c1");
    let start_ms = SystemClock.now_ms() + 24 * 60 * 60 * 1000;
    let commands = vec![
        Command::PutClinic(PutClinic {
            clinic_id: "c1".into(),
            info: ClinicInfo {
                name: "One".into(),
                region: "north".into(),
                timezone: "UTC".into(),
            },
        }),
        Command::ReceiveStock(ReceiveStock {
            clinic_id: "c1".into(),
            vaccine: "vx".into(),
            batch: "b1".into(),
            quantity: 10,
            expires_on: NaiveDate::from_ymd_opt(2030, 1, 1).expect("date"),
        }),
        Command::PutSlots(PutSlots {
            clinic_id: "c1".into(),
            slots: vec![(
                "s1".into(),
                SlotSpec {
                    start_ms,
                    end_ms: start_ms + 900_000,
                    capacity: 5,
                    vaccines: vec!["vx".into()],
                    priority_reserve: 0,
                },
            )],
        }),
    ];
    for answer in node.exec_batch(shard, commands).await.expect("set up") {
        answer.expect("set-up command");
    }
    shard
}

/// A booking of slot `s1` of clinic `c1` ([`clinic_c1`]) for `citizen`, held a minute.
#[allow(dead_code)] // not every test binary uses it
pub fn book_c1(citizen: &str) -> holdfast_engine::BookRequest {
    holdfast_engine::BookRequest {
        clinic_id: "c1".into(),
        slot_id: "s1".into(),
        vaccine: "vx".into(),
        citizen_id: citizen.into(),
        hold_ms: 60_000,
    }
}

/// `YYYY-MM-DD` as a date.
#[allow(dead_code)] // not every test binary uses it
pub fn date(s: &str) -> NaiveDate {
    s.parse().expect("valid date")
}

/// Registers `citizen_id`, born on `birth_date` (`YYYY-MM-DD`), in region `north`, with no
/// allergies and no doses yet.
#[allow(dead_code)] // not every test binary uses it
pub fn put_citizen(citizen_id: &str, birth_date: &str) -> Command {
    Command::PutCitizen(PutCitizen {
        citizen_id: citizen_id.to_string(),
        record: CitizenRecord {
            birth_date: date(birth_date),
            region: "north".to_string(),
            allergies: vec![],
            insurance_id: format!("ins-{citizen_id}"),
            doses: vec![],
        },
    })
}
