//! A million concurrent holds: resident memory, and how late each expiry is at that load
//! (docs/PERFORMANCE.md: a country's 1,000,000 live holds within its 4 GiB; each expiry within
//! 100 ms of its deadline).
//!
//! Run: `cargo bench -p holdfast-benches --bench holds` (a fresh process, so the resident
//! figures are the node's, not left-overs of other benches).
//!
//! Set-up: a node as `holdfast serve` runs it (64 shards, the write-ahead log with
//! `--durability sync` in a temp dir), one clinic per shard with 15,625 seats and doses, then
//! 1,000,000 holds through `exec_batch` (100 per message), each for a distinct citizen id,
//! with deadlines spread evenly over a `WINDOW_MS` window that opens `SETUP_BUDGET_MS` after
//! the start (so every hold is live when memory is measured).
//!
//! Measured: VmRSS after the node starts and after the last hold (and the peak, VmHWM). Then,
//! while the window passes, every shard's PENDING count is read every `POLL_MS`. Expiries of
//! one shard run in deadline order (one heap per shard), so the k-th expiry of a shard
//! happened no later than the first poll that saw k holds gone: its lateness is at most the
//! time that shard was looked at (taken inside the shard) minus the k-th deadline. The figures
//! are upper bounds; their resolution is the longest gap between two looks at one shard
//! (printed).

/// The allocator of the `holdfast` binary (server/src/main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use holdfast_benches::{
    clinic_command, clinic_per_shard, vaccine_command, vm_hwm_kib, vm_rss_kib, SeatPlan, TempDir,
    VACCINE,
};

use holdfast_engine::command::Hold;
use holdfast_engine::journal::Journal;
use holdfast_engine::ring::Ring;
use holdfast_engine::view::{RuntimeCounts, ShardCounts};
use holdfast_engine::{Command, Node, NodeConfig, Output, SystemClock};
use holdfast_persistence::{Durability, Wal, WalConfig};
use holdfast_server::journal::WalJournal;

const SHARDS: u32 = 64;
/// 64 × 15,625 = 1,000,000.
const HOLDS_PER_SHARD: u64 = 15_625;
/// Holds per `exec_batch` (one journal op). HTTP traffic makes ops of one to three records;
/// 100 keeps the set-up quick without making ops the log never sees in service.
const BATCH: u64 = 100;
/// The set-up must finish within this long; the deadlines start after it.
const SETUP_BUDGET_MS: i64 = 120_000;
/// Deadlines are spread evenly over this window (100,000 expiries a second).
const WINDOW_MS: i64 = 10_000;
/// How often every shard's PENDING count is read while the window passes.
const POLL_MS: u64 = 5;
/// Longest the bench waits after the window for the last expiry.
const DRAIN_MS: i64 = 30_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every shard's counters, as of when each shard looked.
async fn statuses(node: &Node) -> Vec<(ShardCounts, RuntimeCounts)> {
    let asks: Vec<_> = (0..node.shards()).map(|s| node.status_of(s)).collect();
    let mut out = Vec::with_capacity(asks.len());
    for ask in asks {
        out.push(ask.await.expect("counts"));
    }
    out
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = TempDir::new("holds");
    // `HOLDS_JOURNAL=none` measures the shards alone (no log), to tell their memory from the
    // log's.
    let with_wal = std::env::var("HOLDS_JOURNAL").map_or(true, |v| v != "none");
    let journal: Arc<dyn Journal> = if with_wal {
        let mut config = WalConfig::new(Durability::Sync);
        if let Some(mib) = std::env::var("HOLDS_SLED_CACHE_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            config.cache_capacity_bytes = mib << 20;
        }
        let wal = Wal::open(dir.path(), config.clone()).expect("open the WAL");
        Arc::new(WalJournal::new(wal, &config))
    } else {
        Arc::new(holdfast_engine::journal::NoJournal)
    };
    let node = Node::start_with_journal(
        NodeConfig::embedded(SHARDS),
        Ring::single("local"),
        Arc::new(SystemClock),
        journal,
    )
    .await
    .expect("node starts");
    let rss_start = vm_rss_kib();
    let started_ms = now_ms();
    let window_start_ms = started_ms + SETUP_BUDGET_MS;

    node.broadcast(vaccine_command()).await.expect("vaccine");
    let clinics = clinic_per_shard(&node);
    let mut tasks = Vec::new();
    for (shard, clinic) in clinics.iter().enumerate() {
        let (node, clinic) = (node.clone(), clinic.clone());
        let shard = shard as u32;
        tasks.push(tokio::spawn(async move {
            node.exec(shard, clinic_command(&clinic))
                .await
                .expect("clinic");
            let mut plan = SeatPlan::new(&format!("s{shard}"), HOLDS_PER_SHARD);
            for answer in node
                .exec_batch(shard, plan.provision_commands(&clinic, node.now_ms()))
                .await
                .expect("provision")
            {
                answer.expect("provision command");
            }
            let mut deadlines = Vec::with_capacity(HOLDS_PER_SHARD as usize);
            let mut next = 0u64;
            while next < HOLDS_PER_SHARD {
                let n = BATCH.min(HOLDS_PER_SHARD - next);
                let now = node.now_ms();
                let commands: Vec<Command> = (next..next + n)
                    .map(|i| {
                        // Spread evenly over the window, interleaving the shards.
                        let k = i * u64::from(SHARDS) + u64::from(shard);
                        let target = window_start_ms
                            + (k as i64 * WINDOW_MS) / (HOLDS_PER_SHARD * u64::from(SHARDS)) as i64;
                        Command::Hold(Hold::new(
                            &clinic,
                            plan.take(),
                            VACCINE,
                            &format!("citizen-{shard:02}-{i:07}"),
                            target - now,
                        ))
                    })
                    .collect();
                for answer in node.exec_batch(shard, commands).await.expect("holds") {
                    match answer {
                        Ok(Output::Appointment(view)) => {
                            deadlines.push(view.expires_at_ms.expect("a hold has a deadline"))
                        }
                        other => panic!("a hold failed: {other:?}"),
                    }
                }
                next += n;
            }
            deadlines.sort_unstable();
            deadlines
        }));
    }
    let mut deadlines: Vec<Vec<i64>> = Vec::with_capacity(SHARDS as usize);
    for task in tasks {
        deadlines.push(task.await.expect("set-up task"));
    }
    let setup_ms = now_ms() - started_ms;
    assert!(
        now_ms() < window_start_ms,
        "set-up took {setup_ms} ms, beyond the {SETUP_BUDGET_MS} ms budget: holds expired early"
    );
    let pending: u64 = statuses(&node)
        .await
        .into_iter()
        .map(|(counts, _)| counts.pending)
        .sum();
    let rss_held = vm_rss_kib();
    println!(
        "holds: {pending} PENDING across {SHARDS} shards, set up in {setup_ms} ms ({})",
        if with_wal { "WAL, sync" } else { "no log" }
    );
    println!(
        "resident: {} after start, {} with every hold live (peak {}); the bench's own deadline lists are {:.1} MiB of that",
        mib(rss_start),
        mib(rss_held),
        mib(vm_hwm_kib()),
        (pending * 8) as f64 / (1024.0 * 1024.0)
    );

    if std::env::var("HOLDS_MEMORY_ONLY").is_ok_and(|v| v == "1") {
        node.stop().await;
        return;
    }

    // Watch the window pass.
    let mut seen = vec![0usize; SHARDS as usize];
    let mut lateness: Vec<i64> = Vec::with_capacity(pending as usize);
    let mut last_seen_at = vec![None::<i64>; SHARDS as usize];
    let mut gap_ms_max = 0i64;
    let mut polls = 0u64;
    let end_ms = window_start_ms + WINDOW_MS + DRAIN_MS;
    while lateness.len() < pending as usize && now_ms() < end_ms {
        // Each shard reports its PENDING count and the time it looked, inside the shard: the
        // time is when the state was observed, not when the answer arrived.
        let counts = statuses(&node)
            .await
            .into_iter()
            .map(|(counts, runtime)| (counts.pending, runtime.as_of_ms));
        polls += 1;
        for (shard, (left, at)) in counts.into_iter().enumerate() {
            let gone = HOLDS_PER_SHARD as usize - left as usize;
            if gone > seen[shard] {
                lateness.extend(deadlines[shard][seen[shard]..gone].iter().map(|d| at - d));
            }
            seen[shard] = seen[shard].max(gone);
            if let Some(before) = last_seen_at[shard].replace(at) {
                gap_ms_max = gap_ms_max.max(at - before);
            }
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    lateness.sort_unstable();
    println!(
        "expiry lateness over {} expiries ({polls} polls every {POLL_MS} ms; resolution: a shard was looked at least every {gap_ms_max} ms): p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        lateness.len(),
        percentile(&lateness, 50.0),
        percentile(&lateness, 99.0),
        percentile(&lateness, 99.9),
        lateness.last().copied().unwrap_or(0),
    );
    if lateness.len() < pending as usize {
        println!(
            "NOT every hold expired within {DRAIN_MS} ms after the window: {} left",
            pending as usize - lateness.len()
        );
    }
    node.stop().await;
}
