//! Loading a plugin file, in the mode its configuration names: every
//! library is first opened in a worker, which reports its manifest. For
//! `isolation = "none"` that worker is then let go and the host loads the
//! library itself; so a library whose constructor crashes is rejected
//! without ever reaching the server's process, in either mode.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

use crate::plugins::asks::Answers;
use crate::{
    config::{Grants, Isolation, Sandbox},
    plugins::{
        files::shadow::ShadowDir,
        isolation::jail::Spec,
        isolation::{
            channel::{StartError, Starting},
            supervisor::{Supervisor, START_TIMEOUT},
            WorkerHandle, WorkerLimits,
        },
        library,
        loaded::{self, Backend, LoadedPlugin},
        manifest::{self, FailedLoad, LoadError},
    },
};

/// How plugins are loaded.
pub(crate) struct LoadSettings {
    pub pool_size: usize,
    /// Each plugin's configuration (JSON text), by plugin name.
    pub tables: Arc<BTreeMap<String, String>>,
    pub isolation: Arc<BTreeMap<String, Isolation>>,
    /// The one file each plugin configured `none` may run from in this
    /// process; the same name from any other file runs in a worker.
    pub in_process_files: Arc<BTreeMap<String, String>>,
    /// What each file's sandbox table grants, and to which plugin.
    pub granted_files: Arc<BTreeMap<String, (String, Grants)>>,
    pub sandbox: Sandbox,
    pub limits: WorkerLimits,
    /// What plugins' questions are answered from.
    pub answers: Arc<Answers>,
}

/// Loads the plugin whose file content is `bytes` (read from `file`): in a
/// worker, or, for `isolation = "none"`, in this process.
pub(crate) async fn load(
    file: &Path,
    bytes: Vec<u8>,
    shadow: Arc<ShadowDir>,
    settings: &LoadSettings,
    metrics: impl FnOnce(&str) -> crate::telemetry::metrics::WorkerMetrics,
) -> Result<LoadedPlugin, FailedLoad> {
    // Workers load a sealed copy in memory: none can write it, and none
    // learns where the shadow directory is.
    let (library, bytes) = {
        let file = file.to_owned();
        let bytes = Arc::new(bytes);
        let copy = bytes.clone();
        let library = tokio::task::spawn_blocking(move || library::sealed_copy(&file, &copy))
            .await
            .map_err(|e| LoadError::Init(e.to_string()))??;
        (library, bytes)
    };
    let started = Instant::now();
    let (granted_to, jail) = jail_of(file, settings);
    let mut starting = Starting::spawn(&library, settings.limits, &jail, START_TIMEOUT)
        .await
        .map_err(start_error)?;
    let manifest = starting.manifest.clone();
    manifest.check_identity()?;
    if let Some(plugin) = granted_to.filter(|p| **p != manifest.name) {
        return Err(LoadError::Init(format!(
            "this is the file [plugins.{plugin}.sandbox] grants to, and its library calls itself {}",
            manifest.name
        ))
        .into());
    }
    let isolation = isolation_of(file, &manifest.name, settings);
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
    let config = manifest::config_of(&settings.tables, &manifest.name).to_owned();
    let answer = starting
        .configure(&config, START_TIMEOUT)
        .await
        .map_err(|e| FailedLoad {
            identity: Some(manifest.identity()),
            error: start_error(e).error,
        })?;
    manifest::configured(
        &manifest,
        answer,
        settings.tables.contains_key(&manifest.name),
    )?;
    // As the worker read it after the configuration.
    let manifest = starting.manifest.clone();
    let handlers = manifest.check()?;
    tracing::debug!(plugin = %manifest.name, pid = starting.pid,
        took_ms = started.elapsed().as_millis() as u64, "plugin worker started");
    let supervisor = Supervisor::start(
        starting,
        library,
        jail,
        config,
        settings.limits,
        metrics(&manifest.name),
        settings.answers.clone(),
    );
    Ok(LoadedPlugin::new(
        file,
        manifest,
        handlers,
        settings.pool_size,
        Backend::Worker(WorkerHandle(supervisor)),
    ))
}

fn start_error(e: StartError) -> FailedLoad {
    FailedLoad::from(match e {
        StartError::Load(error) => error,
        StartError::Died(how) => LoadError::Init(format!(
            "its worker process crashed while loading it ({how})"
        )),
        other => LoadError::Init(other.to_string()),
    })
}

/// The jail of a worker for `file`: what the sandbox table whose file it
/// is grants (the operator's choice, like `none`: the same library under
/// another file name gets nothing), and the plugin that table is for.
fn jail_of<'s>(file: &Path, settings: &'s LoadSettings) -> (Option<&'s String>, Spec) {
    let granted = file
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| settings.granted_files.get(f));
    let spec = Spec {
        sandbox: settings.sandbox,
        grants: granted.map(|(_, g)| g.clone()).unwrap_or_default(),
    };
    (granted.map(|(plugin, _)| plugin), spec)
}

/// Where the library in `file` that calls itself `name` runs: the
/// operator's choice for that name, and `none` only for the file the
/// operator granted it to. Any other library may say it is that plugin;
/// it does not get into the server's process by saying so.
fn isolation_of(file: &Path, name: &str, settings: &LoadSettings) -> Isolation {
    let configured = settings.isolation.get(name).copied().unwrap_or_default();
    if configured != Isolation::None {
        return configured;
    }
    let granted = settings.in_process_files.get(name);
    let file_name = file.file_name().and_then(|f| f.to_str());
    if granted.is_some_and(|g| file_name == Some(g.as_str())) {
        return Isolation::None;
    }
    tracing::warn!(
        plugin = %name,
        file = %file.display(),
        granted = %granted.map_or("-", String::as_str),
        "isolation = \"none\" is granted to another file of this plugin's name; this library runs in a worker process"
    );
    Isolation::Process
}
