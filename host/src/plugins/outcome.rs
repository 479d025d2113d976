//! How a call of a plugin ended, seen from the host: one type for handler
//! calls and hooks, in this process or in a worker. What it means for the
//! client (an error reply, a refused connection) is decided by the caller.

use std::time::Duration;

use rohrpost_plugin_api::abi::CallOutcome;

/// How one call of a plugin ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The plugin answered: effects, an error, or a caught panic.
    Returned(CallOutcome),
    /// Not answered within the timeout.
    TimedOut(Duration),
    /// The call's task ended without an answer.
    Lost(String),
    /// The plugin's worker died with the call in flight.
    Crashed,
    /// The plugin's worker fails at every start.
    OutOfService,
}
