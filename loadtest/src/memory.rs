//! Resident memory of a process (the server) from `/proc/<pid>/status`: `VmRSS` now and
//! `VmHWM`, the most it has held since it started. The flood scenario holds the server's
//! peak to a named bound.

/// Resident memory of a process, in MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resident {
    /// `VmRSS`: resident now.
    pub now_mib: f64,
    /// `VmHWM`: the peak since the process started.
    pub peak_mib: f64,
}

/// Reads `pid`'s resident memory; `None` when it is gone or `/proc` is unavailable.
pub fn resident(pid: u32) -> Option<Resident> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

/// `VmRSS` and `VmHWM` of a `/proc/<pid>/status` text (both in kB there).
pub fn parse_status(text: &str) -> Option<Resident> {
    let kib = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let value = line[name.len()..].split_whitespace().next()?;
        value.parse::<f64>().ok()
    };
    Some(Resident {
        now_mib: kib("VmRSS:")? / 1024.0,
        peak_mib: kib("VmHWM:")? / 1024.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_its_peak() {
        let status =
            "Name:\tholdfast\nVmPeak:\t 900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(
            parse_status(status),
            Some(Resident {
                now_mib: 100.0,
                peak_mib: 200.0
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
        assert!(resident(std::process::id()).is_some_and(|r| r.peak_mib >= r.now_mib));
    }
}
