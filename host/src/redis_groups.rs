//! Groups across several hosts, over Redis pub/sub (what `channels_redis`
//! does for Django Channels). No clustering of our own: Redis carries each
//! group message to every host that has members of the group, and each host
//! fans it out to its own connections.
//!
//! - Membership stays local ([`MemoryGroups`]). A host subscribes to a
//!   group's channel when the group gets its first local member, and
//!   unsubscribes when the last one leaves.
//! - Sending delivers to local members at once, then publishes for the other
//!   hosts; every message carries its origin, so a host skips its own
//!   messages when Redis hands them back. Each member gets a message once.
//! - Delivery is at most once, as in Channels: while Redis is unreachable,
//!   local delivery goes on, messages for other hosts are dropped (and
//!   counted), the host reconnects with backoff, subscribes again to every
//!   group it needs, and reports the outage in `/readyz` and the metrics.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use rohrpost_plugin_api::GroupNameRule;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    groups::{ConnectionId, GroupFuture, GroupLayer, MemoryGroups, Outbox},
    monitor::Monitor,
};

/// How long a join waits for Redis to confirm the subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// How long a publish may take before the message counts as lost.
const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// Reconnection backoff: from the first to the last step, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// A change of subscriptions for the connection task.
enum Control {
    Subscribe(String, Option<oneshot::Sender<()>>),
    Unsubscribe(String),
}

/// The Redis-backed group layer.
pub struct RedisGroups {
    local: Arc<MemoryGroups>,
    /// Channel names are `<prefix>group:<name>`.
    prefix: String,
    /// This host's id, the first line of every message it publishes.
    origin: String,
    control: mpsc::UnboundedSender<Control>,
    /// The connection for PUBLISH, while Redis is reachable.
    publisher: Arc<Mutex<Option<MultiplexedConnection>>>,
    monitor: Arc<Monitor>,
}

impl RedisGroups {
    /// Connects to Redis (an error if it cannot be reached now) and starts
    /// the task that keeps the subscriptions.
    pub async fn connect(
        url: &str,
        prefix: &str,
        monitor: Arc<Monitor>,
    ) -> anyhow::Result<Arc<RedisGroups>> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("invalid Redis URL for groups: {e}"))?;
        let where_ = redacted(url);
        let (pubsub, publisher) = tokio::time::timeout(Duration::from_secs(5), open(&client))
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach Redis at {where_}: timed out"))?
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {where_}: {e}"))?;
        info!(redis = %where_, "groups go through Redis");
        monitor.set_broker(Some(true));
        let (control, control_rx) = mpsc::unbounded_channel();
        let groups = Arc::new(RedisGroups {
            local: Arc::new(MemoryGroups::default()),
            prefix: format!("{prefix}group:"),
            origin: format!("{:016x}", rand::random::<u64>()),
            control,
            publisher: Arc::new(Mutex::new(Some(publisher))),
            monitor,
        });
        tokio::spawn(keep_subscribed(
            client,
            where_,
            groups.clone(),
            Some(pubsub),
            control_rx,
        ));
        Ok(groups)
    }

    fn channel(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    fn publisher(&self) -> Option<MultiplexedConnection> {
        lock(&self.publisher).clone()
    }

    /// A message from Redis: for local members, unless this host sent it.
    fn received(&self, channel: &str, payload: &str) {
        let Some(group) = channel.strip_prefix(&self.prefix) else {
            return;
        };
        // No local member can be in a group no rule allows.
        if GroupNameRule::Relaxed.check(group).is_err() {
            self.monitor.metrics.broker_invalid.inc();
            return;
        }
        let Some((origin, message)) = payload.split_once('\n') else {
            return;
        };
        if origin != self.origin {
            self.local.deliver(group, &Utf8Bytes::from(message));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The URL without a password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn open(
    client: &redis::Client,
) -> redis::RedisResult<(redis::aio::PubSub, MultiplexedConnection)> {
    let pubsub = client.get_async_pubsub().await?;
    let publisher = client.get_multiplexed_async_connection().await?;
    Ok((pubsub, publisher))
}

impl GroupLayer for RedisGroups {
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: ConnectionId,
        outbox: &'a Outbox,
    ) -> GroupFuture<'a, ()> {
        Box::pin(async move {
            if !self.local.add(group, connection, outbox) {
                return;
            }
            let (done, subscribed) = oneshot::channel();
            let connected = self.publisher().is_some();
            let queued = self
                .control
                .send(Control::Subscribe(self.channel(group), Some(done)))
                .is_ok();
            // While Redis is down the join is local only, at once; the
            // subscription follows on reconnection.
            if queued && connected {
                let _ = tokio::time::timeout(SUBSCRIBE_WAIT, subscribed).await;
            }
        })
    }

    fn leave(&self, group: &str, connection: ConnectionId) {
        if self.local.remove(group, connection) {
            let _ = self.control.send(Control::Unsubscribe(self.channel(group)));
        }
    }

    fn leave_all(&self, connection: ConnectionId) {
        for group in self.local.remove_everywhere(connection) {
            let _ = self
                .control
                .send(Control::Unsubscribe(self.channel(&group)));
        }
    }

    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize> {
        Box::pin(async move {
            let reached = self.local.deliver(group, &message);
            let payload = format!("{}\n{}", self.origin, message.as_str());
            let published = match self.publisher() {
                Some(mut publisher) => tokio::time::timeout(
                    PUBLISH_WAIT,
                    redis::cmd("PUBLISH")
                        .arg(self.channel(group))
                        .arg(payload)
                        .query_async::<i64>(&mut publisher),
                )
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string())),
                None => Err("Redis is unreachable".to_owned()),
            };
            if let Err(error) = published {
                self.monitor.metrics.broker_drops.inc();
                warn!(%group, %error, "group message not sent to other hosts");
            }
            reached
        })
    }
}

/// Keeps this host subscribed to the channel of every group with local
/// members, through outages: reconnects with backoff and subscribes again.
async fn keep_subscribed(
    client: redis::Client,
    where_: String,
    groups: Arc<RedisGroups>,
    mut first: Option<redis::aio::PubSub>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut backoff = BACKOFF.0;
    loop {
        let opened = match first.take() {
            Some(pubsub) => Ok((pubsub, None)),
            None => open(&client).await.map(|(p, c)| (p, Some(c))),
        };
        match opened {
            Ok((pubsub, publisher)) => {
                let outage = publisher.is_some();
                if let Some(publisher) = publisher {
                    *lock(&groups.publisher) = Some(publisher);
                }
                if !serve(&groups, pubsub, &mut control, outage).await {
                    return; // The layer is gone.
                }
                *lock(&groups.publisher) = None;
                groups.monitor.set_broker(Some(false));
                warn!(redis = %where_, "lost the connection to Redis; local delivery goes on, other hosts miss messages until it is back");
                backoff = BACKOFF.0;
            }
            Err(error) => {
                warn!(redis = %where_, %error, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Runs one Redis connection until it fails (true: reconnect) or the layer
/// is dropped (false).
async fn serve(
    groups: &RedisGroups,
    pubsub: redis::aio::PubSub,
    control: &mut mpsc::UnboundedReceiver<Control>,
    after_outage: bool,
) -> bool {
    let (mut sink, mut stream) = pubsub.split();
    // Requests queued while disconnected are covered by subscribing to
    // every group that has local members now.
    let mut waiting = Vec::new();
    while let Ok(request) = control.try_recv() {
        if let Control::Subscribe(_, Some(done)) = request {
            waiting.push(done);
        }
    }
    let channels: HashSet<String> = groups
        .local
        .group_names()
        .iter()
        .map(|g| groups.channel(g))
        .collect();
    if !channels.is_empty() {
        let channels: Vec<&String> = channels.iter().collect();
        if sink.subscribe(channels).await.is_err() {
            return true;
        }
    }
    for done in waiting {
        let _ = done.send(());
    }
    groups.monitor.set_broker(Some(true));
    if after_outage {
        info!(
            groups = channels.len(),
            "connected to Redis again; subscriptions restored"
        );
    }
    loop {
        tokio::select! {
            request = control.recv() => match request {
                None => return false,
                Some(Control::Subscribe(channel, done)) => {
                    if sink.subscribe(&channel).await.is_err() {
                        return true;
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Some(Control::Unsubscribe(channel)) => {
                    if sink.unsubscribe(&channel).await.is_err() {
                        return true;
                    }
                }
            },
            message = stream.next() => match message {
                Some(message) => {
                    if let Ok(payload) = message.get_payload::<String>() {
                        groups.received(message.get_channel_name(), &payload);
                    }
                }
                None => return true,
            },
        }
    }
}
