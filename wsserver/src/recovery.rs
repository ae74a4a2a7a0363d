//! Recovery for sockets that opted in with `recover`: between subscribing and going live, the
//! socket's live messages are held in its [`Gate`] while the history is read; then one status
//! object per channel, the missed messages, and the held messages newer than what the history
//! gave are queued in that order, and the gate opens. No duplicate and no gap: live messages at
//! or before the history's top are dropped (also those arriving after the gate opened), later
//! ones kept.
//!
//! Opted-in sockets receive the contract's JSON objects (see `protocol::recovery_frames`); the
//! registry encodes each message's object once and shares it, as it does the plain frame.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use bytes::Bytes;
use protocol::recovery_frames::{message_json, ChannelAudience};
use protocol::{ChannelName, Facility, KeyPrefix, Position, Recover, Status};
use service::history::{self, Recovery};

use crate::app::App;
use crate::close::HELD_OVERFLOW;
use crate::frame;
use crate::outbox::Outbox;

/// Most live messages held for one socket while its history is read; beyond, the socket is
/// closed (it would be a slow consumer anyway) and its client reconnects with its positions.
pub const MAX_HELD: usize = 10_000;

/// One opted-in socket's switch between holding live messages (while recovering) and letting
/// them through, and its memory of the newest position its recovery already sent per channel:
/// a live copy of a message the history read already returned (published just before the read,
/// its pub/sub copy still on the way) is dropped even after the gate opened. A std `Mutex`:
/// held for one decision or for the final merge, never across `.await`.
pub struct Gate {
    audiences: Vec<(ChannelName, ChannelAudience)>,
    state: Mutex<GateState>,
}

enum GateState {
    Holding(Vec<Held>),
    Overflowed,
    /// Per channel (same index as `audiences`), the position live messages must be newer than.
    Open(Vec<Option<Position>>),
}

struct Held {
    channel: usize,
    position: Option<Position>,
    frame: Bytes,
}

/// Whether a message at `position` was already sent by the recovery that ended at `after`.
fn already_sent(after: Option<Position>, position: Option<Position>) -> bool {
    matches!((after, position), (Some(a), Some(p)) if a.epoch == p.epoch && p.offset <= a.offset)
}

impl Gate {
    /// A closed gate for a socket subscribed to `channels` (under `prefix`).
    pub fn new(prefix: &KeyPrefix, channels: &[ChannelName]) -> Gate {
        let audiences = channels.iter().filter_map(|c| prefix.channel_audience(c).map(|a| (c.clone(), a))).collect();
        Gate { audiences, state: Mutex::new(GateState::Holding(Vec::new())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The audience an opted-in client is told for `channel`.
    pub fn audience(&self, channel: &str) -> Option<&ChannelAudience> {
        self.audiences.iter().find(|(c, _)| c.as_str() == channel).map(|(_, a)| a)
    }

    /// Decides about one live message: true when the caller delivers it now; false when the
    /// gate keeps it (recovery in progress) or drops it (the recovery already sent it).
    pub fn admit(&self, channel: &str, position: Option<Position>, frame: &Bytes) -> bool {
        let Some(index) = self.audiences.iter().position(|(c, _)| c.as_str() == channel) else { return true };
        let mut state = self.lock();
        match &mut *state {
            GateState::Open(after) => !already_sent(after[index], position),
            GateState::Overflowed => false,
            GateState::Holding(held) if held.len() >= MAX_HELD => {
                *state = GateState::Overflowed;
                false
            }
            GateState::Holding(held) => {
                held.push(Held { channel: index, position, frame: frame.clone() });
                false
            }
        }
    }

    /// Queues `first` (statuses and missed messages), then the held messages that are newer
    /// than `live_after` for their channel, and opens the gate. Returns the number of frames
    /// queued, or `None` when the held messages overflowed (the socket is closed).
    pub fn open(
        &self,
        outbox: &Outbox,
        first: Vec<Bytes>,
        live_after: &HashMap<ChannelName, Position>,
    ) -> Option<usize> {
        let after: Vec<Option<Position>> = self.audiences.iter().map(|(c, _)| live_after.get(c).copied()).collect();
        let mut state = self.lock();
        let held = match std::mem::replace(&mut *state, GateState::Open(after.clone())) {
            GateState::Holding(held) => held,
            GateState::Overflowed => {
                outbox.close_now(HELD_OVERFLOW);
                return None;
            }
            GateState::Open(_) => Vec::new(),
        };
        let mut count = 0;
        for frame in first {
            outbox.push(frame);
            count += 1;
        }
        for h in held {
            if !already_sent(after[h.channel], h.position) {
                outbox.push(h.frame);
                count += 1;
            }
        }
        Some(count)
    }
}

/// A text frame of the `message` object for one channel.
pub fn message_frame(audience: &ChannelAudience, position: Option<Position>, payload: &[u8]) -> Bytes {
    frame::text(message_json(audience, position, payload).as_bytes())
}

/// Runs the recovery of one opted-in socket whose subscriptions Redis confirmed: reads the
/// history (or, on a facility without history, the ws4redis last messages), queues the status
/// objects and what the client missed, then opens the gate. Redis failures become `unavailable`
/// gaps: the socket stays open and goes live.
pub async fn recover(
    app: &App,
    facility: &Facility,
    channels: &[ChannelName],
    recover: &Recover,
    gate: &Gate,
    outbox: &Outbox,
) {
    let metrics = &app.metrics.history;
    let mut first = Vec::new();
    let mut live_after = HashMap::new();
    let status = |first: &mut Vec<Bytes>, audience: &ChannelAudience, status: &Status| {
        if let Status::Gap { reason, .. } = status {
            metrics.gap(*reason);
        }
        first.push(frame::text(status.to_json(audience).as_bytes()));
    };
    if app.history.settings().enabled(facility) {
        let read = app.store.read_history(&app.history, channels, recover).await;
        let recoveries: Vec<Recovery> = match read {
            Ok(list) => list.into_iter().map(|h| h.recovery(recover)).collect(),
            Err(e) => {
                tracing::warn!("history read failed: {e}");
                channels.iter().map(|_| history::unavailable()).collect()
            }
        };
        for (channel, r) in channels.iter().zip(recoveries) {
            let Some(audience) = gate.audience(channel.as_str()) else { continue };
            status(&mut first, audience, &r.status);
            if let Status::Recovered { missed, .. } = r.status {
                metrics.recoveries.fetch_add(1, Ordering::Relaxed);
                metrics.recovered_messages.fetch_add(missed, Ordering::Relaxed);
            }
            let epoch = r.live_after.map(|p| p.epoch);
            for entry in &r.missed {
                let position = epoch.map(|epoch| Position { epoch, offset: entry.offset });
                first.push(message_frame(audience, position, &entry.payload));
            }
            if let Some(after) = r.live_after {
                live_after.insert(channel.clone(), after);
            }
        }
    } else {
        let last = match app.store.last_messages(channels).await {
            Ok(values) => values,
            Err(e) => {
                tracing::warn!("replay failed: {e}");
                channels.iter().map(|_| None).collect()
            }
        };
        for (channel, value) in channels.iter().zip(last) {
            let Some(audience) = gate.audience(channel.as_str()) else { continue };
            status(&mut first, audience, &history::without_history(recover).status);
            if let Some(value) = value {
                first.push(message_frame(audience, None, &value));
            }
        }
    }
    if let Some(count) = gate.open(outbox, first, &live_after) {
        app.metrics.messages_out.fetch_add(count as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Batch;
    use protocol::Epoch;

    fn at(offset: u64) -> Option<Position> {
        Some(Position { epoch: Epoch::from_u64(9), offset })
    }

    fn queued(outbox: &Outbox) -> Vec<Bytes> {
        let mut batch = Batch::default();
        outbox.take_batch(&mut batch, usize::MAX);
        batch.frames
    }

    #[test]
    fn held_messages_are_merged_by_offset_and_late_copies_dropped() {
        let prefix = KeyPrefix::default();
        let channel = prefix.broadcast(&Facility::parse("chat").unwrap());
        let gate = Gate::new(&prefix, std::slice::from_ref(&channel));
        let outbox = Outbox::for_test(16);
        let frame = |text: &'static str| Bytes::from_static(text.as_bytes());
        // While the history is read: everything is held, nothing delivered.
        assert!(!gate.admit(channel.as_str(), at(4), &frame("4")));
        assert!(!gate.admit(channel.as_str(), at(6), &frame("6")));
        assert!(!gate.admit(channel.as_str(), None, &frame("plain")));
        // The history read ended at offset 5 (it sent 4 and 5 itself).
        let live_after = HashMap::from([(channel.clone(), at(5).unwrap())]);
        assert_eq!(gate.open(&outbox, vec![frame("status"), frame("5")], &live_after), Some(4));
        assert_eq!(queued(&outbox), [frame("status"), frame("5"), frame("6"), frame("plain")]);
        // After opening: a late live copy of 5 is dropped, 7 and unpositioned messages pass,
        // a message of another epoch passes.
        assert!(!gate.admit(channel.as_str(), at(5), &frame("5")));
        assert!(gate.admit(channel.as_str(), at(7), &frame("7")));
        assert!(gate.admit(channel.as_str(), None, &frame("plain")));
        let other = Some(Position { epoch: Epoch::from_u64(1), offset: 1 });
        assert!(gate.admit(channel.as_str(), other, &frame("new epoch")));
    }

    #[test]
    fn too_many_held_messages_close_the_socket() {
        let prefix = KeyPrefix::default();
        let channel = prefix.broadcast(&Facility::parse("chat").unwrap());
        let gate = Gate::new(&prefix, std::slice::from_ref(&channel));
        let outbox = Outbox::for_test(16);
        for i in 0..=MAX_HELD as u64 {
            assert!(!gate.admit(channel.as_str(), at(i), &Bytes::new()));
        }
        assert_eq!(gate.open(&outbox, Vec::new(), &HashMap::new()), None);
        let mut batch = Batch::default();
        outbox.take_batch(&mut batch, usize::MAX);
        assert_eq!(batch.close, Some(HELD_OVERFLOW));
    }
}
