//! Moving CUPTI timestamps onto CLOCK_MONOTONIC.
//!
//! The injection library sends a [`ClockPair`] (the same instant on both clocks) when tracing
//! starts, every second, and when it stops. Times are mapped by linear interpolation between
//! the two pairs around them (extrapolated from the nearest segment outside), which
//! re-calibrates every second; [`ClockMap::drift_ns_per_min`] and
//! [`ClockMap::residual_ns`] say how far the clocks wander apart and how well one straight
//! line would have done.
use modelprobe_common::gpu::ClockPair;

/// A CUPTI → CLOCK_MONOTONIC mapping for one process.
#[derive(Debug, Clone, Default)]
pub struct ClockMap {
    /// (cupti ns, monotonic ns), sorted by CUPTI time, strictly increasing.
    points: Vec<(u64, u64)>,
}

impl ClockMap {
    /// From the pairs a process sent (any order; duplicates and non-monotonic ones dropped).
    pub fn new(pairs: &[ClockPair]) -> ClockMap {
        let mut points: Vec<(u64, u64)> = pairs.iter().map(|p| (p.cupti_ns, p.mono_ns)).collect();
        points.sort_unstable();
        let mut kept: Vec<(u64, u64)> = Vec::with_capacity(points.len());
        for p in points {
            if kept.last().is_none_or(|l| p.0 > l.0 && p.1 > l.1) {
                kept.push(p);
            }
        }
        ClockMap { points: kept }
    }

    /// True when there is no pair at all (times cannot be mapped).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// `cupti_ns` on CLOCK_MONOTONIC (saturating at 0).
    pub fn map(&self, cupti_ns: u64) -> u64 {
        let p = &self.points;
        match p.len() {
            0 => cupti_ns,
            1 => shift(cupti_ns, p[0].0, p[0].1, 1.0),
            _ => {
                let i = p.partition_point(|q| q.0 <= cupti_ns).clamp(1, p.len() - 1);
                let (a, b) = (p[i - 1], p[i]);
                let slope = (b.1 - a.1) as f64 / (b.0 - a.0) as f64;
                shift(cupti_ns, a.0, a.1, slope)
            }
        }
    }

    /// Least-squares line through the pairs, relative to the first: (slope, intercept).
    fn fit(&self) -> Option<(f64, f64)> {
        let p = &self.points;
        if p.len() < 2 {
            return None;
        }
        let (x0, y0) = p[0];
        let xs: Vec<f64> = p.iter().map(|q| (q.0 - x0) as f64).collect();
        let ys: Vec<f64> = p.iter().map(|q| q.1 as f64 - y0 as f64).collect();
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        if sxx == 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        Some((slope, my - slope * mx))
    }

    /// How fast the clocks drift apart, in ns of CLOCK_MONOTONIC per minute (None with fewer
    /// than two pairs).
    pub fn drift_ns_per_min(&self) -> Option<f64> {
        self.fit().map(|(slope, _)| (slope - 1.0) * 60e9)
    }

    /// The worst distance of a pair from the fitted straight line, in ns: what mapping with
    /// a single offset and rate would have got wrong.
    pub fn residual_ns(&self) -> Option<f64> {
        let (slope, icpt) = self.fit()?;
        let (x0, y0) = self.points[0];
        self.points
            .iter()
            .map(|&(x, y)| ((y as f64 - y0 as f64) - (slope * (x - x0) as f64 + icpt)).abs())
            .reduce(f64::max)
    }
}

/// `x` moved from the point `(x0, y0)` with `slope`, in whole ns.
fn shift(x: u64, x0: u64, y0: u64, slope: f64) -> u64 {
    let dx = x as i128 - x0 as i128;
    let dy = (dx as f64 * slope).round() as i128;
    (y0 as i128 + dy).clamp(0, u64::MAX as i128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cupti_ns: u64, mono_ns: u64) -> ClockPair {
        ClockPair {
            cupti_ns,
            mono_ns,
            uncertainty_ns: 20,
        }
    }

    #[test]
    fn a_fixed_offset_maps_exactly() {
        // CUPTI on a wall-clock base, monotonic since boot.
        let base = 1_764_000_000_000_000_000u64;
        let m = ClockMap::new(&[pair(base, 5_000), pair(base + 1_000_000_000, 1_000_005_000)]);
        assert_eq!(m.map(base + 123_456_789), 123_461_789);
        assert_eq!(
            m.map(base - 1_000),
            4_000,
            "before the first pair: extrapolated"
        );
        assert_eq!(m.drift_ns_per_min(), Some(0.0));
        assert_eq!(m.residual_ns(), Some(0.0));
    }

    #[test]
    fn drift_is_followed_between_pairs_and_measured() {
        // CUPTI's clock runs 2 ppm fast: 2 µs per second, 120 µs per minute.
        let pairs: Vec<ClockPair> = (0..=60u64)
            .map(|s| pair(s * 1_000_002_000, 10_000 + s * 1_000_000_000))
            .collect();
        let m = ClockMap::new(&pairs);
        // Halfway through second 30 on CUPTI's clock is halfway on the monotonic one.
        let c = 30 * 1_000_002_000 + 500_001_000;
        assert_eq!(m.map(c), 10_000 + 30_500_000_000);
        let drift = m.drift_ns_per_min().unwrap();
        assert!((drift - -119_999.76).abs() < 1.0, "{drift}");
        assert!(m.residual_ns().unwrap() < 1.0);
    }

    #[test]
    fn a_step_shows_as_residual_and_is_followed() {
        let m = ClockMap::new(&[pair(0, 0), pair(1_000, 1_000), pair(2_000, 2_500)]);
        assert_eq!(m.map(1_500), 1_750);
        assert!(m.residual_ns().unwrap() > 100.0);
    }

    #[test]
    fn degenerate_input() {
        assert!(ClockMap::new(&[]).is_empty());
        assert_eq!(ClockMap::new(&[]).map(77), 77);
        let one = ClockMap::new(&[pair(1_000, 50)]);
        assert_eq!(one.map(1_010), 60);
        assert_eq!(one.map(0), 0, "saturates at 0");
        assert_eq!(one.drift_ns_per_min(), None);
        // Out-of-order and duplicate pairs are dropped, not divided by zero.
        let m = ClockMap::new(&[pair(10, 10), pair(10, 12), pair(20, 5), pair(30, 30)]);
        assert_eq!(m.map(20), 20);
    }
}
