//! The connection that pops this host's inbox in the core layer, spoken
//! by the host itself rather than through the `redis` crate.
//!
//! Why: whoever can write to Redis decides what the inbox holds, and the
//! `redis` crate reads a whole reply into memory before the host sees any
//! of it. A member of 300 MB (Redis accepts up to its `proto-max-bulk-len`,
//! 512 MB by default, and sets no output limit for normal clients) would
//! cost the host that much memory, and more in copies, before the size
//! check of [`super::format`] could drop it.
//!
//! This client does just what popping needs: connect (TCP, TLS with the
//! same files as [`super::access`], or a Unix socket), `AUTH`, `SELECT`,
//! `BZPOPMIN` and `ZPOPMIN`, in RESP2. Its reader holds at most one chunk
//! of [`CHUNK`] bytes, and every length Redis declares is checked before
//! anything is read or allocated:
//!
//! - a member up to [`MAX_PAYLOAD`] is read whole, one at a time (the
//!   members of a `ZPOPMIN` are handed over as they are read, not
//!   gathered first);
//! - a longer member is read and thrown away chunk by chunk, and reported
//!   as [`Popped::TooLarge`]: it is popped and gone, the connection stays
//!   usable, and the caller counts it;
//! - a reply with more elements than asked for, a nested array, a line
//!   longer than [`MAX_LINE`], a member longer than [`MAX_SKIP`], or bytes
//!   that are not RESP end the connection (the link reconnects with its
//!   backoff).
//!
//! Every step runs under the broker's deadline ([`super::health`]): the
//! `BZPOPMIN` reply within its wait plus the deadline, each member within
//! the deadline, and while a member is skipped, each chunk within the
//! deadline (a member of hundreds of MB may take longer than one deadline
//! on a slow network; what counts as a stall is Redis sending nothing).

use std::{sync::Arc, time::Duration};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

use super::{
    access::{self, Access, AccessError},
    format::MAX_PAYLOAD,
    health::{Failure, BROKER_TIMEOUT},
};

/// Bytes read from the socket at once: the reader's whole buffer, and the
/// chunk in which a member too large is thrown away.
const CHUNK: usize = 64 << 10;
/// Longest line of a reply: a status, an error or a length.
const MAX_LINE: usize = 4096;
/// Longest key or score in a reply (the inbox's name, a number).
const MAX_SMALL: usize = 1024;
/// Longest member that is skipped; a longer one ends the connection (it is
/// popped either way). Twice Redis's default `proto-max-bulk-len`.
const MAX_SKIP: u64 = 1 << 30;

/// Why the popping connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum PopError {
    #[error("popping connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("Redis closed the popping connection")]
    Closed,
    #[error("Redis refused {command}: {message}")]
    Refused {
        command: &'static str,
        message: String,
    },
    #[error("not a reply Redis gives to popping: {0}")]
    Protocol(String),
    #[error("cannot reach Redis for popping: {0}")]
    Address(String),
    #[error("TLS for popping: {0}")]
    Tls(String),
    #[error("no answer within {BROKER_TIMEOUT:?}")]
    Stalled,
}

impl From<PopError> for Failure {
    fn from(error: PopError) -> Failure {
        match error {
            PopError::Stalled => Failure::Stalled,
            other => Failure::Lost(other.to_string()),
        }
    }
}

fn protocol(why: impl Into<String>) -> PopError {
    PopError::Protocol(why.into())
}

/// One member popped from the inbox.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Popped {
    /// The member, at most [`MAX_PAYLOAD`] bytes.
    Member(Vec<u8>),
    /// A member of this many bytes, more than [`MAX_PAYLOAD`]: thrown away.
    TooLarge(usize),
}

/// The start of a reply or of one of its elements.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    Status(String),
    Error(String),
    Integer,
    /// A bulk string of this length; `None` is RESP2's null.
    Bulk(Option<u64>),
    /// An array of this many elements; `None` is RESP2's null.
    Array(Option<u64>),
}

/// Runs `step` under `limit`.
async fn within<T>(
    limit: Duration,
    step: impl std::future::Future<Output = Result<T, PopError>>,
) -> Result<T, PopError> {
    tokio::time::timeout(limit, step)
        .await
        .unwrap_or(Err(PopError::Stalled))
}

/// The reading side of the protocol, over any buffered reader.
struct Replies<R> {
    reader: R,
    /// How long one step may take (see the module's comment).
    step: Duration,
}

impl<R: AsyncBufRead + Unpin> Replies<R> {
    /// One line without its CRLF, at most [`MAX_LINE`] bytes.
    async fn line(&mut self) -> Result<Vec<u8>, PopError> {
        let mut line = Vec::new();
        let limit = (MAX_LINE + 2) as u64;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(PopError::Closed);
        }
        if !line.ends_with(b"\n") {
            return Err(if read as u64 == limit {
                protocol(format!("a line longer than {MAX_LINE} bytes"))
            } else {
                PopError::Closed
            });
        }
        if !line.ends_with(b"\r\n") {
            return Err(protocol("a line not ended by CRLF"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    async fn header(&mut self) -> Result<Header, PopError> {
        let line = self.line().await?;
        let Some((kind, rest)) = line.split_first() else {
            return Err(protocol("an empty line"));
        };
        let text = || String::from_utf8_lossy(rest).into_owned();
        match kind {
            b'+' => Ok(Header::Status(text())),
            b'-' => Ok(Header::Error(text())),
            b':' => std::str::from_utf8(rest)
                .ok()
                .and_then(|digits| digits.parse::<i64>().ok())
                .map(|_| Header::Integer)
                .ok_or_else(|| protocol("an integer that is none")),
            b'$' => length(rest).map(Header::Bulk),
            b'*' => length(rest).map(Header::Array),
            other => Err(protocol(format!(
                "a reply starting with the byte 0x{other:02x}"
            ))),
        }
    }

    /// The CRLF after a bulk string.
    async fn crlf(&mut self) -> Result<(), PopError> {
        let mut end = [0u8; 2];
        self.reader
            .read_exact(&mut end)
            .await
            .map_err(closed_at_eof)?;
        if &end != b"\r\n" {
            return Err(protocol("a bulk string longer than declared"));
        }
        Ok(())
    }

    /// The length of the bulk string that must come next (not null).
    async fn bulk_length(&mut self) -> Result<u64, PopError> {
        match self.header().await? {
            Header::Bulk(Some(length)) => Ok(length),
            Header::Array(_) => Err(protocol("a nested array")),
            Header::Bulk(None) => Err(protocol("a null where a member was due")),
            other => Err(protocol(format!("{other:?} where a member was due"))),
        }
    }

    /// A short bulk string (a key, a score): longer than `max` ends the
    /// connection.
    async fn small(&mut self, max: usize) -> Result<Vec<u8>, PopError> {
        within(self.step, async {
            let length = self.bulk_length().await?;
            let length = usize::try_from(length)
                .ok()
                .filter(|length| *length <= max)
                .ok_or_else(|| protocol(format!("a key or score of {length} bytes")))?;
            let mut bytes = vec![0; length];
            self.reader
                .read_exact(&mut bytes)
                .await
                .map_err(closed_at_eof)?;
            self.crlf().await?;
            Ok(bytes)
        })
        .await
    }

    /// A member: read when at most `max` bytes, else thrown away.
    async fn member(&mut self, max: usize) -> Result<Popped, PopError> {
        let length = within(self.step, self.bulk_length()).await?;
        if length > MAX_SKIP {
            return Err(protocol(format!(
                "a member of {length} bytes (at most {MAX_SKIP} are skipped)"
            )));
        }
        let size = usize::try_from(length).map_err(|_| protocol("a member too large"))?;
        if size > max {
            self.skip(length).await?;
            return Ok(Popped::TooLarge(size));
        }
        within(self.step, async {
            let mut bytes = vec![0; size];
            self.reader
                .read_exact(&mut bytes)
                .await
                .map_err(closed_at_eof)?;
            self.crlf().await?;
            Ok(Popped::Member(bytes))
        })
        .await
    }

    /// Throws away `length` bytes and the CRLF after them, in the chunks
    /// the reader holds, each within the step's deadline.
    async fn skip(&mut self, mut length: u64) -> Result<(), PopError> {
        while length > 0 {
            let step = self.step;
            let chunk = within(step, async {
                let buffered = self.reader.fill_buf().await?;
                if buffered.is_empty() {
                    return Err(PopError::Closed);
                }
                Ok(buffered.len())
            })
            .await?;
            let taken = usize::try_from(length).map_or(chunk, |left| left.min(chunk));
            self.reader.consume(taken);
            length -= taken as u64;
        }
        within(self.step, self.crlf()).await
    }

    /// The reply to `BZPOPMIN`: `None` when the wait ended with nothing.
    /// Its start may take `wait`.
    async fn popped_one(&mut self, wait: Duration, max: usize) -> Result<Option<Popped>, PopError> {
        match within(wait, self.header()).await? {
            Header::Array(None) => Ok(None),
            Header::Array(Some(3)) => {
                self.small(MAX_SMALL).await?;
                let member = self.member(max).await?;
                self.small(MAX_SMALL).await?;
                Ok(Some(member))
            }
            Header::Error(message) => Err(PopError::Refused {
                command: "BZPOPMIN",
                message,
            }),
            other => Err(protocol(format!("{other:?} as the answer to BZPOPMIN"))),
        }
    }

    /// The start of the reply to `ZPOPMIN` for at most `count`: how many
    /// members follow (each with its score, read by [`Replies::scored`]).
    async fn popped_many(&mut self, count: usize) -> Result<usize, PopError> {
        match within(self.step, self.header()).await? {
            Header::Array(Some(elements)) => {
                let members = usize::try_from(elements / 2).unwrap_or(usize::MAX);
                if elements % 2 != 0 || members > count {
                    return Err(protocol(format!(
                        "{elements} elements in the answer to ZPOPMIN of {count}"
                    )));
                }
                Ok(members)
            }
            Header::Error(message) => Err(PopError::Refused {
                command: "ZPOPMIN",
                message,
            }),
            other => Err(protocol(format!("{other:?} as the answer to ZPOPMIN"))),
        }
    }

    /// One member of a `ZPOPMIN` reply and its score.
    async fn scored(&mut self, max: usize) -> Result<Popped, PopError> {
        let member = self.member(max).await?;
        self.small(MAX_SMALL).await?;
        Ok(member)
    }

    /// The `+OK` of `AUTH` or `SELECT`.
    async fn ok(&mut self, command: &'static str) -> Result<(), PopError> {
        match within(self.step, self.header()).await? {
            Header::Status(status) if status == "OK" => Ok(()),
            Header::Error(message) => Err(PopError::Refused { command, message }),
            other => Err(protocol(format!("{other:?} as the answer to {command}"))),
        }
    }
}

/// A length after `$` or `*`: digits, or `-1` for null.
fn length(text: &[u8]) -> Result<Option<u64>, PopError> {
    if text == b"-1" {
        return Ok(None);
    }
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return Err(protocol(format!(
            "the length '{}'",
            String::from_utf8_lossy(text)
        )));
    }
    text.iter()
        .try_fold(0u64, |n, digit| {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .map(Some)
        .ok_or_else(|| protocol("a length out of range"))
}

fn closed_at_eof(error: std::io::Error) -> PopError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        PopError::Closed
    } else {
        PopError::Io(error)
    }
}

/// A command as RESP: an array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A socket of any kind.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What connecting needs besides the address: TLS, when the URL is a TLS
/// one, with the files of [`super::access`].
pub(super) struct Dialer {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Dialer {
    /// Reads the TLS files once, when `client` (the first the layer
    /// connects with; all are alike) speaks TLS.
    pub(super) fn new(client: &redis::Client, access: &Access) -> Result<Dialer, AccessError> {
        let tls = if matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            Some(tokio_rustls::TlsConnector::from(Arc::new(
                access::tls_config(access)?,
            )))
        } else {
            None
        };
        Ok(Dialer { tls })
    }

    /// A popping connection to the server of `client` (its address,
    /// password and database), authenticated and on the database. The
    /// caller bounds the time it takes.
    pub(super) async fn open(&self, client: &redis::Client) -> Result<Popper, PopError> {
        let info = client.get_connection_info();
        let socket: Box<dyn Io> = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Box::new(tcp(host, *port).await?),
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                if *insecure {
                    return Err(PopError::Tls(
                        "#insecure is not supported: give the CA with redis_tls_ca".to_owned(),
                    ));
                }
                let Some(connector) = &self.tls else {
                    return Err(PopError::Tls("no TLS settings for a TLS URL".to_owned()));
                };
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| PopError::Tls(format!("'{host}': {e}")))?;
                let stream = tcp(host, *port).await?;
                Box::new(connector.connect(name, stream).await?)
            }
            redis::ConnectionAddr::Unix(path) => {
                Box::new(tokio::net::UnixStream::connect(path).await?)
            }
            other => return Err(PopError::Address(format!("{other:?}"))),
        };
        let mut popper = Popper {
            replies: Replies {
                reader: BufReader::with_capacity(CHUNK, socket),
                step: BROKER_TIMEOUT,
            },
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            popper.send(&command(&auth)).await?;
            popper.replies.ok("AUTH").await?;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            popper.send(&command(&[b"SELECT", db.as_bytes()])).await?;
            popper.replies.ok("SELECT").await?;
        }
        Ok(popper)
    }
}

async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, PopError> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    // A command must not wait for the acknowledgement of the last reply.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An open popping connection.
pub(super) struct Popper {
    replies: Replies<BufReader<Box<dyn Io>>>,
}

impl Popper {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), PopError> {
        let socket = self.replies.reader.get_mut();
        within(BROKER_TIMEOUT, async {
            socket.write_all(bytes).await?;
            socket.flush().await?;
            Ok(())
        })
        .await
    }

    /// `BZPOPMIN inbox secs`: the member popped, or `None` when none came
    /// within `secs` seconds.
    pub(super) async fn wait(&mut self, inbox: &str, secs: u64) -> Result<Option<Popped>, Failure> {
        let wait = Duration::from_secs(secs) + BROKER_TIMEOUT;
        let secs = secs.to_string();
        self.send(&command(&[b"BZPOPMIN", inbox.as_bytes(), secs.as_bytes()]))
            .await?;
        Ok(self.replies.popped_one(wait, MAX_PAYLOAD).await?)
    }

    /// `ZPOPMIN inbox count`: how many members follow, each to be read
    /// with [`Popper::next`] before anything else is sent.
    pub(super) async fn more(&mut self, inbox: &str, count: usize) -> Result<usize, Failure> {
        let text = count.to_string();
        self.send(&command(&[b"ZPOPMIN", inbox.as_bytes(), text.as_bytes()]))
            .await?;
        Ok(self.replies.popped_many(count).await?)
    }

    /// The next member of a `ZPOPMIN` reply.
    pub(super) async fn next(&mut self) -> Result<Popped, Failure> {
        Ok(self.replies.scored(MAX_PAYLOAD).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };
    use tokio::io::ReadBuf;

    const STEP: Duration = Duration::from_secs(10);

    /// Hands out `bytes` at most `split` at a time, then a generated bulk
    /// string body of `filler` bytes of `x`, then `tail`; records the
    /// largest read asked for.
    struct Source {
        bytes: Vec<u8>,
        at: usize,
        split: usize,
        filler: u64,
        tail: Vec<u8>,
        largest_read: usize,
    }

    impl Source {
        fn new(bytes: &[u8], split: usize) -> Source {
            Source {
                bytes: bytes.to_vec(),
                at: 0,
                split,
                filler: 0,
                tail: Vec::new(),
                largest_read: 0,
            }
        }
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            this.largest_read = this.largest_read.max(buf.remaining());
            if this.at < this.bytes.len() {
                let n = this
                    .split
                    .min(buf.remaining())
                    .min(this.bytes.len() - this.at);
                buf.put_slice(&this.bytes[this.at..this.at + n]);
                this.at += n;
            } else if this.filler > 0 {
                let n = usize::try_from(this.filler)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                buf.initialize_unfilled_to(n).fill(b'x');
                buf.advance(n);
                this.filler -= n as u64;
            } else if !this.tail.is_empty() {
                let n = this.tail.len().min(buf.remaining());
                buf.put_slice(&this.tail[..n]);
                this.tail.drain(..n);
            }
            Poll::Ready(Ok(()))
        }
    }

    fn reading(source: Source) -> Replies<BufReader<Source>> {
        Replies {
            reader: BufReader::with_capacity(CHUNK, source),
            step: STEP,
        }
    }

    fn zpopmin_reply(members: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", members.len() * 2).into_bytes();
        for (n, member) in members.iter().enumerate() {
            out.extend_from_slice(format!("${}\r\n", member.len()).as_bytes());
            out.extend_from_slice(member);
            let score = format!("{n}.5");
            out.extend_from_slice(format!("\r\n${}\r\n{score}\r\n", score.len()).as_bytes());
        }
        out
    }

    #[tokio::test]
    async fn replies_split_anywhere_read_the_same() {
        let big = vec![7u8; 200_000];
        let members: [&[u8]; 3] = [b"one", b"", &big];
        let reply = zpopmin_reply(&members);
        for split in [1, 2, 3, 5, 7, 4096, usize::MAX] {
            let mut replies = reading(Source::new(&reply, split));
            assert_eq!(replies.popped_many(256).await.unwrap(), 3, "split {split}");
            for member in members {
                assert_eq!(
                    replies.scored(MAX_PAYLOAD).await.unwrap(),
                    Popped::Member(member.to_vec()),
                    "split {split}"
                );
            }
        }
        let one = b"*3\r\n$5\r\ninbox\r\n$3\r\nabc\r\n$1\r\n1\r\n";
        let mut replies = reading(Source::new(one, 1));
        assert_eq!(
            replies.popped_one(STEP, MAX_PAYLOAD).await.unwrap(),
            Some(Popped::Member(b"abc".to_vec()))
        );
        let mut replies = reading(Source::new(b"*-1\r\n", 1));
        assert_eq!(replies.popped_one(STEP, MAX_PAYLOAD).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_member_too_large_is_skipped_in_chunks_and_the_next_is_read() {
        // 300 MB that exist nowhere at once: generated as they are read.
        let size: u64 = 300 << 20;
        let mut source = Source::new(format!("*4\r\n${size}\r\n").as_bytes(), usize::MAX);
        source.filler = size;
        source.tail = b"\r\n$1\r\n1\r\n$4\r\nnext\r\n$1\r\n2\r\n".to_vec();
        let mut replies = reading(source);
        assert_eq!(replies.popped_many(256).await.unwrap(), 2);
        assert_eq!(
            replies.scored(MAX_PAYLOAD).await.unwrap(),
            Popped::TooLarge(300 << 20)
        );
        assert_eq!(
            replies.scored(MAX_PAYLOAD).await.unwrap(),
            Popped::Member(b"next".to_vec())
        );
        assert!(replies.reader.get_ref().largest_read <= CHUNK);
        // The bound is the payload's: one byte more is too large.
        let over = MAX_PAYLOAD + 1;
        let mut source = Source::new(format!("${over}\r\n").as_bytes(), 3);
        source.filler = over as u64;
        source.tail = b"\r\n".to_vec();
        let mut replies = reading(source);
        assert_eq!(
            replies.member(MAX_PAYLOAD).await.unwrap(),
            Popped::TooLarge(over)
        );
    }

    #[tokio::test]
    async fn lengths_are_checked_before_anything_is_read_or_allocated() {
        // Declared, never sent: each is refused from its header alone (a
        // buffer of the declared size would abort the test).
        let refused: [&[u8]; 10] = [
            b"*4294967296\r\n",
            b"*513\r\n",
            b"*3\r\n",
            b"*18446744073709551616\r\n",
            b"*-5\r\n",
            b"*2\r\n$-2\r\n",
            b"*2\r\n$+5\r\n",
            b"*2\r\n$ 5\r\n",
            b"*2\r\n$99999999999999999\r\n",
            b"*2\r\n$18446744073709551615\r\n",
        ];
        for reply in refused {
            popping_is_refused(reply, usize::MAX).await;
        }
        // A key or score longer than a name or a number is refused too.
        let mut replies = reading(Source::new(b"*3\r\n$2000000000\r\n", usize::MAX));
        assert!(matches!(
            replies.popped_one(STEP, MAX_PAYLOAD).await,
            Err(PopError::Protocol(_))
        ));
        // A member declared larger than anything skipped ends the connection.
        let mut replies = reading(Source::new(b"$4294967296\r\n", usize::MAX));
        assert!(matches!(
            replies.member(MAX_PAYLOAD).await,
            Err(PopError::Protocol(_))
        ));
    }

    /// Popping from `reply`, read `chunk` bytes at a time, ends in a
    /// protocol error.
    async fn popping_is_refused(reply: &[u8], chunk: usize) {
        let mut replies = reading(Source::new(reply, chunk));
        let outcome = match replies.popped_many(256).await {
            Ok(_) => replies.scored(MAX_PAYLOAD).await.map(|_| 0),
            Err(error) => Err(error),
        };
        assert!(
            matches!(outcome, Err(PopError::Protocol(_))),
            "{:?}: {outcome:?}",
            String::from_utf8_lossy(reply)
        );
    }

    #[tokio::test]
    async fn what_is_not_resp_ends_the_connection() {
        let broken: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\n",
            b"*2\r\n*1\r\n$1\r\na\r\n",
            b"*2\r\n$3\r\nabcd\r\n$1\r\n1\r\n",
            b"*2\r\n$3\r\nabc\nxx",
            b"*2\r\n:5\r\n",
            b"\r\n",
            b"*2\n",
        ];
        for reply in broken {
            popping_is_refused(reply, 2).await;
        }
        let mut endless = vec![b'+'; 1 << 20];
        endless.extend_from_slice(b"\r\n");
        let mut replies = reading(Source::new(&endless, usize::MAX));
        assert!(matches!(
            replies.ok("AUTH").await,
            Err(PopError::Protocol(_))
        ));
        // Cut short: closed, not malformed.
        let mut replies = reading(Source::new(b"*2\r\n$10\r\nabc", 1));
        assert_eq!(replies.popped_many(256).await.unwrap(), 1);
        assert!(matches!(
            replies.scored(MAX_PAYLOAD).await,
            Err(PopError::Closed)
        ));
    }

    #[tokio::test]
    async fn errors_and_statuses_are_told_apart() {
        let mut replies = reading(Source::new(b"-WRONGPASS invalid\r\n+OK\r\n", 3));
        assert!(matches!(
            replies.ok("AUTH").await,
            Err(PopError::Refused { command: "AUTH", message }) if message == "WRONGPASS invalid"
        ));
        assert!(replies.ok("SELECT").await.is_ok());
        let mut replies = reading(Source::new(b"-WRONGTYPE no\r\n", 3));
        assert!(matches!(
            replies.popped_one(STEP, MAX_PAYLOAD).await,
            Err(PopError::Refused {
                command: "BZPOPMIN",
                ..
            })
        ));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"ZPOPMIN", b"asgispecific.x!", b"256"]),
            b"*3\r\n$7\r\nZPOPMIN\r\n$15\r\nasgispecific.x!\r\n$3\r\n256\r\n"
        );
    }
}
