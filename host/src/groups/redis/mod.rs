//! Groups across several hosts, over Redis pub/sub (what `channels_redis`
//! does for Django Channels). No clustering of our own: Redis carries each
//! group message to every host that has members of the group, and each host
//! fans it out to its own connections.
//!
//! - CoreEntry stays local ([`MemoryGroups`]). A host subscribes to a
//!   group's channel when the group gets its first local member, and
//!   unsubscribes when the last one leaves ([`link`]).
//! - Sending delivers to local members at once and queues the message for
//!   the other hosts ([`publisher`]); it never waits on Redis. Every message
//!   carries its origin, so a host skips its own messages when Redis hands
//!   them back. Each member gets a message once.
//! - Every Redis call has a deadline ([`health`]): a Redis that stops
//!   answering is handled like one that is gone.
//! - The format on Redis is this host's own or that of Django Channels'
//!   `channels_redis` pub/sub layer ([`format`]), so that a Django app's
//!   `group_send` reaches this host's members and the other way round.
//!   [`CoreGroups`] speaks channels_redis's default layer instead, which
//!   keeps groups in sorted sets rather than pub/sub ([`core`]); it shares
//!   the deadlines, the reconnecting and the publishing queue.
//! - Several Redis servers share the groups as channels_redis shards them
//!   ([`shards`]): one layer per server, each group on the server its
//!   name hashes to.
//! - A server can be the master that Redis Sentinel names ([`sentinel`]):
//!   every (re)connect asks the sentinels again, so a failover is an
//!   outage the links recover from like any other.
//! - A Redis Cluster carries the groups with sharded pub/sub
//!   ([`cluster`]): each group's channel on the node of its slot.
//! - Delivery is at most once, as in Channels: while Redis is unreachable
//!   or not answering, local delivery goes on, messages for other hosts are
//!   dropped (and counted), the host reconnects with backoff, subscribes
//!   again to every group it needs, and reports the outage in `/readyz` and
//!   the metrics.

mod access;
mod bounded_pop;
mod bounded_read;
mod cluster;
mod core;
mod core_link;
mod format;
mod health;
mod link;
mod presence;
mod publisher;
mod sentinel;
mod shards;

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::info;

use self::presence::Presence;
pub(crate) use self::{
    access::{Access, AccessError},
    core::CoreSettings,
    format::Format,
};
use self::{
    core::Core,
    core_link::Change,
    health::{Health, ShardStates, BROKER_TIMEOUT},
    link::{Control, LayerState},
    publisher::{Publisher, Sink},
    sentinel::Target,
    shards::{Place, ShardedGroups},
};
use crate::{
    groups::{ConnectionId, GroupFuture, GroupLayer, HostEntry, MemoryGroups, Outbox},
    telemetry::Monitor,
};

/// How long the first connection may take when the host starts.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a join of a group new to this host waits for Redis to confirm
/// the subscription before the handler's reply goes on without it.
const JOIN_WAIT: Duration = Duration::from_millis(250);

/// The Redis-backed group layer.
pub(crate) struct RedisGroups {
    shared: Arc<LayerState>,
    control: mpsc::UnboundedSender<Control>,
    publisher: Publisher,
    presence: Arc<Presence>,
}

/// The pub/sub layer (this host's format or channels_redis's) over one
/// Redis server or several shards of it (see [`shards`]): an error if any
/// cannot be reached now.
pub(crate) async fn connect_pubsub(
    urls: &[String],
    access: &Access,
    wire: Format,
    prefix: &str,
    monitor: Arc<Monitor>,
) -> anyhow::Result<Arc<dyn GroupLayer>> {
    let local = MemoryGroups::counting(monitor.group_deliveries());
    let states = ShardStates::new(urls.len());
    let mut layers: Vec<Arc<dyn GroupLayer>> = Vec::with_capacity(urls.len());
    for (index, url) in urls.iter().enumerate() {
        let place = Place {
            index,
            count: urls.len(),
            local: local.clone(),
        };
        let health = Arc::new(Health::shard(monitor.clone(), states.clone(), index));
        let layer =
            RedisGroups::connect(url, access, wire, prefix, monitor.clone(), place, health).await?;
        layers.push(layer);
    }
    match layers.len() {
        1 => Ok(layers.remove(0)),
        _ => Ok(Arc::new(ShardedGroups::new(
            layers,
            local,
            wire.channel_prefix(prefix),
        ))),
    }
}

/// The pub/sub layer in this host's format over a Redis Cluster, from its
/// seed nodes (see [`cluster`]): an error if any master cannot be reached
/// now.
pub(crate) async fn connect_cluster(
    seeds: &[String],
    access: &Access,
    prefix: &str,
    monitor: Arc<Monitor>,
) -> anyhow::Result<Arc<dyn GroupLayer>> {
    Ok(cluster::connect(seeds, access, prefix, monitor).await?)
}

/// channels_redis's core layer over one Redis server or several shards of
/// it (see [`shards`]): an error if any cannot be reached now.
pub(crate) async fn connect_core(
    urls: &[String],
    access: &Access,
    prefix: &str,
    settings: CoreSettings,
    monitor: Arc<Monitor>,
) -> anyhow::Result<Arc<dyn GroupLayer>> {
    let local = MemoryGroups::counting(monitor.group_deliveries());
    let states = ShardStates::new(urls.len());
    let healths: Arc<Vec<Arc<Health>>> = Arc::new(
        (0..urls.len())
            .map(|index| Arc::new(Health::shard(monitor.clone(), states.clone(), index)))
            .collect(),
    );
    let mut layers: Vec<Arc<dyn GroupLayer>> = Vec::with_capacity(urls.len());
    for (index, url) in urls.iter().enumerate() {
        let place = Place {
            index,
            count: urls.len(),
            local: local.clone(),
        };
        let layer = CoreGroups::connect(
            url,
            access,
            prefix,
            settings,
            monitor.clone(),
            place,
            healths.clone(),
        )
        .await?;
        layers.push(layer);
    }
    match layers.len() {
        1 => Ok(layers.remove(0)),
        _ => Ok(Arc::new(ShardedGroups::new(layers, local, String::new()))),
    }
}

impl RedisGroups {
    /// Connects to Redis (an error if it cannot be reached now) and starts
    /// the tasks that keep the subscriptions and publish.
    async fn connect(
        url: &str,
        access: &Access,
        wire: Format,
        prefix: &str,
        monitor: Arc<Monitor>,
        place: Place,
        health: Arc<Health>,
    ) -> anyhow::Result<Arc<RedisGroups>> {
        let (target, where_) = target(url, access)?;
        let client = first_master(&where_, &target).await?;
        let (pubsub, publishing) = first_contact(&where_, link::open(&client)).await?;
        info!(redis = %where_, format = ?wire, prefix, shard = place.index, shards = place.count, "groups go through Redis");
        health.connected(publishing);
        health.up();
        let shared = Arc::new(LayerState {
            local: place.local,
            shard: (place.index, place.count),
            prefix: wire.channel_prefix(prefix),
            wire,
            origin: format!("{:016x}", rand::random::<u64>()),
            health: health.clone(),
        });
        let presence = Presence::new(
            format!("{}rohrpost-presence:", shared.prefix),
            shared.origin.clone(),
            health.clone(),
            monitor.open_connections_counter(),
        );
        tokio::spawn(presence.clone().run(shared.local.clone()));
        let (control, control_rx) = mpsc::unbounded_channel();
        target.watch(&health);
        tokio::spawn(link::run(
            target,
            where_,
            shared.clone(),
            pubsub,
            control_rx,
        ));
        Ok(Arc::new(RedisGroups {
            shared,
            control,
            publisher: Publisher::start(health, Sink::PubSub),
            presence,
        }))
    }
}

/// Where the connections for `url` go (see [`access`], [`sentinel`]),
/// and the URL for logs.
fn target(url: &str, access: &Access) -> anyhow::Result<(Target, String)> {
    Ok((Target::new(url, access)?, access::redacted(url)))
}

/// Checks that clients can be made for `url` with `access`, as at start
/// (`--check-config`): nothing connects.
pub(crate) fn check(url: &str, access: &Access) -> Result<(), AccessError> {
    Target::new(url, access).map(|_| ())
}

/// The client to open the first connections with, within
/// [`START_TIMEOUT`]: with Sentinel, the master's.
async fn first_master(where_: &str, target: &Target) -> anyhow::Result<redis::Client> {
    tokio::time::timeout(START_TIMEOUT.max(BROKER_TIMEOUT), target.client())
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach Redis at {where_}: timed out"))?
        .map_err(|e| anyhow::anyhow!("cannot reach Redis at {where_}: {e}"))
}

/// Opens the connections at start, within [`START_TIMEOUT`].
async fn first_contact<T, E: std::fmt::Display>(
    where_: &str,
    open: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(START_TIMEOUT.max(BROKER_TIMEOUT), open)
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach Redis at {where_}: timed out"))?
        .map_err(|e| anyhow::anyhow!("cannot reach Redis at {where_}: {e}"))
}

impl GroupLayer for RedisGroups {
    /// Resolves once Redis confirmed the subscription, so that a message
    /// another host sends right after reaches the new member; but after
    /// [`JOIN_WAIT`] at most, and at once while Redis is down. A join that
    /// stops waiting stays local until the subscription goes through (or
    /// the link reconnects and subscribes again).
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: ConnectionId,
        outbox: &'a Outbox,
    ) -> GroupFuture<'a, ()> {
        Box::pin(async move {
            let first = self.shared.local.add(group, connection, outbox);
            self.presence.changed(group);
            if !first {
                return;
            }
            let (done, subscribed) = oneshot::channel();
            let queued = self
                .control
                .send(Control::Subscribe(self.shared.channel(group), Some(done)))
                .is_ok();
            if queued && self.shared.health.is_up() {
                let _ = tokio::time::timeout(JOIN_WAIT, subscribed).await;
            }
        })
    }

    fn leave(&self, group: &str, connection: ConnectionId) {
        let emptied = self.shared.local.remove(group, connection);
        self.presence.changed(group);
        if emptied {
            let _ = self
                .control
                .send(Control::Unsubscribe(self.shared.channel(group)));
        }
    }

    fn leave_all(&self, connection: ConnectionId) {
        for group in self.shared.local.groups_of(connection) {
            self.presence.changed(&group);
        }
        for group in self.shared.local.remove_everywhere(connection) {
            let _ = self
                .control
                .send(Control::Unsubscribe(self.shared.channel(&group)));
        }
    }

    /// Never waits on a member or on Redis: local members get the message
    /// now (written or queued), the other hosts through the publisher's
    /// queue.
    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize> {
        Box::pin(async move {
            let payload = self.shared.wire.encode(&self.shared.origin, &message);
            self.publisher.offer(self.shared.channel(group), payload);
            self.shared.local.deliver(group, &message).await
        })
    }

    fn local(&self) -> &MemoryGroups {
        &self.shared.local
    }

    fn remote_members<'a>(&'a self, group: &'a str) -> GroupFuture<'a, Option<usize>> {
        Box::pin(self.presence.members_recently(group, async move {
            self.presence
                .others(group)
                .await
                .map(|(members, _)| members)
        }))
    }

    fn hosts(&self) -> GroupFuture<'_, Vec<HostEntry>> {
        Box::pin(self.presence.hosts())
    }

    fn close(&self) -> GroupFuture<'_, ()> {
        Box::pin(self.presence.remove(&self.shared.local))
    }
}

/// Groups in channels_redis's default layer (see [`core`]).
pub(crate) struct CoreGroups {
    core: Arc<Core>,
    changes: mpsc::UnboundedSender<Change>,
    publisher: Publisher,
    presence: Arc<Presence>,
}

impl CoreGroups {
    /// Connects to Redis (an error if it cannot be reached now) and starts
    /// the tasks that keep the memberships, receive and send; `healths`
    /// holds every shard's, this one's at `place.index`.
    async fn connect(
        url: &str,
        access: &Access,
        prefix: &str,
        settings: CoreSettings,
        monitor: Arc<Monitor>,
        place: Place,
        healths: Arc<Vec<Arc<Health>>>,
    ) -> anyhow::Result<Arc<CoreGroups>> {
        let (target, where_) = target(url, access)?;
        let client = first_master(&where_, &target).await?;
        let dialer = bounded_pop::Dialer::new(&client, access)?;
        let (commands, popping) = first_contact(&where_, core_link::open(&client, &dialer)).await?;
        info!(redis = %where_, prefix, shard = place.index, shards = place.count, "groups go through Redis, as Django Channels' RedisChannelLayer keeps them");
        let health = healths
            .get(place.index)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no shard {}", place.index))?;
        health.connected(commands.clone());
        let core = Arc::new(Core::sharded(prefix, settings, place, healths));
        let presence = Presence::new(
            format!("{prefix}:rohrpost-presence:"),
            core.host_id().to_owned(),
            health.clone(),
            monitor.open_connections_counter(),
        );
        tokio::spawn(presence.clone().run(core.local.clone()));
        let (changes, changes_rx) = mpsc::unbounded_channel();
        target.watch(&health);
        tokio::spawn(core_link::run(
            target,
            dialer,
            where_,
            core.clone(),
            (commands, popping),
            changes_rx,
        ));
        Ok(Arc::new(CoreGroups {
            core: core.clone(),
            changes,
            publisher: Publisher::start(health, Sink::Core(core)),
            presence,
        }))
    }

    fn left(&self, group: &str) {
        if let Some(membership) = self.core.left(group) {
            let _ = self.changes.send(Change::Remove(membership));
        }
    }
}

impl GroupLayer for CoreGroups {
    /// Resolves once the host's channel is in the group's set in Redis,
    /// after [`JOIN_WAIT`] at most, at once while Redis is down.
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: ConnectionId,
        outbox: &'a Outbox,
    ) -> GroupFuture<'a, ()> {
        Box::pin(async move {
            let first = self.core.local.add(group, connection, outbox);
            self.presence.changed(group);
            if !first {
                return;
            }
            let (done, added) = oneshot::channel();
            let queued = self
                .changes
                .send(Change::Add(self.core.joined(group), Some(done)))
                .is_ok();
            if queued && self.core.health.is_up() {
                let _ = tokio::time::timeout(JOIN_WAIT, added).await;
            }
        })
    }

    fn leave(&self, group: &str, connection: ConnectionId) {
        let emptied = self.core.local.remove(group, connection);
        self.presence.changed(group);
        if emptied {
            self.left(group);
        }
    }

    fn leave_all(&self, connection: ConnectionId) {
        for group in self.core.local.groups_of(connection) {
            self.presence.changed(&group);
        }
        for group in self.core.local.remove_everywhere(connection) {
            self.left(&group);
        }
    }

    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize> {
        Box::pin(async move {
            self.publisher
                .offer(group.to_owned(), message.as_bytes().to_vec());
            self.core.local.deliver(group, &message).await
        })
    }

    /// Other hosts' members from their presence, and Django's consumers:
    /// the group's set holds one channel per consumer and one per host
    /// with members, so the consumers are the set's live members less the
    /// hosts'.
    fn remote_members<'a>(&'a self, group: &'a str) -> GroupFuture<'a, Option<usize>> {
        Box::pin(self.presence.members_recently(group, async move {
            let (others, hosts) = self.presence.others(group).await?;
            let in_set = tokio::time::timeout(presence::ASK_WAIT, self.core.set_size(group))
                .await
                .ok()
                .flatten()?;
            let own = usize::from(self.core.local.count(group) > 0);
            Some(others + in_set.saturating_sub(hosts + own))
        }))
    }

    fn hosts(&self) -> GroupFuture<'_, Vec<HostEntry>> {
        Box::pin(self.presence.hosts())
    }

    /// Takes the host's channels out of every group's set.
    fn close(&self) -> GroupFuture<'_, ()> {
        Box::pin(async move {
            self.presence.remove(&self.core.local).await;
            let (done, closed) = oneshot::channel();
            if self.changes.send(Change::Close(done)).is_ok() {
                let _ = tokio::time::timeout(BROKER_TIMEOUT * 2, closed).await;
            }
        })
    }

    fn local(&self) -> &MemoryGroups {
        &self.core.local
    }
}

/// How to reach Redis besides the groups URL, from the settings.
pub(crate) fn access_from_settings(settings: &crate::config::Settings) -> Access {
    let path =
        |text: &str| (!text.trim().is_empty()).then(|| std::path::PathBuf::from(text.trim()));
    Access {
        tls_ca: path(&settings.redis_tls_ca),
        tls_cert: path(&settings.redis_tls_cert),
        tls_key: path(&settings.redis_tls_key),
        password_file: path(&settings.redis_password_file),
    }
}

/// `--check-config`'s part about Redis: a client can be made for the
/// groups URL with the TLS and password files, as at start.
pub(crate) fn check_settings(settings: &crate::config::Settings) -> Result<(), String> {
    use crate::config::Groups;
    let access = access_from_settings(settings);
    match &settings.groups {
        Groups::Memory => Ok(()),
        Groups::Redis(urls) | Groups::ChannelsPubSub(urls) | Groups::ChannelsCore(urls) => urls
            .iter()
            .try_for_each(|url| check(url, &access).map_err(|e| format!("groups: {e}"))),
        Groups::RedisCluster(seeds) => {
            cluster::check(seeds, &access).map_err(|e| format!("groups: {e}"))
        }
    }
}
