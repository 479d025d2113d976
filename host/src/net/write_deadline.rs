//! A deadline on writes that make no progress, during a connection's HTTP
//! phase.
//!
//! hyper's header timer does not run while it writes an answer: a client
//! that pipelines requests and never reads the answers would hold its
//! connection, and a send buffer of megabytes, for good. Here a write that
//! has made no progress for the request timeout fails with `TimedOut`,
//! which ends the connection. An upgraded connection, whose WebSocket
//! layer has bounds of its own, leaves this wrapper with the bare stream
//! ([`super::accept::upgraded_stream`]); besides, the deadline is off once the
//! slot's HTTP phase has ended.
//!
//! A write that completes at once costs a flag's load and no clock read;
//! the timer is armed (and allocated, once) only when a write stalls.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

use crate::net::admission::Slot;

/// A TCP stream whose stalled writes time out while its slot is in the
/// HTTP phase.
pub(crate) struct WriteDeadline {
    inner: TcpStream,
    slot: Arc<Slot>,
    timeout: Duration,
    /// Runs from the first write that did not complete; reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is stalled and `timer` runs for it.
    stalled: bool,
}

impl WriteDeadline {
    pub(crate) fn new(inner: TcpStream, slot: Arc<Slot>, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            slot,
            timeout,
            timer: None,
            stalled: false,
        }
    }

    /// The TCP stream, for a connection that has left its HTTP phase.
    pub(crate) fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// Passes on a write's outcome, failing a write that has been stalled
    /// for the timeout.
    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        if !self.slot.in_http_phase() {
            self.stalled = false;
            self.timer = None;
            return Poll::Pending;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read its answer in time",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.bound(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A TCP stream's flush completes at once and says nothing about
        // the client reading: only a stalled one is bounded, and a
        // completed one does not count as progress.
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.bound(cx, Poll::Pending),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
