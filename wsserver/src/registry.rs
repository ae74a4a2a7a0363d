//! The registry: which local sockets listen on which Redis channel (step two of the message
//! path, after [`crate::subscriber`]). The first local interest in a channel asks the
//! subscriber to SUBSCRIBE, the last one leaving asks it to UNSUBSCRIBE; membership ends when
//! the [`Membership`] guard is dropped, however the socket ends. A channel is *pending* until
//! Redis confirms its subscription, then *live*; joiners of a pending channel get a receiver
//! that fires when it goes live ([`crate::join::replay`] waits on it). On a Redis Cluster a
//! channel is subscribed on two paths (classic `SUBSCRIBE` for plain `PUBLISH`, and `SSUBSCRIBE`
//! on its shard, [`crate::shard_subscriber`]); it is live once every path confirmed it, and
//! each path gets its own change notifications.
//!
//! Locking: one std `Mutex` over the whole map. It is held for map updates and, per message,
//! for sorting the channel's members into the fan-out's shards (no socket is written under
//! it), never across an `.await`. The writes happen in [`crate::fanout`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::ChannelName;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{Clock, SocketId};
use crate::echo_filter::EchoFilter;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// A socket as the fan-out sees it.
#[derive(Clone)]
pub struct Member {
    pub outbox: Outbox,
    /// Present when the socket did not ask for `echo`.
    pub echo_filter: Option<Arc<EchoFilter>>,
    /// Present when the socket opted in to recovery: it gets `message` objects, held by the
    /// gate until its recovery is done.
    pub gate: Option<Arc<crate::recovery::Gate>>,
}

enum State {
    /// Not yet confirmed by every path: who waits for it, and the paths that confirmed (bits).
    Pending(Vec<oneshot::Sender<()>>, u8),
    Live,
}

/// A subscription path: the classic subscriber is [`CLASSIC`]; a cluster's sharded subscriber
/// is path 1.
pub type Path = usize;
/// The classic (`SUBSCRIBE`) path, the only one outside a cluster.
pub const CLASSIC: Path = 0;

struct Channel {
    members: HashMap<SocketId, Member>,
    state: State,
}

struct Inner {
    channels: HashMap<ChannelName, Channel>,
}

/// Cloneable handle to the registry.
#[derive(Clone)]
pub struct Registry {
    table: Table,
    /// Bits of every path: a channel is live when its confirmations reach this.
    all_paths: u8,
    next_id: Arc<AtomicU64>,
    fanout: Arc<Fanout>,
    clock: Clock,
}

/// The channel table and where its changes go: all a [`Membership`] keeps to leave (16 bytes per
/// socket, not the whole handle).
#[derive(Clone)]
struct Table {
    inner: Arc<Mutex<Inner>>,
    /// Channels whose interest changed, one sender per path; the subscribers reconcile them.
    dirty: Arc<[mpsc::UnboundedSender<ChannelName>]>,
}

impl Table {
    fn changed(&self, channel: &ChannelName) {
        for path in self.dirty.iter() {
            let _ = path.send(channel.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn leave(&self, id: SocketId, channels: &[ChannelName]) {
        let mut inner = self.lock();
        for channel in channels {
            if let Some(entry) = inner.channels.get_mut(channel) {
                entry.members.remove(&id);
                if entry.members.is_empty() {
                    inner.channels.remove(channel);
                    self.changed(channel);
                }
            }
        }
    }
}

/// Receiving end of the registry's change notifications, owned by the subscriber.
pub type DirtyChannels = mpsc::UnboundedReceiver<ChannelName>;

impl Registry {
    /// Starts `fanout_shards` fan-out threads (see [`crate::fanout`]); one subscription path.
    pub fn new(metrics: Arc<Metrics>, fanout_shards: usize) -> std::io::Result<(Registry, DirtyChannels)> {
        let (registry, mut dirty) = Registry::with_paths(metrics, fanout_shards, 1)?;
        Ok((registry, dirty.remove(0)))
    }

    /// As [`Registry::new`] with `paths` subscription paths (1 to 8), each with its receiver.
    pub fn with_paths(
        metrics: Arc<Metrics>,
        fanout_shards: usize,
        paths: usize,
    ) -> std::io::Result<(Registry, Vec<DirtyChannels>)> {
        assert!((1..=8).contains(&paths), "1 to 8 subscription paths");
        let (dirty, rx): (Vec<_>, Vec<_>) = (0..paths).map(|_| mpsc::unbounded_channel()).unzip();
        let clock = Clock::start();
        let registry = Registry {
            table: Table { inner: Arc::new(Mutex::new(Inner { channels: HashMap::new() })), dirty: dirty.into() },
            all_paths: ((1u16 << paths) - 1) as u8,
            next_id: Arc::new(AtomicU64::new(1)),
            fanout: Arc::new(Fanout::start(fanout_shards, metrics, clock)?),
            clock,
        };
        Ok((registry, rx))
    }

    fn changed(&self, channel: &ChannelName) {
        self.table.changed(channel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.table.lock()
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
    pub fn join(
        &self,
        id: SocketId,
        member: Member,
        channels: Vec<ChannelName>,
    ) -> (Membership, Vec<oneshot::Receiver<()>>) {
        let mut waits = Vec::new();
        let mut inner = self.lock();
        for channel in &channels {
            let entry = inner.channels.entry(channel.clone()).or_insert_with(|| {
                self.changed(channel);
                Channel { members: HashMap::new(), state: State::Pending(Vec::new(), 0) }
            });
            entry.members.insert(id, member.clone());
            if let State::Pending(waiters, _) = &mut entry.state {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                waits.push(rx);
            }
        }
        drop(inner);
        (Membership { table: self.table.clone(), id, channels }, waits)
    }

    /// Whether any local socket listens on `channel` (the subscriber's reconcile question).
    pub fn is_wanted(&self, channel: &ChannelName) -> bool {
        self.lock().channels.contains_key(channel)
    }

    /// Every channel with local interest (for resubscription after a reconnect).
    pub fn channels(&self) -> Vec<ChannelName> {
        self.lock().channels.keys().cloned().collect()
    }

    /// Redis confirmed the subscription on the classic path.
    pub fn mark_live(&self, channel: &ChannelName) {
        self.mark_live_on(CLASSIC, channel);
    }

    /// Redis confirmed the subscription on `path`: once every path did, wake the sockets
    /// waiting for it.
    pub fn mark_live_on(&self, path: Path, channel: &ChannelName) {
        let mut inner = self.lock();
        if let Some(entry) = inner.channels.get_mut(channel) {
            if let State::Pending(_, confirmed) = &mut entry.state {
                *confirmed |= 1 << path;
                if *confirmed == self.all_paths {
                    if let State::Pending(waiters, _) = std::mem::replace(&mut entry.state, State::Live) {
                        for waiter in waiters {
                            let _ = waiter.send(());
                        }
                    }
                }
            }
        }
    }

    /// The classic pub/sub connection was lost: new joiners must wait for the resubscription.
    pub fn mark_all_pending(&self) {
        let channels: Vec<ChannelName> = self.lock().channels.keys().cloned().collect();
        self.mark_pending_on(CLASSIC, &channels);
    }

    /// `channels` lost their subscription on `path` (a connection or a slot moved): new
    /// joiners wait for the resubscription.
    pub fn mark_pending_on(&self, path: Path, channels: &[ChannelName]) {
        let mut inner = self.lock();
        for channel in channels {
            if let Some(entry) = inner.channels.get_mut(channel) {
                match &mut entry.state {
                    State::Live => entry.state = State::Pending(Vec::new(), self.all_paths & !(1 << path)),
                    State::Pending(_, confirmed) => *confirmed &= !(1 << path),
                }
            }
        }
    }

    /// Fans one Redis message out: encodes it once and hands the same bytes for every member,
    /// except members whose own publish this is, to the fan-out. This is the one place a Redis
    /// message becomes a frame. A positioned payload (history facilities) is decoded once:
    /// plain sockets get the bare payload, exactly as without history; opted-in sockets get the
    /// contract's `message` object, also encoded once, unless their recovery holds or already
    /// sent it. Returns the number of sockets.
    pub fn deliver(&self, channel: &str, raw: &[u8]) -> usize {
        let message = protocol::positioned::decode(raw);
        let payload = message.payload;
        let arrived_us = self.now_us();
        let mut split = self.fanout.split();
        let mut count = 0;
        let mut opted_in: Vec<(SocketId, Member)> = Vec::new();
        {
            let inner = self.lock();
            let Some(entry) = inner.channels.get(channel) else { return 0 };
            for (id, member) in &entry.members {
                if let Some(filter) = &member.echo_filter {
                    if filter.swallow(channel, payload) {
                        continue;
                    }
                }
                // A channel outside the socket's audiences (a hand-off's markers) is plain.
                if member.gate.as_ref().is_some_and(|gate| gate.audience(channel).is_some()) {
                    opted_in.push((*id, member.clone()));
                    continue;
                }
                split.add(*id, &member.outbox);
                count += 1;
            }
        }
        if count > 0 {
            self.fanout.send(crate::frame::text(payload), split, arrived_us, channel);
        }
        count + self.deliver_opted_in(channel, message, opted_in, arrived_us)
    }

    /// The `message` object to the opted-in members of a channel (outside the registry lock:
    /// each gate decides under its own lock whether to hold, drop or deliver it).
    fn deliver_opted_in(
        &self,
        channel: &str,
        message: protocol::positioned::Positioned<'_>,
        members: Vec<(SocketId, Member)>,
        arrived_us: u64,
    ) -> usize {
        let Some(audience) = members.iter().find_map(|(_, m)| m.gate.as_ref()?.audience(channel).cloned()) else {
            return 0;
        };
        let frame = crate::recovery::message_frame(&audience, message.position, message.payload);
        let mut split = self.fanout.split();
        let mut count = 0;
        for (id, member) in &members {
            let admitted = member.gate.as_ref().is_none_or(|gate| gate.admit(channel, message.position, &frame));
            if admitted {
                split.add(*id, &member.outbox);
                count += 1;
            }
        }
        if count > 0 {
            self.fanout.send(frame, split, arrived_us, channel);
        }
        members.len()
    }
}

/// A socket's membership in its channels; dropping it leaves them.
pub struct Membership {
    table: Table,
    id: SocketId,
    channels: Vec<ChannelName>,
}

impl Membership {
    /// The channels joined, in the order given to [`Registry::join`].
    pub fn channels(&self) -> &[ChannelName] {
        &self.channels
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.table.leave(self.id, &self.channels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Batch;
    use bytes::Bytes;

    fn channel(name: &str) -> ChannelName {
        ChannelName::from_redis(name)
    }

    fn member() -> Member {
        Member { outbox: Outbox::for_test(16), echo_filter: None, gate: None }
    }

    fn drain(dirty: &mut DirtyChannels) -> Vec<ChannelName> {
        std::iter::from_fn(|| dirty.try_recv().ok()).collect()
    }

    #[test]
    fn the_first_joiner_asks_for_a_subscription_and_the_last_leaver_for_its_end() {
        let (registry, mut dirty) = Registry::new(Arc::new(Metrics::default()), 1).unwrap();
        let (a, _) = registry.join(1, member(), vec![channel("news"), channel("user:1")]);
        assert_eq!(drain(&mut dirty), [channel("news"), channel("user:1")]);
        let (b, _) = registry.join(2, member(), vec![channel("news")]);
        assert!(drain(&mut dirty).is_empty(), "a second joiner changes nothing in Redis");
        let mut wanted = registry.channels();
        wanted.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(wanted, [channel("news"), channel("user:1")]);
        drop(a);
        assert_eq!(drain(&mut dirty), [channel("user:1")], "news still has a member");
        assert!(registry.is_wanted(&channel("news")));
        assert!(!registry.is_wanted(&channel("user:1")));
        drop(b);
        assert_eq!(drain(&mut dirty), [channel("news")]);
        assert!(!registry.is_wanted(&channel("news")));
        assert!(registry.channels().is_empty());
    }

    #[tokio::test]
    async fn joiners_wait_while_pending_and_not_once_live() {
        let (registry, _dirty) = Registry::new(Arc::new(Metrics::default()), 1).unwrap();
        let (_a, mut waits) = registry.join(1, member(), vec![channel("news")]);
        let (_b, waits_b) = registry.join(2, member(), vec![channel("news")]);
        assert_eq!((waits.len(), waits_b.len()), (1, 1), "pending: both wait");
        let mut wait = waits.pop().unwrap();
        assert!(wait.try_recv().is_err(), "not before Redis confirms");
        registry.mark_live(&channel("news"));
        assert_eq!(wait.try_recv(), Ok(()));
        for w in waits_b {
            w.await.unwrap();
        }
        let (_c, waits_c) = registry.join(3, member(), vec![channel("news")]);
        assert!(waits_c.is_empty(), "live: nothing to wait for");
        // A lost pub/sub connection: new joiners wait for the resubscription.
        registry.mark_all_pending();
        let (_d, waits_d) = registry.join(4, member(), vec![channel("news")]);
        assert_eq!(waits_d.len(), 1);
        registry.mark_live(&channel("news"));
        waits_d.into_iter().next().unwrap().await.unwrap();
    }

    #[tokio::test]
    async fn with_two_paths_a_channel_is_live_once_both_confirmed() {
        let (registry, mut dirty) = Registry::with_paths(Arc::new(Metrics::default()), 1, 2).unwrap();
        let (_a, mut waits) = registry.join(1, member(), vec![channel("news")]);
        assert_eq!(drain(&mut dirty[0]), [channel("news")]);
        assert_eq!(drain(&mut dirty[1]), [channel("news")], "every path hears of a change");
        let mut wait = waits.pop().unwrap();
        registry.mark_live(&channel("news"));
        assert!(wait.try_recv().is_err(), "one path is not enough");
        registry.mark_live_on(1, &channel("news"));
        assert_eq!(wait.try_recv(), Ok(()));
        // Losing the shard path alone makes new joiners wait for that path only.
        registry.mark_pending_on(1, &[channel("news")]);
        let (_b, waits_b) = registry.join(2, member(), vec![channel("news")]);
        assert_eq!(waits_b.len(), 1);
        registry.mark_live_on(1, &channel("news"));
        waits_b.into_iter().next().unwrap().await.unwrap();
    }

    #[test]
    fn a_delivery_reaches_every_member_except_the_publisher_expecting_its_echo() {
        let (registry, _dirty) = Registry::new(Arc::new(Metrics::default()), 1).unwrap();
        let listener = member();
        let publisher =
            Member { outbox: Outbox::for_test(16), echo_filter: Some(Arc::new(EchoFilter::new())), gate: None };
        publisher.echo_filter.as_ref().unwrap().expect(&channel("room"), Bytes::from_static(b"mine"));
        let _a = registry.join(1, listener.clone(), vec![channel("room")]);
        let _b = registry.join(2, publisher.clone(), vec![channel("room")]);
        assert_eq!(registry.deliver("other", b"x"), 0, "nobody listens there");
        assert_eq!(registry.deliver("room", b"mine"), 1, "the publisher's own echo is swallowed");
        assert_eq!(registry.deliver("room", b"theirs"), 2);
        let frames = |o: &Outbox| {
            let mut batch = Batch::default();
            o.take_batch(&mut batch, usize::MAX);
            batch.frames
        };
        // Small deliveries to an idle shard are staged before `deliver` returns.
        let (mine, theirs) = (crate::frame::text(b"mine"), crate::frame::text(b"theirs"));
        assert_eq!(frames(&listener.outbox), [mine, theirs.clone()]);
        assert_eq!(frames(&publisher.outbox), [theirs]);
    }
}
