//! Internet checksums: the RFC 1071 sum, pseudo-header sums, and RFC 1624
//! incremental updates so a stage that rewrites an address or a port patches
//! the checksums in O(1) instead of summing the whole packet again.
//!
//! Conventions (as in smoltcp): [`data`], [`ipv4_pseudo_header`],
//! [`ipv6_pseudo_header`] and [`combine`] return the *folded sum* (not yet
//! complemented); the value stored in a header is `!combine(..)`. A packet with
//! a correct checksum sums (checksum field included) to `0xffff`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::parse::{Fragment, Headers, L3Kind, L4Kind};
use crate::{Error, Result};

/// Fold a 32/64-bit accumulator into 16 bits with end-around carry.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Unfolded RFC 1071 sum of `data` as big-endian 16-bit words (an odd last
/// byte is padded with zero). Exposed for callers that sum several pieces.
#[inline]
pub fn sum_words(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    // Eight bytes at a time: four words added into a wide accumulator cannot
    // overflow for any slice that fits in memory (each step adds < 2^18).
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folded RFC 1071 sum of `data` (complement it to get a checksum).
#[inline]
pub fn data(data: &[u8]) -> u16 {
    fold(sum_words(data))
}

/// Ones'-complement sum of several folded sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Folded sum of the IPv4 pseudo header used by TCP and UDP checksums.
/// `len` is the upper-layer length (TCP segment or UDP length).
#[inline]
pub fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> u16 {
    let s = u32::from(src);
    let d = u32::from(dst);
    fold(
        u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff)
            + u64::from(proto)
            + u64::from(len >> 16)
            + u64::from(len & 0xffff),
    )
}

/// Folded sum of the IPv6 pseudo header (RFC 8200 section 8.1).
#[inline]
pub fn ipv6_pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u16 {
    fold(
        sum_words(&src.octets())
            + sum_words(&dst.octets())
            + u64::from(next_header)
            + u64::from(len >> 16)
            + u64::from(len & 0xffff),
    )
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data
/// changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!csum) + u64::from(!old) + u64::from(new))
}

/// [`update16`] for a 32-bit field (an IPv4 address): both halves at once.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    !fold(
        u64::from(!csum)
            + u64::from(!(old >> 16) as u16)
            + u64::from(!(old as u16))
            + u64::from((new >> 16) as u16)
            + u64::from(new as u16),
    )
}

/// Which address or port of a packet a rewrite targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source address or port.
    Src,
    /// The destination address or port.
    Dst,
}

/// Patch a TCP/UDP checksum field at `at` (absolute offset into `frame`)
/// after a covered 32-bit value changed. UDP's "no checksum" (0) stays 0 and a
/// computed 0 is sent as 0xffff (RFC 768).
fn patch_l4_checksum(frame: &mut [u8], l4: L4Kind, at: usize, old: u32, new: u32) -> Result<()> {
    let Some(field) = frame.get_mut(at..at + 2) else {
        return Err(Error::Truncated {
            proto: "l4",
            need: at + 2,
            have: 0,
        });
    };
    let csum = u16::from_be_bytes([field[0], field[1]]);
    let out = match l4 {
        L4Kind::Udp if csum == 0 => return Ok(()),
        L4Kind::Udp => match update32(csum, old, new) {
            0 => 0xffff,
            c => c,
        },
        _ => update32(csum, old, new),
    };
    field.copy_from_slice(&out.to_be_bytes());
    Ok(())
}

/// Offset of the checksum field within the L4 header, if the pseudo header
/// covers it and the L4 header is present in this packet.
fn l4_checksum_at(h: &Headers) -> Option<usize> {
    if h.fragment == Fragment::Later {
        return None;
    }
    match h.l4 {
        L4Kind::Tcp => Some(usize::from(h.l4_off) + 16),
        L4Kind::Udp => Some(usize::from(h.l4_off) + 6),
        _ => None,
    }
}

/// Rewrite the IPv4 source or destination address of a parsed frame in place
/// and fix both the IPv4 header checksum and the TCP/UDP checksum (whose
/// pseudo header covers the address). ICMP has no pseudo header and needs no
/// change; a non-first fragment carries no L4 header to fix.
///
/// Errors when `h` does not describe an IPv4 packet inside `frame`.
pub fn rewrite_ipv4_addr(frame: &mut [u8], h: &Headers, side: Side, new: Ipv4Addr) -> Result<()> {
    if h.l3 != L3Kind::Ipv4 {
        return Err(Error::WrongKind {
            need: "ipv4",
            have: h.l3.as_str(),
        });
    }
    let l3 = usize::from(h.l3_off);
    let at = l3 + if side == Side::Src { 12 } else { 16 };
    let have = frame.len();
    if have < l3 + 20 || l4_checksum_at(h).is_some_and(|c| c + 2 > have) {
        return Err(Error::Truncated {
            proto: "ipv4",
            need: usize::from(h.l3_end),
            have,
        });
    }
    let old = u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let new = u32::from(new);
    frame[at..at + 4].copy_from_slice(&new.to_be_bytes());
    let hc = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&update32(hc, old, new).to_be_bytes());
    if let Some(c) = l4_checksum_at(h) {
        patch_l4_checksum(frame, h.l4, c, old, new)?;
    }
    Ok(())
}

/// Rewrite the TCP or UDP source or destination port of a parsed frame in
/// place and fix the L4 checksum (UDP checksum 0 stays 0).
///
/// Errors when `h` has no TCP/UDP header (including non-first fragments).
pub fn rewrite_l4_port(frame: &mut [u8], h: &Headers, side: Side, new: u16) -> Result<()> {
    let Some(c) = l4_checksum_at(h) else {
        return Err(Error::WrongKind {
            need: "tcp or udp",
            have: h.l4.as_str(),
        });
    };
    let at = usize::from(h.l4_off) + if side == Side::Src { 0 } else { 2 };
    if c + 2 > frame.len() {
        return Err(Error::Truncated {
            proto: h.l4.as_str(),
            need: c + 2,
            have: frame.len(),
        });
    }
    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
    frame[at..at + 2].copy_from_slice(&new.to_be_bytes());
    patch_l4_checksum(frame, h.l4, c, u32::from(old), u32::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use crate::parse::parse;
    use crate::wire::EthernetAddress;
    use proptest::prelude::*;

    /// Full recomputation of the IPv4 header checksum and the TCP/UDP checksum
    /// of a frame built by `build`, as the reference for incremental updates.
    fn full_checksums(frame: &[u8]) -> (u16, u16) {
        let h = parse(frame).unwrap();
        let l3 = usize::from(h.l3_off);
        let mut hdr = frame[l3..l3 + usize::from(h.l3_len)].to_vec();
        hdr[10] = 0;
        hdr[11] = 0;
        let ip = !data(&hdr);
        let seg = &frame[usize::from(h.l4_off)..usize::from(h.l3_end)];
        let src = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[l3 + 12..l3 + 16]).unwrap());
        let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[l3 + 16..l3 + 20]).unwrap());
        let cpos = if h.l4 == L4Kind::Tcp { 16 } else { 6 };
        let mut seg = seg.to_vec();
        seg[cpos] = 0;
        seg[cpos + 1] = 0;
        let l4 = !combine(&[
            ipv4_pseudo_header(src, dst, h.ip_proto, seg.len() as u32),
            data(&seg),
        ]);
        let l4 = if h.l4 == L4Kind::Udp && l4 == 0 {
            0xffff
        } else {
            l4
        };
        (ip, l4)
    }

    fn stored(frame: &[u8]) -> (u16, u16) {
        let h = parse(frame).unwrap();
        let l3 = usize::from(h.l3_off);
        let c = l4_checksum_at(&h).unwrap();
        (
            u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]),
            u16::from_be_bytes([frame[c], frame[c + 1]]),
        )
    }

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        // Odd length pads the last byte with zero.
        assert_eq!(data(&[0x01, 0x02, 0x03]), 0x0402);
    }

    #[test]
    fn rfc1624_example_update() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn udp_zero_checksum_stays_zero_on_rewrite() {
        let mut f = build::udp_ipv4(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1000,
            53,
            b"hello",
        );
        let h = parse(&f).unwrap();
        let c = usize::from(h.l4_off) + 6;
        f[c] = 0;
        f[c + 1] = 0;
        rewrite_ipv4_addr(&mut f, &h, Side::Src, Ipv4Addr::new(192, 0, 2, 7)).unwrap();
        rewrite_l4_port(&mut f, &h, Side::Dst, 5353).unwrap();
        assert_eq!(&f[c..c + 2], &[0, 0]);
        assert_eq!(stored(&f).0, full_checksums(&f).0);
    }

    #[test]
    fn rewrite_refuses_frames_the_headers_do_not_fit() {
        let f = build::arp_request(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        let h = parse(&f).unwrap();
        let mut g = f.clone();
        assert!(matches!(
            rewrite_ipv4_addr(&mut g, &h, Side::Src, Ipv4Addr::LOCALHOST),
            Err(Error::WrongKind { need: "ipv4", .. })
        ));
        assert!(rewrite_l4_port(&mut g, &h, Side::Src, 1).is_err());
        assert_eq!(f, g);
        // Headers from a long frame applied to a shorter one: an error, not a panic.
        let long = build::udp_ipv4(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            2,
            b"",
        );
        let h = parse(&long).unwrap();
        let mut short = long[..30].to_vec();
        assert!(rewrite_ipv4_addr(&mut short, &h, Side::Dst, Ipv4Addr::LOCALHOST).is_err());
        assert!(rewrite_l4_port(&mut short, &h, Side::Dst, 9).is_err());
    }

    proptest! {
        #[test]
        fn update16_matches_full_recomputation(
            words in proptest::collection::vec(any::<u16>(), 1..64),
            idx in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let before = !data(&bytes);
            let i = idx.index(words.len());
            let mut words2 = words.clone();
            words2[i] = new;
            let bytes2: Vec<u8> = words2.iter().flat_map(|w| w.to_be_bytes()).collect();
            let full = !data(&bytes2);
            let inc = update16(before, words[i], new);
            // Equal as ones'-complement numbers (0x0000 and 0xffff are both zero
            // when every word is zero); exactly equal otherwise.
            if words2.iter().all(|&w| w == 0) {
                prop_assert!(inc == 0xffff || inc == 0);
            } else {
                prop_assert_eq!(inc, full);
            }
        }

        #[test]
        fn ipv4_rewrites_match_full_recomputation(
            src in any::<u32>(), dst in any::<u32>(),
            new_addr in any::<u32>(), new_port in any::<u16>(),
            sport in any::<u16>(), dport in any::<u16>(),
            tcp in any::<bool>(), side_src in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (m1, m2) = (EthernetAddress([2, 0, 0, 0, 0, 1]), EthernetAddress([2, 0, 0, 0, 0, 2]));
            let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let mut f = if tcp {
                build::tcp_ipv4(m1, m2, s, d, sport, dport, 7, 9, crate::wire::tcp::Flags::ACK, &payload)
            } else {
                build::udp_ipv4(m1, m2, s, d, sport, dport, &payload)
            };
            prop_assert_eq!(stored(&f), full_checksums(&f));
            let h = parse(&f).unwrap();
            let side = if side_src { Side::Src } else { Side::Dst };
            rewrite_ipv4_addr(&mut f, &h, side, Ipv4Addr::from(new_addr)).unwrap();
            prop_assert_eq!(stored(&f), full_checksums(&f));
            rewrite_l4_port(&mut f, &h, side, new_port).unwrap();
            prop_assert_eq!(stored(&f), full_checksums(&f));
        }
    }
}
