//! The one accept-and-serve loop of both binaries and their admin listeners: HTTP/1 over TCP,
//! each connection in a tracked task, upgrades allowed, and on shutdown every connection asked
//! to finish its request in flight and close.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}

impl Default for ConnOptions {
    /// 10 s for headers, hyper's buffer limit, no half-close: fits an admin listener.
    fn default() -> Self {
        ConnOptions { header_read_timeout: Duration::from_secs(10), max_buf_size: None, half_close: false }
    }
}

/// Accepts on `listener` until `shutdown` resolves, serving each connection with
/// `handler(peer, request)`. Then it stops accepting (the listener is dropped), asks every open
/// connection to finish its request in flight and close, and returns the tracker of their
/// tasks, already closed: the caller waits on it, bounded by its drain deadline. Connections
/// upgraded (websockets) leave hyper and are not waited for here.
///
/// Accept errors (out of file descriptors, mostly) are logged and retried after 50 ms.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    options: ConnOptions,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> TaskTracker
where
    H: Fn(SocketAddr, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let tracker = TaskTracker::new();
    let closing = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers leave at once, never held back by Nagle's algorithm behind an unacknowledged one.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let closing = closing.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| handler(peer, req));
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
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    closing.cancel();
    tracker.close();
    tracker
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn hello(peer: SocketAddr, _req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from(format!("hello {}", peer.ip())))))
    }

    #[tokio::test]
    async fn serves_until_shutdown_then_refuses_and_drains() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ConnOptions::default(), stop.clone().cancelled_owned(), hello));

        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut answer = vec![0; 1024];
        let n = client.read(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello 127.0.0.1"), "{answer}");

        stop.cancel();
        let tracker = server.await.expect("serve returns after shutdown");
        assert!(tracker.is_closed());
        // The idle keep-alive connection is closed by the graceful shutdown.
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("connections finish");
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.expect("EOF"), 0);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener dropped");
    }
}
