//! The fan-out of one message to a channel's local sockets, spread over shard threads (step
//! three of the message path: the [`crate::registry`] says who, this says which shard, and each
//! socket's [`crate::outbox`] queues it).
//!
//! Every socket belongs to one shard (its id modulo the shard count), and each shard is one
//! thread working through its deliveries in arrival order, so a socket sees messages in the
//! order Redis sent them while the shards of a large channel write on all cores at once. Shards
//! are OS threads, not tasks: the runtime would often run two long fan-out tasks on one worker.
//! A shard never blocks on a socket (its writes are non-blocking), only on its queue.
//!
//! Small deliveries (a user's or a session's channel) skip the hand-over when their shard has
//! nothing in flight: the subscriber task makes them itself, which is safe for the order because
//! it is the only producer and every earlier job of that shard is then finished.
//! A shard takes every message waiting for it (up to [`MAX_ROUND`]) as one round: it stages each
//! message on its sockets' outboxes, then flushes each socket once, so a socket's frames of one
//! round leave in one write, made by the shard itself when the socket's writer is idle (see
//! [`crate::outbox`]). At low rates a round is one message; when messages come faster than the
//! writes, rounds grow and the cost per message falls.
//!
//! At one message to thousands of sockets the cost per socket is the write itself plus cache
//! misses: a shard's large part gets its own copy of the frame (no reference count shared
//! between cores), and a flush prefetches the state of the sockets it flushes next.
//!
//! **When Redis delivers faster than the shards write**, a shard's job queue grows: it is
//! unbounded on purpose, and measured (`crier_ws_fanout_jobs_queued{shard}` now and
//! `crier_ws_fanout_jobs_queued_max{shard}` since start, from [`ShardLoad`]). Each queued job
//! holds one frame and the list of its sockets in that shard, so memory grows with the backlog
//! and so does delivery latency (`crier_ws_delivery_seconds`), while rounds grow to
//! [`MAX_ROUND`] messages and the cost per message falls. Sockets themselves are not the limit
//! here: a socket that does not take its frames overflows its own outbox and is closed as a
//! slow consumer, whatever the shard's backlog. Bounding the queue would have to block the
//! subscriber task, which then stops reading the pub/sub connection: Redis buffers for it up to
//! `client-output-buffer-limit pubsub` (32 MB hard, 8 MB for 60 s soft by default) and then
//! disconnects it, which loses every message in that buffer for every channel, not only the
//! busy one, and costs a resubscription. A backlog that keeps growing means the process needs
//! more shards (`--fanout-threads`) or more wsserver instances.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::clock::{Clock, SocketId};
use crate::metrics::{DeliveryTally, Metrics, ShardLoad};
use crate::outbox::{Outbox, Staged};

/// Most messages one round takes (well under the default queue depth, so that a round alone
/// never makes a socket a slow consumer).
const MAX_ROUND: usize = 64;

/// How many sockets ahead of its flush a socket's state is prefetched.
const PREFETCH_AHEAD: usize = 2;

/// A shard's part of a message with at least this many sockets gets its own copy of the frame.
const OWN_COPY_MIN: usize = 64;

/// Deliveries to at most this many sockets of an idle shard are made by the caller itself.
const INLINE_MAX: usize = 8;

/// One message for some of one shard's sockets.
struct Job {
    frame: Bytes,
    outboxes: Vec<Outbox>,
    arrived_us: u64,
    channel: Arc<str>,
}

/// Handle to the shard threads.
pub struct Fanout {
    shards: Vec<Shard>,
    /// Each shard's queue, also read by the metrics.
    loads: Arc<[ShardLoad]>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

struct Shard {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Fanout {
    /// Starts `shards` shard threads (at least one). They end when the last handle is dropped.
    /// Their queues appear in `metrics` (the first fan-out started with it, in tests).
    pub fn start(shards: usize, metrics: Arc<Metrics>, clock: Clock) -> std::io::Result<Fanout> {
        let loads: Arc<[ShardLoad]> = (0..shards.max(1)).map(|_| ShardLoad::default()).collect();
        let _ = metrics.fanout_shards.set(loads.clone());
        let shards = (0..loads.len())
            .map(|i| {
                let (jobs, rx) = mpsc::unbounded_channel();
                let (metrics, loads) = (metrics.clone(), loads.clone());
                std::thread::Builder::new()
                    .name(format!("fanout-{i}"))
                    .spawn(move || run_shard(rx, &loads[i].queued, &metrics, clock))?;
                Ok(Shard { jobs })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Fanout { shards, loads, metrics, clock })
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

    /// Hands each shard its part of one message's sockets, or delivers a small part at once
    /// when its shard is idle. Called by one task only (the Redis subscriber), in Redis order:
    /// the order of deliveries relies on a single producer.
    pub fn send(&self, frame: Bytes, split: Split, arrived_us: u64, channel: &str) {
        let channel: Arc<str> = Arc::from(channel);
        for ((shard, load), outboxes) in self.shards.iter().zip(self.loads.iter()).zip(split.parts) {
            if outboxes.is_empty() {
                continue;
            }
            // A large part gets the shard its own copy of the frame: every socket's queue takes
            // a reference to it, and one shared reference count bouncing between the shards'
            // cores for each of thousands of sockets costs more than copying the frame once.
            let frame = if outboxes.len() >= OWN_COPY_MIN { Bytes::copy_from_slice(&frame) } else { frame.clone() };
            let job = Job { frame, outboxes, arrived_us, channel: channel.clone() };
            // Acquire: pairs with the shard's release once a job is finished, so its writes to
            // these sockets come before ours.
            if job.outboxes.len() <= INLINE_MAX && load.queued.load(Ordering::Acquire) == 0 {
                deliver_round(std::slice::from_ref(&job), &self.metrics, self.clock);
                continue;
            }
            load.handed_over();
            // A closed shard means the process is ending; nothing is left to deliver to.
            let _ = shard.jobs.send(job);
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

fn run_shard(mut jobs: mpsc::UnboundedReceiver<Job>, in_flight: &AtomicUsize, metrics: &Metrics, clock: Clock) {
    let mut round: Vec<Job> = Vec::new();
    while let Some(job) = jobs.blocking_recv() {
        round.push(job);
        while round.len() < MAX_ROUND {
            match jobs.try_recv() {
                Ok(job) => round.push(job),
                Err(_) => break,
            }
        }
        deliver_round(&round, metrics, clock);
        in_flight.fetch_sub(round.len(), Ordering::Release);
        round.clear();
    }
}

/// Stages every job of a round on its sockets, then flushes each socket once.
fn deliver_round(round: &[Job], metrics: &Metrics, clock: Clock) {
    let mut staged = 0u64;
    let mut to_flush: Vec<&Outbox> = Vec::new();
    for job in round {
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
        // Counted by the outbox's slow-consumer policy; logged here, where the channel is known.
        if overflowed > 0 {
            tracing::info!(channel = %service::Escaped(&job.channel), sockets = overflowed, "closed slow consumers");
        }
    }
    metrics.messages_out.fetch_add(staged, Ordering::Relaxed);
    let mut tally = DeliveryTally::default();
    for (i, outbox) in to_flush.iter().enumerate() {
        // Each flush is a system call of several µs: the next sockets' state is loaded
        // meanwhile instead of missing the cache when their turn comes.
        if let Some(ahead) = to_flush.get(i + PREFETCH_AHEAD) {
            ahead.prefetch_state();
        }
        if let Some(next) = to_flush.get(i + 1) {
            next.prefetch_socket();
        }
        if let Some(flushed) = outbox.flush() {
            tally.observe_us(clock.now_us().saturating_sub(flushed.since_us));
        }
    }
    metrics.record_deliveries(&tally);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Batch;

    #[test]
    fn a_small_delivery_to_an_idle_shard_is_made_by_the_caller() {
        let metrics = Arc::new(Metrics::default());
        let fanout = Fanout::start(1, metrics.clone(), Clock::start()).unwrap();
        let outbox = Outbox::for_test(16);
        let mut split = fanout.split();
        split.add(7, &outbox);
        fanout.send(Bytes::from_static(b"for one user"), split, 1, "user-channel");
        // Staged and counted before `send` returned, on this thread: no hand-over to the shard.
        assert_eq!(metrics.messages_out.load(Ordering::Relaxed), 1);
        assert_eq!(fanout.loads[0].queued.load(Ordering::Relaxed), 0);
        assert_eq!(fanout.loads[0].high_water.load(Ordering::Relaxed), 0, "never queued");
        let mut batch = Batch::default();
        assert!(outbox.take_batch(&mut batch, usize::MAX));
        assert_eq!(batch.frames, vec![Bytes::from_static(b"for one user")]);
    }

    /// The first frame queued on `outbox`, once a shard has staged it (10 s at most).
    fn first_frame(outbox: &Outbox) -> Bytes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut batch = Batch::default();
            if outbox.take_batch(&mut batch, usize::MAX) {
                return batch.frames.into_iter().next().expect("a staged frame");
            }
            assert!(std::time::Instant::now() < deadline, "nothing staged within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_large_part_gets_its_shard_a_copy_of_the_frame_and_a_small_one_shares_it() {
        let fanout = Fanout::start(2, Arc::new(Metrics::default()), Clock::start()).unwrap();
        let outboxes: Vec<Outbox> = (0..2 * OWN_COPY_MIN).map(|_| Outbox::for_test(16)).collect();
        let frame = Bytes::from(vec![b'x'; 100]);
        let mut split = fanout.split();
        for (id, outbox) in outboxes.iter().enumerate() {
            split.add(id as SocketId, outbox);
        }
        fanout.send(frame.clone(), split, 1, "large");
        // Sockets 0 and 2 are on shard 0, socket 1 on shard 1.
        let (shard0, shard0_again, shard1) =
            (first_frame(&outboxes[0]), first_frame(&outboxes[2]), first_frame(&outboxes[1]));
        assert_eq!((&shard0, &shard1), (&frame, &frame), "the same bytes");
        assert_ne!(shard0.as_ptr(), frame.as_ptr(), "shard 0 has its own copy");
        assert_ne!(shard1.as_ptr(), frame.as_ptr(), "shard 1 has its own copy");
        assert_ne!(shard0.as_ptr(), shard1.as_ptr(), "one copy per shard");
        assert_eq!(shard0_again.as_ptr(), shard0.as_ptr(), "the sockets of one shard share its copy");

        let small = Outbox::for_test(16);
        let mut split = fanout.split();
        split.add(0, &small);
        fanout.send(frame.clone(), split, 2, "small");
        assert_eq!(first_frame(&small).as_ptr(), frame.as_ptr(), "a small part is not copied");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_socket_gets_every_message_in_order_across_shards() {
        let metrics = Arc::new(Metrics::default());
        let fanout = Fanout::start(3, metrics.clone(), Clock::start()).unwrap();
        let outboxes: Vec<Outbox> = (0..40).map(|_| Outbox::for_test(1000)).collect();
        for i in 0..200u32 {
            let mut split = fanout.split();
            // Alternately all 40 sockets (handed to the shards) and 3 (small: made inline
            // when the shard is idle), so both paths interleave on the same sockets.
            let n = if i % 2 == 0 { 40 } else { 3 };
            for (id, outbox) in outboxes.iter().enumerate().take(n) {
                split.add(id as SocketId, outbox);
            }
            fanout.send(Bytes::from(i.to_string()), split, 1, "ch");
        }
        let all: Vec<Bytes> = (0..200u32).map(|i| Bytes::from(i.to_string())).collect();
        let evens: Vec<Bytes> = (0..200u32).step_by(2).map(|i| Bytes::from(i.to_string())).collect();
        for (id, outbox) in outboxes.iter().enumerate() {
            let expected = if id < 3 { &all } else { &evens };
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
            assert_eq!(&got, expected, "socket {id}");
        }
        // Counted once a shard finishes a message, which may be just after its last push.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while metrics.messages_out.load(Ordering::Relaxed) < 4300 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(metrics.messages_out.load(Ordering::Relaxed), 100 * 40 + 100 * 3);
    }

    #[test]
    fn a_shard_that_falls_behind_shows_its_backlog_and_high_water_mark() {
        let metrics = Arc::new(Metrics::default());
        let fanout = Fanout::start(1, metrics.clone(), Clock::start()).unwrap();
        // More sockets than an inline delivery takes: every message is handed to the shard.
        let outboxes: Vec<Outbox> = (0..=INLINE_MAX).map(|_| Outbox::for_test(100)).collect();
        let send = |text: &'static str| {
            let mut split = fanout.split();
            for (id, outbox) in outboxes.iter().enumerate() {
                split.add(id as SocketId, outbox);
            }
            fanout.send(Bytes::from_static(text.as_bytes()), split, 1, "busy");
        };
        let queued = || fanout.loads[0].queued.load(Ordering::Relaxed);
        // The shard stalls on the first socket of the first message, as on a slow write.
        let held = outboxes[0].hold_for_test();
        for _ in 0..5 {
            send("m");
        }
        assert_eq!(queued(), 5, "the stalled message and the four behind it");
        let text = metrics.render();
        assert!(text.contains("crier_ws_fanout_jobs_queued{shard=\"0\"} 5\n"), "{text}");
        assert!(text.contains("crier_ws_fanout_jobs_queued_max{shard=\"0\"} 5\n"), "{text}");
        drop(held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queued() > 0 {
            assert!(std::time::Instant::now() < deadline, "the shard did not catch up");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let text = metrics.render();
        assert!(text.contains("crier_ws_fanout_jobs_queued{shard=\"0\"} 0\n"), "{text}");
        assert!(text.contains("crier_ws_fanout_jobs_queued_max{shard=\"0\"} 5\n"), "the mark stays: {text}");
        for outbox in &outboxes {
            let mut batch = Batch::default();
            assert!(outbox.take_batch(&mut batch, usize::MAX));
            assert_eq!(batch.frames.len(), 5, "nothing lost while queued");
        }
    }

    #[test]
    fn overflows_in_a_fanout_round_are_counted_once_each() {
        let metrics = Arc::new(Metrics::default());
        let fanout = Fanout::start(1, metrics.clone(), Clock::start()).unwrap();
        let outboxes: Vec<Outbox> = (0..3).map(|_| Outbox::new(1, &metrics)).collect();
        for text in ["first", "over", "closing"] {
            let mut split = fanout.split();
            for (id, outbox) in outboxes.iter().enumerate() {
                split.add(id as SocketId, outbox);
            }
            fanout.send(Bytes::from_static(text.as_bytes()), split, 1, "ch");
        }
        assert_eq!(metrics.slow_consumer_closes.load(Ordering::Relaxed), 3);
    }
}
