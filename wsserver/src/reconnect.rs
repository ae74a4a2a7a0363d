//! The one reconnect policy for Redis: exponential backoff with full jitter, capped, reset after
//! a successful connection. Used by the pub/sub subscriber; state changes are logged once.

use std::time::Duration;

/// Backoff state for one connection.
pub struct Backoff {
    attempt: u32,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// 100 ms doubling up to 5 s, each delay drawn uniformly from [delay/2, delay].
    pub fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9)
            ^ u64::from(std::process::id()) << 32;
        Backoff { attempt: 0, min: Duration::from_millis(100), max: Duration::from_secs(5), seed: seed | 1 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.min.saturating_mul(1 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        ceiling.mul_f64(fraction)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert!(b.next_delay() >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
