//! Knowing that sockets are subscribed before a test publishes.
//!
//! wsserver replays stored messages only after its Redis SUBSCRIBE is confirmed, but when there
//! is nothing to replay a socket gives no signal. `sync_clients` publishes probe messages with a
//! plain publish of the [`Topology`] (no SET, so nothing is stored for replay) until every client
//! has received one, then publishes an end marker and reads every client up to it. Afterwards
//! every client is subscribed and has nothing pending.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::topology::Topology;
use crate::ws::{Event, WsClient};

const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
const PROBE_PREFIX: &str = "crier-test-sync:";

/// Whether a message is one of `sync_clients`' probes or end markers.
pub fn is_sync_message(text: &str) -> bool {
    text.starts_with(PROBE_PREFIX)
}

/// Makes sure every client in `clients` receives live messages on `channel` (the full Redis
/// channel name, e.g. `broadcast:chat`), and leaves them with nothing pending. Panics when a
/// client receives anything else than the probes meanwhile (read stored replays first), closes,
/// or does not get a probe within 20 s.
pub async fn sync_clients(redis: &impl Topology, channel: &str, clients: &mut [WsClient]) {
    sync_clients_with(|message| async move { redis.publish(channel, &message).await }, channel, clients).await;
}
/// [`sync_clients`] with the probes sent by `publish` (e.g. `SPUBLISH` on a Redis Cluster).
pub async fn sync_clients_with<P, F>(mut publish: P, channel: &str, clients: &mut [WsClient])
where
    P: FnMut(String) -> F,
    F: std::future::Future,
{
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let nonce = format!("{}-{}", std::process::id(), NONCE.fetch_add(1, Ordering::Relaxed));
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let mut synced = vec![false; clients.len()];
    let mut round = 0u64;
    let mut window = Duration::from_millis(10);
    while synced.iter().any(|s| !s) {
        if Instant::now() >= deadline {
            let missing = synced.iter().filter(|s| !**s).count();
            panic!(
                "{missing} of {} clients never received a probe on {channel} within {SYNC_TIMEOUT:?}",
                clients.len()
            );
        }
        publish(format!("{PROBE_PREFIX}{nonce}:probe:{round}")).await;
        round += 1;
        // Poll the clients for this round's delivery, bounded by a growing window.
        let round_end = Instant::now() + window;
        loop {
            for (i, client) in clients.iter_mut().enumerate() {
                while let Some(event) = client.try_recv() {
                    match event {
                        Event::Text(text) if is_sync_message(&text) => synced[i] = true,
                        other => {
                            panic!("client {i} received {other:?} while being synced on {channel}")
                        }
                    }
                }
            }
            if synced.iter().all(|s| *s) || Instant::now() >= round_end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        window = (window * 2).min(Duration::from_millis(500));
    }
    // Everyone is subscribed: each one receives the end marker, after any late probes.
    let end = format!("{PROBE_PREFIX}{nonce}:end");
    publish(end.clone()).await;
    for (i, client) in clients.iter_mut().enumerate() {
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(5));
            match client.recv(left).await {
                Some(Event::Text(text)) if text == end => break,
                Some(Event::Text(text)) if is_sync_message(&text) => continue,
                Some(other) => panic!("client {i} received {other:?} while draining the sync probes on {channel}"),
                None => panic!("client {i} did not receive the sync end marker on {channel}"),
            }
        }
    }
}
