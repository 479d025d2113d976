//! One WebSocket connection: read a frame, answer it, repeat; and deliver
//! what its groups send it.
//!
//! Requests of a connection are handled one after another, so replies leave
//! in request order; a slow handler holds up only its own connection, and
//! group messages keep flowing while it runs. The outbound queue for group
//! messages is created when the connection first joins a group, so an idle
//! connection that never joins costs only its socket and this task.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::{
    tungstenite::{
        self,
        error::ProtocolError,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message, Utf8Bytes,
    },
    WebSocketStream,
};
use tracing::{debug, warn};

use crate::{
    dispatch::{Action, Dispatcher},
    groups::{outbound_queue, ConnectionId, GroupLayer, Outbox, QueueLimits, QueueReceiver},
    linger,
    monitor::Monitor,
    protocol::Rejection,
    shutdown::Stopping,
};

/// Close code for a connection whose outbound queue overflowed: 1013, "try
/// again later". The client missed messages and should reconnect and
/// resubscribe.
pub const QUEUE_FULL_CODE: u16 = 1013;
const QUEUE_FULL_REASON: &str = "Outbound queue full: the client reads too slowly.";

const SHUTDOWN_REASON: &str = "Server shutting down.";
const IDLE_REASON: &str = "Idle timeout.";

/// How long a closing connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Close codes of RFC 6455 that the server sends.
const NORMAL: u16 = 1000;
const AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// Group messages written per flush.
const BATCH: usize = 64;

/// What every connection shares.
pub struct Shared {
    pub dispatcher: Dispatcher,
    pub groups: Arc<dyn GroupLayer>,
    /// Group messages and bytes a connection may have waiting before it is
    /// closed.
    pub outbound_queue: QueueLimits,
    /// No frame from the client for this long closes the connection
    /// (zero: never); a ping goes out at half of it.
    pub idle_timeout: Duration,
    pub monitor: Arc<Monitor>,
}

/// An upgraded connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How a connection ended.
enum End {
    /// The client went away, or the socket failed.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client broke the protocol or the size limit: what it sends next
    /// cannot be read as frames. Send this close frame, then linger.
    Broken(u16, &'static str),
}

/// The connection's own state.
struct Conn {
    socket: Socket,
    id: ConnectionId,
    scope: Arc<str>,
    /// Created on the first join, with the two fields below.
    outbox: Option<Outbox>,
    queue: Option<QueueReceiver>,
    /// Resolves when the queue overflowed. Made once, with the queue, and
    /// polled in every round: a fresh wait per round would register and
    /// unregister a waiter for every frame.
    overflow: Option<OverflowWait>,
}

/// Leaves every group and counts the connection as closed when it ends,
/// however it ends.
struct Membership {
    groups: Arc<dyn GroupLayer>,
    monitor: Arc<Monitor>,
    id: ConnectionId,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.groups.leave_all(self.id);
        self.monitor.connection(-1);
    }
}

/// Serves one upgraded connection until it closes.
pub async fn serve(
    socket: Socket,
    shared: Arc<Shared>,
    scope: Arc<str>,
    id: ConnectionId,
    mut stopping: Stopping,
) {
    shared.monitor.connection(1);
    let _membership = Membership {
        groups: shared.groups.clone(),
        monitor: shared.monitor.clone(),
        id,
    };
    let mut conn = Conn {
        socket,
        id,
        scope,
        outbox: None,
        queue: None,
        overflow: None,
    };
    match run(&mut conn, &shared, &mut stopping).await {
        End::Gone => debug!(connection = id, "connection closed"),
        End::Close(code, reason) => {
            if code == QUEUE_FULL_CODE && crate::log_limit::QUEUE_FULL.allow() {
                warn!(
                    connection = id,
                    "closing a connection whose outbound queue is full"
                );
            }
            close(conn.socket, code, reason).await;
        }
        End::Broken(code, reason) => {
            debug!(
                connection = id,
                code, reason, "closing a connection that broke the protocol"
            );
            close_broken(conn.socket, code, reason).await;
        }
    }
}

async fn run(conn: &mut Conn, shared: &Shared, stopping: &mut Stopping) -> End {
    let mut idle = Idle::new(shared.idle_timeout);
    let stopped = stopping.stopped();
    tokio::pin!(stopped);
    loop {
        let received = tokio::select! {
            biased;
            () = overflowed(&mut conn.overflow) => return End::Close(QUEUE_FULL_CODE, QUEUE_FULL_REASON),
            () = &mut stopped => return End::Close(AWAY, SHUTDOWN_REASON),
            ping = idle.expired() => {
                if !ping {
                    debug!(connection = conn.id, "idle timeout");
                    return End::Close(AWAY, IDLE_REASON);
                }
                if conn.socket.send(Message::Ping(Default::default())).await.is_err() {
                    return End::Gone;
                }
                continue;
            }
            Some(queued) = next_queued(&mut conn.queue) => {
                if let Err(end) = write_queued(&mut conn.socket, &mut conn.queue, &mut conn.overflow, queued).await {
                    return end;
                }
                continue;
            }
            received = conn.socket.next() => received,
        };
        let message = match received {
            None => return End::Gone,
            Some(Ok(message)) => {
                idle.heard();
                message
            }
            Some(Err(error)) => return read_failure(&error),
        };
        let actions = match message {
            Message::Text(text) => {
                let handling = shared.dispatcher.handle_text(text, &conn.scope);
                tokio::pin!(handling);
                // Group messages keep flowing while a handler runs.
                loop {
                    tokio::select! {
                        biased;
                        actions = &mut handling => break actions,
                        () = overflowed(&mut conn.overflow) => return End::Close(QUEUE_FULL_CODE, QUEUE_FULL_REASON),
                        Some(queued) = next_queued(&mut conn.queue) => {
                            if let Err(end) = write_queued(&mut conn.socket, &mut conn.queue, &mut conn.overflow, queued).await {
                                return end;
                            }
                        }
                    }
                }
            }
            Message::Binary(_) => vec![Action::Text(Rejection::Binary.reply())],
            // Pings are answered by the WebSocket layer itself; a client's
            // close is echoed by it on the next flush.
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => {
                let _ = conn.socket.flush().await;
                continue;
            }
            Message::Frame(_) => continue,
        };
        if let Err(end) = apply(conn, shared, actions).await {
            return end;
        }
    }
}

/// Carries out a handler's actions in order, then flushes.
async fn apply(conn: &mut Conn, shared: &Shared, actions: Vec<Action>) -> Result<(), End> {
    for action in actions {
        match action {
            Action::Text(text) => {
                let fed = tokio::select! {
                    fed = conn.socket.feed(Message::Text(text.into())) => fed,
                    () = overflowed(&mut conn.overflow) => return Err(End::Close(QUEUE_FULL_CODE, QUEUE_FULL_REASON)),
                };
                fed.map_err(|_| End::Gone)?;
            }
            Action::Close => {
                let _ = conn.socket.flush().await;
                return Err(End::Close(NORMAL, ""));
            }
            Action::Join(group) => {
                let outbox = conn.outbox.get_or_insert_with(|| {
                    let (outbox, inbox) = outbound_queue(
                        shared.outbound_queue,
                        shared.monitor.metrics.queue_drops.clone(),
                    );
                    conn.queue = Some(inbox.queue);
                    let overflow = inbox.overflow;
                    conn.overflow = Some(Box::pin(async move { overflow.notified().await }));
                    outbox
                });
                shared.groups.join(&group, conn.id, outbox).await;
            }
            Action::Leave(group) => shared.groups.leave(&group, conn.id),
            Action::GroupSend { group, message } => {
                shared.groups.send(&group, message.into()).await;
            }
        }
    }
    let flushed = tokio::select! {
        flushed = conn.socket.flush() => flushed,
        () = overflowed(&mut conn.overflow) => return Err(End::Close(QUEUE_FULL_CODE, QUEUE_FULL_REASON)),
    };
    flushed.map_err(|_| End::Gone)
}

/// The idle timer: after half the timeout without a frame from the client,
/// a ping (a live client answers with a pong, which counts); after the
/// whole timeout, the end.
struct Idle {
    timeout: Duration,
    last_heard: Instant,
    pinged: bool,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Idle {
            timeout,
            last_heard: now,
            pinged: false,
            timer: Box::pin(tokio::time::sleep_until(now + timeout / 2)),
        }
    }

    /// A frame arrived.
    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged = false;
    }

    /// Resolves with `true` when it is time to ping, `false` when the
    /// connection has been idle for the whole timeout. Never with a zero
    /// timeout. The timer is re-armed only when it fires, not per frame.
    async fn expired(&mut self) -> bool {
        if self.timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            self.timer.as_mut().await;
            let due = self.last_heard
                + if self.pinged {
                    self.timeout
                } else {
                    self.timeout / 2
                };
            if Instant::now() < due {
                self.timer.as_mut().reset(due);
                continue;
            }
            if self.pinged {
                return false;
            }
            self.pinged = true;
            self.timer.as_mut().reset(self.last_heard + self.timeout);
            return true;
        }
    }
}

/// The wait for a queue overflow.
type OverflowWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves when the connection's queue has overflowed; never without one.
async fn overflowed(overflow: &mut Option<OverflowWait>) {
    match overflow {
        Some(wait) => wait.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next queued group message; never without a queue.
async fn next_queued(queue: &mut Option<QueueReceiver>) -> Option<Utf8Bytes> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then
/// flushes; gives up when the queue overflows meanwhile.
async fn write_queued(
    socket: &mut Socket,
    queue: &mut Option<QueueReceiver>,
    overflow: &mut Option<OverflowWait>,
    first: Utf8Bytes,
) -> Result<(), End> {
    let mut batch = vec![first];
    if let Some(queue) = queue.as_mut() {
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
    }
    let write = async {
        for message in batch {
            socket.feed(Message::Text(message)).await?;
        }
        socket.flush().await
    };
    tokio::select! {
        written = write => written.map_err(|_| End::Gone),
        () = overflowed(overflow) => Err(End::Close(QUEUE_FULL_CODE, QUEUE_FULL_REASON)),
    }
}

/// Starts the closing handshake and waits briefly for the client's answer,
/// so that the close frame is read rather than lost to a reset.
async fn close(mut socket: Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}

/// Sends the close frame to a client whose next bytes cannot be read as
/// frames, then lingers so that the frame is read rather than destroyed by
/// the reset that unread bytes would cause.
async fn close_broken(mut socket: Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let sent = tokio::time::timeout(linger::QUIET, socket.send(Message::Close(Some(frame)))).await;
    if matches!(sent, Ok(Ok(()))) {
        linger::drain(socket.get_mut()).await;
    }
}

/// How a failed read ends the connection: a violation of RFC 6455 gets the
/// close code it calls for (section 7.4.1), anything else is a socket gone.
fn read_failure(error: &tungstenite::Error) -> End {
    use tungstenite::Error;
    match error {
        Error::Capacity(_) => End::Broken(TOO_BIG, "Message too big."),
        Error::Utf8(_) => End::Broken(INVALID_DATA, "Invalid UTF-8 in a text message."),
        Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        ) => End::Gone,
        Error::Protocol(_) => End::Broken(PROTOCOL_ERROR, "Protocol error."),
        _ => End::Gone,
    }
}
