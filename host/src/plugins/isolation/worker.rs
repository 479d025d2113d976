//! The worker process: `rohrpost --plugin-worker`, started by the host with
//! the plugin's shadow copy open on descriptor 3 and its end of the channel
//! on descriptor 4. It loads the library from `/proc/self/fd/3` exactly as
//! the host would (`lib_header_from_path` + `init_root_module`), reports
//! the manifest, configures the plugin when told to, and then runs calls:
//! the same entry point with the same `Call` and the same effects list as
//! in the host's own process, so a plugin cannot tell which mode runs it.
//!
//! Threads: the main thread takes calls from the ring of calls (and frames
//! from the socket) and runs inline handlers right away (the hand-off to
//! another thread would cost more than ping itself); each reply goes into
//! the ring of replies at once, without a system call unless the server
//! sleeps (see [`super::ring`]). Pooled handlers run on a pool that grows on
//! demand (the host bounds the calls per plugin). A small thread watches
//! the parent: when the host is gone the worker exits, even while a handler
//! loops on the main thread.
//!
//! The worker exits with `_exit` when its channel ends: no destructors or
//! `atexit` handlers of the plugin run, so nothing of the plugin can hang
//! or crash on the way out.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    io::{BufReader, ErrorKind, Read, Write},
    os::{
        fd::{FromRawFd, RawFd},
        unix::net::UnixStream,
    },
    path::Path,
    sync::{mpsc, Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use abi_stable::{
    library::lib_header_from_path,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use rohrpost_plugin_api::abi::{Call, CallOutcome, PluginModRef, EXT_CONFIGURE};

use super::{
    frame::{self, Reader},
    jail::{self, Spec},
    ring::{self, Pushed, Shared},
};
use crate::{
    plugins::hooks::{self, Hook},
    plugins::manifest::{library_error, LoadError, ManifestInfo},
};

/// The descriptor the library is open on.
pub(crate) const LIBRARY_FD: RawFd = 3;
/// The descriptor of the worker's end of the channel.
pub(crate) const CHANNEL_FD: RawFd = 4;
/// The argument that starts the worker mode.
pub(crate) const ARG: &str = "--plugin-worker";

/// Codes of a [`frame::LOAD_FAILED`] frame.
pub(crate) const LOAD_OPEN: u8 = 0;
pub(crate) const LOAD_NO_ROOT: u8 = 1;
pub(crate) const LOAD_INCOMPATIBLE: u8 = 2;
pub(crate) const LOAD_INIT: u8 = 3;

/// Codes of a [`frame::CONFIGURED`] frame.
pub(crate) const CONFIG_OK: u8 = 0;
pub(crate) const CONFIG_REFUSED: u8 = 1;

/// Ends the worker at once: nothing of the plugin runs on the way out.
fn exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// The argument of a probe: the worker enters its jail, prints what the
/// kernel lacked (one line, empty when nothing) and exits.
pub(crate) const PROBE_ARG: &str = "--probe";

/// The worker's main; never returns.
pub(crate) fn run() -> ! {
    let spec = match Spec::from_args(std::env::args_os().skip(2)) {
        Ok(spec) => spec,
        Err(_) => exit(2),
    };
    if std::env::args_os().any(|a| a == PROBE_ARG) {
        probe(&spec);
    }
    // Only the standard streams, the library and the channel: nothing
    // else of the server's reaches the plugin, whatever it left open.
    // SAFETY: close_range on descriptors this process owns.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            ring::TO_HOST_FD as u32 + 1,
            u32::MAX,
            0u32,
        );
    }
    // SAFETY: the host started this process with its channel on this
    // descriptor, and nothing else in this process owns it.
    let channel = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    // Neither descriptor goes to processes the plugin may start.
    // SAFETY: fcntl on descriptors this process owns.
    unsafe {
        for fd in [
            CHANNEL_FD,
            LIBRARY_FD,
            ring::SHARED_FD,
            ring::TO_WORKER_FD,
            ring::TO_HOST_FD,
        ] {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    // The rings, mapped before the jail: calls come in through one,
    // replies go out through the other (see `ring`).
    let shared = match Shared::map(ring::SHARED_FD) {
        Ok(shared) => Arc::new(shared),
        Err(_) => exit(2),
    };
    // SAFETY: closing a descriptor this process owns; the mapping stays.
    unsafe {
        libc::close(ring::SHARED_FD);
    }
    let _ = REPLIES.set(Mutex::new(ring::Writer::new(shared.replies())));
    let out = Arc::new(Mutex::new(match channel.try_clone() {
        Ok(out) => out,
        Err(_) => exit(2),
    }));
    let entered = match jail::enter(&spec) {
        Ok(entered) => entered,
        Err(e) => {
            send(
                &out,
                &frame::coded(frame::LOAD_FAILED, LOAD_INIT, &e.to_string()),
            );
            exit(0);
        }
    };
    // Outside a PID namespace the worker watches its parent itself.
    if !entered.pid_namespace {
        watch_parent();
    }
    // The process id the host knows this process by: /proc is the
    // host's, whatever PID namespace this process is in.
    let pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or_else(std::process::id);
    send(&out, &frame::started(pid, &entered.missing.join("; ")));
    let library = format!("/proc/self/fd/{LIBRARY_FD}");
    let module = match lib_header_from_path(Path::new(&library))
        .and_then(|header| header.init_root_module::<PluginModRef>())
    {
        Ok(module) => module,
        Err(error) => {
            let error = library_error(error);
            let code = match error {
                LoadError::Open(_) => LOAD_OPEN,
                LoadError::NoRootModule => LOAD_NO_ROOT,
                LoadError::Incompatible(_) => LOAD_INCOMPATIBLE,
                _ => LOAD_INIT,
            };
            let text = match error {
                LoadError::Open(t) | LoadError::Incompatible(t) | LoadError::Init(t) => t,
                other => other.to_string(),
            };
            send(&out, &frame::coded(frame::LOAD_FAILED, code, &text));
            exit(0);
        }
    };
    // The mapping stays; the descriptor is not needed any more.
    // SAFETY: closing a descriptor this process owns and no longer uses.
    unsafe {
        libc::close(LIBRARY_FD);
    }
    let mut manifest = ManifestInfo::of(&(module.manifest())());
    let _ = OUT.set(out.clone());
    let ask = (worker_ask as rohrpost_plugin_api::abi::HostAsk as usize).to_string();
    manifest.hooks = crate::plugins::manifest::introduce(module, &ask);
    send(&out, &frame::hello(&manifest));
    serve(
        module,
        &manifest,
        channel,
        out,
        ring::Reader::new(shared.calls()),
    )
}

/// Enters the jail `spec` describes and prints what was missing.
fn probe(spec: &Spec) -> ! {
    match jail::enter(spec) {
        Ok(entered) => {
            println!("{}", entered.missing.join("; "));
            exit_flushed(0)
        }
        Err(e) => {
            println!("{e}");
            exit_flushed(1)
        }
    }
}

fn exit_flushed(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    exit(code)
}

/// Where questions go (the channel's writing end).
static OUT: OnceLock<Arc<Mutex<UnixStream>>> = OnceLock::new();

/// Where replies go first: the ring of replies.
static REPLIES: OnceLock<Mutex<ring::Writer>> = OnceLock::new();

/// The threads waiting for an answer from the host, by call.
static WAITERS: Mutex<Option<Waiters>> = Mutex::new(None);

/// Where each waiting call's answer goes.
type Waiters = HashMap<u64, mpsc::Sender<Result<String, String>>>;

thread_local! {
    /// The call running on this thread.
    static CALL_ID: Cell<Option<u64>> = const { Cell::new(None) };
    /// The main thread's channel reader and the frames it read while an
    /// inline call waited for an answer; empty on other threads.
    static INPUT: RefCell<Option<BufReader<UnixStream>>> = const { RefCell::new(None) };
    static DEFERRED: RefCell<VecDeque<Vec<u8>>> = const { RefCell::new(VecDeque::new()) };
    /// This thread's buffer for replies: one allocation for all of them.
    static REPLY: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Bytes of a reply buffer kept for the next reply.
const KEPT_REPLY: usize = 16 * 1024;

fn waiters() -> std::sync::MutexGuard<'static, Option<Waiters>> {
    WAITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands an [`frame::ANSWER`] to the pool thread waiting for it.
fn route_answer(body: &[u8]) {
    let Ok((call_id, answered)) = frame::read_answer(&mut Reader::new(&body[1..])) else {
        exit(2)
    };
    if let Some(waiter) = waiters().as_mut().and_then(|w| w.remove(&call_id)) {
        let _ = waiter.send(answered);
    }
}

/// The worker's [`HostAsk`](rohrpost_plugin_api::abi::HostAsk): the
/// question goes to the host with the running call's id, and the thread
/// waits for the answer. On the main thread (an inline call) it reads the
/// channel itself meanwhile, keeping the other frames for later.
extern "C" fn worker_ask(question: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString> {
    let Some(call_id) = CALL_ID.with(Cell::get) else {
        return RErr(rohrpost_plugin_api::abi::ASK_OUTSIDE_CALL.into());
    };
    let Some(out) = OUT.get() else {
        return RErr("the worker has no channel".into());
    };
    let on_main = INPUT.with(|input| input.borrow().is_some());
    let answered = if on_main {
        send(out, &frame::ask(call_id, question.as_str(), input.as_str()));
        loop {
            let body = INPUT.with(|input| match input.borrow_mut().as_mut() {
                Some(reader) => read_body(reader),
                None => exit(2),
            });
            match body.first() {
                Some(&frame::ANSWER) => {
                    let Ok((id, answered)) = frame::read_answer(&mut Reader::new(&body[1..]))
                    else {
                        exit(2)
                    };
                    if id == call_id {
                        break answered;
                    }
                    if let Some(waiter) = waiters().as_mut().and_then(|w| w.remove(&id)) {
                        let _ = waiter.send(answered);
                    }
                }
                _ => DEFERRED.with(|d| d.borrow_mut().push_back(body)),
            }
        }
    } else {
        let (tx, rx) = mpsc::channel();
        waiters()
            .get_or_insert_with(HashMap::new)
            .insert(call_id, tx);
        send(out, &frame::ask(call_id, question.as_str(), input.as_str()));
        rx.recv()
            .unwrap_or_else(|_| Err("the host did not answer".to_owned()))
    };
    match answered {
        Ok(text) => ROk(text.into()),
        Err(text) => RErr(text.into()),
    }
}

/// Reads one frame's body (tag first); the end of the channel ends the
/// worker.
fn read_body(input: &mut BufReader<UnixStream>) -> Vec<u8> {
    let mut head = [0; 4];
    loop {
        match input.read_exact(&mut head) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => exit(0),
        }
    }
    let Ok(len) = frame::body_len(head) else {
        exit(2)
    };
    let mut body = vec![0; len];
    if input.read_exact(&mut body).is_err() {
        exit(0);
    }
    body
}

/// Exits when the process that started the worker is gone (the worker is
/// then adopted by another). Polling: a parent-death signal would follow
/// the host's thread that started the worker, not the host.
fn watch_parent() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let _ = std::thread::Builder::new()
        .name("parent-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            // SAFETY: as above.
            if unsafe { libc::getppid() } != parent {
                exit(0);
            }
        });
}

/// Sends a reply made by [`run_call`] and keeps its buffer for the next.
fn reply(out: &Mutex<UnixStream>, bytes: Vec<u8>) {
    send_reply(out, &bytes);
    if bytes.capacity() <= KEPT_REPLY {
        REPLY.set(bytes);
    }
}

/// Sends one reply: through the ring of replies, waking the server if it
/// sleeps, or through the socket when the ring has no room.
fn send_reply(out: &Mutex<UnixStream>, bytes: &[u8]) {
    if let Some(replies) = REPLIES.get() {
        let pushed = replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(bytes);
        match pushed {
            Pushed::Done => return,
            Pushed::Wake => return ring::ring_bell(ring::TO_HOST_FD),
            Pushed::Full => {}
        }
    }
    send(out, bytes);
}

/// Whether the channel has bytes to read now (buffered or in the socket).
fn channel_readable() -> bool {
    let buffered = INPUT.with(|input| {
        input
            .borrow()
            .as_ref()
            .is_some_and(|reader| !reader.buffer().is_empty())
    });
    buffered || wait_readable(&[CHANNEL_FD], 0)
}

/// Waits up to `timeout_ms` (-1: for ever) for one of `fds` to be
/// readable (or closed).
fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> bool {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: poll reads and writes the array it is given, of its length.
        let n = unsafe {
            libc::poll(
                polled.as_mut_ptr(),
                polled.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n >= 0 {
            return n > 0;
        }
        if std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            exit(2);
        }
    }
}

/// Writes one frame; a channel that is gone ends the worker.
fn send(out: &Mutex<UnixStream>, bytes: &[u8]) {
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    if out.write_all(bytes).is_err() {
        exit(0);
    }
}

/// Looks at the ring of calls for a short while; whether a call came.
fn spin_for(calls: &ring::Reader) -> bool {
    let until = Instant::now() + SPIN;
    loop {
        for _ in 0..64 {
            if calls.has_more() {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() > until {
            return false;
        }
    }
}

/// How long the worker looks for a next call before it sleeps.
///
/// Measured on the 2-core machine at 100 connections, the worker's CPU
/// per reply was 2.9 µs looking 5 µs against 3.2 µs looking 20 µs, the
/// server's the same. Napping instead of sleeping (a `ppoll` of 50 to
/// 100 µs that the server does not ring for, taken once a wait brought 2
/// to 8 calls) saved up to 0.8 µs more at 100 connections, but doubled
/// the latency at 4 connections and cost 10% of the throughput at 16: a
/// closed-loop client then waits a nap per call. So the worker sleeps.
const SPIN: Duration = Duration::from_micros(5);

/// Frames taken from the ring of calls before the socket is looked at.
const RING_ROUND: usize = 64;

/// Reads frames, from the ring of calls and the socket, until the channel
/// ends.
fn serve(
    module: PluginModRef,
    manifest: &ManifestInfo,
    channel: UnixStream,
    out: Arc<Mutex<UnixStream>>,
    mut calls: ring::Reader,
) -> ! {
    INPUT.with(|input| *input.borrow_mut() = Some(BufReader::with_capacity(64 * 1024, channel)));
    let pool = Pool::new(module, out.clone());
    let mut from_ring = 0;
    loop {
        if let Some(body) = DEFERRED.with(|d| d.borrow_mut().pop_front()) {
            take(&body, module, manifest, &out, &pool);
            continue;
        }
        if from_ring < RING_ROUND {
            match calls.pop() {
                Ok(Some(body)) => {
                    from_ring += 1;
                    take(body, module, manifest, &out, &pool);
                    continue;
                }
                Ok(None) => {}
                Err(_) => exit(2),
            }
        }
        // The ring is empty (or gave a round's worth). The server sends the
        // next call within microseconds under load: look a while before
        // looking at the socket (a system call) or sleeping (a wake-up).
        // The socket waits for a round or the end of the spin at most.
        if from_ring < RING_ROUND && spin_for(&calls) {
            continue;
        }
        from_ring = 0;
        if !channel_readable() {
            if calls.sleep() {
                wait_readable(&[CHANNEL_FD, ring::TO_WORKER_FD], -1);
                ring::take_bell(ring::TO_WORKER_FD);
                calls.wake();
            }
            continue;
        }
        let body = INPUT.with(|input| match input.borrow_mut().as_mut() {
            Some(reader) => read_body(reader),
            None => exit(2),
        });
        take(&body, module, manifest, &out, &pool);
    }
}

/// Does what one frame from the server says.
fn take(
    body: &[u8],
    module: PluginModRef,
    manifest: &ManifestInfo,
    out: &Mutex<UnixStream>,
    pool: &Pool,
) {
    let Some((&tag, rest)) = body.split_first() else {
        exit(2)
    };
    let mut r = Reader::new(rest);
    match tag {
        frame::CALL => {
            let Ok(call) = frame::read_call(&mut r) else {
                exit(2)
            };
            if call.inline {
                reply(out, run_call(module, &call));
            } else {
                pool.submit(body.to_vec());
            }
        }
        frame::ANSWER => route_answer(body),
        frame::CONFIGURE => {
            let Ok(config) = r.str() else { exit(2) };
            let answer = (module.extension())(EXT_CONFIGURE.into(), config.into());
            let (code, text) = match answer.into_result() {
                Ok(warnings) => (CONFIG_OK, warnings.into_string()),
                Err(e) => (CONFIG_REFUSED, e.into_string()),
            };
            send(out, &frame::coded(frame::CONFIGURED, code, &text));
            if code == CONFIG_OK {
                send(out, &frame::hello(&manifest.reread(&(module.manifest())())));
            }
        }
        _ => exit(2),
    }
}

/// Runs one call; its [`frame::REPLY`].
fn run_call(module: PluginModRef, call: &frame::IncomingCall<'_>) -> Vec<u8> {
    let abi_call = Call {
        frame: call.frame.into(),
        id: call.id.into(),
        kind: call.kind.into(),
        data: call.data.into(),
        scope: call.scope.into(),
    };
    let started = Instant::now();
    let before = CALL_ID.with(|c| c.replace(Some(call.call_id)));
    let outcome: CallOutcome = match Hook::of_number(call.handler) {
        Some(hook) => {
            let answer = (module.extension())(hook.extension().into(), call.frame.into())
                .into_result()
                .map(RString::into_string)
                .map_err(RString::into_string);
            hooks::outcome(answer)
        }
        None => (module.call())(call.handler, &abi_call),
    };
    CALL_ID.with(|c| c.set(before));
    frame::reply_in(REPLY.take(), call.call_id, started.elapsed(), &outcome)
}

/// Threads for pooled calls, started when none is idle.
struct Pool {
    jobs: mpsc::Sender<Vec<u8>>,
    shared: Arc<PoolShared>,
}

struct PoolShared {
    module: PluginModRef,
    out: Arc<Mutex<UnixStream>>,
    queue: Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Threads waiting for a job.
    idle: std::sync::atomic::AtomicUsize,
}

impl Pool {
    fn new(module: PluginModRef, out: Arc<Mutex<UnixStream>>) -> Self {
        let (jobs, queue) = mpsc::channel();
        Pool {
            jobs,
            shared: Arc::new(PoolShared {
                module,
                out,
                queue: Mutex::new(queue),
                idle: Default::default(),
            }),
        }
    }

    /// Queues a [`frame::CALL`] body; starts a thread when none is idle.
    fn submit(&self, body: Vec<u8>) {
        use std::sync::atomic::Ordering;
        if self.jobs.send(body).is_err() {
            exit(2);
        }
        let claimed = self
            .shared
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if claimed {
            return;
        }
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("plugin-pool".into())
            .spawn(move || shared.work());
        if started.is_err() {
            exit(2);
        }
    }
}

impl PoolShared {
    fn work(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let job = {
                let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.recv()
            };
            let Ok(body) = job else { return };
            let Ok(call) = frame::read_call(&mut Reader::new(&body[1..])) else {
                exit(2)
            };
            reply(&self.out, run_call(self.module, &call));
            self.idle.fetch_add(1, Ordering::AcqRel);
        }
    }
}
