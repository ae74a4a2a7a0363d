//! Every close the server initiates, in one list: the websocket close code and reason each
//! cause sends (README's table of close codes mirrors it).

/// Why and how a socket is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

/// The socket's queue overflowed ([`crate::outbox`]'s slow-consumer policy).
pub const SLOW_CONSUMER: CloseReason = CloseReason { code: 1008, reason: "slow consumer: outgoing queue full" };
/// The socket's login session ended (logout, account deleted; [`crate::session_end`]).
pub const SESSION_ENDED: CloseReason = CloseReason { code: 1008, reason: "session ended" };
/// Sent to every socket on shutdown.
pub const GOING_AWAY: CloseReason = CloseReason { code: 1001, reason: "server shutting down" };
/// The peer stopped answering pings ([`crate::keepalive`]).
pub const PING_TIMEOUT: CloseReason = CloseReason { code: 1011, reason: "no answer to ping" };
/// Redis cannot take a client's message or confirm a subscription.
pub const REDIS_UNAVAILABLE: CloseReason = CloseReason { code: 1013, reason: "redis unavailable, try again later" };
/// More live messages arrived during the socket's recovery than it may hold
/// ([`crate::recovery::MAX_HELD`]); the client reconnects with its positions.
pub const HELD_OVERFLOW: CloseReason =
    CloseReason { code: 1013, reason: "too much traffic during recovery, try again" };
/// The client's side ended without a close frame of its own.
pub const NORMAL: CloseReason = CloseReason { code: 1000, reason: "" };
