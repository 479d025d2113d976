//! Groups: named sets of connections, and sending one message to all of a
//! group's members (rohrpost's `add_to_group` / `send_to_group`).
//!
//! Behind a small trait so that a layer over a broker (Redis pub/sub, for
//! several hosts) can take the in-memory layer's place without touching
//! plugins, connections or the protocol code. Fan-out never waits on a
//! receiver: each connection has a bounded outbound queue, and a connection
//! whose queue is full, by messages or by bytes, is told to close (see
//! [`Outbox`]), so one slow client can neither delay the others, nor
//! silently miss messages, nor hold the server's memory.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A connection's id, unique within this host.
pub type ConnectionId = u64;

/// How much a connection's outbound queue may hold: messages and bytes.
/// Either bound, when reached, closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub messages: usize,
    /// Bytes of the messages waiting. A message larger than this still gets
    /// through when nothing else waits.
    pub bytes: usize,
}

/// The sending end of a connection's outbound queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    queue: mpsc::Sender<Utf8Bytes>,
    /// Bytes waiting, shared with the receiving end.
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Counts messages dropped on a full queue (a metric).
    drops: Counter,
    /// Signalled when a message found the queue full: the connection then
    /// closes with 1013 ([`crate::protocol::Close::QUEUE_FULL`]).
    overflow: Arc<Notify>,
}

/// The receiving end, owned by the connection's task.
pub struct Inbox {
    pub queue: QueueReceiver,
    pub overflow: Arc<Notify>,
}

/// The receiving end of the queue itself: takes messages off it and their
/// bytes off its count.
pub struct QueueReceiver {
    queue: mpsc::Receiver<Utf8Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        let message = self.queue.recv().await?;
        self.bytes.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Result<Utf8Bytes, mpsc::error::TryRecvError> {
        let message = self.queue.try_recv()?;
        self.bytes.fetch_sub(message.len(), Ordering::Relaxed);
        Ok(message)
    }
}

/// A connection's outbound queue within `limits`; messages dropped on a
/// full queue are counted in `drops`.
pub fn outbound_queue(limits: QueueLimits, drops: Counter) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(limits.messages.max(1));
    let overflow = Arc::new(Notify::new());
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            queue: tx,
            bytes: bytes.clone(),
            max_bytes: limits.bytes,
            drops,
            overflow: overflow.clone(),
        },
        Inbox {
            queue: QueueReceiver { queue: rx, bytes },
            overflow,
        },
    )
}

impl Outbox {
    /// Queues a message without waiting. False when the connection is gone
    /// or its queue is full, by count or by bytes (then it is told to
    /// close).
    pub fn offer(&self, message: &Utf8Bytes) -> bool {
        let len = message.len();
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return self.full();
        }
        match self.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                self.full()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    fn full(&self) -> bool {
        self.drops.inc();
        self.overflow.notify_one();
        false
    }
}

/// A future returned by [`GroupLayer`]'s methods.
pub type GroupFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Group membership and fan-out.
pub trait GroupLayer: Send + Sync {
    /// Adds a connection to a group; joining twice changes nothing. Resolves
    /// once messages sent to the group from now on reach the connection
    /// (for messages from other hosts, a broker layer waits a short bounded
    /// time at most).
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: ConnectionId,
        outbox: &'a Outbox,
    ) -> GroupFuture<'a, ()>;
    /// Removes a connection from a group, if it is a member.
    fn leave(&self, group: &str, connection: ConnectionId);
    /// Removes a connection from every group (it closed).
    fn leave_all(&self, connection: ConnectionId);
    /// Sends a message to every member of a group, at most once each;
    /// resolves to the number of connections of this host it was queued for.
    /// Never waits on a broker: other hosts get it in the background.
    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize>;
}

/// Groups of this host only, in memory.
#[derive(Default)]
pub struct MemoryGroups {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    members: HashMap<String, HashMap<ConnectionId, Outbox>>,
    /// The groups of each connection, to leave them all on close.
    joined: HashMap<ConnectionId, HashSet<String>>,
}

impl MemoryGroups {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is never held across a panic-prone call; recover anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `message` for every member of `group` now.
    pub fn deliver(&self, group: &str, message: &Utf8Bytes) -> usize {
        let state = self.state();
        state.members.get(group).map_or(0, |members| {
            members.values().filter(|o| o.offer(message)).count()
        })
    }

    /// Adds a member; true when it is the group's first.
    pub fn add(&self, group: &str, connection: ConnectionId, outbox: &Outbox) -> bool {
        let mut state = self.state();
        let members = state.members.entry(group.to_owned()).or_default();
        let first = members.is_empty();
        members.insert(connection, outbox.clone());
        state
            .joined
            .entry(connection)
            .or_default()
            .insert(group.to_owned());
        first
    }

    /// Removes a member; true when the group has no member left.
    pub fn remove(&self, group: &str, connection: ConnectionId) -> bool {
        let mut state = self.state();
        let mut emptied = false;
        if let Some(members) = state.members.get_mut(group) {
            if members.remove(&connection).is_some() && members.is_empty() {
                state.members.remove(group);
                emptied = true;
            }
        }
        if let Some(groups) = state.joined.get_mut(&connection) {
            groups.remove(group);
            if groups.is_empty() {
                state.joined.remove(&connection);
            }
        }
        emptied
    }

    /// Removes a connection from all its groups; the groups left empty.
    pub fn remove_everywhere(&self, connection: ConnectionId) -> Vec<String> {
        let mut state = self.state();
        let Some(groups) = state.joined.remove(&connection) else {
            return Vec::new();
        };
        let mut emptied = Vec::new();
        for group in groups {
            if let Some(members) = state.members.get_mut(&group) {
                members.remove(&connection);
                if members.is_empty() {
                    state.members.remove(&group);
                    emptied.push(group);
                }
            }
        }
        emptied
    }

    /// The groups with at least one member here.
    pub fn group_names(&self) -> Vec<String> {
        self.state().members.keys().cloned().collect()
    }
}

impl GroupLayer for MemoryGroups {
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: ConnectionId,
        outbox: &'a Outbox,
    ) -> GroupFuture<'a, ()> {
        self.add(group, connection, outbox);
        Box::pin(std::future::ready(()))
    }

    fn leave(&self, group: &str, connection: ConnectionId) {
        self.remove(group, connection);
    }

    fn leave_all(&self, connection: ConnectionId) {
        self.remove_everywhere(connection);
    }

    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize> {
        let reached = self.deliver(group, &message);
        Box::pin(std::future::ready(reached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_twice_delivers_once_and_leave_all_cleans_up() {
        let groups = MemoryGroups::default();
        let (outbox, mut inbox) = outbound_queue(
            QueueLimits {
                messages: 8,
                bytes: 1 << 20,
            },
            Counter::default(),
        );
        assert!(groups.add("g", 1, &outbox));
        assert!(!groups.add("g", 1, &outbox));
        assert!(groups.add("h", 1, &outbox));
        assert_eq!(groups.deliver("g", &"m".into()), 1);
        assert_eq!(inbox.queue.try_recv().ok().as_deref(), Some("m"));
        assert!(inbox.queue.try_recv().is_err());
        let mut emptied = groups.remove_everywhere(1);
        emptied.sort();
        assert_eq!(emptied, ["g", "h"]);
        assert_eq!(groups.deliver("g", &"m".into()), 0);
        assert!(groups.state().members.is_empty() && groups.state().joined.is_empty());
    }

    #[test]
    fn a_full_queue_signals_overflow() {
        let groups = MemoryGroups::default();
        let drops = Counter::default();
        let (outbox, inbox) = outbound_queue(
            QueueLimits {
                messages: 1,
                bytes: 1 << 20,
            },
            drops.clone(),
        );
        groups.add("g", 7, &outbox);
        assert_eq!(groups.deliver("g", &"1".into()), 1);
        assert_eq!(groups.deliver("g", &"2".into()), 0);
        assert_eq!(drops.get(), 1);
        let notified = inbox.overflow.notified();
        futures_util::pin_mut!(notified);
        // A stored permit completes the wait at once.
        assert!(futures_util::FutureExt::now_or_never(notified).is_some());
    }

    #[test]
    fn bytes_are_bounded_too_and_counted_off_when_read() {
        let groups = MemoryGroups::default();
        let drops = Counter::default();
        let limits = QueueLimits {
            messages: 100,
            bytes: 10,
        };
        let (outbox, mut inbox) = outbound_queue(limits, drops.clone());
        groups.add("g", 7, &outbox);
        // Larger than the bound, but alone: it gets through.
        assert_eq!(groups.deliver("g", &"x".repeat(12).into()), 1);
        assert_eq!(groups.deliver("g", &"y".into()), 0);
        assert_eq!(drops.get(), 1);
        assert_eq!(inbox.queue.try_recv().ok().map(|m| m.len()), Some(12));
        assert_eq!(groups.deliver("g", &"abcde".into()), 1);
        assert_eq!(groups.deliver("g", &"fghij".into()), 1);
        assert_eq!(groups.deliver("g", &"k".into()), 0);
        assert_eq!(inbox.queue.try_recv().ok().as_deref(), Some("abcde"));
        assert_eq!(groups.deliver("g", &"k".into()), 1);
        assert_eq!(outbox.bytes.load(Ordering::Relaxed), 6);
    }
}
