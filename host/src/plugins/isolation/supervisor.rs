//! Keeps one plugin version's worker running: watches it, answers the calls
//! a dead worker leaves behind, and starts the next one.
//!
//! How the host knows a worker is alive: it is its child (the exit status
//! says how it ended: signal or exit code) and it holds the other end of
//! the channel (its end means the worker is gone, or broke the protocol
//! and is killed). A worker that stops answering is noticed by its calls:
//! one past the handler timeout gets the timeout reply, a new worker takes
//! the calls from then on, and the stuck one is killed as soon as its other
//! calls in flight have ended (each within its own deadline); a stuck
//! worker with no call in flight harms no one.
//!
//! After a crash, the next worker starts at once the first time, then with
//! a backoff that doubles (from 25 ms, up to 5 s) while workers keep dying
//! young; a worker that lived a minute resets it. A worker that dies or is
//! refused before it is ready, or dies before any call was sent to it (a
//! crash no client can have caused), counts as a failed start; after
//! [`START_ATTEMPTS`] of them in a row the plugin is marked failed, with the
//! last reason, and its types answer an error until a new version is
//! deployed, rather than restarting forever.
//!
//! What a crash loses: only the calls in flight on that worker (each gets
//! the crash reply). Group membership and everything else about a
//! connection live in the host, so nothing else changes; a plugin's own
//! in-memory state (statics) starts afresh in the new worker.
//!
//! Reload: a version's supervisor lives as long as its
//! [`super::WorkerHandle`], held by the registry and by each call running
//! on that version. Once a new version replaced it and its last call has
//! finished, the handle is dropped: the worker's channel is closed, it
//! exits, and its memory is returned.

use std::{
    fs::File,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::{plugins::asks::Answers, telemetry::metrics::WorkerMetrics};

use super::{
    channel::{self, read_frame, StartError, Starting, Worker, WorkerLimits},
    frame::{self, Reader},
    jail::Spec,
    ring,
    slot::Owed,
};

/// Failed starts in a row after which a plugin is marked failed.
pub(crate) const START_ATTEMPTS: u32 = 3;
/// How long a worker may take to load its library or its configuration.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a plugin version's worker stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WorkerState {
    Running,
    /// Between a worker's end and the next one's readiness.
    Restarting,
    /// Out of service: its worker keeps failing to start.
    Failed(String),
}

/// A snapshot for `/api/plugins`.
#[derive(Clone, Debug)]
pub(crate) struct WorkerStatus {
    pub state: WorkerState,
    pub pid: Option<u32>,
    pub crashes: u64,
    pub restarts: u64,
    pub kills: u64,
}

/// Why a call could not be given to a worker.
#[derive(Debug)]
pub(crate) enum Unavailable {
    /// The plugin is out of service.
    Failed,
    /// The version was retired (the server is stopping).
    Retired,
}

/// One plugin version's worker and what is known of its history.
pub(crate) struct Supervisor {
    pub name: String,
    pub version: String,
    pub types: Vec<String>,
    /// Each handler's types, by handler number.
    handler_types: Vec<Vec<String>>,
    /// The shadow copy every worker of this version loads.
    library: File,
    /// The jail each of its workers enters.
    jail: Spec,
    config: String,
    limits: WorkerLimits,
    current: ArcSwapOption<Worker>,
    state: Mutex<WorkerState>,
    /// Told whenever `current` or `state` changes.
    changed: Notify,
    retired: AtomicBool,
    crashes: AtomicU64,
    restarts: AtomicU64,
    kills: AtomicU64,
    metrics: WorkerMetrics,
    /// What the plugin's questions are answered from.
    answers: Arc<Answers>,
}

impl Supervisor {
    /// Takes over a worker that is ready and keeps one running from now on.
    pub(crate) fn start(
        starting: Starting,
        library: File,
        jail: Spec,
        config: String,
        limits: WorkerLimits,
        metrics: WorkerMetrics,
        answers: Arc<Answers>,
    ) -> Arc<Supervisor> {
        let manifest = &starting.manifest;
        let supervisor = Arc::new(Supervisor {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            types: manifest.identity().types,
            handler_types: manifest.handlers.iter().map(|(t, _)| t.clone()).collect(),
            library,
            jail,
            config,
            limits,
            current: ArcSwapOption::empty(),
            state: Mutex::new(WorkerState::Running),
            changed: Notify::new(),
            retired: AtomicBool::new(false),
            crashes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            metrics,
            answers,
        });
        tokio::spawn(supervisor.clone().supervise(starting));
        supervisor
    }

    fn set_state(&self, state: WorkerState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.changed.notify_waiters();
    }

    fn state(&self) -> WorkerState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The ready worker, if there is one now.
    pub(crate) fn ready(&self) -> Option<Arc<Worker>> {
        self.current.load_full()
    }

    /// The ready worker, waiting for one while it restarts.
    pub(crate) async fn worker(&self) -> Result<Arc<Worker>, Unavailable> {
        // Almost always there: no waiting in line for a change.
        if let Some(worker) = self.current.load_full() {
            return Ok(worker);
        }
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(worker) = self.current.load_full() {
                return Ok(worker);
            }
            if self.retired.load(Ordering::Relaxed) {
                return Err(Unavailable::Retired);
            }
            if let WorkerState::Failed(_) = self.state() {
                return Err(Unavailable::Failed);
            }
            changed.await;
        }
    }

    /// The version is out of service for good: its worker finishes what it
    /// has and exits, and no other starts.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        if let Some(worker) = self.current.swap(None) {
            worker.close();
        }
        self.changed.notify_waiters();
    }

    pub(crate) fn status(&self) -> WorkerStatus {
        WorkerStatus {
            state: self.state(),
            pid: self.current.load().as_ref().map(|w| w.pid),
            crashes: self.crashes.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            kills: self.kills.load(Ordering::Relaxed),
        }
    }

    /// Runs one worker after the other until retired or failed.
    async fn supervise(self: Arc<Self>, mut starting: Starting) {
        // Workers in a row that died young.
        let mut young = 0u32;
        // Workers in a row that died before their first call.
        let mut uncalled = 0u32;
        loop {
            let born = Instant::now();
            let (worker, cause, lost) = match self.run(starting).await {
                RunEnd::Ended {
                    worker,
                    cause,
                    lost,
                } => (worker, cause, lost),
                RunEnd::Drained => match self.restart(Duration::ZERO).await {
                    Some(next) => {
                        starting = next;
                        continue;
                    }
                    None => return,
                },
            };
            let in_flight = self.types_of(&lost);
            let lost = lost.len();
            if self.retired.load(Ordering::Relaxed) {
                debug!(plugin = %self.name, version = %self.version, pid = worker.pid,
                    status = %cause, "retired plugin worker exited");
                return;
            }
            if worker.was_killed() {
                // Its drain and its end came together.
                self.kills.fetch_add(1, Ordering::Relaxed);
                warn!(plugin = %self.name, version = %self.version, types = ?in_flight,
                    pid = worker.pid, cause = %cause, calls_lost = lost,
                    "plugin worker killed: a call ran past the handler timeout; starting a new one");
                self.live(
                    "killed",
                    &in_flight,
                    &format!("a call ran past the handler timeout ({cause})"),
                );
            } else {
                self.crashes.fetch_add(1, Ordering::Relaxed);
                self.metrics.crashes.inc();
                error!(plugin = %self.name, version = %self.version, types = ?in_flight,
                    pid = worker.pid, cause = %cause, calls_lost = lost,
                    "plugin worker crashed; starting a new one");
                self.live("crashed", &in_flight, &cause);
            }
            uncalled = if worker.ever_called() {
                0
            } else {
                uncalled + 1
            };
            if uncalled >= START_ATTEMPTS {
                let reason = format!("its worker process dies before its first call ({cause})");
                error!(plugin = %self.name, version = %self.version, types = ?self.types,
                    reason = %reason, attempts = START_ATTEMPTS,
                    "plugin worker fails at every start: the plugin is out of service until a new version is deployed");
                self.live("failed", &self.types, &reason);
                self.set_state(WorkerState::Failed(reason));
                return;
            }
            young = if born.elapsed() >= STABLE {
                1
            } else {
                young + 1
            };
            let backoff = match young {
                0 | 1 => Duration::ZERO,
                n => (FIRST_BACKOFF * 2u32.saturating_pow((n - 2).min(16))).min(MAX_BACKOFF),
            };
            match self.restart(backoff).await {
                Some(next) => starting = next,
                None => return,
            }
        }
    }

    /// The types of the handlers of calls in flight (the plugin's types
    /// when none was: the worker died between calls).
    fn types_of(&self, handlers: &[u32]) -> Vec<String> {
        let mut types: Vec<String> = handlers
            .iter()
            .filter_map(|h| self.handler_types.get(*h as usize))
            .flatten()
            .cloned()
            .collect();
        types.sort();
        types.dedup();
        if types.is_empty() {
            return self.types.clone();
        }
        types
    }

    /// Starts the next worker, with up to [`START_ATTEMPTS`] tries; `None`
    /// when retired meanwhile or failed for good.
    async fn restart(&self, mut backoff: Duration) -> Option<Starting> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            if self.retired.load(Ordering::Relaxed) {
                return None;
            }
            match self.start_one().await {
                Ok(starting) => {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    self.metrics.restarts.inc();
                    return Some(starting);
                }
                Err(e) => {
                    last = e.to_string();
                    warn!(plugin = %self.name, version = %self.version, reason = %last,
                        "plugin worker failed to start");
                }
            }
            backoff = (backoff * 2).clamp(FIRST_BACKOFF * 4, MAX_BACKOFF);
        }
        error!(plugin = %self.name, version = %self.version, types = ?self.types,
            reason = %last, attempts = START_ATTEMPTS,
            "plugin worker fails at every start: the plugin is out of service until a new version is deployed");
        self.live("failed", &self.types, &last);
        self.set_state(WorkerState::Failed(last));
        None
    }

    fn live(&self, event: &str, types: &[String], reason: &str) {
        self.metrics
            .events
            .worker_event(event, &self.name, &self.version, types, reason);
    }

    /// Whether a restarted worker's plugin, configured, serves the types
    /// the first one did, handler by handler.
    fn same_handlers(&self, manifest: &crate::plugins::manifest::ManifestInfo) -> bool {
        manifest.handlers.len() == self.handler_types.len()
            && manifest
                .handlers
                .iter()
                .zip(&self.handler_types)
                .all(|((types, _), first)| types == first)
    }

    /// One start: load, check it is the same plugin, configure.
    async fn start_one(&self) -> Result<Starting, StartError> {
        let mut starting =
            Starting::spawn(&self.library, self.limits, &self.jail, START_TIMEOUT).await?;
        if starting.manifest.name != self.name || starting.manifest.version != self.version {
            return Err(StartError::Channel(format!(
                "the worker loaded {} {}",
                starting.manifest.name, starting.manifest.version
            )));
        }
        match starting.configure(&self.config, START_TIMEOUT).await? {
            Ok(_) if !self.same_handlers(&starting.manifest) => Err(StartError::Channel(
                "the worker's plugin declared other message types".into(),
            )),
            Ok(_) => Ok(starting),
            Err(refused) => Err(StartError::Load(
                crate::plugins::manifest::LoadError::Config(refused),
            )),
        }
    }

    /// Serves with one worker until it ends, or until a call on it ran
    /// past its timeout (it is then drained, see
    /// [`Worker::sweep_deadlines`]).
    async fn run(self: &Arc<Self>, starting: Starting) -> RunEnd {
        let (worker, child, reader, writer) = starting.ready();
        let worker = Arc::new(worker);
        tokio::spawn(writer.run());
        if self.retired.load(Ordering::Relaxed) {
            worker.close();
        } else {
            self.current.store(Some(worker.clone()));
            self.set_state(WorkerState::Running);
            if self.restarts.load(Ordering::Relaxed) > 0 {
                info!(plugin = %self.name, version = %self.version, pid = worker.pid,
                    "plugin worker serves again");
                self.live("restarted", &[], &format!("pid {}", worker.pid));
            }
        }
        let mut watching = tokio::spawn(watch(
            worker.clone(),
            Arc::from(self.name.as_str()),
            self.answers.clone(),
            self.limits.max_effects,
            child,
            reader,
        ));
        let drained = tokio::select! {
            ended = &mut watching => Err(ended),
            () = worker.drain_requested() => Ok(()),
        };
        // Before anyone is told: no new call may reach this worker.
        self.take_out(&worker);
        match drained {
            Err(ended) => {
                let lost = worker.fail_all();
                let cause = ended.unwrap_or_else(|e| format!("unknown: {e}"));
                RunEnd::Ended {
                    worker,
                    cause,
                    lost,
                }
            }
            Ok(()) => {
                self.kills.fetch_add(1, Ordering::Relaxed);
                // The next worker starts now; this one finishes its other
                // calls and is killed (or dies) on its own time.
                let this = self.clone();
                tokio::spawn(async move {
                    let cause = watching.await.unwrap_or_else(|e| format!("unknown: {e}"));
                    let lost = worker.fail_all();
                    let in_flight = this.types_of(&lost);
                    warn!(plugin = %this.name, version = %this.version, types = ?in_flight,
                        pid = worker.pid, cause = %cause, calls_lost = lost.len(),
                        "plugin worker killed: a call ran past the handler timeout; a new worker took over");
                    this.live(
                        "killed",
                        &in_flight,
                        &format!("a call ran past the handler timeout ({cause})"),
                    );
                });
                RunEnd::Drained
            }
        }
    }

    /// A caller found `worker` closed to calls (draining, or its channel
    /// ended): new calls wait for the next worker from now on, rather than
    /// finding it again until the supervisor has taken it out.
    pub(crate) fn closed(&self, worker: &Arc<Worker>) {
        if self.swap_out(worker) && !self.retired.load(Ordering::Relaxed) {
            self.set_state(WorkerState::Restarting);
        }
    }

    /// `worker` takes no new calls: they wait for the next one.
    fn take_out(&self, worker: &Arc<Worker>) {
        self.swap_out(worker);
        if !self.retired.load(Ordering::Relaxed) {
            self.set_state(WorkerState::Restarting);
        }
    }

    /// Takes `worker` out of `current` if it is there; whether it was.
    fn swap_out(&self, worker: &Arc<Worker>) -> bool {
        let previous = self
            .current
            .compare_and_swap(&Some(worker.clone()), None::<Arc<Worker>>);
        previous
            .as_ref()
            .is_some_and(|previous| Arc::ptr_eq(previous, worker))
    }
}

/// How a worker's service ended.
enum RunEnd {
    /// It died or was killed; the handlers of the calls that were in flight.
    Ended {
        worker: Arc<Worker>,
        cause: String,
        lost: Vec<u32>,
    },
    /// A call ran past its timeout: it was taken out of service.
    Drained,
}

/// Watches a worker until it has exited; how it ended. A broken channel or
/// a kill request (a drained worker without calls) kills it. The calls'
/// deadlines are kept until then, also while its channel is closed and it
/// is given time to exit.
async fn watch(
    worker: Arc<Worker>,
    plugin: Arc<str>,
    answers: Arc<Answers>,
    max_effects: usize,
    child: tokio::process::Child,
    replies: channel::Replies,
) -> String {
    let watching = watch_until_exit(worker.clone(), plugin, answers, max_effects, child, replies);
    tokio::select! {
        how = watching => how,
        never = worker.sweep_deadlines() => match never {},
    }
}

async fn watch_until_exit(
    worker: Arc<Worker>,
    plugin: Arc<str>,
    answers: Arc<Answers>,
    max_effects: usize,
    mut child: tokio::process::Child,
    replies: channel::Replies,
) -> String {
    // The worker's process group: its child's id (the group it was
    // started in).
    let group = child.id().unwrap_or(0);
    let channel::Replies {
        socket: mut reader,
        ring: mut ring_reader,
        to_host,
    } = replies;
    let read = async {
        let from_ring = ring_replies(&worker, max_effects, &mut ring_reader, &to_host);
        tokio::select! {
            broke = from_ring => broke,
            ended = read_replies(&worker, &plugin, &answers, max_effects, &mut reader) => {
                // Replies it put in the ring before it closed the socket;
                // their callers are woken as `owed` drops.
                let mut owed = Owed::default();
                let now = std::time::Instant::now();
                match drain_ring(&worker, max_effects, &mut ring_reader, &mut owed, now) {
                    Ok(()) => ended,
                    Err(broke) => Some(broke),
                }
            }
        }
    };
    let mut read = std::pin::pin!(read);
    let mut reading = true;
    let mut broke = None;
    let status = loop {
        tokio::select! {
            broken = &mut read, if reading => {
                reading = false;
                broke = broken;
                // It closed the channel: gone, or about to be (its waiter
                // passes on how the worker ended first).
                // A worker that broke the protocol is killed at once; one
                // that closed the channel or was ended by its jail exits
                // by itself, and says how.
                let protocol = matches!(broke, Some(Broke::Channel(_)));
                if protocol || !exits_soon(&mut child).await {
                    let _ = child.start_kill();
                }
            }
            status = child.wait() => break status,
            () = worker.kill_requested() => { let _ = child.start_kill(); }
        }
    };
    // Whatever the plugin forked goes with it.
    channel::kill_group(group);
    if reading {
        // Replies it wrote before it died are still worth delivering, and
        // its last frame may say why it died (its jail ended it).
        let late = tokio::time::timeout(Duration::from_millis(100), &mut read).await;
        if let Ok(Some(Broke::Forbidden(call))) = late {
            broke = Some(Broke::Forbidden(call));
        }
    }
    let cause = match status {
        Ok(status) => channel::describe(status),
        Err(e) => format!("unknown: {e}"),
    };
    match broke {
        Some(Broke::Channel(why)) => format!("{cause}, killed for breaking the channel: {why}"),
        Some(Broke::Forbidden(call)) => {
            format!("{cause}: the sandbox ended it for a forbidden system call, {call}")
        }
        None => cause,
    }
}

/// How long a worker's process may take to exit after its channel ended.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Whether `child` exits within [`EXIT_GRACE`] (its status is kept for
/// the next `wait`).
pub(crate) async fn exits_soon(child: &mut tokio::process::Child) -> bool {
    tokio::time::timeout(EXIT_GRACE, child.wait()).await.is_ok()
}

/// Answers a plugin's question from its worker, about the connection of
/// the call it came with (none: an error answer), off the reading task.
/// `plugin` is the supervisor's, never what the worker says. A worker that
/// asks more at once than [`channel::MAX_ASKS`], or does not read its
/// answers, breaks the channel: `Err` says how.
fn answer_ask(
    worker: &Arc<Worker>,
    plugin: &Arc<str>,
    answers: &Arc<Answers>,
    ask: frame::Ask,
) -> Result<(), String> {
    worker.begin_ask()?;
    let caller = worker.caller_of(ask.call_id);
    let worker = worker.clone();
    let plugin = plugin.clone();
    let answers = answers.clone();
    tokio::spawn(async move {
        let answered = match caller {
            Some(connection) => {
                let (question, input) = (&ask.question, &ask.input);
                crate::plugins::asks::answer(&answers, question, input, connection, &plugin).await
            }
            None => Err(rohrpost_plugin_api::abi::ASK_OUTSIDE_CALL.to_owned()),
        };
        worker.answer(frame::answer(ask.call_id, &answered));
    });
    Ok(())
}

/// Why a worker's channel ended before the worker did.
enum Broke {
    /// It broke the protocol: how.
    Channel(String),
    /// Its jail ended it for this system call.
    Forbidden(String),
}

/// Delivers the replies in the worker's ring, sleeping on `to_host` when
/// there are none; returns only when the worker broke the ring.
async fn ring_replies(
    worker: &Arc<Worker>,
    max_effects: usize,
    ring: &mut ring::Reader,
    to_host: &std::os::fd::OwnedFd,
) -> Option<Broke> {
    use std::os::fd::AsRawFd;
    // SAFETY: `to_host` owns the descriptor and outlives `bell`, which
    // never closes or replaces it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            to_host.as_raw_fd(),
            tokio::io::Interest::READABLE,
        )
    };
    let bell = match registered {
        Ok(bell) => bell,
        Err(e) => return Some(Broke::Channel(format!("cannot wait for its replies: {e}"))),
    };
    let mut idle_rounds = 0;
    let _awake = ReaderAwake::new(worker);
    // Dropped before `_awake`: a caller's put-off wake-up is made however
    // this ends.
    let mut owed = Owed::default();
    loop {
        worker.ring_owed_bell();
        let now = std::time::Instant::now();
        if let Err(broke) = drain_ring(worker, max_effects, ring, &mut owed, now) {
            return Some(broke);
        }
        let wake_owed = owed.settle(now);
        if ring.has_more() {
            idle_rounds = 0;
            tokio::task::yield_now().await;
            continue;
        }
        // Busy workers answer within the time other tasks take to run:
        // a few turns of the runtime before sleeping save a wake-up per
        // reply.
        if idle_rounds < IDLE_ROUNDS {
            idle_rounds += 1;
            tokio::task::yield_now().await;
            continue;
        }
        idle_rounds = 0;
        worker.set_reader_awake(false);
        if !ring.sleep() {
            worker.set_reader_awake(true);
            // Others' tasks run between two rounds of a busy ring.
            tokio::task::yield_now().await;
            continue;
        }
        // Asleep, but not past a put-off wake-up: one timer per sleep
        // with callers owed one, none per call.
        let rung = match wake_owed {
            None => bell.readable().await,
            Some(due) => tokio::select! {
                rung = bell.readable() => rung,
                () = tokio::time::sleep_until(due.into()) => {
                    ring.wake();
                    worker.set_reader_awake(true);
                    continue;
                }
            },
        };
        match rung {
            Ok(mut ready) => {
                ring::take_bell(to_host.as_raw_fd());
                ready.clear_ready();
            }
            Err(e) => return Some(Broke::Channel(format!("cannot wait for its replies: {e}"))),
        }
        ring.wake();
        worker.set_reader_awake(true);
    }
}

/// Says the reader of replies is awake while it lives (it rings the
/// worker's owed bells each round), asleep once it is gone.
struct ReaderAwake<'w>(&'w Worker);

impl<'w> ReaderAwake<'w> {
    fn new(worker: &'w Worker) -> Self {
        worker.set_reader_awake(true);
        ReaderAwake(worker)
    }
}

impl Drop for ReaderAwake<'_> {
    fn drop(&mut self) {
        self.0.set_reader_awake(false);
    }
}

/// Delivers the replies in the worker's ring now, up to a round's worth;
/// the callers' wake-ups it puts off go to `owed`, as of `now`.
fn drain_ring(
    worker: &Arc<Worker>,
    max_effects: usize,
    ring: &mut ring::Reader,
    owed: &mut Owed,
    now: std::time::Instant,
) -> Result<(), Broke> {
    for _ in 0..ROUND {
        let body = match ring.pop() {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(garbage) => return Err(Broke::Channel(garbage.to_string())),
        };
        match body.split_first() {
            Some((&frame::REPLY, rest)) => {
                match frame::read_reply(&mut Reader::new(rest), max_effects) {
                    Ok(reply) => {
                        if let Some(slot) = worker.complete(reply) {
                            owed.push(slot, now);
                        }
                    }
                    Err(e) => return Err(Broke::Channel(e.to_string())),
                }
            }
            _ => {
                return Err(Broke::Channel(
                    "a frame in its ring that is no reply".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Turns of the runtime the reader of replies waits before sleeping.
const IDLE_ROUNDS: usize = 4;

/// Replies taken from a ring before other tasks get a turn.
const ROUND: usize = 256;

/// Delivers replies until the channel ends; why, if the worker broke it.
async fn read_replies(
    worker: &Arc<Worker>,
    plugin: &Arc<str>,
    answers: &Arc<Answers>,
    max_effects: usize,
    reader: &mut tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Option<Broke> {
    let broke = |e: &dyn std::fmt::Display| Some(Broke::Channel(e.to_string()));
    loop {
        match read_frame(reader).await {
            Ok(None) => return None,
            Err(e) => return broke(&e),
            Ok(Some((frame::REPLY, body))) => {
                match frame::read_reply(&mut Reader::new(&body), max_effects) {
                    // A reply too large for the ring is rare: its caller
                    // is woken at once.
                    Ok(reply) => {
                        if let Some(slot) = worker.complete(reply) {
                            slot.wake_if_unclaimed();
                        }
                    }
                    Err(e) => return broke(&e),
                }
            }
            Ok(Some((frame::ASK, body))) => match frame::read_ask(&mut Reader::new(&body)) {
                Ok(ask) => {
                    if let Err(why) = answer_ask(worker, plugin, answers, ask) {
                        return broke(&why);
                    }
                }
                Err(e) => return broke(&e),
            },
            Ok(Some((frame::FORBIDDEN, body))) => {
                return match channel::forbidden_call(&body) {
                    Ok(call) => Some(Broke::Forbidden(call)),
                    Err(e) => broke(&e),
                }
            }
            Ok(Some((tag, _))) => return broke(&format!("an unexpected frame {tag:#04x}")),
        }
    }
}
