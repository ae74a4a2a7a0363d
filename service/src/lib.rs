//! Runtime pieces both Crier binaries share: listeners (TCP, unix sockets, systemd's), the
//! accept-and-serve loop, the Redis settings, topologies (single, Sentinel, Cluster; TCP, unix, TLS),
//! reconnect policy and command connection, shutdown signals, logging, log-safe text and
//! masking, human durations, the wall clock, trusted proxies, systemd readiness notification,
//! the tokio runtime, and the per-channel history (append-and-publish, read for recovery,
//! metrics).

pub mod clock;
pub mod duration;
pub mod history;
pub mod history_args;
pub mod history_metrics;
pub mod history_script;
pub mod http;
pub mod listen;
pub mod logging;
pub mod notify;
pub mod proxy;
pub mod reconnect;
pub mod redact;
pub mod redis_check;
pub mod redis_cluster;
pub mod redis_cluster_pipeline;
pub mod redis_config;
pub mod redis_link;
pub mod redis_sentinel;
pub mod redis_target;
pub mod redis_tls;
pub mod runtime;
pub mod serve;
pub mod shutdown;

pub use duration::parse_duration;
pub use logging::{init_logging, Escaped, LogFormat};
pub use shutdown::shutdown_signal;
