//! Whether Redis answers, as the rest of the layer and the operator see it.
//!
//! Every call to Redis runs under one deadline ([`deadline`]): a call that
//! errs means the broker is lost, a call that does not answer in time means
//! it stalled, and both are handled the same way (the link drops its
//! connections and reconnects). The state is reported to the [`Monitor`]
//! (`/readyz` and `rohrpost_broker_up`), and the publishing connection of
//! the current link lives here so that the publisher never uses one the
//! link has given up.

use crate::base::lock::lock;
use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use redis::{aio::MultiplexedConnection, cluster_async::ClusterConnection};
use tokio::sync::Notify;
use tracing::warn;

use crate::telemetry::Monitor;

/// How long any Redis call (connect, subscribe, unsubscribe, publish,
/// ping) may take before the broker counts as not answering.
pub(super) const BROKER_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one warning about lost group messages in this time.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The `/readyz` reasons.
const LOST: &str = "Redis is unreachable: group messages reach this host's connections only";
const STALLED: &str = "groups broker not answering: Redis did not answer in time; group messages reach this host's connections only";

/// Why the link to Redis ended.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// A call failed: the connection broke or Redis refused it.
    Lost(String),
    /// A call got no answer within [`BROKER_TIMEOUT`].
    Stalled,
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Lost(_) => LOST,
            Failure::Stalled => STALLED,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Lost(error) => f.write_str(error),
            Failure::Stalled => write!(f, "no answer within {BROKER_TIMEOUT:?}"),
        }
    }
}

/// Runs one Redis call under [`BROKER_TIMEOUT`].
pub(super) async fn deadline<T>(
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(BROKER_TIMEOUT, call).await {
        Ok(result) => result.map_err(failure_of),
        Err(_) => Err(Failure::Stalled),
    }
}

/// What an error of the Redis client means for the link.
pub(super) fn failure_of(error: redis::RedisError) -> Failure {
    if error.is_timeout() {
        Failure::Stalled
    } else {
        Failure::Lost(error.to_string())
    }
}

/// The state of every shard (one Redis server each): the broker is up for
/// `/readyz` only while every shard is, as a group on a shard that is
/// down reaches this host's connections only.
pub(super) struct ShardStates {
    states: Mutex<Vec<Result<(), &'static str>>>,
}

impl ShardStates {
    /// `count` shards, none connected yet.
    pub(super) fn new(count: usize) -> Arc<ShardStates> {
        Arc::new(ShardStates {
            states: Mutex::new(vec![Err(LOST); count.max(1)]),
        })
    }

    /// Shard `index` is now in `state`; returns the state of all: the
    /// first shard's failure, if any.
    fn set(&self, index: usize, state: Result<(), &'static str>) -> Result<(), &'static str> {
        let mut states = lock(&self.states);
        if let Some(slot) = states.get_mut(index) {
            *slot = state;
        }
        states
            .iter()
            .copied()
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    }
}

/// The publishing connection of one link, and which link it belongs to.
#[derive(Clone)]
pub(super) struct Publishing {
    pub link: u64,
    pub connection: Connection,
}

/// A connection for commands: to one Redis server, or to a Redis Cluster,
/// which routes each command to the node of its key's slot (see
/// [`super::cluster`]).
#[derive(Clone)]
pub(super) enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl From<MultiplexedConnection> for Connection {
    fn from(connection: MultiplexedConnection) -> Connection {
        Connection::Server(connection)
    }
}

impl From<ClusterConnection> for Connection {
    fn from(connection: ClusterConnection) -> Connection {
        Connection::Cluster(connection)
    }
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The broker's state, shared by the link, the publisher and the layer.
pub(super) struct Health {
    monitor: Arc<Monitor>,
    /// Every shard's state, for `/readyz`, and this one's place in it.
    shards: Arc<ShardStates>,
    index: usize,
    /// Subscribed to every group with local members, and answering.
    up: AtomicBool,
    /// Numbers the links, so that a failure seen on an old one is ignored.
    link: AtomicU64,
    publishing: Mutex<Option<Publishing>>,
    /// A publish failed on the current link (the publisher tells the link).
    failure: Mutex<Option<Failure>>,
    failed: Notify,
    last_drop_warning: Mutex<Option<Instant>>,
}

impl Health {
    /// The health of the only Redis server.
    pub(super) fn new(monitor: Arc<Monitor>) -> Health {
        Health::shard(monitor, ShardStates::new(1), 0)
    }

    /// The health of shard `index` of `shards`.
    pub(super) fn shard(monitor: Arc<Monitor>, shards: Arc<ShardStates>, index: usize) -> Health {
        Health {
            monitor,
            shards,
            index,
            up: AtomicBool::new(false),
            link: AtomicU64::new(0),
            publishing: Mutex::new(None),
            failure: Mutex::new(None),
            failed: Notify::new(),
            last_drop_warning: Mutex::new(None),
        }
    }

    /// A new link is connected: messages can be published through it.
    pub(super) fn connected(&self, connection: impl Into<Connection>) {
        let link = self.link.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.failure) = None;
        *lock(&self.publishing) = Some(Publishing {
            link,
            connection: connection.into(),
        });
    }

    /// The link is subscribed to every group it needs: the broker is up.
    pub(super) fn up(&self) {
        self.up.store(true, Ordering::Relaxed);
        self.monitor.set_broker(self.shards.set(self.index, Ok(())));
    }

    /// The link ended: nothing is published until the next one.
    pub(super) fn down(&self, failure: &Failure) {
        self.up.store(false, Ordering::Relaxed);
        *lock(&self.publishing) = None;
        self.monitor
            .set_broker(self.shards.set(self.index, Err(failure.reason())));
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The connection to publish through, while there is a link.
    pub(super) fn publishing(&self) -> Option<Publishing> {
        lock(&self.publishing).clone()
    }

    pub(super) fn can_publish(&self) -> bool {
        lock(&self.publishing).is_some()
    }

    /// A publish through `link` failed: the link, if still current, ends.
    pub(super) fn publish_failed(&self, link: u64, failure: Failure) {
        if self.link.load(Ordering::Relaxed) == link {
            *lock(&self.failure) = Some(failure);
            self.failed.notify_one();
        }
    }

    /// Resolves when a publish on the current link has failed.
    pub(super) async fn publish_failure(&self) -> Failure {
        loop {
            self.failed.notified().await;
            // A wake-up left over from an older link carries no failure.
            if let Some(failure) = lock(&self.failure).take() {
                return failure;
            }
        }
    }

    /// `count` group messages did not go to the other hosts.
    pub(super) fn dropped(&self, count: usize, why: &str) {
        self.monitor.broker_dropped(count as u64);
        let mut last = lock(&self.last_drop_warning);
        if last.is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY) {
            *last = Some(Instant::now());
            warn!(
                count,
                why, "group messages not sent to other hosts (all are counted in rohrpost_broker_drops_total)"
            );
        }
    }
}

impl Health {
    /// Counts a message from Redis for a group name no rule allows.
    pub(super) fn invalid_group(&self) {
        self.monitor.broker_invalid();
    }

    /// A payload read from `source` (a channel or key) was too large or
    /// malformed, or a read left entries out: counted (each entry), and
    /// logged at most a few times per interval
    /// (whoever writes to Redis decides how often).
    pub(super) fn rejected(&self, source: &str, why: &super::format::Rejected) {
        let count = match why {
            super::format::Rejected::LeftOut(count) => *count,
            _ => 1,
        };
        self.monitor.broker_rejected(count);
        if crate::base::log_limit::REDIS_REJECTED.allow() {
            let source: String = source.chars().take(200).collect();
            warn!(%source, %why, "dropped a payload from Redis (counted in rohrpost_broker_rejected_total)");
        }
    }

    /// Counts an event from Redis that is not a rohrpost message.
    pub(super) fn foreign(&self) {
        self.monitor.broker_foreign();
    }
}
