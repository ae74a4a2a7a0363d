//! The ws4redis heartbeat, in one place: the configured string (`--heartbeat`) and interval,
//! its frame encoded once, recognising it when it arrives from Redis (never delivered) or from a
//! client (answered with the same string, never published), and when an idle socket is due one.
//! The write loop's timer ([`crate::keepalive`]) asks [`Heartbeat::due`] and [`Heartbeat::next`].

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

/// The heartbeat of a process with `--heartbeat` set. Cheap to clone (the frame is shared).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    payload: Bytes,
    frame: Bytes,
    interval: Duration,
}

impl Heartbeat {
    /// `None` when heartbeats are off (`--heartbeat` unset).
    pub fn new(payload: Option<&str>, interval: Duration) -> Option<Heartbeat> {
        let payload = Bytes::copy_from_slice(payload?.as_bytes());
        Some(Heartbeat { frame: crate::frame::text(&payload), payload, interval })
    }

    /// The heartbeat as a text frame, ready to queue.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// Whether `payload` (from Redis or from a client) is the heartbeat string: Redis' copies
    /// are dropped, a client's is answered and not published.
    pub fn is(&self, payload: &[u8]) -> bool {
        self.payload == payload
    }

    /// When a socket last written at `last_write` is next due a heartbeat.
    pub fn next(&self, last_write: Instant) -> Instant {
        last_write + self.interval
    }

    /// Whether a socket last written at `last_write` is due a heartbeat at `now`.
    pub fn due(&self, last_write: Instant, now: Instant) -> bool {
        now >= self.next(last_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_a_string() {
        assert!(Heartbeat::new(None, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn recognises_only_its_own_string_and_encodes_it_once() {
        let hb = Heartbeat::new(Some("--heartbeat--"), Duration::from_secs(5)).unwrap();
        assert!(hb.is(b"--heartbeat--"));
        assert!(!hb.is(b"--heartbeat-"));
        assert!(!hb.is(b""));
        assert_eq!(hb.frame(), &crate::frame::text(b"--heartbeat--"));
    }

    #[test]
    fn due_once_the_interval_passed_since_the_last_write() {
        let hb = Heartbeat::new(Some("hb"), Duration::from_secs(5)).unwrap();
        let t = Instant::now();
        assert!(!hb.due(t, t + Duration::from_millis(4999)));
        assert!(hb.due(t, t + Duration::from_secs(5)));
        assert_eq!(hb.next(t), t + Duration::from_secs(5));
    }
}
