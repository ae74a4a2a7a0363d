//! Each socket's bounded outgoing queue and the slow-consumer policy.
//!
//! Producers (the Redis fan-out, the reader's pongs, shutdown) push encoded frames; the socket's
//! writer task takes everything queued in one batch and writes it with one vectored write.
//!
//! **Direct writes**: the fan-out *stages* its deliveries (queued, the writer not woken) and then
//! *flushes* each socket it staged to: when no write is in progress, what is queued leaves in
//! one non-blocking vectored write from the fan-out itself (no task wake-up); whatever the socket
//! does not take at once stays queued and the writer is woken for it, so order is kept. When
//! messages arrive faster than the fan-out writes, several are staged per socket before its flush
//! and leave in one write. The socket's write side is lent to the outbox for that while the
//! writer runs ([`Outbox::lend_socket`]). The fan-out prefetches the state and socket of the
//! outboxes it is about to flush ([`Outbox::prefetch_state`], [`Outbox::prefetch_socket`]): at
//! 10,000 sockets per message each flush would otherwise start with a few cache misses.
//!
//! **Slow-consumer policy** (the only place it lives): when a data frame would make the queue
//! longer than its depth, the frame is not queued, the queue is dropped, and the socket is
//! closed with [`SLOW_CONSUMER`] (1008, "slow consumer"). Other sockets are never delayed by it:
//! pushing never waits. Control frames (pong, close) bypass the depth, bounded separately.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::tcp::OwnedWriteHalf;
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
    /// Addresses of the lent write half and of its stream (0: none), only ever used as
    /// prefetch hints by [`Outbox::prefetch_socket`], never dereferenced.
    write_half_at: AtomicUsize,
    stream_at: AtomicUsize,
}

struct State {
    depth: usize,
    frames: VecDeque<Bytes>,
    control: VecDeque<Bytes>,
    closing: Option<CloseReason>,
    urgent: bool,
    /// The writer holds a batch it is writing: direct writes must wait behind it.
    writing: bool,
    /// The socket's write side, for direct writes; set while the writer runs.
    socket: Option<Arc<OwnedWriteHalf>>,
    /// Arrival time (the registry's clock, µs) of the oldest queued delivery; 0 when none.
    pending_since_us: u64,
    /// Arrival time of the last delivery written directly (heartbeats count it as a write).
    last_direct_us: u64,
    /// Staged by the fan-out since its last flush of this socket.
    staged: bool,
}

/// What [`Outbox::stage`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// Queued; the first since the last flush, so the caller must [`Outbox::flush`] it.
    First,
    /// Queued behind frames staged earlier (one flush covers them all).
    Again,
    /// The queue overflowed: the socket is now closing as a slow consumer.
    Overflowed,
    /// The socket is already closing; the frame was dropped.
    Closing,
}

/// Frames [`Outbox::flush`] wrote directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub frames: usize,
    /// Arrival time of the oldest of them.
    pub since_us: u64,
}

/// Most frames one direct write carries.
const DIRECT_SLICES: usize = 16;

/// One batch for the writer.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<Bytes>,
    /// Set when the socket must be closed after `frames` are written.
    pub close: Option<CloseReason>,
    /// Arrival time of the oldest delivery in `frames` (0: none), for the latency metric.
    pub pending_since_us: u64,
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
                    writing: false,
                    socket: None,
                    pending_since_us: 0,
                    last_direct_us: 0,
                    staged: false,
                }),
                wake: Notify::new(),
                urgent: Notify::new(),
                write_half_at: AtomicUsize::new(0),
                stream_at: AtomicUsize::new(0),
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

    /// The slow-consumer policy: drop the queue and close the socket with [`SLOW_CONSUMER`].
    fn overflow(&self, mut state: std::sync::MutexGuard<'_, State>) {
        state.frames = VecDeque::new();
        state.closing = Some(SLOW_CONSUMER);
        state.urgent = true;
        drop(state);
        self.shared.wake.notify_one();
        self.shared.urgent.notify_waiters();
    }

    /// Queues a fan-out frame that arrived from Redis at `arrived_us` without waking the writer
    /// (slow-consumer policy as for [`Outbox::push`]); [`Staged::First`] asks for a flush.
    pub fn stage(&self, frame: Bytes, arrived_us: u64) -> Staged {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Staged::Closing;
        }
        if state.frames.len() >= state.depth {
            self.overflow(state);
            return Staged::Overflowed;
        }
        state.frames.push_back(frame);
        if state.pending_since_us == 0 {
            state.pending_since_us = arrived_us;
        }
        if std::mem::replace(&mut state.staged, true) {
            Staged::Again
        } else {
            Staged::First
        }
    }

    /// Sends what was staged: directly, in one non-blocking vectored write, when the writer is
    /// idle and the socket lent; what the socket does not take (or everything, otherwise) is
    /// left to the writer, which is woken.
    pub fn flush(&self) -> Option<Flushed> {
        let mut state = self.lock();
        state.staged = false;
        if state.frames.is_empty() {
            return None;
        }
        let mut flushed = None;
        if !state.writing && state.closing.is_none() && state.control.is_empty() {
            if let Some(socket) = &state.socket {
                let mut slices = [std::io::IoSlice::new(&[]); DIRECT_SLICES];
                for (slice, frame) in slices.iter_mut().zip(&state.frames) {
                    *slice = std::io::IoSlice::new(frame);
                }
                let count = state.frames.len().min(DIRECT_SLICES);
                // WouldBlock or an error: the writer waits for the socket or meets the error
                // and ends the connection.
                let result = if count == 1 {
                    socket.try_write(&state.frames[0])
                } else {
                    socket.try_write_vectored(&slices[..count])
                };
                if let Ok(mut written) = result {
                    let mut frames = 0;
                    while written > 0 {
                        let front = state.frames.front_mut().expect("written bytes were queued");
                        if written >= front.len() {
                            written -= front.len();
                            state.frames.pop_front();
                            frames += 1;
                        } else {
                            *front = front.slice(written..);
                            written = 0;
                        }
                    }
                    if frames > 0 {
                        flushed = Some(Flushed { frames, since_us: state.pending_since_us });
                        state.last_direct_us = state.pending_since_us;
                        if state.frames.is_empty() {
                            state.pending_since_us = 0;
                        }
                    }
                }
            }
        }
        let rest = !state.frames.is_empty();
        drop(state);
        if rest {
            self.shared.wake.notify_one();
        }
        flushed
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

    /// Lends the socket's write side for direct writes (the writer calls this once it runs).
    pub fn lend_socket(&self, socket: Arc<OwnedWriteHalf>) {
        let stream: &tokio::net::TcpStream = (*socket).as_ref();
        self.shared.write_half_at.store(Arc::as_ptr(&socket) as usize, Ordering::Relaxed);
        self.shared.stream_at.store(std::ptr::from_ref(stream) as usize, Ordering::Relaxed);
        self.lock().socket = Some(socket);
    }

    /// Ends direct writes (the writer calls this before its close frame and when it ends).
    pub fn take_back_socket(&self) {
        self.lock().socket = None;
        self.shared.write_half_at.store(0, Ordering::Relaxed);
        self.shared.stream_at.store(0, Ordering::Relaxed);
    }

    /// Starts loading this socket's queue state into the cache, for a flush a little later:
    /// the fan-out calls it a few sockets ahead, so that the loads overlap the writes before.
    pub fn prefetch_state(&self) {
        // The allocation holds the two reference counts, then `Shared`.
        const COUNTS: usize = 2 * std::mem::size_of::<usize>();
        let start = Arc::as_ptr(&self.shared).cast::<u8>().wrapping_sub(COUNTS);
        for offset in (0..COUNTS + std::mem::size_of::<Shared>()).step_by(64) {
            prefetch(start.wrapping_add(offset));
        }
    }

    /// Starts loading the lent socket's write half and stream (read from the state, so call it
    /// after [`Outbox::prefetch_state`] has had time to arrive).
    pub fn prefetch_socket(&self) {
        for at in [&self.shared.write_half_at, &self.shared.stream_at] {
            let address = at.load(Ordering::Relaxed);
            if address != 0 {
                prefetch(address as *const u8);
            }
        }
    }

    /// Arrival time of the last directly written delivery (0: none).
    pub fn last_direct_us(&self) -> u64 {
        self.lock().last_direct_us
    }

    /// Moves everything queued into `batch`, up to `max_bytes` of data frames (at least one).
    /// Returns false when nothing was queued. The writer calls it after each write: until it
    /// calls again, direct writes queue behind the batch.
    pub fn take_batch(&self, batch: &mut Batch, max_bytes: usize) -> bool {
        let mut state = self.lock();
        batch.pending_since_us = std::mem::take(&mut state.pending_since_us);
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
        state.writing = !batch.frames.is_empty();
        !batch.frames.is_empty() || batch.close.is_some()
    }

    /// Waits until something may have been queued.
    pub async fn wait(&self) {
        self.shared.wake.notified().await;
    }
}

/// A hint to the CPU to load the cache line holding `address`. A prefetch never faults and
/// reads nothing the program sees, so any address is sound, dangling or not.
#[allow(unsafe_code)]
#[inline(always)]
fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint (no fault, no observable read) and SSE is part of every
    // x86_64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
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

    /// A connected loopback pair: the write half lent to outboxes, and the peer.
    async fn socket_pair() -> (Arc<OwnedWriteHalf>, tokio::net::TcpStream, tokio::net::tcp::OwnedReadHalf) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        (Arc::new(write), client, read)
    }

    async fn read_exactly(peer: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; n];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut buf)).await.unwrap().unwrap();
        buf
    }

    #[tokio::test]
    async fn prefetch_hints_follow_the_lent_socket() {
        let (socket, _peer, _read) = socket_pair().await;
        let o = Outbox::new(4);
        let hints =
            |o: &Outbox| (o.shared.write_half_at.load(Ordering::Relaxed), o.shared.stream_at.load(Ordering::Relaxed));
        assert_eq!(hints(&o), (0, 0), "nothing lent: nothing to prefetch");
        let stream: &tokio::net::TcpStream = (*socket).as_ref();
        let expected = (Arc::as_ptr(&socket) as usize, std::ptr::from_ref(stream) as usize);
        o.lend_socket(socket.clone());
        assert_eq!(hints(&o), expected);
        // Hints only: prefetching is harmless before, during and after the loan.
        o.prefetch_state();
        o.prefetch_socket();
        o.take_back_socket();
        assert_eq!(hints(&o), (0, 0), "taken back: no stale address is hinted");
        o.prefetch_socket();
    }

    #[tokio::test]
    async fn staged_frames_leave_in_one_direct_write_when_the_writer_is_idle() {
        let (socket, mut peer, _read) = socket_pair().await;
        let o = Outbox::new(4);
        assert_eq!(o.stage(Bytes::from_static(b"early"), 7), Staged::First);
        assert_eq!(o.flush(), None, "no socket lent yet: left to the writer");
        o.lend_socket(socket);
        // The writer takes what is queued before the fan-out's flush: the flush has nothing left.
        assert_eq!(o.stage(Bytes::from_static(b"second"), 8), Staged::First);
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, 1 << 20));
        assert_eq!(b.frames, ["early", "second"].map(Bytes::from));
        assert_eq!(b.pending_since_us, 7);
        assert_eq!(o.flush(), None);
        // The writer is busy with that batch: a flush leaves the frame to it.
        assert_eq!(o.stage(Bytes::from_static(b"third"), 9), Staged::First);
        assert_eq!(o.flush(), None);
        let mut b2 = Batch::default();
        assert!(o.take_batch(&mut b2, 1 << 20));
        assert_eq!(b2.frames, ["third"].map(Bytes::from));
        // The writer finished and found nothing more: the flush writes, all staged frames at once.
        assert!(!o.take_batch(&mut Batch::default(), 1 << 20));
        assert_eq!(o.stage(Bytes::from_static(b"d1"), 10), Staged::First);
        assert_eq!(o.stage(Bytes::from_static(b"d2"), 11), Staged::Again);
        assert_eq!(o.flush(), Some(Flushed { frames: 2, since_us: 10 }));
        assert_eq!(o.last_direct_us(), 10);
        assert_eq!(read_exactly(&mut peer, 4).await, b"d1d2");
        assert!(!o.take_batch(&mut Batch::default(), 1 << 20), "nothing left for the writer");
        // Taken back: flushes leave everything to the writer again.
        o.take_back_socket();
        assert_eq!(o.stage(Bytes::from_static(b"later"), 12), Staged::First);
        assert_eq!(o.flush(), None);
        // Staging applies the slow-consumer policy too.
        for i in 0..3 {
            assert_eq!(o.stage(Bytes::from(vec![i]), 13), if i == 0 { Staged::First } else { Staged::Again });
        }
        assert_eq!(o.stage(Bytes::from_static(b"over"), 14), Staged::Overflowed);
        assert_eq!(o.stage(Bytes::from_static(b"late"), 15), Staged::Closing);
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_queued_in_order() {
        use tokio::io::AsyncReadExt;
        let (socket, mut peer, _read) = socket_pair().await;
        let o = Outbox::new(1000);
        o.lend_socket(socket.clone());
        let frames: Vec<Bytes> = (0..200u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
        let mut written = 0;
        // The peer reads nothing yet: the kernel's buffers fill, and the rest stays queued.
        for frame in &frames {
            assert_eq!(o.stage(frame.clone(), 1), Staged::First);
            if let Some(flushed) = o.flush() {
                written += flushed.frames;
            }
        }
        assert!(written > 0 && written < frames.len(), "written directly: {written} of {}", frames.len());
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, usize::MAX));
        assert_eq!(b.pending_since_us, 1);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        // What the writer would do with the batch.
        for frame in &b.frames {
            let mut rest = &frame[..];
            while !rest.is_empty() {
                socket.writable().await.unwrap();
                match socket.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        o.take_back_socket();
        drop(socket);
        let all = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.unwrap().unwrap();
        let expected: Vec<u8> = frames.concat();
        assert_eq!(all.len(), expected.len(), "every byte exactly once");
        assert!(all == expected, "bytes in delivery order");
    }
}
