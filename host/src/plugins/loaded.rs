//! One loaded plugin library: loading it safely, and calling its handlers.
//!
//! Loading follows the rules learned the hard way (see DESIGN.md):
//! - the bytes are read once, hashed, and checked as a complete ELF file;
//! - they are written to a fresh, uniquely named shadow copy and loaded from
//!   there (in the private directory of [`crate::plugins::files::shadow`]), because `dlopen`
//!   of a path it already has returns the old code;
//! - `lib_header_from_path` + `init_root_module`, never
//!   `RootModule::load_from_*`, which caches one module per type forever;
//! - libraries are never unloaded: a retired version stays mapped until the
//!   process exits, so a call running on it can always finish.
//!
//! That is the `isolation = "none"` path. A plugin in a worker process
//! ([`crate::plugins::isolation`]) goes through the same manifest checks and the
//! same configuration step, from what its worker reports: [`Backend`] is
//! the only difference the rest of the host sees.

use std::{
    collections::BTreeMap,
    fs::File,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
};

use abi_stable::{
    library::{lib_header_from_path, LibraryError},
    std_types::RString,
};
use rohrpost_plugin_api::abi::{
    Call, CallOutcome, PluginModRef, EXT_CONFIGURE, EXT_FEATURES, EXT_HOST, EXT_RETIRE,
    EXT_UNSUPPORTED, MODE_INLINE,
};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::telemetry::plugin_events::{Identity, PluginInfo};
use crate::{
    config::Isolation,
    plugins::files::elf_check,
    plugins::files::shadow::{ShadowDir, ShadowError},
    plugins::isolation::WorkerHandle,
};

/// Why a plugin file was not loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a loadable library: {0}")]
    NotALibrary(#[from] elf_check::ElfError),
    #[error("{0}")]
    Shadow(#[from] ShadowError),
    #[error("the dynamic loader refused it: {0}")]
    Open(String),
    #[error("not a rohrpost plugin: it does not export a plugin root module")]
    NoRootModule,
    #[error("built against an incompatible plugin ABI: {0}")]
    Incompatible(String),
    #[error("the plugin failed while starting: {0}")]
    Init(String),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("its configuration was refused: {0}")]
    Config(String),
}

/// Slow calls among the last [`WINDOW`] calls of an inline handler that
/// move it to the worker pool: one large or unlucky request never does.
const SLOW_CALLS: usize = 3;
/// The calls [`SLOW_CALLS`] are counted among.
const WINDOW: u64 = 32;
/// Fast pooled calls in a row that bring a demoted handler back inline;
/// doubled for each demotion after the first (up to 64 times), so that a
/// handler that is slow now and then does not flap.
const FAST_STREAK: u32 = 64;

/// One handler of a loaded plugin.
#[derive(Debug)]
pub struct HandlerInfo {
    pub types: Vec<String>,
    /// Declared inline by its plugin.
    declared_inline: bool,
    /// Declared inline, and not found too slow for that at the moment.
    inline: AtomicBool,
    judge: Judge,
}

/// What the host has seen of an inline handler's calls: a few atomics,
/// touched once per call (twice when the call was slow).
#[derive(Debug, Default)]
struct Judge {
    /// Calls judged so far: the clock of `slow`.
    calls: AtomicU64,
    /// The numbers (from 1) of the most recent slow calls but one.
    slow: [AtomicU64; SLOW_CALLS - 1],
    /// Fast pooled calls in a row since the handler was demoted.
    fast_streak: AtomicU32,
    demotions: AtomicU32,
}

/// What one call changed about where a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// Too slow too often: it runs on the pool from now on.
    Demoted,
    /// Fast again for long enough: it runs inline again.
    Promoted,
}

impl HandlerInfo {
    fn new(types: Vec<String>, declared_inline: bool) -> Self {
        HandlerInfo {
            types,
            declared_inline,
            inline: AtomicBool::new(declared_inline),
            judge: Judge::default(),
        }
    }

    /// Whether calls run on the connection's task rather than the pool.
    pub fn is_inline(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// Whether its plugin declared it inline (so it is judged).
    pub fn declared_inline(&self) -> bool {
        self.declared_inline
    }

    /// Where it runs now: `inline`, `pooled` (declared so) or `demoted`
    /// (declared inline, moved to the pool for being slow).
    pub fn mode(&self) -> &'static str {
        match (self.declared_inline, self.is_inline()) {
            (true, true) => "inline",
            (true, false) => "demoted",
            (false, _) => "pooled",
        }
    }

    /// Judges one call of a handler declared inline: whether it ran inline
    /// and whether it took longer than its budget. Demotes after
    /// [`SLOW_CALLS`] slow calls among the last [`WINDOW`], and promotes a
    /// demoted handler after enough fast calls in a row.
    pub fn judge(&self, ran_inline: bool, slow: bool) -> Verdict {
        let judge = &self.judge;
        let n = judge.calls.fetch_add(1, Ordering::Relaxed) + 1;
        match (ran_inline, slow) {
            (true, false) => Verdict::Unchanged,
            (true, true) => {
                // The oldest remembered slow call; 0 is "none".
                let (oldest, slot) = judge
                    .slow
                    .iter()
                    .map(|s| s.load(Ordering::Relaxed))
                    .enumerate()
                    .map(|(i, v)| (v, i))
                    .min()
                    .unwrap_or((0, 0));
                if oldest != 0 && n - oldest < WINDOW {
                    for s in &judge.slow {
                        s.store(0, Ordering::Relaxed);
                    }
                    judge.fast_streak.store(0, Ordering::Relaxed);
                    if self.inline.swap(false, Ordering::Relaxed) {
                        judge.demotions.fetch_add(1, Ordering::Relaxed);
                        return Verdict::Demoted;
                    }
                    return Verdict::Unchanged;
                }
                judge.slow[slot].store(n, Ordering::Relaxed);
                Verdict::Unchanged
            }
            (false, true) => {
                judge.fast_streak.store(0, Ordering::Relaxed);
                Verdict::Unchanged
            }
            (false, false) => {
                let streak = judge.fast_streak.fetch_add(1, Ordering::Relaxed) + 1;
                let doublings = judge
                    .demotions
                    .load(Ordering::Relaxed)
                    .saturating_sub(1)
                    .min(6);
                if streak < FAST_STREAK << doublings {
                    return Verdict::Unchanged;
                }
                judge.fast_streak.store(0, Ordering::Relaxed);
                if self.inline.swap(true, Ordering::Relaxed) {
                    Verdict::Unchanged
                } else {
                    Verdict::Promoted
                }
            }
        }
    }
}

/// Where a loaded plugin's code runs.
pub enum Backend {
    /// In this process (`isolation = "none"`).
    InProcess(PluginModRef),
    /// In a supervised worker process (`isolation = "process"`).
    Worker(WorkerHandle),
}

/// A loaded plugin (in this process or in its worker).
pub struct LoadedPlugin {
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
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
}

/// A snapshot of [`LoadedPlugin`]'s call counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
    pub timeouts: u64,
}

/// How a call of a plugin ended, for its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    Ok,
    Error,
    Panic,
    Timeout,
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
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.handlers
            .iter()
            .flat_map(|h| h.types.iter().map(String::as_str))
    }

    /// The plugin's worker, when it runs in one.
    pub fn worker(&self) -> Option<&WorkerHandle> {
        match &self.backend {
            Backend::Worker(worker) => Some(worker),
            Backend::InProcess(_) => None,
        }
    }

    /// Where its code runs.
    pub fn isolation(&self) -> Isolation {
        match &self.backend {
            Backend::Worker(_) => Isolation::Process,
            Backend::InProcess(_) => Isolation::None,
        }
    }

    /// Calls a handler in this process. Synchronous native code: the caller
    /// decides where it runs. Never unwinds (the plugin side catches
    /// panics). A plugin in a worker is called through [`Self::worker`].
    pub fn call(&self, handler: u32, call: &Call<'_>) -> CallOutcome {
        match &self.backend {
            Backend::InProcess(module) => {
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                (module.call())(handler, call)
            }
            Backend::Worker(_) => CallOutcome::Failed(
                "Internal error: an isolated plugin was called in-process.".into(),
            ),
        }
    }

    /// Calls a named entry point in this process (a hook, `retire`);
    /// `Err` with the plugin's text, or for a plugin in a worker.
    pub fn extension(&self, name: &str, input: &str) -> Result<String, String> {
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
    pub fn count_call(&self) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts how a call ended.
    pub fn count(&self, end: CallEnd) {
        let counter = match end {
            CallEnd::Ok => return,
            CallEnd::Error => &self.stats.errors,
            CallEnd::Panic => &self.stats.panics,
            CallEnd::Timeout => &self.stats.timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The call counts so far.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.stats.calls.load(Ordering::Relaxed),
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

/// The content hash used to skip reloading an unchanged file.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl LoadedPlugin {
    /// What it says it is, for the log.
    pub fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            version: self.version.clone(),
            types: self.types().map(str::to_owned).collect(),
        }
    }

    /// This version, as the plugin events name it.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            types: self.types().map(str::to_owned).collect(),
            file: self.file.clone(),
            api_version: self.api_version.clone(),
        }
    }
}

/// A failed load: why, and who the plugin said it was when it got that far.
#[derive(Debug)]
pub struct Rejection {
    pub identity: Option<Identity>,
    pub error: LoadError,
}

impl From<LoadError> for Rejection {
    fn from(error: LoadError) -> Self {
        Rejection {
            identity: None,
            error,
        }
    }
}

/// What a plugin declares about itself, read from its library in this
/// process or reported by its worker.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub panic_unwind: bool,
    /// Each handler's types, and whether it is declared inline.
    pub handlers: Vec<(Vec<String>, bool)>,
    /// Its lifecycle hooks (plugin-api 1.2).
    pub hooks: Hooks,
}

/// The lifecycle hooks a plugin has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    pub on_connect: bool,
    pub on_disconnect: bool,
    /// It gives up any of its message types another plugin claims.
    pub yields: bool,
}

impl Hooks {
    /// From the plugin's answer to [`EXT_FEATURES`]; none from a plugin
    /// older than 1.2.
    pub fn from_features(answer: Result<String, String>) -> Hooks {
        #[derive(serde::Deserialize)]
        struct Features {
            #[serde(default)]
            on_connect: bool,
            #[serde(default)]
            on_disconnect: bool,
            #[serde(default)]
            yields: bool,
        }
        match answer
            .ok()
            .and_then(|text| serde_json::from_str::<Features>(&text).ok())
        {
            Some(f) => Hooks {
                on_connect: f.on_connect,
                on_disconnect: f.on_disconnect,
                yields: f.yields,
            },
            None => Hooks::default(),
        }
    }
}

/// Hands a library in this process the host's services and reads its
/// hooks (plugin-api 1.2; an older plugin answers neither).
pub fn introduce(module: PluginModRef, ask_address: &str) -> Hooks {
    let _ = (module.extension())(EXT_HOST.into(), ask_address.into());
    let answer = (module.extension())(EXT_FEATURES.into(), "".into())
        .into_result()
        .map(RString::into_string)
        .map_err(RString::into_string);
    Hooks::from_features(answer)
}

impl ManifestInfo {
    /// Reads the ABI manifest.
    pub fn of(manifest: &rohrpost_plugin_api::abi::Manifest) -> Self {
        ManifestInfo {
            name: manifest.name.to_string(),
            version: manifest.version.to_string(),
            api_version: manifest.api_version.to_string(),
            panic_unwind: manifest.panic_unwind,
            handlers: manifest
                .handlers
                .iter()
                .map(|h| {
                    (
                        h.types.iter().map(|t| t.to_string()).collect(),
                        h.mode == MODE_INLINE,
                    )
                })
                .collect(),
            hooks: Hooks::default(),
        }
    }

    /// The manifest read again after `configure`, with the hooks read
    /// before: the one that counts.
    pub fn reread(&self, manifest: &rohrpost_plugin_api::abi::Manifest) -> Self {
        ManifestInfo {
            hooks: self.hooks,
            ..ManifestInfo::of(manifest)
        }
    }

    /// Who the plugin says it is.
    pub fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            version: self.version.clone(),
            types: self
                .handlers
                .iter()
                .flat_map(|(types, _)| types.iter().cloned())
                .collect(),
        }
    }

    /// Checks who the plugin says it is, before it is configured: a name,
    /// and built to unwind.
    pub fn check_identity(&self) -> Result<(), Rejection> {
        let reject = |error: LoadError| Rejection {
            identity: Some(self.identity()),
            error,
        };
        if self.name.trim().is_empty() {
            return Err(reject(LoadError::Manifest("the plugin has no name".into())));
        }
        if !self.panic_unwind {
            return Err(reject(LoadError::Manifest(
                "built with panic = \"abort\": one panicking handler would stop the whole server; build it with panic = \"unwind\"".into(),
            )));
        }
        Ok(())
    }

    /// Checks what the plugin declares once it is configured (a handler's
    /// types may come from its configuration); its handlers when it may
    /// serve.
    pub fn check(&self) -> Result<Vec<HandlerInfo>, Rejection> {
        self.check_identity()?;
        let identity = self.identity();
        let reject = |error: LoadError| Rejection {
            identity: Some(identity.clone()),
            error,
        };
        let mut handlers = Vec::new();
        for (types, inline) in &self.handlers {
            if types.is_empty() {
                return Err(reject(LoadError::Manifest(
                    "a handler declares no message type".into(),
                )));
            }
            if types.iter().any(|t| t.is_empty()) {
                return Err(reject(LoadError::Manifest("an empty message type".into())));
            }
            handlers.push(HandlerInfo::new(types.clone(), *inline));
        }
        if handlers.is_empty() {
            return Err(reject(LoadError::Manifest(
                "the plugin declares no handler".into(),
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = identity.types.iter().find(|t| !seen.insert(t.as_str())) {
            return Err(reject(LoadError::Manifest(format!(
                "message type '{twice}' is declared twice"
            ))));
        }
        Ok(handlers)
    }
}

/// The `[plugins.<name>]` table handed to a plugin named `name`.
pub fn config_of<'a>(settings: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    settings.get(name).map_or("{}", String::as_str)
}

/// What the plugin's `configure` answered (in this process or in its
/// worker), turned into the load's verdict: its warnings are logged.
pub fn configured(
    manifest: &ManifestInfo,
    answer: Result<String, String>,
    has_table: bool,
) -> Result<(), Rejection> {
    let name = &manifest.name;
    match answer {
        Ok(warnings) => {
            for warning in warnings.lines().filter(|w| !w.trim().is_empty()) {
                tracing::warn!(plugin = %name, version = %manifest.version, "{warning}");
            }
            Ok(())
        }
        Err(e) if e == EXT_UNSUPPORTED => {
            if has_table {
                tracing::warn!(
                    plugin = %name,
                    "the plugin was built against a plugin-api without configuration (1.0); its [plugins.{name}] table is ignored"
                );
            }
            Ok(())
        }
        Err(e) => Err(Rejection {
            identity: Some(manifest.identity()),
            error: LoadError::Config(e),
        }),
    }
}

impl LoadedPlugin {
    /// A plugin that passed its checks and its configuration.
    pub fn new(
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
pub fn load(
    file: &Path,
    bytes: &[u8],
    shadow: &ShadowDir,
    pool_size: usize,
    settings: &BTreeMap<String, String>,
) -> Result<LoadedPlugin, Rejection> {
    let module = open(file, bytes, shadow)?;
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

/// Checks the bytes, loads them from a fresh shadow copy, and checks the
/// plugin interface.
fn open(file: &Path, bytes: &[u8], shadow: &ShadowDir) -> Result<PluginModRef, LoadError> {
    #[cfg(target_os = "linux")]
    elf_check::check(bytes)?;

    let stem = file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    let opened = shadow.with_copy(&stem, bytes, lib_header_from_path)?;
    opened
        .and_then(|header| header.init_root_module::<PluginModRef>())
        .map_err(library_error)
}

/// Checks the bytes and writes them to a fresh shadow copy, opened for
/// reading: what a worker process loads the plugin from. The copy's name
/// is removed at once; the open file keeps its content for every worker
/// the plugin's version will need, and nobody can replace it.
pub fn shadow_file(file: &Path, bytes: &[u8], shadow: &ShadowDir) -> Result<File, LoadError> {
    #[cfg(target_os = "linux")]
    elf_check::check(bytes)?;

    let stem = file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    shadow
        .with_copy(&stem, bytes, |path| File::open(path))?
        .map_err(LoadError::Read)
}

/// Turns abi_stable's errors into one readable reason.
pub fn library_error(e: LibraryError) -> LoadError {
    match e {
        LibraryError::OpenError { err, .. } => LoadError::Open(err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadError::NoRootModule,
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadError::Incompatible(format!(
            "the plugin uses ABI {actual_version}, this host speaks ABI {expected_version}"
        )),
        LibraryError::AbiInstability(details) => {
            // The full layout report runs to hundreds of lines; its end says
            // what differs.
            let text = details.to_string();
            let tail: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let start = tail.len().saturating_sub(4);
            LoadError::Incompatible(format!(
                "its plugin interface layout differs from this host's: {}",
                tail[start..].join(" | ")
            ))
        }
        LibraryError::RootModule { err, .. } => LoadError::Init(err.to_string()),
        other => LoadError::Init(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_call_does_not_demote_but_several_do() {
        let h = HandlerInfo::new(vec!["t".into()], true);
        for _ in 0..10 {
            assert_eq!(h.judge(true, true), Verdict::Unchanged);
            for _ in 0..WINDOW {
                assert_eq!(h.judge(true, false), Verdict::Unchanged);
            }
        }
        assert_eq!(h.mode(), "inline");
        assert_eq!(h.judge(true, true), Verdict::Unchanged);
        assert_eq!(h.judge(true, false), Verdict::Unchanged);
        assert_eq!(h.judge(true, true), Verdict::Unchanged);
        assert_eq!(h.judge(true, true), Verdict::Demoted);
        assert_eq!(h.mode(), "demoted");
        assert!(!h.is_inline());
    }

    #[test]
    fn a_demoted_handler_comes_back_after_fast_calls_in_a_row() {
        let h = HandlerInfo::new(vec!["t".into()], true);
        for _ in 0..SLOW_CALLS - 1 {
            h.judge(true, true);
        }
        assert_eq!(h.judge(true, true), Verdict::Demoted);
        for _ in 0..FAST_STREAK - 1 {
            assert_eq!(h.judge(false, false), Verdict::Unchanged);
        }
        assert_eq!(h.judge(false, true), Verdict::Unchanged);
        for _ in 0..FAST_STREAK - 1 {
            assert_eq!(h.judge(false, false), Verdict::Unchanged);
        }
        assert_eq!(h.judge(false, false), Verdict::Promoted);
        assert_eq!(h.mode(), "inline");
        // The second time it takes twice as long.
        for _ in 0..SLOW_CALLS - 1 {
            h.judge(true, true);
        }
        assert_eq!(h.judge(true, true), Verdict::Demoted);
        for _ in 0..2 * FAST_STREAK - 1 {
            assert_eq!(h.judge(false, false), Verdict::Unchanged);
        }
        assert_eq!(h.judge(false, false), Verdict::Promoted);
        assert_eq!(HandlerInfo::new(vec![], false).mode(), "pooled");
    }
}
