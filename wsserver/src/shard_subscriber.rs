//! On a Redis Cluster, the second subscription path (beside [`crate::subscriber`], which keeps a
//! classic `SUBSCRIBE` on one node for ws4redis publishers' plain `PUBLISH`): one RESP3 pub/sub
//! connection per master, never per channel or per socket, and each channel `SSUBSCRIBE`d on the
//! master owning its slot ([`SlotMap`], from `CLUSTER SHARDS`). Messages arrive as pushes and go
//! to [`Registry::deliver`] like the classic path's.
//!
//! The topology is followed: a server-pushed `SUNSUBSCRIBE` (the slot migrated), a lost
//! connection (a master died or was demoted), a `MOVED` answer, or the periodic re-read (a node
//! added, slots moved) re-reads `CLUSTER SHARDS` and resubscribes the affected channels where
//! they now belong, while client sockets stay open. A channel whose shard has no reachable
//! master is *unplaced*; `/readyz` is 503 while any is.
//!
//! redis-rs' cluster connection can subscribe too, but it forgets a channel when the server
//! pushes `SUNSUBSCRIBE` after a slot migration and re-reads the topology only when a command
//! fails, so this path keeps its own connections and map.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protocol::ChannelName;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{PushInfo, PushKind, Value};
use service::redis_cluster::Cluster;
use service::redis_sentinel::HostPort;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::heartbeat::Heartbeat;
use crate::metrics::Metrics;
use crate::registry::{DirtyChannels, Path, Registry};
use crate::slot_map::SlotMap;

/// This path's number in the registry.
pub const SHARDED: Path = 1;
/// How long a command on a pub/sub connection may take before the connection is dropped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How often each connection is probed with PING.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the topology is re-read when nothing forced it (nodes added, slots moved).
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How often it is re-read while a channel is unplaced or a change is suspected.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// Most channels per pipeline of `SSUBSCRIBE`s.
const BATCH: usize = 1000;

/// A push from one connection (its id, to tell it from a replaced connection's).
type Pushed = (u64, PushInfo);

struct Link {
    id: u64,
    conn: MultiplexedConnection,
}

pub struct ShardSubscriber {
    pub cluster: Arc<Cluster>,
    pub registry: Registry,
    pub dirty: DirtyChannels,
    /// Redis' copies of the heartbeat are never delivered.
    pub heartbeat: Option<Heartbeat>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
}

/// What the path holds: the map, a connection per master, where each channel is subscribed.
struct State {
    map: SlotMap,
    links: HashMap<HostPort, Link>,
    placed: HashMap<ChannelName, HostPort>,
    wanted: HashSet<ChannelName>,
    /// Channels that lost their subscription (counted as resubscriptions when placed again).
    lost: HashSet<ChannelName>,
    /// The topology must be re-read before the next placement.
    stale: bool,
    /// Masters found unreachable and already logged (once per outage).
    unreachable: HashSet<HostPort>,
    next_id: u64,
    pushes: mpsc::UnboundedSender<Pushed>,
}

impl ShardSubscriber {
    /// Runs until `cancel` fires.
    pub async fn run(mut self) {
        let (pushes, mut pushed) = mpsc::unbounded_channel();
        let mut state = State {
            map: SlotMap::default(),
            links: HashMap::new(),
            placed: HashMap::new(),
            wanted: self.registry.channels().into_iter().collect(),
            lost: HashSet::new(),
            stale: true,
            unreachable: HashSet::new(),
            next_id: 0,
            pushes,
        };
        let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        for timer in [&mut refresh, &mut retry, &mut probe] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut warned = false;
        loop {
            let unsettled = state.stale || state.placed.len() < state.wanted.len();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return,
                Some((id, push)) = pushed.recv() => {
                    if push.kind == PushKind::SMessage {
                        // The hot path: nothing about placement changed.
                        self.deliver(&push);
                        continue;
                    }
                    self.on_push(&mut state, id, push);
                }
                Some(first) = self.dirty.recv() => {
                    let mut changed = HashSet::from([first]);
                    while let Ok(c) = self.dirty.try_recv() {
                        changed.insert(c);
                    }
                    for channel in &changed {
                        if self.registry.is_wanted(channel) {
                            state.wanted.insert(channel.clone());
                        } else {
                            state.wanted.remove(channel);
                        }
                    }
                    self.reconcile(&mut state, changed).await;
                }
                _ = refresh.tick() => state.stale = true,
                _ = retry.tick(), if unsettled => {}
                _ = probe.tick() => self.probe(&mut state).await,
            }
            if state.stale {
                match self.cluster.shards().await {
                    Ok(shards) => {
                        warned = false;
                        self.follow(&mut state, SlotMap::from_shards(&shards)).await;
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!("redis cluster topology unavailable: {e}; retrying");
                    }
                    Err(e) => tracing::debug!("redis cluster topology unavailable: {e}"),
                }
            }
            self.publish_gauges(&state);
        }
    }

    fn publish_gauges(&self, state: &State) {
        self.metrics.redis_shard_connections.store(state.links.len() as i64, Ordering::Relaxed);
        self.metrics.redis_shard_channels.store(state.placed.len() as i64, Ordering::Relaxed);
        // After a reconcile every placed channel is wanted.
        let unplaced = state.wanted.len().saturating_sub(state.placed.len());
        self.metrics.redis_unplaced_channels.store(unplaced as i64, Ordering::Relaxed);
    }

    /// Adopts a freshly read map: connections to new masters, none to former ones, and every
    /// channel moved to where it now belongs.
    async fn follow(&self, state: &mut State, map: SlotMap) {
        state.stale = false;
        let masters = map.masters();
        if map != state.map {
            tracing::info!(masters = masters.len(), "redis cluster topology read");
        }
        state.map = map;
        let gone: Vec<HostPort> = state.links.keys().filter(|a| !masters.contains(*a)).cloned().collect();
        for addr in gone {
            tracing::warn!(node = %addr, "no longer a master; its shard channels move");
            self.drop_link(state, &addr);
        }
        for addr in masters {
            if !state.links.contains_key(&addr) {
                self.connect(state, &addr).await;
            }
        }
        let all: HashSet<ChannelName> = state.wanted.iter().chain(state.placed.keys()).cloned().collect();
        self.reconcile(state, all).await;
    }

    async fn connect(&self, state: &mut State, addr: &HostPort) {
        state.next_id += 1;
        let id = state.next_id;
        let pushes = state.pushes.clone();
        let attempt = async {
            let client = self.cluster.node_client(addr, true)?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_push_sender(move |push: PushInfo| pushes.send((id, push)));
            client.get_multiplexed_async_connection_with_config(&config).await
        };
        let why = match tokio::time::timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => {
                tracing::info!(node = %addr, "redis shard pub/sub connected");
                state.unreachable.remove(addr);
                state.links.insert(addr.clone(), Link { id, conn });
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {COMMAND_TIMEOUT:?}"),
        };
        if state.unreachable.insert(addr.clone()) {
            tracing::warn!(node = %addr, "cannot reach a redis cluster master ({why}); retrying while the topology names it");
        } else {
            tracing::debug!(node = %addr, "redis cluster master still unreachable: {why}");
        }
    }

    /// Forgets a connection; its channels become unplaced and the topology is re-read.
    fn drop_link(&self, state: &mut State, addr: &HostPort) {
        if state.links.remove(addr).is_none() {
            return;
        }
        let moved: Vec<ChannelName> = state.placed.iter().filter(|(_, a)| *a == addr).map(|(c, _)| c.clone()).collect();
        for channel in &moved {
            state.placed.remove(channel);
            state.lost.insert(channel.clone());
        }
        self.registry.mark_pending_on(SHARDED, &moved);
        state.stale = true;
    }

    /// One `smessage` push to the registry (heartbeats dropped).
    fn deliver(&self, push: &PushInfo) {
        if let [Value::BulkString(channel), Value::BulkString(payload)] = &push.data[..] {
            self.metrics.redis_messages.fetch_add(1, Ordering::Relaxed);
            if self.heartbeat.as_ref().is_some_and(|h| h.is(payload)) {
                return;
            }
            if let Ok(channel) = std::str::from_utf8(channel) {
                self.registry.deliver(channel, payload);
            }
        }
    }

    fn on_push(&self, state: &mut State, id: u64, push: PushInfo) {
        // The master whose current connection sent it (none for a replaced connection's).
        let link = || state.links.iter().find(|(_, l)| l.id == id).map(|(a, _)| a.clone());
        match push.kind {
            PushKind::SMessage => self.deliver(&push),
            PushKind::SUnsubscribe => {
                // Our own SUNSUBSCRIBEs leave `placed` first; one for a channel still placed
                // on this connection is the server's: the slot moved away.
                let Some(addr) = link() else { return };
                let Some(Value::BulkString(name)) = push.data.first() else { return };
                let Ok(name) = std::str::from_utf8(name) else { return };
                let channel = ChannelName::from_redis(name);
                if state.placed.get(&channel) == Some(&addr) {
                    tracing::info!(node = %addr, "redis moved a subscribed channel's slot; resubscribing it");
                    state.placed.remove(&channel);
                    state.lost.insert(channel.clone());
                    self.registry.mark_pending_on(SHARDED, std::slice::from_ref(&channel));
                    state.stale = true;
                }
            }
            PushKind::Disconnection => {
                if let Some(addr) = link() {
                    tracing::warn!(node = %addr, "redis shard pub/sub connection lost; re-reading the topology");
                    self.drop_link(state, &addr);
                }
            }
            _ => {}
        }
    }

    async fn probe(&self, state: &mut State) {
        let mut dead = Vec::new();
        for (addr, link) in &state.links {
            let mut conn = link.conn.clone();
            let ping = tokio::time::timeout(COMMAND_TIMEOUT, conn.req_packed_command(&redis::cmd("PING"))).await;
            match ping {
                Ok(Ok(Value::SimpleString(s))) if s == "PONG" => {}
                Ok(Ok(other)) => dead.push((addr.clone(), format!("PING answered {other:?}"))),
                Ok(Err(e)) => dead.push((addr.clone(), format!("PING failed: {e}"))),
                Err(_) => dead.push((addr.clone(), format!("PING unanswered for {COMMAND_TIMEOUT:?}"))),
            }
        }
        for (addr, why) in dead {
            tracing::warn!(node = %addr, "redis shard pub/sub connection dropped: {why}");
            self.drop_link(state, &addr);
        }
    }

    /// Brings the shard subscriptions of `changed` in line with the registry and the map.
    async fn reconcile(&self, state: &mut State, changed: HashSet<ChannelName>) {
        let mut subscribe: HashMap<HostPort, Vec<ChannelName>> = HashMap::new();
        let mut unsubscribe: HashMap<HostPort, Vec<ChannelName>> = HashMap::new();
        for channel in changed {
            let wanted = state.wanted.contains(&channel);
            let owner = state.map.master_of(channel.as_str()).cloned();
            let current = state.placed.get(&channel).cloned();
            if let Some(current) = &current {
                if !wanted || owner.as_ref() != Some(current) {
                    state.placed.remove(&channel);
                    unsubscribe.entry(current.clone()).or_default().push(channel.clone());
                    if wanted {
                        state.lost.insert(channel.clone());
                        self.registry.mark_pending_on(SHARDED, std::slice::from_ref(&channel));
                    }
                } else {
                    self.registry.mark_live_on(SHARDED, &channel);
                    continue;
                }
            }
            if !wanted {
                state.lost.remove(&channel);
                continue;
            }
            match owner {
                Some(owner) if state.links.contains_key(&owner) => subscribe.entry(owner).or_default().push(channel),
                _ => state.stale = true,
            }
        }
        for (addr, channels) in unsubscribe {
            if let Some(link) = state.links.get(&addr) {
                let mut conn = link.conn.clone();
                if let Err(why) = send_each(&mut conn, "SUNSUBSCRIBE", PushKind::SUnsubscribe, &channels).await {
                    tracing::warn!(node = %addr, "SUNSUBSCRIBE failed ({why}); dropping the connection");
                    self.drop_link(state, &addr);
                }
            }
        }
        for (addr, channels) in subscribe {
            let Some(link) = state.links.get(&addr) else { continue };
            let mut conn = link.conn.clone();
            match send_each(&mut conn, "SSUBSCRIBE", PushKind::SSubscribe, &channels).await {
                Ok(()) => {
                    let mut resubscribed = 0;
                    for channel in channels {
                        if state.lost.remove(&channel) {
                            resubscribed += 1;
                        }
                        self.registry.mark_live_on(SHARDED, &channel);
                        state.placed.insert(channel, addr.clone());
                    }
                    self.metrics.redis_resubscriptions.fetch_add(resubscribed, Ordering::Relaxed);
                }
                Err(Failure::Moved) => {
                    tracing::info!(node = %addr, "redis answered MOVED; re-reading the topology");
                    state.stale = true;
                }
                Err(Failure::Broken(why)) => {
                    tracing::warn!(node = %addr, "SSUBSCRIBE failed ({why}); dropping the connection");
                    self.drop_link(state, &addr);
                }
            }
        }
    }
}

enum Failure {
    /// A slot is elsewhere now (`MOVED`, `ASK`, `CLUSTERDOWN`): re-read the topology.
    Moved,
    /// The connection is unusable (or its answers out of step): drop it.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Moved => f.write_str("the slot moved"),
            Failure::Broken(why) => f.write_str(why),
        }
    }
}

fn is_topology_error(code: Option<&str>) -> bool {
    matches!(code, Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN"))
}

/// Sends `command` once per channel (each confirmed by one push, which redis-rs hands back as
/// that command's reply), pipelined in batches, and checks every confirmation names its channel:
/// anything else means the replies are out of step and the connection must go.
async fn send_each(
    conn: &mut MultiplexedConnection,
    command: &str,
    kind: PushKind,
    channels: &[ChannelName],
) -> Result<(), Failure> {
    for chunk in channels.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for channel in chunk {
            pipe.cmd(command).arg(channel.as_str());
        }
        let sent = tokio::time::timeout(COMMAND_TIMEOUT, conn.req_packed_commands(&pipe, 0, chunk.len())).await;
        let replies = match sent {
            Ok(Ok(replies)) => replies,
            Ok(Err(e)) if is_topology_error(e.code()) => return Err(Failure::Moved),
            Ok(Err(e)) => return Err(Failure::Broken(e.to_string())),
            Err(_) => return Err(Failure::Broken(format!("no answer within {COMMAND_TIMEOUT:?}"))),
        };
        if replies.len() != chunk.len() {
            return Err(Failure::Broken(format!("{} answers to {} commands", replies.len(), chunk.len())));
        }
        let mut moved = false;
        for (channel, reply) in chunk.iter().zip(replies) {
            match reply {
                Value::Push { kind: k, data } if k == kind => match data.first() {
                    Some(Value::BulkString(name)) if name == channel.as_str().as_bytes() => {}
                    other => return Err(Failure::Broken(format!("{command} confirmed {other:?}"))),
                },
                Value::ServerError(e) if is_topology_error(Some(e.code())) => moved = true,
                other => return Err(Failure::Broken(format!("{command} answered {other:?}"))),
            }
        }
        if moved {
            return Err(Failure::Moved);
        }
    }
    Ok(())
}
