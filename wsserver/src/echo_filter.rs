//! Echo suppression done right: a socket without `echo` does not get back the copies of frames
//! it published itself. Each own publish is recorded per channel before the PUBLISH is sent, and
//! exactly one returning copy is swallowed per record; messages from others always arrive (two
//! identical payloads are indistinguishable on the wire, so swallowing either copy delivers the
//! same bytes).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use protocol::ChannelName;

/// Own publishes not yet seen coming back, per channel. Bounded: at most [`MAX_PENDING`] per
/// channel (a sender faster than that could see an echo, never lose a message).
#[derive(Default)]
pub struct EchoFilter {
    pending: Mutex<HashMap<ChannelName, VecDeque<Bytes>>>,
}

const MAX_PENDING: usize = 1024;

impl EchoFilter {
    pub fn new() -> EchoFilter {
        EchoFilter::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelName, VecDeque<Bytes>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an own publish on `channel`, before it is sent to Redis.
    pub fn expect(&self, channel: &ChannelName, payload: Bytes) {
        let mut pending = self.lock();
        let queue = pending.entry(channel.clone()).or_default();
        if queue.len() < MAX_PENDING {
            queue.push_back(payload);
        }
    }

    /// Forgets a record whose PUBLISH failed.
    pub fn forget(&self, channel: &ChannelName, payload: &[u8]) {
        let mut pending = self.lock();
        if let Some(queue) = pending.get_mut(channel.as_str()) {
            if let Some(i) = queue.iter().rposition(|p| p[..] == *payload) {
                queue.remove(i);
            }
            if queue.is_empty() {
                pending.remove(channel.as_str());
            }
        }
    }

    /// True when this message is the returning copy of an own publish (and consumes it).
    pub fn swallow(&self, channel: &str, payload: &[u8]) -> bool {
        let mut pending = self.lock();
        let Some(queue) = pending.get_mut(channel) else { return false };
        let Some(i) = queue.iter().position(|p| p[..] == *payload) else { return false };
        queue.remove(i);
        if queue.is_empty() {
            pending.remove(channel);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swallows_one_copy_per_own_publish() {
        let f = EchoFilter::new();
        let c = ChannelName::from_redis("broadcast:x");
        f.expect(&c, Bytes::from_static(b"m"));
        f.expect(&c, Bytes::from_static(b"m"));
        assert!(f.swallow("broadcast:x", b"m"));
        assert!(!f.swallow("broadcast:x", b"other"));
        assert!(f.swallow("broadcast:x", b"m"));
        assert!(!f.swallow("broadcast:x", b"m"), "a third identical message is someone else's");
        assert!(!f.swallow("broadcast:y", b"m"));
    }
}
