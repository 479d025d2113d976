//! Whether the server can do its whole job (`/readyz`): the plugins
//! directory scanned once, the group broker reachable if there is one, and
//! no inline handler call stuck on a thread of the server.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex,
};

use crate::base::lock::lock;

/// The two conditions of readiness.
#[derive(Default)]
pub(crate) struct Readiness {
    scanned: AtomicBool,
    /// Whether a group broker is in use (`Some`): reachable, or why not.
    broker: Mutex<Option<Result<(), &'static str>>>,
    /// An inline call runs far past the inline budget (see
    /// `crate::dispatch::inline_watch`).
    stuck: AtomicBool,
}

impl Readiness {
    /// The plugins directory has been scanned once.
    pub(crate) fn set_scanned(&self) {
        self.scanned.store(true, Ordering::Relaxed);
    }

    /// A group broker is in use: reachable (`Ok`), or not and why.
    pub(crate) fn set_broker(&self, state: Result<(), &'static str>) {
        *lock(&self.broker) = Some(state);
    }

    /// Whether an inline handler call is stuck now.
    pub(crate) fn set_stuck(&self, stuck: bool) {
        self.stuck.store(stuck, Ordering::Relaxed);
    }

    /// `Err` says why the server is not ready.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if !self.scanned.load(Ordering::Relaxed) {
            return Err("the plugins directory is not scanned yet");
        }
        if let Some(Err(reason)) = *lock(&self.broker) {
            return Err(reason);
        }
        if self.stuck.load(Ordering::Relaxed) {
            return Err("an inline handler call is stuck on a thread of the server");
        }
        Ok(())
    }
}
