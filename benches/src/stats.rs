//! The arithmetic behind every reported figure: percentiles within a run, medians and
//! spread across runs, and ratios against a baseline.

use serde::Serialize;

/// The `p`-th percentile (0 < p <= 100) of ascending `sorted` samples, by nearest rank:
/// the smallest sample with at least `p`% of all samples at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sorts samples ascending (NaN last) so [`percentile`] can read them.
pub fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    samples
}

/// The median: the middle sample, or the mean of the two middle ones for an even count.
pub fn median(samples: &[f64]) -> Option<f64> {
    let s = sorted(samples.to_vec());
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// One figure over repeated runs: every run's value, their median and their spread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Summary {
    /// `None` when there are no runs.
    pub fn of(runs: &[f64]) -> Option<Summary> {
        let s = sorted(runs.to_vec());
        Some(Summary {
            median: median(&s)?,
            min: *s.first()?,
            max: *s.last()?,
            runs: runs.to_vec(),
        })
    }
}

/// `value / baseline`; `None` when the baseline is zero or not finite.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline.is_finite() && baseline != 0.0 && value.is_finite()).then(|| value / baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&s, 0.5), Some(1.0));
        let few = [10.0, 20.0, 30.0];
        assert_eq!(percentile(&few, 50.0), Some(20.0));
        assert_eq!(percentile(&few, 99.0), Some(30.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&few, 0.0), None);
    }

    #[test]
    fn median_handles_odd_even_and_unsorted() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_keeps_runs_in_order_and_spread() {
        let s = Summary::of(&[5.0, 1.0, 9.0, 3.0, 7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (5.0, 1.0, 9.0));
        assert_eq!(s.runs, vec![5.0, 1.0, 9.0, 3.0, 7.0]);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratio_guards_against_empty_baselines() {
        assert_eq!(ratio(80.0, 100.0), Some(0.8));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, f64::NAN), None);
    }
}
