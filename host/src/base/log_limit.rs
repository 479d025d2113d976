//! Rate limits for the log lines a client can cause.
//!
//! A wrong bearer token, a handler's `Err`, a refused handshake: each is
//! worth a line, but a client that repeats it thousands of times a second
//! must not fill the disk or drown everything else. Each kind of line has
//! a [`LogLimit`]: at most [`LINES`] lines per [`INTERVAL`], then one
//! line saying that more are being suppressed, and, with the first line
//! after the interval, one saying how many were. The metrics still count
//! every event.
//!
//! A check is two atomic operations and never allocates, whether it lets
//! the line through or not.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use tracing::warn;

/// Lines of one kind logged per interval before the rest are suppressed.
pub(crate) const LINES: u64 = 10;

/// The interval over which [`LINES`] are counted.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// `POST /api/notify` without the right bearer token.
pub(crate) static NOTIFY_BAD_TOKEN: LogLimit = LogLimit::new("notify_bad_token");
/// A handler returned an error.
pub(crate) static HANDLER_ERROR: LogLimit = LogLimit::new("handler_error");
/// A handler panicked.
pub(crate) static HANDLER_PANIC: LogLimit = LogLimit::new("handler_panic");
/// A pooled handler ran past the handler timeout.
pub(crate) static HANDLER_TIMEOUT: LogLimit = LogLimit::new("handler_timeout");
/// A handler call that never came back.
pub(crate) static HANDLER_LOST: LogLimit = LogLimit::new("handler_lost");
/// A handler produced an invalid message or asked for an unknown effect.
pub(crate) static HANDLER_INVALID: LogLimit = LogLimit::new("handler_invalid");
/// A handler used a group name that breaks the rule (often a client's).
pub(crate) static INVALID_GROUP_NAME: LogLimit = LogLimit::new("invalid_group_name");
/// A handshake refused for its `Origin`.
pub(crate) static ORIGIN_REFUSED: LogLimit = LogLimit::new("origin_refused");
/// A handshake refused because every connection slot is taken.
pub(crate) static CONNECTIONS_REFUSED: LogLimit = LogLimit::new("connections_refused");

/// Connections not yet upgraded closed to make room at their bound.
pub(crate) static PENDING_EVICTED: LogLimit = LogLimit::new("pending_evicted");
/// Connections refused because every pending place is busy.
pub(crate) static PENDING_REFUSED: LogLimit = LogLimit::new("pending_refused");
/// `accept` failed (out of file descriptors, mostly).
pub(crate) static ACCEPT_FAILED: LogLimit = LogLimit::new("accept_failed");
/// A connection closed because its outbound queue was full.
pub(crate) static QUEUE_FULL: LogLimit = LogLimit::new("queue_full");
/// Handshakes refused for the client's connection limit, and connections
/// closed for their message rate.
pub(crate) static CLIENT_LIMITED: LogLimit = LogLimit::new("client_limited");

/// A payload read from Redis was too large or malformed (whoever can
/// write to Redis controls it).
pub(crate) static REDIS_REJECTED: LogLimit = LogLimit::new("redis_rejected");

/// The limit of one kind of log line.
pub(crate) struct LogLimit {
    kind: &'static str,
    /// Lines let through per interval.
    lines: u64,
    /// When the current interval began, in milliseconds since [`epoch`].
    interval_start: AtomicU64,
    /// Lines of this kind in the current interval, logged or not.
    seen: AtomicU64,
}

impl LogLimit {
    /// A limit for the lines of `kind` (named in the notices).
    pub(crate) const fn new(kind: &'static str) -> LogLimit {
        LogLimit::with_lines(kind, LINES)
    }

    /// A limit of `lines` per interval.
    pub(crate) const fn with_lines(kind: &'static str, lines: u64) -> LogLimit {
        LogLimit {
            kind,
            lines,
            interval_start: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether a line of this kind may be logged now. Logs the notices
    /// about suppressed lines itself.
    pub(crate) fn allow(&self) -> bool {
        match self.check(millis_since_epoch()) {
            LogDecision::Log { suppressed: 0 } => true,
            LogDecision::Log { suppressed } => {
                warn!(
                    kind = self.kind,
                    suppressed, "{suppressed} log lines of this kind were suppressed"
                );
                true
            }
            LogDecision::Suppress { first: true } => {
                warn!(
                    kind = self.kind,
                    limit = self.lines,
                    interval_s = INTERVAL.as_secs(),
                    "more than {} log lines of this kind in {} s; suppressing them for the rest of the interval",
                    self.lines,
                    INTERVAL.as_secs()
                );
                false
            }
            LogDecision::Suppress { first: false } => false,
        }
    }

    /// Whether a line may be logged now, without the notices (for a
    /// caller that words them itself).
    pub(crate) fn verdict(&self) -> LogDecision {
        self.check(millis_since_epoch())
    }

    fn check(&self, now_ms: u64) -> LogDecision {
        let interval_ms = INTERVAL.as_millis() as u64;
        let start = self.interval_start.load(Ordering::Acquire);
        if now_ms.saturating_sub(start) >= interval_ms
            && self
                .interval_start
                .compare_exchange(start, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This call begins a new interval (lines counted by others in
            // between go to the old one's tally).
            let before = self.seen.swap(1, Ordering::AcqRel);
            return LogDecision::Log {
                suppressed: before.saturating_sub(self.lines),
            };
        }
        let n = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
        if n <= self.lines {
            LogDecision::Log { suppressed: 0 }
        } else {
            LogDecision::Suppress {
                first: n == self.lines + 1,
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogDecision {
    /// Log the line, after saying how many lines the previous interval
    /// suppressed (when any).
    Log { suppressed: u64 },
    /// Do not log it; `first`: the first suppressed line of the interval.
    Suppress { first: bool },
}

/// The moment the limits count from: their first use.
fn millis_since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = INTERVAL.as_millis() as u64;

    #[test]
    fn lets_the_first_lines_through_then_suppresses_and_counts() {
        let limit = LogLimit::new("test");
        for _ in 0..LINES {
            assert_eq!(limit.check(5), LogDecision::Log { suppressed: 0 });
        }
        assert_eq!(limit.check(6), LogDecision::Suppress { first: true });
        for _ in 0..99 {
            assert_eq!(limit.check(MS - 1), LogDecision::Suppress { first: false });
        }
        // The next interval starts with its first line, which reports the
        // hundred suppressed ones.
        assert_eq!(limit.check(MS), LogDecision::Log { suppressed: 100 });
        for _ in 1..LINES {
            assert_eq!(limit.check(MS + 1), LogDecision::Log { suppressed: 0 });
        }
        assert_eq!(limit.check(MS + 2), LogDecision::Suppress { first: true });
        // A quiet interval: nothing to report.
        assert_eq!(limit.check(5 * MS), LogDecision::Log { suppressed: 1 });
        assert_eq!(limit.check(7 * MS), LogDecision::Log { suppressed: 0 });
    }

    #[test]
    fn kinds_are_counted_apart() {
        let a = LogLimit::new("a");
        let b = LogLimit::new("b");
        for _ in 0..=LINES {
            a.check(1);
        }
        assert_eq!(a.check(1), LogDecision::Suppress { first: false });
        assert_eq!(b.check(1), LogDecision::Log { suppressed: 0 });
    }

    #[test]
    fn many_threads_log_at_most_the_limit_per_interval() {
        let limit = LogLimit::new("threads");
        let logged = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if matches!(limit.check(3), LogDecision::Log { .. }) {
                            logged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(logged.load(Ordering::Relaxed), LINES);
    }
}
