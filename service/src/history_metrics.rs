//! Counters of the history and recovery, shared by both binaries; their metric names are
//! written here only.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use protocol::GapReason;

/// History appends (both binaries) and recoveries (wsserver).
#[derive(Default)]
pub struct HistoryMetrics {
    /// Messages appended to a channel's history (one per channel).
    pub appends: AtomicU64,
    /// Append-and-publish calls Redis refused or could not answer.
    pub append_failures: AtomicU64,
    /// Channels whose missed messages were sent to a reconnecting socket.
    pub recoveries: AtomicU64,
    /// Messages sent from the history to reconnecting sockets.
    pub recovered_messages: AtomicU64,
    gaps: [AtomicU64; 4],
}

impl HistoryMetrics {
    pub fn gap(&self, reason: GapReason) {
        self.gaps[index(reason)].fetch_add(1, Relaxed);
    }

    pub fn gaps(&self, reason: GapReason) -> u64 {
        self.gaps[index(reason)].load(Relaxed)
    }

    /// Appends the Prometheus text of these counters to `out`.
    pub fn render(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter("crier_history_appends_total", "Messages appended to a channel history.", self.appends.load(Relaxed));
        counter(
            "crier_history_append_failures_total",
            "History appends (with their publish) that Redis refused or did not answer.",
            self.append_failures.load(Relaxed),
        );
        counter(
            "crier_recoveries_total",
            "Channels recovered for a reconnecting socket (status recovered).",
            self.recoveries.load(Relaxed),
        );
        counter(
            "crier_recovered_messages_total",
            "Messages sent from the history to reconnecting sockets.",
            self.recovered_messages.load(Relaxed),
        );
        let name = "crier_recovery_gaps_total";
        let _ = writeln!(out, "# HELP {name} Gap statuses sent to opted-in sockets, by reason.\n# TYPE {name} counter");
        for reason in GapReason::ALL {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", reason.as_str(), self.gaps(reason));
        }
    }
}

fn index(reason: GapReason) -> usize {
    GapReason::ALL.iter().position(|r| *r == reason).expect("every reason is listed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = HistoryMetrics::default();
        m.appends.fetch_add(3, Relaxed);
        m.gap(GapReason::TooOld);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("\ncrier_history_appends_total 3\n"), "{out}");
        assert!(out.contains("crier_recovery_gaps_total{reason=\"too-old\"} 1\n"), "{out}");
        assert!(out.contains("crier_recovery_gaps_total{reason=\"epoch-changed\"} 0\n"), "{out}");
        assert!(out.contains("crier_recoveries_total 0\n"));
    }
}
