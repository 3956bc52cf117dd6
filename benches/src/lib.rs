//! Shared set-up for the criterion benchmarks in `benches/`.
//!
//! Everything here runs outside the timed regions: creating catalogues, clinics, slots and
//! stock, and tearing nodes down. Each benchmark provisions exactly as many seats and doses as
//! its timed part will consume (a [`SeatPlan`]), so a measurement never runs into SOLD_OUT or
//! OUT_OF_STOCK, and the benches count the successful answers to prove it.

use std::sync::Arc;

use chrono::NaiveDate;
use holdfast_engine::command::{Confirm, Hold, PutClinic, PutSlots, PutVaccine, ReceiveStock};
use holdfast_engine::model::{
    ClinicInfo, SlotSpec, VaccineRules, SLOTS_BULK_MAX, SLOT_CAPACITY_MAX, STOCK_QUANTITY_MAX,
};
use holdfast_engine::ring::Ring;
use holdfast_engine::shard::ShardState;
use holdfast_engine::view::Output;
use holdfast_engine::{Clock, Command, Event, Node, NodeConfig, Status, SystemClock, UnixMs};

/// The one vaccine of the benches.
pub const VACCINE: &str = "bench-vx";
/// Long enough that no hold expires during a measurement (no expiry work is measured).
pub const HOLD_MS: i64 = 10 * 60 * 1000;
/// Shards of the actor benches: the gateway's default.
pub const SHARDS: u32 = holdfast_engine::node::SHARDS_DEFAULT;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const BATCH: &str = "lot-1";
/// Distinct citizen ids cycled through (the clinic side does not look at them).
const CITIZENS: usize = 1024;

/// Citizen ids to cycle through.
pub fn citizens() -> Arc<Vec<String>> {
    Arc::new((0..CITIZENS).map(|i| format!("citizen-{i:05}")).collect())
}

pub fn vaccine_command() -> Command {
    Command::PutVaccine(PutVaccine {
        name: VACCINE.to_string(),
        rules: VaccineRules {
            min_age: None,
            max_age: None,
            regions: vec![],
            series_doses: 0,
            min_interval_days: 0,
            contraindications: vec![],
        },
    })
}

pub fn clinic_command(clinic_id: &str) -> Command {
    Command::PutClinic(PutClinic {
        clinic_id: clinic_id.to_string(),
        info: ClinicInfo {
            name: format!("Bench clinic {clinic_id}"),
            region: "north".to_string(),
            timezone: "UTC".to_string(),
        },
    })
}

/// A hold as the gateway builds it: owned strings, a deadline, no priority.
pub fn hold_command(clinic_id: &str, slot_id: &str, citizen_id: &str) -> Command {
    Command::Hold(Hold::new(clinic_id, slot_id, VACCINE, citizen_id, HOLD_MS))
}

/// Slots that together have exactly `seats` seats (none above `SLOT_CAPACITY_MAX`), handed
/// out one seat at a time, in order.
#[derive(Debug, Clone)]
pub struct SeatPlan {
    slots: Vec<(String, u32)>,
    slot: usize,
    used_in_slot: u32,
}

impl SeatPlan {
    pub fn new(prefix: &str, seats: u64) -> Self {
        let mut slots = Vec::new();
        let mut left = seats;
        while left > 0 {
            let capacity = left.min(u64::from(SLOT_CAPACITY_MAX)) as u32;
            slots.push((format!("{prefix}-{}", slots.len()), capacity));
            left -= u64::from(capacity);
        }
        SeatPlan {
            slots,
            slot: 0,
            used_in_slot: 0,
        }
    }

    pub fn seats(&self) -> u64 {
        self.slots.iter().map(|(_, c)| u64::from(*c)).sum()
    }

    /// The slot of the next seat. Panics past the planned seats: that is a bench bug, and
    /// measuring refusals instead would be worse.
    pub fn take(&mut self) -> &str {
        if self.used_in_slot == self.slots[self.slot].1 {
            self.slot += 1;
            self.used_in_slot = 0;
        }
        self.used_in_slot += 1;
        &self
            .slots
            .get(self.slot)
            .expect("the plan has a seat left")
            .0
    }

    /// Commands that create the plan's slots at `clinic_id` (starting tomorrow) and deliver as
    /// many doses as there are seats.
    pub fn provision_commands(&self, clinic_id: &str, now_ms: UnixMs) -> Vec<Command> {
        let start_ms = now_ms + DAY_MS;
        let mut commands: Vec<Command> = self
            .slots
            .chunks(SLOTS_BULK_MAX)
            .map(|chunk| {
                Command::PutSlots(PutSlots {
                    clinic_id: clinic_id.to_string(),
                    slots: chunk
                        .iter()
                        .map(|(id, capacity)| {
                            (
                                id.clone(),
                                SlotSpec {
                                    start_ms,
                                    end_ms: start_ms + 15 * 60 * 1000,
                                    capacity: *capacity,
                                    vaccines: vec![VACCINE.to_string()],
                                    priority_reserve: 0,
                                },
                            )
                        })
                        .collect(),
                })
            })
            .collect();
        let mut doses = self.seats() as i64;
        while doses > 0 {
            let quantity = doses.min(STOCK_QUANTITY_MAX);
            commands.push(Command::ReceiveStock(ReceiveStock {
                clinic_id: clinic_id.to_string(),
                vaccine: VACCINE.to_string(),
                batch: BATCH.to_string(),
                quantity,
                expires_on: NaiveDate::from_ymd_opt(2099, 1, 1).expect("valid date"),
            }));
            doses -= quantity;
        }
        commands
    }
}

/// True when `output` is a successful hold; its appointment's sequence number.
pub fn held_seq(output: &Result<Output, impl std::fmt::Debug>) -> Option<u64> {
    match output {
        Ok(Output::Appointment(view)) => Some(view.id.seq),
        _ => None,
    }
}

/// True when `output` is a confirmed appointment.
pub fn is_confirmed(output: &Result<Output, impl std::fmt::Debug>) -> bool {
    matches!(output, Ok(Output::Appointment(view)) if view.status == Status::Confirmed)
}

// ---- the bare state machine -------------------------------------------------------------

/// One `ShardState`, driven directly: no actor, no mailbox, no clock reads.
pub struct BareShard {
    state: ShardState,
    now_ms: UnixMs,
    clinic_id: String,
    plan: SeatPlan,
    citizens: Arc<Vec<String>>,
    next_citizen: usize,
    sink: Vec<Event>,
}

impl BareShard {
    /// A shard with one clinic that can take exactly `seats` hold+confirm pairs.
    pub fn new(seats: u64, citizens: Arc<Vec<String>>) -> Self {
        let now_ms = SystemClock.now_ms();
        let clinic_id = "bench-clinic".to_string();
        let plan = SeatPlan::new("slot", seats);
        let mut state = ShardState::new(0);
        let mut sink = Vec::new();
        let mut set_up = vec![vaccine_command(), clinic_command(&clinic_id)];
        set_up.extend(plan.provision_commands(&clinic_id, now_ms));
        for command in set_up {
            state
                .execute(command, now_ms, &mut sink)
                .expect("set-up command");
        }
        sink.clear();
        BareShard {
            state,
            now_ms,
            clinic_id,
            plan,
            citizens,
            next_citizen: 0,
            sink,
        }
    }

    /// One hold and its confirm; true when both succeeded.
    #[inline]
    pub fn hold_confirm(&mut self) -> bool {
        let citizen = &self.citizens[self.next_citizen % self.citizens.len()];
        self.next_citizen += 1;
        let hold = hold_command(&self.clinic_id, self.plan.take(), citizen);
        let held = self.state.execute(hold, self.now_ms, &mut self.sink);
        let Some(seq) = held_seq(&held) else {
            return false;
        };
        let confirmed = self.state.execute(
            Command::Confirm(Confirm { seq, citizen: None }),
            self.now_ms,
            &mut self.sink,
        );
        self.sink.clear();
        is_confirmed(&confirmed)
    }

    pub fn state(&self) -> &ShardState {
        &self.state
    }
}

// ---- the actors ---------------------------------------------------------------------------

/// A node as the gateway starts it (embedded, one-node ring, the real clock), with one clinic
/// on every shard.
pub struct BenchNode {
    pub node: Arc<Node>,
    /// Index = shard.
    pub clinics: Vec<String>,
}

impl BenchNode {
    pub async fn start(shards: u32) -> Self {
        let node = Node::start(
            NodeConfig::embedded(shards),
            Ring::single("local"),
            Arc::new(SystemClock),
        )
        .await
        .expect("node starts");
        node.broadcast(vaccine_command()).await.expect("vaccine");
        let clinics = clinic_per_shard(&node);
        for (shard, clinic) in clinics.iter().enumerate() {
            node.exec(shard as u32, clinic_command(clinic))
                .await
                .expect("clinic");
        }
        BenchNode { node, clinics }
    }

    /// Creates `plan`'s slots and doses at the clinic of `shard`.
    pub async fn provision(&self, shard: u32, plan: &SeatPlan) {
        let commands = plan.provision_commands(&self.clinics[shard as usize], self.node.now_ms());
        for answer in self
            .node
            .exec_batch(shard, commands)
            .await
            .expect("provision batch")
        {
            answer.expect("provision command");
        }
    }

    /// Stops the actors and waits (bounded) until every shard has stopped answering, so the
    /// old shards' memory is released before the next measurement starts.
    pub async fn shutdown(self) {
        self.node.stop().await;
    }
}

/// One clinic id per shard, found by hashing candidate names (a bounded search).
pub fn clinic_per_shard(node: &Node) -> Vec<String> {
    let shards = node.shards() as usize;
    let mut clinics: Vec<Option<String>> = vec![None; shards];
    let mut found = 0;
    for i in 0..shards * 1000 {
        let candidate = format!("clinic-{i}");
        let shard = node.clinic_shard(&candidate) as usize;
        if clinics[shard].is_none() {
            clinics[shard] = Some(candidate);
            found += 1;
            if found == shards {
                break;
            }
        }
    }
    clinics
        .into_iter()
        .map(|c| c.expect("a clinic id for every shard"))
        .collect()
}

// ---- disk -----------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed (with everything in it) on drop.
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    /// `<temp>/holdfast-bench-<label>-<pid>-<nanos>`, created empty.
    pub fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "holdfast-bench-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create the bench temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status), if readable.
pub fn vm_rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

/// This process's peak resident set size in KiB (`VmHWM`), if readable.
pub fn vm_hwm_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_plan_hands_out_exactly_its_seats() {
        let mut plan = SeatPlan::new("p", u64::from(SLOT_CAPACITY_MAX) + 3);
        assert_eq!(plan.seats(), u64::from(SLOT_CAPACITY_MAX) + 3);
        for _ in 0..SLOT_CAPACITY_MAX {
            assert_eq!(plan.take(), "p-0");
        }
        for _ in 0..3 {
            assert_eq!(plan.take(), "p-1");
        }
        assert!(std::panic::catch_unwind(move || plan.take().to_string()).is_err());
    }

    #[test]
    fn bare_shard_never_sells_out_within_its_plan() {
        let mut shard = BareShard::new(1_000, citizens());
        for _ in 0..1_000 {
            assert!(shard.hold_confirm());
        }
        shard.state().check_invariants().expect("invariants");
        assert_eq!(shard.state().counts().confirmed, 1_000);
        // One past the plan: the plan itself refuses.
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shard.hold_confirm();
        }))
        .is_err());
    }
}
