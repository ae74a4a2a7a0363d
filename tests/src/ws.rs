//! A websocket test client on fastwebsockets.
//!
//! The socket is split: a reader task owns the read half and turns frames into [`Event`]s on a
//! channel (so a timeout never cancels a frame read half-way), and writes go through the shared
//! write half. Pings are answered automatically unless [`WsOptions::auto_pong`] is off; a
//! server close is answered automatically.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocket, WebSocketError, WebSocketWrite};
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

type Writer = Arc<Mutex<WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>>>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reader task saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame from the server (already answered). `code` is 1005 when it had no payload.
    Close {
        code: u16,
        reason: String,
    },
    /// The connection ended without a close frame (EOF or a protocol error).
    Ended(String),
}

/// A refused handshake: the HTTP status and body. `status` is 0 when there was no HTTP answer
/// at all (connection refused, reset, timeout); `body` then says what happened.
#[derive(Debug, Clone)]
pub struct HandshakeFailure {
    pub status: u16,
    pub body: String,
    pub headers: HeaderMap,
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handshake failed with status {}: {}", self.status, self.body)
    }
}

impl std::error::Error for HandshakeFailure {}

/// Connection options.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// Extra request headers (Origin, Cookie, …); they replace the defaults of the same name.
    pub headers: Vec<(String, String)>,
    /// Answer server pings (default true). Off, pings are only counted.
    pub auto_pong: bool,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions { headers: Vec::new(), auto_pong: true }
    }
}

/// An open websocket.
pub struct WsClient {
    events: mpsc::UnboundedReceiver<Event>,
    writer: Writer,
    reader: JoinHandle<()>,
    pings: Arc<AtomicUsize>,
    /// Headers of the 101 answer.
    pub response_headers: HeaderMap,
    closed: Option<(u16, String)>,
}

impl WsClient {
    /// Opens `ws://host:port/path?query`.
    pub async fn connect(url: &str) -> Result<WsClient, HandshakeFailure> {
        WsClient::connect_with(url, WsOptions::default()).await
    }

    /// Opens `url` with extra request headers.
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, HandshakeFailure> {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        WsClient::connect_with(url, WsOptions { headers, ..WsOptions::default() }).await
    }

    /// Opens `url` with `options`.
    pub async fn connect_with(url: &str, options: WsOptions) -> Result<WsClient, HandshakeFailure> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(url, &options)).await {
            Ok(result) => result,
            Err(_) => Err(transport_failure(format!("handshake with {url} timed out after {HANDSHAKE_TIMEOUT:?}"))),
        }
    }

    /// Opens `url` and panics unless the upgrade succeeds.
    pub async fn open(url: &str) -> WsClient {
        match WsClient::connect(url).await {
            Ok(ws) => ws,
            Err(e) => panic!("websocket {url}: {e}"),
        }
    }

    /// The next event, or None when nothing arrives within `timeout`. After the connection
    /// ended, returns the final event again (Close or Ended) at once.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Event> {
        if let Some((code, reason)) = &self.closed {
            return Some(Event::Close { code: *code, reason: reason.clone() });
        }
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(event)) => Some(self.note(event)),
            Ok(None) => Some(Event::Ended("reader finished".into())),
            Err(_) => None,
        }
    }

    /// The next event if one is already there.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.events.try_recv().ok().map(|e| self.note(e))
    }

    fn note(&mut self, event: Event) -> Event {
        if let Event::Close { code, reason } = &event {
            self.closed = Some((*code, reason.clone()));
        }
        event
    }

    /// The next text message, or None when nothing arrives within `timeout`. Panics on a
    /// binary message, a close or the end of the connection.
    pub async fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        match self.recv(timeout).await {
            None => None,
            Some(Event::Text(text)) => Some(text),
            Some(other) => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next text message; panics when none arrives within `timeout`.
    pub async fn expect_text(&mut self, timeout: Duration) -> String {
        match self.recv_text(timeout).await {
            Some(text) => text,
            None => panic!("no text message within {timeout:?}"),
        }
    }

    /// Asserts that no event at all arrives within `window` (a bounded negative check).
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Some(event) = self.recv(window).await {
            panic!("expected nothing within {window:?}, got {event:?}");
        }
    }

    /// Waits for the server's close frame, skipping any text/binary messages still queued
    /// before it; returns (code, reason). Panics on timeout or when the connection ends without
    /// a close frame.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Event::Close { code, reason }) => return (code, reason),
                Some(Event::Ended(why)) => panic!("connection ended without a close frame: {why}"),
                Some(Event::Text(_) | Event::Binary(_)) => continue,
                None => panic!("no close frame within {timeout:?}"),
            }
        }
    }

    pub async fn send_text(&self, text: &str) -> Result<(), WebSocketError> {
        self.send(Frame::text(Payload::Owned(text.as_bytes().to_vec()))).await
    }

    pub async fn send_binary(&self, data: &[u8]) -> Result<(), WebSocketError> {
        self.send(Frame::binary(Payload::Owned(data.to_vec()))).await
    }

    /// Sends any frame (fragments, pings, raw closes).
    pub async fn send(&self, frame: Frame<'static>) -> Result<(), WebSocketError> {
        let mut writer = self.writer.lock().await;
        writer.write_frame(frame).await?;
        writer.flush().await
    }

    /// Number of pings received from the server so far.
    pub fn pings_received(&self) -> usize {
        self.pings.load(Ordering::Relaxed)
    }

    /// Closes with 1000 and waits (up to 5 s) for the server's close reply; returns it, or None
    /// when the server did not answer with a close frame.
    pub async fn close(mut self) -> Option<(u16, String)> {
        if self.closed.is_none() {
            let _ = self.send(Frame::close(1000, b"")).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Event::Close { code, reason }) => return Some((code, reason)),
                Some(Event::Ended(_)) | None => return None,
                Some(_) => continue,
            }
        }
    }

    /// Drops the TCP connection without a close handshake.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn transport_failure(body: String) -> HandshakeFailure {
    HandshakeFailure { status: 0, body, headers: HeaderMap::new() }
}

async fn handshake(url: &str, options: &WsOptions) -> Result<WsClient, HandshakeFailure> {
    let uri: Uri = url.parse().map_err(|e| transport_failure(format!("bad url {url}: {e}")))?;
    let authority = uri.authority().ok_or_else(|| transport_failure(format!("no host in {url}")))?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();

    let stream = TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| transport_failure(format!("connect {authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| transport_failure(format!("http handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let mut request = Request::builder()
        .method("GET")
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport_failure(format!("request: {e}")))?;
    let headers = request.headers_mut();
    headers.insert(hyper::header::HOST, HeaderValue::from_str(authority.as_str()).expect("host header"));
    headers.insert(hyper::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        hyper::header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&fastwebsockets::handshake::generate_key()).expect("key header"),
    );
    headers.insert(hyper::header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    for (name, value) in &options.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        headers.insert(name, HeaderValue::from_str(value).expect("header value"));
    }

    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| transport_failure(format!("sending the upgrade request: {e}")))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await {
            Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Ok(Err(e)) => format!("(error reading body: {e})"),
            Err(_) => "(timed out reading body)".into(),
        };
        return Err(HandshakeFailure { status, body, headers });
    }
    let response_headers = response.headers().clone();
    let upgraded = hyper::upgrade::on(&mut response).await.map_err(|e| transport_failure(format!("upgrade: {e}")))?;

    let ws = WebSocket::after_handshake(TokioIo::new(upgraded), Role::Client);
    let (mut read, write) = ws.split(tokio::io::split);
    // Pings come to read_loop (counted, answered when auto_pong is on); the close reply is sent
    // by fastwebsockets itself through the obligated-send callback.
    read.set_auto_pong(false);
    let read = FragmentCollectorRead::new(read);
    let writer: Writer = Arc::new(Mutex::new(write));
    let pings = Arc::new(AtomicUsize::new(0));
    let (tx, events) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_loop(read, writer.clone(), pings.clone(), tx, options.auto_pong));
    Ok(WsClient { events, writer, reader, pings, response_headers, closed: None })
}

async fn read_loop(
    mut read: FragmentCollectorRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>,
    writer: Writer,
    pings: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Event>,
    auto_pong: bool,
) {
    loop {
        let frame = read
            .read_frame::<_, WebSocketError>(&mut |frame: Frame<'static>| {
                let writer = writer.clone();
                async move {
                    let mut w = writer.lock().await;
                    w.write_frame(frame).await?;
                    w.flush().await
                }
            })
            .await;
        let event = match frame {
            Ok(frame) => match frame.opcode {
                OpCode::Text => Event::Text(String::from_utf8_lossy(&frame.payload).into_owned()),
                OpCode::Binary => Event::Binary(frame.payload.to_vec()),
                OpCode::Close => {
                    let payload = &frame.payload;
                    let (code, reason) = if payload.len() >= 2 {
                        (
                            u16::from_be_bytes([payload[0], payload[1]]),
                            String::from_utf8_lossy(&payload[2..]).into_owned(),
                        )
                    } else {
                        (1005, String::new())
                    };
                    let _ = tx.send(Event::Close { code, reason });
                    return;
                }
                OpCode::Ping => {
                    pings.fetch_add(1, Ordering::Relaxed);
                    if auto_pong {
                        let pong = Frame::pong(Payload::Owned(frame.payload.to_vec()));
                        let mut w = writer.lock().await;
                        if w.write_frame(pong).await.is_err() || w.flush().await.is_err() {
                            // The read side will report the end.
                        }
                    }
                    continue;
                }
                OpCode::Pong | OpCode::Continuation => continue,
            },
            Err(e) => {
                let _ = tx.send(Event::Ended(e.to_string()));
                return;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// Every socket's next frame is the text `message`, within `timeout` (a close, another frame or
/// none fails the test).
pub async fn all_receive(sockets: &mut [WsClient], message: &str, timeout: Duration) {
    for (i, socket) in sockets.iter_mut().enumerate() {
        match socket.recv(timeout).await {
            Some(Event::Text(text)) => assert_eq!(text, message, "socket {i}"),
            other => panic!("socket {i} expected {message:?}, got {other:?}"),
        }
    }
}
