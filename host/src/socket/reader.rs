//! Reading a client's messages: frames parsed and unmasked in place in a
//! buffer lent by [`crate::socket::buffers`], a text message handed to the
//! handlers as a `&str` into that buffer, fragments put together within
//! the message size limit, and every rule of RFC 6455 a server must
//! enforce turned into the close code the RFC calls for. A compressed
//! message (RSV1, when the handshake negotiated permessage-deflate) is
//! inflated into a buffer of its own, never past the size limit
//! ([`crate::socket::deflate`]).
//!
//! Why the host reads frames itself rather than through tungstenite: a
//! ping through tokio-tungstenite cost a zeroed 4 KiB read buffer per
//! read, an allocation and a copy per message, and a waker registration
//! per poll; its buffers stayed with every idle connection. Measured with
//! `cargo xtask bench throughput` on the 2-core machine (docs/benchmarks.md,
//! "The WebSocket codec"), reading in place cut the server's CPU per reply
//! and its memory per idle connection. tokio-websockets and fastwebsockets
//! were the other candidates: both keep an 8 KiB buffer per connection,
//! and fastwebsockets' reads are not cancel-safe, which the connection's
//! `select!` loop needs. The host already wrote its own frames for the
//! fan-out, and the handshake was already its own.
//!
//! [`Reader::next`] is cancel-safe: everything it has read stays in the
//! reader, so the connection's loop may drop the read to deliver a group
//! message and start it again.

use std::{
    future::poll_fn,
    ops::Range,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::{
    io::{AsyncRead, ReadBuf},
    net::tcp::OwnedReadHalf,
};

use super::{
    buffers,
    deflate::{self, InflateError},
    frame::{self, HeaderError, OpCode},
};

/// What one client frame, or one message put together from fragments, is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    Text(&'a str),
    Binary,
    Ping(&'a [u8]),
    Pong,
    /// The client's close frame: its code and reason, if it gave one.
    Close(Option<(u16, &'a str)>),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The client closed its side, or the socket failed.
    #[error("the connection is gone")]
    Gone,
    /// A frame the RFC forbids: close with 1002.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A message over the size limit: close with 1009.
    #[error("a message over the size limit")]
    TooBig,
    /// A text message or close reason that is not UTF-8: close with 1007.
    #[error("text that is not UTF-8")]
    NotUtf8,
    /// A compressed message that is not valid DEFLATE data: close with
    /// 1007, data inconsistent with the message's type.
    #[error("compressed data that cannot be inflated")]
    BadDeflate,
}

impl From<InflateError> for ReadError {
    fn from(error: InflateError) -> Self {
        match error {
            InflateError::TooBig => ReadError::TooBig,
            InflateError::Invalid => ReadError::BadDeflate,
        }
    }
}

impl From<HeaderError> for ReadError {
    fn from(error: HeaderError) -> Self {
        match error {
            HeaderError::TooBig => ReadError::TooBig,
            HeaderError::Reserved => ReadError::Protocol("reserved bits set"),
            HeaderError::UnknownOpcode => ReadError::Protocol("unknown opcode"),
            HeaderError::Unmasked => ReadError::Protocol("unmasked client frame"),
            HeaderError::BadControl => ReadError::Protocol("bad control frame"),
        }
    }
}

/// Where the message [`Reader::poll_frame`] found is.
enum Found {
    /// A whole frame, its payload at this range of the buffer.
    Frame(OpCode, Range<usize>),
    /// A message put together from fragments, or inflated, in `assembled`.
    Assembled(OpCode),
}

/// A fragmented message being put together.
struct Fragments {
    /// The first frame's opcode.
    opcode: OpCode,
    /// The first frame had RSV1: the bytes are compressed.
    compressed: bool,
    bytes: Vec<u8>,
}

/// The reading half of a connection.
pub(crate) struct Reader {
    half: OwnedReadHalf,
    /// Bytes read and not yet consumed; lent back to the pool whenever it
    /// is empty (capacity 0 then).
    buf: Vec<u8>,
    /// Everything before this in `buf` is consumed.
    start: usize,
    /// The end of the frame handed out last: consumed on the next read.
    handed_out: usize,
    /// A fragmented message being put together, and the last one put
    /// together or inflated, handed out until the next read.
    fragments: Option<Box<Fragments>>,
    assembled: Option<Vec<u8>>,
    /// The most bytes a message may have (inflated, when compressed).
    max_message: usize,
    /// How many bytes one read asks for.
    read_size: u32,
    /// The handshake negotiated permessage-deflate: RSV1 marks a
    /// compressed message.
    inflate: bool,
}

impl Reader {
    /// A reader of `half`, whose first bytes (`already`) came with the
    /// handshake.
    pub(crate) fn new(
        half: OwnedReadHalf,
        already: Vec<u8>,
        max_message: usize,
        read_size: usize,
        inflate: bool,
    ) -> Self {
        Reader {
            half,
            buf: already,
            start: 0,
            handed_out: 0,
            fragments: None,
            assembled: None,
            max_message,
            read_size: u32::try_from(read_size.max(256)).unwrap_or(u32::MAX),
            inflate,
        }
    }

    /// The next message. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Message<'_>, ReadError> {
        let found = poll_fn(|cx| self.poll_frame(cx)).await?;
        self.message(found)
    }

    /// The next message, and whether bytes after it are read already (a
    /// client that sent more without waiting for the answer). Cancel-safe.
    pub(crate) async fn next_and_more(&mut self) -> Result<(Message<'_>, bool), ReadError> {
        let found = poll_fn(|cx| self.poll_frame(cx)).await?;
        let more = self.buf.len() > self.handed_out;
        Ok((self.message(found)?, more))
    }

    /// The read half, for lingering after a close (see [`crate::conn::linger`]).
    pub(crate) fn half(&mut self) -> &mut OwnedReadHalf {
        &mut self.half
    }

    /// Bytes held for this connection: its buffers.
    #[cfg(test)]
    fn holds(&self) -> usize {
        self.buf.capacity()
    }

    fn message(&self, found: Found) -> Result<Message<'_>, ReadError> {
        let (opcode, payload) = match found {
            Found::Frame(opcode, range) => (opcode, &self.buf[range]),
            Found::Assembled(opcode) => (opcode, self.assembled.as_deref().unwrap_or_default()),
        };
        Ok(match opcode {
            OpCode::Text => {
                Message::Text(std::str::from_utf8(payload).map_err(|_| ReadError::NotUtf8)?)
            }
            OpCode::Binary => Message::Binary,
            OpCode::Ping => Message::Ping(payload),
            OpCode::Pong => Message::Pong,
            OpCode::Close => Message::Close(close_of(payload)?),
            // Never handed out: continuations are put together.
            OpCode::Continuation => return Err(ReadError::Protocol("stray continuation")),
        })
    }

    /// Finds the next whole message, reading as needed.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Found, ReadError>> {
        self.start = self.start.max(self.handed_out);
        if let Some(assembled) = self.assembled.take() {
            buffers::give(assembled);
        }
        loop {
            let parsed =
                frame::parse_header(&self.buf[self.start..], self.max_message, self.inflate)?;
            let needed = match parsed {
                Some(header)
                    if self.buf.len() - self.start >= header.header_len + header.payload_len =>
                {
                    let begin = self.start + header.header_len;
                    let end = begin + header.payload_len;
                    frame::unmask(&mut self.buf[begin..end], header.mask);
                    self.start = end;
                    let found =
                        self.took(header.fin, header.compressed, header.opcode, begin..end)?;
                    if let Some(found) = found {
                        self.handed_out = end;
                        return Poll::Ready(Ok(found));
                    }
                    continue;
                }
                Some(header) => header.header_len + header.payload_len,
                None => frame::MAX_HEADER + 4,
            };
            ready!(self.poll_fill(cx, needed))?;
        }
    }

    /// What the frame at `payload` makes: a message to hand out, or part
    /// of one.
    fn took(
        &mut self,
        fin: bool,
        compressed: bool,
        opcode: OpCode,
        payload: Range<usize>,
    ) -> Result<Option<Found>, ReadError> {
        match opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => Ok(Some(Found::Frame(opcode, payload))),
            OpCode::Text | OpCode::Binary if self.fragments.is_some() => {
                Err(ReadError::Protocol("a new message inside a fragmented one"))
            }
            OpCode::Text | OpCode::Binary if fin && compressed => {
                let mut inflated = buffers::take(0);
                let done = deflate::inflate(&self.buf[payload], self.max_message, &mut inflated);
                self.assembled = Some(inflated);
                done?;
                Ok(Some(Found::Assembled(opcode)))
            }
            OpCode::Text | OpCode::Binary if fin => Ok(Some(Found::Frame(opcode, payload))),
            OpCode::Text | OpCode::Binary => {
                self.fragments = Some(Box::new(Fragments {
                    opcode,
                    compressed,
                    bytes: self.buf[payload].to_vec(),
                }));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(ReadError::Protocol("a continuation of nothing"));
                };
                if fragments.bytes.len() + payload.len() > self.max_message {
                    return Err(ReadError::TooBig);
                }
                fragments.bytes.extend_from_slice(&self.buf[payload]);
                if !fin {
                    return Ok(None);
                }
                let Some(whole) = self.fragments.take() else {
                    return Err(ReadError::Protocol("a continuation of nothing"));
                };
                if whole.compressed {
                    let mut inflated = buffers::take(0);
                    let done = deflate::inflate(&whole.bytes, self.max_message, &mut inflated);
                    self.assembled = Some(inflated);
                    done?;
                } else {
                    self.assembled = Some(whole.bytes);
                }
                Ok(Some(Found::Assembled(whole.opcode)))
            }
        }
    }

    /// Reads until the buffer holds at least `needed` unconsumed bytes, or
    /// more than before when less is there already.
    fn poll_fill(&mut self, cx: &mut Context<'_>, needed: usize) -> Poll<Result<(), ReadError>> {
        if self.start == self.buf.len() {
            // All consumed: start over at the front.
            self.buf.clear();
        } else if self.start > 0 {
            // What is left is the start of a frame: move it to the front,
            // once per frame (the start stays put until it is whole).
            self.buf.drain(..self.start);
        }
        self.start = 0;
        self.handed_out = 0;
        if self.buf.capacity() == 0 {
            self.buf = buffers::take(self.read_size as usize);
        }
        let held = self.buf.len() - self.start;
        let want = needed.saturating_sub(held).max(self.read_size as usize);
        self.buf.reserve(want);
        let len = self.buf.len();
        let mut read = ReadBuf::uninit(self.buf.spare_capacity_mut());
        let polled = Pin::new(&mut self.half).poll_read(cx, &mut read);
        let n = read.filled().len();
        match polled {
            Poll::Pending => {
                if self.buf.is_empty() {
                    buffers::give(std::mem::take(&mut self.buf));
                }
                Poll::Pending
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(ReadError::Gone)),
            Poll::Ready(Ok(())) if n == 0 => Poll::Ready(Err(ReadError::Gone)),
            Poll::Ready(Ok(())) => {
                // SAFETY: `poll_read` initialized the `n` bytes it filled,
                // which start at the vector's length.
                unsafe { self.buf.set_len(len + n) };
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// The code and reason of a client's close frame (section 5.5.1).
fn close_of(payload: &[u8]) -> Result<Option<(u16, &str)>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("a close frame of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !frame::valid_close_code(code) {
                return Err(ReadError::Protocol("an invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ReadError::NotUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;

    const MASK: [u8; 4] = [0xA1, 0xB2, 0xC3, 0xD4];

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        frame::client_frame(first, payload, MASK)
    }

    async fn pair(max_message: usize) -> (Reader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let client = TcpStream::connect(addr).await.expect("connected");
        let (server, _) = listener.accept().await.expect("accepted");
        let (read, _write) = server.into_split();
        (
            Reader::new(read, Vec::new(), max_message, 4096, true),
            client,
        )
    }

    #[tokio::test]
    async fn frames_in_one_read_and_across_reads_come_out_whole() {
        let (mut reader, mut client) = pair(1 << 20).await;
        let mut bytes = client_frame(0x81, br#"{"type":"ping"}"#);
        bytes.extend(client_frame(0x89, b"hi"));
        let big = "x".repeat(100_000);
        bytes.extend(client_frame(0x81, big.as_bytes()));
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(777) {
                client.write_all(chunk).await.expect("written");
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            reader.next().await.expect("a message"),
            Message::Text(r#"{"type":"ping"}"#)
        );
        assert_eq!(
            reader.next().await.expect("a message"),
            Message::Ping(b"hi")
        );
        assert_eq!(reader.next().await.expect("a message"), Message::Text(&big));
        drop(writer.await.expect("the client"));
        assert!(matches!(reader.next().await, Err(ReadError::Gone)));
    }

    #[tokio::test]
    async fn fragments_are_put_together_around_control_frames() {
        let (mut reader, mut client) = pair(1 << 20).await;
        let mut bytes = client_frame(0x01, b"hel");
        bytes.extend(client_frame(0x89, b""));
        bytes.extend(client_frame(0x00, b"lo "));
        bytes.extend(client_frame(0x80, "wörld".as_bytes()));
        client.write_all(&bytes).await.expect("written");
        assert_eq!(reader.next().await.expect("a ping"), Message::Ping(b""));
        assert_eq!(
            reader.next().await.expect("the text"),
            Message::Text("hello wörld")
        );
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (mut reader, mut client) = pair(1 << 20).await;
        client
            .write_all(&client_frame(0x81, b"{}"))
            .await
            .expect("written");
        assert_eq!(reader.next().await.expect("a message"), Message::Text("{}"));
        let waiting = futures_util::FutureExt::now_or_never(reader.next());
        assert!(waiting.is_none(), "nothing more to read");
        assert_eq!(reader.holds(), 0);
    }

    #[tokio::test]
    async fn each_violation_gets_its_own_error() {
        async fn first_error(bytes: Vec<u8>, max: usize) -> ReadError {
            let (mut reader, mut client) = pair(max).await;
            client.write_all(&bytes).await.expect("written");
            loop {
                match reader.next().await {
                    Ok(_) => continue,
                    Err(error) => return error,
                }
            }
        }
        let too_big = first_error(client_frame(0x81, &[b'a'; 2000]), 1000).await;
        assert!(matches!(too_big, ReadError::TooBig));
        let mut fragments = client_frame(0x01, &[b'a'; 600]);
        fragments.extend(client_frame(0x80, &[b'a'; 600]));
        assert!(matches!(
            first_error(fragments, 1000).await,
            ReadError::TooBig
        ));
        let bad_utf8 = first_error(client_frame(0x81, &[0xFF, 0xFE]), 1000).await;
        assert!(matches!(bad_utf8, ReadError::NotUtf8));
        let stray = first_error(client_frame(0x80, b"x"), 1000).await;
        assert!(matches!(stray, ReadError::Protocol(_)));
        let mut nested = client_frame(0x01, b"a");
        nested.extend(client_frame(0x81, b"b"));
        assert!(matches!(
            first_error(nested, 1000).await,
            ReadError::Protocol(_)
        ));
        let bad_code = first_error(client_frame(0x88, &1005u16.to_be_bytes()), 1000).await;
        assert!(matches!(bad_code, ReadError::Protocol(_)));
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xFF);
        let bad_reason = first_error(client_frame(0x88, &bad_reason), 1000).await;
        assert!(matches!(bad_reason, ReadError::NotUtf8));
    }

    #[tokio::test]
    async fn a_close_frame_gives_its_code_and_reason() {
        let (mut reader, mut client) = pair(1000).await;
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        client
            .write_all(&client_frame(0x88, &payload))
            .await
            .expect("written");
        assert_eq!(
            reader.next().await.expect("the close"),
            Message::Close(Some((4001, "bye")))
        );
    }
}
