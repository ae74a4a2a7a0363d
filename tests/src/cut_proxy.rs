//! A TCP proxy the test controls, to cut a connection the way a network does: [`CutProxy::stall`]
//! stops forwarding in both directions without closing anything (the peers see silence), and
//! [`CutProxy::reset`] then drops every connection with a TCP reset (SO_LINGER 0), never a clean
//! close. New connections are forwarded again after [`CutProxy::resume`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy from a loopback port to `target`.
pub struct CutProxy {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    /// Bumped by `reset`: every connection of an older generation is dropped.
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let stalled = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (flag, gen) = (stalled.clone(), generation.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                tokio::spawn(pipe(client, server, flag.clone(), gen.subscribe()));
            }
        });
        CutProxy { addr, stalled, generation, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding: bytes stay unread in the kernel, nothing is closed.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Drops every current connection with a reset, on both sides.
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards again (for new connections and any still open).
    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, stalled: Arc<AtomicBool>, mut generation: watch::Receiver<u64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let forward = async {
        let mut up = [0u8; 16384];
        let mut down = [0u8; 16384];
        loop {
            while stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            tokio::select! {
                n = cr.read(&mut up) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if sw.write_all(&up[..n]).await.is_err() { break },
                },
                n = sr.read(&mut down) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if cw.write_all(&down[..n]).await.is_err() { break },
                },
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
        }
    };
    tokio::select! {
        () = forward => {}
        _ = generation.changed() => {}
    }
    // A reset, not a clean close: SO_LINGER 0 on both sockets.
    if let (Ok(client), Ok(server)) = (cr.reunite(cw), sr.reunite(sw)) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}
