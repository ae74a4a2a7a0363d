//! A websocket's unix socket (nginx on this host) registered with the reactor for readability
//! only. tokio registers every socket for both directions, edge-triggered, and the kernel
//! reports a unix socket writable every time its reader takes data out of it: behind nginx that
//! is an epoll event in wsserver, often a reactor wake-up, for every frame nginx forwards, which
//! nobody waits for (writes are attempted directly and only wait when the socket is full).
//! Here writability is asked for only while a write waits for room, through a registration of a
//! duplicate descriptor that lasts as long as that wait.
//!
//! TCP sockets stay tokio's: TCP reports writability only after a write found the buffer full.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// Splits an accepted unix stream into halves whose registration asks for readability only.
pub fn split(stream: tokio::net::UnixStream) -> io::Result<(UnixReadHalf, UnixWriteHalf)> {
    // into_std leaves the reactor and keeps the descriptor non-blocking.
    let fd = Arc::new(register(stream.into_std()?, Interest::READABLE)?);
    Ok((UnixReadHalf(fd.clone()), UnixWriteHalf { fd, shut_on_drop: true }))
}

/// Registers `stream` with the current reactor for `interest` only.
#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a std UnixStream owns its descriptor and closes it only when dropped, which the
    // AsyncFd that owns it does after deregistering; it never replaces it, so every
    // `as_raw_fd` returns the registered descriptor.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

/// The read half: an [`AsyncRead`] over the readability-only registration.
pub struct UnixReadHalf(Arc<AsyncFd<UnixStream>>);

impl UnixReadHalf {
    /// Puts the halves of one socket back together as a tokio stream, without shutting down
    /// the writing direction (a socket frozen for a hand-off stays open for the new process).
    /// Fails when the halves are of different sockets, or the registration cannot be undone.
    pub fn reunite(self, mut write: UnixWriteHalf) -> io::Result<tokio::net::UnixStream> {
        if !Arc::ptr_eq(&self.0, &write.fd) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "halves of different unix sockets"));
        }
        write.shut_on_drop = false;
        drop(write);
        let registration =
            Arc::try_unwrap(self.0).map_err(|_| io::Error::other("unix socket still shared by a writer"))?;
        tokio::net::UnixStream::from_std(registration.into_inner())
    }
}

impl AsyncRead for UnixReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The write half: non-blocking writes straight to the descriptor; [`UnixWriteHalf::writable`]
/// waits for room through a registration made for that wait only. Dropping it shuts the
/// writing direction down, as tokio's write halves do.
pub struct UnixWriteHalf {
    fd: Arc<AsyncFd<UnixStream>>,
    /// False once [`UnixReadHalf::reunite`] takes the socket back whole.
    shut_on_drop: bool,
}

impl UnixWriteHalf {
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().write(buf)
    }

    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.fd.get_ref().write_vectored(bufs)
    }

    /// Resolves once the socket has room (or an error or hang-up to report on the next write).
    /// Registers a duplicate of the descriptor for writability for the length of the wait: the
    /// kernel reports the current state on registration, so no wake-up between the failed
    /// write and this call is missed. Costs two `epoll_ctl` calls and a `dup`, only when a
    /// write found the socket full.
    pub async fn writable(&self) -> io::Result<()> {
        let waiter = register(self.fd.get_ref().try_clone()?, Interest::WRITABLE)?;
        let _ready = waiter.writable().await?;
        Ok(())
    }

    /// The address of the shared registration, only for prefetch hints.
    pub fn as_ptr(&self) -> usize {
        Arc::as_ptr(&self.fd) as usize
    }
}

impl Drop for UnixWriteHalf {
    fn drop(&mut self) {
        if self.shut_on_drop {
            let _ = self.fd.get_ref().shutdown(Shutdown::Write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;

    /// The events every epoll instance of this process is registered for on descriptor `fd`
    /// (from /proc/self/fdinfo of each eventpoll descriptor), or-ed together.
    fn registered_events(fd: i32) -> Option<u32> {
        let mut found = None;
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_epoll = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().contains("eventpoll"));
            if !is_epoll {
                continue;
            }
            let Ok(info) =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy()))
            else {
                continue;
            };
            for line in info.lines() {
                let mut words = line.split_whitespace();
                if words.next() == Some("tfd:") && words.next() == Some(&fd.to_string()) {
                    let events = words.nth(1).and_then(|e| u32::from_str_radix(e, 16).ok()).unwrap_or(0);
                    found = Some(found.unwrap_or(0) | events);
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn registered_for_readability_only() {
        let (server, _peer) = tokio::net::UnixStream::pair().unwrap();
        let fd = server.as_raw_fd();
        let tokio_events = registered_events(fd).expect("tokio registers the stream");
        assert_ne!(tokio_events & EPOLLOUT, 0, "tokio's own registration asks for writability");
        let (_read, write) = split(server).unwrap();
        assert_eq!(write.fd.as_raw_fd(), fd);
        let events = registered_events(fd).expect("registered");
        assert_ne!(events & EPOLLIN, 0);
        assert_eq!(events & EPOLLOUT, 0, "no writability events: {events:#x}");
    }

    #[tokio::test]
    async fn a_full_socket_waits_for_room_and_then_drops_the_extra_registration() {
        let (server, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = split(server).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        loop {
            match write.try_write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let wait = write.writable();
        tokio::pin!(wait);
        let still_full = tokio::time::timeout(std::time::Duration::from_millis(50), &mut wait).await;
        assert!(still_full.is_err(), "a full socket is not writable");
        let mut sink = vec![0u8; written];
        peer.read_exact(&mut sink).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait).await.expect("room after the peer read").unwrap();
        assert!(write.try_write(b"more").unwrap() > 0);
        let dups_with_writability = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|fd| *fd != peer.as_raw_fd())
            .filter(|fd| registered_events(*fd).is_some_and(|ev| ev & EPOLLOUT != 0))
            .count();
        assert_eq!(dups_with_writability, 0, "the wait's registration is gone with it");
    }

    #[tokio::test]
    async fn reads_what_the_peer_wrote_and_dropping_the_writer_ends_the_peers_reads() {
        let (server, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let (mut read, write) = split(server).unwrap();
        peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(std::time::Duration::from_secs(5), read.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(write.try_write(b"pong").unwrap(), 4);
        drop(write);
        let mut all = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_to_end(&mut all)).await.unwrap().unwrap();
        assert_eq!(all, b"pong", "EOF after the write half is dropped, the read half still open");
    }

    #[tokio::test]
    async fn reunited_halves_leave_the_connection_open_and_whole() {
        let (server, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let (read, write) = split(server).unwrap();
        assert_eq!(write.try_write(b"one").unwrap(), 3);
        let mut whole = read.reunite(write).unwrap();
        whole.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 6];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"onetwo", "no shutdown between the halves and the reunited stream");
        peer.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(std::time::Duration::from_secs(5), whole.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(&back, b"back");
    }

    #[tokio::test]
    async fn halves_of_different_sockets_are_not_reunited() {
        let (a, _pa) = tokio::net::UnixStream::pair().unwrap();
        let (b, _pb) = tokio::net::UnixStream::pair().unwrap();
        let (read_a, _write_a) = split(a).unwrap();
        let (_read_b, write_b) = split(b).unwrap();
        assert_eq!(read_a.reunite(write_b).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
