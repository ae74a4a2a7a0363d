//! Live hand-off: a running wsserver passes its listeners and every open websocket to a new
//! wsserver process (started from the program file on disk), which resumes each socket where
//! it was: no close frame, no reconnect, no message lost or sent twice. Triggered by SIGUSR2
//! (`systemctl reload`); see docs/handoff.md for operating it.
//!
//! - [`give`]: the old process: start the new one ([`spawn`]), pass the listeners, then the
//!   sockets in batches.
//! - [`take`]: the new process: take the listeners, resume each socket.
//! - [`trigger`]: SIGUSR2 starts one.
//! - [`link`]: the messages between the two; [`fd_pass`]: descriptors over the unix socket;
//!   [`state`]: one socket's versioned state.
//!
//! # Steps
//!
//! 1. The old process starts the new one with one end of a socket pair, passes it its
//!    listening sockets and a random nonce; the new process connects to Redis and subscribes,
//!    starts accepting on the same listening sockets, and says it is ready. The old process
//!    stops accepting. (A client connecting now is accepted by one of the two.)
//! 2. One batch ahead of the hand-off (`OpenSockets::freeze_some`), each socket of the old
//!    process stops at a frame boundary: its write loop after the
//!    write in progress (nothing is half-written, except the rest of a frame a direct write
//!    left partly written, which stays first in the queue), its read loop between reads (a
//!    frame partway read stays in the reader and travels in the state). Deliveries keep being
//!    queued in its outbox.
//! 3. Per batch of up to [`give::BATCH`] sockets, one *cut*: each socket's descriptor and
//!    state go over; the new process joins it to its registry with its cut set (its outbox
//!    drops everything until the cut's marker), and answers once Redis confirmed every
//!    channel it needs. The old process joins the frozen sockets to the hand-off's private
//!    channel (`<prefix>crier:handoff:<nonce>`), and once Redis confirmed that too, publishes
//!    the batch's marker there.
//! 4. In the old process each socket's outbox keeps everything before its marker and drops
//!    everything after; that queue (the *tail*) goes to the new process, which puts it before
//!    everything its own outbox kept after the marker, and starts the socket's loops.
//!
//! # Why no message is lost or duplicated
//!
//! Redis runs commands one at a time and appends what a PUBLISH sends to each subscribed
//! connection's output in that order, so two connections subscribed to a channel C and to the
//! marker channel M see any message on C on the same side of a marker on M. The marker is
//! published only after both processes' subscriptions to C (the socket's channels) and to M
//! are confirmed, so both see it, and both see every message on C published after it; the old
//! process has been subscribed to C all along, so it also saw everything before. Within each
//! process a socket's deliveries, marker included, go through one fan-out shard in the order
//! the subscriber read them (the socket's id picks its shard), so each outbox sees the marker
//! at that same position: every message before it is delivered by the old process (in the
//! tail), every message after it by the new one, exactly once, in order. Frames the old
//! process queued itself (pongs, heartbeats) are in the tail; the new process queues its own
//! after. This holds for one Redis server (also behind Sentinel); with Redis Cluster sharded
//! pub/sub the channels of one socket may live on different nodes and there is no such
//! common order.
//!
//! # What cannot be handed
//!
//! A socket the new process refuses (state of a version it does not read, over its connection
//! limit) is closed by the old process with 1001, as at shutdown, and counted
//! (`crier_ws_handoff_sockets_closed_total`), as is one whose queue overflowed while frozen
//! (closed by the new process) and one still in its handshake when the hand-off ends. Session
//! keys travel inside the state over the socket pair only, never on disk.

pub mod fd_pass;
pub mod give;
pub mod link;
pub mod spawn;
pub mod state;
pub mod take;
pub mod trigger;
