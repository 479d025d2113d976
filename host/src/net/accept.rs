//! The listener: accepts TCP connections and serves HTTP on each until it
//! becomes a WebSocket, with every phase before the upgrade bounded.
//!
//! This is `axum::serve` with the limits a public server needs, which that
//! function does not expose: a deadline for the request (headers, and the
//! body for the HTTP endpoints, counted from when the request began), a
//! deadline on writing answers that the client does not read
//! ([`super::write_deadline`]), a bound on the size of the request head, and a
//! bound on connections that are not WebSockets yet ([`Pending`]).
//! An upgraded connection leaves this module as its bare TCP stream
//! ([`upgraded_stream`]): its task is in [`crate::conn`].

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, http::Request, Router};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, upgrade::Upgraded};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tower_service::Service;
use tracing::{debug, warn};

use super::write_deadline::WriteDeadline;

use crate::{
    base::log_limit::ACCEPT_FAILED,
    base::shutdown::{Shutdown, Stopping},
    net::admission::{Answering, Pending, Slot},
};

/// The limits of the phase before the upgrade.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// The whole request (head and body) must arrive within this, and a
    /// write of an answer must make progress within it.
    pub request_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_size: usize,
}

/// How long an HTTP connection may take to finish its request once the
/// server is stopping.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until the server stops.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    pending: Arc<Pending>,
    shutdown: Arc<Shutdown>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_header_size(limits.max_header_size);
    let http = Arc::new(http);
    let mut stopping = shutdown.watch();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.stopped() => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if ACCEPT_FAILED.allow() {
                    warn!(%error, "cannot accept a connection");
                }
                // Out of file descriptors: make room by closing the oldest
                // idle connection, as at the pending bound, and give its
                // task a moment to let the descriptor go. Otherwise (or
                // for another passing failure) wait a little instead of
                // spinning.
                let out_of_files = matches!(
                    error.raw_os_error(),
                    Some(libc::EMFILE) | Some(libc::ENFILE)
                );
                let pause = if out_of_files && pending.evict_oldest_idle() {
                    Duration::from_millis(1)
                } else {
                    Duration::from_millis(20)
                };
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        // Replies and group messages are small writes that must leave at
        // once: Nagle's algorithm would hold one back for up to 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "cannot turn off Nagle's algorithm on a connection");
        }
        let Some(ticket) = pending.admit(remote.ip()) else {
            drop(stream);
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            remote,
            slot: ticket.slot.clone(),
            request_timeout: limits.request_timeout,
        };
        let http = http.clone();
        let stopping = shutdown.handle();
        tokio::spawn(async move {
            connection.serve(stream, &http, stopping).await;
            drop(ticket);
        });
    }
}

/// The TCP stream of an upgraded connection and a copy of the bytes hyper
/// had read past the handshake (usually none), unwrapped from hyper's boxed
/// [`Upgraded`] and from the HTTP phase's write deadline (off once the
/// phase has ended): every open WebSocket would otherwise keep both
/// allocations, and pay a dynamic call on each read and write. Copied,
/// because the bytes hyper hands over keep its whole read buffer alive.
/// `None` for a connection not accepted here.
pub(crate) fn upgraded_stream(upgraded: Upgraded) -> Option<(TcpStream, Vec<u8>)> {
    let parts = upgraded.downcast::<TokioIo<WriteDeadline>>().ok()?;
    Some((parts.io.into_inner().into_inner(), parts.read_buf.to_vec()))
}

/// One HTTP connection before its upgrade.
struct Connection {
    router: Router,
    remote: SocketAddr,
    slot: Arc<Slot>,
    request_timeout: Duration,
}

impl Connection {
    async fn serve(self, stream: TcpStream, http: &http1::Builder, mut stopping: Stopping) {
        let Connection {
            router,
            remote,
            slot,
            request_timeout,
        } = self;
        let requests_slot = slot.clone();
        let stream = WriteDeadline::new(stream, slot.clone(), request_timeout);
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            let answering =
                requests_slot.answering(!hyper::body::Body::is_end_stream(request.body()));
            let request = request.map(|body| {
                Body::new(TimedBody {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep_until(
                        requests_slot.request_began() + request_timeout,
                    )),
                    slot: requests_slot.clone(),
                })
            });
            let mut router = router.clone();
            async move {
                let response = match router.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(AnsweredBody {
                        inner: body,
                        _answering: answering,
                    })
                }))
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    debug!(%remote, %error, "HTTP connection ended with an error");
                }
            }
            () = slot.closing() => debug!(%remote, "HTTP connection closed: evicted or out of time"),
            () = stopping.stopped() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(STOP_GRACE, connection).await;
            }
        }
        // Upgraded or gone: the WebSocket layer bounds its own writes.
        slot.end_http_phase();
    }
}

/// A request body that must arrive before the request's deadline (counted
/// from when the request began, so head and body share it); when it does
/// not, the connection is closed.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    slot: Arc<Slot>,
}

/// The error of a body that arrived too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl hyper::body::Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.slot.body_done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.slot.close_now();
                    return Poll::Ready(Some(Err(BodyTimedOut.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection counted as answered until it
/// has been sent (a stream such as `/api/events` included).
struct AnsweredBody {
    inner: Body,
    _answering: Answering,
}

impl hyper::body::Body for AnsweredBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
