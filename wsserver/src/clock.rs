//! Identities and time stamps every step of the message path shares: [`SocketId`] and the cheap
//! monotonic [`Clock`] that stamps a message's arrival from Redis.

use std::time::Instant;

/// Identifies one socket in this process (also decides its fan-out shard).
pub type SocketId = u64;

/// A cheap monotonic clock in microseconds since it started (never 0, so 0 can mean "none"),
/// for delivery stamps compared across threads.
#[derive(Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { epoch: Instant::now() }
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_never_backwards() {
        let clock = Clock::start();
        let first = clock.now_us();
        assert!(first >= 1);
        assert!(clock.now_us() >= first);
    }
}
