//! The reading side of many subscribers: one plain `epoll`-style loop (mio)
//! over all their sockets, decoding server frames itself.
//!
//! The load generator shares the machine's cores with the server it
//! measures, so every microsecond it spends per delivered message is taken
//! from the server. One task per connection through a WebSocket library
//! cost about twice the CPU of this loop (wake-ups, buffer zeroing, a
//! second read per message); here a message costs one `read` and a parse.

use std::{
    io::{ErrorKind, Read, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mio::{net::TcpStream, Events, Interest, Poll, Token, Waker};
use tokio_tungstenite::MaybeTlsStream;

use crate::{
    client::Socket,
    deflate::Inflater,
    frames::{self, Frame},
    subscribers::{parse_update, Update},
};

/// What a subscriber does with each notification, given the time it was
/// read.
pub trait Recorder: Send + 'static {
    fn record(&mut self, update: Update, at: Instant);
}

/// How a subscriber's reading ended.
pub struct Ending<R> {
    pub recorder: R,
    /// The connection closed or broke before it was told to stop.
    pub dropped: bool,
    /// Frames that were not a `subscription-update`.
    pub other: u64,
    /// Bytes read off the socket.
    pub bytes: u64,
    /// Messages that came compressed (permessage-deflate).
    pub compressed: u64,
}

/// The token of the stop signal; connections are numbered from 0.
const STOP: Token = Token(usize::MAX);

/// Bytes asked for per read: several messages' worth, so that one read
/// usually empties the socket.
const READ_SIZE: usize = 16 * 1024;

/// Reading threads, each owning a share of the connections. One: with two,
/// fan-out took longer here, as they took the cores the server needs.
const THREADS: usize = 1;

/// The reading threads.
pub struct Readers<R> {
    stop: Arc<AtomicBool>,
    threads: Vec<(Waker, ReadingThread<R>)>,
}

/// A reading thread, returning how its connections ended.
type ReadingThread<R> = JoinHandle<Result<Vec<Ending<R>>>>;

impl<R: Recorder> Readers<R> {
    /// Starts reading every connection, with a recorder made for each.
    /// The connections must have nothing buffered (no message pending
    /// since their last reply).
    pub fn start(sockets: Vec<Socket>, mut recorder: impl FnMut() -> R) -> Result<Readers<R>> {
        let stop = Arc::new(AtomicBool::new(false));
        let share = sockets.len().div_ceil(THREADS).max(1);
        let mut sockets = sockets.into_iter();
        let mut threads = Vec::with_capacity(THREADS);
        loop {
            let mut readers = Vec::with_capacity(share);
            for socket in sockets.by_ref().take(share) {
                readers.push(Subscriber::new(plain_stream(socket)?, recorder()));
            }
            if readers.is_empty() {
                break;
            }
            let poll = Poll::new().context("cannot create a poll")?;
            let waker = Waker::new(poll.registry(), STOP).context("cannot create a waker")?;
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name("subscribers".to_owned())
                .spawn(move || read_all(poll, readers, &stop))
                .context("cannot start a reading thread")?;
            threads.push((waker, thread));
        }
        Ok(Readers { stop, threads })
    }

    /// Stops reading, drops the connections and returns how each ended.
    pub async fn finish(self) -> Result<Vec<Ending<R>>> {
        self.stop.store(true, Ordering::Release);
        let mut endings = Vec::new();
        for (waker, thread) in self.threads {
            waker.wake().context("cannot wake a reading thread")?;
            let ended = tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("cannot wait for a reading thread")?;
            match ended {
                Ok(ended) => endings.extend(ended?),
                Err(_) => bail!("a reading thread panicked"),
            }
        }
        Ok(endings)
    }
}

/// The TCP stream under a WebSocket connection, for mio.
fn plain_stream(socket: Socket) -> Result<TcpStream> {
    let MaybeTlsStream::Plain(stream) = socket.into_inner() else {
        bail!("the benchmarks use plain TCP only");
    };
    let stream = stream.into_std().context("cannot take over a connection")?;
    stream.set_nonblocking(true)?;
    Ok(TcpStream::from_std(stream))
}

/// One connection's reading state.
struct Subscriber<R> {
    stream: TcpStream,
    /// Bytes of a frame not yet complete.
    pending: Vec<u8>,
    ending: Ending<R>,
    /// Closed or broken: no longer polled.
    gone: bool,
}

impl<R: Recorder> Subscriber<R> {
    fn new(stream: TcpStream, recorder: R) -> Self {
        Subscriber {
            stream,
            pending: Vec::new(),
            ending: Ending {
                recorder,
                dropped: false,
                other: 0,
                bytes: 0,
                compressed: 0,
            },
            gone: false,
        }
    }

    /// Reads what the socket has and handles every complete frame.
    fn read(&mut self, buffer: &mut [u8], inflater: &mut Inflater) {
        loop {
            match self.stream.read(buffer) {
                Ok(0) => return self.end(),
                Ok(n) => {
                    let at = Instant::now();
                    self.ending.bytes += n as u64;
                    if self.pending.is_empty() {
                        let used = self.handle(&buffer[..n], at, inflater);
                        self.pending.extend_from_slice(&buffer[used..n]);
                    } else {
                        self.pending.extend_from_slice(&buffer[..n]);
                        let pending = std::mem::take(&mut self.pending);
                        let used = self.handle(&pending, at, inflater);
                        self.pending = pending[used..].to_vec();
                    }
                    // A short read emptied the socket; mio reports the
                    // next arrival as a new event.
                    if n < buffer.len() || self.gone {
                        return;
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.end(),
            }
        }
    }

    /// Handles the complete frames at the start of `bytes`; returns how
    /// many bytes they took.
    fn handle(&mut self, bytes: &[u8], at: Instant, inflater: &mut Inflater) -> usize {
        let mut used = 0;
        while !self.gone {
            match frames::parse(&bytes[used..]) {
                Ok(Some((frame, length))) => {
                    used += length;
                    self.frame(frame, at, inflater);
                }
                Ok(None) => break,
                Err(_) => self.end(),
            }
        }
        used
    }

    fn frame(&mut self, frame: Frame<'_>, at: Instant, inflater: &mut Inflater) {
        match frame {
            Frame::Text(text) => self.text(text, at),
            Frame::Compressed(payload) => match inflater.inflate(payload) {
                Ok(text) => {
                    self.ending.compressed += 1;
                    self.text(text, at);
                }
                // Not what the server may send: the connection counts as
                // dropped.
                Err(_) => self.end(),
            },
            Frame::Ping(payload) => {
                // Small enough to fit any socket buffer; a failure shows
                // as a dropped connection on the next read.
                let _ = self.stream.write_all(&frames::pong(payload));
            }
            Frame::Close => self.end(),
            Frame::Other => self.ending.other += 1,
        }
    }

    fn text(&mut self, text: &[u8], at: Instant) {
        match std::str::from_utf8(text).ok().and_then(parse_update) {
            Some(update) => self.ending.recorder.record(update, at),
            None => self.ending.other += 1,
        }
    }

    fn end(&mut self) {
        self.gone = true;
        self.ending.dropped = true;
    }
}

/// One reading thread: polls its connections until told to stop.
fn read_all<R: Recorder>(
    mut poll: Poll,
    mut subscribers: Vec<Subscriber<R>>,
    stop: &AtomicBool,
) -> Result<Vec<Ending<R>>> {
    for (n, subscriber) in subscribers.iter_mut().enumerate() {
        poll.registry()
            .register(&mut subscriber.stream, Token(n), Interest::READABLE)
            .context("cannot poll a connection")?;
    }
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0; READ_SIZE];
    let mut inflater = Inflater::default();
    while !stop.load(Ordering::Acquire) {
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("cannot poll the connections"),
        }
        for event in &events {
            let Some(subscriber) = subscribers.get_mut(event.token().0) else {
                continue;
            };
            if subscriber.gone {
                continue;
            }
            subscriber.read(&mut buffer, &mut inflater);
            if subscriber.gone {
                let _ = poll.registry().deregister(&mut subscriber.stream);
            }
        }
    }
    Ok(subscribers.into_iter().map(|s| s.ending).collect())
}

/// Sums up the connections that dropped and the unexpected messages,
/// printing them when there are any.
pub fn report_endings<R>(label: &str, endings: &[Ending<R>]) -> u64 {
    let dropped = endings.iter().filter(|e| e.dropped).count() as u64;
    let other: u64 = endings.iter().map(|e| e.other).sum();
    if dropped > 0 || other > 0 {
        eprintln!("{label}: {dropped} connections dropped, {other} unexpected messages");
    }
    dropped
}
