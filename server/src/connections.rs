//! The connections: the TCP accept loop and HTTP/1.1 on each connection (hyper, which
//! `axum::serve` also runs on), with the bounds that keep slow, broken or hostile clients from
//! holding the server.
//!
//! `axum::serve` sets none of them: it gives hyper no timer, so hyper's header read timeout is
//! off and a client that trickles its headers (slowloris) or idles on a keep-alive connection
//! holds it forever, and it accepts every connection the kernel hands it. This loop owns:
//!
//! - **Header read timeout** ([`ConnectionLimits::header_read_timeout`]): a request's headers
//!   must arrive whole within it, or the connection is closed without an answer. hyper starts
//!   the same clock when a keep-alive connection goes idle, so it is the idle timeout too.
//! - **Header limits** ([`HEADER_BYTES_MAX`], [`HEADERS_COUNT_MAX`]): more, or longer, and
//!   hyper answers a bare `431 Request Header Fields Too Large` and closes. The read buffer
//!   never holds more than [`HEADER_BYTES_MAX`] of an unfinished header, so a header flood
//!   costs at most that per connection.
//! - **Body read deadline** ([`ConnectionLimits::body_read_timeout`]): handed to the gateway's
//!   extractors with each request ([`BodyReadTimeout`]); a body that does not arrive in time
//!   is 408 `REQUEST_TIMEOUT` and the connection closes.
//! - **Write stall timeout** ([`ConnectionLimits::write_stall_timeout`]): a connection whose
//!   answer (or event stream) cannot be written for that long, because the client stopped
//!   reading, is closed (`tokio-io-timeout` on the socket).
//! - **Connection bound** ([`ConnectionLimits::connections_max`]): a connection beyond it is
//!   answered 503 `UNAVAILABLE` with `Retry-After` and closed, at most
//!   [`REFUSALS_IN_FLIGHT_MAX`] at a time (beyond those it is closed at once), so a client
//!   learns at once that it should come back instead of waiting in the kernel's backlog.
//!
//! None of this holds a shard or a thread: a connection is a task, and a request reaches a
//! shard only once its headers and body are read.
//!
//! Each request also carries its peer address as axum's `ConnectInfo<SocketAddr>`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use holdfast_engine::node::RETRY_AFTER_S;
use holdfast_engine::{Node, WriteRefusal};
use holdfast_gateway::error::ApiError;
use holdfast_gateway::extract::{BodyReadTimeout, BODY_READ_TIMEOUT_DEFAULT};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

/// How long a client has to send a request's headers, and how long a keep-alive connection
/// may sit idle between requests (hyper runs one clock for both). Ten seconds is far more than
/// any real client needs for a few hundred bytes of headers, and what a slowloris client can
/// hold a connection for.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How long a write to a client may make no progress before its connection is closed: the
/// client stopped reading. An event stream's heartbeat comes every 15 s, so a live consumer
/// is never near it.
pub const WRITE_STALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Connections open at once, by default (`--connections-max`). The streams may hold 4,160 of
/// them (`holdfast_gateway::routes::streams`: 4,096 availability and 64 event subscribers),
/// which leaves at least 4,032 for requests; the launch scenario of the load harness opens
/// 2,560. Measured (`loadtest/scripts/connection_memory.py`, docs/PERFORMANCE.md): 18 KiB of
/// resident memory a connection that sends nothing, 27-31 KiB one that holds 15 KiB of an
/// unfinished header; so at most about 250 MiB at the bound, for as long as the header read
/// timeout lets such connections stay.
pub const CONNECTIONS_MAX_DEFAULT: usize = 8192;

/// Most bytes of a request's start line and headers. A browser sends 1-4 KiB, a token is
/// under 1 KiB; nginx allows 8 KiB per line.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;

/// Most header lines of a request (hyper's own default, named so it is ours).
pub const HEADERS_COUNT_MAX: usize = 100;

/// Connections beyond the bound being answered 503 at once. Each takes at most
/// [`REFUSAL_HEADER_READ_TIMEOUT`]; beyond these, a connection is closed without an answer.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// How long a refused connection has to send its request's headers before it is closed.
const REFUSAL_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the loop pauses after an accept error that is not about one connection (out of
/// file descriptors, typically), so it does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bounds of every connection; [`Default`] gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; beyond it a connection is answered 503 and closed.
    pub connections_max: usize,
    /// See [`HEADER_READ_TIMEOUT_DEFAULT`]; also the idle timeout of keep-alive connections.
    pub header_read_timeout: Duration,
    /// How long a request's whole body may take to arrive once a handler reads it
    /// (`holdfast_gateway::extract::BODY_READ_TIMEOUT_DEFAULT`).
    pub body_read_timeout: Duration,
    /// See [`WRITE_STALL_TIMEOUT_DEFAULT`].
    pub write_stall_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            body_read_timeout: BODY_READ_TIMEOUT_DEFAULT,
            write_stall_timeout: WRITE_STALL_TIMEOUT_DEFAULT,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets every
/// open connection finish its request in flight (idle ones close at once). The listener is
/// shared: it outlives the loop, so the next one serves on the same socket (a restart in
/// place, `reopen.rs`) and connections arriving in between wait in its backlog.
///
/// Dropping the returned future (aborting its task after the drain) closes every connection
/// still open: they run in a [`JoinSet`] it owns.
pub async fn serve(
    listener: Arc<TcpListener>,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let http = http_builder(&limits);
    let open = Arc::new(Semaphore::new(limits.connections_max));
    let refusing = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Finished connections leave the set here, so it holds only open ones.
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refuse(stream, &refusing, &mut tasks, limits.connections_max);
            continue;
        };
        let service = hyper::service::service_fn(request_service(app.clone(), peer, &limits));
        let io = TokioIo::new(write_stall_guarded(stream, limits.write_stall_timeout));
        let connection = graceful.watch(http.serve_connection(io, service));
        tasks.spawn(async move {
            // Held for as long as the connection is open.
            let _permit = permit;
            if let Err(e) = connection.await {
                // A client that went away or timed out; not the server's failure.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// `stream` with its writes bounded: a write that makes no progress for `timeout` fails, and
/// hyper closes the connection.
fn write_stall_guarded(stream: TcpStream, timeout: Duration) -> Pin<Box<TimeoutStream<TcpStream>>> {
    let mut guarded = TimeoutStream::new(stream);
    guarded.set_write_timeout(Some(timeout));
    Box::pin(guarded)
}

/// hyper's HTTP/1.1 settings for served connections.
fn http_builder(limits: &ConnectionLimits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HEADERS_COUNT_MAX)
        // hyper checks `max_header_size` only once the headers are complete; the buffer bound
        // refuses an unfinished one as soon as it passes the limit.
        .max_header_size(HEADER_BYTES_MAX)
        .max_buf_size(HEADER_BYTES_MAX);
    http
}

/// The per-request wrapper around the router: the peer address and the body deadline as
/// request extensions, the body as axum's.
fn request_service(
    app: axum::Router,
    peer: SocketAddr,
    limits: &ConnectionLimits,
) -> impl Fn(Request<Incoming>) -> tower::util::Oneshot<axum::Router, Request<Body>> + Clone {
    let body_read_timeout = BodyReadTimeout(limits.body_read_timeout);
    move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(body_read_timeout);
        app.clone().oneshot(request)
    }
}

/// Answers a connection beyond the bound 503 `UNAVAILABLE` with `Retry-After` and closes it,
/// or closes it at once when [`REFUSALS_IN_FLIGHT_MAX`] refusals are already under way.
fn refuse(
    stream: TcpStream,
    refusing: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    connections_max: usize,
) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        tracing::debug!("connection closed unanswered: too many connections being refused");
        return;
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REFUSAL_HEADER_READ_TIMEOUT)
        .max_headers(HEADERS_COUNT_MAX)
        .max_buf_size(HEADER_BYTES_MAX);
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| async move {
        Ok::<Response, Infallible>(too_many_connections(connections_max).into_response())
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tasks.spawn(async move {
        let _permit = permit;
        let _ = connection.await;
    });
}

/// The answer to a connection beyond the bound.
fn too_many_connections(connections_max: usize) -> ApiError {
    ApiError::unavailable(
        RETRY_AFTER_S,
        format!("the server has {connections_max} connections open, its limit; retry shortly"),
    )
    .with_detail("connections_max", connections_max)
}

/// Errors of one connection (reset before it was accepted) need no pause; the others (out of
/// file descriptors) do, or the loop would spin until a descriptor is free.
async fn pause_after(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Warns when `connections_max` is above the process's open-file limit (`ulimit -n`, read
/// from `/proc/self/limits`; nothing is said where that file does not exist): past the limit,
/// accepting fails and connections wait in the kernel's backlog instead of being answered.
pub fn warn_if_over_open_file_limit(connections_max: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft_limit = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok());
    if let Some(open_files_max) = soft_limit.filter(|&max| connections_max >= max) {
        tracing::warn!(
            connections_max,
            open_files_max,
            "--connections-max is not below the open-file limit: raise `ulimit -n` or lower \
             --connections-max, or connections beyond the limit wait unanswered"
        );
    }
}

/// While the node's log has failed, its answers close their connections (`Connection:
/// close`), as do the stand-in's: the node is about to be stopped, and a keep-alive
/// connection still open then is closed under the client, who may be sending its next
/// request on it at that moment (an error, not an answer). A new connection waits in the
/// socket's backlog or gets the stand-in's 503 instead. (A connection idle since before the
/// failure can still meet that race: HTTP/1.1 has no way to warn it.)
pub(crate) async fn close_if_log_failed(
    State(node): State<Arc<Node>>,
    mut response: Response,
) -> Response {
    if matches!(node.write_refusal(), Some(WriteRefusal::LogFailed(_))) {
        close_connection(&mut response);
    }
    response
}

pub(crate) fn close_connection(response: &mut Response) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}
