//! Listening sockets inherited from systemd (socket activation, `sd_listen_fds(3)`):
//! `LISTEN_PID` must be this process, `LISTEN_FDS` counts descriptors from 3 on,
//! `LISTEN_FDNAMES` names them (`FileDescriptorName=` of the `.socket` unit).

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockRef, Socket, Type};

use super::{ListenError, Listener};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More inherited sockets than this is a broken environment, not a configuration.
const MAX_FDS: usize = 1024;

/// Set once the inherited descriptors are owned, so that they are never owned (and closed) twice.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The inherited listeners, one list per name of `names`; unnamed sockets go to the first.
pub(super) fn take(names: &[&str]) -> Result<Vec<Vec<Listener>>, ListenError> {
    let mut by_name: Vec<Vec<Listener>> = names.iter().map(|_| Vec::new()).collect();
    let var = |key| std::env::var(key).ok();
    let passed = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
    .map_err(ListenError::Systemd)?;
    let Some(passed) = passed else { return Ok(by_name) };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(by_name);
    }
    let mut slots = Vec::with_capacity(passed.len());
    for name in &passed {
        let slot = match name {
            None => 0,
            Some(name) => names.iter().position(|n| n == name).ok_or_else(|| {
                ListenError::Systemd(format!(
                    "systemd passed a socket named {name:?}; this program takes {}",
                    names.join(", ")
                ))
            })?,
        };
        slots.push(slot);
    }
    for (index, slot) in slots.into_iter().enumerate() {
        let fd = FIRST_FD + RawFd::try_from(index).expect("at most MAX_FDS");
        by_name[slot].push(adopt(fd).map_err(ListenError::Systemd)?);
    }
    Ok(by_name)
}

/// The names of the sockets systemd passed to `my_pid` (`None`: unnamed), or `None` when
/// nothing was passed to this process (a `LISTEN_PID` of another process is its parent's).
fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    my_pid: u32,
) -> Result<Option<Vec<Option<String>>>, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else { return Ok(None) };
    let pid: u32 = pid.trim().parse().map_err(|_| format!("LISTEN_PID={pid:?} is not a process id"))?;
    if pid != my_pid {
        return Ok(None);
    }
    let count: usize = fds.trim().parse().map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    if count == 0 {
        return Ok(None);
    }
    if count > MAX_FDS {
        return Err(format!("LISTEN_FDS={count}: more than {MAX_FDS} sockets"));
    }
    let Some(names) = names else { return Ok(Some(vec![None; count])) };
    let names: Vec<Option<String>> =
        names.split(':').map(|n| (!n.is_empty() && n != "unknown").then(|| n.to_owned())).collect();
    if names.len() != count {
        return Err(format!("LISTEN_FDNAMES has {} names for LISTEN_FDS={count} sockets", names.len()));
    }
    Ok(Some(names))
}

/// Owns inherited descriptor `fd` as a listener: it must be a listening stream socket (TCP or
/// unix); it becomes non-blocking and close-on-exec.
fn adopt(fd: RawFd) -> Result<Listener, String> {
    // Checked through a borrow first: a descriptor that is not open is never owned (owning it
    // would close a number that may be reused).
    let borrowed = borrow(fd);
    let socket = SockRef::from(&borrowed);
    let kind = socket.r#type().map_err(|e| format!("descriptor {fd} is not a socket: {e}"))?;
    if kind != Type::STREAM {
        return Err(format!("descriptor {fd} is not a stream socket (ListenStream= in the .socket unit)"));
    }
    if !socket.is_listener().map_err(|e| format!("descriptor {fd}: {e}"))? {
        return Err(format!("descriptor {fd} is not listening (the .socket unit needs Accept=no)"));
    }
    adopt_owned(own(fd)).map_err(|e| format!("descriptor {fd}: {e}"))
}

/// Takes a listening socket this process owns (inherited, or received from another process):
/// close-on-exec, non-blocking, TCP or unix.
pub(super) fn adopt_owned(fd: OwnedFd) -> Result<Listener, String> {
    let socket = Socket::from(fd);
    socket.set_cloexec(true).map_err(|e| format!("cannot set close-on-exec: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| format!("cannot make it non-blocking: {e}"))?;
    let domain = socket.domain().map_err(|e| e.to_string())?;
    if domain == Domain::UNIX {
        let std = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        tokio::net::UnixListener::from_std(std).map(Listener::from).map_err(|e| e.to_string())
    } else if domain == Domain::IPV4 || domain == Domain::IPV6 {
        let std = std::net::TcpListener::from(socket);
        tokio::net::TcpListener::from_std(std).map(Listener::from).map_err(|e| e.to_string())
    } else {
        Err("neither a TCP nor a unix socket".to_owned())
    }
}

#[allow(unsafe_code)]
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only used for getsockopt on a descriptor the LISTEN_FDS protocol names; a number
    // that is not open makes those calls fail with EBADF, nothing else.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

#[allow(unsafe_code)]
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the LISTEN_FDS protocol hands descriptors 3.. to this process and nothing else in
    // it uses them; `TAKEN` makes sure each is owned, and so closed, once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_passed_to_this_process_count() {
        assert_eq!(parse(None, None, None, 7), Ok(None));
        assert_eq!(parse(Some("8"), Some("1"), None, 7), Ok(None), "another process's sockets");
        assert_eq!(parse(Some("7"), Some("0"), None, 7), Ok(None));
        assert_eq!(parse(Some("7"), Some("2"), None, 7), Ok(Some(vec![None, None])));
        assert_eq!(
            parse(Some("7"), Some("3"), Some("listen:unknown:admin-listen"), 7),
            Ok(Some(vec![Some("listen".into()), None, Some("admin-listen".into())]))
        );
    }

    #[test]
    fn a_broken_environment_is_an_error() {
        assert!(parse(Some("x"), Some("1"), None, 7).unwrap_err().contains("LISTEN_PID"));
        assert!(parse(Some("7"), Some("two"), None, 7).unwrap_err().contains("LISTEN_FDS"));
        assert!(parse(Some("7"), Some("2"), Some("listen"), 7).unwrap_err().contains("1 names"));
        assert!(parse(Some("7"), Some("5000"), None, 7).is_err());
    }

    #[tokio::test]
    async fn adopts_listening_sockets_and_refuses_others() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(tcp);
        let listener = adopt(fd).expect("a listening TCP socket");
        assert_eq!(listener.tcp_addr(), Some(addr));
        let connect = tokio::net::TcpStream::connect(addr);
        let (accepted, _) = tokio::join!(listener.accept(), connect);
        assert!(matches!(accepted.unwrap().1, super::super::Peer::Tcp(_)));

        let unbound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(unbound);
        assert!(adopt(fd).unwrap_err().contains("not listening"));
        drop(own(fd));
        // A number far above any open descriptor: refused, never owned.
        assert!(adopt(999_999).unwrap_err().contains("not a socket"));
    }
}
