//! What happened to a file of the plugins directory, as plain data: the
//! watcher describes each load, replacement, rejection and removal once,
//! and the file states, the metrics and the live stream read that
//! description without knowing what a loaded plugin is.

use std::path::PathBuf;

/// What a plugin says it is, for the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub name: String,
    pub version: String,
    pub types: Vec<String>,
}

/// A loaded plugin version, as the events name it.
#[derive(Debug, Clone)]
pub(crate) struct PluginInfo {
    pub name: String,
    pub version: String,
    pub types: Vec<String>,
    /// The file in the plugins directory it was loaded from.
    pub file: PathBuf,
    pub api_version: String,
}

/// Something that happened to a file of the plugins directory.
#[derive(Debug)]
pub(crate) enum PluginEvent {
    /// A new file's plugin serves.
    Loaded { plugin: PluginInfo },
    /// A file's new content serves in place of `previous`; calls in flight
    /// finish on it. `retired_versions`: how many versions of `previous`'s
    /// name are now out of service but still mapped.
    Replaced {
        plugin: PluginInfo,
        previous: PluginInfo,
        retired_versions: u64,
    },
    /// A file could not be loaded, or was refused; `still_serving` names
    /// the version from the same file that keeps serving, if any.
    Rejected {
        file: PathBuf,
        identity: Option<Identity>,
        reason: String,
        still_serving: Option<String>,
    },
    /// A plugin's file was deleted; its library stays mapped.
    Removed {
        plugin: PluginInfo,
        retired_versions: u64,
    },
}

impl PluginEvent {
    /// The event's name in the log, the metrics and the live stream.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            PluginEvent::Loaded { .. } => "loaded",
            PluginEvent::Replaced { .. } => "replaced",
            PluginEvent::Rejected { .. } => "rejected",
            PluginEvent::Removed { .. } => "removed",
        }
    }
}
