//! The iptfs stage's counters as the control plane sees them.
//!
//! The stage (on the worker thread) owns the codec state; after every round in which something
//! changed it publishes a copy of each SA's counters here. The REST layer finds the handle of a
//! switch through a registry keyed by the switch's stop flag ([`handle_of`]), because a
//! [`Switch`] has no slot for stage state (the same pattern as the ecmper stage).

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use iptfs::{RxCounters, TxCounters};

use super::config::{Direction, Mode};
use crate::switch::Switch;

/// One SA's identity and counters at the last publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SaStats {
    /// Configured name.
    pub name: String,
    /// `out` or `in`.
    pub direction: Direction,
    /// ESP SPI.
    pub spi: u32,
    /// Out SAs: how outers are built; `None` for in SAs.
    pub mode: Option<Mode>,
    /// Outer local address.
    pub local: IpAddr,
    /// Outer remote address.
    pub remote: IpAddr,
    /// Egress port of what the SA emits.
    pub port: u16,
    /// The ESP sequence number last sent (out) or the top of the replay window (in).
    pub seq: u64,
    /// Out SAs: inner octets waiting in the send queue.
    pub queued_bytes: u64,
    /// Codec counters (RFC 9348 names where it has them) and the stage's own, by name.
    pub counters: std::collections::BTreeMap<&'static str, u64>,
}

/// The stage's own counters of one SA (besides the codec's).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageCounters {
    /// Inner packets the selector matched (out) / inner packets sent on `port` (in).
    pub selected: u64,
    /// Out: inner packets refused by the sender (too big, queue full, bad length).
    pub push_errors: u64,
    /// Errors from the codec's poll (sequence number space exhausted).
    pub tx_errors: u64,
    /// In: inner packets that did not fit a buffer with their Ethernet header.
    pub oversize_inner: u64,
    /// Out: ICMP too-big answers sent for inner packets over the tunnel MTU.
    pub too_big_sent: u64,
    /// Inner packets dropped because forwarding them would take their TTL / hop limit to 0
    /// (arrived with <= 1; `decrement_ttl`). No ICMP time exceeded is sent.
    pub ttl_expired: u64,
    /// In: inner packets marked CE because their outer arrived CE (RFC 6040 4.2).
    pub ecn_marked: u64,
    /// In: Not-ECT inner packets dropped because their outer arrived CE (RFC 6040 4.2).
    pub ecn_dropped: u64,
    /// In: ESP with this SA's SPI whose outer source or destination is not the SA's
    /// `remote` / `local`: dropped before decryption.
    pub outer_addr_mismatch: u64,
    /// In: outer IP fragments of ESP to this SA: dropped, as the stage does not reassemble
    /// outers (Linux would; a peer sending them has a PMTU or `outer_packet_size` problem).
    pub outer_fragments: u64,
}

/// Names and values of a sender's counters.
pub fn tx_fields(c: &TxCounters) -> [(&'static str, u64); 14] {
    [
        ("outer_packets", c.outer_packets),
        ("outer_octets", c.outer_octets),
        ("inner_packets", c.inner_packets),
        ("inner_octets", c.inner_octets),
        ("fragmented_packets", c.fragmented_packets),
        ("all_pad_packets", c.all_pad_packets),
        ("all_pad_octets", c.all_pad_octets),
        ("extra_pad_packets", c.extra_pad_packets),
        ("extra_pad_octets", c.extra_pad_octets),
        ("dropped_queue_full", c.dropped_queue_full),
        ("dropped_bad", c.dropped_bad),
        ("dropped_stale", c.dropped_stale),
        ("missed_slots", c.missed_slots),
        ("late_slots", c.late_slots),
    ]
}

/// Names and values of a receiver's counters (`errored_packets` is RFC 9348's sum).
pub fn rx_fields(c: &RxCounters) -> [(&'static str, u64); 29] {
    [
        ("outer_packets", c.outer_packets),
        ("outer_octets", c.outer_octets),
        ("truncated", c.truncated),
        ("wrong_spi", c.wrong_spi),
        ("replayed", c.replayed),
        ("too_old", c.too_old),
        ("bad_icv", c.bad_icv),
        ("bad_pad", c.bad_pad),
        ("bad_next_header", c.bad_next_header),
        ("aggfrag_truncated", c.aggfrag_truncated),
        ("bad_subtype", c.bad_subtype),
        ("bad_flags", c.bad_flags),
        ("plain_packets", c.plain_packets),
        ("dummy_packets", c.dummy_packets),
        ("all_pad_packets", c.all_pad_packets),
        ("pad_octets", c.pad_octets),
        ("inner_packets", c.inner_packets),
        ("inner_octets", c.inner_octets),
        ("missed_packets", c.missed_packets),
        ("timer_losses", c.timer_losses),
        ("late_packets", c.late_packets),
        ("reordered_packets", c.reordered_packets),
        ("duplicate_packets", c.duplicate_packets),
        ("incomplete_packets", c.incomplete_packets),
        ("inconsistent_offsets", c.inconsistent_offsets),
        ("bad_inner_length", c.bad_inner_length),
        ("unknown_blocks", c.unknown_blocks),
        ("skipped_octets", c.skipped_octets),
        ("errored_packets", c.errored()),
    ]
}

/// Names and values of the stage's own counters.
pub fn stage_fields(c: &StageCounters) -> [(&'static str, u64); 10] {
    [
        ("selected_packets", c.selected),
        ("push_errors", c.push_errors),
        ("tx_errors", c.tx_errors),
        ("oversize_inner", c.oversize_inner),
        ("too_big_sent", c.too_big_sent),
        ("ttl_expired", c.ttl_expired),
        ("ecn_marked", c.ecn_marked),
        ("ecn_dropped", c.ecn_dropped),
        ("outer_addr_mismatch", c.outer_addr_mismatch),
        ("outer_fragments", c.outer_fragments),
    ]
}

/// Shared between the stage (writer) and the control plane (reader).
#[derive(Debug, Default)]
pub struct IptfsHandle {
    sas: Mutex<Vec<SaStats>>,
}

impl IptfsHandle {
    /// The counters of every SA, in config order, as last published.
    pub fn snapshot(&self) -> Vec<SaStats> {
        self.sas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replace the published counters; returns false (nothing written) when the control
    /// plane holds the lock, so the worker never waits: it tries again next round.
    pub(crate) fn try_publish(&self, f: impl FnOnce(&mut Vec<SaStats>)) -> bool {
        match self.sas.try_lock() {
            Ok(mut g) => {
                f(&mut g);
                true
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                f(&mut p.into_inner());
                true
            }
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }
}

type Registry = Vec<(Weak<AtomicBool>, Arc<IptfsHandle>)>;
static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());

/// Records that `handle` belongs to the switch whose stop flag is `stop`. Entries of dropped
/// switches are pruned here.
pub fn register(stop: &Arc<AtomicBool>, handle: Arc<IptfsHandle>) {
    let mut r = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    r.retain(|(w, _)| w.strong_count() > 0);
    r.push((Arc::downgrade(stop), handle));
}

/// The handle of `sw`'s `iptfs` stage, if its pipeline has one.
pub fn handle_of(sw: &Switch) -> Option<Arc<IptfsHandle>> {
    let r = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    r.iter()
        .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&sw.stop)))
        .map(|(_, h)| Arc::clone(h))
}
