//! Writing a connection's own frames: replies, pongs, its close, and the
//! group messages its task delivers from its queue. Frames are appended to
//! a buffer lent by [`crate::socket::buffers`] and written, on a flush, in
//! one system call where the socket takes them, under the [`Line`]'s lock
//! (the fan-out writes to the same socket). Text messages go compressed
//! when the connection negotiated permessage-deflate and they are large
//! enough ([`crate::socket::deflate`]).

use std::{
    future::poll_fn,
    io,
    sync::Arc,
    task::{ready, Context, Poll},
};

use super::{
    buffers, deflate,
    frame::{self, OpCode},
    line::Line,
};

/// Room asked of the pool for a buffer of replies.
const REPLY_BUFFER: usize = 1024;

/// The writing half of a connection.
pub(crate) struct Writer {
    line: Arc<Line>,
    /// Frames not yet on the socket; lent back whenever it is empty.
    out: Vec<u8>,
    /// Bytes at the front of `out` already on the socket.
    sent: usize,
}

impl Writer {
    pub(crate) fn new(line: Arc<Line>) -> Self {
        Writer {
            line,
            out: Vec::new(),
            sent: 0,
        }
    }

    /// Adds a text frame, written on the next [`flush`](Self::flush);
    /// compressed when the connection negotiated it and it is large enough.
    pub(crate) fn text(&mut self, text: &str) {
        match self.line.deflate() {
            Some(settings) => {
                self.make_room(text.len());
                deflate::write_frame(&mut self.out, OpCode::Text, text.as_bytes(), settings);
            }
            None => self.frame(OpCode::Text, text.as_bytes()),
        }
    }

    /// Adds frames encoded already (a group message as the fan-out made
    /// it for this connection).
    pub(crate) fn encoded(&mut self, frames: &[u8]) {
        if frames.is_empty() {
            return;
        }
        if self.out.capacity() == 0 {
            self.out = buffers::take(REPLY_BUFFER.max(frames.len()));
        }
        self.out.extend_from_slice(frames);
    }

    /// Adds a frame of `opcode`, as it is.
    pub(crate) fn frame(&mut self, opcode: OpCode, payload: &[u8]) {
        self.make_room(payload.len());
        frame::write_frame(&mut self.out, opcode, payload);
    }

    fn make_room(&mut self, payload: usize) {
        if self.out.capacity() == 0 {
            self.out = buffers::take(REPLY_BUFFER.max(payload + frame::MAX_HEADER));
        }
    }

    /// Adds a close frame with `code` and `reason` (at most 123 bytes).
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.frame(OpCode::Close, &frame::close_payload(code, reason));
    }

    /// Bytes added and not yet written.
    pub(crate) fn waiting(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes every frame added, after whatever the fan-out left of one of
    /// its own. Cancel-safe: what is written stays written.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() {
            ready!(self.line.poll_write_after_rest(cx, &[]))?;
            return Poll::Ready(Ok(()));
        }
        while self.sent < self.out.len() {
            let n = ready!(self.line.poll_write_after_rest(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        buffers::give(std::mem::take(&mut self.out));
        Poll::Ready(Ok(()))
    }

    /// What the connection negotiated for the messages it is sent.
    pub(crate) fn deflate(&self) -> Option<deflate::Deflate> {
        self.line.deflate()
    }

    /// The line, for the fan-out: made held, since the request that joins
    /// releases it when answered.
    pub(crate) fn share(&self) -> Arc<Line> {
        self.line.hold();
        self.line.clone()
    }

    /// The connection's line, for a worker's reply written without its
    /// task.
    pub(crate) fn line(&self) -> &Arc<Line> {
        &self.line
    }

    /// Shuts the socket down for writing.
    pub(crate) async fn shutdown(&self) -> io::Result<()> {
        self.line.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::socket::line::Wrote;

    /// More than loopback's socket buffers hold: a write of it is cut short.
    const HUGE: usize = 32 << 20;

    async fn connected() -> (Writer, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let client = TcpStream::connect(addr).await.expect("connected");
        let (server, _) = listener.accept().await.expect("accepted");
        // Dropping the read half leaves the socket open.
        let (_, write) = server.into_split();
        (Writer::new(Arc::new(Line::new(write, None))), client)
    }

    /// Reads `n` bytes off `client` in the background.
    fn read_all(mut client: TcpStream, n: usize) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut got = vec![0; n];
            client.read_exact(&mut got).await.expect("the bytes");
            got
        })
    }

    fn text_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_frame(&mut out, OpCode::Text, payload);
        out
    }

    #[tokio::test]
    async fn a_connection_write_cut_short_keeps_the_fan_out_off_until_finished() {
        let (mut writer, client) = connected().await;
        let line = writer.share();
        assert!(!line.lock().free(), "made held, by the request that joins");
        line.release();
        assert!(line.lock().free());
        let huge = vec![7u8; HUGE];
        writer.frame(OpCode::Binary, &huge);
        let expected = {
            let mut out = Vec::new();
            frame::write_frame(&mut out, OpCode::Binary, &huge);
            out
        };
        let mut flushing = Box::pin(writer.flush());
        assert!(futures_util::FutureExt::now_or_never(&mut flushing).is_none());
        assert!(!line.lock().free(), "inside a frame");
        let reader = read_all(client, expected.len());
        flushing.await.expect("flushed");
        assert!(line.lock().free());
        assert_eq!(reader.await.expect("read"), expected);
    }

    #[tokio::test]
    async fn what_the_fan_out_leaves_of_a_frame_goes_before_anything_else() {
        let (mut writer, client) = connected().await;
        let line = writer.share();
        line.release();
        let huge = vec![1u8; HUGE];
        assert_eq!(line.lock().write(&huge), Wrote::Part);
        assert!(!line.lock().free(), "the rest waits");
        let next = text_frame(b"next");
        let reader = read_all(client, huge.len() + next.len());
        writer.text("next");
        writer.flush().await.expect("flushed");
        assert!(line.lock().free());
        let got = reader.await.expect("read");
        assert_eq!(&got[..huge.len()], &huge[..]);
        assert_eq!(&got[huge.len()..], &next[..]);
    }

    #[tokio::test]
    async fn a_flushed_writer_holds_no_buffer() {
        let (mut writer, client) = connected().await;
        let reader = read_all(client, 4);
        writer.text("{}");
        writer.flush().await.expect("flushed");
        assert_eq!(writer.out.capacity(), 0);
        assert_eq!(reader.await.expect("read"), text_frame(b"{}"));
    }

    #[tokio::test]
    async fn a_closed_line_is_never_free() {
        let (writer, _client) = connected().await;
        let line = writer.share();
        line.release();
        line.close();
        assert!(line.lock().closed() && !line.lock().free());
    }
}
