//! A socket's write loop, one task per socket: takes the outbox's batches and hands them to the
//! socket's [`SocketWriter`], queues pings and heartbeats when [`Keepalive`] says so, abandons
//! a write the peer does not take when the socket must close urgently, and ends with the close
//! handshake. While it runs, the fan-out may write to the socket directly (see
//! [`crate::outbox`]); the loop attaches its writer for that and detaches it before the close.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::close::PING_TIMEOUT;
use crate::frame::{self, OpCode};
use crate::keepalive::{Keepalive, Liveness, Tick};
use crate::outbox::{Batch, Outbox};
use crate::writer::{Progress, SocketWriter};

/// How a batch's write ended.
enum Written {
    Done(bool),
    Frozen,
}

/// Most bytes one vectored write carries.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How long the write loop waits for the client's close reply after sending its close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs until the socket closed, or until a live hand-off froze it at a frame boundary (then
/// the writer comes back, detached, for the hand-off); cancels `writer_done` either way.
/// `reader_done` tells it that the client's side ended (no close reply will come).
///
/// A block capturing its arguments rather than an `async fn` (which lays its arguments out
/// twice in the future): every byte the future holds is memory per socket.
#[expect(clippy::manual_async_fn, reason = "an async fn lays its arguments out twice in its future")]
pub fn write_loop(
    app: Arc<App>,
    writer: Arc<SocketWriter>,
    outbox: Outbox,
    liveness: Arc<Liveness>,
    reader_done: CancellationToken,
    writer_done: CancellationToken,
) -> impl std::future::Future<Output = Option<Arc<SocketWriter>>> + Send + 'static {
    async move {
        let mut batch = Batch::default();
        // The timing is borrowed from `app` at each use rather than kept: every byte this future
        // holds across an await is memory per socket.
        let mut keepalive = Keepalive::new(Instant::now(), app.keepalive_timing());
        // Futures live across iterations so that a delivery costs no timer or waiter registration:
        // the timer is only re-armed when it fires (see `crate::keepalive`).
        let timer = tokio::time::sleep_until(keepalive.first_deadline(app.keepalive_timing()));
        tokio::pin!(timer);
        outbox.attach_writer(writer.clone());
        let close = loop {
            if outbox.take_batch(&mut batch, MAX_BATCH_BYTES) {
                if std::mem::take(&mut batch.freeze) {
                    outbox.detach_writer();
                    writer_done.cancel();
                    return Some(writer);
                }
                let since = batch.pending_since_us;
                if !batch.frames.is_empty() {
                    // A peer that stops reading blocks this write; an urgent close (its queue
                    // overflowed, it stopped answering pings) abandons it and drops the connection,
                    // since a close frame can no longer follow a half-written frame.
                    // Boxed: the write's state (its readiness and urgent-close waiters) is only
                    // held while writing, not by every idle write loop.
                    let mut progress = Progress::default();
                    let written = Box::pin(async {
                        tokio::select! {
                            r = writer.write_tracked(&batch.frames, &mut progress) => Written::Done(r.is_ok()),
                            () = outbox.urgent() => {
                                tracing::debug!("abandoning a write the peer does not take");
                                Written::Done(false)
                            }
                            // A live hand-off does not wait for a peer that does not read: the
                            // rest of the batch goes back to the front of the queue.
                            () = outbox.freeze_wanted() => Written::Frozen,
                        }
                    })
                    .await;
                    match written {
                        Written::Done(true) => {}
                        Written::Done(false) => break None,
                        Written::Frozen => {
                            let (rest, partial) = progress.unwritten(&batch.frames);
                            outbox.requeue_unwritten(rest, partial);
                            batch.frames.clear();
                            batch.close = None;
                            continue;
                        }
                    }
                    keepalive.wrote(Instant::now());
                    if since != 0 {
                        app.metrics
                            .observe_delivery(Duration::from_micros(app.registry.now_us().saturating_sub(since)));
                    }
                }
                batch.frames.clear();
                if let Some(close) = batch.close.take() {
                    break Some(close);
                }
                continue;
            }
            // Shutdown and the reader's end reach the write loop through the outbox (`close`), so
            // a delivery wakes and polls nothing but these two.
            tokio::select! {
                biased;
                () = outbox.wait() => {}
                () = &mut timer => {
                    let now = Instant::now();
                    let now_us = app.registry.now_us();
                    let direct_us = outbox.last_direct_us();
                    let last_direct = (direct_us != 0)
                        .then(|| now.checked_sub(Duration::from_micros(now_us.saturating_sub(direct_us))))
                        .flatten();
                    let heard_us = liveness.last_heard_us.load(Ordering::Relaxed);
                    match keepalive.on_timer(app.keepalive_timing(), now, now_us, heard_us, last_direct, CLOSE_GRACE) {
                        Tick::PingTimedOut { next } => {
                            app.metrics.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                            outbox.close_now(PING_TIMEOUT);
                            timer.as_mut().reset(next);
                        }
                        Tick::Send { heartbeat, ping, next } => {
                            if let (true, Some(hb)) = (heartbeat, &app.heartbeat) {
                                // Through the slow-consumer policy like every data frame.
                                outbox.push(hb.frame().clone());
                            }
                            if ping {
                                outbox.push_control(frame::encode(OpCode::Ping, b""));
                            }
                            timer.as_mut().reset(next);
                        }
                    }
                }
            }
        };
        outbox.detach_writer();
        if let Some(close) = close {
            let close_frame = [frame::close(close.code, close.reason)];
            let sent =
                matches!(Box::pin(tokio::time::timeout(CLOSE_GRACE, writer.write_all(&close_frame))).await, Ok(Ok(())));
            if sent && !reader_done.is_cancelled() {
                let _ = tokio::time::timeout(CLOSE_GRACE, reader_done.cancelled()).await;
            }
        }
        // The last owner of the write half: dropping it shuts the sending direction down.
        drop(writer);
        writer_done.cancel();
        None
    }
}
