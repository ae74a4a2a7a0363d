//! The history settings as command-line flags and environment variables, flattened into both
//! binaries' configuration so they read the same names with the same defaults and limits.

use std::time::Duration;

use protocol::{HistoryError, HistoryFacilities, HistorySettings};

use crate::parse_duration;

/// `--history`, `--history-size`, `--history-ttl` (`CRIER_HISTORY`, `CRIER_HISTORY_SIZE`,
/// `CRIER_HISTORY_TTL`). Both binaries must be given the same values: webserver and wsserver
/// append to the history of a facility, wsserver reads it.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Facilities whose channels keep a history for recovery: comma-separated facility names,
    /// `*` for all, empty for none (the default: every publish is a plain ws4redis PUBLISH).
    #[arg(long = "history", env = "CRIER_HISTORY", default_value = "")]
    pub facilities: String,

    /// Messages kept per channel history (1 to 10000); also the most a reconnecting socket can
    /// be sent per channel.
    #[arg(long = "history-size", env = "CRIER_HISTORY_SIZE", default_value_t = HistorySettings::DEFAULT_SIZE)]
    pub size: u32,

    /// How long a channel's history lives after its last publish (1s to 7 days, whole seconds).
    #[arg(long = "history-ttl", env = "CRIER_HISTORY_TTL", default_value = "5m", value_parser = parse_duration)]
    pub ttl: Duration,
}

impl HistoryArgs {
    /// Validates the flags into settings.
    pub fn settings(&self) -> Result<HistorySettings, HistoryError> {
        HistorySettings::new(HistoryFacilities::parse(&self.facilities)?, self.size, self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        history: HistoryArgs,
    }

    #[test]
    fn defaults_are_off_100_messages_5_minutes() {
        let cli = Cli::parse_from(["x"]);
        let s = cli.history.settings().unwrap();
        assert!(s.facilities.is_none());
        assert_eq!(s.size, 100);
        assert_eq!(s.ttl, Duration::from_secs(300));
    }

    #[test]
    fn values_are_validated() {
        let cli = Cli::parse_from(["x", "--history", "chat,game", "--history-size", "5", "--history-ttl", "30s"]);
        let s = cli.history.settings().unwrap();
        assert!(s.enabled(&protocol::Facility::parse("game").unwrap()));
        assert_eq!((s.size, s.ttl), (5, Duration::from_secs(30)));
        assert!(Cli::parse_from(["x", "--history-size", "0"]).history.settings().is_err());
        assert!(Cli::parse_from(["x", "--history-ttl", "1500ms"]).history.settings().is_err());
        assert!(Cli::parse_from(["x", "--history-ttl", "8h"]).history.settings().is_ok());
    }
}
