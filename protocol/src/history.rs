//! History settings: which facilities keep a per-channel history, how many messages and for how
//! long (`CRIER_HISTORY`, `CRIER_HISTORY_SIZE`, `CRIER_HISTORY_TTL`, read by both binaries).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::facility::Facility;

/// Which facilities keep a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HistoryFacilities {
    /// No history anywhere (the default): every publish takes the ws4redis path.
    #[default]
    None,
    /// `*`: every facility.
    All,
    /// A list of facilities, compared verbatim.
    Listed(BTreeSet<String>),
}

/// A bad history setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("history size must be between {min} and {max} messages")]
    Size { min: u32, max: u32 },
    #[error("history TTL must be between {min_s} s and {max_s} s")]
    Ttl { min_s: u64, max_s: u64 },
    #[error("history facility {0:?}: {1}")]
    Facility(String, crate::facility::FacilityError),
}

impl HistoryFacilities {
    /// Parses `CRIER_HISTORY`: empty for none, `*` for all, or facilities separated by commas
    /// (each trimmed; empty items skipped). A facility containing `,` cannot be listed; use `*`.
    pub fn parse(text: &str) -> Result<HistoryFacilities, HistoryError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(HistoryFacilities::None);
        }
        let mut listed = BTreeSet::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                return Ok(HistoryFacilities::All);
            }
            Facility::parse(item).map_err(|e| HistoryError::Facility(item.to_owned(), e))?;
            listed.insert(item.to_owned());
        }
        Ok(if listed.is_empty() { HistoryFacilities::None } else { HistoryFacilities::Listed(listed) })
    }

    pub fn contains(&self, facility: &Facility) -> bool {
        match self {
            HistoryFacilities::None => false,
            HistoryFacilities::All => true,
            HistoryFacilities::Listed(set) => set.contains(facility.as_str()),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, HistoryFacilities::None)
    }
}

impl fmt::Display for HistoryFacilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryFacilities::None => Ok(()),
            HistoryFacilities::All => f.write_str("*"),
            HistoryFacilities::Listed(set) => {
                f.write_str(&set.iter().map(String::as_str).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// The history configuration both binaries share. Redis memory per channel is bounded by
/// `size` messages and by `ttl` after the channel's last publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    pub facilities: HistoryFacilities,
    /// Messages kept per channel: what one reconnect can be served (the stream's `MAXLEN ~`, so
    /// up to one stream node more may be stored, never served).
    pub size: u32,
    /// How long a channel's history lives after its last publish.
    pub ttl: Duration,
}

impl HistorySettings {
    pub const DEFAULT_SIZE: u32 = 100;
    pub const MIN_SIZE: u32 = 1;
    /// Also the most messages one reconnect can be sent from one channel's history.
    pub const MAX_SIZE: u32 = 10_000;
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    pub const MIN_TTL: Duration = Duration::from_secs(1);
    pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
    /// How long a channel's epoch and offset counter (its meta key) live after its last publish:
    /// longer than any history, so that an expired history is reported as "too-old" with the
    /// same epoch, and offsets keep growing, rather than starting a new epoch.
    pub const META_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Validates the settings (`size` and `ttl` against their limits).
    pub fn new(facilities: HistoryFacilities, size: u32, ttl: Duration) -> Result<HistorySettings, HistoryError> {
        if !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&size) {
            return Err(HistoryError::Size { min: Self::MIN_SIZE, max: Self::MAX_SIZE });
        }
        if ttl < Self::MIN_TTL || ttl > Self::MAX_TTL || ttl.subsec_nanos() != 0 {
            return Err(HistoryError::Ttl { min_s: Self::MIN_TTL.as_secs(), max_s: Self::MAX_TTL.as_secs() });
        }
        Ok(HistorySettings { facilities, size, ttl })
    }

    /// No history anywhere.
    pub fn off() -> HistorySettings {
        HistorySettings { facilities: HistoryFacilities::None, size: Self::DEFAULT_SIZE, ttl: Self::DEFAULT_TTL }
    }

    /// Whether messages on `facility` go through the history.
    pub fn enabled(&self, facility: &Facility) -> bool {
        self.facilities.contains(facility)
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings::off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Facility {
        Facility::parse(name).unwrap()
    }

    #[test]
    fn facilities_list_star_and_empty() {
        assert_eq!(HistoryFacilities::parse("").unwrap(), HistoryFacilities::None);
        assert_eq!(HistoryFacilities::parse(" , ").unwrap(), HistoryFacilities::None);
        assert_eq!(HistoryFacilities::parse("*").unwrap(), HistoryFacilities::All);
        assert_eq!(HistoryFacilities::parse("chat, *").unwrap(), HistoryFacilities::All);
        let listed = HistoryFacilities::parse(" chat , game/,").unwrap();
        assert!(listed.contains(&f("chat")));
        assert!(listed.contains(&f("game/")));
        assert!(!listed.contains(&f("game")));
        assert!(!listed.contains(&f("")));
        assert_eq!(listed.to_string(), "chat,game/");
        assert!(HistoryFacilities::All.contains(&f("anything")));
        assert!(!HistoryFacilities::None.contains(&f("chat")));
        assert!(HistoryFacilities::parse(&"x".repeat(Facility::MAX_LEN + 1)).is_err());
    }

    #[test]
    fn size_and_ttl_limits() {
        let ok = |size, secs| HistorySettings::new(HistoryFacilities::All, size, Duration::from_secs(secs));
        assert!(ok(HistorySettings::DEFAULT_SIZE, HistorySettings::DEFAULT_TTL.as_secs()).is_ok());
        assert!(ok(1, 1).is_ok());
        assert!(ok(10_000, 7 * 24 * 3600).is_ok());
        assert!(matches!(ok(0, 60), Err(HistoryError::Size { .. })));
        assert!(matches!(ok(10_001, 60), Err(HistoryError::Size { .. })));
        assert!(matches!(ok(10, 0), Err(HistoryError::Ttl { .. })));
        assert!(matches!(ok(10, 7 * 24 * 3600 + 1), Err(HistoryError::Ttl { .. })));
        let frac = HistorySettings::new(HistoryFacilities::All, 10, Duration::from_millis(1500));
        assert!(matches!(frac, Err(HistoryError::Ttl { .. })));
        assert!(HistorySettings::META_TTL > HistorySettings::MAX_TTL);
    }
}
