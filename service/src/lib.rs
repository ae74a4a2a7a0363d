//! Runtime pieces both Crier binaries share: shutdown signals, logging, log-safe text,
//! human durations and systemd readiness notification.

pub mod duration;
pub mod http;
pub mod logging;
pub mod notify;
pub mod redact;
pub mod redis_link;
pub mod shutdown;

pub use duration::parse_duration;
pub use logging::{init_logging, LogFormat, Escaped};
pub use shutdown::shutdown_signal;
