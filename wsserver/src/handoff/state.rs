//! The versioned state of one socket as it crosses to a new wsserver process (the descriptor
//! travels beside it, see [`super::fd_pass`]). JSON, because both ends are the same program
//! at most one release apart and the volume is small (a few hundred bytes per idle socket).
//!
//! The version is read before anything else: a process refuses state of another version
//! ([`StateError::Version`]) and closes that socket with 1001 instead of guessing. Any change
//! of a field's meaning or a new required field bumps [`STATE_VERSION`].
//!
//! The state holds the socket's session key (inside its identity): it only ever travels over
//! the hand-off socket and is never written to disk.

use protocol::flags::Flag;
use protocol::{Facility, Flags, Identity, Position, Recover};
use serde::{Deserialize, Serialize};

use crate::frame_reader::FrameReader;
use crate::join::Socket;

/// The state format this build writes and accepts.
pub const STATE_VERSION: u32 = 1;

/// Test-only: makes a new process accept only this state version instead of
/// [`STATE_VERSION`], to test a hand-off between incompatible builds without building two.
pub const TEST_STATE_VERSION_ENV: &str = "CRIER_HANDOFF_TEST_STATE_VERSION";

/// The state version this process takes over: [`STATE_VERSION`], unless the test-only
/// [`TEST_STATE_VERSION_ENV`] names another.
pub fn accepted_version() -> u32 {
    std::env::var(TEST_STATE_VERSION_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(STATE_VERSION)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("socket state of version {found}, this process reads version {accepted}")]
    Version { found: u32, accepted: u32 },
    #[error("malformed socket state: {0}")]
    Malformed(String),
}

/// Everything a new process needs to resume one socket where the old one left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketState {
    pub version: u32,
    pub facility: String,
    /// Flag names as the query spells them (`subscribe-broadcast`, `echo`, …).
    pub flags: Vec<String>,
    pub identity: Identity,
    /// The recovery opt-in: `None` for a ws4redis socket, else its `<epoch>:<offset>` tokens.
    pub recover: Option<Vec<String>>,
    /// Bytes read from the client and not yet parsed.
    pub read_buffer: Vec<u8>,
    /// The fragmented message the reader was partway through: its opcode and bytes so far.
    pub partial: Option<(u8, Vec<u8>)>,
    /// Encoded frames queued for the client and not yet written, in the order to write them.
    /// The live hand-off leaves it empty: deliveries keep arriving until the socket's cut, so
    /// its queue follows later in the `Tail` message ([`super::link::Msg::Tail`]).
    pub queued: Vec<Vec<u8>>,
    /// Milliseconds since the client was last heard from, so the ping timeout carries over.
    pub heard_ago_ms: u64,
}

/// What [`SocketState::resume`] gives back: the socket as the handshake would have resolved
/// it, its reader, and its queued frames.
pub struct Resumed {
    pub socket: Socket,
    pub reader: FrameReader,
    pub queued: Vec<bytes::Bytes>,
    pub heard_ago_ms: u64,
}

impl SocketState {
    /// Captures a socket's state; the caller has stopped its reading and writing.
    pub fn capture(socket: &Socket, reader: &FrameReader, queued: Vec<bytes::Bytes>, heard_ago_ms: u64) -> SocketState {
        let (read_buffer, partial) = reader.export();
        SocketState {
            version: STATE_VERSION,
            facility: socket.facility.as_str().to_owned(),
            flags: socket.flags.iter().map(Flag::name).collect(),
            identity: socket.identity.clone(),
            recover: socket.recover.as_ref().map(|r| r.positions.iter().map(Position::to_string).collect()),
            read_buffer,
            partial,
            queued: queued.iter().map(|f| f.to_vec()).collect(),
            heard_ago_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serializes")
    }

    /// Decodes state, refusing another version before reading further.
    pub fn decode(bytes: &[u8]) -> Result<SocketState, StateError> {
        SocketState::decode_version(bytes, STATE_VERSION)
    }

    /// Decodes state of version `accepted` only (the new process passes
    /// [`accepted_version`]).
    pub fn decode_version(bytes: &[u8], accepted: u32) -> Result<SocketState, StateError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
        if v.version != accepted {
            return Err(StateError::Version { found: v.version, accepted });
        }
        serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))
    }

    /// Rebuilds the socket; `max_message` is the new process's message limit.
    pub fn resume(self, max_message: usize) -> Result<Resumed, StateError> {
        let malformed = |what: &str| StateError::Malformed(what.to_owned());
        let facility = Facility::parse(&self.facility).map_err(|_| malformed("facility"))?;
        let mut flags = Flags::default();
        for name in &self.flags {
            flags.insert(Flag::parse(name).ok_or_else(|| malformed("flag"))?);
        }
        let recover = match self.recover {
            None => None,
            Some(tokens) => Some(Recover {
                positions: tokens
                    .iter()
                    .map(|t| Position::parse_token(t).ok_or_else(|| malformed("recover position")))
                    .collect::<Result<_, _>>()?,
            }),
        };
        let partial = self.partial.as_ref().map(|(op, bytes)| (*op, bytes.as_slice()));
        let reader =
            FrameReader::import(max_message, &self.read_buffer, partial).ok_or_else(|| malformed("partial"))?;
        Ok(Resumed {
            socket: Socket { facility, flags, identity: self.identity, recover },
            reader,
            queued: self.queued.into_iter().map(bytes::Bytes::from).collect(),
            heard_ago_ms: self.heard_ago_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_reader::Message;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![first, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    fn socket() -> Socket {
        Socket {
            facility: Facility::parse("news").unwrap(),
            flags: Flags::from_query("subscribe-broadcast&publish-user&echo"),
            identity: Identity::from_json(br#"{"user":"ann","groups":["staff"]}"#).unwrap(),
            recover: Recover::from_query("recover=3F9A1C07B2E4D611:12"),
        }
    }

    #[tokio::test]
    async fn a_socket_resumes_mid_fragmented_message_with_its_queue() {
        // The client sent the first fragment and half of the second frame's header.
        let first = masked(0x01, b"hel");
        let rest = masked(0x80, b"lo");
        let mut io = std::io::Cursor::new([first.clone(), rest[..1].to_vec()].concat());
        let mut reader = FrameReader::new(1024);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), reader.next_message(&mut io))
            .await
            .map_or(true, |r| r.is_err()));
        let queued = vec![bytes::Bytes::from_static(b"\x81\x01a"), bytes::Bytes::from_static(b"\x81\x01b")];
        let state = SocketState::capture(&socket(), &reader, queued.clone(), 1500);

        let decoded = SocketState::decode(&state.encode()).unwrap();
        assert_eq!(decoded, state);
        let resumed = decoded.resume(1024).unwrap();
        assert_eq!(resumed.queued, queued);
        assert_eq!(resumed.heard_ago_ms, 1500);
        let original = socket();
        assert_eq!(resumed.socket.flags, original.flags);
        assert_eq!(resumed.socket.facility, original.facility);
        assert_eq!(resumed.socket.identity, original.identity);
        assert_eq!(resumed.socket.recover, original.recover);
        let mut reader = resumed.reader;
        let mut io = std::io::Cursor::new(rest[1..].to_vec());
        assert_eq!(reader.next_message(&mut io).await.unwrap(), Message::Text(bytes::Bytes::from_static(b"hello")));
    }

    #[test]
    fn another_version_is_refused_before_its_fields_are_read() {
        let bytes = br#"{"version":2,"something":"else"}"#;
        assert_eq!(SocketState::decode(bytes).unwrap_err(), StateError::Version { found: 2, accepted: 1 });
        assert!(SocketState::decode_version(br#"{"version":2}"#, 2).is_err(), "version 2 would have to parse");
        assert!(matches!(SocketState::decode(b"not json"), Err(StateError::Malformed(_))));
    }

    #[test]
    fn a_partial_message_with_a_control_opcode_is_refused() {
        let mut state = SocketState::capture(&socket(), &FrameReader::new(16), Vec::new(), 0);
        state.partial = Some((0x9, b"x".to_vec()));
        assert!(state.resume(16).is_err());
    }
}
