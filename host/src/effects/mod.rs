//! What a handled request does to its connection, in one place: the error
//! reply of a request no handler answered, or the handler's effects decoded
//! into typed [`Action`]s and carried out in order (replies to the socket,
//! joins, leaves and group sends to the groups, close), every write guarded
//! by the connection's [`Outbound`] queue (an overflow closes with 1013);
//! and the delivery of queued group messages.
//!
//! A new kind of effect is a new `EFFECT_*` number in `plugin-api` and a
//! new [`Action`] here; nothing else in the host changes.

pub(crate) mod action;
mod direct;
pub(crate) mod state;

use std::{future::Future, pin::Pin, sync::Arc};

use abi_stable::std_types::RVec;
use prometheus_client::metrics::counter::Counter;
use rohrpost_plugin_api::{
    abi::{CallOutcome, Effect, EFFECT_SEND},
    GroupNameRule,
};
use tracing::{error, warn};

use self::action::{first_bad_group, joins_past, state_changes, Action, Unusable};
use crate::plugins::{
    hooks::{self, Hook},
    isolation::slot::MOST_SENDS_AT_ONCE,
    outcome::Outcome,
};
use crate::{
    effects::state::{ConnState, Refused},
    groups::{ConnectionId, GroupLayer},
    plugins::loaded::LoadedPlugin,
    socket::outbound::{Outbound, QueueLimits, Queued, Stop},
    socket::writer::Writer,
};
use rohrpost_protocol::{is_json_object, Close, Envelope, Failure};

/// What a plugin's effects answer, and so what they may do and what
/// becomes of one that cannot be carried out.
pub(crate) enum Phase<'r> {
    /// A handler's answer to `request`: a problem is an error reply to it.
    Call(&'r Envelope<'r>),
    /// `on_connect`: a problem refuses the connection (1011).
    Connect,
    /// `on_disconnect`: the connection is gone; only group sends apply.
    Disconnect,
}

/// Where effects go: a connection, or only its groups once it is gone.
pub(crate) enum Target<'t, 'c> {
    Connection(&'t mut Effects<'c>),
    Gone(&'t dyn GroupLayer),
}

/// What came of one text frame, for [`Effects::carry_out`].
pub(crate) enum Answer<'a> {
    /// An error reply of the server's own: the frame was not a valid
    /// request, no plugin serves its type, or its call failed.
    Reply(String),
    /// What the handler asked for, in answer to `request`.
    Effects {
        plugin: Arc<LoadedPlugin>,
        request: Envelope<'a>,
        effects: RVec<Effect>,
    },
}

/// Where one connection's effects go: its socket, its outbound queue, its
/// groups.
pub(crate) struct Effects<'c> {
    pub writer: &'c mut Writer,
    pub outbound: &'c mut Outbound,
    pub connection: ConnectionId,
    pub groups: &'c dyn GroupLayer,
    pub limits: QueueLimits,
    /// Counts group messages dropped on a full queue.
    pub drops: &'c Counter,
    /// Which group names handlers may use.
    pub group_names: GroupNameRule,
    /// What plugins attached to the connection, made on the first change.
    pub state: &'c mut Option<Box<ConnState>>,
    /// The connection's scope, without any plugin's state.
    pub scope: &'c Arc<str>,
    /// The most one plugin may attach to one connection, in bytes.
    pub state_limit: usize,
    /// The most groups the connection may be in (0: any).
    pub max_groups: usize,
}

impl Effects<'_> {
    /// Runs `work` (handling a request) while group messages keep flowing
    /// to the socket; stops when the queue overflows. `work` comes pinned,
    /// so that this future does not hold a second copy of it.
    pub(crate) async fn while_running<F: Future>(
        &mut self,
        mut work: Pin<&mut F>,
    ) -> Result<F::Output, Stop> {
        if !self.outbound.exists() {
            // Nothing can arrive: a queue is only made by a join, which
            // comes after the request.
            return Ok(work.await);
        }
        loop {
            let (overflow, queued) = self.outbound.waits();
            tokio::select! {
                biased;
                done = work.as_mut() => return Ok(done),
                () = overflow => return Err(Stop::Close(Close::QUEUE_FULL)),
                Some(first) = queued => self.deliver(first).await?,
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then
    /// flushes; gives up when the queue overflows meanwhile.
    /// Each message goes as the fan-out encoded it for this connection:
    /// a group message is compressed once for all members, busy or not.
    pub(crate) async fn deliver(&mut self, first: Queued) -> Result<(), Stop> {
        let batch = self.outbound.batch(first);
        let bytes = batch.iter().map(Queued::len).sum();
        let deflate = self.writer.deflate();
        // `Queued::Finish` carries nothing: the flush writes what the
        // fan-out left of its frame.
        for message in &batch {
            self.writer.encoded(message.frame(deflate));
        }
        let writer = &mut *self.writer;
        self.outbound.guard(writer.flush()).await?;
        self.outbound.written(bytes);
        Ok(())
    }

    /// Carries out what came of one text frame, then flushes.
    pub(crate) async fn carry_out(&mut self, answer: Answer<'_>) -> Result<(), Stop> {
        match answer {
            Answer::Reply(text) => self.reply(text).await,
            Answer::Effects {
                plugin,
                request,
                effects,
            } => {
                let rule = self.group_names;
                apply(
                    Target::Connection(self),
                    &plugin,
                    effects,
                    Phase::Call(&request),
                    rule,
                )
                .await
            }
        }
    }

    /// Carries out, without waiting, an answer that only sends messages to
    /// the caller (a pong, an error reply): their frames wait in the writer
    /// for the caller's [`flush`](Self::flush). Any other answer is handed
    /// back, for [`carry_out`](Self::carry_out).
    pub(crate) fn carry_out_now<'a>(&mut self, answer: Answer<'a>) -> Result<(), Answer<'a>> {
        match answer {
            Answer::Reply(text) => {
                self.writer.text(&text);
                Ok(())
            }
            Answer::Effects {
                plugin,
                request,
                effects,
            } if only_sends(effects.iter().map(|e| (e.kind, e.body.len()))) => {
                // What `apply` does with sends alone: no group, no state,
                // each message checked and written in order.
                for effect in RVec::into_iter(effects) {
                    if effect.kind == EFFECT_SEND && is_json_object(effect.body.as_str()) {
                        self.writer.text(effect.body.as_str());
                    } else {
                        let kind = effect.kind;
                        let unusable = Action::decode(effect)
                            .err()
                            .unwrap_or(Unusable::NotAnObject);
                        self.writer
                            .text(&unusable_reply(&plugin, &request, kind, unusable));
                    }
                }
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Sends one message of the server's own (an error reply) and flushes.
    pub(crate) async fn reply(&mut self, text: String) -> Result<(), Stop> {
        self.send(text).await?;
        self.flush().await
    }

    /// Carries out one action; a close ends the connection after a flush.
    async fn act(&mut self, action: Action) -> Result<(), Stop> {
        match action {
            Action::Send(text) => self.send(text).await,
            Action::Close => {
                let _ = self.writer.flush().await;
                Err(Stop::Close(Close::NORMAL))
            }
            Action::CloseWith { code, reason } => {
                let _ = self.writer.flush().await;
                Err(Stop::Close(Close::with(code, reason)))
            }
            // Carried out before the call's other effects.
            Action::Set => Ok(()),
            Action::Join(group) => {
                let writer = &*self.writer;
                let outbox = self
                    .outbound
                    .outbox(self.limits, self.drops, || Some(writer.share()));
                self.groups.join(&group, self.connection, outbox).await;
                Ok(())
            }
            Action::Leave(group) => {
                self.groups.leave(&group, self.connection);
                Ok(())
            }
            Action::GroupSend { group, message } => {
                self.groups.send(&group, message.into()).await;
                Ok(())
            }
        }
    }

    /// Adds a message to the caller to what the next flush writes; flushes
    /// first when much is waiting already, so that a call's replies are
    /// not all held in memory twice.
    async fn send(&mut self, text: String) -> Result<(), Stop> {
        if self.writer.waiting() >= FLUSH_PAST {
            self.flush().await?;
        }
        self.writer.text(&text);
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), Stop> {
        let writer = &mut *self.writer;
        self.outbound.guard(writer.flush()).await
    }
}

/// Bytes of replies waiting for a flush past which the next reply flushes
/// them first.
const FLUSH_PAST: usize = 64 * 1024;

/// Whether `effects` (each its kind and the length of its body) only
/// send to the caller, few and small enough to be written without waiting.
fn only_sends(mut effects: impl ExactSizeIterator<Item = (u32, usize)>) -> bool {
    effects.len() <= MOST_SENDS_AT_ONCE
        && effects.all(|(kind, len)| kind == EFFECT_SEND && len <= FLUSH_PAST / MOST_SENDS_AT_ONCE)
}

/// How many actions are carried out between two yields to the runtime.
const YIELD_EVERY: usize = 256;

/// Carries out what `plugin` asked for in `phase`, in order, the one place
/// for calls and both hooks: the call's group names checked first (one bad
/// name fails them all: carrying out the rest would leave the caller
/// half-subscribed), then the number of groups it would leave the
/// connection in, then its state changes all at once, then each action.
/// A connection is flushed at the end.
pub(crate) async fn apply(
    mut target: Target<'_, '_>,
    plugin: &LoadedPlugin,
    effects: RVec<Effect>,
    phase: Phase<'_>,
    group_names: GroupNameRule,
) -> Result<(), Stop> {
    if let Some(problem) = first_bad_group(&effects, group_names) {
        return match (&phase, &mut target) {
            (Phase::Call(request), Target::Connection(connection)) => {
                // The name often comes from the client: one line per request
                // would let it fill the log.
                if crate::base::log_limit::INVALID_GROUP_NAME.allow() {
                    warn!(plugin = %plugin.name, version = %plugin.version,
                        r#type = %request.kind, cause = %problem,
                        "handler used an invalid group name; none of its effects were carried out");
                }
                let problem = &problem;
                connection
                    .reply(Failure::InvalidGroup { problem }.reply(request))
                    .await
            }
            _ => refuse(plugin, &phase, format!("invalid group name: {problem}")),
        };
    }
    let connection = match target {
        Target::Connection(connection) => connection,
        // Gone: its group sends are all that can still happen.
        Target::Gone(groups) => {
            for action in RVec::into_iter(effects).filter_map(|e| Action::decode(e).ok()) {
                if let Action::GroupSend { group, message } = action {
                    groups.send(&group, message.into()).await;
                }
            }
            return Ok(());
        }
    };
    let limit = connection.max_groups;
    if limit > 0
        && joins_past(
            &effects,
            connection.groups.local(),
            connection.connection,
            limit,
        )
    {
        let Phase::Call(request) = phase else {
            return refuse(
                plugin,
                &phase,
                format!("it would join more than {limit} groups"),
            );
        };
        return connection
            .reply(Failure::TooManyGroups { limit }.reply(request))
            .await;
    }
    let changes = state_changes(&effects);
    if !changes.is_empty() {
        let state = connection.state.get_or_insert_with(Default::default);
        let limit = connection.state_limit;
        if let Err(refused) = state.apply(&plugin.name, &changes, limit, connection.scope) {
            let Phase::Call(request) = phase else {
                return refuse(
                    plugin,
                    &phase,
                    format!("its state was refused: {refused:?}"),
                );
            };
            let kind = request.kind.as_ref();
            let failure = match refused {
                Refused::TooLarge { limit } => Failure::StateTooLarge { limit },
                Refused::NotJson => Failure::InvalidMessage { kind },
            };
            return connection.reply(failure.reply(request)).await;
        }
    }
    for (n, effect) in RVec::into_iter(effects).enumerate() {
        if n > 0 && n % YIELD_EVERY == 0 {
            // Other connections' tasks run between the chunks of a long
            // call: its effects never hold a runtime thread for long.
            tokio::task::yield_now().await;
        }
        let effect_kind = effect.kind;
        match (Action::decode(effect), &phase) {
            (Ok(action), _) => connection.act(action).await?,
            (Err(unusable), Phase::Call(request)) => {
                let failure = unusable_reply(plugin, request, effect_kind, unusable);
                connection.send(failure).await?;
            }
            (Err(unusable), _) => {
                return refuse(plugin, &phase, format!("an unusable effect: {unusable:?}"))
            }
        }
    }
    connection.flush().await
}

/// A hook's effects that cannot be carried out: logged; `on_connect`'s
/// refuse the connection (1011).
fn refuse(plugin: &LoadedPlugin, phase: &Phase<'_>, cause: String) -> Result<(), Stop> {
    let hook = match phase {
        Phase::Disconnect => Hook::Disconnect,
        Phase::Connect | Phase::Call(_) => Hook::Connect,
    };
    hooks::log_failure(
        &plugin.name,
        &plugin.version,
        hook,
        &Outcome::Returned(CallOutcome::Failed(cause.into())),
    );
    match phase {
        Phase::Disconnect => Ok(()),
        Phase::Connect | Phase::Call(_) => Err(Stop::Close(Close::HOOK_FAILED)),
    }
}

/// The error reply, in its place among a call's replies, for an effect
/// that cannot be carried out (logged: the plugin is at fault).
fn unusable_reply(
    plugin: &LoadedPlugin,
    request: &Envelope<'_>,
    effect_kind: u32,
    unusable: Unusable,
) -> String {
    let kind = request.kind.as_ref();
    let failure = match unusable {
        Unusable::NotAnObject => {
            if crate::base::log_limit::HANDLER_INVALID.allow() {
                error!(plugin = %plugin.name, version = %plugin.version,
                    r#type = %kind, effect = effect_kind,
                    cause = "a message that is not a JSON object",
                    "handler produced something invalid");
            }
            Failure::InvalidMessage { kind }
        }
        Unusable::Unsupported(other) => {
            if crate::base::log_limit::HANDLER_INVALID.allow() {
                warn!(plugin = %plugin.name, version = %plugin.version,
                    r#type = %kind, effect = other,
                    "handler asked for an effect this host does not support");
            }
            Failure::Unsupported { kind }
        }
        Unusable::BadClose => {
            if crate::base::log_limit::HANDLER_INVALID.allow() {
                error!(plugin = %plugin.name, version = %plugin.version,
                    r#type = %kind, effect = effect_kind,
                    cause = "a close code outside 4000-4999 and 1008, or a reason over 123 bytes",
                    "handler produced something invalid");
            }
            Failure::InvalidMessage { kind }
        }
    };
    failure.reply(request)
}
