//! The link to Redis: one subscribing connection and one publishing
//! connection, kept through outages.
//!
//! The link subscribes to the channel of every group with local members,
//! passes what arrives to the layer, and pings Redis every second. Any call
//! that errs or misses the deadline (see [`super::health`]), a publish that
//! fails, or the connection closing ends the link: the broker is reported
//! down, and the link reconnects with backoff (to the master the sentinels
//! name then, with Sentinel) and subscribes again to every group it needs
//! before it reports the broker up.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSub};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};
use tracing::{debug, info, warn};

use super::{
    format::{Format, Received},
    health::{deadline, Failure, Health},
    sentinel::Target,
    shards::shard_of,
};
use crate::groups::MemoryGroups;
use rohrpost_plugin_api::GroupNameRule;

/// Reconnection backoff: from the first to the last step, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How often the link asks Redis whether it still answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Channels per SUBSCRIBE when subscribing again to every group, so that
/// each call of a host with many groups stays well within the deadline.
const SUBSCRIBE_AT_ONCE: usize = 1000;

/// A change of subscriptions, for the link.
pub(super) enum Control {
    /// Subscribe; the sender is told once Redis confirmed it.
    Subscribe(String, Option<oneshot::Sender<()>>),
    Unsubscribe(String),
}

/// How one connection ended.
enum End {
    /// The layer is gone.
    Dropped,
    Failed(Failure),
}

/// Opens both connections, without a deadline of its own.
pub(super) async fn open(
    client: &redis::Client,
) -> redis::RedisResult<(PubSub, MultiplexedConnection)> {
    // Our deadline covers every call; the client's own timeouts stay out
    // of the way so that a stall is told apart from a failure.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let pubsub = client.get_async_pubsub().await?;
    let publisher = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((pubsub, publisher))
}

/// Keeps the link until the layer is dropped; `first` is the subscribing
/// connection opened at start (its publishing one is already in place).
pub(super) async fn run(
    target: Target,
    where_: String,
    layer: Arc<LayerState>,
    first: PubSub,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut pubsub = Some(first);
    let mut after_outage = false;
    let mut backoff = BACKOFF.0;
    loop {
        if let Some(connection) = pubsub.take() {
            match serve(&layer, connection, &mut control, after_outage).await {
                End::Dropped => return,
                End::Failed(failure) => {
                    layer.health.down(&failure);
                    warn!(redis = %where_, reason = %failure, "lost the connection to Redis; local delivery goes on, other hosts miss messages until it is back");
                    backoff = BACKOFF.0;
                    after_outage = true;
                }
            }
        }
        if !pause(backoff, &mut control).await {
            return;
        }
        let opened = match target.client().await {
            Ok(client) => deadline(open(&client)).await,
            Err(failure) => Err(failure),
        };
        match opened {
            Ok((subscribing, publishing)) => {
                layer.health.connected(publishing);
                pubsub = Some(subscribing);
            }
            Err(failure) => {
                layer.health.down(&failure);
                warn!(redis = %where_, reason = %failure, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis");
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Waits `period` between tries. Changes of subscriptions asked for in the
/// meantime are dropped: a new connection subscribes to every group that
/// has members by then. False when the layer is gone.
async fn pause(period: Duration, control: &mut mpsc::UnboundedReceiver<Control>) -> bool {
    let until = tokio::time::sleep(period);
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => return true,
            request = control.recv() => if request.is_none() {
                return false;
            },
        }
    }
}

/// Runs one connection until it fails or the layer is dropped.
async fn serve(
    layer: &LayerState,
    pubsub: PubSub,
    control: &mut mpsc::UnboundedReceiver<Control>,
    after_outage: bool,
) -> End {
    let (mut sink, mut stream) = pubsub.split();
    // Requests queued before now are covered by subscribing to every group
    // that has local members now.
    let mut waiting = Vec::new();
    while let Ok(request) = control.try_recv() {
        if let Control::Subscribe(_, Some(done)) = request {
            waiting.push(done);
        }
    }
    let channels = layer.channels();
    for some in channels.chunks(SUBSCRIBE_AT_ONCE) {
        if let Err(failure) = deadline(sink.subscribe(some)).await {
            return End::Failed(failure);
        }
    }
    for done in waiting {
        let _ = done.send(());
    }
    layer.health.up();
    if after_outage {
        info!(
            groups = channels.len(),
            "connected to Redis again; subscriptions restored"
        );
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            request = control.recv() => match request {
                None => return End::Dropped,
                Some(Control::Subscribe(channel, done)) => {
                    deadline(sink.subscribe(&channel)).await.map(|()| done)
                }
                Some(Control::Unsubscribe(channel)) => {
                    deadline(sink.unsubscribe(&channel)).await.map(|()| None)
                }
            },
            message = stream.next() => match message {
                Some(message) => {
                    layer.received(message.get_channel_name(), message.get_payload_bytes()).await;
                    Ok(None)
                }
                None => Err(Failure::Lost("the connection closed".to_owned())),
            },
            _ = ping.tick() => deadline(sink.ping::<redis::Value>()).await.map(|_| None),
            failure = layer.health.publish_failure() => Err(failure),
        };
        match step {
            Ok(Some(done)) => {
                let _ = done.send(());
            }
            Ok(None) => {}
            Err(failure) => return End::Failed(failure),
        }
    }
}

/// What the link needs of the layer.
pub(super) struct LayerState {
    /// This host's members of every group, on every shard.
    pub local: MemoryGroups,
    /// This layer's shard and how many there are: it subscribes to the
    /// groups of its shard only.
    pub shard: (usize, usize),
    /// What every group's channel name starts with (see [`Format`]).
    pub prefix: String,
    pub wire: Format,
    /// This host's id, in every message it publishes (see [`Format`]).
    pub origin: String,
    pub health: Arc<Health>,
}

impl LayerState {
    pub(super) fn channel(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// The channels of every group of this shard with local members.
    pub(super) fn channels(&self) -> Vec<String> {
        let (index, count) = self.shard;
        self.local
            .group_names()
            .iter()
            .map(|g| self.channel(g))
            .filter(|channel| shard_of(channel, count) == index)
            .collect()
    }

    /// A message from Redis: for local members, unless this host sent it.
    /// Waits only when the group's lane is full.
    pub(super) async fn received(&self, channel: &str, payload: &[u8]) {
        let Some(group) = channel.strip_prefix(&self.prefix) else {
            return;
        };
        // No local member can be in a group no rule allows.
        if GroupNameRule::Relaxed.check(group).is_err() {
            self.health.invalid_group();
            return;
        }
        match self.wire.decode(&self.origin, payload) {
            Received::Message(message) => {
                self.local.deliver(group, &message).await;
            }
            Received::Own => {}
            Received::Rejected(why) => self.health.rejected(channel, &why),
            Received::Foreign(kind) => {
                self.health.foreign();
                debug!(
                    group,
                    event_type = kind.as_deref().unwrap_or("(unreadable)"),
                    "skipped an event that is not a rohrpost message"
                );
            }
        }
    }
}
