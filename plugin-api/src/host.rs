//! The host's services: counters in the host's `/metrics` ([`count`])
//! and log lines through the host's log ([`log`]), since 1.3. Group sizes
//! are asked through [`Connection::group_size`](crate::Connection::group_size).
//!
//! ```
//! use rohrpost_plugin_api::{host, prelude::*};
//!
//! fn lookup(req: &Request) -> Result<Value, Refusal> {
//!     // rohrpost_plugin_counts_total{plugin="<name>",event="lookups",kind="cache_miss"}
//!     let _ = host::count("lookups", "cache_miss");
//!     // A warning in the host's log, in its format, naming the plugin.
//!     host::log(host::Level::Warn, "the cache missed", &[("key", "user-7")]);
//!     Ok(json!({ "asked": req.kind() }))
//! }
//! # fn main() {}
//! ```
//!
//! Both work during a call: a handler, a hook. Outside one (in
//! `configure`, on a thread the plugin started) the host cannot tell who
//! asks: [`count`] answers [`HostError::Unavailable`] and [`log`] writes
//! the line to standard error itself, as it does in a host older than 1.3,
//! which does not know these questions. The host bounds both: names and
//! kinds of counters keep to a rule ([`ASK_COUNT`]), a plugin has a bounded
//! number of counter series ([`HostError::Refused`] beyond them), a log
//! line's bytes are bounded (longer text is cut), and so are a plugin's
//! lines per interval (the rest are dropped and counted in
//! `rohrpost_plugin_log_lines_dropped_total`).
//!
//! With the crate's `tracing` feature, `HostSubscriber` (in this module)
//! sends a plugin's `tracing` events the same way:
//! `rohrpost_plugin_api::host::HostSubscriber::default().install();` once,
//! in the function given to [`export_plugin!`](crate::export_plugin).
//!
//! Underneath is the one [`HostAsk`] function a 1.2 host hands over when
//! it loads the library ([`EXT_HOST`](crate::abi::EXT_HOST)), kept in a
//! static of this library (each load of a plugin is a fresh copy, so each
//! has its own). A host older than 1.2 never hands one over; every question
//! then has the answer documented with it.

use std::{
    io::Write as _,
    sync::atomic::{AtomicUsize, Ordering},
};

use abi_stable::std_types::RStr;
use serde::Deserialize;

#[cfg(feature = "tracing")]
pub use crate::host_tracing::HostSubscriber;

use crate::abi::{
    HostAsk, ASK_COUNT, ASK_GROUP_SIZE, ASK_LOCAL_GROUP_SIZE, ASK_LOG, ASK_OUTSIDE_CALL,
    ASK_UNSUPPORTED,
};

/// The address of the host's [`HostAsk`]; 0 while there is none.
static ASK: AtomicUsize = AtomicUsize::new(0);

/// Keeps the host's function, given as its address in decimal.
pub(crate) fn bind(address: &str) -> Result<(), String> {
    let address: usize = address
        .trim()
        .parse()
        .map_err(|_| format!("not a function address: {address:?}"))?;
    if address == 0 {
        return Err("a null function address".to_owned());
    }
    ASK.store(address, Ordering::Release);
    Ok(())
}

/// Asks the host; `None` without a host that answers questions.
fn ask(question: &str, input: &str) -> Option<Result<String, String>> {
    let address = ASK.load(Ordering::Acquire);
    if address == 0 {
        return None;
    }
    // SAFETY: the address is that of a `HostAsk` function, handed over by
    // the host that loaded this library (`bind`), which lives as long as
    // the process; the type is frozen for all of 1.x.
    let f: HostAsk = unsafe { std::mem::transmute::<usize, HostAsk>(address) };
    let answer = f(RStr::from_str(question), RStr::from_str(input));
    Some(answer.into_result().map(Into::into).map_err(Into::into))
}

/// What the host knows of one group.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct GroupSize {
    /// Its members across every host sharing the groups.
    pub members: usize,
    /// Its members on the calling connection's host.
    #[serde(default)]
    pub local: usize,
    /// Whether the calling connection is one of them.
    #[serde(default)]
    pub caller: bool,
}

/// The host's count for `group`, across all hosts or (`everywhere`
/// false) this one only; all zero without an answer.
pub(crate) fn group_size(group: &str, everywhere: bool) -> GroupSize {
    let input = serde_json::Value::from(group).to_string();
    let question = if everywhere {
        ASK_GROUP_SIZE
    } else {
        ASK_LOCAL_GROUP_SIZE
    };
    match ask(question, &input) {
        Some(Ok(answer)) => serde_json::from_str(&answer).unwrap_or_default(),
        _ => GroupSize::default(),
    }
}

/// Why the host did not take a [`count`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No host answers: asked outside a call, or a host older than 1.3
    /// (or than 1.2, without services at all).
    #[error("the host's services are not available here")]
    Unavailable,
    /// The host refused it, and says why (a name that breaks the rule, too
    /// many series).
    #[error("the host refused: {0}")]
    Refused(String),
}

/// Counts one `event` of this plugin, of `kind` (may be empty), in the
/// host's metrics: `rohrpost_plugin_counts_total{plugin="<this plugin>",
/// event="<event>",kind="<kind>"}`. `event`: 1 to 64 characters of `a-z`,
/// `0-9` and `_`, starting with a letter; `kind`: up to 64 ASCII letters,
/// digits, `_`, `-` and `.`. Keep kinds to a fixed set (never put a
/// client's text in one): the host refuses new series past a bound per
/// plugin.
pub fn count(event: &str, kind: &str) -> Result<(), HostError> {
    count_by(event, kind, 1)
}

/// [`count`] of `n` events at once.
pub fn count_by(event: &str, kind: &str, n: u64) -> Result<(), HostError> {
    let input = serde_json::json!({ "event": event, "kind": kind, "by": n }).to_string();
    match ask(ASK_COUNT, &input) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) if e == ASK_UNSUPPORTED || e == ASK_OUTSIDE_CALL => {
            Err(HostError::Unavailable)
        }
        Some(Err(e)) => Err(HostError::Refused(e)),
        None => Err(HostError::Unavailable),
    }
}

/// The level of a [`log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Something failed that should not have.
    Error,
    /// Something failed that the plugin handled (a backend down).
    Warn,
    /// Something worth knowing in normal operation.
    Info,
    /// Detail for finding a problem.
    Debug,
    /// More detail than that.
    Trace,
}

impl Level {
    /// The level's name in [`ASK_LOG`]'s input: `"warn"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// Logs one line through the host's log: the host names the plugin,
/// writes it in its own format (`--log-format json` included) and filters
/// it by its level (`ROHRPOST_LOG`). `fields` are name and value pairs
/// shown with the line; names of `a-z`, `0-9` and `_` (others are left
/// out). Outside a call, or in a host older than 1.3, the
/// line goes to standard error as `<LEVEL> <plugin>: <message> name=value
/// ...` instead. Whatever the host says (a line dropped by its rate limit),
/// this never fails.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields_json: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(*value)))
        .collect();
    let input = serde_json::json!({
        "level": level.as_str(),
        "message": message,
        "fields": fields_json,
    })
    .to_string();
    match ask(ASK_LOG, &input) {
        Some(Ok(_)) => {}
        Some(Err(e)) if e == ASK_UNSUPPORTED || e == ASK_OUTSIDE_CALL => {
            to_stderr(level, message, fields)
        }
        // Refused (too large, a bad level): the host said so; nothing more
        // to do without flooding standard error instead.
        Some(Err(_)) => {}
        None => to_stderr(level, message, fields),
    }
}

/// The line [`log`] writes itself, without a host to take it.
fn to_stderr(level: Level, message: &str, fields: &[(&str, &str)]) {
    let mut line = format!(
        "{} {}: {message}",
        level.as_str().to_ascii_uppercase(),
        crate::plugin::plugin_name().unwrap_or("plugin")
    );
    for (name, value) in fields {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        if value.contains([' ', '"', '=']) || value.is_empty() {
            line.push_str(&format!("{value:?}"));
        } else {
            line.push_str(value);
        }
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
