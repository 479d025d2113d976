//! Plugins in worker processes (`isolation = "process"`, the default): a
//! segfault, an abort, a stack overflow, an `exit` or a hung call in a
//! plugin ends its worker, never the server.
//!
//! Design, one module each:
//! - [`worker`]: the worker process, `rohrpost --plugin-worker`, the same
//!   binary in another mode. It loads the library from the host's private
//!   shadow copy (handed over as an open descriptor) and calls the very
//!   entry point the host would call in its own process.
//! - [`frame`]: how calls, replies and the start-up conversation are
//!   framed on the channel (length-prefixed binary frames, calls tagged
//!   with an id so that many are in flight at once).
//! - [`channel`]: starting a worker and its start-up conversation, then
//!   the calls in flight, answered exactly once (reply or crash).
//! - [`supervisor`]: watching a worker, restarting it with backoff,
//!   marking a plugin failed that cannot start, retiring a replaced
//!   version's worker.
//!
//! One ABI for both modes: the worker hands the plugin the same `Call` and
//! sends back the same effects list, which the host turns back into the
//! same [`CallOutcome`] an in-process call returns; from there replies,
//! groups, close and notifications take the one path of
//! [`crate::effects`]. A plugin author writes the same code and cannot tell
//! which mode runs it.
//!
//! Which mode a plugin runs in is known only once its name is: every
//! library is first opened in a worker, which reports its manifest. For
//! `isolation = "none"` that worker is then let go and the host loads the
//! library itself; so a library whose constructor crashes is rejected
//! without ever reaching the server's process, in either mode.

pub mod channel;
pub mod frame;
pub mod supervisor;
pub mod worker;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use rohrpost_plugin_api::abi::CallOutcome;
use tokio::time::timeout_at;

pub use self::channel::WorkerLimits;
use self::{
    channel::{CallEnd, StartError, Starting},
    supervisor::{Supervisor, Unavailable, WorkerStatus, START_TIMEOUT},
};
use crate::{
    config::Isolation,
    plugins::files::shadow::ShadowDir,
    plugins::loaded::{self, Backend, LoadError, LoadedPlugin, Rejection},
};

/// A plugin version's worker, as its [`LoadedPlugin`] holds it. Dropped
/// with the last reference to that version (the registry's and those of
/// the calls running on it): the worker then exits.
pub struct WorkerHandle(Arc<Supervisor>);

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.0.retire();
    }
}

/// How a call through a worker ended.
pub enum Called {
    Replied {
        outcome: CallOutcome,
        ran_for: Duration,
    },
    /// The worker died with the call in flight.
    Crashed,
    /// Past the deadline; the worker was killed if the call was running.
    TimedOut,
    /// The plugin is marked failed.
    OutOfService,
}

impl WorkerHandle {
    /// Runs one call of `handler` (a frame from [`frame::call`]) by
    /// `deadline`.
    pub async fn call(
        &self,
        handler: u32,
        mut bytes: Vec<u8>,
        deadline: tokio::time::Instant,
        connection: crate::groups::ConnectionId,
    ) -> Called {
        loop {
            let worker = match timeout_at(deadline, self.0.worker()).await {
                Ok(Ok(worker)) => worker,
                Ok(Err(Unavailable::Failed)) => return Called::OutOfService,
                Ok(Err(Unavailable::Retired)) => return Called::Crashed,
                Err(_) => return Called::TimedOut,
            };
            let mut pending = match worker.send(handler, connection, bytes) {
                Ok(pending) => pending,
                Err(unsent) => {
                    // It died just now and was never sent this call: the
                    // next worker takes it.
                    bytes = unsent;
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            return match timeout_at(deadline, &mut pending.end).await {
                Ok(Ok(CallEnd::Replied { outcome, ran_for })) => {
                    Called::Replied { outcome, ran_for }
                }
                Ok(Ok(CallEnd::Crashed)) | Ok(Err(_)) => Called::Crashed,
                Err(_) => {
                    pending.time_out();
                    self.0.drain(&worker);
                    Called::TimedOut
                }
            };
        }
    }

    /// Where the worker stands, for `/api/plugins`.
    pub fn status(&self) -> WorkerStatus {
        self.0.status()
    }
}

/// How plugins are loaded.
pub struct LoadSettings {
    pub pool_size: usize,
    /// Each plugin's configuration (JSON text), by plugin name.
    pub tables: Arc<BTreeMap<String, String>>,
    pub isolation: Arc<BTreeMap<String, Isolation>>,
    pub limits: WorkerLimits,
}

/// Loads the plugin whose file content is `bytes` (read from `file`): in a
/// worker, or, for `isolation = "none"`, in this process.
pub async fn load(
    file: &Path,
    bytes: Vec<u8>,
    shadow: Arc<ShadowDir>,
    settings: &LoadSettings,
    metrics: impl FnOnce(&str) -> crate::telemetry::metrics::WorkerMetrics,
) -> Result<LoadedPlugin, Rejection> {
    let library = {
        let (file, shadow) = (file.to_owned(), shadow.clone());
        let bytes = Arc::new(bytes);
        let copy = bytes.clone();
        let library =
            tokio::task::spawn_blocking(move || loaded::shadow_file(&file, &copy, &shadow))
                .await
                .map_err(|e| LoadError::Init(e.to_string()))??;
        (library, bytes)
    };
    let (library, bytes) = library;
    let started = Instant::now();
    let mut starting = Starting::spawn(&library, settings.limits, START_TIMEOUT)
        .await
        .map_err(start_error)?;
    let manifest = starting.manifest.clone();
    manifest.check_identity()?;
    let isolation = settings
        .isolation
        .get(&manifest.name)
        .copied()
        .unwrap_or_default();
    if isolation == Isolation::None {
        drop(starting);
        let (file, tables, pool_size) =
            (file.to_owned(), settings.tables.clone(), settings.pool_size);
        return tokio::task::spawn_blocking(move || {
            loaded::load(&file, &bytes, &shadow, pool_size, &tables)
        })
        .await
        .map_err(|e| LoadError::Init(e.to_string()))?;
    }
    let config = loaded::config_of(&settings.tables, &manifest.name).to_owned();
    let answer = starting
        .configure(&config, START_TIMEOUT)
        .await
        .map_err(|e| Rejection {
            identity: Some(manifest.identity()),
            error: start_error(e).error,
        })?;
    loaded::configured(
        &manifest,
        answer,
        settings.tables.contains_key(&manifest.name),
    )?;
    // As the worker read it after the configuration.
    let manifest = starting.manifest.clone();
    let handlers = manifest.check()?;
    tracing::debug!(plugin = %manifest.name, pid = starting.child.id().unwrap_or(0),
        took_ms = started.elapsed().as_millis() as u64, "plugin worker started");
    let supervisor = Supervisor::start(
        starting,
        library,
        config,
        settings.limits,
        metrics(&manifest.name),
    );
    Ok(LoadedPlugin::new(
        file,
        manifest,
        handlers,
        settings.pool_size,
        Backend::Worker(WorkerHandle(supervisor)),
    ))
}

fn start_error(e: StartError) -> Rejection {
    Rejection::from(match e {
        StartError::Load(error) => error,
        StartError::Died(how) => LoadError::Init(format!(
            "its worker process crashed while loading it ({how})"
        )),
        other => LoadError::Init(other.to_string()),
    })
}
