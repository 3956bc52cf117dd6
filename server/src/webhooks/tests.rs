//! The delivery engine against an in-memory event source and a receiver on loopback.

use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use holdfast_engine::SystemClock;

use super::*;

const SECRET: &[u8] = b"webhook-secret-0123456789";

/// What a test receiver saw: every request's event id (failed ones too) and the accepted
/// events, de-duplicated by id, in arrival order.
#[derive(Default)]
struct Seen {
    fail_first: usize,
    requests: Vec<u64>,
    accepted: Vec<(u64, Vec<u8>)>,
    bad_signatures: usize,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id: u64 = headers[EVENT_ID_HEADER].to_str().unwrap().parse().unwrap();
    let mut seen = seen.lock().unwrap();
    seen.requests.push(id);
    if seen.requests.len() <= seen.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let signed = headers[SIGNATURE_HEADER].to_str().unwrap();
    if signed != signature(SECRET, &body) || headers["content-type"] != "application/json" {
        seen.bad_signatures += 1;
        return StatusCode::BAD_REQUEST;
    }
    if !seen.accepted.iter().any(|(seq, _)| *seq == id) {
        seen.accepted.push((id, body.to_vec()));
    }
    StatusCode::NO_CONTENT
}

/// A receiver on 127.0.0.1:0 that answers 500 to its first `fail_first` requests.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        fail_first,
        ..Seen::default()
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn fast() -> Timing {
    Timing {
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        request_timeout: Duration::from_secs(2),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(200),
        page_events_max: 4,
    }
}

fn config(urls: &[String], timing: Timing) -> WebhooksConfig {
    WebhooksConfig {
        timing,
        ..WebhooksConfig::new(urls, SECRET).unwrap()
    }
}

/// Waits (at most 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s: {what}");
}

fn accepted_ids(seen: &Mutex<Seen>) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .accepted
        .iter()
        .map(|(seq, _)| *seq)
        .collect()
}

#[tokio::test]
async fn a_failing_receiver_gets_every_event_in_order_and_signed() {
    let (url, seen) = receiver(3).await;
    let source = Arc::new(MemorySource::default());
    for i in 1..=10 {
        source.push(format!(r#"{{"seq":{i},"type":"Test"}}"#));
    }
    let hooks = Webhooks::start(
        &config(&[url], fast()),
        source.clone(),
        Arc::new(MemoryCursors::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    // More while it delivers: the task waits for them once caught up.
    for i in 11..=13 {
        source.push(format!(r#"{{"seq":{i},"type":"Test"}}"#));
    }
    // The receiver counts an event before its answer reaches the task that moves the
    // cursor: wait for both.
    until("13 events accepted and the cursor at 13", || {
        accepted_ids(&seen).len() == 13 && hooks.status()[0].cursor == 13
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(accepted_ids_of(&seen), (1..=13).collect::<Vec<_>>());
        assert_eq!(
            &seen.requests[..4],
            &[1, 1, 1, 1],
            "event 1 retried until it succeeded"
        );
        assert!(
            seen.requests.windows(2).all(|w| w[0] <= w[1]),
            "in order: {:?}",
            seen.requests
        );
        assert_eq!(seen.bad_signatures, 0);
        assert_eq!(seen.accepted[6].1, br#"{"seq":7,"type":"Test"}"#);
    }
    let status = &hooks.status()[0];
    assert_eq!((status.cursor, status.lag_events), (13, 0));
    assert_eq!(status.failed_attempts_total, 3);
    assert_eq!(
        status.breaker,
        BreakerState::Closed,
        "3 failures opened it, then a trial closed it"
    );
    hooks.stop().await;
}

fn accepted_ids_of(seen: &Seen) -> Vec<u64> {
    seen.accepted.iter().map(|(seq, _)| *seq).collect()
}

#[tokio::test]
async fn a_restart_resumes_after_the_durable_cursor() {
    let dir = std::env::temp_dir().join(format!("holdfast-webhook-cursor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || {
        let wal = holdfast_persistence::Wal::open(
            &dir,
            holdfast_persistence::WalConfig::new(holdfast_persistence::Durability::Sync),
        )
        .unwrap();
        let cursors = Arc::new(wal.cursor_tree(CURSOR_TREE).unwrap());
        (wal, cursors)
    };
    let (url, seen) = receiver(0).await;
    let source = Arc::new(MemorySource::default());
    for i in 1..=6 {
        source.push(format!("{{\"n\":{i}}}"));
    }
    let (wal, cursors) = open();
    let hooks = Webhooks::start(
        &config(std::slice::from_ref(&url), fast()),
        source.clone(),
        cursors.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    until("6 events accepted", || accepted_ids(&seen).len() == 6).await;
    hooks.stop().await;
    drop(cursors);
    wal.close().unwrap();

    // While the server is down, the store grows.
    for i in 7..=9 {
        source.push(format!("{{\"n\":{i}}}"));
    }
    let (wal, cursors) = open();
    let id = WebhookId::of(&reqwest::Url::parse(&url).unwrap());
    assert_eq!(
        CursorStore::load(cursors.as_ref(), &id).unwrap(),
        Some(6),
        "the cursor was stored"
    );
    let hooks = Webhooks::start(
        &config(&[url], fast()),
        source.clone(),
        cursors.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    until("9 events accepted", || accepted_ids(&seen).len() == 9).await;
    assert_eq!(
        seen.lock().unwrap().requests,
        (1..=9).collect::<Vec<_>>(),
        "nothing sent twice, nothing skipped"
    );
    hooks.stop().await;
    drop(cursors);
    wal.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_receiver_opens_the_breaker_and_lags() {
    // A port nobody listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let source = Arc::new(MemorySource::default());
    for i in 1..=5 {
        source.push(format!("{{\"n\":{i}}}"));
    }
    let timing = Timing {
        breaker_cooldown: Duration::from_secs(60),
        ..fast()
    };
    let hooks = Webhooks::start(
        &config(&[format!("http://127.0.0.1:{port}/hook")], timing),
        source.clone(),
        Arc::new(MemoryCursors::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    until("the breaker opens", || {
        hooks.status()[0].breaker == BreakerState::Open
    })
    .await;
    source.push("{}");
    let status = &hooks.status()[0];
    assert_eq!((status.cursor, status.lag_events), (0, 6));
    assert_eq!(status.failed_attempts_total, 3, "no calls while open");
    assert_eq!(hooks.lags(), vec![(status.id.clone(), 6)]);
    let lags = hooks.lags_fn();
    source.push("{}");
    assert_eq!(lags(), vec![(status.id.clone(), 7)]);
    hooks.stop().await;
}

#[test]
fn the_back_off_schedule_keeps_to_its_bounds() {
    let timing = Timing::default();
    let delays: Vec<Duration> = deliver::schedule(&timing).take(20).collect();
    for (i, delay) in delays.iter().enumerate() {
        let base = (BACKOFF_FIRST * 2u32.pow(i.min(20) as u32)).min(BACKOFF_MAX);
        // backon computes in f32 seconds: allow it a rounding error.
        let (d, b) = (delay.as_secs_f64(), base.as_secs_f64());
        assert!(
            d >= b * 0.99 && d <= b * 2.0 * 1.01,
            "delay {i} is {delay:?}, base {base:?}: {delays:?}"
        );
    }
    assert!(delays[0] < BACKOFF_FIRST * 2 + Duration::from_millis(1));
    assert!(delays
        .iter()
        .all(|d| *d <= BACKOFF_MAX * 2 + Duration::from_millis(100)));
}

#[test]
fn lag_is_head_minus_cursor() {
    assert_eq!(lag_events(10, 4), 6);
    assert_eq!(lag_events(4, 4), 0);
    assert_eq!(
        lag_events(3, 4),
        0,
        "a cursor ahead of a younger store is no lag"
    );
}

#[test]
fn bad_flags_are_refused() {
    let ok = ["http://127.0.0.1:9000/hook".to_string()];
    assert!(WebhooksConfig::new(&ok, SECRET).is_ok());
    assert!(WebhooksConfig::new(&ok, b"").is_err());
    assert!(WebhooksConfig::new(&ok, b"short\n").is_err());
    for bad in [
        "",
        "nope",
        "127.0.0.1:9000",
        "ftp://x/",
        "https://x/",
        "http://",
    ] {
        let error = WebhooksConfig::new(&[bad.to_string()], SECRET).unwrap_err();
        assert!(error.contains("--webhook-url"), "{bad:?}: {error}");
    }
    let twice = [ok[0].clone(), ok[0].clone()];
    assert!(WebhooksConfig::new(&twice, SECRET)
        .unwrap_err()
        .contains("twice"));
    let many: Vec<String> = (0..=WEBHOOKS_MAX)
        .map(|i| format!("http://h{i}/"))
        .collect();
    assert!(WebhooksConfig::new(&many, SECRET).is_err());
}

/// A store whose retention dropped events 1..=3.
struct Truncated(MemorySource);

impl EventSource for Truncated {
    fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> holdfast_engine::client::BoxFuture<'static, Result<Vec<SourcedEvent>, ReadError>> {
        if after < 3 {
            let gone = holdfast_engine::feed::Gone {
                after,
                oldest_seq: 4,
            };
            return Box::pin(async move { Err(ReadError::Gone(gone)) });
        }
        self.0.read_after(after, max)
    }

    fn head(&self) -> u64 {
        self.0.head()
    }

    fn wait_for_new(&self, at: u64) -> holdfast_engine::client::BoxFuture<'static, ()> {
        self.0.wait_for_new(at)
    }
}

#[tokio::test]
async fn events_the_store_no_longer_keeps_are_skipped_loudly_not_waited_for() {
    let (url, seen) = receiver(0).await;
    let source = MemorySource::default();
    for i in 1..=5 {
        source.push(format!("{{\"n\":{i}}}"));
    }
    let hooks = Webhooks::start(
        &config(&[url], fast()),
        Arc::new(Truncated(source)),
        Arc::new(MemoryCursors::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    // The receiver accepts event 5 before the delivery moves the cursor past it: wait for both.
    until("events 4 and 5 accepted and the cursor at 5", || {
        accepted_ids(&seen).len() == 2 && hooks.status()[0].cursor == 5
    })
    .await;
    assert_eq!(accepted_ids(&seen), vec![4, 5]);
    let status = &hooks.status()[0];
    assert_eq!((status.cursor, status.skipped_gone_total), (5, 3));
    hooks.stop().await;
}
