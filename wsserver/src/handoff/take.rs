//! The new process's side of a live hand-off: take the listeners from the old process
//! ([`Taking::connect`], before serving), say when ready, then resume each socket passed
//! ([`Taking::serve`]): join it with its cut set, answer once Redis confirmed its channels,
//! and start its loops with the tail the old process queued up to the cut.
//!
//! If the old process goes away before saying the hand-off is done (it failed and kept its
//! sockets, or died), this process stops: the service stays what it was.

use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use service::listen::{Listener, Stream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::link::{Kind, Link, LinkError, Msg, Role, Sender};
use super::state::{accepted_version, SocketState};
use crate::app::App;
use crate::close::GOING_AWAY;
use crate::connection::Live;
use crate::keepalive::Liveness;
use crate::outbox::{Cut, Side};
use crate::registry::Member;

#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("the inherited hand-off socket (CRIER_HANDOFF_FD): {0}")]
    Inherited(std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("received listener: {0}")]
    Listener(#[from] service::listen::ListenError),
}

/// Test-only: the new process exits abruptly when the socket after this many arrives, to
/// test a hand-off that fails midway.
pub const TEST_EXIT_AFTER_ENV: &str = "CRIER_HANDOFF_TEST_EXIT_AFTER";

/// The hand-off as the new process sees it, from its start until the old process is done.
pub struct Taking {
    link: Link,
    nonce: Arc<str>,
}

/// The listeners received from the old process.
pub struct Received {
    pub websocket: Vec<Listener>,
    pub admin: Vec<Listener>,
}

impl Taking {
    /// Takes the hand-off socket named by [`super::spawn::HANDOFF_FD_ENV`] (when set) and
    /// the listeners the old process passes. Must run inside a tokio runtime.
    pub async fn connect() -> Result<Option<(Taking, Received)>, TakeError> {
        let Some(fd) = std::env::var(super::spawn::HANDOFF_FD_ENV).ok() else { return Ok(None) };
        let fd: RawFd = fd.trim().parse().map_err(|_| TakeError::Inherited(std::io::Error::other("not a number")))?;
        let stream = super::fd_pass::adopt_inherited(fd).map_err(TakeError::Inherited)?;
        let mut link = Link::start(stream).map_err(TakeError::Inherited)?;
        let mut nonce = None;
        let mut received = Received { websocket: Vec::new(), admin: Vec::new() };
        loop {
            match link.recv().await? {
                (Msg::Hello { nonce: n }, _) => nonce = Some(n),
                (Msg::Listener { role }, fds) => {
                    for fd in fds {
                        let listener = Listener::adopt(fd)?;
                        match role {
                            Role::Websocket => received.websocket.push(listener),
                            Role::Admin => received.admin.push(listener),
                        }
                    }
                }
                (Msg::ListenersDone, _) => break,
                (other, _) => return Err(LinkError::Unexpected(format!("{other:?}")).into()),
            }
        }
        let nonce = nonce.ok_or_else(|| LinkError::Unexpected("no hello".into()))?;
        tracing::info!(
            websocket = received.websocket.len(),
            admin = received.admin.len(),
            "taking over from the previous process"
        );
        Ok(Some((Taking { link, nonce: nonce.into() }, received)))
    }

    /// Says ready, then takes sockets until the old process is done. `stop` is cancelled
    /// when the old process goes away before that.
    pub async fn serve(self, app: Arc<App>, stop: CancellationToken) {
        let (sender, mut incoming) = self.link.split();
        sender.send(&Msg::Ready);
        let mut tails: HashMap<u64, oneshot::Sender<(bool, Vec<Bytes>)>> = HashMap::new();
        let exit_after = std::env::var(TEST_EXIT_AFTER_ENV).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let mut received_sockets = 0;
        loop {
            let received = incoming.recv().await.unwrap_or(Err(LinkError::Closed));
            match received {
                Ok((Msg::Socket { id, kind, batch, state }, fds)) => {
                    received_sockets += 1;
                    if exit_after.is_some_and(|n| received_sockets > n) {
                        tracing::error!("{TEST_EXIT_AFTER_ENV}: exiting in the middle of the hand-off (test only)");
                        std::process::exit(3);
                    }
                    let Some(fd) = fds.into_iter().next() else {
                        sender.send(&Msg::Refused { id, reason: "no descriptor came with the socket".into() });
                        continue;
                    };
                    let (tail_tx, tail) = oneshot::channel();
                    tails.insert(id, tail_tx);
                    let passed = Passed { id, kind, batch, state, fd, tail };
                    let (app2, sender2, nonce) = (app.clone(), sender.clone(), self.nonce.clone());
                    app.tracker.spawn(async move { resume(app2, sender2, nonce, passed).await });
                }
                Ok((Msg::Tail { id, closing, frames }, _)) => {
                    if let Some(tail) = tails.remove(&id) {
                        let _ = tail.send((closing, frames));
                    }
                }
                Ok((Msg::Done, _)) => {
                    let taken = app.metrics.handoff_taken.load(Ordering::Relaxed);
                    tracing::info!(taken, "live hand-off done; this process serves now");
                    service::notify::notify_took_over();
                    return;
                }
                Ok((other, _)) => {
                    tracing::warn!("unexpected hand-off message {other:?}; stopping");
                    stop.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!("the previous process left the hand-off unfinished ({e}); stopping");
                    stop.cancel();
                    return;
                }
            }
        }
    }
}

/// One socket as it arrives.
struct Passed {
    id: u64,
    kind: Kind,
    batch: u32,
    state: Vec<u8>,
    fd: OwnedFd,
    tail: oneshot::Receiver<(bool, Vec<Bytes>)>,
}

fn stream(kind: Kind, fd: OwnedFd) -> std::io::Result<Stream> {
    Ok(match kind {
        Kind::Tcp => {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true)?;
            Stream::Tcp(tokio::net::TcpStream::from_std(std)?)
        }
        Kind::Unix => {
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            Stream::Unix(tokio::net::UnixStream::from_std(std)?)
        }
    })
}

/// Resumes one socket; refuses it (the old process closes it with 1001) when its state is of
/// another version or malformed, the process is at its connection limit, or Redis does not
/// confirm its channels in time.
async fn resume(app: Arc<App>, sender: Sender, nonce: Arc<str>, passed: Passed) {
    let id = passed.id;
    let refuse = |reason: String| {
        tracing::debug!(reason, "refusing a socket of the hand-off");
        sender.send(&Msg::Refused { id, reason });
    };
    let decoded = SocketState::decode_version(&passed.state, accepted_version());
    let resumed = match decoded.and_then(|state| state.resume(app.config.max_message_size)) {
        Ok(resumed) => resumed,
        Err(e) => return refuse(e.to_string()),
    };
    let Ok(permit) = app.permits.clone().try_acquire_owned() else {
        return refuse("at the connection limit".into());
    };
    let stream = match stream(passed.kind, passed.fd) {
        Ok(stream) => stream,
        Err(e) => return refuse(format!("descriptor: {e}")),
    };
    let (frame, shared_prefix, _) = super::give::marker(&nonce, passed.batch);
    let socket = resumed.socket;
    let kept = socket.clone();
    let (joined, waits) = crate::join::join(&app, socket, Some(Cut::new(frame, shared_prefix, Side::New)));
    let member = Member { outbox: joined.outbox.clone(), echo_filter: None, gate: None };
    let (markers, marker_waits) = app.registry.join(joined.id, member, vec![app.prefix.handoff_markers(&nonce)]);
    let subscribed = async {
        for wait in waits.into_iter().chain(marker_waits) {
            let _ = wait.await;
        }
    };
    if tokio::time::timeout(app.config.handshake_timeout, subscribed).await.is_err() {
        // Dropped without a shutdown: the old process still holds the connection.
        return refuse("redis did not confirm the subscriptions".into());
    }
    sender.send(&Msg::Accepted { id });
    // No tail: the old process kept the socket (or closed it); this copy closes quietly.
    let Ok((closing, tail)) = passed.tail.await else { return };
    joined.outbox.resume_with(tail);
    if closing {
        joined.outbox.close(GOING_AWAY);
    }
    app.metrics.handoff_taken.fetch_add(1, Ordering::Relaxed);
    let heard_us = app.registry.now_us().saturating_sub(resumed.heard_ago_ms.saturating_mul(1000));
    let liveness = Arc::new(Liveness { last_heard_us: AtomicU64::new(heard_us) });
    let live = Live { socket: kept, joined, reader: resumed.reader, liveness };
    crate::connection::spawn(app, stream, live, (permit, markers));
}
