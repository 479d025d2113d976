//! Groups: named sets of connections, and sending one message to all of a
//! group's members (rohrpost's `add_to_group` / `send_to_group`).
//!
//! Behind a small trait so that a layer over a broker (Redis pub/sub, for
//! several hosts) can take the in-memory layer's place without touching
//! plugins, connections or the protocol code. Fan-out never waits on a
//! receiver: the message is encoded as a frame once and written straight
//! to each member whose socket takes it now; the others get it through
//! their bounded outbound queue, and a connection whose queue is full, by
//! messages or by bytes, is told to close (see [`crate::outbound`]), so
//! one slow client can neither delay the others, nor silently miss
//! messages, nor hold the server's memory. A large group is written by
//! several tasks at once, [`CHUNK`] members each, so that every worker of
//! the runtime takes part and none is held for long.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::Mutex,
};

use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use crate::outbound::{Outbox, QueueLimits};
use crate::wire;

/// Members one task writes a group message to.
pub const CHUNK: usize = 512;

/// A connection's id, unique within this host.
pub type ConnectionId = u64;

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

/// How many connections of this host a group message reached.
#[must_use = "await it before the next message to the group, to keep their order"]
pub enum Delivery {
    Done(usize),
    /// Shared among tasks; each says how many it reached.
    Running(Vec<JoinHandle<usize>>),
}

impl Delivery {
    /// Waits until every member has it (written or queued).
    pub async fn reached(self) -> usize {
        match self {
            Delivery::Done(reached) => reached,
            Delivery::Running(tasks) => {
                let mut reached = 0;
                for task in tasks {
                    reached += task.await.unwrap_or(0);
                }
                reached
            }
        }
    }
}

/// Delivers to each of `members`; how many it reached.
fn reach(members: &[Outbox], message: &Utf8Bytes, frame: Option<&[u8]>) -> usize {
    members
        .iter()
        .filter(|member| member.deliver(message, frame))
        .count()
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

    /// Delivers `message` to every member of `group` (a copy of the
    /// membership as it is now): written or queued, without waiting on any
    /// member. Messages to one group keep their order for each member as
    /// long as each [`Delivery`] is awaited before the next message.
    pub fn deliver(&self, group: &str, message: &Utf8Bytes) -> Delivery {
        let mut members: Vec<Outbox> = match self.state().members.get(group) {
            Some(members) => members.values().cloned().collect(),
            None => return Delivery::Done(0),
        };
        let frame = wire::text_frame(message);
        let runtime = tokio::runtime::Handle::try_current();
        let (Ok(runtime), true) = (runtime, members.len() > CHUNK) else {
            return Delivery::Done(reach(&members, message, frame.as_deref()));
        };
        let frame: Option<std::sync::Arc<[u8]>> = frame.map(Into::into);
        let mut tasks = Vec::with_capacity(members.len().div_ceil(CHUNK));
        while !members.is_empty() {
            let chunk = members.split_off(members.len().saturating_sub(CHUNK));
            let (message, frame) = (message.clone(), frame.clone());
            tasks.push(runtime.spawn(async move { reach(&chunk, &message, frame.as_deref()) }));
        }
        Delivery::Running(tasks)
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
        let delivery = self.deliver(group, &message);
        Box::pin(delivery.reached())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::outbound::outbound_queue;

    #[test]
    fn join_twice_delivers_once_and_leave_all_cleans_up() {
        let groups = MemoryGroups::default();
        let (outbox, mut inbox) = outbound_queue(
            QueueLimits {
                messages: 8,
                bytes: 1 << 20,
            },
            Counter::default(),
            None,
        );
        assert!(groups.add("g", 1, &outbox));
        assert!(!groups.add("g", 1, &outbox));
        assert!(groups.add("h", 1, &outbox));
        assert!(matches!(
            groups.deliver("g", &"m".into()),
            Delivery::Done(1)
        ));
        assert_eq!(inbox.queue.try_recv().ok().as_deref(), Some("m"));
        assert!(inbox.queue.try_recv().is_err());
        let mut emptied = groups.remove_everywhere(1);
        emptied.sort();
        assert_eq!(emptied, ["g", "h"]);
        assert!(matches!(
            groups.deliver("g", &"m".into()),
            Delivery::Done(0)
        ));
        assert!(groups.state().members.is_empty() && groups.state().joined.is_empty());
    }
}
