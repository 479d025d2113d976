//! The plugins' connection hooks (plugin-api 1.2): `on_connect` before a
//! connection's first message is read, `on_disconnect` once after it
//! ended, however it ended.
//!
//! A hook runs like a pooled handler, in this process or in the plugin's
//! worker, under the handler timeout; its answer becomes the same
//! [`CallOutcome`] a call returns, so its effects go through
//! [`crate::effects`] like a handler's; it is run by
//! [`crate::dispatch::run::hook`]. In a worker a hook is a call with
//! one of the handler numbers [`ON_CONNECT`] and [`ON_DISCONNECT`], which
//! no manifest can reach (the host checks handler numbers), so it shares
//! the calls' framing, deadlines and crash handling.
//!
//! Order: the plugins with the hook, by name. The first `on_connect` that
//! refuses (or fails) ends the round; `on_disconnect` runs for every
//! plugin with the hook, refused connections included.

use abi_stable::std_types::{RString, RVec};
use rohrpost_plugin_api::abi::{CallOutcome, Effect, EXT_ON_CONNECT, EXT_ON_DISCONNECT};
use serde_json::Value;
use tracing::warn;

use crate::plugins::outcome::Outcome;

/// The handler number of `on_connect` in a worker.
pub(crate) const ON_CONNECT: u32 = u32::MAX - 1;
/// The handler number of `on_disconnect` in a worker.
pub(crate) const ON_DISCONNECT: u32 = u32::MAX;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Connect,
    Disconnect,
}

impl Hook {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Hook::Connect => EXT_ON_CONNECT,
            Hook::Disconnect => EXT_ON_DISCONNECT,
        }
    }

    pub(crate) fn number(self) -> u32 {
        match self {
            Hook::Connect => ON_CONNECT,
            Hook::Disconnect => ON_DISCONNECT,
        }
    }

    /// The hook of a handler number, if it is one.
    pub(crate) fn of_number(number: u32) -> Option<Hook> {
        match number {
            ON_CONNECT => Some(Hook::Connect),
            ON_DISCONNECT => Some(Hook::Disconnect),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::Connect => "on_connect",
            Hook::Disconnect => "on_disconnect",
        }
    }
}

/// The input of `on_disconnect`.
pub(crate) fn disconnect_input(scope: &str, close_code: u16) -> String {
    let scope = serde_json::from_str::<&serde_json::value::RawValue>(scope)
        .map(|raw| raw.get().to_owned())
        .unwrap_or_else(|_| "{}".to_owned());
    format!("{{\"scope\":{scope},\"close_code\":{close_code}}}")
}

/// A hook's answer (JSON text, see the plugin ABI) as a call's outcome.
pub(crate) fn outcome(answer: Result<String, String>) -> CallOutcome {
    let text = match answer {
        Ok(text) => text,
        Err(error) => return CallOutcome::Failed(error.into()),
    };
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return CallOutcome::Failed("the hook answered something that is not JSON".into());
    };
    if let Some(text) = value.get("panicked").and_then(Value::as_str) {
        return CallOutcome::Panicked(text.into());
    }
    if let Some(text) = value.get("failed").and_then(Value::as_str) {
        return CallOutcome::Failed(text.into());
    }
    let mut effects = RVec::new();
    for effect in value
        .get("effects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parts = (
            effect.get(0).and_then(Value::as_u64),
            effect.get(1).and_then(Value::as_str),
            effect.get(2).and_then(Value::as_str),
        );
        let (Some(kind), Some(target), Some(body)) = parts else {
            return CallOutcome::Failed("the hook answered a malformed effect".into());
        };
        effects.push(Effect {
            kind: u32::try_from(kind).unwrap_or(u32::MAX),
            target: RString::from(target),
            body: RString::from(body),
        });
    }
    CallOutcome::Done(effects)
}

/// Logs a hook that did not succeed (rate-limited: clients cause these).
pub(crate) fn log_failure(plugin: &str, version: &str, hook: Hook, outcome: &Outcome) {
    if !crate::base::log_limit::HANDLER_ERROR.allow() {
        return;
    }
    let cause = match outcome {
        Outcome::Returned(CallOutcome::Failed(text)) => format!("returned an error: {text}"),
        Outcome::Returned(CallOutcome::Panicked(text)) => format!("panicked: {text}"),
        Outcome::Returned(CallOutcome::Done(_)) => "its effects could not be carried out".into(),
        Outcome::TimedOut(after) => format!("did not finish within {} ms", after.as_millis()),
        Outcome::Lost(why) => format!("did not complete: {why}"),
        Outcome::Crashed => "its worker crashed".into(),
        Outcome::OutOfService => "the plugin is out of service".into(),
        Outcome::TooManyEffects { count, limit } => {
            format!("it asked for {count} effects, more than max_effects_per_call ({limit})")
        }
    };
    let refused = if hook == Hook::Connect {
        "; the connection is refused (1011)"
    } else {
        ""
    };
    warn!(plugin = %plugin, version = %version, hook = hook.name(),
        cause = %cause, "connection hook failed{refused}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_answers_become_outcomes() {
        let done = outcome(Ok(r#"{"effects":[[3,"g",""],[1,"","{}"]]}"#.into()));
        let CallOutcome::Done(effects) = done else {
            panic!("{done:?}")
        };
        assert_eq!(effects.len(), 2);
        assert_eq!((effects[0].kind, effects[0].target.as_str()), (3, "g"));
        assert!(matches!(
            outcome(Ok(r#"{"failed":"no"}"#.into())),
            CallOutcome::Failed(t) if t.as_str() == "no"
        ));
        assert!(matches!(
            outcome(Ok(r#"{"panicked":"boom"}"#.into())),
            CallOutcome::Panicked(_)
        ));
        assert!(matches!(outcome(Ok("[".into())), CallOutcome::Failed(_)));
        assert_eq!(
            disconnect_input(r#"{"connection_id":1}"#, 1000),
            r#"{"scope":{"connection_id":1},"close_code":1000}"#
        );
    }
}
