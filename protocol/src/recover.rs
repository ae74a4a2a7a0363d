//! The `recover` query key: a socket's request to recover, with the positions it already has.

use crate::flags::decode_query_key;
use crate::position::Position;

/// What a socket that opted in to recovery sent: no positions on its first connection, one
/// `<epoch>:<offset>` token per channel it has seen on a reconnection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recover {
    pub positions: Vec<Position>,
}

impl Recover {
    /// Most tokens read from one query; later ones are ignored (a socket subscribes to at most a
    /// handful of channels per facility, plus one per group).
    pub const MAX_POSITIONS: usize = 64;

    /// Finds the `recover` key in a raw query string (keys matched as flags are: trimmed,
    /// case-insensitive, percent-decoded). `None` when absent: the socket gets ws4redis frames.
    /// Malformed tokens are dropped, never an error; a repeated key adds its tokens.
    pub fn from_query(query: &str) -> Option<Recover> {
        let mut found: Option<Recover> = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !decode_query_key(key).trim().eq_ignore_ascii_case("recover") {
                continue;
            }
            let recover = found.get_or_insert_with(Recover::default);
            for token in decode_query_key(value).split(',') {
                if recover.positions.len() >= Self::MAX_POSITIONS {
                    break;
                }
                if let Some(p) = Position::parse_token(token) {
                    if !recover.positions.contains(&p) {
                        recover.positions.push(p);
                    }
                }
            }
        }
        found
    }

    /// The client's offset in `epoch`, if it sent one (the highest, if it sent several).
    pub fn offset_in(&self, epoch: crate::position::Epoch) -> Option<u64> {
        self.positions.iter().filter(|p| p.epoch == epoch).map(|p| p.offset).max()
    }

    /// Whether the client sent any position (a reconnection).
    pub fn is_reconnect(&self) -> bool {
        !self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Epoch;

    #[test]
    fn absent_empty_and_tokens() {
        assert_eq!(Recover::from_query("subscribe-broadcast"), None);
        assert_eq!(Recover::from_query("subscribe-broadcast&recovered"), None);
        assert_eq!(Recover::from_query("subscribe-broadcast&recover"), Some(Recover::default()));
        assert_eq!(Recover::from_query(" Recover =&echo"), Some(Recover::default()));
        let r = Recover::from_query("recover=3f9a1c07b2e4d611:42,8be0aa13c9f2d470:7&subscribe-user").unwrap();
        assert_eq!(r.positions.len(), 2);
        assert_eq!(r.offset_in(Epoch::parse("8be0aa13c9f2d470").unwrap()), Some(7));
        assert_eq!(r.offset_in(Epoch::from_u64(5)), None);
        assert!(r.is_reconnect());
    }

    #[test]
    fn encoded_separators_and_bad_tokens() {
        let r = Recover::from_query("recover=3f9a1c07b2e4d611%3A42%2Cjunk,,x:1,3f9a1c07b2e4d611:-1").unwrap();
        assert_eq!(r.positions, vec![Position::parse_token("3f9a1c07b2e4d611:42").unwrap()]);
        let r = Recover::from_query("recover=garbage%zz").unwrap();
        assert!(!r.is_reconnect());
    }

    #[test]
    fn token_count_is_bounded() {
        let tokens: Vec<String> = (0..200).map(|i| format!("{:016x}:{i}", i + 1)).collect();
        let r = Recover::from_query(&format!("recover={}", tokens.join(","))).unwrap();
        assert_eq!(r.positions.len(), Recover::MAX_POSITIONS);
    }
}
