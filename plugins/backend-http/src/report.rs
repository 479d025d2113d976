//! A failed backend call, told once in one way by every plugin: a warning
//! through the host's log naming the plugin (the host adds it), the
//! backend's URL, what was asked and the problem; and a count in the
//! host's `/metrics`, `rohrpost_plugin_counts_total{plugin,
//! event="backend_failures",kind="<failure kind>"}`. Calls are counted as
//! `event="backend_calls"`, by what was asked.

use rohrpost_plugin_api::host::{self, Level};

use crate::Failure;

/// The counter of backend calls, by what was asked.
pub const CALLS: &str = "backend_calls";
/// The counter of failed backend calls, by kind of failure.
pub const FAILURES: &str = "backend_failures";

/// Counts one call to the backend for `what` (`request`, `connect`,
/// `disconnect`, `subscribe`).
pub fn called(what: &str) {
    let _ = host::count(CALLS, what);
}

/// Logs and counts a failed call: `what` was asked of `url` (a message
/// type, `connect`, `subscribe`, ...; the line's `type`), and
/// `consequence` says what the client got.
pub fn failed(url: &str, what: &str, failure: &Failure, consequence: &str) {
    let _ = host::count(FAILURES, failure.kind());
    let problem = failure.to_string();
    host::log(
        Level::Warn,
        &format!("the backend failed; {consequence}"),
        &[
            ("backend", url),
            ("type", what),
            ("failure", failure.kind()),
            ("problem", &problem),
        ],
    );
}
