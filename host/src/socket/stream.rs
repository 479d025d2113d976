//! A connection's TCP stream under its WebSocket layer, and the writing
//! side it shares with the fan-out once it has joined a group.
//!
//! Why: sending one group message to 10,000 members cost, per member, a
//! queue, a task wake-up and the WebSocket layer's framing. Instead the
//! fan-out encodes the frame once ([`text_frame`]) and writes it straight
//! to each member's socket whose [`Line`] is free: no frame of the
//! connection's own half-written, no request of the connection being
//! answered (its replies, then what its groups send, keep their order),
//! nothing waiting in its queue. Otherwise the message goes to the
//! connection's queue, as before, and the connection's task writes it.
//!
//! A connection that never joins keeps its bare stream ([`SharedStream::Own`]);
//! its first join moves the stream into a shared [`Line`]
//! ([`SharedStream::share`]), and from then on every byte, the connection's and
//! the fan-out's, is written under the line's lock.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{ready, Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    },
    Bytes, Utf8Bytes,
};

/// The stream a connection's WebSocket layer reads and writes.
pub(crate) enum SharedStream {
    /// The connection's alone: it never joined a group.
    Own(TcpStream),
    /// Shared with the fan-out.
    Shared(Arc<Line>),
    /// Only while [`SharedStream::share`] moves the stream; never seen outside it.
    Moving,
}

/// A joined connection's socket, written by its task and by the fan-out.
pub(crate) struct Line {
    stream: TcpStream,
    state: Mutex<LineState>,
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
    pub(crate) fn write(&mut self, frame: &[u8]) -> Wrote {
        match self.line.stream.try_write(frame) {
            Ok(n) if n == frame.len() => Wrote::All,
            Ok(n) => {
                self.state.rest.extend_from_slice(&frame[n..]);
                Wrote::Part
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Wrote::Nothing,
            Err(_) => Wrote::Gone,
        }
    }
}

impl Line {
    fn new(stream: TcpStream) -> Self {
        Line {
            stream,
            // Made by a join, while a request is answered.
            state: Mutex::new(LineState {
                held: true,
                ..LineState::default()
            }),
        }
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

    /// Writes what the fan-out left over, then `then` (if any), under the
    /// lock. `Ok(n)` is how much of `then` was written.
    fn poll_write_after_rest(&self, cx: &mut Context<'_>, then: &[u8]) -> Poll<io::Result<usize>> {
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
                    ready!(self.stream.poll_write_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl SharedStream {
    /// The shared line, made from the connection's own stream on the first
    /// call. Made held: the request that joins releases it when answered.
    pub(crate) fn share(&mut self) -> Option<Arc<Line>> {
        if let SharedStream::Own(_) = self {
            if let SharedStream::Own(stream) = std::mem::replace(self, SharedStream::Moving) {
                *self = SharedStream::Shared(Arc::new(Line::new(stream)));
            }
        }
        match self {
            SharedStream::Shared(line) => Some(line.clone()),
            SharedStream::Own(_) | SharedStream::Moving => None,
        }
    }
}

fn moving() -> io::Error {
    io::Error::other("the stream is being moved")
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SharedStream::Own(stream) => Pin::new(stream).poll_read(cx, buf),
            SharedStream::Shared(line) => loop {
                match line.stream.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        ready!(line.stream.poll_read_ready(cx))?;
                    }
                    Err(error) => return Poll::Ready(Err(error)),
                }
            },
            SharedStream::Moving => Poll::Ready(Err(moving())),
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SharedStream::Own(stream) => Pin::new(stream).poll_write(cx, buf),
            SharedStream::Shared(line) => line.poll_write_after_rest(cx, buf),
            SharedStream::Moving => Poll::Ready(Err(moving())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SharedStream::Own(stream) => Pin::new(stream).poll_flush(cx),
            SharedStream::Shared(line) => line.poll_write_after_rest(cx, &[]).map_ok(|_| ()),
            SharedStream::Moving => Poll::Ready(Err(moving())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SharedStream::Own(stream) => Pin::new(stream).poll_shutdown(cx),
            SharedStream::Shared(line) => {
                ready!(line.poll_write_after_rest(cx, &[]))?;
                let shut = socket2::SockRef::from(&line.stream).shutdown(std::net::Shutdown::Write);
                Poll::Ready(shut)
            }
            SharedStream::Moving => Poll::Ready(Err(moving())),
        }
    }
}

/// `message` as one final, unmasked text frame (a server's), ready to be
/// written to any member's socket; `None` if it cannot be encoded (the
/// message then goes through each member's queue).
pub(crate) fn text_frame(message: &Utf8Bytes) -> Option<Vec<u8>> {
    let frame = Frame::message(Bytes::from(message.clone()), OpCode::Data(Data::Text), true);
    let mut encoded = Vec::with_capacity(frame.len());
    frame.format(&mut encoded).ok()?;
    Some(encoded)
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// More than loopback's socket buffers hold: a write of it is cut short.
    const HUGE: usize = 32 << 20;

    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let client = TcpStream::connect(addr).await.expect("connected");
        let (server, _) = listener.accept().await.expect("accepted");
        (server, client)
    }

    /// Reads `n` bytes off `client` in the background.
    fn read_all(mut client: TcpStream, n: usize) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut got = vec![0; n];
            client.read_exact(&mut got).await.expect("the bytes");
            got
        })
    }

    #[tokio::test]
    async fn a_connection_write_cut_short_keeps_the_fan_out_off_until_finished() {
        let (server, client) = connected().await;
        let mut wire = SharedStream::Own(server);
        let line = wire.share().expect("a line");
        assert!(!line.lock().free(), "made held, by the request that joins");
        line.release();
        assert!(line.lock().free());
        let huge = vec![7u8; HUGE];
        let written = futures_util::FutureExt::now_or_never(wire.write(&huge))
            .expect("some of it at once")
            .expect("written");
        assert!(written < huge.len());
        assert!(!line.lock().free(), "inside a frame");
        let reader = read_all(client, huge.len());
        wire.write_all(&huge[written..]).await.expect("the rest");
        assert!(line.lock().free());
        assert_eq!(reader.await.expect("read"), huge);
    }

    #[tokio::test]
    async fn what_the_fan_out_leaves_of_a_frame_goes_before_anything_else() {
        let (server, client) = connected().await;
        let mut wire = SharedStream::Own(server);
        let line = wire.share().expect("a line");
        line.release();
        let huge = vec![1u8; HUGE];
        assert_eq!(line.lock().write(&huge), Wrote::Part);
        assert!(!line.lock().free(), "the rest waits");
        let reader = read_all(client, huge.len() + 4);
        wire.write_all(b"next").await.expect("written");
        wire.flush().await.expect("flushed");
        assert!(line.lock().free());
        let got = reader.await.expect("read");
        assert_eq!(&got[..huge.len()], &huge[..]);
        assert_eq!(&got[huge.len()..], b"next");
    }

    #[tokio::test]
    async fn a_closed_line_is_never_free() {
        let (server, _client) = connected().await;
        let mut wire = SharedStream::Own(server);
        let line = wire.share().expect("a line");
        line.release();
        line.close();
        assert!(line.lock().closed() && !line.lock().free());
    }

    #[test]
    fn a_text_frame_is_a_final_unmasked_text_frame() {
        let frame = text_frame(&"{}".into()).expect("a frame");
        assert_eq!(frame, [0x81, 2, b'{', b'}']);
        let long = text_frame(&"x".repeat(300).into()).expect("a frame");
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
    }
}
