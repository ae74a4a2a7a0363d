//! The state every connection shares, built once by [`crate::run`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use protocol::KeyPrefix;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::access::AccessRules;
use crate::config::Config;
use crate::heartbeat::Heartbeat;
use crate::identity::IdentitySource;
use crate::keepalive::Timing;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::registry::Registry;
use crate::session_end::SessionEnds;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub prefix: KeyPrefix,
    pub allowed_origins: Vec<String>,
    pub registry: Registry,
    pub store: Store,
    /// The history settings and keys (recovery).
    pub history: service::history::History,
    pub identities: IdentitySource,
    pub access: AccessRules,
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
    /// One permit per open websocket (`--max-connections`); the permit moves into the socket's task.
    pub permits: Arc<Semaphore>,
    pub per_ip: PerIpLimit,
    /// Every open socket's outbox, so that shutdown can tell each to close with 1001. Writers
    /// then wait on nothing but their own outbox and timer: no shared waiter list is touched
    /// per delivery.
    pub sockets: OpenSockets,
    /// Upgraded sockets, which hyper's graceful shutdown does not track.
    pub tracker: TaskTracker,
    pub draining: AtomicBool,
    /// `--heartbeat`, when set.
    pub heartbeat: Option<Heartbeat>,
    /// Sockets of logged-in sessions, closed when their session ends.
    pub session_ends: SessionEnds,
    /// Where frozen sockets are offered while a live hand-off runs ([`crate::handoff::give`]).
    pub handoff: crate::handoff::give::Slot,
}

impl App {
    /// The write loop's intervals.
    pub fn keepalive_timing(&self) -> Timing<'_> {
        Timing {
            ping_interval: self.config.ping_interval,
            ping_timeout: self.config.ping_timeout,
            heartbeat: self.heartbeat.as_ref(),
        }
    }
}

/// Open sockets per client address, capped by `--max-connections-per-ip`. The address `None`
/// stands for local clients on the unix socket that name no address (no X-Real-IP): they share
/// one count, as loopback clients over TCP share 127.0.0.1's. A std `Mutex`: touched once per
/// connect and disconnect, never held across `.await`.
#[derive(Clone)]
pub struct PerIpLimit {
    limit: usize,
    counts: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
}

/// Holds one slot of an address; releases it when dropped.
pub struct IpSlot {
    owner: PerIpLimit,
    ip: Option<IpAddr>,
}

impl PerIpLimit {
    pub fn new(limit: usize) -> PerIpLimit {
        PerIpLimit { limit, counts: Arc::default() }
    }

    /// A slot for `ip`, or `None` when the address is at its limit.
    pub fn acquire(&self, ip: Option<IpAddr>) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if self.limit != 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot { owner: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The outboxes of open sockets. A std `Mutex`: touched once per connect and disconnect and
/// once at shutdown, never held across `.await`.
#[derive(Default)]
pub struct OpenSockets {
    inner: Mutex<OpenSocketsInner>,
}

#[derive(Default)]
struct OpenSocketsInner {
    outboxes: HashMap<u64, crate::outbox::Outbox>,
    closing: Option<crate::outbox::CloseReason>,
    /// A live hand-off runs: sockets opened meanwhile are frozen at once too.
    freezing: bool,
    /// Sockets open when the hand-off began and not yet asked to freeze.
    to_freeze: Vec<u64>,
}

impl OpenSockets {
    /// Adds a socket; if shutdown already began it is told to close at once.
    pub fn add(&self, id: u64, outbox: &crate::outbox::Outbox) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.closing {
            Some(reason) => outbox.close(reason),
            None => {
                if inner.freezing {
                    outbox.request_freeze();
                }
                inner.outboxes.insert(id, outbox.clone());
            }
        }
    }

    pub fn remove(&self, id: u64) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).outboxes.remove(&id);
    }

    /// Starts a live hand-off: every socket opened from now until [`OpenSockets::thaw_all`] is
    /// asked at once to stop at a frame boundary and offer itself; the sockets open now are
    /// asked [`OpenSockets::freeze_some`] at a time, so that only those about to be handed
    /// stop delivering.
    pub fn begin_handoff(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.freezing = true;
        let mut ids: Vec<u64> = inner.outboxes.keys().copied().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        inner.to_freeze = ids;
    }

    /// Asks up to `n` more of the sockets open when the hand-off began to freeze (oldest
    /// first); returns how many were asked.
    pub fn freeze_some(&self, n: usize) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut asked = 0;
        while asked < n {
            let Some(id) = inner.to_freeze.pop() else { break };
            if let Some(outbox) = inner.outboxes.get(&id) {
                outbox.request_freeze();
                asked += 1;
            }
        }
        asked
    }

    /// Ends [`OpenSockets::begin_handoff`] (the hand-off failed): sockets not yet offered
    /// keep running here.
    pub fn thaw_all(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.freezing = false;
        inner.to_freeze = Vec::new();
        for outbox in inner.outboxes.values() {
            outbox.thaw();
        }
    }

    /// Tells every open socket, and every socket opened from now on, to close with `reason`.
    pub fn close_all(&self, reason: crate::outbox::CloseReason) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.closing = Some(reason);
        for outbox in inner.outboxes.values() {
            outbox.close(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_its_limit_and_a_closed_socket_frees_its_slot() {
        let limit = PerIpLimit::new(2);
        let (a, b): (Option<IpAddr>, Option<IpAddr>) =
            (Some("192.0.2.1".parse().unwrap()), Some("2001:db8::1".parse().unwrap()));
        let first = limit.acquire(a).expect("first slot");
        let _second = limit.acquire(a).expect("second slot");
        assert!(limit.acquire(a).is_none(), "a third socket from the same address is refused");
        let _other = limit.acquire(b).expect("other addresses have their own count");
        drop(first);
        let _again = limit.acquire(a).expect("a freed slot can be taken again");
        assert!(limit.acquire(a).is_none());
        let _local = limit.acquire(None).expect("unix-socket clients without an address count apart");
        let _local2 = limit.acquire(None).expect("second");
        assert!(limit.acquire(None).is_none(), "and share one limit");
    }

    #[test]
    fn a_handoff_freezes_the_open_sockets_a_batch_at_a_time_and_new_ones_at_once() {
        let sockets = OpenSockets::default();
        let outboxes: Vec<crate::outbox::Outbox> = (0..5).map(|_| crate::outbox::Outbox::for_test(4)).collect();
        for (id, outbox) in outboxes.iter().enumerate() {
            sockets.add(id as u64, outbox);
        }
        sockets.begin_handoff();
        assert!(outboxes.iter().all(|o| !o.freeze_requested()), "nothing frozen before it is asked");
        sockets.remove(1);
        assert_eq!(sockets.freeze_some(2), 2);
        let frozen: Vec<bool> = outboxes.iter().map(crate::outbox::Outbox::freeze_requested).collect();
        assert_eq!(frozen, [true, false, true, false, false], "oldest first, a closed one skipped");
        let late = crate::outbox::Outbox::for_test(4);
        sockets.add(9, &late);
        assert!(late.freeze_requested(), "a socket opened during the hand-off freezes at once");
        assert_eq!(sockets.freeze_some(10), 2);
        assert_eq!(sockets.freeze_some(10), 0);
        sockets.thaw_all();
        assert!(outboxes.iter().chain([&late]).all(|o| !o.freeze_requested()));
    }

    #[test]
    fn zero_means_no_limit_and_empty_counts_are_forgotten() {
        let limit = PerIpLimit::new(0);
        let ip: Option<IpAddr> = Some("192.0.2.7".parse().unwrap());
        let slots: Vec<IpSlot> = (0..1000).map(|_| limit.acquire(ip).expect("unlimited")).collect();
        drop(slots);
        assert!(limit.counts.lock().unwrap().is_empty(), "no entry is kept for an address without sockets");
    }
}
