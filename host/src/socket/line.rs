//! A connection's writing side, shared with the group fan-out.
//!
//! Why: sending one group message to 10,000 members cost, per member, a
//! queue, a task wake-up and a frame encoded per member. Instead the
//! fan-out encodes the frame once ([`crate::socket::frame::write_frame`])
//! and writes it straight to each member's socket whose [`Line`] is free:
//! no frame of the connection's own half-written, no request of the
//! connection being answered (its replies, then what its groups send, keep
//! their order), nothing waiting in its queue. Otherwise the message goes
//! to the connection's queue, and the connection's task writes it.
//!
//! Every byte, the connection's ([`crate::socket::writer`]) and the
//! fan-out's, is written under the line's lock. The line also says whether
//! the connection negotiated permessage-deflate, so that the fan-out and
//! the connection's writer both send it compressed frames.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    sync::{Mutex, MutexGuard},
    task::{ready, Context, Poll},
};

use tokio::net::tcp::OwnedWriteHalf;

use super::deflate::Deflate;

/// A connection's socket for writing, by its task and by the fan-out.
pub(crate) struct Line {
    stream: OwnedWriteHalf,
    /// The socket's descriptor, next to the lock: a write without waiting
    /// goes straight to it (see [`Locked::write`]).
    fd: RawFd,
    state: Mutex<LineState>,
    /// What the connection negotiated for the messages it is sent.
    deflate: Option<Deflate>,
}

#[derive(Default)]
struct LineState {
    /// The connection is answering a request: group messages queue.
    held: bool,
    /// The connection's last write stopped inside a frame.
    mid_frame: bool,
    /// The end of a frame the fan-out began but could not finish: written
    /// before anything else.
    rest: Vec<u8>,
    /// The connection is closing: no frame may follow its close frame.
    closed: bool,
}

/// What became of a direct write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wrote {
    /// The whole frame is on the socket.
    All,
    /// Part of it is; the line keeps the rest, which the connection's task
    /// must write (wake it).
    Part,
    /// Nothing: the socket is full or the line is busy; queue the message.
    Nothing,
    /// The connection is closing or its socket failed.
    Gone,
}

/// The line, locked for one delivery: whether it is free, and the write.
pub(crate) struct Locked<'l> {
    line: &'l Line,
    state: MutexGuard<'l, LineState>,
}

impl Locked<'_> {
    /// Whether a frame written now would land between the connection's
    /// frames, after everything it has written, and before its close.
    pub(crate) fn free(&self) -> bool {
        let state = &self.state;
        !(state.held || state.mid_frame || state.closed || !state.rest.is_empty())
    }

    pub(crate) fn closed(&self) -> bool {
        self.state.closed
    }

    /// Writes `frame` without waiting; only on a [`free`](Self::free) line.
    ///
    /// A `send` on the descriptor itself, not through tokio's `try_write`:
    /// tokio first reads the socket's readiness, kept apart from the
    /// socket, which for a group of 10,000 is one more cache miss per
    /// member (`perf record` of a fan-out: `try_write` was 6% of the
    /// server's CPU). Nothing is lost by it: a socket found full here is
    /// left to the connection's task, whose write learns that anew.
    pub(crate) fn write(&mut self, frame: &[u8]) -> Wrote {
        // SAFETY: the descriptor belongs to `self.line.stream`, open while
        // the line lives; `frame` is valid for its length.
        let sent = unsafe {
            libc::send(
                self.line.fd,
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Wrote::All,
            Ok(n) => {
                self.state.rest.extend_from_slice(&frame[n..]);
                Wrote::Part
            }
            Err(_) => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => Wrote::Nothing,
                io::ErrorKind::Interrupted => Wrote::Nothing,
                _ => Wrote::Gone,
            },
        }
    }
}

impl Line {
    pub(crate) fn new(stream: OwnedWriteHalf, deflate: Option<Deflate>) -> Self {
        Line {
            fd: stream.as_ref().as_raw_fd(),
            stream,
            state: Mutex::new(LineState::default()),
            deflate,
        }
    }

    /// Whether, and how, messages to this connection are compressed.
    pub(crate) fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    fn state(&self) -> MutexGuard<'_, LineState> {
        // Nothing under the lock can panic; recover anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the line for a delivery.
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            line: self,
            state: self.state(),
        }
    }

    /// The connection starts answering a request.
    pub(crate) fn hold(&self) {
        self.state().held = true;
    }

    /// The connection has answered (and flushed) its request.
    pub(crate) fn release(&self) {
        self.state().held = false;
    }

    /// The connection closes: the fan-out leaves it alone from now on.
    pub(crate) fn close(&self) {
        self.state().closed = true;
    }

    /// Writes the connection's own reply without waiting (the reader of a
    /// worker's replies does, see [`crate::plugins::isolation::slot`]):
    /// only when nothing of the connection's is half-written or left over
    /// and it is not closing. A request being answered holds the line
    /// against group messages, not against its own reply.
    pub(crate) fn write_reply(&self, frames: &[u8]) -> Wrote {
        let mut locked = self.lock();
        let state = &locked.state;
        if state.closed {
            return Wrote::Gone;
        }
        if state.mid_frame || !state.rest.is_empty() {
            return Wrote::Nothing;
        }
        locked.write(frames)
    }

    /// Ready when the client's socket has bytes to read (or failed); the
    /// connection's reader is not reading meanwhile.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.stream.as_ref().poll_read_ready(cx).map(|_| ())
    }

    /// Writes what the fan-out left over, then `then` (if any), under the
    /// lock. `Ok(n)` is how much of `then` was written.
    pub(crate) fn poll_write_after_rest(
        &self,
        cx: &mut Context<'_>,
        then: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        loop {
            let attempt = if state.rest.is_empty() {
                if then.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                self.stream.try_write(then).map(|n| {
                    state.mid_frame = n < then.len();
                    Some(n)
                })
            } else {
                self.stream.try_write(&state.rest).map(|n| {
                    state.rest.drain(..n);
                    None
                })
            };
            match attempt {
                Ok(Some(n)) => return Poll::Ready(Ok(n)),
                Ok(None) => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.as_ref().poll_write_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Shuts the socket down for writing, after what the fan-out left.
    pub(crate) async fn shutdown(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_after_rest(cx, &[])).await?;
        socket2::SockRef::from(self.stream.as_ref()).shutdown(std::net::Shutdown::Write)
    }
}
