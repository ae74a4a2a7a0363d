//! Crier's websocket server. The message path: Redis ([`subscriber`]) → [`registry`] (who
//! listens, one encoded [`frame`] shared by all) → [`fanout`] shards → each socket's [`outbox`]
//! (a direct write when the socket is idle) → otherwise its writer in [`connection`].
//! The HTTP side of the upgrade is [`upgrade`] and [`handshake`].

pub mod access;
pub mod admin;
pub mod app;
pub mod auth_callback;
pub mod config;
pub mod connection;
pub mod echo_filter;
pub mod fanout;
pub mod frame;
pub mod frame_reader;
pub mod handshake;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod reconnect;
pub mod registry;
pub mod server;
pub mod store;
pub mod subscriber;
pub mod upgrade;

pub use config::Config;
pub use server::{run, Listeners, RunError};
