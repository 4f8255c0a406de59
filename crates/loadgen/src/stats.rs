//! RTT statistics as upstream computes them: linear-interpolated percentiles over the samples
//! of one interval, and jitter as the mean absolute difference of consecutive samples.

/// The `p`-th percentile (0..=100) of ascending `sorted` samples, interpolating linearly
/// between the two nearest ranks (rank = p/100 · (n−1)). Zero for no samples, so an empty
/// interval reads as zeros like upstream's.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            let frac = rank - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// Summary of one batch of RTT samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttStats {
    pub count: usize,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean |ΔRTT| of consecutive samples of the same connection.
    pub jitter_ms: f64,
}

impl RttStats {
    /// Summarise `samples` (sorted in place) with jitter given as a sum of |ΔRTT| over `n`
    /// consecutive pairs, which the caller accumulates per connection.
    pub fn compute(samples: &mut [f64], jitter_sum: f64, jitter_n: u64) -> RttStats {
        if samples.is_empty() {
            return RttStats::default();
        }
        samples.sort_by(f64::total_cmp);
        let sum: f64 = samples.iter().sum();
        RttStats {
            count: samples.len(),
            avg_ms: sum / samples.len() as f64,
            p50_ms: percentile(samples, 50.0),
            p95_ms: percentile(samples, 95.0),
            p99_ms: percentile(samples, 99.0),
            max_ms: samples[samples.len() - 1],
            jitter_ms: if jitter_n == 0 {
                0.0
            } else {
                jitter_sum / jitter_n as f64
            },
        }
    }
}

/// One accumulation window (the `/metrics` scrape interval, the stdout report interval, the
/// 100 ms trace row, or the whole run). Each sample goes into every window; each window is
/// reset by its own reader, so scraping does not disturb the report or the trace.
#[derive(Debug, Default, Clone)]
pub(crate) struct Window {
    pub rtts: Vec<f64>,
    pub jitter_sum: f64,
    pub jitter_n: u64,
    pub frames: u64,
    /// Longest closed inter-arrival gap in the window, ns.
    pub max_gap_ns: u64,
}

impl Window {
    pub fn add_rtt(&mut self, rtt_ms: f64, prev_ms: Option<f64>) {
        self.rtts.push(rtt_ms);
        if let Some(p) = prev_ms {
            self.jitter_sum += (rtt_ms - p).abs();
            self.jitter_n += 1;
        }
    }

    pub fn add_frame(&mut self, gap_ns: Option<u64>) {
        self.frames += 1;
        if let Some(g) = gap_ns {
            self.max_gap_ns = self.max_gap_ns.max(g);
        }
    }

    pub fn rtt_stats(&mut self) -> RttStats {
        RttStats::compute(&mut self.rtts, self.jitter_sum, self.jitter_n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_linearly() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 100.0), 4.0);
        // rank 1.5 -> halfway between 2 and 3
        assert_eq!(percentile(&s, 50.0), 2.5);
        // rank 0.95*3 = 2.85 -> 3 + 0.85
        assert!((percentile(&s, 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn stats_over_101_samples() {
        // 0..=100 shuffled: p-th percentile is exactly p.
        let mut v: Vec<f64> = (0..=100).map(|i| ((i * 37) % 101) as f64).collect();
        let st = RttStats::compute(&mut v, 0.0, 0);
        assert_eq!(st.count, 101);
        assert_eq!(st.avg_ms, 50.0);
        assert_eq!(st.p50_ms, 50.0);
        assert_eq!(st.p95_ms, 95.0);
        assert_eq!(st.p99_ms, 99.0);
        assert_eq!(st.max_ms, 100.0);
        assert_eq!(st.jitter_ms, 0.0);
    }

    #[test]
    fn jitter_is_mean_abs_delta_of_consecutive_samples() {
        let mut w = Window::default();
        let mut prev = None;
        for r in [1.0, 3.0, 2.0, 2.0] {
            w.add_rtt(r, prev);
            prev = Some(r);
        }
        // |3-1| + |2-3| + |2-2| = 3 over 3 pairs
        assert_eq!(w.rtt_stats().jitter_ms, 1.0);
        assert_eq!(RttStats::compute(&mut [], 5.0, 2), RttStats::default());
    }
}
