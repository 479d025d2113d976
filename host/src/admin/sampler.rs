//! The one task behind the status page's charts: once a second it has the
//! sampler read the counters the request path keeps anyway, with the loaded
//! plugins' names and the number of groups (see [`super::stats`]).
//! A request pays nothing for it.

use std::sync::{Arc, Mutex};

use tokio::time::{Instant, MissedTickBehavior};

use super::stats::{History, Seen, INTERVAL};
use crate::{
    base::{clock::unix_now, lock::lock},
    groups::GroupLayer,
    plugins::registry::Registry,
    telemetry::Monitor,
};

/// Takes the first reading now (before the server serves, so that every
/// request is in a sample) and starts the sampler; it runs as long as the
/// runtime. The history it keeps is for `/api/stats` to read.
pub(crate) fn start(
    monitor: Arc<Monitor>,
    registry: Arc<Registry>,
    groups: Arc<dyn GroupLayer>,
) -> Arc<Mutex<History>> {
    let history = Arc::new(Mutex::new(History::default()));
    let kept = history.clone();
    let sample = move || {
        let snapshot = registry.snapshot();
        let plugins: Vec<&str> = snapshot.plugins.values().map(|p| p.name.as_str()).collect();
        let reading = monitor.read();
        let seen = Seen {
            at: unix_now(),
            connections: monitor.open_connections(),
            groups: groups.local().group_count(),
            plugins: &plugins,
        };
        lock(&kept).record(std::time::Instant::now(), reading, &seen);
    };
    sample();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + INTERVAL, INTERVAL);
        // A late tick is taken late, not twice: each sample knows how long
        // it covers.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sample();
        }
    });
    history
}
