//! What the operator endpoints read: the monitor's counters, the registry,
//! the groups, the recent history the [`super::sampler`] keeps; and the
//! token that guards them.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::{plugins_page, stats::History, token::AdminToken};
use crate::{
    base::lock::lock, groups::GroupLayer, plugins::registry::Registry, telemetry::Monitor,
};

/// What the endpoints read.
pub(crate) struct Admin {
    pub monitor: Arc<Monitor>,
    /// The recent history behind `/api/stats`, kept by [`super::sampler`].
    pub history: Arc<Mutex<History>>,
    pub registry: Arc<Registry>,
    /// For the group sizes of `/api/stats` and the hosts of `/api/hosts`.
    pub groups: Arc<dyn GroupLayer>,
    /// Guards every endpoint but `/healthz` and `/readyz`.
    pub token: AdminToken,
    /// One permit per `/api/events` subscriber.
    pub event_streams: Arc<Semaphore>,
}

impl Admin {
    /// `GET /api/plugins`: every loaded plugin and every rejected file.
    pub(crate) fn plugins_json(&self) -> Value {
        plugins_page::render(
            self.monitor.plugin_states(),
            &self.registry.snapshot().plugins,
            self.monitor.open_connections(),
        )
    }

    /// `GET /api/stats` without its groups: the recent history and the
    /// loaded plugins.
    pub(crate) fn stats_json(&self) -> Value {
        lock(&self.history).render(
            &self.registry.snapshot().plugins,
            self.monitor.open_connections(),
        )
    }
}
