//! Where a binary listens: a TCP address, a unix-domain socket path, or a listening socket
//! inherited from systemd (socket activation). [`open`] is the one way both binaries get their
//! listeners; [`Listener`] accepts from either family and hands out one [`Stream`] type.

mod addr;
mod stream;
mod systemd;
mod unix;

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UnixListener};

pub use addr::{ListenAddr, ParseListenAddrError};
pub use stream::{Peer, Stream};
pub use unix::{Owner, SocketMode, UnixOptions};

use unix::SocketFile;

/// Why a listener could not be opened. The message names the address and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: ListenAddr, source: io::Error },
    #[error("cannot listen on {addr}: {problem}")]
    Unix { addr: ListenAddr, problem: String },
    #[error("socket activation: {0}")]
    Systemd(String),
}

/// One listener a binary needs.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// The setting's flag name (`listen`, `admin-listen`): also the systemd
    /// `FileDescriptorName=` of an inherited socket that replaces the configured address.
    pub name: &'static str,
    /// The configured address; `None` when this listener is off unless systemd passes one.
    pub addr: Option<&'a ListenAddr>,
    /// Mode and owner of a unix socket this process creates.
    pub unix: &'a UnixOptions,
}

/// Opens the listeners of `specs`, in order: each gets the sockets systemd passed under its
/// name (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`; sockets without a name go to the first
/// spec), or else binds its configured address. A spec may get several inherited sockets
/// (several `ListenStream=` in one `.socket` unit) and none when it has neither.
///
/// Inherited sockets are taken once per process (a second call binds only), made non-blocking
/// and close-on-exec, and must be listening stream sockets; a socket named for no spec is an
/// error, so a unit and a binary that disagree fail at start, not silently. Must run inside a
/// tokio runtime.
pub fn open(specs: &[Spec<'_>]) -> Result<Vec<Vec<Listener>>, ListenError> {
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    let mut inherited = systemd::take(&names)?;
    let mut opened = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let mine = std::mem::take(&mut inherited[index]);
        if !mine.is_empty() {
            for listener in &mine {
                tracing::info!(listener = spec.name, addr = %listener.describe(), "listening on a socket from systemd");
            }
            if let Some(addr) = spec.addr {
                tracing::info!(listener = spec.name, configured = %addr, "systemd passed the socket: the configured address is not bound");
            }
            opened.push(mine);
            continue;
        }
        match spec.addr {
            Some(addr) => {
                let listener = Listener::bind(addr, spec.unix)?;
                tracing::info!(listener = spec.name, addr = %listener.describe(), "listening");
                opened.push(vec![listener]);
            }
            None => opened.push(Vec::new()),
        }
    }
    Ok(opened)
}

/// A listening socket, TCP or unix-domain. A unix socket this process created is removed when
/// the listener is dropped (unless another process has replaced the file meanwhile); one
/// inherited from systemd is left to systemd.
pub struct Listener {
    // Field order is drop order: close the socket, then remove its file.
    inner: Inner,
    _file: Option<SocketFile>,
}

enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr`. A unix socket gets `unix`'s mode and owner; a stale socket file left by a
    /// process that died is replaced, while a live one (something accepts on it) or a path that
    /// is not a socket is an error. Must run inside a tokio runtime.
    pub fn bind(addr: &ListenAddr, unix: &UnixOptions) -> Result<Listener, ListenError> {
        match addr {
            ListenAddr::Tcp(socket_addr) => {
                let std = std::net::TcpListener::bind(socket_addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| ListenError::Bind { addr: addr.clone(), source })?;
                let listener =
                    TcpListener::from_std(std).map_err(|source| ListenError::Bind { addr: addr.clone(), source })?;
                Ok(Listener::from(listener))
            }
            ListenAddr::Unix(path) => {
                let (std, file) =
                    unix::bind(path, unix).map_err(|problem| ListenError::Unix { addr: addr.clone(), problem })?;
                let listener =
                    UnixListener::from_std(std).map_err(|source| ListenError::Bind { addr: addr.clone(), source })?;
                Ok(Listener { inner: Inner::Unix(listener), _file: Some(file) })
            }
        }
    }

    /// The next connection and its peer.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match &self.inner {
            Inner::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                Ok((Stream::Tcp(stream), Peer::Tcp(addr)))
            }
            Inner::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok((Stream::Unix(stream), Peer::Unix))
            }
        }
    }

    /// A second descriptor of the same listening socket (for a process taking over, see
    /// wsserver's hand-off). Dropping it closes only the copy.
    pub fn duplicate_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        match &self.inner {
            Inner::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Inner::Unix(l) => l.as_fd().try_clone_to_owned(),
        }
    }

    /// A listener on a listening socket received from another process (its socket file, if
    /// any, stays with whoever created it). Must run inside a tokio runtime.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> Result<Listener, ListenError> {
        systemd::adopt_owned(fd).map_err(|e| ListenError::Systemd(format!("received listening socket: {e}")))
    }

    /// A second listener on the same socket (its file, if any, stays with this one).
    pub fn try_clone(&self) -> Result<Listener, ListenError> {
        let fd = self.duplicate_fd().map_err(|e| ListenError::Systemd(format!("cannot duplicate a listener: {e}")))?;
        Listener::adopt(fd)
    }

    /// The TCP address listened on (`None` for a unix socket).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().ok(),
            Inner::Unix(_) => None,
        }
    }

    /// The address for logs: `127.0.0.1:8081` or `unix:/run/crier/wsserver.sock`.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().map_or_else(|e| format!("tcp (unknown address: {e})"), |a| a.to_string()),
            Inner::Unix(l) => {
                match l.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.display().to_string())) {
                    Some(path) => format!("unix:{path}"),
                    None => "unix (unnamed)".to_owned(),
                }
            }
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener { inner: Inner::Tcp(listener), _file: None }
    }
}

/// A unix listener bound elsewhere: its socket file is left alone on drop.
impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Listener {
        Listener { inner: Inner::Unix(listener), _file: None }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Listener").field(&self.describe()).finish()
    }
}
