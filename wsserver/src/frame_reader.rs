//! Strict reading of client frames into whole messages. fastwebsockets' reader accepts
//! unmasked client frames, does not cap fragmented messages and reserves the declared length
//! before the data arrives, so wsserver reads frames itself: every violation becomes a
//! [`Violation`] carrying the close code to answer with, and memory never exceeds the limit.
//!
//! The reader is cancel-safe (all state lives in the struct) but is still owned by one task.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::frame::OpCode;

/// A whole message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client's close: its code (if any) and reason.
    Close(Option<u16>),
}

/// A protocol violation and the close code it is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the TCP connection or the read failed.
    Gone,
    Violation(Violation),
}

fn violation(code: u16, reason: &'static str) -> ReadError {
    ReadError::Violation(Violation { code, reason })
}

const PROTOCOL: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// Buffers above this capacity are released once a message is complete, so an idle socket
/// holds almost nothing.
const KEEP_CAPACITY: usize = 1024;

/// A validated frame header.
struct FrameHeader {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

/// Reads and validates frames from one client.
pub struct FrameReader {
    buffer: BytesMut,
    max_message: usize,
    /// A fragmented message being assembled: its opcode and the bytes so far.
    partial: Option<(OpCode, BytesMut)>,
    /// Bytes of an incomplete UTF-8 sequence at the end of `partial` already validated.
    utf8_checked: usize,
}

impl FrameReader {
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader { buffer: BytesMut::new(), max_message, partial: None, utf8_checked: 0 }
    }

    /// A reader that starts with `read_ahead`: bytes already read from the socket (what the
    /// client sent right behind its upgrade request).
    pub fn with_read_ahead(max_message: usize, read_ahead: &[u8]) -> FrameReader {
        let mut reader = FrameReader::new(max_message);
        reader.buffer.extend_from_slice(read_ahead);
        reader
    }

    /// What the reader holds between messages, for the live hand-off
    /// ([`crate::handoff::state`]): unparsed bytes, and the opcode and bytes of a fragmented
    /// message being assembled.
    pub fn export(&self) -> (Vec<u8>, Option<(u8, Vec<u8>)>) {
        let partial = self.partial.as_ref().map(|(op, bytes)| (*op as u8, bytes.to_vec()));
        (self.buffer.to_vec(), partial)
    }

    /// A reader resuming what [`FrameReader::export`] gave, in another process. `None` when
    /// the partial message's opcode is not a data opcode.
    pub fn import(max_message: usize, buffer: &[u8], partial: Option<(u8, &[u8])>) -> Option<FrameReader> {
        let mut reader = FrameReader::with_read_ahead(max_message, buffer);
        if let Some((op, bytes)) = partial {
            let op = OpCode::from_u8(op).filter(|op| matches!(op, OpCode::Text | OpCode::Binary))?;
            reader.partial = Some((op, BytesMut::from(bytes)));
            // Re-validated from the start: the count of checked bytes is not carried.
            reader.utf8_checked = 0;
        }
        Some(reader)
    }

    /// Reads until one whole message (or control frame) is available.
    pub async fn next_message<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Message, ReadError> {
        loop {
            if let Some(message) = self.try_parse()? {
                if self.buffer.is_empty() && self.buffer.capacity() > KEEP_CAPACITY {
                    self.buffer = BytesMut::new();
                }
                return Ok(message);
            }
            if self.buffer.capacity() - self.buffer.len() < 64 {
                self.buffer.reserve(128);
            }
            match io.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }

    /// Parses one frame out of the buffer if it is complete; returns a message when the frame
    /// completes one.
    fn try_parse(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            let Some(FrameHeader { fin, opcode, mask, header_len, payload_len }) = self.parse_header()? else {
                return Ok(None);
            };
            if self.buffer.len() < header_len + payload_len {
                self.buffer.reserve(header_len + payload_len - self.buffer.len());
                return Ok(None);
            }
            self.buffer.advance(header_len);
            let mut payload = self.buffer.split_to(payload_len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            if let Some(message) = self.on_frame(fin, opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Validates a frame header; `None` when more bytes are needed.
    fn parse_header(&self) -> Result<Option<FrameHeader>, ReadError> {
        let b = &self.buffer[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(violation(PROTOCOL, "reserved bits set"));
        }
        let opcode = OpCode::from_u8(b[0] & 0x0F).ok_or_else(|| violation(PROTOCOL, "unknown opcode"))?;
        if b[1] & 0x80 == 0 {
            return Err(violation(PROTOCOL, "client frames must be masked"));
        }
        let (extra, len_code) = match b[1] & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(n as usize)),
        };
        if opcode.is_control() {
            if !fin {
                return Err(violation(PROTOCOL, "fragmented control frame"));
            }
            if len_code.is_none() {
                return Err(violation(PROTOCOL, "control frame over 125 bytes"));
            }
        }
        let header_len = 2 + extra + 4;
        if b.len() < header_len {
            return Ok(None);
        }
        let payload_len = match extra {
            2 => u16::from_be_bytes([b[2], b[3]]) as usize,
            8 => {
                let n = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(violation(PROTOCOL, "frame length has its top bit set"));
                }
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            _ => len_code.unwrap_or(0),
        };
        let already = self.partial.as_ref().map_or(0, |(_, p)| p.len());
        if !opcode.is_control() && already.saturating_add(payload_len) > self.max_message {
            return Err(violation(TOO_BIG, "message too big"));
        }
        let mask = b[2 + extra..header_len].try_into().expect("4 bytes");
        Ok(Some(FrameHeader { fin, opcode, mask, header_len, payload_len }))
    }

    fn on_frame(&mut self, fin: bool, opcode: OpCode, payload: BytesMut) -> Result<Option<Message>, ReadError> {
        match opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Message::Pong)),
            OpCode::Close => close_message(&payload).map(Some),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(violation(PROTOCOL, "new message inside a fragmented one"));
                }
                if fin {
                    return finish(opcode, payload).map(Some);
                }
                self.utf8_checked = 0;
                self.partial = Some((opcode, payload));
                self.check_partial_utf8()?;
                Ok(None)
            }
            OpCode::Continuation => {
                let Some((_, partial)) = self.partial.as_mut() else {
                    return Err(violation(PROTOCOL, "continuation without a message"));
                };
                partial.extend_from_slice(&payload);
                if fin {
                    let (opcode, whole) = self.partial.take().expect("checked above");
                    return finish(opcode, whole).map(Some);
                }
                self.check_partial_utf8()?;
                Ok(None)
            }
        }
    }

    /// Fails fast on invalid UTF-8 in an unfinished text message (a sequence cut at the end of
    /// a fragment is fine).
    fn check_partial_utf8(&mut self) -> Result<(), ReadError> {
        let Some((OpCode::Text, partial)) = self.partial.as_ref() else { return Ok(()) };
        let unchecked = &partial[self.utf8_checked..];
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.utf8_checked = partial.len(),
            Err(e) if e.error_len().is_none() => self.utf8_checked += e.valid_up_to(),
            Err(_) => return Err(violation(INVALID_DATA, "invalid UTF-8 in text message")),
        }
        Ok(())
    }
}

fn finish(opcode: OpCode, payload: BytesMut) -> Result<Message, ReadError> {
    if opcode == OpCode::Text {
        if std::str::from_utf8(&payload).is_err() {
            return Err(violation(INVALID_DATA, "invalid UTF-8 in text message"));
        }
        return Ok(Message::Text(payload.freeze()));
    }
    Ok(Message::Binary(payload.freeze()))
}

fn close_message(payload: &[u8]) -> Result<Message, ReadError> {
    match payload.len() {
        0 => Ok(Message::Close(None)),
        1 => Err(violation(PROTOCOL, "close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(violation(PROTOCOL, "invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(violation(INVALID_DATA, "invalid UTF-8 in close reason"));
            }
            Ok(Message::Close(Some(code)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![first];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    async fn read(bytes: Vec<u8>, max: usize) -> Vec<Result<Message, u16>> {
        let mut r = FrameReader::new(max);
        let mut io = &bytes[..];
        let mut out = Vec::new();
        loop {
            match r.next_message(&mut io).await {
                Ok(m) => out.push(Ok(m)),
                Err(ReadError::Gone) => return out,
                Err(ReadError::Violation(v)) => {
                    out.push(Err(v.code));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn reads_whole_and_fragmented_messages() {
        let mut b = masked(0x81, b"hello");
        b.extend(masked(0x01, "h\u{e9}".as_bytes().split_at(2).0));
        b.extend(masked(0x89, b"p"));
        b.extend(masked(0x80, "h\u{e9}".as_bytes().split_at(2).1));
        b.extend(masked(0x82, &[0xff, 0]));
        let got = read(b, 100).await;
        assert_eq!(got[0], Ok(Message::Text(Bytes::from_static(b"hello"))));
        assert_eq!(got[1], Ok(Message::Ping(Bytes::from_static(b"p"))));
        assert_eq!(got[2], Ok(Message::Text(Bytes::from("h\u{e9}"))));
        assert_eq!(got[3], Ok(Message::Binary(Bytes::from_static(&[0xff, 0]))));
    }

    #[tokio::test]
    async fn violations_get_their_close_codes() {
        assert_eq!(read(vec![0x81, 0x01, b'a'], 100).await, [Err(1002)], "unmasked");
        assert_eq!(read(masked(0xC1, b"a"), 100).await, [Err(1002)], "rsv");
        assert_eq!(read(masked(0x83, b"a"), 100).await, [Err(1002)], "opcode");
        assert_eq!(read(masked(0x09, b"a"), 100).await, [Err(1002)], "fragmented ping");
        assert_eq!(read(masked(0x89, &[0; 126]), 1000).await, [Err(1002)], "big ping");
        assert_eq!(read(masked(0x88, &[0x03, 0xEC]), 100).await, [Err(1002)], "close 1004");
        assert_eq!(read(masked(0x81, &[0xff]), 100).await, [Err(1007)], "utf8");
        let mut b = masked(0x01, &[b'a', 0xff]);
        b.extend(masked(0x80, b"b"));
        assert_eq!(read(b, 100).await, [Err(1007)], "utf8 in fragment");
        assert_eq!(read(masked(0x82, &[0; 101]), 100).await, [Err(1009)], "big");
        let mut b = masked(0x02, &[0; 60]);
        b.extend(masked(0x80, &[0; 60]));
        assert_eq!(read(b, 100).await, [Err(1009)], "big in fragments");
        assert_eq!(read(masked(0x80, b"x"), 100).await, [Err(1002)], "lone continuation");
    }

    #[tokio::test]
    async fn declared_length_is_refused_before_allocation() {
        let mut b = vec![0x82, 0x80 | 127];
        b.extend_from_slice(&(1u64 << 40).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        assert_eq!(read(b, 65536).await, [Err(1009)]);
    }
}
