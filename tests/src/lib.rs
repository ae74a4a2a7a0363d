//! End-to-end test harness for Crier: a private `redis-server` on a Unix socket, wsserver and
//! webserver running in-process on ephemeral ports, a real nginx in front of them, and a real
//! websocket client.
//!
//! - [`Redis`]: the private Redis (start, stop, restart on the same socket, PUBLISH, NUMSUB,
//!   CLIENT LIST).
//! - [`Stack`]: Redis + wsserver + webserver + nginx, configured by [`StackOptions`].
//! - [`WsClient`]: a websocket client with timeouts that never cancels a frame read.
//! - [`audiences`]: every API audience published once and checked on its sockets.
//! - [`http`]: small HTTP client helpers.
//! - [`wait_until`]: polls a condition (readiness, "NUMSUB becomes 0"), never a blind sleep.
//! - [`sync_clients`]: makes sure sockets are subscribed before a test publishes.
//! - [`raw`]: hand-written HTTP requests and websocket frames, for abuse and protocol tests.
//! - [`built_binaries`]: the debug binaries, built when missing, for tests that run scripts.
//! - [`server_process`]: the real binaries as child processes (signals, exit codes, SIGKILL).
//! - [`prometheus`]: samples from /metrics text.
//! - [`recovering`]: a client that recovers by the recovery contract and checks what it gets.
//! - [`cut_proxy`]: a TCP proxy that stalls and resets connections, as a network cut does.
//! - [`recovering_client`]: a client that reconnects like ws4redis.js and recovers per the
//!   recovery contract, recording what it received.
//! - [`recovery_frames`]: the recovery contract's frames and positions, as both clients read them.
//! - [`rolling_restart`]: the rolling-restart loss measurement (two instances, one restarted).
//! - [`test_ca`]: a test CA and server/client certificates (openssl CLI) for TLS to Redis.
//! - [`sentinel`]: a master, a replica and three `redis-sentinel` processes for failover tests
//!   (plain or all TLS).
//! - [`topology`]: the Redis a test runs Crier against (single, Sentinel), behind one trait.
//! - [`hosts`]: three wsserver processes on their own loopback addresses behind one nginx.
//! - [`cluster`]: a Redis Cluster of three masters and three replicas (`redis-cli --cluster
//!   create`), its topology, and slot moves.

pub mod audiences;
pub mod browser;
pub mod built_binaries;
pub mod cluster;
pub mod cut_proxy;
pub mod hosts;
pub mod http;
pub mod login;
pub mod nginx;
pub mod process;
pub mod prometheus;
pub mod raw;
pub mod recovering;
pub mod recovering_client;
pub mod recovery_frames;
pub mod redis_server;
pub mod rolling_restart;
pub mod sentinel;
pub mod server_process;
pub mod stack;
pub mod sync;
pub mod tempdir;
pub mod test_ca;
pub mod topology;
pub mod wait;
pub mod web_session;
pub mod ws;

pub use http::HttpResponse;
pub use nginx::Nginx;
pub use redis_server::{Redis, RedisOptions};
pub use stack::{Stack, StackOptions};
pub use sync::{sync_clients, sync_clients_with};
pub use tempdir::TempDir;
pub use topology::Topology;
pub use wait::{try_wait_until, wait_until};
pub use ws::{Event, HandshakeFailure, WsClient, WsOptions};

/// Installs a tracing subscriber once per test process so that server logs show up in a failing
/// test's output. `RUST_LOG` overrides the default filter.
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,crier_wsserver=info,crier_webserver=info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}
