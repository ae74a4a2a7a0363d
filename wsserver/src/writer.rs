//! The socket writer: the only code that hands frames to the kernel. Two ways in, one owner of
//! the write half:
//!
//! - [`SocketWriter::try_write`]: one non-blocking vectored write of what an outbox has queued,
//!   made by a fan-out shard while the socket's write loop is idle (a direct write, see
//!   [`crate::outbox`]); what the kernel does not take stays queued.
//! - [`SocketWriter::write_all`]: the write loop's writes ([`crate::write_loop`]): a batch, or
//!   the close frame, waiting for the socket to become writable.
//!
//! The write loop owns the writer and attaches it to the socket's outbox for direct writes while
//! it runs ([`crate::outbox::Outbox::attach_writer`]); both paths take the outbox's frames in
//! order, and the outbox's `writing` flag keeps them from overlapping.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::tcp;

use crate::unix_socket::UnixWriteHalf;

/// Most frames one direct write carries.
const DIRECT_SLICES: usize = 16;
/// Most frames one vectored write of the write loop carries (the kernel's IOV_MAX is 1024).
const MAX_SLICES: usize = 64;

/// How far a [`SocketWriter::write_tracked`] got: whole frames written, and bytes of the next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    index: usize,
    offset: usize,
}

impl Progress {
    /// What of `frames` is not written yet (the first may be the rest of a frame), and whether
    /// that first one is partly written.
    pub fn unwritten(&self, frames: &[Bytes]) -> (Vec<Bytes>, bool) {
        let mut rest: Vec<Bytes> = frames.get(self.index..).unwrap_or_default().to_vec();
        if let Some(first) = rest.first_mut() {
            *first = first.slice(self.offset..);
        }
        (rest, self.offset > 0)
    }
}

/// The write half of one socket: from nginx over TCP or over a unix socket (registered for
/// readability only, see [`crate::unix_socket`]).
pub enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(UnixWriteHalf),
}

impl WriteHalf {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            WriteHalf::Tcp(h) => h.try_write(buf),
            WriteHalf::Unix(h) => h.try_write(buf),
        }
    }

    fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            WriteHalf::Tcp(h) => h.try_write_vectored(bufs),
            WriteHalf::Unix(h) => h.try_write_vectored(bufs),
        }
    }

    async fn writable(&self) -> std::io::Result<()> {
        match self {
            WriteHalf::Tcp(h) => h.writable().await,
            WriteHalf::Unix(h) => h.writable().await,
        }
    }
}

/// The write half of one socket.
pub struct SocketWriter {
    half: WriteHalf,
}

impl SocketWriter {
    pub fn new(half: WriteHalf) -> Arc<SocketWriter> {
        Arc::new(SocketWriter { half })
    }

    /// The write half back, once the writer has no other owner (a frozen socket).
    pub fn into_half(writer: Arc<SocketWriter>) -> Option<WriteHalf> {
        Arc::try_unwrap(writer).ok().map(|w| w.half)
    }

    /// Writes the front of `frames` (up to [`DIRECT_SLICES`]) without waiting. Returns the
    /// bytes the kernel took; `None` when it took none: WouldBlock, or an error the write loop
    /// meets on its next write and ends the connection for.
    pub fn try_write(&self, frames: &VecDeque<Bytes>) -> Option<usize> {
        let result = if frames.len() == 1 {
            self.half.try_write(&frames[0])
        } else {
            let mut slices = [std::io::IoSlice::new(&[]); DIRECT_SLICES];
            for (slice, frame) in slices.iter_mut().zip(frames) {
                *slice = std::io::IoSlice::new(frame);
            }
            self.half.try_write_vectored(&slices[..frames.len().min(DIRECT_SLICES)])
        };
        result.ok().filter(|n| *n > 0)
    }

    /// Writes all of `frames` with as few vectored writes as the socket allows.
    pub async fn write_all(&self, frames: &[Bytes]) -> std::io::Result<()> {
        self.write_tracked(frames, &mut Progress::default()).await
    }

    /// [`SocketWriter::write_all`], noting in `progress` how far it got: when the future is
    /// dropped midway (a live hand-off freezes the socket), [`Progress::unwritten`] is the
    /// rest, to be sent by whoever writes next.
    pub async fn write_tracked(&self, frames: &[Bytes], progress: &mut Progress) -> std::io::Result<()> {
        while progress.index < frames.len() {
            let (index, offset) = (progress.index, progress.offset);
            // On the heap, briefly: an array here would make every idle writer task 1 KiB larger.
            let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&frames[index][offset..])
                .chain(frames[index + 1..].iter().map(|f| &f[..]))
                .take(MAX_SLICES)
                .map(std::io::IoSlice::new)
                .collect();
            let mut written = match self.half.try_write_vectored(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drop(slices);
                    self.half.writable().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while progress.index < frames.len() && written >= frames[progress.index].len() - progress.offset {
                written -= frames[progress.index].len() - progress.offset;
                progress.index += 1;
                progress.offset = 0;
            }
            progress.offset += written;
        }
        Ok(())
    }

    /// Addresses of the write half and of its stream, only ever used as prefetch hints by the
    /// fan-out (see [`crate::outbox::Outbox::prefetch_socket`]).
    pub fn prefetch_hints(self: &Arc<Self>) -> [usize; 2] {
        let stream = match &self.half {
            WriteHalf::Tcp(h) => std::ptr::from_ref::<tokio::net::TcpStream>(h.as_ref()) as usize,
            WriteHalf::Unix(h) => h.as_ptr(),
        };
        [Arc::as_ptr(self) as usize, stream]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A connected loopback pair: this side's writer, the peer, and this side's read half.
    pub(crate) async fn socket_pair() -> (Arc<SocketWriter>, tokio::net::TcpStream, tokio::net::tcp::OwnedReadHalf) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        (SocketWriter::new(WriteHalf::Tcp(write)), client, read)
    }

    pub(crate) async fn read_exactly(peer: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut buf)).await.unwrap().unwrap();
        buf
    }

    #[tokio::test]
    async fn a_direct_write_takes_the_front_frames_in_order() {
        let (writer, mut peer, _read) = socket_pair().await;
        let frames: VecDeque<Bytes> = ["a", "bc", "def"].map(Bytes::from).into();
        assert_eq!(writer.try_write(&frames), Some(6));
        assert_eq!(read_exactly(&mut peer, 6).await, b"abcdef");
        assert_eq!(writer.try_write(&VecDeque::from([Bytes::from_static(b"x")])), Some(1));
        assert_eq!(read_exactly(&mut peer, 1).await, b"x");
    }

    #[tokio::test]
    async fn writes_reach_a_unix_socket_peer() {
        let (server, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = crate::unix_socket::split(server).unwrap();
        let writer = SocketWriter::new(WriteHalf::Unix(write));
        assert_eq!(writer.try_write(&VecDeque::from(["ab", "c"].map(Bytes::from))), Some(3));
        writer.write_all(&[Bytes::from_static(b"de")]).await.unwrap();
        let mut buf = [0; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"abcde");
    }

    #[tokio::test]
    async fn a_write_dropped_midway_knows_what_is_left() {
        let (writer, mut peer, _read) = socket_pair().await;
        // More than the kernel takes while the peer reads nothing.
        let frames: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
        let mut progress = Progress::default();
        let stalled =
            tokio::time::timeout(std::time::Duration::from_millis(300), writer.write_tracked(&frames, &mut progress))
                .await;
        assert!(stalled.is_err(), "the peer reads nothing: the write stalls");
        let (rest, partial) = progress.unwritten(&frames);
        assert!(!rest.is_empty() && rest.len() < frames.len());
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        writer.write_all(&rest).await.unwrap();
        drop(writer);
        let all = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.unwrap().unwrap();
        assert!(all == frames.concat(), "the rest completes the stream exactly (partial: {partial})");
    }

    #[tokio::test]
    async fn write_all_waits_for_a_full_socket_and_keeps_order() {
        let (writer, mut peer, _read) = socket_pair().await;
        // More than the kernel's buffers take at once, in more frames than one vectored write.
        let frames: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        writer.write_all(&frames).await.unwrap();
        drop(writer);
        let all = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.unwrap().unwrap();
        assert!(all == frames.concat(), "every byte once, in order");
    }
}
