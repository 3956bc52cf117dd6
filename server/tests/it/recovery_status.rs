//! While shards recover, the listener is already open: `/healthz` answers, `/readyz` is 503
//! `NOT_READY`, a request for a recovering shard is 503 `UNAVAILABLE` with `Retry-After`
//! (never a guess), the other shards serve, and `/v1/admin/shards` says which is which. A
//! shard whose log cannot be replayed stays unavailable, with the reason, and the rest serve.
//!
//! The journal here is a real `Journal` whose `recover` is held at a gate for one shard (or
//! fails for one shard), so the test controls exactly when recovery ends.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use holdfast_engine::journal::{Done, Journal, Recovered};
use holdfast_engine::JournalError;
use holdfast_server::Storage;

use crate::common::*;

/// Longest a gated recovery waits for the test to open the gate (so a failing test ends).
const GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A journal that keeps nothing, whose recovery of `gated` waits for [`GatedJournal::open`]
/// and whose recovery of `failing` fails.
struct GatedJournal {
    gated: Option<u32>,
    failing: Option<u32>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedJournal {
    fn new(gated: Option<u32>, failing: Option<u32>) -> Arc<GatedJournal> {
        Arc::new(GatedJournal {
            gated,
            failing,
            open: Mutex::new(false),
            opened: Condvar::new(),
        })
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Journal for GatedJournal {
    fn append(&self, _: u32, _: Vec<(u64, Vec<u8>)>, done: Done) -> Result<(), JournalError> {
        done(Ok(()));
        Ok(())
    }
    fn snapshot(&self, _: u32, _: u64, _: Vec<u8>, done: Done) -> Result<(), JournalError> {
        done(Ok(()));
        Ok(())
    }
    fn recover(&self, shard: u32) -> Result<Recovered, JournalError> {
        if Some(shard) == self.failing {
            return Err(JournalError::Read(format!(
                "shard {shard}: snapshot checksum mismatch (injected)"
            )));
        }
        if Some(shard) == self.gated {
            let open = self.open.lock().unwrap();
            let (open, _) = self
                .opened
                .wait_timeout_while(open, GATE_TIMEOUT, |open| !*open)
                .unwrap();
            if !*open {
                return Err(JournalError::Read("the test never opened the gate".into()));
            }
        }
        Ok(Recovered::default())
    }
    fn failed(&self) -> Option<JournalError> {
        None
    }
    fn busy(&self) -> bool {
        false
    }
}

/// A clinic id that lands on `shard`, and one that does not.
fn clinic_on(shards: u32, shard: u32, on: bool) -> String {
    (0..10_000)
        .map(|i| format!("clinic-{i}"))
        .find(|id| (holdfast_engine::hash::shard_of(id, shards) == shard) == on)
        .expect("some id lands there")
}

// Several workers: the gated recovery blocks one of them, as a slow disk would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovering_shard_answers_503_while_the_others_serve_and_readyz_waits_for_all() {
    const GATED: u32 = 3;
    let journal = GatedJournal::new(Some(GATED), None);
    let h = Harness::start_listening(SHARDS, Storage::Journal(journal.clone())).await;

    h.healthz().await;
    let ready = h.send(Req::get("/readyz")).await;
    let body = ready.expect(503);
    assert_eq!(body["error"]["code"], "NOT_READY");
    assert_eq!(ready.headers["retry-after"], "1");

    let recovering = clinic_on(SHARDS, GATED, true);
    let serving = clinic_on(SHARDS, GATED, false);
    // A shard that has recovered serves at once.
    h.put_clinic(&serving).await;
    // The recovering one refuses without a guess, and says when to come back.
    let refused = h
        .send(
            Req::put(format!("/v1/clinics/{recovering}"))
                .token(&h.authority)
                .json(&clinic_body()),
        )
        .await;
    let body = refused.expect(503);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(body["error"]["details"]["shard"], GATED);
    assert_eq!(refused.headers["retry-after"], "1");
    // Reads of that shard too.
    let read = h
        .send(Req::get(format!("/v1/clinics/{recovering}/availability")))
        .await;
    assert_eq!(read.expect(503)["error"]["code"], "UNAVAILABLE");

    let gated = h.shard_entry(GATED).await;
    assert_eq!(gated["status"], "recovering");
    assert!(gated["wal_seq"].is_null(), "not known while recovering");
    let other = h.shard_entry((GATED + 1) % SHARDS).await;
    assert_eq!(other["status"], "ready");
    assert_eq!(other["wal_seq"], 0);

    journal.open();
    tokio::time::timeout(Duration::from_secs(10), h.node().wait_recovered())
        .await
        .expect("recovery ends once the gate opens")
        .expect("every shard recovered");
    h.send(Req::get("/readyz")).await.expect(200);
    h.put_clinic(&recovering).await;
    assert_eq!(h.shard_entry(GATED).await["status"], "ready");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_cannot_recover_stays_unavailable_with_its_reason_and_the_rest_serve() {
    const BROKEN: u32 = 5;
    let journal = GatedJournal::new(None, Some(BROKEN));
    let h = Harness::start_listening(SHARDS, Storage::Journal(journal)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), h.node().wait_recovered())
        .await
        .expect("recovery settles");
    let err = outcome.expect_err("one shard failed").to_string();
    assert!(err.contains("injected"), "{err}");

    assert_eq!(
        h.send(Req::get("/readyz")).await.expect(503)["error"]["code"],
        "NOT_READY"
    );
    let broken = h.shard_entry(BROKEN).await;
    assert_eq!(broken["status"], "unavailable");
    assert!(broken["reason"].as_str().unwrap().contains("injected"));
    let refused = h
        .send(
            Req::put(format!("/v1/clinics/{}", clinic_on(SHARDS, BROKEN, true)))
                .token(&h.authority)
                .json(&clinic_body()),
        )
        .await;
    assert_eq!(refused.expect(503)["error"]["code"], "UNAVAILABLE");
    h.put_clinic(&clinic_on(SHARDS, BROKEN, false)).await;
    h.shutdown().await;
}

#[tokio::test]
async fn start_that_waits_for_recovery_reports_a_shard_that_cannot_recover() {
    let journal = GatedJournal::new(None, Some(1));
    let config = test_config(
        holdfast_engine::NodeConfig::embedded(SHARDS),
        HOLD_TTL_MS,
        MAX_HOLD_MS,
        Storage::Journal(journal),
    );
    let err = match holdfast_server::start(config).await {
        Ok(_) => panic!("a server with a broken shard must not report itself started"),
        Err(e) => e,
    };
    assert!(
        err.contains("recovery failed") && err.contains("injected"),
        "{err}"
    );
}

/// The reconciliation after a restart rejects only holds made under a claim that no claim
/// names (a create's tentative claim lost in a crash): a hold made without a claim (tools,
/// benches) comes back as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_made_without_a_claim_survives_a_restart() {
    use holdfast_engine::command::Hold;
    use holdfast_engine::{Command, Output};

    let dir = temp_dir("unclaimed-hold");
    let config = holdfast_persistence::WalConfig::new(holdfast_persistence::Durability::Sync);
    let h = Harness::start_storage(4, wal_storage(&dir, config.clone()))
        .await
        .expect("starts");
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c1", "s1", 5, 5).await;
    let shard = h.node().clinic_shard("c1");
    let hold = Hold::new("c1", "s1", VACCINE, "someone", 3_600_000);
    let made = match h.node().exec(shard, Command::Hold(hold)).await {
        Ok(Output::Appointment(a)) => a,
        other => panic!("{other:?}"),
    };
    h.stop_without_snapshot().await;

    let h = Harness::start_storage(4, wal_storage(&dir, config))
        .await
        .expect("restarts");
    let id = made.id.to_string();
    assert_eq!(h.appointment_json(&id).await["status"], "PENDING");
    h.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
