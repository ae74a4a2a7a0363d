//! The state every connection shares, built once by [`crate::run`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use protocol::KeyPrefix;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::access::AccessRules;
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
    /// Cancelled on shutdown: every socket's writer sends 1001 and closes.
    pub sockets_cancel: CancellationToken,
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
