//! A websocket client that reconnects the way `/static/ws4redis.js` does (backoff with full
//! jitter) and, when asked to, recovers per the README's recovery contract: `recover` on the
//! first connection, `recover=<epoch>:<offset>,...` on every reconnection, status objects kept
//! apart from messages. It records what it received so that a test or a measurement can count
//! lost, duplicated and reordered messages.
//!
//! Unlike the JS client it never drops a duplicate: what the server sends twice is counted.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::recovery_frames::{Positions, RecoveryFrame};
use crate::ws::{Event, WsClient};

/// How a client waits before reconnecting: the k-th retry in a row waits a random time in
/// [`min`, max(`min`, min(`max`, `first` · 2^k))], as ws4redis.js does with its own numbers.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub min: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based) for a random `unit` in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let window = self.first.saturating_mul(1u32 << attempt.min(16)).min(self.max);
        window.mul_f64(unit.clamp(0.0, 1.0)).max(self.min)
    }
}

impl Default for Backoff {
    /// First retry within 1 s, doubling up to 30 s, never sooner than 100 ms.
    fn default() -> Self {
        Backoff { first: Duration::from_secs(1), max: Duration::from_secs(30), min: Duration::from_millis(100) }
    }
}

/// splitmix64: the jitter's random numbers (no quality needed, only spread).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one client saw over its life.
#[derive(Debug, Clone, Default)]
pub struct ClientLog {
    /// Message payloads in arrival order (envelopes stripped), heartbeats excluded.
    pub payloads: Vec<String>,
    /// Sockets that opened (the first one included).
    pub connections: u32,
    /// Where in `payloads` each socket's first payload went (one entry per socket).
    pub connection_starts: Vec<usize>,
    /// Sockets that ended under the client.
    pub disconnects: u32,
    /// `gap` statuses received.
    pub gaps: u32,
    /// `recovered` statuses received.
    pub recoveries: u32,
}

/// Settings of [`run_client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://host:port/ws/<facility>?<flags>`, without `recover`.
    pub url: String,
    /// Opt in to recovery.
    pub recover: bool,
    pub backoff: Backoff,
    /// The heartbeat string the server sends (never recorded as a payload).
    pub heartbeat: Option<String>,
    pub seed: u64,
}

/// Connects, records every payload, reconnects after every loss, until `stop` is cancelled.
/// `on_payload` sees each payload as it arrives (e.g. to tell a coordinator progress).
pub async fn run_client(
    options: ClientOptions,
    stop: CancellationToken,
    mut on_payload: impl FnMut(&str),
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut positions = Positions::default();
    let mut jitter = Jitter::new(options.seed);
    let mut attempt = 0u32;
    while !stop.is_cancelled() {
        let url = if options.recover { positions.recover_url(&options.url) } else { options.url.clone() };
        let connected = tokio::select! {
            _ = stop.cancelled() => break,
            result = WsClient::connect(&url) => result,
        };
        if let Ok(mut ws) = connected {
            log.connections += 1;
            log.connection_starts.push(log.payloads.len());
            attempt = 0;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return log,
                    event = ws.recv(Duration::from_secs(3600)) => event,
                };
                let text = match event {
                    Some(Event::Text(text)) => text,
                    Some(Event::Binary(_)) | None => continue,
                    Some(Event::Close { .. } | Event::Ended(_)) => break,
                };
                if options.heartbeat.as_deref() == Some(text.as_str()) {
                    continue;
                }
                let payload = if options.recover {
                    match RecoveryFrame::parse(&text) {
                        RecoveryFrame::Status { kind, epoch, offset } => {
                            match kind.as_str() {
                                "gap" => log.gaps += 1,
                                "recovered" => log.recoveries += 1,
                                _ => {}
                            }
                            if let (Some(epoch), Some(offset)) = (epoch, offset) {
                                positions.advance(&epoch, offset);
                            }
                            continue;
                        }
                        RecoveryFrame::Message { data, epoch, offset } => {
                            if let (Some(epoch), Some(offset)) = (epoch, offset) {
                                positions.advance(&epoch, offset);
                            }
                            data
                        }
                        RecoveryFrame::Raw(text) => text,
                    }
                } else {
                    text
                };
                on_payload(&payload);
                log.payloads.push(payload);
            }
            log.disconnects += 1;
        }
        let delay = options.backoff.delay(attempt, jitter.unit());
        attempt += 1;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    log
}

/// Losses of one client measured against the sequence `1..=published`: payloads that are not a
/// number in that range (sync messages) are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceCheck {
    pub lost: u64,
    pub duplicates: u64,
    /// Messages that arrived after one with a higher number.
    pub out_of_order: u64,
}

impl SequenceCheck {
    pub fn of(payloads: &[String], published: u64) -> SequenceCheck {
        SequenceCheck::with_duplicates(payloads, published).0
    }

    /// Also returns where (index in `payloads`) each duplicate arrived.
    pub fn with_duplicates(payloads: &[String], published: u64) -> (SequenceCheck, Vec<usize>) {
        let mut seen = vec![false; published as usize + 1];
        let mut check = SequenceCheck::default();
        let mut duplicates = Vec::new();
        let mut highest = 0;
        let numbers = payloads.iter().enumerate().filter_map(|(i, p)| Some((i, p.parse::<u64>().ok()?)));
        for (i, n) in numbers.filter(|(_, n)| (1..=published).contains(n)) {
            if seen[n as usize] {
                check.duplicates += 1;
                duplicates.push(i);
            }
            seen[n as usize] = true;
            if n < highest {
                check.out_of_order += 1;
            }
            highest = highest.max(n);
        }
        check.lost = seen[1..].iter().filter(|s| !**s).count() as u64;
        (check, duplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_first_retry_within_the_first_window_then_doubling_and_capped() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.999), Duration::from_millis(999));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(10, 0.5), Duration::from_secs(15));
        assert_eq!(b.delay(40, 0.999), Duration::from_secs(30).mul_f64(0.999));
    }

    #[test]
    fn jitter_stays_in_the_unit_interval_and_spreads() {
        let mut j = Jitter::new(7);
        let values: Vec<f64> = (0..1000).map(|_| j.unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.iter().any(|v| *v < 0.1) && values.iter().any(|v| *v > 0.9));
    }

    #[test]
    fn sequence_check_counts_lost_duplicates_and_reordering() {
        let payloads: Vec<String> =
            ["sync", "1", "2", "4", "3", "3", "6", "99"].iter().map(|s| s.to_string()).collect();
        assert_eq!(SequenceCheck::of(&payloads, 6), SequenceCheck { lost: 1, duplicates: 1, out_of_order: 2 });
        assert_eq!(SequenceCheck::of(&[], 3), SequenceCheck { lost: 3, duplicates: 0, out_of_order: 0 });
        assert_eq!(SequenceCheck::with_duplicates(&payloads, 6).1, vec![5]);
    }
}
