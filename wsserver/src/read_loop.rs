//! A socket's read loop: the client's frames until it closes, breaks the protocol, or the write
//! loop is done. Pings are answered through the outbox's control queue, messages go to the
//! [`Publisher`] (or are echoed on the echo-test facility), and every frame counts as a sign of
//! life for the ping timeout.

use std::sync::atomic::Ordering;

use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::frame::{self, OpCode};
use crate::frame_reader::{FrameReader, Message, ReadError};
use crate::keepalive::Liveness;
use crate::outbox::CloseReason;
use crate::publisher::Publisher;

/// Reads until the client closes, breaks the protocol, or `writer_done` fires (then `reader`
/// keeps a frame partway read, for a live hand-off).
pub async fn read_loop<R: AsyncRead + Unpin>(
    app: &App,
    reader: &mut FrameReader,
    rd: &mut R,
    publisher: &Publisher<'_>,
    liveness: &Liveness,
    writer_done: &CancellationToken,
    echo_test: bool,
) {
    let outbox = publisher.outbox;
    loop {
        // The read is only abandoned once the write loop has finished the close handshake and
        // the socket is being torn down; FrameReader keeps its state across a cancelled read.
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
