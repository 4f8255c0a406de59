//! Frame builders for tests, demos and control-plane injects. The IP ones use
//! etherparse's `PacketBuilder` (checksums included); ARP uses this crate's
//! own views. Frames are not padded to 60 bytes: use [`pad`] for that.
//!
//! Payloads longer than fits in one IP packet are cut to fit, so a builder
//! never fails; these are not for the packet path.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, TcpHeader, VlanId};

use crate::wire::{EtherType, EthernetAddress, arp, ethernet, ipv6, tcp::Flags};

/// Hop limit / TTL of built packets.
pub const TTL: u8 = 64;
/// Largest payload a builder keeps (room for IPv4/IPv6 + TCP headers).
pub const MAX_PAYLOAD: usize = 65535 - 40 - 60;
/// Ethernet minimum frame length without FCS.
pub const ETHERNET_MIN: usize = 60;

fn cut(payload: &[u8]) -> &[u8] {
    &payload[..payload.len().min(MAX_PAYLOAD)]
}

/// Write an etherparse builder step, returning an empty frame (which parses as
/// `truncated_ethernet`) in the one case it can fail: a payload too long,
/// which [`cut`] rules out.
macro_rules! finish {
    ($builder:expr, $payload:expr) => {{
        let payload = cut($payload);
        let b = $builder;
        let mut out = Vec::with_capacity(b.size(payload.len()));
        match b.write(&mut out, payload) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }};
}

/// Pad a frame with zeros to `min` bytes (60 for Ethernet), as a NIC does.
pub fn pad(mut frame: Vec<u8>, min: usize) -> Vec<u8> {
    if frame.len() < min {
        frame.resize(min, 0);
    }
    frame
}

/// Ethernet + IPv4 + UDP with correct checksums.
pub fn udp_ipv4(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    finish!(
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .ipv4(src_ip.octets(), dst_ip.octets(), TTL)
            .udp(sport, dport),
        payload
    )
}

/// [`udp_ipv4`] with one 802.1Q tag (VID masked to 12 bits, PCP 0).
#[allow(clippy::too_many_arguments)]
pub fn udp_ipv4_vlan(
    vid: u16,
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let vid = VlanId::try_new(vid & 0x0fff).unwrap_or(VlanId::ZERO);
    finish!(
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .single_vlan(vid)
            .ipv4(src_ip.octets(), dst_ip.octets(), TTL)
            .udp(sport, dport),
        payload
    )
}

/// Ethernet + IPv4 + TCP (20-byte header, window 65535) with correct checksums.
#[allow(clippy::too_many_arguments)]
pub fn tcp_ipv4(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = TcpHeader::new(sport, dport, seq, 65535);
    t.acknowledgment_number = ack;
    t.fin = flags.contains(Flags::FIN);
    t.syn = flags.contains(Flags::SYN);
    t.rst = flags.contains(Flags::RST);
    t.psh = flags.contains(Flags::PSH);
    t.ack = flags.contains(Flags::ACK);
    t.urg = flags.contains(Flags::URG);
    t.ece = flags.contains(Flags::ECE);
    t.cwr = flags.contains(Flags::CWR);
    finish!(
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .ipv4(src_ip.octets(), dst_ip.octets(), TTL)
            .tcp_header(t),
        payload
    )
}

/// Ethernet + IPv4 + ICMP echo request.
pub fn icmp_echo_ipv4(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    finish!(
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .ipv4(src_ip.octets(), dst_ip.octets(), TTL)
            .icmpv4_echo_request(ident, seq),
        payload
    )
}

/// Ethernet + IPv4 + ICMP echo reply.
pub fn icmp_echo_reply_ipv4(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    finish!(
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .ipv4(src_ip.octets(), dst_ip.octets(), TTL)
            .icmpv4_echo_reply(ident, seq),
        payload
    )
}

/// Ethernet + IPv6 + UDP with a correct checksum.
pub fn udp_ipv6(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    finish!(
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .ipv6(src_ip.octets(), dst_ip.octets(), TTL)
            .udp(sport, dport),
        payload
    )
}

/// [`udp_ipv6`] with an 8-byte hop-by-hop options header (one PadN option)
/// between the IPv6 header and UDP. The UDP checksum does not change: its
/// pseudo header names the upper-layer protocol and length, not the chain.
pub fn udp_ipv6_hop_by_hop(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD - 8)];
    let mut f = udp_ipv6(src_mac, dst_mac, src_ip, dst_ip, sport, dport, payload);
    let l3 = ethernet::HEADER_LEN;
    let at = l3 + ipv6::HEADER_LEN;
    if f.len() < at {
        return Vec::new();
    }
    // next header UDP, ext length 0 (8 bytes), PadN option of 4 data bytes.
    let hbh = [17u8, 0, 1, 4, 0, 0, 0, 0];
    f.splice(at..at, hbh);
    let mut ip = ipv6::Packet::new_unchecked(&mut f[l3..]);
    let plen = ip.payload_len().saturating_add(8);
    ip.set_payload_len(plen);
    ip.set_next_header(crate::IpProtocol::HopByHop);
    f
}

fn arp_frame(dst_mac: EthernetAddress, repr: arp::Repr) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
    let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
    ethernet::Repr {
        src_addr: repr.source_hardware_addr,
        dst_addr: dst_mac,
        ethertype: EtherType::Arp,
    }
    .emit(&mut eth);
    repr.emit(&mut arp::Packet::new_unchecked(eth.payload_mut()));
    f
}

/// Broadcast ARP request: who has `tpa`? Tell `spa` (at `sha`).
pub fn arp_request(sha: EthernetAddress, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        EthernetAddress::BROADCAST,
        arp::Repr {
            operation: arp::Operation::Request,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: EthernetAddress::ZERO,
            target_protocol_addr: tpa,
        },
    )
}

/// Unicast ARP reply to (`tha`, `tpa`): `spa` is at `sha`.
pub fn arp_reply(
    sha: EthernetAddress,
    spa: Ipv4Addr,
    tha: EthernetAddress,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    arp_frame(
        tha,
        arp::Repr {
            operation: arp::Operation::Reply,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: tha,
            target_protocol_addr: tpa,
        },
    )
}

/// Gratuitous ARP announcing `ip` at `mac`: a broadcast request with SPA == TPA.
pub fn gratuitous_arp(mac: EthernetAddress, ip: Ipv4Addr) -> Vec<u8> {
    arp_request(mac, ip, ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{L3Kind, L4Kind, parse};
    use crate::wire::{icmp, ipv4, tcp, udp};

    const A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
    const IA: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn ipv4_builders_have_correct_checksums() {
        for f in [
            udp_ipv4(A, B, IA, IB, 1, 2, b"x"),
            udp_ipv4_vlan(10, A, B, IA, IB, 1, 2, b"xyz"),
            tcp_ipv4(A, B, IA, IB, 1, 2, 3, 4, Flags::SYN | Flags::ACK, b"data"),
            icmp_echo_ipv4(A, B, IA, IB, 7, 8, b"ping"),
            icmp_echo_reply_ipv4(B, A, IB, IA, 7, 8, b"ping"),
        ] {
            let h = parse(&f).unwrap();
            let ip = ipv4::Packet::new_checked(h.l3_bytes(&f)).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!((ip.src_addr(), ip.ttl()), (h.ipv4_src(&f).unwrap(), TTL));
            let seg = h.l4_bytes(&f);
            match h.l4 {
                L4Kind::Udp => assert!(
                    udp::Packet::new_checked(seg)
                        .unwrap()
                        .verify_checksum_ipv4(ip.src_addr(), ip.dst_addr())
                ),
                L4Kind::Tcp => {
                    let t = tcp::Packet::new_checked(seg).unwrap();
                    assert!(t.verify_checksum_ipv4(ip.src_addr(), ip.dst_addr()));
                    assert_eq!(
                        (t.seq_number(), t.ack_number(), t.flags()),
                        (3, 4, Flags::SYN | Flags::ACK)
                    );
                }
                L4Kind::Icmp => {
                    let i = icmp::Packet::new_checked(seg).unwrap();
                    assert!(i.verify_checksum());
                    assert_eq!((i.echo_ident(), i.echo_seq_no()), (Some(7), Some(8)));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            parse(&udp_ipv4_vlan(4095 + 1 + 10, A, B, IA, IB, 1, 2, b""))
                .unwrap()
                .vid(),
            Some(10)
        );
    }

    #[test]
    fn ipv6_builders_have_correct_checksums() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let plain = udp_ipv6(A, B, s, d, 5, 6, b"hello");
        let hbh = udp_ipv6_hop_by_hop(A, B, s, d, 5, 6, b"hello");
        assert_eq!(hbh.len(), plain.len() + 8);
        for f in [plain, hbh] {
            let h = parse(&f).unwrap();
            assert_eq!((h.l3, h.l4, h.ip_proto), (L3Kind::Ipv6, L4Kind::Udp, 17));
            let u = udp::Packet::new_checked(h.l4_bytes(&f)).unwrap();
            assert!(u.verify_checksum_ipv6(s, d));
            assert_eq!(u.payload(), b"hello");
        }
    }

    #[test]
    fn arp_builders() {
        let f = gratuitous_arp(A, IA);
        let h = parse(&f).unwrap();
        assert_eq!(h.l3, L3Kind::Arp);
        let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert!(eth.dst_addr().is_broadcast());
        let r = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(r.source_protocol_addr, r.target_protocol_addr);
        assert_eq!(r.operation, arp::Operation::Request);
        let f = arp_reply(B, IB, A, IA);
        let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (B, A));
        let r = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(
            (r.operation, r.target_hardware_addr, r.target_protocol_addr),
            (arp::Operation::Reply, A, IA)
        );
        assert_eq!(pad(f, ETHERNET_MIN).len(), 60);
    }

    #[test]
    fn oversize_payload_is_cut_not_failed() {
        let big = vec![0u8; 70_000];
        let f = udp_ipv4(A, B, IA, IB, 1, 2, &big);
        assert!(parse(&f).is_ok());
        assert!(f.len() <= 65535 + 14);
    }
}
