//! No-shows over HTTP (docs/API.md, "Clinic (staff)"): a CONFIRMED appointment whose slot
//! ended more than `--no-show-grace` ago becomes NO_SHOW by itself, its dose returns, its seat
//! stays counted in `no_show`, and the citizen may book again; also when it fell due while
//! the server was down (the real binary, SIGKILLed and restarted on the same data
//! directory, under another grace: the instant was logged at the confirm).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use holdfast_engine::NodeConfig;
use serde_json::Value;

use crate::common::*;
use crate::spawned;

/// Seats of the slot that ends during the test.
const CAPACITY: u32 = 3;
/// Doses of the clinic.
const DOSES: i64 = 10;
/// How far ahead the soon-ending slot starts: enough for the set-up and the bookings to land
/// before it starts (a booking after the start is SLOT_STARTED), short enough for a test.
const LEAD: Duration = Duration::from_secs(4);
/// Length of the soon-ending slot.
const SLOT_LENGTH: Duration = Duration::from_secs(1);
/// Longest wait for a no-show once it is due (polls of [`POLL`] in between).
const NO_SHOW_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Vaccine, clinic `clinic` with [`DOSES`] doses, a slot `soon` that starts [`LEAD`] from now
/// and lasts [`SLOT_LENGTH`], a slot `later` tomorrow, and `citizens`. Answers when `soon`
/// ends.
async fn set_up(api: &Api, clinic: &str, citizens: &[&str]) -> DateTime<Utc> {
    api.standard_vaccine(VACCINE).await;
    api.put_clinic(clinic).await;
    api.receive_stock(clinic, VACCINE, "B-1", DOSES).await;
    let start = Utc::now() + chrono::Duration::from_std(LEAD).unwrap();
    let end = start + chrono::Duration::from_std(SLOT_LENGTH).unwrap();
    let body = slot_body(rfc3339_ms(start), rfc3339_ms(end), CAPACITY, &[VACCINE], 0);
    api.put_slot_raw(clinic, "soon", &body).await.expect(200);
    api.send(
        Req::put(format!("/v1/clinics/{clinic}/slots/later"))
            .token(&api.authority)
            .json(&slot_body(
                hours_from_now(24),
                hours_from_now(25),
                5,
                &[VACCINE],
                0,
            )),
    )
    .await
    .expect(200);
    for c in citizens {
        api.put_adult(c).await;
    }
    end
}

/// Books `soon` for `citizen` and confirms it; the appointment id.
async fn book_and_confirm(api: &Api, clinic: &str, citizen: &str) -> String {
    let id = api.book_ok(citizen, clinic, "soon").await;
    let token = api.citizen_token(citizen);
    let confirmed = api.confirm(&token, &id).await.expect(200);
    assert_eq!(confirmed["status"], "CONFIRMED", "{confirmed}");
    id
}

/// Polls the appointment (bounded in count and time) until its status is `want`; the last
/// answer.
async fn wait_for_status(api: &Api, id: &str, want: &str) -> Value {
    let started = Instant::now();
    let polls = NO_SHOW_WAIT.as_millis() / POLL.as_millis();
    let mut last = Value::Null;
    for _ in 0..polls {
        last = api.appointment_json(id).await;
        if last["status"] == want || started.elapsed() > NO_SHOW_WAIT {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(last["status"], want, "appointment {id}: {last}");
    last
}

/// After the no-show: the slot counts it (and still sums to capacity), the dose is back.
fn assert_counted(avail: &Value) {
    let soon = slot(avail, "soon");
    check_slot_counters(soon);
    assert_eq!(soon["no_show"], 1, "{soon}");
    assert_eq!(soon["confirmed"], 0, "{soon}");
    assert_eq!(soon["remaining"], CAPACITY - 1, "{soon}");
    let stock = &avail["stock"][VACCINE];
    assert_eq!(stock["on_hand"], DOSES, "no dose leaves the batch: {stock}");
    assert_eq!(stock["reserved"], 0, "the dose returns: {stock}");
    assert_eq!(stock["available"], DOSES, "{stock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_appointment_becomes_no_show_after_the_grace_and_the_citizen_may_book_again() {
    let node = NodeConfig {
        no_show_grace_ms: 1_000,
        ..NodeConfig::embedded(SHARDS)
    };
    let h = Harness::start_node(node, HOLD_TTL_MS, MAX_HOLD_MS).await;
    set_up(&h, "ns-1", &["ann", "bob"]).await;
    let ann = book_and_confirm(&h, "ns-1", "ann").await;
    let bob = book_and_confirm(&h, "ns-1", "bob").await;
    h.cancel(&h.citizen_token("bob"), &bob).await.expect(200);

    // Before the slot's end + grace: still CONFIRMED, its claim still held.
    assert_eq!(h.appointment_json(&ann).await["status"], "CONFIRMED");
    let r = h.book("ann", "ns-1", "later").await;
    assert_eq!(assert_error(&r, 409), "ALREADY_BOOKED");
    let before = h.availability("ns-1").await;
    assert_eq!(slot(&before, "soon")["no_show"], 0);
    assert_eq!(before["stock"][VACCINE]["reserved"], 1);

    let ann_now = wait_for_status(&h, &ann, "NO_SHOW").await;
    assert!(ann_now["confirmed_at"].is_string(), "{ann_now}");
    assert_eq!(
        h.appointment_json(&bob).await["status"],
        "CANCELLED",
        "a cancelled appointment is no longer timed"
    );
    assert_counted(&h.availability("ns-1").await);
    // NO_SHOW is final.
    let r = h.cancel(&h.citizen_token("ann"), &ann).await;
    assert_eq!(assert_error(&r, 409), "INVALID_TRANSITION");
    // The claim was released like a cancel: ann books again, without a rebooking priority.
    let again = h.book("ann", "ns-1", "later").await.expect(201);
    assert_eq!(again["rebook_priority"], false, "{again}");
    h.assert_invariants_ok().await;
    h.shutdown().await;
}

/// This test's files: the data directory, the secret, the address file.
struct Dirs {
    root: PathBuf,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_show_that_fell_due_while_the_server_was_down_happens_at_recovery() {
    let dirs = Dirs {
        root: temp_dir("no-show-down"),
    };
    let (data, secret, addr) = (
        dirs.root.join("data"),
        dirs.root.join("secret"),
        dirs.root.join("addr"),
    );
    std::fs::write(&secret, SECRET).unwrap();
    let grace = ["--no-show-grace", "1s"];
    let mut server =
        spawned::start_with_flags(&data, &secret, &addr, "no-show", None, &grace).await;
    let end = set_up(&server.api, "ns-2", &["cem"]).await;
    let cem = book_and_confirm(&server.api, "ns-2", "cem").await;
    // Due at the slot's end + 1 s, at least 2 s after the confirm (which came before the
    // start): the kill comes first.
    assert_eq!(
        server.api.appointment_json(&cem).await["status"],
        "CONFIRMED"
    );
    server.kill();

    // Wait (bounded) until the no-show is due, while nothing runs.
    let due = end + chrono::Duration::seconds(1);
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + POLL;
    assert!(wait < NO_SHOW_WAIT, "{wait:?}");
    tokio::time::sleep(wait).await;

    // Restarted under the default grace (2 h): the instant logged at the confirm counts.
    let server = spawned::start(&data, &secret, &addr, "no-show-restarted", None).await;
    let api = &server.api;
    // Ready means recovered, and recovery acts on what fell due while the server was down.
    let after = api.appointment_json(&cem).await;
    assert_eq!(after["status"], "NO_SHOW", "{after}");
    assert_counted(&api.availability("ns-2").await);
    let again = api.book("cem", "ns-2", "later").await.expect(201);
    assert_eq!(again["status"], "PENDING", "{again}");
}
