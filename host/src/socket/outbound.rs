//! How group messages reach a connection: written straight to its socket
//! when its line is free ([`crate::socket::line`]), else through its outbound
//! queue, within limits: at most so many messages and so many bytes
//! waiting (a message counts until it is on the socket). A message that
//! finds the queue full is dropped (and counted), and the connection is
//! told to close with 1013 ([`Close::QUEUE_FULL`]): the client missed
//! messages and should reconnect and resubscribe. The groups hold the
//! sending end ([`Outbox`]); the connection's end ([`Outbound`]) is made on
//! its first join, so an idle connection that never joins costs only its
//! socket and its task.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::socket::{
    group_frames::GroupFrames,
    line::{Line, Wrote},
};
use rohrpost_protocol::Close;

/// Group messages written per flush.
pub(crate) const BATCH: usize = 64;

/// Queued when the fan-out wrote part of a frame: it carries no message,
/// it wakes the connection's task to write the rest (on its next flush).
/// Group messages are JSON objects, never empty.
pub(crate) const FINISH: Utf8Bytes = Utf8Bytes::from_static("");

/// How much a connection's outbound queue may hold: messages and bytes.
/// Either bound, when reached, closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    pub messages: usize,
    /// Bytes of the messages waiting. A message larger than this still gets
    /// through when nothing else waits.
    pub bytes: usize,
}

/// The sending end of a connection's outbound queue, and its line. Cheap
/// to clone: the fan-out takes a copy of every member's.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Sending>);

struct Sending {
    queue: mpsc::Sender<Utf8Bytes>,
    /// The connection's socket, for direct writes; none in unit tests.
    line: Option<Arc<Line>>,
    /// Bytes queued and not yet on the socket, shared with the receiving
    /// end.
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Counts messages dropped on a full queue (a metric).
    drops: Counter,
    /// Signalled when a message found the queue full: the connection then
    /// closes with 1013 ([`Close::QUEUE_FULL`]).
    overflow: Arc<Notify>,
}

/// The receiving end, owned by the connection's task.
pub(crate) struct Inbox {
    pub queue: QueueReceiver,
    pub overflow: Arc<Notify>,
}

/// The receiving end of the queue itself. A message's bytes stay counted
/// until [`written`](Self::written) says it is on the socket: while they
/// are, the fan-out queues behind it instead of overtaking it.
pub(crate) struct QueueReceiver {
    queue: mpsc::Receiver<Utf8Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next message; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Utf8Bytes> {
        self.queue.recv().await
    }

    /// The next message if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Result<Utf8Bytes, mpsc::error::TryRecvError> {
        self.queue.try_recv()
    }

    /// Messages of `bytes` in all, taken off the queue, are on the socket.
    pub(crate) fn written(&self, bytes: usize) {
        // Release: a fan-out that sees the count drop sees the write.
        self.bytes.fetch_sub(bytes, Ordering::Release);
    }
}

/// A connection's outbound queue within `limits`, writing straight to
/// `line` when it can; messages dropped on a full queue are counted in
/// `drops`.
pub(crate) fn outbound_queue(
    limits: QueueLimits,
    drops: Counter,
    line: Option<Arc<Line>>,
) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(limits.messages.max(1));
    let overflow = Arc::new(Notify::new());
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox(Arc::new(Sending {
            queue: tx,
            line,
            bytes: bytes.clone(),
            max_bytes: limits.bytes,
            drops,
            overflow: overflow.clone(),
        })),
        Inbox {
            queue: QueueReceiver { queue: rx, bytes },
            overflow,
        },
    )
}

impl Outbox {
    /// Delivers messages without waiting: `frames` (the messages encoded
    /// as text frames, one after another, compressed when the connection
    /// negotiated it) straight to
    /// the socket when the line is free and nothing waits in the queue,
    /// else each message into the queue. False when the connection is gone
    /// or closing, or its queue is full (then it is told to close).
    pub(crate) fn deliver(&self, messages: &[Utf8Bytes], frames: &GroupFrames) -> bool {
        let Some(line) = &self.0.line else {
            return self.offer_all(messages);
        };
        // Under the line's lock: the connection cannot start a write, and
        // a message queued now is queued before the next one looks.
        let mut locked = line.lock();
        if locked.closed() {
            return false;
        }
        if !locked.free() || self.0.bytes.load(Ordering::Acquire) > 0 {
            return self.offer_all(messages);
        }
        match locked.write(frames.for_member(line.deflate())) {
            Wrote::All => true,
            Wrote::Part => {
                self.offer(&FINISH);
                true
            }
            Wrote::Nothing => self.offer_all(messages),
            Wrote::Gone => false,
        }
    }

    fn offer_all(&self, messages: &[Utf8Bytes]) -> bool {
        messages.iter().all(|message| self.offer(message))
    }

    /// Queues a message without waiting. False when the connection is gone
    /// or its queue is full, by count or by bytes (then it is told to
    /// close).
    pub(crate) fn offer(&self, message: &Utf8Bytes) -> bool {
        let this = &self.0;
        let len = message.len();
        let before = this.bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > this.max_bytes {
            this.bytes.fetch_sub(len, Ordering::Relaxed);
            return self.full();
        }
        match this.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                this.bytes.fetch_sub(len, Ordering::Relaxed);
                self.full()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                this.bytes.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    fn full(&self) -> bool {
        self.0.drops.inc();
        self.0.overflow.notify_one();
        false
    }
}

/// Why a connection stops while writing: its socket failed, or it must
/// close (a handler asked, or its queue overflowed).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The socket failed.
    Gone,
    /// Close with this frame (a handler asked, or the queue overflowed).
    Close(Close),
}

/// The connection's end of its outbound queue; empty until the first join.
#[derive(Default)]
pub(crate) struct Outbound {
    /// Boxed: most connections never join, and this is part of each
    /// connection's task.
    queue: Option<Box<Queue>>,
}

struct Queue {
    outbox: Outbox,
    receiver: QueueReceiver,
    /// Resolves when the queue overflowed. Made once, with the queue, and
    /// polled in every round: a fresh wait per round would register and
    /// unregister a waiter for every frame.
    overflow: OverflowWait,
}

/// The wait for a queue overflow.
type OverflowWait = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Outbound {
    /// The two things a connection waits for besides its socket: the
    /// overflow of its queue, and the next queued message. Apart, so that
    /// the socket loop can give them different priorities; neither ever
    /// resolves without a queue.
    pub(crate) fn waits(
        &mut self,
    ) -> (
        impl Future<Output = ()> + Send + '_,
        impl Future<Output = Option<Utf8Bytes>> + Send + '_,
    ) {
        let (overflow, receiver) = match self.queue.as_deref_mut() {
            Some(queue) => (Some(&mut queue.overflow), Some(&mut queue.receiver)),
            None => (None, None),
        };
        (overflowed(overflow), next_queued(receiver))
    }

    /// Whether the queue has been made (the connection joined a group).
    pub(crate) fn exists(&self) -> bool {
        self.queue.is_some()
    }

    /// `first` and whatever else is queued, up to [`BATCH`] messages: what
    /// one flush writes.
    pub(crate) fn batch(&mut self, first: Utf8Bytes) -> Vec<Utf8Bytes> {
        let mut batch = vec![first];
        if let Some(queue) = self.queue.as_deref_mut() {
            while batch.len() < BATCH {
                match queue.receiver.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
        }
        batch
    }

    /// Runs `work` (a write to the socket) unless the queue overflows
    /// first; then the connection closes with [`Close::QUEUE_FULL`].
    pub(crate) async fn guard<T>(
        &mut self,
        work: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, Stop> {
        let (overflow, _) = self.waits();
        tokio::select! {
            done = work => done.map_err(|_| Stop::Gone),
            () = overflow => Err(Stop::Close(Close::QUEUE_FULL)),
        }
    }

    /// Messages of `bytes` in all, taken off the queue, are on the socket.
    pub(crate) fn written(&self, bytes: usize) {
        if let Some(queue) = self.queue.as_deref() {
            queue.receiver.written(bytes);
        }
    }

    fn line(&self) -> Option<&Line> {
        self.queue.as_deref()?.outbox.0.line.as_deref()
    }

    /// The connection starts answering a request: group messages queue
    /// until [`release`](Self::release), behind its replies.
    pub(crate) fn hold(&self) {
        if let Some(line) = self.line() {
            line.hold();
        }
    }

    /// The connection has answered its request and flushed the answer.
    pub(crate) fn release(&self) {
        if let Some(line) = self.line() {
            line.release();
        }
    }

    /// The connection closes: nothing more is written to it directly.
    pub(crate) fn close(&self) {
        if let Some(line) = self.line() {
            line.close();
        }
    }

    /// The sending end, made with the queue on first use (the first join),
    /// on the line `share` gives (see [`crate::socket::writer::Writer::share`]).
    pub(crate) fn outbox(
        &mut self,
        limits: QueueLimits,
        drops: &Counter,
        share: impl FnOnce() -> Option<Arc<Line>>,
    ) -> &Outbox {
        &self
            .queue
            .get_or_insert_with(|| {
                let (outbox, inbox) = outbound_queue(limits, drops.clone(), share());
                let overflow = inbox.overflow;
                Box::new(Queue {
                    outbox,
                    receiver: inbox.queue,
                    overflow: Box::pin(async move { overflow.notified().await }),
                })
            })
            .outbox
    }
}

async fn overflowed(overflow: Option<&mut OverflowWait>) {
    match overflow {
        Some(wait) => wait.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn next_queued(receiver: Option<&mut QueueReceiver>) -> Option<Utf8Bytes> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_signals_overflow() {
        let drops = Counter::default();
        let (outbox, inbox) = outbound_queue(
            QueueLimits {
                messages: 1,
                bytes: 1 << 20,
            },
            drops.clone(),
            None,
        );
        assert!(outbox.offer(&"1".into()));
        assert!(!outbox.offer(&"2".into()));
        assert_eq!(drops.get(), 1);
        let notified = inbox.overflow.notified();
        futures_util::pin_mut!(notified);
        // A stored permit completes the wait at once.
        assert!(futures_util::FutureExt::now_or_never(notified).is_some());
    }

    #[test]
    fn bytes_are_bounded_too_and_counted_off_when_written() {
        let drops = Counter::default();
        let limits = QueueLimits {
            messages: 100,
            bytes: 10,
        };
        let (outbox, mut inbox) = outbound_queue(limits, drops.clone(), None);
        // Larger than the bound, but alone: it gets through.
        assert!(outbox.offer(&"x".repeat(12).into()));
        assert!(!outbox.offer(&"y".into()));
        assert_eq!(drops.get(), 1);
        assert_eq!(inbox.queue.try_recv().ok().map(|m| m.len()), Some(12));
        // Taken off the queue, but not on the socket yet: still counted.
        assert!(!outbox.offer(&"y".into()));
        inbox.queue.written(12);
        assert!(outbox.offer(&"abcde".into()));
        assert!(outbox.offer(&"fghij".into()));
        assert!(!outbox.offer(&"k".into()));
        assert_eq!(inbox.queue.try_recv().ok().as_deref(), Some("abcde"));
        inbox.queue.written(5);
        assert!(outbox.offer(&"k".into()));
        assert_eq!(outbox.0.bytes.load(Ordering::Relaxed), 6);
    }
}
