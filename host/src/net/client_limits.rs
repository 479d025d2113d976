//! Limits per client, both off by default: how many WebSockets one client
//! address may hold open, and how many messages one connection may send per
//! second. Why: `--max-connections` bounds everyone together, so a single
//! address could take every place, and one connection could keep a pooled
//! handler busy for everybody by sending as fast as it can.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

/// Open WebSockets per client address.
pub(crate) struct PerClient {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's place; given back when dropped (the connection ended).
pub(crate) struct ClientSlot {
    per_client: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    /// `limit` connections per address; `None` for 0 (no limit).
    pub(crate) fn new(limit: usize) -> Option<Arc<PerClient>> {
        (limit > 0).then(|| {
            Arc::new(PerClient {
                limit,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection of `client`, if it has one left.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open();
        let count = open.entry(client).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            per_client: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.per_client.open();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

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
pub(crate) enum Verdict {
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
    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        let rate = f64::from(self.per_second);
        let elapsed = now.saturating_duration_since(self.filled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.filled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            return Verdict::Accept;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > self.per_second {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn places_per_client_are_counted_and_given_back() {
        let per_client = PerClient::new(2).expect("a limit");
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = per_client.admit(a).expect("a place");
        let _second = per_client.admit(a).expect("a place");
        assert!(per_client.admit(a).is_none());
        assert!(per_client.admit(b).is_some(), "others are not affected");
        drop(first);
        assert!(per_client.admit(a).is_some());
        assert!(PerClient::new(0).is_none());
    }

    #[test]
    fn a_burst_then_refusals_then_the_close() {
        let start = Instant::now();
        let mut rate = Rate::new(10, start).expect("a limit");
        for _ in 0..10 {
            assert_eq!(rate.take(start), Verdict::Accept);
        }
        for _ in 0..10 {
            assert_eq!(rate.take(start), Verdict::Refuse);
        }
        assert_eq!(rate.take(start), Verdict::Close);
        // A tenth of a second later, one more may pass, and it forgives.
        let later = start + Duration::from_millis(100);
        let mut rate = Rate::new(10, start).expect("a limit");
        for _ in 0..10 {
            rate.take(start);
        }
        assert_eq!(rate.take(start), Verdict::Refuse);
        assert_eq!(rate.take(later), Verdict::Accept);
        assert!(Rate::new(0, start).is_none());
    }
}
