//! Publishing group messages for the other hosts, off the request path.
//!
//! A group send only queues its message here (never waiting), so a slow or
//! stalled Redis cannot delay a handler's reply or `POST /api/notify`. One
//! task publishes what is queued, in pipelined batches (one round trip for
//! many messages, in order), each under the broker deadline. The queue is
//! bounded in messages and bytes; a message that finds it full, or the
//! broker down, or whose batch fails, is lost for the other hosts and
//! counted in `rohrpost_broker_drops_total` (delivery between hosts is at
//! most once, as in Channels). A failed batch also ends the link, which
//! reconnects.
//!
//! Over pub/sub a message is one `PUBLISH`; over a Redis Cluster one
//! `SPUBLISH` to the node of its channel's slot, all of a batch at once;
//! over the core layer it is a `group_send` to the group's channels
//! ([`super::core`]).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::mpsc;

use super::{
    core::Core,
    health::{deadline, Health, Publishing},
};

/// Most messages waiting to be published.
const QUEUE_MESSAGES: usize = 4096;
/// Most bytes (channel names and payloads) waiting to be published.
const QUEUE_BYTES: usize = 16 << 20;
/// Most messages in one pipelined batch, and about the most bytes (a
/// batch holds at least one message): small enough to go out well within
/// the deadline on a slow network.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// Where messages go.
pub(super) enum Sink {
    /// `channel` is a pub/sub channel, `payload` what is published.
    PubSub,
    /// `channel` is a sharded pub/sub channel of a Redis Cluster
    /// ([`super::cluster`]), `payload` what is published.
    Sharded,
    /// `channel` is a group's name, `payload` the message's text.
    Core(Arc<Core>),
}

/// One message for the other hosts.
struct Outgoing {
    channel: String,
    payload: Vec<u8>,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.channel.len() + self.payload.len()
    }
}

/// The sending side: what a group send calls.
pub(super) struct Publisher {
    queue: mpsc::Sender<Outgoing>,
    bytes: Arc<AtomicUsize>,
    health: Arc<Health>,
}

impl Publisher {
    /// Starts the publishing task.
    pub(super) fn start(health: Arc<Health>, sink: Sink) -> Publisher {
        let (queue, waiting) = mpsc::channel(QUEUE_MESSAGES);
        let bytes = Arc::new(AtomicUsize::new(0));
        tokio::spawn(publish(waiting, bytes.clone(), health.clone(), sink));
        Publisher {
            queue,
            bytes,
            health,
        }
    }

    /// Queues a message for `channel` without waiting; when it cannot be
    /// queued it is counted as lost.
    pub(super) fn offer(&self, channel: String, payload: Vec<u8>) {
        if !self.health.can_publish() {
            self.health.dropped(1, "Redis is down");
            return;
        }
        let message = Outgoing { channel, payload };
        let size = message.size();
        // One message bigger than the bound still goes when nothing waits.
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        if before > 0 && before + size > QUEUE_BYTES {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.health.dropped(1, "the publishing queue is full");
            return;
        }
        if self.queue.try_send(message).is_err() {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.health.dropped(1, "the publishing queue is full");
        }
    }
}

/// Publishes queued messages until the layer is dropped.
async fn publish(
    mut waiting: mpsc::Receiver<Outgoing>,
    bytes: Arc<AtomicUsize>,
    health: Arc<Health>,
    sink: Sink,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = waiting.recv().await {
        let mut size = first.size();
        batch.push(first);
        while batch.len() < BATCH && size < BATCH_BYTES {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            size += next.size();
            batch.push(next);
        }
        bytes.fetch_sub(size, Ordering::Relaxed);
        match (health.publishing(), &sink) {
            (None, _) => health.dropped(batch.len(), "Redis is down"),
            (Some(mut publishing), Sink::PubSub) => {
                let mut pipe = redis::pipe();
                for message in &batch {
                    pipe.cmd("PUBLISH")
                        .arg(&message.channel)
                        .arg(&message.payload)
                        .ignore();
                }
                if let Err(failure) =
                    deadline(pipe.query_async::<()>(&mut publishing.connection)).await
                {
                    health.dropped(batch.len(), "publishing failed");
                    health.publish_failed(publishing.link, failure);
                }
            }
            (Some(publishing), Sink::Sharded) => {
                publish_sharded(&health, &publishing, &batch).await;
            }
            (Some(mut publishing), Sink::Core(core)) => {
                send_to_channels(core, &health, &mut publishing, &batch).await;
            }
        }
        batch.clear();
    }
}

/// Group sends over the core layer, one after another; the first that
/// fails loses the rest of the batch and ends the link.
async fn send_to_channels(
    core: &Core,
    health: &Health,
    publishing: &mut super::health::Publishing,
    batch: &[Outgoing],
) {
    for (sent, message) in batch.iter().enumerate() {
        let text = String::from_utf8_lossy(&message.payload);
        match deadline(core.group_send(&mut publishing.connection, &message.channel, &text)).await {
            Ok(0) => {}
            Ok(full) => health.dropped(full, "Django channels over capacity"),
            Err(failure) => {
                health.dropped(batch.len() - sent, "publishing failed");
                health.publish_failed(publishing.link, failure);
                return;
            }
        }
    }
}

/// `SPUBLISH`es a batch over a Redis Cluster: each message to the node of
/// its channel's slot (a pipeline cannot span slots), all at once on the
/// multiplexed connections. Messages whose node fails or does not answer
/// in time are lost and counted; the others go out. A failure tells the
/// link, which checks every node at once.
async fn publish_sharded(health: &Health, publishing: &Publishing, batch: &[Outgoing]) {
    let sends = batch.iter().map(|message| {
        let mut connection = publishing.connection.clone();
        async move {
            deadline(
                redis::cmd("SPUBLISH")
                    .arg(&message.channel)
                    .arg(&message.payload)
                    .query_async::<()>(&mut connection),
            )
            .await
        }
    });
    let mut lost = 0;
    let mut first_failure = None;
    for result in futures_util::future::join_all(sends).await {
        if let Err(failure) = result {
            lost += 1;
            first_failure.get_or_insert(failure);
        }
    }
    if let Some(failure) = first_failure {
        health.dropped(lost, "publishing failed");
        health.publish_failed(publishing.link, failure);
    }
}
