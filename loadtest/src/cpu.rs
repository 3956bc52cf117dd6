//! CPU use of a process (the harness itself, or the server) from `/proc/<pid>/stat`.
//!
//! Reported in every run for both sides, because on a shared machine a saturated load
//! generator looks exactly like a slow server unless both figures are on the page.

use std::time::Instant;

/// The CPU time (user + system, seconds) a process has used so far; `None` when it is gone
/// or `/proc` is unavailable (not Linux).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state(3) ppid(4) ... utime(14) stime(15): utime is the 12th field.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[allow(unsafe_code)] // a libc call; see the SAFETY note
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the C library; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        // The Linux default, for the impossible case that sysconf fails.
        100.0
    }
}

/// Logical CPUs of this machine, so a percentage can be read against the whole machine.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Measures one process's CPU use over an interval.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pid: u32,
    cpu_at_start: Option<f64>,
    started: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            cpu_at_start: process_cpu_seconds(pid),
            started: Instant::now(),
        }
    }

    pub fn for_self() -> CpuMeter {
        CpuMeter::start(std::process::id())
    }

    /// CPU seconds used since the start.
    pub fn seconds_used(&self) -> Option<f64> {
        Some(process_cpu_seconds(self.pid)? - self.cpu_at_start?)
    }

    /// CPU used since the start, as a percentage of one core (200% = two cores busy).
    pub fn percent(&self) -> Option<f64> {
        let now = process_cpu_seconds(self.pid)?;
        let wall = self.started.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        Some((now - self.cpu_at_start?) / wall * 100.0)
    }
}

/// CPU microseconds per request: `cpu_seconds` spread over `requests` (`None` without
/// either).
pub fn us_per_request(cpu_seconds: Option<f64>, requests: u64) -> Option<f64> {
    (requests > 0).then_some(cpu_seconds? * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_tricky_name() {
        let line = "1234 (hold fast) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn spreads_cpu_over_requests() {
        assert_eq!(us_per_request(Some(0.5), 10_000), Some(50.0));
        assert_eq!(us_per_request(Some(0.5), 0), None);
        assert_eq!(us_per_request(None, 10), None);
    }

    #[test]
    fn measures_this_process() {
        assert!(process_cpu_seconds(std::process::id()).is_some());
        let meter = CpuMeter::for_self();
        let until = Instant::now() + std::time::Duration::from_millis(50);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let pct = meter.percent().expect("a figure");
        assert!((0.0..=100.0 * cpus() as f64 + 50.0).contains(&pct), "{pct}");
    }
}
