//! A minimal websocket client (RFC 6455, client side), written for cost rather than generality:
//! one task owns the socket, frames are parsed in place from one read buffer, the receive time
//! is read once per `read()` for every frame in it, and pings are answered inline. Tens of
//! thousands of these share two cores with the server being measured, so the client must stay
//! far cheaper than what it measures. It does not check `Sec-WebSocket-Accept` (a load tool
//! talking to a server it was pointed at) and never sends data frames.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest message accepted; a longer frame ends the connection as a protocol error.
const MAX_MESSAGE: usize = 16 << 20;
/// Largest handshake answer.
const MAX_HEADERS: usize = 16 << 10;

/// Where clients connect: the resolved address plus the Host header and request path.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path and query, e.g. `/ws/f?subscribe-broadcast`.
    pub path: String,
}

impl Target {
    /// Parses `ws://host[:port]/path?query` (no TLS: point it at nginx's plain listener or the
    /// server itself).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?)
            }
            _ => (authority.to_owned(), 80),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Target { host, port, path: path.to_owned() })
    }

    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        tokio::net::lookup_host((self.host.trim_matches(|c| c == '[' || c == ']'), self.port))
            .await
            .map_err(|e| format!("{}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.host))
    }

    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a connection attempt failed (the report counts each kind).
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    /// The server answered the upgrade with something other than 101.
    Refused(String),
}

impl ConnectError {
    /// A short class name for counting.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Timeout => "timeout".into(),
            ConnectError::Io(e) => format!("io: {}", e.kind()),
            ConnectError::Refused(status) => format!("http {status}"),
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => write!(f, "timed out"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Refused(s) => write!(f, "upgrade refused: {s}"),
        }
    }
}

/// An open websocket and the bytes that arrived after the 101 answer.
pub struct Socket {
    stream: TcpStream,
    buf: BytesMut,
}

/// Connects and upgrades within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    target: &Target,
    path: &str,
    extra_headers: &str,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    match tokio::time::timeout(timeout, connect_inner(addr, source, target, path, extra_headers)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

async fn connect_inner(
    addr: SocketAddr,
    source: Option<IpAddr>,
    target: &Target,
    path: &str,
    extra_headers: &str,
) -> Result<Socket, ConnectError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(ConnectError::Io)?;
    if let Some(ip) = source {
        socket.set_reuseaddr(true).map_err(ConnectError::Io)?;
        socket.bind(SocketAddr::new(ip, 0)).map_err(ConnectError::Io)?;
    }
    let mut stream = socket.connect(addr).await.map_err(ConnectError::Io)?;
    stream.set_nodelay(true).map_err(ConnectError::Io)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n",
        target.host_header()
    );
    stream.write_all(request.as_bytes()).await.map_err(ConnectError::Io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEADERS {
            return Err(ConnectError::Refused("oversized answer".into()));
        }
        if stream.read_buf(&mut buf).await.map_err(ConnectError::Io)? == 0 {
            return Err(ConnectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    };
    let status_line = buf[..end].split(|b| *b == b'\r').next().unwrap_or_default();
    let status = String::from_utf8_lossy(status_line).split_whitespace().nth(1).unwrap_or("?").to_owned();
    if status != "101" {
        return Err(ConnectError::Refused(status));
    }
    buf.advance(end);
    Ok(Socket { stream, buf })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How a socket ended.
#[derive(Debug)]
pub enum Ended {
    /// The server sent a close frame with this code (1005 without one).
    Closed(u16),
    /// EOF without a close frame.
    Eof,
    Error(String),
    /// The caller asked to stop.
    Stopped,
}

impl Ended {
    pub fn kind(&self) -> String {
        match self {
            Ended::Closed(code) => format!("close {code}"),
            Ended::Eof => "eof".into(),
            Ended::Error(e) => format!("error: {e}"),
            Ended::Stopped => "stopped".into(),
        }
    }
}

/// A parsed frame header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// Parses a frame header at the start of `buf`; None when more bytes are needed.
fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (mut header_len, payload_len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize),
        n => (2, n as usize),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(header_len..header_len + 4)?.try_into().ok()?;
        header_len += 4;
        Some(m)
    } else {
        None
    };
    Some(Header { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, mask, header_len, payload_len })
}

/// A masked client frame (pong or close), as RFC 6455 requires of clients.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let len = payload.len().min(125);
    let mut f = Vec::with_capacity(6 + len);
    f.push(0x80 | opcode);
    f.push(0x80 | len as u8);
    f.extend_from_slice(&MASK);
    f.extend(payload[..len].iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

impl Socket {
    /// Reads until the socket ends or `stop` resolves, calling `on_message(payload, received_us)`
    /// for each complete text or binary message. `received_us` is taken once per read.
    pub async fn run(
        mut self,
        mut on_message: impl FnMut(&[u8], u64),
        stop: impl std::future::Future<Output = ()>,
    ) -> Ended {
        tokio::pin!(stop);
        let mut fragments: Option<Vec<u8>> = None;
        let mut now = crate::message::now_us();
        loop {
            while let Some(h) = parse_header(&self.buf) {
                if h.payload_len > MAX_MESSAGE {
                    return Ended::Error("frame too large".into());
                }
                let total = h.header_len + h.payload_len;
                if self.buf.len() < total {
                    self.buf.reserve(total - self.buf.len());
                    break;
                }
                let payload = &mut self.buf[h.header_len..total];
                if let Some(mask) = h.mask {
                    payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
                }
                match h.opcode {
                    0x1 | 0x2 if h.fin && fragments.is_none() => on_message(payload, now),
                    0x1 | 0x2 => fragments = Some(payload.to_vec()),
                    0x0 => match fragments.as_mut() {
                        Some(f) if f.len() + payload.len() <= MAX_MESSAGE => {
                            f.extend_from_slice(payload);
                            if h.fin {
                                on_message(f, now);
                                fragments = None;
                            }
                        }
                        _ => return Ended::Error("bad continuation frame".into()),
                    },
                    0x8 => {
                        let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                        let reply = client_frame(0x8, &code.to_be_bytes());
                        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.write_all(&reply)).await;
                        return Ended::Closed(code);
                    }
                    0x9 => {
                        let pong = client_frame(0xA, payload);
                        if let Err(e) = self.stream.write_all(&pong).await {
                            return Ended::Error(e.to_string());
                        }
                    }
                    0xA => {}
                    op => return Ended::Error(format!("unknown opcode {op}")),
                }
                self.buf.advance(total);
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            tokio::select! {
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) => return Ended::Eof,
                    Ok(_) => now = crate::message::now_us(),
                    Err(e) => return Ended::Error(e.to_string()),
                },
                () = &mut stop => return Ended::Stopped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://127.0.0.1:8081/ws/f?subscribe-broadcast").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 8081, "/ws/f?subscribe-broadcast"));
        let t = Target::parse("ws://example.com").unwrap();
        assert_eq!((t.port, t.path.as_str(), t.host_header().as_str()), (80, "/", "example.com"));
        assert!(Target::parse("wss://x/").is_err());
        assert!(Target::parse("ws://x:notaport/").is_err());
    }

    #[test]
    fn parses_frame_headers() {
        assert_eq!(parse_header(&[0x81]), None);
        let h = parse_header(&[0x81, 5, b'h']).unwrap();
        assert_eq!((h.fin, h.opcode, h.header_len, h.payload_len), (true, 1, 2, 5));
        let h = parse_header(&[0x01, 126, 0x01, 0x00]).unwrap();
        assert_eq!((h.fin, h.header_len, h.payload_len), (false, 4, 256));
        assert_eq!(parse_header(&[0x82, 127, 0, 0, 0]), None);
        let h = parse_header(&[0x89, 0x80 | 1, 1, 2, 3, 4, 9]).unwrap();
        assert_eq!((h.opcode, h.mask, h.header_len), (9, Some([1, 2, 3, 4]), 6));
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(0xA, b"ab");
        assert_eq!(&f[..2], &[0x8A, 0x82]);
        assert_eq!(f[6] ^ f[2], b'a');
        assert_eq!(f[7] ^ f[3], b'b');
    }
}
