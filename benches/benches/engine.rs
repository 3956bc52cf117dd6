//! Engine throughput in hold+confirm pairs (docs/PERFORMANCE.md: at least 1,000,000 pairs per
//! second across all shards, in process, no HTTP, no disk).
//!
//! - `state_machine/hold_confirm`: the BARE STATE MACHINE — one `ShardState` driven directly
//!   on one thread: no actors, no mailboxes, no clock reads. The ceiling of one shard.
//! - `actors/hold_confirm_batched`: through the same `Node` and shard actors the gateway uses,
//!   all 64 shards at once, one task per shard; each task sends `exec_batch` of 256 holds,
//!   then `exec_batch` of their 256 confirms.
//! - `actors/hold_confirm_single`: one `node.exec` per operation, 256 concurrent tasks spread
//!   over the 64 shards, each doing hold then confirm.
//!
//! Throughput is in pairs. Every timed pair builds its commands the way the gateway does
//! (owned strings) and must succeed: each bench counts the confirmed answers and panics on a
//! shortfall, so it cannot quietly measure refusals. Seats and doses are provisioned outside
//! the timed region, exactly as many as the timed part consumes (`SeatPlan`); the actor
//! benches start a fresh node per criterion sample batch and stop it afterwards, untimed.
//! tokio runs with 2 worker threads (the machine has 2 cores).
//!
//! Run: `cargo bench -p holdfast-benches -- --noplot`.

/// The allocator of the `holdfast` binary (server/src/main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use holdfast_benches::{
    citizens, held_seq, hold_command, is_confirmed, BareShard, BenchNode, SeatPlan, SHARDS,
};
use holdfast_engine::command::Confirm;
use holdfast_engine::Command;

/// Pairs per `exec_batch` round trip in the batched bench.
const BATCH_PAIRS: u64 = 256;
/// Concurrent callers in the single-operation bench.
const SINGLE_TASKS: u64 = 256;
/// Pairs each caller does per criterion iteration in the single-operation bench.
const SINGLE_PAIRS_PER_TASK: u64 = 16;
/// Largest number of appointments one bare `ShardState` accumulates before it is replaced
/// (untimed), so memory stays bounded however many iterations criterion asks for.
const BARE_CHUNK: u64 = 200_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    group
}

/// The bare state machine: one iteration is one hold+confirm pair.
fn state_machine(c: &mut Criterion) {
    let citizens = citizens();
    let mut group = configure(c, "state_machine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hold_confirm", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(BARE_CHUNK);
                let mut shard = BareShard::new(chunk, citizens.clone());
                let started = Instant::now();
                let mut ok = 0u64;
                for _ in 0..chunk {
                    ok += u64::from(shard.hold_confirm());
                }
                elapsed += started.elapsed();
                assert_eq!(ok, chunk, "every pair must succeed");
                left -= chunk;
                drop(shard);
            }
            elapsed
        })
    });
    group.finish();
}

/// Batched through the actors: one iteration is one round of `BATCH_PAIRS` pairs on every
/// shard, all shards concurrently.
fn actors_batched(c: &mut Criterion) {
    let rt = runtime();
    let citizens = citizens();
    let mut group = configure(c, "actors");
    group.throughput(Throughput::Elements(BATCH_PAIRS * u64::from(SHARDS)));
    group.bench_function("hold_confirm_batched", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let bench = BenchNode::start(SHARDS).await;
                let mut plans = Vec::with_capacity(SHARDS as usize);
                for shard in 0..SHARDS {
                    let plan = SeatPlan::new(&format!("b{shard}"), iters * BATCH_PAIRS);
                    bench.provision(shard, &plan).await;
                    plans.push(plan);
                }

                let started = Instant::now();
                let tasks: Vec<_> = plans
                    .into_iter()
                    .enumerate()
                    .map(|(shard, mut plan)| {
                        let node = bench.node.clone();
                        let clinic = bench.clinics[shard].clone();
                        let citizens = citizens.clone();
                        let shard = shard as u32;
                        tokio::spawn(async move {
                            let mut confirmed = 0u64;
                            let mut next_citizen = shard as usize;
                            for _ in 0..iters {
                                let holds: Vec<Command> = (0..BATCH_PAIRS)
                                    .map(|_| {
                                        next_citizen += 1;
                                        let citizen = &citizens[next_citizen % citizens.len()];
                                        hold_command(&clinic, plan.take(), citizen)
                                    })
                                    .collect();
                                let held = node.exec_batch(shard, holds).await.expect("holds");
                                let confirms: Vec<Command> = held
                                    .iter()
                                    .filter_map(held_seq)
                                    .map(|seq| Command::Confirm(Confirm { seq, citizen: None }))
                                    .collect();
                                let answers =
                                    node.exec_batch(shard, confirms).await.expect("confirms");
                                confirmed +=
                                    answers.iter().filter(|a| is_confirmed(a)).count() as u64;
                            }
                            confirmed
                        })
                    })
                    .collect();
                let mut confirmed = 0;
                for task in tasks {
                    confirmed += task.await.expect("bench task");
                }
                let elapsed = started.elapsed();
                assert_eq!(
                    confirmed,
                    iters * BATCH_PAIRS * u64::from(SHARDS),
                    "every pair must succeed"
                );
                bench.shutdown().await;
                elapsed
            })
        })
    });

    // One `node.exec` per operation: one iteration is `SINGLE_PAIRS_PER_TASK` pairs by each
    // of `SINGLE_TASKS` concurrent callers.
    group.throughput(Throughput::Elements(SINGLE_TASKS * SINGLE_PAIRS_PER_TASK));
    group.bench_function("hold_confirm_single", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let bench = BenchNode::start(SHARDS).await;
                let mut plans = Vec::with_capacity(SINGLE_TASKS as usize);
                for task in 0..SINGLE_TASKS {
                    let shard = (task % u64::from(SHARDS)) as u32;
                    let plan = SeatPlan::new(&format!("t{task}"), iters * SINGLE_PAIRS_PER_TASK);
                    bench.provision(shard, &plan).await;
                    plans.push(plan);
                }

                let started = Instant::now();
                let tasks: Vec<_> = plans
                    .into_iter()
                    .enumerate()
                    .map(|(task, mut plan)| {
                        let node = bench.node.clone();
                        let shard = (task as u64 % u64::from(SHARDS)) as u32;
                        let clinic = bench.clinics[shard as usize].clone();
                        let citizens: Arc<Vec<String>> = citizens.clone();
                        tokio::spawn(async move {
                            let mut confirmed = 0u64;
                            for i in 0..iters * SINGLE_PAIRS_PER_TASK {
                                let citizen = &citizens[(task + i as usize) % citizens.len()];
                                let hold = hold_command(&clinic, plan.take(), citizen);
                                let held = node.exec(shard, hold).await;
                                let Some(seq) = held_seq(&held) else {
                                    panic!("hold refused: {held:?}");
                                };
                                let answer = node
                                    .exec(shard, Command::Confirm(Confirm { seq, citizen: None }))
                                    .await;
                                confirmed += u64::from(is_confirmed(&answer));
                            }
                            confirmed
                        })
                    })
                    .collect();
                let mut confirmed = 0;
                for task in tasks {
                    confirmed += task.await.expect("bench task");
                }
                let elapsed = started.elapsed();
                assert_eq!(
                    confirmed,
                    iters * SINGLE_PAIRS_PER_TASK * SINGLE_TASKS,
                    "every pair must succeed"
                );
                bench.shutdown().await;
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group!(benches, state_machine, actors_batched);
criterion_main!(benches);
