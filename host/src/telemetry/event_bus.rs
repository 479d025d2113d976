//! The live stream of the status page (`/api/events`): every plugin event
//! as it happens, and the open connection count when it changed, each
//! serialized once for all subscribers.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::plugin_events::PluginEvent;

/// One event of the live stream, serialized once for every subscriber.
#[derive(Debug)]
pub(crate) struct LiveEvent {
    /// The SSE event name: `loaded`, `connections`, ...
    pub name: String,
    /// The event as JSON text.
    pub json: String,
}

/// Sends the events of a plugin's workers (`crashed`, `killed`,
/// `restarted`, `failed`) to the live stream.
#[derive(Clone, Debug)]
pub(crate) struct LiveSink(broadcast::Sender<Arc<LiveEvent>>);

impl Default for LiveSink {
    fn default() -> Self {
        LiveSink(broadcast::channel(1).0)
    }
}

impl LiveSink {
    /// One worker event of `plugin` `version`; `reason` says how it ended.
    pub(crate) fn worker_event(
        &self,
        name: &str,
        plugin: &str,
        version: &str,
        types: &[String],
        reason: &str,
    ) {
        if self.0.receiver_count() == 0 {
            return;
        }
        let at = crate::base::clock::unix_now();
        let details = json!({
            "plugin": plugin, "version": version, "types": types,
            "reason": reason, "event": name, "at": at,
        });
        let _ = self.0.send(Arc::new(LiveEvent {
            name: name.to_owned(),
            json: details.to_string(),
        }));
    }
}

/// How often the open connection count is sent, at most: a count per
/// connect would make every subscriber's cost part of every connect.
const COUNT_INTERVAL: Duration = Duration::from_millis(250);

/// The broadcast behind the stream.
pub(crate) struct EventBus {
    events: broadcast::Sender<Arc<LiveEvent>>,
    /// Whether the task that sends connection counts runs.
    counting: AtomicBool,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            events: broadcast::channel(256).0,
            counting: AtomicBool::new(false),
        }
    }
}

impl EventBus {
    /// Sends a plugin event that happened at `at` to every subscriber.
    pub(crate) fn plugin_event(&self, event: &PluginEvent, at: f64) {
        let mut details = match event {
            PluginEvent::Loaded { plugin } | PluginEvent::Replaced { plugin, .. } => json!({
                "plugin": plugin.name, "version": plugin.version,
                "types": plugin.types, "file": plugin.file,
            }),
            PluginEvent::Rejected {
                file,
                identity,
                reason,
                ..
            } => json!({
                "plugin": identity.as_ref().map(|i| &i.name),
                "version": identity.as_ref().map(|i| &i.version),
                "file": file, "reason": reason,
            }),
            PluginEvent::Removed { plugin, .. } => json!({
                "plugin": plugin.name, "version": plugin.version, "file": plugin.file,
            }),
        };
        let name = event.name();
        details["event"] = Value::from(name);
        details["at"] = Value::from(at);
        let _ = self.events.send(Arc::new(LiveEvent {
            name: name.to_owned(),
            json: details.to_string(),
        }));
    }

    /// Where a plugin's supervisor sends its workers' events.
    pub(crate) fn sink(&self) -> LiveSink {
        LiveSink(self.events.clone())
    }

    /// A new subscriber; the first starts the task that sends `open`, the
    /// open connection count. Call it within the runtime.
    pub(crate) fn subscribe(&self, open: &Arc<AtomicI64>) -> broadcast::Receiver<Arc<LiveEvent>> {
        let receiver = self.events.subscribe();
        if !self.counting.swap(true, Ordering::Relaxed) {
            tokio::spawn(send_counts(open.clone(), self.events.clone()));
        }
        receiver
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plugin_event_reaches_subscribers_once_serialized() {
        let bus = EventBus::default();
        let mut receiver = bus.subscribe(&Arc::default());
        let event = PluginEvent::Rejected {
            file: "/p/a.so".into(),
            identity: None,
            reason: "not a plugin".to_owned(),
            still_serving: None,
        };
        bus.plugin_event(&event, 12.5);
        let live = receiver.recv().await.unwrap();
        assert_eq!(live.name, "rejected");
        assert_eq!(
            live.json,
            r#"{"plugin":null,"version":null,"file":"/p/a.so","reason":"not a plugin","event":"rejected","at":12.5}"#
        );
    }
}
