//! The external eligibility check (docs/API.md, "External eligibility check") against a real
//! HTTP checker started by each test on `127.0.0.1:0`, whose answers the test controls and
//! whose calls it counts: eligible, not eligible, failures retried within the budget, no
//! answer in time, a refused connection, the circuit breaker opening, its half-open trial,
//! the provisional outage policy, and other bookings going on while the checker hangs.
//!
//! No test asserts a tight timing: "at once" is shown by the checker's call count not growing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use holdfast_engine::external::OutagePolicy;
use holdfast_engine::NodeConfig;
use holdfast_server::{ExternalConfig, ServerConfig, Storage};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::*;

/// Any answer of the server comes well within this, whatever the checker does (the budgets
/// below are at most 5 s; this is not a timing assertion, only "it answered").
const ANSWERED_WITHIN: Duration = Duration::from_secs(10);

// ---- the checker ---------------------------------------------------------------------

/// What the test checker does with a call.
#[derive(Clone, Debug)]
enum Behaviour {
    /// `200 {"eligible": true}`.
    Eligible,
    /// `200 {"eligible": false, "reason": ...}`.
    NotEligible(&'static str),
    /// This status, with a JSON body.
    Status(u16),
    /// `200` with a body that is not the expected JSON.
    Malformed,
    /// The first calls (as many as the counter says) behave like the inner behaviour, the
    /// rest are eligible.
    FailTimes(Arc<AtomicU64>, Box<Behaviour>),
    /// Eligible, after this long.
    Slow(Duration),
    /// Never answers (until the checker stops).
    Hang,
    /// Hangs for this citizen; eligible for every other.
    HangFor(&'static str),
}

impl Behaviour {
    fn fail_times(n: u64, how: Behaviour) -> Behaviour {
        Behaviour::FailTimes(Arc::new(AtomicU64::new(n)), Box::new(how))
    }
}

struct CheckerState {
    behaviour: Mutex<Behaviour>,
    calls: AtomicU64,
    bodies: Mutex<Vec<Value>>,
    stop: watch::Receiver<bool>,
}

/// A real HTTP eligibility checker on loopback.
struct Checker {
    url: String,
    state: Arc<CheckerState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Checker {
    async fn start(behaviour: Behaviour) -> Checker {
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(CheckerState {
            behaviour: Mutex::new(behaviour),
            calls: AtomicU64::new(0),
            bodies: Mutex::new(Vec::new()),
            stop: stop_rx.clone(),
        });
        let app = Router::new()
            .route("/check", post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the checker binds");
        let addr = listener.local_addr().expect("the checker's address");
        let task = tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        Checker {
            url: format!("http://{addr}/check"),
            state,
            stop,
            task,
        }
    }

    fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// Whether a call for `citizen_id` has arrived.
    fn was_asked_for(&self, citizen_id: &str) -> bool {
        self.bodies().iter().any(|b| b["citizen_id"] == citizen_id)
    }

    /// Stops it: hanging calls end, the listener closes.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn answer(State(state): State<Arc<CheckerState>>, Json(body): Json<Value>) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let citizen = body["citizen_id"].as_str().unwrap_or_default().to_string();
    state.bodies.lock().unwrap().push(body);
    let behaviour = state.behaviour.lock().unwrap().clone();
    act(&state, behaviour, &citizen).await
}

async fn act(state: &CheckerState, behaviour: Behaviour, citizen: &str) -> Response {
    let mut behaviour = behaviour;
    if let Behaviour::FailTimes(left, how) = &behaviour {
        let took = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        behaviour = if took {
            (**how).clone()
        } else {
            Behaviour::Eligible
        };
    }
    if let Behaviour::HangFor(who) = &behaviour {
        behaviour = if *who == citizen {
            Behaviour::Hang
        } else {
            Behaviour::Eligible
        };
    }
    let mut stop = state.stop.clone();
    match behaviour {
        Behaviour::Eligible => Json(json!({"eligible": true, "reason": ""})).into_response(),
        Behaviour::NotEligible(reason) => {
            Json(json!({"eligible": false, "reason": reason})).into_response()
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a status code");
            (status, Json(json!({"error": "test checker"}))).into_response()
        }
        Behaviour::Malformed => (StatusCode::OK, "{\"eligible\": \"perhaps\"").into_response(),
        Behaviour::Slow(delay) => {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
            Json(json!({"eligible": true})).into_response()
        }
        Behaviour::Hang => {
            let _ = stop.wait_for(|stopped| *stopped).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Behaviour::FailTimes(..) | Behaviour::HangFor(_) => {
            unreachable!("resolved above")
        }
    }
}

// ---- the server ----------------------------------------------------------------------

fn external(
    url: &str,
    timeout_ms: u64,
    failures: u32,
    cooldown_ms: u64,
    policy: OutagePolicy,
) -> ExternalConfig {
    ExternalConfig {
        url: url.to_string(),
        timeout: Duration::from_millis(timeout_ms),
        breaker_failures: failures,
        breaker_cooldown: Duration::from_millis(cooldown_ms),
        outage_policy: policy,
    }
}

async fn server(external: ExternalConfig) -> Harness {
    Harness::start_config(ServerConfig {
        external: Some(external),
        ..test_config(
            NodeConfig::embedded(4),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            Storage::Memory,
        )
    })
    .await
}

/// The vaccine, one slot `s-1` of `capacity` seats (and as many doses) at each clinic, and
/// adult citizens `p-1` to `p-<citizens>`.
async fn campaign(h: &Harness, clinics: &[&str], capacity: u32, citizens: u32) {
    h.standard_vaccine(VACCINE).await;
    for clinic in clinics {
        h.clinic_with_slot(clinic, "s-1", capacity, i64::from(capacity))
            .await;
    }
    for i in 1..=citizens {
        h.put_adult(&format!("p-{i}")).await;
    }
}

/// The dependency entry of `GET /v1/admin/shards`.
async fn dependency(h: &Harness) -> Value {
    let status = h
        .send(Req::get("/v1/admin/shards").token(&h.operator))
        .await
        .expect(200);
    let deps = status["dependencies"]
        .as_array()
        .unwrap_or_else(|| panic!("no dependencies array in {status}"));
    assert_eq!(deps.len(), 1, "{status}");
    assert_eq!(deps[0]["name"], "eligibility");
    deps[0].clone()
}

/// Books at the clinic's slot `s-1` and times the answer.
async fn book_timed(api: &Api, citizen: &str, clinic: &str) -> (Resp, Duration) {
    let started = Instant::now();
    let r = api.book(citizen, clinic, "s-1").await;
    (r, started.elapsed())
}

/// Asserts a 503 UNAVAILABLE for the eligibility dependency; returns its Retry-After.
fn assert_unavailable(r: &Resp) -> u64 {
    let details = assert_error_code(r, 503, "UNAVAILABLE");
    assert_eq!(details["dependency"], "eligibility", "{}", r.text);
    let retry_after: u64 = r
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
        .to_str()
        .expect("an ASCII Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    retry_after
}

/// Asserts the slot has every seat back and every dose available.
async fn assert_all_returned(h: &Harness, clinic: &str, capacity: u64) {
    let avail = h.availability(clinic).await;
    assert_eq!(seats(&avail, "s-1"), (capacity, 0, 0), "{avail}");
    let (on_hand, reserved, available) = stock(&avail, VACCINE);
    assert_eq!((reserved, available), (0, on_hand), "{avail}");
}

// ---- the tests -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_checker_there_are_no_dependencies() {
    let h = Harness::start().await;
    let status = h
        .send(Req::get("/v1/admin/shards").token(&h.operator))
        .await
        .expect(200);
    assert_eq!(status["dependencies"], json!([]), "{status}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eligible_answer_books_and_the_checker_is_asked_once() {
    let checker = Checker::start(Behaviour::Eligible).await;
    let h = server(external(
        &checker.url,
        2_000,
        5,
        30_000,
        OutagePolicy::Reject,
    ))
    .await;
    campaign(&h, &["c-1"], 2, 1).await;

    let booked = h.book("p-1", "c-1", "s-1").await.expect(201);
    check_appointment_shape(&booked);
    assert_eq!(booked["needs_review"], false);
    assert_eq!(checker.calls(), 1);
    assert_eq!(
        checker.bodies(),
        vec![
            json!({"citizen_id": "p-1", "insurance_id": "I-9", "vaccine": VACCINE, "clinic_id": "c-1"})
        ]
    );
    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "closed", "{dep}");
    assert_eq!(dep["consecutive_failures"], 0, "{dep}");
    assert_eq!(dep["opened_at"], Value::Null, "{dep}");
    assert_eq!(
        (
            &dep["calls_total"],
            &dep["failures_total"],
            &dep["short_circuited_total"]
        ),
        (&json!(1), &json!(0), &json!(0)),
        "{dep}"
    );

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_eligible_answer_is_422_with_the_reason_and_the_seat_returns() {
    let checker = Checker::start(Behaviour::NotEligible("insurance_lapsed")).await;
    let h = server(external(
        &checker.url,
        2_000,
        1,
        30_000,
        OutagePolicy::Reject,
    ))
    .await;
    campaign(&h, &["c-1"], 1, 2).await;

    let r = h.book("p-1", "c-1", "s-1").await;
    let details = assert_error_code(&r, 422, "NOT_ELIGIBLE");
    assert_eq!(reasons(&details), vec!["external:insurance_lapsed"]);
    assert_eq!(checker.calls(), 1, "a refusal is an answer: not retried");
    assert_all_returned(&h, "c-1", 1).await;
    // Not a failure: the breaker (which opens at 1 failure) stays closed.
    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "closed", "{dep}");
    assert_eq!(dep["failures_total"], 0, "{dep}");

    // The one seat is back: another citizen gets it.
    checker.set(Behaviour::Eligible);
    h.book("p-2", "c-1", "s-1").await.expect(201);

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_within_the_budget_are_retried_until_an_answer() {
    let checker = Checker::start(Behaviour::fail_times(2, Behaviour::Status(500))).await;
    let h = server(external(
        &checker.url,
        5_000,
        10,
        30_000,
        OutagePolicy::Reject,
    ))
    .await;
    campaign(&h, &["c-1"], 5, 3).await;

    h.book("p-1", "c-1", "s-1").await.expect(201);
    assert_eq!(checker.calls(), 3, "two 500s, then the answer");

    // A malformed 200 and any other status are failures too.
    checker.set(Behaviour::fail_times(1, Behaviour::Malformed));
    h.book("p-2", "c-1", "s-1").await.expect(201);
    assert_eq!(checker.calls(), 5);
    checker.set(Behaviour::fail_times(1, Behaviour::Status(404)));
    h.book("p-3", "c-1", "s-1").await.expect(201);
    assert_eq!(checker.calls(), 7);

    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "closed", "{dep}");
    assert_eq!(
        dep["consecutive_failures"], 0,
        "a success resets the count: {dep}"
    );
    assert_eq!(dep["calls_total"], 7, "{dep}");
    assert_eq!(dep["failures_total"], 4, "{dep}");

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_budget_is_503_and_the_seat_returns() {
    let checker = Checker::start(Behaviour::Slow(Duration::from_secs(30))).await;
    // The breaker stays out of this test.
    let h = server(external(
        &checker.url,
        600,
        1_000,
        30_000,
        OutagePolicy::Reject,
    ))
    .await;
    campaign(&h, &["c-1"], 1, 1).await;

    for (behaviour, at_least_calls) in [
        (Behaviour::Slow(Duration::from_secs(30)), 1),
        (Behaviour::Hang, 1),
        (Behaviour::Status(500), 2),
        (Behaviour::Status(503), 2),
        (Behaviour::Malformed, 2),
    ] {
        checker.set(behaviour.clone());
        let before = checker.calls();
        let (r, took) = book_timed(&h, "p-1", "c-1").await;
        assert_eq!(assert_unavailable(&r), 1, "closed breaker: Retry-After 1");
        assert!(
            took < ANSWERED_WITHIN,
            "{behaviour:?}: answered after {took:?}"
        );
        let calls = checker.calls() - before;
        assert!(
            calls >= at_least_calls,
            "{behaviour:?}: {calls} call(s), expected at least {at_least_calls}"
        );
        assert_all_returned(&h, "c-1", 1).await;
    }
    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "closed", "{dep}");
    assert!(dep["consecutive_failures"].as_u64().unwrap() >= 5, "{dep}");

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_failure() {
    // A port that was bound and let go: nothing listens there.
    let addr: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("its address")
    };
    let url = format!("http://{addr}/check");
    let h = server(external(&url, 600, 1_000, 30_000, OutagePolicy::Reject)).await;
    campaign(&h, &["c-1"], 1, 1).await;

    let (r, took) = book_timed(&h, "p-1", "c-1").await;
    assert_unavailable(&r);
    assert!(took < ANSWERED_WITHIN, "answered after {took:?}");
    assert_all_returned(&h, "c-1", 1).await;
    let dep = dependency(&h).await;
    let failures = dep["failures_total"].as_u64().unwrap();
    assert!(failures >= 1, "{dep}");
    assert_eq!(dep["calls_total"].as_u64(), Some(failures), "{dep}");

    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_n_failures_and_then_answers_without_calling() {
    let checker = Checker::start(Behaviour::Status(500)).await;
    let h = server(external(
        &checker.url,
        3_000,
        2,
        60_000,
        OutagePolicy::Reject,
    ))
    .await;
    campaign(&h, &["c-1"], 2, 3).await;

    // Two failed calls of one booking (its retry counts) open it; the third attempt is not
    // made.
    let r = h.book("p-1", "c-1", "s-1").await;
    let retry_after = assert_unavailable(&r);
    assert!(
        (30..=60).contains(&retry_after),
        "Retry-After is the rest of the 60 s cooldown: {retry_after}"
    );
    assert_eq!(checker.calls(), 2);

    // Open: bookings are answered without asking, even a checker that would say yes now.
    checker.set(Behaviour::Eligible);
    for citizen in ["p-2", "p-3", "p-2"] {
        let (r, took) = book_timed(&h, citizen, "c-1").await;
        let retry_after = assert_unavailable(&r);
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert!(took < ANSWERED_WITHIN, "answered after {took:?}");
    }
    assert_eq!(checker.calls(), 2, "no call while open");
    assert_all_returned(&h, "c-1", 2).await;

    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "open", "{dep}");
    assert_eq!(dep["consecutive_failures"], 2, "{dep}");
    parse_time(&dep["opened_at"]);
    assert_eq!(dep["calls_total"], 2, "{dep}");
    assert_eq!(dep["failures_total"], 2, "{dep}");
    // The three bookings answered at once (p-1's cut-short retry is not one).
    assert_eq!(dep["short_circuited_total"], 3, "{dep}");

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cooldown_one_trial_reopens_or_closes_the_breaker() {
    let checker = Checker::start(Behaviour::Status(500)).await;
    let h = server(external(&checker.url, 2_000, 2, 300, OutagePolicy::Reject)).await;
    campaign(&h, &["c-1"], 2, 3).await;

    assert_unavailable(&h.book("p-1", "c-1", "s-1").await);
    assert_eq!(checker.calls(), 2);
    assert_eq!(dependency(&h).await["breaker"], "open");

    // After the cooldown exactly one trial goes through; it fails, so the breaker opens again
    // and the booking's retries are not made.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_unavailable(&h.book("p-2", "c-1", "s-1").await);
    assert_eq!(checker.calls(), 3, "one trial");
    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "open", "{dep}");
    assert_eq!(dep["consecutive_failures"], 3, "{dep}");

    // The checker recovers: the next trial after the cooldown succeeds and closes it.
    checker.set(Behaviour::Eligible);
    let started = Instant::now();
    let mut booked = None;
    for _ in 0..100 {
        let r = h.book("p-3", "c-1", "s-1").await;
        if r.status == 201 {
            booked = Some(r.json());
            break;
        }
        assert_unavailable(&r);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still refused after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let booked = booked.expect("booked once the breaker closed");
    assert_eq!(booked["needs_review"], false);
    assert_eq!(checker.calls(), 4, "only the trial asked");
    let dep = dependency(&h).await;
    assert_eq!(dep["breaker"], "closed", "{dep}");
    assert_eq!(dep["consecutive_failures"], 0, "{dep}");

    // Closed: calls go through again.
    h.book("p-1", "c-1", "s-1").await.expect(201);
    assert_eq!(checker.calls(), 5);

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisional_policy_books_for_review() {
    let checker = Checker::start(Behaviour::Eligible).await;
    let h = server(external(
        &checker.url,
        500,
        2,
        60_000,
        OutagePolicy::Provisional,
    ))
    .await;
    campaign(&h, &["c-1"], 5, 4).await;

    // Answered: no review.
    let ok = h.book("p-1", "c-1", "s-1").await.expect(201);
    assert_eq!(ok["needs_review"], false);
    // No answer in time, then a failure that opens the breaker, then open: all booked for
    // review.
    checker.set(Behaviour::Hang);
    let hung = h.book("p-2", "c-1", "s-1").await.expect(201);
    checker.set(Behaviour::Status(500));
    let failed = h.book("p-3", "c-1", "s-1").await.expect(201);
    assert_eq!(dependency(&h).await["breaker"], "open");
    let calls = checker.calls();
    let open = h.book("p-4", "c-1", "s-1").await.expect(201);
    assert_eq!(checker.calls(), calls, "no call while open");
    for booked in [&hung, &failed, &open] {
        check_appointment_shape(booked);
        assert_eq!(booked["status"], "PENDING", "{booked}");
        assert_eq!(booked["needs_review"], true, "{booked}");
        let id = booked["appointment_id"].as_str().unwrap();
        assert_eq!(h.appointment_json(id).await["needs_review"], true);
    }
    let avail = h.availability("c-1").await;
    assert_eq!(seats(&avail, "s-1"), (1, 4, 0), "{avail}");

    h.shutdown().await;
    checker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bookings_proceed_while_the_checker_hangs_for_one() {
    let checker = Checker::start(Behaviour::HangFor("p-slow")).await;
    let h = server(external(
        &checker.url,
        5_000,
        100,
        30_000,
        OutagePolicy::Reject,
    ))
    .await;
    let clinics = ["c-1", "c-2", "c-3", "c-4", "c-5", "c-6"];
    campaign(&h, &clinics, 1, 5).await;
    h.put_adult("p-slow").await;

    let api = h.api.clone();
    let slow = tokio::spawn(async move { book_timed(&api, "p-slow", "c-1").await });
    // Wait (bounded) until the checker holds the hanging call.
    let started = Instant::now();
    while !checker.was_asked_for("p-slow") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the hanging call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Meanwhile other citizens book at other clinics, one after another and at once.
    for (i, clinic) in clinics[1..4].iter().enumerate() {
        h.book(&format!("p-{}", i + 1), clinic, "s-1")
            .await
            .expect(201);
    }
    let together: Vec<_> = [("p-4", "c-5"), ("p-5", "c-6")]
        .into_iter()
        .map(|(citizen, clinic)| {
            let api = h.api.clone();
            tokio::spawn(async move { api.book(citizen, clinic, "s-1").await })
        })
        .collect();
    for task in together {
        task.await.expect("a booking task").expect(201);
    }
    assert!(
        !slow.is_finished(),
        "the hanging booking is still waiting for its checker"
    );
    assert!(checker.calls() >= 6);

    // The hanging one ends with its budget.
    let (r, took) = tokio::time::timeout(ANSWERED_WITHIN, slow)
        .await
        .expect("the hanging booking is answered")
        .expect("its task");
    assert_unavailable(&r);
    assert!(took < ANSWERED_WITHIN, "answered after {took:?}");
    assert_all_returned(&h, "c-1", 1).await;

    h.shutdown().await;
    checker.stop().await;
}
