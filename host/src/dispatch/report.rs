//! What a finished handler call leaves behind besides its answer: the
//! counts of its type and its plugin, and a log line when it did not
//! succeed (rate-limited: clients cause these).

use std::time::Duration;

use rohrpost_plugin_api::abi::CallOutcome;
use tracing::{error, warn};

use crate::plugins::{
    outcome::{Outcome, Tally},
    registry::Route,
};

/// Counts a call in the plugin's stats and the type's metrics.
pub(crate) fn count(route: &Route, outcome: &Outcome, took: Duration) {
    let counter = match outcome.tally() {
        Tally::Ok => &route.metrics.ok,
        Tally::Error => &route.metrics.error,
        Tally::Panic => &route.metrics.panic,
        Tally::Timeout => &route.metrics.timeout,
    };
    counter.inc();
    route.plugin.count(outcome);
    route.metrics.latency.observe(took);
}

/// Logs a call that did not succeed (rate-limited: clients cause these).
pub(crate) fn log(route: &Route, kind: &str, outcome: &Outcome) {
    let plugin = &route.plugin;
    match outcome {
        Outcome::Returned(CallOutcome::Done(_)) => {}
        Outcome::Returned(CallOutcome::Failed(text)) => {
            if crate::base::log_limit::HANDLER_ERROR.allow() {
                warn!(plugin = %plugin.name, version = %plugin.version, r#type = %kind,
                    cause = %text, "handler returned an error");
            }
        }
        Outcome::Returned(CallOutcome::Panicked(message)) => {
            if crate::base::log_limit::HANDLER_PANIC.allow() {
                error!(plugin = %plugin.name, version = %plugin.version, r#type = %kind,
                    cause = %message, "handler panicked");
            }
        }
        Outcome::TimedOut(after) => {
            if crate::base::log_limit::HANDLER_TIMEOUT.allow() {
                warn!(plugin = %plugin.name, version = %plugin.version, r#type = %kind,
                    timeout_ms = after.as_millis() as u64, "handler timed out");
            }
        }
        // The supervisor logs the worker's end, once for all its calls.
        Outcome::Crashed | Outcome::OutOfService => {}
        Outcome::Lost(why) => {
            if crate::base::log_limit::HANDLER_LOST.allow() {
                error!(plugin = %plugin.name, version = %plugin.version, r#type = %kind,
                    cause = %why, "handler call was lost");
            }
        }
        Outcome::TooManyEffects { count, limit } => {
            if crate::base::log_limit::HANDLER_INVALID.allow() {
                error!(plugin = %plugin.name, version = %plugin.version, r#type = %kind,
                    effects = count, limit,
                    "handler asked for more effects than max_effects_per_call; none were carried out");
            }
        }
    }
}
