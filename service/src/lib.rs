//! Runtime pieces both Crier binaries share: shutdown signals, logging, log-safe text,
//! human durations, systemd readiness notification and the tokio runtime.

pub mod duration;
pub mod http;
pub mod logging;
pub mod notify;
pub mod redact;
pub mod redis_link;
pub mod runtime;
pub mod shutdown;

pub use duration::parse_duration;
pub use logging::{init_logging, Escaped, LogFormat};
pub use shutdown::shutdown_signal;
