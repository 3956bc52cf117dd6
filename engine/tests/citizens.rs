//! The citizen rule across shards: at most one PENDING or CONFIRMED appointment per citizen,
//! each bound to the citizen's claim, whatever the interleaving of creates, confirms,
//! cancels, expiries, reschedules, retries with the same Idempotency-Key, and crashes in the
//! middle of a booking (a proptest over a node whose journal survives its restarts), plus the
//! race of one citizen booking at every clinic at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_engine::command::{Cancel, Confirm, PutClinic, PutSlots, PutVaccine, ReceiveStock};
use holdfast_engine::error::JournalError;
use holdfast_engine::idempotency::StoredResponse;
use holdfast_engine::journal::{Done, Journal, Recovered};
use holdfast_engine::model::{ClinicInfo, SlotSpec};
use holdfast_engine::ring::Ring;
use holdfast_engine::saga::{Booked, IdemRequest, RescheduleRequest};
use holdfast_engine::{
    AppointmentId, BookRequest, Clock, Command, DomainError, EngineError, ManualClock, Node,
    NodeConfig, Status, SystemClock,
};
use proptest::prelude::*;

mod common;
use common::{date, rules};

const VACCINE: &str = "vx";
const SHARDS: u32 = 4;
const HOLD_MS: i64 = 1_000;
const T0: i64 = 1_700_000_000_000;
/// Bound on any single await, so a lost reply fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .expect("step finished within its time bound")
}

// ---- a journal that survives restarts, and can crash -----------------------------------

#[derive(Default, Clone)]
struct Stored {
    snapshot: Option<(u64, Vec<u8>)>,
    records: Vec<(u64, Vec<u8>)>,
}

/// Stores every write at once, in memory, until it "crashes": with a budget, the writes
/// beyond it are lost and never completed (as a process killed before its flush).
#[derive(Default)]
struct MemJournal {
    inner: Mutex<MemState>,
}

#[derive(Default)]
struct MemState {
    shards: HashMap<u32, Stored>,
    /// Writes still stored before the crash; `None`: no crash planned.
    budget: Option<usize>,
    dead: bool,
}

impl MemJournal {
    /// A journal holding what this one stored, alive: the disk a restart finds.
    fn survivor(&self) -> MemJournal {
        let shards = self.inner.lock().unwrap().shards.clone();
        MemJournal {
            inner: Mutex::new(MemState {
                shards,
                ..MemState::default()
            }),
        }
    }

    fn crash_after(&self, writes: usize) {
        self.inner.lock().unwrap().budget = Some(writes);
    }

    fn kill(&self) {
        self.inner.lock().unwrap().dead = true;
    }

    fn is_dead(&self) -> bool {
        self.inner.lock().unwrap().dead
    }

    /// Stores `write` unless the journal crashed; answers whether it did.
    fn store(&self, write: impl FnOnce(&mut HashMap<u32, Stored>)) -> bool {
        let mut state = self.inner.lock().unwrap();
        if state.dead || state.budget == Some(0) {
            state.dead = true;
            return false;
        }
        if let Some(budget) = state.budget.as_mut() {
            *budget -= 1;
        }
        write(&mut state.shards);
        true
    }
}

impl Journal for MemJournal {
    fn append(
        &self,
        shard: u32,
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    ) -> Result<(), JournalError> {
        if self.store(|shards| shards.entry(shard).or_default().records.extend(records)) {
            done(Ok(()));
        }
        Ok(())
    }

    fn snapshot(
        &self,
        shard: u32,
        seq: u64,
        bytes: Vec<u8>,
        done: Done,
    ) -> Result<(), JournalError> {
        let stored = self.store(|shards| {
            let stored = shards.entry(shard).or_default();
            stored.snapshot = Some((seq, bytes));
            stored.records.retain(|(s, _)| *s > seq);
        });
        if stored {
            done(Ok(()));
        }
        Ok(())
    }

    fn recover(&self, shard: u32) -> Result<Recovered, JournalError> {
        let state = self.inner.lock().unwrap();
        let stored = state.shards.get(&shard).cloned().unwrap_or_default();
        Ok(Recovered {
            snapshot: stored.snapshot,
            records: stored.records,
            dropped: Vec::new(),
        })
    }

    fn failed(&self) -> Option<JournalError> {
        None
    }

    fn busy(&self) -> bool {
        false
    }
}

// ---- the catalogue ---------------------------------------------------------------------

fn clinic_id(c: usize) -> String {
    format!("clinic-{c}")
}

fn citizen_id(c: usize) -> String {
    format!("citizen-{c}")
}

async fn put_catalogue(node: &Node, clinics: usize, citizens: usize, capacity: u32, start_ms: i64) {
    bounded(node.broadcast(Command::PutVaccine(PutVaccine {
        name: VACCINE.to_string(),
        rules: rules(None),
    })))
    .await
    .expect("vaccine");
    for c in 0..clinics {
        let shard = node.clinic_shard(&clinic_id(c));
        let commands = vec![
            Command::PutClinic(PutClinic {
                clinic_id: clinic_id(c),
                info: ClinicInfo {
                    name: format!("Clinic {c}"),
                    region: "north".to_string(),
                    timezone: "UTC".to_string(),
                },
            }),
            Command::ReceiveStock(ReceiveStock {
                clinic_id: clinic_id(c),
                vaccine: VACCINE.to_string(),
                batch: "b1".to_string(),
                quantity: 1_000,
                expires_on: date("2099-01-01"),
            }),
            Command::PutSlots(PutSlots {
                clinic_id: clinic_id(c),
                slots: (0..2)
                    .map(|s| {
                        (
                            format!("s{s}"),
                            SlotSpec {
                                start_ms,
                                end_ms: start_ms + 900_000,
                                capacity,
                                vaccines: vec![VACCINE.to_string()],
                                priority_reserve: 0,
                            },
                        )
                    })
                    .collect(),
            }),
        ];
        for command in commands {
            bounded(node.exec(shard, command)).await.expect("catalogue");
        }
    }
    for c in 0..citizens {
        let put = common::put_citizen(&citizen_id(c), "1980-01-01");
        bounded(node.exec(node.citizen_shard(&citizen_id(c)), put))
            .await
            .expect("citizen");
    }
}

/// Every shard's counters, then the citizen rule across shards, once every claim notice is
/// delivered.
async fn assert_consistent(node: &Node) -> Result<(), TestCaseError> {
    for _ in 0..1000 {
        if node.notices_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    prop_assert_eq!(node.notices_in_flight(), 0, "notices delivered");
    for shard in 0..SHARDS {
        let checked = bounded(node.check_invariants(shard)).await.expect("read");
        prop_assert!(checked.is_ok(), "shard {}: {:?}", shard, checked);
    }
    let claims = bounded(node.check_claims()).await.expect("read");
    prop_assert!(claims.is_ok(), "{:?}", claims);
    Ok(())
}

// ---- one citizen at every clinic at once -------------------------------------------------

/// One citizen books at eight clinics, each on its own shard, at the same instant: exactly
/// one booking wins, the others are `ALREADY_BOOKED`, and every losing slot's counters are
/// back where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_citizen_booking_everywhere_at_once_gets_one_appointment() {
    let shards = 8;
    let node = Node::start(
        NodeConfig::embedded(shards),
        Ring::single("local"),
        Arc::new(SystemClock),
    )
    .await
    .expect("starts");
    // Eight clinic ids on eight different shards.
    let mut clinics: Vec<String> = Vec::new();
    for i in 0.. {
        let id = clinic_id(i);
        if !clinics
            .iter()
            .any(|c| node.clinic_shard(c) == node.clinic_shard(&id))
        {
            clinics.push(id);
        }
        if clinics.len() == shards as usize {
            break;
        }
    }
    let start_ms = SystemClock.now_ms() + 86_400_000;
    put_catalogue(&node, 0, 1, 5, start_ms).await;
    // The vaccine and the citizen from put_catalogue; the clinics here are picked by shard.
    for clinic in &clinics {
        let shard = node.clinic_shard(clinic);
        for command in [
            Command::PutClinic(PutClinic {
                clinic_id: clinic.clone(),
                info: ClinicInfo {
                    name: clinic.clone(),
                    region: "north".to_string(),
                    timezone: "UTC".to_string(),
                },
            }),
            Command::ReceiveStock(ReceiveStock {
                clinic_id: clinic.clone(),
                vaccine: VACCINE.to_string(),
                batch: "b1".to_string(),
                quantity: 10,
                expires_on: date("2099-01-01"),
            }),
            Command::PutSlots(PutSlots {
                clinic_id: clinic.clone(),
                slots: vec![(
                    "s0".to_string(),
                    SlotSpec {
                        start_ms,
                        end_ms: start_ms + 900_000,
                        capacity: 5,
                        vaccines: vec![VACCINE.to_string()],
                        priority_reserve: 0,
                    },
                )],
            }),
        ] {
            bounded(node.exec(shard, command)).await.expect("catalogue");
        }
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clinics.len()));
    let tasks: Vec<_> = clinics
        .iter()
        .map(|clinic| {
            let node = node.clone();
            let barrier = barrier.clone();
            let request = BookRequest {
                clinic_id: clinic.clone(),
                slot_id: "s0".to_string(),
                vaccine: VACCINE.to_string(),
                citizen_id: citizen_id(0),
                hold_ms: 60_000,
            };
            tokio::spawn(async move {
                barrier.wait().await;
                node.book_and_wait(request).await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut already = 0;
    for task in tasks {
        match bounded(task).await.expect("no panic") {
            Ok(a) => won.push(a),
            Err(EngineError::Domain(DomainError::AlreadyBooked)) => already += 1,
            Err(other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(already, clinics.len() - 1);
    for clinic in &clinics {
        let view = bounded(node.availability(clinic, None, None, None))
            .await
            .expect("clinic");
        let taken = u32::from(*clinic == *won[0].clinic_id);
        assert_eq!(view.slots[0].remaining, 5 - taken, "{clinic}");
        assert_eq!(view.slots[0].pending, taken, "{clinic}");
        assert_eq!(view.stock[0].reserved, i64::from(taken), "{clinic}");
    }
    let listed = bounded(node.citizen_appointments(&citizen_id(0), 10))
        .await
        .expect("listing");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, won[0].id);
    assert_eq!(bounded(node.check_claims()).await.expect("read"), Ok(()));
    node.stop().await;
}

// ---- the model ---------------------------------------------------------------------------

const CLINICS: usize = 3;
const CITIZENS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Book {
        citizen: u8,
        clinic: u8,
        slot: u8,
        key: u8,
    },
    Confirm(u8),
    Cancel(u8),
    Reschedule {
        pick: u8,
        clinic: u8,
        slot: u8,
        key: u8,
    },
    /// Moves the clock and expires what is due.
    Advance(i64),
    /// A booking during which the process dies after `writes` more log writes; then a
    /// restart on what the log kept, and the client's retry with the same key.
    CrashDuringBook {
        citizen: u8,
        clinic: u8,
        slot: u8,
        key: u8,
        writes: u8,
    },
    /// A clean restart (snapshots first) or a crash with nothing in flight.
    Restart {
        snapshot: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u8>(), any::<u8>(), 0u8..3)
            .prop_map(|(citizen, clinic, slot, key)| Op::Book { citizen, clinic, slot, key }),
        4 => any::<u8>().prop_map(Op::Confirm),
        3 => any::<u8>().prop_map(Op::Cancel),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), 0u8..3)
            .prop_map(|(pick, clinic, slot, key)| Op::Reschedule { pick, clinic, slot, key }),
        3 => (0i64..=6).prop_map(|k| Op::Advance(k * 250)),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), 0u8..3, 0u8..6).prop_map(
            |(citizen, clinic, slot, key, writes)| Op::CrashDuringBook { citizen, clinic, slot, key, writes }
        ),
        1 => any::<bool>().prop_map(|snapshot| Op::Restart { snapshot }),
    ]
}

/// What a test client remembers: the answers each key got (to check replays), and the
/// appointments it was told of.
#[derive(Default)]
struct Client {
    /// (caller, key) -> the fingerprint and the stored answer.
    answers: HashMap<(String, String), ([u8; 32], StoredResponse)>,
    appointments: Vec<AppointmentId>,
}

struct World {
    journal: Arc<MemJournal>,
    node: Arc<Node>,
    clock: Arc<ManualClock>,
    client: Client,
}

fn fingerprint(what: &str) -> [u8; 32] {
    let mut f = [0u8; 32];
    for (i, b) in what.bytes().enumerate() {
        f[i % 32] ^= b;
        f[(i * 7 + 3) % 32] = f[(i * 7 + 3) % 32].wrapping_add(b);
    }
    f
}

/// The stored form of an answer: what the gateway would store, reduced to what the test
/// compares (the appointment id, or the error code).
fn to_stored(
    outcome: &Result<holdfast_engine::view::AppointmentView, EngineError>,
) -> Option<StoredResponse> {
    match outcome {
        Ok(a) => Some(StoredResponse {
            status: 201,
            body: a.id.to_string().into(),
        }),
        Err(EngineError::Domain(d)) => Some(StoredResponse {
            status: 409,
            body: d.code().into(),
        }),
        Err(_) => None,
    }
}

impl World {
    async fn start(journal: Arc<MemJournal>, clock: Arc<ManualClock>) -> Arc<Node> {
        bounded(Node::start_with_journal(
            NodeConfig::embedded(SHARDS),
            Ring::single("local"),
            clock,
            journal,
        ))
        .await
        .expect("starts and recovers")
    }

    fn idem(&self, citizen: &str, key: u8, what: &str) -> IdemRequest {
        IdemRequest {
            caller: citizen.into(),
            key: format!("k{key}").into(),
            fingerprint: fingerprint(what),
            home: self.node.citizen_shard(citizen),
        }
    }

    fn pick(&self, pick: u8) -> Option<AppointmentId> {
        let known = &self.client.appointments;
        (!known.is_empty()).then(|| known[pick as usize % known.len()])
    }

    /// Answers a saga as the gateway does, and checks a replay against the first answer.
    async fn answer(&mut self, idem: &IdemRequest, booked: Booked) -> Result<(), TestCaseError> {
        let remembered = (idem.caller.to_string(), idem.key.to_string());
        match booked {
            Booked::Replay(stored) => match self.client.answers.get(&remembered) {
                Some((_, first)) => prop_assert_eq!(first, &stored, "a replay is the first answer"),
                // The first answer was stored, but its client never saw it (a crash cut the
                // connection): from now on this is the key's answer.
                None => {
                    self.client
                        .answers
                        .insert(remembered, (idem.fingerprint, stored));
                }
            },
            Booked::KeyReused => {
                let first = self.client.answers.get(&remembered);
                prop_assert!(
                    first.is_some_and(|(f, _)| *f != idem.fingerprint),
                    "KeyReused only for another body"
                );
            }
            Booked::Busy | Booked::KeysFull => {}
            Booked::Ran(booking) => {
                let stored = to_stored(booking.outcome());
                let outcome = bounded(booking.finish(&self.node, stored.clone())).await;
                if let Ok(Ok(a)) = &outcome {
                    if !self.client.appointments.contains(&a.id) {
                        self.client.appointments.push(a.id);
                    }
                }
                if let Some(stored) = stored {
                    if let Some((_, first)) = self.client.answers.get(&remembered) {
                        // Ran again: only after a crash lost the key's record. A retry of a
                        // booking that made an appointment answers that same one.
                        if first.status == 201 && stored.status == 201 {
                            prop_assert_eq!(
                                &first.body,
                                &stored.body,
                                "never a second appointment"
                            );
                        }
                    }
                    self.client
                        .answers
                        .entry(remembered)
                        .or_insert((idem.fingerprint, stored));
                }
            }
        }
        Ok(())
    }

    fn book_request(&self, citizen: &str, clinic: u8, slot: u8) -> BookRequest {
        BookRequest {
            clinic_id: clinic_id(clinic as usize % CLINICS),
            slot_id: format!("s{}", slot % 2),
            vaccine: VACCINE.to_string(),
            citizen_id: citizen.to_string(),
            hold_ms: HOLD_MS,
        }
    }

    async fn restart(&mut self, snapshot: bool) {
        if snapshot {
            let _ = bounded(self.node.snapshot_all()).await;
        }
        self.journal.kill();
        bounded(self.node.stop()).await;
        self.journal = Arc::new(self.journal.survivor());
        self.node = World::start(self.journal.clone(), self.clock.clone()).await;
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Book {
                citizen,
                clinic,
                slot,
                key,
            } => {
                let citizen = citizen_id(citizen as usize % CITIZENS);
                let request = self.book_request(&citizen, clinic, slot);
                let idem = self.idem(
                    &citizen,
                    key,
                    &format!("{}/{}", request.clinic_id, request.slot_id),
                );
                let booked = bounded(self.node.book(request, Some(idem.clone()))).await;
                self.answer(&idem, booked).await?;
            }
            Op::Confirm(pick) | Op::Cancel(pick) => {
                let Some(id) = self.pick(pick) else {
                    return Ok(());
                };
                let command = match op {
                    Op::Confirm(_) => Command::Confirm(Confirm {
                        seq: id.seq,
                        citizen: None,
                    }),
                    _ => Command::Cancel(Cancel {
                        seq: id.seq,
                        citizen: None,
                    }),
                };
                let _ = bounded(self.node.exec(id.shard, command)).await;
            }
            Op::Reschedule {
                pick,
                clinic,
                slot,
                key,
            } => {
                let Some(id) = self.pick(pick) else {
                    return Ok(());
                };
                let Some(from) = bounded(self.node.get_appointment(id)).await.expect("read") else {
                    return Ok(());
                };
                if !from.status.is_active() {
                    return Ok(());
                }
                let target = self.book_request(&from.citizen_id, clinic, slot);
                let what = format!("move {id} {}/{}", target.clinic_id, target.slot_id);
                let idem = self.idem(&from.citizen_id, key + 10, &what);
                let request = RescheduleRequest {
                    from,
                    clinic_id: target.clinic_id,
                    slot_id: target.slot_id,
                    hold_ms: HOLD_MS,
                    notice_ms: 0,
                };
                let booked = bounded(self.node.reschedule(request, Some(idem.clone()))).await;
                self.answer(&idem, booked).await?;
            }
            Op::Advance(ms) => {
                self.clock.advance(ms);
                for shard in 0..SHARDS {
                    let _ = bounded(self.node.exec(shard, Command::ExpireDue)).await;
                }
            }
            Op::CrashDuringBook {
                citizen,
                clinic,
                slot,
                key,
                writes,
            } => {
                let citizen = citizen_id(citizen as usize % CITIZENS);
                let request = self.book_request(&citizen, clinic, slot);
                let what = format!("{}/{}", request.clinic_id, request.slot_id);
                let idem = self.idem(&citizen, key, &what);
                self.journal.crash_after(writes as usize);
                let node = self.node.clone();
                let (r, i) = (request.clone(), idem.clone());
                let task = tokio::spawn(async move {
                    if let Booked::Ran(booking) = node.book(r, Some(i)).await {
                        let stored = to_stored(booking.outcome());
                        let _ = booking.finish(&node, stored).await;
                    }
                });
                for _ in 0..2000 {
                    if task.is_finished() || self.journal.is_dead() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // Whatever the booking's client was told (if anything) is forgotten: it
                // retries with the same key, as a client that saw the connection drop.
                task.abort();
                self.restart(false).await;
                assert_consistent(&self.node).await?;
                let booked = bounded(self.node.book(request, Some(idem.clone()))).await;
                self.answer(&idem, booked).await?;
            }
            Op::Restart { snapshot } => self.restart(snapshot).await,
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_citizen_rule_holds_through_any_interleaving_and_crash(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let clock = Arc::new(ManualClock::new(T0));
            let journal = Arc::new(MemJournal::default());
            let node = World::start(journal.clone(), clock.clone()).await;
            put_catalogue(&node, CLINICS, CITIZENS, 2, T0 + 3_600_000).await;
            let mut world = World { journal, node, clock, client: Client::default() };
            for (step, op) in ops.iter().enumerate() {
                world.apply(op).await.map_err(|e| {
                    TestCaseError::fail(format!("step {step} {op:?}: {e}"))
                })?;
                assert_consistent(&world.node).await.map_err(|e| {
                    TestCaseError::fail(format!("after step {step} {op:?}: {e}"))
                })?;
            }
            // Statuses the client saw only moved forward (spot check: none is unknown).
            for id in &world.client.appointments {
                let a = bounded(world.node.get_appointment(*id)).await.expect("read");
                prop_assert!(a.is_some(), "appointment {} survived", id);
                prop_assert!(Status::ALL.contains(&a.unwrap().status));
            }
            world.node.stop().await;
            Ok(())
        })?;
    }
}
