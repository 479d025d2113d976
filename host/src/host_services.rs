//! The host's answers to a plugin during a call or a hook (plugin-api 1.2's
//! [`HostAsk`]): how many connections are in a group.
//!
//! One function serves every plugin in this process: [`ask`], handed to
//! each library at load. It knows who asks from the thread: the host marks
//! the thread for the length of each call ([`with_caller`]), so a plugin can
//! only ask about its own caller, and a question from a thread the plugin
//! started itself gets an error. A plugin in a worker process asks its
//! worker, which forwards the question over its channel with the call's
//! id; the host answers it with [`answer`] for the connection that call
//! belongs to. Both paths give the same answers.

use std::{
    cell::Cell,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, RwLock},
};

use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use rohrpost_plugin_api::abi::{ASK_GROUP_SIZE, ASK_LOCAL_GROUP_SIZE, ASK_UNSUPPORTED};

use crate::groups::{ConnectionId, GroupLayer};

/// The groups of the server running in this process.
static GROUPS: RwLock<Option<Arc<dyn GroupLayer>>> = RwLock::new(None);

thread_local! {
    /// The connection whose call runs on this thread.
    static CALLER: Cell<Option<ConnectionId>> = const { Cell::new(None) };
}

/// The server's groups, for the answers; set once it has them.
pub fn serve_groups(groups: Arc<dyn GroupLayer>) {
    *GROUPS.write().unwrap_or_else(|p| p.into_inner()) = Some(groups);
}

/// The server's groups, once set.
pub fn groups() -> Option<Arc<dyn GroupLayer>> {
    GROUPS.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Runs `call` (a plugin's handler or hook) with this thread marked as
/// working for `connection`.
pub fn with_caller<T>(connection: ConnectionId, call: impl FnOnce() -> T) -> T {
    let before = CALLER.with(|c| c.replace(Some(connection)));
    let out = call();
    CALLER.with(|c| c.set(before));
    out
}

/// The address handed to plugins ([`rohrpost_plugin_api::abi::EXT_HOST`]).
pub fn ask_address() -> String {
    (ask as rohrpost_plugin_api::abi::HostAsk as usize).to_string()
}

/// The [`HostAsk`](rohrpost_plugin_api::abi::HostAsk) of this process.
/// Never unwinds.
pub extern "C" fn ask(question: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString> {
    let answered = catch_unwind(AssertUnwindSafe(|| {
        let Some(connection) = CALLER.with(Cell::get) else {
            return Err("asked outside a call of the host".to_owned());
        };
        let groups = groups().ok_or("the server has no groups yet")?;
        answer_blocking(
            question.as_str(),
            input.as_str(),
            connection,
            groups.as_ref(),
        )
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
    question: &str,
    input: &str,
    connection: ConnectionId,
    groups: &dyn GroupLayer,
) -> Result<String, String> {
    let mut answering = std::pin::pin!(answer(question, input, connection, groups));
    // Groups of this host answer at once: no blocking for them.
    let mut now = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(answered) = answering.as_mut().poll(&mut now) {
        return answered;
    }
    let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    tokio::task::block_in_place(|| handle.block_on(answering))
}

/// The answer to one question for `connection`.
pub async fn answer(
    question: &str,
    input: &str,
    connection: ConnectionId,
    groups: &dyn GroupLayer,
) -> Result<String, String> {
    match question {
        ASK_GROUP_SIZE | ASK_LOCAL_GROUP_SIZE => {
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
