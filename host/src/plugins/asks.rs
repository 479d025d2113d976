//! The host's answers to a plugin during a call or a hook (plugin-api's
//! [`HostAsk`](rohrpost_plugin_api::abi::HostAsk)): how many connections are in a group (1.2); the plugin's
//! own counters and log lines (1.3, [`crate::telemetry::plugin_reports`]).
//!
//! What the answers come from is the server's [`Answers`], made once and
//! handed down to whoever runs calls. One function serves every plugin in
//! this process: [`ask`], handed to each library at load. It knows who asks
//! from the thread: the host marks the thread for the length of each call
//! with the server's answers, the connection and the plugin
//! ([`with_caller`]), so a plugin can only ask about its own caller and
//! count under its own name, and a question from a thread the plugin
//! started itself gets an error. A plugin in a worker process asks its
//! worker, which forwards the question over its channel with the call's
//! id; the host answers it with [`answer`] for the connection that call
//! belongs to. Both paths give the same answers.

use std::{
    cell::Cell,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    ptr::NonNull,
    sync::Arc,
};

use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use rohrpost_plugin_api::abi::{
    ASK_COUNT, ASK_GROUP_SIZE, ASK_LOCAL_GROUP_SIZE, ASK_LOG, ASK_OUTSIDE_CALL, ASK_UNSUPPORTED,
};

use crate::{
    groups::{ConnectionId, GroupLayer},
    telemetry::plugin_reports::PluginReports,
};

/// What the host answers plugins from: the server's groups and where
/// plugins' counters and log lines go.
pub(crate) struct Answers {
    pub groups: Arc<dyn GroupLayer>,
    pub reports: Arc<PluginReports>,
}

thread_local! {
    /// The call running on this thread: the server's answers, the
    /// connection, and the name of the plugin called (both borrowed from
    /// [`with_caller`]'s caller for the call).
    static CALLER: Cell<Option<Caller>> = const { Cell::new(None) };
}

/// The mark of a call on its thread.
#[derive(Clone, Copy)]
struct Caller {
    answers: NonNull<Answers>,
    connection: ConnectionId,
    plugin: NonNull<str>,
}

/// Runs `call` (a handler or hook of the plugin `plugin`) with this
/// thread marked as working for `connection`.
pub(crate) fn with_caller<T>(
    answers: &Answers,
    connection: ConnectionId,
    plugin: &str,
    call: impl FnOnce() -> T,
) -> T {
    /// Puts the mark back however the call ends, so that the borrowed
    /// answers and name never outlive it.
    struct Restore(Option<Caller>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CALLER.with(|c| c.set(self.0));
        }
    }
    let mark = Caller {
        answers: NonNull::from(answers),
        connection,
        plugin: NonNull::from(plugin),
    };
    let _restore = Restore(CALLER.with(|c| c.replace(Some(mark))));
    call()
}

/// The address handed to plugins ([`rohrpost_plugin_api::abi::EXT_HOST`]).
pub(crate) fn ask_address() -> String {
    (ask as rohrpost_plugin_api::abi::HostAsk as usize).to_string()
}

/// The [`HostAsk`](rohrpost_plugin_api::abi::HostAsk) of this process.
/// Never unwinds.
pub(crate) extern "C" fn ask(question: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString> {
    let answered = catch_unwind(AssertUnwindSafe(|| {
        let Some(caller) = CALLER.with(Cell::get) else {
            return Err(ASK_OUTSIDE_CALL.to_owned());
        };
        // SAFETY: the answers and the name are borrowed by `with_caller`,
        // which is running the call this question comes from, and clears
        // the mark when it returns.
        let (answers, plugin) = unsafe { (caller.answers.as_ref(), caller.plugin.as_ref()) };
        let (question, input) = (question.as_str(), input.as_str());
        answer_blocking(answers, question, input, caller.connection, plugin)
    }));
    match answered {
        Ok(Ok(text)) => ROk(text.into()),
        Ok(Err(text)) => RErr(text.into()),
        Err(_) => RErr("the host failed to answer".into()),
    }
}

/// Answers on a thread that may block briefly: a runtime worker (an inline
/// call) or a pool thread. Asking other hosts waits a bounded time.
fn answer_blocking(
    answers: &Answers,
    question: &str,
    input: &str,
    connection: ConnectionId,
    plugin: &str,
) -> Result<String, String> {
    let mut answering = std::pin::pin!(answer(answers, question, input, connection, plugin));
    // Groups of this host answer at once: no blocking for them.
    let mut now = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(answered) = answering.as_mut().poll(&mut now) {
        return answered;
    }
    let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    tokio::task::block_in_place(|| handle.block_on(answering))
}

/// The answer to one question of `plugin` for `connection`.
pub(crate) async fn answer(
    answers: &Answers,
    question: &str,
    input: &str,
    connection: ConnectionId,
    plugin: &str,
) -> Result<String, String> {
    match question {
        ASK_COUNT => answers.reports.count(plugin, input),
        ASK_LOG => answers.reports.log(plugin, input),
        ASK_GROUP_SIZE | ASK_LOCAL_GROUP_SIZE => {
            let groups = &answers.groups;
            let group: String = serde_json::from_str(input)
                .map_err(|e| format!("the group name is not a JSON string: {e}"))?;
            let (local, caller) = groups.local_size(&group, connection);
            let others = if question == ASK_GROUP_SIZE {
                // Without an answer from the other hosts, this host's own.
                groups.remote_members(&group).await.unwrap_or(0)
            } else {
                0
            };
            Ok(serde_json::json!({
                "members": local + others,
                "local": local,
                "caller": caller,
            })
            .to_string())
        }
        _ => Err(ASK_UNSUPPORTED.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Option<(ConnectionId, String)> {
        // SAFETY: read while the marking `with_caller` runs, as `ask` does.
        CALLER
            .with(Cell::get)
            .map(|c| (c.connection, unsafe { c.plugin.as_ref() }.to_owned()))
    }

    fn answers() -> Answers {
        let mut registry = prometheus_client::registry::Registry::default();
        Answers {
            groups: Arc::new(crate::groups::MemoryGroups::default()),
            reports: Arc::new(PluginReports::register(&mut registry)),
        }
    }

    #[test]
    fn the_mark_names_the_plugin_for_the_call_only() {
        let answers = answers();
        assert_eq!(caller(), None);
        let outer = 7;
        with_caller(&answers, outer, "proxy", || {
            assert_eq!(caller(), Some((outer, "proxy".to_owned())));
            with_caller(&answers, 8, "other", || {
                assert_eq!(caller().map(|c| c.1), Some("other".to_owned()));
            });
            assert_eq!(caller(), Some((outer, "proxy".to_owned())));
        });
        assert_eq!(caller(), None);
        // Put back when the call unwinds too.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_caller(&answers, outer, "proxy", || panic!("boom"))
        }));
        assert!(unwound.is_err());
        assert_eq!(caller(), None);
    }

    #[test]
    fn a_question_outside_a_call_is_refused() {
        let answer = ask(ASK_COUNT.into(), r#"{"event":"e"}"#.into());
        assert_eq!(answer.into_result().unwrap_err().as_str(), ASK_OUTSIDE_CALL);
    }
}
