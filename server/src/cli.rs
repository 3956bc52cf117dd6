//! The command line: `holdfast serve` and `holdfast token` (docs/API.md, "Server flags").

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use holdfast_engine::external::OutagePolicy;
use holdfast_gateway::admission::rate_limit::{Rate, RATE_LIMIT_KEYS_DEFAULT};
use holdfast_gateway::admission::waiting_room::WAITING_ROOM_RATE_MAX;
use holdfast_gateway::admission::AdmissionConfig;
use holdfast_gateway::overload::{OverloadLimits, WRITES_IN_FLIGHT_MAX_LIMIT};
use holdfast_gateway::qr::QrKeyring;

use crate::eligibility::ExternalConfig;
use crate::webhooks::WebhooksConfig;

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "holdfast: a reservation engine for scarce, time-bound inventory (vaccine campaigns)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up and moved once: the size of `serve`'s flags costs nothing, and
// boxing them would only add a dereference to every flag's use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the embedded default: one node owning every shard).
    Serve(ServeArgs),
    /// Print a signed token for a role.
    Token(TokenArgs),
    /// Offline tools for the audit log (the server must not be running on the directory).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit chain of a data directory; print `{"ok": true, "records", "head"}` or
    /// `{"ok": false, "first_bad_seq", "reason"}` and exit 1 on a break.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Clone, Parser)]
pub struct AuditVerifyArgs {
    /// Data directory whose audit log to verify.
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Answer a mutating call only after its change is on disk.
    Sync,
    /// Answer once the change is written to the log, before it is flushed; the log is
    /// flushed every 5 ms (ASYNC_FLUSH_INTERVAL_MS_DEFAULT), so a crash of the machine can
    /// lose the changes acknowledged in the last 5 ms plus those still queued for the writer.
    Async,
}

#[derive(Debug, Clone, Parser)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port; see --addr-file.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Once listening, write the bound address (`127.0.0.1:41234`) to this file (atomically,
    /// so a reader never sees half of it). With `--listen 127.0.0.1:0` this is how a test or
    /// the load harness learns the port without racing another process for it.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Most connections open at once (a count, at least 1). A connection beyond it is answered
    /// 503 UNAVAILABLE with Retry-After and closed. Keep it under the open-file limit
    /// (`ulimit -n`) with room for the data files.
    #[arg(long, default_value_t = crate::connections::CONNECTIONS_MAX_DEFAULT,
        value_parser = parse_connections_max)]
    pub connections_max: usize,
    /// Data directory (its manifest fixes the shard count).
    #[arg(long, default_value = "./holdfast-data")]
    pub data_dir: PathBuf,
    /// File whose bytes are the HS256 secret (one trailing newline trimmed). With --demo and
    /// no file, `<data-dir>/jwt-secret` is created and used.
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// QR signing keys, one per line, newest first (blank lines and `#` comments skipped; at
    /// least 16 bytes each, at most 8 keys). The first signs new tokens, every one verifies.
    /// To rotate: prepend a new key and restart; remove an old key once every token it signed
    /// has been administered or its slot is over. Default: one key derived from the JWT secret.
    #[arg(long)]
    pub qr_key_file: Option<PathBuf>,
    /// Hold time when a booking does not say (`hold_seconds`).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub hold_ttl: Duration,
    /// Longest hold; longer `hold_seconds` are clamped to it.
    #[arg(long, default_value = "900s", value_parser = parse_duration)]
    pub max_hold: Duration,
    /// Most entries one slot's waitlist holds (a join beyond is 409 LIMIT_REACHED).
    #[arg(long, default_value_t = holdfast_engine::waitlist::WAITLIST_PER_SLOT_MAX_DEFAULT,
        value_parser = parse_waitlist_max)]
    pub waitlist_max: usize,
    /// Stored idempotent answers one shard keeps (a count; the node keeps this many times
    /// --shards, each answer about 500 bytes of memory and snapshot). Answers are replayed for
    /// 24 h; once a shard's table is full, a new Idempotency-Key is refused with 503 until
    /// older answers expire. The default holds about 2.1 million keys on 64 shards.
    #[arg(long, default_value_t = holdfast_engine::idempotency::RECORDS_PER_SHARD_MAX_DEFAULT,
        value_parser = parse_idempotency_keys)]
    pub idempotency_keys_per_shard: usize,
    /// How long after its slot ends a CONFIRMED appointment becomes NO_SHOW by itself (its
    /// dose returns); 0s..=168h. A change applies to appointments confirmed from then on.
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub no_show_grace: Duration,
    /// A reschedule is refused (409 TOO_LATE) when the old appointment's slot starts within
    /// this much time; 0s (the default) turns the rule off.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub reschedule_notice: Duration,
    /// sync: answer after the change is on disk (sled flush + fdatasync, group-committed);
    /// async: answer before the flush; a machine crash may lose about the last 5 ms of
    /// acknowledged changes (a process crash alone loses nothing the OS already has).
    #[arg(long, value_enum, default_value = "sync")]
    pub durability: Durability,
    /// Free space (MiB) the data directory's filesystem must keep: below it, and while the
    /// filesystem is read-only, writes are refused with 503 UNAVAILABLE (`details.reason`
    /// `disk_full` / `read_only`) before they change anything; reads go on, and writes resume
    /// by themselves once space returns. 0 turns the reserve off (read-only still refuses).
    #[arg(long, default_value_t = holdfast_persistence::DISK_RESERVE_BYTES_DEFAULT / MIB)]
    pub disk_reserve_mib: u64,
    /// Virtual shards; takes effect when the data directory is created (default 64).
    #[arg(long)]
    pub shards: Option<u32>,
    /// Load a demo campaign (once: loading again adds nothing) and print tokens and curl
    /// commands to try it.
    #[arg(long)]
    pub demo: bool,
    /// External eligibility service (an http:// URL): every booking POSTs {"citizen_id",
    /// "insurance_id", "vaccine", "clinic_id"} there and expects 200 {"eligible": true|false,
    /// "reason": "..."}. Default: none (no external check).
    #[arg(long)]
    pub eligibility_url: Option<String>,
    /// Time budget of one booking's eligibility check, retries with back-off included (a
    /// duration: 500ms, 2s; at most 10m).
    #[arg(long, default_value = "800ms", value_parser = parse_duration)]
    pub eligibility_timeout: Duration,
    /// Failed eligibility calls in a row (retries included; a count, at least 1) that open
    /// the circuit breaker.
    #[arg(long, default_value_t = crate::eligibility::BREAKER_FAILURES_DEFAULT)]
    pub breaker_failures: u32,
    /// How long the open circuit answers bookings without calling the checker before it lets
    /// one trial call through (a duration: 500ms, 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub breaker_cooldown: Duration,
    /// What a booking does when the eligibility check is unavailable (no answer within the
    /// budget, or the circuit open).
    #[arg(long, value_enum, default_value = "reject")]
    pub outage_policy: OutagePolicyArg,
    /// A receiver (an http:// URL) POSTed every event as signed JSON, in sequence order, at
    /// least once; repeat the flag for more (at most 16). Needs --webhook-secret-file.
    /// Default: none.
    #[arg(long = "webhook-url", value_name = "URL")]
    pub webhook_urls: Vec<String>,
    /// File whose bytes (one trailing newline trimmed; at least 16 bytes) are the key of the
    /// webhooks' `X-Holdfast-Signature-256` (HMAC-SHA256). Required with --webhook-url.
    #[arg(long, value_name = "F")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Rate limit per caller (the token's `sub`) on the citizen's mutating endpoints (book,
    /// confirm, cancel, reschedule, waitlist join and leave, queue): a token bucket of this
    /// rate with a burst of the same size, e.g. 10/s, 600/m, 1000/h. Over it: 429
    /// RATE_LIMITED with Retry-After. Default: off.
    #[arg(long, value_name = "N/s")]
    pub rate_limit: Option<Rate>,
    /// Rate limit per client IP (the TCP peer; X-Forwarded-For is not trusted; IPv6 per /64)
    /// on the same endpoints, e.g. 50/s. Default: off.
    #[arg(long, value_name = "N/s")]
    pub ip_rate_limit: Option<Rate>,
    /// Most keys (callers, IPs) each rate limiter remembers, a count; beyond it the key idle
    /// the longest is forgotten (about 80 bytes a key).
    #[arg(long, default_value_t = RATE_LIMIT_KEYS_DEFAULT, value_parser = parse_rate_limit_keys)]
    pub rate_limit_keys: usize,
    /// Waiting room: admit at most N booking citizens per second across the node (a count
    /// per second, 1-1000000). Citizens queue at POST /v1/queue and book with the
    /// Admission-Token they are admitted with; without one a booking is 429 QUEUE_REQUIRED.
    /// Tickets live in memory: a restart empties the room. Default: off.
    #[arg(long, value_name = "N", value_parser = parse_waiting_room)]
    pub waiting_room: Option<NonZeroU32>,
    /// How long an admission token stays good (a duration: 90s, 10m, 1h); it books once.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub admission_ttl: Duration,
    /// How log lines are written to stderr; the level comes from RUST_LOG (default `info`;
    /// `holdfast_gateway=debug` adds one line per request).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Overload: writes (every API request but GET and HEAD) in flight across the node;
    /// reads get twice as many. A request that finds no permit waits at most
    /// --in-flight-wait, then is answered 503 UNAVAILABLE with Retry-After (1..=65536).
    #[arg(long, default_value_t = holdfast_gateway::overload::WRITES_IN_FLIGHT_MAX_DEFAULT,
        value_parser = parse_max_in_flight)]
    pub max_in_flight: u32,
    /// Overload: the longest a request waits for a permit of --max-in-flight before its 503
    /// (0ms refuses at once; at most 10s).
    #[arg(long, default_value = "100ms", value_parser = parse_in_flight_wait)]
    pub in_flight_wait: Duration,
}

/// Bytes in a MiB (`--disk-reserve-mib`).
pub const MIB: u64 = 1024 * 1024;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON): the event's fields at the top
    /// level, the request's span (`request_id`, `route`, `method`) under `span`.
    Json,
}

/// `--outage-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutagePolicyArg {
    /// Answer 503 UNAVAILABLE with Retry-After; the hold is rolled back.
    Reject,
    /// Book anyway, with `needs_review: true`.
    Provisional,
}

impl From<OutagePolicyArg> for OutagePolicy {
    fn from(policy: OutagePolicyArg) -> OutagePolicy {
        match policy {
            OutagePolicyArg::Reject => OutagePolicy::Reject,
            OutagePolicyArg::Provisional => OutagePolicy::Provisional,
        }
    }
}

impl ServeArgs {
    /// The node-wide bound on requests in flight of `--max-in-flight` and `--in-flight-wait`.
    pub fn overload_limits(&self) -> OverloadLimits {
        OverloadLimits {
            writes_in_flight_max: self.max_in_flight,
            in_flight_wait_ms: self.in_flight_wait.as_millis() as u64,
        }
    }

    /// The QR keys of `--qr-key-file` (see [`QrKeyring::from_key_file`] for its format);
    /// `None` without the flag (the server derives one key from the JWT secret).
    pub fn qr_keys(&self) -> Result<Option<QrKeyring>, String> {
        let Some(path) = &self.qr_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the QR key file {}: {e}", path.display()))?;
        QrKeyring::from_key_file(&text)
            .map(Some)
            .map_err(|e| format!("--qr-key-file {}: {e}", path.display()))
    }

    /// The external check these flags ask for (none without `--eligibility-url`), validated.
    pub fn external_config(&self) -> Result<Option<ExternalConfig>, String> {
        let Some(url) = &self.eligibility_url else {
            return Ok(None);
        };
        let config = ExternalConfig {
            url: url.clone(),
            timeout: self.eligibility_timeout,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: self.breaker_cooldown,
            outage_policy: self.outage_policy.into(),
        };
        config.validate()?;
        Ok(Some(config))
    }
}

impl ServeArgs {
    /// The admission control these flags ask for (`--rate-limit`, `--waiting-room`, ...).
    pub fn admission_config(&self) -> AdmissionConfig {
        AdmissionConfig {
            rate_limit: self.rate_limit,
            ip_rate_limit: self.ip_rate_limit,
            rate_limit_keys: NonZeroUsize::new(self.rate_limit_keys).unwrap_or(NonZeroUsize::MIN),
            waiting_room: self.waiting_room,
            admission_ttl_ms: i64::try_from(self.admission_ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The webhooks these flags ask for (none without `--webhook-url`), validated: a URL
    /// without a secret file, a secret file without a URL, an unreadable or short secret and
    /// a URL that is not http:// are start-up errors.
    pub fn webhooks_config(&self) -> Result<Option<WebhooksConfig>, String> {
        let path = match (&self.webhook_secret_file, self.webhook_urls.is_empty()) {
            (None, true) => return Ok(None),
            (Some(_), true) => {
                return Err("--webhook-secret-file is given without any --webhook-url".into())
            }
            (None, false) => {
                return Err(
                    "--webhook-url needs --webhook-secret-file (the key that signs \
                            every delivery)"
                        .into(),
                )
            }
            (Some(path), false) => path,
        };
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the webhook secret file {}: {e}",
                path.display()
            )
        })?;
        WebhooksConfig::new(&self.webhook_urls, &bytes).map(Some)
    }
}

#[derive(Debug, Clone, Parser)]
pub struct TokenArgs {
    #[arg(long)]
    pub jwt_secret_file: PathBuf,
    #[arg(long, value_parser = ["citizen", "staff", "authority", "operator"])]
    pub role: String,
    #[arg(long)]
    pub citizen_id: Option<String>,
    #[arg(long)]
    pub clinic_id: Option<String>,
    /// Subject (`sub`); defaults to the role and id.
    #[arg(long)]
    pub sub: Option<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Parses `500ms`, `2s`, `5m`, `2h` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: add a unit (ms, s, m or h)"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a whole number followed by ms, s, m or h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Largest `--waitlist-max`: a slot's list is kept in memory and scanned on every change.
pub const WAITLIST_MAX_MAX: usize = 100_000;

/// `--waitlist-max`: 1..=[`WAITLIST_MAX_MAX`].
fn parse_waitlist_max(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=WAITLIST_MAX_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {WAITLIST_MAX_MAX}"
        )),
    }
}

/// Largest `--idempotency-keys-per-shard`: at ~90 bytes a record in memory (the answers are
/// on disk), 4 Mi keys are about 380 MiB of memory in one shard alone.
pub const IDEMPOTENCY_KEYS_PER_SHARD_MAX: usize = 1 << 22;

/// `--idempotency-keys-per-shard`: 1..=[`IDEMPOTENCY_KEYS_PER_SHARD_MAX`].
fn parse_idempotency_keys(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=IDEMPOTENCY_KEYS_PER_SHARD_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {IDEMPOTENCY_KEYS_PER_SHARD_MAX}"
        )),
    }
}

/// `--rate-limit-keys`: 1 or more.
fn parse_rate_limit_keys(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of keys, 1 or more".into()),
    }
}

/// `--waiting-room`: 1..=[`WAITING_ROOM_RATE_MAX`] admissions per second.
fn parse_waiting_room(s: &str) -> Result<NonZeroU32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=WAITING_ROOM_RATE_MAX).contains(&n) => {
            Ok(NonZeroU32::new(n).expect("not zero"))
        }
        _ => Err(format!(
            "expected a whole number of admissions per second from 1 to {WAITING_ROOM_RATE_MAX}"
        )),
    }
}

/// `--max-in-flight`: 1..=[`WRITES_IN_FLIGHT_MAX_LIMIT`].
fn parse_max_in_flight(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=WRITES_IN_FLIGHT_MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {WRITES_IN_FLIGHT_MAX_LIMIT}"
        )),
    }
}

/// `--connections-max`: at least 1.
fn parse_connections_max(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of connections, at least 1".to_owned()),
    }
}

/// Longest `--in-flight-wait`: a request that waits longer is late whatever it gets.
pub const IN_FLIGHT_WAIT_MAX: Duration = Duration::from_secs(10);

/// `--in-flight-wait`: a duration up to [`IN_FLIGHT_WAIT_MAX`].
fn parse_in_flight_wait(s: &str) -> Result<Duration, String> {
    let wait = parse_duration(s)?;
    if wait > IN_FLIGHT_WAIT_MAX {
        return Err(format!("{s:?}: at most {}s", IN_FLIGHT_WAIT_MAX.as_secs()));
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_flags_are_bounded() {
        assert_eq!(parse_max_in_flight("512"), Ok(512));
        assert!(parse_max_in_flight("0").is_err());
        assert!(parse_max_in_flight("65537").is_err());
        assert_eq!(parse_in_flight_wait("0ms"), Ok(Duration::ZERO));
        assert!(parse_in_flight_wait("11s").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("-2s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn cli_parses() {
        Cli::try_parse_from([
            "holdfast",
            "serve",
            "--demo",
            "--shards",
            "8",
            "--hold-ttl",
            "2s",
        ])
        .unwrap();
        assert!(Cli::try_parse_from(["holdfast", "serve", "--durability", "maybe"]).is_err());
    }

    #[test]
    fn audit_verify_takes_a_data_directory() {
        let cli =
            Cli::try_parse_from(["holdfast", "audit", "verify", "--data-dir", "/tmp/d"]).unwrap();
        match cli.command {
            Command::Audit(AuditCommand::Verify(args)) => {
                assert_eq!(args.data_dir, std::path::Path::new("/tmp/d"))
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["holdfast", "audit", "verify"]).is_err());
    }

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["holdfast", "serve"].iter().chain(args).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(args) => Ok(args),
            Command::Token(_) | Command::Audit(_) => unreachable!("serve parses as serve"),
        }
    }

    #[test]
    fn qr_key_files_are_read_and_checked() {
        assert!(serve_args(&[]).unwrap().qr_keys().unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("holdfast-qr-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(
            &good,
            "# newest first\nkey-b-0123456789abcdef\nkey-a-0123456789abcdef\n",
        )
        .unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tiny\n").unwrap();
        let keys = serve_args(&["--qr-key-file", good.to_str().unwrap()])
            .unwrap()
            .qr_keys()
            .unwrap()
            .expect("keys");
        assert_eq!(keys.len(), 2);
        let error = serve_args(&["--qr-key-file", short.to_str().unwrap()])
            .unwrap()
            .qr_keys()
            .unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("16 bytes"),
            "{error}"
        );
        let missing = dir.join("missing");
        let error = serve_args(&["--qr-key-file", missing.to_str().unwrap()])
            .unwrap()
            .qr_keys()
            .unwrap_err();
        assert!(error.contains("cannot read the QR key file"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn eligibility_flags_default_as_documented() {
        let args = serve_args(&[]).unwrap();
        assert_eq!(args.external_config(), Ok(None));
        let args = serve_args(&["--eligibility-url", "http://127.0.0.1:9000/check"]).unwrap();
        let config = args.external_config().unwrap().expect("configured");
        assert_eq!(config.url, "http://127.0.0.1:9000/check");
        assert_eq!(config.timeout, Duration::from_millis(800));
        assert_eq!(config.breaker_failures, 5);
        assert_eq!(config.breaker_cooldown, Duration::from_secs(30));
        assert_eq!(config.outage_policy, OutagePolicy::Reject);
    }

    #[test]
    fn eligibility_flags_parse_and_are_validated() {
        let args = serve_args(&[
            "--eligibility-url",
            "http://checker.internal:8081/v1/eligibility",
            "--eligibility-timeout",
            "2s",
            "--breaker-failures",
            "2",
            "--breaker-cooldown",
            "500ms",
            "--outage-policy",
            "provisional",
        ])
        .unwrap();
        let config = args.external_config().unwrap().expect("configured");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.breaker_failures, 2);
        assert_eq!(config.breaker_cooldown, Duration::from_millis(500));
        assert_eq!(config.outage_policy, OutagePolicy::Provisional);

        assert!(serve_args(&["--outage-policy", "maybe"]).is_err());
        assert!(serve_args(&["--breaker-failures", "-1"]).is_err());
        assert!(serve_args(&["--eligibility-timeout", "800"]).is_err());
        for bad in [
            &["--eligibility-url", "not a url"][..],
            &["--eligibility-url", "ftp://checker/"],
            &[
                "--eligibility-url",
                "http://x/",
                "--eligibility-timeout",
                "0ms",
            ],
            &["--eligibility-url", "http://x/", "--breaker-failures", "0"],
            &["--eligibility-url", "http://x/", "--breaker-cooldown", "0s"],
        ] {
            let args = serve_args(bad).unwrap();
            assert!(args.external_config().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn webhook_flags_are_checked_at_start_up() {
        assert_eq!(serve_args(&[]).unwrap().webhooks_config(), Ok(None));
        let dir =
            std::env::temp_dir().join(format!("holdfast-webhook-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdef-webhooks\n").unwrap();
        let secret = secret.to_str().unwrap();
        let config = serve_args(&[
            "--webhook-url",
            "http://127.0.0.1:9000/a",
            "--webhook-url",
            "http://127.0.0.1:9000/b",
            "--webhook-secret-file",
            secret,
        ])
        .unwrap()
        .webhooks_config()
        .unwrap()
        .expect("configured");
        assert_eq!(config.urls.len(), 2);
        assert_eq!(config.secret, b"0123456789abcdef-webhooks");
        for (bad, expected) in [
            (
                &["--webhook-url", "http://127.0.0.1:9000/a"][..],
                "needs --webhook-secret-file",
            ),
            (
                &["--webhook-secret-file", secret],
                "without any --webhook-url",
            ),
            (
                &[
                    "--webhook-url",
                    "not a url",
                    "--webhook-secret-file",
                    secret,
                ],
                "not a URL",
            ),
            (
                &[
                    "--webhook-url",
                    "https://x/",
                    "--webhook-secret-file",
                    secret,
                ],
                "plain HTTP",
            ),
            (
                &[
                    "--webhook-url",
                    "http://x/",
                    "--webhook-secret-file",
                    "/nonexistent/secret",
                ],
                "cannot read the webhook secret file",
            ),
        ] {
            let error = serve_args(bad).unwrap().webhooks_config().unwrap_err();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_idempotency_table_is_sized_per_shard_within_bounds() {
        let args = serve_args(&[]).unwrap();
        assert_eq!(
            args.idempotency_keys_per_shard,
            holdfast_engine::idempotency::RECORDS_PER_SHARD_MAX_DEFAULT
        );
        let args = serve_args(&["--idempotency-keys-per-shard", "100000"]).unwrap();
        assert_eq!(args.idempotency_keys_per_shard, 100_000);
        for bad in ["0", "4194305", "many", "-1"] {
            assert!(
                serve_args(&["--idempotency-keys-per-shard", bad]).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn admission_flags_are_off_by_default_and_parse() {
        let config = serve_args(&[]).unwrap().admission_config();
        assert_eq!(config.rate_limit, None);
        assert_eq!(config.ip_rate_limit, None);
        assert_eq!(config.waiting_room, None);
        assert_eq!(config.rate_limit_keys.get(), 1_000_000);
        assert_eq!(config.admission_ttl_ms, 600_000);
        let config = serve_args(&[
            "--rate-limit",
            "10/s",
            "--ip-rate-limit",
            "50/s",
            "--rate-limit-keys",
            "500",
            "--waiting-room",
            "200",
            "--admission-ttl",
            "90s",
        ])
        .unwrap()
        .admission_config();
        assert_eq!(
            config.rate_limit.map(|r| r.to_string()).as_deref(),
            Some("10/s")
        );
        assert_eq!(
            config.ip_rate_limit.map(|r| r.to_string()).as_deref(),
            Some("50/s")
        );
        assert_eq!(config.rate_limit_keys.get(), 500);
        assert_eq!(config.waiting_room.map(|n| n.get()), Some(200));
        assert_eq!(config.admission_ttl_ms, 90_000);
        for bad in [
            &["--rate-limit", "10"][..],
            &["--rate-limit", "0/s"],
            &["--ip-rate-limit", "5/d"],
            &["--rate-limit-keys", "0"],
            &["--waiting-room", "0"],
            &["--waiting-room", "1000001"],
            &["--admission-ttl", "10"],
        ] {
            assert!(serve_args(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn admission_flags_have_help_with_default_and_unit() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let serve = cli.find_subcommand_mut("serve").expect("serve");
        let help = serve.render_long_help().to_string();
        for (flag, needles) in [
            ("--rate-limit <N/s>", &["Default: off", "10/s"][..]),
            (
                "--ip-rate-limit <N/s>",
                &["Default: off", "X-Forwarded-For"],
            ),
            ("--rate-limit-keys", &["[default: 1000000]", "a count"]),
            ("--waiting-room <N>", &["Default: off", "per second"]),
            ("--admission-ttl", &["[default: 10m]", "a duration"]),
        ] {
            let start = help
                .find(flag)
                .unwrap_or_else(|| panic!("no {flag} in {help}"));
            let block: String = help[start..].lines().take(8).collect::<Vec<_>>().join(" ");
            for needle in needles {
                assert!(block.contains(needle), "{flag}: no {needle:?} in {block}");
            }
        }
    }

    #[test]
    fn every_eligibility_flag_has_help_with_its_default() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let serve = cli.find_subcommand_mut("serve").expect("serve");
        let help = serve.render_long_help().to_string();
        // Each option's block: its line and the description lines under it.
        let block = |flag: &str| -> String {
            let mut lines = help.lines().skip_while(|l| {
                !(l.trim_start().starts_with("--") && l.trim_start()[2..].starts_with(&flag[2..]))
            });
            let first = lines.next().unwrap_or_default().to_string();
            let rest: Vec<&str> = lines
                // The next option starts with `-`; a possible value with `- `.
                .take_while(|l| {
                    let l = l.trim_start();
                    !l.starts_with('-') || l.starts_with("- ")
                })
                .collect();
            format!("{first}\n{}", rest.join("\n"))
        };
        for (flag, default) in [
            ("--eligibility-timeout", "[default: 800ms]"),
            ("--breaker-failures", "[default: 5]"),
            ("--breaker-cooldown", "[default: 30s]"),
            ("--outage-policy", "[default: reject]"),
        ] {
            let text = block(flag);
            assert!(
                text.contains(default),
                "{flag} help has no {default}: {text}"
            );
        }
        assert!(help.contains("--eligibility-url"));
    }
}
