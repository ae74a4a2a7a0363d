//! The one reconnect policy for every Redis connection of both binaries: exponential backoff
//! from [`MIN_DELAY`], doubling, capped at [`MAX_DELAY`], reset after a successful connection.
//!
//! [`Backoff`] applies it with "equal jitter": the delay before attempt n is drawn uniformly from
//! `[d/2, d]` where `d = min(MIN_DELAY · 2ⁿ, MAX_DELAY)`, so a fleet that lost Redis together
//! spreads its reconnects over half of each step yet never retries sooner than `d/2`. Used by
//! wsserver's pub/sub subscriber and webserver's readiness probe.
//!
//! The command connections (`redis::aio::ConnectionManager`, see [`crate::redis_link`]) are
//! configured from the same constants; redis-rs draws their jitter itself (it adds up to one
//! step), and retries once per failed command so a caller gets an error instead of waiting out
//! an outage.

use std::time::Duration;

/// The delay of the first retry (before jitter).
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Each failed attempt multiplies the delay by this.
pub const FACTOR: u32 = 2;

/// Backoff state for one connection.
pub struct Backoff {
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// A fresh state, its jitter seeded from the clock and the process id so processes started
    /// together do not draw the same delays.
    pub fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9)
            ^ u64::from(std::process::id()) << 32;
        Backoff::with_seed(seed)
    }

    /// A state with a fixed jitter seed (tests).
    pub fn with_seed(seed: u64) -> Backoff {
        Backoff { attempt: 0, seed: seed | 1 }
    }

    /// Back to the first step, after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts failed since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The step `d` of attempt `attempt` (0-based), before jitter.
    pub fn ceiling(attempt: u32) -> Duration {
        MIN_DELAY.saturating_mul(FACTOR.saturating_pow(attempt.min(16))).min(MAX_DELAY)
    }

    /// The delay before the next attempt, in `[d/2, d]`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Backoff::ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = 0.5 + (self.seed % 1001) as f64 / 2000.0;
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
    fn every_delay_lies_in_half_to_whole_step() {
        for seed in [1, 42, 0xdead_beef, u64::MAX] {
            let mut b = Backoff::with_seed(seed);
            for attempt in 0..30 {
                let ceiling = Backoff::ceiling(attempt);
                let delay = b.next_delay();
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "attempt {attempt}: {delay:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn steps_double_from_min_to_the_cap_and_reset() {
        assert_eq!(Backoff::ceiling(0), MIN_DELAY);
        assert_eq!(Backoff::ceiling(1), MIN_DELAY * 2);
        assert_eq!(Backoff::ceiling(5), MIN_DELAY * 32);
        assert_eq!(Backoff::ceiling(6), MAX_DELAY);
        assert_eq!(Backoff::ceiling(u32::MAX), MAX_DELAY);
        let mut b = Backoff::with_seed(7);
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.attempt(), 10);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay() <= MIN_DELAY);
    }

    #[test]
    fn delays_are_spread_over_the_range() {
        let mut b = Backoff::with_seed(3);
        let delays: Vec<Duration> = (0..200)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        let low = delays.iter().filter(|d| **d < MIN_DELAY * 3 / 4).count();
        assert!(low > 40 && low < 160, "{low} of 200 in the lower half");
    }
}
