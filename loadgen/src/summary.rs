//! The run's result: the JSON summary (stable field names, read by scripts/bench.sh) and its
//! text rendering.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::procstat::{Sample, Watched};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub label: String,
    pub mode: String,
    pub clients: usize,
    pub channels: usize,
    pub size: usize,
    pub workers: usize,
    pub connections: Connections,
    pub phases: Vec<PhaseResult>,
    /// Highest asked rate whose phase was held (search and fixed phases alike).
    pub max_lossless_rate: Option<f64>,
    /// Messages the clients received that were not loadgen's (heartbeats, replays).
    pub foreign_messages: u64,
    pub idle: Option<IdleResult>,
    pub server: Vec<ServerProcess>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Set when the run stopped early (deadline, worker failure).
    pub aborted: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub errors: Vec<(String, u64, String)>,
    /// Sockets that ended after connecting, before the run finished.
    pub ended_during_run: u64,
    pub ended_kinds: Vec<(String, u64)>,
    pub connect_seconds: f64,
    pub connects_per_sec: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.quantile(0.5)),
            p90_ms: ms(h.quantile(0.9)),
            p99_ms: ms(h.quantile(0.99)),
            p999_ms: ms(h.quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// Steal (cores) above which a phase is flagged as disturbed by the host (`bench.sh` uses the
/// same figure for its warning).
pub const STEAL_WARNING_CORES: f64 = 0.05;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseResult {
    pub phase: u32,
    /// `fixed` or `search`.
    pub kind: String,
    pub rate_asked: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub publish_errors_kinds: Vec<(String, u64, String)>,
    pub publish_skipped: u64,
    pub publish_rate: f64,
    pub publish_lag_p99_ms: f64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub reordered: u64,
    pub duplicates: u64,
    pub sockets_ended: u64,
    /// Deliveries over the time from the phase's first publish to its last delivery.
    pub deliveries_per_sec: f64,
    pub latency: Latency,
    pub server_cpu_us: u64,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// `server_cpu_us` split by `--server-pid` label (nginx's workers summed under theirs).
    #[serde(default)]
    pub server_cpu_us_by_label: Vec<(String, u64)>,
    /// Server CPU over the phase's wall time, in cores (1.0 = one core busy).
    pub server_cores: f64,
    /// loadgen's own CPU (coordinator and workers) over the phase, in cores: when it nears the
    /// machine's core count minus the server's share, the client is the bottleneck.
    pub loadgen_cores: f64,
    /// Everything else the machine ran during the phase (kernel softirq work of loopback TCP
    /// included), in cores: a large value means the measurement was disturbed.
    pub other_cores: f64,
    /// CPU the host withheld from this virtual machine while it wanted to run (steal), in
    /// cores: above [`STEAL_WARNING_CORES`] the host was contended and the phase is not comparable.
    #[serde(default)]
    pub steal_cores: f64,
    pub seconds: f64,
    pub held: bool,
    /// Why the phase was not held.
    pub verdict: String,
    /// Start of the phase, µs since the epoch (for the chart).
    pub start_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleResult {
    pub sockets: u64,
    pub held_seconds: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub rss_bytes_per_socket: Option<f64>,
    /// Proportional set size of the server processes (counts memory nginx workers share once).
    pub pss_before: u64,
    pub pss_after: u64,
    pub pss_bytes_per_socket: Option<f64>,
    pub cpu_us_while_idle: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerProcess {
    pub label: String,
    pub pid: u32,
    pub before: Sample,
    pub after: Sample,
}

impl ServerProcess {
    pub fn list(watched: &[Watched], before: &[Sample], after: &[Sample]) -> Vec<ServerProcess> {
        watched
            .iter()
            .zip(before.iter().zip(after))
            .map(|(w, (b, a))| ServerProcess { label: w.label.clone(), pid: w.pid, before: *b, after: *a })
            .collect()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Summary {
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let c = &self.connections;
        let _ = writeln!(t, "== loadgen: {} ({}) ==", self.label, self.mode);
        let _ = writeln!(
            t,
            "clients {} on {} channel(s), {} worker process(es), {}-byte messages, {:.1}s",
            self.clients, self.channels, self.workers, self.size, self.seconds
        );
        let _ = writeln!(
            t,
            "connections: {}/{} open, {} failed, {} ended during the run; {:.1}s to connect ({:.0}/s)",
            c.connected, c.attempted, c.failed, c.ended_during_run, c.connect_seconds, c.connects_per_sec
        );
        for (kind, n, example) in &c.errors {
            let _ = writeln!(t, "  connect failures {kind}: {n} (e.g. {example})");
        }
        for (kind, n) in &c.ended_kinds {
            let _ = writeln!(t, "  sockets ended {kind}: {n}");
        }
        if !self.phases.is_empty() {
            let _ = writeln!(
                t,
                "{:>3} {:>6} {:>8} {:>8} {:>10} {:>10} {:>8} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>22} {:>5}",
                "ph", "kind", "asked/s", "pub/s", "expected", "received", "loss%", "reord", "deliv/s", "p50ms", "p90ms",
                "p99ms", "p99.9ms", "maxms", "cpuµs/d", "srv/lg/oth/steal cores", "held"
            );
            for p in &self.phases {
                let _ = writeln!(
                    t,
                    "{:>3} {:>6} {:>8.1} {:>8.1} {:>10} {:>10} {:>8.4} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>22} {:>5}",
                    p.phase,
                    p.kind,
                    p.rate_asked,
                    p.publish_rate,
                    p.expected,
                    p.received,
                    p.loss_pct,
                    p.reordered,
                    p.deliveries_per_sec,
                    p.latency.p50_ms,
                    p.latency.p90_ms,
                    p.latency.p99_ms,
                    p.latency.p999_ms,
                    p.latency.max_ms,
                    p.server_cpu_us_per_delivery.map_or("-".into(), |v| format!("{v:.2}")),
                    format!("{:.2}/{:.2}/{:.2}/{:.2}", p.server_cores, p.loadgen_cores, p.other_cores, p.steal_cores),
                    if p.held { "yes" } else { "NO" }
                );
                if !p.held {
                    let _ = writeln!(t, "    phase {} not held: {}", p.phase, p.verdict);
                }
                if p.steal_cores > STEAL_WARNING_CORES {
                    let _ = writeln!(
                        t,
                        "    phase {}: the host withheld {:.2} cores from this machine (steal); its figures are not comparable",
                        p.phase, p.steal_cores
                    );
                }
                for (kind, n, example) in &p.publish_errors_kinds {
                    let _ = writeln!(t, "    publish errors {kind}: {n} (e.g. {example})");
                }
            }
            match self.max_lossless_rate {
                Some(r) => {
                    let _ = writeln!(t, "highest rate held without loss: {r:.1} publishes/s");
                }
                None => {
                    let _ = writeln!(t, "no phase was held without loss");
                }
            }
        }
        if self.foreign_messages > 0 {
            let _ = writeln!(
                t,
                "{} messages that were not loadgen's (heartbeats, replays) were ignored",
                self.foreign_messages
            );
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                t,
                "idle: {} sockets held {:.0}s; server RSS {:.1} MiB -> {:.1} MiB = {} per socket (PSS: {} per socket); CPU while idle {:.3}s",
                i.sockets,
                i.held_seconds,
                mib(i.rss_before),
                mib(i.rss_after),
                i.rss_bytes_per_socket.map_or("-".into(), |b| format!("{b:.0} bytes")),
                i.pss_bytes_per_socket.map_or("-".into(), |b| format!("{b:.0} bytes")),
                i.cpu_us_while_idle as f64 / 1e6
            );
        }
        for s in &self.server {
            let _ = writeln!(
                t,
                "server {} (pid {}): RSS {:.1} -> {:.1} MiB, CPU {:.2}s, threads {}",
                s.label,
                s.pid,
                mib(s.before.rss_bytes),
                mib(s.after.rss_bytes),
                s.after.cpu_us.saturating_sub(s.before.cpu_us) as f64 / 1e6,
                s.after.threads
            );
        }
        if let Some(why) = &self.aborted {
            let _ = writeln!(t, "ABORTED: {why}");
        }
        t
    }
}
