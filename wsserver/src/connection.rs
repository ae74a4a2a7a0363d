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

/// Serves one upgraded socket until it closes or is handed to a new process. `read_ahead`
/// holds what the client sent after its upgrade request in the same read. `guards` (the
/// connection permit and the per-address slot) are held for the socket's whole life here.
///
/// Setup and publishing run in boxed futures, so the task of an idle socket only holds the
/// small read state, not the largest state of every await here: that is memory per socket.
pub async fn serve<G: Send + 'static>(app: Arc<App>, stream: Stream, read_ahead: Bytes, socket: Socket, guards: G) {
    run(app, stream, Start::Fresh { socket, read_ahead }, guards).await;
}

/// Where [`run`] starts a socket: just upgraded (join and replay first), or taken over from
/// another process with its state (boxed: only taken sockets pay for it, and the state is not
/// laid out twice in every socket's task).
pub enum Start {
    Fresh { socket: Socket, read_ahead: Bytes },
    Taken(Box<Live>),
}

/// Runs a socket's two halves until it closes or a hand-off takes it. One future for the whole
/// life (setup included): a second, boxed future holding the socket's state beside this one
/// made every idle socket 1.4 KB larger.
pub async fn run<G: Send + 'static>(app: Arc<App>, mut stream: Stream, start: Start, guards: G) {
    let mut live = match start {
        Start::Taken(live) => *live,
        Start::Fresh { socket, read_ahead } => {
            let kept = socket.clone();
            let (joined, waits) = join(&app, socket, None);
            Box::pin(replay(&app, &joined, waits)).await;
            let reader = FrameReader::with_read_ahead(app.config.max_message_size, &read_ahead);
            drop(read_ahead);
            let liveness = Arc::new(Liveness { last_heard_us: AtomicU64::new(app.registry.now_us()) });
            Live { socket: kept, joined, reader, liveness }
        }
    };
    loop {
        let frozen = match stream {
            Stream::Tcp(s) => {
                let (rd, wr) = s.into_split();
                match serve_halves(&app, rd, WriteHalf::Tcp(wr), &mut live).await {
                    Some((rd, WriteHalf::Tcp(wr))) => rd.reunite(wr).ok().map(Stream::Tcp),
                    _ => None,
                }
            }
            Stream::Unix(s) => match crate::unix_socket::split(s) {
                Ok((rd, wr)) => match serve_halves(&app, rd, WriteHalf::Unix(wr), &mut live).await {
                    Some((rd, WriteHalf::Unix(wr))) => rd.reunite(wr).ok().map(Stream::Unix),
                    _ => None,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "could not register an upgraded unix socket; dropping it");
                    None
                }
            },
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
        subscribed: &live.joined.subscribe,
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
