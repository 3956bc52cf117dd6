//! Shared set-up for the HTTP tests: an in-process server, tokens for every role, helpers
//! that build the catalogue through the API, and assertions on the error shape.
//!
//! Every helper talks HTTP to a real listener (`127.0.0.1:0`), so these tests see exactly what
//! a client sees: status, headers and body bytes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use holdfast_engine::{NodeConfig, SystemClock};
use holdfast_gateway::app::Settings;
use holdfast_gateway::auth::{Claims, JwtKey, Role};
use holdfast_persistence::WalConfig;
use holdfast_server::connections::ConnectionLimits;
use holdfast_server::{start, start_listening, RunningServer, ServerConfig, Storage};
use reqwest::Method;
use serde_json::{json, Value};

pub const SECRET: &[u8] = b"test-secret";
pub const SHARDS: u32 = 8;
pub const VACCINE: &str = "pfz";
pub const REGION: &str = "north";
/// Default hold of a test server: long enough that nothing expires during a test.
pub const HOLD_TTL_MS: i64 = 300_000;
pub const MAX_HOLD_MS: i64 = 900_000;
/// Every request of a test gives up after this long, so no test can hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Every field an appointment body always has (docs/API.md, Booking).
pub const APPOINTMENT_FIELDS: [&str; 16] = [
    "appointment_id",
    "status",
    "clinic_id",
    "slot_id",
    "vaccine",
    "citizen_id",
    "created_at",
    "expires_at",
    "confirmed_at",
    "administered_at",
    "batch",
    "needs_review",
    "at_risk",
    "rebook_priority",
    "rescheduled_from",
    "rescheduled_to",
];

static KEYS: AtomicU64 = AtomicU64::new(0);

/// A fresh Idempotency-Key, unique within the test process.
pub fn fresh_key(prefix: &str) -> String {
    format!("{prefix}-{}", KEYS.fetch_add(1, Ordering::Relaxed))
}

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A new empty directory `holdfast-<name>-<pid>-<micros>-<n>` under the system's temporary
/// directory: the process id and the time keep it apart from other runs, the counter from
/// the other tests of this process, which run in parallel threads.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "holdfast-{name}-{}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_micros(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The write-ahead log in `dir`.
pub fn wal_storage(dir: &Path, config: WalConfig) -> Storage {
    Storage::Wal {
        dir: dir.to_path_buf(),
        config,
    }
}

// ---- requests ------------------------------------------------------------------------

/// One HTTP request, built step by step.
#[derive(Clone)]
pub struct Req {
    method: Method,
    path: String,
    token: Option<String>,
    authorization: Option<String>,
    body: Option<(String, Vec<u8>)>,
    idem: Option<String>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Req {
        Req {
            method,
            path: path.into(),
            token: None,
            authorization: None,
            body: None,
            idem: None,
        }
    }

    pub fn get(path: impl Into<String>) -> Req {
        Req::new(Method::GET, path)
    }

    pub fn post(path: impl Into<String>) -> Req {
        Req::new(Method::POST, path)
    }

    pub fn put(path: impl Into<String>) -> Req {
        Req::new(Method::PUT, path)
    }

    /// `Authorization: Bearer <token>`.
    pub fn token(mut self, token: &str) -> Req {
        self.token = Some(token.to_string());
        self
    }

    /// A raw `Authorization` header value.
    pub fn authorization(mut self, value: &str) -> Req {
        self.authorization = Some(value.to_string());
        self
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, value: &Value) -> Req {
        let bytes = serde_json::to_vec(value).expect("a JSON value serialises");
        self.raw("application/json", bytes)
    }

    /// A body of any content type, sent byte for byte.
    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some((content_type.to_string(), body.into()));
        self
    }

    pub fn idem(mut self, key: &str) -> Req {
        self.idem = Some(key.to_string());
        self
    }
}

/// What came back: status, content type, headers and the body as text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    /// The body as JSON; panics (with the body) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status, self.text
            )
        })
    }

    /// Asserts the status, printing the body when it differs; returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self.json()
    }
}

/// A cloneable handle to the server's HTTP API (for spawned tasks).
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    /// An authority token, used by the catalogue helpers.
    pub authority: String,
}

impl Api {
    /// The API of a server at `base` (`http://127.0.0.1:41234`), with the test authority.
    pub fn new(base: String) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                // Below the server's 10 s idle timeout: an idle connection leaves the pool
                // before the server closes it, so no request is sent into a closing one.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("a client"),
            base,
            authority: token(Role::Authority, "authority-1", None, None),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: Req) -> Resp {
        let what = format!("{} {}", req.method, req.path);
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {}", error_chain(&e)))
    }

    /// Sends `req`; a transport failure is an `Err` instead of a panic.
    pub async fn try_send(&self, req: Req) -> Result<Resp, reqwest::Error> {
        let mut builder = self.client.request(req.method.clone(), self.url(&req.path));
        if let Some(token) = &req.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(value) = &req.authorization {
            builder = builder.header("authorization", value.as_str());
        }
        if let Some(key) = &req.idem {
            builder = builder.header("idempotency-key", key.as_str());
        }
        if let Some((content_type, body)) = req.body {
            builder = builder.header("content-type", content_type).body(body);
        }
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await?;
        Ok(Resp {
            status,
            content_type,
            headers,
            text,
        })
    }

    /// Sends a request whose body the server refuses (413) without reading it, on a
    /// connection of its own.
    ///
    /// The server answers 413 from `Content-Length` and closes the connection without
    /// reading the body and without `Connection: close`, so a client still uploading may get
    /// a broken pipe instead of the answer, and a pooled connection is dead afterwards (see
    /// `http_errors::oversized_uploads_always_get_their_413`). Until that is fixed this
    /// retries a transport failure up to 5 times; any HTTP answer is returned as it is.
    pub async fn send_oversized(&self, req: Req) -> Resp {
        let api = self.unpooled();
        let mut last = String::new();
        for _ in 0..5 {
            match api.try_send(req.clone()).await {
                Ok(resp) => return resp,
                Err(e) => last = error_chain(&e),
            }
        }
        panic!(
            "{} {}: no answer in 5 attempts: {last}",
            req.method, req.path
        );
    }

    /// This API with a client that opens a new connection for every request (for answers
    /// after which the server closes the connection, like a 413).
    pub fn unpooled(&self) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .expect("a client"),
            ..self.clone()
        }
    }

    pub async fn healthz(&self) {
        let r = self.send(Req::get("/healthz")).await;
        assert_eq!(r.status, 200, "healthz: {}", r.text);
    }

    // ---- catalogue ----------------------------------------------------------------

    pub async fn put_vaccine(&self, name: &str, body: &Value) -> Value {
        self.send(
            Req::put(format!("/v1/vaccines/{name}"))
                .token(&self.authority)
                .json(body),
        )
        .await
        .expect(200)
    }

    /// `pfz`-like rules: 12 or older, every region, 2 doses 21 days apart, `peg` allergy.
    pub async fn standard_vaccine(&self, name: &str) -> Value {
        self.put_vaccine(name, &vaccine_body(Some(12))).await
    }

    pub async fn put_clinic(&self, clinic_id: &str) -> Value {
        self.send(
            Req::put(format!("/v1/clinics/{clinic_id}"))
                .token(&self.authority)
                .json(&clinic_body()),
        )
        .await
        .expect(200)
    }

    pub async fn put_slot_raw(&self, clinic_id: &str, slot_id: &str, body: &Value) -> Resp {
        self.send(
            Req::put(format!("/v1/clinics/{clinic_id}/slots/{slot_id}"))
                .token(&self.authority)
                .json(body),
        )
        .await
    }

    /// A slot tomorrow offering `vaccines`, with no priority reserve.
    pub async fn put_slot(
        &self,
        clinic_id: &str,
        slot_id: &str,
        capacity: u32,
        vaccines: &[&str],
    ) -> Value {
        let body = slot_body(
            hours_from_now(24),
            hours_from_now(25),
            capacity,
            vaccines,
            0,
        );
        self.put_slot_raw(clinic_id, slot_id, &body)
            .await
            .expect(200)
    }

    pub async fn receive_stock(
        &self,
        clinic_id: &str,
        vaccine: &str,
        batch: &str,
        quantity: i64,
    ) -> Value {
        self.send(
            Req::post(format!("/v1/clinics/{clinic_id}/stock"))
                .token(&self.authority)
                .json(&stock_body(vaccine, batch, quantity)),
        )
        .await
        .expect(200)
    }

    pub async fn adjust_stock(
        &self,
        token: &str,
        clinic_id: &str,
        vaccine: &str,
        batch: &str,
        delta: i64,
    ) -> Resp {
        self.send(
            Req::post(format!("/v1/clinics/{clinic_id}/stock/adjust"))
                .token(token)
                .json(&json!({"vaccine": vaccine, "batch": batch, "delta": delta, "reason": "cold chain"})),
        )
        .await
    }

    pub async fn put_citizen(&self, citizen_id: &str, birth_date: &str) -> Value {
        self.send(
            Req::put(format!("/v1/citizens/{citizen_id}"))
                .token(&self.authority)
                .json(&citizen_body(birth_date)),
        )
        .await
        .expect(200)
    }

    /// A citizen born in 1980 in the standard region, no allergies, no doses.
    pub async fn put_adult(&self, citizen_id: &str) -> Value {
        self.put_citizen(citizen_id, "1980-05-05").await
    }

    /// A clinic with one slot tomorrow of `capacity` seats offering `VACCINE`, and `doses`
    /// doses in batch `B-1` (no stock when `doses` is 0). The vaccine must exist.
    pub async fn clinic_with_slot(
        &self,
        clinic_id: &str,
        slot_id: &str,
        capacity: u32,
        doses: i64,
    ) {
        self.put_clinic(clinic_id).await;
        self.put_slot(clinic_id, slot_id, capacity, &[VACCINE])
            .await;
        if doses > 0 {
            self.receive_stock(clinic_id, VACCINE, "B-1", doses).await;
        }
    }

    // ---- booking ------------------------------------------------------------------

    /// `POST /v1/appointments` with `token` and Idempotency-Key `key`.
    pub async fn book_with(&self, token: &str, key: &str, body: &Value) -> Resp {
        self.send(
            Req::post("/v1/appointments")
                .token(token)
                .idem(key)
                .json(body),
        )
        .await
    }

    /// Books as the citizen itself (its own token) with a fresh key.
    pub async fn book(&self, citizen_id: &str, clinic_id: &str, slot_id: &str) -> Resp {
        let token = self.citizen_token(citizen_id);
        self.book_with(
            &token,
            &fresh_key("book"),
            &booking_body(citizen_id, clinic_id, slot_id, VACCINE),
        )
        .await
    }

    /// Books and asserts 201; returns the appointment id.
    pub async fn book_ok(&self, citizen_id: &str, clinic_id: &str, slot_id: &str) -> String {
        let body = self.book(citizen_id, clinic_id, slot_id).await.expect(201);
        body["appointment_id"].as_str().unwrap().to_string()
    }

    pub async fn confirm(&self, token: &str, id: &str) -> Resp {
        self.send(Req::post(format!("/v1/appointments/{id}/confirm")).token(token))
            .await
    }

    pub async fn cancel(&self, token: &str, id: &str) -> Resp {
        self.send(Req::post(format!("/v1/appointments/{id}/cancel")).token(token))
            .await
    }

    pub async fn appointment(&self, token: &str, id: &str) -> Resp {
        self.send(Req::get(format!("/v1/appointments/{id}")).token(token))
            .await
    }

    /// The appointment as the authority sees it (asserts 200).
    pub async fn appointment_json(&self, id: &str) -> Value {
        self.appointment(&self.authority, id).await.expect(200)
    }

    pub async fn availability(&self, clinic_id: &str) -> Value {
        let avail = self
            .send(Req::get(format!("/v1/clinics/{clinic_id}/availability")))
            .await
            .expect(200);
        for slot in avail["slots"].as_array().expect("slots is an array") {
            check_slot_counters(slot);
        }
        avail
    }

    pub async fn citizen_appointments(&self, citizen_id: &str) -> Vec<Value> {
        self.send(
            Req::get(format!("/v1/citizens/{citizen_id}/appointments")).token(&self.authority),
        )
        .await
        .expect(200)["appointments"]
            .as_array()
            .expect("appointments is an array")
            .clone()
    }

    pub async fn clinic_appointments(&self, clinic_id: &str, query: &str) -> Vec<Value> {
        self.send(
            Req::get(format!("/v1/clinics/{clinic_id}/appointments{query}")).token(&self.authority),
        )
        .await
        .expect(200)["appointments"]
            .as_array()
            .expect("appointments is an array")
            .clone()
    }

    // ---- tokens -------------------------------------------------------------------

    pub fn citizen_token(&self, citizen_id: &str) -> String {
        token(
            Role::Citizen,
            &format!("citizen-{citizen_id}"),
            Some(citizen_id),
            None,
        )
    }

    pub fn staff_token(&self, clinic_id: &str) -> String {
        token(
            Role::Staff,
            &format!("staff-{clinic_id}"),
            None,
            Some(clinic_id),
        )
    }
}

/// An error with its sources, for failure messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(&format!(" <- {inner}"));
        source = inner.source();
    }
    text
}

/// A token signed with the test secret, valid for an hour.
pub fn token(role: Role, sub: &str, citizen_id: Option<&str>, clinic_id: Option<&str>) -> String {
    token_with(
        SECRET,
        role,
        sub,
        citizen_id,
        clinic_id,
        Utc::now().timestamp() + 3600,
    )
}

pub fn token_with(
    secret: &[u8],
    role: Role,
    sub: &str,
    citizen_id: Option<&str>,
    clinic_id: Option<&str>,
    exp: i64,
) -> String {
    JwtKey::from_secret_file_bytes(secret)
        .expect("a usable secret")
        .sign(&Claims {
            sub: sub.to_string(),
            role,
            exp,
            citizen_id: citizen_id.map(str::to_string),
            clinic_id: clinic_id.map(str::to_string),
        })
}

// ---- the server ----------------------------------------------------------------------

/// A running server and a handle to its API. Call [`Harness::shutdown`] at the end.
pub struct Harness {
    server: RunningServer,
    pub api: Api,
    pub operator: String,
}

impl std::ops::Deref for Harness {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Harness {
    /// A server with `SHARDS` shards and long holds.
    pub async fn start() -> Harness {
        Harness::start_with(SHARDS, HOLD_TTL_MS, MAX_HOLD_MS).await
    }

    pub async fn start_with(shards: u32, hold_ttl_ms: i64, max_hold_ms: i64) -> Harness {
        Harness::start_node(NodeConfig::embedded(shards), hold_ttl_ms, max_hold_ms).await
    }

    /// A server with any node configuration (e.g. a tiny in-flight bound).
    pub async fn start_node(node: NodeConfig, hold_ttl_ms: i64, max_hold_ms: i64) -> Harness {
        Harness::start_config(test_config(node, hold_ttl_ms, max_hold_ms, Storage::Memory)).await
    }

    /// A server with `SHARDS` shards, in memory, with these gateway settings (e.g. a
    /// `--reschedule-notice`).
    pub async fn start_with_settings(settings: Settings) -> Harness {
        let mut config = test_config(
            NodeConfig::embedded(SHARDS),
            settings.hold_ttl_ms,
            settings.max_hold_ms,
            Storage::Memory,
        );
        config.settings = settings;
        Harness::start_config(config).await
    }

    /// A server with any configuration (e.g. another clock), started once every shard has
    /// recovered.
    pub async fn start_config(config: ServerConfig) -> Harness {
        Harness::around(start(config).await.expect("the server starts"))
    }

    /// A server on any storage, started once every shard has recovered.
    pub async fn start_storage(shards: u32, storage: Storage) -> Result<Harness, String> {
        let config = test_config(
            NodeConfig::embedded(shards),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            storage,
        );
        Ok(Harness::around(start(config).await?))
    }

    /// A server on any storage that opens its listener while its shards recover
    /// (`holdfast serve`'s way).
    pub async fn start_listening(shards: u32, storage: Storage) -> Harness {
        let config = test_config(
            NodeConfig::embedded(shards),
            HOLD_TTL_MS,
            MAX_HOLD_MS,
            storage,
        );
        let server = start_listening(config).await.expect("the listener opens");
        Harness::around(server)
    }

    fn around(server: RunningServer) -> Harness {
        Harness {
            api: Api::new(format!("http://{}", server.addr)),
            server,
            operator: token(Role::Operator, "operator-1", None, None),
        }
    }

    /// One shard's entry of `GET /v1/admin/shards`.
    pub async fn shard_entry(&self, shard: u32) -> Value {
        let status = self
            .send(Req::get("/v1/admin/shards").token(&self.operator))
            .await
            .expect(200);
        status["shards"]
            .as_array()
            .expect("shards is an array")
            .iter()
            .find(|s| s["shard"] == shard)
            .cloned()
            .unwrap_or_else(|| panic!("no shard {shard} in {status}"))
    }

    /// `GET /v1/admin/invariants` (asserts 200 and the answer's shape).
    pub async fn invariants(&self) -> Value {
        let answer = self
            .send(Req::get("/v1/admin/invariants").token(&self.operator))
            .await
            .expect(200);
        assert!(answer["ok"].is_boolean(), "{answer}");
        assert!(answer["violations"].is_array(), "{answer}");
        assert_eq!(
            answer["shards_checked"],
            self.configured_shards(),
            "{answer}"
        );
        answer
    }

    /// Asserts `GET /v1/admin/invariants` answers `ok` once the claim notices of the changes
    /// already answered have been applied. A clinic's change (a cancel, a reschedule's move)
    /// reaches the citizen's claim through a notice sent after its answer, so a check right
    /// after a cancel may see the claim a moment before its notice: this asks up to 100
    /// times, 20 ms apart (no timing is asserted), and fails with the last violations.
    pub async fn assert_invariants_ok(&self) {
        let mut last = Value::Null;
        for _ in 0..100 {
            last = self.invariants().await;
            if last["ok"] == true {
                assert_eq!(last["violations"], json!([]), "{last}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the invariants stay broken: {last}");
    }

    pub fn node(&self) -> &holdfast_engine::Node {
        &self.server.state.node
    }

    pub fn configured_shards(&self) -> u32 {
        self.server.state.node.shards()
    }

    pub async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(10), self.server.shutdown())
            .await
            .expect("the server shuts down within 10 s");
    }

    /// Stops without snapshots: the next start replays the log tail.
    pub async fn stop_without_snapshot(self) {
        tokio::time::timeout(Duration::from_secs(10), self.server.stop_without_snapshot())
            .await
            .expect("the server stops within 10 s");
    }
}

/// A test server's configuration: loopback on a port the kernel picks (port 0), the test
/// secret, the system clock.
pub fn test_config(
    node: NodeConfig,
    hold_ttl_ms: i64,
    max_hold_ms: i64,
    storage: Storage,
) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        // A waitlist offer holds as long as a booking that does not say (`--hold-ttl`).
        node: NodeConfig {
            waitlist_hold_ms: hold_ttl_ms,
            ..node
        },
        jwt_secret: SECRET.to_vec(),
        settings: Settings {
            hold_ttl_ms,
            max_hold_ms,
            reschedule_notice_ms: 0,
            overload: Default::default(),
        },
        clock: Arc::new(SystemClock),
        storage,
        external: None,
        qr_keys: None,
        admission: Default::default(),
        connections: ConnectionLimits::default(),
    }
}

/// `n` ids `<prefix>-<i>`, each in a shard of its own among `shards` (the first id of each
/// new shard, in order of `i`).
pub fn ids_on_distinct_shards(prefix: &str, n: usize, shards: u32) -> Vec<String> {
    assert!(
        n <= shards as usize,
        "{n} ids cannot be on distinct shards of {shards}"
    );
    let mut taken = std::collections::BTreeSet::new();
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| taken.insert(holdfast_engine::hash::shard_of(id, shards)))
        .take(n)
        .collect()
}

// ---- bodies --------------------------------------------------------------------------

pub fn vaccine_body(min_age: Option<u32>) -> Value {
    json!({
        "min_age": min_age,
        "max_age": null,
        "regions": [],
        "series_doses": 2,
        "min_interval_days": 21,
        "contraindications": ["peg"],
    })
}

pub fn clinic_body() -> Value {
    json!({"name": "Test clinic", "region": REGION, "timezone": "Europe/Berlin"})
}

pub fn slot_body(
    start: String,
    end: String,
    capacity: u32,
    vaccines: &[&str],
    priority_reserve: u32,
) -> Value {
    json!({
        "start": start,
        "end": end,
        "capacity": capacity,
        "vaccines": vaccines,
        "priority_reserve": priority_reserve,
    })
}

pub fn stock_body(vaccine: &str, batch: &str, quantity: i64) -> Value {
    json!({"vaccine": vaccine, "batch": batch, "quantity": quantity, "expires_on": "2099-12-31"})
}

pub fn citizen_body(birth_date: &str) -> Value {
    json!({
        "birth_date": birth_date,
        "region": REGION,
        "allergies": [],
        "insurance_id": "I-9",
        "doses": [],
    })
}

pub fn booking_body(citizen_id: &str, clinic_id: &str, slot_id: &str, vaccine: &str) -> Value {
    json!({
        "clinic_id": clinic_id,
        "slot_id": slot_id,
        "vaccine": vaccine,
        "citizen_id": citizen_id,
    })
}

// ---- time ----------------------------------------------------------------------------

/// RFC 3339 (UTC, whole seconds) of now plus `hours` (may be negative).
pub fn hours_from_now(hours: i64) -> String {
    (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
        .with_timezone(&Utc)
}

// ---- assertions ----------------------------------------------------------------------

/// Asserts the error shape `{"error": {"code", "message", "details": {}}}` with `status`
/// and `Content-Type: application/json`; returns the code.
pub fn assert_error(resp: &Resp, status: u16) -> String {
    assert_eq!(
        resp.status, status,
        "unexpected status; body: {}",
        resp.text
    );
    assert!(
        resp.content_type.starts_with("application/json"),
        "error content type {:?}, body {}",
        resp.content_type,
        resp.text
    );
    let body = resp.json();
    let top = body.as_object().expect("the error body is an object");
    assert_eq!(top.len(), 1, "only `error` at the top: {body}");
    let error = body["error"].as_object().expect("`error` is an object");
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string code: {body}"));
    assert!(!code.is_empty(), "empty code: {body}");
    assert!(
        code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
        "code is not UPPER_SNAKE: {body}"
    );
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string message: {body}"));
    assert!(!message.is_empty(), "empty message: {body}");
    assert!(
        error.get("details").is_some_and(Value::is_object),
        "details is not an object: {body}"
    );
    code.to_string()
}

/// Asserts the error shape with `status` and `code`; returns `details`.
pub fn assert_error_code(resp: &Resp, status: u16, code: &str) -> Value {
    let got = assert_error(resp, status);
    assert_eq!(got, code, "body: {}", resp.text);
    resp.json()["error"]["details"].clone()
}

/// `details.reasons` of a NOT_ELIGIBLE answer, as strings.
pub fn reasons(details: &Value) -> Vec<String> {
    details["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.reasons array: {details}"))
        .iter()
        .map(|r| r.as_str().expect("a reason is a string").to_string())
        .collect()
}

/// Asserts every appointment field is present and typed as docs/API.md says.
pub fn check_appointment_shape(a: &Value) {
    let object = a
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {a}"));
    for field in APPOINTMENT_FIELDS {
        assert!(object.contains_key(field), "missing {field} in {a}");
    }
    for field in ["needs_review", "at_risk", "rebook_priority"] {
        assert!(a[field].is_boolean(), "{field} is not a boolean in {a}");
    }
    for field in [
        "appointment_id",
        "status",
        "clinic_id",
        "slot_id",
        "vaccine",
        "citizen_id",
        "created_at",
    ] {
        assert!(a[field].is_string(), "{field} is not a string in {a}");
    }
    let id = a["appointment_id"].as_str().unwrap();
    assert!(!id.is_empty() && id.len() <= 64, "appointment id {id:?}");
    parse_time(&a["created_at"]);
}

/// `remaining + pending + confirmed + administered + no_show == capacity` for a slot that
/// is not cancelled, all zero-or-more (they are unsigned in JSON), and all zero when cancelled.
pub fn check_slot_counters(slot: &Value) {
    let n = |f: &str| {
        slot[f]
            .as_u64()
            .unwrap_or_else(|| panic!("{f} is not a non-negative integer in {slot}"))
    };
    if slot["cancelled"] == json!(true) {
        assert_eq!(
            (n("remaining"), n("pending"), n("confirmed")),
            (0, 0, 0),
            "cancelled slot {slot}"
        );
    } else {
        assert_eq!(
            n("remaining") + n("pending") + n("confirmed") + n("administered") + n("no_show"),
            n("capacity"),
            "counters of {slot}"
        );
    }
}

/// The slot `slot_id` of an availability answer.
pub fn slot<'a>(avail: &'a Value, slot_id: &str) -> &'a Value {
    avail["slots"]
        .as_array()
        .expect("slots is an array")
        .iter()
        .find(|s| s["slot_id"] == slot_id)
        .unwrap_or_else(|| panic!("no slot {slot_id} in {avail}"))
}

/// `(on_hand, reserved, available)` of `vaccine` in an availability answer.
pub fn stock(avail: &Value, vaccine: &str) -> (i64, i64, i64) {
    let s = &avail["stock"][vaccine];
    let n = |f: &str| {
        s[f].as_i64()
            .unwrap_or_else(|| panic!("no stock.{vaccine}.{f} in {avail}"))
    };
    (n("on_hand"), n("reserved"), n("available"))
}

/// `(remaining, pending, confirmed)` of a slot in an availability answer.
pub fn seats(avail: &Value, slot_id: &str) -> (u64, u64, u64) {
    let s = slot(avail, slot_id);
    (
        s["remaining"].as_u64().unwrap(),
        s["pending"].as_u64().unwrap(),
        s["confirmed"].as_u64().unwrap(),
    )
}

/// The ids of the appointments of a listing, in order.
pub fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|a| a["appointment_id"].as_str().unwrap().to_string())
        .collect()
}
