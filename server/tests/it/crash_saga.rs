//! Process-level crash tests of the booking saga, one per named failpoint
//! (`engine/src/failpoint.rs`): the real `holdfast` binary runs with
//! `HOLDFAST_FAILPOINTS=<point>`, a request drives it to the point, the test waits for the
//! `failpoint reached: <point>` line on the child's stderr and kills it with SIGKILL, then
//! restarts it on the same data directory without the variable. After the restart
//! (`/readyz` 200 only once `Node::reconcile_claims` ran): `GET /v1/admin/invariants` is ok,
//! the slot and stock counters agree with the appointments, the citizen has the one live
//! appointment (or none) the design in `engine/src/claims.rs` promises, and the client's
//! retry with the same Idempotency-Key converges on it instead of making a second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use holdfast_engine::hash::shard_of;
use holdfast_gateway::auth::Role;
use serde_json::{json, Value};

use crate::common::*;
use crate::spawned::{self, Spawned as Server};

/// Shards of the node (`--shards`), for choosing ids on different shards.
const NODE_SHARDS: u32 = 8;
/// Seats per slot and doses per clinic.
const CAPACITY: u32 = 10;

/// One test's files: the data directory, the secret, the address file.
struct Dirs {
    root: PathBuf,
    data: PathBuf,
    secret: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root = temp_dir(&format!("crash-saga-{name}"));
        let secret = root.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        Dirs {
            data: root.join("data"),
            secret,
            root,
        }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Starts the binary on this test's files (with `failpoint` enabled, or none).
async fn start(dirs: &Dirs, tag: &str, failpoint: Option<&str>) -> Server {
    spawned::start(
        &dirs.data,
        &dirs.secret,
        &dirs.root.join("addr"),
        tag,
        failpoint,
    )
    .await
}

// ---- ids on chosen shards ----------------------------------------------------------------

/// The first id `<prefix><n>` whose shard is none of `avoid`.
fn id_avoiding(prefix: &str, avoid: &[u32]) -> String {
    (0..1000)
        .map(|n| format!("{prefix}{n}"))
        .find(|id| !avoid.contains(&shard_of(id, NODE_SHARDS)))
        .unwrap_or_else(|| panic!("no id {prefix}<n> avoids shards {avoid:?}"))
}

/// A citizen and `clinics` clinics, each on a shard of its own (none the citizen's).
struct Cast {
    citizen: String,
    clinics: Vec<String>,
}

impl Cast {
    fn new(name: &str, clinics: usize) -> Cast {
        let citizen = format!("cz-{name}");
        let mut taken = vec![shard_of(&citizen, NODE_SHARDS)];
        let clinics = (0..clinics)
            .map(|i| {
                let id = id_avoiding(&format!("k-{name}-{i}-"), &taken);
                taken.push(shard_of(&id, NODE_SHARDS));
                id
            })
            .collect();
        Cast { citizen, clinics }
    }

    /// Another citizen, on none of the clinics' shards.
    fn another_citizen(&self, prefix: &str) -> String {
        let shards: Vec<u32> = self
            .clinics
            .iter()
            .map(|c| shard_of(c, NODE_SHARDS))
            .collect();
        id_avoiding(prefix, &shards)
    }
}

// ---- the campaign and the checks -----------------------------------------------------

/// The vaccine, every clinic with slot `s0` ([`CAPACITY`] seats tomorrow) and
/// [`CAPACITY`] doses, and the citizens.
async fn set_up(api: &Api, clinics: &[String], citizens: &[&str]) {
    api.standard_vaccine(VACCINE).await;
    for clinic in clinics {
        api.clinic_with_slot(clinic, "s0", CAPACITY, i64::from(CAPACITY))
            .await;
    }
    for citizen in citizens {
        api.put_adult(citizen).await;
    }
}

fn operator() -> String {
    token(Role::Operator, "crash-saga-operator", None, None)
}

/// `GET /v1/admin/invariants` is `ok: true` (the violations are in the failure message).
async fn assert_invariants(api: &Api, when: &str) {
    let report = api
        .send(Req::get("/v1/admin/invariants").token(&operator()))
        .await
        .expect(200);
    assert_eq!(
        report["ok"],
        json!(true),
        "invariants {when}: violations {}",
        report["violations"]
    );
    assert_eq!(report["shards_checked"], json!(NODE_SHARDS), "{report}");
}

fn status_of(a: &Value) -> &str {
    a["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in {a}"))
}

fn id_of(a: &Value) -> String {
    a["appointment_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no appointment_id in {a}"))
        .to_string()
}

fn is_live(a: &Value) -> bool {
    ["PENDING", "CONFIRMED"].contains(&status_of(a))
}

/// Every clinic's slot and stock counters agree with its appointments (the clinic listing
/// is the authority).
async fn assert_counters(api: &Api, clinics: &[String]) {
    for clinic in clinics {
        let listing = api.clinic_appointments(clinic, "").await;
        let availability = api.availability(clinic).await;
        let count = |status: &str| {
            listing
                .iter()
                .filter(|a| a["slot_id"] == "s0" && status_of(a) == status)
                .count() as u64
        };
        let (_, pending, confirmed) = seats(&availability, "s0");
        assert_eq!(
            (pending, confirmed),
            (count("PENDING"), count("CONFIRMED")),
            "clinic {clinic}: slot counters vs appointments {listing:?}"
        );
        let live = listing.iter().filter(|a| is_live(a)).count() as i64;
        assert_eq!(
            stock(&availability, VACCINE).1,
            live,
            "clinic {clinic}: reserved doses vs live appointments"
        );
    }
}

/// The citizen's appointments at `clinics`, as the clinics' shards have them.
async fn at_clinics(api: &Api, clinics: &[String], citizen: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for clinic in clinics {
        found.extend(
            api.clinic_appointments(clinic, "")
                .await
                .into_iter()
                .filter(|a| a["citizen_id"] == citizen),
        );
    }
    found
}

/// The one appointment `id` among `list`.
fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|a| a["appointment_id"] == id)
        .unwrap_or_else(|| panic!("no appointment {id} in {list:?}"))
}

fn book_req(citizen: &str, clinic: &str, key: &str) -> (Req, Value) {
    let body = booking_body(citizen, clinic, "s0", VACCINE);
    let token = token(
        Role::Citizen,
        &format!("citizen-{citizen}"),
        Some(citizen),
        None,
    );
    let req = Req::post("/v1/appointments")
        .token(&token)
        .idem(key)
        .json(&body);
    (req, body)
}

fn reschedule_req(citizen: &str, from: &str, clinic: &str, key: &str) -> Req {
    let token = token(
        Role::Citizen,
        &format!("citizen-{citizen}"),
        Some(citizen),
        None,
    );
    Req::post(format!("/v1/appointments/{from}/reschedule"))
        .token(&token)
        .idem(key)
        .json(&json!({"clinic_id": clinic, "slot_id": "s0"}))
}

/// Sends every request in a task of its own (each reaches `point` and never gets an
/// answer), waits until all of them reached it, kills the server, and checks that no client
/// got an answer.
async fn crash_at(server: &mut Server, point: &str, reqs: Vec<Req>) {
    let n = reqs.len();
    let requests: Vec<_> = reqs
        .into_iter()
        .map(|req| {
            let api = server.api.clone();
            tokio::spawn(async move { api.try_send(req).await })
        })
        .collect();
    server.wait_for_failpoint(point, n).await;
    server.kill();
    for request in requests {
        let answer = tokio::time::timeout(Duration::from_secs(15), request)
            .await
            .expect("the request ends once the server is gone")
            .expect("the request task");
        if let Ok(r) = &answer {
            panic!(
                "a request that reached {point} was answered: {} {}",
                r.status, r.text
            );
        }
    }
}

/// The client's retry after the crash (same key, same body) books once and a retry of it
/// replays it: the cast's citizen then has that one live appointment, listed, and nothing
/// more (`ALREADY_BOOKED` at the cast's other clinic), with the invariants and counters whole.
async fn assert_the_retry_books_once(api: &Api, cast: &Cast, key: &str, body: &Value) {
    let citizen = &cast.citizen;
    let token = api.citizen_token(citizen);
    let first = api.book_with(&token, key, body).await.expect(201);
    assert_eq!(status_of(&first), "PENDING", "{first}");
    let listing = api.citizen_appointments(citizen).await;
    assert_eq!(ids(&listing), vec![id_of(&first)], "{listing:?}");
    let again = api.book_with(&token, key, body).await.expect(201);
    assert_eq!(id_of(&again), id_of(&first), "the key now replays");
    let live: Vec<_> = at_clinics(api, &cast.clinics, citizen)
        .await
        .into_iter()
        .filter(is_live)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(id_of(&live[0]), id_of(&first));
    assert_already_booked(api, citizen, &cast.clinics[1]).await;
    assert_invariants(api, "after the retry").await;
    assert_counters(api, &cast.clinics).await;
}

/// A booking for `citizen` at `clinic` with a fresh key is 409 ALREADY_BOOKED.
async fn assert_already_booked(api: &Api, citizen: &str, clinic: &str) {
    let (req, _) = book_req(citizen, clinic, &fresh_key("crash-saga-other"));
    let resp = api.send(req).await;
    assert_error_code(&resp, 409, "ALREADY_BOOKED");
}

// ---- the crash points ----------------------------------------------------------------

/// `book.after_claim`: the claim (and the key's begin) is taken, no hold was made. Two
/// citizens' bookings are cut there. After the restart neither has an appointment or a claim
/// (the invariants allow no claim without a live appointment): one client's retry with the
/// same key and body books once, the other citizen's new booking with a new key succeeds
/// at once (a claim in flight would make it ALREADY_BOOKED for 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_after_claim_leaves_nothing_and_the_retry_books_once() {
    let t0 = Instant::now();
    let point = "book.after_claim";
    let dirs = Dirs::new("after-claim");
    let cast = Cast::new("ac", 2);
    let (citizen, clinic, other) = (&cast.citizen, &cast.clinics[0], &cast.clinics[1]);
    let second = cast.another_citizen("cz-ac-second-");
    let mut server = start(&dirs, point, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[citizen, &second]).await;
    let (req, body) = book_req(citizen, clinic, "ac-key");
    let (second_req, _) = book_req(&second, clinic, "ac-key-second");
    crash_at(&mut server, point, vec![req, second_req]).await;
    drop(server);

    let server = start(&dirs, "after-claim restarted", None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    for c in [citizen, &second] {
        assert_eq!(
            api.citizen_appointments(c).await,
            Vec::<Value>::new(),
            "{c}"
        );
        assert_eq!(at_clinics(api, &cast.clinics, c).await.len(), 0, "{c}");
    }
    assert_counters(api, &cast.clinics).await;
    assert_eq!(seats(&api.availability(clinic).await, "s0").1, 0);

    // The second citizen is free: a new booking with a new key succeeds.
    let (req, _) = book_req(&second, other, "ac-key-second-new");
    let booked = api.send(req).await.expect(201);
    assert_eq!(
        ids(&api.citizen_appointments(&second).await),
        vec![id_of(&booked)]
    );

    // The first client retries: same key, same body. It books, once.
    assert_the_retry_books_once(api, &cast, "ac-key", &body).await;
    assert_eq!(at_clinics(api, &cast.clinics, citizen).await.len(), 1);
    eprintln!("{point}: {:?}", t0.elapsed());
}

/// `book.after_hold`: held (seat and dose taken), the claim tentative (in memory only, never
/// journaled before it is bound), nothing answered. After the restart the hold, if it reached
/// the log, is rejected by the reconciliation (no claim names it): seat and dose are back, and
/// the retry with the same key books once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_after_hold_returns_the_unanswered_hold_and_the_retry_books_once() {
    let t0 = Instant::now();
    let point = "book.after_hold";
    let dirs = Dirs::new("after-hold");
    let cast = Cast::new("ah", 2);
    let (citizen, clinic) = (&cast.citizen, &cast.clinics[0]);
    let mut server = start(&dirs, point, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[citizen]).await;
    let (req, body) = book_req(citizen, clinic, "ah-key");
    crash_at(&mut server, point, vec![req]).await;
    drop(server);

    let server = start(&dirs, "after-hold restarted", None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    assert_counters(api, &cast.clinics).await;
    let found = at_clinics(api, &cast.clinics, citizen).await;
    assert!(
        found.iter().all(|a| status_of(a) == "REJECTED"),
        "an unanswered hold does not survive without its claim: {found:?}"
    );
    assert_eq!(seats(&api.availability(clinic).await, "s0").1, 0);

    assert_the_retry_books_once(api, &cast, "ah-key", &body).await;
    assert_eq!(seats(&api.availability(clinic).await, "s0").1, 1);
    eprintln!("{point}: {:?}", t0.elapsed());
}

/// `settle.confirmed`: a confirm reaches the citizen's shard only when it spends a
/// `rebook_priority` (a plain confirm leaves the claim bound as it was). So: the citizen's
/// first appointment is cancelled by its clinic, the citizen rebooks elsewhere with the
/// priority that earned, and confirms; that confirm is durable at the clinic (and answered
/// 200), the citizen's shard never heard of it. After the restart the appointment is
/// CONFIRMED and still owns the citizen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_confirmed_keeps_the_citizen_booked() {
    let t0 = Instant::now();
    let point = "settle.confirmed";
    let dirs = Dirs::new("settle-confirmed");
    let cast = Cast::new("sc", 3);
    let citizen = &cast.citizen;
    let (cancelled, clinic, other) = (&cast.clinics[0], &cast.clinics[1], &cast.clinics[2]);
    let mut server = start(&dirs, point, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[citizen]).await;
    let token = server.api.citizen_token(citizen);
    let (req, _) = book_req(citizen, cancelled, "sc-key-0");
    server.api.send(req).await.expect(201);
    let cancel = Req::post(format!("/v1/clinics/{cancelled}/slots/s0/cancel"))
        .token(&server.api.authority)
        .json(&json!({"reason": "flood"}));
    server.api.send(cancel).await.expect(200);
    let (req, _) = book_req(citizen, clinic, "sc-key");
    let booked = server.api.send(req).await.expect(201);
    assert_eq!(booked["rebook_priority"], true, "{booked}");
    let id = id_of(&booked);
    let confirmed = server.api.confirm(&token, &id).await.expect(200);
    assert_eq!(status_of(&confirmed), "CONFIRMED");
    server.wait_for_failpoint(point, 1).await;
    server.kill();
    drop(server);

    let server = start(&dirs, "settle-confirmed restarted", None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    assert_eq!(status_of(&api.appointment_json(&id).await), "CONFIRMED");
    let listed = ids(&api.citizen_appointments(citizen).await);
    assert_eq!(listed.last(), Some(&id), "{listed:?}");
    assert_counters(api, &cast.clinics).await;
    assert_eq!(seats(&api.availability(clinic).await, "s0").2, 1);
    assert_already_booked(api, citizen, other).await;
    assert_invariants(api, "after the refused booking").await;
    eprintln!("{point}: {:?}", t0.elapsed());
}

/// `settle.lapsed` after cancels: one citizen cancels a PENDING appointment (RELEASED),
/// another a CONFIRMED one (CANCELLED); both cancels are durable and answered, the citizens'
/// shards never heard of them. After the restart both citizens are free: a new booking
/// with a new key succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_lapsed_after_a_cancel_frees_the_citizen() {
    let t0 = Instant::now();
    let point = "settle.lapsed";
    let dirs = Dirs::new("settle-lapsed");
    let cast = Cast::new("sl", 2);
    let (clinic, other) = (&cast.clinics[0], &cast.clinics[1]);
    let pending = cast.citizen.clone();
    let confirmed = cast.another_citizen("cz-sl-confirmed-");
    let mut server = start(&dirs, point, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[&pending, &confirmed]).await;
    let api = server.api.clone();
    let (req, _) = book_req(&pending, clinic, "sl-key-p");
    let released_id = id_of(&api.send(req).await.expect(201));
    let (req, _) = book_req(&confirmed, clinic, "sl-key-c");
    let cancelled_id = id_of(&api.send(req).await.expect(201));
    let c_token = api.citizen_token(&confirmed);
    api.confirm(&c_token, &cancelled_id).await.expect(200);
    // The first cancel's notice stops the settler (for good); the second is answered before
    // the point announces itself (it waits 300 ms), so both are durable at the kill.
    let r = api
        .cancel(&api.citizen_token(&pending), &released_id)
        .await
        .expect(200);
    assert_eq!(status_of(&r), "RELEASED");
    let r = api.cancel(&c_token, &cancelled_id).await.expect(200);
    assert_eq!(status_of(&r), "CANCELLED");
    server.wait_for_failpoint(point, 1).await;
    server.kill();
    drop(server);

    let server = start(&dirs, "settle-lapsed restarted", None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    assert_eq!(
        status_of(&api.appointment_json(&released_id).await),
        "RELEASED"
    );
    assert_eq!(
        status_of(&api.appointment_json(&cancelled_id).await),
        "CANCELLED"
    );
    assert_counters(api, &cast.clinics).await;
    assert_eq!(
        seats(&api.availability(clinic).await, "s0"),
        (CAPACITY as u64, 0, 0)
    );
    for (citizen, key) in [(&pending, "sl-new-p"), (&confirmed, "sl-new-c")] {
        let (req, _) = book_req(citizen, other, key);
        let booked = api.send(req).await.expect(201);
        assert_eq!(status_of(&booked), "PENDING");
        let live: Vec<Value> = at_clinics(api, &cast.clinics, citizen)
            .await
            .into_iter()
            .filter(is_live)
            .collect();
        assert_eq!(ids(&live), vec![id_of(&booked)], "{citizen}");
    }
    assert_invariants(api, "after the new bookings").await;
    assert_counters(api, &cast.clinics).await;
    eprintln!("{point}: {:?}", t0.elapsed());
}

/// `settle.administered`: staff administer a CONFIRMED appointment; the administration is
/// durable and answered, the citizen's shard never heard of it. After the restart the
/// reconciliation has settled the claim with the dose (the invariants allow no claim bound to
/// an ended appointment): the citizen may book again, and the interval rule sees the dose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_administered_keeps_the_dose() {
    let t0 = Instant::now();
    let point = "settle.administered";
    let dirs = Dirs::new("settle-administered");
    let cast = Cast::new("sa", 2);
    let citizen = &cast.citizen;
    let (clinic, other) = (&cast.clinics[0], &cast.clinics[1]);
    let mut server = start(&dirs, point, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[citizen]).await;
    let api = server.api.clone();
    let (req, _) = book_req(citizen, clinic, "sa-key");
    let id = id_of(&api.send(req).await.expect(201));
    let confirmed = api
        .confirm(&api.citizen_token(citizen), &id)
        .await
        .expect(200);
    let qr = confirmed["qr_token"]
        .as_str()
        .expect("a qr_token")
        .to_string();
    let done = api
        .send(
            Req::post(format!("/v1/appointments/{id}/administer"))
                .token(&api.staff_token(clinic))
                .json(&json!({"qr_token": qr, "batch": "B-1"})),
        )
        .await
        .expect(200);
    assert_eq!(status_of(&done), "ADMINISTERED");
    server.wait_for_failpoint(point, 1).await;
    server.kill();
    drop(server);

    let server = start(&dirs, "settle-administered restarted", None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    assert_eq!(status_of(&api.appointment_json(&id).await), "ADMINISTERED");
    assert_counters(api, &cast.clinics).await;
    // The other clinic's slot is tomorrow too: within the 21 days after this dose.
    let (req, _) = book_req(citizen, other, "sa-new");
    let details = assert_error_code(&api.send(req).await, 422, "NOT_ELIGIBLE");
    assert_eq!(reasons(&details), vec!["min_interval_not_met"]);
    assert_invariants(api, "after the refused booking").await;
    eprintln!("{point}: {:?}", t0.elapsed());
}

/// Books `citizen` at `clinic` (201, optionally confirmed), then sends a reschedule to `to`
/// with `key` that reaches `point`, and kills the server there. Answers the old id.
async fn crash_a_reschedule(
    server: &mut Server,
    citizen: &str,
    clinic: &str,
    to: &str,
    key: &str,
    confirm: bool,
    point: &str,
) -> String {
    let (req, _) = book_req(citizen, clinic, &format!("{key}-book"));
    let old = id_of(&server.api.send(req).await.expect(201));
    if confirm {
        let token = server.api.citizen_token(citizen);
        server.api.confirm(&token, &old).await.expect(200);
    }
    crash_at(server, point, vec![reschedule_req(citizen, &old, to, key)]).await;
    old
}

/// `reschedule.after_hold`: the new appointment exists, the old one is still live, the
/// claim not moved. After the restart the reconciliation rolls the move back: the old one
/// is the citizen's only live appointment. The client's retry with the same key then
/// converges on one of the two allowed outcomes: the old one (the retry refused), or a new
/// one with the old one released and pointing at it.
async fn reschedule_after_hold(name: &str, confirm: bool) {
    let t0 = Instant::now();
    let point = "reschedule.after_hold";
    let dirs = Dirs::new(name);
    let cast = Cast::new(name, 3);
    let (citizen, from, to, third) = (
        &cast.citizen,
        &cast.clinics[0],
        &cast.clinics[1],
        &cast.clinics[2],
    );
    let live_status = if confirm { "CONFIRMED" } else { "PENDING" };
    let mut server = start(&dirs, name, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[citizen]).await;
    let key = format!("{name}-key");
    let old = crash_a_reschedule(&mut server, citizen, from, to, &key, confirm, point).await;
    drop(server);

    let server = start(&dirs, &format!("{name} restarted"), None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    assert_counters(api, &cast.clinics).await;
    let all = at_clinics(api, &cast.clinics, citizen).await;
    let made: Vec<&Value> = all.iter().filter(|a| a["clinic_id"] == **to).collect();
    assert_eq!(
        made.len(),
        1,
        "the reschedule's hold survived the crash: {all:?}"
    );
    let new = id_of(made[0]);
    assert_eq!(made[0]["rescheduled_from"], json!(old), "{all:?}");
    let live: Vec<&Value> = all.iter().filter(|a| is_live(a)).collect();
    assert_eq!(
        live.iter().map(|a| id_of(a)).collect::<Vec<_>>(),
        vec![old.clone()],
        "rolled back to the old appointment: {all:?}"
    );
    assert_eq!(status_of(find(&all, &old)), live_status, "{all:?}");
    assert_eq!(find(&all, &old)["rescheduled_to"], Value::Null, "{all:?}");
    assert_eq!(
        status_of(made[0]),
        "REJECTED",
        "the new hold is undone: {all:?}"
    );
    assert_eq!(
        ids(&api.citizen_appointments(citizen).await),
        vec![old.clone()]
    );
    assert_already_booked(api, citizen, third).await;

    // The client retries the reschedule with the same key and body.
    let retried = api.send(reschedule_req(citizen, &old, to, &key)).await;
    eprintln!(
        "{name}: the retry answered {} {}",
        retried.status, retried.text
    );
    assert_invariants(api, "after the retry").await;
    assert_counters(api, &cast.clinics).await;
    let all = at_clinics(api, &cast.clinics, citizen).await;
    let live: Vec<String> = all.iter().filter(|a| is_live(a)).map(id_of).collect();
    assert_eq!(
        live.len(),
        1,
        "one live appointment after the retry: {all:?}"
    );
    if retried.status == 201 {
        // Converged on the new one, the old one released and pointing at it.
        let body = retried.json();
        let moved_to = id_of(&body);
        assert_eq!(live, vec![moved_to.clone()], "{all:?}");
        assert_eq!(body["rescheduled_from"], json!(old), "{body}");
        assert_eq!(status_of(&body), live_status, "{body}");
        assert_eq!(body["clinic_id"], json!(to), "{body}");
        let was = find(&all, &old);
        let ended = if confirm { "CANCELLED" } else { "RELEASED" };
        assert_eq!(status_of(was), ended, "{all:?}");
        assert_eq!(was["rescheduled_to"], json!(moved_to), "{all:?}");
        // The hold rolled back at recovery is not brought back: the retry made another.
        assert_ne!(moved_to, new, "{all:?}");
        assert_eq!(status_of(find(&all, &new)), "REJECTED", "{all:?}");
        let listing = ids(&api.citizen_appointments(citizen).await);
        assert!(listing.contains(&moved_to), "{listing:?}");
    } else {
        // Converged on the old one: the retry changed nothing.
        assert_eq!(live, vec![old.clone()], "{all:?}");
        assert_error(&retried, retried.status);
    }
    assert_already_booked(api, citizen, third).await;
    eprintln!("{name}: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_after_hold_rolls_back_to_the_old_appointment() {
    reschedule_after_hold("rah", false).await;
}

/// A reschedule cut at `reschedule.after_move` and the server restarted on its data.
struct Moved {
    server: Server,
    cast: Cast,
    old: String,
    new: String,
    key: String,
    _dirs: Dirs,
}

/// `reschedule.after_move`: the old appointment is released (pointing at the new one), the
/// claim not yet moved. After the restart the reconciliation completes the move: the new one
/// is live and the citizen's, the old one RELEASED (CANCELLED when it was CONFIRMED) with
/// `rescheduled_to` the new one.
async fn reschedule_after_move(name: &str, confirm: bool) -> Moved {
    let point = "reschedule.after_move";
    let dirs = Dirs::new(name);
    let cast = Cast::new(name, 3);
    let (citizen, from, to, third) = (
        &cast.citizen,
        &cast.clinics[0],
        &cast.clinics[1],
        &cast.clinics[2],
    );
    let mut server = start(&dirs, name, Some(point)).await;
    set_up(&server.api, &cast.clinics, &[citizen]).await;
    let key = format!("{name}-key");
    let old = crash_a_reschedule(&mut server, citizen, from, to, &key, confirm, point).await;
    drop(server);

    let server = start(&dirs, &format!("{name} restarted"), None).await;
    let api = &server.api;
    assert_invariants(api, "after the restart").await;
    assert_counters(api, &cast.clinics).await;
    let all = at_clinics(api, &cast.clinics, citizen).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let live: Vec<&Value> = all.iter().filter(|a| is_live(a)).collect();
    assert_eq!(live.len(), 1, "one live appointment: {all:?}");
    let new = id_of(live[0]);
    assert_eq!(
        live[0]["clinic_id"],
        json!(to),
        "the new one is live: {all:?}"
    );
    assert_eq!(live[0]["rescheduled_from"], json!(old), "{all:?}");
    let live_status = if confirm { "CONFIRMED" } else { "PENDING" };
    assert_eq!(status_of(live[0]), live_status, "{all:?}");
    let was = find(&all, &old);
    let ended = if confirm { "CANCELLED" } else { "RELEASED" };
    assert_eq!(status_of(was), ended, "{all:?}");
    assert_eq!(was["rescheduled_to"], json!(new), "{all:?}");
    let listing = ids(&api.citizen_appointments(citizen).await);
    assert!(
        listing.contains(&new),
        "the citizen's listing {listing:?} lacks {new}"
    );
    assert_already_booked(api, citizen, third).await;
    assert_invariants(api, "after the refused booking").await;
    assert_counters(api, &cast.clinics).await;
    Moved {
        server,
        cast,
        old,
        new,
        key,
        _dirs: dirs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_after_move_completes_the_move() {
    let t0 = Instant::now();
    reschedule_after_move("ram", false).await;
    eprintln!("reschedule.after_move: {:?}", t0.elapsed());
}

/// The client's retry of the reschedule cut after its move, with the same key and body,
/// answers the new appointment (201), not a third one and not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_after_move_retry_answers_the_new_appointment() {
    let t0 = Instant::now();
    let moved = reschedule_after_move("ramr", false).await;
    let api = &moved.server.api;
    let (citizen, to) = (&moved.cast.citizen, &moved.cast.clinics[1]);
    let retried = api
        .send(reschedule_req(citizen, &moved.old, to, &moved.key))
        .await;
    let body = retried.expect(201);
    assert_eq!(id_of(&body), moved.new, "{body}");
    assert_eq!(body["rescheduled_from"], json!(moved.old), "{body}");
    let all = at_clinics(api, &moved.cast.clinics, citizen).await;
    assert_eq!(all.len(), 2, "no third appointment: {all:?}");
    assert_invariants(api, "after the retry").await;
    assert_counters(api, &moved.cast.clinics).await;
    eprintln!("reschedule.after_move and retry: {:?}", t0.elapsed());
}

/// As [`reschedule_after_hold_rolls_back_to_the_old_appointment`], moving a CONFIRMED
/// appointment (the new one is made CONFIRMED at once, so it has no hold deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_of_a_confirmed_appointment_after_hold_rolls_back() {
    reschedule_after_hold("rahc", true).await;
}

/// As [`reschedule_after_move_completes_the_move`], moving a CONFIRMED appointment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_of_a_confirmed_appointment_after_move_completes_the_move() {
    let t0 = Instant::now();
    reschedule_after_move("ramc", true).await;
    eprintln!("reschedule.after_move (confirmed): {:?}", t0.elapsed());
}
