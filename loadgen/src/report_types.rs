//! What worker processes tell the coordinator, one JSON object per stdout line, and what the
//! coordinator tells them on stdin (`finish`).

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;

/// A line from a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Every connection attempt has finished (or the connect budget ran out).
    Connected(ConnectReport),
    /// Running counters, several times a second.
    Progress(Progress),
    /// Everything measured, after `finish`.
    Final(FinalReport),
    /// The worker cannot go on.
    Failed { error: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// Failures by kind (`timeout`, `http 503`, `io: ...`), with one example message each.
    pub errors: Vec<(String, u64, String)>,
    /// Open subscribers per channel index: [[channel, count], ...].
    pub subscribers: Vec<(u32, u32)>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub connected: u64,
    pub failed: u64,
    /// Sockets that ended after connecting.
    pub ended: u64,
    /// Messages received per phase.
    pub received: Vec<u64>,
    /// Highest latency seen since the previous progress line (µs).
    pub recent_max_us: u64,
    /// This worker's p99 latency per phase so far (µs); the merged p99 is at most the largest.
    pub p99_us: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub received: u64,
    /// Messages older than one already received on the same socket.
    pub reordered: u64,
    /// The same sequence number twice in a row on a socket.
    pub duplicates: u64,
    /// Receive time of the first and last message (µs since the epoch).
    pub first_us: u64,
    pub last_us: u64,
    pub latency: Option<Histogram>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FinalReport {
    pub phases: Vec<PhaseCounts>,
    /// Per second of receive time (seconds since the epoch): a coarse latency histogram.
    pub seconds: Vec<(u64, Histogram)>,
    /// Messages that were not ours (heartbeats, replays of other runs).
    pub foreign: u64,
    pub ended: u64,
    /// How sockets ended during the run, by kind.
    pub ended_kinds: Vec<(String, u64)>,
}
