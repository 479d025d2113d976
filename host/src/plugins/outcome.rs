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
    /// The plugin asked for more effects than a call may have
    /// (`max_effects_per_call`); none of them is carried out.
    TooManyEffects { count: usize, limit: usize },
}

impl Outcome {
    /// What the plugin answered, held to `limit` effects.
    pub(crate) fn returned(answer: CallOutcome, limit: usize) -> Outcome {
        match answer {
            CallOutcome::Done(effects) if effects.len() > limit => Outcome::TooManyEffects {
                count: effects.len(),
                limit,
            },
            answer => Outcome::Returned(answer),
        }
    }
}

/// How an outcome counts, in a plugin's stats and its type's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tally {
    Ok,
    Error,
    Panic,
    Timeout,
}

impl Outcome {
    /// How it counts: a crash, a lost call or an unusable worker is an
    /// error for the caller, as a returned error is.
    pub(crate) fn tally(&self) -> Tally {
        match self {
            Outcome::Returned(CallOutcome::Done(_)) => Tally::Ok,
            Outcome::Returned(CallOutcome::Failed(_))
            | Outcome::Lost(_)
            | Outcome::Crashed
            | Outcome::OutOfService
            | Outcome::TooManyEffects { .. } => Tally::Error,
            Outcome::Returned(CallOutcome::Panicked(_)) => Tally::Panic,
            Outcome::TimedOut(_) => Tally::Timeout,
        }
    }
}
