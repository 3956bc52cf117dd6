//! A quiet shard does not hold the shared log for everyone: once the log spans more frames
//! than its bound, the shard holding its oldest frame snapshots at its next housekeeping tick,
//! and the frames before the next holder's are deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_persistence::{Durability, Wal, WalConfig};
use holdfast_server::journal::WalJournal;
use holdfast_server::Storage;

use crate::common::*;

const SHARDS_HERE: u32 = 8;
/// Far below the default, so a few bookings make the log "long".
const SPAN_FRAMES_MAX: u64 = 4;
/// Housekeeping ticks come every second; this leaves room for every shard to have its turn.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_holding_back_a_long_log_snapshots_and_the_log_is_truncated() {
    let dir = temp_dir("log-span");
    let config = WalConfig::new(Durability::Sync);
    let wal = Wal::open(&dir, config.clone()).unwrap();
    let journal = Arc::new(WalJournal::new(wal, &config).with_span_frames_max(SPAN_FRAMES_MAX));
    let h = Harness::start_storage(SHARDS_HERE, Storage::Journal(journal.clone()))
        .await
        .expect("starts");
    // Every shard writes a little (the vaccine goes to each); then only the clinic's shard
    // and its citizens' shards write.
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c1", "s1", 50, 50).await;
    for i in 0..12 {
        let citizen = format!("p{i}");
        h.put_adult(&citizen).await;
        h.api.book(&citizen, "c1", "s1").await.expect(201);
    }
    let grown = journal.wal().log_span();
    assert!(
        grown.next_frame - grown.first_live_frame > SPAN_FRAMES_MAX,
        "the bookings made the log long: {grown:?}"
    );

    let started = Instant::now();
    let span = loop {
        let span = journal.wal().log_span();
        if span.next_frame - span.first_live_frame <= SPAN_FRAMES_MAX {
            break span;
        }
        assert!(
            started.elapsed() < WAIT,
            "the log stayed long: {span:?}, first {grown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(span.first_live_frame > grown.first_live_frame, "{span:?}");
    // Shards that only got the vaccine snapshotted for the others' sake.
    let quiet = (0..SHARDS_HERE)
        .filter(|&s| s != h.node().clinic_shard("c1"))
        .collect::<Vec<_>>();
    let mut snapshotted = 0;
    for shard in quiet {
        if h.shard_entry(shard).await["snapshot_seq"].as_u64().unwrap() > 0 {
            snapshotted += 1;
        }
    }
    assert!(snapshotted > 0, "no quiet shard snapshotted");
    // Still whole after a restart from the truncated log.
    h.stop_without_snapshot().await;
    drop(journal);
    let h = Harness::start_storage(SHARDS_HERE, wal_storage(&dir, config))
        .await
        .expect("restarts");
    for i in 0..12 {
        let listing = h.api.citizen_appointments(&format!("p{i}")).await;
        assert_eq!(listing.len(), 1, "p{i}: {listing:?}");
    }
    h.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
