//! What the server knows about itself, for operators: Prometheus metrics,
//! the state of every file in the plugins directory (loaded or rejected, and
//! why), readiness, and a live stream of plugin events for the status page.
//!
//! Everything that changes state reports here (the watcher, the dispatcher,
//! connections, group fan-out); `admin` only reads.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use std::fmt::Write as _;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::plugin::{Identity, LoadedPlugin};

/// Labels of the messages counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The message type, for types a plugin serves; empty otherwise (the
    /// type is client-controlled and must not grow the label set).
    pub r#type: String,
    pub outcome: Outcome,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
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

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Timeout => "timeout",
            Outcome::UnknownType => "unknown_type",
            Outcome::Invalid => "invalid",
        }
    }
}

impl EncodeLabelValue for Outcome {
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

/// The counters and the latency histogram of one routed message type.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    pub ok: Counter,
    pub error: Counter,
    pub panic: Counter,
    pub timeout: Counter,
    pub latency: Histogram,
}

/// The Prometheus metrics.
pub struct Metrics {
    invalid: Counter,
    unknown_type: Counter,
    registry: Registry,
    connections: Gauge,
    messages: Family<MessageLabels, Counter>,
    handler_seconds: Family<PluginLabel, Histogram>,
    plugin_events: Family<EventLabel, Counter>,
    /// Group messages not queued because a connection's queue was full.
    pub queue_drops: Counter,
    /// Group messages not passed to other hosts (the broker was down or
    /// not answering, or the publishing queue was full).
    pub broker_drops: Counter,
    /// Messages from the broker for a group name no rule allows (dropped).
    pub broker_invalid: Counter,
    /// 1 while the group broker (Redis) is reachable.
    broker_up: Gauge,
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
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Requests handled, by message type and outcome",
            messages.clone(),
        );
        let handler_seconds = Family::<PluginLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                30.0,
            ])
        });
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
        let unlabelled = |outcome| {
            messages
                .get_or_create(&MessageLabels {
                    r#type: String::new(),
                    outcome,
                })
                .clone()
        };
        let invalid = unlabelled(Outcome::Invalid);
        let unknown_type = unlabelled(Outcome::UnknownType);
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
        let broker_up = Gauge::default();
        registry.register(
            "broker_up",
            "1 while the group broker (Redis) is reachable; 0 while not, or in memory mode",
            broker_up.clone(),
        );
        Metrics {
            broker_drops,
            broker_invalid,
            broker_up,
            invalid,
            unknown_type,
            registry,
            connections,
            messages,
            handler_seconds,
            plugin_events,
            queue_drops,
        }
    }
}

/// A file of the plugins directory, as the server last saw it.
#[derive(Clone, Debug)]
enum FileStatus {
    Loaded,
    Rejected {
        identity: Option<Identity>,
        reason: String,
        at: f64,
    },
}

/// The server's view of itself.
pub struct Monitor {
    pub metrics: Metrics,
    files: Mutex<BTreeMap<PathBuf, FileStatus>>,
    /// Versions replaced or removed but still mapped, by plugin name.
    retired: Mutex<HashMap<String, u64>>,
    ready: AtomicBool,
    /// Whether a group broker is in use (`Some`): reachable, or why not.
    broker: Mutex<Option<Result<(), &'static str>>>,
    open_connections: Arc<AtomicI64>,
    events: broadcast::Sender<Arc<LiveEvent>>,
    /// Whether the task that sends connection counts runs.
    counting: AtomicBool,
}

/// One event of the live stream, serialized once for every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// The SSE event name: `loaded`, `connections`, ...
    pub name: String,
    /// The event as JSON text.
    pub json: String,
}

/// How often the open connection count is sent, at most: a count per
/// connect would make every subscriber's cost part of every connect.
const COUNT_INTERVAL: Duration = Duration::from_millis(250);

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            metrics: Metrics::default(),
            files: Mutex::default(),
            retired: Mutex::default(),
            ready: AtomicBool::new(false),
            broker: Mutex::new(None),
            open_connections: Arc::default(),
            events: broadcast::channel(256).0,
            counting: AtomicBool::new(false),
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Monitor {
    /// The plugins directory has been scanned once.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the server can do its whole job: plugins scanned, and the
    /// group broker reachable if there is one. `Err` says why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("the plugins directory is not scanned yet");
        }
        if let Some(Err(reason)) = *lock(&self.broker) {
            return Err(reason);
        }
        Ok(())
    }

    /// A group broker is in use: reachable (`Ok`), or not and why.
    pub fn set_broker(&self, state: Result<(), &'static str>) {
        self.metrics.broker_up.set(i64::from(state.is_ok()));
        *lock(&self.broker) = Some(state);
    }

    /// A connection opened (`+1`) or closed (`-1`). Two atomics: the live
    /// stream reads the count on its own time.
    pub fn connection(&self, delta: i64) {
        self.metrics.connections.inc_by(delta);
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// The metrics of one routed message type, made once per route so that
    /// a request only bumps atomics.
    pub fn route_metrics(&self, kind: &str, plugin: &str) -> RouteMetrics {
        let counter = |outcome| {
            self.metrics
                .messages
                .get_or_create(&MessageLabels {
                    r#type: kind.to_owned(),
                    outcome,
                })
                .clone()
        };
        RouteMetrics {
            ok: counter(Outcome::Ok),
            error: counter(Outcome::Error),
            panic: counter(Outcome::Panic),
            timeout: counter(Outcome::Timeout),
            latency: self
                .metrics
                .handler_seconds
                .get_or_create(&PluginLabel {
                    plugin: plugin.to_owned(),
                })
                .clone(),
        }
    }

    /// A frame that was not a valid rohrpost message.
    pub fn invalid_request(&self) {
        self.metrics.invalid.inc();
    }

    /// A request of a type no plugin serves.
    pub fn unknown_type(&self) {
        self.metrics.unknown_type.inc();
    }

    /// A plugin was loaded (`replaced`: a version before it is retired).
    /// Returns how many retired versions of the replaced plugin stay mapped.
    pub fn loaded(&self, plugin: &LoadedPlugin, replaced: Option<&LoadedPlugin>) -> u64 {
        lock(&self.files).insert(plugin.file.clone(), FileStatus::Loaded);
        let (event, retired) = match replaced {
            Some(old) => ("replaced", self.retire(&old.name)),
            None => ("loaded", 0),
        };
        self.plugin_event(
            event,
            json!({
                "plugin": plugin.name, "version": plugin.version,
                "types": plugin.types().collect::<Vec<_>>(), "file": plugin.file,
            }),
        );
        retired
    }

    /// The plugin of `file` was removed (its file is gone).
    /// Returns how many retired versions of the plugin stay mapped.
    pub fn removed(&self, file: &Path, plugin: &LoadedPlugin) -> u64 {
        lock(&self.files).remove(file);
        let retired = self.retire(&plugin.name);
        self.plugin_event(
            "removed",
            json!({
                "plugin": plugin.name, "version": plugin.version, "file": file,
            }),
        );
        retired
    }

    /// Counts one more version of `name` out of service but still mapped
    /// (libraries are never unloaded); the count so far.
    fn retire(&self, name: &str) -> u64 {
        let mut retired = lock(&self.retired);
        let count = retired.entry(name.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// A file was rejected. It stays listed, with its reason, until it is
    /// loaded or deleted.
    pub fn rejected(&self, file: &Path, identity: Option<&Identity>, reason: &str, serving: bool) {
        let status = FileStatus::Rejected {
            identity: identity.cloned(),
            reason: reason.to_owned(),
            at: now(),
        };
        // A rejected new version does not hide the version still serving.
        if !serving {
            lock(&self.files).insert(file.to_owned(), status);
        }
        self.plugin_event(
            "rejected",
            json!({
                "plugin": identity.map(|i| &i.name), "version": identity.map(|i| &i.version),
                "file": file, "reason": reason,
            }),
        );
    }

    /// A file that was rejected is gone.
    pub fn forget(&self, file: &Path) {
        let mut files = lock(&self.files);
        if matches!(files.get(file), Some(FileStatus::Rejected { .. })) {
            files.remove(file);
        }
    }

    fn plugin_event(&self, event: &str, mut details: Value) {
        self.metrics
            .plugin_events
            .get_or_create(&EventLabel {
                event: event.to_owned(),
            })
            .inc();
        details["event"] = Value::from(event);
        details["at"] = Value::from(now());
        let _ = self.events.send(Arc::new(LiveEvent {
            name: event.to_owned(),
            json: details.to_string(),
        }));
    }

    /// Live events for the status page: plugin events as they happen, and
    /// the open connection count when it changed, at most every
    /// [`COUNT_INTERVAL`]. Call it within the runtime.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        let receiver = self.events.subscribe();
        if !self.counting.swap(true, Ordering::Relaxed) {
            tokio::spawn(send_counts(
                self.open_connections.clone(),
                self.events.clone(),
            ));
        }
        receiver
    }

    /// `GET /api/plugins`: every loaded plugin and every rejected file.
    pub fn plugins_json(&self, loaded: &BTreeMap<PathBuf, std::sync::Arc<LoadedPlugin>>) -> Value {
        let retired = lock(&self.retired).clone();
        let mut list: Vec<Value> = loaded
            .values()
            .map(|p| {
                let stats = p.stats();
                json!({
                    "name": p.name,
                    "version": p.version,
                    "api_version": p.api_version,
                    "file": p.file,
                    "types": p.types().collect::<Vec<_>>(),
                    "handlers": p.handlers.iter().map(|h| json!({
                        "types": h.types, "mode": h.mode(),
                    })).collect::<Vec<_>>(),
                    "status": "loaded",
                    "loaded_at": p.loaded_at,
                    "calls": stats.calls,
                    "errors": stats.errors,
                    "panics": stats.panics,
                    "timeouts": stats.timeouts,
                    "retired_versions": retired.get(&p.name).copied().unwrap_or(0),
                })
            })
            .collect();
        for (file, status) in lock(&self.files).iter() {
            if let FileStatus::Rejected {
                identity,
                reason,
                at,
            } = status
            {
                list.push(json!({
                    "name": identity.as_ref().map(|i| &i.name),
                    "version": identity.as_ref().map(|i| &i.version),
                    "file": file,
                    "types": identity.as_ref().map(|i| i.types.clone()).unwrap_or_default(),
                    "status": "rejected",
                    "reason": reason,
                    "rejected_at": at,
                }));
            }
        }
        json!({ "plugins": list, "connections": self.open_connections() })
    }

    /// `GET /metrics` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.metrics.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Sends the open connection count to the live stream when it changed,
/// at most every [`COUNT_INTERVAL`], while anyone listens.
async fn send_counts(open: Arc<AtomicI64>, events: broadcast::Sender<Arc<LiveEvent>>) {
    let mut sent = None;
    let mut tick = tokio::time::interval(COUNT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = open.load(Ordering::Relaxed);
        if events.receiver_count() == 0 {
            // A new subscriber starts from a snapshot with the count.
            sent = None;
            continue;
        }
        if sent != Some(now) {
            sent = Some(now);
            let _ = events.send(Arc::new(LiveEvent {
                name: "connections".to_owned(),
                json: json!({ "event": "connections", "open": now }).to_string(),
            }));
        }
    }
}
