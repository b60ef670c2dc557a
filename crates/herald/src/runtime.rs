//! Process set-up: worker threads sized to the CPU quota, the open-file limit raised.

/// The CPU quota of this process's cgroup, in CPUs, and where it was read.
pub fn cpu_quota() -> Option<(f64, &'static str)> {
    // cgroup v2: "max 100000" (no quota) or "200000 100000".
    if let Ok(text) = std::fs::read_to_string("/sys/fs/cgroup/cpu.max") {
        let mut parts = text.split_whitespace();
        if let (Some(quota), Some(period)) = (parts.next(), parts.next())
            && let (Ok(q), Ok(p)) = (quota.parse::<f64>(), period.parse::<f64>())
            && p > 0.0
        {
            return Some((q / p, "cgroup v2 cpu.max"));
        }
        return None;
    }
    // cgroup v1: quota -1 means none.
    let read = |f: &str| -> Option<f64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    match (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
        (Some(q), Some(p)) if q > 0.0 && p > 0.0 => Some((q / p, "cgroup v1 cpu.cfs_quota_us")),
        _ => None,
    }
}

/// Worker threads to run: `configured` if non-zero, else the CPU quota rounded up, else the
/// number of CPUs. Returns the count and why.
pub fn worker_threads(configured: usize) -> (usize, String) {
    if configured > 0 {
        return (configured, "configured (runtime.worker_threads)".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match cpu_quota() {
        Some((quota, source)) => {
            let n = (quota.ceil() as usize).clamp(1, cpus.max(1));
            (n, format!("CPU quota {quota:.2} from {source}"))
        }
        None => (cpus, format!("{cpus} CPUs, no CPU quota")),
    }
}

/// Raises the soft open-file limit to the hard limit; returns (soft before, soft after, hard).
pub fn raise_nofile_limit() -> (u64, u64, u64) {
    let (before, hard) = rlimit::Resource::NOFILE.get().unwrap_or((0, 0));
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    let (after, _) = rlimit::Resource::NOFILE.get().unwrap_or((before, hard));
    (before, after, hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_threads_win() {
        assert_eq!(worker_threads(3).0, 3);
        let (n, why) = worker_threads(0);
        assert!(n >= 1, "{why}");
    }
}
