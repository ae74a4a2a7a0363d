//! Each socket's bounded outgoing queue and the slow-consumer policy.
//!
//! Producers (the Redis fan-out, the reader's pongs, shutdown) push encoded frames; the socket's
//! writer task takes everything queued in one batch and writes it with one vectored write.
//!
//! **Slow-consumer policy** (the only place it lives): when a data frame would make the queue
//! longer than its depth, the frame is not queued, the queue is dropped, and the socket is
//! closed with [`SLOW_CONSUMER`] (1008, "slow consumer"). Other sockets are never delayed by it:
//! pushing never waits. Control frames (pong, close) bypass the depth, bounded separately.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// Close code and reason for a socket whose queue overflowed.
pub const SLOW_CONSUMER: CloseReason = CloseReason { code: 1008, reason: "slow consumer: outgoing queue full" };

/// Why and how a socket is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

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
/// pointer moves and never across an `.await`.
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
}

struct State {
    depth: usize,
    frames: VecDeque<Bytes>,
    control: VecDeque<Bytes>,
    closing: Option<CloseReason>,
    urgent: bool,
}

/// One batch for the writer.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<Bytes>,
    /// Set when the socket must be closed after `frames` are written.
    pub close: Option<CloseReason>,
}

impl Outbox {
    pub fn new(depth: usize) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    depth,
                    frames: VecDeque::new(),
                    control: VecDeque::new(),
                    closing: None,
                    urgent: false,
                }),
                wake: Notify::new(),
                urgent: Notify::new(),
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
        if state.frames.len() >= state.depth {
            state.frames = VecDeque::new();
            state.closing = Some(SLOW_CONSUMER);
            state.urgent = true;
            drop(state);
            self.shared.wake.notify_one();
            self.shared.urgent.notify_waiters();
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

    /// Asks the writer to close the socket with `reason` after what is queued. The first
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
    /// Returns false when nothing was queued.
    pub fn take_batch(&self, batch: &mut Batch, max_bytes: usize) -> bool {
        let mut state = self.lock();
        batch.frames.extend(state.control.drain(..));
        let mut bytes = 0;
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
        !batch.frames.is_empty() || batch.close.is_some()
    }

    /// Waits until something may have been queued.
    pub async fn wait(&self) {
        self.shared.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let o = Outbox::new(2);
        assert_eq!(o.push(Bytes::from_static(b"1")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"2")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"3")), Pushed::Overflowed);
        assert_eq!(o.push(Bytes::from_static(b"4")), Pushed::Closing);
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, 1 << 20));
        assert!(b.frames.is_empty());
        assert_eq!(b.close, Some(SLOW_CONSUMER));
    }

    #[tokio::test]
    async fn overflow_is_urgent() {
        let o = Outbox::new(1);
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
        let o = Outbox::new(10);
        o.push(Bytes::from_static(b"a"));
        o.push(Bytes::from_static(b"b"));
        o.push_control(Bytes::from_static(b"p"));
        o.push_front(vec![Bytes::from_static(b"r"), Bytes::from_static(b"a")]);
        let mut b = Batch::default();
        o.take_batch(&mut b, 2);
        assert_eq!(b.frames, ["p", "r", "a"].map(Bytes::from));
        assert_eq!(b.close, None);
    }
}
