//! Keeps the registry in step with the plugins directory while serving.
//!
//! File events are noisy and differ by tool (`cp` writes in several steps,
//! `mv` gives one rename, cargo hard-links), so events only mark a file as
//! dirty; a file is looked at once it has been quiet for the debounce
//! period. Then its content decides: unchanged content (same hash) does
//! nothing, new content is loaded and swapped in, a missing file is
//! unregistered. A file that fails to load changes nothing but the log:
//! whatever served before keeps serving.
//!
//! Each outcome is one [`PluginEvent`], described once: the watcher logs
//! it, and the [`Monitor`] takes it into the metrics, the file states of
//! `/api/plugins` and the live event stream.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use notify::{
    event::{AccessKind, AccessMode},
    EventKind, RecommendedWatcher, RecursiveMode, Watcher,
};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tracing::{debug, info, warn};

use crate::plugins::asks::Answers;
use crate::{
    config::{Grants, Isolation, Sandbox},
    plugins::files::permissions,
    plugins::files::shadow::ShadowDir,
    plugins::isolation::WorkerLimits,
    plugins::load::{self, LoadSettings},
    plugins::loaded::LoadedPlugin,
    plugins::manifest::{content_hash, LoadError},
    plugins::registry::Registry,
    telemetry::plugin_events::{Identity, PluginEvent},
    telemetry::Monitor,
};

/// Settings of the watcher.
pub(crate) struct WatchSettings {
    pub dir: PathBuf,
    pub debounce: Duration,
    /// Concurrent pooled calls allowed per plugin.
    pub pool_size: usize,
    /// Each plugin's configuration (JSON text), by plugin name.
    pub plugin_settings: Arc<BTreeMap<String, String>>,
    /// Each plugin's isolation, by plugin name (default: process).
    pub isolation: Arc<BTreeMap<String, Isolation>>,
    /// The one file each plugin configured `none` may run from in the
    /// server's process.
    pub in_process_files: Arc<BTreeMap<String, String>>,
    /// What each file's sandbox table grants, and to which plugin.
    pub granted_files: Arc<BTreeMap<String, (String, Grants)>>,
    /// How much of the workers' jail is required.
    pub sandbox: Sandbox,
    /// Limits of each plugin worker process.
    pub worker_limits: WorkerLimits,
    /// What plugins' questions are answered from.
    pub answers: Arc<Answers>,
    /// Refuse files and a directory that others than the server's user or
    /// root could write (see `safety`).
    pub strict_modes: bool,
}

/// The running watcher; dropping it stops watching and removes the plugin
/// copies' directory.
pub(crate) struct PluginWatcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
    shadow: Arc<ShadowDir>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
        // Now, not when the last load task lets go of it: that may be
        // after the runtime stopped waiting for its tasks.
        self.shadow.remove();
    }
}

/// Logs one plugin event, the way operators read it.
fn log(happened: &PluginEvent) {
    let event = happened.name();
    match happened {
        PluginEvent::Loaded { plugin } => {
            info!(event, plugin = %plugin.name, version = %plugin.version,
                    types = ?plugin.types, file = %plugin.file.display(),
                    api = %plugin.api_version, reason = "new file", "plugin loaded");
        }
        PluginEvent::Replaced {
            plugin,
            previous,
            retired_versions,
        } => {
            info!(event, plugin = %plugin.name, version = %plugin.version,
                    types = ?plugin.types, file = %plugin.file.display(),
                    api = %plugin.api_version, previous_version = %previous.version,
                    reason = "content changed", retired_versions,
                    "plugin replaced; calls in flight finish on the previous version");
        }
        PluginEvent::Rejected {
            file,
            identity,
            reason,
            still_serving,
        } => {
            let identity = identity.as_ref();
            warn!(event,
                    plugin = %identity.map_or("-", |p| p.name.as_str()),
                    version = %identity.map_or("-", |p| p.version.as_str()),
                    types = ?identity.map(|p| p.types.as_slice()).unwrap_or_default(),
                    file = %file.display(), reason = %reason,
                    still_serving = %still_serving.as_deref().unwrap_or("nothing from this file"),
                    "plugin rejected");
        }
        PluginEvent::Removed {
            plugin,
            retired_versions,
        } => {
            info!(event, plugin = %plugin.name, version = %plugin.version,
                    types = ?plugin.types, file = %plugin.file.display(),
                    reason = "file deleted", retired_versions,
                    "plugin removed; its library stays mapped until restart");
        }
    }
}

/// What the file-event thread tells the reconciler.
enum Dirty {
    File(PathBuf),
    /// Events were lost: look at every file again.
    All,
}

/// Loads what the directory holds now, then keeps watching it.
pub(crate) async fn start(
    settings: WatchSettings,
    registry: Arc<Registry>,
    monitor: Arc<Monitor>,
) -> anyhow::Result<PluginWatcher> {
    std::fs::create_dir_all(&settings.dir).with_context(|| {
        format!(
            "cannot create the plugins directory {}",
            settings.dir.display()
        )
    })?;
    let dir = settings.dir.canonicalize().with_context(|| {
        format!(
            "cannot resolve the plugins directory {}",
            settings.dir.display()
        )
    })?;

    let shadow =
        Arc::new(ShadowDir::create().context("cannot create the directory for the plugin copies")?);

    let (tx, rx) = mpsc::unbounded_channel();
    let watch_dir = dir.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                ) || !matches!(event.kind, EventKind::Access(_))
                {
                    if event.need_rescan() {
                        let _ = tx.send(Dirty::All);
                    }
                    for path in event.paths {
                        if path.parent() == Some(watch_dir.as_path()) {
                            let _ = tx.send(Dirty::File(path));
                        }
                    }
                }
            }
            Err(error) => {
                warn!(%error, "plugin directory watch error; rescanning");
                let _ = tx.send(Dirty::All);
            }
        })
        .context("cannot start watching files")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;

    let mut reconciler = Reconciler {
        dir: dir.clone(),
        registry,
        shadow: shadow.clone(),
        load: LoadSettings {
            pool_size: settings.pool_size,
            tables: settings.plugin_settings.clone(),
            isolation: settings.isolation.clone(),
            in_process_files: settings.in_process_files.clone(),
            granted_files: settings.granted_files.clone(),
            sandbox: settings.sandbox,
            limits: settings.worker_limits,
            answers: settings.answers.clone(),
        },
        strict_modes: settings.strict_modes,
        monitor: monitor.clone(),
        known: HashMap::new(),
        pending: HashMap::new(),
        retired: HashMap::new(),
    };
    reconciler.rescan().await;
    monitor.set_ready();
    info!(dir = %dir.display(), "watching the plugins directory");
    let task = tokio::spawn(reconciler.run(rx, settings.debounce));
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
        shadow,
    })
}

/// What the reconciler last made of a file.
#[derive(Default)]
struct Known {
    /// The content last looked at; unchanged content is not loaded again.
    hash: Option<u64>,
    /// Rejected only because another plugin held its name or a type: worth
    /// another try once that plugin is gone.
    blocked: bool,
    /// Refused for its owner, mode or symlink target (content not read).
    refused: Option<String>,
}

struct Reconciler {
    dir: PathBuf,
    registry: Arc<Registry>,
    shadow: Arc<ShadowDir>,
    load: LoadSettings,
    strict_modes: bool,
    monitor: Arc<Monitor>,
    known: HashMap<PathBuf, Known>,
    /// Files to look at once quiet, with the time of their last event.
    pending: HashMap<PathBuf, Instant>,
    /// Versions replaced or removed but still mapped (libraries are never
    /// unloaded), by plugin name.
    retired: HashMap<String, u64>,
}

impl Reconciler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Dirty>, debounce: Duration) {
        loop {
            let pending = &mut self.pending;
            let next_due = pending.values().min().map(|t| *t + debounce);
            tokio::select! {
                dirty = rx.recv() => match dirty {
                    Some(Dirty::File(path)) => { pending.insert(path, Instant::now()); }
                    Some(Dirty::All) => {
                        pending.clear();
                        self.rescan().await;
                    }
                    None => break,
                },
                _ = sleep_until(next_due), if next_due.is_some() => {
                    let now = Instant::now();
                    let mut due: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, at)| now.duration_since(**at) >= debounce)
                        .map(|(path, _)| path.clone())
                        .collect();
                    due.sort();
                    for path in due {
                        self.pending.remove(&path);
                        self.reconcile(&path).await;
                    }
                }
            }
        }
    }

    /// Looks at every candidate file and every file loaded before.
    async fn rescan(&mut self) {
        let mut paths: Vec<PathBuf> = self.known.keys().cloned().collect();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => paths.extend(entries.flatten().map(|e| e.path())),
            Err(error) => {
                warn!(dir = %self.dir.display(), %error, "cannot list the plugins directory")
            }
        }
        paths.sort();
        paths.dedup();
        for path in paths {
            self.reconcile(&path).await;
        }
    }

    /// Brings the registry in line with what `path` holds now.
    async fn reconcile(&mut self, path: &Path) {
        if !is_candidate(path) {
            debug!(file = %path.display(), "ignoring a file not named *.{}", std::env::consts::DLL_EXTENSION);
            return;
        }
        if !std::fs::metadata(path).is_ok_and(|meta| meta.is_file()) {
            self.known.remove(path);
            self.monitor.forget(path);
            if let Some(old) = self.registry.remove(path, &self.monitor) {
                let retired_versions = self.retire(&old);
                self.publish(PluginEvent::Removed {
                    plugin: old.info(),
                    retired_versions,
                });
                self.retry_blocked();
            }
            return;
        }
        if self.strict_modes {
            let verdict = permissions::check_dir(&self.dir)
                .and_then(|()| permissions::check_file(path, &self.dir));
            let known = self.known.entry(path.to_owned()).or_default();
            match verdict {
                Err(reason) => {
                    if known.refused.as_ref() != Some(&reason) {
                        known.refused = Some(reason.clone());
                        known.hash = None;
                        self.reject(path, None, &reason);
                    }
                    return;
                }
                Ok(()) if known.refused.take().is_some() => known.hash = None,
                Ok(()) => {}
            }
        }
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                self.reject(path, None, &LoadError::Read(error));
                return;
            }
        };
        let hash = content_hash(&bytes);
        let known = self.known.entry(path.to_owned()).or_default();
        if known.hash == Some(hash) {
            return;
        }
        *known = Known {
            hash: Some(hash),
            ..Known::default()
        };

        let monitor = self.monitor.clone();
        let loaded = load::load(path, bytes, self.shadow.clone(), &self.load, |name| {
            monitor.worker_metrics(name)
        })
        .await;
        let plugin = match loaded {
            Ok(plugin) => Arc::new(plugin),
            Err(rejection) => {
                return self.reject(path, rejection.identity.as_ref(), &rejection.error)
            }
        };
        match self.registry.install(plugin.clone(), &self.monitor) {
            Ok(None) => self.publish(PluginEvent::Loaded {
                plugin: plugin.info(),
            }),
            Ok(Some(previous)) => {
                let retired_versions = self.retire(&previous);
                self.publish(PluginEvent::Replaced {
                    plugin: plugin.info(),
                    previous: previous.info(),
                    retired_versions,
                });
                // The new version may have given up a type or a name.
                self.retry_blocked();
            }
            Err(conflict) => {
                if let Some(known) = self.known.get_mut(path) {
                    known.blocked = true;
                }
                self.reject(path, Some(&plugin.identity()), &conflict);
            }
        }
    }

    /// Queues the files rejected for a conflict for another look.
    fn retry_blocked(&mut self) {
        let now = Instant::now();
        let blocked: Vec<PathBuf> = self
            .known
            .iter()
            .filter(|(_, k)| k.blocked)
            .map(|(p, _)| p.clone())
            .collect();
        for path in blocked {
            self.known.remove(&path);
            self.pending.insert(path, now);
        }
    }

    fn reject(&self, path: &Path, plugin: Option<&Identity>, reason: &dyn std::fmt::Display) {
        let still_serving = self
            .registry
            .snapshot()
            .plugins
            .get(path)
            .map(|p| format!("{} {}", p.name, p.version));
        self.publish(PluginEvent::Rejected {
            file: path.to_owned(),
            identity: plugin.cloned(),
            reason: reason.to_string(),
            still_serving,
        });
    }

    /// Counts one more version of `plugin`'s name out of service but still
    /// mapped (in this process: a worker's version goes with its worker);
    /// the count so far.
    fn retire(&mut self, plugin: &LoadedPlugin) -> u64 {
        let count = self.retired.entry(plugin.name.clone()).or_default();
        if plugin.isolation() == Isolation::None {
            *count += 1;
        }
        *count
    }

    /// States first, then the log: whoever sees the log line finds
    /// `/api/plugins` up to date.
    fn publish(&self, event: PluginEvent) {
        self.monitor.publish(&event);
        log(&event);
    }
}

/// Plugin files are `*.so` (the platform's library suffix) and not hidden;
/// anything else, such as a temporary file being written, is left alone.
fn is_candidate(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && path.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
