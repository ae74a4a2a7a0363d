//! The old process's side of a live hand-off: start the new process and pass it the
//! listeners ([`Successor::start`]); once it is ready, stop accepting (in [`crate::server`]),
//! freeze every socket and pass them over in batches, each with its own cut
//! ([`Successor::hand_over`]). The ordering argument is in [`crate::handoff`].
//!
//! A hand-off that fails (the new process dies, refuses or does not answer in time) is
//! abandoned: every socket not yet handed thaws and keeps running here, and this process
//! accepts again. A socket whose cut was already published when the failure came is closed
//! with 1001 instead (what was published after its cut is the new process's to deliver).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use service::listen::{Listener, Stream};
use tokio::sync::{mpsc, oneshot};

use super::link::{Kind, Link, LinkError, Msg, Role};
use super::state::SocketState;
use crate::app::App;
use crate::connection::Live;
use crate::outbox::{Cut, Outbox, Side};
use crate::registry::Member;

/// How long the new process may take to connect to Redis and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the new process may take to answer for one batch of sockets.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a published cut may take to come back from Redis.
const CUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most sockets per batch (one cut each): bounds how long a socket stays frozen.
pub const BATCH: usize = 500;

/// What becomes of a frozen socket that offered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The new process has it: close this descriptor quietly.
    Handed,
    /// Not handed (no hand-off running, or it failed before the socket's cut): keep serving.
    Stay,
    /// Not handed and cannot stay silently (refused by the new process, or its cut was
    /// published before a failure): close with 1001.
    Close,
}

/// A frozen socket offered to the running hand-off.
pub struct Offer {
    id: u64,
    kind: Kind,
    fd: Option<OwnedFd>,
    state: Vec<u8>,
    outbox: Outbox,
    reply: oneshot::Sender<Offered>,
}

/// Where frozen sockets find the running hand-off. A std `Mutex`: touched once per socket
/// per hand-off, never held across `.await`. At most [`BATCH`] sockets are on offer at once:
/// each holds a second descriptor of its connection until it is answered, and a process with
/// as many sockets as its descriptor limit allows has no room for one per socket.
pub struct Slot {
    sender: Mutex<Option<mpsc::UnboundedSender<Offer>>>,
    on_offer: Arc<tokio::sync::Semaphore>,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot { sender: Mutex::default(), on_offer: Arc::new(tokio::sync::Semaphore::new(BATCH)) }
    }
}

impl Slot {
    fn set(&self, to: Option<mpsc::UnboundedSender<Offer>>) {
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    fn sender(&self) -> Option<mpsc::UnboundedSender<Offer>> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Offers a frozen socket to the running hand-off and waits for its fate.
pub async fn offer(app: &App, stream: &Stream, live: &Live) -> Offered {
    let outbox = &live.joined.outbox;
    if app.handoff.sender().is_none() || !outbox.freeze_requested() || outbox.is_closing() {
        return Offered::Stay;
    }
    let Ok(_on_offer) = app.handoff.on_offer.acquire().await else { return Offered::Stay };
    // The hand-off may have ended while this socket waited for its turn.
    let Some(sender) = app.handoff.sender() else { return Offered::Stay };
    let (kind, fd) = match stream {
        Stream::Tcp(s) => (Kind::Tcp, s.as_fd().try_clone_to_owned()),
        Stream::Unix(s) => (Kind::Unix, s.as_fd().try_clone_to_owned()),
    };
    let Ok(fd) = fd else { return Offered::Stay };
    let heard_us = live.liveness.last_heard_us.load(Ordering::Relaxed);
    let heard_ago_ms = app.registry.now_us().saturating_sub(heard_us) / 1000;
    let state = SocketState::capture(&live.socket, &live.reader, Vec::new(), heard_ago_ms).encode();
    let (reply, answer) = oneshot::channel();
    let offer = Offer { id: live.joined.id, kind, fd: Some(fd), state, outbox: outbox.clone(), reply };
    if sender.send(offer).is_err() {
        return Offered::Stay;
    }
    answer.await.unwrap_or(Offered::Stay)
}

#[derive(Debug, thiserror::Error)]
pub enum GiveError {
    #[error("cannot start the new process: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the new process did not get ready within {READY_TIMEOUT:?}")]
    NotReady,
    #[error("the new process did not answer within {ANSWER_TIMEOUT:?}")]
    NoAnswer,
    #[error("redis did not confirm the hand-off's marker subscription")]
    MarkerSubscription,
    #[error("cannot publish the cut: {0}")]
    Publish(String),
}

/// The new process, started and ready.
pub struct Successor {
    link: Link,
    nonce: String,
    child: std::process::Child,
}

impl Successor {
    /// Starts the new process, passes it `listeners` and waits until it is ready (subscribed
    /// to Redis and accepting alongside this process).
    pub async fn start(listeners: &[(Role, Listener)]) -> Result<Successor, GiveError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let (mine, theirs) = UnixStream::pair().map_err(GiveError::Spawn)?;
        let child = super::spawn::spawn(&theirs).map_err(GiveError::Spawn)?;
        drop(theirs);
        let link = match Link::start(mine) {
            Ok(link) => link,
            Err(e) => {
                reap(child);
                return Err(GiveError::Spawn(e));
            }
        };
        let mut successor = Successor { link, nonce, child };
        let ready = successor.introduce(listeners).await;
        if let Err(e) = ready {
            successor.abandon();
            return Err(e);
        }
        Ok(successor)
    }

    async fn introduce(&mut self, listeners: &[(Role, Listener)]) -> Result<(), GiveError> {
        self.link.send(&Msg::Hello { nonce: self.nonce.clone() }, Vec::new())?;
        for (role, listener) in listeners {
            let fd = listener.duplicate_fd().map_err(GiveError::Spawn)?;
            self.link.send(&Msg::Listener { role: *role }, vec![fd])?;
        }
        self.link.send(&Msg::ListenersDone, Vec::new())?;
        match tokio::time::timeout(READY_TIMEOUT, self.link.recv()).await {
            Ok(Ok((Msg::Ready, _))) => Ok(()),
            Ok(Ok((other, _))) => Err(LinkError::Unexpected(format!("{other:?}")).into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(GiveError::NotReady),
        }
    }

    /// Stops the new process (a failed hand-off).
    fn abandon(self) {
        reap(self.child);
    }

    /// Freezes every socket and passes them over. `Ok` once no socket is left here (or the
    /// hand-off deadline passed: the rest is closed by the caller's drain); the new process
    /// is then the service's main process. On error the hand-off is abandoned and every
    /// socket not handed keeps running here.
    pub async fn hand_over(mut self, app: &Arc<App>) -> Result<(), GiveError> {
        let started = tokio::time::Instant::now();
        let (offers_tx, mut offers) = mpsc::unbounded_channel();
        app.handoff.set(Some(offers_tx));
        app.sockets.begin_handoff();
        app.sockets.freeze_some(BATCH);
        let open = app.metrics.sockets_open.load(Ordering::Relaxed);
        tracing::info!(sockets = open, "live hand-off: passing the sockets to the new process");
        let result = self.batches(app, &mut offers).await;
        app.handoff.set(None);
        // Offers that arrived after the last batch (or during a failure) stay here.
        offers.close();
        while let Ok(offer) = offers.try_recv() {
            let _ = offer.reply.send(Offered::Stay);
        }
        match result {
            Ok(()) => {
                let handed = app.metrics.handoff_handed.load(Ordering::Relaxed);
                tracing::info!(handed, elapsed = ?started.elapsed(), "live hand-off done; the new process serves now");
                let _ = self.link.send(&Msg::Done, Vec::new());
                self.link.finish().await;
                service::notify::notify_main_pid(self.child.id());
                Ok(())
            }
            Err(e) => {
                app.metrics.handoff_failures.fetch_add(1, Ordering::Relaxed);
                app.sockets.thaw_all();
                self.abandon();
                Err(e)
            }
        }
    }

    async fn batches(&mut self, app: &Arc<App>, offers: &mut mpsc::UnboundedReceiver<Offer>) -> Result<(), GiveError> {
        // Sockets that do not offer themselves within this time after the last batch (stuck in
        // their handshake) are left to the caller's drain.
        let stall = app.config.drain_deadline.max(Duration::from_secs(10));
        let mut deadline = tokio::time::Instant::now() + stall;
        let mut number = 0u32;
        let mut check = tokio::time::interval(Duration::from_millis(20));
        loop {
            let first = tokio::select! {
                offer = offers.recv() => offer,
                _ = check.tick() => {
                    if app.metrics.sockets_open.load(Ordering::Relaxed) <= 0 {
                        return Ok(());
                    }
                    // Nothing on offer (the frozen sockets closed instead, say): freeze more.
                    if app.handoff.on_offer.available_permits() == BATCH && app.sockets.freeze_some(BATCH) > 0 {
                        deadline = tokio::time::Instant::now() + stall;
                    }
                    if tokio::time::Instant::now() > deadline {
                        let left = app.metrics.sockets_open.load(Ordering::Relaxed);
                        tracing::warn!(sockets = left, ?stall, "no socket offered itself for a while; the rest are closed");
                        app.metrics.handoff_closed.fetch_add(left.max(0) as u64, Ordering::Relaxed);
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(first) = first else { return Ok(()) };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match offers.try_recv() {
                    Ok(offer) => batch.push(offer),
                    Err(_) => break,
                }
            }
            number += 1;
            // The next batch's sockets stop while this one is handed.
            app.sockets.freeze_some(batch.len());
            self.batch(app, batch, number).await?;
            deadline = tokio::time::Instant::now() + stall;
        }
    }

    /// One batch: pass the sockets, hear the answers, publish the cut, pass the tails.
    async fn batch(&mut self, app: &Arc<App>, batch: Vec<Offer>, number: u32) -> Result<(), GiveError> {
        let markers = app.prefix.handoff_markers(&self.nonce);
        let (frame, shared_prefix, payload) = marker(&self.nonce, number);
        let mut pending: HashMap<u64, (Offer, crate::registry::Membership)> = HashMap::new();
        let mut waits = Vec::new();
        let mut failure = None;
        for mut offer in batch {
            if failure.is_some() || offer.outbox.is_closing() {
                let _ = offer.reply.send(Offered::Stay);
                continue;
            }
            offer.outbox.set_cut(Cut::new(frame.clone(), shared_prefix, Side::Old));
            let member = Member { outbox: offer.outbox.clone(), echo_filter: None, gate: None };
            let (membership, w) = app.registry.join(offer.id, member, vec![markers.clone()]);
            waits.extend(w);
            let msg =
                Msg::Socket { id: offer.id, kind: offer.kind, batch: number, state: std::mem::take(&mut offer.state) };
            if let Err(e) = self.link.send(&msg, offer.fd.take().into_iter().collect()) {
                failure = Some(e.into());
            }
            pending.insert(offer.id, (offer, membership));
        }
        if let Some(e) = failure {
            return Err(fail(pending, Offered::Stay, e));
        }
        // Every socket answered; Redis confirmed this process's marker subscription.
        let mut accepted = Vec::new();
        let answered = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        while accepted.len() < pending.len() {
            let answer = match tokio::time::timeout_at(answered, self.link.recv()).await {
                Ok(Ok((msg, _))) => msg,
                Ok(Err(e)) => return Err(fail(pending, Offered::Stay, e.into())),
                Err(_) => return Err(fail(pending, Offered::Stay, GiveError::NoAnswer)),
            };
            match answer {
                Msg::Accepted { id } if pending.contains_key(&id) => accepted.push(id),
                Msg::Refused { id, reason } => {
                    if let Some((offer, _)) = pending.remove(&id) {
                        tracing::warn!(reason, "the new process refused a socket; closing it with 1001");
                        app.metrics.handoff_closed.fetch_add(1, Ordering::Relaxed);
                        let _ = offer.reply.send(Offered::Close);
                    }
                }
                other => {
                    let e = LinkError::Unexpected(format!("{other:?}")).into();
                    return Err(fail(pending, Offered::Stay, e));
                }
            }
        }
        let subscribed = async {
            for wait in waits {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(ANSWER_TIMEOUT, subscribed).await.is_err() {
            return Err(fail(pending, Offered::Stay, GiveError::MarkerSubscription));
        }
        if accepted.is_empty() {
            return Ok(());
        }
        if let Err(e) = app.store.publish(&[markers], payload.as_bytes(), 0).await {
            // Whether Redis ran the PUBLISH is unknown: close rather than risk a duplicate.
            return Err(fail(pending, Offered::Close, GiveError::Publish(e.to_string())));
        }
        for id in accepted {
            let Some((offer, membership)) = pending.remove(&id) else { continue };
            let cut = tokio::time::timeout(CUT_TIMEOUT, offer.outbox.wait_for_cut()).await.is_ok();
            drop(membership);
            let tail = if cut { offer.outbox.take_for_handoff() } else { None };
            let closing = tail.is_none();
            if closing {
                app.metrics.handoff_closed.fetch_add(1, Ordering::Relaxed);
            }
            let msg = Msg::Tail { id, closing, frames: tail.unwrap_or_default() };
            if let Err(e) = self.link.send(&msg, Vec::new()) {
                let _ = offer.reply.send(Offered::Close);
                return Err(fail(pending, Offered::Close, e.into()));
            }
            app.metrics.handoff_handed.fetch_add(1, Ordering::Relaxed);
            let _ = offer.reply.send(Offered::Handed);
        }
        Ok(())
    }
}

/// Stops a new process that will not serve, and reaps it in the background.
fn reap(mut child: std::process::Child) {
    let _ = child.kill();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            tracing::info!(%status, "the abandoned new process exited");
        }
    });
}

/// Answers every socket of a failed batch; returns the error.
fn fail(pending: HashMap<u64, (Offer, crate::registry::Membership)>, outcome: Offered, e: GiveError) -> GiveError {
    tracing::warn!("live hand-off failed: {e}; this process keeps serving");
    for (_, (offer, _)) in pending {
        let _ = offer.reply.send(outcome);
    }
    e
}

/// The marker of cut `number` of the hand-off `nonce`: the frame the fan-out makes of it,
/// how many first bytes all its markers share, and the payload to publish.
pub fn marker(nonce: &str, number: u32) -> (Bytes, usize, String) {
    let payload = format!("crier-handoff:{nonce}:{number:010}");
    let frame = crate::frame::text(payload.as_bytes());
    let shared = frame.len() - payload.len() + "crier-handoff:".len() + nonce.len() + 1;
    (frame, shared, payload)
}
