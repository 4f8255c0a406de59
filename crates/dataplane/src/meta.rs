//! What a stage knows and decides about one packet.

use packet::parse::{Headers, ParseError};

/// Why a packet was dropped. Every drop is counted by reason on its ingress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The frame failed to parse (truncated or malformed headers).
    Parse(ParseError),
    /// The pipeline accepts IPv4 and ARP only (the seed P4 parser rejects the rest).
    NotIpv4,
    /// IPv4 TTL was zero on arrival.
    TtlZero,
    /// `forward` had no entry and its default action set no egress.
    ForwardMiss,
    /// `arp_forward` had no entry for the target address.
    ArpMiss,
    /// No stage chose an egress port.
    NoEgress,
    /// A table sent the packet to a port number the switch does not have.
    UnknownEgressPort,
    /// `ecmper`: a table's `drop` action (e.g. next-hop index 0, an empty route).
    EcmperDrop,
    /// `ecmper`: no `neigh` entry for the next hop (bmv2 would send it out of port 0).
    EcmperNeighMiss,
    /// `ecmper` resilient mode: the DSCP marker names a generation the router does not keep.
    EcmperNoGeneration,
    /// `ecmper` resilient mode: TTL 1 on arrival, so forwarding would send TTL 0.
    TtlExpired,
    /// `iptfs`: an inner packet larger than the SA's tunnel MTU (dont-frag or plain mode)
    /// that got no ICMP too-big (outer and inner families differ, or it is an ICMP error).
    IptfsTooBig,
    /// `iptfs`: the SA's send queue is full (Linux `XfrmOutNoQueueSpace`).
    IptfsQueueFull,
    /// `iptfs`: a packet to tunnel whose IP length field disagrees with its size.
    IptfsBadInner,
    /// `iptfs`: ESP to a local tunnel address with an SPI no inbound SA has.
    IptfsUnknownSpi,
    /// `iptfs`: an inbound ESP packet the SA refused (truncated, bad ICV, replayed, bad
    /// AGGFRAG header...); the SA's counters say which.
    IptfsRxError,
}

/// Reasons that are not parse errors, in counter order after the parse reasons.
const OWN_REASONS: &[DropReason] = &[
    DropReason::NotIpv4,
    DropReason::TtlZero,
    DropReason::ForwardMiss,
    DropReason::ArpMiss,
    DropReason::NoEgress,
    DropReason::UnknownEgressPort,
    DropReason::EcmperDrop,
    DropReason::EcmperNeighMiss,
    DropReason::EcmperNoGeneration,
    DropReason::TtlExpired,
    DropReason::IptfsTooBig,
    DropReason::IptfsQueueFull,
    DropReason::IptfsBadInner,
    DropReason::IptfsUnknownSpi,
    DropReason::IptfsRxError,
];

impl DropReason {
    /// Number of distinct counters needed for drop reasons.
    pub fn count() -> usize {
        ParseError::ALL.len() + OWN_REASONS.len()
    }

    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        ParseError::ALL
            .iter()
            .map(|e| DropReason::Parse(*e))
            .chain(OWN_REASONS.iter().copied())
    }

    /// Stable index into per-reason counter arrays.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            DropReason::Parse(e) => e as usize,
            other => {
                let own = OWN_REASONS.iter().position(|r| *r == other).unwrap_or(0);
                ParseError::ALL.len() + own
            }
        }
    }

    /// Stable name used in the API and in Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Parse(e) => e.as_str(),
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::TtlZero => "ttl_zero",
            DropReason::ForwardMiss => "forward_miss",
            DropReason::ArpMiss => "arp_forward_miss",
            DropReason::NoEgress => "no_egress",
            DropReason::UnknownEgressPort => "unknown_egress_port",
            DropReason::EcmperDrop => "ecmper_drop",
            DropReason::EcmperNeighMiss => "ecmper_neigh_miss",
            DropReason::EcmperNoGeneration => "ecmper_no_generation",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::IptfsTooBig => "iptfs_too_big",
            DropReason::IptfsQueueFull => "iptfs_queue_full",
            DropReason::IptfsBadInner => "iptfs_bad_inner",
            DropReason::IptfsUnknownSpi => "iptfs_unknown_spi",
            DropReason::IptfsRxError => "iptfs_rx_error",
        }
    }
}

/// Where the packet goes once the pipeline ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Nothing decided yet; at the end of the pipeline this is a drop (`no_egress`).
    Unset,
    /// Out of one switch port.
    Port(u16),
    /// A copy out of every port, optionally except the one it came in on.
    Flood { except_ingress: bool },
    /// Dropped for a reason.
    Drop(DropReason),
    /// Taken by a stage (e.g. queued into a tunnel): not sent, not counted as a drop.
    Consumed,
}

/// Whether the pipeline goes on to the next stage (P4's `exit` is [`Flow::Exit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

/// Per-packet metadata: the parsed header offsets plus the pipeline's decision.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub hdr: Headers,
    pub in_port: u16,
    pub egress: Egress,
}

impl Meta {
    /// Metadata for a freshly parsed packet.
    pub fn new(hdr: Headers, in_port: u16) -> Meta {
        Meta {
            hdr,
            in_port,
            egress: Egress::Unset,
        }
    }

    /// Drop with `reason` and stop the pipeline.
    #[inline]
    pub fn drop_with(&mut self, reason: DropReason) -> Flow {
        self.egress = Egress::Drop(reason);
        Flow::Exit
    }
}
