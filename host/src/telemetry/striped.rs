//! Counts that every request bumps, without passing a cache line between
//! the runtime's threads.
//!
//! A shared `AtomicU64` that both threads add to moves its cache line from
//! one core to the other on most requests, and an atomic add waits for it:
//! the request path bumped four of them per call (the type's outcome, the
//! plugin's latency bucket and sum, the handler's judge). Here each thread
//! adds to a stripe of its own, a line apart from the others, and a read
//! (a scrape, the sampler, a slow call's judging) sums the stripes.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// Stripes per count: threads beyond it share stripes, which stays
/// correct (the adds are atomic) and only costs the line transfers again.
pub(crate) const STRIPES: usize = 8;

/// One stripe on lines of its own: 128 bytes, because cores fetch lines
/// in adjacent pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

/// The stripe of the calling thread, given out in turn.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|mine| {
        let index = mine.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        mine.set(index);
        index
    })
}

/// A count in stripes; as a Prometheus counter, `Counter<u64, Striped>`.
#[derive(Debug, Default)]
pub(crate) struct Striped([Padded<AtomicU64>; STRIPES]);

impl Striped {
    /// Adds `n` to the calling thread's stripe; returns the stripe's
    /// count before, not the total: summing would read every other
    /// thread's line, which is what this avoids.
    pub(crate) fn add(&self, n: u64) -> u64 {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed)
    }

    /// The total (relaxed: an add in flight may be missing, never lost).
    pub(crate) fn sum(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// Increments return what [`Striped::add`] does (nothing here uses it).
impl prometheus_client::metrics::counter::Atomic<u64> for Striped {
    fn inc(&self) -> u64 {
        self.add(1)
    }

    fn inc_by(&self, v: u64) -> u64 {
        self.add(v)
    }

    fn get(&self) -> u64 {
        self.sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{stripe, Striped, STRIPES};

    #[test]
    fn adds_from_many_threads_all_count() {
        let count = Arc::new(Striped::default());
        let threads: Vec<_> = (0..STRIPES + 3)
            .map(|_| {
                let count = count.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        count.add(1);
                    }
                    stripe()
                })
            })
            .collect();
        let stripes: Vec<usize> = threads
            .into_iter()
            .map(|t| t.join().expect("the thread ran"))
            .collect();
        assert_eq!(count.sum(), (STRIPES as u64 + 3) * 1000);
        assert!(stripes.iter().all(|&s| s < STRIPES));
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        assert_eq!(stripe(), stripe());
    }
}
