//! From a text frame to how its request ended: parse, route lookup, running
//! the handler in the right place, counting and logging the call. What the
//! outcome does to the connection (replies, groups, close) is
//! [`crate::effects`]'s business; nothing here touches a socket.
//!
//! Where a handler runs is the main cost decision of the server. A handler
//! declared inline (ping) runs right here on the connection's task: a call
//! costs well under a microsecond, where a hand-off to a thread pool costs
//! several. Every other handler runs on tokio's blocking pool, bounded per
//! plugin, under the handler timeout: a handler that sleeps holds up only
//! its own caller. An inline handler that turns out slow is moved to the pool,
//! with a warning, and comes back when it is fast again: each call is held to
//! the inline budget plus an allowance per byte of its frame, and only
//! repeated slow calls count (see [`crate::plugins::handler::HandlerInfo::judge`]), so
//! one large request cannot move a handler.
//!
//! A plugin in a worker process ([`crate::plugins::isolation`]) is called the same
//! way for every handler: the request goes to the worker, and the caller
//! waits for the reply under the handler timeout. "Inline" then says where
//! the call runs in the worker (on the thread that reads the channel, or
//! on its pool), judged by the time the worker measured, and a call past
//! the timeout gets the worker killed and replaced.

pub mod inline_watch;

use std::{
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use rohrpost_plugin_api::{
    abi::{Call, CallOutcome},
    GroupNameRule,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{error, info, warn};

use crate::{
    base::protocol::{self, Envelope, Failure, Rejection},
    effects::state::Scopes,
    groups::ConnectionId,
    plugins::handler::Verdict,
    plugins::isolation::{frame, Called, WorkerHandle},
    plugins::loaded::CallEnd,
    plugins::registry::{Registry, Route},
    telemetry::Monitor,
};

/// What came of one text frame, for [`crate::effects`] to carry out.
pub enum Handled<'a> {
    /// Not a valid rohrpost request.
    Invalid(Rejection<'a>),
    /// No plugin serves the request's type.
    UnknownType(Envelope<'a>),
    /// The request was routed and its handler called.
    Ran(Ran<'a>),
}

/// A routed request and how its handler call ended.
pub struct Ran<'a> {
    pub route: Route,
    pub request: Envelope<'a>,
    pub outcome: Outcome,
}

/// How a handler call ended, seen from the host.
pub enum Outcome {
    Returned(CallOutcome),
    TimedOut(Duration),
    Lost(String),
    /// The plugin's worker died with the call in flight.
    Crashed,
    /// The plugin's worker fails at every start.
    OutOfService,
}

/// Who sends a frame: the connection, its scope, and the scopes of the
/// plugins that attached state to it.
pub struct Caller<'a> {
    pub id: ConnectionId,
    pub scope: &'a Arc<str>,
    pub scopes: Option<Arc<Scopes>>,
}

/// Routing and execution settings shared by all connections.
pub struct Dispatcher {
    pub registry: Arc<Registry>,
    /// How long a caller waits for a pooled handler.
    pub handler_timeout: Duration,
    /// What an inline call may take, plus `inline_budget_per_mib` for each
    /// MiB of its frame; slower calls, repeated, move the handler to the pool.
    pub inline_budget: Duration,
    pub inline_budget_per_mib: Duration,
    /// Which group names handlers may use (checked by [`crate::effects`]).
    pub group_names: GroupNameRule,
    /// Most arrays and objects in one message.
    pub max_json_containers: usize,
    pub monitor: Arc<Monitor>,
}

/// Inline calls on frames larger than this are not judged slow or fast.
const JUDGED_UP_TO: usize = 64 * 1024;

impl Dispatcher {
    /// The answer to a text frame refused for its connection's message
    /// rate: the rate's error reply, or the frame's own rejection if it is
    /// not a valid request.
    pub fn rate_limited(&self, frame: &str, per_second: u32) -> String {
        match protocol::parse_bounded(frame, self.max_json_containers) {
            Ok(request) => Failure::RateLimited { per_second }.reply(&request),
            Err(rejection) => rejection.reply(),
        }
    }

    /// Routes one text frame of `caller`, which arrived at `arrived`, and
    /// runs its handler.
    pub async fn handle<'a>(
        &self,
        frame: &'a Utf8Bytes,
        caller: &Caller<'_>,
        arrived: Instant,
    ) -> Handled<'a> {
        let text = frame.as_str();
        let envelope = match protocol::parse_bounded(text, self.max_json_containers) {
            Ok(envelope) => envelope,
            Err(rejection) => {
                self.monitor.invalid_request();
                return Handled::Invalid(rejection);
            }
        };
        let route = match self.registry.snapshot().routes.get(envelope.kind.as_ref()) {
            Some(route) => route.clone(),
            None => {
                self.monitor.unknown_type();
                return Handled::UnknownType(envelope);
            }
        };
        let handler = &route.plugin.handlers[route.handler as usize];
        let inline = handler.is_inline();
        let scope = match &caller.scopes {
            Some(scopes) => scopes.get(&route.plugin.name).unwrap_or(caller.scope),
            None => caller.scope,
        };
        let connection = caller.id;
        // One clock read after an inline call: on the hot path it is both
        // the call's time and the request's. Both count from the frame's
        // arrival, parsing included: for the frames that are judged (at most
        // `JUDGED_UP_TO`) that is tens of microseconds at most, far below
        // the inline budget.
        let (outcome, ran_for, took) = if let Some(worker) = route.plugin.worker() {
            let parts = frame::CallParts {
                handler: route.handler,
                inline,
                frame: text,
                id: range_of(text, envelope.id),
                data: envelope.data.map_or((0, 0), |d| range_of(text, d)),
                kind: envelope.kind.as_ref(),
                scope,
            };
            let bytes = frame::call(&parts);
            let (outcome, ran_for) = self
                .run_in_worker(&route, worker, bytes, inline, connection)
                .await;
            (outcome, ran_for, arrived.elapsed())
        } else if inline {
            let watched = inline_watch::begin(&route, arrived);
            let outcome = crate::plugins::asks::with_caller(connection, &route.plugin.name, || {
                self.run_inline(&route, &envelope, text, scope)
            });
            drop(watched);
            let took = arrived.elapsed();
            (outcome, Some(took), took)
        } else {
            let owned = OwnedCall::new(frame, &envelope, scope.clone());
            let (outcome, ran_for) = self.run_pooled(&route, owned, connection).await;
            (outcome, ran_for, arrived.elapsed())
        };
        if handler.declared_inline() {
            // A timed-out call counts as slow; a lost one says nothing, and
            // neither does a call on a large frame: any client can send
            // those, and judging them would let it move the handler off
            // the connection task for everybody.
            let slow = match ran_for {
                Some(_) if text.len() > JUDGED_UP_TO => false,
                Some(ran_for) => ran_for > self.inline_budget && ran_for > self.budget(text.len()),
                None => matches!(outcome, Outcome::TimedOut(_)),
            };
            match handler.judge(inline, slow) {
                Verdict::Unchanged => {}
                Verdict::Demoted => warn!(
                    plugin = %route.plugin.name,
                    version = %route.plugin.version,
                    r#type = %envelope.kind,
                    took_ms = took.as_millis() as u64,
                    "inline handler is too slow for the connection task, repeatedly; running it on the worker pool until it is fast again"
                ),
                Verdict::Promoted => info!(
                    plugin = %route.plugin.name,
                    version = %route.plugin.version,
                    r#type = %envelope.kind,
                    "inline handler is fast again; running it on the connection task again"
                ),
            }
        }
        count(&route, &outcome, took);
        log(&route, &envelope.kind, &outcome);
        Handled::Ran(Ran {
            route,
            request: envelope,
            outcome,
        })
    }

    /// What an inline call with a frame of `len` bytes may take.
    fn budget(&self, len: usize) -> Duration {
        let per_mib = u64::try_from(self.inline_budget_per_mib.as_nanos()).unwrap_or(u64::MAX);
        let allowance = per_mib.saturating_mul(len as u64) >> 20;
        self.inline_budget + Duration::from_nanos(allowance)
    }

    fn run_inline(
        &self,
        route: &Route,
        envelope: &Envelope<'_>,
        frame: &str,
        scope: &str,
    ) -> Outcome {
        let call = Call {
            frame: frame.into(),
            id: envelope.id.into(),
            kind: envelope.kind.as_ref().into(),
            data: envelope.data.unwrap_or("").into(),
            scope: scope.into(),
        };
        Outcome::Returned(route.plugin.call(route.handler, &call))
    }

    /// Runs the call in the plugin's worker; also how long the handler ran
    /// there. Pooled calls hold one of the plugin's slots, as on the pool;
    /// a call past the timeout has its worker killed, which frees it.
    async fn run_in_worker(
        &self,
        route: &Route,
        worker: &WorkerHandle,
        bytes: Vec<u8>,
        inline: bool,
        connection: ConnectionId,
    ) -> (Outcome, Option<Duration>) {
        let now = tokio::time::Instant::now();
        // A timeout too long to add is no timeout.
        let deadline = now
            .checked_add(self.handler_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let _permit = if inline {
            None
        } else {
            match tokio::time::timeout_at(deadline, route.plugin.pool_slots.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(closed)) => return (Outcome::Lost(closed.to_string()), None),
                Err(_) => return (Outcome::TimedOut(self.handler_timeout), None),
            }
        };
        route.plugin.count_call();
        match worker
            .call(route.handler, bytes, deadline, connection)
            .await
        {
            Called::Replied { outcome, ran_for } => (Outcome::Returned(outcome), Some(ran_for)),
            Called::Crashed => (Outcome::Crashed, None),
            Called::TimedOut => (Outcome::TimedOut(self.handler_timeout), None),
            Called::OutOfService => (Outcome::OutOfService, None),
        }
    }

    /// Runs the call on the pool; also how long the call itself ran, not
    /// counting the wait for a pool thread.
    async fn run_pooled(
        &self,
        route: &Route,
        owned: OwnedCall,
        connection: ConnectionId,
    ) -> (Outcome, Option<Duration>) {
        let plugin = route.plugin.clone();
        let handler = route.handler;
        let slots = plugin.pool_slots.clone();
        let work = async move {
            // Held by the blocking call until it returns, even after the
            // caller gave up waiting: a native call cannot be cancelled.
            let permit = slots.acquire_owned().await;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let started = Instant::now();
                let outcome = crate::plugins::asks::with_caller(connection, &plugin.name, || {
                    plugin.call(handler, &owned.as_call())
                });
                (outcome, started.elapsed())
            })
            .await
        };
        match tokio::time::timeout(self.handler_timeout, work).await {
            Ok(Ok((outcome, ran_for))) => (Outcome::Returned(outcome), Some(ran_for)),
            Ok(Err(join_error)) => (Outcome::Lost(join_error.to_string()), None),
            Err(_) => (Outcome::TimedOut(self.handler_timeout), None),
        }
    }
}

/// Counts a call in the plugin's stats and the type's metrics.
fn count(route: &Route, outcome: &Outcome, took: Duration) {
    let (end, counter) = match outcome {
        Outcome::Returned(CallOutcome::Done(_)) => (CallEnd::Ok, &route.metrics.ok),
        Outcome::Returned(CallOutcome::Failed(_))
        | Outcome::Lost(_)
        | Outcome::Crashed
        | Outcome::OutOfService => (CallEnd::Error, &route.metrics.error),
        Outcome::Returned(CallOutcome::Panicked(_)) => (CallEnd::Panic, &route.metrics.panic),
        Outcome::TimedOut(_) => (CallEnd::Timeout, &route.metrics.timeout),
    };
    counter.inc();
    route.plugin.count(end);
    route.metrics.latency.observe(took);
}

/// Where `part`, a slice of `text`, lies in it.
fn range_of(text: &str, part: &str) -> (usize, usize) {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if start > text.len() || start + part.len() > text.len() {
        return (0, 0);
    }
    (start, part.len())
}

/// A request owned for a call on another thread: the frame is shared, and
/// the parts are ranges into it.
struct OwnedCall {
    frame: Utf8Bytes,
    id: Range<usize>,
    kind: String,
    data: Option<Range<usize>>,
    scope: Arc<str>,
}

impl OwnedCall {
    fn new(frame: &Utf8Bytes, envelope: &Envelope<'_>, scope: Arc<str>) -> Self {
        let base = frame.as_str().as_ptr() as usize;
        let range = |part: &str| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        OwnedCall {
            frame: frame.clone(),
            id: range(envelope.id),
            kind: envelope.kind.to_string(),
            data: envelope.data.map(range),
            scope,
        }
    }

    fn as_call(&self) -> Call<'_> {
        let text = self.frame.as_str();
        Call {
            frame: text.into(),
            id: text[self.id.clone()].into(),
            kind: self.kind.as_str().into(),
            data: self.data.clone().map_or("", |r| &text[r]).into(),
            scope: self.scope.as_ref().into(),
        }
    }
}

/// Logs a call that did not succeed (rate-limited: clients cause these).
fn log(route: &Route, kind: &str, outcome: &Outcome) {
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
    }
}
