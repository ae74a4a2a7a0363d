//! The published message: `PP.SSSSSSSSSS.CCCCCCC.TTTTTTTTTTTTTTTT` (phase, sequence number,
//! channel index, send time in microseconds since the Unix epoch, all zero-padded decimal), then
//! `.` and `x` padding up to the requested size. Plain ASCII, so it travels unchanged as a JSON
//! string, a Redis payload or an HTTP body, and fixed offsets make decoding cheap.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of the header; smaller `--size` values are raised to it.
pub const HEADER_LEN: usize = 38;
/// Phases are numbered 0..MAX_PHASES.
pub const MAX_PHASES: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub phase: u32,
    pub seq: u64,
    pub channel: u32,
    pub sent_us: u64,
}

/// Microseconds since the Unix epoch: the one clock publisher and subscriber processes share.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut s = format!(
        "{:02}.{:010}.{:07}.{:016}",
        stamp.phase % MAX_PHASES,
        stamp.seq % 10_000_000_000,
        stamp.channel % 10_000_000,
        stamp.sent_us % 10_000_000_000_000_000
    );
    if size > HEADER_LEN {
        s.push('.');
        s.extend(std::iter::repeat_n('x', size - HEADER_LEN - 1));
    }
    s
}

fn digits(field: &[u8]) -> Option<u64> {
    field.iter().try_fold(0u64, |acc, b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

/// Reads the header of a received message; None for anything that is not one of ours.
pub fn decode(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < HEADER_LEN || payload[2] != b'.' || payload[13] != b'.' || payload[21] != b'.' {
        return None;
    }
    Some(Stamp {
        phase: digits(&payload[0..2])? as u32,
        seq: digits(&payload[3..13])?,
        channel: digits(&payload[14..21])? as u32,
        sent_us: digits(&payload[22..38])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let stamp = Stamp { phase: 3, seq: 123_456, channel: 9_999, sent_us: 1_764_000_000_123_456 };
        let m = encode(stamp, 64);
        assert_eq!(m.len(), 64);
        assert!(m.starts_with("03.0000123456.0009999.1764000000123456.xx"));
        assert_eq!(decode(m.as_bytes()), Some(stamp));
        assert_eq!(encode(stamp, 10).len(), HEADER_LEN);
        assert_eq!(encode(stamp, 39).len(), 39);
        assert_eq!(decode(encode(stamp, 0).as_bytes()), Some(stamp));
    }

    #[test]
    fn foreign_payloads_are_refused() {
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(b"--heartbeat--"), None);
        let mut m = encode(Stamp { phase: 1, seq: 1, channel: 1, sent_us: 1 }, 64).into_bytes();
        m[5] = b'z';
        assert_eq!(decode(&m), None);
    }

    #[test]
    fn clock_is_plausible() {
        assert!(now_us() > 1_600_000_000_000_000);
    }
}
