//! Small pieces every stage uses and that use nothing of the server's
//! (the envelope, the error replies and the close frames are the
//! `rohrpost-protocol` crate): rate limits on log lines clients can cause
//! ([`log_limit`]), a lock that outlives a panic ([`lock`]), wall-clock
//! seconds ([`clock`]), networks as a setting names them ([`networks`]),
//! the shutdown signal ([`shutdown`]), and the kernel's scheduling policy
//! for the server's threads ([`scheduling`]).

pub(crate) mod clock;
pub(crate) mod lock;
pub(crate) mod log_limit;
pub(crate) mod networks;
pub(crate) mod scheduling;
pub(crate) mod shutdown;
