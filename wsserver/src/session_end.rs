//! Session-end announcements: webserver publishes a session key on the revocations channel
//! when a login session ends (logout, account deleted), and every socket of that session is
//! closed with [`SESSION_ENDED`]. The subscriber keeps the channel subscribed and hands its
//! messages here instead of to the registry: they are control traffic, never delivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use protocol::{ChannelName, SessionKey};

use crate::clock::SocketId;
pub use crate::close::SESSION_ENDED;
use crate::outbox::Outbox;

/// The sockets of logged-in sessions, by session. A std `Mutex`: touched once per connect and
/// disconnect of a logged-in socket and per announcement, never held across `.await`.
/// Cloneable handle (one pointer: every tracked socket holds one).
#[derive(Clone)]
pub struct SessionEnds {
    inner: Arc<Inner>,
}

struct Inner {
    channel: ChannelName,
    sessions: Mutex<HashMap<SessionKey, HashMap<SocketId, Outbox>>>,
}

impl SessionEnds {
    /// Listens for announcements on `channel` (`KeyPrefix::session_revocations`).
    pub fn new(channel: ChannelName) -> SessionEnds {
        SessionEnds { inner: Arc::new(Inner { channel, sessions: Mutex::default() }) }
    }

    /// The revocations channel, always subscribed.
    pub fn channel(&self) -> &ChannelName {
        &self.inner.channel
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, HashMap<SocketId, Outbox>>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks socket `id` of `session` until the returned guard is dropped.
    pub fn track(&self, id: SocketId, session: SessionKey, outbox: &Outbox) -> SessionTracking {
        self.lock().entry(session.clone()).or_default().insert(id, outbox.clone());
        SessionTracking { ends: self.clone(), id, session }
    }

    /// An announcement arrived: closes every socket of the session it names. Anything that is
    /// not a session key is ignored.
    pub fn announce(&self, payload: &[u8]) {
        let Some(key) = std::str::from_utf8(payload).ok().and_then(|s| SessionKey::parse(s).ok()) else { return };
        let sockets = self.lock().remove(&key);
        if let Some(sockets) = sockets {
            tracing::info!(sockets = sockets.len(), "closing sockets of an ended session");
            for outbox in sockets.values() {
                outbox.close_now(SESSION_ENDED);
            }
        }
    }
}

/// A socket's entry in [`SessionEnds`]; dropping it removes the entry.
pub struct SessionTracking {
    ends: SessionEnds,
    id: SocketId,
    session: SessionKey,
}

impl Drop for SessionTracking {
    fn drop(&mut self) {
        let mut sessions = self.ends.lock();
        if let Some(sockets) = sessions.get_mut(&self.session) {
            sockets.remove(&self.id);
            if sockets.is_empty() {
                sessions.remove(&self.session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseReason;
    use crate::outbox::Batch;

    fn closed_with(outbox: &Outbox) -> Option<CloseReason> {
        let mut batch = Batch::default();
        outbox.take_batch(&mut batch, usize::MAX);
        batch.close
    }

    #[test]
    fn an_announcement_closes_every_socket_of_that_session_only() {
        let ends = SessionEnds::new(ChannelName::from_redis("revocations"));
        let key = |s: &str| SessionKey::parse(s).unwrap();
        let (a1, a2, b) = (Outbox::for_test(4), Outbox::for_test(4), Outbox::for_test(4));
        let _t1 = ends.track(1, key("sessiona"), &a1);
        let _t2 = ends.track(2, key("sessiona"), &a2);
        let _t3 = ends.track(3, key("sessionb"), &b);
        ends.announce(b"not a session key \xff");
        ends.announce(b"sessionc");
        assert_eq!(closed_with(&a1), None, "unknown or invalid keys close nothing");
        ends.announce(b"sessiona");
        assert_eq!(closed_with(&a1), Some(SESSION_ENDED));
        assert_eq!(closed_with(&a2), Some(SESSION_ENDED));
        assert_eq!(closed_with(&b), None);
    }

    #[test]
    fn a_socket_that_ended_is_forgotten() {
        let ends = SessionEnds::new(ChannelName::from_redis("revocations"));
        let o = Outbox::for_test(4);
        let tracking = ends.track(1, SessionKey::parse("sessiona").unwrap(), &o);
        drop(tracking);
        assert!(ends.lock().is_empty(), "the session's entry goes with its last socket");
        ends.announce(b"sessiona");
        assert_eq!(closed_with(&o), None);
    }
}
