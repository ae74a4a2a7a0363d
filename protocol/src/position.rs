//! A message's place in its channel's history: the history's epoch and the message's offset.

use std::fmt;
use std::str::FromStr;

/// Names one incarnation of a channel's history. A new epoch starts whenever the history was lost
/// (Redis restarted without persistence, key evicted or expired), so an offset is only meaningful
/// with its epoch. Random, written as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(u64);

/// The epoch text was not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an epoch is 16 hex digits")]
pub struct EpochError;

impl Epoch {
    /// Length of the text form.
    pub const TEXT_LEN: usize = 16;

    pub fn from_u64(value: u64) -> Epoch {
        Epoch(value)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses exactly 16 hex digits (either case; written back in lower case).
    pub fn parse(text: &str) -> Result<Epoch, EpochError> {
        Epoch::parse_bytes(text.as_bytes())
    }

    /// Like [`Epoch::parse`], for bytes read from Redis.
    pub fn parse_bytes(text: &[u8]) -> Result<Epoch, EpochError> {
        if text.len() != Self::TEXT_LEN || !text.iter().all(u8::is_ascii_hexdigit) {
            return Err(EpochError);
        }
        let text = std::str::from_utf8(text).map_err(|_| EpochError)?;
        u64::from_str_radix(text, 16).map(Epoch).map_err(|_| EpochError)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Epoch {
    type Err = EpochError;
    fn from_str(s: &str) -> Result<Epoch, EpochError> {
        Epoch::parse(s)
    }
}

impl serde::Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where a message sits: offsets start at 1 for the first message of an epoch and only grow;
/// offset 0 means "before the first message".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: Epoch,
    pub offset: u64,
}

impl Position {
    /// Parses one `recover` token, `<epoch>:<offset>`; `None` for anything else.
    pub fn parse_token(token: &str) -> Option<Position> {
        let (epoch, offset) = token.trim().split_once(':')?;
        let epoch = Epoch::parse(epoch).ok()?;
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Position { epoch, offset: offset.parse().ok()? })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_sixteen_hex_digits() {
        let e = Epoch::parse("3F9A1C07B2E4D611").unwrap();
        assert_eq!(e.to_string(), "3f9a1c07b2e4d611");
        assert_eq!(Epoch::from_u64(1).to_string(), "0000000000000001");
        for bad in ["", "3f9a1c07b2e4d61", "3f9a1c07b2e4d6111", "3f9a1c07b2e4d61g", "+f9a1c07b2e4d611"] {
            assert_eq!(Epoch::parse(bad), Err(EpochError), "{bad:?}");
        }
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let p = Position::parse_token("3f9a1c07b2e4d611:42").unwrap();
        assert_eq!(p.offset, 42);
        assert_eq!(p.to_string(), "3f9a1c07b2e4d611:42");
        for bad in [
            "",
            ":",
            "3f9a1c07b2e4d611",
            "3f9a1c07b2e4d611:",
            "3f9a1c07b2e4d611:-1",
            "3f9a1c07b2e4d611:+1",
            "3f9a1c07b2e4d611:99999999999999999999",
            "x:1",
            "3f9a1c07b2e4d611:1:2",
        ] {
            assert_eq!(Position::parse_token(bad), None, "{bad:?}");
        }
    }
}
