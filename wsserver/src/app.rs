//! The state every connection shares, built once by [`crate::run`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use protocol::KeyPrefix;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::access::AccessRules;
use crate::config::Config;
use crate::identity::IdentitySource;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::registry::Registry;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub prefix: KeyPrefix,
    pub allowed_origins: Vec<String>,
    pub registry: Registry,
    pub store: Store,
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
    /// The heartbeat string encoded once as a text frame.
    pub heartbeat_frame: Option<Bytes>,
}

/// Open sockets per client address, capped by `--max-connections-per-ip`. A std `Mutex`:
/// touched once per connect and disconnect, never held across `.await`.
#[derive(Clone)]
pub struct PerIpLimit {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one slot of an address; releases it when dropped.
pub struct IpSlot {
    owner: PerIpLimit,
    ip: IpAddr,
}

impl PerIpLimit {
    pub fn new(limit: usize) -> PerIpLimit {
        PerIpLimit { limit, counts: Arc::default() }
    }

    /// A slot for `ip`, or `None` when the address is at its limit.
    pub fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
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
}

impl OpenSockets {
    /// Adds a socket; if shutdown already began it is told to close at once.
    pub fn add(&self, id: u64, outbox: &crate::outbox::Outbox) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.closing {
            Some(reason) => outbox.close(reason),
            None => {
                inner.outboxes.insert(id, outbox.clone());
            }
        }
    }

    pub fn remove(&self, id: u64) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).outboxes.remove(&id);
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
