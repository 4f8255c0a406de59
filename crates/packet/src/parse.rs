//! Parse once into offsets: one pass over a frame's headers that validates
//! every length and records where each layer starts, so later stages index
//! the frame directly (through [`crate::wire`] views) without re-parsing.
//!
//! [`parse`] never panics and never reads past the frame; every offset in the
//! returned [`Headers`] is within the frame. A frame it refuses gets a
//! [`ParseError`], a drop reason with a stable name for counters.

use std::fmt;
use std::net::Ipv4Addr;

/// Length of an Ethernet II header (dst, src, ethertype).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one 802.1Q / 802.1ad tag (TPID is the outer ethertype, then TCI).
pub const VLAN_TAG_LEN: usize = 4;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_IPV6: u16 = 0x86dd;

const PROTO_HOPOPTS: u8 = 0;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_ICMPV6: u8 = 58;
const PROTO_NONXT: u8 = 59;
const PROTO_DSTOPTS: u8 = 60;

/// Why a frame was refused. Each variant is a drop reason the dataplane counts
/// separately; [`ParseError::as_str`] is its stable counter name and
/// [`ParseError::ALL`] lists them in [`ParseError::index`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParseError {
    /// The frame is longer than 65535 bytes (offsets are `u16`).
    FrameTooLong,
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// An 802.1Q/802.1ad TPID without room for the tag and inner ethertype.
    TruncatedVlan,
    /// ARP shorter than its fixed header or than an Ethernet/IPv4 ARP body.
    TruncatedArp,
    /// ARP for other than Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    UnsupportedArp,
    /// Shorter than an IPv4 header (20 bytes, or IHL*4).
    TruncatedIpv4,
    /// IPv4 ethertype but the version nibble is not 4.
    BadIpv4Version,
    /// IHL below 5.
    BadIpv4Ihl,
    /// Total length below IHL*4 or beyond the frame.
    BadIpv4TotalLength,
    /// Shorter than the 40-byte IPv6 header.
    TruncatedIpv6,
    /// IPv6 ethertype but the version nibble is not 6.
    BadIpv6Version,
    /// Payload length runs beyond the frame.
    BadIpv6PayloadLength,
    /// An IPv6 extension header runs beyond the packet.
    TruncatedIpv6Ext,
    /// Shorter than a 20-byte TCP header, or than its data offset.
    TruncatedTcp,
    /// TCP data offset below 5.
    BadTcpOffset,
    /// Shorter than the 8-byte UDP header.
    TruncatedUdp,
    /// UDP length field below 8 or beyond the IP packet.
    BadUdpLength,
    /// ICMP shorter than type, code and checksum.
    TruncatedIcmp,
    /// ICMPv6 shorter than type, code and checksum.
    TruncatedIcmpv6,
}

impl ParseError {
    /// Every drop reason, in [`ParseError::index`] order, for counter arrays.
    pub const ALL: &'static [ParseError] = &[
        ParseError::FrameTooLong,
        ParseError::TruncatedEthernet,
        ParseError::TruncatedVlan,
        ParseError::TruncatedArp,
        ParseError::UnsupportedArp,
        ParseError::TruncatedIpv4,
        ParseError::BadIpv4Version,
        ParseError::BadIpv4Ihl,
        ParseError::BadIpv4TotalLength,
        ParseError::TruncatedIpv6,
        ParseError::BadIpv6Version,
        ParseError::BadIpv6PayloadLength,
        ParseError::TruncatedIpv6Ext,
        ParseError::TruncatedTcp,
        ParseError::BadTcpOffset,
        ParseError::TruncatedUdp,
        ParseError::BadUdpLength,
        ParseError::TruncatedIcmp,
        ParseError::TruncatedIcmpv6,
    ];

    /// Position in [`ParseError::ALL`]: index a per-reason counter array.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name, used as the counter / metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::FrameTooLong => "frame_too_long",
            ParseError::TruncatedEthernet => "truncated_ethernet",
            ParseError::TruncatedVlan => "truncated_vlan",
            ParseError::TruncatedArp => "truncated_arp",
            ParseError::UnsupportedArp => "unsupported_arp",
            ParseError::TruncatedIpv4 => "truncated_ipv4",
            ParseError::BadIpv4Version => "bad_ipv4_version",
            ParseError::BadIpv4Ihl => "bad_ipv4_ihl",
            ParseError::BadIpv4TotalLength => "bad_ipv4_total_length",
            ParseError::TruncatedIpv6 => "truncated_ipv6",
            ParseError::BadIpv6Version => "bad_ipv6_version",
            ParseError::BadIpv6PayloadLength => "bad_ipv6_payload_length",
            ParseError::TruncatedIpv6Ext => "truncated_ipv6_ext",
            ParseError::TruncatedTcp => "truncated_tcp",
            ParseError::BadTcpOffset => "bad_tcp_offset",
            ParseError::TruncatedUdp => "truncated_udp",
            ParseError::BadUdpLength => "bad_udp_length",
            ParseError::TruncatedIcmp => "truncated_icmp",
            ParseError::TruncatedIcmpv6 => "truncated_icmpv6",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ParseError {}

/// One 802.1Q (TPID 0x8100) or 802.1ad (TPID 0x88a8) tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// The tag protocol identifier (the outer ethertype).
    pub tpid: u16,
    /// Tag control information: PCP (3 bits), DEI (1), VID (12).
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN ID.
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
    /// The 3-bit priority code point.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci >> 13) as u8
    }
    /// The drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci & 0x1000 != 0
    }
}

/// What the network layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3Kind {
    /// An IEEE 802.3 length field instead of an ethertype (LLC/SNAP, STP...).
    None,
    /// IPv4 with a validated header.
    Ipv4,
    /// IPv6 with validated extension headers.
    Ipv6,
    /// Ethernet/IPv4 ARP.
    Arp,
    /// Any other ethertype (including a second VLAN tag): forwarded at L2 only.
    Other,
}

impl L3Kind {
    /// Lower-case name for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            L3Kind::None => "none",
            L3Kind::Ipv4 => "ipv4",
            L3Kind::Ipv6 => "ipv6",
            L3Kind::Arp => "arp",
            L3Kind::Other => "other",
        }
    }
}

/// What the transport layer is (absent for non-IP and non-first fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Kind {
    /// No transport header in this frame.
    None,
    /// TCP with a validated data offset.
    Tcp,
    /// UDP with a validated length.
    Udp,
    /// ICMP over IPv4.
    Icmp,
    /// ICMPv6 over IPv6.
    Icmpv6,
    /// Another IP protocol number; `l4_len` is 0.
    Other(u8),
}

impl L4Kind {
    /// Lower-case name for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            L4Kind::None => "none",
            L4Kind::Tcp => "tcp",
            L4Kind::Udp => "udp",
            L4Kind::Icmp => "icmp",
            L4Kind::Icmpv6 => "icmpv6",
            L4Kind::Other(_) => "other",
        }
    }
}

/// Whether the IP packet is a fragment; only the first one carries L4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// A whole packet.
    None,
    /// Offset 0 with more fragments following: has the L4 header.
    First,
    /// Offset > 0: no L4 header (`l4` is [`L4Kind::None`]).
    Later,
}

/// Where each layer of a frame sits, found by one [`parse`].
///
/// All offsets are from the start of the frame and satisfy
/// `l3_off <= l4_off <= l4_off + l4_len <= l3_end <= frame.len()`.
/// Bytes after `l3_end` are Ethernet padding (or a trailer) and belong to no
/// layer; a stage that forwards may keep or trim them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Headers {
    /// The single VLAN tag, if the frame had one.
    pub vlan: Option<VlanTag>,
    /// Offset of the (inner) ethertype field: 12 untagged, 16 tagged.
    pub ethertype_off: u16,
    /// The inner ethertype (after the tag, if any).
    pub ethertype: u16,
    /// Network layer kind.
    pub l3: L3Kind,
    /// Start of the network layer (right after the ethertype).
    pub l3_off: u16,
    /// Network header length: IHL*4 for IPv4, 40 + extension headers for
    /// IPv6, 28 for ARP, 0 otherwise.
    pub l3_len: u16,
    /// End of the network-layer packet: per IPv4 total length / IPv6 payload
    /// length, `l3_off + 28` for ARP, the frame length otherwise.
    pub l3_end: u16,
    /// IPv4 protocol or the last IPv6 next-header (0 when not IP).
    pub ip_proto: u8,
    /// Fragment state of an IP packet.
    pub fragment: Fragment,
    /// Transport layer kind.
    pub l4: L4Kind,
    /// Start of the transport header (`l3_off + l3_len`).
    pub l4_off: u16,
    /// Transport header length: TCP data offset*4, 8 for UDP, 4 for ICMP(v6), 0 otherwise.
    pub l4_len: u16,
}

impl Headers {
    /// The VLAN ID, if tagged.
    #[inline]
    pub fn vid(&self) -> Option<u16> {
        self.vlan.map(|t| t.vid())
    }

    /// The network-layer packet (header and payload, without padding).
    /// Empty if `frame` is not the frame these headers were parsed from.
    #[inline]
    pub fn l3_bytes<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(usize::from(self.l3_off)..usize::from(self.l3_end))
            .unwrap_or(&[])
    }

    /// The transport segment (header and payload) up to the IP packet end.
    #[inline]
    pub fn l4_bytes<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(usize::from(self.l4_off)..usize::from(self.l3_end))
            .unwrap_or(&[])
    }

    /// The bytes after the last parsed header, up to the IP packet end.
    #[inline]
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(usize::from(self.l4_off) + usize::from(self.l4_len)..usize::from(self.l3_end))
            .unwrap_or(&[])
    }

    /// IPv4 source address, if this is IPv4.
    #[inline]
    pub fn ipv4_src(&self, frame: &[u8]) -> Option<Ipv4Addr> {
        self.ipv4_addr_at(frame, 12)
    }

    /// IPv4 destination address, if this is IPv4.
    #[inline]
    pub fn ipv4_dst(&self, frame: &[u8]) -> Option<Ipv4Addr> {
        self.ipv4_addr_at(frame, 16)
    }

    fn ipv4_addr_at(&self, frame: &[u8], rel: usize) -> Option<Ipv4Addr> {
        if self.l3 != L3Kind::Ipv4 {
            return None;
        }
        let at = usize::from(self.l3_off) + rel;
        let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }

    /// TCP/UDP (source, destination) ports, if present.
    #[inline]
    pub fn ports(&self, frame: &[u8]) -> Option<(u16, u16)> {
        if !matches!(self.l4, L4Kind::Tcp | L4Kind::Udp) {
            return None;
        }
        let at = usize::from(self.l4_off);
        let b = frame.get(at..at + 4)?;
        Some((
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    }
}

#[inline(always)]
fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Parse an Ethernet frame's headers into offsets.
///
/// Hand-written rather than etherparse's slicing because it is the hot path
/// and records only offsets; see `benches/parse.rs` for the comparison.
pub fn parse(frame: &[u8]) -> Result<Headers, ParseError> {
    let len = frame.len();
    if len > usize::from(u16::MAX) {
        return Err(ParseError::FrameTooLong);
    }
    if len < ETHERNET_HEADER_LEN {
        return Err(ParseError::TruncatedEthernet);
    }
    let mut ethertype_off = 12;
    let mut ethertype = be16(frame, 12);
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if len < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
            return Err(ParseError::TruncatedVlan);
        }
        vlan = Some(VlanTag {
            tpid: ethertype,
            tci: be16(frame, 14),
        });
        ethertype_off = 16;
        ethertype = be16(frame, 16);
    }
    let l3_off = ethertype_off + 2;
    let mut h = Headers {
        vlan,
        ethertype_off: ethertype_off as u16,
        ethertype,
        l3: L3Kind::Other,
        l3_off: l3_off as u16,
        l3_len: 0,
        l3_end: len as u16,
        ip_proto: 0,
        fragment: Fragment::None,
        l4: L4Kind::None,
        l4_off: l3_off as u16,
        l4_len: 0,
    };
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(frame, &mut h)?,
        ETHERTYPE_IPV6 => parse_ipv6(frame, &mut h)?,
        ETHERTYPE_ARP => parse_arp(frame, &mut h)?,
        t if t < 0x0600 => h.l3 = L3Kind::None,
        _ => {}
    }
    Ok(h)
}

fn parse_arp(frame: &[u8], h: &mut Headers) -> Result<(), ParseError> {
    let off = usize::from(h.l3_off);
    if frame.len() < off + 8 {
        return Err(ParseError::TruncatedArp);
    }
    if be16(frame, off) != 1
        || be16(frame, off + 2) != ETHERTYPE_IPV4
        || frame[off + 4] != 6
        || frame[off + 5] != 4
    {
        return Err(ParseError::UnsupportedArp);
    }
    if frame.len() < off + 28 {
        return Err(ParseError::TruncatedArp);
    }
    h.l3 = L3Kind::Arp;
    h.l3_len = 28;
    h.l3_end = (off + 28) as u16;
    h.l4_off = h.l3_end;
    Ok(())
}

fn parse_ipv4(frame: &[u8], h: &mut Headers) -> Result<(), ParseError> {
    let off = usize::from(h.l3_off);
    let rem = frame.len() - off;
    if rem < 20 {
        return Err(ParseError::TruncatedIpv4);
    }
    let vihl = frame[off];
    if vihl >> 4 != 4 {
        return Err(ParseError::BadIpv4Version);
    }
    let hlen = usize::from(vihl & 0x0f) * 4;
    if hlen < 20 {
        return Err(ParseError::BadIpv4Ihl);
    }
    if hlen > rem {
        return Err(ParseError::TruncatedIpv4);
    }
    let total = usize::from(be16(frame, off + 2));
    if total < hlen || total > rem {
        return Err(ParseError::BadIpv4TotalLength);
    }
    let frag = be16(frame, off + 6);
    h.fragment = if frag & 0x1fff != 0 {
        Fragment::Later
    } else if frag & 0x2000 != 0 {
        Fragment::First
    } else {
        Fragment::None
    };
    h.l3 = L3Kind::Ipv4;
    h.l3_len = hlen as u16;
    h.l3_end = (off + total) as u16;
    h.ip_proto = frame[off + 9];
    h.l4_off = (off + hlen) as u16;
    let l4 = match h.ip_proto {
        PROTO_TCP => L4Kind::Tcp,
        PROTO_UDP => L4Kind::Udp,
        PROTO_ICMP => L4Kind::Icmp,
        p => L4Kind::Other(p),
    };
    parse_l4(frame, h, l4)
}

fn parse_ipv6(frame: &[u8], h: &mut Headers) -> Result<(), ParseError> {
    let off = usize::from(h.l3_off);
    let rem = frame.len() - off;
    if rem < 40 {
        return Err(ParseError::TruncatedIpv6);
    }
    if frame[off] >> 4 != 6 {
        return Err(ParseError::BadIpv6Version);
    }
    let end = off + 40 + usize::from(be16(frame, off + 4));
    if end > frame.len() {
        return Err(ParseError::BadIpv6PayloadLength);
    }
    let mut next = frame[off + 6];
    let mut at = off + 40;
    // Each extension header is at least 8 bytes, so this ends within the packet.
    loop {
        match next {
            PROTO_HOPOPTS | PROTO_ROUTING | PROTO_DSTOPTS => {
                if at + 8 > end {
                    return Err(ParseError::TruncatedIpv6Ext);
                }
                let ext_len = (usize::from(frame[at + 1]) + 1) * 8;
                if at + ext_len > end {
                    return Err(ParseError::TruncatedIpv6Ext);
                }
                next = frame[at];
                at += ext_len;
            }
            PROTO_FRAGMENT => {
                if at + 8 > end {
                    return Err(ParseError::TruncatedIpv6Ext);
                }
                let fo = be16(frame, at + 2);
                h.fragment = if fo & 0xfff8 != 0 {
                    Fragment::Later
                } else if fo & 1 != 0 {
                    Fragment::First
                } else {
                    // An atomic fragment (RFC 6946): a whole packet.
                    h.fragment
                };
                next = frame[at];
                at += 8;
            }
            _ => break,
        }
    }
    h.l3 = L3Kind::Ipv6;
    h.l3_len = (at - off) as u16;
    h.l3_end = end as u16;
    h.ip_proto = next;
    h.l4_off = at as u16;
    let l4 = match next {
        PROTO_TCP => L4Kind::Tcp,
        PROTO_UDP => L4Kind::Udp,
        PROTO_ICMPV6 => L4Kind::Icmpv6,
        PROTO_NONXT => L4Kind::None,
        p => L4Kind::Other(p),
    };
    parse_l4(frame, h, l4)
}

/// Validate the transport header within `[l4_off, l3_end)`.
#[inline(always)]
fn parse_l4(frame: &[u8], h: &mut Headers, l4: L4Kind) -> Result<(), ParseError> {
    if h.fragment == Fragment::Later {
        return Ok(());
    }
    let at = usize::from(h.l4_off);
    let rem = usize::from(h.l3_end) - at;
    let l4_len = match l4 {
        L4Kind::Tcp => {
            if rem < 20 {
                return Err(ParseError::TruncatedTcp);
            }
            let hl = usize::from(frame[at + 12] >> 4) * 4;
            if hl < 20 {
                return Err(ParseError::BadTcpOffset);
            }
            if hl > rem {
                return Err(ParseError::TruncatedTcp);
            }
            hl
        }
        L4Kind::Udp => {
            if rem < 8 {
                return Err(ParseError::TruncatedUdp);
            }
            let ulen = usize::from(be16(frame, at + 4));
            // Jumbograms (length 0, RFC 2675) are refused along with lengths that do not fit.
            if ulen < 8 || ulen > rem {
                return Err(ParseError::BadUdpLength);
            }
            8
        }
        L4Kind::Icmp | L4Kind::Icmpv6 => {
            if rem < 4 {
                return Err(if l4 == L4Kind::Icmp {
                    ParseError::TruncatedIcmp
                } else {
                    ParseError::TruncatedIcmpv6
                });
            }
            4
        }
        L4Kind::None | L4Kind::Other(_) => 0,
    };
    h.l4 = l4;
    h.l4_len = l4_len as u16;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use crate::wire::{EthernetAddress, arp, ethernet, icmp, ipv4, ipv6, tcp, udp};
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    const A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
    const IA: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// One valid frame of every kind the parser knows.
    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("udp", build::udp_ipv4(A, B, IA, IB, 1000, 53, b"query")),
            (
                "vlan_udp",
                build::udp_ipv4_vlan(42, A, B, IA, IB, 1000, 53, b"query"),
            ),
            (
                "tcp",
                build::tcp_ipv4(A, B, IA, IB, 40000, 80, 1, 0, tcp::Flags::SYN, b"GET /"),
            ),
            ("icmp", build::icmp_echo_ipv4(A, B, IA, IB, 1, 2, b"ping")),
            ("arp", build::arp_request(A, IA, IB)),
            ("arp_padded", build::pad(build::gratuitous_arp(A, IA), 60)),
            (
                "udp6",
                build::udp_ipv6(A, B, v6("2001:db8::1"), v6("2001:db8::2"), 5, 6, b"six"),
            ),
            (
                "udp6_hbh",
                build::udp_ipv6_hop_by_hop(
                    A,
                    B,
                    v6("2001:db8::1"),
                    v6("2001:db8::2"),
                    5,
                    6,
                    b"six",
                ),
            ),
        ]
    }

    /// The invariants every successful parse must satisfy, and every wire
    /// view the headers promise must accept its slice.
    fn assert_consistent(frame: &[u8], h: &Headers) {
        let len = frame.len();
        assert!(usize::from(h.ethertype_off) + 2 == usize::from(h.l3_off));
        assert!(h.l3_off <= h.l4_off, "{h:?}");
        assert!(
            usize::from(h.l4_off) + usize::from(h.l4_len) <= usize::from(h.l3_end),
            "{h:?}"
        );
        assert!(usize::from(h.l3_end) <= len, "{h:?} len {len}");
        assert_eq!(h.l3_off + h.l3_len, h.l4_off, "{h:?}");
        assert!(ethernet::Frame::new_checked(frame).is_ok());
        let l3 = h.l3_bytes(frame);
        let l4 = h.l4_bytes(frame);
        match h.l3 {
            L3Kind::Ipv4 => {
                let p = ipv4::Packet::new_checked(l3).unwrap();
                assert_eq!(p.header_len(), usize::from(h.l3_len));
                assert_eq!(u8::from(p.protocol()), h.ip_proto);
            }
            L3Kind::Ipv6 => {
                ipv6::Packet::new_checked(l3).unwrap();
            }
            L3Kind::Arp => {
                arp::Repr::parse(&arp::Packet::new_checked(l3).unwrap()).unwrap();
            }
            L3Kind::None | L3Kind::Other => assert_eq!(h.l4, L4Kind::None),
        }
        match h.l4 {
            L4Kind::Tcp => assert_eq!(
                tcp::Packet::new_checked(l4).unwrap().header_len(),
                usize::from(h.l4_len)
            ),
            L4Kind::Udp => {
                assert!(usize::from(udp::Packet::new_checked(l4).unwrap().len()) <= l4.len())
            }
            L4Kind::Icmp | L4Kind::Icmpv6 => {
                icmp::Packet::new_checked(l4).unwrap();
            }
            L4Kind::None | L4Kind::Other(_) => assert_eq!(h.l4_len, 0),
        }
        if h.fragment == Fragment::Later {
            assert_eq!(h.l4, L4Kind::None);
        }
    }

    #[test]
    fn test_parse_every_kind() {
        for (name, f) in samples() {
            let h = parse(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_consistent(&f, &h);
            let expect = match name {
                "udp" => (None, L3Kind::Ipv4, 14, 20, L4Kind::Udp, 8),
                "vlan_udp" => (Some(42), L3Kind::Ipv4, 18, 20, L4Kind::Udp, 8),
                "tcp" => (None, L3Kind::Ipv4, 14, 20, L4Kind::Tcp, 20),
                "icmp" => (None, L3Kind::Ipv4, 14, 20, L4Kind::Icmp, 4),
                "arp" | "arp_padded" => (None, L3Kind::Arp, 14, 28, L4Kind::None, 0),
                "udp6" => (None, L3Kind::Ipv6, 14, 40, L4Kind::Udp, 8),
                "udp6_hbh" => (None, L3Kind::Ipv6, 14, 48, L4Kind::Udp, 8),
                _ => unreachable!(),
            };
            assert_eq!(
                (h.vid(), h.l3, h.l3_off, h.l3_len, h.l4, h.l4_len),
                expect,
                "{name}"
            );
            // No padding in built frames except the padded ARP.
            let end = if name == "arp_padded" { 42 } else { f.len() };
            assert_eq!(usize::from(h.l3_end), end, "{name}");
        }
        let f = build::udp_ipv4(A, B, IA, IB, 1000, 53, b"query");
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.ipv4_src(&f), h.ipv4_dst(&f), h.ports(&f)),
            (Some(IA), Some(IB), Some((1000, 53)))
        );
        assert_eq!(h.payload(&f), b"query");
        assert_eq!(
            (h.ethertype, h.ip_proto, h.fragment),
            (0x0800, 17, Fragment::None)
        );
    }

    #[test]
    fn test_padding_after_ip_packet_is_tolerated() {
        let f = build::pad(build::udp_ipv4(A, B, IA, IB, 1, 2, b""), 60);
        assert_eq!(f.len(), 60);
        let h = parse(&f).unwrap();
        assert_eq!(usize::from(h.l3_end), 14 + 28);
        assert_eq!(h.payload(&f), b"");
        assert_consistent(&f, &h);
    }

    #[test]
    fn test_non_ip_kinds() {
        let mut f = build::udp_ipv4(A, B, IA, IB, 1, 2, b"");
        f[12..14].copy_from_slice(&0x0026u16.to_be_bytes()); // 802.3 length
        assert_eq!(parse(&f).unwrap().l3, L3Kind::None);
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.l3, h.l4, h.ethertype, usize::from(h.l3_end)),
            (L3Kind::Other, L4Kind::None, 0x88cc, f.len())
        );
        // A second tag (QinQ) is left to L2: Other with the inner TPID as ethertype.
        let mut q = build::udp_ipv4_vlan(7, A, B, IA, IB, 1, 2, b"");
        q[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        q[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
        let h = parse(&q).unwrap();
        assert_eq!(
            (h.vlan.map(|t| t.tpid), h.ethertype, h.l3),
            (Some(0x88a8), 0x8100, L3Kind::Other)
        );
    }

    #[test]
    fn test_vlan_tag_fields() {
        let mut f = build::udp_ipv4_vlan(0xabc, A, B, IA, IB, 1, 2, b"");
        f[14] |= 0xb0; // PCP 5, DEI 1
        let t = parse(&f).unwrap().vlan.unwrap();
        assert_eq!(
            (t.tpid, t.pcp(), t.dei(), t.vid()),
            (0x8100, 5, true, 0xabc)
        );
    }

    fn ipv4_frame() -> Vec<u8> {
        build::udp_ipv4(A, B, IA, IB, 1, 2, b"abcdefgh")
    }

    #[test]
    fn test_malformed_ipv4() {
        let cases: [(usize, u8, ParseError); 4] = [
            (14, 0x65, ParseError::BadIpv4Version),
            (14, 0x44, ParseError::BadIpv4Ihl),
            (14, 0x4f, ParseError::TruncatedIpv4),
            (17, 19, ParseError::BadIpv4TotalLength),
        ];
        for (at, v, want) in cases {
            let mut f = ipv4_frame();
            f[at] = v;
            assert_eq!(parse(&f), Err(want), "byte {at} = {v:#x}");
        }
        let mut f = ipv4_frame();
        f[17] += 1; // total length one past the frame
        assert_eq!(parse(&f), Err(ParseError::BadIpv4TotalLength));
        let mut f = ipv4_frame();
        f[14 + 20 + 5] = 7; // UDP length below 8
        assert_eq!(parse(&f), Err(ParseError::BadUdpLength));
        f[14 + 20 + 5] = 17; // one past the IP packet
        assert_eq!(parse(&f), Err(ParseError::BadUdpLength));
    }

    #[test]
    fn test_ipv4_options_and_fragments() {
        // IHL 6: insert 4 option bytes (NOPs) and fix the lengths.
        let mut f = ipv4_frame();
        f.splice(34..34, [1u8, 1, 1, 1]);
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let h = parse(&f).unwrap();
        assert_eq!((h.l3_len, h.l4_off, h.l4), (24, 38, L4Kind::Udp));
        assert_consistent(&f, &h);

        let mut f = ipv4_frame();
        f[20] = 0x20; // MF, offset 0
        let h = parse(&f).unwrap();
        assert_eq!((h.fragment, h.l4), (Fragment::First, L4Kind::Udp));
        f[21] = 0x01; // offset 8: no L4 header, even though the bytes look like UDP
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.fragment, h.l4, h.l4_len),
            (Fragment::Later, L4Kind::None, 0)
        );
        assert_eq!(h.ports(&f), None);
        // A later fragment too short for UDP is fine.
        let mut f = ipv4_frame();
        f[16..18].copy_from_slice(&22u16.to_be_bytes());
        f.truncate(14 + 22);
        f[21] = 0x01;
        assert_eq!(parse(&f).unwrap().l4, L4Kind::None);
        f[21] = 0x00;
        assert_eq!(parse(&f), Err(ParseError::TruncatedUdp));
    }

    #[test]
    fn test_malformed_tcp() {
        let mut f = build::tcp_ipv4(A, B, IA, IB, 1, 2, 0, 0, tcp::Flags::SYN, b"");
        f[14 + 20 + 12] = 0x40;
        assert_eq!(parse(&f), Err(ParseError::BadTcpOffset));
        f[14 + 20 + 12] = 0x60; // 24-byte header in a 20-byte segment
        assert_eq!(parse(&f), Err(ParseError::TruncatedTcp));
    }

    #[test]
    fn test_unsupported_arp() {
        for (at, v) in [(15usize, 6u8), (16, 0x86), (18, 8), (19, 16)] {
            let mut f = build::arp_request(A, IA, IB);
            f[at] = v;
            assert_eq!(parse(&f), Err(ParseError::UnsupportedArp), "byte {at}");
        }
    }

    #[test]
    fn test_ipv6_extension_headers() {
        let f = build::udp_ipv6_hop_by_hop(A, B, v6("::1"), v6("::2"), 1, 2, b"abcdefgh");
        // Extension header length pointing past the packet.
        let mut g = f.clone();
        g[14 + 40 + 1] = 9;
        assert_eq!(parse(&g), Err(ParseError::TruncatedIpv6Ext));
        // Turn the hop-by-hop header into a fragment header: first, then later.
        let mut g = f.clone();
        g[14 + 6] = 44;
        g[14 + 40..14 + 48].copy_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 1]);
        let h = parse(&g).unwrap();
        assert_eq!(
            (h.fragment, h.l4, h.l3_len),
            (Fragment::First, L4Kind::Udp, 48)
        );
        g[14 + 43] = 0x08; // offset 1 (8 bytes), M=0
        let h = parse(&g).unwrap();
        assert_eq!(
            (h.fragment, h.l4, h.ip_proto),
            (Fragment::Later, L4Kind::None, 17)
        );
        // Payload length past the frame; bad version.
        let mut g = f.clone();
        g[14 + 5] += 1;
        assert_eq!(parse(&g), Err(ParseError::BadIpv6PayloadLength));
        let mut g = f.clone();
        g[14] = 0x40;
        assert_eq!(parse(&g), Err(ParseError::BadIpv6Version));
        // No next header: no L4.
        let mut g = f;
        g[14 + 40] = 59;
        let h = parse(&g).unwrap();
        assert_eq!((h.l4, h.ip_proto), (L4Kind::None, 59));
    }

    #[test]
    fn test_every_prefix_is_an_error_or_consistent() {
        for (name, f) in samples() {
            for n in 0..f.len() {
                let p = &f[..n];
                match parse(p) {
                    Ok(h) => {
                        assert_consistent(p, &h);
                        // A cut IP packet can never parse: its length field says more.
                        assert!(
                            !matches!(h.l3, L3Kind::Ipv4 | L3Kind::Ipv6),
                            "{name} prefix {n}: {h:?}"
                        );
                    }
                    Err(e) => {
                        assert!(ParseError::ALL.contains(&e));
                        if n < 14 {
                            assert_eq!(e, ParseError::TruncatedEthernet);
                        }
                    }
                }
            }
            // Only the padded ARP parses when cut inside its padding.
            if name == "arp_padded" {
                assert!(parse(&f[..42]).is_ok());
                assert_eq!(parse(&f[..41]), Err(ParseError::TruncatedArp));
            }
        }
    }

    #[test]
    fn test_error_names_are_stable_and_unique() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.to_string(), e.as_str());
            assert!(
                e.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit())
            );
        }
        let mut names: Vec<_> = ParseError::ALL.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ParseError::ALL.len());
        assert_eq!(ParseError::TruncatedIpv6Ext.as_str(), "truncated_ipv6_ext");
        assert_eq!(parse(&vec![0u8; 65536]), Err(ParseError::FrameTooLong));
    }

    /// Replays the fuzz seed corpus (valid frames of every kind, which must
    /// parse) and any kept fuzz crash inputs (`fuzz/regressions/parse/*`,
    /// which must not panic and must be consistent if they parse).
    #[test]
    fn test_fuzz_corpus_and_regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let seeds: Vec<_> = std::fs::read_dir(root.join("corpus/parse"))
            .unwrap()
            .collect();
        assert!(seeds.len() >= 8, "seed corpus missing");
        for e in seeds {
            let f = std::fs::read(e.unwrap().path()).unwrap();
            assert_consistent(&f, &parse(&f).unwrap());
        }
        if let Ok(dir) = std::fs::read_dir(root.join("regressions/parse")) {
            for e in dir {
                let f = std::fs::read(e.unwrap().path()).unwrap();
                if let Ok(h) = parse(&f) {
                    assert_consistent(&f, &h);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(f in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(h) = parse(&f) {
                assert_consistent(&f, &h);
            }
        }

        #[test]
        fn parse_never_panics_on_mutated_frames(
            which in 0usize..8,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = samples().swap_remove(which).1;
            for (i, v) in edits {
                let at = i.index(f.len());
                f[at] = v;
            }
            let n = cut.index(f.len() + 1);
            if let Ok(h) = parse(&f[..n]) {
                assert_consistent(&f[..n], &h);
            }
            if let Ok(h) = parse(&f) {
                assert_consistent(&f, &h);
            }
        }
    }
}
