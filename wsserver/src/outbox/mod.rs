//! Each socket's bounded outgoing queue and the slow-consumer policy: step four of the message
//! path, between the fan-out ([`crate::fanout`]) and the socket writer ([`crate::writer`]).
//!
//! Producers (the fan-out, the reader's pongs and echoes, heartbeats, replay, shutdown) queue
//! encoded frames; the socket's write loop ([`crate::write_loop`]) takes everything queued in
//! one [`Batch`] and hands it to the writer. The fan-out's direct path (stage, then flush while
//! the write loop is idle) is in [`direct`].
//!
//! **Slow-consumer policy** (the only place it lives): when a data frame would make the queue
//! longer than its depth, whoever pushed it (fan-out, heartbeat, echo), the frame is not
//! queued, the queue is dropped, the socket is closed with [`SLOW_CONSUMER`] (1008, "slow
//! consumer") and `crier_ws_slow_consumer_closes_total` counts it. Other sockets are never
//! delayed by it: pushing never waits. Control frames (pong, close) bypass the depth, bounded
//! separately.

mod cut;
mod direct;

pub use cut::{Cut, Side};
pub use direct::{Flushed, Staged};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::writer::SocketWriter;

pub use crate::close::{CloseReason, SLOW_CONSUMER};

/// Pending control frames beyond this drop the oldest (a client flooding pings gets fewer pongs).
const MAX_CONTROL: usize = 32;

/// What happened to a pushed data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The push overflowed the queue: the socket is now closing as a slow consumer.
    Overflowed,
    /// The socket is already closing; the frame was dropped.
    Closing,
}

/// Cloneable handle to one socket's queue. A std `Mutex` guards it: held only for a few
/// pointer moves (and, on the direct path, one non-blocking write) and never across `.await`.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    /// Woken when the socket must close without waiting for a write in progress (overflow,
    /// protocol error, dead peer): the writer abandons a write the peer is not taking.
    urgent: Notify,
    /// Addresses of the attached writer's write half and of its stream (0: none), only ever
    /// used as prefetch hints by [`Outbox::prefetch_socket`], never dereferenced.
    write_half_at: AtomicUsize,
    stream_at: AtomicUsize,
    /// Where the slow-consumer policy counts its closes.
    metrics: Arc<Metrics>,
}

struct State {
    depth: usize,
    frames: VecDeque<Bytes>,
    control: VecDeque<Bytes>,
    closing: Option<CloseReason>,
    urgent: bool,
    /// The write loop holds a batch it is writing: direct writes must wait behind it.
    writing: bool,
    /// The socket's writer, for direct writes; attached while the write loop runs.
    writer: Option<Arc<SocketWriter>>,
    /// Arrival time (the [`crate::clock::Clock`], µs) of the oldest queued delivery; 0: none.
    pending_since_us: u64,
    /// Arrival time of the last delivery written directly (heartbeats count it as a write).
    last_direct_us: u64,
    /// Staged by the fan-out since its last flush of this socket.
    staged: bool,
    /// The front data frame was partly written by a direct write: its rest goes before any
    /// control frame.
    partial_front: bool,
    /// A live hand-off asked the write loop to stop at the next frame boundary.
    freeze: bool,
    /// Where this socket's deliveries switch between two processes (live hand-off).
    cut: Option<Cut>,
}

/// One batch for the write loop.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<Bytes>,
    /// Set when the socket must be closed after `frames` are written.
    pub close: Option<CloseReason>,
    /// Arrival time of the oldest delivery in `frames` (0: none), for the latency metric.
    pub pending_since_us: u64,
    /// A live hand-off asked the write loop to stop (nothing was taken).
    pub freeze: bool,
}

impl Outbox {
    /// An empty queue of at most `depth` data frames; overflows are counted in `metrics`.
    pub fn new(depth: usize, metrics: &Arc<Metrics>) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    depth,
                    frames: VecDeque::new(),
                    control: VecDeque::new(),
                    closing: None,
                    urgent: false,
                    writing: false,
                    writer: None,
                    pending_since_us: 0,
                    last_direct_us: 0,
                    staged: false,
                    partial_front: false,
                    freeze: false,
                    cut: None,
                }),
                wake: Notify::new(),
                urgent: Notify::new(),
                write_half_at: AtomicUsize::new(0),
                stream_at: AtomicUsize::new(0),
                metrics: metrics.clone(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a data frame, applying the slow-consumer policy.
    pub fn push(&self, frame: Bytes) -> Pushed {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Pushed::Closing;
        }
        if state.cut.is_some() && !self.cut_admits(&mut state, &frame) {
            return Pushed::Closing;
        }
        if state.frames.len() >= state.depth {
            self.overflow(state);
            return Pushed::Overflowed;
        }
        state.frames.push_back(frame);
        let first = state.frames.len() == 1;
        drop(state);
        if first {
            self.shared.wake.notify_one();
        }
        Pushed::Queued
    }

    /// The slow-consumer policy, for every producer: count the close, drop the queue and close
    /// the socket with [`SLOW_CONSUMER`].
    fn overflow(&self, mut state: std::sync::MutexGuard<'_, State>) {
        state.frames = VecDeque::new();
        state.partial_front = false;
        state.closing = Some(SLOW_CONSUMER);
        state.urgent = true;
        drop(state);
        self.shared.metrics.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_one();
        self.shared.urgent.notify_waiters();
    }

    /// Puts the replay of persisted messages before everything queued. A replayed message that
    /// is also already queued live (published between SUBSCRIBE and the replay's GET) is not
    /// sent twice: ws4redis delivered it twice.
    pub fn push_front(&self, frames: Vec<Bytes>) {
        let mut state = self.lock();
        for frame in frames.into_iter().rev() {
            if !state.frames.contains(&frame) {
                state.frames.push_front(frame);
            }
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Queues a control frame (pong) ahead of data frames.
    pub fn push_control(&self, frame: Bytes) {
        let mut state = self.lock();
        if state.closing.is_none() {
            // RFC 6455 allows answering only the most recent ping: the oldest pending goes.
            if state.control.len() >= MAX_CONTROL {
                state.control.pop_front();
            }
            state.control.push_back(frame);
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Asks the write loop to close the socket with `reason` after what is queued. The first
    /// reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Like [`Outbox::close`] but discards queued data first (protocol errors, shutdown of a
    /// socket that cannot keep up).
    pub fn close_now(&self, reason: CloseReason) {
        let mut state = self.lock();
        state.frames.clear();
        state.partial_front = false;
        if state.closing.is_none() {
            state.closing = Some(reason);
        }
        state.urgent = true;
        drop(state);
        self.shared.wake.notify_one();
        self.shared.urgent.notify_waiters();
    }

    /// Resolves once the socket must close urgently (see [`Outbox::close_now`]); used to
    /// abandon a write the peer does not take.
    pub async fn urgent(&self) {
        loop {
            let notified = self.shared.urgent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().urgent {
                return;
            }
            notified.await;
        }
    }

    /// Moves everything queued into `batch`, up to `max_bytes` of data frames (at least one).
    /// Returns false when nothing was queued. The write loop calls it after each write: until
    /// it calls again, direct writes queue behind the batch.
    pub fn take_batch(&self, batch: &mut Batch, max_bytes: usize) -> bool {
        let mut state = self.lock();
        if state.freeze && state.closing.is_none() {
            state.writing = false;
            batch.freeze = true;
            return true;
        }
        batch.pending_since_us = std::mem::take(&mut state.pending_since_us);
        let mut bytes = 0;
        if std::mem::take(&mut state.partial_front) {
            let rest = state.frames.pop_front().expect("a partly written frame is queued");
            bytes += rest.len();
            batch.frames.push(rest);
        }
        batch.frames.extend(state.control.drain(..));
        while let Some(frame) = state.frames.front() {
            if bytes > 0 && bytes + frame.len() > max_bytes {
                break;
            }
            bytes += frame.len();
            batch.frames.push(state.frames.pop_front().expect("front exists"));
        }
        if state.frames.is_empty() && state.frames.capacity() > 64 {
            state.frames = VecDeque::new();
        }
        if state.frames.is_empty() {
            batch.close = state.closing;
        }
        state.writing = !batch.frames.is_empty();
        !batch.frames.is_empty() || batch.close.is_some()
    }

    /// Takes every queued frame for the live hand-off ([`crate::handoff::state`]): control
    /// frames first, as the write loop would send them. `None`, and nothing taken, when the
    /// socket cannot be handed: it is closing, a batch is being written, or a writer is still
    /// attached for direct writes (the write loop must have stopped first).
    pub fn take_for_handoff(&self) -> Option<Vec<Bytes>> {
        let mut state = self.lock();
        if state.closing.is_some() || state.writing || state.writer.is_some() {
            return None;
        }
        state.pending_since_us = 0;
        let control = std::mem::take(&mut state.control);
        let mut frames = std::mem::take(&mut state.frames);
        let rest = std::mem::take(&mut state.partial_front).then(|| frames.pop_front()).flatten();
        Some(rest.into_iter().chain(control).chain(frames).collect())
    }

    /// Waits until something may have been queued.
    pub async fn wait(&self) {
        self.shared.wake.notified().await;
    }

    /// An outbox counting its overflows in a metrics set of its own.
    #[cfg(test)]
    pub(crate) fn for_test(depth: usize) -> Outbox {
        Outbox::new(depth, &Arc::new(Metrics::default()))
    }

    /// Holds the outbox's lock until the result is dropped: a fan-out shard that reaches this
    /// socket waits, so its queue can be observed.
    #[cfg(test)]
    pub(crate) fn hold_for_test(&self) -> impl Sized + '_ {
        self.lock()
    }

    /// How many slow-consumer closes the outbox's metrics counted.
    #[cfg(test)]
    pub(crate) fn slow_consumer_closes(&self) -> u64 {
        self.shared.metrics.slow_consumer_closes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_overflow_closes_as_slow_consumer_and_is_counted_whoever_pushed() {
        let o = Outbox::for_test(2);
        assert_eq!(o.push(Bytes::from_static(b"1")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"2")), Pushed::Queued);
        assert_eq!(o.slow_consumer_closes(), 0);
        assert_eq!(o.push(Bytes::from_static(b"3")), Pushed::Overflowed);
        assert_eq!(o.slow_consumer_closes(), 1);
        assert_eq!(o.push(Bytes::from_static(b"4")), Pushed::Closing);
        assert_eq!(o.slow_consumer_closes(), 1, "a closing socket is counted once");
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, 1 << 20));
        assert!(b.frames.is_empty());
        assert_eq!(b.close, Some(SLOW_CONSUMER));
    }

    #[tokio::test]
    async fn overflow_is_urgent() {
        let o = Outbox::for_test(1);
        o.push(Bytes::from_static(b"1"));
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.urgent().await }
        });
        tokio::task::yield_now().await;
        o.push(Bytes::from_static(b"2"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[test]
    fn batches_keep_order_and_control_goes_first() {
        let o = Outbox::for_test(10);
        o.push(Bytes::from_static(b"a"));
        o.push(Bytes::from_static(b"b"));
        o.push_control(Bytes::from_static(b"p"));
        o.push_front(vec![Bytes::from_static(b"r"), Bytes::from_static(b"a")]);
        let mut b = Batch::default();
        o.take_batch(&mut b, 2);
        assert_eq!(b.frames, ["p", "r", "a"].map(Bytes::from));
        assert_eq!(b.close, None);
    }

    #[test]
    fn a_handoff_takes_the_whole_queue_in_write_order_unless_it_cannot() {
        let o = Outbox::for_test(10);
        o.push(Bytes::from_static(b"a"));
        o.push(Bytes::from_static(b"b"));
        o.push_control(Bytes::from_static(b"p"));
        assert_eq!(o.take_for_handoff().unwrap(), ["p", "a", "b"].map(Bytes::from));
        assert_eq!(o.take_for_handoff().unwrap(), Vec::<Bytes>::new());

        // A batch in flight: its frames are neither queued nor written yet.
        o.push(Bytes::from_static(b"c"));
        let mut b = Batch::default();
        o.take_batch(&mut b, 1 << 20);
        o.push(Bytes::from_static(b"d"));
        assert_eq!(o.take_for_handoff(), None);
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, 1 << 20), "the write loop takes d after writing c");
        assert_eq!(o.take_for_handoff(), None, "d is being written");
        assert!(!o.take_batch(&mut Batch::default(), 1 << 20), "written: nothing left");
        assert_eq!(o.take_for_handoff().unwrap(), Vec::<Bytes>::new());

        o.close(crate::close::NORMAL);
        assert_eq!(o.take_for_handoff(), None, "a closing socket stays with its process");
    }
}
