//! The host's services as this library sees them: the one [`HostAsk`]
//! function a 1.2 host hands over when it loads the library
//! ([`EXT_HOST`](crate::abi::EXT_HOST)), and the questions built on it.
//!
//! The function is kept in a static of this library (each load of a plugin
//! is a fresh copy, so each has its own). A host older than 1.2 never hands
//! one over; every question then has the answer documented with it.

use std::sync::atomic::{AtomicUsize, Ordering};

use abi_stable::std_types::RStr;
use serde::Deserialize;

use crate::abi::{HostAsk, ASK_GROUP_SIZE, ASK_LOCAL_GROUP_SIZE};

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
