//! Runtime pieces both Crier binaries share: listeners (TCP, unix sockets, systemd's), the
//! accept-and-serve loop, the Redis reconnect policy and command connection, shutdown signals,
//! logging, log-safe text and masking, human durations, the wall clock, trusted proxies,
//! systemd readiness notification and the tokio runtime.

pub mod clock;
pub mod duration;
pub mod http;
pub mod listen;
pub mod logging;
pub mod notify;
pub mod proxy;
pub mod reconnect;
pub mod redact;
pub mod redis_link;
pub mod runtime;
pub mod serve;
pub mod shutdown;

pub use duration::parse_duration;
pub use logging::{init_logging, Escaped, LogFormat};
pub use shutdown::shutdown_signal;
