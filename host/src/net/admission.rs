//! The bound on connections that are not WebSockets yet.
//!
//! `--max-connections` counts upgraded WebSockets; this counts everything
//! before: sockets still sending their request, keep-alive HTTP connections
//! between requests, and requests still sending their body. Without a bound,
//! a few hundred silent sockets exhaust the open-files limit and every new
//! handshake (and `/healthz`) times out.
//!
//! At the bound, the oldest connection that is not being answered is closed
//! to admit the new one (a reserve by eviction): a slow or silent client
//! holds its place only until others arrive, while a real client, whose
//! request takes milliseconds, gets through. Only when every connection at
//! the bound is being answered is the new one refused.
//!
//! The place given up belongs to the source (IPv4 address, or IPv6 /64)
//! that holds the most: a reconnect flood from one address evicts its own
//! connections, not a slow client from elsewhere. Only when no source holds
//! more than one place, or the largest holds no idle one, does the oldest
//! idle connection overall go.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};
use tracing::warn;

use crate::base::log_limit::{PENDING_EVICTED, PENDING_REFUSED};

/// The connections not yet upgraded, oldest first.
pub(crate) struct Pending {
    limit: usize,
    open: Mutex<Open>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

#[derive(Default)]
struct Open {
    next: u64,
    slots: BTreeMap<u64, Arc<Slot>>,
    /// Places held per source. Entries go when their count does; the map
    /// keeps its capacity, so admitting allocates nothing once it has grown.
    sources: HashMap<IpAddr, usize>,
}

/// One pending connection's state, shared by its task and its requests.
pub(crate) struct Slot {
    /// Where the connection comes from ([`source`]).
    source: IpAddr,
    /// When the connection was accepted.
    accepted: Instant,
    /// When the current request began, in nanoseconds after `accepted`:
    /// 0 for the first, the end of the previous response for the next.
    request_began: AtomicU64,
    /// Writes that make no progress for the request timeout fail; cleared
    /// when the connection leaves HTTP (upgraded or closed).
    http_phase: AtomicBool,
    /// Requests being answered (at most one in HTTP/1 without pipelining).
    answering: AtomicUsize,
    /// The current request's body is still arriving: the connection may be
    /// evicted although a request has started.
    reading_body: AtomicBool,
    /// Told when the connection must close (evicted, or its request ran
    /// out of time).
    close: Notify,
}

/// A pending connection's place; gives it up when dropped.
pub(crate) struct Ticket {
    pending: Arc<Pending>,
    seq: u64,
    pub slot: Arc<Slot>,
}

impl Pending {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Pending {
            limit: limit.max(1),
            open: Mutex::new(Open::default()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection from `peer`, closing an idle one (of
    /// the source holding the most places) when the bound is reached;
    /// `None` when every connection at the bound is busy.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let slot = Arc::new(Slot::new(source(peer), Instant::now()));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.slots.len() >= self.limit {
            match open.victim().and_then(|seq| open.remove(seq)) {
                Some(slot) => {
                    slot.close.notify_one();
                    let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
                    if PENDING_EVICTED.allow() {
                        warn!(
                            limit = self.limit,
                            evicted_total = evicted,
                            "too many connections that are not WebSockets yet: closing the oldest idle ones"
                        );
                    }
                }
                None => {
                    let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if PENDING_REFUSED.allow() {
                        warn!(
                            limit = self.limit,
                            refused_total = refused,
                            "too many connections that are not WebSockets yet, all busy: refusing new ones"
                        );
                    }
                    return None;
                }
            }
        }
        let seq = open.next;
        open.next += 1;
        *open.sources.entry(slot.source).or_default() += 1;
        open.slots.insert(seq, slot.clone());
        Some(Ticket {
            pending: self.clone(),
            seq,
            slot,
        })
    }

    /// Closes an idle connection (as at the bound, of the source holding
    /// the most places) to free its file descriptor; `false` when none is
    /// idle. For when the open-files limit, not this bound, is what stops
    /// new connections: otherwise silent sockets below the bound would hold
    /// every descriptor until their deadline.
    pub(crate) fn evict_oldest_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.victim().and_then(|seq| open.remove(seq)) {
            Some(slot) => {
                slot.close.notify_one();
                let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
                if PENDING_EVICTED.allow() {
                    warn!(
                        evicted_total = evicted,
                        "out of file descriptors: closing the oldest idle connection that is not a WebSocket yet"
                    );
                }
                true
            }
            None => false,
        }
    }

    /// Connections not yet upgraded, now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slots
            .len()
    }
}

impl Open {
    /// The connection to close at the bound: the oldest idle one of the
    /// source holding the most places, else the oldest idle one. One pass
    /// over the sources and at most one over the connections.
    fn victim(&self) -> Option<u64> {
        let crowded = self
            .sources
            .iter()
            .max_by_key(|(_, held)| **held)
            .filter(|(_, held)| **held > 1)
            .map(|(source, _)| *source);
        let mut oldest_idle = None;
        for (seq, slot) in &self.slots {
            if !slot.is_idle() {
                continue;
            }
            if crowded == Some(slot.source) {
                return Some(*seq);
            }
            if oldest_idle.is_none() {
                oldest_idle = Some(*seq);
                if crowded.is_none() {
                    break;
                }
            }
        }
        oldest_idle
    }

    /// Gives up a place, counting it off its source.
    fn remove(&mut self, seq: u64) -> Option<Arc<Slot>> {
        let slot = self.slots.remove(&seq)?;
        if let Some(held) = self.sources.get_mut(&slot.source) {
            *held -= 1;
            if *held == 0 {
                self.sources.remove(&slot.source);
            }
        }
        Some(slot)
    }
}

/// Where a connection comes from, for sharing out places: its IPv4
/// address, or the /64 prefix of its IPv6 address (one host's usual share).
fn source(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.pending.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(self.seq);
    }
}

impl Slot {
    fn new(source: IpAddr, accepted: Instant) -> Self {
        Slot {
            source,
            accepted,
            request_began: AtomicU64::new(0),
            http_phase: AtomicBool::new(true),
            answering: AtomicUsize::new(0),
            reading_body: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    /// When the current request began: when the connection was accepted,
    /// or when the previous response was finished.
    pub(crate) fn request_began(&self) -> Instant {
        self.accepted + Duration::from_nanos(self.request_began.load(Ordering::Relaxed))
    }

    /// Whether the connection is still in its HTTP phase, where writes that
    /// make no progress are bounded.
    pub(crate) fn in_http_phase(&self) -> bool {
        self.http_phase.load(Ordering::Relaxed)
    }

    /// The connection has left its HTTP phase (a WebSocket now, or gone).
    pub(crate) fn end_http_phase(&self) {
        self.http_phase.store(false, Ordering::Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.answering.load(Ordering::Relaxed) == 0 || self.reading_body.load(Ordering::Relaxed)
    }

    /// Resolves once the connection must close.
    pub(crate) async fn closing(&self) {
        self.close.notified().await
    }

    /// Tells the connection to close now.
    pub(crate) fn close_now(&self) {
        self.close.notify_one();
    }

    /// A request has arrived; it counts as answered (not evictable) until
    /// the guard is dropped, except while its body is still arriving.
    pub(crate) fn answering(self: &Arc<Self>, body_pending: bool) -> Answering {
        self.reading_body.store(body_pending, Ordering::Relaxed);
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    /// The current request's body has arrived in full.
    pub(crate) fn body_done(&self) {
        self.reading_body.store(false, Ordering::Relaxed);
    }
}

/// Held by a request's response until it has been sent.
pub(crate) struct Answering(Arc<Slot>);

impl Drop for Answering {
    fn drop(&mut self) {
        // The next request on this connection begins now.
        let since_accepted =
            u64::try_from(self.0.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0
            .request_began
            .store(since_accepted, Ordering::Relaxed);
        self.0.reading_body.store(false, Ordering::Relaxed);
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_source_holding_the_most_places_gives_one_up() {
        let pending = Pending::new(4);
        let legitimate = pending.admit(ip("10.0.0.1")).unwrap();
        let flood: Vec<_> = (0..3)
            .map(|_| pending.admit(ip("10.0.0.2")).unwrap())
            .collect();
        // The legitimate connection is the oldest idle one, but the
        // flooding address gives up its own oldest.
        let next = pending.admit(ip("10.0.0.2")).unwrap();
        assert!(!legitimate.slot.close_requested());
        assert!(flood[0].slot.close_requested());
        assert!(!flood[1].slot.close_requested());
        // Its busy places are kept: then its oldest idle one goes.
        let _busy = flood[1].slot.answering(false);
        let _next = pending.admit(ip("10.0.0.3")).unwrap();
        assert!(flood[2].slot.close_requested());
        assert!(!legitimate.slot.close_requested());
        assert!(!next.slot.close_requested());
        assert_eq!(pending.count(), 4);
    }

    #[test]
    fn without_a_crowded_source_the_oldest_idle_connection_goes() {
        let pending = Pending::new(3);
        let oldest = pending.admit(ip("10.0.0.1")).unwrap();
        let flood: Vec<_> = (0..2)
            .map(|_| pending.admit(ip("10.0.0.2")).unwrap())
            .collect();
        // The crowded source has nothing idle: the oldest idle goes.
        let _busy: Vec<_> = flood.iter().map(|t| t.slot.answering(false)).collect();
        let _next = pending.admit(ip("10.0.0.3")).unwrap();
        assert!(oldest.slot.close_requested());
        // Places are counted off their source when given up.
        drop(flood);
        let open = pending.open.lock().unwrap();
        assert_eq!(open.sources.get(&ip("10.0.0.2")), None);
        assert_eq!(open.sources.get(&ip("10.0.0.3")), Some(&1));
        assert_eq!(open.sources.len(), 1);
    }

    #[test]
    fn the_next_request_begins_when_the_previous_answer_is_done() {
        let pending = Pending::new(1);
        let ticket = pending.admit(LOCAL).unwrap();
        let first = ticket.slot.request_began();
        let answering = ticket.slot.answering(false);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(ticket.slot.request_began(), first);
        drop(answering);
        assert!(ticket.slot.request_began() >= first + std::time::Duration::from_millis(20));
    }

    #[test]
    fn an_ipv6_source_is_its_64_prefix() {
        assert_eq!(source(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(source(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let pending = Pending::new(2);
        let first = pending.admit(LOCAL).unwrap();
        let second = pending.admit(LOCAL).unwrap();
        let _busy = second.slot.answering(false);
        let third = pending.admit(LOCAL).unwrap();
        assert_eq!(pending.count(), 2);
        // The first was told to close; the busy second was kept.
        assert!(first.slot.close_requested());
        assert!(!second.slot.close_requested());
        drop(third);
        assert_eq!(pending.count(), 1);
    }

    #[test]
    fn a_full_bound_of_busy_connections_refuses() {
        let pending = Pending::new(1);
        let only = pending.admit(LOCAL).unwrap();
        let busy = only.slot.answering(false);
        assert!(pending.admit(LOCAL).is_none());
        // A request still sending its body does not protect its place.
        drop(busy);
        let _reading = only.slot.answering(true);
        assert!(pending.admit(LOCAL).is_some());
    }

    impl Slot {
        fn close_requested(&self) -> bool {
            let notified = self.close.notified();
            tokio::pin!(notified);
            use std::future::Future;
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            notified.as_mut().enable();
            notified.poll(&mut cx).is_ready()
        }
    }
}
