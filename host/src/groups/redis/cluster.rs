//! Groups over a Redis Cluster (`redis+cluster://`), with Redis 7's
//! sharded pub/sub: each group's channel lives on the node that owns its
//! slot, the host `SSUBSCRIBE`s it there and messages go out with
//! `SPUBLISH`, so a group's messages travel within one shard instead of
//! being copied to every node, as classic `PUBLISH` on a cluster does.
//!
//! The layer is [`RedisGroups`] with three parts swapped: this link in place
//! of [`super::link`], a publisher that `SPUBLISH`es ([`Sink::Sharded`]),
//! and presence keys under one hash tag, so that every presence key is in
//! one slot and its pipelines never span slots.
//!
//! Routing is the `redis` crate's `cluster-async` connection rather than a
//! router of our own. It keeps the slot map (`CLUSTER SLOTS`), sends each
//! command to its slot's node, follows `MOVED` and `ASK` and re-reads the
//! map on them, reconnects to nodes, and, over RESP3, keeps the sharded
//! subscriptions: after a node reconnects or the map changes it subscribes
//! every channel again on the node that now owns its slot. Our own router
//! would need a RESP3 subscriber of its own (the crate's single-server
//! pub/sub connection has no `SSUBSCRIBE`), its own redirect handling and
//! its own topology refresh: more code in the one place where Redis
//! Cluster's corner cases are, with no test cluster of the crate's behind
//! it. What the crate does not do, this link does:
//!
//! - a deadline on every call ([`deadline`]) and a `PING` to every master
//!   each second, so that `/readyz` is not ready while any slot's node is
//!   unreachable or not answering;
//! - after an outage, `SSUBSCRIBE` again to every channel with local
//!   members before reporting ready (the crate does so as well; doing it
//!   here makes ready mean subscribed);
//! - a `sunsubscribe` the server pushes when a slot moves away drops the
//!   crate's record of that subscription: the link subscribes again, and
//!   the crate routes it to the slot's new node;
//! - pushes from Redis go through a queue bounded in messages and bytes,
//!   and a message larger than [`MAX_PAYLOAD`] is rejected before it is
//!   queued (the format checks every payload again).
//!
//! While a node is down, the groups whose slots it serves reach this host's
//! connections only; the others go on between hosts.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use redis::{
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
    IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};
use tracing::{info, warn};

use super::{
    access::{self, Access, AccessError},
    first_contact,
    format::{Format, Rejected, MAX_PAYLOAD},
    health::{deadline, Failure, Health, BROKER_TIMEOUT},
    link::{Control, LayerState},
    presence::Presence,
    publisher::{Publisher, Sink},
    RedisGroups,
};
use crate::{groups::MemoryGroups, telemetry::Monitor};

/// How often the link asks every master whether it still answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Most pushes from Redis waiting for the link, and most bytes of them.
const RECEIVED_MESSAGES: usize = 4096;
const RECEIVED_BYTES: usize = 16 << 20;
/// Subscriptions sent at once when subscribing again to every group.
const SUBSCRIBE_AT_ONCE: usize = 64;
/// Most channels remembered for unsubscribing once the cluster is back.
const MAX_STALE: usize = 65_536;

/// Why no cluster client could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("invalid Redis Cluster seed nodes: {0}")]
    Seeds(String),
}

/// The client for the seed nodes `seeds` (`redis://` URLs, one node each,
/// as the settings give them) with `access`, and the seeds for logs.
fn client(
    seeds: &[String],
    access: &Access,
    pushes: Option<PushQueue>,
) -> Result<(redis::cluster::ClusterClient, String), ClusterError> {
    let mut infos = Vec::with_capacity(seeds.len());
    let mut shown = Vec::with_capacity(seeds.len());
    for seed in seeds {
        let (client, where_) = access::client(seed, access)?;
        let info = client
            .get_connection_info()
            .clone()
            .into_connection_info()
            .map_err(|e| ClusterError::Seeds(e.to_string()))?;
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            return Err(ClusterError::Seeds(
                "TLS to a Redis Cluster is not supported".to_owned(),
            ));
        }
        infos.push(info);
        shown.push(where_);
    }
    let mut builder = ClusterClientBuilder::new(infos)
        .use_protocol(ProtocolVersion::RESP3)
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        // Our deadline covers every call; the crate's own bounds keep its
        // retries of a node that is down within it.
        .connection_timeout(BROKER_TIMEOUT / 2)
        .response_timeout(BROKER_TIMEOUT)
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(100);
    if let Some(pushes) = pushes {
        builder = builder.push_sender(move |push: PushInfo| pushes.offer(push));
    }
    let client = builder
        .build()
        .map_err(|e| ClusterError::Seeds(e.to_string()))?;
    Ok((client, format!("redis+cluster({})", shown.join(","))))
}

/// Checks that a cluster client can be made for `seeds` with `access`, as
/// at start (`--check-config`): nothing connects.
pub(crate) fn check(seeds: &[String], access: &Access) -> Result<(), ClusterError> {
    client(seeds, access, None).map(|_| ())
}

/// The sending side of the queue of pushes from Redis, which the crate
/// calls for every push of every node's connection: it must not wait.
struct PushQueue {
    queue: mpsc::Sender<PushInfo>,
    bytes: Arc<AtomicUsize>,
    health: Arc<Health>,
}

/// The bytes a push holds.
fn push_size(push: &PushInfo) -> usize {
    push.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len(),
            _ => 16,
        })
        .sum()
}

impl PushQueue {
    /// Queues a push; a message too large, or for a full queue, is
    /// dropped and counted. An error only once the link is gone.
    fn offer(&self, push: PushInfo) -> Result<(), ()> {
        let size = push_size(&push);
        let message = push.kind == PushKind::SMessage;
        if message && size > MAX_PAYLOAD + MAX_CHANNEL {
            let channel = match push.data.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            };
            self.health.rejected(&channel, &Rejected::Oversized(size));
            return Ok(());
        }
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        // One message bigger than the bound still goes when nothing waits.
        if message && before > 0 && before + size > RECEIVED_BYTES {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.health
                .dropped(1, "the queue of messages from Redis is full");
            return Ok(());
        }
        match self.queue.try_send(push) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                self.health
                    .dropped(1, "the queue of messages from Redis is full");
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                Err(())
            }
        }
    }
}

/// Most bytes of a channel name in a message (a group name is far
/// shorter; this only bounds what is accepted with the payload).
const MAX_CHANNEL: usize = 64 << 10;

/// Connects to the cluster (an error if any master cannot be reached now)
/// and starts what keeps the subscriptions and publishes.
pub(super) async fn connect(
    seeds: &[String],
    access: &Access,
    prefix: &str,
    monitor: Arc<Monitor>,
) -> anyhow::Result<Arc<RedisGroups>> {
    let health = Arc::new(Health::new(monitor.clone()));
    let (queue, pushes) = mpsc::channel(RECEIVED_MESSAGES);
    let bytes = Arc::new(AtomicUsize::new(0));
    let push_queue = PushQueue {
        queue,
        bytes: bytes.clone(),
        health: health.clone(),
    };
    let (client, where_) = client(seeds, access, Some(push_queue))?;
    let connection = first_contact(&where_, async {
        let mut connection = client.get_async_connection().await?;
        ping_masters(&mut connection).await?;
        Ok(connection)
    })
    .await?;
    info!(redis = %where_, prefix, "groups go through Redis Cluster, with sharded pub/sub");
    health.connected(connection.clone());
    health.up();
    let wire = Format::Rohrpost;
    let shared = Arc::new(LayerState {
        local: MemoryGroups::counting(monitor.group_deliveries()),
        shard: (0, 1),
        prefix: wire.channel_prefix(prefix),
        wire,
        origin: format!("{:016x}", rand::random::<u64>()),
        health: health.clone(),
    });
    // One hash tag for every presence key: one slot, one node per pipeline.
    let presence = Presence::new(
        format!("{{{}rohrpost-presence}}:", shared.prefix),
        shared.origin.clone(),
        health.clone(),
        monitor.open_connections_counter(),
    );
    tokio::spawn(presence.clone().run(shared.local.clone()));
    let (control, control_rx) = mpsc::unbounded_channel();
    let link = Link {
        connection,
        where_,
        layer: shared.clone(),
        bytes,
        up: true,
        stale: HashSet::new(),
    };
    tokio::spawn(link.run(pushes, control_rx));
    Ok(Arc::new(RedisGroups {
        shared,
        control,
        publisher: Publisher::start(health, Sink::Sharded),
        presence,
    }))
}

/// `PING` to every master: an error when any fails.
async fn ping_masters(connection: &mut ClusterConnection) -> redis::RedisResult<()> {
    connection
        .route_command(
            redis::cmd("PING"),
            RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::AllSucceeded),
            )),
        )
        .await
        .map(|_| ())
}

/// The link's state.
struct Link {
    connection: ClusterConnection,
    where_: String,
    layer: Arc<LayerState>,
    /// Bytes of the pushes queued for the link (see [`PushQueue`]).
    bytes: Arc<AtomicUsize>,
    /// Every master answers and every group with local members is
    /// subscribed.
    up: bool,
    /// Channels whose unsubscribing was skipped during an outage.
    stale: HashSet<String>,
}

impl Link {
    /// Runs until the layer is dropped.
    async fn run(
        mut self,
        mut pushes: mpsc::Receiver<PushInfo>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let health = self.layer.health.clone();
        loop {
            let step = tokio::select! {
                request = control.recv() => match request {
                    None => return,
                    Some(request) => self.change(request).await,
                },
                push = pushes.recv() => match push {
                    None => return,
                    Some(push) => self.pushed(push).await,
                },
                _ = ping.tick() => self.check().await,
                failure = health.publish_failure() => Err(failure),
            };
            if let Err(failure) = step {
                self.failed(&failure);
            }
        }
    }

    /// A change of subscriptions; while the cluster is not all there, it
    /// waits for the subscribing again that follows.
    async fn change(&mut self, request: Control) -> Result<(), Failure> {
        match request {
            Control::Subscribe(channel, done) => {
                self.stale.remove(&channel);
                if self.up {
                    deadline(self.connection.ssubscribe(&channel)).await?;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            }
            Control::Unsubscribe(channel) => {
                if self.up {
                    deadline(self.connection.sunsubscribe(&channel)).await?;
                } else if self.stale.len() < MAX_STALE {
                    self.stale.insert(channel);
                }
            }
        }
        Ok(())
    }

    /// A push from one of the nodes.
    async fn pushed(&mut self, push: PushInfo) -> Result<(), Failure> {
        self.bytes.fetch_sub(push_size(&push), Ordering::Relaxed);
        let mut data = push.data.into_iter();
        match (push.kind, data.next(), data.next()) {
            (
                PushKind::SMessage,
                Some(Value::BulkString(channel)),
                Some(Value::BulkString(payload)),
            ) => {
                match std::str::from_utf8(&channel) {
                    Ok(channel) => self.layer.received(channel, &payload).await,
                    Err(_) => self.layer.health.invalid_group(),
                }
                Ok(())
            }
            // The slot moved to another node, which dropped the
            // subscription: subscribe again, where the slot now lives.
            (PushKind::SUnsubscribe, Some(Value::BulkString(channel)), _) => {
                let Ok(channel) = String::from_utf8(channel) else {
                    return Ok(());
                };
                if self.up && self.wanted(&channel) {
                    info!(channel = %channel, "a slot moved; subscribing again on its node");
                    deadline(self.connection.ssubscribe(&channel)).await?;
                }
                Ok(())
            }
            (PushKind::Disconnection, _, _) => Err(Failure::Lost(
                "a connection to a cluster node closed".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `channel` is a group's with local members.
    fn wanted(&self, channel: &str) -> bool {
        channel
            .strip_prefix(&self.layer.prefix)
            .is_some_and(|group| self.layer.local.count(group) > 0)
    }

    /// Every master answers; after an outage, subscribes again to every
    /// group with local members before the layer counts as up.
    async fn check(&mut self) -> Result<(), Failure> {
        deadline(ping_masters(&mut self.connection)).await?;
        if self.up {
            return Ok(());
        }
        for channel in std::mem::take(&mut self.stale) {
            if !self.wanted(&channel) {
                deadline(self.connection.sunsubscribe(&channel)).await?;
            }
        }
        let channels = self.layer.channels();
        let connection = self.connection.clone();
        let mut subscribing = futures_util::stream::iter(channels.iter().cloned())
            .map(|channel| {
                let mut connection = connection.clone();
                async move { deadline(connection.ssubscribe(&channel)).await }
            })
            .buffer_unordered(SUBSCRIBE_AT_ONCE);
        while let Some(result) = subscribing.next().await {
            result?;
        }
        self.up = true;
        self.layer.health.up();
        info!(
            redis = %self.where_,
            groups = channels.len(),
            "every Redis Cluster master answers again; subscriptions restored"
        );
        Ok(())
    }

    /// Something failed: not ready until every master answers and every
    /// group is subscribed again. Publishing goes on through the cluster
    /// connection, to the nodes that answer.
    fn failed(&mut self, failure: &Failure) {
        let health = &self.layer.health;
        if self.up {
            warn!(redis = %self.where_, reason = %failure, "a Redis Cluster node is unreachable or not answering; the groups of its slots reach this host's connections only until it is back");
        }
        self.up = false;
        health.down(failure);
        health.connected(self.connection.clone());
    }
}
