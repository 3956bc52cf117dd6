//! The external eligibility check over HTTP (docs/API.md, "External eligibility check"):
//! [`HttpEligibility`] implements the engine's [`ExternalCheck`].
//!
//! Every booking POSTs `{"citizen_id", "insurance_id", "vaccine", "clinic_id"}` to the
//! configured URL and expects `200 {"eligible": true|false, "reason": "..."}`. The whole check,
//! retries included, ends within the time budget (`--eligibility-timeout`):
//!
//! - each attempt may take what is left of the budget (reqwest's per-request timeout, which
//!   covers connecting, the answer and its body);
//! - a failed attempt (a timeout, a refused connection, any status but 200, a 200 whose body is
//!   not the expected JSON) is retried after an exponential back-off with jitter (`backon`'s
//!   schedule: from 20 ms, doubling, each delay plus a random part of up to itself), unless the
//!   next delay would reach the end of the budget;
//! - every attempt asks the circuit breaker ([`crate::breaker`]) first and reports its outcome
//!   to it, so retries count towards `--breaker-failures`; while the breaker is open the check
//!   answers `Unavailable` at once without calling.
//!
//! The check runs in the booking's own task (the saga's), never inside a shard actor. A bad
//! answer never panics: it is a failed attempt.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use holdfast_engine::client::BoxFuture;
use holdfast_engine::external::{
    DependencyStatus, ExternalCheck, ExternalRequest, ExternalVerdict, OutagePolicy,
};
use holdfast_engine::Clock;
use serde_json::Value;
use tokio::time::Instant;

use crate::breaker::{Admission, Breaker, BreakerConfig};

/// The dependency's name in `GET /v1/admin/shards` and in errors.
pub const DEPENDENCY: &str = "eligibility";
/// `--eligibility-timeout`'s default.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_millis(800);
/// The longest `--eligibility-timeout` (a booking's hold waits for the check).
pub const TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// `--breaker-failures`' default.
pub const BREAKER_FAILURES_DEFAULT: u32 = 5;
/// `--breaker-cooldown`'s default.
pub const BREAKER_COOLDOWN_DEFAULT: Duration = Duration::from_secs(30);
/// The first back-off delay; each next one doubles, plus jitter.
pub const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The largest answer body read; a longer one is a failed attempt.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// The longest checker reason passed on (in characters); a longer one is cut.
pub const REASON_CHARS_MAX: usize = 200;

/// How the external check is configured (`holdfast serve`'s flags, or a test's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalConfig {
    /// `--eligibility-url`: an `http://` URL.
    pub url: String,
    /// `--eligibility-timeout`: the budget of one check, retries included.
    pub timeout: Duration,
    /// `--breaker-failures`: failed calls in a row that open the breaker.
    pub breaker_failures: u32,
    /// `--breaker-cooldown`: how long the breaker stays open before one trial.
    pub breaker_cooldown: Duration,
    /// `--outage-policy`.
    pub outage_policy: OutagePolicy,
}

impl ExternalConfig {
    /// `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> ExternalConfig {
        ExternalConfig {
            url: url.into(),
            timeout: TIMEOUT_DEFAULT,
            breaker_failures: BREAKER_FAILURES_DEFAULT,
            breaker_cooldown: BREAKER_COOLDOWN_DEFAULT,
            outage_policy: OutagePolicy::Reject,
        }
    }

    /// Checks the settings; answers the parsed URL.
    pub fn validate(&self) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("--eligibility-url {:?} is not a URL: {e}", self.url))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "--eligibility-url {:?}: this build speaks plain HTTP only (no TLS library \
                     is linked in); use an http:// URL, e.g. a local TLS-terminating proxy",
                    self.url
                ))
            }
            other => {
                return Err(format!(
                    "--eligibility-url {:?}: the scheme must be http, not {other:?}",
                    self.url
                ))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("--eligibility-url {:?} has no host", self.url));
        }
        if self.timeout.is_zero() || self.timeout > TIMEOUT_MAX {
            return Err("--eligibility-timeout must be positive and at most 10m".into());
        }
        if self.breaker_failures == 0 {
            return Err("--breaker-failures must be at least 1".into());
        }
        if self.breaker_cooldown.is_zero() {
            return Err("--breaker-cooldown must be positive".into());
        }
        Ok(url)
    }
}

/// The external eligibility check over HTTP, with its budget, retries and breaker.
pub struct HttpEligibility {
    shared: Arc<Shared>,
}

struct Shared {
    /// One client for every check: its connection pool is shared.
    client: reqwest::Client,
    url: reqwest::Url,
    budget: Duration,
    breaker: Breaker,
}

/// A checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Eligible,
    NotEligible(String),
}

impl HttpEligibility {
    /// Validates `config` and builds the client; the breaker reads time from `clock`.
    pub fn new(config: &ExternalConfig, clock: Arc<dyn Clock>) -> Result<HttpEligibility, String> {
        let url = config.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the eligibility client: {e}"))?;
        let cooldown_ms = i64::try_from(config.breaker_cooldown.as_millis()).unwrap_or(i64::MAX);
        let breaker = Breaker::new(
            DEPENDENCY,
            BreakerConfig {
                failures: config.breaker_failures,
                cooldown_ms,
            },
            clock,
        );
        Ok(HttpEligibility {
            shared: Arc::new(Shared {
                client,
                url,
                budget: config.timeout,
                breaker,
            }),
        })
    }
}

impl ExternalCheck for HttpEligibility {
    fn check(&self, request: ExternalRequest) -> BoxFuture<'static, ExternalVerdict> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.check(&request).await })
    }

    fn status(&self) -> DependencyStatus {
        self.shared.breaker.status()
    }
}

impl Shared {
    async fn check(&self, request: &ExternalRequest) -> ExternalVerdict {
        let now = Instant::now();
        // The budget is at most TIMEOUT_MAX, so this does not overflow; if it did, an hour.
        let deadline = now
            .checked_add(self.budget)
            .unwrap_or(now + Duration::from_secs(3600));
        // The attempts keep to the deadline themselves; this bounds anything they missed (a
        // call cancelled here counts as a failure with the breaker).
        match tokio::time::timeout_at(deadline, self.attempts(request, deadline)).await {
            Ok(verdict) => verdict,
            Err(_) => self.unavailable(format!("no answer within {:?}", self.budget)),
        }
    }

    async fn attempts(&self, request: &ExternalRequest, deadline: Instant) -> ExternalVerdict {
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(BACKOFF_MIN)
            .with_factor(2.0)
            .with_max_delay(self.budget)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempts = 0u32;
        let mut last_failure = String::from("no attempt was made within the budget");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let admission = if attempts == 0 {
                self.breaker.admit()
            } else {
                self.breaker.admit_retry()
            };
            let call = match admission {
                Admission::Go(call) => call,
                Admission::ShortCircuited { retry_after_s } => {
                    let why = if attempts == 0 {
                        "the circuit breaker is open".to_string()
                    } else {
                        format!("the circuit breaker opened after: {last_failure}")
                    };
                    return ExternalVerdict::Unavailable { retry_after_s, why };
                }
            };
            attempts += 1;
            match self.attempt(request, left).await {
                Ok(answer) => {
                    call.succeeded();
                    return match answer {
                        Answer::Eligible => ExternalVerdict::Eligible,
                        Answer::NotEligible(reason) => ExternalVerdict::NotEligible { reason },
                    };
                }
                Err(why) => {
                    call.failed();
                    tracing::debug!(attempt = attempts, %why, "eligibility check attempt failed");
                    last_failure = why;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match backoff.next() {
                // Sleep only when an attempt can still follow within the budget.
                Some(delay) if delay < left => tokio::time::sleep(delay).await,
                _ => break,
            }
        }
        self.unavailable(format!(
            "{attempts} attempt(s) failed; the last: {last_failure}"
        ))
    }

    fn unavailable(&self, why: String) -> ExternalVerdict {
        ExternalVerdict::Unavailable {
            retry_after_s: self.breaker.retry_after_s(),
            why,
        }
    }

    /// One POST with at most `timeout` for all of it; `Err` says why it failed.
    async fn attempt(
        &self,
        request: &ExternalRequest,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut response = self
            .client
            .post(self.url.clone())
            .timeout(timeout)
            .json(request)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("the checker answered {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > ANSWER_BYTES_MAX {
                return Err(format!(
                    "the checker's answer is longer than {ANSWER_BYTES_MAX} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(&body)
    }
}

/// `{"eligible": true}` or `{"eligible": false, "reason": "..."}`; anything else is a failed
/// attempt. A missing or null reason is `unspecified`; a reason is cut to
/// [`REASON_CHARS_MAX`] characters, without control characters.
fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the checker's answer is not JSON: {e}"))?;
    let eligible = value
        .get("eligible")
        .and_then(Value::as_bool)
        .ok_or("the checker's answer has no boolean `eligible`")?;
    if eligible {
        return Ok(Answer::Eligible);
    }
    let reason = match value.get("reason") {
        None | Some(Value::Null) => "",
        Some(Value::String(reason)) => reason.as_str(),
        Some(_) => return Err("the checker's `reason` is not a string".into()),
    };
    let reason: String = reason
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(REASON_CHARS_MAX)
        .collect();
    Ok(Answer::NotEligible(if reason.is_empty() {
        "unspecified".to_string()
    } else {
        reason
    }))
}

/// A transport failure in a few words, with its causes.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(br#"{"eligible": true}"#), Ok(Answer::Eligible));
        assert_eq!(
            parse_answer(br#"{"eligible": true, "reason": "ignored"}"#),
            Ok(Answer::Eligible)
        );
        assert_eq!(
            parse_answer(br#"{"eligible": false, "reason": "insurance_lapsed"}"#),
            Ok(Answer::NotEligible("insurance_lapsed".into()))
        );
        assert_eq!(
            parse_answer(br#"{"eligible": false}"#),
            Ok(Answer::NotEligible("unspecified".into()))
        );
        assert_eq!(
            parse_answer(br#"{"eligible": false, "reason": " a\u0007b\n "}"#),
            Ok(Answer::NotEligible("ab".into()))
        );
        let long = format!(r#"{{"eligible": false, "reason": "{}"}}"#, "x".repeat(1000));
        assert_eq!(
            parse_answer(long.as_bytes()),
            Ok(Answer::NotEligible("x".repeat(REASON_CHARS_MAX)))
        );
    }

    #[test]
    fn malformed_answers_are_failures() {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            b"null",
            br#"{"eligible": "yes"}"#,
            br#"{"eligible": 1}"#,
            br#"{"eligible": false, "reason": 7}"#,
            b"\xff\xfe",
        ] {
            assert!(
                parse_answer(body).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn settings_are_validated() {
        let ok = ExternalConfig::new("http://127.0.0.1:9000/check");
        assert!(ok.validate().is_ok());
        assert!(
            ExternalConfig::new("http://checker.internal/v1/eligibility")
                .validate()
                .is_ok()
        );
        for url in [
            "",
            "nope",
            "127.0.0.1:9000",
            "ftp://x/",
            "https://x/",
            "http://",
        ] {
            assert!(ExternalConfig::new(url).validate().is_err(), "{url:?}");
        }
        for timeout in [Duration::ZERO, TIMEOUT_MAX + Duration::from_millis(1)] {
            let bad = ExternalConfig {
                timeout,
                ..ok.clone()
            };
            assert!(bad.validate().is_err(), "{timeout:?}");
        }
        let no_failures = ExternalConfig {
            breaker_failures: 0,
            ..ok.clone()
        };
        assert!(no_failures.validate().is_err());
        let no_cooldown = ExternalConfig {
            breaker_cooldown: Duration::ZERO,
            ..ok
        };
        assert!(no_cooldown.validate().is_err());
    }

    #[test]
    fn the_back_off_starts_small_and_grows() {
        let delays: Vec<Duration> = ExponentialBuilder::new()
            .with_min_delay(BACKOFF_MIN)
            .with_factor(2.0)
            .with_max_delay(Duration::from_millis(800))
            .with_jitter()
            .without_max_times()
            .build()
            .take(8)
            .collect();
        for (i, delay) in delays.iter().enumerate() {
            let base = BACKOFF_MIN * 2u32.pow(i as u32).min(40);
            let base = base.min(Duration::from_millis(800));
            // backon computes in f32 seconds: allow it a rounding error.
            let (d, b) = (delay.as_secs_f64(), base.as_secs_f64());
            assert!(
                d >= b * 0.99 && d <= b * 2.01,
                "delay {i} is {delay:?}, base {base:?}: {delays:?}"
            );
        }
    }
}
