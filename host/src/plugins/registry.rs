//! Which plugin serves which message type, as an immutable snapshot.
//!
//! The request path reads the current snapshot without locking (`ArcSwap`);
//! the watcher builds a new one and swaps it in. A request that already
//! holds a route keeps its plugin alive and finishes on that version, like
//! Erlang's code loading: new requests see the new version at once.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use thiserror::Error;

use crate::{
    plugins::loaded::LoadedPlugin,
    telemetry::{Monitor, RouteMetrics},
};

/// A message type's destination: a plugin and one of its handlers, and the
/// type's metrics.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub plugin: Arc<LoadedPlugin>,
    pub handler: u32,
    pub metrics: Arc<RouteMetrics>,
}

/// One consistent view of the loaded plugins.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub routes: HashMap<String, Route>,
    /// Loaded plugins by the file they came from.
    pub plugins: BTreeMap<PathBuf, Arc<LoadedPlugin>>,
}

/// Why a loaded library may not be installed.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum Conflict {
    #[error("message type '{kind}' is already served by plugin '{owner}' from {file}")]
    TypeTaken {
        kind: String,
        owner: String,
        file: String,
    },
    #[error("a plugin named '{name}' is already loaded from {file}")]
    NameTaken { name: String, file: String },
}

/// The routing table, shared by every connection.
#[derive(Default)]
pub(crate) struct Registry {
    current: ArcSwap<Snapshot>,
}

impl Registry {
    /// The snapshot to route one request with.
    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Puts `plugin` in place of whatever its file held before. Fails, and
    /// changes nothing, when another file's plugin has the same name or one
    /// of its types, unless exactly one of the two yields its types
    /// ([`Hooks::yields`](crate::plugins::manifest::Hooks)): the one that does not
    /// yield serves the type. Returns the version it replaced.
    ///
    /// Only the plugin watcher writes, so there is one writer at a time.
    pub(crate) fn install(
        &self,
        plugin: Arc<LoadedPlugin>,
        monitor: &Monitor,
    ) -> Result<Option<Arc<LoadedPlugin>>, Conflict> {
        let old = self.current.load_full();
        for (file, other) in &old.plugins {
            if *file == plugin.file {
                continue;
            }
            if other.name == plugin.name {
                return Err(Conflict::NameTaken {
                    name: plugin.name.clone(),
                    file: file.display().to_string(),
                });
            }
        }
        for kind in plugin.types() {
            if let Some(route) = old.routes.get(kind) {
                let one_yields = route.plugin.hooks.yields != plugin.hooks.yields;
                if route.plugin.file != plugin.file && !one_yields {
                    return Err(Conflict::TypeTaken {
                        kind: kind.to_owned(),
                        owner: route.plugin.name.clone(),
                        file: route.plugin.file.display().to_string(),
                    });
                }
            }
        }
        let mut next = Self::without(&old, &plugin.file);
        let replaced = old.plugins.get(&plugin.file).cloned();
        next.plugins.insert(plugin.file.clone(), plugin);
        next.routes = Self::routes(&next.plugins, &next.routes, monitor);
        Self::log_moves(&old, &next);
        self.current.store(Arc::new(next));
        Ok(replaced)
    }

    /// Unregisters the plugin loaded from `file`, if any; a type it served
    /// that a yielding plugin also claims goes back to that plugin.
    pub(crate) fn remove(&self, file: &Path, monitor: &Monitor) -> Option<Arc<LoadedPlugin>> {
        let old = self.current.load_full();
        let removed = old.plugins.get(file).cloned()?;
        let mut next = Self::without(&old, file);
        next.routes = Self::routes(&next.plugins, &next.routes, monitor);
        Self::log_moves(&old, &next);
        self.current.store(Arc::new(next));
        Some(removed)
    }

    /// The routes of `plugins`: every type of a plugin that does not yield,
    /// then the types of yielding plugins that no other plugin serves
    /// (in the order of their files). A route that stays keeps its metrics.
    fn routes(
        plugins: &BTreeMap<PathBuf, Arc<LoadedPlugin>>,
        kept: &HashMap<String, Route>,
        monitor: &Monitor,
    ) -> HashMap<String, Route> {
        let mut routes = HashMap::new();
        for yielding in [false, true] {
            for plugin in plugins.values().filter(|p| p.hooks.yields == yielding) {
                for (index, handler) in plugin.handlers.iter().enumerate() {
                    for kind in &handler.types {
                        if routes.contains_key(kind) {
                            continue;
                        }
                        let route = match kept.get(kind) {
                            Some(r) if Arc::ptr_eq(&r.plugin, plugin) => r.clone(),
                            _ => Route {
                                plugin: plugin.clone(),
                                handler: index as u32,
                                metrics: Arc::new(monitor.route_metrics(kind, &plugin.name)),
                            },
                        };
                        routes.insert(kind.clone(), route);
                    }
                }
            }
        }
        routes
    }

    /// Logs each type that moved from one plugin's name to another's.
    fn log_moves(old: &Snapshot, next: &Snapshot) {
        for (kind, route) in &next.routes {
            if let Some(before) = old.routes.get(kind) {
                if before.plugin.name != route.plugin.name {
                    tracing::info!(r#type = %kind, from = %before.plugin.name,
                        to = %route.plugin.name, "message type moved to another plugin");
                }
            }
        }
    }

    fn without(old: &Snapshot, file: &Path) -> Snapshot {
        Snapshot {
            routes: old
                .routes
                .iter()
                .filter(|(_, r)| r.plugin.file != file)
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
            plugins: old
                .plugins
                .iter()
                .filter(|(f, _)| f.as_path() != file)
                .map(|(f, p)| (f.clone(), p.clone()))
                .collect(),
        }
    }
}
