//! Raw sockets for tests that must break the rules a real client library keeps: hand-written
//! HTTP requests (slow, huge, malformed handshakes) and hand-built websocket frames (unmasked,
//! reserved bits, bad lengths), plus a reader of the server's frames that never cancels a read
//! half-way (every read is bounded by a deadline and its bytes are kept in a buffer).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// The key of RFC 6455's example handshake; any valid key does.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The mask every [`FrameBuilder`] frame uses unless told otherwise.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An upgrade request for `path` with the usual headers, plus `extra` header lines
/// (`"Name: value"`), as text ready to send.
pub fn upgrade_request(path: &str, extra: &[&str]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// A parsed HTTP answer head (and whatever body arrived with it, up to Content-Length).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// What reading from a raw connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The peer closed the TCP connection (EOF).
    Eof,
    /// The read failed (e.g. connection reset).
    Error(String),
    /// Nothing (complete) arrived before the deadline.
    TimedOut,
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// (code, reason) of a close frame; code 1005 when the payload is empty.
    pub fn close_code(&self) -> Option<(u16, String)> {
        if self.opcode != 0x8 {
            return None;
        }
        if self.payload.len() < 2 {
            return Some((1005, String::new()));
        }
        Some((
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }
}

/// A TCP connection driven by hand.
pub struct RawConn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawConn {
    /// Connects to `addr` (panics when it cannot).
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn { stream, buffer: Vec::new() }
    }

    /// Connects with a small kernel receive buffer (`bytes`), so that a client that stops
    /// reading pushes back on the server sooner.
    pub async fn connect_with_small_buffer(addr: SocketAddr, bytes: u32) -> RawConn {
        let socket = TcpSocket::new_v4().expect("tcp socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn { stream, buffer: Vec::new() }
    }

    /// Connects and upgrades `path` with a valid handshake; panics unless the answer is 101.
    pub async fn websocket(addr: SocketAddr, path: &str) -> RawConn {
        let mut conn = RawConn::connect(addr).await;
        conn.upgrade(path).await;
        conn
    }

    /// Sends a valid upgrade request for `path` and reads the 101 answer; panics otherwise.
    pub async fn upgrade(&mut self, path: &str) {
        self.send(upgrade_request(path, &[]).as_bytes()).await;
        let response = self
            .read_response(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("no answer to the upgrade of {path}: {e:?}"));
        assert_eq!(response.status, 101, "upgrade of {path}: {response:?}");
    }

    /// Writes all of `bytes`; panics on error.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes).await {
            panic!("write failed: {e}");
        }
    }

    /// Writes all of `bytes`, bounded by 10 s.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(Duration::from_secs(10), async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Closes the sending side (TCP FIN), as `printf .. | nc` does at the end of its input;
    /// the connection stays open for reading.
    pub async fn shutdown_write(&mut self) {
        if let Err(e) = self.stream.shutdown().await {
            panic!("shutdown of the write side failed: {e}");
        }
    }

    /// Reads more bytes into the buffer until `deadline`; Ok(n) with n > 0 on progress.
    async fn fill(&mut self, deadline: Instant) -> Result<usize, Read> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Err(Read::TimedOut),
            Ok(Ok(0)) => Err(Read::Eof),
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(Read::Error(e.to_string())),
        }
    }

    /// Reads an HTTP answer head and its Content-Length body.
    pub async fn read_response(&mut self, timeout: Duration) -> Result<RawResponse, Read> {
        let deadline = Instant::now() + timeout;
        let head_end = loop {
            if let Some(i) = find(&self.buffer, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(deadline).await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize =
            headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        while self.buffer.len() < head_end + length {
            if self.fill(deadline).await.is_err() {
                break;
            }
        }
        let end = (head_end + length).min(self.buffer.len());
        let body = String::from_utf8_lossy(&self.buffer[head_end..end]).into_owned();
        self.buffer.drain(..end);
        Ok(RawResponse { status, headers, body })
    }

    /// Reads one frame sent by the server (unmasked, as servers send them).
    pub async fn read_frame(&mut self, timeout: Duration) -> Result<ServerFrame, Read> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Ok(frame);
            }
            self.fill(deadline).await?;
        }
    }

    /// Reads frames until a close frame; returns its (code, reason). Data frames before it
    /// are skipped. Err when the connection ends or the timeout passes first.
    pub async fn read_close(&mut self, timeout: Duration) -> Result<(u16, String), Read> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.read_frame(left).await?;
            if let Some(close) = frame.close_code() {
                return Ok(close);
            }
        }
    }

    /// Reads until EOF or error (discarding data); Err(TimedOut) when the peer keeps the
    /// connection open past `timeout`.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Result<Read, Read> {
        let deadline = Instant::now() + timeout;
        loop {
            self.buffer.clear();
            match self.fill(deadline).await {
                Ok(_) => continue,
                Err(Read::TimedOut) => return Err(Read::TimedOut),
                Err(end) => return Ok(end),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one unmasked (or masked) frame from the front of `b`; None when incomplete.
fn parse_server_frame(b: &[u8]) -> Option<(ServerFrame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        if b.len() < at + 4 {
            return None;
        }
        let m: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        at += 4;
        Some(m)
    } else {
        None
    };
    if b.len() < at + len {
        return None;
    }
    let mut payload = b[at..at + len].to_vec();
    if let Some(m) = mask {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= m[i & 3];
        }
    }
    Some((ServerFrame { fin, opcode, payload }, at + len))
}

/// Builds one client frame byte by byte, valid or not.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    first: u8,
    payload: Vec<u8>,
    masked: bool,
    /// Overrides the length written in the header (the payload is sent as given).
    declared_len: Option<u64>,
    /// Sends only the header (for length checks that must not need the payload).
    header_only: bool,
}

impl FrameBuilder {
    /// A frame with FIN set and `opcode`.
    pub fn new(opcode: u8, payload: &[u8]) -> FrameBuilder {
        FrameBuilder {
            first: 0x80 | (opcode & 0x0F),
            payload: payload.to_vec(),
            masked: true,
            declared_len: None,
            header_only: false,
        }
    }

    pub fn text(payload: &[u8]) -> FrameBuilder {
        FrameBuilder::new(0x1, payload)
    }

    pub fn binary(payload: &[u8]) -> FrameBuilder {
        FrameBuilder::new(0x2, payload)
    }

    pub fn continuation(payload: &[u8]) -> FrameBuilder {
        FrameBuilder::new(0x0, payload)
    }

    pub fn ping(payload: &[u8]) -> FrameBuilder {
        FrameBuilder::new(0x9, payload)
    }

    /// A close frame with `code` and `reason`.
    pub fn close(code: u16, reason: &[u8]) -> FrameBuilder {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        FrameBuilder::new(0x8, &payload)
    }

    /// Clears FIN (a fragment that more frames continue).
    pub fn not_fin(mut self) -> FrameBuilder {
        self.first &= 0x7F;
        self
    }

    /// Sets reserved bits (`0x40` RSV1, `0x20` RSV2, `0x10` RSV3).
    pub fn rsv(mut self, bits: u8) -> FrameBuilder {
        self.first |= bits & 0x70;
        self
    }

    pub fn unmasked(mut self) -> FrameBuilder {
        self.masked = false;
        self
    }

    /// Writes `len` as the payload length instead of the real one.
    pub fn declared_len(mut self, len: u64) -> FrameBuilder {
        self.declared_len = Some(len);
        self
    }

    pub fn header_only(mut self) -> FrameBuilder {
        self.header_only = true;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let len = self.declared_len.unwrap_or(self.payload.len() as u64);
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let mut out = vec![self.first];
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= u16::MAX as u64 {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&MASK);
        }
        if !self.header_only {
            if self.masked {
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
            } else {
                out.extend_from_slice(&self.payload);
            }
        }
        out
    }
}

/// Concatenates several frames into one write.
pub fn frames(parts: &[FrameBuilder]) -> Vec<u8> {
    parts.iter().flat_map(FrameBuilder::build).collect()
}
