//! What a handled request does to its connection, in one place: the error
//! reply of a request no handler answered, or the handler's effects decoded
//! into typed [`Action`]s and carried out in order (replies to the socket,
//! joins, leaves and group sends to the groups, close), every write guarded
//! by the connection's [`Outbound`] queue (an overflow closes with 1013);
//! and the delivery of queued group messages.
//!
//! A new kind of effect is a new `EFFECT_*` number in `plugin-api` and a
//! new [`Action`] here; nothing else in the host changes.

pub(crate) mod state;

use std::{future::Future, pin::Pin, sync::Arc};

use abi_stable::std_types::RVec;
use futures_util::SinkExt;
use prometheus_client::metrics::counter::Counter;
use rohrpost_plugin_api::{
    abi::{
        CallOutcome, Effect, EFFECT_CLOSE, EFFECT_CLOSE_WITH, EFFECT_GROUP_SEND, EFFECT_JOIN,
        EFFECT_LEAVE, EFFECT_SEND, EFFECT_SET,
    },
    GroupNameRule,
};
use serde::de::IgnoredAny;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{error, warn};

use crate::plugins::{
    hooks::{self, Hook},
    outcome::Outcome,
};
use crate::{
    base::protocol::{Close, Envelope, Failure},
    effects::state::{ConnState, Refused},
    groups::{ConnectionId, GroupLayer},
    plugins::loaded::LoadedPlugin,
    socket::outbound::{Outbound, QueueLimits, Stop},
    socket::Socket,
};

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

/// One effect of a handler, decoded and checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send this message to the caller.
    Send(String),
    /// Close the connection after what came before.
    Close,
    /// Add the caller to a group.
    Join(String),
    /// Remove the caller from a group.
    Leave(String),
    /// Send a message to every member of a group.
    GroupSend { group: String, message: String },
    /// Attach a value to the connection (carried out before the others,
    /// all of a call's at once: see [`state_changes`]).
    Set,
    /// Close with a code of the plugin's choosing.
    CloseWith { code: u16, reason: String },
}

/// Why an effect cannot be carried out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// A message to send that is not a JSON object.
    NotAnObject,
    /// An effect kind this host does not know (the plugin was built against
    /// a later 1.x).
    Unsupported(u32),
    /// A close code outside 4000-4999 and 1008, or a reason too long.
    BadClose,
}

impl Action {
    /// Decodes one ABI effect. Group names are checked for the whole call
    /// beforehand, by [`first_bad_group`].
    pub(crate) fn decode(effect: Effect) -> Result<Action, Unusable> {
        match effect.kind {
            EFFECT_SEND | EFFECT_GROUP_SEND if !is_json_object(effect.body.as_str()) => {
                Err(Unusable::NotAnObject)
            }
            EFFECT_SEND => Ok(Action::Send(effect.body.into_string())),
            EFFECT_CLOSE => Ok(Action::Close),
            EFFECT_JOIN => Ok(Action::Join(effect.target.into_string())),
            EFFECT_LEAVE => Ok(Action::Leave(effect.target.into_string())),
            EFFECT_GROUP_SEND => Ok(Action::GroupSend {
                group: effect.target.into_string(),
                message: effect.body.into_string(),
            }),
            EFFECT_SET => Ok(Action::Set),
            EFFECT_CLOSE_WITH => {
                let code = effect.target.as_str().parse::<u16>().ok();
                match code {
                    Some(code)
                        if (code == 1008 || (4000..=4999).contains(&code))
                            && effect.body.len() <= 123 =>
                    {
                        Ok(Action::CloseWith {
                            code,
                            reason: effect.body.into_string(),
                        })
                    }
                    _ => Err(Unusable::BadClose),
                }
            }
            other => Err(Unusable::Unsupported(other)),
        }
    }
}

/// The first group name among `effects` that breaks `rule`, and why.
pub(crate) fn first_bad_group(
    effects: &[Effect],
    rule: GroupNameRule,
) -> Option<rohrpost_plugin_api::GroupNameError> {
    effects
        .iter()
        .filter(|e| matches!(e.kind, EFFECT_JOIN | EFFECT_LEAVE | EFFECT_GROUP_SEND))
        .find_map(|e| rule.check(e.target.as_str()).err())
}

/// The state changes among a call's effects, in order.
pub(crate) fn state_changes(effects: &[Effect]) -> Vec<(&str, Option<&str>)> {
    effects
        .iter()
        .filter(|e| e.kind == EFFECT_SET)
        .map(|e| {
            let value = Some(e.body.as_str()).filter(|b| !b.is_empty());
            (e.target.as_str(), value)
        })
        .collect()
}

pub(crate) fn is_json_object(text: &str) -> bool {
    text.starts_with('{') && serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// Where one connection's effects go: its socket, its outbound queue, its
/// groups.
pub(crate) struct Effects<'c> {
    pub socket: &'c mut Socket,
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
    pub(crate) async fn deliver(&mut self, first: Utf8Bytes) -> Result<(), Stop> {
        let batch = self.outbound.batch(first);
        let bytes = batch.iter().map(|m| m.len()).sum();
        let socket = &mut *self.socket;
        self.outbound
            .guard(async {
                // `FINISH` carries nothing: the flush writes what the
                // fan-out left of its frame.
                for message in batch.into_iter().filter(|m| !m.is_empty()) {
                    socket.feed(Message::Text(message)).await?;
                }
                socket.flush().await
            })
            .await?;
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
            } => self.answer(&plugin, &request, effects).await,
        }
    }

    /// Sends one message of the server's own (an error reply) and flushes.
    pub(crate) async fn reply(&mut self, text: String) -> Result<(), Stop> {
        self.send(text).await?;
        self.flush().await
    }

    async fn answer(
        &mut self,
        plugin: &LoadedPlugin,
        request: &Envelope<'_>,
        effects: RVec<Effect>,
    ) -> Result<(), Stop> {
        let kind = request.kind.as_ref();
        // A group name that breaks the rule fails the whole call: carrying
        // out the rest would leave the caller half-subscribed.
        if let Some(problem) = first_bad_group(&effects, self.group_names) {
            // The name often comes from the client: one line per request
            // would let it fill the log.
            if crate::base::log_limit::INVALID_GROUP_NAME.allow() {
                warn!(plugin = %plugin.name, version = %plugin.version,
                    r#type = %kind, cause = %problem,
                    "handler used an invalid group name; none of its effects were carried out");
            }
            let problem = &problem;
            return self
                .reply(Failure::InvalidGroup { problem }.reply(request))
                .await;
        }
        let changes = state_changes(&effects);
        if !changes.is_empty() {
            let state = self.state.get_or_insert_with(Default::default);
            if let Err(refused) = state.apply(&plugin.name, &changes, self.state_limit, self.scope)
            {
                let failure = match refused {
                    Refused::TooLarge { limit } => Failure::StateTooLarge { limit },
                    Refused::NotJson => Failure::InvalidMessage { kind },
                };
                return self.reply(failure.reply(request)).await;
            }
        }
        for effect in RVec::into_iter(effects) {
            let effect_kind = effect.kind;
            let action = match Action::decode(effect) {
                Ok(action) => action,
                Err(unusable) => {
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
                    self.send(failure.reply(request)).await?;
                    continue;
                }
            };
            self.apply(action).await?;
        }
        self.flush().await
    }

    /// Carries out what a plugin's `on_connect` asked for, then flushes. A
    /// close (refusal) ends the connection; effects that cannot be carried
    /// out (a bad group name, too much state) refuse it with 1011.
    pub(crate) async fn carry_out_hook(
        &mut self,
        plugin: &LoadedPlugin,
        effects: RVec<Effect>,
    ) -> Result<(), Stop> {
        let failed = |cause: String| {
            hooks::log_failure(
                &plugin.name,
                &plugin.version,
                Hook::Connect,
                &Outcome::Returned(CallOutcome::Failed(cause.into())),
            );
            Err(Stop::Close(Close::HOOK_FAILED))
        };
        if let Some(problem) = first_bad_group(&effects, self.group_names) {
            return failed(format!("invalid group name: {problem}"));
        }
        let changes = state_changes(&effects);
        if !changes.is_empty() {
            let state = self.state.get_or_insert_with(Default::default);
            if let Err(refused) = state.apply(&plugin.name, &changes, self.state_limit, self.scope)
            {
                return failed(format!("its state was refused: {refused:?}"));
            }
        }
        for effect in RVec::into_iter(effects) {
            match Action::decode(effect) {
                Ok(action) => self.apply(action).await?,
                Err(unusable) => return failed(format!("an unusable effect: {unusable:?}")),
            }
        }
        self.flush().await
    }

    /// Carries out one action; a close ends the connection after a flush.
    pub(crate) async fn apply(&mut self, action: Action) -> Result<(), Stop> {
        match action {
            Action::Send(text) => self.send(text).await,
            Action::Close => {
                let _ = self.socket.flush().await;
                Err(Stop::Close(Close::NORMAL))
            }
            Action::CloseWith { code, reason } => {
                let _ = self.socket.flush().await;
                Err(Stop::Close(Close::with(code, reason)))
            }
            // Carried out before the call's other effects.
            Action::Set => Ok(()),
            Action::Join(group) => {
                let socket = &mut *self.socket;
                let outbox = self
                    .outbound
                    .outbox(self.limits, self.drops, || socket.get_mut().share());
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

    /// Queues a message to the caller in the socket (no flush).
    async fn send(&mut self, text: String) -> Result<(), Stop> {
        let socket = &mut *self.socket;
        self.outbound
            .guard(socket.feed(Message::Text(text.into())))
            .await
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        let socket = &mut *self.socket;
        self.outbound.guard(socket.flush()).await
    }
}

/// Carries out the group sends among `on_disconnect`'s effects (the
/// connection is gone: nothing else applies); a bad group name drops
/// them all, as for a call.
pub(crate) async fn carry_out_disconnect(
    plugin: &LoadedPlugin,
    effects: RVec<Effect>,
    groups: &dyn GroupLayer,
    rule: GroupNameRule,
) {
    if let Some(problem) = first_bad_group(&effects, rule) {
        hooks::log_failure(
            &plugin.name,
            &plugin.version,
            Hook::Disconnect,
            &Outcome::Returned(CallOutcome::Failed(
                format!("invalid group name: {problem}").into(),
            )),
        );
        return;
    }
    for effect in effects {
        if effect.kind == EFFECT_GROUP_SEND && is_json_object(effect.body.as_str()) {
            groups
                .send(effect.target.as_str(), effect.body.into_string().into())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(kind: u32, target: &str, body: &str) -> Effect {
        Effect {
            kind,
            target: target.into(),
            body: body.into(),
        }
    }

    #[test]
    fn effects_decode_into_actions() {
        assert_eq!(
            Action::decode(effect(EFFECT_SEND, "", r#"{"type":"pong"}"#)),
            Ok(Action::Send(r#"{"type":"pong"}"#.to_owned()))
        );
        assert_eq!(
            Action::decode(effect(EFFECT_CLOSE, "", "bye")),
            Ok(Action::Close)
        );
        assert_eq!(
            Action::decode(effect(EFFECT_JOIN, "room", "")),
            Ok(Action::Join("room".to_owned()))
        );
        assert_eq!(
            Action::decode(effect(EFFECT_LEAVE, "room", "")),
            Ok(Action::Leave("room".to_owned()))
        );
        assert_eq!(
            Action::decode(effect(EFFECT_GROUP_SEND, "room", "{}")),
            Ok(Action::GroupSend {
                group: "room".to_owned(),
                message: "{}".to_owned()
            })
        );
    }

    #[test]
    fn messages_must_be_objects_and_kinds_known() {
        for body in ["[1]", "{", "\"x\"", ""] {
            assert_eq!(
                Action::decode(effect(EFFECT_SEND, "", body)),
                Err(Unusable::NotAnObject)
            );
            assert_eq!(
                Action::decode(effect(EFFECT_GROUP_SEND, "g", body)),
                Err(Unusable::NotAnObject)
            );
        }
        assert_eq!(
            Action::decode(effect(99, "", "{}")),
            Err(Unusable::Unsupported(99))
        );
    }

    #[test]
    fn one_bad_group_name_is_found_among_the_effects() {
        let rule = GroupNameRule::Channels;
        let fine = [
            effect(EFFECT_SEND, "not a group", "{}"),
            effect(EFFECT_JOIN, "room-1", ""),
        ];
        assert!(first_bad_group(&fine, rule).is_none());
        let bad = [
            effect(EFFECT_JOIN, "room-1", ""),
            effect(EFFECT_GROUP_SEND, "no spaces", "{}"),
        ];
        assert!(first_bad_group(&bad, rule).is_some());
    }
}
