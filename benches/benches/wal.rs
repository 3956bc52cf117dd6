//! Write-ahead log append throughput with group commit, `Durability::Sync` (every ack waits
//! for the `fdatasync` of the batch holding its records).
//!
//! - `wal_sync/append_1_record_ops`: 64 "shards", each submitting `RECORDS_PER_SHARD` single
//!   records of ~100 bytes per iteration, from `THREADS` threads at once (each thread owns
//!   64 / `THREADS` shards and submits their records interleaved, seqs consecutive per shard).
//!   An iteration ends when every ack has arrived.
//! - `wal_sync/append_16_record_ops`: the same records, 16 per submit (as a shard actor
//!   submits one op per batch message).
//!
//! Throughput is in records. After each bench one line on stderr gives, over all timed
//! iterations (warm-up included), records/s, fdatasyncs/s, batches/s and records per
//! fdatasync, from `Wal::stats()` deltas.
//!
//! Run: `cargo bench -p holdfast-benches --bench wal -- --noplot`.

/// The allocator of the `holdfast` binary (server/src/main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use holdfast_benches::TempDir;
use holdfast_persistence::{Durability, Record, Wal, WalConfig, WalError};

/// Shards (the gateway's default count).
const SHARDS: u32 = 64;
/// Records per shard per iteration.
const RECORDS_PER_SHARD: u64 = 64;
/// Submitting threads.
const THREADS: u32 = 4;
/// Bytes of each record's payload (an encoded hold event is about this big).
const PAYLOAD_BYTES: usize = 100;

/// Counts acks down to zero and wakes the waiter.
struct Pending {
    left: Mutex<u64>,
    zero: Condvar,
    failed: AtomicU64,
}

impl Pending {
    fn new(count: u64) -> Arc<Self> {
        Arc::new(Pending {
            left: Mutex::new(count),
            zero: Condvar::new(),
            failed: AtomicU64::new(0),
        })
    }

    fn done(&self, result: Result<(), WalError>) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut left = self.left.lock().expect("pending lock");
        *left -= 1;
        if *left == 0 {
            self.zero.notify_all();
        }
    }

    fn wait(&self) {
        let mut left = self.left.lock().expect("pending lock");
        while *left > 0 {
            left = self.zero.wait(left).expect("pending lock");
        }
    }
}

/// Totals over every timed iteration of one bench.
#[derive(Default)]
struct Totals {
    elapsed: Duration,
    records: u64,
    fdatasyncs: u64,
    batches: u64,
}

/// One iteration: every shard submits `RECORDS_PER_SHARD` records in ops of `per_op`, and
/// all acks are waited for. `next_seq[shard]` is the shard's next sequence number.
fn round(wal: &Wal, next_seq: &mut [u64], per_op: u64, payload: &[u8]) {
    let ops_per_shard = RECORDS_PER_SHARD.div_ceil(per_op);
    let pending = Pending::new(ops_per_shard * u64::from(SHARDS));
    let shards_per_thread = (SHARDS / THREADS) as usize;
    std::thread::scope(|scope| {
        for (t, seqs) in next_seq.chunks_mut(shards_per_thread).enumerate() {
            let pending = pending.clone();
            scope.spawn(move || {
                let first_shard = (t * shards_per_thread) as u32;
                let mut left = RECORDS_PER_SHARD;
                while left > 0 {
                    let n = left.min(per_op);
                    for (i, seq) in seqs.iter_mut().enumerate() {
                        let shard = first_shard + i as u32;
                        let records: Vec<Record> = (0..n)
                            .map(|k| Record {
                                shard,
                                seq: *seq + k,
                                payload: payload.to_vec(),
                            })
                            .collect();
                        *seq += n;
                        submit_retrying(wal, records, &pending);
                    }
                    left -= n;
                }
            });
        }
    });
    pending.wait();
    assert_eq!(
        pending.failed.load(Ordering::Relaxed),
        0,
        "every append must be acked Ok"
    );
}

/// Submits, retrying (after a short sleep) while the queue is full.
fn submit_retrying(wal: &Wal, records: Vec<Record>, pending: &Arc<Pending>) {
    loop {
        let p = pending.clone();
        match wal.submit(records.clone(), Box::new(move |r| p.done(r))) {
            Ok(()) => return,
            Err(WalError::QueueFull) => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => panic!("submit failed: {e}"),
        }
    }
}

fn wal_sync(c: &mut Criterion) {
    let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect();
    let mut group = c.benchmark_group("wal_sync");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(RECORDS_PER_SHARD * u64::from(SHARDS)));

    for per_op in [1u64, 16] {
        let dir = TempDir::new("wal");
        let config = WalConfig::new(Durability::Sync);
        let wal = Wal::open(dir.path(), config).expect("open the WAL");
        let mut next_seq = vec![1u64; SHARDS as usize];
        let mut totals = Totals::default();
        group.bench_function(format!("append_{per_op}_record_ops"), |b| {
            b.iter_custom(|iters| {
                let before = wal.stats();
                let started = Instant::now();
                for _ in 0..iters {
                    round(&wal, &mut next_seq, per_op, &payload);
                }
                let elapsed = started.elapsed();
                let after = wal.stats();
                totals.elapsed += elapsed;
                totals.records += after.records - before.records;
                totals.fdatasyncs += after.fdatasyncs - before.fdatasyncs;
                totals.batches += after.batches - before.batches;
                elapsed
            })
        });
        let secs = totals.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        eprintln!(
            "wal_sync/append_{per_op}_record_ops: {} records in {:.3} s = {:.0} records/s; \
             {} fdatasyncs = {:.1} flushes/s; {} batches = {:.1} batches/s; \
             {:.1} records per fdatasync",
            totals.records,
            secs,
            totals.records as f64 / secs,
            totals.fdatasyncs,
            totals.fdatasyncs as f64 / secs,
            totals.batches,
            totals.batches as f64 / secs,
            totals.records as f64 / (totals.fdatasyncs.max(1)) as f64,
        );
        wal.close().expect("close the WAL");
        drop(dir);
    }
    group.finish();
}

criterion_group!(benches, wal_sync);
criterion_main!(benches);
