//! The registry: which local sockets listen on which Redis channel. The first local interest in
//! a channel asks the subscriber to SUBSCRIBE, the last one leaving asks it to UNSUBSCRIBE;
//! membership ends when the [`Membership`] guard is dropped, however the socket ends.
//!
//! Locking: one std `Mutex` over the whole map. It is held for map updates and, per message,
//! for sorting the channel's members into the fan-out's shards (no socket is written under
//! it), never across an `.await`. The writes happen in [`crate::fanout`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use protocol::{ChannelName, SessionKey};
use tokio::sync::{mpsc, oneshot};

use crate::echo_filter::EchoFilter;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::outbox::{CloseReason, Outbox};

/// Identifies one socket in this process.
pub type SocketId = u64;

/// A socket as the fan-out sees it.
#[derive(Clone)]
pub struct Member {
    pub outbox: Outbox,
    /// Present when the socket did not ask for `echo`.
    pub echo_filter: Option<Arc<EchoFilter>>,
}

/// A cheap monotonic clock in microseconds since the registry started (never 0), for delivery
/// stamps.
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

enum State {
    /// SUBSCRIBE not yet confirmed: who waits for it.
    Pending(Vec<oneshot::Sender<()>>),
    Live,
}

struct Channel {
    members: HashMap<SocketId, Member>,
    state: State,
}

struct Inner {
    channels: HashMap<ChannelName, Channel>,
    /// Sockets of logged-in sessions, closed when webserver announces the session's end.
    sessions: HashMap<SessionKey, HashMap<SocketId, Outbox>>,
}

/// Close for sockets whose login session ended (logout, account deleted).
pub const SESSION_ENDED: CloseReason = CloseReason { code: 1008, reason: "session ended" };

/// Cloneable handle to the registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    /// Channels whose interest changed; the subscriber reconciles them with Redis.
    dirty: mpsc::UnboundedSender<ChannelName>,
    next_id: Arc<AtomicU64>,
    fanout: Arc<Fanout>,
    heartbeat: Option<Bytes>,
    /// Channel on which ended sessions are announced; always subscribed.
    revocations: ChannelName,
    clock: Clock,
}

/// Receiving end of the registry's change notifications, owned by the subscriber.
pub type DirtyChannels = mpsc::UnboundedReceiver<ChannelName>;

impl Registry {
    /// Starts `fanout_shards` fan-out threads (see [`crate::fanout`]).
    pub fn new(
        metrics: Arc<Metrics>,
        heartbeat: Option<&str>,
        revocations: ChannelName,
        fanout_shards: usize,
    ) -> std::io::Result<(Registry, DirtyChannels)> {
        let (dirty, rx) = mpsc::unbounded_channel();
        let _ = dirty.send(revocations.clone());
        let clock = Clock::start();
        let registry = Registry {
            inner: Arc::new(Mutex::new(Inner { channels: HashMap::new(), sessions: HashMap::new() })),
            dirty,
            next_id: Arc::new(AtomicU64::new(1)),
            fanout: Arc::new(Fanout::start(fanout_shards, metrics, clock)?),
            heartbeat: heartbeat.map(|h| Bytes::copy_from_slice(h.as_bytes())),
            revocations,
            clock,
        };
        Ok((registry, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_socket_id(&self) -> SocketId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Microseconds since this registry started (a cheap monotonic clock for stamps).
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Adds a socket to `channels`. Returns the guard that removes it again and a receiver per
    /// channel not yet confirmed by Redis.
    /// `session` is set for sockets of a logged-in session, so that its end closes them.
    pub fn join(
        &self,
        id: SocketId,
        member: Member,
        channels: Vec<ChannelName>,
        session: Option<SessionKey>,
    ) -> (Membership, Vec<oneshot::Receiver<()>>) {
        let mut waits = Vec::new();
        let mut inner = self.lock();
        if let Some(session) = &session {
            inner.sessions.entry(session.clone()).or_default().insert(id, member.outbox.clone());
        }
        for channel in &channels {
            let entry = inner.channels.entry(channel.clone()).or_insert_with(|| {
                let _ = self.dirty.send(channel.clone());
                Channel { members: HashMap::new(), state: State::Pending(Vec::new()) }
            });
            entry.members.insert(id, member.clone());
            if let State::Pending(waiters) = &mut entry.state {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                waits.push(rx);
            }
        }
        drop(inner);
        (Membership { registry: self.clone(), id, channels, session }, waits)
    }

    fn leave(&self, id: SocketId, channels: &[ChannelName], session: Option<&SessionKey>) {
        let mut inner = self.lock();
        if let Some(session) = session {
            if let Some(sockets) = inner.sessions.get_mut(session) {
                sockets.remove(&id);
                if sockets.is_empty() {
                    inner.sessions.remove(session);
                }
            }
        }
        for channel in channels {
            if let Some(entry) = inner.channels.get_mut(channel) {
                entry.members.remove(&id);
                if entry.members.is_empty() {
                    inner.channels.remove(channel);
                    let _ = self.dirty.send(channel.clone());
                }
            }
        }
    }

    /// Whether any local socket listens on `channel` (the subscriber's reconcile question).
    pub fn is_wanted(&self, channel: &ChannelName) -> bool {
        *channel == self.revocations || self.lock().channels.contains_key(channel)
    }

    /// Every channel with local interest (for resubscription after a reconnect).
    pub fn channels(&self) -> Vec<ChannelName> {
        let mut channels: Vec<ChannelName> = self.lock().channels.keys().cloned().collect();
        channels.push(self.revocations.clone());
        channels
    }

    /// Closes every socket of an ended session with [`SESSION_ENDED`].
    fn revoke(&self, session: &[u8]) {
        let Some(key) = std::str::from_utf8(session).ok().and_then(|s| SessionKey::parse(s).ok()) else { return };
        let sockets = self.lock().sessions.remove(&key);
        if let Some(sockets) = sockets {
            tracing::info!(sockets = sockets.len(), "closing sockets of an ended session");
            for outbox in sockets.values() {
                outbox.close_now(SESSION_ENDED);
            }
        }
    }

    /// Redis confirmed the subscription: wake the sockets waiting for it.
    pub fn mark_live(&self, channel: &ChannelName) {
        let mut inner = self.lock();
        if let Some(entry) = inner.channels.get_mut(channel) {
            if let State::Pending(waiters) = std::mem::replace(&mut entry.state, State::Live) {
                for waiter in waiters {
                    let _ = waiter.send(());
                }
            }
        }
    }

    /// The pub/sub connection was lost: new joiners must wait for the resubscription.
    pub fn mark_all_pending(&self) {
        let mut inner = self.lock();
        for entry in inner.channels.values_mut() {
            if matches!(entry.state, State::Live) {
                entry.state = State::Pending(Vec::new());
            }
        }
    }

    /// Fans one Redis message out: encodes it once and hands the same bytes for every member,
    /// except members whose own publish this is, to the fan-out. Returns the number of sockets.
    pub fn deliver(&self, channel: &str, payload: &[u8]) -> usize {
        if self.heartbeat.as_deref() == Some(payload) {
            return 0;
        }
        if channel == self.revocations.as_str() {
            self.revoke(payload);
            return 0;
        }
        let arrived_us = self.now_us();
        let mut split = self.fanout.split();
        let mut count = 0;
        {
            let inner = self.lock();
            let Some(entry) = inner.channels.get(channel) else { return 0 };
            for (id, member) in &entry.members {
                if let Some(filter) = &member.echo_filter {
                    if filter.swallow(channel, payload) {
                        continue;
                    }
                }
                split.add(*id, &member.outbox);
                count += 1;
            }
        }
        if count > 0 {
            self.fanout.send(crate::frame::text(payload), split, arrived_us, channel);
        }
        count
    }
}

/// A socket's membership in its channels; dropping it leaves them.
pub struct Membership {
    registry: Registry,
    id: SocketId,
    channels: Vec<ChannelName>,
    session: Option<SessionKey>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.registry.leave(self.id, &self.channels, self.session.as_ref());
    }
}
