//! "A country in one node" (docs/PERFORMANCE.md): 10,000,000 registered citizens, then
//! 1,000,000 live holds, on one node as `holdfast serve` runs it; resident memory, the log's
//! size on disk, and how long a restart of that state takes.
//!
//! Run: `cargo bench -p holdfast-benches --bench country` (a fresh process, so the resident
//! figures are the node's). Knobs (environment):
//!
//! - `COUNTRY_CITIZENS` (default 10,000,000): citizens registered;
//! - `COUNTRY_HOLDS` (default 1,000,000, at most the citizens): holds, one per citizen;
//! - `COUNTRY_RESTART` (default `both`): `plain` (stop without a snapshot, as SIGTERM does,
//!   then start again), `snapshot` (snapshot every shard, stop, start again), `both` (plain,
//!   then snapshot, on the state the first restart recovered), `none`;
//! - `COUNTRY_JOURNAL=none`: no log (and no restart), to tell the shards' memory from the
//!   log's.
//!
//! Set-up: 64 shards, the write-ahead log with `--durability sync` in a temp dir. Citizens
//! are registered with `PutCitizen` through `exec_batch`, `BATCH` commands per message to the
//! citizen's shard (`Node::citizen_shard`), with records like the demo's (a birth date, one
//! of `REGIONS`, an allergy for one in 50, an insurance id, a dose for one in 5). Then one
//! clinic per shard with exactly enough seats and doses, and the holds: each a booking of a
//! distinct registered citizen through the saga (`Node::book_and_wait`: the claim in the
//! citizen's shard, the hold with the rules run on the record in the clinic's, the claim
//! bound), with a deadline far enough out that every hold is live when memory is measured
//! and after the restarts. (Holds made without a claim, as in `holds.rs`, would not survive
//! a restart: the reconciliation rejects every live appointment no claim names.)
//!
//! Measured: VmRSS after the node starts, after the citizens, after the holds, the peak
//! (VmHWM), bytes per citizen (resident delta over the citizens), and the log's size. A
//! restart: the node stops (every shard handles what it has and exits), the log is closed,
//! then reopened and a new node started on it; timed until every shard has recovered and the
//! claims are reconciled (`Node::wait_recovered`), with VmRSS after. The old state's memory
//! is freed before the new node starts, but the allocator may keep some of it resident: the
//! figure after a restart is an upper bound of the recovered state's.

/// The allocator of the `holdfast` binary (server/src/main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use holdfast_benches::{
    clinic_command, clinic_per_shard, vaccine_command, vm_hwm_kib, vm_rss_kib, SeatPlan, TempDir,
    VACCINE,
};
use holdfast_engine::command::PutCitizen;
use holdfast_engine::journal::{Journal, NoJournal};
use holdfast_engine::model::{CitizenRecord, DoseRecord};
use holdfast_engine::ring::Ring;
use holdfast_engine::saga::BookRequest;
use holdfast_engine::view::ShardCounts;
use holdfast_engine::{Command, Node, NodeConfig, SystemClock};
use holdfast_persistence::{Durability, Wal, WalConfig};
use holdfast_server::journal::WalJournal;
use tokio::task::JoinSet;

const SHARDS: u32 = 64;
/// Commands per `exec_batch` (one message, one journal op).
const BATCH: usize = 1_000;
/// Messages in flight at once while loading (each waits for its group commit).
const IN_FLIGHT: usize = 2 * SHARDS as usize;
/// Bookings running at once.
const BOOKINGS_IN_FLIGHT: usize = 1_024;
/// Holds stay live this long: beyond any set-up and restart.
const HOLD_MS: i64 = 6 * 60 * 60 * 1000;
const REGIONS: [&str; 16] = [
    "north",
    "north-east",
    "east",
    "south-east",
    "south",
    "south-west",
    "west",
    "north-west",
    "capital",
    "highlands",
    "lowlands",
    "islands",
    "coast",
    "lakes",
    "valley",
    "plains",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Citizen `i`'s id: 12 characters, like a national identity number.
fn citizen_id(i: u64) -> String {
    format!("CZ{i:010}")
}

/// Citizen `i`'s record, like the demo's.
fn citizen(i: u64) -> CitizenRecord {
    let birth_year = 1930 + (i * 7919 % 90) as i32;
    CitizenRecord {
        birth_date: NaiveDate::from_ymd_opt(birth_year, 1 + (i % 12) as u32, 1 + (i % 28) as u32)
            .expect("valid date"),
        region: REGIONS[(i * 31 % REGIONS.len() as u64) as usize].into(),
        allergies: if i.is_multiple_of(50) {
            vec!["peg".into()]
        } else {
            vec![]
        },
        insurance_id: format!("INS-{i:010}"),
        doses: if i.is_multiple_of(5) {
            vec![DoseRecord {
                vaccine: "pfz".into(),
                date: NaiveDate::from_ymd_opt(2026, 9, 1).expect("valid date"),
            }]
        } else {
            vec![]
        },
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn open_journal(dir: &std::path::Path) -> Arc<WalJournal> {
    let config = WalConfig::new(Durability::Sync);
    let wal = Wal::open(dir, config.clone()).expect("open the WAL");
    Arc::new(WalJournal::new(wal, &config))
}

async fn start_node(journal: Arc<dyn Journal>) -> Arc<Node> {
    Node::spawn_with_journal(
        NodeConfig::embedded(SHARDS),
        Ring::single("local"),
        Arc::new(SystemClock),
        journal,
    )
    .await
    .expect("node starts")
}

/// Stops `node` and closes the log, as `holdfast serve` does on the way out.
async fn stop(node: Arc<Node>, journal: Arc<WalJournal>) {
    node.stop().await;
    drop(node);
    let mut journal = journal;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Arc::try_unwrap(journal) {
            Ok(journal) => {
                journal.into_wal().close().expect("close the WAL");
                return;
            }
            Err(still_shared) if Instant::now() < deadline => {
                journal = still_shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => panic!("the log is still held 10 s after the node stopped"),
        }
    }
}

async fn counts(node: &Node) -> ShardCounts {
    let asks: Vec<_> = (0..node.shards()).map(|s| node.status_of(s)).collect();
    let mut total = ShardCounts::default();
    for ask in asks {
        let (c, _) = ask.await.expect("counts");
        total.pending += c.pending;
    }
    total
}

async fn send(node: Arc<Node>, shard: u32, commands: Vec<Command>) {
    for answer in node.exec_batch(shard, commands).await.expect("batch") {
        if let Err(e) = answer {
            panic!("a command failed: {e:?}");
        }
    }
}

async fn register_citizens(node: &Arc<Node>, citizens: u64) {
    let mut buffers: Vec<Vec<Command>> = (0..SHARDS).map(|_| Vec::with_capacity(BATCH)).collect();
    let mut in_flight = JoinSet::new();
    for i in 0..citizens {
        let id = citizen_id(i);
        let shard = node.citizen_shard(&id);
        let buffer = &mut buffers[shard as usize];
        buffer.push(Command::PutCitizen(PutCitizen {
            citizen_id: id,
            record: citizen(i),
        }));
        if buffer.len() == BATCH {
            let commands = std::mem::replace(buffer, Vec::with_capacity(BATCH));
            if in_flight.len() >= IN_FLIGHT {
                in_flight.join_next().await.expect("a task").expect("sent");
            }
            in_flight.spawn(send(node.clone(), shard, commands));
        }
    }
    for (shard, commands) in buffers.into_iter().enumerate() {
        if !commands.is_empty() {
            in_flight.spawn(send(node.clone(), shard as u32, commands));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("sent");
    }
}

/// One booking (a hold, with its claim in the citizen's shard) for each of citizens
/// `0..holds`, through the saga as `POST /v1/appointments` runs it (no Idempotency-Key):
/// one clinic per shard, with exactly enough seats and doses; citizen `i` books at clinic
/// `i % SHARDS`.
async fn make_holds(node: &Arc<Node>, holds: u64) {
    node.broadcast(vaccine_command()).await.expect("vaccine");
    let clinics = clinic_per_shard(node);
    let mut plans = Vec::with_capacity(clinics.len());
    for (shard, clinic) in clinics.iter().enumerate() {
        let seats =
            holds / u64::from(SHARDS) + u64::from((shard as u64) < holds % u64::from(SHARDS));
        if seats == 0 {
            plans.push(None);
            continue;
        }
        node.exec(shard as u32, clinic_command(clinic))
            .await
            .expect("clinic");
        let plan = SeatPlan::new(&format!("s{shard}"), seats);
        send(
            node.clone(),
            shard as u32,
            plan.provision_commands(clinic, node.now_ms()),
        )
        .await;
        plans.push(Some(plan));
    }
    let mut in_flight = JoinSet::new();
    for i in 0..holds {
        let clinic = (i % u64::from(SHARDS)) as usize;
        let slot_id = plans[clinic]
            .as_mut()
            .expect("the clinic has seats")
            .take()
            .to_string();
        let request = BookRequest {
            clinic_id: clinics[clinic].clone(),
            slot_id,
            vaccine: VACCINE.to_string(),
            citizen_id: citizen_id(i),
            hold_ms: HOLD_MS,
        };
        if in_flight.len() >= BOOKINGS_IN_FLIGHT {
            in_flight
                .join_next()
                .await
                .expect("a task")
                .expect("booked");
        }
        let node = node.clone();
        in_flight.spawn(async move {
            node.book_and_wait(request)
                .await
                .expect("a booking succeeds");
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("booked");
    }
}

struct Restart {
    stop_ms: u128,
    recover_ms: u128,
    rss_kib: u64,
}

/// Stops the node (after a snapshot of every shard when `snapshot`), closes the log, opens
/// it again and starts a node on it; timed until every shard has recovered.
async fn restart(
    node: Arc<Node>,
    journal: Arc<WalJournal>,
    dir: &std::path::Path,
    snapshot: bool,
    pending: u64,
) -> (Arc<Node>, Arc<WalJournal>, Restart) {
    let stopping = Instant::now();
    if snapshot {
        node.snapshot_all().await.expect("snapshot every shard");
    }
    stop(node, journal).await;
    let stop_ms = stopping.elapsed().as_millis();
    let starting = Instant::now();
    let journal = open_journal(dir);
    let node = start_node(journal.clone()).await;
    node.wait_recovered().await.expect("every shard recovers");
    let recover_ms = starting.elapsed().as_millis();
    let rss_kib = vm_rss_kib().unwrap_or(0);
    let recovered = counts(&node).await.pending;
    assert_eq!(recovered, pending, "every hold is live again");
    (
        node,
        journal,
        Restart {
            stop_ms,
            recover_ms,
            rss_kib,
        },
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let citizens = env_u64("COUNTRY_CITIZENS", 10_000_000);
    let holds = env_u64("COUNTRY_HOLDS", 1_000_000).min(citizens);
    let restarts = std::env::var("COUNTRY_RESTART").unwrap_or_else(|_| "both".into());
    let with_wal = std::env::var("COUNTRY_JOURNAL").map_or(true, |v| v != "none");
    let dir = TempDir::new("country");
    let journal = with_wal.then(|| open_journal(dir.path()));
    let node = match &journal {
        Some(journal) => start_node(journal.clone()).await,
        None => start_node(Arc::new(NoJournal)).await,
    };
    node.wait_recovered().await.expect("a fresh node recovers");
    let rss_start = vm_rss_kib().unwrap_or(0);

    let started = Instant::now();
    register_citizens(&node, citizens).await;
    let citizens_ms = started.elapsed().as_millis();
    let rss_citizens = vm_rss_kib().unwrap_or(0);
    let holding = Instant::now();
    make_holds(&node, holds).await;
    let holds_ms = holding.elapsed().as_millis();
    let rss_holds = vm_rss_kib().unwrap_or(0);
    let hwm = vm_hwm_kib().unwrap_or(0);
    let pending = counts(&node).await.pending;
    assert_eq!(pending, holds, "every hold is live");
    let wal_bytes = journal.as_ref().map_or(0, |j| j.wal().size_on_disk_bytes());
    let dir_size = dir_bytes(dir.path());

    let log = if with_wal { "WAL, sync" } else { "no log" };
    let per_citizen = (rss_citizens.saturating_sub(rss_start) * 1024) as f64 / citizens as f64;
    let per_hold = (rss_holds.saturating_sub(rss_citizens) * 1024) as f64 / holds.max(1) as f64;
    println!(
        "set-up: {citizens} citizens in {:.1} s ({:.0}/s), {holds} holds in {:.1} s (64 shards, {log})",
        citizens_ms as f64 / 1e3,
        citizens as f64 / (citizens_ms.max(1) as f64 / 1e3),
        holds_ms as f64 / 1e3,
    );
    println!(
        "resident: {:.1} MiB after start, {:.1} MiB with the citizens, {:.1} MiB with the holds (peak {:.1} MiB)",
        kib_to_mib(rss_start),
        kib_to_mib(rss_citizens),
        kib_to_mib(rss_holds),
        kib_to_mib(hwm)
    );
    println!("per citizen: {per_citizen:.0} B resident; per hold: {per_hold:.0} B resident");
    println!(
        "log on disk: {:.1} MiB (the WAL's count; {:.1} MiB in its directory)",
        wal_bytes as f64 / (1 << 20) as f64,
        dir_size as f64 / (1 << 20) as f64
    );

    let mut restart_line = String::new();
    let Some(mut journal) = journal else {
        println!(
            "SUMMARY country: {citizens} citizens + {holds} live holds, 64 shards, no log: {:.0} MiB resident (citizens {:.0} MiB, {per_citizen:.0} B each; peak {:.0} MiB)",
            kib_to_mib(rss_holds),
            kib_to_mib(rss_citizens.saturating_sub(rss_start)),
            kib_to_mib(hwm),
        );
        node.stop().await;
        return;
    };
    let plans: &[bool] = match restarts.as_str() {
        "none" => &[],
        "plain" => &[false],
        "snapshot" => &[true],
        _ => &[false, true],
    };
    let mut node = node;
    for &snapshot in plans {
        let label = if snapshot {
            "snapshot_all, stop"
        } else {
            "stop without snapshot"
        };
        let (n, j, r) = restart(node, journal, dir.path(), snapshot, pending).await;
        (node, journal) = (n, j);
        println!(
            "restart ({label}): stopped in {:.1} s, recovered in {:.1} s, {:.1} MiB resident after (peak {:.1} MiB)",
            r.stop_ms as f64 / 1e3,
            r.recover_ms as f64 / 1e3,
            kib_to_mib(r.rss_kib),
            kib_to_mib(vm_hwm_kib().unwrap_or(0)),
        );
        restart_line.push_str(&format!(
            "; restart ({label}): stop {:.1} s + recovery {:.1} s, {:.0} MiB after",
            r.stop_ms as f64 / 1e3,
            r.recover_ms as f64 / 1e3,
            kib_to_mib(r.rss_kib)
        ));
    }
    println!(
        "SUMMARY country: {citizens} citizens + {holds} live holds, 64 shards, {log}: {:.0} MiB resident (citizens {:.0} MiB, {per_citizen:.0} B each; peak {:.0} MiB), log {:.0} MiB on disk, set-up {:.0} s{restart_line}",
        kib_to_mib(rss_holds),
        kib_to_mib(rss_citizens.saturating_sub(rss_start)),
        kib_to_mib(vm_hwm_kib().unwrap_or(0)),
        dir_size as f64 / (1 << 20) as f64,
        (citizens_ms + holds_ms) as f64 / 1e3,
    );
    stop(node, journal).await;
}
