//! One websocket's life after the upgrade: join the registry, replay the persisted messages,
//! then a reader (this task: client frames, publishing) and a writer task (the outbox, pings,
//! heartbeats, the close handshake). Writes only ever go through the outbox (directly from the
//! fan-out when the socket is idle, see [`crate::outbox`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{ChannelName, Facility, Flags, Identity};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::echo_filter::EchoFilter;
use crate::frame::{self, OpCode};
use crate::frame_reader::{FrameReader, Message, ReadError};
use crate::outbox::{Batch, CloseReason, Outbox};
use crate::presence::PresenceGuard;
use crate::registry::{Member, Membership};
use tokio::sync::oneshot;

/// Close sent to every socket on shutdown.
pub const GOING_AWAY: CloseReason = CloseReason { code: 1001, reason: "server shutting down" };
/// Close for a peer that stopped answering pings.
pub const PING_TIMEOUT: CloseReason = CloseReason { code: 1011, reason: "no answer to ping" };
/// Close when Redis cannot take a client's message or confirm a subscription.
pub const REDIS_UNAVAILABLE: CloseReason = CloseReason { code: 1013, reason: "redis unavailable, try again later" };
const NORMAL: CloseReason = CloseReason { code: 1000, reason: "" };

/// Most bytes one vectored write carries.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most frames one vectored write carries (the kernel's IOV_MAX is 1024).
const MAX_SLICES: usize = 64;
/// How long the writer waits for the client's close reply after sending its close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the handshake resolved for this socket.
pub struct Socket {
    pub facility: Facility,
    pub flags: Flags,
    pub identity: Identity,
}

/// State the reader and writer share.
struct Liveness {
    /// `App::now_us` of the last frame received from the client.
    last_heard_us: AtomicU64,
}

/// A socket's place in the registry and presence, and what it publishes to. Fields drop in
/// order: presence is left before the channels.
struct Joined {
    _open: OpenGauge,
    _presence: Option<PresenceGuard>,
    _membership: Membership,
    subscribe: Vec<ChannelName>,
    publish: Vec<ChannelName>,
    echo_filter: Option<Arc<EchoFilter>>,
    outbox: Outbox,
    echo_test: bool,
}

/// Joins the registry (live messages start queueing) and presence.
fn join(app: &Arc<App>, socket: Socket) -> (Joined, Vec<oneshot::Receiver<()>>) {
    let id = app.registry.next_socket_id();
    let open = OpenGauge::new(app.clone(), id);
    let channels = |audiences: protocol::AudienceSet| -> Vec<ChannelName> {
        audiences.iter().flat_map(|a| app.prefix.channels_for(a, &socket.identity, &socket.facility)).collect()
    };
    let subscribe = channels(socket.flags.subscribe);
    let publish = channels(socket.flags.publish);
    let echo_filter = (!socket.flags.echo && !publish.is_empty()).then(|| Arc::new(EchoFilter::new()));
    let outbox = Outbox::new(app.config.queue_depth);
    let member = Member { outbox: outbox.clone(), echo_filter: echo_filter.clone() };
    let session = socket.identity.user.as_ref().and(socket.identity.session.clone());
    let (membership, waits) = app.registry.join(id, member, subscribe.clone(), session);
    let presence = socket.identity.user.as_ref().and_then(|user| app.presence.enter(&socket.facility, user));
    let echo_test = app.config.echo_test_facility.as_deref() == Some(socket.facility.as_str());
    app.sockets.add(id, &outbox);
    let joined = Joined {
        _open: open,
        _presence: presence,
        _membership: membership,
        subscribe,
        publish,
        echo_filter,
        outbox,
        echo_test,
    };
    (joined, waits)
}

/// Waits for Redis to confirm the subscriptions, then puts the persisted last messages before
/// the live ones. Closes the socket with 1013 when Redis cannot do either in time.
async fn replay(app: &App, joined: &Joined, waits: Vec<oneshot::Receiver<()>>) {
    let subscribed = async {
        for wait in waits {
            let _ = wait.await;
        }
    };
    if tokio::time::timeout(app.config.handshake_timeout, subscribed).await.is_err() {
        joined.outbox.close_now(REDIS_UNAVAILABLE);
        return;
    }
    match app.store.last_messages(&joined.subscribe).await {
        Ok(values) => {
            let frames: Vec<Bytes> = values.into_iter().flatten().map(|v| frame::text(&v)).collect();
            app.metrics.messages_out.fetch_add(frames.len() as u64, Ordering::Relaxed);
            joined.outbox.push_front(frames);
        }
        Err(e) => {
            tracing::warn!("replay failed: {e}");
            joined.outbox.close_now(REDIS_UNAVAILABLE);
        }
    }
}

/// Serves one upgraded socket until it closes. `read_ahead` holds what the client sent after
/// its upgrade request in the same read. `guards` (the connection permit and the per-address
/// slot) are held for the socket's whole life.
///
/// Setup and publishing run in boxed futures, so the task of an idle socket only holds the
/// small read state, not the largest state of every await here: that is memory per socket.
pub async fn serve<G: Send + 'static>(app: Arc<App>, stream: TcpStream, read_ahead: Bytes, socket: Socket, guards: G) {
    let (joined, waits) = join(&app, socket);
    Box::pin(replay(&app, &joined, waits)).await;
    let outbox = &joined.outbox;

    let (mut rd, wr) = stream.into_split();
    let liveness = Arc::new(Liveness { last_heard_us: AtomicU64::new(app.registry.now_us()) });
    let reader_done = CancellationToken::new();
    let writer_done = CancellationToken::new();
    let writer = app.tracker.spawn(write_loop(
        app.clone(),
        Arc::new(wr),
        outbox.clone(),
        liveness.clone(),
        reader_done.clone(),
        writer_done.clone(),
    ));

    let publisher = Publisher {
        app: &app,
        outbox,
        channels: &joined.publish,
        subscribed: &joined.subscribe,
        echo_filter: joined.echo_filter.as_deref(),
    };
    let reader = FrameReader::with_read_ahead(app.config.max_message_size, &read_ahead);
    drop(read_ahead);
    read_loop(&app, reader, &mut rd, &publisher, &liveness, &writer_done, joined.echo_test).await;
    reader_done.cancel();
    outbox.close(NORMAL);
    let _ = writer.await;
    drop(joined);
    drop(guards);
}

/// Reads the client's frames until it closes, breaks the protocol, or the writer is done.
async fn read_loop(
    app: &App,
    mut reader: FrameReader,
    rd: &mut OwnedReadHalf,
    publisher: &Publisher<'_>,
    liveness: &Liveness,
    writer_done: &CancellationToken,
    echo_test: bool,
) {
    let outbox = publisher.outbox;
    loop {
        // The read is only abandoned once the writer has finished the close handshake and the
        // socket is being torn down; FrameReader keeps its state across a cancelled read.
        let message = tokio::select! {
            biased;
            () = writer_done.cancelled() => break,
            m = reader.next_message(rd) => m,
        };
        liveness.last_heard_us.store(app.registry.now_us(), Ordering::Relaxed);
        match message {
            Ok(Message::Text(payload)) if echo_test => {
                outbox.push(frame::encode(OpCode::Text, &payload));
            }
            Ok(Message::Binary(payload)) if echo_test => {
                outbox.push(frame::encode(OpCode::Binary, &payload));
            }
            Ok(Message::Text(payload) | Message::Binary(payload)) => {
                app.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                Box::pin(publisher.on_client_message(payload)).await;
            }
            Ok(Message::Ping(payload)) => outbox.push_control(frame::encode(OpCode::Pong, &payload)),
            Ok(Message::Pong) => {}
            Ok(Message::Close(code)) => {
                // Echo the client's status code, as RFC 6455 suggests.
                outbox.close(CloseReason { code: code.unwrap_or(1000), reason: "" });
                break;
            }
            Err(ReadError::Gone) => break,
            Err(ReadError::Violation(v)) => {
                app.metrics.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(code = v.code, reason = v.reason, "closing socket for a protocol violation");
                outbox.close_now(CloseReason { code: v.code, reason: v.reason });
                break;
            }
        }
    }
}

/// Publishes a client's frames to its publish channels.
struct Publisher<'a> {
    app: &'a App,
    outbox: &'a Outbox,
    channels: &'a [ChannelName],
    subscribed: &'a [ChannelName],
    echo_filter: Option<&'a EchoFilter>,
}

impl Publisher<'_> {
    async fn on_client_message(&self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        if let Some(heartbeat) = &self.app.heartbeat_frame {
            if self.app.config.heartbeat.as_deref().map(str::as_bytes) == Some(&payload[..]) {
                self.outbox.push(heartbeat.clone());
                return;
            }
        }
        if self.channels.is_empty() {
            return;
        }
        let echoed: Vec<&ChannelName> = self.channels.iter().filter(|c| self.subscribed.contains(c)).collect();
        if let Some(filter) = self.echo_filter {
            for channel in &echoed {
                filter.expect(channel, payload.clone());
            }
        }
        if let Err(e) = self.app.store.publish(self.channels, &payload, self.app.config.expire).await {
            tracing::warn!("client publish failed: {e}");
            if let Some(filter) = self.echo_filter {
                for channel in &echoed {
                    filter.forget(channel, &payload);
                }
            }
            self.outbox.close_now(REDIS_UNAVAILABLE);
        }
    }
}

async fn write_loop(
    app: Arc<App>,
    wr: Arc<OwnedWriteHalf>,
    outbox: Outbox,
    liveness: Arc<Liveness>,
    reader_done: CancellationToken,
    writer_done: CancellationToken,
) {
    let config = &app.config;
    let mut batch = Batch::default();
    let mut last_write = Instant::now();
    let mut next_ping = Instant::now() + config.ping_interval;
    let mut ping_sent: Option<(Instant, u64)> = None;
    // Futures live across iterations so that a delivery costs no timer or waiter registration:
    // the timer is only re-armed when it fires (every deadline change happens there, except
    // `last_write` moving later, which only postpones the heartbeat).
    let first_deadline = match app.heartbeat_frame {
        Some(_) => next_ping.min(last_write + config.heartbeat_interval),
        None => next_ping,
    };
    let timer = tokio::time::sleep_until(first_deadline.into());
    tokio::pin!(timer);
    outbox.lend_socket(wr.clone());
    let close = loop {
        if outbox.take_batch(&mut batch, MAX_BATCH_BYTES) {
            let since = batch.pending_since_us;
            if !batch.frames.is_empty() {
                // A peer that stops reading blocks this write; an urgent close (its queue
                // overflowed, it stopped answering pings) abandons it and drops the connection,
                // since a close frame can no longer follow a half-written frame.
                // Boxed: the write's state (its readiness and urgent-close waiters) is only
                // held while writing, not by every idle writer task.
                let written = Box::pin(async {
                    tokio::select! {
                        r = write_all(&wr, &batch.frames) => r.is_ok(),
                        () = outbox.urgent() => {
                            tracing::debug!("abandoning a write the peer does not take");
                            false
                        }
                    }
                })
                .await;
                if !written {
                    break None;
                }
                last_write = Instant::now();
                if since != 0 {
                    app.metrics.observe_delivery(Duration::from_micros(app.registry.now_us().saturating_sub(since)));
                }
            }
            batch.frames.clear();
            if let Some(close) = batch.close.take() {
                break Some(close);
            }
            continue;
        }
        // Shutdown and the reader's end reach the writer through the outbox (`close`), so a
        // delivery wakes and polls nothing but these two.
        tokio::select! {
            biased;
            () = outbox.wait() => {}
            () = &mut timer => {
                let now = Instant::now();
                if let Some((sent, sent_us)) = ping_sent {
                    if liveness.last_heard_us.load(Ordering::Relaxed) > sent_us {
                        ping_sent = None;
                    } else if now >= sent + config.ping_timeout {
                        app.metrics.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                        outbox.close_now(PING_TIMEOUT);
                        timer.as_mut().reset((now + CLOSE_GRACE).into());
                        continue;
                    }
                }
                if let Some(heartbeat) = &app.heartbeat_frame {
                    // Deliveries the fan-out wrote directly count as writes too.
                    let direct_us = outbox.last_direct_us();
                    if direct_us != 0 {
                        let ago = Duration::from_micros(app.registry.now_us().saturating_sub(direct_us));
                        if let Some(direct) = now.checked_sub(ago) {
                            last_write = last_write.max(direct);
                        }
                    }
                    if now >= last_write + config.heartbeat_interval {
                        outbox.push(heartbeat.clone());
                        last_write = now;
                    }
                }
                if now >= next_ping {
                    next_ping = now + config.ping_interval;
                    if ping_sent.is_none() {
                        ping_sent = Some((now, app.registry.now_us()));
                        outbox.push_control(frame::encode(OpCode::Ping, b""));
                    }
                }
                let mut deadline = next_ping;
                if let Some((sent, _)) = ping_sent {
                    deadline = deadline.min(sent + config.ping_timeout);
                }
                if app.heartbeat_frame.is_some() {
                    deadline = deadline.min(last_write + config.heartbeat_interval);
                }
                timer.as_mut().reset(deadline.max(now + Duration::from_millis(1)).into());
            }
        }
    };
    outbox.take_back_socket();
    if let Some(close) = close {
        let close_frame = [frame::close(close.code, close.reason)];
        let sent =
            matches!(Box::pin(tokio::time::timeout(CLOSE_GRACE, write_all(&wr, &close_frame))).await, Ok(Ok(())));
        if sent && !reader_done.is_cancelled() {
            let _ = tokio::time::timeout(CLOSE_GRACE, reader_done.cancelled()).await;
        }
    }
    // The last owner of the write half: dropping it shuts the sending direction down.
    drop(wr);
    writer_done.cancel();
}

/// Writes all frames with as few vectored writes as the socket allows.
async fn write_all(wr: &OwnedWriteHalf, frames: &[Bytes]) -> std::io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < frames.len() {
        // On the heap, briefly: an array here would make every idle writer task 1 KiB larger.
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&frames[index][offset..])
            .chain(frames[index + 1..].iter().map(|f| &f[..]))
            .take(MAX_SLICES)
            .map(std::io::IoSlice::new)
            .collect();
        let mut written = match wr.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                drop(slices);
                wr.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < frames.len() && written >= frames[index].len() - offset {
            written -= frames[index].len() - offset;
            index += 1;
            offset = 0;
        }
        offset += written;
    }
    Ok(())
}

/// Counts the socket in the open-socket gauge for as long as it lives.
/// Also removes the socket from [`App::sockets`].
struct OpenGauge(Arc<App>, u64);

impl OpenGauge {
    fn new(app: Arc<App>, id: u64) -> OpenGauge {
        app.metrics.sockets_open.fetch_add(1, Ordering::Relaxed);
        OpenGauge(app, id)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.sockets.remove(self.1);
        self.0.metrics.sockets_open.fetch_sub(1, Ordering::Relaxed);
    }
}
