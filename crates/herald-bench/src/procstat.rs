//! Readings from `/proc`: a process's CPU time and resident memory.
//!
//! CPU times in `/proc/<pid>/stat` are in USER_HZ ticks, which the Linux ABI fixes at 100 per
//! second on every architecture (it is not the kernel's internal HZ), so no libc call is
//! needed to convert them.

use std::fs;

use serde::{Deserialize, Serialize};

const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>` (`"self"` for this process). `None` when the process is gone.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 once the first two are cut off.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_seconds: (utime + stime) / USER_HZ,
        rss_bytes: rss_kib * 1024,
    })
}

/// CPU seconds a process used between two readings; `None` when either is missing.
pub fn cpu_between(before: Option<ProcSample>, after: Option<ProcSample>) -> Option<f64> {
    Some(after?.cpu_seconds - before?.cpu_seconds)
}

/// Raises this process's soft open-file limit to its hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> (u64, u64) {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    rlimit::Resource::NOFILE.get().unwrap_or((0, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let s = sample("self").expect("own /proc entry");
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
        assert!(sample("999999999").is_none());
    }

    #[test]
    fn cpu_between_needs_both_readings() {
        let at = |cpu| {
            Some(ProcSample {
                cpu_seconds: cpu,
                rss_bytes: 1,
            })
        };
        assert_eq!(cpu_between(at(1.5), at(4.0)), Some(2.5));
        assert_eq!(cpu_between(None, at(4.0)), None);
        assert_eq!(cpu_between(at(1.5), None), None);
    }
}
