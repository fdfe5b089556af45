//! How long [`super::Store::make_durable`] takes (sled's flush and the `fdatasync`), as
//! a histogram of fixed buckets in atomics: the engine thread adds to it without a
//! lock, and `metrics` reads a copy for `sendgate_store_durable_commit_seconds`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (a `+Inf` bucket follows).
pub const DURABLE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct DurableTimes {
    /// Per bucket of `DURABLE_BUCKETS`, then `+Inf`: the commits that fell in it (not
    /// cumulative).
    counts: [AtomicU64; DURABLE_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// A copy of the histogram: per upper bound (the last is `+Inf`), the commits that fell
/// in that bucket and no lower one (the exposition makes them cumulative).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurableHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_s: f64,
}

impl DurableTimes {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = DURABLE_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(DURABLE_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn histogram(&self) -> DurableHistogram {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            let bound = DURABLE_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        DurableHistogram {
            buckets,
            count: total,
            sum_s: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_lands_in_one_bucket_and_inf_ends_them() {
        let t = DurableTimes::default();
        t.observe(Duration::from_micros(300));
        t.observe(Duration::from_millis(3));
        t.observe(Duration::from_secs(9));
        let h = t.histogram();
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets.len(), DURABLE_BUCKETS.len() + 1);
        assert_eq!(h.buckets[0], (0.0005, 1));
        assert_eq!(h.buckets[3], (0.005, 1));
        assert_eq!(h.buckets[11], (5.0, 0));
        assert_eq!(h.buckets[12].1, 1);
        assert_eq!(h.buckets.iter().map(|b| b.1).sum::<u64>(), 3);
        assert!(h.buckets[12].0.is_infinite());
        assert!((h.sum_s - 9.0033).abs() < 1e-6, "{}", h.sum_s);
    }
}
