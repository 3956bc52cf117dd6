//! `holdfast-load`: drives a running holdfast server over HTTP and reports rates and
//! latencies from HDR histograms.
//!
//! Scenarios today: `launch` (closed loop: every connection books, then confirms or
//! releases) and `ceiling` (the same client against `GET /healthz`, the machine's HTTP no-op
//! rate, so a booking rate can be stated as a fraction of it). The campaign is set up through
//! the public API only.
//!
//! Example:
//!   holdfast-load --url http://127.0.0.1:8080 --jwt-secret-file holdfast-data/jwt-secret \
//!       --scenario launch --connections 256 --duration 10s

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use holdfast_gateway::auth::{Claims, JwtKey, Role};
use holdfast_gateway::cli::parse_duration;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every connection books (hold), then confirms (or releases) — until --duration.
    Launch,
    /// GET /healthz as fast as the connections allow: the HTTP no-op ceiling.
    Ceiling,
}

#[derive(Debug, Parser)]
#[command(
    name = "holdfast-load",
    about = "Load harness for holdfast: launch-morning bookings and the HTTP ceiling"
)]
struct Args {
    /// Base URL of a running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's secret file, to mint authority and citizen tokens.
    #[arg(long)]
    jwt_secret_file: std::path::PathBuf,
    #[arg(long, value_enum, default_value = "launch")]
    scenario: Scenario,
    /// Concurrent connections (closed loop: each has one request in flight).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 100)]
    clinics: usize,
    #[arg(long, default_value_t = 10)]
    slots_per_clinic: usize,
    /// Seats per slot.
    #[arg(long, default_value_t = 50)]
    capacity: u32,
    /// Doses per clinic.
    #[arg(long, default_value_t = 400)]
    doses: i64,
    /// Citizens (default: enough for every seat, plus 20%).
    #[arg(long)]
    citizens: Option<usize>,
    /// Percentage of holds that are confirmed; the rest are released.
    #[arg(long, default_value_t = 80)]
    confirm_pct: u32,
    /// Prefix of every id this run creates, so runs against one server do not collide.
    #[arg(long, default_value = "lt")]
    prefix: String,
}

struct Stats {
    hold: Histogram<u64>,
    confirm: Histogram<u64>,
    release: Histogram<u64>,
    noop: Histogram<u64>,
    created: u64,
    confirmed: u64,
    released: u64,
    sold_out: u64,
    other: u64,
}

impl Stats {
    fn new() -> Stats {
        let h = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Stats {
            hold: h(),
            confirm: h(),
            release: h(),
            noop: h(),
            created: 0,
            confirmed: 0,
            released: 0,
            sold_out: 0,
            other: 0,
        }
    }
    fn merge(&mut self, o: &Stats) {
        self.hold.add(&o.hold).expect("same bounds");
        self.confirm.add(&o.confirm).expect("same bounds");
        self.release.add(&o.release).expect("same bounds");
        self.noop.add(&o.noop).expect("same bounds");
        self.created += o.created;
        self.confirmed += o.confirmed;
        self.released += o.released;
        self.sold_out += o.sold_out;
        self.other += o.other;
    }
}

fn token(key: &JwtKey, role: Role, sub: &str, citizen_id: Option<String>) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    key.sign(&Claims {
        sub: sub.into(),
        role,
        exp,
        citizen_id,
        clinic_id: None,
    })
}

async fn send(request: reqwest::RequestBuilder) -> Result<(u16, serde_json::Value), String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

async fn setup(args: &Args, client: &reqwest::Client, authority: &str) -> Result<usize, String> {
    let url = &args.url;
    let auth = format!("Bearer {authority}");
    let vaccine = format!("{}-vx", args.prefix);
    let (s, b) = send(client.put(format!("{url}/v1/vaccines/{vaccine}")).header("authorization", &auth).json(&json!({
        "min_age": null, "max_age": null, "regions": [], "series_doses": 2, "min_interval_days": 0, "contraindications": []
    })))
    .await?;
    if s != 200 {
        return Err(format!("vaccine set-up failed: {s} {b}"));
    }
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    for c in 0..args.clinics {
        let clinic = format!("{}-c{c}", args.prefix);
        let (s, b) = send(
            client
                .put(format!("{url}/v1/clinics/{clinic}"))
                .header("authorization", &auth)
                .json(&json!({
                    "name": format!("load clinic {c}"), "region": "r1", "timezone": "UTC"
                })),
        )
        .await?;
        if s != 200 {
            return Err(format!("clinic set-up failed: {s} {b}"));
        }
        let slots: Vec<_> = (0..args.slots_per_clinic)
            .map(|i| {
                let t = start + chrono::Duration::minutes(15 * i as i64);
                json!({"slot_id": format!("s{i}"), "start": t.to_rfc3339(), "end": (t + chrono::Duration::minutes(15)).to_rfc3339(),
                       "capacity": args.capacity, "vaccines": [vaccine], "priority_reserve": 0})
            })
            .collect();
        let (s, b) = send(
            client
                .post(format!("{url}/v1/clinics/{clinic}/slots"))
                .header("authorization", &auth)
                .json(&json!({"slots": slots})),
        )
        .await?;
        if s != 200 {
            return Err(format!("slot set-up failed: {s} {b}"));
        }
        let (s, b) = send(client.post(format!("{url}/v1/clinics/{clinic}/stock")).header("authorization", &auth).json(&json!({
            "vaccine": vaccine, "batch": "B1", "quantity": args.doses, "expires_on": "2030-01-01"
        })))
        .await?;
        if s != 200 {
            return Err(format!("stock set-up failed: {s} {b}"));
        }
    }
    let seats = args.clinics * args.slots_per_clinic * args.capacity as usize;
    let citizens = args.citizens.unwrap_or(seats + seats / 5);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, next, auth, url, prefix) = (
            client.clone(),
            next.clone(),
            auth.clone(),
            url.clone(),
            args.prefix.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= citizens {
                    return Ok::<(), String>(());
                }
                let (s, b) = send(client.put(format!("{url}/v1/citizens/{prefix}-p{i}")).header("authorization", &auth).json(&json!({
                    "birth_date": "1980-01-01", "region": "r1", "allergies": [], "insurance_id": format!("I{i}"), "doses": []
                })))
                .await?;
                if s != 200 {
                    return Err(format!("citizen set-up failed: {s} {b}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(citizens)
}

async fn launch_worker(
    args: Arc<Args>,
    client: reqwest::Client,
    key: Arc<JwtKey>,
    next: Arc<AtomicU64>,
    citizens: usize,
    deadline: Instant,
) -> Stats {
    let mut stats = Stats::new();
    let vaccine = format!("{}-vx", args.prefix);
    let mut rng = (next.load(Ordering::Relaxed) | 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while Instant::now() < deadline {
        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
        if i >= citizens {
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let clinic = (rng % args.clinics as u64) as usize;
        let slot = ((rng >> 20) % args.slots_per_clinic as u64) as usize;
        let citizen = format!("{}-p{i}", args.prefix);
        let bearer = format!(
            "Bearer {}",
            token(
                &key,
                Role::Citizen,
                &format!("citizen:{citizen}"),
                Some(citizen.clone())
            )
        );
        let started = Instant::now();
        let created = send(
            client
                .post(format!("{}/v1/appointments", args.url))
                .header("authorization", &bearer)
                .header("idempotency-key", format!("{}-k{i}", args.prefix))
                .json(&json!({"clinic_id": format!("{}-c{clinic}", args.prefix), "slot_id": format!("s{slot}"), "vaccine": vaccine, "citizen_id": citizen})),
        )
        .await;
        stats
            .hold
            .record(started.elapsed().as_micros().max(1) as u64)
            .ok();
        let id = match created {
            Ok((201, body)) => {
                stats.created += 1;
                body["appointment_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }
            Ok((409, body))
                if body["error"]["code"] == "SOLD_OUT"
                    || body["error"]["code"] == "OUT_OF_STOCK" =>
            {
                stats.sold_out += 1;
                continue;
            }
            _ => {
                stats.other += 1;
                continue;
            }
        };
        let confirm = (rng >> 40) % 100 < u64::from(args.confirm_pct);
        let action = if confirm { "confirm" } else { "cancel" };
        let started = Instant::now();
        let answer = send(
            client
                .post(format!("{}/v1/appointments/{id}/{action}", args.url))
                .header("authorization", &bearer),
        )
        .await;
        let micros = started.elapsed().as_micros().max(1) as u64;
        match (answer, confirm) {
            (Ok((200, _)), true) => {
                stats.confirm.record(micros).ok();
                stats.confirmed += 1;
            }
            (Ok((200, _)), false) => {
                stats.release.record(micros).ok();
                stats.released += 1;
            }
            _ => stats.other += 1,
        }
    }
    stats
}

async fn ceiling_worker(url: String, client: reqwest::Client, deadline: Instant) -> Stats {
    let mut stats = Stats::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        match client.get(format!("{url}/healthz")).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                stats
                    .noop
                    .record(started.elapsed().as_micros().max(1) as u64)
                    .ok();
            }
            _ => stats.other += 1,
        }
    }
    stats
}

fn line(name: &str, h: &Histogram<u64>, seconds: f64) {
    if h.is_empty() {
        return;
    }
    println!(
        "{name:<10} {:>9} {:>10.0}/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms",
        h.len(),
        h.len() as f64 / seconds,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Arc::new(Args::parse());
    let secret = std::fs::read(&args.jwt_secret_file)
        .map_err(|e| format!("cannot read {}: {e}", args.jwt_secret_file.display()))?;
    let key = Arc::new(JwtKey::from_secret_file_bytes(&secret)?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let citizens = match args.scenario {
        Scenario::Launch => {
            let authority = token(&key, Role::Authority, "load-authority", None);
            let set_up = Instant::now();
            let n = setup(&args, &client, &authority).await?;
            println!(
                "set-up: {} clinics, {} slots, {n} citizens in {:.1} s",
                args.clinics,
                args.clinics * args.slots_per_clinic,
                set_up.elapsed().as_secs_f64()
            );
            n
        }
        Scenario::Ceiling => 0,
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let client = client.clone();
        tasks.push(match args.scenario {
            Scenario::Launch => tokio::spawn(launch_worker(
                args.clone(),
                client,
                key.clone(),
                next.clone(),
                citizens,
                deadline,
            )),
            Scenario::Ceiling => tokio::spawn(ceiling_worker(args.url.clone(), client, deadline)),
        });
    }
    let mut total = Stats::new();
    for t in tasks {
        total.merge(&t.await.map_err(|e| e.to_string())?);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "scenario {:?}, {} connections, {seconds:.1} s",
        args.scenario, args.connections
    );
    line("hold", &total.hold, seconds);
    line("confirm", &total.confirm, seconds);
    line("release", &total.release, seconds);
    line("noop", &total.noop, seconds);
    match args.scenario {
        Scenario::Launch => {
            let requests = total.hold.len() + total.confirm.len() + total.release.len();
            println!(
                "requests {:.0}/s; holds+confirms {:.0}/s; created {} confirmed {} released {} sold-out {} other {}",
                requests as f64 / seconds,
                (total.created + total.confirmed) as f64 / seconds,
                total.created,
                total.confirmed,
                total.released,
                total.sold_out,
                total.other
            );
        }
        Scenario::Ceiling => println!(
            "requests {:.0}/s; errors {}",
            total.noop.len() as f64 / seconds,
            total.other
        ),
    }
    if total.other > 0 {
        return Err(format!("{} requests failed unexpectedly", total.other));
    }
    Ok(())
}
