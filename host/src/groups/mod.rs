//! Groups: named sets of connections, and sending one message to all of a
//! group's members (rohrpost's `add_to_group` / `send_to_group`).
//!
//! Behind a small trait so that a layer over a broker (Redis pub/sub, for
//! several hosts) can take the in-memory layer's place without touching
//! plugins, connections or the protocol code. Fan-out never waits on a
//! receiver: the message is encoded as a frame once and written straight
//! to each member whose socket takes it now (see [`crate::groups::fanout`]); the
//! others get it through their bounded outbound queue, and a connection
//! whose queue is full, by messages or by bytes, is told to close (see
//! [`crate::socket::outbound`]), so one slow client can neither delay the others,
//! nor silently miss messages, nor hold the server's memory.

pub(crate) mod fanout;
pub(crate) mod redis;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use prometheus_client::metrics::counter::Counter;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use self::fanout::{Lane, Members, CHUNK};
pub(crate) use crate::socket::outbound::{Outbox, QueueLimits};

/// Another host as its entry says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct HostEntry {
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// The host's open WebSocket connections.
    pub connections: i64,
    pub seen_ms: u64,
}

/// A connection's id, unique within this host.
pub(crate) type ConnectionId = u64;

/// A future returned by [`GroupLayer`]'s methods.
pub(crate) type GroupFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Group membership and fan-out.
pub(crate) trait GroupLayer: Send + Sync {
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
    /// resolves to the number of connections of this host it was sent to
    /// (a large group's members get it in the background, in order). Never
    /// waits on a receiver or a broker: other hosts get it in the
    /// background.
    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize>;
    /// The host stops: a layer that keeps memberships in a broker takes
    /// them out there.
    fn close(&self) -> GroupFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// This host's members of every group (for the status page's group
    /// sizes).
    fn local(&self) -> &MemoryGroups;
    /// The members of `group` on this host, and whether `connection` is
    /// one of them. Never waits.
    fn local_size(&self, group: &str, connection: ConnectionId) -> (usize, bool) {
        self.local().size_for(group, connection)
    }
    /// The members of `group` on other hosts, as they last reported them;
    /// `None` when the broker did not answer in time. Waits a bounded time.
    fn remote_members<'a>(&'a self, _group: &'a str) -> GroupFuture<'a, Option<usize>> {
        Box::pin(std::future::ready(Some(0)))
    }
    /// The hosts sharing the groups, this one included, with their open
    /// connections; empty for groups of this host only.
    fn hosts(&self) -> GroupFuture<'_, Vec<HostEntry>> {
        Box::pin(std::future::ready(Vec::new()))
    }
}

/// Groups of this host only, in memory (a clone shares them).
#[derive(Default, Clone)]
pub(crate) struct MemoryGroups {
    /// Shared with the groups' lanes, which read the members from it.
    membership: Arc<Memberships>,
    /// Counts each member a message was handed to.
    delivered: Counter,
}

#[derive(Default)]
struct Memberships {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    members: HashMap<String, HashMap<ConnectionId, Outbox>>,
    /// The groups of each connection, to leave them all on close.
    joined: HashMap<ConnectionId, HashSet<String>>,
    /// The lanes of large groups (see [`crate::groups::fanout`]); a lane ends with
    /// its group.
    lanes: HashMap<String, Lane>,
}

impl Memberships {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is never held across a panic-prone call; recover anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Members for Memberships {
    fn members(&self, group: &str) -> Vec<Outbox> {
        self.state()
            .members
            .get(group)
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// How a message is on its way to a group's members.
enum Delivery {
    /// Delivered by the sender, to these.
    Now(Vec<Outbox>),
    /// Through the group's lane, to this many.
    Lane(Lane, usize),
}

impl MemoryGroups {
    /// Groups that count every member a message is handed to in
    /// `delivered`.
    pub(crate) fn counting(delivered: Counter) -> Self {
        MemoryGroups {
            membership: Arc::default(),
            delivered,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.membership.state()
    }

    /// Delivers `message` to every member of `group` now: at once to a
    /// small group's, through its lane to a large one's. The number of
    /// members it went to; waits only for room in a busy lane.
    pub(crate) async fn deliver(&self, group: &str, message: &Utf8Bytes) -> usize {
        let count = self.deliver_uncounted(group, message).await;
        self.delivered.inc_by(count as u64);
        count
    }

    async fn deliver_uncounted(&self, group: &str, message: &Utf8Bytes) -> usize {
        // A lane fails only if its task could not run (the runtime is
        // shutting down): the second time, deliver at once.
        for _ in 0..2 {
            let (lane, count) = match self.route(group) {
                Delivery::Now(members) => {
                    return fanout::reach(&members, std::slice::from_ref(message))
                }
                Delivery::Lane(lane, count) => (lane, count),
            };
            if lane.send(message.clone()).await.is_ok() {
                return count;
            }
            let mut state = self.state();
            if state.lanes.get(group).is_some_and(Lane::is_closed) {
                state.lanes.remove(group);
            }
        }
        let members = self.membership.members(group);
        fanout::reach(&members, std::slice::from_ref(message))
    }

    fn route(&self, group: &str) -> Delivery {
        let mut state = self.state();
        let Some(members) = state.members.get(group) else {
            return Delivery::Now(Vec::new());
        };
        let count = members.len();
        if let Some(lane) = state.lanes.get(group) {
            return Delivery::Lane(lane.clone(), count);
        }
        if count <= CHUNK {
            return Delivery::Now(members.values().cloned().collect());
        }
        let lane = fanout::start_lane(group.to_owned(), self.membership.clone());
        state.lanes.insert(group.to_owned(), lane.clone());
        Delivery::Lane(lane, count)
    }

    /// Adds a member; true when it is the group's first.
    pub(crate) fn add(&self, group: &str, connection: ConnectionId, outbox: &Outbox) -> bool {
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
    pub(crate) fn remove(&self, group: &str, connection: ConnectionId) -> bool {
        let mut state = self.state();
        let mut emptied = false;
        if let Some(members) = state.members.get_mut(group) {
            if members.remove(&connection).is_some() && members.is_empty() {
                state.members.remove(group);
                state.lanes.remove(group);
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
    pub(crate) fn remove_everywhere(&self, connection: ConnectionId) -> Vec<String> {
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
                    state.lanes.remove(&group);
                    emptied.push(group);
                }
            }
        }
        emptied
    }

    /// The groups with at least one member here.
    pub(crate) fn group_names(&self) -> Vec<String> {
        self.state().members.keys().cloned().collect()
    }

    /// The groups `connection` is in.
    pub(crate) fn groups_of(&self, connection: ConnectionId) -> Vec<String> {
        self.state()
            .joined
            .get(&connection)
            .map(|groups| groups.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The members of `group` here.
    pub(crate) fn count(&self, group: &str) -> usize {
        self.state().members.get(group).map_or(0, HashMap::len)
    }

    /// The members of `group` here, and whether `connection` is one.
    pub(crate) fn size_for(&self, group: &str, connection: ConnectionId) -> (usize, bool) {
        self.state()
            .members
            .get(group)
            .map_or((0, false), |m| (m.len(), m.contains_key(&connection)))
    }

    /// How many groups `connection` is in.
    pub(crate) fn joined_by(&self, connection: ConnectionId) -> usize {
        self.state().joined.get(&connection).map_or(0, HashSet::len)
    }

    /// How many groups have members here.
    pub(crate) fn group_count(&self) -> usize {
        self.state().members.len()
    }

    /// Calls `visit` with every group's name and member count, under the
    /// membership lock: `visit` must be quick and must not touch groups.
    pub(crate) fn visit_sizes(&self, mut visit: impl FnMut(&str, usize)) {
        for (name, members) in &self.state().members {
            visit(name, members.len());
        }
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
        Box::pin(async move { self.deliver(group, &message).await })
    }

    fn local(&self) -> &MemoryGroups {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::outbound::outbound_queue;

    #[tokio::test]
    async fn join_twice_delivers_once_and_leave_all_cleans_up() {
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
        assert_eq!(groups.deliver("g", &"m".into()).await, 1);
        assert_eq!(
            inbox
                .queue
                .try_recv()
                .ok()
                .map(|m| m.text().to_owned())
                .as_deref(),
            Some("m")
        );
        assert!(inbox.queue.try_recv().is_err());
        let mut emptied = groups.remove_everywhere(1);
        emptied.sort();
        assert_eq!(emptied, ["g", "h"]);
        assert_eq!(groups.deliver("g", &"m".into()).await, 0);
        assert!(groups.state().members.is_empty() && groups.state().joined.is_empty());
    }

    /// A group larger than a chunk is written by its lane, in the background:
    /// every member still gets every message once, in the order sent, and
    /// the lane ends with the group.
    #[tokio::test]
    async fn a_large_groups_messages_arrive_in_order() {
        let groups = MemoryGroups::default();
        let limits = QueueLimits {
            messages: 256,
            bytes: 1 << 20,
        };
        let mut inboxes = Vec::new();
        for id in 0..(CHUNK as u64 + 100) {
            let (outbox, inbox) = outbound_queue(limits, Counter::default(), None);
            groups.add("big", id, &outbox);
            inboxes.push(inbox);
        }
        for n in 0..200 {
            let sent = groups
                .deliver("big", &format!("{{\"n\":{n}}}").into())
                .await;
            assert_eq!(sent, inboxes.len());
        }
        assert!(groups.state().lanes.contains_key("big"));
        for inbox in &mut inboxes {
            for n in 0..200 {
                let message =
                    tokio::time::timeout(std::time::Duration::from_secs(10), inbox.queue.recv())
                        .await
                        .expect("in time")
                        .expect("a message");
                assert_eq!(message.text(), format!("{{\"n\":{n}}}"));
            }
            assert!(inbox.queue.try_recv().is_err(), "once each");
        }
        for id in 0..inboxes.len() as u64 {
            groups.remove_everywhere(id);
        }
        assert!(groups.state().lanes.is_empty());
    }
}
