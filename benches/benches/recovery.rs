//! Recovery time of a node holding 1,000,000 appointments: every shard's snapshot plus a
//! 100,000-record log tail (docs/PERFORMANCE.md target: a country's state in under 5 s).
//!
//! Set-up (untimed, once): a node on a `WalJournal` (Sync) in a fresh temp dir, 64 shards,
//! one clinic per shard with exactly enough seats and doses, automatic snapshots off
//! (`snapshot_every_records = u64::MAX`). `PRE_PER_SHARD` holds per shard through
//! `exec_batch` (one in `CONFIRM_EVERY` of them confirmed), `snapshot_all`, then
//! `TAIL_PER_SHARD` more holds per shard (the log tail: one record each), then the node is
//! stopped and the WAL closed. Holds last a day, so none expires during the run.
//!
//! Timed, `RUNS` times: `Wal::open` + `Node::start_with_journal` (which recovers every shard:
//! decode the snapshot, replay the tail, check invariants) until it returns. Each run then
//! checks the recovered appointment count, reads VmRSS, stops the node and closes the WAL
//! (untimed). Prints every run and the median.
//!
//! A plain `main` (harness = false), not criterion: one recovery takes seconds.
//! Run: `cargo bench -p holdfast-benches --bench recovery`.

/// The allocator of the `holdfast` binary (server/src/main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_benches::{
    clinic_command, clinic_per_shard, held_seq, vaccine_command, vm_hwm_kib, vm_rss_kib, SeatPlan,
    TempDir, VACCINE,
};
use holdfast_engine::command::{Confirm, Hold};
use holdfast_engine::journal::Journal;
use holdfast_engine::ring::Ring;
use holdfast_engine::{Command, Node, NodeConfig, SystemClock};
use holdfast_persistence::{Durability, Wal, WalConfig};
use holdfast_server::journal::WalJournal;

const SHARDS: u32 = 64;
/// Holds per shard before the snapshot: 64 × 14,062 = 899,968.
const PRE_PER_SHARD: u64 = 14_062;
/// Holds per shard after the snapshot (the log tail): 64 × 1,563 = 100,032.
const TAIL_PER_SHARD: u64 = 1_563;
/// One hold in this many (before the snapshot) is confirmed.
const CONFIRM_EVERY: usize = 9;
/// Commands per `exec_batch`.
const BATCH: u64 = 1_000;
/// A day: no hold expires while the bench runs.
const HOLD_MS: i64 = 24 * 60 * 60 * 1000;
const RUNS: usize = 3;

fn node_config() -> NodeConfig {
    let mut config = NodeConfig::embedded(SHARDS);
    config.snapshot_every_records = u64::MAX;
    config
}

fn wal_config() -> WalConfig {
    WalConfig::new(Durability::Sync)
}

async fn start(dir: &std::path::Path) -> (Arc<Node>, Arc<WalJournal>) {
    let config = wal_config();
    let wal = Wal::open(dir, config.clone()).expect("open the WAL");
    let journal = Arc::new(WalJournal::new(wal, &config));
    let dyn_journal: Arc<dyn Journal> = journal.clone();
    let node = Node::start_with_journal(
        node_config(),
        Ring::single("local"),
        Arc::new(SystemClock),
        dyn_journal,
    )
    .await
    .expect("node starts");
    (node, journal)
}

/// Stops the shards, waits until the journal's only user is us, closes the WAL.
async fn stop(node: Arc<Node>, journal: Arc<WalJournal>) {
    node.stop().await;
    drop(node);
    let journal =
        Arc::try_unwrap(journal).unwrap_or_else(|_| panic!("the stopped node let go of the WAL"));
    journal.into_wal().close().expect("close the WAL");
}

fn hold(clinic: &str, slot: &str, citizen: &str) -> Command {
    Command::Hold(Hold::new(clinic, slot, VACCINE, citizen, HOLD_MS))
}

/// `count` holds on every shard, concurrently, in batches of `BATCH`; confirms one in
/// `confirm_every` (0: none). Returns (held, confirmed).
async fn holds(
    node: &Arc<Node>,
    clinics: &[String],
    plans: &mut [SeatPlan],
    count: u64,
    confirm_every: usize,
) -> (u64, u64) {
    let tasks: Vec<_> = plans
        .iter_mut()
        .enumerate()
        .map(|(shard, plan)| {
            let node = node.clone();
            let clinic = clinics[shard].clone();
            let mut plan = std::mem::replace(plan, SeatPlan::new("unused", 0));
            tokio::spawn(async move {
                let (mut held, mut confirmed) = (0u64, 0u64);
                let mut left = count;
                while left > 0 {
                    let n = left.min(BATCH);
                    let commands: Vec<Command> = (0..n)
                        .map(|i| {
                            let citizen = format!("c-{shard}-{}", held + i);
                            hold(&clinic, plan.take(), &citizen)
                        })
                        .collect();
                    let answers = node
                        .exec_batch(shard as u32, commands)
                        .await
                        .expect("holds");
                    let seqs: Vec<u64> = answers.iter().filter_map(held_seq).collect();
                    assert_eq!(seqs.len() as u64, n, "every hold must succeed");
                    held += n;
                    if confirm_every > 0 {
                        let confirms: Vec<Command> = seqs
                            .iter()
                            .step_by(confirm_every)
                            .map(|&seq| Command::Confirm(Confirm { seq, citizen: None }))
                            .collect();
                        let want = confirms.len() as u64;
                        let answers = node
                            .exec_batch(shard as u32, confirms)
                            .await
                            .expect("confirms");
                        let ok = answers.iter().filter(|a| a.is_ok()).count() as u64;
                        assert_eq!(ok, want, "every confirm must succeed");
                        confirmed += ok;
                    }
                    left -= n;
                }
                (plan, held, confirmed)
            })
        })
        .collect();
    let (mut held, mut confirmed) = (0, 0);
    for (shard, task) in tasks.into_iter().enumerate() {
        let (plan, h, c) = task.await.expect("hold task");
        plans[shard] = plan;
        held += h;
        confirmed += c;
    }
    (held, confirmed)
}

/// Appointments (pending + confirmed) over all shards.
async fn appointments(node: &Node) -> u64 {
    node.shard_status()
        .await
        .iter()
        .map(|s| s.counts.pending + s.counts.confirmed)
        .sum()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_string(),
        |k| format!("{:.0} MiB", k as f64 / 1024.0),
    )
}

fn main() {
    // criterion-style flags (`--bench`, `--noplot`) are accepted and ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = TempDir::new("recovery");

    rt.block_on(async {
        let setup_started = Instant::now();
        let (node, journal) = start(dir.path()).await;
        node.broadcast(vaccine_command()).await.expect("vaccine");
        let clinics = clinic_per_shard(&node);
        let mut plans = Vec::with_capacity(SHARDS as usize);
        for (shard, clinic) in clinics.iter().enumerate() {
            node.exec(shard as u32, clinic_command(clinic))
                .await
                .expect("clinic");
            let plan = SeatPlan::new(&format!("s{shard}"), PRE_PER_SHARD + TAIL_PER_SHARD);
            let commands = plan.provision_commands(clinic, node.now_ms());
            for answer in node
                .exec_batch(shard as u32, commands)
                .await
                .expect("provision")
            {
                answer.expect("provision command");
            }
            plans.push(plan);
        }
        let (pre_held, pre_confirmed) =
            holds(&node, &clinics, &mut plans, PRE_PER_SHARD, CONFIRM_EVERY).await;
        node.snapshot_all().await.expect("snapshot every shard");
        let records_at_snapshot = journal.wal().stats().records;
        let (tail_held, _) = holds(&node, &clinics, &mut plans, TAIL_PER_SHARD, 0).await;
        let stats = journal.wal().stats();
        let tail_records = stats.records - records_at_snapshot;
        let size = journal.wal().size_on_disk_bytes();
        stop(node, journal).await;
        eprintln!(
            "set-up: {} appointments ({pre_held} held + {pre_confirmed} of them confirmed \
             before the snapshot, {tail_held} held after it); log tail {tail_records} records; \
             WAL {:.1} MiB on disk; {:.1} s; VmRSS after set-up, node stopped {}",
            pre_held + tail_held,
            size as f64 / (1024.0 * 1024.0),
            setup_started.elapsed().as_secs_f64(),
            mib(vm_rss_kib())
        );

        let mut times = Vec::with_capacity(RUNS);
        for run in 1..=RUNS {
            let started = Instant::now();
            let (node, journal) = start(dir.path()).await;
            let elapsed = started.elapsed();
            let rss = vm_rss_kib();
            let recovered = appointments(&node).await;
            assert_eq!(
                recovered,
                pre_held + tail_held,
                "recovery must restore every appointment"
            );
            eprintln!(
                "recovery run {run}: {:.3} s for {recovered} appointments; VmRSS after \
                 recovery {}",
                elapsed.as_secs_f64(),
                mib(rss)
            );
            times.push(elapsed);
            stop(node, journal).await;
        }
        times.sort();
        let median = times[times.len() / 2];
        eprintln!(
            "recovery/1M_appointments_100k_tail: median {:.3} s of {RUNS} runs (min {:.3} s, \
             max {:.3} s); target under 3 s: {}; VmHWM (peak, includes set-up) {}",
            median.as_secs_f64(),
            times[0].as_secs_f64(),
            times[times.len() - 1].as_secs_f64(),
            if median < Duration::from_secs(3) {
                "MET"
            } else {
                "NOT MET"
            },
            mib(vm_hwm_kib())
        );
    });
    drop(dir);
}
