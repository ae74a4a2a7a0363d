//! The outbox's side of a live hand-off ([`crate::handoff`]): stopping the write loop at a
//! frame boundary (*freeze*), the *cut* where a socket's deliveries pass from the old process
//! to the new one, and resuming with the frames the old process had queued.
//!
//! A cut is a marker frame, published once on the hand-off's private channel, that reaches
//! the socket's outbox in both processes in the same position relative to every other message
//! (see the ordering argument in [`crate::handoff`]). In the old process everything queued
//! before the marker is the socket's tail and everything after it is dropped; in the new one
//! everything before it is dropped and everything after it is kept. Frames shaped like another
//! cut's marker of the same hand-off (another batch) are always dropped.

use bytes::Bytes;

use super::{Outbox, State};

/// Which process's view of the cut an outbox takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The old process: deliver up to the marker, drop after it.
    Old,
    /// The new process: drop up to the marker, deliver after it.
    New,
}

/// One socket's cut: the marker frame (encoded as the fan-out encodes it) and how many of its
/// first bytes every marker of the same hand-off shares.
#[derive(Debug, Clone)]
pub struct Cut {
    marker: Bytes,
    shared_prefix: usize,
    side: Side,
    seen: bool,
}

impl Cut {
    /// A cut at `marker`; markers are all of one length and share their first
    /// `shared_prefix` bytes (frame header, hand-off nonce).
    pub fn new(marker: Bytes, shared_prefix: usize, side: Side) -> Cut {
        let shared_prefix = shared_prefix.min(marker.len());
        Cut { marker, shared_prefix, side, seen: false }
    }

    /// Whether `frame` passes; notes the marker when it arrives.
    fn admits(&mut self, frame: &Bytes) -> bool {
        if frame.len() == self.marker.len() && frame[..self.shared_prefix] == self.marker[..self.shared_prefix] {
            if *frame == self.marker {
                self.seen = true;
            }
            return false;
        }
        match self.side {
            Side::Old => !self.seen,
            Side::New => self.seen,
        }
    }
}

impl Outbox {
    /// Applies the cut to a frame being queued (the caller checked that a cut is set).
    pub(super) fn cut_admits(&self, state: &mut State, frame: &Bytes) -> bool {
        let cut = state.cut.as_mut().expect("checked by the caller");
        let seen = cut.seen;
        let admitted = cut.admits(frame);
        if !seen && cut.seen {
            self.shared.wake.notify_one();
        }
        admitted
    }

    /// Asks the write loop to stop at the next frame boundary and detach its writer
    /// ([`crate::outbox::Batch::freeze`]); also for a write loop that starts later.
    pub fn request_freeze(&self) {
        self.lock().freeze = true;
        self.shared.wake.notify_one();
        self.shared.urgent.notify_waiters();
    }

    /// Resolves once a freeze is asked for (the write loop stops a stalled write for it).
    pub async fn freeze_wanted(&self) {
        loop {
            let notified = self.shared.urgent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().freeze {
                return;
            }
            notified.await;
        }
    }

    /// Puts the unwritten rest of an interrupted batch back at the front of the queue, in
    /// order; `partial`: its first frame is partly written.
    pub fn requeue_unwritten(&self, rest: Vec<Bytes>, partial: bool) {
        let mut state = self.lock();
        for frame in rest.into_iter().rev() {
            state.frames.push_front(frame);
        }
        state.partial_front = partial;
        state.writing = false;
    }

    /// Whether the socket is closing (it then stays with its process to finish the close).
    pub fn is_closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// Whether a freeze was asked for.
    pub fn freeze_requested(&self) -> bool {
        self.lock().freeze
    }

    /// Withdraws a freeze and a cut of the old side (a hand-off that failed before its cut):
    /// the socket stays here, with everything queued meanwhile.
    pub fn thaw(&self) {
        let mut state = self.lock();
        state.freeze = false;
        state.cut = None;
    }

    /// Sets the socket's cut.
    pub fn set_cut(&self, cut: Cut) {
        self.lock().cut = Some(cut);
    }

    /// Whether the cut's marker has arrived.
    pub fn cut_seen(&self) -> bool {
        self.lock().cut.as_ref().is_some_and(|c| c.seen)
    }

    /// Waits until the cut's marker has arrived (only for an outbox without a running write
    /// loop: both wait on the same wake-up).
    pub async fn wait_for_cut(&self) {
        loop {
            if self.cut_seen() {
                return;
            }
            self.shared.wake.notified().await;
        }
    }

    /// Puts the frames the old process had queued before everything queued here (the new
    /// side of a hand-off, before its write loop starts). The first of them may be the rest of
    /// a partly written frame: it goes before any control frame.
    pub fn resume_with(&self, tail: Vec<Bytes>) {
        let mut state = self.lock();
        state.partial_front = !tail.is_empty();
        for frame in tail.into_iter().rev() {
            state.frames.push_front(frame);
        }
        drop(state);
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Batch, Pushed};

    fn marker(batch: u8) -> Bytes {
        crate::frame::text(format!("crier-handoff:abcd:{batch:04}").as_bytes())
    }

    fn cut(side: Side) -> Cut {
        Cut::new(marker(1), 2 + "crier-handoff:abcd:".len(), side)
    }

    fn queued(o: &Outbox) -> Vec<Bytes> {
        let mut b = Batch::default();
        o.take_batch(&mut b, usize::MAX);
        b.frames
    }

    #[test]
    fn the_old_side_keeps_what_came_before_the_marker_and_the_new_side_what_came_after() {
        let (old, new) = (Outbox::for_test(16), Outbox::for_test(16));
        old.set_cut(cut(Side::Old));
        new.set_cut(cut(Side::New));
        for frame in
            ["a", "b"].map(Bytes::from).into_iter().chain([marker(0), marker(1)]).chain(["c", "d"].map(Bytes::from))
        {
            old.push(frame.clone());
            new.push(frame);
        }
        assert!(old.cut_seen() && new.cut_seen());
        assert_eq!(queued(&old), ["a", "b"].map(Bytes::from), "another batch's marker is never delivered");
        assert_eq!(queued(&new), ["c", "d"].map(Bytes::from));
        assert_eq!(new.push(marker(2)), Pushed::Closing, "later markers stay out");
        assert_eq!(new.push(Bytes::from_static(b"e")), Pushed::Queued);
    }

    #[test]
    fn a_frozen_socket_hands_its_queue_and_a_resumed_one_writes_the_tail_first() {
        let o = Outbox::for_test(16);
        o.push(Bytes::from_static(b"a"));
        o.request_freeze();
        let mut b = Batch::default();
        assert!(o.take_batch(&mut b, usize::MAX));
        assert!(b.freeze && b.frames.is_empty(), "the write loop is told to stop, nothing taken");
        assert_eq!(o.take_for_handoff().unwrap(), [Bytes::from_static(b"a")]);
        o.thaw();
        assert!(!o.freeze_requested());

        let n = Outbox::for_test(16);
        n.push(Bytes::from_static(b"live"));
        n.push_control(Bytes::from_static(b"pong"));
        n.resume_with(vec![Bytes::from_static(b"rest"), Bytes::from_static(b"q")]);
        assert_eq!(queued(&n), ["rest", "pong", "q", "live"].map(Bytes::from), "a partly written frame's rest first");
    }
}
