//! The data directory's disk turns full or read-only while the node serves:
//!
//! - through the log's headroom hook (`DiskFault`, everywhere): writes are refused with 503
//!   `UNAVAILABLE` and `details.reason` `disk_full` / `read_only` before they change anything,
//!   reads are served, `/readyz` and `/v1/admin/shards` say why, and once the disk is back
//!   writes succeed again without a restart; a restart finds every acknowledged change;
//! - on a real small filesystem (a tmpfs mounted for the test, when the test may mount one:
//!   root on Linux), with the real binary: filled to below `--disk-reserve-mib` by a ballast
//!   file (writes refused, reads served) and freed again (writes resume); then, with no
//!   reserve, filled to the last byte so that sled's own write fails (`ENOSPC`): the write
//!   is never acknowledged and writes stay refused (`log_failed`) while the disk is full;
//!   once the ballast is deleted the node restarts in place (same process, same address:
//!   `reopen.rs`) and takes writes again, with every acknowledged booking there and no other;
//!   killed with SIGKILL and restarted, every acknowledged change is still there. (A read-only remount cannot be tested
//!   this way: Linux refuses it while the server holds its files open for writing, so only a
//!   filesystem error makes one; the hook covers it.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use holdfast_persistence::{DiskFault, Durability, WalConfig};
use serde_json::Value;

use crate::common::*;
use crate::spawned;

const SHARDS_HERE: u32 = 4;
/// How often a test asks whether the node has seen the disk change, at most (20 ms apart;
/// the node asks the disk again every `HEADROOM_RECHECK_MS`, 100 ms).
const POLLS_MAX: usize = 500;
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How often the filesystem test asks whether writes are taken again after space returned,
/// at most (20 ms apart: 30 s, for the restart in place: the stop, sled's lock released, the
/// log opened again and every shard recovered).
const REOPEN_POLLS_MAX: usize = 1500;

/// Asks `/readyz` until it answers `status` (with `reason` in its details when 503), at most
/// [`POLLS_MAX`] times; returns the last answer's body.
async fn wait_ready(api: &Api, status: u16, reason: Option<&str>) -> Value {
    let mut last = Value::Null;
    for _ in 0..POLLS_MAX {
        let answer = api.send(Req::get("/readyz")).await;
        last = answer.json();
        if answer.status == status && reason.is_none_or(|r| last["error"]["details"]["reason"] == r)
        {
            return last;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("/readyz never answered {status} {reason:?}; last: {last}");
}

/// A write refused for the disk: 503 UNAVAILABLE, the reason, a Retry-After.
fn assert_refused(answer: &Resp, reason: &str) {
    let body = answer.expect(503);
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(body["error"]["details"]["reason"], reason, "{body}");
    assert!(answer.headers.contains_key("retry-after"), "{body}");
}

async fn set_up(api: &Api, citizens: usize) {
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("c1", "s1", 500, 500).await;
    for i in 0..citizens {
        api.put_adult(&format!("p{i}")).await;
    }
}

/// What refused writes must not change: the clinic's slot and stock counters.
async fn counters(api: &Api) -> Value {
    let availability = api.availability("c1").await;
    serde_json::json!([availability["slots"], availability["stock"]])
}

/// The operator's view of the storage (`/v1/admin/shards`, `storage`).
async fn storage(api: &Api, operator: &str) -> Value {
    api.send(Req::get("/v1/admin/shards").token(operator))
        .await
        .expect(200)["storage"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_refuses_writes_serves_reads_and_recovers_without_a_restart() {
    let dir = temp_dir("disk-full");
    let fault = DiskFault::default();
    let config = || WalConfig {
        disk_fault: fault.clone(),
        ..WalConfig::new(Durability::Sync)
    };
    let h = Harness::start_storage(SHARDS_HERE, wal_storage(&dir, config()))
        .await
        .expect("starts");
    set_up(&h, 4).await;
    let first = h.book_ok("p0", "c1", "s1").await;
    let second = h.book_ok("p1", "c1", "s1").await;

    for (break_disk, reason) in [
        (&DiskFault::fill as &dyn Fn(&DiskFault), "disk_full"),
        (&DiskFault::read_only, "read_only"),
    ] {
        break_disk(&fault);
        let ready = wait_ready(&h, 503, Some(reason)).await;
        assert_eq!(ready["error"]["code"], "NOT_READY", "{ready}");
        let before = counters(&h).await;
        // Writes of every kind are refused, before they change anything.
        assert_refused(&h.book("p2", "c1", "s1").await, reason);
        assert_refused(&h.confirm(&h.citizen_token("p0"), &first).await, reason);
        assert_refused(&h.cancel(&h.citizen_token("p1"), &second).await, reason);
        let put = h
            .send(
                Req::put("/v1/citizens/p9")
                    .token(&h.authority)
                    .json(&citizen_body("1980-05-05")),
            )
            .await;
        assert_refused(&put, reason);
        assert_eq!(counters(&h).await, before);
        // Reads are served.
        assert_eq!(h.appointment_json(&first).await["status"], "PENDING");
        assert_eq!(h.citizen_appointments("p1").await.len(), 1);
        h.assert_invariants_ok().await;
        // Operators see why.
        let seen = storage(&h, &h.operator).await;
        assert_eq!(seen["writable"], false, "{seen}");
        assert_eq!(seen["reason"], reason, "{seen}");
        let entry = h.shard_entry(h.node().clinic_shard("c1")).await;
        assert_eq!(entry["status"], "unavailable", "{entry}");
        assert!(
            entry["reason"].as_str().unwrap().starts_with(reason),
            "{entry}"
        );
        assert_eq!(entry["pending"], 2, "counts are still known: {entry}");

        // The disk is back: writes succeed again, no restart.
        fault.clear();
        wait_ready(&h, 200, None).await;
        assert_eq!(storage(&h, &h.operator).await["writable"], true);
    }
    h.confirm(&h.citizen_token("p0"), &first).await.expect(200);
    let third = h.book_ok("p2", "c1", "s1").await;
    h.stop_without_snapshot().await;

    // Every acknowledged change is in the log.
    let h = Harness::start_storage(
        SHARDS_HERE,
        wal_storage(&dir, WalConfig::new(Durability::Sync)),
    )
    .await
    .expect("restarts");
    assert_eq!(h.appointment_json(&first).await["status"], "CONFIRMED");
    assert_eq!(h.appointment_json(&second).await["status"], "PENDING");
    assert_eq!(h.appointment_json(&third).await["status"], "PENDING");
    h.assert_invariants_ok().await;
    h.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- a real small filesystem ------------------------------------------------------------

/// Size of the test's tmpfs and the reserve the server keeps on it. The log and the event
/// store of a small campaign take about 3 MiB (sled's first segments), so the ballast leaves
/// [`FREE_AFTER_BALLAST_MIB`], below the reserve but far from empty.
const TMPFS_MIB: u64 = 64;
const RESERVE_MIB: u64 = 16;
const FREE_AFTER_BALLAST_MIB: u64 = 4;
/// Set (as `.ci/run` does, as root) to make the filesystem test fail instead of skipping when
/// it cannot mount its tmpfs.
const REQUIRE_TMPFS: &str = "HOLDFAST_REQUIRE_TMPFS";
/// Citizens of the filesystem test: enough bookings to fill what sled had allocated.
const CITIZENS: usize = 300;

/// A tmpfs mounted on a fresh directory for one test, unmounted (and removed) when dropped.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root, or no tmpfs): the test says so and
    /// passes without running.
    fn mount(name: &str) -> Option<Tmpfs> {
        let at = temp_dir(name);
        std::fs::create_dir_all(&at).unwrap();
        let size = format!("size={TMPFS_MIB}m");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            std::fs::remove_dir_all(&at).unwrap();
            return None;
        }
        Some(Tmpfs { at })
    }

    /// Writes a ballast file that leaves about `free_mib` MiB available.
    fn fill_to(&self, ballast: &Path, free_mib: u64) {
        let stat = rustix::fs::statvfs(&self.at).expect("statvfs");
        let available = stat.f_bavail * stat.f_frsize;
        let size = available.saturating_sub(free_mib * 1024 * 1024);
        let file = std::fs::File::create(ballast).expect("ballast");
        // tmpfs allocates on write: a sparse file would not take the space.
        let chunk = vec![0xA5u8; 1024 * 1024];
        let mut file = file;
        let mut written = 0u64;
        while written < size {
            let n = chunk.len().min((size - written) as usize);
            // The last pages may not fit (the file's own blocks): full is full.
            if std::io::Write::write_all(&mut file, &chunk[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
        let _ = std::fs::remove_dir_all(&self.at);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_filesystem_filled_refuses_writes_and_loses_nothing_acknowledged_even_when_full() {
    let Some(fs) = Tmpfs::mount("disk-tmpfs") else {
        assert!(
            std::env::var_os(REQUIRE_TMPFS).is_none(),
            "{REQUIRE_TMPFS} is set but no tmpfs could be mounted"
        );
        eprintln!("disk_faults: cannot mount a tmpfs here (not root?); skipped, the DiskFault test covers the logic");
        return;
    };
    // Everything of the test lives on the tmpfs, so unmounting it cleans up.
    let data = fs.at.join("data");
    let secret = fs.at.join("jwt-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let addr_file = fs.at.join("addr");
    let reserve = RESERVE_MIB.to_string();
    let flags = ["--disk-reserve-mib", reserve.as_str()];
    let start = || spawned::start_with_flags(&data, &secret, &addr_file, "disk", None, &flags);
    let mut server = start().await;
    let api = &server.api;
    set_up(api, CITIZENS).await;
    let mut acked = vec![api.book_ok("p0", "c1", "s1").await];
    let operator = token(holdfast_gateway::auth::Role::Operator, "op", None, None);

    // Full: below the reserve.
    let ballast = fs.at.join("ballast");
    fs.fill_to(&ballast, FREE_AFTER_BALLAST_MIB);
    wait_ready(api, 503, Some("disk_full")).await;
    let before = counters(api).await;
    assert_refused(&api.book("p1", "c1", "s1").await, "disk_full");
    assert_eq!(counters(api).await, before);
    assert_eq!(api.appointment_json(&acked[0]).await["status"], "PENDING");
    assert_eq!(storage(api, &operator).await["reason"], "disk_full");
    std::fs::remove_file(&ballast).unwrap();
    wait_ready(api, 200, None).await;
    acked.push(api.book_ok("p1", "c1", "s1").await);
    api.confirm(&api.citizen_token("p0"), &acked[0])
        .await
        .expect(200);

    // Full to the last byte with no reserve (sled's own write fails): the write is never
    // acknowledged, its shard stops, the node refuses writes (`log_failed`) until space
    // returns and the node restarts in place.
    server.kill();
    let no_reserve = ["--disk-reserve-mib", "0"];
    let mut server =
        spawned::start_with_flags(&data, &secret, &addr_file, "disk", None, &no_reserve).await;
    let api = &server.api;
    fs.fill_to(&ballast, 0);
    // sled writes into pages it already has until its next segment: book until one fails.
    let mut refused = None;
    for i in 2..CITIZENS {
        let answer = api.book(&format!("p{i}"), "c1", "s1").await;
        if answer.status == 201 {
            acked.push(
                answer.json()["appointment_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            continue;
        }
        refused = Some(answer);
        break;
    }
    let refused = refused.expect("a write fails on a full disk");
    assert_refused(&refused, "log_failed");
    wait_ready(api, 503, Some("log_failed")).await;
    // Space returns: the node restarts in place (the same process, the same address), opens
    // the log again and recovers every shard from it; writes are taken again.
    std::fs::remove_file(&ballast).unwrap();
    let space_back = std::time::Instant::now();
    let late = || {
        Req::put("/v1/citizens/late")
            .token(&api.authority)
            .json(&citizen_body("1980-05-05"))
    };
    // A connection the stopping node had accepted but not yet read is closed unanswered (a
    // transport error, retried as a client would: the PUT is idempotent).
    let mut answer = api.try_send(late()).await.ok();
    for _ in 0..REOPEN_POLLS_MAX {
        if let Some(answer) = &answer {
            if answer.status == 200 || answer.status == 201 {
                break;
            }
            // Refused by the failed node or its stand-in (`log_failed`), or by a shard still
            // recovering after the restart: a 503 with Retry-After, never another answer.
            let body = answer.expect(503);
            assert!(answer.headers.contains_key("retry-after"), "{body}");
        }
        tokio::time::sleep(POLL_EVERY).await;
        answer = api.try_send(late()).await.ok();
    }
    let answer = answer.expect("an answer once the node serves again");
    assert!(
        answer.status == 200 || answer.status == 201,
        "writes are taken again once space returned: {} {}",
        answer.status,
        answer.json()
    );
    // A figure for docs/PERFORMANCE.md, never asserted.
    eprintln!(
        "disk_faults: space back -> first write accepted in {} ms (restart in place)",
        space_back.elapsed().as_millis()
    );
    // The restart is counted once every shard has recovered, which the first answer may
    // come before.
    let mut storage_now = storage(api, &operator).await;
    for _ in 0..POLLS_MAX {
        if storage_now["restarts_in_place"] != 0 {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
        storage_now = storage(api, &operator).await;
    }
    assert_eq!(storage_now["writable"], true, "{storage_now}");
    assert_eq!(storage_now["restarts_in_place"], 1, "{storage_now}");
    wait_ready(api, 200, None).await;
    assert_eq!(api.appointment_json(&acked[0]).await["status"], "CONFIRMED");
    for id in &acked[1..] {
        assert_eq!(api.appointment_json(id).await["status"], "PENDING");
    }
    acked.push(api.book_ok("late", "c1", "s1").await);
    let availability = api.availability("c1").await;
    assert_eq!(
        availability["slots"][0]["pending"].as_u64().unwrap()
            + availability["slots"][0]["confirmed"].as_u64().unwrap(),
        acked.len() as u64,
        "every acknowledged booking, and only those: {availability}"
    );

    // kill -9, restart: every acknowledged change is there.
    server.kill();
    let server = start().await;
    let api = &server.api;
    assert_eq!(api.appointment_json(&acked[0]).await["status"], "CONFIRMED");
    for id in &acked[1..] {
        assert_eq!(api.appointment_json(id).await["status"], "PENDING");
    }
}
