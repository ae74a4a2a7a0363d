//! The one accept-and-serve loop of both binaries and their admin listeners: HTTP/1 over TCP or
//! unix sockets, each connection in a tracked task, upgrades allowed, and on shutdown every
//! connection asked to finish its request in flight and close.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listen::{Listener, Peer, Stream};

/// How connections of one listener are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// Time a client has to send a request's headers; the connection closes after it.
    pub header_read_timeout: Duration,
    /// Largest read buffer, bounding the headers a client may send (`None`: hyper's ~400 KiB).
    pub max_buf_size: Option<usize>,
    /// Carry a request read whole out even when the client has closed its sending side. This
    /// also spares hyper a read for an early EOF while each request is in flight.
    pub half_close: bool,
    /// On shutdown, let each open connection finish on its own (up to `header_read_timeout`)
    /// before asking it to close. A connection accepted just before the stop then gets its
    /// request answered (an upgrade completes) instead of being closed unanswered, which nginx
    /// reports to its client as 502. For listeners whose connections carry one request each.
    pub answer_accepted: bool,
}

impl Default for ConnOptions {
    /// 10 s for headers, hyper's buffer limit, no half-close: fits an admin listener.
    fn default() -> Self {
        ConnOptions {
            header_read_timeout: Duration::from_secs(10),
            max_buf_size: None,
            half_close: false,
            answer_accepted: false,
        }
    }
}

/// What `serve` calls for each request: `handler(peer, request)`, an async function (or
/// closure) that always answers. Implemented for every fitting `Fn`; named so that the bounds are
/// written once.
pub trait Handler<B>: Clone + Send + Sync + 'static {
    type Answer: Future<Output = Result<Response<B>, Infallible>> + Send + 'static;

    fn call(&self, peer: Peer, request: Request<Incoming>) -> Self::Answer;
}

impl<H, Fut, B> Handler<B> for H
where
    H: Fn(Peer, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
{
    type Answer = Fut;

    fn call(&self, peer: Peer, request: Request<Incoming>) -> Fut {
        self(peer, request)
    }
}

/// A response body hyper can send from any task.
pub trait ResponseBody: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static {}

/// Accepts on every one of `listeners` until `shutdown` resolves, serving each connection with
/// `handler(peer, request)`. Then it stops accepting (the listeners are dropped, a unix socket
/// file this process created is removed), asks every open connection to finish its request in
/// flight and close, and returns the tracker of their tasks, already closed: the caller waits
/// on it, bounded by its drain deadline. Connections upgraded (websockets) leave hyper and are
/// not waited for here.
///
/// Accept errors (out of file descriptors, mostly) are logged and retried after 50 ms.
pub async fn serve<B: ResponseBody>(
    listeners: Vec<Listener>,
    options: ConnOptions,
    shutdown: impl Future<Output = ()>,
    handler: impl Handler<B>,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    let closing = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let conns = Connections { tracker: tracker.clone(), closing: closing.clone(), options };
            tokio::spawn(accept_loop(listener, stop_accepting.clone(), conns, handler.clone()))
        })
        .collect();
    shutdown.await;
    stop_accepting.cancel();
    for task in accepting {
        let _ = task.await;
    }
    closing.cancel();
    tracker.close();
    tracker
}

/// What every connection of one `serve` shares.
struct Connections {
    tracker: TaskTracker,
    closing: CancellationToken,
    options: ConnOptions,
}

/// Accepts on `listener` until `stop` fires, then drops it.
async fn accept_loop<B: ResponseBody>(
    listener: Listener,
    stop: CancellationToken,
    conns: Connections,
    handler: impl Handler<B>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = %listener.describe(), "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Stream::Tcp(tcp) = &stream {
            // Answers leave at once, never held back by Nagle's algorithm behind an unacknowledged one.
            let _ = tcp.set_nodelay(true);
        }
        let handler = handler.clone();
        let closing = conns.closing.clone();
        let options = conns.options;
        conns.tracker.spawn(async move {
            let service = service_fn(move |req| handler.call(peer, req));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .half_close(options.half_close);
            if let Some(size) = options.max_buf_size {
                builder.max_buf_size(size);
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => if let Err(e) = result { tracing::debug!(%peer, "connection ended: {e}") },
                () = closing.cancelled() => {
                    if options.answer_accepted
                        && tokio::time::timeout(options.header_read_timeout, conn.as_mut()).await.is_ok()
                    {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn hello(peer: Peer, _req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let who = peer.ip().map_or_else(|| peer.to_string(), |ip| ip.to_string());
        Ok(Response::new(Full::new(Bytes::from(format!("hello {who}")))))
    }

    async fn get(client: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin)) -> String {
        client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut answer = vec![0; 1024];
        let n = client.read(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    #[tokio::test]
    async fn serves_tcp_and_unix_until_shutdown_then_refuses_and_drains() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let dir = std::env::temp_dir().join(format!("crier-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("serve.sock");
        let unix = Listener::bind(&crate::listen::ListenAddr::Unix(path.clone()), &Default::default()).expect("unix");
        let stop = CancellationToken::new();
        let listeners = vec![Listener::from(listener), unix];
        let server = tokio::spawn(serve(listeners, ConnOptions::default(), stop.clone().cancelled_owned(), hello));

        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let answer = get(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello 127.0.0.1"), "{answer}");
        let mut local = tokio::net::UnixStream::connect(&path).await.expect("connect to the unix socket");
        let answer = get(&mut local).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello unix-socket"), "{answer}");

        stop.cancel();
        let tracker = server.await.expect("serve returns after shutdown");
        assert!(tracker.is_closed());
        // The idle keep-alive connection is closed by the graceful shutdown.
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("connections finish");
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.expect("EOF"), 0);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener dropped");
        assert_eq!(local.read_to_end(&mut rest).await.expect("EOF"), 0);
        assert!(!path.exists(), "the socket file is removed once serving stops");
        std::fs::remove_dir_all(dir).expect("remove temp dir");
    }

    #[tokio::test]
    async fn a_connection_accepted_before_the_stop_is_answered_when_asked_to() {
        for answer_accepted in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let stop = CancellationToken::new();
            let options = ConnOptions { answer_accepted, ..ConnOptions::default() };
            let listeners = vec![Listener::from(listener)];
            let server = tokio::spawn(serve(listeners, options, stop.clone().cancelled_owned(), hello));
            // Accepted (the first request proves the connection is being served), then the stop
            // comes before the client's next request: as when nginx's request is still in flight.
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            assert!(get(&mut client).await.starts_with("HTTP/1.1 200"));
            stop.cancel();
            let tracker = server.await.expect("serve returns");
            if answer_accepted {
                let answer = get(&mut client).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "answered after the stop: {answer:?}");
                drop(client);
            } else {
                let mut rest = Vec::new();
                assert_eq!(client.read_to_end(&mut rest).await.expect("EOF"), 0, "closed at once");
            }
            tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("connections finish");
        }
    }
}
