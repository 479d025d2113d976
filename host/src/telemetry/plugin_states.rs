//! What became of every file of the plugins directory, kept from the
//! watcher's [`PluginEvent`]s: a rejected file stays listed with its reason
//! until it loads or is deleted, and each plugin's count of versions
//! retired but still mapped (libraries are never unloaded).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
};

use super::plugin_events::{Identity, PluginEvent};
use crate::base::lock::lock;

/// A file of the plugins directory, as the server last saw it.
#[derive(Clone, Debug)]
enum FileStatus {
    Loaded,
    Rejected {
        identity: Option<Identity>,
        reason: String,
        /// Seconds since the Unix epoch.
        at: f64,
    },
}

/// The state of every file, and the retired versions by plugin name.
#[derive(Default)]
pub(crate) struct PluginStates {
    files: Mutex<BTreeMap<PathBuf, FileStatus>>,
    retired: Mutex<HashMap<String, u64>>,
}

impl PluginStates {
    /// Takes in one event that happened at `at`.
    pub(crate) fn record(&self, event: &PluginEvent, at: f64) {
        match event {
            PluginEvent::Loaded { plugin } => {
                lock(&self.files).insert(plugin.file.clone(), FileStatus::Loaded);
            }
            PluginEvent::Replaced {
                plugin,
                previous,
                retired_versions,
            } => {
                lock(&self.files).insert(plugin.file.clone(), FileStatus::Loaded);
                lock(&self.retired).insert(previous.name.clone(), *retired_versions);
            }
            PluginEvent::Rejected {
                file,
                identity,
                reason,
                still_serving,
            } => {
                // A rejected new version does not hide the version still
                // serving.
                if still_serving.is_none() {
                    lock(&self.files).insert(
                        file.clone(),
                        FileStatus::Rejected {
                            identity: identity.clone(),
                            reason: reason.clone(),
                            at,
                        },
                    );
                }
            }
            PluginEvent::Removed {
                plugin,
                retired_versions,
            } => {
                lock(&self.files).remove(&plugin.file);
                lock(&self.retired).insert(plugin.name.clone(), *retired_versions);
            }
        }
    }

    /// A file that was rejected is gone.
    pub(crate) fn forget(&self, file: &Path) {
        let mut files = lock(&self.files);
        if matches!(files.get(file), Some(FileStatus::Rejected { .. })) {
            files.remove(file);
        }
    }

    /// Versions retired but still mapped, by plugin name.
    pub(crate) fn retired(&self) -> HashMap<String, u64> {
        lock(&self.retired).clone()
    }

    /// The rejected files, in file order.
    pub(crate) fn rejected(&self) -> Vec<RejectedFile> {
        lock(&self.files)
            .iter()
            .filter_map(|(file, status)| match status {
                FileStatus::Loaded => None,
                FileStatus::Rejected {
                    identity,
                    reason,
                    at,
                } => Some(RejectedFile {
                    file: file.clone(),
                    identity: identity.clone(),
                    reason: reason.clone(),
                    at: *at,
                }),
            })
            .collect()
    }
}

/// A file that is listed as rejected.
#[derive(Clone, Debug)]
pub(crate) struct RejectedFile {
    pub file: PathBuf,
    pub identity: Option<Identity>,
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(file: &str, still_serving: Option<&str>) -> PluginEvent {
        PluginEvent::Rejected {
            file: file.into(),
            identity: None,
            reason: "not a plugin".to_owned(),
            still_serving: still_serving.map(str::to_owned),
        }
    }

    #[test]
    fn a_rejected_file_is_listed_until_it_is_gone_unless_a_version_serves() {
        let states = PluginStates::default();
        states.record(&rejected("/p/a.so", None), 1.0);
        states.record(&rejected("/p/b.so", Some("b 1.0.0")), 2.0);
        let listed = states.rejected();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].file, Path::new("/p/a.so"));
        assert_eq!(listed[0].reason, "not a plugin");
        assert_eq!(listed[0].at, 1.0);
        states.forget(Path::new("/p/a.so"));
        assert!(states.rejected().is_empty());
    }
}
