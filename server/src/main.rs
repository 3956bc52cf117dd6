//! `holdfast`: the server and its tools.

use std::process::ExitCode;

/// mimalloc, not glibc's malloc: a request allocates on one tokio worker and often frees on
/// the other (a shard's answer crosses threads), and glibc's per-arena locks, consolidation
/// and cross-thread frees cost half the engine's time in `perf`. Measured with
/// `cargo bench -p holdfast-benches --bench engine`: hold+confirm pairs through the actors,
/// batched, 686 K/s with glibc, 1.49 M/s with mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use holdfast_gateway::auth::{Claims, JwtKey, Role};
use holdfast_server::cli::{AuditCommand, Cli, Command, LogFormat, TokenArgs};

/// Log lines to stderr, filtered by RUST_LOG (default `info`), as text or JSON lines.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    holdfast_server::pages::no_transparent_huge_pages();
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Token(_) | Command::Audit(_) => LogFormat::Text,
    };
    init_logs(format);
    let result = match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|rt| rt.block_on(holdfast_server::serve(args))),
        Command::Token(args) => token(args),
        Command::Audit(AuditCommand::Verify(args)) => {
            return match holdfast_server::events::audit::verify_offline(&args.data_dir) {
                Ok((json, ok)) => {
                    println!("{json}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("holdfast: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: TokenArgs) -> Result<(), String> {
    let bytes = std::fs::read(&args.jwt_secret_file)
        .map_err(|e| format!("cannot read {}: {e}", args.jwt_secret_file.display()))?;
    let key = JwtKey::from_secret_file_bytes(&bytes)?;
    let role = match args.role.as_str() {
        "citizen" => Role::Citizen,
        "staff" => Role::Staff,
        "authority" => Role::Authority,
        _ => Role::Operator,
    };
    if role == Role::Citizen && args.citizen_id.is_none() {
        return Err("--role citizen needs --citizen-id".into());
    }
    if role == Role::Staff && args.clinic_id.is_none() {
        return Err("--role staff needs --clinic-id".into());
    }
    let sub = args
        .sub
        .clone()
        .unwrap_or_else(|| match (&args.citizen_id, &args.clinic_id) {
            (Some(c), _) if role == Role::Citizen => format!("citizen:{c}"),
            (_, Some(k)) if role == Role::Staff => format!("staff:{k}"),
            _ => role.as_str().to_string(),
        });
    let exp = chrono::Utc::now().timestamp() + args.ttl.as_secs() as i64;
    let claims = Claims {
        sub,
        role,
        exp,
        citizen_id: args.citizen_id,
        clinic_id: args.clinic_id,
    };
    println!("{}", key.sign(&claims));
    Ok(())
}
