//! One loaded plugin version, in this process or in its worker: its
//! handlers, its hooks, its counts, and calling it. How it got here is
//! [`super::load`] (which mode), [`super::library`] (the file made a
//! library) and [`super::manifest`] (what it declares and the checks).
//! Libraries are never unloaded: a retired version stays mapped until the
//! process exits, so a call running on it can always finish. [`Backend`]
//! is the only difference between the two modes the rest of the host sees.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use abi_stable::std_types::RString;
use rohrpost_plugin_api::abi::{Call, CallOutcome, PluginModRef, EXT_CONFIGURE, EXT_RETIRE};
use tokio::sync::Semaphore;

use crate::plugins::outcome::{Outcome, Tally};
use crate::telemetry::plugin_events::{Identity, PluginInfo};
use crate::telemetry::striped::Striped;
use crate::{
    config::Isolation, plugins::files::shadow::ShadowDir, plugins::handler::HandlerInfo,
    plugins::isolation::WorkerHandle, plugins::library, plugins::manifest::*,
};

/// Where a loaded plugin's code runs.
pub(crate) enum Backend {
    /// In this process (`isolation = "none"`).
    InProcess(PluginModRef),
    /// In a supervised worker process (`isolation = "process"`).
    Worker(WorkerHandle),
}

/// A loaded plugin (in this process or in its worker).
pub(crate) struct LoadedPlugin {
    pub name: String,
    pub version: String,
    pub api_version: String,
    /// The file in the plugins directory it was loaded from.
    pub file: PathBuf,
    pub handlers: Vec<HandlerInfo>,
    /// Bounds the plugin's calls running on the pool at once.
    pub pool_slots: Arc<Semaphore>,
    /// When it was loaded, in seconds since the Unix epoch.
    pub loaded_at: f64,
    /// Its connection hooks.
    pub hooks: Hooks,
    stats: Stats,
    backend: Backend,
}

/// Call counts of one loaded plugin version.
#[derive(Debug, Default)]
struct Stats {
    /// Counted on every call, by every runtime thread: in stripes.
    calls: Striped,
    errors: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
}

/// A snapshot of [`LoadedPlugin`]'s call counts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StatsSnapshot {
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
    pub timeouts: u64,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Every message type this plugin serves.
    pub(crate) fn types(&self) -> impl Iterator<Item = &str> {
        self.handlers
            .iter()
            .flat_map(|h| h.types.iter().map(String::as_str))
    }

    /// The plugin's worker, when it runs in one.
    pub(crate) fn worker(&self) -> Option<&WorkerHandle> {
        match &self.backend {
            Backend::Worker(worker) => Some(worker),
            Backend::InProcess(_) => None,
        }
    }

    /// Where its code runs.
    pub(crate) fn isolation(&self) -> Isolation {
        match &self.backend {
            Backend::Worker(_) => Isolation::Process,
            Backend::InProcess(_) => Isolation::None,
        }
    }

    /// Calls a handler in this process. Synchronous native code: the caller
    /// decides where it runs. Never unwinds (the plugin side catches
    /// panics). A plugin in a worker is called through [`Self::worker`].
    pub(crate) fn call(&self, handler: u32, call: &Call<'_>) -> CallOutcome {
        match &self.backend {
            Backend::InProcess(module) => {
                self.stats.calls.add(1);
                (module.call())(handler, call)
            }
            Backend::Worker(_) => CallOutcome::Failed(
                "Internal error: an isolated plugin was called in-process.".into(),
            ),
        }
    }

    /// Calls a named entry point in this process (a hook, `retire`);
    /// `Err` with the plugin's text, or for a plugin in a worker.
    pub(crate) fn extension(&self, name: &str, input: &str) -> Result<String, String> {
        match &self.backend {
            Backend::InProcess(module) => (module.extension())(name.into(), input.into())
                .into_result()
                .map(RString::into_string)
                .map_err(RString::into_string),
            Backend::Worker(_) => {
                Err("Internal error: an isolated plugin was called in-process.".into())
            }
        }
    }

    /// Counts a call made through the plugin's worker.
    pub(crate) fn count_call(&self) {
        self.stats.calls.add(1);
    }

    /// Counts how a call ended.
    pub(crate) fn count(&self, outcome: &Outcome) {
        let counter = match outcome.tally() {
            Tally::Ok => return,
            Tally::Error => &self.stats.errors,
            Tally::Panic => &self.stats.panics,
            Tally::Timeout => &self.stats.timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The call counts so far.
    pub(crate) fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.stats.calls.sum(),
            errors: self.stats.errors.load(Ordering::Relaxed),
            panics: self.stats.panics.load(Ordering::Relaxed),
            timeouts: self.stats.timeouts.load(Ordering::Relaxed),
        }
    }
}

/// A version in this process is dropped when it is retired and its last
/// call has ended: it drops its state then ([`EXT_RETIRE`]; its code stays
/// mapped). A worker's version goes with its process.
impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        if let Backend::InProcess(module) = &self.backend {
            let _ = (module.extension())(EXT_RETIRE.into(), "".into());
        }
    }
}

impl LoadedPlugin {
    /// What it says it is, for the log.
    pub(crate) fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            version: self.version.clone(),
            types: self.types().map(str::to_owned).collect(),
        }
    }

    /// This version, as the plugin events name it.
    pub(crate) fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            types: self.types().map(str::to_owned).collect(),
            file: self.file.clone(),
            api_version: self.api_version.clone(),
        }
    }
}

impl LoadedPlugin {
    /// A plugin that passed its checks and its configuration.
    pub(crate) fn new(
        file: &Path,
        manifest: ManifestInfo,
        handlers: Vec<HandlerInfo>,
        pool_size: usize,
        backend: Backend,
    ) -> Self {
        LoadedPlugin {
            name: manifest.name,
            version: manifest.version,
            api_version: manifest.api_version,
            file: file.to_owned(),
            handlers,
            pool_slots: Arc::new(Semaphore::new(pool_size)),
            loaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            hooks: manifest.hooks,
            stats: Stats::default(),
            backend,
        }
    }
}

/// Loads the plugin whose file content is `bytes` (read from `file`) into
/// this process. Blocking: run it off the async reactor.
pub(crate) fn load(
    file: &Path,
    bytes: &[u8],
    shadow: &ShadowDir,
    pool_size: usize,
    settings: &BTreeMap<String, String>,
) -> Result<LoadedPlugin, FailedLoad> {
    let module = library::open(file, bytes, shadow)?;
    let mut manifest = ManifestInfo::of(&(module.manifest())());
    manifest.hooks = introduce(module, &crate::plugins::asks::ask_address());
    manifest.check_identity()?;
    let config = config_of(settings, &manifest.name);
    let answer = (module.extension())(EXT_CONFIGURE.into(), config.into())
        .into_result()
        .map(RString::into_string)
        .map_err(RString::into_string);
    configured(&manifest, answer, settings.contains_key(&manifest.name))?;
    // Read again: a handler's types may come from the configuration.
    let manifest = manifest.reread(&(module.manifest())());
    let handlers = manifest.check()?;
    Ok(LoadedPlugin::new(
        file,
        manifest,
        handlers,
        pool_size,
        Backend::InProcess(module),
    ))
}
