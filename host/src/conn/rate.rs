//! A connection's message rate, off by default: how many messages one
//! connection may send per second. Why: one connection could otherwise keep
//! a pooled handler busy for everybody by sending as fast as it can.

use std::time::Instant;

/// A connection's message rate: a bucket of `per_second` messages, filled
/// continuously, that a burst of up to one second's worth may empty.
pub(crate) struct Rate {
    per_second: u32,
    tokens: f64,
    filled: Instant,
    /// Messages refused since the last one accepted.
    refused: u32,
}

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Accept,
    /// Answer it with an error instead of handling it.
    Refuse,
    /// The client kept sending too fast for a whole second's worth of
    /// refused messages: close the connection (1008).
    Close,
}

impl Rate {
    /// `per_second` messages a second; `None` for 0 (no limit).
    pub(crate) fn new(per_second: u32, now: Instant) -> Option<Rate> {
        (per_second > 0).then(|| Rate {
            per_second,
            tokens: f64::from(per_second),
            filled: now,
            refused: 0,
        })
    }

    pub(crate) fn per_second(&self) -> u32 {
        self.per_second
    }

    /// A message arrived at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Admit {
        let rate = f64::from(self.per_second);
        let elapsed = now.saturating_duration_since(self.filled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.filled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            return Admit::Accept;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > self.per_second {
            Admit::Close
        } else {
            Admit::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_refusals_then_the_close() {
        let start = Instant::now();
        let mut rate = Rate::new(10, start).expect("a limit");
        for _ in 0..10 {
            assert_eq!(rate.take(start), Admit::Accept);
        }
        for _ in 0..10 {
            assert_eq!(rate.take(start), Admit::Refuse);
        }
        assert_eq!(rate.take(start), Admit::Close);
        // A tenth of a second later, one more may pass, and it forgives.
        let later = start + Duration::from_millis(100);
        let mut rate = Rate::new(10, start).expect("a limit");
        for _ in 0..10 {
            rate.take(start);
        }
        assert_eq!(rate.take(start), Admit::Refuse);
        assert_eq!(rate.take(later), Admit::Accept);
        assert!(Rate::new(0, start).is_none());
    }
}
