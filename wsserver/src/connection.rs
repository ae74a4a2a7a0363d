//! One websocket's life after the upgrade: [`crate::join`] (registry, presence, replay), then
//! two halves until the close handshake is done: the read loop ([`crate::read_loop`], this
//! task) and the write loop ([`crate::write_loop`], its own task). Kernel writes only happen in
//! [`crate::writer`]; everything else reaches the socket through its outbox.

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
pub use crate::join::Socket;
use crate::join::{join, replay};
use crate::keepalive::Liveness;
use crate::publisher::Publisher;
use crate::read_loop::read_loop;
use crate::write_loop::write_loop;
use crate::writer::{SocketWriter, WriteHalf};

/// Serves one upgraded socket until it closes. `read_ahead` holds what the client sent after
/// its upgrade request in the same read. `guards` (the connection permit and the per-address
/// slot) are held for the socket's whole life.
///
/// Setup and publishing run in boxed futures, so the task of an idle socket only holds the
/// small read state, not the largest state of every await here: that is memory per socket.
pub async fn serve<G: Send + 'static>(app: Arc<App>, stream: Stream, read_ahead: Bytes, socket: Socket, guards: G) {
    match stream {
        Stream::Tcp(s) => {
            let (rd, wr) = s.into_split();
            serve_halves(app, rd, WriteHalf::Tcp(wr), read_ahead, socket, guards).await;
        }
        Stream::Unix(s) => match crate::unix_socket::split(s) {
            Ok((rd, wr)) => serve_halves(app, rd, WriteHalf::Unix(wr), read_ahead, socket, guards).await,
            Err(e) => tracing::warn!(error = %e, "could not register an upgraded unix socket; dropping it"),
        },
    }
}

async fn serve_halves<R: AsyncRead + Unpin, G: Send + 'static>(
    app: Arc<App>,
    mut rd: R,
    wr: WriteHalf,
    read_ahead: Bytes,
    socket: Socket,
    guards: G,
) {
    let (joined, waits) = join(&app, socket);
    Box::pin(replay(&app, &joined, waits)).await;
    let outbox = &joined.outbox;

    let liveness = Arc::new(Liveness { last_heard_us: AtomicU64::new(app.registry.now_us()) });
    let reader_done = CancellationToken::new();
    let writer_done = CancellationToken::new();
    let writer = app.tracker.spawn(write_loop(
        app.clone(),
        SocketWriter::new(wr),
        outbox.clone(),
        liveness.clone(),
        reader_done.clone(),
        writer_done.clone(),
    ));

    let publisher = Publisher {
        app: &app,
        history: app.history.settings().enabled(&joined.facility),
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
