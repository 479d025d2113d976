//! Running one call of a plugin, the one place for handler calls and
//! hooks alike: inline on the connection's task, on tokio's blocking pool
//! (bounded per plugin, under the handler timeout), or in the plugin's
//! worker process (under the same timeout; a call past it gets the worker
//! killed and replaced). Each returns how the call ended and, where known,
//! how long the plugin itself ran.

use std::{
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use rohrpost_plugin_api::abi::Call;

use crate::{
    groups::ConnectionId,
    plugins::{
        asks::{with_caller, Answers},
        hooks::{self, Hook},
        isolation::{frame, slot::Ended, Quiet, WorkerHandle},
        loaded::LoadedPlugin,
        outcome::Outcome,
    },
};
use rohrpost_protocol::Envelope;

/// The end of `timeout` from now; a timeout too long to add is no timeout.
fn deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// What every call for a connection runs with: the server's answers to
/// plugins' questions, the connection, and the call's bounds.
pub(crate) struct Context<'a> {
    pub answers: &'a Arc<Answers>,
    pub connection: ConnectionId,
    pub timeout: Duration,
    pub max_effects: usize,
}

/// Runs a handler inline, on this task.
pub(crate) fn inline(
    cx: &Context<'_>,
    plugin: &LoadedPlugin,
    handler: u32,
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
    with_caller(cx.answers, cx.connection, &plugin.name, || {
        Outcome::returned(plugin.call(handler, &call), cx.max_effects)
    })
}

/// Runs a call in the plugin's worker: `bytes` is its frame (from
/// [`frame::call`]). Pooled calls hold one of the plugin's slots, as on the
/// pool; a call past the timeout has its worker killed, which frees it.
/// An inline call may wait `quiet`ly (see [`crate::plugins::isolation::slot`]).
pub(crate) async fn in_worker(
    cx: &Context<'_>,
    plugin: &LoadedPlugin,
    worker: &WorkerHandle,
    number: u32,
    bytes: Vec<u8>,
    pooled: bool,
    quiet: Option<&Quiet<'_>>,
) -> Ended {
    let timeout = cx.timeout;
    let deadline = deadline(timeout);
    let _permit = if pooled {
        match tokio::time::timeout_at(deadline, plugin.pool_slots.acquire()).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(closed)) => return Outcome::Lost(closed.to_string()).into(),
            Err(_) => return Outcome::TimedOut(timeout).into(),
        }
    } else {
        None
    };
    plugin.count_call();
    // A pooled call holds its slot until its end is taken, so it never
    // waits quietly.
    let quiet = quiet.filter(|_| !pooled);
    worker
        .call(number, bytes, (deadline, timeout), cx.connection, quiet)
        .await
}

/// Runs a handler on the pool; also how long the call itself ran, not
/// counting the wait for a pool thread.
pub(crate) async fn pooled(
    cx: &Context<'_>,
    plugin: &Arc<LoadedPlugin>,
    handler: u32,
    owned: OwnedCall,
) -> (Outcome, Option<Duration>) {
    let (plugin, answers, connection) = (plugin.clone(), cx.answers.clone(), cx.connection);
    let slots = plugin.pool_slots.clone();
    let work = async move {
        // Held by the blocking call until it returns, even after the
        // caller gave up waiting: a native call cannot be cancelled.
        let permit = slots.acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let outcome = with_caller(&answers, connection, &plugin.name, || {
                plugin.call(handler, &owned.as_call())
            });
            (outcome, started.elapsed())
        })
        .await
    };
    match waited(cx.timeout, work).await {
        Ok((outcome, ran_for)) => (Outcome::returned(outcome, cx.max_effects), Some(ran_for)),
        Err(ended) => (ended, None),
    }
}

/// Runs one hook of `plugin` for `connection`, under `timeout`: in its
/// worker like a pooled call (with the hook's number, which no manifest
/// can reach), or in this process on the blocking pool.
pub(crate) async fn hook(
    cx: &Context<'_>,
    plugin: &Arc<LoadedPlugin>,
    hook: Hook,
    input: String,
) -> Outcome {
    let (timeout, connection) = (cx.timeout, cx.connection);
    if let Some(worker) = plugin.worker() {
        let parts = frame::CallParts {
            handler: hook.number(),
            inline: false,
            frame: &input,
            id: (0, 0),
            data: (0, 0),
            kind: hook.name(),
            scope: &input,
        };
        let bytes = frame::call(&parts);
        let end = worker
            .call(
                hook.number(),
                bytes,
                (deadline(timeout), timeout),
                connection,
                None,
            )
            .await;
        return end.outcome;
    }
    let (plugin, answers) = (plugin.clone(), cx.answers.clone());
    let work = tokio::task::spawn_blocking(move || {
        with_caller(&answers, connection, &plugin.name, || {
            hooks::outcome(plugin.extension(hook.extension(), &input))
        })
    });
    waited(timeout, work).await.map_or_else(
        |ended| ended,
        |answer| Outcome::returned(answer, cx.max_effects),
    )
}

/// Waits up to `timeout` for a call on the blocking pool; how it ended when
/// it gave no answer.
async fn waited<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, tokio::task::JoinError>>,
) -> Result<T, Outcome> {
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(join_error)) => Err(Outcome::Lost(join_error.to_string())),
        Err(_) => Err(Outcome::TimedOut(timeout)),
    }
}

/// Where `part`, a slice of `text`, lies in it.
pub(crate) fn range_of(text: &str, part: &str) -> (usize, usize) {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if start > text.len() || start + part.len() > text.len() {
        return (0, 0);
    }
    (start, part.len())
}

/// A request owned for a call on another thread: the frame is shared, and
/// the parts are ranges into it.
pub(crate) struct OwnedCall {
    frame: Box<str>,
    id: Range<usize>,
    kind: String,
    data: Option<Range<usize>>,
    scope: Arc<str>,
}

impl OwnedCall {
    pub(crate) fn new(frame: &str, envelope: &Envelope<'_>, scope: Arc<str>) -> Self {
        let base = frame.as_ptr() as usize;
        let range = |part: &str| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        OwnedCall {
            frame: frame.into(),
            id: range(envelope.id),
            kind: envelope.kind.to_string(),
            data: envelope.data.map(range),
            scope,
        }
    }

    fn as_call(&self) -> Call<'_> {
        let text = &*self.frame;
        Call {
            frame: text.into(),
            id: text[self.id.clone()].into(),
            kind: self.kind.as_str().into(),
            data: self.data.clone().map_or("", |r| &text[r]).into(),
            scope: self.scope.as_ref().into(),
        }
    }
}
