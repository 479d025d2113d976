//! What a plugin says about itself and whether the host takes it: its
//! manifest (name, version, handlers, hooks), the checks a manifest must
//! pass, the configuration step, and why a load failed. The same in both
//! isolation modes: in a worker, the worker reports what the library said.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
};

use abi_stable::{library::LibraryError, std_types::RString};
use rohrpost_plugin_api::abi::{
    PluginModRef, EXT_FEATURES, EXT_HOST, EXT_UNSUPPORTED, MODE_INLINE,
};
use thiserror::Error;

use crate::telemetry::plugin_events::Identity;
use crate::{
    plugins::files::elf_check, plugins::files::shadow::ShadowError, plugins::handler::HandlerInfo,
};

/// Why a plugin file was not loaded.
#[derive(Debug, Error)]
pub(crate) enum LoadError {
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

/// A failed load: why, and who the plugin said it was when it got that far.
#[derive(Debug)]
pub(crate) struct FailedLoad {
    pub identity: Option<Identity>,
    pub error: LoadError,
}

impl From<LoadError> for FailedLoad {
    fn from(error: LoadError) -> Self {
        FailedLoad {
            identity: None,
            error,
        }
    }
}

/// What a plugin declares about itself, read from its library in this
/// process or reported by its worker.
#[derive(Debug, Clone)]
pub(crate) struct ManifestInfo {
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
pub(crate) struct Hooks {
    pub on_connect: bool,
    pub on_disconnect: bool,
    /// It gives up any of its message types another plugin claims.
    pub yields: bool,
}

impl Hooks {
    /// From the plugin's answer to [`EXT_FEATURES`]; none from a plugin
    /// older than 1.2.
    pub(crate) fn from_features(answer: Result<String, String>) -> Hooks {
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
pub(crate) fn introduce(module: PluginModRef, ask_address: &str) -> Hooks {
    let _ = (module.extension())(EXT_HOST.into(), ask_address.into());
    let answer = (module.extension())(EXT_FEATURES.into(), "".into())
        .into_result()
        .map(RString::into_string)
        .map_err(RString::into_string);
    Hooks::from_features(answer)
}

impl ManifestInfo {
    /// Reads the ABI manifest.
    pub(crate) fn of(manifest: &rohrpost_plugin_api::abi::Manifest) -> Self {
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
    pub(crate) fn reread(&self, manifest: &rohrpost_plugin_api::abi::Manifest) -> Self {
        ManifestInfo {
            hooks: self.hooks,
            ..ManifestInfo::of(manifest)
        }
    }

    /// Who the plugin says it is.
    pub(crate) fn identity(&self) -> Identity {
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
    pub(crate) fn check_identity(&self) -> Result<(), FailedLoad> {
        let reject = |error: LoadError| FailedLoad {
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
    pub(crate) fn check(&self) -> Result<Vec<HandlerInfo>, FailedLoad> {
        self.check_identity()?;
        let identity = self.identity();
        let reject = |error: LoadError| FailedLoad {
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
pub(crate) fn config_of<'a>(settings: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    settings.get(name).map_or("{}", String::as_str)
}

/// What the plugin's `configure` answered (in this process or in its
/// worker), turned into the load's verdict: its warnings are logged.
pub(crate) fn configured(
    manifest: &ManifestInfo,
    answer: Result<String, String>,
    has_table: bool,
) -> Result<(), FailedLoad> {
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
        Err(e) => Err(FailedLoad {
            identity: Some(manifest.identity()),
            error: LoadError::Config(e),
        }),
    }
}

/// The content hash used to skip reloading an unchanged file.
pub(crate) fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Turns abi_stable's errors into one readable reason.
pub(crate) fn library_error(e: LibraryError) -> LoadError {
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
