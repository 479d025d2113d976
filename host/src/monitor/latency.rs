//! The handler latency histogram, without a lock.
//!
//! prometheus-client's `Histogram` takes a mutex on every observation, and
//! every request of a plugin observes the same one from both worker
//! threads. Here an observation is two relaxed atomic additions (its bucket
//! and the sum); the count is the buckets' total, read only when `/metrics`
//! is rendered.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds of the buckets in nanoseconds, from 10 µs to 30 s; one more
/// bucket holds what is slower.
const BOUNDS_NS: [u64; 13] = [
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    30_000_000_000,
];

#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// A latency histogram in seconds; clones share their counts.
#[derive(Clone, Debug, Default)]
pub struct Latency(Arc<Counts>);

impl Latency {
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.0.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::Latency;

    #[test]
    fn observations_land_in_their_buckets_and_render_cumulatively() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(5));
        latency.observe(Duration::from_micros(10));
        latency.observe(Duration::from_millis(2));
        latency.observe(Duration::from_secs(60));
        let mut registry = Registry::default();
        registry.register("took", "test", latency.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE took histogram"), "{text}");
        assert!(text.contains("took_count 4"), "{text}");
        assert!(text.contains("took_bucket{le=\"0.00001\"} 2"), "{text}");
        assert!(text.contains("took_bucket{le=\"0.005\"} 3"), "{text}");
        assert!(text.contains("took_bucket{le=\"30.0\"} 3"), "{text}");
        assert!(text.contains("took_bucket{le=\"+Inf\"} 4"), "{text}");
        assert!(text.contains("took_sum 60.002015\n"), "{text}");
    }
}
