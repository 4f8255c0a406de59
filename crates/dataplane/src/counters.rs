//! Port counters shared between a worker (the only writer) and the control plane.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::meta::DropReason;

/// Counters of one switch port. Written by its worker, read by the API.
#[derive(Debug)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames the backend could not send (ring full): dropped, never queued.
    pub tx_dropped: AtomicU64,
    /// Frames the backend lost or refused before the pipeline saw them (ring
    /// overruns, frames longer than a buffer, read errors): copied from the backend.
    pub rx_errors: AtomicU64,
    /// Send failures the backend itself counted (a subset of `tx_dropped` plus I/O errors).
    pub tx_errors: AtomicU64,
    /// Packets that came in on this port and were dropped, by [`DropReason::index`].
    drops: Box<[AtomicU64]>,
}

impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            tx_dropped: AtomicU64::new(0),
            rx_errors: AtomicU64::new(0),
            tx_errors: AtomicU64::new(0),
            drops: (0..DropReason::count())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

/// A copy of a port's counters at one moment, for the API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PortCountersSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    /// Frames lost by the backend before the pipeline (ring overruns, oversize, read errors).
    pub rx_errors: u64,
    /// Send failures counted by the backend.
    pub tx_errors: u64,
    /// Total of `drops`.
    pub rx_dropped: u64,
    /// Non-zero drop counters by reason name.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

impl PortCounters {
    #[inline]
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Count a dropped packet that arrived on this port.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Drops so far for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops
            .get(reason.index())
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Read every counter.
    pub fn snapshot(&self) -> PortCountersSnapshot {
        let mut drops = std::collections::BTreeMap::new();
        let mut total = 0;
        for r in DropReason::all() {
            let n = self.drops(r);
            if n > 0 {
                drops.insert(r.name(), n);
                total += n;
            }
        }
        PortCountersSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_dropped: self.tx_dropped.load(Relaxed),
            rx_errors: self.rx_errors.load(Relaxed),
            tx_errors: self.tx_errors.load(Relaxed),
            rx_dropped: total,
            drops,
        }
    }
}
