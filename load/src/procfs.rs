//! What /proc says about a process: CPU time over all its threads, resident memory, open
//! descriptors.

use std::fs;

/// Nanoseconds the process's threads have spent on a CPU (the first field of each
/// `/proc/PID/task/TID/schedstat`), or `None` if the process is gone.
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread may end between the listing and the read: skip it.
        if let Ok(stat) = fs::read_to_string(task.path().join("schedstat"))
            && let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Some(total)
}

/// A process's CPU time split into user and kernel (`utime` and `stime` of /proc/PID/stat,
/// over all its threads, in clock ticks: coarse, 10 ms each at the usual 100 Hz).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    pub(crate) user: u64,
    pub(crate) system: u64,
}

impl CpuTicks {
    /// The share of the CPU time from `self` to `later` spent in the kernel; `None` when no
    /// tick passed.
    pub(crate) fn kernel_share(self, later: Self) -> Option<f64> {
        let user = later.user.saturating_sub(self.user);
        let system = later.system.saturating_sub(self.system);
        (user + system > 0).then(|| system as f64 / (user + system) as f64)
    }
}

/// The process's user and kernel CPU ticks, or `None` if it is gone.
pub(crate) fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    parse_stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime` and `stime`: the 14th and 15th fields, counted after the command name, which is
/// in parentheses and may hold spaces and parentheses of its own.
fn parse_stat_ticks(stat: &str) -> Option<CpuTicks> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// The process's resident set size in bytes (`VmRSS`), or `None` if it is gone.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The number of open file descriptors (entries of `/proc/PID/fd`), or `None` if the
/// process is gone or not ours to look at.
pub(crate) fn fd_count(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// A process's resident memory and open descriptors at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) rss_bytes: u64,
    pub(crate) fds: u64,
}

impl Usage {
    /// Reads both, or `None` if the process is gone.
    pub(crate) fn read(pid: u32) -> Option<Self> {
        Some(Self { rss_bytes: rss_bytes(pid)?, fds: fd_count(pid)? })
    }

    /// The larger of each figure (a peak is per figure, not one moment).
    pub(crate) fn max(self, other: Self) -> Self {
        Self { rss_bytes: self.rss_bytes.max(other.rss_bytes), fds: self.fds.max(other.fds) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The tests read /proc (which opens descriptors) and count descriptors: one at a time.
    static PROC: Mutex<()> = Mutex::new(());

    #[test]
    fn reads_this_process() {
        let _one = PROC.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let before = cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            // Opaque to the optimiser: a release build would fold the loop away.
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_ns(pid).unwrap() > before);
        assert!(rss_bytes(pid).unwrap() > 1 << 20);
        assert_eq!(cpu_ns(u32::MAX), None);
    }

    #[test]
    fn splits_user_and_kernel_time() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 9";
        let ticks = parse_stat_ticks(stat).unwrap();
        assert_eq!(ticks, CpuTicks { user: 250, system: 50 });
        let later = CpuTicks { user: 280, system: 60 };
        assert_eq!(ticks.kernel_share(later), Some(0.25));
        assert_eq!(ticks.kernel_share(ticks), None, "no tick passed");
        assert_eq!(parse_stat_ticks("42 (x) S 1"), None);
        assert!(cpu_ticks(std::process::id()).is_some());
        assert_eq!(cpu_ticks(u32::MAX), None);
    }

    #[test]
    fn counts_descriptors() {
        let _one = PROC.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let before = fd_count(pid).unwrap();
        let files: Vec<_> = (0..5).map(|_| fs::File::open("/proc/self/status").unwrap()).collect();
        assert_eq!(fd_count(pid).unwrap(), before + 5);
        drop(files);
        assert_eq!(fd_count(pid).unwrap(), before);
        assert_eq!(fd_count(u32::MAX), None);
        let usage = Usage::read(pid).unwrap();
        assert!(usage.rss_bytes > 1 << 20 && usage.fds >= 3, "{usage:?}");
        let peak = usage.max(Usage { rss_bytes: 1, fds: usage.fds + 7 });
        assert_eq!(peak, Usage { rss_bytes: usage.rss_bytes, fds: usage.fds + 7 });
    }
}
