//! The Prometheus metrics, registered once. Counters that the request path
//! bumps are resolved ahead (per route, see [`Metrics::route`]), so that a
//! request touches only atomics, never a label lookup. The status page's
//! sampler reads the same counters once a second ([`Metrics::read`]).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{Arc, LazyLock, Mutex},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::event_bus::LiveSink;
use super::{
    latency::{Buckets, Latency},
    plugin_reports::PluginReports,
    striped::Striped,
};
use crate::base::lock::lock;

/// Bytes through permessage-deflate (RFC 7692), before and after, each
/// way. Static: the socket code that compresses and inflates (the
/// connection's and the fan-out's) holds no handle to the metrics, and a
/// handle per connection would cost every connection memory.
pub(crate) struct CompressionCounts {
    /// Bytes of messages compressed for sending (a group message counts
    /// once, however many members it reaches), and what they became.
    pub sent_plain: Counter,
    pub sent_compressed: Counter,
    /// Bytes of compressed client messages as they came, and inflated.
    pub received_compressed: Counter,
    pub received_plain: Counter,
}

pub(crate) static COMPRESSION: LazyLock<CompressionCounts> = LazyLock::new(|| CompressionCounts {
    sent_plain: Counter::default(),
    sent_compressed: Counter::default(),
    received_compressed: Counter::default(),
    received_plain: Counter::default(),
});

/// Labels of the messages counter.
/// Counters of one plugin's workers, in the Prometheus metrics (by plugin
/// name, across versions), and the live stream of the status page.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerMetrics {
    pub crashes: Counter,
    pub restarts: Counter,
    pub events: LiveSink,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MessageLabels {
    /// The message type, for types a plugin serves; empty otherwise (the
    /// type is client-controlled and must not grow the label set).
    pub r#type: String,
    pub outcome: RequestResult,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum RequestResult {
    /// The handler ran and succeeded.
    Ok,
    /// The handler returned an error.
    Error,
    Panic,
    Timeout,
    /// No plugin serves the type.
    UnknownType,
    /// The frame was not a valid rohrpost message.
    Invalid,
}

impl RequestResult {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RequestResult::Ok => "ok",
            RequestResult::Error => "error",
            RequestResult::Panic => "panic",
            RequestResult::Timeout => "timeout",
            RequestResult::UnknownType => "unknown_type",
            RequestResult::Invalid => "invalid",
        }
    }
}

impl EncodeLabelValue for RequestResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

/// A counter that every request bumps: in stripes ([`super::striped`]).
pub(crate) type RequestCounter = Counter<u64, Striped>;

/// The counters and the latency histogram of one routed message type.
#[derive(Clone, Debug)]
pub(crate) struct RouteMetrics {
    pub ok: RequestCounter,
    pub error: RequestCounter,
    pub panic: RequestCounter,
    pub timeout: RequestCounter,
    pub latency: Latency,
}

/// The Prometheus metrics.
pub(crate) struct Metrics {
    pub(super) invalid: RequestCounter,
    pub(super) unknown_type: RequestCounter,
    registry: Registry,
    pub(super) connections: Gauge,
    messages: Family<MessageLabels, RequestCounter>,
    handler_seconds: Family<PluginLabel, Latency>,
    plugin_events: Family<EventLabel, Counter>,
    worker_crashes: Family<PluginLabel, Counter>,
    worker_restarts: Family<PluginLabel, Counter>,
    /// Group messages not queued because a connection's queue was full.
    pub queue_drops: Counter,
    /// Group messages not passed to other hosts (the broker was down or
    /// not answering, or the publishing queue was full).
    pub broker_drops: Counter,
    /// Messages from the broker for a group name no rule allows (dropped).
    pub broker_invalid: Counter,
    /// Events from a Django Channels layer that are not rohrpost messages
    /// (their `type` is not `rohrpost.message`), or that cannot be read.
    pub broker_foreign: Counter,
    /// Payloads from the broker too large or malformed to read (dropped).
    pub broker_rejected: Counter,
    /// 1 while the group broker (Redis) is reachable.
    pub(super) broker_up: Gauge,
    /// Group messages handed to member connections of this host.
    pub group_deliveries: Counter,
    /// What plugins count and log through the host.
    pub reports: Arc<PluginReports>,
    /// Every routed type's outcome counters, for [`Metrics::read`]; types
    /// come from plugins, never from clients.
    outcomes: Mutex<HashMap<String, [RequestCounter; 4]>>,
    /// Every plugin's latency histogram, by plugin name.
    latencies: Mutex<BTreeMap<String, Latency>>,
}

/// The counters as they stand, for the status page's sampler.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    /// Requests whose handler succeeded.
    pub ok: u64,
    /// Every other request: handler errors, panics, timeouts, unknown
    /// types, invalid frames.
    pub failed: u64,
    /// Group messages handed to member connections of this host.
    pub group_deliveries: u64,
    /// Each plugin's handler latency histogram, by plugin name.
    pub latency: BTreeMap<String, Buckets>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rohrpost");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let messages = Family::<MessageLabels, RequestCounter>::default();
        registry.register(
            "messages",
            "Requests handled, by message type and outcome",
            messages.clone(),
        );
        let handler_seconds = Family::<PluginLabel, Latency>::default();
        registry.register(
            "handler_duration_seconds",
            "Time from a request to its handler's result, by plugin",
            handler_seconds.clone(),
        );
        let plugin_events = Family::<EventLabel, Counter>::default();
        registry.register(
            "plugin_events",
            "Plugin loads, replacements, rejections and removals",
            plugin_events.clone(),
        );
        let worker_crashes = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_worker_crashes",
            "Plugin worker processes that died on their own (signal or exit), by plugin",
            worker_crashes.clone(),
        );
        let worker_restarts = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_worker_restarts",
            "Plugin worker processes started to replace one that died or was killed, by plugin",
            worker_restarts.clone(),
        );
        let unlabelled = |outcome| {
            messages
                .get_or_create(&MessageLabels {
                    r#type: String::new(),
                    outcome,
                })
                .clone()
        };
        let invalid = unlabelled(RequestResult::Invalid);
        let unknown_type = unlabelled(RequestResult::UnknownType);
        let queue_drops = Counter::default();
        registry.register(
            "outbound_queue_drops",
            "Group messages dropped because a connection's outbound queue was full",
            queue_drops.clone(),
        );
        let broker_drops = Counter::default();
        registry.register(
            "broker_drops",
            "Group messages not passed to other hosts: the broker was unreachable or not answering, or the publishing queue was full",
            broker_drops.clone(),
        );
        let broker_invalid = Counter::default();
        registry.register(
            "broker_invalid_groups",
            "Messages from the group broker for an invalid group name, dropped",
            broker_invalid.clone(),
        );
        let broker_foreign = Counter::default();
        registry.register(
            "broker_foreign_events",
            "Events from a Django Channels layer that are not rohrpost.message events or cannot be read, skipped",
            broker_foreign.clone(),
        );
        let broker_rejected = Counter::default();
        registry.register(
            "broker_rejected",
            "Payloads read from Redis that were too large or malformed (bad msgpack, nested too deep, not UTF-8, not JSON from another host), dropped, and entries a bounded read of a set or hash left in Redis",
            broker_rejected.clone(),
        );
        let broker_up = Gauge::default();
        registry.register(
            "broker_up",
            "1 while the group broker (Redis) is reachable; 0 while not, or in memory mode",
            broker_up.clone(),
        );
        let group_deliveries = Counter::default();
        registry.register(
            "group_deliveries",
            "Group messages handed to member connections of this host (one per member)",
            group_deliveries.clone(),
        );
        let compression = &*COMPRESSION;
        for (name, help, counter) in [
            (
                "compression_sent_plain_bytes",
                "Bytes of messages compressed for sending, before compression (a group message once)",
                &compression.sent_plain,
            ),
            (
                "compression_sent_compressed_bytes",
                "Bytes of messages compressed for sending, after compression (a group message once)",
                &compression.sent_compressed,
            ),
            (
                "compression_received_compressed_bytes",
                "Bytes of compressed client messages as received",
                &compression.received_compressed,
            ),
            (
                "compression_received_plain_bytes",
                "Bytes of compressed client messages once inflated",
                &compression.received_plain,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let reports = Arc::new(PluginReports::register(&mut registry));
        Metrics {
            group_deliveries,
            reports,
            outcomes: Mutex::default(),
            latencies: Mutex::default(),
            broker_drops,
            broker_invalid,
            broker_foreign,
            broker_rejected,
            broker_up,
            invalid,
            unknown_type,
            registry,
            connections,
            messages,
            handler_seconds,
            plugin_events,
            worker_crashes,
            worker_restarts,
            queue_drops,
        }
    }
}

impl Metrics {
    /// The metrics of one routed message type, made once per route so that
    /// a request only bumps atomics.
    pub(crate) fn route(&self, kind: &str, plugin: &str) -> RouteMetrics {
        let counter = |outcome| {
            self.messages
                .get_or_create(&MessageLabels {
                    r#type: kind.to_owned(),
                    outcome,
                })
                .clone()
        };
        let metrics = RouteMetrics {
            ok: counter(RequestResult::Ok),
            error: counter(RequestResult::Error),
            panic: counter(RequestResult::Panic),
            timeout: counter(RequestResult::Timeout),
            latency: self
                .handler_seconds
                .get_or_create(&PluginLabel {
                    plugin: plugin.to_owned(),
                })
                .clone(),
        };
        lock(&self.outcomes)
            .entry(kind.to_owned())
            .or_insert_with(|| {
                [
                    metrics.ok.clone(),
                    metrics.error.clone(),
                    metrics.panic.clone(),
                    metrics.timeout.clone(),
                ]
            });
        lock(&self.latencies)
            .entry(plugin.to_owned())
            .or_insert_with(|| metrics.latency.clone());
        metrics
    }

    /// The request counters and latencies as they stand: a few dozen
    /// relaxed loads, once a second.
    pub(crate) fn read(&self) -> Reading {
        let mut reading = Reading {
            failed: self.invalid.get() + self.unknown_type.get(),
            group_deliveries: self.group_deliveries.get(),
            ..Reading::default()
        };
        for [ok, error, panic, timeout] in lock(&self.outcomes).values() {
            reading.ok += ok.get();
            reading.failed += error.get() + panic.get() + timeout.get();
        }
        reading.latency = lock(&self.latencies)
            .iter()
            .map(|(plugin, latency)| (plugin.clone(), latency.buckets()))
            .collect();
        reading
    }

    /// The worker counters of the plugin `name`.
    pub(crate) fn worker(&self, name: &str) -> WorkerMetrics {
        let label = PluginLabel {
            plugin: name.to_owned(),
        };
        WorkerMetrics {
            crashes: self.worker_crashes.get_or_create(&label).clone(),
            restarts: self.worker_restarts.get_or_create(&label).clone(),
            events: Default::default(),
        }
    }

    /// Counts one plugin event (`loaded`, `rejected`, ...).
    pub(crate) fn plugin_event(&self, event: &str) {
        self.plugin_events
            .get_or_create(&EventLabel {
                event: event.to_owned(),
            })
            .inc();
    }

    /// Everything, in the Prometheus text format.
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
