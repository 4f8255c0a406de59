//! The crate's one error type.
//!
//! Configuration mistakes and per-packet drop reasons share one enum so a caller (the dataplane
//! stage) can both report a bad SA definition and count a dropped packet by reason with one type.

/// Everything that can go wrong in this crate. Packet-path variants are also counted in
/// [`crate::RxCounters`] / [`crate::TxCounters`]; none of them is ever raised as a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Key material has the wrong length or is not hex.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why it was rejected.
        reason: String,
    },
    /// The caller's output buffer cannot hold the packet.
    #[error("buffer too small: need {need} octets, have {have}")]
    BufferTooSmall {
        /// Octets required.
        need: usize,
        /// Octets available.
        have: usize,
    },
    /// An inner packet does not fit (dont-fragment, plain ESP, or over 65535 octets); the stage
    /// should answer with ICMP too-big carrying `mtu`.
    #[error("inner packet of {len} octets exceeds the tunnel MTU {mtu}")]
    TooBig {
        /// Inner packet length.
        len: usize,
        /// Largest inner packet that can be sent.
        mtu: usize,
    },
    /// The send queue is full (Linux `XfrmOutNoQueueSpace`).
    #[error("send queue full ({queued} octets queued, limit {limit})")]
    QueueFull {
        /// Octets already queued.
        queued: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The inner packet is not a plausible IPv4/IPv6 packet (version nibble or length field).
    #[error("inner packet is not IPv4/IPv6 or its length field disagrees ({len} octets)")]
    BadInnerPacket {
        /// Length of the offered buffer.
        len: usize,
    },
    /// The outbound sequence number space is exhausted: the SA must be rekeyed.
    #[error("sequence number space exhausted; rekey the SA")]
    SequenceExhausted,
    /// ESP packet shorter than header + IV + trailer + ICV.
    #[error("truncated ESP packet ({len} octets)")]
    Truncated {
        /// Received length.
        len: usize,
    },
    /// SPI does not belong to this SA.
    #[error("SPI {spi:#x} does not match the SA")]
    WrongSpi {
        /// SPI seen on the wire.
        spi: u32,
    },
    /// Sequence number already received (inside the replay window).
    #[error("replayed sequence number {seq}")]
    Replayed {
        /// Full (ESN-expanded) sequence number.
        seq: u64,
    },
    /// Sequence number to the left of the replay window.
    #[error("sequence number {seq} is older than the replay window")]
    TooOld {
        /// Full (ESN-expanded) sequence number.
        seq: u64,
    },
    /// ICV (GCM tag) verification failed.
    #[error("ICV check failed")]
    BadIcv,
    /// Pad length runs past the payload or the pad bytes are not 1, 2, 3, …
    #[error("bad ESP padding")]
    BadPad,
    /// Next header is neither AGGFRAG (144), IPv4 (4), IPv6 (41) nor dummy (59).
    #[error("unsupported ESP next header {next_header}")]
    BadNextHeader {
        /// Next header seen.
        next_header: u8,
    },
    /// AGGFRAG payload shorter than its header.
    #[error("truncated AGGFRAG header ({len} octets)")]
    AggfragTruncated {
        /// Payload length.
        len: usize,
    },
    /// AGGFRAG sub-type other than 0 or 1.
    #[error("unknown AGGFRAG sub-type {subtype}")]
    BadSubtype {
        /// Sub-type seen.
        subtype: u8,
    },
    /// Non-zero AGGFRAG flags octet (dropped like Linux does, unless configured otherwise).
    #[error("non-zero AGGFRAG flags {flags:#04x}")]
    BadFlags {
        /// Flags octet seen.
        flags: u8,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
