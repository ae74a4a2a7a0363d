//! Crier's websocket server. The message path, each step in its own module and every arrow
//! pointing one way:
//!
//! 1. [`subscriber`]: the Redis pub/sub connection. Heartbeats from Redis are dropped
//!    ([`heartbeat`]), session-end announcements go to [`session_end`], the rest on to (on a
//!    Redis Cluster, [`shard_subscriber`] adds one `SSUBSCRIBE` connection per master, placed
//!    by [`slot_map`], delivering to the same registry)
//! 2. [`registry`]: who listens on the channel; one encoded [`frame`] shared by all, minus the
//!    publisher's own echo ([`echo_filter`]) →
//! 3. [`fanout`]: which shard thread writes to which socket →
//! 4. [`outbox`]: each socket's queue and the slow-consumer policy (its fan-out side, stage
//!    and flush, in `outbox::direct`) →
//! 5. [`writer`]: the only code that hands frames to the kernel, directly from a shard when
//!    the socket is idle, otherwise from the socket's [`write_loop`] (pings and heartbeats
//!    timed by [`keepalive`]) →
//! 6. [`connection`]: the socket's life: [`join`] (registry, presence, session ends, replay of
//!    persisted messages), [`read_loop`] (client frames, [`publisher`]) and the write loop.
//!
//! [`clock`] (socket ids and delivery stamps), [`close`] (every close code the server sends)
//! and [`metrics`] are shared by all steps.
//! The HTTP side of the upgrade is [`upgrade`] and [`handshake`].
//! [`handoff`] passes the listeners and every open socket to a new process (SIGUSR2), with no
//! reconnect and no message lost or duplicated.

pub mod access;
pub mod admin;
pub mod app;
pub mod auth_callback;
pub mod clock;
pub mod close;
pub mod config;
pub mod connection;
pub mod echo_filter;
pub mod fanout;
pub mod frame;
pub mod frame_reader;
pub mod handoff;
pub mod handshake;
pub mod heartbeat;
pub mod identity;
pub mod join;
pub mod keepalive;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod publisher;
pub mod read_loop;
pub mod recovery;
pub mod registry;
pub mod server;
pub mod session_end;
pub mod shard_subscriber;
pub mod slot_map;
pub mod store;
pub mod subscriber;
#[cfg(test)]
mod test_redis;
pub mod unix_socket;
pub mod upgrade;
pub mod write_loop;
pub mod writer;

pub use config::Config;
pub use server::{run, run_with, Handoff, Listeners, RunError};
