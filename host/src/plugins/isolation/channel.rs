//! One worker process, seen from the host: starting it, the start-up
//! conversation (manifest, configuration), and then the calls in flight.
//!
//! How a worker is started: the host runs its own executable again
//! (`/proc/self/exe`, so an upgraded binary on disk never pairs an old
//! host with a new worker) as `rohrpost --plugin-worker`, with the shadow
//! copy of the library on descriptor 3 and its end of a Unix socket pair
//! on descriptor 4. Nothing is found by name: no socket path, no pid file;
//! the pair is private to the two processes. The worker is in a process
//! group of its own (terminal signals are the server's), is killed when
//! the server drops it, and exits by itself when the server is gone.
//!
//! Calls are framed by [`super::frame`]. They go through the worker's
//! ring of calls in shared memory ([`super::ring`]); a call that does not
//! fit goes to one writer task per worker, which writes whatever has
//! queued up on the socket in one go, as do answers to the plugin's
//! questions. The supervisor's reading task matches replies, from the
//! ring of replies or the socket, to calls by their id. Every call in flight is answered
//! exactly once: by its reply, past its deadline by [`Worker::sweep_deadlines`]
//! (one timer per worker, not one per call: registering and cancelling a
//! tokio timer for each call cost about 0.3 µs of the server's CPU per
//! reply, `perf record`), or, when the channel ends, by
//! [`Worker::fail_all`], all under the same lock.

use std::{
    collections::HashMap,
    fs::File,
    hash::BuildHasherDefault,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::plugins::outcome::Outcome;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixStream,
    },
    process::{Child, Command},
    sync::{mpsc, Notify},
};

use super::{
    frame::{self, FrameError, Reader},
    jail::{self, Spec},
    ring::{self, HostSide, Pushed},
    slot::{Attention, Ended, ReplyLine, Slot},
    worker,
};
use crate::{
    groups::ConnectionId,
    plugins::manifest::{LoadError, ManifestInfo},
};

/// Why a worker could not be started, or its start-up conversation failed.
#[derive(Debug, Error)]
pub(crate) enum StartError {
    #[error("cannot start a worker process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{0}")]
    Load(LoadError),
    #[error("its worker process ended while starting ({0})")]
    Died(String),
    #[error("its worker process did not start within {} s", .0.as_secs())]
    Slow(Duration),
    #[error("its worker process broke the channel: {0}")]
    Channel(String),
}

/// Limits of each worker process (`setrlimit`, set before it starts).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WorkerLimits {
    /// Address space in bytes (`RLIMIT_AS`); 0 for none.
    pub memory: u64,
    /// Open files (`RLIMIT_NOFILE`); 0 for the server's own.
    pub open_files: u64,
    /// Most effects one reply may carry (`max_effects_per_call`).
    pub max_effects: usize,
}

/// A worker whose library is loaded, before or after its configuration.
pub(crate) struct Starting {
    pub manifest: ManifestInfo,
    /// The process that runs the plugin (in its jail, the child's
    /// grandchild).
    pub pid: u32,
    pub child: Child,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    rings: HostSide,
}

/// What the plugin's `configure` answered in the worker.
pub(crate) type ConfigAnswer = Result<String, String>;

impl Starting {
    /// Starts a worker for the library open as `library` and waits for its
    /// manifest.
    pub(crate) async fn spawn(
        library: &File,
        limits: WorkerLimits,
        jail: &Spec,
        timeout: Duration,
    ) -> Result<Starting, StartError> {
        let (host_end, worker_end) =
            std::os::unix::net::UnixStream::pair().map_err(StartError::Spawn)?;
        host_end.set_nonblocking(true).map_err(StartError::Spawn)?;
        let library_fd = library.as_raw_fd();
        let channel_fd = worker_end.as_raw_fd();
        let rings = HostSide::create().map_err(StartError::Spawn)?;
        let ring_fds = [
            (rings.memory.as_raw_fd(), ring::SHARED_FD),
            (rings.to_worker.as_raw_fd(), ring::TO_WORKER_FD),
            (rings.to_host.as_raw_fd(), ring::TO_HOST_FD),
        ];
        let mut command = Command::new("/proc/self/exe");
        // The server's own settings (tokens, the broker's URL) are none of
        // the plugin's business.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ROHRPOST_") {
                command.env_remove(name);
            }
        }
        command
            .arg(worker::ARG)
            .args(jail.to_args())
            .stdin(std::process::Stdio::null())
            // Its own process group: a terminal's Ctrl-C goes to the
            // server, which shuts down in order, not to its workers.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (fcntl, dup2, setrlimit)
        // run in the child between fork and exec. Both descriptors are
        // first moved above the targets, so that neither overwrites the
        // other.
        unsafe {
            command.pre_exec(move || {
                // Never above the server's own hard limit, which only
                // root could raise.
                let limit = |resource, value: u64| {
                    let mut rlim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if value == 0 {
                        return Ok(());
                    }
                    if libc::getrlimit(resource, &mut rlim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let value = (value as libc::rlim_t).min(rlim.rlim_max);
                    rlim.rlim_cur = value;
                    rlim.rlim_max = value;
                    if libc::setrlimit(resource, &rlim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                limit(libc::RLIMIT_AS, limits.memory)?;
                limit(libc::RLIMIT_NOFILE, limits.open_files)?;
                let lib = libc::fcntl(library_fd, libc::F_DUPFD_CLOEXEC, 10);
                let chan = libc::fcntl(channel_fd, libc::F_DUPFD_CLOEXEC, 10);
                if lib < 0
                    || chan < 0
                    || libc::dup2(lib, worker::LIBRARY_FD) < 0
                    || libc::dup2(chan, worker::CHANNEL_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (from, to) in ring_fds {
                    let moved = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10);
                    if moved < 0 || libc::dup2(moved, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(StartError::Spawn)?;
        drop(worker_end);
        let stream = UnixStream::from_std(host_end).map_err(StartError::Spawn)?;
        let (read, writer) = stream.into_split();
        let mut starting = Starting {
            pid: child.id().unwrap_or(0),
            manifest: ManifestInfo {
                name: String::new(),
                version: String::new(),
                api_version: String::new(),
                panic_unwind: false,
                handlers: Vec::new(),
                hooks: Default::default(),
            },
            child,
            reader: BufReader::new(read),
            writer,
            rings,
        };
        let (mut tag, mut body) = starting.next_frame(timeout).await?;
        if tag == frame::STARTED {
            let mut r = Reader::new(&body);
            starting.pid = r.u32().map_err(channel)?;
            let missing = r.str().map_err(channel)?;
            if !missing.is_empty() {
                tracing::warn!(pid = starting.pid, %missing, "a plugin worker runs without part of its jail");
            }
            (tag, body) = starting.next_frame(timeout).await?;
        }
        let mut r = Reader::new(&body);
        match tag {
            frame::HELLO => {
                starting.manifest = frame::read_hello(&mut r).map_err(channel)?;
                Ok(starting)
            }
            frame::LOAD_FAILED => {
                let code = r.u8().map_err(channel)?;
                let text = r.str().map_err(channel)?.to_owned();
                Err(StartError::Load(match code {
                    worker::LOAD_OPEN => LoadError::Open(text),
                    worker::LOAD_NO_ROOT => LoadError::NoRootModule,
                    worker::LOAD_INCOMPATIBLE => LoadError::Incompatible(text),
                    _ => LoadError::Init(text),
                }))
            }
            other => Err(channel(FrameError::UnknownTag(other))),
        }
    }

    /// Hands the plugin its configuration; what it answered.
    pub(crate) async fn configure(
        &mut self,
        config: &str,
        timeout: Duration,
    ) -> Result<ConfigAnswer, StartError> {
        let bytes = frame::text(frame::CONFIGURE, config);
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| StartError::Channel(e.to_string()))?;
        let (tag, body) = self.next_frame(timeout).await?;
        if tag != frame::CONFIGURED {
            return Err(channel(FrameError::UnknownTag(tag)));
        }
        let mut r = Reader::new(&body);
        let code = r.u8().map_err(channel)?;
        let text = r.str().map_err(channel)?.to_owned();
        if code != worker::CONFIG_OK {
            return Ok(Err(text));
        }
        // The manifest read again after the configuration.
        let (tag, body) = self.next_frame(timeout).await?;
        if tag != frame::HELLO {
            return Err(channel(FrameError::UnknownTag(tag)));
        }
        self.manifest = frame::read_hello(&mut Reader::new(&body)).map_err(channel)?;
        Ok(Ok(text))
    }

    /// The next frame's tag and the rest of its body.
    async fn next_frame(&mut self, timeout: Duration) -> Result<(u8, Vec<u8>), StartError> {
        match tokio::time::timeout(timeout, read_frame(&mut self.reader)).await {
            Ok(Ok(Some((frame::FORBIDDEN, body)))) => {
                let call = forbidden_call(&body).map_err(channel)?;
                let how = self.death().await;
                Err(StartError::Died(format!(
                    "{how}: the sandbox ended it for a forbidden system call, {call}"
                )))
            }
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(StartError::Died(self.death().await)),
            Ok(Err(e)) => Err(StartError::Channel(e.to_string())),
            Err(_) => Err(StartError::Slow(timeout)),
        }
    }

    /// How the worker ended (it closed the channel); kills it if it did not,
    /// and what it left behind.
    async fn death(&mut self) -> String {
        let pid = self.child.id();
        if !super::supervisor::exits_soon(&mut self.child).await {
            let _ = self.child.start_kill();
        }
        let status = self.child.wait().await;
        if let Some(pid) = pid {
            kill_group(pid);
        }
        match status {
            Ok(status) => describe(status),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// The worker is ready: its calls go through the returned [`Worker`];
    /// the child, the readers and the writer go to the supervisor's tasks.
    pub(crate) fn ready(self) -> (Worker, Child, Replies, WriterTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let HostSide {
            to_worker,
            to_host,
            calls,
            replies,
            ..
        } = self.rings;
        let unread = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            pid: self.pid,
            out: tx,
            unread: unread.clone(),
            asks: AtomicUsize::new(0),
            calls: Mutex::new(Calls {
                open: true,
                draining: false,
                waiting: HashMap::default(),
                sweeper_wakes: None,
                next_id: 1,
                ring: calls,
            }),
            sooner: Notify::new(),
            kill: Notify::new(),
            drain: Notify::new(),
            killed: AtomicBool::new(false),
            bell_owed: AtomicBool::new(false),
            reader_awake: AtomicBool::new(false),
            to_worker,
        };
        (
            worker,
            self.child,
            Replies {
                socket: self.reader,
                ring: replies,
                to_host,
            },
            WriterTask {
                rx,
                writer: self.writer,
                unread,
            },
        )
    }
}

fn channel(e: FrameError) -> StartError {
    StartError::Channel(e.to_string())
}

/// Reads one frame from a worker: `None` at the end of the channel.
pub(crate) async fn read_frame(
    reader: &mut BufReader<OwnedReadHalf>,
) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut head = [0; 4];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let len = frame::body_len(head)?;
    if len > frame::MAX_FROM_WORKER {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).await.is_err() {
        return Ok(None);
    }
    let tag = body.remove(0);
    Ok(Some((tag, body)))
}

/// The name of the call a [`frame::FORBIDDEN`] frame's body reports.
pub(crate) fn forbidden_call(body: &[u8]) -> Result<String, FrameError> {
    let nr = Reader::new(body).u32()?;
    Ok(jail::syscalls::name(nr))
}

/// An exit status as the log says it: `signal 11 (SIGSEGV)`, `exit code 3`.
pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGILL => "SIGILL",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGTERM => "SIGTERM",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGSYS => "SIGSYS: a system call its sandbox forbids",
            _ => "",
        };
        if name.is_empty() {
            return format!("signal {signal}");
        }
        return format!("signal {signal} ({name})");
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// Kills what is left of an ended worker's process group: whatever its
/// plugin started and left behind. The group's id is the worker's pid,
/// which names no other process or group while any of this group lives.
pub(crate) fn kill_group(pid: u32) {
    if let Ok(pid @ 1..) = i32::try_from(pid) {
        // SAFETY: kill(2) takes no pointers; a group that is gone is ESRCH.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// Where a worker's replies come from: its ring (woken through `to_host`)
/// and its socket.
pub(crate) struct Replies {
    pub socket: BufReader<OwnedReadHalf>,
    pub ring: ring::Reader,
    pub to_host: std::os::fd::OwnedFd,
}

/// Writes the frames callers queue, as many per write as have queued up.
pub(crate) struct WriterTask {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    writer: OwnedWriteHalf,
    /// Shared with the [`Worker`]: answers queued and not yet written.
    unread: Arc<AtomicUsize>,
}

/// How much is gathered into one write at most.
const BATCH: usize = 256 * 1024;

impl WriterTask {
    /// Runs until the worker is closed or the channel breaks. An empty
    /// frame closes the host's side for writing: the worker sees the end
    /// of its channel and exits.
    pub(crate) async fn run(mut self) {
        let mut batch = Vec::with_capacity(16 * 1024);
        let is_answer = |frame: &[u8]| frame.get(4) == Some(&frame::ANSWER);
        while let Some(first) = self.rx.recv().await {
            let mut close = first.is_empty();
            let mut answers = usize::from(is_answer(&first));
            batch.extend_from_slice(&first);
            while !close && batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(more) if more.is_empty() => close = true,
                    Ok(more) => {
                        answers += usize::from(is_answer(&more));
                        batch.extend_from_slice(&more);
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() && self.writer.write_all(&batch).await.is_err() {
                return;
            }
            self.unread.fetch_sub(answers, Ordering::Relaxed);
            batch.clear();
            if close {
                let _ = self.writer.shutdown().await;
                return;
            }
        }
    }
}

/// How a call through the channel ended, and how long the handler ran in
/// the worker when it answered.
pub(crate) type CallEnd<'a> = (frame::ReplyOutcome<'a>, Option<Duration>);

struct Calls {
    /// False once the channel has ended, or the worker is draining: no
    /// call is taken any more.
    open: bool,
    /// A call ran past its timeout: the worker is killed once no other
    /// call is in flight on it.
    draining: bool,
    /// The calls in flight, by id.
    waiting: HashMap<u64, InFlight, BuildHasherDefault<CallIds>>,
    /// When the sweeper of deadlines wakes next (`None`: when a call is
    /// sent); a call with an earlier deadline wakes it.
    sweeper_wakes: Option<tokio::time::Instant>,
    /// The next call's id.
    next_id: u64,
    /// The ring calls go through first.
    ring: ring::Writer,
}

/// A call in flight: its handler, the connection it is for, its deadline
/// and timeout, and where its end goes: the caller's slot, and its
/// messages to the caller's socket when it may have them directly.
struct InFlight {
    handler: u32,
    connection: ConnectionId,
    deadline: tokio::time::Instant,
    timeout: Duration,
    slot: Option<Arc<Slot>>,
    line: Option<Arc<dyn ReplyLine>>,
}

impl InFlight {
    /// Ends the call; its slot when the caller's wake-up is put off (see
    /// [`super::slot::Owed`]).
    fn end(mut self, (outcome, ran_for): CallEnd<'_>) -> Option<Arc<Slot>> {
        let slot = self.slot.take()?;
        slot.end(outcome, ran_for, self.line.as_ref())
            .then_some(slot)
    }

    /// Ends the call with an outcome that wakes its caller.
    fn fail(self, outcome: Outcome) {
        if let Some(slot) = self.end((outcome.into(), None)) {
            slot.wake_if_unclaimed();
        }
    }
}

impl Drop for InFlight {
    /// A call let go of without an end (its worker is gone) crashed.
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = slot.end(Outcome::Crashed.into(), None, None);
        }
    }
}

/// Hashes the ids of calls in flight: the host counts them up one by one,
/// so a multiplication spreads them well, where SipHash, which guards
/// against keys an attacker chooses, cost more than the rest of the
/// table's work (`perf record`). A worker can only look ids up.
#[derive(Default)]
struct CallIds(u64);

impl std::hash::Hasher for CallIds {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: an odd multiplier keeps the low bits (the
        // bucket) of ids counted up apart, and mixes every bit of the id
        // into the high ones (the table's tag).
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Most questions of one worker being answered at once; a worker that asks
/// more is ended. Its calls each wait for their answer, so a worker asks at
/// most as many at once as it runs calls (`plugin_concurrency`, 64 by
/// default, and one inline call).
pub(crate) const MAX_ASKS: usize = 1024;

/// Most answers waiting to be written to one worker when it asks another
/// question: beyond, it is not reading what it is sent, and is ended. A
/// worker that reads has at most as many as it asks at once.
pub(crate) const MAX_UNREAD_ANSWERS: usize = 4096;

/// The least time between two sweeps of a worker's deadlines.
const SWEEP_GAP: Duration = Duration::from_millis(10);

/// A ready worker: where calls go.
pub(crate) struct Worker {
    pub pid: u32,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Answers queued for the worker and not yet written to its channel.
    unread: Arc<AtomicUsize>,
    /// Its questions being answered now.
    asks: AtomicUsize,
    calls: Mutex<Calls>,
    /// Tells the supervisor to kill the process.
    kill: Notify,
    /// Wakes the sweeper of deadlines when a call is sent with a deadline
    /// before the one it sleeps until.
    sooner: Notify,
    /// Tells the supervisor to take the worker out of service and start
    /// the next one.
    drain: Notify,
    /// Killed by the host (a call ran past its timeout), not crashed.
    killed: AtomicBool,
    /// A push found the worker asleep and left its bell to the reader of
    /// replies.
    bell_owed: AtomicBool,
    /// The reader of replies runs its rounds (it does not sleep).
    reader_awake: AtomicBool,
    /// The eventfd that wakes the worker when it sleeps.
    to_worker: std::os::fd::OwnedFd,
}

/// A call sent to a worker, waiting for its end. Dropping it forgets the
/// call (a late reply is then dropped, and nothing is written for it).
pub(crate) struct PendingCall<'w> {
    worker: &'w Worker,
    id: u64,
    slot: Arc<Slot>,
    /// Woken for a reply written for the caller too.
    eager: bool,
    /// Its end was taken: the reader of replies (or whoever ended it)
    /// took it out of the table then, and there is nothing to forget.
    taken: bool,
}

impl PendingCall<'_> {
    /// The call's end. Waiting quietly (`attention` given, and a line to
    /// write to given to [`Worker::send`]), a reply written for the caller
    /// does not wake it: `attention` does, and the call is found ended.
    pub(crate) fn poll_end(
        &mut self,
        cx: &mut std::task::Context<'_>,
        attention: Option<&dyn Attention>,
    ) -> std::task::Poll<Ended> {
        use std::task::Poll;
        let polled = match self.slot.poll_end(cx, self.eager) {
            Poll::Ready(end) => Poll::Ready(end),
            Poll::Pending => match attention {
                Some(attention) if !self.eager => {
                    if attention.poll_wanted(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.eager = true;
                    self.slot.poll_end(cx, true)
                }
                _ => Poll::Pending,
            },
        };
        self.taken |= polled.is_ready();
        polled
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        // A call ends in its slot only once out of the table (see
        // `InFlight::end`): one lock of the table per call, not two.
        if self.taken {
            return;
        }
        self.slot.leave();
        self.worker.forget(self.id);
    }
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a call (a frame made by [`frame::call`]); the frame back when
    /// the worker takes no calls any more (it was never sent: try the next).
    /// The call ends by `deadline` at the latest (give or take
    /// [`SWEEP_GAP`]): [`Worker::sweep_deadlines`] ends it with
    /// [`Outcome::TimedOut`] then. A reply that only sends the caller
    /// messages is written to `line`, if given, by the reader of replies.
    pub(crate) fn send(
        &self,
        handler: u32,
        connection: ConnectionId,
        mut bytes: Vec<u8>,
        (deadline, timeout): (tokio::time::Instant, Duration),
        line: Option<Arc<dyn ReplyLine>>,
    ) -> Result<PendingCall<'_>, Vec<u8>> {
        let slot = Arc::new(Slot::default());
        // One lock for the table and the ring: each call is entered and
        // pushed in one go (ids in the ring's order), and two runtime
        // threads sending at once pass one cache line between them, not
        // three.
        let (id, wake_sweeper, pushed) = {
            let mut calls = self.lock();
            if !calls.open {
                return Err(bytes);
            }
            let id = calls.next_id;
            calls.next_id += 1;
            frame::set_call_id(&mut bytes, id);
            let call = InFlight {
                handler,
                connection,
                deadline,
                timeout,
                slot: Some(slot.clone()),
                line,
            };
            calls.waiting.insert(id, call);
            let wake_sweeper = match calls.sweeper_wakes {
                Some(wakes) if wakes <= deadline => false,
                _ => {
                    calls.sweeper_wakes = Some(deadline);
                    true
                }
            };
            // Through the ring when it has room, else the socket; a failed
            // send is answered when the channel's end is noticed.
            (id, wake_sweeper, calls.ring.push(&bytes))
        };
        if wake_sweeper {
            self.sooner.notify_one();
        }
        match pushed {
            Pushed::Done => {}
            Pushed::Wake => self.ring_for_push(),
            Pushed::Full => self.queue(bytes),
        }
        Ok(PendingCall {
            worker: self,
            id,
            slot,
            eager: false,
            taken: false,
        })
    }

    /// Wakes the worker for a call pushed while it slept: at once when the
    /// reader of replies sleeps too (an idle server: no call waits), else
    /// at that reader's next round, once the runtime has run the tasks
    /// ready now. Those push their calls meanwhile, and the worker wakes
    /// once to all of them: a bell wakes another core, which costs its
    /// writer about 8 µs on a small virtual machine.
    fn ring_for_push(&self) {
        self.bell_owed.store(true, Ordering::SeqCst);
        // Paired with `set_reader_awake(false)`: the reader sees the debt,
        // or this sees the reader asleep, or both.
        if !self.reader_awake.load(Ordering::SeqCst) {
            self.ring_owed_bell();
        }
    }

    /// Rings the worker's bell if a push owes it (the reader of replies
    /// calls this each round).
    pub(crate) fn ring_owed_bell(&self) {
        if self.bell_owed.load(Ordering::Relaxed) && self.bell_owed.swap(false, Ordering::SeqCst) {
            ring::ring_bell(self.to_worker.as_raw_fd());
        }
    }

    /// The reader of replies is awake (it rings owed bells each round) or
    /// is going to sleep (it rings what is owed now, and pushes ring for
    /// themselves).
    pub(crate) fn set_reader_awake(&self, awake: bool) {
        self.reader_awake.store(awake, Ordering::SeqCst);
        if !awake && self.bell_owed.swap(false, Ordering::SeqCst) {
            ring::ring_bell(self.to_worker.as_raw_fd());
        }
    }

    /// Forgets a call; kills a draining worker once it was the last one.
    fn forget(&self, id: u64) {
        let (forgotten, idle) = {
            let mut calls = self.lock();
            let forgotten = calls.waiting.remove(&id);
            (forgotten, calls.draining && calls.waiting.is_empty())
        };
        // Dropped outside the lock: its caller is gone, nothing is woken.
        drop(forgotten);
        if idle {
            self.kill.notify_one();
        }
    }

    /// A reply arrived; the caller's slot when its wake-up is put off (see
    /// [`super::slot::Owed`]).
    #[must_use]
    pub(crate) fn complete(&self, reply: frame::Reply<'_>) -> Option<Arc<Slot>> {
        let (waiter, idle) = {
            let mut calls = self.lock();
            let waiter = calls.waiting.remove(&reply.call_id);
            (waiter, calls.draining && calls.waiting.is_empty())
        };
        if idle {
            self.kill.notify_one();
        }
        waiter.and_then(|call| call.end((reply.outcome, Some(reply.ran_for))))
    }

    /// Ends the calls past their deadline with [`Outcome::TimedOut`], and
    /// drains the worker if there were any: the next worker takes new
    /// calls at once, and this one is killed as soon as no other call is
    /// in flight on it (each of them has a deadline of its own, so that is
    /// within one handler timeout at most). The other calls on it are not
    /// lost to one stuck call. When the next deadline is, if any call is in
    /// flight.
    fn sweep(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let (overdue, next, first, idle) = {
            let mut calls = self.lock();
            let late: Vec<u64> = calls
                .waiting
                .iter()
                .filter(|(_, call)| call.deadline <= now)
                .map(|(&id, _)| id)
                .collect();
            let overdue: Vec<InFlight> = late
                .iter()
                .filter_map(|id| calls.waiting.remove(id))
                .collect();
            let next = calls.waiting.values().map(|call| call.deadline).min();
            let mut first = false;
            if !overdue.is_empty() {
                calls.open = false;
                first = !std::mem::replace(&mut calls.draining, true);
            }
            calls.sweeper_wakes = next;
            (
                overdue,
                next,
                first,
                calls.draining && calls.waiting.is_empty(),
            )
        };
        if first {
            self.killed.store(true, Ordering::Relaxed);
            self.drain.notify_one();
        }
        for call in overdue {
            let timeout = call.timeout;
            call.fail(Outcome::TimedOut(timeout));
        }
        if idle {
            self.kill.notify_one();
        }
        next
    }

    /// Ends every call in flight past its deadline, for as long as the
    /// worker's process runs: one timer per worker, set to the earliest
    /// deadline, rather than one per call. Under load the earliest
    /// deadline belongs to a call that is long answered when it comes, so
    /// this wakes about once per handler timeout. Sweeps are at least
    /// [`SWEEP_GAP`] apart, so a worker that answers each call just before
    /// its deadline cannot make the server look through its table for
    /// every call; a deadline is kept that much late at most.
    pub(crate) async fn sweep_deadlines(&self) -> std::convert::Infallible {
        loop {
            let sooner = self.sooner.notified();
            let mut sooner = std::pin::pin!(sooner);
            sooner.as_mut().enable();
            let now = tokio::time::Instant::now();
            match self.sweep(now) {
                Some(next) => {
                    let next = next.max(now + SWEEP_GAP);
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        () = sooner => {}
                    }
                }
                None => sooner.await,
            }
        }
    }

    /// The channel has ended: every call in flight gets [`Outcome::Crashed`],
    /// and no call is taken any more. The handlers of the calls there were.
    pub(crate) fn fail_all(&self) -> Vec<u32> {
        let waiting = {
            let mut calls = self.lock();
            calls.open = false;
            std::mem::take(&mut calls.waiting)
        };
        let mut handlers = Vec::with_capacity(waiting.len());
        for (_, call) in waiting {
            handlers.push(call.handler);
            call.fail(Outcome::Crashed);
        }
        handlers
    }

    /// The connection a call in flight is for: whom a question of the
    /// plugin's during that call is about.
    pub(crate) fn caller_of(&self, call_id: u64) -> Option<ConnectionId> {
        self.lock()
            .waiting
            .get(&call_id)
            .map(|call| call.connection)
    }

    /// Queues a frame for the worker.
    fn queue(&self, bytes: Vec<u8>) {
        let _ = self.out.send(bytes);
    }

    /// Takes one more question of the worker to answer; `Err` says why the
    /// worker is not to be answered any more (it is ended).
    pub(crate) fn begin_ask(&self) -> Result<(), String> {
        if self.unread.load(Ordering::Relaxed) > MAX_UNREAD_ANSWERS {
            return Err(format!(
                "it asked again with more than {MAX_UNREAD_ANSWERS} answers not read"
            ));
        }
        if self.asks.fetch_add(1, Ordering::Relaxed) >= MAX_ASKS {
            self.asks.fetch_sub(1, Ordering::Relaxed);
            return Err(format!("more than {MAX_ASKS} questions at once"));
        }
        Ok(())
    }

    /// Sends the answer to a question taken with [`Worker::begin_ask`] (a
    /// [`frame::ANSWER`]).
    pub(crate) fn answer(&self, bytes: Vec<u8>) {
        self.unread.fetch_add(1, Ordering::Relaxed);
        self.queue(bytes);
        self.asks.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether any call was ever sent to it.
    pub(crate) fn ever_called(&self) -> bool {
        self.lock().next_id > 1
    }

    /// Whether the host killed it (rather than it crashing).
    pub(crate) fn was_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Resolves when a draining worker has no call in flight any more.
    pub(crate) async fn kill_requested(&self) {
        self.kill.notified().await
    }

    /// Resolves when a call ran past its timeout: the worker is to be
    /// replaced.
    pub(crate) async fn drain_requested(&self) {
        self.drain.notified().await
    }

    /// Closes the host's side: the worker finishes and exits.
    pub(crate) fn close(&self) {
        let _ = self.out.send(Vec::new());
    }
}
