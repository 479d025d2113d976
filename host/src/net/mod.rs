//! Everything before a connection is a WebSocket: the listener and its
//! timers ([`accept`], [`write_deadline`]), the bound on connections not yet
//! upgraded ([`admission`]), the open-files limit ([`rlimit`]), the upgrade
//! itself with its origin check and scope ([`handshake`]), the client's
//! address behind a trusted reverse proxy ([`forwarded`]) and the limits
//! per client address ([`client_limits`]).

pub(crate) mod accept;
pub(crate) mod admission;
pub(crate) mod client_limits;
pub(crate) mod deflate_offer;
pub(crate) mod forwarded;
pub(crate) mod handshake;
pub(crate) mod rlimit;
pub(crate) mod write_deadline;
