//! The HTTP client of the harness: per-request timeouts, bounded retries of timed-out
//! requests (creates with the same Idempotency-Key, so a retry can never book twice), and
//! token minting from the server's secret.

use std::time::Duration;

use holdfast_gateway::auth::{Claims, JwtKey, Role};
use serde_json::Value;

use crate::http::Failure;
pub use crate::http::Method;
pub use crate::http::{Http, Req};

/// Lifetime of every token the harness mints: longer than any sensible run, so no token
/// expires mid-run (the server allows 5 s of leeway only).
pub const TOKEN_TTL_S: i64 = 24 * 3600;
/// Pause before retrying a timed-out request: enough for a stalled server to breathe, short
/// enough not to distort a run.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How many refusals (`429`/`503`, each after its `Retry-After`) one set-up call rides out:
/// a campaign is set up against a server that may be running a flood of its own.
pub const SETUP_REFUSED_RETRIES: u32 = 30;
/// The longest a refused set-up call waits before it is sent again.
pub const SETUP_RETRY_AFTER_MAX: Duration = Duration::from_secs(5);

/// Mints HS256 tokens like the server's own `holdfast token`.
#[derive(Debug)]
pub struct Tokens {
    key: JwtKey,
}

impl Tokens {
    pub fn from_secret(bytes: &[u8]) -> Result<Tokens, String> {
        Ok(Tokens {
            key: JwtKey::from_secret_file_bytes(bytes)?,
        })
    }

    fn sign(&self, role: Role, sub: String, citizen_id: Option<&str>) -> String {
        self.sign_claims(Claims {
            sub,
            role,
            exp: chrono::Utc::now().timestamp() + TOKEN_TTL_S,
            citizen_id: citizen_id.map(str::to_string),
            clinic_id: None,
        })
    }

    fn sign_claims(&self, claims: Claims) -> String {
        format!("Bearer {}", self.key.sign(&claims))
    }

    /// `Authorization` header value for the authority (campaign set-up, checker).
    pub fn authority(&self) -> String {
        self.sign(Role::Authority, "holdfast-load-authority".into(), None)
    }

    /// `Authorization` header value for a staff member of `clinic_id` (administrations and
    /// clinic cancellations); one `sub` per clinic.
    pub fn staff(&self, clinic_id: &str) -> String {
        self.sign_claims(Claims {
            sub: format!("staff:{clinic_id}"),
            role: Role::Staff,
            exp: chrono::Utc::now().timestamp() + TOKEN_TTL_S,
            citizen_id: None,
            clinic_id: Some(clinic_id.to_string()),
        })
    }

    /// `Authorization` header value for a citizen; `sub` is per citizen, so Idempotency-Keys
    /// are scoped to the citizen as a real frontend's would be.
    pub fn citizen(&self, citizen_id: &str) -> String {
        self.sign(
            Role::Citizen,
            format!("citizen:{citizen_id}"),
            Some(citizen_id),
        )
    }

    /// The bare token (without `Bearer `), for the checker.
    pub fn authority_token(&self) -> String {
        self.authority().trim_start_matches("Bearer ").to_string()
    }
}

/// One answer, or a transport failure (status 0).
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// HTTP status, 0 when no answer came.
    pub status: u16,
    /// `error.code` of an error body (a 503's with `:` and its `details.reason`, when it has
    /// one); `TIMEOUT` or `TRANSPORT` for status 0; empty on success.
    pub code: String,
    /// The JSON body (`Null` when absent or not JSON).
    pub body: Value,
    /// How many times the request was sent (1 + retries).
    pub attempts: u32,
    /// The `Retry-After` header, in seconds, when the answer carried one.
    pub retry_after_s: Option<u64>,
}

impl Reply {
    fn failure(code: &str, message: String) -> Reply {
        Reply {
            status: 0,
            code: code.to_string(),
            body: Value::String(message),
            attempts: 1,
            retry_after_s: None,
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.status == 0 && self.code == "TIMEOUT"
    }

    pub fn is_transport_failure(&self) -> bool {
        self.status == 0
    }

    /// A refusal that decided nothing and asks the client to come back (`429` or `503`):
    /// the server's overload bound, a rate limit or a waiting room.
    pub fn is_refusal(&self) -> bool {
        crate::stats::is_refusal(self.status)
    }
}

/// A base URL and a pool of connections to it; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Api {
    pub http: Http,
    pub base: String,
    pub timeout: Duration,
    pub retries: u32,
}

impl Api {
    /// A client of the server at `base` (`http://host:port`) keeping up to `connections`
    /// idle connections.
    pub fn new(
        base: &str,
        connections: usize,
        timeout: Duration,
        retries: u32,
    ) -> Result<Api, String> {
        if !base.starts_with("http://") {
            return Err(format!(
                "{base}: the harness speaks plain HTTP/1.1 (http://host:port)"
            ));
        }
        let base = base.trim_end_matches('/').to_string();
        Ok(Api {
            http: Http::new(&base, connections),
            base,
            timeout,
            retries,
        })
    }

    /// The same client against another base URL (a restarted server on a new port), with a
    /// pool of its own.
    pub fn with_base(&self, base: &str) -> Api {
        let base = base.trim_end_matches('/').to_string();
        Api {
            http: Http::new(&base, self.http.max_idle()),
            base,
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends once with the per-request timeout.
    pub async fn send(&self, req: &Req<'_>) -> Reply {
        let answer = match self.http.request(req, self.timeout).await {
            Ok(answer) => answer,
            Err(Failure::Timeout(e)) => return Reply::failure("TIMEOUT", e),
            Err(Failure::Transport(e)) => return Reply::failure("TRANSPORT", e),
        };
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let code = if answer.status >= 400 {
            let code = body["error"]["code"].as_str().unwrap_or("NO_ERROR_CODE");
            // A 503 says why in `details.reason` (overloaded, idempotency_keys_full, disk_full,
            // ...): kept with the code, so the report's table tells the refusals apart.
            match body["error"]["details"]["reason"].as_str() {
                Some(reason) if answer.status == 503 => format!("{code}:{reason}"),
                _ => code.to_string(),
            }
        } else {
            String::new()
        };
        Reply {
            status: answer.status,
            code,
            body,
            attempts: 1,
            retry_after_s: answer.retry_after_s,
        }
    }

    /// Sends, and re-sends a request that timed out, up to `retries` more times: the
    /// identical request each time (for a create: the same Idempotency-Key and body, so
    /// whatever the first attempt did, the retry gets its answer).
    pub async fn send_retrying(&self, req: &Req<'_>) -> Reply {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut reply = self.send(req).await;
            reply.attempts = attempts;
            if !reply.is_timeout() || attempts > self.retries {
                return reply;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// `POST /v1/appointments` with an Idempotency-Key, retried with the same key on timeout.
    pub async fn create(&self, bearer: &str, key: &str, body: &Value) -> Reply {
        self.create_admitted(bearer, key, body, None).await
    }

    /// A create with the waiting room's `Admission-Token`, when there is one.
    pub async fn create_admitted(
        &self,
        bearer: &str,
        key: &str,
        body: &Value,
        admission: Option<&str>,
    ) -> Reply {
        let req = Req::post("/v1/appointments")
            .auth(bearer)
            .key(key)
            .admission(admission)
            .json(body);
        self.send_retrying(&req).await
    }

    /// `POST /v1/queue`: the citizen's ticket in the waiting room.
    pub async fn queue_join(&self, bearer: &str) -> Reply {
        self.send_retrying(&Req::post("/v1/queue").auth(bearer))
            .await
    }

    /// `GET /v1/queue/{ticket}`.
    pub async fn queue_poll(&self, bearer: &str, ticket: &str) -> Reply {
        let path = format!("/v1/queue/{ticket}");
        self.send_retrying(&Req::get(&path).auth(bearer)).await
    }

    /// `POST /v1/appointments/{id}/{action}` (`confirm` or `cancel`); repeating a transition
    /// that already happened answers 200 with the current appointment, so a timed-out one is
    /// safely retried.
    pub async fn transition(&self, bearer: &str, id: &str, action: &str) -> Reply {
        let path = format!("/v1/appointments/{id}/{action}");
        self.send_retrying(&Req::post(&path).auth(bearer)).await
    }

    /// `POST /v1/appointments/{id}/administer` as staff, with the confirm's `qr_token` and a
    /// batch; administering twice answers the current appointment, so a timed-out one is
    /// safely retried.
    pub async fn administer(&self, staff: &str, id: &str, qr_token: &str, batch: &str) -> Reply {
        let path = format!("/v1/appointments/{id}/administer");
        let body = serde_json::json!({ "qr_token": qr_token, "batch": batch });
        self.send_retrying(&Req::post(&path).auth(staff).json(&body))
            .await
    }

    /// `POST /v1/clinics/{clinic}/slots/{slot}/waitlist` as the citizen, with an
    /// Idempotency-Key (a timed-out join is retried with it, so it cannot join twice).
    pub async fn join_waitlist(
        &self,
        bearer: &str,
        key: &str,
        (clinic_id, slot_id): (&str, &str),
        body: &Value,
    ) -> Reply {
        let path = format!("/v1/clinics/{clinic_id}/slots/{slot_id}/waitlist");
        let req = Req::post(&path).auth(bearer).key(key).json(body);
        self.send_retrying(&req).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(&Req::get(path)).await
    }

    /// An authority call with a JSON body (`PUT` or `POST`), for the campaign set-up.
    pub async fn authority_call(
        &self,
        method: Method,
        bearer: &str,
        path: &str,
        body: &Value,
    ) -> Reply {
        let req = Req::new(method, path).auth(bearer).json(body);
        let mut refusals = 0;
        loop {
            let reply = self.send_retrying(&req).await;
            // A refusal decided nothing (an overloaded server): the set-up waits as asked.
            if !reply.is_refusal() || refusals >= SETUP_REFUSED_RETRIES {
                return reply;
            }
            refusals += 1;
            let wait = Duration::from_secs(reply.retry_after_s.unwrap_or(1));
            tokio::time::sleep(wait.min(SETUP_RETRY_AFTER_MAX)).await;
        }
    }

    /// `GET /healthz` reading the body but not parsing it: the ceiling measures HTTP, not
    /// the harness's JSON parser.
    pub async fn noop(&self) -> u16 {
        match self.http.request(&Req::get("/healthz"), self.timeout).await {
            Ok(answer) => answer.status,
            Err(_) => 0,
        }
    }
}

/// Poll period of [`Api::wait_ready`].
pub const READY_POLL: Duration = Duration::from_millis(50);

impl Api {
    /// Waits until the server answers `GET /readyz` with 200 (every shard recovered), at
    /// most `limit`. After a restart the listener accepts connections before it is ready.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut last = String::from("no answer");
        while started.elapsed() < limit {
            let reply = self.get("/readyz").await;
            if reply.status == 200 {
                return Ok(());
            }
            last = match reply.status {
                0 => reply.body.as_str().unwrap_or_default().to_string(),
                s => format!("{s} {}", reply.code),
            };
            tokio::time::sleep(READY_POLL).await;
        }
        Err(format!(
            "{} is not ready after {limit:?} (last: {last})",
            self.base
        ))
    }
}
