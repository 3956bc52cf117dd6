//! The harness's HTTP/1.1 transport (`holdfast_loadtest::http`) against small scripted
//! servers on loopback: keep-alive reuse, a timed-out request's connection closed and never
//! reused, reconnecting after the server closes, `Connection: close` honoured,
//! `Retry-After` read, a refused connection a transport failure, an answer over the bound
//! refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_loadtest::client::Api;
use holdfast_loadtest::http::{Failure, Http, Req};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every wait of these tests (none is expected to come near it).
const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The per-request timeout where a request is expected to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the scripted server treats each request on a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers 200 and keeps the connection open.
    KeepAlive,
    /// Answers 200 and closes the socket without saying so (as an idle timeout would).
    CloseSilently,
    /// Answers 503 with `Retry-After: 7` and `Connection: close`, then closes.
    Refuse,
    /// Reads the request and never answers.
    Hang,
}

struct Server {
    base: String,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Connections the client closed (the server read end of file).
    closed_by_client: Arc<AtomicUsize>,
}

async fn scripted(mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed_by_client = Arc::new(AtomicUsize::new(0));
    let (a, c) = (Arc::clone(&accepted), Arc::clone(&closed_by_client));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, mode, Arc::clone(&c)));
        }
    });
    Server {
        base,
        accepted,
        closed_by_client,
    }
}

async fn serve(mut stream: TcpStream, mode: Mode, closed_by_client: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (these requests have no body).
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    closed_by_client.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        buf.drain(..end);
        let answer: &[u8] = match mode {
            Mode::KeepAlive | Mode::CloseSilently => {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
            }
            Mode::Refuse => {
                b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
            }
            Mode::Hang => b"",
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if matches!(mode, Mode::CloseSilently | Mode::Refuse) {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_request_without_an_answer_times_out_and_its_connection_is_closed() {
    let server = scripted(Mode::Hang).await;
    let http = Http::new(&server.base, 4);
    let result = http
        .request(&Req::get("/x"), Duration::from_millis(200))
        .await;
    assert!(matches!(result, Err(Failure::Timeout(_))), "{result:?}");
    assert_eq!(http.idle(), 0, "a timed-out connection is never pooled");
    eventually("the server sees the connection closed", || {
        server.closed_by_client.load(Ordering::SeqCst) == 1
    })
    .await;
    // The next request opens a new connection (and times out again).
    let again = http
        .request(&Req::get("/x"), Duration::from_millis(200))
        .await;
    assert!(matches!(again, Err(Failure::Timeout(_))), "{again:?}");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_longer_than_the_bound_fails_the_request() {
    let server = scripted(Mode::KeepAlive).await;
    // The scripted answer's body is 11 bytes: within 11 it is read, within 10 it fails.
    let fits = Http::new(&server.base, 1).answers_at_most(11);
    let answer = fits.request(&Req::get("/x"), REQUEST_TIMEOUT).await;
    assert!(matches!(&answer, Ok(a) if a.body.len() == 11), "{answer:?}");
    let short = Http::new(&server.base, 1).answers_at_most(10);
    let refused = short.request(&Req::get("/x"), REQUEST_TIMEOUT).await;
    assert!(matches!(refused, Err(Failure::Transport(_))), "{refused:?}");
}

#[tokio::test]
async fn answered_requests_reuse_one_keep_alive_connection() {
    let server = scripted(Mode::KeepAlive).await;
    let http = Http::new(&server.base, 4);
    for _ in 0..5 {
        let answer = http
            .request(&Req::get("/x"), REQUEST_TIMEOUT)
            .await
            .expect("an answer");
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"{\"ok\":true}");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(http.idle(), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced() {
    let server = scripted(Mode::CloseSilently).await;
    let http = Http::new(&server.base, 4);
    for n in 1..=3 {
        let answer = http
            .request(&Req::get("/x"), REQUEST_TIMEOUT)
            .await
            .expect("an answer on a fresh connection");
        assert_eq!(answer.status, 200);
        // Let the server's close reach the client before the next request.
        eventually("the pooled connection notices the close", || {
            http.idle() == 0
        })
        .await;
        assert_eq!(server.accepted.load(Ordering::SeqCst), n);
    }
}

#[tokio::test]
async fn a_refusal_with_connection_close_is_read_and_not_pooled() {
    let server = scripted(Mode::Refuse).await;
    let api = Api::new(&server.base, 4, REQUEST_TIMEOUT, 0).expect("a client");
    let reply = api.get("/v1/anything").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.retry_after_s, Some(7));
    assert!(reply.is_refusal());
    assert_eq!(api.http.idle(), 0);
    let again = api.get("/v1/anything").await;
    assert_eq!(again.status, 503);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_failure() {
    // A port that was listening a moment ago and is not any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    drop(listener);
    let api = Api::new(&base, 4, REQUEST_TIMEOUT, 3).expect("a client");
    let reply = api.get("/healthz").await;
    assert_eq!(reply.status, 0);
    assert_eq!(reply.code, "TRANSPORT");
    assert!(!reply.is_timeout());
    assert_eq!(reply.attempts, 1, "only timeouts are retried");
}

#[tokio::test]
async fn a_timed_out_request_is_retried_the_configured_number_of_times() {
    let server = scripted(Mode::Hang).await;
    let api = Api::new(&server.base, 4, Duration::from_millis(100), 2).expect("a client");
    let reply = api
        .send_retrying(&Req::post("/v1/appointments").key("k-1"))
        .await;
    assert!(reply.is_timeout(), "{reply:?}");
    assert_eq!(reply.attempts, 3);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn only_plain_http_bases_are_accepted() {
    assert!(Api::new("https://example.org", 1, REQUEST_TIMEOUT, 0).is_err());
    assert!(Api::new("http://127.0.0.1:1/", 1, REQUEST_TIMEOUT, 0).is_ok());
}
