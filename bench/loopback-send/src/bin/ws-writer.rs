//! The least a websocket fan-out server can do: one thread, one epoll loop, one `write` of a
//! prebuilt frame per subscriber per message, nothing else. It speaks just enough HTTP/1.1 for
//! `loadgen` and nginx: `GET` with `Upgrade: websocket` (any path) makes the connection a
//! subscriber of the one channel there is; `POST` (any path, `Content-Length` body) writes the
//! body as one text frame to every subscriber, then answers `200` (as Nchan does, after the
//! fan-out); any other request gets `200 ok`. Connections are kept alive.
//!
//! It backs "The floor of a proxy hop" in BENCHMARKS.md: the same loadgen clients fed by this
//! writer directly, and through nginx with the shipped site proxying to it on a unix socket
//! (`scripts/bench.sh` systems `writer` and `writer-deployed`). Not part of Crier.
//!
//! Usage: [WRITER_EPOLLOUT=1] ws-writer [--tcp 127.0.0.1:PORT] [--unix PATH]   (at least one)
//!
//! `WRITER_EPOLLOUT=1` registers every connection for writability too, edge-triggered, as tokio
//! registers wsserver's sockets: on a unix socket the kernel then reports writability to the
//! writer's epoll every time the reader (nginx) takes a frame out.
//!
//! On exit (SIGTERM/SIGINT) it prints how many frames it wrote and how many writes fell short
//! (a full socket buffer: the frame is dropped, never queued).

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Largest request head or body accepted.
const MAX_REQUEST: usize = 64 << 10;

enum Conn {
    /// Reading HTTP requests (a publisher, or a client before its upgrade).
    Http(Vec<u8>),
    /// An upgraded websocket, at this index of the subscriber list.
    Subscriber(usize),
}

struct Server {
    epoll: RawFd,
    listeners: Vec<RawFd>,
    conns: HashMap<RawFd, Conn>,
    subscribers: Vec<RawFd>,
    frames: u64,
    short_writes: u64,
    /// Events a connection is registered for: `EPOLLIN | EPOLLRDHUP`, or with `WRITER_EPOLLOUT=1`
    /// also `EPOLLOUT | EPOLLET`, as tokio (mio) registers every socket.
    conn_events: u32,
    /// Events that reported only writability (with `WRITER_EPOLLOUT=1`).
    out_events: u64,
}

fn check(r: libc::c_int, what: &str) -> libc::c_int {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r
}

fn epoll_add(epoll: RawFd, fd: RawFd, events: u32) {
    let mut ev = libc::epoll_event { events, u64: fd as u64 };
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) }, "epoll_ctl");
}

/// Writes all of `buf` to a non-blocking descriptor; false when it could not (peer gone, or a
/// full buffer: answers here are small and sockets fresh, so that is an error too).
fn write_all(fd: RawFd, buf: &[u8]) -> bool {
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    n == buf.len() as isize
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (lower case, with the colon) in a request head, trimmed.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}

/// A server-to-client text frame (unmasked) carrying `payload`.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81u8];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

impl Server {
    fn accept(&mut self, listener: RawFd) {
        loop {
            let fd =
                unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK) };
            if fd < 0 {
                return;
            }
            // TCP_NODELAY as nginx (`tcp_nodelay on`) and wsserver set it; fails harmlessly on a
            // unix socket.
            let one: libc::c_int = 1;
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            epoll_add(self.epoll, fd, self.conn_events);
            self.conns.insert(fd, Conn::Http(Vec::new()));
        }
    }

    fn close(&mut self, fd: RawFd) {
        if let Some(Conn::Subscriber(i)) = self.conns.remove(&fd) {
            self.subscribers.swap_remove(i);
            if let Some(&moved) = self.subscribers.get(i) {
                self.conns.insert(moved, Conn::Subscriber(i));
            }
        }
        unsafe { libc::close(fd) };
    }

    fn readable(&mut self, fd: RawFd) {
        let mut chunk = [0u8; 4096];
        loop {
            let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n == 0 {
                return self.close(fd);
            }
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                    break;
                }
                return self.close(fd);
            }
            match self.conns.get_mut(&fd) {
                // A subscriber's frames (a close, pongs) are read and dropped.
                Some(Conn::Subscriber(_)) => {}
                Some(Conn::Http(buf)) => {
                    buf.extend_from_slice(&chunk[..n as usize]);
                    if buf.len() > 2 * MAX_REQUEST {
                        return self.close(fd);
                    }
                }
                None => return,
            }
        }
        while let Some(Conn::Http(buf)) = self.conns.get_mut(&fd) {
            let Some(end) = find(buf, b"\r\n\r\n") else { return };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if len > MAX_REQUEST {
                return self.close(fd);
            }
            if buf.len() < end + 4 + len {
                return;
            }
            let body: Vec<u8> = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let upgrade = header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            if head.starts_with("GET ") && upgrade {
                let key = header(&head, "sec-websocket-key").unwrap_or("");
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\n\r\n",
                    accept_key(key)
                );
                if !write_all(fd, answer.as_bytes()) {
                    return self.close(fd);
                }
                self.conns.insert(fd, Conn::Subscriber(self.subscribers.len()));
                self.subscribers.push(fd);
                return;
            }
            if head.starts_with("POST ") {
                self.fan_out(&text_frame(&body));
            }
            let answer: &[u8] = if head.starts_with("POST ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if !write_all(fd, answer) {
                return self.close(fd);
            }
        }
    }

    /// The whole of a delivery: one `write` per subscriber.
    fn fan_out(&mut self, frame: &[u8]) {
        for &fd in &self.subscribers {
            if write_all(fd, frame) {
                self.frames += 1;
            } else {
                self.short_writes += 1;
            }
        }
    }

    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        while !STOP.load(Ordering::Relaxed) {
            let n = unsafe { libc::epoll_wait(self.epoll, events.as_mut_ptr(), events.len() as libc::c_int, 500) };
            if n < 0 {
                continue; // EINTR: the stop flag is checked above
            }
            for ev in &events[..n as usize] {
                let fd = ev.u64 as RawFd;
                if self.listeners.contains(&fd) {
                    self.accept(fd);
                } else if ev.events & (libc::EPOLLIN as u32) != 0 {
                    self.readable(fd);
                } else if ev.events & !(libc::EPOLLOUT as u32) == 0 {
                    self.out_events += 1;
                } else if self.conns.contains_key(&fd) {
                    self.close(fd);
                }
            }
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2: base64 of SHA-1 of key + GUID).
fn accept_key(key: &str) -> String {
    base64(&sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes()))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll_create1");
    let mut listeners = Vec::new();
    for pair in args.chunks(2) {
        let value = pair.get(1).expect("usage: ws-writer [--tcp ADDR] [--unix PATH]");
        let fd = match pair[0].as_str() {
            "--tcp" => {
                let l = TcpListener::bind(value.as_str()).expect("bind tcp");
                l.set_nonblocking(true).expect("nonblocking");
                l.into_raw_fd()
            }
            "--unix" => {
                let _ = std::fs::remove_file(value);
                let l = UnixListener::bind(value).expect("bind unix");
                l.set_nonblocking(true).expect("nonblocking");
                l.into_raw_fd()
            }
            other => panic!("unknown argument {other}; usage: ws-writer [--tcp ADDR] [--unix PATH]"),
        };
        // The listen() above used std's backlog of 128; 4096 as nginx and the benchmark use.
        check(unsafe { libc::listen(fd, 4096) }, "listen");
        epoll_add(epoll, fd, libc::EPOLLIN as u32);
        listeners.push(fd);
    }
    assert!(!listeners.is_empty(), "usage: ws-writer [--tcp ADDR] [--unix PATH]");
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut conn_events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    if std::env::var("WRITER_EPOLLOUT").is_ok_and(|v| v == "1") {
        conn_events |= (libc::EPOLLOUT | libc::EPOLLET) as u32;
    }
    let mut server = Server {
        epoll,
        listeners,
        conns: HashMap::new(),
        subscribers: Vec::new(),
        frames: 0,
        short_writes: 0,
        conn_events,
        out_events: 0,
    };
    server.run();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "ws-writer: {} frames written, {} short writes, {} writability-only events",
        server.frames, server.short_writes, server.out_events
    );
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(&text_frame(&[b'x'; 64])[..2], &[0x81, 64]);
        assert_eq!(&text_frame(&[b'x'; 200])[..4], &[0x81, 126, 0, 200]);
    }
}
