//! One run of the harness: find or start the server, run the scenarios in order against
//! it, check after each, print the tables and write the JSON report. Returns the exit code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Args, Scenario};
use crate::client::{Api, Tokens};
use crate::cpu;
use crate::report::{RunReport, ServerInfo, Verdict};
use crate::scenarios::{self, Ctx};
use crate::spawn::{self, ServerSpec, Spawned, TempDir};

/// Every scenario passed.
pub const EXIT_PASS: u8 = 0;
/// A violation or a server error.
pub const EXIT_FAIL: u8 = 1;
/// Bad flags, unreachable server, refused set-up.
pub const EXIT_USAGE: u8 = 2;
/// How long a running server (not spawned) may take to say `/readyz` 200.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// A default id prefix unique per run: `lt` and the start time in base 36.
fn default_prefix() -> String {
    let mut n = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    format!("lt{}", String::from_utf8_lossy(&out))
}

/// The server the run talks to, and what must be cleaned up after it.
struct Target {
    base: String,
    secret: Vec<u8>,
    spawned: Option<Spawned>,
    // Dropped after `spawned` (fields drop in order): the server dies before its directory.
    _dir: Option<TempDir>,
    data_dir: Option<PathBuf>,
}

async fn target(args: &Args, api: &Api) -> Result<Target, String> {
    if !args.spawn {
        let file = args
            .jwt_secret_file
            .as_ref()
            .ok_or("--jwt-secret-file is required without --spawn")?;
        let secret = std::fs::read(file)
            .map_err(|e| format!("cannot read --jwt-secret-file {}: {e}", file.display()))?;
        api.wait_ready(READY_WAIT).await?;
        return Ok(Target {
            base: api.base.clone(),
            secret,
            spawned: None,
            _dir: None,
            data_dir: None,
        });
    }
    let dir = TempDir::new("run", args.keep_data)?;
    let secret_file = match &args.jwt_secret_file {
        Some(f) => f.clone(),
        None => {
            let f = dir.path.join("jwt-secret");
            std::fs::write(&f, holdfast_gateway::auth::generate_secret())
                .map_err(|e| format!("cannot write {}: {e}", f.display()))?;
            f
        }
    };
    let secret = std::fs::read(&secret_file)
        .map_err(|e| format!("cannot read {}: {e}", secret_file.display()))?;
    let spec = ServerSpec {
        bin: spawn::find_server_binary(args.server_bin.as_deref())?,
        data_dir: dir.path.join("data"),
        secret_file,
        log_file: dir.path.join("server.log"),
        shards: args.shards,
        hold_ttl: args.hold_ttl,
        no_show_grace: args.no_show_grace,
        durability: args.durability.name(),
        extra_args: args.server_args.clone(),
    };
    let data_dir = spec.data_dir.clone();
    let spawned = Spawned::start(spec, api).await?;
    Ok(Target {
        base: spawned.base.clone(),
        secret,
        spawned: Some(spawned),
        _dir: Some(dir),
        data_dir: Some(data_dir),
    })
}

/// Runs everything the flags ask for; returns the process exit code.
pub async fn run(args: Args) -> u8 {
    if let Err(e) = args.validate() {
        eprintln!("holdfast-load: {e}\n(see holdfast-load --help)");
        return EXIT_USAGE;
    }
    let args = Arc::new(args);
    let seed = args
        .seed
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64);
    let prefix = args.prefix.clone().unwrap_or_else(default_prefix);
    let mut report = RunReport {
        tool: "holdfast-load",
        tool_version: env!("CARGO_PKG_VERSION"),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        command_line: std::env::args().collect(),
        flags: serde_json::to_value(&*args).unwrap_or_default(),
        seed,
        prefix: prefix.clone(),
        machine_cpus: cpu::cpus(),
        server: ServerInfo {
            url: args.url.clone(),
            version: None,
            spawned: args.spawn,
            durability: args.spawn.then(|| args.durability.name().to_string()),
            pid: args.server_pid,
            data_dir: None,
        },
        ceiling_requests_per_s: None,
        scenarios: Vec::new(),
        errors: Vec::new(),
        verdict: Verdict::Pass,
    };
    let code = run_scenarios(&args, seed, &prefix, &mut report).await;
    print!("{}", report.render_summary());
    if let Some(path) = &args.report {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json + "\n") {
                    eprintln!("holdfast-load: cannot write {}: {e}", path.display());
                    return EXIT_USAGE;
                }
                println!("report: {}", path.display());
            }
            Err(e) => {
                eprintln!("holdfast-load: cannot serialise the report: {e}");
                return EXIT_USAGE;
            }
        }
    }
    code
}

async fn run_scenarios(args: &Arc<Args>, seed: u64, prefix: &str, report: &mut RunReport) -> u8 {
    let fail = |report: &mut RunReport, e: String| {
        eprintln!("holdfast-load: {e}");
        report.errors.push(e);
        report.decide();
        EXIT_USAGE
    };
    let api = match Api::new(&args.url, args.connections, args.timeout, args.retries) {
        Ok(api) => api,
        Err(e) => return fail(report, e),
    };
    let mut target = match target(args, &api).await {
        Ok(t) => t,
        Err(e) => return fail(report, e),
    };
    let tokens = match Tokens::from_secret(&target.secret) {
        Ok(t) => Arc::new(t),
        Err(e) => return fail(report, format!("the secret is unusable: {e}")),
    };
    let mut api = api.with_base(&target.base);
    let health = api.get("/healthz").await;
    if health.status != 200 {
        return fail(
            report,
            format!(
                "{}/healthz answered {} {}",
                api.base, health.status, health.body
            ),
        );
    }
    report.server.url = api.base.clone();
    report.server.version = health.body["version"].as_str().map(str::to_string);
    report.server.data_dir = target.data_dir.as_ref().map(|d| d.display().to_string());
    if let (Some(d), true) = (&target.data_dir, args.keep_data) {
        eprintln!(
            "holdfast-load: the server's data directory (kept): {}",
            d.display()
        );
    }
    let cpus = cpu::cpus();
    for &scenario in &args.scenario {
        if let Some(s) = &target.spawned {
            api = api.with_base(&s.base);
        }
        let server_pid = target
            .spawned
            .as_ref()
            .and_then(Spawned::pid)
            .or(args.server_pid);
        report.server.pid = server_pid;
        let ctx = Ctx {
            args: args.clone(),
            api: api.clone(),
            tokens: tokens.clone(),
            seed,
            prefix: prefix.to_string(),
            server_pid,
        };
        let result = match scenario {
            Scenario::Launch => scenarios::launch::run(&ctx).await,
            Scenario::Steady => scenarios::steady::run(&ctx).await,
            Scenario::Expiry => scenarios::expiry::run(&ctx).await,
            Scenario::Ceiling => scenarios::ceiling::run(&ctx).await,
            Scenario::Flood => scenarios::flood::run(&ctx).await,
            Scenario::Crash => match target.spawned.as_mut() {
                Some(server) => scenarios::crash::run(&ctx, server).await,
                None => Err("the crash scenario needs --spawn".to_string()),
            },
        };
        match result {
            Ok(r) => {
                print!("{}", r.render(cpus));
                report.scenarios.push(r);
            }
            Err(e) => {
                let e = format!("{}: {e}", scenario.name());
                eprintln!("holdfast-load: {e}");
                report.errors.push(e);
            }
        }
    }
    report.relate_to_ceiling();
    report.decide();
    if !report.errors.is_empty() {
        EXIT_USAGE
    } else if report.verdict == Verdict::Fail {
        EXIT_FAIL
    } else {
        EXIT_PASS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefixes_are_valid_ids() {
        let p = default_prefix();
        assert!(p.starts_with("lt") && p.len() <= crate::cli::PREFIX_MAX_LEN);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
