//! Process measurements from the OS: CPU time, resident memory, file limits.
//!
//! A figure the OS may fail to give is an `Option` (raising the file limit,
//! a `Result`): the caller prints that it is unavailable rather than a wrong
//! number. The system calls go through rustix's safe wrappers, so there is
//! no `unsafe` here.

use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use rustix::time::{ClockId, DynamicClockId, clock_gettime_dynamic};

/// CPU time (user + system, every thread) this process has used, from
/// CLOCK_PROCESS_CPUTIME_ID: the same total getrusage(RUSAGE_SELF) gives,
/// to the nanosecond. The fallible form of clock_gettime, so that a kernel
/// without the clock yields `None` rather than a panic.
pub fn own_cpu() -> Option<Duration> {
    let now = clock_gettime_dynamic(DynamicClockId::Known(ClockId::ProcessCPUTime)).ok()?;
    Duration::try_from(now).ok()
}

/// A process's CPU time, split into user space and the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    /// User and kernel time together.
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// [`CpuTimes`] of another process (or this one), from /proc/PID/stat, in
/// whole ticks.
pub fn process_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // The unit of utime and stime (USER_HZ); zero would mean the kernel did not say.
    let ticks_per_second = rustix::param::clock_ticks_per_second();
    if ticks_per_second == 0 {
        return None;
    }
    let time = |ticks: u64| Some(Duration::from_micros(ticks.checked_mul(1_000_000)? / ticks_per_second));
    Some(CpuTimes { user: time(utime)?, system: time(stime)? })
}

/// Resident set size of a process in bytes, from /proc/PID/status.
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's open-files soft limit; `u64::MAX` when unlimited.
pub fn nofile_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises this process's open-files soft limit to its hard limit and
/// returns the new soft limit (`u64::MAX` when unlimited). On an error the
/// limit is unchanged: [`nofile_limit`] says what it is.
pub fn raise_nofile() -> std::io::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })?;
    }
    Ok(nofile_limit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_agrees_with_proc() {
        let before = own_cpu().expect("CLOCK_PROCESS_CPUTIME_ID on Linux");
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(own_cpu());
        }
        let from_proc = process_times(std::process::id()).expect("this process's /proc/PID/stat").total();
        let after = own_cpu().unwrap();
        assert!(after > before, "{before:?} then {after:?}");
        // /proc counts the same CPU time in whole ticks (utime and stime each
        // rounded down), read between the two clock readings.
        let tick = Duration::from_secs(1) / rustix::param::clock_ticks_per_second() as u32;
        assert!(from_proc <= after && from_proc + 2 * tick >= before, "{before:?} {from_proc:?} {after:?}");
    }

    #[test]
    fn own_process_figures_from_proc() {
        let pid = std::process::id();
        assert!(process_rss(pid).expect("VmRSS of this process") > 0);
        let times = process_times(pid).expect("this process's times");
        assert_eq!(times.total(), times.user + times.system);
        assert_eq!(process_times(u32::MAX), None, "no such process");
        assert_eq!(process_rss(u32::MAX), None, "no such process");
    }

    #[test]
    fn raising_nofile_reaches_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert_eq!(raise_nofile().expect("soft up to hard is always allowed"), hard);
        assert_eq!(nofile_limit(), hard);
    }
}
