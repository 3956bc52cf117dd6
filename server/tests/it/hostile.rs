//! Hostile input (docs/API.md, Limits and timeouts): slow clients, header floods, connection
//! floods, bodies that lie about themselves, and tokens nobody issued. Each gets its designed
//! answer and the server stays healthy afterwards.
//!
//! Most of these speak raw HTTP/1.1 over a TCP socket ([`Raw`]): an HTTP client library will
//! not trickle a header, lie in `Content-Length` or send 150 headers. The servers here run
//! with short timeouts ([`SHORT`]) so no test waits the production 10 s; every wait is bounded
//! by [`WAIT_MAX`], and a test fails, rather than hangs, when a bound is missing.
//!
//! Bad tokens and other callers' resources are mostly proven in `http_auth` and `clinic`; the
//! JWT cases here are the ones those do not send.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use holdfast_engine::NodeConfig;
use holdfast_server::connections::{ConnectionLimits, HEADER_BYTES_MAX};
use holdfast_server::{ServerConfig, Storage};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// The header, idle and body timeouts of the servers of these tests.
const SHORT: Duration = Duration::from_millis(300);

/// Longest any test waits for the server to answer or to close a connection. Far above
/// [`SHORT`], far below the production timeouts, so a missing bound fails the test.
const WAIT_MAX: Duration = Duration::from_secs(5);

/// A server with `limits` on `shards` shards, in memory.
async fn server(shards: u32, limits: ConnectionLimits) -> Harness {
    Harness::start_config(ServerConfig {
        connections: limits,
        ..test_config(
            NodeConfig::embedded(shards),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            Storage::Memory,
        )
    })
    .await
}

fn short_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: SHORT,
        body_read_timeout: SHORT,
        write_stall_timeout: SHORT,
        ..ConnectionLimits::default()
    }
}

/// One raw TCP connection to a test server.
struct Raw {
    stream: TcpStream,
    /// Bytes read and not yet returned as part of an answer.
    read: Vec<u8>,
}

impl Raw {
    async fn connect(api: &Api) -> Raw {
        let addr = api.base.trim_start_matches("http://");
        Raw {
            stream: TcpStream::connect(addr).await.expect("connects"),
            read: Vec::new(),
        }
    }

    /// Writes `bytes`; false when the server has closed the connection already.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads more into `self.read`, waiting at most `wait`; `Some(false)` on end of stream or
    /// reset, `None` when nothing came in time.
    async fn fill(&mut self, wait: Duration) -> Option<bool> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => None,
            Ok(Ok(0)) | Ok(Err(_)) => Some(false),
            Ok(Ok(n)) => {
                self.read.extend_from_slice(&chunk[..n]);
                Some(true)
            }
        }
    }

    /// The next answer on this connection, or `None` when the server closes it without one.
    /// Panics when neither happens within [`WAIT_MAX`].
    async fn answer(&mut self) -> Option<Resp> {
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            if let Some(resp) = self.take_answer() {
                return Some(resp);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.fill(left).await {
                Some(true) => {}
                Some(false) => return self.take_answer(),
                None => panic!("no answer and no close within {WAIT_MAX:?}"),
            }
        }
    }

    /// A whole answer (head and `Content-Length` body) from the front of `self.read`.
    fn take_answer(&mut self) -> Option<Resp> {
        let head_end = self.read.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.read[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let mut headers = HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value.trim()).ok()?,
            );
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        if self.read.len() < head_end + length {
            return None;
        }
        let body: Vec<u8> = self
            .read
            .drain(..head_end + length)
            .skip(head_end)
            .collect();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Some(Resp {
            status,
            content_type,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Whether the server closes the connection within [`WAIT_MAX`], dropping whatever it
    /// sends first.
    async fn closes(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.fill(left).await {
                Some(true) => self.read.clear(),
                Some(false) => return true,
                None => return false,
            }
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// The head of a POST whose body is sent separately.
fn post_head(path: &str, token: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n{extra}\r\n"
    )
    .into_bytes()
}

async fn assert_healthy(api: &Api) {
    let mut raw = Raw::connect(api).await;
    assert!(raw.send(&get("/healthz")).await);
    let r = raw.answer().await.expect("/healthz answers");
    assert_eq!(r.status, 200, "{}", r.text);
}

// ---- slow clients ------------------------------------------------------------------------

/// Headers trickled a byte at a time, never finished: the connection is closed once the
/// header read timeout passes, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_at_the_header_read_timeout() {
    let h = server(SHARDS, short_limits()).await;
    let api = h.unpooled();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(&api).await;
        assert!(
            raw.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
                .await
        );
        slow.push(raw);
    }
    // A byte every 20 ms to each, for at most WAIT_MAX: without a header timeout these stay
    // open to the end.
    let mut open: Vec<usize> = (0..slow.len()).collect();
    for _ in 0..(WAIT_MAX.as_millis() / 20) {
        if open.is_empty() {
            break;
        }
        for &i in &open {
            let _ = slow[i].send(b"a").await;
        }
        let mut still = Vec::new();
        for &i in &open {
            match slow[i]
                .fill(Duration::from_millis(20 / open.len() as u64))
                .await
            {
                Some(false) => {}
                // Nothing, or bytes (hyper sends none on a header timeout): still open.
                _ => still.push(i),
            }
        }
        open = still;
        // Meanwhile an ordinary client is served.
        api.healthz().await;
    }
    assert!(
        open.is_empty(),
        "{} slow connections still open",
        open.len()
    );
    assert_healthy(&api).await;
    h.shutdown().await;
}

/// A keep-alive connection that sends nothing after its answer is closed after the idle
/// timeout (the header read timeout, which hyper starts when the connection goes idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let h = server(SHARDS, short_limits()).await;
    let api = h.unpooled();
    let mut raw = Raw::connect(&api).await;
    for _ in 0..2 {
        assert!(raw.send(&get("/healthz")).await);
        assert_eq!(raw.answer().await.expect("an answer").status, 200);
    }
    assert!(raw.closes().await, "an idle connection stays open");
    // A connection that never sends a byte goes the same way.
    let mut silent = Raw::connect(&api).await;
    assert!(silent.closes().await, "a silent connection stays open");
    assert_healthy(&api).await;
    h.shutdown().await;
}

/// A body promised by `Content-Length` and then trickled, or never sent, is 408
/// `REQUEST_TIMEOUT` once the body read timeout passes, and the connection closes. It holds
/// no shard meanwhile: on a node of one shard, bookings go through while it waits. The 408
/// is not an idempotent answer: the key books once the body arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_is_408_and_holds_no_shard() {
    let h = server(1, short_limits()).await;
    let api = h.unpooled();
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("c-1", "s-1", 10, 10).await;
    for c in ["ann", "bob", "cem"] {
        api.put_adult(c).await;
    }
    let bob = h.citizen_token("bob");
    let mut slow = Vec::new();
    for i in 0..3 {
        let mut raw = Raw::connect(&api).await;
        let extra = format!("Idempotency-Key: slow-{i}\r\nContent-Length: 400\r\n");
        assert!(raw.send(&post_head("/v1/appointments", &bob, &extra)).await);
        assert!(raw.send(br#"{"citizen_id": "bob", "#).await);
        slow.push(raw);
    }
    // One of them keeps trickling: the deadline is for the whole body, not between bytes.
    for _ in 0..5 {
        let _ = slow[0].send(b" ").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Bookings on the one shard go through while the bodies are late.
    api.book_ok("ann", "c-1", "s-1").await;
    for raw in &mut slow {
        let r = raw.answer().await.expect("a 408 before the close");
        let details = assert_error_code(&r, 408, "REQUEST_TIMEOUT");
        assert_eq!(details["timeout_ms"], SHORT.as_millis() as u64);
        assert_eq!(r.headers["connection"], "close");
        assert!(raw.closes().await);
    }
    let r = api
        .book_with(&bob, "slow-0", &booking_body("bob", "c-1", "s-1", VACCINE))
        .await;
    r.expect(201);
    assert_eq!(h.citizen_appointments("bob").await.len(), 1);
    assert_healthy(&api).await;
    h.shutdown().await;
}

/// A client that sends requests and never reads the answers: once the server's writes make
/// no progress for the write stall timeout, the connection is closed (and its place in the
/// connection bound given back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_at_the_write_stall_timeout() {
    let h = server(
        SHARDS,
        // Only this bound is short, so nothing else can be what closes the connection.
        ConnectionLimits {
            connections_max: 1,
            write_stall_timeout: SHORT,
            ..ConnectionLimits::default()
        },
    )
    .await;
    let api = h.unpooled();
    // 2,000 pipelined requests for the OpenAPI document (over 50 KB each): answers enough to
    // fill both sockets' buffers many times; the requests themselves (80 KB) fit in them.
    let mut raw = Raw::connect(&api).await;
    let request = get("/openapi.json");
    let pipelined = request.repeat(2000);
    let sent = tokio::time::timeout(WAIT_MAX, raw.send(&pipelined)).await;
    assert!(sent.is_ok(), "the requests could not even be sent");
    // Never read; write until the server has closed its end (a write then fails), at most
    // WAIT_MAX. Without the timeout the server waits on its write for ever.
    let mut closed = false;
    for _ in 0..(WAIT_MAX.as_millis() / 50) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !raw.send(&request).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a connection that does not read stays open");
    drop(raw);
    // Its place is free again: the one connection allowed is served.
    let mut served = false;
    for _ in 0..50 {
        let mut next = Raw::connect(&api).await;
        next.send(&get("/healthz")).await;
        if next.answer().await.is_some_and(|r| r.status == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    h.shutdown().await;
}

// ---- header floods -----------------------------------------------------------------------

/// Too many headers, one huge header, a huge path or headers that never end: a bare 431 (or,
/// for a client still sending, a closed connection), within [`HEADER_BYTES_MAX`] of buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_are_431_and_closed() {
    let h = server(SHARDS, ConnectionLimits::default()).await;
    let api = h.unpooled();
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge_value = format!("X-Big: {}\r\n", "v".repeat(HEADER_BYTES_MAX + 1024));
    let long_path = format!("/healthz?{}", "q".repeat(HEADER_BYTES_MAX + 1024));
    for (what, request) in [
        (
            "150 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n"),
        ),
        (
            "one huge header",
            format!("GET /healthz HTTP/1.1\r\n{huge_value}\r\n"),
        ),
        (
            "a huge path",
            format!("GET {long_path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        ),
    ] {
        let mut raw = Raw::connect(&api).await;
        raw.send(request.as_bytes()).await;
        let r = raw.answer().await;
        let status = r.as_ref().map(|r| r.status);
        assert_eq!(status, Some(431), "{what}: {r:?}");
        assert!(raw.closes().await, "{what}");
    }
    // Headers that never end: refused once the buffer bound is passed, long before the
    // 256 KiB (under hyper's own 400 KB default) are sent.
    let mut raw = Raw::connect(&api).await;
    raw.send(b"GET /healthz HTTP/1.1\r\n").await;
    let line = b"X-Flood: 0123456789abcdef0123456789abcdef0123456789abcdef\r\n";
    let mut sent = 0;
    while sent < 256 * 1024 && raw.send(line).await {
        sent += line.len();
    }
    let refused = sent < 256 * 1024 || raw.answer().await.is_none_or(|r| r.status == 431);
    assert!(refused, "a 256 KiB header was read to its end");
    assert_healthy(&api).await;
    h.shutdown().await;
}

// ---- the connection bound -----------------------------------------------------------------

/// Beyond `connections_max`, a connection is answered 503 `UNAVAILABLE` with `Retry-After`
/// and closed; once a connection closes, a new one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_are_503_and_closed() {
    let h = server(
        SHARDS,
        ConnectionLimits {
            connections_max: 3,
            ..ConnectionLimits::default()
        },
    )
    .await;
    let api = h.unpooled();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(&api).await;
        assert!(raw.send(&get("/healthz")).await);
        assert_eq!(raw.answer().await.expect("served").status, 200);
        held.push(raw);
    }
    for _ in 0..2 {
        let mut extra = Raw::connect(&api).await;
        extra.send(&get("/healthz")).await;
        let r = extra.answer().await.expect("a 503 before the close");
        let details = assert_error_code(&r, 503, "UNAVAILABLE");
        assert_eq!(details["connections_max"], 3);
        assert_eq!(r.headers["retry-after"], "1");
        assert!(extra.closes().await);
    }
    // One held connection goes; the server learns it asynchronously, so try a bounded
    // number of times.
    drop(held.pop());
    let mut served = false;
    for _ in 0..50 {
        let mut raw = Raw::connect(&api).await;
        raw.send(&get("/healthz")).await;
        if raw.answer().await.is_some_and(|r| r.status == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no connection served after one of the bound closed");
    drop(held);
    h.shutdown().await;
}

// ---- bodies --------------------------------------------------------------------------------

/// Chunked bodies past the limit, chunked framing that is broken, a `Content-Length` that
/// lies, nesting 100,000 deep, bytes that are not UTF-8: each a 4xx in the error shape (or,
/// where HTTP framing itself is broken, hyper's bare 400 and a close), never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_lie_or_nest_or_are_not_utf8_are_4xx() {
    let h = server(SHARDS, ConnectionLimits::default()).await;
    let api = h.unpooled();
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("c-1", "s-1", 10, 10).await;
    let a = h.authority.clone();
    let clinic = serde_json::to_string(&clinic_body()).unwrap();

    // Chunked, no Content-Length, past 64 KiB: 413 as soon as the limit is crossed.
    let mut raw = Raw::connect(&api).await;
    raw.send(
        &post_head("/v1/clinics/c-2", &a, "Transfer-Encoding: chunked\r\n").replace_method("PUT"),
    )
    .await;
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    for _ in 0..5 {
        raw.send(chunk.as_bytes()).await;
    }
    raw.send(b"0\r\n\r\n").await;
    let r = raw.answer().await.expect("a 413");
    assert_error_code(&r, 413, "PAYLOAD_TOO_LARGE");

    // `Expect: 100-continue` with a Content-Length over the limit: 413 at once, without a
    // `100 Continue` that would invite the upload.
    let mut raw = Raw::connect(&api).await;
    raw.send(
        &post_head(
            "/v1/clinics/c-2",
            &a,
            "Expect: 100-continue\r\nContent-Length: 10000000\r\n",
        )
        .replace_method("PUT"),
    )
    .await;
    let r = raw.answer().await.expect("an answer without the body");
    assert_error_code(&r, 413, "PAYLOAD_TOO_LARGE");

    // Chunked framing that is not hex: the body cannot be read, 400 in the error shape.
    let mut raw = Raw::connect(&api).await;
    raw.send(
        &post_head("/v1/clinics/c-2", &a, "Transfer-Encoding: chunked\r\n").replace_method("PUT"),
    )
    .await;
    raw.send(b"zz\r\n{}\r\n0\r\n\r\n").await;
    let r = raw.answer().await.expect("an answer");
    assert_error_code(&r, 400, "BAD_REQUEST");

    // Content-Length says 10, 70 KiB follow: the request is its first 10 bytes (400, bad
    // JSON); the rest is not a request (hyper's bare 400, then the connection closes).
    let mut raw = Raw::connect(&api).await;
    raw.send(&post_head("/v1/clinics/c-2", &a, "Content-Length: 10\r\n").replace_method("PUT"))
        .await;
    raw.send(format!("{clinic}{}", " ".repeat(70 * 1024)).as_bytes())
        .await;
    let r = raw.answer().await.expect("an answer to the first 10 bytes");
    assert_error_code(&r, 400, "BAD_REQUEST");
    if let Some(r) = raw.answer().await {
        assert_eq!(r.status, 400, "{r:?}");
    }
    assert!(raw.closes().await);

    // Content-Length and Transfer-Encoding at once (the request smuggling set-up): the body
    // is what the chunks say (`{}`: 400, fields missing), Content-Length is ignored, and the
    // connection closes after the answer, so nothing rides behind it.
    let mut raw = Raw::connect(&api).await;
    raw.send(
        &post_head(
            "/v1/clinics/c-2",
            &a,
            "Content-Length: 40\r\nTransfer-Encoding: chunked\r\n",
        )
        .replace_method("PUT"),
    )
    .await;
    raw.send(b"2\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let r = raw.answer().await.expect("an answer");
    assert_error_code(&r, 400, "BAD_REQUEST");
    assert!(raw.closes().await, "a request rode behind the chunked body");
    // Two different Content-Lengths: hyper's bare 400, and a close.
    let mut raw = Raw::connect(&api).await;
    raw.send(
        &post_head(
            "/v1/clinics/c-2",
            &a,
            "Content-Length: 2\r\nContent-Length: 3\r\n",
        )
        .replace_method("PUT"),
    )
    .await;
    raw.send(b"{} ").await;
    let r = raw.answer().await.expect("an answer");
    assert_eq!((r.status, r.text.as_str()), (400, ""));
    assert!(raw.closes().await);

    // 100,000 open brackets in the bulk upload (1 MiB limit), 60,000 in a field: 400, no
    // stack overflow (a typed body refuses the first bracket it does not expect; serde_json
    // stops any value at 128 levels, see the gateway's extract tests).
    let r = api
        .send(
            Req::post("/v1/clinics/c-1/slots")
                .token(&a)
                .raw("application/json", "[".repeat(100_000)),
        )
        .await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    let r = api
        .send(Req::put("/v1/clinics/c-2").token(&a).raw(
            "application/json",
            format!(r#"{{"name": {}"#, "[".repeat(60_000)),
        ))
        .await;
    assert_error_code(&r, 400, "BAD_REQUEST");

    // Not UTF-8 inside a JSON string: 400 on the body.
    let mut body = br#"{"name": "caf"#.to_vec();
    body.extend_from_slice(&[0xe9, 0xff]);
    body.extend_from_slice(br#"", "region": "north", "timezone": "UTC"}"#);
    let r = api
        .send(
            Req::put("/v1/clinics/c-2")
                .token(&a)
                .raw("application/json", body),
        )
        .await;
    assert_eq!(assert_error_code(&r, 400, "BAD_REQUEST")["field"], "body");
    // ... in a path parameter: 400; in the Authorization header: 401.
    let r = api.send(Req::get("/v1/clinics/c%FF%FE/availability")).await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    let mut raw = Raw::connect(&api).await;
    raw.send(b"GET /v1/admin/shards HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
        .await;
    let r = raw.answer().await.expect("an answer");
    assert_error_code(&r, 401, "UNAUTHENTICATED");

    // Nothing was created; the server is well.
    let clinics = api.send(Req::get("/v1/clinics")).await.expect(200);
    assert_eq!(clinics["clinics"].as_array().unwrap().len(), 1);
    assert_healthy(&api).await;
    h.shutdown().await;
}

trait ReplaceMethod {
    fn replace_method(self, method: &str) -> Vec<u8>;
}

impl ReplaceMethod for Vec<u8> {
    /// The same request head with another method (`post_head` writes POST).
    fn replace_method(self, method: &str) -> Vec<u8> {
        let mut out = method.as_bytes().to_vec();
        out.extend_from_slice(&self[4..]);
        out
    }
}

// ---- tokens ----------------------------------------------------------------------------------

/// Three parts, each base64url of the given bytes.
fn parts(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    format!("{}.{}.{}", enc(header), enc(payload), enc(signature))
}

/// `header_b64.payload_b64` signed with HS256 under the test secret, whatever they contain.
fn signed_raw(header_b64: &str, payload_b64: &str) -> String {
    use hmac::{Hmac, Mac};
    let input = format!("{header_b64}.{payload_b64}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The token cases `http_auth::bad_tokens_are_401` does not send: other algorithms
/// (HS384, RS256) correctly MAC'd, parts that are not base64url or not JSON, payloads signed
/// correctly but without `sub` or with wrong types, a token just past the 5 s leeway, and a
/// 12 KiB token (under the 16 KiB header bound). Every one is 401 `UNAUTHENTICATED` and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_nobody_issued_are_401() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 10, 10).await;
    h.put_adult("ann").await;
    let exp = Utc::now().timestamp() + 3600;
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let hs256 = enc(&json!({"alg": "HS256", "typ": "JWT"}));
    let citizen = json!({"sub": "ann", "role": "citizen", "citizen_id": "ann", "exp": exp});
    let good = signed_raw(&hs256, &enc(&citizen));
    let mut bad: Vec<(&str, String)> = Vec::new();
    for alg in ["HS384", "RS256", "ES256", "PS256"] {
        let header = enc(&json!({"alg": alg, "typ": "JWT"}));
        bad.push((
            "another alg, HS256-signed",
            signed_raw(&header, &enc(&citizen)),
        ));
    }
    bad.push((
        "RS256 with a fake signature",
        parts(
            br#"{"alg":"RS256"}"#,
            citizen.to_string().as_bytes(),
            &[1; 256],
        ),
    ));
    bad.push((
        "header not base64url",
        format!("!!!.{}", good.split_once('.').unwrap().1),
    ));
    bad.push(("header padded base64", good.replacen('.', "==.", 1)));
    bad.push((
        "header not JSON",
        signed_raw(&URL_SAFE_NO_PAD.encode("alg=HS256"), &enc(&citizen)),
    ));
    bad.push((
        "header a JSON array",
        signed_raw(&enc(&json!(["HS256"])), &enc(&citizen)),
    ));
    bad.push(("payload not base64url", signed_raw(&hs256, "a+b/c")));
    bad.push((
        "payload not JSON",
        signed_raw(&hs256, &URL_SAFE_NO_PAD.encode("role=authority")),
    ));
    bad.push((
        "payload not UTF-8",
        signed_raw(&hs256, &URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x7b])),
    ));
    bad.push((
        "payload a JSON array",
        signed_raw(&hs256, &enc(&json!([citizen.clone()]))),
    ));
    for (what, claims) in [
        ("no sub", json!({"role": "authority", "exp": exp})),
        (
            "sub a number",
            json!({"sub": 7, "role": "authority", "exp": exp}),
        ),
        (
            "role capitalised",
            json!({"sub": "x", "role": "Authority", "exp": exp}),
        ),
        (
            "exp fractional",
            json!({"sub": "x", "role": "authority", "exp": exp as f64 + 0.5}),
        ),
        (
            "exp 7 s ago, past the leeway",
            json!({"sub": "x", "role": "authority", "exp": Utc::now().timestamp() - 7}),
        ),
        (
            "citizen_id null",
            json!({"sub": "ann", "role": "citizen", "citizen_id": null, "exp": exp}),
        ),
    ] {
        bad.push((what, signed_raw(&hs256, &enc(&claims))));
    }
    bad.push((
        "signature of another token",
        format!(
            "{}.{}",
            good.rsplit_once('.').unwrap().0,
            h.authority.rsplit('.').next().unwrap()
        ),
    ));
    bad.push(("signature truncated", good[..good.len() - 2].to_string()));
    bad.push((
        "12 KiB token",
        signed_raw(
            &hs256,
            &enc(&json!({"sub": "x".repeat(12_000), "role": "authority", "exp": exp})),
        )[..12 * 1024]
            .to_string(),
    ));
    // The same construction with nothing wrong is accepted, so each case fails for its reason.
    h.send(Req::get("/v1/citizens/ann/appointments").token(&good))
        .await
        .expect(200);

    for (what, token) in &bad {
        for req in [
            Req::get("/v1/citizens/ann/appointments"),
            Req::post("/v1/appointments")
                .idem("k")
                .json(&booking_body("ann", "c-1", "s-1", VACCINE)),
        ] {
            let r = h.send(req.token(token)).await;
            assert_eq!(r.status, 401, "{what}: {}", r.text);
            assert_error_code(&r, 401, "UNAUTHENTICATED");
        }
    }
    assert!(h.citizen_appointments("ann").await.is_empty());
    h.shutdown().await;
}
