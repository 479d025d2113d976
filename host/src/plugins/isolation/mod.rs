//! Plugins in worker processes (`isolation = "process"`, the default): a
//! segfault, an abort, a stack overflow, an `exit` or a hung call in a
//! plugin ends its worker, never the server.
//!
//! Design, one module each:
//! - [`worker`]: the worker process, `rohrpost --plugin-worker`, the same
//!   binary in another mode. It loads the library from the host's private
//!   shadow copy (handed over as an open descriptor) and calls the very
//!   entry point the host would call in its own process.
//! - [`frame`]: how calls, replies and the start-up conversation are
//!   framed on the channel (length-prefixed binary frames, calls tagged
//!   with an id so that many are in flight at once).
//! - [`channel`]: starting a worker and its start-up conversation, then
//!   the calls in flight, answered exactly once (reply or crash).
//! - [`slot`]: where a call's end goes; a reply that only sends its caller
//!   messages is written to the caller's socket by the reader of replies,
//!   without waking the caller's task.
//! - [`supervisor`]: watching a worker, restarting it with backoff,
//!   marking a plugin failed that cannot start, retiring a replaced
//!   version's worker.
//!
//! One ABI for both modes: the worker hands the plugin the same `Call` and
//! sends back the same effects list, which the host turns back into the
//! same [`CallOutcome`](rohrpost_plugin_api::abi::CallOutcome) an in-process call returns; from there replies,
//! groups, close and notifications take the one path of
//! [`crate::effects`]. A plugin author writes the same code and cannot tell
//! which mode runs it.
//!
//! Which mode a plugin runs in is known only once its name is: every
//! library is first opened in a worker, which reports its manifest. For
//! `isolation = "none"` that worker is then let go and the host loads the
//! library itself; so a library whose constructor crashes is rejected
//! without ever reaching the server's process, in either mode.

pub(crate) mod channel;
pub(crate) mod frame;
pub(crate) mod jail;
pub(crate) mod ring;
pub(crate) mod slot;
pub(crate) mod supervisor;
pub(crate) mod worker;

use std::{sync::Arc, time::Duration};

use tokio::time::timeout_at;

pub(crate) use self::channel::WorkerLimits;
use self::slot::{Attention, Ended, ReplyLine};
use self::supervisor::{Supervisor, Unavailable, WorkerStatus};
use crate::plugins::outcome::Outcome;

/// What a caller that waits for its call quietly gives: its line, for the
/// reader of replies to write to, and what else it waits for.
pub(crate) struct Quiet<'a> {
    pub line: Arc<dyn ReplyLine>,
    pub attention: &'a dyn Attention,
}

/// A plugin version's worker, as its [`LoadedPlugin`](crate::plugins::loaded::LoadedPlugin) holds it. Dropped
/// with the last reference to that version (the registry's and those of
/// the calls running on it): the worker then exits.
pub(crate) struct WorkerHandle(pub(crate) Arc<Supervisor>);

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.0.retire();
    }
}

impl WorkerHandle {
    /// Runs one call of `handler` (a frame from [`frame::call`]) by
    /// `deadline`, the end of `timeout`; also how long the handler ran in
    /// the worker. With `quiet`, a reply that only sends the caller
    /// messages is written to its line by the reader of replies, and the
    /// caller's task is not woken for it (see [`slot`]).
    pub(crate) async fn call(
        &self,
        handler: u32,
        mut bytes: Vec<u8>,
        (deadline, timeout): (tokio::time::Instant, Duration),
        connection: crate::groups::ConnectionId,
        quiet: Option<&Quiet<'_>>,
    ) -> Ended {
        loop {
            let worker = match self.0.ready() {
                Some(worker) => worker,
                None => match timeout_at(deadline, self.0.worker()).await {
                    Ok(Ok(worker)) => worker,
                    Ok(Err(Unavailable::Failed)) => return Outcome::OutOfService.into(),
                    Ok(Err(Unavailable::Retired)) => return Outcome::Crashed.into(),
                    Err(_) => return Outcome::TimedOut(timeout).into(),
                },
            };
            // The call's deadline is kept by the worker's sweeper (one timer
            // per worker, not one per call): past it, the call ends with
            // `TimedOut` and the worker is drained.
            let line = quiet.map(|quiet| quiet.line.clone());
            let sent = worker.send(handler, connection, bytes, (deadline, timeout), line);
            let mut pending = match sent {
                Ok(pending) => pending,
                Err(unsent) => {
                    // It died or is draining, and was never sent this call:
                    // the next worker takes it.
                    self.0.closed(&worker);
                    bytes = unsent;
                    continue;
                }
            };
            return std::future::poll_fn(|cx| pending.poll_end(cx, quiet.map(|q| q.attention)))
                .await;
        }
    }

    /// Where the worker stands, for `/api/plugins`.
    pub(crate) fn status(&self) -> WorkerStatus {
        self.0.status()
    }
}
