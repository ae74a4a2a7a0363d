//! Logging setup (tracing-subscriber, filtered by `RUST_LOG`) and escaping of untrusted text.

use std::fmt;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event without colours or timestamps when run under systemd (journald adds
    /// its own), with timestamps otherwise.
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter without `RUST_LOG`: Crier's own `info`, and only errors from redis-rs, whose
/// cluster client logs a warning per failed reconnect attempt (dozens a second during a
/// failover) where Crier logs the state change once.
pub const DEFAULT_FILTER: &str = "info,redis=error";

/// Installs the global subscriber. `RUST_LOG` filters (default [`DEFAULT_FILTER`]).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text if under_journald => builder.without_time().with_ansi(false).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// Displays untrusted text (paths, header values, names) with control characters escaped, so CR,
/// LF and ANSI escapes from clients cannot forge log lines. Truncated at 200 characters.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == 200 {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(Escaped("a\r\nb\u{1b}[31m").to_string(), "a\\r\\nb\\u{1b}[31m");
        assert_eq!(Escaped(&"x".repeat(300)).to_string().chars().count(), 201);
    }
}
