//! What the server knows about itself, for operators, one concern per
//! module: [`metrics`] (Prometheus), [`plugin_states`] (every file of the
//! plugins directory, loaded or rejected, and why), [`readiness`], the
//! [`event_bus`] of the status page's live stream, [`plugins_page`]
//! (`/api/plugins`) and [`stats`], the recent history of `/api/stats`.
//!
//! Everything that changes state reports here (the watcher publishes its
//! [`PluginEvent`]s, the dispatcher counts requests, connections count
//! themselves); `admin` only reads.

pub(crate) mod event_bus;
pub(crate) mod latency;
pub(crate) mod metrics;
pub(crate) mod plugin_events;
pub(crate) mod plugin_reports;
pub(crate) mod plugin_states;
pub(crate) mod readiness;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use tokio::sync::broadcast;

use self::plugin_events::PluginEvent;
use self::{event_bus::EventBus, plugin_states::PluginStates, readiness::Readiness};
pub(crate) use self::{
    event_bus::LiveEvent,
    metrics::{Metrics, RouteMetrics},
};

/// The server's view of itself.
#[derive(Default)]
pub(crate) struct Monitor {
    pub metrics: Metrics,
    plugins: PluginStates,
    readiness: Readiness,
    events: EventBus,
    open_connections: Arc<AtomicI64>,
}

impl Monitor {
    /// The plugins directory has been scanned once.
    pub(crate) fn set_ready(&self) {
        self.readiness.set_scanned();
    }

    /// Whether the server can do its whole job: plugins scanned, and the
    /// group broker reachable if there is one. `Err` says why not.
    pub(crate) fn readiness(&self) -> Result<(), &'static str> {
        self.readiness.check()
    }

    /// Whether an inline handler call is stuck now (not ready while so).
    pub(crate) fn set_stuck(&self, stuck: bool) {
        self.readiness.set_stuck(stuck);
    }

    /// A group broker is in use: reachable (`Ok`), or not and why.
    pub(crate) fn set_broker(&self, state: Result<(), &'static str>) {
        self.metrics.broker_up.set(i64::from(state.is_ok()));
        self.readiness.set_broker(state);
    }

    /// A connection opened (`+1`) or closed (`-1`). Two atomics: the live
    /// stream reads the count on its own time.
    pub(crate) fn connection(&self, delta: i64) {
        self.metrics.connections.inc_by(delta);
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// The open connections' counter, for a task that reports it.
    pub(crate) fn open_connections_counter(&self) -> Arc<AtomicI64> {
        self.open_connections.clone()
    }

    pub(crate) fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// The metrics of one routed message type, made once per route so that
    /// a request only bumps atomics.
    pub(crate) fn route_metrics(&self, kind: &str, plugin: &str) -> RouteMetrics {
        self.metrics.route(kind, plugin)
    }

    /// A frame that was not a valid rohrpost message.
    pub(crate) fn invalid_request(&self) {
        self.metrics.invalid.inc();
    }

    /// A request of a type no plugin serves.
    pub(crate) fn unknown_type(&self) {
        self.metrics.unknown_type.inc();
    }

    /// One plugin event, for the file states, the metrics and the live
    /// stream (the watcher logs it).
    pub(crate) fn publish(&self, event: &PluginEvent) {
        let at = crate::base::clock::unix_now();
        self.plugins.record(event, at);
        self.metrics.plugin_event(event.name());
        self.events.plugin_event(event, at);
    }

    /// A file that was rejected is gone.
    pub(crate) fn forget(&self, file: &Path) {
        self.plugins.forget(file);
    }

    /// Live events for the status page: plugin events as they happen, and
    /// the open connection count when it changed, a few times a second at
    /// most. Call it within the runtime.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.events.subscribe(&self.open_connections)
    }

    /// Every file of the plugins directory that is not loaded, and why.
    pub(crate) fn plugin_states(&self) -> &PluginStates {
        &self.plugins
    }

    /// The worker counters of the plugin `name`.
    pub(crate) fn worker_metrics(&self, name: &str) -> metrics::WorkerMetrics {
        let mut metrics = self.metrics.worker(name);
        metrics.events = self.events.sink();
        metrics
    }

    /// `GET /metrics` in the Prometheus text format.
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics.text()
    }
}
