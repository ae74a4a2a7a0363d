//! Encoding of server-to-client frames. A message is encoded once into [`Bytes`] (header and
//! payload together) and the same bytes are shared by every recipient.

use bytes::{BufMut, Bytes, BytesMut};

/// Websocket opcodes used by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    pub fn from_u8(code: u8) -> Option<OpCode> {
        Some(match code {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// One unmasked, final frame.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x80 | opcode as u8);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
    out.freeze()
}

/// A text frame: everything Crier delivers goes out as text, as in ws4redis.
pub fn text(payload: &[u8]) -> Bytes {
    encode(OpCode::Text, payload)
}

/// A close frame with a status code and a reason (cut to fit the 125-byte control limit).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OpCode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(&text(b"hi")[..], b"\x81\x02hi");
        let f = text(&[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        let f = encode(OpCode::Binary, &vec![0; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(f.len(), 70_010);
        let c = close(1001, &"é".repeat(100));
        assert!(c.len() <= 127);
    }
}
