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
//! Routing is the `redis` crate's `cluster-async` connection (1.8) rather
//! than a router of our own. It keeps the slot map (`CLUSTER SLOTS`), sends
//! each command to its slot's node, follows `MOVED` and `ASK` and re-reads
//! the map on them, reconnects to nodes, and, over RESP3, keeps the
//! sharded subscriptions: after a node reconnects or the map changes it
//! subscribes every channel again on the node that now owns its slot. Our
//! own router would need a RESP3 subscriber of its own (the crate's
//! single-server pub/sub connection has no `SSUBSCRIBE`, and its
//! multiplexed one cannot wait for an `ssubscribe` confirmation), its own
//! redirects and its own topology refresh: more code of ours exactly where
//! Redis Cluster's corner cases are. The feature costs a few small crates
//! (`crc16`, `futures-channel`, and `rand` 0.10 for the crate's random
//! routing). What the crate does not do, this link does:
//!
//! - a deadline on every call ([`deadline`]), and each second the slot map
//!   read from a node (`CLUSTER SLOTS`) and a `PING` to every master in
//!   it, so that `/readyz` is not ready while any slot has no master or its
//!   master is unreachable or not answering;
//! - a new cluster connection from the seeds when that lasts, as a last
//!   resort (a master that is gone answers no `MOVED`; should the crate's
//!   map keep its slots after a replica took over, a fresh connection
//!   reads the map again);
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
//! Over TLS (`rediss+cluster://`), every node is reached over TLS with the
//! settings of one TLS server (`redis_tls_ca`, `redis_tls_cert`,
//! `redis_tls_key`); the nodes announce their TLS ports in the slot map
//! when they run with `tls-cluster yes`.
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
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    ProtocolVersion, PushInfo, PushKind, Value,
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
/// How long a master may stay unreachable before the link makes a new
/// cluster connection from the seed nodes, and how long making it may
/// take: a fresh connection reads the slot map again, which finds a
/// replica that took over from a master that is gone.
const RENEW_AFTER: Duration = Duration::from_secs(5);
const RENEW_WAIT: Duration = Duration::from_secs(3);

/// Why no cluster client could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("invalid Redis Cluster seed nodes: {0}")]
    Seeds(String),
}

/// The client for the seed nodes `seeds` (`redis://` or `rediss://` URLs,
/// one node each, all of one scheme, as the settings give them) with
/// `access`, and the seeds for logs.
///
/// Over TLS, every node's connection, the seeds' and those to the nodes of
/// the slot map alike, uses the same certificates (the crate takes them
/// once for the cluster, not per node): the CA file besides the system's
/// roots, the client certificate when set. A node is checked against the
/// address the slot map gives for it (`CLUSTER SLOTS`, the TLS ports with
/// `tls-cluster yes`), so its certificate names that address: an IP
/// address SAN when nodes announce their IPs, as they do by default.
fn client(
    seeds: &[String],
    access: &Access,
    pushes: Option<PushQueue>,
) -> Result<(redis::cluster::ClusterClient, String), ClusterError> {
    let mut infos = Vec::with_capacity(seeds.len());
    let mut shown = Vec::with_capacity(seeds.len());
    for seed in seeds {
        let (info, where_) = access::connection_info(seed, access)?;
        infos.push(info);
        shown.push(where_);
    }
    let tls = infos.first().is_some_and(access::is_tls);
    if infos.iter().any(|info| access::is_tls(info) != tls) {
        return Err(ClusterError::Seeds(
            "the seed nodes mix TLS and plain connections".to_owned(),
        ));
    }
    let certificates = if tls {
        Some(access::tls_certificates(access)?)
    } else {
        access::no_tls_files(access)?;
        None
    };
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
    if let Some(certificates) = certificates {
        builder = builder.certs(certificates);
    }
    if let Some(pushes) = pushes {
        builder = builder.push_sender(move |push: PushInfo| pushes.offer(push));
    }
    let client = builder
        .build()
        .map_err(|e| ClusterError::Seeds(e.to_string()))?;
    let scheme = if tls {
        "rediss+cluster"
    } else {
        "redis+cluster"
    };
    Ok((client, format!("{scheme}({})", shown.join(","))))
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
    let mut connection = first_contact(&where_, client.get_async_connection()).await?;
    check_masters(&mut connection)
        .await
        .map_err(|failure| anyhow::anyhow!("cannot reach Redis at {where_}: {failure}"))?;
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
        client,
        connection,
        failing_since: None,
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

/// Slots of a Redis Cluster.
const SLOTS: u32 = 16_384;
/// Most masters read from a slot map.
const MAX_MASTERS: usize = 1024;

/// The masters of the slot map as a node has it now (`CLUSTER SLOTS`):
/// an error when a slot has none or the reply is not a slot map.
fn masters_of(value: &Value) -> Result<Vec<(String, u16)>, String> {
    let int = |value: Option<&Value>| match value {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let Value::Array(ranges) = value else {
        return Err("CLUSTER SLOTS did not answer a list".to_owned());
    };
    if ranges.len() > SLOTS as usize {
        return Err("CLUSTER SLOTS answered more ranges than slots".to_owned());
    }
    let mut covered = 0u32;
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err("a CLUSTER SLOTS range is not a list".to_owned());
        };
        let (Some(start), Some(end)) = (int(parts.first()), int(parts.get(1))) else {
            return Err("a CLUSTER SLOTS range has no bounds".to_owned());
        };
        if !(0..i64::from(SLOTS)).contains(&start) || !(start..i64::from(SLOTS)).contains(&end) {
            return Err("a CLUSTER SLOTS range is out of bounds".to_owned());
        }
        covered += (end - start + 1) as u32;
        let Some(Value::Array(master)) = parts.get(2) else {
            return Err("a CLUSTER SLOTS range has no master".to_owned());
        };
        let host = match master.first() {
            Some(Value::BulkString(bytes)) if bytes.len() <= 255 => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            Some(Value::SimpleString(text)) if text.len() <= 255 => text.clone(),
            _ => return Err("a CLUSTER SLOTS master has no address".to_owned()),
        };
        let Some(port) = int(master.get(1)).and_then(|p| u16::try_from(p).ok()) else {
            return Err("a CLUSTER SLOTS master has no port".to_owned());
        };
        if !masters.iter().any(|(h, p)| *h == host && *p == port) {
            if masters.len() == MAX_MASTERS {
                return Err(format!("more than {MAX_MASTERS} masters"));
            }
            masters.push((host, port));
        }
    }
    if covered != SLOTS {
        return Err(format!(
            "{covered} of {SLOTS} slots have a master: the cluster is not complete"
        ));
    }
    Ok(masters)
}

/// Every slot has a master and every master answers a `PING`, each under
/// the deadline: the slot map is read from a node now, so a master that
/// is gone counts until a replica has taken over its slots.
async fn check_masters(connection: &mut ClusterConnection) -> Result<(), Failure> {
    let map = deadline(connection.route_command(
        redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
    ))
    .await?;
    let masters = masters_of(&map).map_err(Failure::Lost)?;
    let pings = masters.into_iter().map(|(host, port)| {
        let mut connection = connection.clone();
        async move {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            deadline(connection.route_command(redis::cmd("PING"), routing))
                .await
                .map_err(|failure| Failure::Lost(format!("master {host}:{port}: {failure}")))
        }
    });
    for result in futures_util::future::join_all(pings).await {
        result?;
    }
    Ok(())
}

/// The link's state.
struct Link {
    client: redis::cluster::ClusterClient,
    connection: ClusterConnection,
    /// Since when a check fails, or since the last new connection while
    /// it goes on failing.
    failing_since: Option<Instant>,
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
        if let Err(failure) = check_masters(&mut self.connection).await {
            self.renew_when_failing_long().await;
            return Err(failure);
        }
        self.failing_since = None;
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

    /// After [`RENEW_AFTER`] of failing checks, a new cluster connection
    /// from the seed nodes, with the slot map as it is now: the client
    /// follows `MOVED`, but a master that is gone answers nothing, so its
    /// slots would stay routed to it after a replica took over. The
    /// subscriptions are made again on the new connection once every
    /// master answers.
    async fn renew_when_failing_long(&mut self) {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() < RENEW_AFTER {
            return;
        }
        self.failing_since = Some(Instant::now());
        match tokio::time::timeout(RENEW_WAIT, self.client.get_async_connection()).await {
            Ok(Ok(connection)) => {
                info!(redis = %self.where_, "made a new Redis Cluster connection, with the slot map as it is now");
                self.connection = connection;
                self.layer.health.connected(self.connection.clone());
            }
            Ok(Err(error)) => {
                warn!(redis = %self.where_, %error, "cannot make a new Redis Cluster connection");
            }
            Err(_) => {
                warn!(redis = %self.where_, "cannot make a new Redis Cluster connection: timed out");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn the_masters_of_a_complete_slot_map() {
        let map = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "10.0.0.2", 7000),
            range(10923, 16000, "10.0.0.3", 7000),
            range(16001, 16383, "10.0.0.1", 7000),
        ]);
        assert_eq!(
            masters_of(&map),
            Ok(vec![
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.2".to_owned(), 7000),
                ("10.0.0.3".to_owned(), 7000)
            ])
        );
    }

    #[test]
    fn incomplete_or_malformed_slot_maps_are_errors() {
        let incomplete = Value::Array(vec![range(0, 10000, "h", 1)]);
        assert!(masters_of(&incomplete).is_err());
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![range(0, 16384, "h", 1)]),
            Value::Array(vec![range(10, 5, "h", 1)]),
            Value::Array(vec![range(0, 16383, "h", 70000)]),
            Value::Array(vec![range(0, 16383, &"h".repeat(300), 1)]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(16383)])]),
        ] {
            assert!(masters_of(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_seeds_take_the_tls_files_and_plain_ones_refuse_them() {
        let tls = [
            "rediss://127.0.0.1:7000/".to_owned(),
            "rediss://127.0.0.1:7001/".to_owned(),
        ];
        let plain = ["redis://127.0.0.1:7000/".to_owned()];
        assert!(check(&tls, &Access::default()).is_ok());
        assert!(check(&plain, &Access::default()).is_ok());
        let ca = Access {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Access::default()
        };
        let error = check(&tls, &ca);
        assert!(
            matches!(
                &error,
                Err(ClusterError::Access(AccessError::Read {
                    setting: "redis_tls_ca",
                    ..
                }))
            ),
            "{error:?}"
        );
        assert!(matches!(
            check(&plain, &ca),
            Err(ClusterError::Access(AccessError::NotTls("redis_tls_ca")))
        ));
        let half = Access {
            tls_key: Some("/nonexistent/key.pem".into()),
            ..Access::default()
        };
        assert!(matches!(
            check(&tls, &half),
            Err(ClusterError::Access(AccessError::HalfPair))
        ));
        let mixed = [tls[0].clone(), plain[0].clone()];
        assert!(matches!(
            check(&mixed, &Access::default()),
            Err(ClusterError::Seeds(_))
        ));
    }

    #[test]
    fn an_oversized_message_is_rejected_before_it_is_queued() {
        let (queue, mut queued) = mpsc::channel(4);
        let health = Arc::new(Health::new(Arc::new(Monitor::default())));
        let pushes = PushQueue {
            queue,
            bytes: Arc::new(AtomicUsize::new(0)),
            health,
        };
        let message = |payload: Vec<u8>| PushInfo {
            kind: PushKind::SMessage,
            data: vec![
                Value::BulkString(b"rohrpost:group:g".to_vec()),
                Value::BulkString(payload),
            ],
        };
        assert_eq!(
            pushes.offer(message(vec![b'x'; MAX_PAYLOAD + MAX_CHANNEL + 1])),
            Ok(())
        );
        assert!(queued.try_recv().is_err(), "not queued");
        assert_eq!(pushes.offer(message(b"small".to_vec())), Ok(()));
        assert!(queued.try_recv().is_ok());
        assert_eq!(
            pushes.bytes.load(Ordering::Relaxed),
            push_size(&message(b"small".to_vec()))
        );
    }
}
