//! The fan-out's direct path into an outbox: it *stages* its deliveries (queued, the write loop
//! not woken) and then *flushes* each socket it staged to: when no write is in progress, what is
//! queued leaves in one non-blocking vectored write from the fan-out shard itself through the
//! socket's [`SocketWriter`] (no task wake-up); whatever the kernel does not take stays queued
//! and the write loop is woken for it, so order is kept. When messages arrive faster than the
//! fan-out writes, several are staged per socket before its flush and leave in one write.
//!
//! The write loop attaches its writer for this while it runs ([`Outbox::attach_writer`]). The
//! fan-out prefetches the state and socket of the outboxes it is about to flush
//! ([`Outbox::prefetch_state`], [`Outbox::prefetch_socket`]): at 10,000 sockets per message each
//! flush would otherwise start with a few cache misses.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{Outbox, Shared};
use crate::writer::SocketWriter;

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

impl Outbox {
    /// Queues a fan-out frame that arrived from Redis at `arrived_us` without waking the write
    /// loop (slow-consumer policy as for [`Outbox::push`]); [`Staged::First`] asks for a flush.
    pub fn stage(&self, frame: Bytes, arrived_us: u64) -> Staged {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Staged::Closing;
        }
        if state.cut.is_some() && !self.cut_admits(&mut state, &frame) {
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

    /// Sends what was staged: directly, in one non-blocking write, when the write loop is idle
    /// and its writer attached; what the socket does not take (or everything, otherwise) is left
    /// to the write loop, which is woken.
    pub fn flush(&self) -> Option<Flushed> {
        let mut state = self.lock();
        state.staged = false;
        if state.frames.is_empty() {
            return None;
        }
        let mut flushed = None;
        if !state.writing && state.closing.is_none() && state.control.is_empty() {
            if let Some(mut written) = state.writer.as_ref().and_then(|writer| writer.try_write(&state.frames)) {
                let mut frames = 0;
                while written > 0 {
                    let front = state.frames.front_mut().expect("written bytes were queued");
                    if written >= front.len() {
                        written -= front.len();
                        state.frames.pop_front();
                        state.partial_front = false;
                        frames += 1;
                    } else {
                        *front = front.slice(written..);
                        state.partial_front = true;
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
        let rest = !state.frames.is_empty();
        drop(state);
        if rest {
            self.shared.wake.notify_one();
        }
        flushed
    }

    /// Allows direct writes through `writer` (the write loop calls this once it runs).
    pub fn attach_writer(&self, writer: Arc<SocketWriter>) {
        let [half, stream] = writer.prefetch_hints();
        self.shared.write_half_at.store(half, Ordering::Relaxed);
        self.shared.stream_at.store(stream, Ordering::Relaxed);
        self.lock().writer = Some(writer);
    }

    /// Ends direct writes (the write loop calls this before its close frame and when it ends).
    pub fn detach_writer(&self) {
        self.lock().writer = None;
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

    /// Starts loading the attached writer's write half and stream (read from the state, so
    /// call it after [`Outbox::prefetch_state`] has had time to arrive).
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
    use crate::outbox::Batch;
    use crate::writer::tests::{read_exactly, socket_pair};

    #[tokio::test]
    async fn prefetch_hints_follow_the_attached_writer() {
        let (writer, _peer, _read) = socket_pair().await;
        let o = Outbox::for_test(4);
        let hints =
            |o: &Outbox| [o.shared.write_half_at.load(Ordering::Relaxed), o.shared.stream_at.load(Ordering::Relaxed)];
        assert_eq!(hints(&o), [0, 0], "nothing attached: nothing to prefetch");
        let expected = writer.prefetch_hints();
        o.attach_writer(writer.clone());
        assert_eq!(hints(&o), expected);
        // Hints only: prefetching is harmless before, during and after the attachment.
        o.prefetch_state();
        o.prefetch_socket();
        o.detach_writer();
        assert_eq!(hints(&o), [0, 0], "detached: no stale address is hinted");
        o.prefetch_socket();
    }

    #[tokio::test]
    async fn staged_frames_leave_in_one_direct_write_when_the_writer_is_idle() {
        let (writer, mut peer, _read) = socket_pair().await;
        let o = Outbox::for_test(4);
        assert_eq!(o.stage(Bytes::from_static(b"early"), 7), Staged::First);
        assert_eq!(o.flush(), None, "no writer attached yet: left to the write loop");
        o.attach_writer(writer);
        // The write loop takes what is queued before the fan-out's flush: the flush has nothing left.
        assert_eq!(o.stage(Bytes::from_static(b"second"), 8), Staged::First);
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, 1 << 20));
        assert_eq!(b.frames, ["early", "second"].map(Bytes::from));
        assert_eq!(b.pending_since_us, 7);
        assert_eq!(o.flush(), None);
        // The write loop is busy with that batch: a flush leaves the frame to it.
        assert_eq!(o.stage(Bytes::from_static(b"third"), 9), Staged::First);
        assert_eq!(o.flush(), None);
        let mut b2 = Batch::default();
        assert!(o.take_batch(&mut b2, 1 << 20));
        assert_eq!(b2.frames, ["third"].map(Bytes::from));
        // The write loop finished and found nothing more: the flush writes, all staged frames at once.
        assert!(!o.take_batch(&mut Batch::default(), 1 << 20));
        assert_eq!(o.stage(Bytes::from_static(b"d1"), 10), Staged::First);
        assert_eq!(o.stage(Bytes::from_static(b"d2"), 11), Staged::Again);
        assert_eq!(o.flush(), Some(Flushed { frames: 2, since_us: 10 }));
        assert_eq!(o.last_direct_us(), 10);
        assert_eq!(read_exactly(&mut peer, 4).await, b"d1d2");
        assert!(!o.take_batch(&mut Batch::default(), 1 << 20), "nothing left for the write loop");
        // Detached: flushes leave everything to the write loop again.
        o.detach_writer();
        assert_eq!(o.stage(Bytes::from_static(b"later"), 12), Staged::First);
        assert_eq!(o.flush(), None);
        // Staging applies the slow-consumer policy too, and counts it.
        for i in 0..3 {
            assert_eq!(o.stage(Bytes::from(vec![i]), 13), if i == 0 { Staged::First } else { Staged::Again });
        }
        assert_eq!(o.stage(Bytes::from_static(b"over"), 14), Staged::Overflowed);
        assert_eq!(o.slow_consumer_closes(), 1);
        assert_eq!(o.stage(Bytes::from_static(b"late"), 15), Staged::Closing);
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_queued_in_order() {
        use tokio::io::AsyncReadExt;
        let (writer, mut peer, _read) = socket_pair().await;
        let o = Outbox::for_test(1000);
        o.attach_writer(writer.clone());
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
        // What the write loop does with the batch.
        writer.write_all(&b.frames).await.unwrap();
        o.detach_writer();
        drop(writer);
        let all = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.unwrap().unwrap();
        let expected: Vec<u8> = frames.concat();
        assert_eq!(all.len(), expected.len(), "every byte exactly once");
        assert!(all == expected, "bytes in delivery order");
    }
}
