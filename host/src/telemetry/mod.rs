//! What the server knows about itself, for operators, one concern per
//! module: [`metrics`] (Prometheus) with its lock-free [`latency`]
//! histogram, [`plugin_states`] (every file of the plugins directory,
//! loaded or rejected, and why) from the [`plugin_events`], [`readiness`],
//! the [`event_bus`] of the status page's live stream, and
//! [`plugin_reports`] (what plugins count and log through the host). The
//! pages that show them are `admin`'s.
//!
//! Everything that changes state reports here, through [`Monitor`]'s
//! methods (the watcher publishes its [`PluginEvent`]s, the dispatcher
//! counts requests, connections count themselves); `admin` only reads.

pub(crate) mod event_bus;
pub(crate) mod latency;
pub(crate) mod metrics;
pub(crate) mod plugin_events;
pub(crate) mod plugin_reports;
pub(crate) mod plugin_states;
pub(crate) mod readiness;
pub(crate) mod striped;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast;

use self::{
    event_bus::EventBus, plugin_events::PluginEvent, plugin_reports::PluginReports,
    plugin_states::PluginStates, readiness::Readiness,
};
pub(crate) use self::{
    event_bus::LiveEvent,
    metrics::{Metrics, RouteMetrics},
};

/// The server's view of itself.
#[derive(Default)]
pub(crate) struct Monitor {
    metrics: Metrics,
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

    /// The counters now, for one sample of `/api/stats`.
    pub(crate) fn read(&self) -> metrics::Reading {
        self.metrics.read()
    }

    /// Counts group messages dropped on a connection's full queue.
    pub(crate) fn queue_drops(&self) -> &Counter {
        &self.metrics.queue_drops
    }

    /// Counts group messages delivered to this host's members.
    pub(crate) fn group_deliveries(&self) -> Counter {
        self.metrics.group_deliveries.clone()
    }

    /// Where plugins' counters and log lines go.
    pub(crate) fn plugin_reports(&self) -> Arc<PluginReports> {
        self.metrics.reports.clone()
    }

    /// Group messages not passed to other hosts (the broker was down or
    /// not answering, or the publishing queue was full).
    pub(crate) fn broker_dropped(&self, count: u64) {
        self.metrics.broker_drops.inc_by(count);
    }

    /// A message from the broker for a group name no rule allows.
    pub(crate) fn broker_invalid(&self) {
        self.metrics.broker_invalid.inc();
    }

    /// An event from a Django Channels layer that is not a rohrpost
    /// message, or cannot be read.
    pub(crate) fn broker_foreign(&self) {
        self.metrics.broker_foreign.inc();
    }

    /// `count` payloads or entries from the broker too large or
    /// malformed to read.
    pub(crate) fn broker_rejected(&self, count: u64) {
        self.metrics.broker_rejected.inc_by(count);
    }

    /// `GET /metrics` in the Prometheus text format.
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics.text()
    }
}
