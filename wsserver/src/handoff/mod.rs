//! Pieces of the live hand-off of sockets to a new wsserver process: descriptors passed with
//! `SCM_RIGHTS` ([`fd_pass`]) and each socket's versioned state ([`state`]). No trigger starts
//! a hand-off yet: these are the transport and the format it uses.

pub mod fd_pass;
pub mod state;
