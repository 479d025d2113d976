//! Groups: named sets of connections, and sending one message to all of a
//! group's members (rohrpost's `add_to_group` / `send_to_group`).
//!
//! Behind a small trait so that a layer over a broker (Redis pub/sub, for
//! several hosts) can take the in-memory layer's place without touching
//! plugins, connections or the protocol code. Fan-out never waits on a
//! receiver: each connection has a bounded outbound queue, and a connection
//! whose queue is full is told to close (see [`Outbox`]), so one slow
//! client can neither delay the others nor silently miss messages.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use axum::extract::ws::Utf8Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, Notify};

/// A connection's id, unique within this host.
pub type ConnectionId = u64;

/// The sending end of a connection's outbound queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    queue: mpsc::Sender<Utf8Bytes>,
    /// Counts messages dropped on a full queue (a metric).
    drops: Counter,
    /// Signalled when a message found the queue full: the connection then
    /// closes with [`crate::connection::QUEUE_FULL_CODE`].
    overflow: Arc<Notify>,
}

/// The receiving end, owned by the connection's task.
pub struct Inbox {
    pub queue: mpsc::Receiver<Utf8Bytes>,
    pub overflow: Arc<Notify>,
}

/// A connection's outbound queue holding up to `capacity` messages;
/// messages dropped on a full queue are counted in `drops`.
pub fn outbound_queue(capacity: usize, drops: Counter) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Notify::new());
    (
        Outbox {
            queue: tx,
            drops,
            overflow: overflow.clone(),
        },
        Inbox {
            queue: rx,
            overflow,
        },
    )
}

impl Outbox {
    /// Queues a message without waiting. False when the connection is gone
    /// or its queue is full (then it is told to close).
    pub fn offer(&self, message: &Utf8Bytes) -> bool {
        match self.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drops.inc();
                self.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A future returned by [`GroupLayer::send`].
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = usize> + Send + 'a>>;

/// Group membership and fan-out.
pub trait GroupLayer: Send + Sync {
    /// Adds a connection to a group; joining twice changes nothing.
    fn join(&self, group: &str, connection: ConnectionId, outbox: &Outbox);
    /// Removes a connection from a group, if it is a member.
    fn leave(&self, group: &str, connection: ConnectionId);
    /// Removes a connection from every group (it closed).
    fn leave_all(&self, connection: ConnectionId);
    /// Sends a message to every member of a group, at most once each;
    /// resolves to the number of connections it was queued for.
    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> SendFuture<'a>;
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
}

impl GroupLayer for MemoryGroups {
    fn join(&self, group: &str, connection: ConnectionId, outbox: &Outbox) {
        let mut state = self.state();
        state
            .members
            .entry(group.to_owned())
            .or_default()
            .insert(connection, outbox.clone());
        state
            .joined
            .entry(connection)
            .or_default()
            .insert(group.to_owned());
    }

    fn leave(&self, group: &str, connection: ConnectionId) {
        let mut state = self.state();
        if let Some(members) = state.members.get_mut(group) {
            members.remove(&connection);
            if members.is_empty() {
                state.members.remove(group);
            }
        }
        if let Some(groups) = state.joined.get_mut(&connection) {
            groups.remove(group);
            if groups.is_empty() {
                state.joined.remove(&connection);
            }
        }
    }

    fn leave_all(&self, connection: ConnectionId) {
        let mut state = self.state();
        let Some(groups) = state.joined.remove(&connection) else {
            return;
        };
        for group in groups {
            if let Some(members) = state.members.get_mut(&group) {
                members.remove(&connection);
                if members.is_empty() {
                    state.members.remove(&group);
                }
            }
        }
    }

    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> SendFuture<'a> {
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
        let (outbox, mut inbox) = outbound_queue(8, Counter::default());
        groups.join("g", 1, &outbox);
        groups.join("g", 1, &outbox);
        groups.join("h", 1, &outbox);
        assert_eq!(groups.deliver("g", &"m".into()), 1);
        assert_eq!(inbox.queue.try_recv().ok().as_deref(), Some("m"));
        assert!(inbox.queue.try_recv().is_err());
        groups.leave_all(1);
        assert_eq!(groups.deliver("g", &"m".into()), 0);
        assert!(groups.state().members.is_empty() && groups.state().joined.is_empty());
    }

    #[test]
    fn a_full_queue_signals_overflow() {
        let groups = MemoryGroups::default();
        let drops = Counter::default();
        let (outbox, inbox) = outbound_queue(1, drops.clone());
        groups.join("g", 7, &outbox);
        assert_eq!(groups.deliver("g", &"1".into()), 1);
        assert_eq!(groups.deliver("g", &"2".into()), 0);
        assert_eq!(drops.get(), 1);
        let notified = inbox.overflow.notified();
        futures_util::pin_mut!(notified);
        // A stored permit completes the wait at once.
        assert!(futures_util::FutureExt::now_or_never(notified).is_some());
    }
}
