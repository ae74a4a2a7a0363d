//! The reconnect policy, which lives in `service` so every Redis connection of both binaries
//! shares it; re-exported under the name wsserver's modules use.

pub use service::reconnect::Backoff;
