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

pub(crate) mod inline_watch;
pub(crate) mod report;
pub(crate) mod run;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rohrpost_plugin_api::{abi::CallOutcome, GroupNameRule};
use tracing::{info, warn};

use self::run::{range_of, OwnedCall};
use crate::{
    effects::{state::Scopes, Answer},
    groups::ConnectionId,
    plugins::registry::Route,
    plugins::{
        asks::Answers,
        handler::ModeChange,
        isolation::{frame, Quiet},
        outcome::Outcome,
        registry::Registry,
    },
    telemetry::Monitor,
};
use rohrpost_protocol::{self as protocol, Failure};

/// Who sends a frame: the connection, its scope, and the scopes of the
/// plugins that attached state to it.
pub(crate) struct Caller<'a> {
    pub id: ConnectionId,
    pub scope: &'a Arc<str>,
    pub scopes: Option<Arc<Scopes>>,
}

/// Routing and execution settings shared by all connections.
pub(crate) struct Dispatcher {
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
    /// Most effects one call or hook may ask for.
    pub max_effects: usize,
    pub monitor: Arc<Monitor>,
    /// What plugins' questions during a call are answered from.
    pub answers: Arc<Answers>,
}

/// What [`Dispatcher::begin`] came to.
pub(crate) enum Begun<'a> {
    /// The answer, without waiting.
    Answered(Answer<'a>),
    /// A call to wait for, with [`Dispatcher::finish`].
    Waiting(Waiting<'a>),
}

/// A routed call that runs in a worker or on the pool.
pub(crate) struct Waiting<'a> {
    text: &'a str,
    envelope: protocol::Envelope<'a>,
    route: Route,
    inline: bool,
    scope: Arc<str>,
    connection: ConnectionId,
    arrived: Instant,
}

/// Inline calls on frames larger than this are not judged slow or fast.
const JUDGED_UP_TO: usize = 64 * 1024;

impl Dispatcher {
    /// The answer to a text frame refused for its connection's message
    /// rate: the rate's error reply, or the frame's own rejection if it is
    /// not a valid request.
    pub(crate) fn rate_limited(&self, frame: &str, per_second: u32) -> String {
        match protocol::parse_bounded(frame, self.max_json_containers) {
            Ok(request) => Failure::RateLimited { per_second }.reply(&request),
            Err(rejection) => rejection.reply(),
        }
    }

    /// Parses and routes one text frame and, when its handler runs inline
    /// in the server's process, calls it: all without waiting, so that the
    /// connection's task needs no future of its own for the common call.
    /// A call in a worker or on the pool is handed back to be
    /// [`finish`](Self::finish)ed.
    pub(crate) fn begin<'a>(
        &self,
        text: &'a str,
        caller: &Caller<'_>,
        arrived: Instant,
    ) -> Begun<'a> {
        let envelope = match protocol::parse_bounded(text, self.max_json_containers) {
            Ok(envelope) => envelope,
            Err(rejection) => {
                self.monitor.invalid_request();
                return Begun::Answered(Answer::Reply(rejection.reply()));
            }
        };
        // Cloned, and the snapshot let go at once: a call holding the
        // snapshot would keep every plugin version that a reload replaces
        // meanwhile, and retire them on this thread when it ends.
        let route = match self.registry.snapshot().routes.get(envelope.kind.as_ref()) {
            Some(route) => route.clone(),
            None => {
                self.monitor.unknown_type();
                let kind = envelope.kind.as_ref();
                return Begun::Answered(Answer::Reply(
                    Failure::UnknownType { kind }.reply(&envelope),
                ));
            }
        };
        let handler = &route.plugin.handlers[route.handler as usize];
        let inline = handler.is_inline();
        let scope = match &caller.scopes {
            Some(scopes) => scopes.get(&route.plugin.name).unwrap_or(caller.scope),
            None => caller.scope,
        };
        if !inline || route.plugin.worker().is_some() {
            return Begun::Waiting(Waiting {
                text,
                envelope,
                route,
                inline,
                scope: scope.clone(),
                connection: caller.id,
                arrived,
            });
        }
        // One clock read after an inline call: on the hot path it is both
        // the call's time and the request's. Both count from the frame's
        // arrival, parsing included: for the frames that are judged (at most
        // `JUDGED_UP_TO`) that is tens of microseconds at most, far below
        // the inline budget.
        let watched = inline_watch::begin(&route, arrived);
        let cx = self.context(caller.id);
        let outcome = run::inline(&cx, &route.plugin, route.handler, &envelope, text, scope);
        drop(watched);
        let took = arrived.elapsed();
        let ended = (outcome, Some(took), took);
        Begun::Answered(self.ended(text, envelope, &route, inline, ended))
    }

    /// Runs a call that must be waited for: in the plugin's worker, or on
    /// the pool. A call to a worker may wait `quiet`ly: a reply that only
    /// sends the caller messages is then written by the reader of replies,
    /// and answers here with nothing left to carry out.
    pub(crate) async fn finish<'a>(
        &self,
        call: Waiting<'a>,
        quiet: Option<&Quiet<'_>>,
    ) -> Answer<'a> {
        let cx = self.context(call.connection);
        let (outcome, ran_for, written) = if let Some(worker) = call.route.plugin.worker() {
            // In a block of its own: what only makes the frame is not kept
            // in the call's future while it waits.
            let bytes = {
                let (text, envelope) = (call.text, &call.envelope);
                frame::call(&frame::CallParts {
                    handler: call.route.handler,
                    inline: call.inline,
                    frame: text,
                    id: range_of(text, envelope.id),
                    data: envelope.data.map_or((0, 0), |d| range_of(text, d)),
                    kind: envelope.kind.as_ref(),
                    scope: &call.scope,
                })
            };
            let (plugin, handler, pooled) = (&call.route.plugin, call.route.handler, !call.inline);
            let end = run::in_worker(&cx, plugin, worker, handler, bytes, pooled, quiet).await;
            (end.outcome, end.ran_for, end.written)
        } else {
            let owned = OwnedCall::new(call.text, &call.envelope, call.scope.clone());
            // Boxed: the pool's future is the larger, and inline it would
            // set the size of every call's future, worker calls included.
            let (outcome, ran_for) = Box::pin(run::pooled(
                &cx,
                &call.route.plugin,
                call.route.handler,
                owned,
            ))
            .await;
            (outcome, ran_for, None)
        };
        // A reply written by the reader of replies was answered then, not
        // when this task came to it.
        let took = written.map_or_else(
            || call.arrived.elapsed(),
            |at| at.saturating_duration_since(call.arrived),
        );
        let ended = (outcome, ran_for, took);
        self.ended(call.text, call.envelope, &call.route, call.inline, ended)
    }

    /// What a call on `text` that ended answers: `ended` is its outcome,
    /// how long the plugin ran (when known) and how long since the frame
    /// arrived. Judges an inline handler, counts and logs the call.
    fn ended<'a>(
        &self,
        text: &'a str,
        envelope: protocol::Envelope<'a>,
        route: &Route,
        inline: bool,
        ended: (Outcome, Option<Duration>, Duration),
    ) -> Answer<'a> {
        let (outcome, ran_for, took) = ended;
        let handler = &route.plugin.handlers[route.handler as usize];
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
                ModeChange::Unchanged => {}
                ModeChange::Demoted => warn!(
                    plugin = %route.plugin.name,
                    version = %route.plugin.version,
                    r#type = %envelope.kind,
                    took_ms = took.as_millis() as u64,
                    "inline handler is too slow for the connection task, repeatedly; running it on the worker pool until it is fast again"
                ),
                ModeChange::Promoted => info!(
                    plugin = %route.plugin.name,
                    version = %route.plugin.version,
                    r#type = %envelope.kind,
                    "inline handler is fast again; running it on the connection task again"
                ),
            }
        }
        report::count(route, &outcome, took);
        report::log(route, &envelope.kind, &outcome);
        let kind = envelope.kind.as_ref();
        let plugin = &route.plugin.name;
        let reply = match outcome {
            Outcome::Returned(CallOutcome::Done(effects)) => {
                return Answer::Effects {
                    plugin: route.plugin.clone(),
                    request: envelope,
                    effects,
                }
            }
            Outcome::Returned(CallOutcome::Failed(text)) => {
                Failure::Failed(text.as_str()).reply(&envelope)
            }
            Outcome::Returned(CallOutcome::Panicked(_)) => {
                Failure::Panicked { kind }.reply(&envelope)
            }
            Outcome::TimedOut(after) => Failure::TimedOut { kind, after }.reply(&envelope),
            Outcome::Lost(_) => Failure::Lost { kind }.reply(&envelope),
            Outcome::Crashed => Failure::Crashed { plugin }.reply(&envelope),
            Outcome::OutOfService => Failure::OutOfService { plugin }.reply(&envelope),
            Outcome::TooManyEffects { limit, .. } => {
                Failure::TooManyEffects { kind, limit }.reply(&envelope)
            }
        };
        Answer::Reply(reply)
    }

    /// What a call for `connection` runs with.
    pub(crate) fn context(&self, connection: ConnectionId) -> run::Context<'_> {
        run::Context {
            answers: &self.answers,
            connection,
            timeout: self.handler_timeout,
            max_effects: self.max_effects,
        }
    }

    /// What an inline call with a frame of `len` bytes may take.
    fn budget(&self, len: usize) -> Duration {
        let per_mib = u64::try_from(self.inline_budget_per_mib.as_nanos()).unwrap_or(u64::MAX);
        let allowance = per_mib.saturating_mul(len as u64) >> 20;
        self.inline_budget + Duration::from_nanos(allowance)
    }
}
