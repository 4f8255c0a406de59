//! Per-connection frame accounting: sequence holes, duplicates, inter-arrival gaps.
//!
//! Kept free of sockets and clocks so the rules can be tested exactly: the caller passes the
//! arrival time of each frame.

/// One long silence between two frames of a connection: what `--gap-log` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// Arrival (CLOCK_MONOTONIC ns) of the last frame before the gap.
    pub start_ns: u64,
    /// Arrival of the first frame after it.
    pub end_ns: u64,
    pub seq_before: u64,
    pub seq_after: u64,
    pub generation_before: u32,
    pub generation_after: u32,
}

impl Gap {
    /// The gap length in milliseconds.
    pub fn gap_ms(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }
}

/// Frame bookkeeping for one connection. The server numbers frames per connection from 0,
/// so the first expected sequence number is 0: frames lost before the first arrival count
/// as holes too.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    /// Gaps longer than this (ns) are reported by [`FrameTracker::on_frame`].
    gap_threshold_ns: u64,
    expected: u64,
    last: Option<(u64, u64, u32)>, // (arrival_ns, seq, generation)
    pub frames: u64,
    /// Frames never received: sum over jumps of `seq - expected`.
    pub holes: u64,
    /// Frames with `seq < expected` (already seen or skipped past).
    pub duplicates: u64,
    pub max_generation: u32,
    /// Longest inter-arrival gap so far, ns, and the arrival that closed it.
    pub longest_gap_ns: u64,
    pub longest_gap_end_ns: u64,
    /// Sum and count of inter-arrival gaps at or below the threshold, for the measured
    /// frame interval (long gaps would bias it).
    pub normal_gap_sum_ns: u64,
    pub normal_gap_n: u64,
}

/// What one frame changed, for the window statistics and the gap log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameOutcome {
    /// Time since the previous frame of this connection, if any.
    pub gap_ns: Option<u64>,
    /// Set when that gap exceeded the threshold.
    pub long_gap: Option<Gap>,
}

impl FrameTracker {
    /// A tracker that reports gaps longer than `gap_threshold_ns`.
    pub fn new(gap_threshold_ns: u64) -> Self {
        FrameTracker {
            gap_threshold_ns,
            expected: 0,
            last: None,
            frames: 0,
            holes: 0,
            duplicates: 0,
            max_generation: 0,
            longest_gap_ns: 0,
            longest_gap_end_ns: 0,
            normal_gap_sum_ns: 0,
            normal_gap_n: 0,
        }
    }

    /// Account one frame that arrived at `arrival_ns`.
    pub fn on_frame(&mut self, arrival_ns: u64, seq: u64, generation: u32) -> FrameOutcome {
        self.frames += 1;
        self.max_generation = self.max_generation.max(generation);
        if seq < self.expected {
            self.duplicates += 1;
        } else {
            self.holes += seq - self.expected;
            self.expected = seq.saturating_add(1);
        }
        let mut out = FrameOutcome {
            gap_ns: None,
            long_gap: None,
        };
        if let Some((prev_ns, prev_seq, prev_gen)) = self.last {
            let gap = arrival_ns.saturating_sub(prev_ns);
            out.gap_ns = Some(gap);
            if gap > self.longest_gap_ns {
                self.longest_gap_ns = gap;
                self.longest_gap_end_ns = arrival_ns;
            }
            // A new server generation (a migration) is always reported, however short the
            // gap, so every migration has one line per connection in the gap log.
            if gap > self.gap_threshold_ns || generation != prev_gen {
                out.long_gap = Some(Gap {
                    start_ns: prev_ns,
                    end_ns: arrival_ns,
                    seq_before: prev_seq,
                    seq_after: seq,
                    generation_before: prev_gen,
                    generation_after: generation,
                });
            }
            if gap <= self.gap_threshold_ns {
                self.normal_gap_sum_ns += gap;
                self.normal_gap_n += 1;
            }
        }
        self.last = Some((arrival_ns, seq, generation));
        out
    }

    /// Arrival time of the last frame, if any: the start of the gap that is still open.
    pub fn last_arrival_ns(&self) -> Option<u64> {
        self.last.map(|l| l.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_generation_change_is_reported_even_when_short() {
        let mut t = FrameTracker::new(100 * MS);
        assert_eq!(t.on_frame(0, 0, 0).long_gap, None);
        assert_eq!(t.on_frame(2 * MS, 1, 0).long_gap, None);
        let g = t
            .on_frame(5 * MS, 2, 1)
            .long_gap
            .expect("generation change logged");
        assert_eq!((g.generation_before, g.generation_after), (0, 1));
        assert_eq!((g.seq_before, g.seq_after), (1, 2));
        assert_eq!(g.gap_ms(), 3.0);
        assert_eq!(t.on_frame(7 * MS, 3, 1).long_gap, None);
        assert_eq!((t.holes, t.duplicates, t.normal_gap_n), (0, 0, 3));
    }

    #[test]
    fn clean_stream_has_no_holes_or_duplicates() {
        let mut t = FrameTracker::new(100 * MS);
        for s in 0..10 {
            let o = t.on_frame(s * 33 * MS, s, 0);
            assert_eq!(o.long_gap, None);
        }
        assert_eq!((t.frames, t.holes, t.duplicates), (10, 0, 0));
        assert_eq!(t.longest_gap_ns, 33 * MS);
        assert_eq!(t.normal_gap_n, 9);
    }

    #[test]
    fn skips_count_missing_frames_and_repeats_count_duplicates() {
        let mut t = FrameTracker::new(100 * MS);
        for (i, s) in [0, 1, 4, 5, 5, 3, 6].into_iter().enumerate() {
            t.on_frame(i as u64 * MS, s, 0);
        }
        assert_eq!(t.holes, 2); // 2 and 3 were missing when 4 arrived
        assert_eq!(t.duplicates, 2); // second 5, late 3
        assert_eq!(t.frames, 7);
    }

    #[test]
    fn first_frame_not_zero_is_a_hole() {
        let mut t = FrameTracker::new(100 * MS);
        t.on_frame(0, 3, 0);
        assert_eq!(t.holes, 3);
    }

    #[test]
    fn long_gap_reported_with_both_ends() {
        let mut t = FrameTracker::new(100 * MS);
        t.on_frame(0, 0, 0);
        t.on_frame(33 * MS, 1, 0);
        let o = t.on_frame(433 * MS, 2, 1);
        assert_eq!(
            o.long_gap,
            Some(Gap {
                start_ns: 33 * MS,
                end_ns: 433 * MS,
                seq_before: 1,
                seq_after: 2,
                generation_before: 0,
                generation_after: 1,
            })
        );
        assert_eq!(o.long_gap.unwrap().gap_ms(), 400.0);
        assert_eq!(t.longest_gap_ns, 400 * MS);
        assert_eq!(t.longest_gap_end_ns, 433 * MS);
        assert_eq!(t.max_generation, 1);
        assert_eq!((t.normal_gap_sum_ns, t.normal_gap_n), (33 * MS, 1));
    }
}
