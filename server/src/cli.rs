//! The command line: `holdfast serve` and `holdfast token` (docs/API.md, "Server flags").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the embedded default: one node owning every shard).
    Serve(ServeArgs),
    /// Print a signed token for a role.
    Token(TokenArgs),
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
    /// Data directory (its manifest fixes the shard count).
    #[arg(long, default_value = "./holdfast-data")]
    pub data_dir: PathBuf,
    /// File whose bytes are the HS256 secret (one trailing newline trimmed). With --demo and
    /// no file, `<data-dir>/jwt-secret` is created and used.
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Hold time when a booking does not say (`hold_seconds`).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub hold_ttl: Duration,
    /// Longest hold; longer `hold_seconds` are clamped to it.
    #[arg(long, default_value = "900s", value_parser = parse_duration)]
    pub max_hold: Duration,
    /// How long after a slot ends a CONFIRMED appointment becomes NO_SHOW (clinic
    /// operations; accepted now, acted on when that work lands).
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
    /// Virtual shards; takes effect when the data directory is created (default 64).
    #[arg(long)]
    pub shards: Option<u32>,
    /// Load a demo campaign (once: loading again adds nothing) and print tokens and curl
    /// commands to try it.
    #[arg(long)]
    pub demo: bool,
    /// External eligibility service (not available yet: the server refuses to start with it
    /// rather than pretend to check).
    #[arg(long)]
    pub eligibility_url: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
