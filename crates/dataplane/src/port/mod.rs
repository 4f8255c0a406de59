//! Ports: where frames enter and leave the switch.
//!
//! Every backend (AF_PACKET, TAP, pcap file, in-memory, later AF_XDP) implements
//! [`Port`]: it receives a batch into buffers taken from the worker's pool and
//! transmits a batch, giving the buffers back. Stages never see the backend.

use std::os::fd::RawFd;

use packet::{PacketBuf, Pool};

pub mod afpacket;
pub mod kernel_stack;
pub mod memory;
pub mod pcap;
pub mod tap;
#[cfg(test)]
mod testns;

/// Why a port operation failed. Per-packet trouble is counted, not returned.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {port} ({backend} on '{target}'): {op} failed: {source}")]
    Io {
        port: u16,
        backend: &'static str,
        target: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("port {port}: {message}")]
    Config { port: u16, message: String },
}

/// Counters a port keeps about itself (the engine keeps rx/tx/drop per port too).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PortStats {
    /// Frames the backend refused or truncated on receive (too long, ring overrun, ...).
    pub rx_errors: u64,
    /// Frames the backend could not send (ring full, EAGAIN, link down).
    pub tx_errors: u64,
}

/// Outcome of one transmit call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    pub sent: usize,
    /// Bytes of the frames sent (exact even when some in the middle were dropped).
    pub bytes: usize,
    /// Frames given to tx that were dropped (the link was full: never block, count).
    pub dropped: usize,
}

/// One switch port backend. A worker owns its ports; nothing here is shared.
pub trait Port: Send {
    /// Switch port number (the seeds use 132, 140, 148, 64 ...).
    fn id(&self) -> u16;
    /// Backend name for logs and the API: "afpacket", "tap", "pcap", "memory".
    fn backend(&self) -> &'static str;
    /// Interface or file behind the port.
    fn target(&self) -> &str;
    /// Receive up to `max` frames, appending them to `batch` (buffers from `pool`,
    /// `in_port` set). Never blocks; returns how many were appended.
    fn rx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
        max: usize,
    ) -> Result<usize, PortError>;
    /// Transmit and drain every frame of `batch`, returning all buffers to `pool`.
    /// Frames that cannot be sent now are dropped and counted in the outcome.
    fn tx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
    ) -> Result<TxOutcome, PortError>;
    /// A file descriptor that becomes readable when frames wait, for idle sleeping.
    /// `None` for ports that are polled (memory, pcap).
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
    /// True once a finite source (pcap file) has nothing more to give.
    fn rx_exhausted(&self) -> bool {
        false
    }
    /// Push buffered output to its destination (pcap writers); called when idle and at stop.
    fn flush(&mut self) -> Result<(), PortError> {
        Ok(())
    }
    /// Backend-specific counters.
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}
