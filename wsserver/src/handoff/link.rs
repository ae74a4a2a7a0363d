//! The conversation between the old and the new process over the hand-off socket: the
//! messages ([`Msg`], a tag byte and a fixed layout each) and the two threads that move them
//! between the blocking socket ([`super::fd_pass`]) and async code ([`Link`]).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::fd_pass::{self, FdPassError};

/// Which listener a passed listening socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Websocket,
    Admin,
}

/// The family of a passed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Unix,
}

/// One message. Old → new: `Hello`, `Listener`…, `ListenersDone`, then `Socket` and `Tail`
/// per socket, and `Done`. New → old: `Ready`, then `Accepted` or `Refused` per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The hand-off's random nonce (names its marker channel).
    Hello {
        nonce: String,
    },
    /// A listening socket (its descriptor travels with the message).
    Listener {
        role: Role,
    },
    ListenersDone,
    /// The new process subscribes to Redis and accepts on the listeners.
    Ready,
    /// A socket (descriptor attached): its id in the old process, the batch whose cut it
    /// follows, and its [`super::state::SocketState`] bytes.
    Socket {
        id: u64,
        kind: Kind,
        batch: u32,
        state: Vec<u8>,
    },
    /// The new process joined the socket and Redis confirmed its subscriptions.
    Accepted {
        id: u64,
    },
    /// The new process will not take the socket (the old one closes it with 1001).
    Refused {
        id: u64,
        reason: String,
    },
    /// What the old process had queued for the socket up to its cut; `closing`: the socket
    /// could not be kept (its queue overflowed meanwhile), the new process closes it.
    Tail {
        id: u64,
        closing: bool,
        frames: Vec<Bytes>,
    },
    /// Every socket is handed: the new process is the service now.
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Pass(#[from] FdPassError),
    #[error("malformed hand-off message: {0}")]
    Malformed(&'static str),
    #[error("the other process closed the hand-off socket")]
    Closed,
    #[error("unexpected hand-off message: {0}")]
    Unexpected(String),
}

fn id_bytes(out: &mut Vec<u8>, id: u64) {
    out.extend_from_slice(&id.to_be_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(LinkError::Malformed("short message"))?;
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, LinkError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, LinkError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
    fn text(self) -> Result<String, LinkError> {
        String::from_utf8(self.0.to_vec()).map_err(|_| LinkError::Malformed("text is not UTF-8"))
    }
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Msg::Hello { nonce } => {
                out.push(1);
                out.extend_from_slice(nonce.as_bytes());
            }
            Msg::Listener { role } => out.extend_from_slice(&[2, matches!(role, Role::Admin) as u8]),
            Msg::ListenersDone => out.push(3),
            Msg::Socket { id, kind, batch, state } => {
                out.push(4);
                id_bytes(&mut out, *id);
                out.push(matches!(kind, Kind::Unix) as u8);
                out.extend_from_slice(&batch.to_be_bytes());
                out.extend_from_slice(state);
            }
            Msg::Tail { id, closing, frames } => {
                out.push(5);
                id_bytes(&mut out, *id);
                out.push(*closing as u8);
                for frame in frames {
                    out.extend_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes());
                    out.extend_from_slice(frame);
                }
            }
            Msg::Done => out.push(6),
            Msg::Ready => out.push(10),
            Msg::Accepted { id } => {
                out.push(11);
                id_bytes(&mut out, *id);
            }
            Msg::Refused { id, reason } => {
                out.push(12);
                id_bytes(&mut out, *id);
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Msg, LinkError> {
        let mut c = Cursor(bytes);
        Ok(match c.u8()? {
            1 => Msg::Hello { nonce: c.text()? },
            2 => Msg::Listener { role: if c.u8()? == 1 { Role::Admin } else { Role::Websocket } },
            3 => Msg::ListenersDone,
            4 => {
                let id = c.u64()?;
                let kind = if c.u8()? == 1 { Kind::Unix } else { Kind::Tcp };
                let batch = c.u32()?;
                Msg::Socket { id, kind, batch, state: c.rest().to_vec() }
            }
            5 => {
                let id = c.u64()?;
                let closing = c.u8()? == 1;
                let mut frames = Vec::new();
                while !c.0.is_empty() {
                    let len = c.u32()? as usize;
                    frames.push(Bytes::copy_from_slice(c.take(len)?));
                }
                Msg::Tail { id, closing, frames }
            }
            6 => Msg::Done,
            10 => Msg::Ready,
            11 => Msg::Accepted { id: c.u64()? },
            12 => {
                let id = c.u64()?;
                Msg::Refused { id, reason: c.text()? }
            }
            _ => return Err(LinkError::Malformed("unknown message tag")),
        })
    }
}

/// A received message and the descriptors that came with it.
pub type Received = (Msg, Vec<OwnedFd>);

/// Async ends of the hand-off socket: one thread writes what [`Link::send`] queues, one reads
/// into [`Link::recv`]. Dropping the link ends the writer thread; the reader thread ends when
/// the other process closes its end.
pub struct Link {
    out: mpsc::UnboundedSender<(Vec<u8>, Vec<OwnedFd>)>,
    incoming: mpsc::UnboundedReceiver<Result<Received, LinkError>>,
    writer: std::thread::JoinHandle<()>,
}

impl Link {
    pub fn start(stream: UnixStream) -> std::io::Result<Link> {
        let mut reading = stream.try_clone()?;
        let mut writing = stream;
        let (out, mut out_rx) = mpsc::unbounded_channel::<(Vec<u8>, Vec<OwnedFd>)>();
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let writer = std::thread::Builder::new().name("handoff-send".into()).spawn(move || {
            while let Some((payload, fds)) = out_rx.blocking_recv() {
                let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
                if let Err(e) = fd_pass::send(&mut writing, &payload, &borrowed) {
                    tracing::warn!("hand-off socket: {e}");
                    break;
                }
            }
            let _ = writing.shutdown(std::net::Shutdown::Write);
        })?;
        std::thread::Builder::new().name("handoff-recv".into()).spawn(move || loop {
            let received = match fd_pass::recv(&mut reading) {
                Ok((payload, fds)) => Msg::decode(&payload).map(|m| (m, fds)),
                Err(FdPassError::Closed) => Err(LinkError::Closed),
                Err(e) => Err(e.into()),
            };
            let failed = received.is_err();
            if in_tx.send(received).is_err() || failed {
                break;
            }
        })?;
        Ok(Link { out, incoming, writer })
    }

    /// Queues a message (with descriptors, which are closed here once sent).
    pub fn send(&self, msg: &Msg, fds: Vec<OwnedFd>) -> Result<(), LinkError> {
        self.out.send((msg.encode(), fds)).map_err(|_| LinkError::Closed)
    }

    /// The next message; an error once the other side is gone or misbehaved.
    pub async fn recv(&mut self) -> Result<Received, LinkError> {
        self.incoming.recv().await.unwrap_or(Err(LinkError::Closed))
    }

    /// Waits until everything queued was written, then closes the sending direction.
    pub async fn finish(self) {
        drop(self.out);
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }

    /// Splits into a sender (cloneable) and the receiving side.
    pub fn split(self) -> (Sender, mpsc::UnboundedReceiver<Result<Received, LinkError>>) {
        (Sender { out: self.out }, self.incoming)
    }
}

/// The sending side of a [`Link`], shared by the tasks of the new process.
#[derive(Clone)]
pub struct Sender {
    out: mpsc::UnboundedSender<(Vec<u8>, Vec<OwnedFd>)>,
}

impl Sender {
    pub fn send(&self, msg: &Msg) {
        let _ = self.out.send((msg.encode(), Vec::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let all = [
            Msg::Hello { nonce: "00ff".into() },
            Msg::Listener { role: Role::Admin },
            Msg::Listener { role: Role::Websocket },
            Msg::ListenersDone,
            Msg::Ready,
            Msg::Socket { id: 7, kind: Kind::Unix, batch: 3, state: b"{}".to_vec() },
            Msg::Accepted { id: u64::MAX },
            Msg::Refused { id: 1, reason: "state version 2".into() },
            Msg::Tail { id: 9, closing: false, frames: vec![Bytes::from_static(b"\x81\x01a"), Bytes::new()] },
            Msg::Done,
        ];
        for msg in all {
            assert_eq!(Msg::decode(&msg.encode()).unwrap(), msg);
        }
        assert!(Msg::decode(&[99]).is_err());
        assert!(Msg::decode(&[11, 1]).is_err(), "a cut-off id");
        assert!(Msg::decode(&[5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 9]).is_err(), "a frame longer than the message");
    }

    #[tokio::test]
    async fn messages_and_descriptors_cross_both_ways() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Link::start(a).unwrap(), Link::start(b).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.send(&Msg::Listener { role: Role::Websocket }, vec![listener.as_fd().try_clone_to_owned().unwrap()]).unwrap();
        let (msg, fds) = b.recv().await.unwrap();
        assert_eq!((msg, fds.len()), (Msg::Listener { role: Role::Websocket }, 1));
        b.send(&Msg::Ready, Vec::new()).unwrap();
        assert_eq!(a.recv().await.unwrap().0, Msg::Ready);
        drop(a);
        assert!(matches!(b.recv().await, Err(LinkError::Closed)));
    }
}
