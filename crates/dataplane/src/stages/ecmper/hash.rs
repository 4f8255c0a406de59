//! The ECMP-ER flow hash and the resilient mode's DSCP marker.
//!
//! The hash input is upstream's 9 bytes, big-endian: `srcAddr (4) ‖ protocol (1) ‖
//! dstPort (2) ‖ srcPort (2)` (ports 0 unless TCP or UDP; the destination IP is not hashed).
//! The CRC is zlib's CRC-32 (reflected 0x04C11DB7, init and xorout 0xFFFFFFFF). bmv2's
//! `hash(crc32, 0, 0xFFFF)` is `CRC mod 65535`: [`compat_hash`]. Resilient mode hashes the
//! same 9 bytes and takes the whole CRC modulo its bucket count, so the flows are the same
//! flows, only spread over more buckets.

use packet::parse::{Headers, L4Kind};

/// zlib's CRC-32 (`CRC-32/ISO-HDLC`).
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 (zlib) of `data` (check value: `b"123456789"` -> 0xCBF43926).
#[inline]
pub fn crc32(data: &[u8]) -> u32 {
    CRC32.checksum(data)
}

/// The 9 hashed bytes of a parsed IPv4 frame, or None when `hdr` is not IPv4 in `frame`.
/// Ports come from TCP, else UDP, else 0/0 (upstream reads them at a fixed offset; the
/// parser here honours IHL and gives later fragments no ports).
#[inline]
pub fn hash_input(frame: &[u8], hdr: &Headers) -> Option<[u8; 9]> {
    let src = hdr.ipv4_src(frame)?;
    let (sport, dport) = match hdr.l4 {
        L4Kind::Tcp | L4Kind::Udp => hdr.ports(frame).unwrap_or((0, 0)),
        _ => (0, 0),
    };
    Some(flow_bytes(src.to_bits(), hdr.ip_proto, sport, dport))
}

/// The 9 hashed bytes of a flow given by its fields.
#[inline]
pub fn flow_bytes(src: u32, proto: u8, sport: u16, dport: u16) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0..4].copy_from_slice(&src.to_be_bytes());
    b[4] = proto;
    b[5..7].copy_from_slice(&dport.to_be_bytes());
    b[7..9].copy_from_slice(&sport.to_be_bytes());
    b
}

/// bmv2's `hash(crc32, base 0, max 0xFFFF)`: `CRC mod 65535`.
#[inline]
pub fn compat_hash(crc: u32) -> u16 {
    (crc % 0xFFFF) as u16
}

/// The next-hop index compat mode computes for hash `h` and an `ipv4_lpm` (offset, count):
/// `(h & (count - 1)) + offset`, all 16-bit with wrap (so count 0 is the mask 0xFFFF).
#[inline]
pub fn compat_index(h: u16, offset: u16, count: u16) -> u16 {
    (h & count.wrapping_sub(1)).wrapping_add(offset)
}

/// Upstream's marker: the whole ToS byte equal to this selects `prv_nh`.
pub const TOS_RETRANSMITTED: u8 = 0x01;

/// Highest generation a resilient-mode marker can name (4 DSCP bits).
pub const MAX_MARK: u8 = 15;

/// The DSCP of a packet bounced to use previous generation `m` (1..=15): `(m << 2) | 0b11`,
/// in RFC 2474's pool 2 ("xxxx11", local use). The ECN bits are not part of it.
#[inline]
pub const fn marker_dscp(m: u8) -> u8 {
    ((m & 0x0f) << 2) | 0b11
}

/// The ToS byte `tos` with its DSCP set to the marker of generation `m`, ECN kept.
#[inline]
pub const fn mark_tos(tos: u8, m: u8) -> u8 {
    (marker_dscp(m) << 2) | (tos & 0b11)
}

/// The generation a ToS byte asks for: `m` when its DSCP is `(m << 2) | 0b11` with
/// m in 1..=15, else 0 (the current generation). The ECN bits are ignored.
#[inline]
pub const fn marker_of(tos: u8) -> u8 {
    let dscp = tos >> 2;
    if dscp & 0b11 == 0b11 { dscp >> 2 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vector() {
        let b = flow_bytes(0x0a00_0163, 6, 8081, 80);
        assert_eq!(b, [0x0a, 0x00, 0x01, 0x63, 0x06, 0x00, 0x50, 0x1f, 0x91]);
        assert_eq!(crc32(&b), 0xF29E_9E2C);
        assert_eq!(compat_hash(crc32(&b)), 37067);
        assert_eq!(compat_index(37067, 1, 8), 4);
        assert_eq!(compat_index(37067, 1, 1), 1);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn marker_round_trip_keeps_ecn() {
        for m in 1..=MAX_MARK {
            for ecn in 0..4u8 {
                let tos = mark_tos(ecn, m);
                assert_eq!(tos & 0b11, ecn);
                assert_eq!(marker_of(tos), m);
            }
        }
        // Upstream's marker (ECT(1), DSCP 0) and ordinary DSCPs are "current".
        for tos in [0x00, 0x01, 0x02, 0x03, 0xb8, 0x28, 0x04] {
            assert_eq!(marker_of(tos), 0, "tos {tos:#x}");
        }
        // DSCP 0b000011 is pool 2 but names generation 0: current.
        assert_eq!(marker_of(0b0000_1100), 0);
    }
}
