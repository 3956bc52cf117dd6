//! Hold deadlines: a hold that is not confirmed expires by itself (the shard's timer task,
//! one per shard, wakes for the earliest deadline), its seat and dose return, and a confirm
//! that arrives after the deadline is refused even when no tick has run yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use holdfast_engine::command::{Confirm, Hold, PutClinic, PutSlots, PutVaccine, ReceiveStock};
use holdfast_engine::ids::AppointmentId;
use holdfast_engine::model::{ClinicInfo, SlotSpec, VaccineRules};
use holdfast_engine::ring::Ring;
use holdfast_engine::view::{AppointmentView, AvailabilityView, Output};
use holdfast_engine::{
    Clock, Command, DomainError, EngineError, ManualClock, Node, NodeConfig, Status, SystemClock,
};

const VACCINE: &str = "vx";
const CLINIC: &str = "clinic-ttl";
const SLOT: &str = "s1";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .expect("step finished within its time bound")
}

/// The vaccine everywhere, one clinic with `doses` and one slot of `capacity` starting a day
/// after `now_ms`.
async fn set_up(node: &Node, now_ms: i64, capacity: u32, doses: i64) -> u32 {
    bounded(node.broadcast(Command::PutVaccine(PutVaccine {
        name: VACCINE.to_string(),
        rules: VaccineRules {
            min_age: None,
            max_age: None,
            regions: vec![],
            series_doses: 0,
            min_interval_days: 0,
            contraindications: vec![],
        },
    })))
    .await
    .expect("vaccine");
    let shard = node.clinic_shard(CLINIC);
    let commands = vec![
        Command::PutClinic(PutClinic {
            clinic_id: CLINIC.to_string(),
            info: ClinicInfo {
                name: "TTL Clinic".to_string(),
                region: "north".to_string(),
                timezone: "UTC".to_string(),
            },
        }),
        Command::ReceiveStock(ReceiveStock {
            clinic_id: CLINIC.to_string(),
            vaccine: VACCINE.to_string(),
            batch: "b1".to_string(),
            quantity: doses,
            expires_on: NaiveDate::from_ymd_opt(2099, 1, 1).expect("date"),
        }),
        Command::PutSlots(PutSlots {
            clinic_id: CLINIC.to_string(),
            slots: vec![(
                SLOT.to_string(),
                SlotSpec {
                    start_ms: now_ms + DAY_MS,
                    end_ms: now_ms + DAY_MS + 15 * 60 * 1000,
                    capacity,
                    vaccines: vec![VACCINE.to_string()],
                    priority_reserve: 0,
                },
            )],
        }),
    ];
    for result in bounded(node.exec_batch(shard, commands))
        .await
        .expect("batch")
    {
        result.expect("set-up command");
    }
    shard
}

async fn hold(node: &Node, shard: u32, citizen: &str, hold_ms: i64) -> AppointmentView {
    let command = Command::Hold(Hold::new(CLINIC, SLOT, VACCINE, citizen, hold_ms));
    match bounded(node.exec(shard, command)).await {
        Ok(Output::Appointment(view)) => view,
        other => panic!("hold failed: {other:?}"),
    }
}

async fn confirm(node: &Node, id: AppointmentId) -> Result<Output, EngineError> {
    bounded(node.exec(
        id.shard,
        Command::Confirm(Confirm {
            seq: id.seq,
            citizen: None,
        }),
    ))
    .await
}

async fn status(node: &Node, id: AppointmentId) -> Status {
    bounded(node.get_appointment(id))
        .await
        .expect("read")
        .expect("appointment exists")
        .status
}

async fn availability(node: &Node, shard: u32) -> AvailabilityView {
    bounded(node.check_invariants(shard))
        .await
        .expect("read")
        .expect("invariants hold");
    bounded(node.availability(CLINIC, Some(VACCINE.to_string()), None, None))
        .await
        .expect("clinic")
}

/// (remaining, pending, confirmed) of the slot and (reserved, available) of the doses.
fn counters(view: &AvailabilityView) -> ((u32, u32, u32), (i64, i64)) {
    let s = &view.slots[0];
    let d = &view.stock[0];
    (
        (s.remaining, s.pending, s.confirmed),
        (d.reserved, d.available),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_hold_expires_by_itself_with_the_real_clock() {
    let node = Node::start(
        NodeConfig::embedded(4),
        Ring::single("local"),
        Arc::new(SystemClock),
    )
    .await
    .expect("node");
    let shard = set_up(&node, SystemClock.now_ms(), 2, 5).await;

    let expiring = hold(&node, shard, "citizen-a", 200).await;
    let kept = hold(&node, shard, "citizen-b", 200).await;
    let deadline = expiring.expires_at_ms.expect("a hold has a deadline");
    assert!(
        matches!(confirm(&node, kept.id).await, Ok(Output::Appointment(v)) if v.status == Status::Confirmed)
    );
    assert_eq!(
        counters(&availability(&node, shard).await),
        ((0, 1, 1), (2, 3))
    );

    // Poll: at most 150 looks, 20 ms apart, and at most 3 s of wall time.
    let started = Instant::now();
    let mut seen = Status::Pending;
    for _ in 0..150 {
        seen = status(&node, expiring.id).await;
        if seen != Status::Pending || started.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let observed_at = SystemClock.now_ms();
    assert_eq!(seen, Status::Expired, "the hold expired by itself");
    assert!(observed_at >= deadline, "not before its deadline");
    eprintln!(
        "hold expired and was observed {} ms after its deadline",
        observed_at - deadline
    );

    // The seat and the dose are back; the confirmed hold with the same deadline is untouched.
    assert_eq!(
        counters(&availability(&node, shard).await),
        ((1, 0, 1), (1, 4))
    );
    assert_eq!(status(&node, kept.id).await, Status::Confirmed);
    assert_eq!(
        confirm(&node, expiring.id).await.err(),
        Some(EngineError::Domain(DomainError::HoldExpired))
    );
    assert_eq!(status(&node, expiring.id).await, Status::Expired);
    node.stop().await;
}

/// With a manual clock and tokio's paused time nothing ticks unless the test lets it: the
/// timer task's sleep only ends when tokio's clock moves, and that happens only while every
/// task is idle. So the confirm below is decided before any expiry pass has run.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn late_confirm_expires_the_hold_before_any_tick() {
    let t0 = 1_900_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let node = Node::start(
        NodeConfig::embedded(4),
        Ring::single("local"),
        clock.clone(),
    )
    .await
    .expect("node");
    let shard = set_up(&node, t0, 3, 10).await;
    let fresh = counters(&availability(&node, shard).await);
    assert_eq!(fresh, ((3, 0, 0), (0, 10)));

    // One millisecond before the deadline a confirm still succeeds.
    let on_time = hold(&node, shard, "citizen-on-time", 1_000).await;
    clock.advance(999);
    assert!(
        matches!(confirm(&node, on_time.id).await, Ok(Output::Appointment(v)) if v.status == Status::Confirmed)
    );

    // At the deadline it does not, even though no expiry pass has run yet.
    let late = hold(&node, shard, "citizen-late", 60_000).await;
    clock.advance(60_000);
    assert_eq!(
        status(&node, late.id).await,
        Status::Pending,
        "no tick has expired it yet"
    );
    assert_eq!(
        confirm(&node, late.id).await.err(),
        Some(EngineError::Domain(DomainError::HoldExpired))
    );
    assert_eq!(status(&node, late.id).await, Status::Expired);
    assert_eq!(
        confirm(&node, late.id).await.err(),
        Some(EngineError::Domain(DomainError::HoldExpired)),
        "and it stays refused"
    );
    // Its seat and dose are back: only the confirmed one holds anything.
    assert_eq!(
        counters(&availability(&node, shard).await),
        ((2, 0, 1), (1, 9))
    );

    // And the timer path with the manual clock: once the clock passes a deadline, the next
    // tick (within the housekeeping interval of tokio time) expires the hold.
    let ticked = hold(&node, shard, "citizen-ticked", 5_000).await;
    clock.advance(5_000);
    let mut seen = Status::Pending;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = status(&node, ticked.id).await;
        if seen != Status::Pending {
            break;
        }
    }
    assert_eq!(seen, Status::Expired, "a tick expired it");
    assert_eq!(
        counters(&availability(&node, shard).await),
        ((2, 0, 1), (1, 9))
    );
    assert_eq!(status(&node, on_time.id).await, Status::Confirmed);
    node.stop().await;
}
