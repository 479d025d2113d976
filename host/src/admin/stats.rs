//! The status page's recent history (`GET /api/stats`): once a second the
//! sampler ([`crate::admin::sampler`]) reads the counters the request path bumps
//! anyway ([`Metrics::read`](crate::telemetry::metrics::Metrics::read)) and keeps what
//! changed, as rates and latency percentiles, in a bounded ring: the last
//! [`CAPACITY`] samples for the server and for each loaded plugin. Nothing
//! here runs per message.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::telemetry::{latency::Buckets, metrics::Reading};
use crate::{plugins::isolation::supervisor::WorkerState, plugins::loaded::LoadedPlugin};

/// How often a sample is taken.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// How many samples are kept: five minutes.
pub(crate) const CAPACITY: usize = 300;
/// The window of each plugin's percentiles in the table: a minute.
const WINDOW: usize = 60;
/// Plugins with a history of their own, at most (by name order); the
/// others are listed without one.
pub(crate) const MAX_PLUGINS: usize = 64;

/// One sample of the server as a whole.
#[derive(Clone, Debug)]
struct Sample {
    /// When it was taken, in seconds since the Unix epoch.
    at: f64,
    /// The seconds it covers.
    seconds: f64,
    /// Requests per second whose handler succeeded.
    ok: f64,
    /// Other requests per second (errors, panics, timeouts, unknown types,
    /// invalid frames).
    error: f64,
    /// Handler latency percentiles of the sample's requests, in seconds.
    p50: Option<f64>,
    p99: Option<f64>,
    connections: i64,
    /// Group messages handed to member connections, per second.
    group_messages: f64,
    /// Groups with members on this host.
    groups: usize,
}

/// One sample of one plugin.
#[derive(Clone, Copy, Debug)]
struct PluginSample {
    calls: f64,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// One plugin's history; it ends at the server's latest sample.
#[derive(Debug, Default)]
struct PluginHistory {
    samples: VecDeque<PluginSample>,
    /// The cumulative histogram at each of the last [`WINDOW`] samples and
    /// the one before them, for the percentiles of the last minute.
    cumulative: VecDeque<Buckets>,
}

/// The samples, and the reading they are measured from.
#[derive(Default)]
pub(crate) struct History {
    samples: VecDeque<Sample>,
    plugins: BTreeMap<String, PluginHistory>,
    last: Option<(Instant, Reading)>,
}

/// What the sampler sees besides the counters.
pub(crate) struct Seen<'a> {
    /// When it read them, in seconds since the Unix epoch.
    pub at: f64,
    pub connections: i64,
    pub groups: usize,
    /// The names of the loaded plugins.
    pub plugins: &'a [&'a str],
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, capacity: usize) {
    if ring.len() == capacity {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl History {
    /// Takes in a reading made at `now`; from the second one on, a sample.
    pub(crate) fn record(&mut self, now: Instant, reading: Reading, seen: &Seen<'_>) {
        let Some((then, last)) = self.last.take() else {
            self.last = Some((now, reading));
            return;
        };
        let seconds = now.duration_since(then).as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        let empty = Buckets::default();
        let mut all = Buckets::default();
        for (plugin, buckets) in &reading.latency {
            all.add(&buckets.since(last.latency.get(plugin).unwrap_or(&empty)));
        }
        push_bounded(
            &mut self.samples,
            Sample {
                at: seen.at,
                seconds,
                ok: rate(reading.ok, last.ok),
                error: rate(reading.failed, last.failed),
                p50: all.quantile(0.5),
                p99: all.quantile(0.99),
                connections: seen.connections,
                group_messages: rate(reading.group_deliveries, last.group_deliveries),
                groups: seen.groups,
            },
            CAPACITY,
        );
        // Plugins gone are forgotten; new ones start their history now.
        self.plugins
            .retain(|name, _| seen.plugins.contains(&name.as_str()));
        let mut names: Vec<&str> = seen.plugins.to_vec();
        names.sort_unstable();
        for name in names.into_iter().take(MAX_PLUGINS) {
            let now = reading.latency.get(name).copied().unwrap_or_default();
            let then = last.latency.get(name).unwrap_or(&empty);
            let took = now.since(then);
            let history = self.plugins.entry(name.to_owned()).or_default();
            if history.cumulative.is_empty() {
                history.cumulative.push_back(*then);
            }
            push_bounded(&mut history.cumulative, now, WINDOW + 1);
            push_bounded(
                &mut history.samples,
                PluginSample {
                    calls: took.count() as f64 / seconds,
                    p50: took.quantile(0.5),
                    p99: took.quantile(0.99),
                },
                CAPACITY,
            );
        }
        self.last = Some((now, reading));
    }

    /// The history as `GET /api/stats` answers it (without the groups,
    /// which the caller adds), with `loaded`'s plugins.
    pub(crate) fn render(
        &self,
        loaded: &BTreeMap<PathBuf, Arc<LoadedPlugin>>,
        connections: i64,
    ) -> Value {
        let column =
            |f: &dyn Fn(&Sample) -> Value| -> Vec<Value> { self.samples.iter().map(f).collect() };
        let series = json!({
            "at": column(&|s| json!(s.at)),
            "seconds": column(&|s| json!(s.seconds)),
            "ok": column(&|s| json!(s.ok)),
            "error": column(&|s| json!(s.error)),
            "p50": column(&|s| json!(s.p50)),
            "p99": column(&|s| json!(s.p99)),
            "connections": column(&|s| json!(s.connections)),
            "group_messages": column(&|s| json!(s.group_messages)),
            "groups": column(&|s| json!(s.groups)),
        });
        let last = self.last.as_ref().map(|(_, reading)| reading);
        let totals = json!({
            "ok": last.map_or(0, |r| r.ok),
            "error": last.map_or(0, |r| r.failed),
            "group_messages": last.map_or(0, |r| r.group_deliveries),
        });
        let by_name: HashMap<&str, &Arc<LoadedPlugin>> =
            loaded.values().map(|p| (p.name.as_str(), p)).collect();
        let mut names: Vec<&str> = by_name.keys().copied().collect();
        names.sort_unstable();
        let plugins: Vec<Value> = names
            .into_iter()
            .map(|name| self.render_plugin(by_name[name], last))
            .collect();
        json!({
            "interval_seconds": INTERVAL.as_secs_f64(),
            "capacity": CAPACITY,
            "connections": connections,
            "totals": totals,
            "series": series,
            "plugins": plugins,
        })
    }

    fn render_plugin(&self, plugin: &LoadedPlugin, last: Option<&Reading>) -> Value {
        let calls = last
            .and_then(|r| r.latency.get(&plugin.name))
            .map_or(0, Buckets::count);
        let mut entry = json!({
            "name": plugin.name,
            "version": plugin.version,
            "isolation": plugin.isolation().as_str(),
            "status": "loaded",
            "calls": calls,
            "calls_per_second": null,
            "p50": null,
            "p99": null,
        });
        if let Some(worker) = plugin.worker().map(|w| w.status()) {
            if let WorkerState::Failed(_) = worker.state {
                entry["status"] = json!("failed");
            }
            entry["crashes"] = json!(worker.crashes);
            entry["restarts"] = json!(worker.restarts);
        } else {
            entry["crashes"] = json!(0);
            entry["restarts"] = json!(0);
        }
        let Some(history) = self.plugins.get(&plugin.name) else {
            entry["series"] = Value::Null;
            return entry;
        };
        if let (Some(first), Some(latest)) = (history.cumulative.front(), history.cumulative.back())
        {
            let minute = latest.since(first);
            entry["p50"] = json!(minute.quantile(0.5));
            entry["p99"] = json!(minute.quantile(0.99));
        }
        entry["calls_per_second"] = json!(history.samples.back().map(|s| s.calls));
        // Aligned with the server's series: null before the plugin's start.
        let pad = self.samples.len().saturating_sub(history.samples.len());
        let column = |f: &dyn Fn(&PluginSample) -> Value| -> Vec<Value> {
            std::iter::repeat_n(Value::Null, pad)
                .chain(history.samples.iter().map(f))
                .collect()
        };
        entry["series"] = json!({
            "calls_per_second": column(&|s| json!(s.calls)),
            "p50": column(&|s| json!(s.p50)),
            "p99": column(&|s| json!(s.p99)),
        });
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::latency::Latency;

    fn reading(ok: u64, failed: u64, latency: &Latency) -> Reading {
        Reading {
            ok,
            failed,
            group_deliveries: ok * 2,
            latency: [("ping".to_owned(), latency.buckets())].into(),
        }
    }

    #[test]
    fn samples_are_rates_of_what_changed_and_the_ring_is_bounded() {
        let mut history = History::default();
        let latency = Latency::default();
        let start = Instant::now();
        let seen = |at| Seen {
            at,
            connections: 3,
            groups: 1,
            plugins: &["ping"],
        };
        history.record(start, reading(0, 0, &latency), &seen(0.0));
        assert!(history.samples.is_empty());
        for _ in 0..10 {
            latency.observe(Duration::from_micros(30));
        }
        history.record(
            start + Duration::from_secs(2),
            reading(10, 4, &latency),
            &seen(2.0),
        );
        let sample = history.samples.back().unwrap();
        assert_eq!(
            (sample.ok, sample.error, sample.group_messages),
            (5.0, 2.0, 10.0)
        );
        assert!((20e-6..=50e-6).contains(&sample.p50.unwrap()));
        let ping = &history.plugins["ping"];
        assert_eq!(ping.samples.back().unwrap().calls, 5.0);

        for i in 0..(CAPACITY + 10) {
            history.record(
                start + Duration::from_secs(3 + i as u64),
                reading(10, 4, &latency),
                &seen(3.0 + i as f64),
            );
        }
        assert_eq!(history.samples.len(), CAPACITY);
        assert_eq!(history.plugins["ping"].samples.len(), CAPACITY);
        assert_eq!(history.plugins["ping"].cumulative.len(), WINDOW + 1);
        let last = history.samples.back().unwrap();
        assert_eq!((last.ok, last.p50), (0.0, None));

        // A plugin no longer loaded loses its history.
        let none = Seen {
            at: 1e4,
            connections: 0,
            groups: 0,
            plugins: &[],
        };
        history.record(
            start + Duration::from_secs(1000),
            reading(10, 4, &latency),
            &none,
        );
        assert!(history.plugins.is_empty());
    }
}
