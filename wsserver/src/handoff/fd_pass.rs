//! Descriptors passed between processes: length-prefixed messages on a unix stream socket, each
//! carrying up to [`MAX_FDS`] descriptors as `SCM_RIGHTS` ancillary data on its first bytes.
//!
//! The standard library's ancillary-data API is unstable, so the two system calls are made
//! through `libc` (already in the dependency graph through tokio and mio) in the only
//! `#[allow(unsafe_code)]` block of this module; a crate such as `nix` or `sendfd` would add
//! a dependency for two calls. Sockets are blocking `std` streams: the hand-off runs on its
//! own blocking thread.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;
/// Largest message accepted, so a confused peer cannot make the reader allocate without bound.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    #[error("hand-off socket: {0}")]
    Io(#[from] io::Error),
    #[error("hand-off message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("hand-off message carries more than {MAX_FDS} descriptors")]
    TooManyFds,
    #[error("hand-off peer closed the socket")]
    Closed,
}

/// Sends `payload` with `fds` attached. Returns once every byte is in the socket.
pub fn send(stream: &mut UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), FdPassError> {
    if fds.len() > MAX_FDS {
        return Err(FdPassError::TooManyFds);
    }
    if payload.len() > MAX_MESSAGE {
        return Err(FdPassError::TooLarge(payload.len()));
    }
    let mut message = Vec::with_capacity(4 + payload.len());
    message.extend_from_slice(&u32::try_from(payload.len()).expect("under MAX_MESSAGE").to_be_bytes());
    message.extend_from_slice(payload);
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = sendmsg_fds(stream.as_raw_fd(), &message, &raw)?;
    stream.write_all(&message[sent..])?;
    Ok(())
}

/// Receives one message and the descriptors that came with it (owned by the caller from here).
pub fn recv(stream: &mut UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), FdPassError> {
    let mut fds = Vec::new();
    let mut header = [0u8; 4];
    let mut got = 0;
    // The descriptors arrive with the message's first bytes, so its header is read with
    // recvmsg; the kernel never joins bytes carrying descriptors to bytes read before them.
    while got < header.len() {
        let n = recvmsg_fds(stream.as_raw_fd(), &mut header[got..], &mut fds)?;
        if n == 0 {
            return Err(FdPassError::Closed);
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_MESSAGE {
        return Err(FdPassError::TooLarge(len));
    }
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FdPassError::Closed,
        _ => FdPassError::Io(e),
    })?;
    Ok((payload, fds))
}

/// Lets `fd` survive `exec` (clears close-on-exec): the hand-off socket's end for the new
/// process, set just before it is spawned. Only this process's own descriptor is touched.
#[allow(unsafe_code)]
pub fn inheritable(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor the borrow keeps open; no memory is involved.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of the hand-off socket inherited at `fd` (named by `CRIER_HANDOFF_FD`),
/// after checking that it is an open unix stream socket; sets close-on-exec again.
#[allow(unsafe_code)]
pub fn adopt_inherited(fd: RawFd) -> io::Result<UnixStream> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`; a closed or foreign number
    // fails with EBADF/ENOTSOCK and is then never owned.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, std::ptr::addr_of_mut!(kind).cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if kind != libc::SOCK_STREAM {
        return Err(io::Error::other("the inherited hand-off descriptor is not a stream socket"));
    }
    // SAFETY: the descriptor is open (checked above) and was passed to this process for it
    // alone; nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: as in `inheritable`.
    if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

/// Bytes of control buffer for [`MAX_FDS`] descriptors.
#[allow(unsafe_code)]
fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size (libc declares it unsafe).
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// One `sendmsg` carrying `fds`; returns the bytes the kernel took (at least one unless
/// `data` is empty).
#[allow(unsafe_code)]
fn sendmsg_fds(socket: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut control = vec![0u8; cmsg_space()];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain data; every pointer set below points into `iov`, `control` or
    // `data`, which outlive the call. The control buffer is CMSG_SPACE(MAX_FDS) bytes and
    // `fds.len() <= MAX_FDS`, so the one header and its descriptors fit.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let fd_bytes = std::mem::size_of_val(fds);
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
        }
        loop {
            let n = libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// One `recvmsg` into `buf`; descriptors received are appended to `fds` (close-on-exec set).
#[allow(unsafe_code)]
fn recvmsg_fds(socket: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut control = vec![0u8; cmsg_space()];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as in `sendmsg_fds`; the kernel writes at most `msg_controllen` bytes of control
    // data and sets MSG_CTRUNC if more were sent (then the extra descriptors were closed by
    // the kernel and this is an error). Each received descriptor is new to this process and
    // owned by nobody else, so wrapping it in OwnedFd is sound.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        let n = loop {
            let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("descriptors truncated"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_tcp_connection_crosses_with_its_message_and_stays_usable() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // More than the socket buffers hold: the receiver reads while the sender writes.
        let receiver = std::thread::spawn(move || (recv(&mut b).unwrap(), recv(&mut b).unwrap()));
        send(&mut a, b"first", &[server.as_fd()]).unwrap();
        send(&mut a, &vec![7u8; 300_000], &[]).unwrap();
        drop(server);
        let ((payload, fds), (big, none)) = receiver.join().unwrap();
        assert_eq!(payload, b"first");
        assert_eq!(fds.len(), 1);
        assert_eq!(big.len(), 300_000);
        assert!(none.is_empty());
        let mut received = std::net::TcpStream::from(fds.into_iter().next().unwrap());
        received.write_all(b"hello").unwrap();
        let mut buf = [0; 5];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn a_closed_peer_and_an_oversized_header_are_errors() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(recv(&mut b), Err(FdPassError::TooLarge(_))));
        drop(a);
        assert!(matches!(recv(&mut b), Err(FdPassError::Closed)));
    }
}
