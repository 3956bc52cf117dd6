//! A small HTTP/1.1 client on hyper's client connection directly, for the load harness and
//! //! the webhooks' deliveries: a pool of keep-alive connections to one server, each request
//! written from a path and a few header values (no URL parsing, no per-request client
//! clone), and the answer read whole.
//!
//! - A request takes an idle connection from the pool (the most recently used first) or
//!   opens a new one; after a whole answer the connection goes back, unless the server said
//!   `Connection: close` or the pool already holds [`Http::max_idle`] connections.
//! - A request that does not get its whole answer within its timeout is a
//!   [`Failure::Timeout`]; its connection is dropped (the connection task aborted, the socket
//!   closed), never reused mid-answer.
//! - A connection idle for [`POOL_IDLE_TIMEOUT`] is not reused (holdfast closes idle ones
//!   after 10 s; other servers sooner or later). A request that the connection could not even write (closed under it, a
//!   race with the server's close) is sent again on a fresh connection, at most
//!   [`UNSENT_RETRIES`] times: it never reached the server, so this cannot repeat a decision.
//!   A request that was written and then lost its connection is a [`Failure::Transport`]:
//!   whether the server acted on it is unknown, and the caller decides (the crash scenario
//!   retries creates with the same Idempotency-Key).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER};
pub use hyper::Method;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

/// How long an idle connection stays usable in the pool: half the server's idle timeout
/// (`holdfast_server::connections::HEADER_READ_TIMEOUT_DEFAULT`, 10 s), so the client drops
/// an idle connection before the server closes it, not a request into one being closed.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a request that was never written (its pooled connection closed under
/// it) is sent again on a fresh connection.
pub const UNSENT_RETRIES: u32 = 2;

/// One request, described so it can be written again identically (a retry): the body is
/// serialized once and shared.
#[derive(Debug, Clone)]
pub struct Req<'a> {
    pub method: Method,
    /// Path and query, as sent (`/v1/appointments`, `/v1/x?status=HELD`).
    pub path: &'a str,
    /// The whole `Authorization` value (`Bearer ...`).
    pub authorization: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub admission_token: Option<&'a str>,
    /// A JSON body, already serialized.
    pub json: Option<Bytes>,
    /// Any other headers (none for most requests: an empty `Vec` does not allocate).
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl<'a> Req<'a> {
    pub fn new(method: Method, path: &'a str) -> Req<'a> {
        Req {
            method,
            path,
            authorization: None,
            idempotency_key: None,
            admission_token: None,
            json: None,
            headers: Vec::new(),
        }
    }

    pub fn get(path: &'a str) -> Req<'a> {
        Req::new(Method::GET, path)
    }

    pub fn post(path: &'a str) -> Req<'a> {
        Req::new(Method::POST, path)
    }

    pub fn auth(mut self, authorization: &'a str) -> Req<'a> {
        self.authorization = Some(authorization);
        self
    }

    pub fn key(mut self, idempotency_key: &'a str) -> Req<'a> {
        self.idempotency_key = Some(idempotency_key);
        self
    }

    pub fn admission(mut self, token: Option<&'a str>) -> Req<'a> {
        self.admission_token = token;
        self
    }

    pub fn json(mut self, body: &serde_json::Value) -> Req<'a> {
        // Serializing a `Value` cannot fail (its keys are strings).
        self.json = Some(Bytes::from(serde_json::to_vec(body).unwrap_or_default()));
        self
    }

    /// A body that is JSON already (shared, not copied).
    pub fn json_bytes(mut self, body: Bytes) -> Req<'a> {
        self.json = Some(body);
        self
    }

    /// One more header (`name` in lower case).
    pub fn header(mut self, name: &'static str, value: HeaderValue) -> Req<'a> {
        self.headers.push((name, value));
        self
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the answer carried one.
    pub retry_after_s: Option<u64>,
    pub body: Bytes,
}

/// No answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No whole answer within the timeout.
    Timeout(String),
    /// The connection could not be opened, or failed before the whole answer came.
    Transport(String),
}

/// A pool of connections to one server; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Http {
    inner: Arc<Pool>,
    /// The largest answer body read; a longer one fails the request.
    body_max: usize,
}

#[derive(Debug)]
struct Pool {
    /// `host:port`, what is connected to and sent as `Host`.
    authority: String,
    host: HeaderValue,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// One connection: its sender and the task driving it.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: AbortHandle,
    idle_since: Instant,
}

impl Drop for Conn {
    /// A connection leaving the harness is closed at once (socket and task), whatever it
    /// was doing: a timed-out answer is never read by anyone.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Http {
    /// A pool for the server at `base` (`http://host:port`, a trailing path ignored),
    /// keeping at most `max_idle` idle connections (at least one).
    pub fn new(base: &str, max_idle: usize) -> Http {
        let authority = base
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        Http::to_authority(authority, max_idle)
    }

    /// A pool for the server at `authority` (`host:port`, connected to and sent as `Host`).
    pub fn to_authority(authority: String, max_idle: usize) -> Http {
        let host = HeaderValue::from_str(&authority)
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Http {
            inner: Arc::new(Pool {
                authority,
                host,
                idle: Mutex::new(Vec::new()),
                max_idle: max_idle.max(1),
            }),
            body_max: usize::MAX,
        }
    }

    /// The same pool, failing any answer whose body is longer than `bytes` (a receiver that
    /// is not trusted to answer briefly).
    pub fn answers_at_most(mut self, bytes: usize) -> Http {
        self.body_max = bytes;
        self
    }

    /// How many idle connections the pool keeps at most.
    pub fn max_idle(&self) -> usize {
        self.inner.max_idle
    }

    /// Idle connections in the pool that are still open (tests).
    pub fn idle(&self) -> usize {
        self.lock_idle()
            .iter()
            .filter(|c| c.sender.is_ready())
            .count()
    }

    /// Sends `req` and reads the whole answer within `timeout`.
    pub async fn request(&self, req: &Req<'_>, timeout: Duration) -> Result<Answer, Failure> {
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(result) => result.map_err(Failure::Transport),
            Err(_) => Err(Failure::Timeout(format!(
                "no whole answer within {timeout:?}"
            ))),
        }
    }

    async fn exchange(&self, req: &Req<'_>) -> Result<Answer, String> {
        let mut unsent = 0;
        loop {
            let mut conn = self.checkout().await?;
            let request = self.build(req)?;
            let response = match conn.sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => {
                    if e.take_message().is_some() && unsent < UNSENT_RETRIES {
                        unsent += 1;
                        continue;
                    }
                    return Err(error_chain(e.error()));
                }
            };
            let status = response.status().as_u16();
            let retry_after_s = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let closing = response
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = Limited::new(response.into_body(), self.body_max)
                .collect()
                .await
                .map_err(|e| error_chain(&*e))?
                .to_bytes();
            if !closing {
                self.checkin(conn);
            }
            return Ok(Answer {
                status,
                retry_after_s,
                body,
            });
        }
    }

    fn build(&self, req: &Req<'_>) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.path)
            .header(HOST, self.inner.host.clone());
        if let Some(v) = req.authorization {
            builder = builder.header(AUTHORIZATION, v);
        }
        if let Some(v) = req.idempotency_key {
            builder = builder.header("idempotency-key", v);
        }
        if let Some(v) = req.admission_token {
            builder = builder.header("admission-token", v);
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value.clone());
        }
        let body = match &req.json {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                json.clone()
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(body))
            .map_err(|e| format!("{} {}: {e}", req.method, req.path))
    }

    /// An idle connection that is still usable, else a new one.
    async fn checkout(&self) -> Result<Conn, String> {
        loop {
            let pooled = self.lock_idle().pop();
            match pooled {
                // A stale or closed connection is dropped (closed) and the next one tried.
                Some(conn) => {
                    if conn.idle_since.elapsed() < POOL_IDLE_TIMEOUT && conn.sender.is_ready() {
                        return Ok(conn);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        if !conn.sender.is_ready() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.lock_idle();
        if idle.len() < self.inner.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let authority = &self.inner.authority;
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        // Small requests and answers: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| error_chain(&e))?;
        let task = tokio::spawn(async move {
            // Its end (the server closed, or the connection failed) shows to the sender.
            let _ = connection.await;
        })
        .abort_handle();
        Ok(Conn {
            sender,
            task,
            idle_since: Instant::now(),
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An error with its sources ("connection closed before message completed <- ...").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(" <- ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
