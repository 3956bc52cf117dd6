//! What a run found: per-scenario figures (tables on stdout) and the whole run as JSON
//! (`--report FILE.json`). Both are built from the same structs, so the JSON has exactly the
//! figures the tables show.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::campaign::SetUp;
use crate::checker::CheckReport;
use crate::stats::{is_error, is_refusal, Op, Stats};

/// Percentiles every operation row shows.
pub const PERCENTILES: [(f64, &str); 4] =
    [(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9")];
/// Scenarios whose booking rate is stated as a fraction of the ceiling.
pub const CLOSED_LOOP_BOOKING: [&str; 3] = ["launch", "crash", "flood"];
/// Violations printed per check (all of them are in the JSON report).
pub const VIOLATIONS_PRINTED: usize = 20;
/// Ids printed per violation line.
const IDS_PRINTED: usize = 6;

/// One operation's row.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    pub op: Op,
    pub count: u64,
    pub rate_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// One outcome's row: how many answers of `op` had this status and code.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeRow {
    pub op: Op,
    pub status: u16,
    pub code: String,
    pub count: u64,
    pub error: bool,
}

/// One run of the invariant checker.
#[derive(Debug, Clone, Serialize)]
pub struct CheckEntry {
    /// When it ran: `end`, `restart 1`, ...
    pub after: String,
    pub ok: bool,
    pub violations: usize,
    /// The checker's own report (violations with ids, counts), or the reason it could not
    /// run.
    pub report: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckEntry {
    pub fn from_report(after: &str, report: &CheckReport) -> CheckEntry {
        CheckEntry {
            after: after.to_string(),
            ok: report.ok(),
            violations: report.violations_total,
            report: serde_json::to_value(report).unwrap_or(Value::Null),
            error: None,
        }
    }

    /// The checker could not take its picture: that is a failed check (nothing proven).
    pub fn unavailable(after: &str, error: String) -> CheckEntry {
        CheckEntry {
            after: after.to_string(),
            ok: false,
            violations: 0,
            report: Value::Null,
            error: Some(error),
        }
    }
}

/// Launch figures.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchFigures {
    /// `sold_out`, `duration`, `citizens_exhausted` or `stopped`.
    pub end_reason: String,
    /// Seconds from the first request until every seat was taken (held or confirmed).
    pub sell_out_s: Option<f64>,
    pub sellable: u64,
    pub created: u64,
    pub confirmed: u64,
    pub released: u64,
    pub abandoned: u64,
    pub citizens_served: u64,
    pub sold_out_checks: u64,
}

/// Steady figures.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyFigures {
    pub target_rate_per_s: u64,
    pub achieved_rate_per_s: f64,
    /// Requests whose start was later than intended (the server or the client fell
    /// behind); their latency counts from the intended start.
    pub late_starts: u64,
    pub read_pct: u32,
}

/// Expiry figures.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiryFigures {
    pub holds: u64,
    pub hold_seconds: u64,
    pub seen_expired: u64,
    pub not_seen_expired: u64,
    pub lateness_p50_ms: Option<f64>,
    pub lateness_p99_ms: Option<f64>,
    pub lateness_max_ms: Option<f64>,
    pub lateness_min_ms: Option<f64>,
    /// The measurement's resolution: the largest gap between two consecutive availability
    /// answers (an expiry is seen at most this late after it became visible).
    pub resolution_ms: f64,
    pub poll_period_mean_ms: f64,
    pub polls: u64,
}

/// The clinic side of a scenario, for the report: what staff did and what the last check
/// saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClinicFigures {
    pub administer_pct: u32,
    /// Administrations acknowledged (200 ADMINISTERED).
    pub administered: usize,
    /// Appointments the acknowledged slot cancellations listed as CLINIC_CANCELLED (the
    /// cancellations themselves are in the report's `slot_cancels`).
    pub clinic_cancelled: usize,
    /// The no-show group: appointments confirmed and left to fall due, and when (RFC 3339)
    /// their slots end.
    pub no_show_group: usize,
    pub no_show_slots_end: Option<String>,
    /// Appointments of the campaign per status in the last check's picture.
    pub seen_administered: u64,
    pub seen_no_show: u64,
    pub seen_clinic_cancelled: u64,
}

/// Crash figures.
#[derive(Debug, Clone, Serialize)]
pub struct CrashFigures {
    pub kills: usize,
    /// Milliseconds after each round's load started when the SIGKILL came.
    pub kill_after_ms: Vec<u64>,
    /// Seconds from each restart until `/readyz` said 200.
    pub recovery_s: Vec<f64>,
    pub acknowledged: usize,
    pub replays_after_restart: usize,
    /// Creates left without an answer by a kill, sent again with the same key after the
    /// restart; and how many of those answered 201 (applied before the kill, or now).
    pub in_doubt_resent: usize,
    pub in_doubt_booked: usize,
    /// Of those, the ones created before the kill: applied and durable, though their
    /// client never heard; the replay returned the stored answer.
    pub in_doubt_applied_before_kill: usize,
    /// Administrations sent after a restart for appointments confirmed before the kill,
    /// with the `qr_token` issued before it.
    pub administered_after_restart: usize,
    /// Waitlist joins acknowledged over the run (each checked after every later restart).
    pub waitlist_joined: usize,
}

/// Flood figures: the flood phase against the baseline before and after it.
#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    pub baseline_connections: usize,
    /// Seconds to open the flood's connections (all at once, before it starts).
    pub connections_opened_s: f64,
    pub flood_connections: usize,
    /// Answers that were not refusals, per second, before the flood (the baseline).
    pub before_admitted_per_s: f64,
    pub flood_admitted_per_s: f64,
    /// Refusals (`429`, `503`) per second during the flood.
    pub flood_refused_per_s: f64,
    /// Refusals during the flood by `"<status> <code>"`.
    pub refused_by_status: std::collections::BTreeMap<String, u64>,
    pub admitted_p99_ms: Option<f64>,
    pub admitted_max_ms: Option<f64>,
    pub refused_p99_ms: Option<f64>,
    pub refused_max_ms: Option<f64>,
    /// The longest any request of the flood waited for its answer or its refusal.
    pub longest_wait_ms: f64,
    /// Requests of the flood that got no answer within `--timeout` (or a transport error).
    pub unanswered: u64,
    pub after_admitted_per_s: f64,
    /// Seconds from the flood's end until the admitted rate (over 1 s) was back at 80% of
    /// the rate before; `None` if it never was within the calm phase.
    pub recovery_s: Option<f64>,
    /// The server's `VmHWM` at the end: its peak resident memory since it started.
    pub server_rss_peak_mib: Option<f64>,
    /// The largest `VmRSS` sampled (every 100 ms) during the scenario.
    pub server_rss_sampled_max_mib: Option<f64>,
    pub server_rss_end_mib: Option<f64>,
    /// The bounds the verdict holds the flood to (`--flood-wait-max`, `--flood-rss-max-mib`).
    pub wait_max_ms: u64,
    pub rss_max_mib: u64,
}

impl FloodFigures {
    /// What breaks the flood's promises: a request waiting past its bound, the server's
    /// memory past its bound, unanswered requests, no recovery in time.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.longest_wait_ms > self.wait_max_ms as f64 {
            out.push(format!(
                "a request waited {:.0} ms, more than --flood-wait-max {} ms",
                self.longest_wait_ms, self.wait_max_ms
            ));
        }
        if let Some(peak) = self.server_rss_peak_mib {
            if peak > self.rss_max_mib as f64 {
                out.push(format!(
                    "the server's peak resident memory {peak:.0} MiB is above --flood-rss-max-mib {}",
                    self.rss_max_mib
                ));
            }
        }
        if self.unanswered > 0 {
            out.push(format!(
                "{} requests of the flood got no answer",
                self.unanswered
            ));
        }
        let recovery_max = crate::cli::RECOVERY_MAX.as_secs_f64();
        match self.recovery_s {
            Some(s) if s <= recovery_max => {}
            Some(s) => out.push(format!(
                "back to full speed only {s:.1} s after the flood (bound {recovery_max} s)"
            )),
            None => out.push("not back to full speed within the calm after the flood".into()),
        }
        out
    }
}

/// Clinic slot cancellations of a run (`--cancel-slots`), summed over crash rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotCancelFigures {
    pub requested: usize,
    /// Acknowledged (200): recorded in the ledger and checked.
    pub cancelled: usize,
    /// Of those, sent with the clinic's staff token (the others with the authority's).
    pub by_staff: usize,
    /// Unanswered or refused (a kill in flight): not checked.
    pub failed: usize,
    /// Appointments the acknowledged answers listed as turned CLINIC_CANCELLED.
    pub appointments_clinic_cancelled: usize,
}

impl SlotCancelFigures {
    pub fn add(&mut self, other: &SlotCancelFigures) {
        self.requested += other.requested;
        self.cancelled += other.cancelled;
        self.by_staff += other.by_staff;
        self.failed += other.failed;
        self.appointments_clinic_cancelled += other.appointments_clinic_cancelled;
    }
}

/// `pass`, or `fail` with reasons.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

/// Everything about one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub campaign: Option<SetUp>,
    pub seconds: f64,
    pub connections: usize,
    pub requests: u64,
    pub requests_per_s: f64,
    /// Holds, confirms, releases and cancels per second (the booking rate).
    pub booking_requests_per_s: f64,
    pub holds_plus_confirms_per_s: f64,
    /// `booking_requests_per_s` / the ceiling's rate, when `ceiling` ran in the same run.
    pub booking_fraction_of_ceiling: Option<f64>,
    pub errors: u64,
    pub server_errors: u64,
    /// 429s: refusals by the server's admission control (rate limits, the waiting room).
    pub refusals: u64,
    pub retries: u64,
    pub ops: Vec<OpRow>,
    pub outcomes: Vec<OutcomeRow>,
    /// CPU of the harness process, % of one core (the machine has `cpus` cores).
    pub client_cpu_pct: Option<f64>,
    /// CPU of the server process, % of one core (spawned, or --server-pid).
    pub server_cpu_pct: Option<f64>,
    /// The harness's CPU time over the measured phase divided by its requests, in µs.
    pub client_cpu_us_per_request: Option<f64>,
    /// The server's CPU time over the measured phase divided by the requests, in µs (the
    /// crash scenario: over its load phases, from each start to its kill).
    pub server_cpu_us_per_request: Option<f64>,
    /// The server's resident memory (`VmRSS`) at the scenario's end, in MiB (spawned, or
    /// --server-pid; `None` when its `/proc` entry cannot be read).
    pub server_rss_mib: Option<f64>,
    /// The most the server has held resident since it started (`VmHWM`) at the scenario's
    /// end, in MiB: with `--citizens 10000000`, the memory of a country's registry.
    pub server_rss_peak_mib: Option<f64>,
    pub launch: Option<LaunchFigures>,
    pub steady: Option<SteadyFigures>,
    pub expiry: Option<ExpiryFigures>,
    pub crash: Option<CrashFigures>,
    pub flood: Option<FloodFigures>,
    /// What clinic staff did (launch, crash): administrations, clinic cancellations, the
    /// no-show group, and the statuses the last check saw.
    pub clinic: Option<ClinicFigures>,
    /// `launch` and `crash` with `--cancel-slots`.
    pub slot_cancels: Option<SlotCancelFigures>,
    pub checks: Vec<CheckEntry>,
    pub notes: Vec<String>,
    pub verdict: Verdict,
    pub failures: Vec<String>,
}

impl ScenarioReport {
    /// A report from merged stats; the scenario adds its own figures and checks.
    pub fn new(scenario: &str, stats: &Stats, seconds: f64, connections: usize) -> Self {
        let seconds = seconds.max(f64::EPSILON);
        let ops: Vec<OpRow> = stats
            .latency
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(op, h)| {
                let ms = |v: u64| v as f64 / 1000.0;
                OpRow {
                    op: *op,
                    count: h.len(),
                    rate_per_s: h.len() as f64 / seconds,
                    p50_ms: ms(h.value_at_percentile(PERCENTILES[0].0)),
                    p90_ms: ms(h.value_at_percentile(PERCENTILES[1].0)),
                    p99_ms: ms(h.value_at_percentile(PERCENTILES[2].0)),
                    p999_ms: ms(h.value_at_percentile(PERCENTILES[3].0)),
                    max_ms: ms(h.max()),
                    mean_ms: h.mean() / 1000.0,
                }
            })
            .collect();
        let outcomes = stats
            .outcomes
            .iter()
            .map(|(k, n)| OutcomeRow {
                op: k.op,
                status: k.status,
                code: k.code.clone(),
                count: *n,
                error: is_error(k.status),
            })
            .collect();
        let requests: u64 = ops.iter().map(|o| o.count).sum();
        let booking: u64 = ops
            .iter()
            .filter(|o| o.op.is_booking())
            .map(|o| o.count)
            .sum();
        ScenarioReport {
            scenario: scenario.to_string(),
            campaign: None,
            seconds,
            connections,
            requests,
            requests_per_s: requests as f64 / seconds,
            booking_requests_per_s: booking as f64 / seconds,
            holds_plus_confirms_per_s: (stats.count(Op::Hold) + stats.count(Op::Confirm)) as f64
                / seconds,
            booking_fraction_of_ceiling: None,
            errors: stats.errors(),
            server_errors: stats.server_errors(),
            refusals: stats.refusals(),
            retries: 0,
            ops,
            outcomes,
            client_cpu_pct: None,
            server_cpu_pct: None,
            client_cpu_us_per_request: None,
            server_cpu_us_per_request: None,
            server_rss_mib: None,
            server_rss_peak_mib: None,
            launch: None,
            steady: None,
            expiry: None,
            crash: None,
            flood: None,
            clinic: None,
            slot_cancels: None,
            checks: Vec::new(),
            notes: Vec::new(),
            verdict: Verdict::Pass,
            failures: Vec::new(),
        }
    }

    /// Adds the failures of the checks and the server errors to any the scenario recorded
    /// itself, and passes the scenario only when there are none.
    pub fn decide(&mut self) {
        for check in &self.checks {
            if let Some(e) = &check.error {
                self.failures
                    .push(format!("check after {}: could not run: {e}", check.after));
            } else if !check.ok {
                self.failures.push(format!(
                    "check after {}: {} violation(s)",
                    check.after, check.violations
                ));
            }
        }
        if self.server_errors > 0 {
            self.failures.push(format!(
                "{} answers were 5xx other than 503 (a 500 is a bug by the contract)",
                self.server_errors
            ));
        }
        self.verdict = if self.failures.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }

    /// The human-readable tables.
    pub fn render(&self, cpus: usize) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "\n== {} ==  {:.2} s, {} connections",
            self.scenario, self.seconds, self.connections
        );
        if let Some(c) = &self.campaign {
            let s = &c.spec;
            let _ = writeln!(
                w,
                "campaign {}: {} clinics x {} slots x {} seats ({} seats; {} doses per clinic; {} sellable), {} citizens; set up in {:.1} s ({} requests)",
                s.prefix, s.clinics, s.slots_per_clinic, s.capacity, c.seats, s.doses, c.sellable, s.citizens, c.seconds, c.requests
            );
        }
        if let Some(l) = &self.launch {
            let sold = l.sell_out_s.map_or("not sold out".to_string(), |s| {
                format!("sold out in {s:.2} s")
            });
            let _ = writeln!(
                w,
                "launch: {sold} (ended: {}); {} holds: {} confirmed, {} released, {} abandoned; {} of {} sellable seats taken; {} citizens served",
                l.end_reason, l.created, l.confirmed, l.released, l.abandoned,
                l.created.saturating_sub(l.released), l.sellable, l.citizens_served
            );
        }
        if let Some(s) = &self.steady {
            let _ = writeln!(
                w,
                "steady: target {} req/s, achieved {:.0} req/s, {} reads %, {} late starts (latency counted from the intended start)",
                s.target_rate_per_s, s.achieved_rate_per_s, s.read_pct, s.late_starts
            );
        }
        if let Some(e) = &self.expiry {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
            let _ = writeln!(
                w,
                "expiry: {} holds of {} s; {} seen expired, {} not; lateness p50 {} p99 {} max {} (min {}); resolution {:.2} ms (largest gap between polls; mean {:.2} ms, {} polls)",
                e.holds, e.hold_seconds, e.seen_expired, e.not_seen_expired,
                f(e.lateness_p50_ms), f(e.lateness_p99_ms), f(e.lateness_max_ms), f(e.lateness_min_ms),
                e.resolution_ms, e.poll_period_mean_ms, e.polls
            );
        }
        if let Some(s) = &self.slot_cancels {
            let _ = writeln!(
                w,
                "slot cancellations: {} of {} acknowledged ({} by clinic staff, {} unanswered or refused), {} appointments CLINIC_CANCELLED",
                s.cancelled, s.requested, s.by_staff, s.failed, s.appointments_clinic_cancelled
            );
        }
        if let Some(c) = &self.crash {
            let _ = writeln!(
                w,
                "crash: {} kills (at {:?} ms into each round), recovery {:?} s, {} acknowledged appointments verified, {} replays after restarts, {} in-doubt creates resent ({} booked, {} of them applied before the kill), {} administrations after restarts with tokens from before the kill, {} waitlist joins acknowledged",
                c.kills,
                c.kill_after_ms,
                c.recovery_s.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
                c.acknowledged,
                c.replays_after_restart,
                c.in_doubt_resent,
                c.in_doubt_booked,
                c.in_doubt_applied_before_kill,
                c.administered_after_restart,
                c.waitlist_joined
            );
        }
        if let Some(f) = &self.flood {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
            let mib = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} MiB"));
            let _ = writeln!(
                w,
                "flood: {} connections (opened in {:.1} s; baseline {}): admitted {:.0}/s (before {:.0}/s, after {:.0}/s), refused {:.0}/s {:?}; admitted p99 {} max {}, refused p99 {} max {}; longest wait {:.1} ms (bound {} ms); {} unanswered; recovery {}; server memory peak {} (bound {} MiB), sampled max {}, at the end {}",
                f.flood_connections,
                f.connections_opened_s,
                f.baseline_connections,
                f.flood_admitted_per_s,
                f.before_admitted_per_s,
                f.after_admitted_per_s,
                f.flood_refused_per_s,
                f.refused_by_status,
                ms(f.admitted_p99_ms),
                ms(f.admitted_max_ms),
                ms(f.refused_p99_ms),
                ms(f.refused_max_ms),
                f.longest_wait_ms,
                f.wait_max_ms,
                f.unanswered,
                f.recovery_s
                    .map_or("none".to_string(), |s| format!("{s:.1} s")),
                mib(f.server_rss_peak_mib),
                f.rss_max_mib,
                mib(f.server_rss_sampled_max_mib),
                mib(f.server_rss_end_mib)
            );
        }
        if let Some(c) = &self.clinic {
            let _ = writeln!(
                w,
                "clinic: {} administered ({}% of confirmed), {} appointments clinic-cancelled by acknowledged slot cancellations, {} left to fall due as no-shows{}; last check saw {} ADMINISTERED, {} NO_SHOW, {} CLINIC_CANCELLED",
                c.administered,
                c.administer_pct,
                c.clinic_cancelled,
                c.no_show_group,
                c.no_show_slots_end
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (slots end {e})")),
                c.seen_administered,
                c.seen_no_show,
                c.seen_clinic_cancelled
            );
        }
        let _ = writeln!(
            w,
            "{:<13} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for o in &self.ops {
            let _ = writeln!(
                w,
                "{:<13} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                o.op.name(),
                o.count,
                o.rate_per_s,
                o.p50_ms,
                o.p90_ms,
                o.p99_ms,
                o.p999_ms,
                o.max_ms
            );
        }
        let booking = if self.booking_requests_per_s > 0.0 {
            format!(
                "   booking requests {:.0}/s, holds+confirms {:.0}/s{}",
                self.booking_requests_per_s,
                self.holds_plus_confirms_per_s,
                self.booking_fraction_of_ceiling
                    .map_or(String::new(), |f| format!(
                        ", {:.0}% of the ceiling",
                        f * 100.0
                    ))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "total         {:>9} {:>10.0}{booking}",
            self.requests, self.requests_per_s
        );
        let _ = writeln!(w, "outcomes:");
        for o in &self.outcomes {
            let _ = writeln!(
                w,
                "  {:<13} {:>3} {:<34} {:>9}{}",
                o.op.name(),
                o.status,
                if o.code.is_empty() { "-" } else { &o.code },
                o.count,
                if o.error {
                    "  (error)"
                } else if is_refusal(o.status) {
                    "  (refused)"
                } else {
                    ""
                }
            );
        }
        if self.refusals > 0 {
            let _ = writeln!(
                w,
                "refused before any decision, with Retry-After (429 rate limit or waiting room, 503 overload or not ready): {}",
                self.refusals
            );
        }
        let pct = |v: Option<f64>| {
            v.map_or("n/a".to_string(), |p| {
                format!("{p:.0}% of one core ({:.0}% of {cpus})", p / cpus as f64)
            })
        };
        let _ = writeln!(
            w,
            "cpu: client {}, {} per request; server {}, {} per request",
            pct(self.client_cpu_pct),
            us(self.client_cpu_us_per_request),
            pct(self.server_cpu_pct),
            us(self.server_cpu_us_per_request)
        );
        if let (Some(now), Some(peak)) = (self.server_rss_mib, self.server_rss_peak_mib) {
            let _ = writeln!(
                w,
                "server memory: {now:.0} MiB resident at the end, at most {peak:.0} MiB since it started"
            );
        }
        if self.retries > 0 {
            let _ = writeln!(w, "retries of timed-out requests: {}", self.retries);
        }
        for note in &self.notes {
            let _ = writeln!(w, "note: {note}");
        }
        for check in &self.checks {
            render_check(w, check);
        }
        let _ = writeln!(
            w,
            "verdict: {}{}",
            match self.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
            },
            if self.failures.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.failures.join("; "))
            }
        );
        out
    }
}

fn render_check(w: &mut String, check: &CheckEntry) {
    if let Some(e) = &check.error {
        let _ = writeln!(w, "check after {}: COULD NOT RUN: {e}", check.after);
        return;
    }
    let r = &check.report;
    let n = |f: &str| r[f].as_u64().unwrap_or(0);
    let _ = writeln!(
        w,
        "check after {}: {} violation(s); {} clinics, {} slots, {} appointments, {} acknowledged, {} replays, {} slot cancellations, {} stock levels, {} expected no-shows checked",
        check.after,
        check.violations,
        n("clinics"),
        n("slots"),
        n("appointments"),
        n("acked_checked"),
        n("replays_checked"),
        n("slot_cancellations_checked"),
        n("stock_checked"),
        n("no_show_expected_checked")
    );
    if n("waitlist_checked") > 0 {
        let _ = writeln!(
            w,
            "  waitlist: {} acknowledged joins checked: {} still waiting, {} served by an offer, the rest gone with their cancelled slots",
            n("waitlist_checked"),
            n("waitlist_waiting"),
            n("waitlist_served")
        );
    }
    if let Some(violations) = r["violations"].as_array() {
        for v in violations.iter().take(VIOLATIONS_PRINTED) {
            let ids: Vec<&str> = v["ids"]
                .as_array()
                .map(|ids| ids.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let more = ids.len().saturating_sub(IDS_PRINTED);
            let _ = writeln!(
                w,
                "  VIOLATION {}: {} [{}{}]",
                match &v["kind"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                v["message"].as_str().unwrap_or_default(),
                ids[..ids.len().min(IDS_PRINTED)].join(", "),
                if more > 0 {
                    format!(", {more} more")
                } else {
                    String::new()
                }
            );
        }
        if violations.len() > VIOLATIONS_PRINTED {
            let _ = writeln!(
                w,
                "  ... {} more in the JSON report",
                violations.len() - VIOLATIONS_PRINTED
            );
        }
    }
}

/// The server the run targeted.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub url: String,
    pub version: Option<String>,
    pub spawned: bool,
    pub durability: Option<String>,
    pub pid: Option<u32>,
    pub data_dir: Option<String>,
}

/// The whole run (`--report`).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub started_at: String,
    pub command_line: Vec<String>,
    pub flags: Value,
    pub seed: u64,
    pub prefix: String,
    pub machine_cpus: usize,
    pub server: ServerInfo,
    pub ceiling_requests_per_s: Option<f64>,
    pub scenarios: Vec<ScenarioReport>,
    /// Set-up errors (exit code 2).
    pub errors: Vec<String>,
    pub verdict: Verdict,
}

impl RunReport {
    /// Fills `booking_fraction_of_ceiling` of the closed-loop booking scenarios (`launch`,
    /// `crash`: as fast as the server answers, like the ceiling) from the ceiling's rate
    /// measured in the same run. Open-loop `steady` runs at the rate it was told, and
    /// `expiry` mostly waits, so a fraction of the ceiling would say nothing about them.
    pub fn relate_to_ceiling(&mut self) {
        let ceiling = self
            .scenarios
            .iter()
            .find(|s| s.scenario == "ceiling")
            .map(|s| s.requests_per_s)
            .filter(|r| *r > 0.0);
        self.ceiling_requests_per_s = ceiling;
        if let Some(c) = ceiling {
            for s in &mut self.scenarios {
                if CLOSED_LOOP_BOOKING.contains(&s.scenario.as_str())
                    && s.booking_requests_per_s > 0.0
                {
                    s.booking_fraction_of_ceiling = Some(s.booking_requests_per_s / c);
                }
            }
        }
    }

    pub fn decide(&mut self) {
        self.verdict = if self.errors.is_empty()
            && self.scenarios.iter().all(|s| s.verdict == Verdict::Pass)
        {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }

    /// The closing summary: one line per scenario and the verdict.
    pub fn render_summary(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "\n== summary ==  server {} {} ({}), seed {}, {} cpus",
            self.server.url,
            self.server.version.as_deref().unwrap_or("?"),
            match (&self.server.spawned, &self.server.durability) {
                (true, Some(d)) => format!("spawned, durability {d}"),
                (true, None) => "spawned".to_string(),
                (false, _) => "running".to_string(),
            },
            self.seed,
            self.machine_cpus
        );
        if let Some(c) = self.ceiling_requests_per_s {
            let _ = writeln!(w, "ceiling (GET /healthz): {c:.0} req/s");
        }
        for s in &self.scenarios {
            let p99 = |op: Op| {
                s.ops
                    .iter()
                    .find(|o| o.op == op)
                    .map_or("-".to_string(), |o| format!("{:.2} ms", o.p99_ms))
            };
            let booking = if s.booking_requests_per_s > 0.0 {
                format!(
                    ", booking {:.0} req/s{}, holds+confirms {:.0}/s, p99 hold {} confirm {}",
                    s.booking_requests_per_s,
                    s.booking_fraction_of_ceiling
                        .map_or(String::new(), |f| format!(
                            " ({:.0}% of ceiling)",
                            f * 100.0
                        )),
                    s.holds_plus_confirms_per_s,
                    p99(Op::Hold),
                    p99(Op::Confirm)
                )
            } else {
                format!(", p99 {}", p99(Op::Noop))
            };
            let _ = writeln!(
                w,
                "{:<8} {:>8.0} req/s{booking}, cpu client {} ({}/req) server {} ({}/req), {}",
                s.scenario,
                s.requests_per_s,
                s.client_cpu_pct
                    .map_or("n/a".into(), |p| format!("{p:.0}%")),
                us(s.client_cpu_us_per_request),
                s.server_cpu_pct
                    .map_or("n/a".into(), |p| format!("{p:.0}%")),
                us(s.server_cpu_us_per_request),
                match s.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                }
            );
        }
        for e in &self.errors {
            let _ = writeln!(w, "error: {e}");
        }
        let _ = writeln!(
            w,
            "verdict: {}",
            match self.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
            }
        );
        out
    }
}

/// CPU per request for the tables: `58 µs`, or `n/a`.
fn us(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |us| format!("{us:.0} µs"))
}
