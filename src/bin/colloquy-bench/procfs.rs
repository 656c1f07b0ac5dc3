//! What `/proc` says about the server under test (and the bench itself): resident memory
//! sampled every 100 ms, and CPU time per process and per thread name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux the bench is meant for.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// A `VmXxx:   1234 kB` field of `/proc/PID/status`, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Highest memory seen while sampling, in KiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    /// Largest VmRSS sampled.
    pub rss_peak_kib: u64,
    /// The kernel's own high-water mark (VmHWM) at the last sample, since the process began.
    pub hwm_kib: u64,
    pub samples: u64,
}

/// Samples a process's memory on a thread until [`RssSampler::finish`].
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Memory>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            let mut memory = Memory::default();
            while !flag.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(&path) else {
                    break; // the process is gone
                };
                if let Some(rss) = status_kib(&status, "VmRSS") {
                    memory.rss_peak_kib = memory.rss_peak_kib.max(rss);
                }
                if let Some(hwm) = status_kib(&status, "VmHWM") {
                    memory.hwm_kib = memory.hwm_kib.max(hwm);
                }
                memory.samples += 1;
                std::thread::sleep(SAMPLE_EVERY);
            }
            memory
        });
        RssSampler { stop, thread }
    }

    pub fn finish(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// utime + stime of a `/proc/.../stat` line, in clock ticks.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU ticks used so far by a process (`None` = this process), in total and by thread name.
#[derive(Debug, Clone, Default)]
pub struct CpuMark {
    pub total: u64,
    pub threads: BTreeMap<String, u64>,
}

pub fn cpu_mark(pid: Option<u32>) -> Option<CpuMark> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let (_, total) = stat_ticks(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let mut threads = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("{dir}/task")) {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            if let Some((name, ticks)) = stat_ticks(&stat) {
                *threads.entry(name).or_insert(0) += ticks;
            }
        }
    }
    Some(CpuMark { total, threads })
}

/// Cores used between two marks over `seconds`, in total and by thread name (busiest first).
pub fn cores_between(before: &CpuMark, after: &CpuMark, seconds: f64) -> (f64, Vec<(String, f64)>) {
    if seconds <= 0.0 {
        return (0.0, Vec::new());
    }
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
    let mut threads: Vec<(String, f64)> = after
        .threads
        .iter()
        .map(|(name, &ticks)| {
            let earlier = before.threads.get(name).copied().unwrap_or(0);
            (name.clone(), cores(ticks.saturating_sub(earlier)))
        })
        .filter(|(_, c)| *c >= 0.005)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    (cores(after.total.saturating_sub(before.total)), threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tcolloquy\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(40960));
        assert_eq!(status_kib(status, "VmHWM"), Some(51200));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn stat_ticks_survive_a_name_with_spaces_and_parentheses() {
        let stat = "42 (actix (rt) w) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_ticks(stat), Some(("actix (rt) w".to_string(), 300)));
    }
}
