//! The fan-out of one message to a channel's local sockets, spread over shard threads.
//!
//! Every socket belongs to one shard (its id modulo the shard count), and each shard is one
//! thread working through its deliveries in arrival order, so a socket sees messages in the
//! order Redis sent them while the shards of a large channel write on all cores at once. Shards
//! are OS threads, not tasks: the runtime would often run two long fan-out tasks on one worker.
//! A shard never blocks on a socket (its writes are non-blocking), only on its queue.
//! A shard takes every message waiting for it (up to [`MAX_ROUND`]) as one round: it stages each
//! message on its sockets' outboxes, then flushes each socket once, so a socket's frames of one
//! round leave in one write, made by the shard itself when the socket's writer is idle (see
//! [`crate::outbox`]). At low rates a round is one message; when messages come faster than the
//! writes, rounds grow and the cost per message falls.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::{DeliveryTally, Metrics};
use crate::outbox::{Outbox, Staged};
use crate::registry::{Clock, SocketId};

/// Most messages one round takes (well under the default queue depth, so that a round alone
/// never makes a socket a slow consumer).
const MAX_ROUND: usize = 64;

/// One message for some of one shard's sockets.
struct Job {
    frame: Bytes,
    outboxes: Vec<Outbox>,
    arrived_us: u64,
    channel: Arc<str>,
}

/// Handle to the shard tasks.
pub struct Fanout {
    shards: Vec<mpsc::UnboundedSender<Job>>,
}

impl Fanout {
    /// Starts `shards` shard threads (at least one). They end when the last handle is dropped.
    pub fn start(shards: usize, metrics: Arc<Metrics>, clock: Clock) -> std::io::Result<Fanout> {
        let shards = (0..shards.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::unbounded_channel();
                let metrics = metrics.clone();
                std::thread::Builder::new().name(format!("fanout-{i}")).spawn(move || run_shard(rx, &metrics, clock))?;
                Ok(tx)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Fanout { shards })
    }

    /// The shard count for `configured` (`--fanout-threads`): itself, or with 0 one per CPU.
    pub fn shards_for(configured: usize) -> usize {
        match configured {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Empty per-shard lists for [`Fanout::send`].
    pub fn split(&self) -> Split {
        Split { parts: vec![Vec::new(); self.shards.len()] }
    }

    /// Hands each shard its part of one message's sockets.
    pub fn send(&self, frame: Bytes, split: Split, arrived_us: u64, channel: &str) {
        let channel: Arc<str> = Arc::from(channel);
        for (shard, outboxes) in self.shards.iter().zip(split.parts) {
            if !outboxes.is_empty() {
                let job = Job { frame: frame.clone(), outboxes, arrived_us, channel: channel.clone() };
                // A closed shard means the runtime is shutting down; nothing is left to deliver to.
                let _ = shard.send(job);
            }
        }
    }
}

/// One message's sockets, sorted into their shards.
pub struct Split {
    parts: Vec<Vec<Outbox>>,
}

impl Split {
    pub fn add(&mut self, id: SocketId, outbox: &Outbox) {
        let n = self.parts.len() as u64;
        self.parts[(id % n) as usize].push(outbox.clone());
    }
}

fn run_shard(mut jobs: mpsc::UnboundedReceiver<Job>, metrics: &Metrics, clock: Clock) {
    let mut round: Vec<Job> = Vec::new();
    while let Some(job) = jobs.blocking_recv() {
        round.push(job);
        while round.len() < MAX_ROUND {
            match jobs.try_recv() {
                Ok(job) => round.push(job),
                Err(_) => break,
            }
        }
        let mut staged = 0u64;
        let mut to_flush: Vec<&Outbox> = Vec::new();
        for job in &round {
            let mut overflowed = 0u64;
            for outbox in &job.outboxes {
                match outbox.stage(job.frame.clone(), job.arrived_us) {
                    Staged::First => {
                        to_flush.push(outbox);
                        staged += 1;
                    }
                    Staged::Again => staged += 1,
                    Staged::Overflowed => overflowed += 1,
                    Staged::Closing => {}
                }
            }
            if overflowed > 0 {
                metrics.slow_consumer_closes.fetch_add(overflowed, Ordering::Relaxed);
                tracing::info!(channel = %service::Escaped(&job.channel), sockets = overflowed, "closed slow consumers");
            }
        }
        metrics.messages_out.fetch_add(staged, Ordering::Relaxed);
        let mut tally = DeliveryTally::default();
        for outbox in to_flush {
            if let Some(flushed) = outbox.flush() {
                tally.observe_us(clock.now_us().saturating_sub(flushed.since_us));
            }
        }
        metrics.record_deliveries(&tally);
        round.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Batch;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_socket_gets_every_message_in_order_across_shards() {
        let metrics = Arc::new(Metrics::default());
        let fanout = Fanout::start(3, metrics.clone(), Clock::start()).unwrap();
        let outboxes: Vec<Outbox> = (0..10).map(|_| Outbox::new(1000)).collect();
        for i in 0..200u32 {
            let mut split = fanout.split();
            for (id, outbox) in outboxes.iter().enumerate() {
                split.add(id as SocketId, outbox);
            }
            fanout.send(Bytes::from(i.to_string()), split, 1, "ch");
        }
        let expected: Vec<Bytes> = (0..200u32).map(|i| Bytes::from(i.to_string())).collect();
        for outbox in &outboxes {
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while got.len() < expected.len() && std::time::Instant::now() < deadline {
                let mut batch = Batch::default();
                if outbox.take_batch(&mut batch, usize::MAX) {
                    got.extend(batch.frames);
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            assert_eq!(got, expected);
        }
        // Counted once a shard finishes a message, which may be just after its last push.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while metrics.messages_out.load(Ordering::Relaxed) < 2000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(metrics.messages_out.load(Ordering::Relaxed), 2000);
    }
}
