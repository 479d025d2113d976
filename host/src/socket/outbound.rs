//! How group messages reach a connection: written straight to its socket
//! when its line is free ([`crate::socket::line`]), else through its outbound
//! queue, within limits: at most so many messages and so many bytes
//! waiting (a message counts until it is on the socket). A message that
//! finds the queue full is dropped (and counted), and the connection is
//! told to close with 1013 ([`Close::QUEUE_FULL`]): the client missed
//! messages and should reconnect and resubscribe. The groups hold the
//! sending end ([`Outbox`]); the connection's end ([`Outbound`]) is made on
//! its first join, so an idle connection that never joins costs only its
//! socket and its task. What waits in the queue is the fan-out's own
//! frames ([`Queued`]): a message compressed for the group is written as
//! it was compressed, never compressed again by the member.

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

use crate::socket::{
    deflate::Deflate,
    group_frames::GroupFrames,
    line::{Line, Wrote},
};
use rohrpost_protocol::Close;

/// Group messages written per flush.
pub(crate) const BATCH: usize = 64;

/// A group message waiting for a connection: its batch's frames, shared
/// with every other member, and its place in the batch.
pub(crate) enum Queued {
    /// Queued when the fan-out wrote part of a frame: it carries no
    /// message, it wakes the connection's task to write the rest (on its
    /// next flush).
    Finish,
    Message {
        frames: Arc<GroupFrames>,
        index: usize,
    },
}

impl Queued {
    /// The bytes it counts against the queue's limit: the message's.
    pub(crate) fn len(&self) -> usize {
        self.text().len()
    }

    /// The message, as text (empty for [`Queued::Finish`]).
    pub(crate) fn text(&self) -> &str {
        match self {
            Queued::Finish => "",
            Queued::Message { frames, index } => frames.message(*index),
        }
    }

    /// Its frame for a connection that negotiated `deflate`, as the
    /// fan-out made it (empty for [`Queued::Finish`]).
    pub(crate) fn frame(&self, deflate: Option<Deflate>) -> &[u8] {
        match self {
            Queued::Finish => &[],
            Queued::Message { frames, index } => frames.frame_for_member(*index, deflate),
        }
    }
}

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
    queue: mpsc::Sender<Queued>,
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
    queue: mpsc::Receiver<Queued>,
    bytes: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next message; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        self.queue.recv().await
    }

    /// The next message if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Result<Queued, mpsc::error::TryRecvError> {
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
    /// Delivers a batch of messages without waiting: their frames
    /// (compressed when the connection negotiated it) straight to the
    /// socket when the line is free and nothing waits in the queue, else
    /// each message into the queue, as the same shared frames. False when
    /// the connection is gone or closing, or its queue is full (then it is
    /// told to close).
    pub(crate) fn deliver(&self, frames: &Arc<GroupFrames>) -> bool {
        let Some(line) = &self.0.line else {
            return self.offer_all(frames);
        };
        // Under the line's lock: the connection cannot start a write, and
        // a message queued now is queued before the next one looks.
        let mut locked = line.lock();
        if locked.closed() {
            return false;
        }
        if !locked.free() || self.0.bytes.load(Ordering::Acquire) > 0 {
            return self.offer_all(frames);
        }
        match locked.write(frames.for_member(line.deflate())) {
            Wrote::All => true,
            Wrote::Part => {
                self.offer(Queued::Finish);
                true
            }
            Wrote::Nothing => self.offer_all(frames),
            Wrote::Gone => false,
        }
    }

    fn offer_all(&self, frames: &Arc<GroupFrames>) -> bool {
        (0..frames.len()).all(|index| {
            self.offer(Queued::Message {
                frames: frames.clone(),
                index,
            })
        })
    }

    /// Queues a message without waiting. False when the connection is gone
    /// or its queue is full, by count or by bytes (then it is told to
    /// close).
    pub(crate) fn offer(&self, message: Queued) -> bool {
        let this = &self.0;
        let len = message.len();
        let before = this.bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > this.max_bytes {
            this.bytes.fetch_sub(len, Ordering::Relaxed);
            return self.full();
        }
        match this.queue.try_send(message) {
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
        impl Future<Output = Option<Queued>> + Send + '_,
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
    pub(crate) fn batch(&mut self, first: Queued) -> Vec<Queued> {
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

async fn next_queued(receiver: Option<&mut QueueReceiver>) -> Option<Queued> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    /// One message, queued on its own.
    fn queued(text: &str) -> Queued {
        Queued::Message {
            frames: Arc::new(GroupFrames::new(&[text.to_owned().into()])),
            index: 0,
        }
    }

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
        assert!(outbox.offer(queued("1")));
        assert!(!outbox.offer(queued("2")));
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
        assert!(outbox.offer(queued(&"x".repeat(12))));
        assert!(!outbox.offer(queued("y")));
        assert_eq!(drops.get(), 1);
        assert_eq!(inbox.queue.try_recv().ok().map(|m| m.len()), Some(12));
        // Taken off the queue, but not on the socket yet: still counted.
        assert!(!outbox.offer(queued("y")));
        inbox.queue.written(12);
        assert!(outbox.offer(queued("abcde")));
        assert!(outbox.offer(queued("fghij")));
        assert!(!outbox.offer(queued("k")));
        assert_eq!(
            inbox
                .queue
                .try_recv()
                .ok()
                .map(|m| m.text().to_owned())
                .as_deref(),
            Some("abcde")
        );
        inbox.queue.written(5);
        assert!(outbox.offer(queued("k")));
        assert_eq!(outbox.0.bytes.load(Ordering::Relaxed), 6);
    }

    /// Members whose line is busy queue the batch's frames themselves: a
    /// message compressed for one is the same bytes for all, compressed
    /// once, and the queue's item is no larger than a message's text.
    #[test]
    fn busy_members_queue_the_shared_compressed_frames() {
        let deflate = Some(Deflate {
            threshold: 100,
            window_bits: 15,
            level: 6,
        });
        let limits = QueueLimits {
            messages: 8,
            bytes: 1 << 20,
        };
        let big = format!("{{\"x\":\"{}\"}}", "ab".repeat(500));
        let frames = Arc::new(GroupFrames::new(&["{}".into(), big.clone().into()]));
        let (one, mut first) = outbound_queue(limits, Counter::default(), None);
        let (two, mut second) = outbound_queue(limits, Counter::default(), None);
        assert!(one.deliver(&frames) && two.deliver(&frames));
        assert_eq!(one.0.bytes.load(Ordering::Relaxed), 2 + big.len());
        let mut written = Vec::new();
        for inbox in [&mut first, &mut second] {
            let small = inbox.queue.try_recv().expect("the first message");
            let large = inbox.queue.try_recv().expect("the second message");
            assert!(inbox.queue.try_recv().is_err());
            assert_eq!((small.text(), large.text()), ("{}", big.as_str()));
            assert_eq!(small.frame(deflate), b"\x81\x02{}");
            written.push(large.frame(deflate).as_ptr());
            assert_eq!(
                large.frame(deflate)[0],
                0x80 | crate::socket::frame::RSV1 | 0x1
            );
        }
        assert_eq!(written[0], written[1], "one compressed frame for both");
        assert_eq!(
            written[0],
            frames.frame_for_member(1, deflate).as_ptr(),
            "the fan-out's own"
        );
        assert!(std::mem::size_of::<Queued>() <= std::mem::size_of::<Utf8Bytes>());
        assert!(Queued::Finish.frame(deflate).is_empty() && Queued::Finish.len() == 0);
    }
}
