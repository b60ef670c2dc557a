//! The process's own figures from /proc: open files, CPU time, resident memory. `/metrics`,
//! `/api/v1/stats` and the dashboard's history read them here.

/// The process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Process {
    /// Open file descriptors (`None`: not counted this time).
    pub open_fds: Option<u64>,
    /// The open-file limit (soft).
    pub max_fds: u64,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
}

impl Process {
    /// Reads the figures; the descriptors are counted only with `count_fds` (listing
    /// /proc/self/fd takes time in proportion to the descriptors open: about a second at a
    /// million).
    pub(super) fn read(count_fds: bool) -> Process {
        let open_fds = count_fds.then(|| {
            std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
        });
        let max_fds = rlimit::Resource::NOFILE.get().map_or(0, |(soft, _)| soft);
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        // Fields 14 and 15 of /proc/self/stat (after the command name in parentheses).
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 2..];
                let f: Vec<&str> = rest.split(' ').collect();
                Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
            })
            .unwrap_or(0.0);
        let page = rustix::param::page_size() as u64;
        let resident_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split(' ').nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page);
        Process {
            open_fds,
            max_fds,
            cpu_seconds,
            resident_bytes,
        }
    }
}
