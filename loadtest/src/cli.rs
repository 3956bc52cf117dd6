//! The command line of `holdfast-load`: every flag, its default and why it exists.
//!
//! Flags are validated here (before any request is sent) so that a typo costs a usage
//! message and exit code 2, not a half-built campaign on somebody's server.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use holdfast_server::cli::parse_duration;
use serde::Serialize;

/// The longest id prefix: ids are at most 64 characters and the harness appends up to
/// `-steady-c99999` and `-p9999999` to it.
pub const PREFIX_MAX_LEN: usize = 32;
/// Campaign bounds that keep a run's set-up and memory sane (and inside the API's own
/// bounds: capacity is at most 100,000 per slot, quantities at most 10^7).
pub const CLINICS_MAX: usize = 100_000;
pub const SLOTS_PER_CLINIC_MAX: usize = 10_000;
pub const CAPACITY_MAX: u32 = 100_000;
pub const DOSES_MAX: i64 = 10_000_000;
pub const CITIZENS_MAX: usize = 10_000_000;
pub const CONNECTIONS_MAX: usize = 10_000;
/// `--flood-rss-max-mib` default: the server's resident memory bound under a flood of
/// 2,560 connections (measured 2026-12-07: see docs/PERFORMANCE.md, "Overload").
pub const FLOOD_RSS_MAX_MIB_DEFAULT: u64 = 1024;
/// `--kills` bound: each kill costs a restart and a recovery.
pub const KILLS_MAX: usize = 1_000;
/// The earliest a kill comes after a crash round's load started (the connections must be
/// busy): the least `--kill-window` may be.
pub const KILL_DELAY_MIN_MS: u64 = 200;
/// Most slots one run (or one crash round) cancels (`--cancel-slots`): enough to exercise the
/// path, few enough that a launch still has most of its seats to sell.
pub const CANCEL_SLOTS_MAX: usize = 100;
/// The flood fails unless the rate recovers within this after its end; `--flood-calm` must
/// be longer, to see it.
pub const RECOVERY_MAX: Duration = Duration::from_secs(5);
/// `--retries` bound for timed-out requests.
pub const RETRIES_MAX: u32 = 10;
/// `--no-show-group` bound: the group is booked one by one before its slots start, a few
/// seconds after set-up.
pub const NO_SHOW_GROUP_MAX: usize = 200;
/// `--no-show-grace` bound with a no-show group: the crash scenario waits for the group to
/// fall due before its last check, so the grace bounds the run's length.
pub const NO_SHOW_GRACE_MAX: Duration = Duration::from_secs(60);

const AFTER_HELP: &str = "\
EXAMPLES:
  # Everything in one go on this machine: spawn a server (fsync'd), measure the HTTP no-op
  # ceiling, a launch morning and a steady hour, and write one JSON report:
  cargo build --release --bin holdfast --bin holdfast-load
  target/release/holdfast-load --spawn --durability sync \\
      --scenario ceiling,launch,steady --duration 20s --report sync.json

  # The same with async durability, to compare:
  target/release/holdfast-load --spawn --durability async \\
      --scenario ceiling,launch,steady --duration 20s --report async.json

  # Against a running server (its secret mints the tokens; --server-pid adds its CPU use):
  holdfast serve --data-dir d --jwt-secret-file secret &
  holdfast-load --url http://127.0.0.1:8080 --jwt-secret-file secret --server-pid $! \\
      --scenario launch --clinics 100 --slots-per-clinic 10 --capacity 50 --doses 400

  # A small launch that must sell out with every hold confirmed:
  holdfast-load --spawn --scenario launch --clinics 4 --slots-per-clinic 2 --capacity 10 \\
      --confirm-pct 100 --release-pct 0 --connections 16

  # Open loop at 3,000 requests per second (latency corrected for coordinated omission):
  holdfast-load --spawn --scenario steady --rate 3000 --duration 30s

  # Overload: ten times the clients the node serves well (2,560 connections; the fd limit
  # must allow about 2 x 2,600 open files: ulimit -n 8192), then back to 256:
  holdfast-load --spawn --scenario flood --connections 2560 --duration 20s

  # How late are expiries? 2,000 holds of 2 s, availability polled every 2 ms:
  holdfast-load --spawn --scenario expiry --expiry-holds 2000 --expiry-hold 2s

  # Crash rehearsal: SIGKILL the server 5 times under load, restart, verify each time
  # (staff administer 30% of confirmed appointments and cancel 4 slots a round; 20
  # appointments fall due as no-shows 2 s after their slots end, across the kills):
  holdfast-load --spawn --scenario crash --kills 5 --clinics 10 --citizens 5000 \\
      --administer-pct 30 --cancel-slots 4 --no-show-group 20 --no-show-grace 2s

EXIT CODES:
  0  every scenario passed (no invariant violation, no 500)
  1  a violation or a server error: the report lists the ids involved
  2  usage or set-up error (bad flags, unreachable server, campaign set-up refused)";

const LONG_ABOUT: &str = "\
holdfast-load: the load harness for holdfast, built for launch-morning rehearsals.

Unlike a generic HTTP load tool it knows the domain: it sets up its own campaign through the
public API (vaccine, clinics with Zipf-skewed popularity, slots, stock by batch, citizens),
books the way citizens do (hold, then confirm, release or abandon), works the clinic side the
way staff do (administer confirmed appointments with the confirm's QR token and the campaign's
batch, cancel slots; in `crash`, a group of appointments falls due as no-shows across the
kills), sends an Idempotency-Key
with every create, retries timed-out creates with the same key, replays a sample of them on
purpose, and after every scenario (and after every restart in `crash`) checks the server's
invariants: no slot oversold, stock counters equal to the appointments, at most one active
appointment per citizen, every acknowledged change still there, replays faithful.

It targets a running server (--url and --jwt-secret-file), or with --spawn starts the
`holdfast` binary itself on a fresh temporary data directory and a loopback port the kernel
picks, and stops it at the end. Reports: a live progress bar on stderr, tables on stdout (per operation:
count, rate, p50/p90/p99/p99.9/max from HDR histograms; outcomes by status and error code;
client and server CPU), and --report FILE.json with the same figures and the verdict.";

/// One load scenario; several run in sequence with `--scenario a,b,c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every citizen tries to book at once (closed loop, --connections); each hold is
    /// confirmed, released or abandoned by --confirm-pct/--release-pct; runs until sold out
    /// or --duration and reports the time to sell out.
    Launch,
    /// Open loop at --rate requests per second for --duration: availability reads, holds,
    /// confirms and cancels, latency measured from each request's intended start
    /// (corrected for coordinated omission).
    Steady,
    /// --expiry-holds holds of --expiry-hold are abandoned; availability is polled every
    /// few milliseconds to measure how late each expiry is against its deadline.
    Expiry,
    /// (with --spawn) SIGKILL the server at random moments under load (--kills N), restart
    /// it on the same data directory, and check the invariants after every restart.
    Crash,
    /// The same client against GET /healthz: this machine's HTTP no-op rate, so booking
    /// rates can be stated as a fraction of it.
    Ceiling,
    /// Overload: --flood-baseline-connections book for --flood-calm, then --connections
    /// (2,560 for ten times) for --duration, refused requests coming back after their
    /// Retry-After, then the baseline again; reports admitted and refused rates, the p99 of
    /// the admitted, the longest wait, the server's peak memory and the recovery time.
    Flood,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Launch => "launch",
            Scenario::Steady => "steady",
            Scenario::Expiry => "expiry",
            Scenario::Crash => "crash",
            Scenario::Ceiling => "ceiling",
            Scenario::Flood => "flood",
        }
    }
}

/// `--durability` of a spawned server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Answers after the change is fsync'd (group commit).
    Sync,
    /// Answers before the flush.
    Async,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        }
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "holdfast-load",
    version,
    about = "Load harness for holdfast: launch-morning bookings, crash rehearsals and invariant checks",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Args {
    // ---- target ------------------------------------------------------------------------
    /// Base URL of a running server (ignored with --spawn).
    /// Example: --url http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080", help_heading = "Target")]
    pub url: String,
    /// The server's secret file (its bytes are the HS256 key, one trailing newline trimmed),
    /// used to mint citizen and authority tokens. Required without --spawn; with --spawn a
    /// fresh secret is made when absent. Example: --jwt-secret-file holdfast-data/jwt-secret
    #[arg(long, help_heading = "Target")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Start the `holdfast` binary on a fresh temporary data directory, on a loopback port
    /// the kernel picks (read back from its --addr-file), and stop it at the end (required
    /// by the crash scenario).
    #[arg(long, help_heading = "Target")]
    pub spawn: bool,
    /// The `holdfast` binary for --spawn. Default: $HOLDFAST_BIN, else `holdfast` next to
    /// this executable or in its parent directory. Example: --server-bin target/release/holdfast
    #[arg(long, help_heading = "Target")]
    pub server_bin: Option<PathBuf>,
    /// Process id of a running server (without --spawn), to report its CPU use from
    /// /proc/<pid>/stat. Example: --server-pid $(pgrep -n holdfast)
    #[arg(long, help_heading = "Target")]
    pub server_pid: Option<u32>,
    /// --durability of a spawned server: sync (fsync before answering) or async.
    #[arg(
        long,
        value_enum,
        default_value = "sync",
        help_heading = "Spawned server"
    )]
    pub durability: Durability,
    /// --shards of a spawned server.
    #[arg(long, default_value_t = 64, help_heading = "Spawned server")]
    pub shards: u32,
    /// --hold-ttl of a spawned server (holds whose create does not say otherwise).
    /// Example: --hold-ttl 300s
    #[arg(long, default_value = "300s", value_parser = parse_duration, help_heading = "Spawned server")]
    #[serde(serialize_with = "serialize_duration")]
    pub hold_ttl: Duration,
    /// --no-show-grace of a spawned server, and what the checker expects of any server: a
    /// CONFIRMED appointment becomes NO_SHOW this long after its slot ends (the checker
    /// allows --expiry-slack on top). Short by default so the crash scenario's no-show
    /// group falls due within the run; against a running server, give its own value (the
    /// server's default is 2h). Example: --no-show-grace 2s
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Spawned server")]
    #[serde(serialize_with = "serialize_duration")]
    pub no_show_grace: Duration,
    /// Keep the spawned server's temporary data directory (and its log) after the run.
    #[arg(long, help_heading = "Spawned server")]
    pub keep_data: bool,
    /// One more argument for the spawned `holdfast serve`, passed as given (repeat the flag
    /// for several; a flag's value is its own --server-arg, or joined with `=`). For the
    /// admission control: --server-arg=--waiting-room=200 --server-arg=--rate-limit=10/s
    /// --server-arg=--ip-rate-limit=50/s; for the overload bound: --server-arg=--max-in-flight=64.
    /// Default: none.
    #[arg(
        long = "server-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "Spawned server"
    )]
    pub server_args: Vec<String>,

    // ---- what to run ---------------------------------------------------------------------
    /// Scenarios to run in sequence against the same server, comma separated; one report
    /// holds them all. Example: --scenario ceiling,launch,steady
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "launch",
        help_heading = "Run"
    )]
    pub scenario: Vec<Scenario>,
    /// Concurrent connections (closed loop: each has one request in flight; open loop: the
    /// most requests in flight).
    #[arg(long, default_value_t = 256, help_heading = "Run")]
    pub connections: usize,
    /// Longest run of each scenario (launch stops earlier when sold out). Example: 30s, 2m
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Run")]
    #[serde(serialize_with = "serialize_duration")]
    pub duration: Duration,
    /// Seed of every random choice (clinic, slot, outcome, kill moments); default: from the
    /// clock. The report records the seed used, so a run can be repeated.
    #[arg(long, help_heading = "Run")]
    pub seed: Option<u64>,
    /// Prefix of every id the run creates (vaccine, clinics, citizens), so runs against one
    /// server do not collide. Default: `lt` and the start time. At most 32 of [A-Za-z0-9_-].
    #[arg(long, help_heading = "Run")]
    pub prefix: Option<String>,
    /// Per-request timeout. Example: --timeout 5s
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Run")]
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// How many times a timed-out request is retried (creates with the same Idempotency-Key).
    #[arg(long, default_value_t = 2, help_heading = "Run")]
    pub retries: u32,
    /// Percentage of successful creates replayed on purpose (same key, same body) to check
    /// that a replay returns the same appointment. Example: --replay-pct 0.5
    #[arg(long, default_value_t = 1.0, help_heading = "Run")]
    pub replay_pct: f64,

    // ---- campaign ------------------------------------------------------------------------
    /// Clinics in the campaign.
    #[arg(long, default_value_t = 100, help_heading = "Campaign")]
    pub clinics: usize,
    /// Slots per clinic (uploaded in bulk, at most 1,000 per call).
    #[arg(long, default_value_t = 10, help_heading = "Campaign")]
    pub slots_per_clinic: usize,
    /// Seats per slot.
    #[arg(long, default_value_t = 50, help_heading = "Campaign")]
    pub capacity: u32,
    /// Doses per clinic (one batch); a clinic sells min(slots x capacity, doses) seats.
    #[arg(long, default_value_t = 400, help_heading = "Campaign")]
    pub doses: i64,
    /// Citizens (default: every sellable seat plus 20%, so a launch can sell out).
    #[arg(long, help_heading = "Campaign")]
    pub citizens: Option<usize>,
    /// Zipf exponent of clinic popularity: clinic k is chosen with weight 1/(k+1)^skew.
    /// 0 = uniform; 1 (default) = a few hot clinics, as on a real launch morning.
    #[arg(long, default_value_t = 1.0, help_heading = "Campaign")]
    pub skew: f64,

    // ---- booking behaviour ---------------------------------------------------------------
    /// Percentage of holds that are confirmed.
    #[arg(long, default_value_t = 80, help_heading = "Booking")]
    pub confirm_pct: u32,
    /// Percentage of holds that are released (cancelled while pending); the rest
    /// (100 - confirm - release) are abandoned and left to expire.
    #[arg(long, default_value_t = 15, help_heading = "Booking")]
    pub release_pct: u32,
    /// steady: requests per second (open loop). Example: --rate 5000
    #[arg(long, default_value_t = 2000, help_heading = "Booking")]
    pub rate: u64,
    /// steady: percentage of requests that are availability reads; the rest are holds,
    /// confirms, releases and cancels of confirmed appointments.
    #[arg(long, default_value_t = 50, help_heading = "Booking")]
    pub read_pct: u32,
    /// expiry: how many holds to abandon.
    #[arg(long, default_value_t = 1000, help_heading = "Booking")]
    pub expiry_holds: usize,
    /// expiry: each hold's `hold_seconds` (whole seconds, at least 1s). All holds must be
    /// placed before the first one expires. Example: --expiry-hold 3s
    #[arg(long, default_value = "3s", value_parser = parse_duration, help_heading = "Booking")]
    #[serde(serialize_with = "serialize_duration")]
    pub expiry_hold: Duration,
    /// crash: how many times to SIGKILL and restart the server.
    #[arg(long, default_value_t = 3, help_heading = "Booking")]
    pub kills: usize,
    /// crash: each kill comes at a random moment between 200 ms and this long after the
    /// load (re)started. Example: --kill-window 2s
    #[arg(long, default_value = "1500ms", value_parser = parse_duration, help_heading = "Booking")]
    #[serde(serialize_with = "serialize_duration")]
    pub kill_window: Duration,

    // ---- flood ------------------------------------------------------------------------------
    /// flood: connections before and after the flood (the load the node serves well).
    #[arg(long, default_value_t = 256, help_heading = "Flood")]
    pub flood_baseline_connections: usize,
    /// flood: how long the baseline runs before and after the flood. Example: --flood-calm 8s
    #[arg(long, default_value = "6s", value_parser = parse_duration, help_heading = "Flood")]
    #[serde(serialize_with = "serialize_duration")]
    pub flood_calm: Duration,
    /// flood: the longest any request may wait for its answer or its refusal during the
    /// flood; longer fails the scenario. Example: --flood-wait-max 2s
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Flood")]
    #[serde(serialize_with = "serialize_duration")]
    pub flood_wait_max: Duration,
    /// flood: the server's peak resident memory (VmHWM, MiB) may not pass this.
    #[arg(long, default_value_t = FLOOD_RSS_MAX_MIB_DEFAULT, help_heading = "Flood")]
    pub flood_rss_max_mib: u64,

    // ---- clinic side -----------------------------------------------------------------------
    /// launch, crash: percentage of confirmed appointments (not cancelled by their citizen)
    /// that clinic staff administer right away, with the confirm's `qr_token` and the
    /// campaign's batch. 0 = none.
    #[arg(long, default_value_t = 20, help_heading = "Clinic")]
    pub administer_pct: u32,
    /// launch, crash: slots a clinic cancels mid-run (the hottest clinics first; one in two
    /// with the clinic's staff token, the rest with the authority's). A launch cancels once
    /// a quarter of its seats is taken, each crash round 100 ms into its load (before the
    /// kill); the checker proves their appointments became CLINIC_CANCELLED and the
    /// counters hold. 0 cancels nothing (a launch that must sell out exactly).
    #[arg(long, default_value_t = 2, help_heading = "Clinic")]
    pub cancel_slots: usize,
    /// crash: appointments booked and confirmed right after set-up in extra slots that
    /// start a few seconds later and end a second after that, then left alone: they must
    /// become NO_SHOW --no-show-grace after their slots end, across the kills (some are
    /// administered first, by --administer-pct). The last check waits until they are due.
    /// 0 = no group.
    #[arg(long, default_value_t = 8, help_heading = "Clinic")]
    pub no_show_group: usize,

    /// Skip the check that no citizen has more than one PENDING or CONFIRMED appointment
    /// (the contract's citizen rule, checked by default; skip it only against a server that
    /// does not enforce it).
    #[arg(
        long = "no-check-one-active-per-citizen",
        action = clap::ArgAction::SetFalse,
        help_heading = "Checks"
    )]
    pub check_one_active_per_citizen: bool,
    /// How long past its `expires_at` a hold may still show PENDING before the checker calls
    /// the expiry overdue. Example: --expiry-slack 2s
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Checks")]
    #[serde(serialize_with = "serialize_duration")]
    pub expiry_slack: Duration,

    // ---- output --------------------------------------------------------------------------
    /// Write the JSON report here (flags, server version, per-scenario figures, checker
    /// reports, verdict). Example: --report run.json
    #[arg(long, help_heading = "Output")]
    pub report: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
}

fn valid_id_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Args {
    /// Checks what clap cannot: ranges and combinations. The message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.scenario.is_empty() {
            return Err("--scenario: name at least one scenario".into());
        }
        if self.scenario.contains(&Scenario::Crash) && !self.spawn {
            return Err(
                "--scenario crash needs --spawn: the harness must own the server it kills".into(),
            );
        }
        if !self.spawn && self.jwt_secret_file.is_none() {
            return Err(
                "--jwt-secret-file is required against a running server (or use --spawn)".into(),
            );
        }
        if self.spawn && self.server_pid.is_some() {
            return Err(
                "--server-pid is for a running server; with --spawn the harness knows the pid"
                    .into(),
            );
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("--url {:?}: expected http://host:port", self.url));
        }
        let bounded = |name: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(format!("--{name} {v}: must be 1..={max}"))
            } else {
                Ok(())
            }
        };
        bounded("clinics", self.clinics, CLINICS_MAX)?;
        bounded(
            "slots-per-clinic",
            self.slots_per_clinic,
            SLOTS_PER_CLINIC_MAX,
        )?;
        bounded("capacity", self.capacity as usize, CAPACITY_MAX as usize)?;
        bounded("connections", self.connections, CONNECTIONS_MAX)?;
        if let Some(c) = self.citizens {
            bounded("citizens", c, CITIZENS_MAX)?;
        }
        if self.doses < 1 || self.doses > DOSES_MAX {
            return Err(format!("--doses {}: must be 1..={DOSES_MAX}", self.doses));
        }
        if self.confirm_pct + self.release_pct > 100 {
            return Err(format!(
                "--confirm-pct {} + --release-pct {} is more than 100",
                self.confirm_pct, self.release_pct
            ));
        }
        if self.administer_pct > 100 {
            return Err(format!(
                "--administer-pct {}: at most 100",
                self.administer_pct
            ));
        }
        if self.no_show_group > NO_SHOW_GROUP_MAX {
            return Err(format!(
                "--no-show-group {}: at most {NO_SHOW_GROUP_MAX}",
                self.no_show_group
            ));
        }
        if self.scenario.contains(&Scenario::Crash)
            && self.no_show_group > 0
            && self.no_show_grace > NO_SHOW_GRACE_MAX
        {
            return Err(format!(
                "--no-show-grace {:?}: at most {NO_SHOW_GRACE_MAX:?} with a crash no-show group \
                 (the run waits for it; or --no-show-group 0)",
                self.no_show_grace
            ));
        }
        if self.read_pct > 100 {
            return Err(format!("--read-pct {}: at most 100", self.read_pct));
        }
        if !(0.0..=100.0).contains(&self.replay_pct) {
            return Err(format!("--replay-pct {}: must be 0..=100", self.replay_pct));
        }
        if !(0.0..=10.0).contains(&self.skew) || self.skew.is_nan() {
            return Err(format!("--skew {}: must be 0..=10", self.skew));
        }
        if self.rate == 0 && self.scenario.contains(&Scenario::Steady) {
            return Err("--rate must be at least 1".into());
        }
        if self.expiry_hold < Duration::from_secs(1) {
            return Err("--expiry-hold: at least 1s (hold_seconds is whole seconds, >= 1)".into());
        }
        if self.scenario.contains(&Scenario::Expiry) {
            bounded("expiry-holds", self.expiry_holds, CITIZENS_MAX)?;
        }
        if self.scenario.contains(&Scenario::Crash) {
            bounded("kills", self.kills, KILLS_MAX)?;
        }
        if self.scenario.contains(&Scenario::Flood) {
            bounded(
                "flood-baseline-connections",
                self.flood_baseline_connections,
                CONNECTIONS_MAX,
            )?;
            if self.flood_calm < RECOVERY_MAX + Duration::from_secs(1) {
                return Err(format!(
                    "--flood-calm: at least {}s (the recovery is looked for within {}s of the flood, over 1 s windows)",
                    RECOVERY_MAX.as_secs() + 1,
                    RECOVERY_MAX.as_secs()
                ));
            }
        }
        if self.kill_window < Duration::from_millis(KILL_DELAY_MIN_MS) {
            return Err(format!("--kill-window: at least {} ms", KILL_DELAY_MIN_MS));
        }
        if self.cancel_slots > CANCEL_SLOTS_MAX {
            return Err(format!(
                "--cancel-slots {}: at most {}",
                self.cancel_slots, CANCEL_SLOTS_MAX
            ));
        }
        if self.retries > RETRIES_MAX {
            return Err(format!("--retries {}: at most {RETRIES_MAX}", self.retries));
        }
        if self.timeout.is_zero() || self.duration.is_zero() {
            return Err("--timeout and --duration must be more than 0".into());
        }
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.len() > PREFIX_MAX_LEN || !valid_id_chars(p) {
                return Err(format!(
                    "--prefix {p:?}: 1-{PREFIX_MAX_LEN} characters of [A-Za-z0-9_-]"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut all = vec!["holdfast-load"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).expect("parses")
    }

    #[test]
    fn scenarios_are_a_comma_separated_list() {
        let a = parse(&["--spawn", "--scenario", "ceiling,launch,steady"]);
        assert_eq!(
            a.scenario,
            vec![Scenario::Ceiling, Scenario::Launch, Scenario::Steady]
        );
        a.validate().unwrap();
    }

    #[test]
    fn combinations_are_checked() {
        assert!(parse(&["--scenario", "crash", "--jwt-secret-file", "s"])
            .validate()
            .is_err());
        assert!(parse(&[]).validate().is_err(), "no secret, no spawn");
        assert!(
            parse(&["--spawn", "--confirm-pct", "90", "--release-pct", "20"])
                .validate()
                .is_err()
        );
        assert!(parse(&["--spawn", "--prefix", "a b"]).validate().is_err());
        assert!(parse(&["--spawn", "--administer-pct", "101"])
            .validate()
            .is_err());
        assert!(parse(&["--spawn", "--no-show-group", "201"])
            .validate()
            .is_err());
        assert!(
            parse(&["--spawn", "--scenario", "crash", "--no-show-grace", "2h"])
                .validate()
                .is_err()
        );
        parse(&["--spawn", "--scenario", "launch", "--no-show-grace", "2h"])
            .validate()
            .unwrap();
        assert!(parse(&["--spawn", "--expiry-hold", "500ms"])
            .validate()
            .is_err());
        parse(&["--spawn", "--scenario", "crash", "--kills", "2"])
            .validate()
            .unwrap();
    }

    #[test]
    fn help_has_examples() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("EXAMPLES"));
        assert!(help.contains("--scenario ceiling,launch,steady"));
    }
}
