//! Counters and gauges, and their Prometheus text. Every metric name is written here only.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Why an upgrade was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    Origin,
    Forbidden,
    Full,
    Draining,
    Unavailable,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::BadRequest,
        Refusal::Origin,
        Refusal::Forbidden,
        Refusal::Full,
        Refusal::Draining,
        Refusal::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::Origin => "origin",
            Refusal::Forbidden => "forbidden",
            Refusal::Full => "full",
            Refusal::Draining => "draining",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// Upper bounds (seconds) of the delivery latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Delivery latencies collected locally, added to [`Metrics`] in one go.
#[derive(Default)]
pub struct DeliveryTally {
    buckets: [u64; 12],
    count: u64,
    sum_us: u64,
}

impl DeliveryTally {
    pub fn observe_us(&mut self, latency_us: u64) {
        let secs = latency_us as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_us += latency_us;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// One fan-out shard's queue (see [`crate::fanout`]): jobs handed to the shard and not yet
/// finished by it, and the most there ever were. Aligned to its own cache line: the shards'
/// counters are written from different cores.
#[derive(Default)]
#[repr(align(64))]
pub struct ShardLoad {
    /// Also the fan-out's "shard idle" test for inline deliveries.
    pub queued: AtomicUsize,
    pub high_water: AtomicUsize,
}

impl ShardLoad {
    /// A job was handed to the shard (by the one producer, the subscriber task).
    pub fn handed_over(&self) {
        let queued = self.queued.fetch_add(1, Relaxed) + 1;
        if queued > self.high_water.load(Relaxed) {
            self.high_water.fetch_max(queued, Relaxed);
        }
    }
}

/// Process-wide metrics; lock-free atomics, shared by reference.
#[derive(Default)]
pub struct Metrics {
    pub sockets_open: AtomicI64,
    pub upgrades_accepted: AtomicU64,
    refused: [AtomicU64; 6],
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub redis_messages: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub ping_timeouts: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub redis_reconnects: AtomicU64,
    pub redis_up: AtomicI64,
    pub redis_channels: AtomicI64,
    /// Live hand-off: sockets passed to a new process, sockets it could not pass (closed with
    /// 1001), sockets taken over from an old process, hand-offs that failed.
    pub handoff_handed: AtomicU64,
    pub handoff_closed: AtomicU64,
    pub handoff_taken: AtomicU64,
    pub handoff_failures: AtomicU64,
    /// Redis Cluster: sharded pub/sub connections open (one per master).
    pub redis_shard_connections: AtomicI64,
    /// Redis Cluster: channels subscribed again after a lost connection or a moved slot.
    pub redis_resubscriptions: AtomicU64,
    /// Redis Cluster: channels subscribed with `SSUBSCRIBE` on their shard's master.
    pub redis_shard_channels: AtomicI64,
    /// Redis Cluster: channels with local interest whose shard has no reachable master.
    pub redis_unplaced_channels: AtomicI64,
    /// History appends (client publishes) and recoveries.
    pub history: service::history_metrics::HistoryMetrics,
    latency_buckets: [AtomicU64; 12],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Set once by the fan-out when it starts.
    pub fanout_shards: OnceLock<Arc<[ShardLoad]>>,
}

impl Metrics {
    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn refused_count(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    /// Records the time from a message's arrival from Redis to the end of its socket write.
    pub fn observe_delivery(&self, latency: Duration) {
        let mut tally = DeliveryTally::default();
        tally.observe_us(latency.as_micros() as u64);
        self.record_deliveries(&tally);
    }

    /// Adds the latencies a fan-out shard tallied for one message (one update per message, not
    /// per socket).
    pub fn record_deliveries(&self, tally: &DeliveryTally) {
        if tally.count == 0 {
            return;
        }
        for (bucket, n) in self.latency_buckets.iter().zip(tally.buckets) {
            if n > 0 {
                bucket.fetch_add(n, Relaxed);
            }
        }
        self.latency_count.fetch_add(tally.count, Relaxed);
        self.latency_sum_us.fetch_add(tally.sum_us, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        metric("crier_ws_sockets_open", "gauge", "Websockets open now.", self.sockets_open.load(Relaxed).to_string());
        metric(
            "crier_ws_upgrades_accepted_total",
            "counter",
            "Websocket upgrades accepted.",
            get(&self.upgrades_accepted),
        );
        metric("crier_ws_messages_in_total", "counter", "Messages received from clients.", get(&self.messages_in));
        metric(
            "crier_ws_messages_out_total",
            "counter",
            "Frames queued to clients (live, replay, heartbeat).",
            get(&self.messages_out),
        );
        metric(
            "crier_ws_redis_messages_total",
            "counter",
            "Pub/sub messages received from Redis.",
            get(&self.redis_messages),
        );
        metric(
            "crier_ws_slow_consumer_closes_total",
            "counter",
            "Sockets closed because their outgoing queue was full.",
            get(&self.slow_consumer_closes),
        );
        metric(
            "crier_ws_ping_timeouts_total",
            "counter",
            "Sockets closed because they stopped answering pings.",
            get(&self.ping_timeouts),
        );
        metric(
            "crier_ws_protocol_errors_total",
            "counter",
            "Sockets closed for websocket protocol violations.",
            get(&self.protocol_errors),
        );
        metric(
            "crier_ws_redis_reconnects_total",
            "counter",
            "Reconnections of the Redis pub/sub connection.",
            get(&self.redis_reconnects),
        );
        metric(
            "crier_ws_redis_up",
            "gauge",
            "1 while the Redis pub/sub connection is established.",
            self.redis_up.load(Relaxed).to_string(),
        );
        metric(
            "crier_ws_redis_channels",
            "gauge",
            "Redis channels this process is subscribed to.",
            self.redis_channels.load(Relaxed).to_string(),
        );
        metric(
            "crier_ws_process_id",
            "gauge",
            "This process's id (a live hand-off changes it).",
            std::process::id().to_string(),
        );
        metric(
            "crier_ws_handoff_sockets_handed_total",
            "counter",
            "Sockets passed to a new process by a live hand-off.",
            get(&self.handoff_handed),
        );
        metric(
            "crier_ws_handoff_sockets_closed_total",
            "counter",
            "Sockets a live hand-off could not pass (state refused, mid-handshake, cut lost), closed with 1001.",
            get(&self.handoff_closed),
        );
        metric(
            "crier_ws_handoff_sockets_taken_total",
            "counter",
            "Sockets taken over from an old process by a live hand-off.",
            get(&self.handoff_taken),
        );
        metric(
            "crier_ws_handoff_failures_total",
            "counter",
            "Live hand-offs abandoned (the new process died, refused or timed out); this process kept serving.",
            get(&self.handoff_failures),
        );
        metric(
            "crier_ws_redis_pubsub_connections",
            "gauge",
            "Redis pub/sub connections open: the classic one, plus one per master on a Redis Cluster.",
            (self.redis_up.load(Relaxed) + self.redis_shard_connections.load(Relaxed)).to_string(),
        );
        metric(
            "crier_ws_redis_shard_channels",
            "gauge",
            "Redis Cluster: channels subscribed with SSUBSCRIBE on their shard's master.",
            self.redis_shard_channels.load(Relaxed).to_string(),
        );
        metric(
            "crier_ws_redis_resubscriptions_total",
            "counter",
            "Redis Cluster: channels subscribed again on their shard after a lost connection, a failover or a moved slot.",
            get(&self.redis_resubscriptions),
        );
        metric(
            "crier_ws_redis_unplaced_channels",
            "gauge",
            "Redis Cluster: subscribed channels whose shard has no reachable master now (readiness is 503 while above 0).",
            self.redis_unplaced_channels.load(Relaxed).to_string(),
        );
        let shards = self.fanout_shards.get().map_or(&[][..], |s| &s[..]);
        let _ = writeln!(out, "# HELP crier_ws_fanout_jobs_queued Messages handed to a fan-out shard and not yet written by it, by shard.\n# TYPE crier_ws_fanout_jobs_queued gauge");
        for (i, shard) in shards.iter().enumerate() {
            let _ = writeln!(out, "crier_ws_fanout_jobs_queued{{shard=\"{i}\"}} {}", shard.queued.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP crier_ws_fanout_jobs_queued_max Most messages a fan-out shard had queued at once since the start, by shard.\n# TYPE crier_ws_fanout_jobs_queued_max gauge");
        for (i, shard) in shards.iter().enumerate() {
            let _ =
                writeln!(out, "crier_ws_fanout_jobs_queued_max{{shard=\"{i}\"}} {}", shard.high_water.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP crier_ws_upgrades_refused_total Websocket upgrades refused, by reason.\n# TYPE crier_ws_upgrades_refused_total counter");
        for reason in Refusal::ALL {
            let _ = writeln!(
                out,
                "crier_ws_upgrades_refused_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.refused_count(reason)
            );
        }
        let _ = writeln!(out, "# HELP crier_ws_delivery_seconds Time from a message's arrival from Redis to the end of its socket write.\n# TYPE crier_ws_delivery_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "crier_ws_delivery_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "crier_ws_delivery_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "crier_ws_delivery_seconds_sum {}", self.latency_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "crier_ws_delivery_seconds_count {count}");
        self.history.render(&mut out);
        out
    }
}
