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

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::Notify;
use tracing::warn;

use crate::log_limit::{PENDING_EVICTED, PENDING_REFUSED};

/// The connections not yet upgraded, oldest first.
pub struct Pending {
    limit: usize,
    open: Mutex<Open>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

#[derive(Default)]
struct Open {
    next: u64,
    slots: BTreeMap<u64, Arc<Slot>>,
}

/// One pending connection's state, shared by its task and its requests.
#[derive(Default)]
pub struct Slot {
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
pub struct Ticket {
    pending: Arc<Pending>,
    seq: u64,
    pub slot: Arc<Slot>,
}

impl Pending {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Pending {
            limit: limit.max(1),
            open: Mutex::new(Open::default()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection, closing the oldest idle one when the
    /// bound is reached; `None` when every connection at the bound is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.slots.len() >= self.limit {
            let victim = open
                .slots
                .iter()
                .find(|(_, slot)| slot.is_idle())
                .map(|(seq, _)| *seq);
            match victim.and_then(|seq| open.slots.remove(&seq)) {
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
        let slot = Arc::new(Slot::default());
        open.slots.insert(seq, slot.clone());
        Some(Ticket {
            pending: self.clone(),
            seq,
            slot,
        })
    }

    /// Closes the oldest idle connection to free its file descriptor;
    /// `false` when none is idle. For when the open-files limit, not this
    /// bound, is what stops new connections: otherwise silent sockets below
    /// the bound would hold every descriptor until their deadline.
    pub fn evict_oldest_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let victim = open
            .slots
            .iter()
            .find(|(_, slot)| slot.is_idle())
            .map(|(seq, _)| *seq);
        match victim.and_then(|seq| open.slots.remove(&seq)) {
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
    pub fn count(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slots
            .len()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.pending.open.lock().unwrap_or_else(|p| p.into_inner());
        open.slots.remove(&self.seq);
    }
}

impl Slot {
    fn is_idle(&self) -> bool {
        self.answering.load(Ordering::Relaxed) == 0 || self.reading_body.load(Ordering::Relaxed)
    }

    /// Resolves once the connection must close.
    pub async fn closing(&self) {
        self.close.notified().await
    }

    /// Tells the connection to close now.
    pub fn close_now(&self) {
        self.close.notify_one();
    }

    /// A request has arrived; it counts as answered (not evictable) until
    /// the guard is dropped, except while its body is still arriving.
    pub fn answering(self: &Arc<Self>, body_pending: bool) -> Answering {
        self.reading_body.store(body_pending, Ordering::Relaxed);
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    /// The current request's body has arrived in full.
    pub fn body_done(&self) {
        self.reading_body.store(false, Ordering::Relaxed);
    }
}

/// Held by a request's response until it has been sent.
pub struct Answering(Arc<Slot>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.reading_body.store(false, Ordering::Relaxed);
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let pending = Pending::new(2);
        let first = pending.admit().unwrap();
        let second = pending.admit().unwrap();
        let _busy = second.slot.answering(false);
        let third = pending.admit().unwrap();
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
        let only = pending.admit().unwrap();
        let busy = only.slot.answering(false);
        assert!(pending.admit().is_none());
        // A request still sending its body does not protect its place.
        drop(busy);
        let _reading = only.slot.answering(true);
        assert!(pending.admit().is_some());
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
