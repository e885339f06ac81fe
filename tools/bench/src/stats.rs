//! Summaries of repeated measurements: every figure of the report is the median of several
//! runs with their spread (the lowest and highest run), and latency percentiles come from
//! an HdrHistogram per run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A figure measured in several runs: the median and the range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The median of the runs (the mean of the middle two for an even count).
    pub median: f64,
    /// The lowest run.
    pub min: f64,
    /// The highest run.
    pub max: f64,
    /// How many runs.
    pub runs: usize,
}

impl Spread {
    /// Summarises `values`; `None` when there are none (or one is not a number).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        })
    }

    /// The half-range as a fraction of the median (0.05 = ±5 %), 0 for a zero median.
    pub fn relative_half_range(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median.abs()
        }
    }
}

/// Request latencies of one run, recorded in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

/// The latency percentiles of one run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// The median request.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
}

impl Latencies {
    /// An empty histogram from 1 µs to 60 s with three significant digits.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self(Histogram::new_with_bounds(1, 60_000_000, 3)?))
    }

    /// Records one request's latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.clamp(1, 60_000_000));
    }

    /// Adds another run's or worker's recordings.
    pub fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.0.add(&other.0)?;
        Ok(())
    }

    /// How many requests were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50, p90 and p99 in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_run() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn no_runs_give_no_summary() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn the_relative_half_range_is_against_the_median() {
        let s = Spread::of(&[90.0, 100.0, 110.0]).unwrap();
        assert!((s.relative_half_range() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut latencies = Latencies::new().unwrap();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let p = latencies.percentiles();
        assert!((p.p50 - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p90 - 90.0).abs() < 0.1, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 0.1, "{p:?}");
        assert_eq!(latencies.count(), 100);
    }

    #[test]
    fn merged_workers_count_every_request() {
        let mut a = Latencies::new().unwrap();
        let mut b = Latencies::new().unwrap();
        a.record(Duration::from_micros(500));
        b.record(Duration::from_micros(1500));
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 2);
    }
}
