//! The server's cost, read from /proc: CPU time (utime + stime of all its threads, from
//! /proc/<pid>/stat) and resident memory (VmRSS from /proc/<pid>/status).

use serde::{Deserialize, Serialize};

/// Clock ticks per second of /proc/<pid>/stat times. Linux reports USER_HZ, 100 on every
/// mainstream architecture.
const TICKS_PER_SEC: u64 = 100;

/// One server process to watch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
}

/// Parses `LABEL=PID` or `PID`.
pub fn parse_watched(spec: &str) -> Result<Watched, String> {
    let (label, pid) = match spec.split_once('=') {
        Some((l, p)) => (l.trim().to_owned(), p.trim()),
        None => (format!("pid{}", spec.trim()), spec.trim()),
    };
    let pid: u32 = pid.parse().map_err(|_| format!("--server-pid {spec:?}: not LABEL=PID"))?;
    Ok(Watched { label, pid })
}

/// A reading of one process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sample {
    pub cpu_us: u64,
    pub rss_bytes: u64,
    pub threads: u64,
}

/// Reads `/proc/<pid>`; None when the process is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse(&stat, &status))
}

fn parse(stat: &str, status: &str) -> Sample {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu_us = (tick(11) + tick(12)) * (1_000_000 / TICKS_PER_SEC);
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Sample { cpu_us, rss_bytes: kb("VmRSS:") * 1024, threads: kb("Threads:") }
}

/// Proportional set size (shared pages divided among the processes sharing them), from
/// /proc/<pid>/smaps_rollup: unlike RSS it adds up correctly over processes that share memory,
/// such as nginx workers sharing Nchan's store. 0 when unavailable.
pub fn pss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn total_pss(watched: &[Watched]) -> u64 {
    watched.iter().map(|w| pss_bytes(w.pid)).sum()
}

/// CPU time of the whole machine (all cores), in µs, from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTimes {
    /// Busy: everything but idle, iowait and steal (guest time is inside user).
    pub busy_us: u64,
    /// Stolen: time this virtual machine wanted to run but the host ran something else. Not
    /// work done here; when it is large the host was contended and the figures of the time
    /// are not comparable with others.
    pub steal_us: u64,
}

impl MachineTimes {
    pub fn since(self, earlier: MachineTimes) -> MachineTimes {
        MachineTimes {
            busy_us: self.busy_us.saturating_sub(earlier.busy_us),
            steal_us: self.steal_us.saturating_sub(earlier.steal_us),
        }
    }
}

/// The machine's CPU times now (zero when /proc/stat cannot be read).
pub fn machine_times() -> MachineTimes {
    std::fs::read_to_string("/proc/stat").ok().and_then(|s| parse_cpu_line(s.lines().next()?)).unwrap_or_default()
}

/// Parses `cpu  user nice system idle iowait irq softirq steal ...` (in clock ticks).
fn parse_cpu_line(line: &str) -> Option<MachineTimes> {
    let v: Vec<u64> = line.strip_prefix("cpu ")?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let us = 1_000_000 / TICKS_PER_SEC;
    Some(MachineTimes { busy_us: (at(0) + at(1) + at(2) + at(5) + at(6)) * us, steal_us: at(7) * us })
}

/// Readings of every watched process, in order (missing processes read as zero).
pub fn sample_all(watched: &[Watched]) -> Vec<Sample> {
    watched.iter().map(|w| sample(w.pid).unwrap_or_default()).collect()
}

pub fn total_cpu_us(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.cpu_us).sum()
}

/// CPU used between two readings of `watched`, summed per label in the order labels first
/// appear (nginx's workers share one label): which process of a system paid for a phase.
pub fn cpu_us_by_label(watched: &[Watched], before: &[Sample], after: &[Sample]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for ((w, b), a) in watched.iter().zip(before).zip(after) {
        let used = a.cpu_us.saturating_sub(b.cpu_us);
        match out.iter_mut().find(|(label, _)| *label == w.label) {
            Some((_, sum)) => *sum += used,
            None => out.push((w.label.clone(), used)),
        }
    }
    out
}

pub fn total_rss(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.rss_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_summed_per_label_in_first_seen_order() {
        let w = |label: &str, pid| Watched { label: label.into(), pid };
        let watched = [w("wsserver", 1), w("nginx-worker", 2), w("nginx-worker", 3)];
        let s = |cpu_us| Sample { cpu_us, ..Sample::default() };
        let before = [s(100), s(10), s(20)];
        let after = [s(400), s(60), s(25)];
        assert_eq!(
            cpu_us_by_label(&watched, &before, &after),
            vec![("wsserver".to_owned(), 300), ("nginx-worker".to_owned(), 55)]
        );
        // A process that vanished reads as zero: it adds nothing rather than wrapping around.
        assert_eq!(cpu_us_by_label(&watched[..1], &[s(100)], &[s(0)]), vec![("wsserver".to_owned(), 0)]);
    }

    #[test]
    fn reads_stat_and_status() {
        let stat = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        let status = "Name:\tsrv\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse(stat, status), Sample { cpu_us: 3_250_000, rss_bytes: 2_097_152, threads: 3 });
        assert_eq!(parse_watched("ws=42").unwrap().pid, 42);
        assert_eq!(parse_watched("42").unwrap().label, "pid42");
        assert!(parse_watched("x=y").is_err());
        assert!(sample(std::process::id()).unwrap().rss_bytes > 0);
        assert!(machine_times().busy_us > 0);
    }

    #[test]
    fn steal_is_apart_from_busy_time() {
        let t = parse_cpu_line("cpu  100 2 30 5000 7 1 4 50 0 0").unwrap();
        let tick = 1_000_000 / TICKS_PER_SEC;
        assert_eq!(t, MachineTimes { busy_us: 137 * tick, steal_us: 50 * tick });
        // Kernels without the steal column read as no steal.
        assert_eq!(parse_cpu_line("cpu  100 2 30 5000 7 1 4").unwrap().steal_us, 0);
        assert_eq!(parse_cpu_line("cpu0 1 2 3"), None);
    }
}
