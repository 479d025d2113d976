//! A mutex whose holder panicked still guards consistent data here: every
//! writer in the server leaves its state whole between statements, so a
//! poisoned lock is used as it is rather than spreading the panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
