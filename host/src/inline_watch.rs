//! Notices an inline call in the server's own process (`isolation =
//! "none"`) that runs far past the inline budget while it still runs: the
//! inline path judges a call only once it has returned, and one that never
//! returns blocks a thread of the async runtime.
//!
//! Each runtime thread has a slot: an inline call writes when it began and
//! which route it runs (two atomic stores, and two more to clear it), and a
//! thread of its own looks at the slots a few times a second. A call past
//! the threshold is logged at once (plugin, version, type) and the server
//! reports not ready on `/readyz` until no such call runs any more.

use std::{
    cell::OnceCell,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

use tracing::{error, info};

use crate::{monitor::Monitor, registry::Registry, registry::Route};

/// One runtime thread's inline call, if any.
#[derive(Default)]
struct Slot {
    /// When the call began, in nanoseconds after [`base`]; 0: none.
    started: AtomicU64,
    /// The route it runs, as the address of its metrics (compared, never
    /// followed).
    route: AtomicUsize,
    /// The `started` of the call last reported, so that it is reported once.
    reported: AtomicU64,
}

static SLOTS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());
static BASE: OnceLock<Instant> = OnceLock::new();

thread_local! {
    static SLOT: OnceCell<Arc<Slot>> = const { OnceCell::new() };
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
pub struct Watched(Option<Arc<Slot>>);

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(slot) = &self.0 {
            slot.started.store(0, Ordering::Release);
        }
    }
}

/// An inline call of `route` that began (its frame arrived) at `began`.
pub fn begin(route: &Route, began: Instant) -> Watched {
    let slot = SLOT
        .try_with(|cell| {
            cell.get_or_init(|| {
                let slot = Arc::new(Slot::default());
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
fn scan(slots: &[Arc<Slot>], now: u64, threshold: Duration) -> Vec<Stuck> {
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
/// `threshold` is logged and makes the server not ready until it ends.
pub fn start(threshold: Duration, registry: Arc<Registry>, monitor: Arc<Monitor>) {
    base();
    let every = (threshold / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let watching = std::thread::Builder::new()
        .name("inline-watch".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut was_stuck = false;
            loop {
                std::thread::sleep(every);
                let slots: Vec<Arc<Slot>> = SLOTS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect();
                let stuck = scan(&slots, nanos_since_base(Instant::now()), threshold);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_the_threshold_is_reported_once_and_a_finished_one_not() {
        let slot = Arc::new(Slot::default());
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
}
