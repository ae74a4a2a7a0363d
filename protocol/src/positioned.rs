//! The Redis pub/sub payload of a message that has a place in its channel's history.
//!
//! Layout (bytes): `NUL "crier:pos:" <epoch: 16 hex> ":" <offset: decimal> NUL <payload>`, e.g.
//! `\0crier:pos:3f9a1c07b2e4d611:42\0hello`. The payload follows verbatim, so any bytes are
//! safe. A leading NUL never starts a ws4redis text message, so a plain payload is never taken
//! for a positioned one unless it carries this exact header; anything that does not parse
//! completely is treated as a plain payload. A subscriber of the channel that is not a Crier
//! wsserver (for example ws4redis' own uWSGI server on the same Redis) sees these bytes as they
//! are: history facilities are meant to be served by Crier's wsserver.

use crate::position::{Epoch, Position};

/// What every positioned payload starts with.
pub const MAGIC: &[u8] = b"\0crier:pos:";

/// A pub/sub payload, split into its position (if any) and the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positioned<'a> {
    pub position: Option<Position>,
    pub payload: &'a [u8],
}

/// Splits a pub/sub payload. Never fails: a payload without a complete header is plain.
pub fn decode(raw: &[u8]) -> Positioned<'_> {
    let plain = Positioned { position: None, payload: raw };
    let Some(rest) = raw.strip_prefix(MAGIC) else { return plain };
    let Some((epoch, rest)) = rest.split_at_checked(Epoch::TEXT_LEN) else { return plain };
    let (Ok(epoch), Some(rest)) = (Epoch::parse_bytes(epoch), rest.strip_prefix(b":")) else { return plain };
    let Some(end) = rest.iter().take(21).position(|&b| b == 0) else { return plain };
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return plain;
    }
    let Some(offset) = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()) else { return plain };
    Positioned { position: Some(Position { epoch, offset }), payload: &rest[end + 1..] }
}

/// Builds a positioned payload (the history script builds the same bytes inside Redis; this is
/// for tests and tools).
pub fn encode(position: Position, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 40 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(format!("{}:{}", position.epoch, position.offset).as_bytes());
    out.push(0);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_any_payload() {
        let p = Position { epoch: Epoch::parse("3f9a1c07b2e4d611").unwrap(), offset: 42 };
        let raw = encode(p, b"hello");
        assert_eq!(raw, b"\0crier:pos:3f9a1c07b2e4d611:42\0hello");
        assert_eq!(decode(&raw), Positioned { position: Some(p), payload: b"hello" });
        let binary = encode(p, b"\0\xff\0crier:pos:");
        assert_eq!(decode(&binary).payload, b"\0\xff\0crier:pos:");
        assert_eq!(decode(&encode(p, b"")).payload, b"");
    }

    #[test]
    fn plain_payloads_stay_plain() {
        for raw in [
            &b"hello"[..],
            b"",
            b"\0crier:pos:",
            b"\0crier:pos:3f9a1c07b2e4d611",
            b"\0crier:pos:3f9a1c07b2e4d611:42",
            b"\0crier:pos:3f9a1c07b2e4d611:\0x",
            b"\0crier:pos:3f9a1c07b2e4d611:4a\0x",
            b"\0crier:pos:3f9a1c07b2e4d61x:4\0x",
            b"\0crier:pos:3f9a1c07b2e4d611:999999999999999999999\0x",
        ] {
            assert_eq!(decode(raw), Positioned { position: None, payload: raw }, "{raw:?}");
        }
    }
}
