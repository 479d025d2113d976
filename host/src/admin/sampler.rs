//! The one task behind the status page's charts: once a second it has the
//! monitor read the counters the request path keeps anyway, with the loaded
//! plugins' names and the number of groups (see [`crate::telemetry::stats`]).
//! A request pays nothing for it.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};

use crate::{
    groups::GroupLayer,
    plugins::registry::Registry,
    telemetry::{stats::INTERVAL, Monitor},
};

/// Takes the first reading now (before the server serves, so that every
/// request is in a sample) and starts the sampler; it runs as long as the
/// runtime.
pub fn start(monitor: Arc<Monitor>, registry: Arc<Registry>, groups: Arc<dyn GroupLayer>) {
    let sample = move || {
        let snapshot = registry.snapshot();
        let names: Vec<&str> = snapshot.plugins.values().map(|p| p.name.as_str()).collect();
        monitor.sample(&names, groups.local().group_count());
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
}
