//! A log-linear latency histogram (HDR-style): exact below 2^bits microseconds, then 2^bits
//! buckets per power of two, so every recorded value is known to within 1/2^bits. Histograms of
//! different worker processes merge by adding counts, which is why percentiles are computed from
//! buckets and never from samples.

use serde::{Deserialize, Serialize};

/// Precision of the whole-run histograms: 64 buckets per octave (values within 1.6 %).
pub const FINE_BITS: u32 = 6;
/// Precision of the per-second histograms behind the latency-over-time chart (within 12.5 %).
pub const COARSE_BITS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    bits: u32,
    /// Count per bucket; grows to the highest bucket used.
    #[serde(with = "sparse")]
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u64,
}

impl Histogram {
    pub fn new(bits: u32) -> Histogram {
        assert!((1..=10).contains(&bits), "histogram precision out of range");
        Histogram { bits, counts: Vec::new(), total: 0, max: 0, sum: 0 }
    }

    fn index(&self, value: u64) -> usize {
        let base = 1u64 << self.bits;
        if value < base {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros();
        let shift = exponent - self.bits;
        ((u64::from(shift) + 1) * base + ((value >> shift) - base)) as usize
    }

    /// The highest value that falls in bucket `index`.
    fn upper_bound(&self, index: usize) -> u64 {
        let base = 1usize << self.bits;
        if index < base {
            return index as u64;
        }
        let shift = (index / base - 1) as u32;
        let sub = (index % base) as u64;
        (((1u64 << self.bits) + sub) << shift) + ((1u64 << shift) - 1)
    }

    pub fn record(&mut self, value: u64) {
        let i = self.index(value);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.sum = self.sum.saturating_add(value);
        self.max = self.max.max(value);
    }

    /// Adds `other`'s counts (same precision required).
    pub fn merge(&mut self, other: &Histogram) {
        assert_eq!(self.bits, other.bits, "merging histograms of different precision");
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket holding the
    /// ceil(q × count)-th smallest value, never above the maximum seen. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self.upper_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// Non-empty buckets as (upper bound, count), in increasing order (for the chart).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (self.upper_bound(i), *c))
    }
}

/// Counts travel between processes as [[index, count], ...] of the non-empty buckets.
mod sparse {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(counts: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(usize, u64)> =
            counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (i, *c)).collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let pairs: Vec<(usize, u64)> = Vec::deserialize(d)?;
        let len = pairs.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        if len > 1 << 16 {
            return Err(serde::de::Error::custom("histogram bucket index out of range"));
        }
        let mut counts = vec![0; len];
        for (i, c) in pairs {
            counts[i] += c;
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let h = Histogram::new(FINE_BITS);
        let mut previous = None;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 4]) {
            let i = h.index(v);
            assert!(h.upper_bound(i) >= v, "value {v} above its bucket's bound");
            if i > 0 {
                assert!(h.upper_bound(i - 1) < v, "value {v} fits an earlier bucket");
            }
            if let Some(p) = previous {
                assert!(i >= p);
            }
            previous = Some(i);
        }
    }

    #[test]
    fn percentiles_within_precision() {
        let mut h = Histogram::new(FINE_BITS);
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= exact && got <= exact * (1.0 + 1.0 / 64.0) + 1.0, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 100_000);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);
        assert_eq!(Histogram::new(FINE_BITS).quantile(0.99), 0);
    }

    #[test]
    fn small_values_are_exact_and_merge_adds() {
        let mut a = Histogram::new(COARSE_BITS);
        let mut b = Histogram::new(COARSE_BITS);
        for v in [1, 2, 3, 4] {
            a.record(v);
        }
        b.record(7);
        b.record(1000);
        a.merge(&b);
        assert_eq!(a.count(), 6);
        assert_eq!(a.quantile(0.5), 3);
        assert_eq!(a.quantile(0.8), 7);
        assert_eq!(a.max(), 1000);
    }

    #[test]
    fn survives_json_round_trip() {
        let mut h = Histogram::new(FINE_BITS);
        for v in [5, 500, 50_000, 50_000] {
            h.record(v);
        }
        let back: Histogram = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
