//! One WebSocket connection's socket loop: read a frame, hand it to
//! [`crate::dispatch`] and what came of it to [`crate::effects`], deliver
//! what its groups send it, keep the idle timer, and close: on shutdown, on
//! idle, when the client breaks the protocol.
//!
//! Requests of a connection are handled one after another, so replies leave
//! in request order; a slow handler holds up only its own connection, and
//! group messages keep flowing while it runs.

pub(crate) mod linger;
pub(crate) mod poll_on_wake;
pub(crate) mod rate;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

use rohrpost_plugin_api::abi::CallOutcome;

use self::{
    poll_on_wake::{Wakes, WokenOnly},
    rate::{Admit, Rate},
};
use crate::{
    base::shutdown::Stopping,
    dispatch::{self, Begun, Caller, Dispatcher},
    effects::state::ConnState,
    effects::{self, Effects},
    groups::{ConnectionId, GroupLayer},
    plugins::hooks::{self, Hook},
    plugins::isolation::{slot::Attention, Quiet},
    plugins::loaded::LoadedPlugin,
    plugins::manifest::Hooks,
    plugins::outcome::Outcome,
    socket::frame::OpCode,
    socket::line::Line,
    socket::outbound::{Outbound, QueueLimits, Stop},
    socket::reader::{Message, ReadError, Reader},
    socket::writer::Writer,
    socket::Socket,
    telemetry::Monitor,
};
use rohrpost_protocol::{Close, Rejection};

/// How long a closing connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A compressed message that is not valid DEFLATE data: 1007, data that
/// does not fit its message's type (RFC 7692, section 8; RFC 6455, 7.4.1).
const BAD_DEFLATE: Close = Close {
    code: 1007,
    reason: std::borrow::Cow::Borrowed("Compressed data that cannot be inflated."),
};

/// What every connection shares.
pub(crate) struct Common {
    pub dispatcher: Dispatcher,
    pub groups: Arc<dyn GroupLayer>,
    /// Group messages and bytes a connection may have waiting before it is
    /// closed.
    pub outbound_queue: QueueLimits,
    /// No frame from the client for this long closes the connection
    /// (zero: never); a ping goes out at half of it.
    pub idle_timeout: Duration,
    /// Messages a connection may send per second (0: any).
    pub max_messages_per_second: u32,
    /// What one plugin may attach to one connection, in bytes.
    pub max_connection_state_bytes: usize,
    /// The most groups one connection may be in (0: any).
    pub max_groups_per_connection: usize,
    pub monitor: Arc<Monitor>,
}

/// How a connection ended.
enum End {
    /// The client went away, or the socket failed.
    Gone,
    /// Close with this frame.
    Close(Close),
    /// The client broke the protocol or the size limit: what it sends next
    /// cannot be read as frames. Send this close frame, then linger.
    Broken(Close),
}

impl From<Stop> for End {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Gone => End::Gone,
            Stop::Close(close) => End::Close(close),
        }
    }
}

/// The connection's own state, but for its reader: a message read borrows
/// the reader while the rest of the connection answers it.
struct Conn {
    writer: Writer,
    id: ConnectionId,
    scope: Arc<str>,
    outbound: Outbound,
    /// The message rate, when limited (boxed: most servers do not limit,
    /// and this is part of every connection's task).
    rate: Option<Box<Rate>>,
    /// What plugins attached to it; boxed and made on the first change,
    /// for the same reason.
    state: Option<Box<ConnState>>,
    /// The close code the client sent, once it did.
    client_close: Option<u16>,
}

impl Conn {
    /// Where this connection's effects go, and who it is for its calls.
    fn effects<'c>(&'c mut self, shared: &'c Common) -> (Effects<'c>, Caller<'c>) {
        let caller = Caller {
            id: self.id,
            scope: &self.scope,
            scopes: self.state.as_ref().map(|state| state.scopes()),
        };
        let effects = Effects {
            writer: &mut self.writer,
            outbound: &mut self.outbound,
            connection: self.id,
            groups: shared.groups.as_ref(),
            limits: shared.outbound_queue,
            drops: shared.monitor.queue_drops(),
            group_names: shared.dispatcher.group_names,
            state: &mut self.state,
            scope: &self.scope,
            state_limit: shared.max_connection_state_bytes,
            max_groups: shared.max_groups_per_connection,
        };
        (effects, caller)
    }
}

/// Leaves every group and counts the connection as closed when it ends,
/// however it ends.
struct LeaveOnDrop {
    groups: Arc<dyn GroupLayer>,
    monitor: Arc<Monitor>,
    id: ConnectionId,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        self.groups.leave_all(self.id);
        self.monitor.connection(-1);
    }
}

/// Serves one upgraded connection until it closes.
///
/// Its state is made before the future that serves it, which holds that
/// state in place: an `async fn` would keep a second copy of its
/// arguments (the socket) in every connection's task.
pub(crate) fn serve(
    socket: Socket,
    shared: Arc<Common>,
    scope: Arc<str>,
    id: ConnectionId,
    mut stopping: Stopping,
) -> impl Future<Output = ()> + Send {
    shared.monitor.connection(1);
    let leave_on_drop = LeaveOnDrop {
        groups: shared.groups.clone(),
        monitor: shared.monitor.clone(),
        id,
    };
    let Socket { mut reader, writer } = socket;
    let mut conn = Conn {
        writer,
        id,
        scope,
        outbound: Outbound::default(),
        rate: Rate::new(shared.max_messages_per_second, std::time::Instant::now()).map(Box::new),
        state: None,
        client_close: None,
    };
    async move {
        let _leave_on_drop = leave_on_drop;
        // Boxed, and only with hooks: a hook's call is a deep future, and
        // inline it would set the size of every connection's task.
        let connect_hooks = hooked(&shared, |hooks| hooks.on_connect);
        let admitted = if connect_hooks.is_empty() {
            Ok(())
        } else {
            Box::pin(opened(&connect_hooks, &mut conn, &shared)).await
        };
        let end = match admitted {
            Ok(()) => run(&mut conn, &mut reader, &shared, &mut stopping).await,
            Err(end) => end,
        };
        // No group message may follow a close frame.
        conn.outbound.close();
        let code = match &end {
            End::Close(close) | End::Broken(close) => close.code,
            End::Gone => conn.client_close.unwrap_or(1006),
        };
        let disconnect_hooks = hooked(&shared, |hooks| hooks.on_disconnect);
        match end {
            End::Gone => debug!(connection = id, "connection closed"),
            End::Close(close) => {
                if close == Close::QUEUE_FULL && crate::base::log_limit::QUEUE_FULL.allow() {
                    warn!(
                        connection = id,
                        "closing a connection whose outbound queue is full"
                    );
                }
                self::close(&mut conn.writer, &mut reader, close).await;
            }
            End::Broken(close) => {
                debug!(
                    connection = id,
                    code = close.code,
                    reason = %close.reason,
                    "closing a connection that broke the protocol"
                );
                close_broken(&mut conn.writer, &mut reader, close).await;
            }
        }
        if !disconnect_hooks.is_empty() {
            // Gone from its groups before the hooks run: what they send
            // and count is without it.
            shared.groups.leave_all(id);
            Box::pin(disconnected(
                &disconnect_hooks,
                &conn.scope,
                conn.state.as_deref(),
                id,
                code,
                &shared,
            ))
            .await;
        }
    }
}

/// The loaded plugins with a hook, in the order hooks run: by name.
fn hooked(shared: &Common, has: impl Fn(&Hooks) -> bool) -> Vec<Arc<LoadedPlugin>> {
    let snapshot = shared.dispatcher.registry.snapshot();
    let mut plugins: Vec<Arc<LoadedPlugin>> = snapshot
        .plugins
        .values()
        .filter(|p| has(&p.hooks))
        .cloned()
        .collect();
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    plugins
}

/// Runs the plugins' `on_connect` hooks; the end of a connection one of
/// them refused (or failed on: 1011).
async fn opened(
    plugins: &[Arc<LoadedPlugin>],
    conn: &mut Conn,
    shared: &Common,
) -> Result<(), End> {
    for plugin in plugins {
        let scope = match &conn.state {
            Some(state) => state.scope_for(&plugin.name, &conn.scope).to_string(),
            None => conn.scope.to_string(),
        };
        let cx = shared.dispatcher.context(conn.id);
        let outcome = dispatch::run::hook(&cx, plugin, Hook::Connect, scope).await;
        let effects = match outcome {
            Outcome::Returned(CallOutcome::Done(effects)) => effects,
            other => {
                hooks::log_failure(&plugin.name, &plugin.version, Hook::Connect, &other);
                return Err(End::Close(Close::HOOK_FAILED));
            }
        };
        let (mut effects_of, _) = conn.effects(shared);
        let target = effects::Target::Connection(&mut effects_of);
        let rule = shared.dispatcher.group_names;
        effects::apply(target, plugin, effects, effects::Phase::Connect, rule).await?;
    }
    Ok(())
}

/// Runs the plugins' `on_disconnect` hooks; only their group sends are
/// carried out.
async fn disconnected(
    plugins: &[Arc<LoadedPlugin>],
    scope: &Arc<str>,
    state: Option<&ConnState>,
    id: ConnectionId,
    code: u16,
    shared: &Common,
) {
    for plugin in plugins {
        let scope = state.map_or(scope, |s| s.scope_for(&plugin.name, scope));
        let input = hooks::disconnect_input(scope, code);
        let cx = shared.dispatcher.context(id);
        match dispatch::run::hook(&cx, plugin, Hook::Disconnect, input).await {
            Outcome::Returned(CallOutcome::Done(effects)) => {
                let target = effects::Target::Gone(shared.groups.as_ref());
                let rule = shared.dispatcher.group_names;
                // Nothing can stop a connection that has ended.
                let _ =
                    effects::apply(target, plugin, effects, effects::Phase::Disconnect, rule).await;
            }
            other => hooks::log_failure(&plugin.name, &plugin.version, Hook::Disconnect, &other),
        }
    }
}

async fn run(
    conn: &mut Conn,
    reader: &mut Reader,
    shared: &Common,
    stopping: &mut Stopping,
) -> End {
    // The shutdown signal and the idle timer are polled only when they
    // fire, not on every frame.
    let wakes = Wakes::new();
    let mut idle = Idle::new(shared.idle_timeout, &wakes);
    let stopped = WokenOnly::new(stopping.stopped(), &wakes);
    tokio::pin!(stopped);
    loop {
        // What the stop signal and idle timer had said when last polled:
        // a call waiting quietly wakes if they say more.
        let seen = wakes.generation();
        let (overflowed, queued) = conn.outbound.waits();
        let received = tokio::select! {
            biased;
            () = overflowed => return End::Close(Close::QUEUE_FULL),
            () = &mut stopped => return End::Close(Close::SHUTDOWN),
            ping = idle.expired() => {
                if !ping {
                    debug!(connection = conn.id, "idle timeout");
                    return End::Close(Close::IDLE);
                }
                conn.writer.frame(OpCode::Ping, &[]);
                if conn.writer.flush().await.is_err() {
                    return End::Gone;
                }
                continue;
            }
            Some(first) = queued => {
                if let Err(stop) = conn.effects(shared).0.deliver(first).await {
                    return stop.into();
                }
                continue;
            }
            received = reader.next_and_more() => received,
        };
        let (message, more) = match received {
            Ok(read) => read,
            Err(error) => return read_failure(&error),
        };
        // One clock read per frame: the idle timer's and the request's.
        let arrived = std::time::Instant::now();
        idle.heard(arrived.into());
        let verdict = match (&message, conn.rate.as_mut()) {
            (Message::Text(_) | Message::Binary, Some(rate)) => rate.take(arrived),
            _ => Admit::Accept,
        };
        let per_second = conn.rate.as_ref().map_or(0, |rate| rate.per_second());
        if verdict == Admit::Close {
            if crate::base::log_limit::CLIENT_LIMITED.allow() {
                warn!(
                    connection = conn.id,
                    "closing a connection that keeps sending faster than its message rate"
                );
            }
            return End::Close(Close::RATE_EXCEEDED);
        }
        // Group messages wait behind this frame's answer.
        conn.outbound.hold();
        let (mut effects, caller) = conn.effects(shared);
        let done = match message {
            Message::Text(text) if verdict == Admit::Refuse => {
                let reply = shared.dispatcher.rate_limited(text, per_second);
                effects.reply(reply).await
            }
            // A call answered without waiting (inline in this process, or
            // refused) is written and flushed here; anything that waits is
            // boxed: a request's handling is the deepest state of the loop,
            // and inline it would set the size of every connection's task,
            // idle ones included. An answer that only sends (a pong from a
            // worker) is written here too, whichever way it came.
            Message::Text(text) => match shared.dispatcher.begin(text, &caller, arrived) {
                Begun::Answered(answer) => match effects.carry_out_now(answer) {
                    Ok(()) => effects.flush().await,
                    Err(answer) => Box::pin(effects.carry_out(answer)).await,
                },
                Begun::Waiting(call) => {
                    // Boxed alone when nothing can arrive meanwhile (no
                    // group joined): the common call's future then stays
                    // under 1 KiB, which glibc's per-thread cache serves
                    // without consolidating its free lists.
                    let handled = if effects.outbound.exists() {
                        Box::pin(async {
                            let work = std::pin::pin!(shared.dispatcher.finish(call, None));
                            effects.while_running(work).await
                        })
                        .await
                    } else {
                        // Quietly, unless the client has sent more: a
                        // reply that only sends is then written by the
                        // worker's reader of replies, and this task wakes
                        // for the client's next frame (or its stop or idle
                        // timer) and finds the call answered.
                        let line = effects.writer.line();
                        let elsewhere = Elsewhere {
                            line,
                            wakes: &wakes,
                            seen,
                        };
                        let quiet = (!more).then(|| Quiet {
                            line: line.clone(),
                            attention: &elsewhere,
                        });
                        Ok(Box::pin(shared.dispatcher.finish(call, quiet.as_ref())).await)
                    };
                    match handled.map(|answer| effects.carry_out_now(answer)) {
                        Ok(Ok(())) => effects.flush().await,
                        Ok(Err(answer)) => Box::pin(effects.carry_out(answer)).await,
                        Err(stop) => Err(stop),
                    }
                }
            },
            Message::Binary => effects.reply(Rejection::Binary.reply()).await,
            Message::Ping(payload) => {
                effects.writer.frame(OpCode::Pong, payload);
                effects.flush().await
            }
            Message::Pong => Ok(()),
            Message::Close(frame) => {
                // The closing handshake: the client's code echoed, then the
                // end.
                conn.outbound.close();
                let code = frame.map_or(1005, |(code, _)| code);
                conn.client_close = Some(code);
                match frame {
                    Some((code, _)) => conn.writer.close(code, ""),
                    None => conn.writer.frame(OpCode::Close, &[]),
                }
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.writer.flush()).await;
                return End::Gone;
            }
        };
        if let Err(stop) = done {
            return stop.into();
        }
        conn.outbound.release();
    }
}

/// What a connection waiting quietly for a worker's reply also waits for:
/// its client's next bytes, its stop signal and its idle timer.
struct Elsewhere<'a> {
    line: &'a Line,
    wakes: &'a Wakes,
    seen: u64,
}

impl Attention for Elsewhere<'_> {
    fn poll_wanted(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.wakes.poll_woken_since(cx, self.seen).is_ready() {
            return std::task::Poll::Ready(());
        }
        self.line.poll_read_ready(cx)
    }
}

/// The idle timer: after half the timeout without a frame from the client,
/// a ping (a live client answers with a pong, which counts); after the
/// whole timeout, the end.
struct Idle {
    timeout: Duration,
    last_heard: Instant,
    pinged: bool,
    timer: Pin<Box<WokenOnly<Sleep>>>,
}

impl Idle {
    fn new(timeout: Duration, wakes: &Wakes) -> Self {
        let now = Instant::now();
        Idle {
            timeout,
            last_heard: now,
            pinged: false,
            timer: Box::pin(WokenOnly::new(
                tokio::time::sleep_until(now + timeout / 2),
                wakes,
            )),
        }
    }

    /// A frame arrived at `at`.
    fn heard(&mut self, at: Instant) {
        self.last_heard = at;
        self.pinged = false;
    }

    /// Resolves with `true` when it is time to ping, `false` when the
    /// connection has been idle for the whole timeout. Never with a zero
    /// timeout. The timer is re-armed only when it fires, not per frame.
    async fn expired(&mut self) -> bool {
        if self.timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            self.timer.as_mut().await;
            let due = self.last_heard
                + if self.pinged {
                    self.timeout
                } else {
                    self.timeout / 2
                };
            if Instant::now() < due {
                self.timer.as_mut().inner().reset(due);
                continue;
            }
            if self.pinged {
                return false;
            }
            self.pinged = true;
            self.timer
                .as_mut()
                .inner()
                .reset(self.last_heard + self.timeout);
            return true;
        }
    }
}

/// Starts the closing handshake and waits briefly for the client's answer,
/// so that the close frame is read rather than lost to a reset.
async fn close(writer: &mut Writer, reader: &mut Reader, close: Close) {
    writer.close(close.code, &close.reason);
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if writer.flush().await.is_ok() {
            while let Ok(message) = reader.next().await {
                if let Message::Close(_) = message {
                    break;
                }
            }
        }
    })
    .await;
}

/// Sends the close frame to a client whose next bytes cannot be read as
/// frames, then lingers so that the frame is read rather than destroyed by
/// the reset that unread bytes would cause.
async fn close_broken(writer: &mut Writer, reader: &mut Reader, close: Close) {
    writer.close(close.code, &close.reason);
    let sent = tokio::time::timeout(linger::QUIET, async {
        writer.flush().await?;
        writer.shutdown().await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        linger::drain(reader.half()).await;
    }
}

/// How a failed read ends the connection: a violation of RFC 6455 gets the
/// close code it calls for (section 7.4.1), anything else is a socket gone.
fn read_failure(error: &ReadError) -> End {
    match error {
        ReadError::TooBig => End::Broken(Close::TOO_BIG),
        ReadError::NotUtf8 => End::Broken(Close::INVALID_UTF8),
        ReadError::BadDeflate => End::Broken(BAD_DEFLATE),
        ReadError::Protocol(_) => End::Broken(Close::PROTOCOL_ERROR),
        ReadError::Gone => End::Gone,
    }
}
