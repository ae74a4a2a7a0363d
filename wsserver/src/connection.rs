//! One websocket's life after the upgrade: [`crate::join`] (registry, presence, replay), then
//! two halves until the close handshake is done: the read loop ([`crate::read_loop`], this
//! task) and the write loop ([`crate::write_loop`], its own task). Kernel writes only happen in
//! [`crate::writer`]; everything else reaches the socket through its outbox.
//!
//! A live hand-off ([`crate::handoff`]) freezes both halves at a frame boundary: the stream is
//! put back together and offered to the new process; if it is not taken the halves run again
//! on the same socket state.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use service::listen::Stream;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use crate::app::App;
pub use crate::close::GOING_AWAY;
use crate::close::NORMAL;
use crate::frame_reader::FrameReader;
use crate::handoff::give::Offered;
pub use crate::join::Socket;
use crate::join::{join, replay, Joined};
use crate::keepalive::Liveness;
use crate::publisher::Publisher;
use crate::read_loop::read_loop;
use crate::write_loop::write_loop;
use crate::writer::{SocketWriter, WriteHalf};

/// A joined socket's state, kept across a freeze: what a hand-off captures, and what the
/// halves resume with when the socket stays.
pub struct Live {
    /// As the handshake resolved it (a hand-off sends it along).
    pub socket: Socket,
    pub joined: Joined,
    pub reader: FrameReader,
    pub liveness: Arc<Liveness>,
}

/// Serves one upgraded socket: joins it (registry, presence, replay) in the upgrade's task,
/// then [`spawn`]s the task that runs it until it closes. `read_ahead` holds what the client
/// sent after its upgrade request in the same read. `guards` (the connection permit and the
/// per-address slot) are held for the socket's whole life.
pub async fn serve<G: Send + 'static>(app: Arc<App>, stream: Stream, read_ahead: Bytes, socket: Socket, guards: G) {
    let kept = socket.clone();
    let (joined, waits) = join(&app, socket, None);
    replay(&app, &joined, waits).await;
    let reader = FrameReader::with_read_ahead(app.config.max_message_size, &read_ahead);
    drop(read_ahead);
    let liveness = Arc::new(Liveness { last_heard_us: AtomicU64::new(app.registry.now_us()) });
    spawn(app, stream, Live { socket: kept, joined, reader, liveness }, guards);
}

/// Spawns the task that runs a joined socket (just upgraded, or taken from another process)
/// until it closes or is handed to a new process.
///
/// A task of its own, started once the setup is done, so that it holds exactly the socket's
/// state: the setup's task (the upgrade, the handshake's results, the replay) ends here. Both
/// in one task made every idle socket's task 2.5 KB, the size of every await of the setup.
pub fn spawn<G: Send + 'static>(app: Arc<App>, stream: Stream, live: Live, guards: G) {
    let tracker = app.tracker.clone();
    tracker.spawn(run(app, stream, live, guards));
}

/// Runs a socket's two halves until it closes or a hand-off takes it. A block capturing its
/// arguments rather than an `async fn`, whose arguments the compiler lays out twice in the
/// future (as arguments and as locals): bytes per socket.
#[expect(clippy::manual_async_fn, reason = "an async fn lays its arguments out twice in its future")]
fn run<G: Send + 'static>(
    app: Arc<App>,
    mut stream: Stream,
    mut live: Live,
    guards: G,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        loop {
            let frozen = match stream {
                Stream::Tcp(s) => {
                    let (rd, wr) = s.into_split();
                    match serve_halves(&app, rd, WriteHalf::Tcp(wr), &mut live).await {
                        Some((rd, WriteHalf::Tcp(wr))) => rd.reunite(wr).ok().map(Stream::Tcp),
                        _ => None,
                    }
                }
                Stream::Unix(s) => {
                    // Not matched in place: the match's scrutinee would be kept across the await.
                    let (rd, wr) = match crate::unix_socket::split(s) {
                        Ok(halves) => halves,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not register an upgraded unix socket; dropping it");
                            break;
                        }
                    };
                    match serve_halves(&app, rd, WriteHalf::Unix(wr), &mut live).await {
                        Some((rd, WriteHalf::Unix(wr))) => rd.reunite(wr).ok().map(Stream::Unix),
                        _ => None,
                    }
                }
            };
            let Some(frozen) = frozen else { break };
            match Box::pin(crate::handoff::give::offer(&app, &frozen, &live)).await {
                // The new process holds its own descriptor of the connection: closing this one
                // (no shutdown) leaves the connection open.
                Offered::Handed => break,
                Offered::Stay => live.joined.outbox.thaw(),
                Offered::Close => {
                    live.joined.outbox.thaw();
                    live.joined.outbox.close(GOING_AWAY);
                }
            }
            stream = frozen;
        }
        drop(live);
        drop(guards);
    }
}

/// Runs the halves until the socket closes (`None`) or is frozen for a hand-off (the halves).
async fn serve_halves<R: AsyncRead + Unpin>(
    app: &Arc<App>,
    mut rd: R,
    wr: WriteHalf,
    live: &mut Live,
) -> Option<(R, WriteHalf)> {
    let outbox = &live.joined.outbox;
    let reader_done = CancellationToken::new();
    let writer_done = CancellationToken::new();
    let writer = app.tracker.spawn(write_loop(
        app.clone(),
        SocketWriter::new(wr),
        outbox.clone(),
        live.liveness.clone(),
        reader_done.clone(),
        writer_done.clone(),
    ));

    let publisher = Publisher {
        app,
        history: app.history.settings().enabled(&live.joined.facility),
        outbox,
        channels: &live.joined.publish,
        subscribed: live.joined.subscribe(),
        echo_filter: live.joined.echo_filter.as_deref(),
    };
    read_loop(app, &mut live.reader, &mut rd, &publisher, &live.liveness, &writer_done, live.joined.echo_test).await;
    if !writer_done.is_cancelled() {
        reader_done.cancel();
        outbox.close(NORMAL);
    }
    let frozen = writer.await.ok().flatten()?;
    Some((rd, SocketWriter::into_half(frozen)?))
}
