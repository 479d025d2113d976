//! One handler of a loaded plugin and where it runs: declared inline, a
//! handler runs on the connection's task until its calls turn out slow,
//! repeatedly; then on the pool until it is fast again. The judging is
//! here, the timing in [`crate::dispatch`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::telemetry::striped::Striped;

/// Slow calls among the last [`WINDOW`] calls of an inline handler that
/// move it to the worker pool: one large or unlucky request never does.
const SLOW_CALLS: usize = 3;
/// The calls [`SLOW_CALLS`] are counted among.
const WINDOW: u64 = 32;
/// Fast pooled calls in a row that bring a demoted handler back inline;
/// doubled for each demotion after the first (up to 64 times), so that a
/// handler that is slow now and then does not flap.
const FAST_STREAK: u32 = 64;

/// One handler of a loaded plugin.
#[derive(Debug)]
pub(crate) struct HandlerInfo {
    pub types: Vec<String>,
    /// Declared inline by its plugin.
    declared_inline: bool,
    /// Declared inline, and not found too slow for that at the moment.
    inline: AtomicBool,
    judge: Judge,
}

/// What the host has seen of an inline handler's calls: a few atomics,
/// touched once per call (twice when the call was slow).
#[derive(Debug, Default)]
struct Judge {
    /// Calls judged so far: the clock of `slow`. In stripes, which a fast
    /// inline call (nearly every call) only adds to, and only a slow one
    /// sums.
    calls: Striped,
    /// The numbers (from 1) of the most recent slow calls but one.
    slow: [AtomicU64; SLOW_CALLS - 1],
    /// Fast pooled calls in a row since the handler was demoted.
    fast_streak: AtomicU32,
    demotions: AtomicU32,
}

/// What one call changed about where a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeChange {
    Unchanged,
    /// Too slow too often: it runs on the pool from now on.
    Demoted,
    /// Fast again for long enough: it runs inline again.
    Promoted,
}

impl HandlerInfo {
    pub(crate) fn new(types: Vec<String>, declared_inline: bool) -> Self {
        HandlerInfo {
            types,
            declared_inline,
            inline: AtomicBool::new(declared_inline),
            judge: Judge::default(),
        }
    }

    /// Whether calls run on the connection's task rather than the pool.
    pub(crate) fn is_inline(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// Whether its plugin declared it inline (so it is judged).
    pub(crate) fn declared_inline(&self) -> bool {
        self.declared_inline
    }

    /// Where it runs now: `inline`, `pooled` (declared so) or `demoted`
    /// (declared inline, moved to the pool for being slow).
    pub(crate) fn mode(&self) -> &'static str {
        match (self.declared_inline, self.is_inline()) {
            (true, true) => "inline",
            (true, false) => "demoted",
            (false, _) => "pooled",
        }
    }

    /// Judges one call of a handler declared inline: whether it ran inline
    /// and whether it took longer than its budget. Demotes after
    /// [`SLOW_CALLS`] slow calls among the last [`WINDOW`], and promotes a
    /// demoted handler after enough fast calls in a row.
    pub(crate) fn judge(&self, ran_inline: bool, slow: bool) -> ModeChange {
        let judge = &self.judge;
        judge.calls.add(1);
        match (ran_inline, slow) {
            (true, false) => ModeChange::Unchanged,
            (true, true) => {
                let n = judge.calls.sum();
                // The oldest remembered slow call; 0 is "none".
                let (oldest, slot) = judge
                    .slow
                    .iter()
                    .map(|s| s.load(Ordering::Relaxed))
                    .enumerate()
                    .map(|(i, v)| (v, i))
                    .min()
                    .unwrap_or((0, 0));
                if oldest != 0 && n.saturating_sub(oldest) < WINDOW {
                    for s in &judge.slow {
                        s.store(0, Ordering::Relaxed);
                    }
                    judge.fast_streak.store(0, Ordering::Relaxed);
                    if self.inline.swap(false, Ordering::Relaxed) {
                        judge.demotions.fetch_add(1, Ordering::Relaxed);
                        return ModeChange::Demoted;
                    }
                    return ModeChange::Unchanged;
                }
                judge.slow[slot].store(n, Ordering::Relaxed);
                ModeChange::Unchanged
            }
            (false, true) => {
                judge.fast_streak.store(0, Ordering::Relaxed);
                ModeChange::Unchanged
            }
            (false, false) => {
                let streak = judge.fast_streak.fetch_add(1, Ordering::Relaxed) + 1;
                let doublings = judge
                    .demotions
                    .load(Ordering::Relaxed)
                    .saturating_sub(1)
                    .min(6);
                if streak < FAST_STREAK << doublings {
                    return ModeChange::Unchanged;
                }
                judge.fast_streak.store(0, Ordering::Relaxed);
                if self.inline.swap(true, Ordering::Relaxed) {
                    ModeChange::Unchanged
                } else {
                    ModeChange::Promoted
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_call_does_not_demote_but_several_do() {
        let h = HandlerInfo::new(vec!["t".into()], true);
        for _ in 0..10 {
            assert_eq!(h.judge(true, true), ModeChange::Unchanged);
            for _ in 0..WINDOW {
                assert_eq!(h.judge(true, false), ModeChange::Unchanged);
            }
        }
        assert_eq!(h.mode(), "inline");
        assert_eq!(h.judge(true, true), ModeChange::Unchanged);
        assert_eq!(h.judge(true, false), ModeChange::Unchanged);
        assert_eq!(h.judge(true, true), ModeChange::Unchanged);
        assert_eq!(h.judge(true, true), ModeChange::Demoted);
        assert_eq!(h.mode(), "demoted");
        assert!(!h.is_inline());
    }

    #[test]
    fn a_demoted_handler_comes_back_after_fast_calls_in_a_row() {
        let h = HandlerInfo::new(vec!["t".into()], true);
        for _ in 0..SLOW_CALLS - 1 {
            h.judge(true, true);
        }
        assert_eq!(h.judge(true, true), ModeChange::Demoted);
        for _ in 0..FAST_STREAK - 1 {
            assert_eq!(h.judge(false, false), ModeChange::Unchanged);
        }
        assert_eq!(h.judge(false, true), ModeChange::Unchanged);
        for _ in 0..FAST_STREAK - 1 {
            assert_eq!(h.judge(false, false), ModeChange::Unchanged);
        }
        assert_eq!(h.judge(false, false), ModeChange::Promoted);
        assert_eq!(h.mode(), "inline");
        // The second time it takes twice as long.
        for _ in 0..SLOW_CALLS - 1 {
            h.judge(true, true);
        }
        assert_eq!(h.judge(true, true), ModeChange::Demoted);
        for _ in 0..2 * FAST_STREAK - 1 {
            assert_eq!(h.judge(false, false), ModeChange::Unchanged);
        }
        assert_eq!(h.judge(false, false), ModeChange::Promoted);
        assert_eq!(HandlerInfo::new(vec![], false).mode(), "pooled");
    }
}
