//! Webhooks (docs/API.md, "Operators"): a receiver on loopback that fails its first attempts
//! and is down across a SIGKILL of the real binary still ends with every event exactly once
//! by id, in order, correctly signed, and the same as the SSE stream; a dead receiver does not
//! stop bookings and its breaker opens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use holdfast_engine::external::BreakerState;
use holdfast_engine::NodeConfig;
use holdfast_gateway::auth::Role;
use holdfast_server::webhooks::{signature, WebhooksConfig, EVENT_ID_HEADER, SIGNATURE_HEADER};
use holdfast_server::{start, Storage};
use tokio::task::JoinHandle;

use crate::common::*;
use crate::spawned;

const WEBHOOK_SECRET: &[u8] = b"webhook-test-secret-0123456789";
/// Longest wait for the receiver to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the test receiver saw: every request's event id (refused ones too), and the events it
/// accepted, de-duplicated by `X-Holdfast-Event-Id`, in arrival order.
#[derive(Default)]
struct Seen {
    fail_first: usize,
    down: bool,
    requests: Vec<u64>,
    accepted: Vec<(u64, String)>,
    bad_signatures: Vec<u64>,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(id) = headers
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return StatusCode::BAD_REQUEST;
    };
    let mut seen = seen.lock().unwrap();
    if seen.down {
        // A connection the holdfast client kept alive from before the stop.
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    seen.requests.push(id);
    if seen.requests.len() <= seen.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    // The test recomputes the HMAC over the exact body bytes.
    let signed = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let json = headers.get("content-type").and_then(|v| v.to_str().ok());
    if signed != Some(signature(WEBHOOK_SECRET, &body).as_str()) || json != Some("application/json")
    {
        seen.bad_signatures.push(id);
        return StatusCode::UNAUTHORIZED;
    }
    if !seen.accepted.iter().any(|(seq, _)| *seq == id) {
        let text = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
        seen.accepted.push((id, text));
    }
    StatusCode::OK
}

/// A webhook receiver on 127.0.0.1 that can be stopped (its listener closed) and started
/// again on the same port.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            seen: Arc::new(Mutex::new(Seen {
                fail_first,
                ..Seen::default()
            })),
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.seen.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Closes the listener (new connections are refused) and refuses requests on the
    /// connections still open.
    async fn stop(&mut self) {
        self.seen.lock().unwrap().down = true;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port (bounded retries while the kernel releases it).
    async fn restart(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 250 => {
                    tries += 1;
                    eprintln!("receiver rebind {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.seen.lock().unwrap().down = false;
        self.serve(listener);
    }

    fn accepted(&self) -> Vec<(u64, String)> {
        self.seen.lock().unwrap().accepted.clone()
    }

    fn accepted_count(&self) -> usize {
        self.seen.lock().unwrap().accepted.len()
    }

    /// Waits (bounded) until an accepted event's body contains `marker`.
    async fn wait_for(&self, marker: &str) {
        let started = Instant::now();
        while !self
            .accepted()
            .iter()
            .any(|(_, body)| body.contains(marker))
        {
            assert!(
                started.elapsed() < CATCH_UP_TIMEOUT,
                "no event with {marker:?} reached the receiver within {CATCH_UP_TIMEOUT:?}; it \
                 has {} events",
                self.accepted_count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads `GET /v1/events?after=0` until an event whose `data` contains `marker` (bounded);
/// answers `(id, data)` of every event up to it.
async fn sse_until(base: &str, token: &str, marker: &str) -> Vec<(u64, String)> {
    let client = reqwest::Client::new();
    let read = async {
        let mut response = client
            .get(format!("{base}/v1/events?after=0"))
            .bearer_auth(token)
            .send()
            .await
            .expect("the SSE stream opens");
        assert_eq!(response.status(), 200);
        let (mut buffer, mut events) = (String::new(), Vec::new());
        while let Some(chunk) = response.chunk().await.expect("the stream reads") {
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in message.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    let last = data.contains(marker);
                    events.push((id, data));
                    if last {
                        return events;
                    }
                }
            }
        }
        panic!(
            "the SSE stream ended before {marker:?}: {} events",
            events.len()
        );
    };
    tokio::time::timeout(CATCH_UP_TIMEOUT, read)
        .await
        .expect("the SSE stream reaches the marker")
}

/// Some status changes: bookings, a confirm and a cancel in clinic `clinic` (slot `s`).
async fn changes(api: &Api, clinic: &str, citizens: std::ops::Range<usize>) {
    for i in citizens {
        let citizen = format!("wh-{clinic}-{i}");
        api.put_adult(&citizen).await;
        let id = api.book_ok(&citizen, clinic, "s").await;
        let token = api.citizen_token(&citizen);
        match i % 3 {
            0 => api.confirm(&token, &id).await.expect(200),
            1 => api.cancel(&token, &id).await.expect(200),
            _ => serde_json::Value::Null,
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_failing_receiver_once_in_order_across_a_kill() {
    let dir = temp_dir("webhooks-restart");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let webhook_secret = dir.join("webhook-secret");
    let mut file_bytes = WEBHOOK_SECRET.to_vec();
    file_bytes.push(b'\n');
    std::fs::write(&webhook_secret, &file_bytes).unwrap();
    let data = dir.join("data");
    let addr_file = dir.join("addr");
    let mut receiver = Receiver::start(3).await;
    let url = receiver.url();
    let flags = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret-file",
        webhook_secret.to_str().unwrap(),
    ];
    let start = |tag: &'static str| {
        let (data, secret, addr_file) = (data.clone(), secret.clone(), addr_file.clone());
        async move { spawned::start_with_flags(&data, &secret, &addr_file, tag, None, &flags).await }
    };

    // 1. The receiver refuses its first 3 requests; every event still arrives.
    let mut server = start("webhooks-1").await;
    server.api.standard_vaccine(VACCINE).await;
    server.api.clinic_with_slot("k1", "s", 100, 100).await;
    changes(&server.api, "k1", 0..6).await;
    server.api.receive_stock("k1", VACCINE, "M-1", 1).await;
    receiver.wait_for("M-1").await;
    let first = receiver.accepted_count();

    // 2. The receiver goes down; changes pile up; the server is killed and started again;
    // more changes while the receiver is still down.
    receiver.stop().await;
    changes(&server.api, "k1", 6..12).await;
    server.kill();
    drop(server);
    let server = start("webhooks-2").await;
    changes(&server.api, "k1", 12..16).await;
    server.api.receive_stock("k1", VACCINE, "M-2", 1).await;

    // 3. The receiver comes back and gets the rest from the server's event store.
    receiver.restart().await;
    receiver.wait_for("M-2").await;
    let operator = token(Role::Operator, "operator-1", None, None);
    let stream = sse_until(&server.api.base, &operator, "M-2").await;

    let seen = receiver.seen.lock().unwrap();
    eprintln!(
        "webhooks: {} events ({first} before the receiver went down), {} requests",
        seen.accepted.len(),
        seen.requests.len()
    );
    assert!(
        seen.bad_signatures.is_empty(),
        "bad signatures on {:?}",
        seen.bad_signatures
    );
    assert_eq!(
        &seen.requests[..4],
        &[1, 1, 1, 1],
        "event 1 retried after the 500s"
    );
    let ids: Vec<u64> = seen.accepted.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "every event once, in order, none missing");
    assert!(
        ids.len() > first,
        "events made while the receiver was down arrived"
    );
    // The cursor reached the disk when the webhook caught up and again when its receiver
    // failed, both long before the kill: the restarted server resumed after it instead of
    // sending acknowledged events again.
    assert!(
        seen.requests.windows(2).all(|w| w[0] <= w[1]),
        "sent again after the restart: {:?}",
        seen.requests
    );
    assert_eq!(
        seen.accepted, stream,
        "the receiver got exactly what the SSE stream carries, byte for byte"
    );
    drop(seen);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_receiver_does_not_stop_bookings_and_its_breaker_opens() {
    // A port nobody listens on: bound by the kernel, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = test_config(
        NodeConfig::embedded(SHARDS),
        HOLD_TTL_MS,
        MAX_HOLD_MS,
        Storage::Memory,
    );
    let mut server = start(config).await.expect("the server starts");
    let webhooks = WebhooksConfig::new(&[format!("http://{dead}/hook")], WEBHOOK_SECRET).unwrap();
    server
        .start_webhooks(&webhooks)
        .expect("the webhooks start");
    let api = Api::new(format!("http://{}", server.addr));
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("k1", "s", 100, 100).await;
    // Each booking is answered while the webhook's every delivery fails.
    changes(&api, "k1", 0..30).await;
    let started = Instant::now();
    let status = loop {
        let status = server.webhooks().expect("webhooks").status()[0].clone();
        if status.breaker == BreakerState::Open {
            break status;
        }
        assert!(
            started.elapsed() < CATCH_UP_TIMEOUT,
            "the breaker did not open: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.cursor, 0, "nothing was acknowledged");
    assert!(status.lag_events >= 30, "{status:?}");
    assert!(status.failed_attempts_total >= 5, "{status:?}");
    // The lag is scraped as `holdfast_webhook_lag_events{webhook}` (the stable id, not the URL).
    let scraped = server
        .state
        .metrics
        .render(&server.state.node, &server.state.admission)
        .await;
    let line = scraped
        .lines()
        .find(|l| l.starts_with("holdfast_webhook_lag_events{"))
        .unwrap_or_else(|| panic!("no webhook lag series in:\n{scraped}"));
    assert!(
        !line.contains("127.0.0.1"),
        "the URL leaked into a label: {line}"
    );
    let lag: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(lag >= 30.0, "{line}");
    // Still open: bookings keep going.
    changes(&api, "k1", 30..40).await;
    server.shutdown().await;
}

#[test]
fn webhook_flags_without_a_secret_or_with_a_bad_url_stop_the_start() {
    let dir = temp_dir("webhooks-flags");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let webhook_secret = dir.join("webhook-secret");
    std::fs::write(&webhook_secret, WEBHOOK_SECRET).unwrap();
    let webhook_secret = webhook_secret.to_str().unwrap();
    for (flags, expected) in [
        (
            &["--webhook-url", "http://127.0.0.1:9/hook"][..],
            "--webhook-url needs --webhook-secret-file",
        ),
        (
            &[
                "--webhook-url",
                "localhost:9",
                "--webhook-secret-file",
                webhook_secret,
            ],
            "--webhook-url \"localhost:9\"",
        ),
        (
            &[
                "--webhook-url",
                "https://x/hook",
                "--webhook-secret-file",
                webhook_secret,
            ],
            "plain HTTP only",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--jwt-secret-file")
            .arg(&secret)
            .args(flags)
            .env("RUST_LOG", "warn")
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} started");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
