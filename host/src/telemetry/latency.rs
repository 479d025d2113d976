//! The handler latency histogram, without a lock.
//!
//! prometheus-client's `Histogram` takes a mutex on every observation, and
//! every request of a plugin observes the same one from both worker
//! threads. Here an observation is two relaxed atomic additions (its bucket
//! and the sum) to the calling thread's stripe ([`super::striped`]); the
//! count is the buckets' total, and the stripes are summed, only when
//! `/metrics` is rendered or the sampler reads them.
//!
//! The buckets are fine enough (1, 2, 5 per decade from 1 µs) for the
//! status page to estimate percentiles from them ([`Buckets::quantile`]).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use super::striped::{stripe, Padded, STRIPES};
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds of the buckets in nanoseconds, from 1 µs to 30 s; one more
/// bucket holds what is slower.
const BOUNDS_NS: [u64; 23] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// How many buckets a histogram has.
pub(crate) const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Observation counts by bucket (not cumulative): a snapshot of a
/// [`Latency`], or the difference of two, or a sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Buckets(pub [u64; BUCKETS]);

impl Buckets {
    /// How many observations.
    pub(crate) fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// What was observed since `earlier` (a snapshot of the same
    /// histogram); zero where a count went down.
    pub(crate) fn since(&self, earlier: &Buckets) -> Buckets {
        let mut out = Buckets::default();
        for ((out, now), then) in out.0.iter_mut().zip(&self.0).zip(&earlier.0) {
            *out = now.saturating_sub(*then);
        }
        out
    }

    /// Adds `other`'s counts.
    pub(crate) fn add(&mut self, other: &Buckets) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated linearly within
    /// its bucket (as Prometheus' `histogram_quantile` does); the slowest
    /// bucket answers its lower bound. `None` without observations.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.0.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BOUNDS_NS[i - 1] };
                let Some(&upper) = BOUNDS_NS.get(i) else {
                    return Some(lower as f64 / 1e9);
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some((lower as f64 + within * (upper - lower) as f64) / 1e9);
            }
            below += n;
        }
        Some(BOUNDS_NS[BOUNDS_NS.len() - 1] as f64 / 1e9)
    }
}

#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A latency histogram in seconds; clones share their counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Latency(Arc<[Padded<Counts>; STRIPES]>);

impl Latency {
    pub(crate) fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        let counts = &self.0[stripe()].0;
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counts.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The sum of all observations, in nanoseconds.
    fn sum_ns(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, counts| {
            sum.wrapping_add(counts.0.sum_ns.load(Ordering::Relaxed))
        })
    }

    /// The counts so far (relaxed reads: a concurrent observation may be
    /// in one bucket and not yet in another's total, never lost).
    pub(crate) fn buckets(&self) -> Buckets {
        let mut out = Buckets::default();
        for counts in self.0.iter() {
            for (out, count) in out.0.iter_mut().zip(&counts.0.buckets) {
                *out = out.wrapping_add(count.load(Ordering::Relaxed));
            }
        }
        out
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
        let buckets: Vec<(f64, u64)> = bounds.zip(self.buckets().0).collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns() as f64 / 1e9;
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

    use super::{Buckets, Latency, BUCKETS};

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

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let latency = Latency::default();
        assert_eq!(latency.buckets().quantile(0.5), None);
        // 100 calls between 10 and 20 µs, one of 3 ms.
        for _ in 0..100 {
            latency.observe(Duration::from_micros(15));
        }
        latency.observe(Duration::from_millis(3));
        let all = latency.buckets();
        assert_eq!(all.count(), 101);
        let p50 = all.quantile(0.5).unwrap();
        assert!((10e-6..=20e-6).contains(&p50), "{p50}");
        let p999 = all.quantile(0.999).unwrap();
        assert!((2e-3..=5e-3).contains(&p999), "{p999}");
        // Only what came since a snapshot counts.
        let before = latency.buckets();
        latency.observe(Duration::from_secs(40));
        let since = latency.buckets().since(&before);
        assert_eq!(since.count(), 1);
        assert_eq!(since.quantile(0.5), Some(30.0));
        let mut sum = Buckets::default();
        sum.add(&since);
        sum.add(&since);
        assert_eq!(sum.0[BUCKETS - 1], 2);
    }
}
