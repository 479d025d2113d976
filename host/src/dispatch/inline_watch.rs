//! Notices an inline call in the server's own process (`isolation =
//! "none"`) that runs far past the inline budget while it still runs: the
//! inline path judges a call only once it has returned, and one that never
//! returns blocks a thread of the async runtime.
//!
//! Each runtime thread has a slot: an inline call writes when it began and
//! which route it runs (two atomic stores, and two more to clear it), and a
//! thread of its own looks at the slots every [`LOOK_EVERY`]. A call past
//! the threshold is logged at once (plugin, version, type) and the server
//! reports not ready on `/readyz` until no such call runs any more.
//!
//! Why a blocked runtime thread used to hang the whole server (health
//! check, every connection, new handshakes: 18 of 20 runs with 2 runtime
//! threads): not tokio's LIFO slot but its I/O driver. A runtime thread
//! with nothing to do parks on the I/O driver (epoll) if no other thread
//! holds it, else on a condition variable. The thread that is woken by a
//! frame takes the connection's task out of the driver and runs it; when
//! it has no second task to hand over it wakes no other thread, so while
//! that task runs nobody polls the driver. A call that never returns thus
//! leaves the other threads asleep on their condition variable for good,
//! with no thread left to read a socket or fire a timer (seen in the
//! stacks of a hung server: one thread in the handler, the other in
//! `park_condvar`, none in `epoll_wait`). The LIFO slot (the next task of
//! a thread, which others cannot steal) holds at most one task: the last
//! one that the stuck call's own task woke in the same poll before the
//! call, which is its own connection's unless that poll had just sent to
//! a group (then one member waits there until the call returns); the other
//! tasks queued on that thread are stolen by the others. tokio's remedies,
//! `enable_eager_driver_handoff` and `disable_lifo_slot`, need
//! `--cfg tokio_unstable`.
//!
//! So the watching thread also wakes the runtime: while an inline call has
//! been running for [`WAKE_AFTER`], it spawns an empty task from outside
//! the runtime, which wakes a sleeping runtime thread; that thread runs it,
//! steals what waits on the blocked one, and, finding the driver free,
//! parks on it, so the other threads go on serving (measured: health
//! check, 20 bystanders and a new handshake answered in 20 of 20 runs).
//! With a single runtime thread (`--workers 1`) there is no other thread,
//! and a call that never returns still stops the server.

use std::{
    cell::OnceCell,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

use tracing::{error, info};

use crate::{plugins::registry::Registry, plugins::registry::Route, telemetry::Monitor};

/// One runtime thread's inline call, if any.
#[derive(Default)]
struct ThreadCall {
    /// When the call began, in nanoseconds after [`base`]; 0: none.
    started: AtomicU64,
    /// The route it runs, as the address of its metrics (compared, never
    /// followed).
    route: AtomicUsize,
    /// The `started` of the call last reported, so that it is reported once.
    reported: AtomicU64,
}

/// How often the watching thread looks at the slots.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// An inline call running this long wakes the runtime (see the module
/// comment): twice the default inline budget. A call that is only slow
/// costs an empty task when it wakes it.
const WAKE_AFTER: Duration = Duration::from_millis(20);

static SLOTS: Mutex<Vec<Weak<ThreadCall>>> = Mutex::new(Vec::new());
static BASE: OnceLock<Instant> = OnceLock::new();

thread_local! {
    static SLOT: OnceCell<Arc<ThreadCall>> = const { OnceCell::new() };
}

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// An inline call being watched; dropping it ends the watch.
pub(crate) struct Watched(Option<Arc<ThreadCall>>);

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(slot) = &self.0 {
            slot.started.store(0, Ordering::Release);
        }
    }
}

/// An inline call of `route` that began (its frame arrived) at `began`.
pub(crate) fn begin(route: &Route, began: Instant) -> Watched {
    let slot = SLOT
        .try_with(|cell| {
            cell.get_or_init(|| {
                let slot = Arc::new(ThreadCall::default());
                let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
                slots.retain(|s| s.strong_count() > 0);
                slots.push(Arc::downgrade(&slot));
                slot
            })
            .clone()
        })
        .ok();
    if let Some(slot) = &slot {
        slot.route
            .store(Arc::as_ptr(&route.metrics) as usize, Ordering::Relaxed);
        slot.started
            .store(nanos_since_base(began), Ordering::Release);
    }
    Watched(slot)
}

/// An inline call found running past the threshold.
#[derive(Debug, PartialEq, Eq)]
struct Stuck {
    route: usize,
    running: Duration,
    /// Not reported before.
    new: bool,
}

/// Looks at every slot at `now`: the calls running longer than `threshold`.
fn scan(slots: &[Arc<ThreadCall>], now: u64, threshold: Duration) -> Vec<Stuck> {
    let threshold = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
    let mut stuck = Vec::new();
    for slot in slots {
        let started = slot.started.load(Ordering::Acquire);
        if started == 0 || now.saturating_sub(started) < threshold {
            continue;
        }
        let route = slot.route.load(Ordering::Relaxed);
        // Still the same call?
        if slot.started.load(Ordering::Acquire) != started {
            continue;
        }
        let new = slot.reported.swap(started, Ordering::Relaxed) != started;
        stuck.push(Stuck {
            route,
            running: Duration::from_nanos(now - started),
            new,
        });
    }
    stuck
}

/// Starts the thread that watches inline calls: one running longer than
/// `threshold` is logged and makes the server not ready until it ends; one
/// running longer than [`WAKE_AFTER`] wakes the runtime `runtime`.
pub(crate) fn start(
    threshold: Duration,
    registry: Arc<Registry>,
    monitor: Arc<Monitor>,
    runtime: tokio::runtime::Handle,
) {
    base();
    let watching = std::thread::Builder::new()
        .name("inline-watch".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut was_stuck = false;
            loop {
                std::thread::sleep(LOOK_EVERY);
                let slots: Vec<Arc<ThreadCall>> = SLOTS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect();
                let now = nanos_since_base(Instant::now());
                if running_longer(&slots, now, WAKE_AFTER) {
                    // A thread asleep without the I/O driver wakes for it,
                    // then takes the driver (see the module comment).
                    drop(runtime.spawn(async {}));
                }
                let stuck = scan(&slots, now, threshold);
                for call in stuck.iter().filter(|c| c.new) {
                    let snapshot = registry.snapshot();
                    let found = snapshot
                        .routes
                        .iter()
                        .find(|(_, r)| Arc::as_ptr(&r.metrics) as usize == call.route);
                    let (kind, plugin, version) = found.map_or(("-", "-", "-"), |(k, r)| {
                        (k.as_str(), r.plugin.name.as_str(), r.plugin.version.as_str())
                    });
                    error!(plugin, version, r#type = kind,
                        running_ms = call.running.as_millis() as u64,
                        threshold_ms = threshold.as_millis() as u64,
                        "an inline handler call is still running far past the inline budget: it blocks a thread of the server; not ready until it returns");
                }
                let is_stuck = !stuck.is_empty();
                if is_stuck != was_stuck {
                    monitor.set_stuck(is_stuck);
                    if !is_stuck {
                        info!("no inline handler call is stuck any more; ready again");
                    }
                    was_stuck = is_stuck;
                }
            }
        });
    if let Err(error) = watching {
        error!(%error, "cannot start watching inline handler calls");
    }
}

/// Whether a call in `slots` has been running for `at_least` at `now`.
fn running_longer(slots: &[Arc<ThreadCall>], now: u64, at_least: Duration) -> bool {
    let at_least = u64::try_from(at_least.as_nanos()).unwrap_or(u64::MAX);
    slots.iter().any(|slot| {
        let started = slot.started.load(Ordering::Acquire);
        started != 0 && now.saturating_sub(started) >= at_least
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_the_threshold_is_reported_once_and_a_finished_one_not() {
        let slot = Arc::new(ThreadCall::default());
        let slots = [slot.clone()];
        let ms = 1_000_000;
        let threshold = Duration::from_millis(100);
        assert!(scan(&slots, 500 * ms, threshold).is_empty());
        slot.route.store(7, Ordering::Relaxed);
        slot.started.store(10 * ms, Ordering::Release);
        assert!(scan(&slots, 50 * ms, threshold).is_empty());
        let first = scan(&slots, 200 * ms, threshold);
        assert_eq!(
            first,
            vec![Stuck {
                route: 7,
                running: Duration::from_millis(190),
                new: true
            }]
        );
        let again = scan(&slots, 300 * ms, threshold);
        assert_eq!(again.len(), 1);
        assert!(!again[0].new);
        slot.started.store(0, Ordering::Release);
        assert!(scan(&slots, 400 * ms, threshold).is_empty());
        // The next stuck call on the thread is news again.
        slot.started.store(350 * ms, Ordering::Release);
        assert!(scan(&slots, 600 * ms, threshold)[0].new);
    }

    #[test]
    fn only_a_call_running_long_enough_wakes_the_runtime() {
        let slot = Arc::new(ThreadCall::default());
        let slots = [slot.clone()];
        let ms = 1_000_000;
        let after = Duration::from_millis(20);
        assert!(!running_longer(&slots, 500 * ms, after));
        slot.started.store(100 * ms, Ordering::Release);
        assert!(!running_longer(&slots, 110 * ms, after));
        assert!(running_longer(&slots, 120 * ms, after));
        slot.started.store(0, Ordering::Release);
        assert!(!running_longer(&slots, 900 * ms, after));
    }
}
