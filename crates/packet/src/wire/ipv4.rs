//! IPv4 header view. The address and TTL setters patch the header checksum
//! incrementally (RFC 1624) because those are what a forwarding stage rewrites;
//! the other setters leave it alone, so construction ends with
//! [`Packet::fill_checksum`].

use core::fmt;
use std::net::Ipv4Addr;

use super::{Field, IpProtocol, be16, be32, need};
use crate::checksum;
use crate::{Error, Result};

/// A read/write view of an IPv4 packet (header and payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use super::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the buffer holds the header (IHL*4 >= 20 bytes) and the whole
    /// packet per the total length (>= IHL*4). After that no accessor panics.
    /// `set_header_len` and `set_total_len` can void this.
    pub fn check_len(&self) -> Result<()> {
        let have = self.buffer.as_ref().len();
        need("ipv4", HEADER_LEN, have)?;
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed {
                proto: "ipv4",
                field: "ihl",
                value: (hl / 4) as u32,
            });
        }
        need("ipv4", hl, have)?;
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(Error::Malformed {
                proto: "ipv4",
                field: "total_len",
                value: total as u32,
            });
        }
        need("ipv4", total, have)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL*4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// DSCP (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }
    /// ECN (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }
    /// Total length (header and payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }
    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLG_OFF]) & 0x4000 != 0
    }
    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLG_OFF]) & 0x2000 != 0
    }
    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(&self.buffer.as_ref()[field::FLG_OFF]) & 0x1fff) << 3
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }
    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(&self.buffer.as_ref()[field::SRC_ADDR]))
    }
    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(&self.buffer.as_ref()[field::DST_ADDR]))
    }
    /// True when the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
    /// The payload up to the total length (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version and header length (bytes, a multiple of 4). Voids `check_len`.
    pub fn set_version_and_header_len(&mut self, version: u8, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = (version << 4) | ((header_len / 4) as u8 & 0x0f);
    }
    /// Set DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 0x03);
    }
    /// Set the total length. Voids `check_len`.
    pub fn set_total_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the identification.
    pub fn set_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes())
    }
    /// Set flags and fragment offset (bytes, a multiple of 8).
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v =
            (u16::from(dont_frag) << 14) | (u16::from(more_frags) << 13) | ((offset >> 3) & 0x1fff);
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the protocol (checksum not updated).
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(v)
    }
    /// Set the header checksum field as is.
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the TTL and patch the header checksum incrementally.
    pub fn set_ttl(&mut self, ttl: u8) {
        let d = self.buffer.as_ref();
        let proto = u16::from(d[field::PROTOCOL]);
        let old = (u16::from(d[field::TTL]) << 8) | proto;
        let new = (u16::from(ttl) << 8) | proto;
        let c = checksum::update16(self.checksum(), old, new);
        self.buffer.as_mut()[field::TTL] = ttl;
        self.set_checksum(c);
    }
    /// Set the source address and patch the header checksum incrementally.
    /// (A TCP/UDP checksum covers it too: see [`checksum::rewrite_ipv4_addr`].)
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        let old = be32(&self.buffer.as_ref()[field::SRC_ADDR]);
        let c = checksum::update32(self.checksum(), old, u32::from(a));
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
        self.set_checksum(c);
    }
    /// Set the destination address and patch the header checksum incrementally.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        let old = be32(&self.buffer.as_ref()[field::DST_ADDR]);
        let c = checksum::update32(self.checksum(), old, u32::from(a));
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
        self.set_checksum(c);
    }
    /// Compute the header checksum from scratch and store it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::data(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }
    /// The payload up to the total length, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 src={} dst={} proto={} ttl={} len={}",
            self.src_addr(),
            self.dst_addr(),
            self.protocol(),
            self.ttl(),
            self.total_len()
        )
    }
}

/// A validated IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
}

impl Repr {
    /// Read a packet, refusing a wrong version or a bad header checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 4 {
            return Err(Error::Malformed {
                proto: "ipv4",
                field: "version",
                value: u32::from(p.version()),
            });
        }
        if !p.verify_checksum() {
            return Err(Error::Malformed {
                proto: "ipv4",
                field: "checksum",
                value: u32::from(p.checksum()),
            });
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
        })
    }

    /// Header bytes this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write a 20-byte header (DF clear, ident 0) with a correct checksum into
    /// a buffer at least [`HEADER_LEN`] long; the payload is the caller's.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_header_len(4, HEADER_LEN);
        p.set_dscp_ecn(0, 0);
        p.set_total_len((HEADER_LEN + self.payload_len) as u16);
        p.set_ident(0);
        p.set_flags_and_frag_offset(false, false, 0);
        p.buffer.as_mut()[field::TTL] = self.ttl;
        p.set_protocol(self.protocol);
        p.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&self.src_addr.octets());
        p.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&self.dst_addr.octets());
        p.fill_checksum();
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Captured: UDP 10.0.0.1 -> 10.0.0.2, ttl 64, 4-byte payload.
    static PACKET_BYTES: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x66, 0xd3, // ..checksum
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // src dst
        0xaa, 0x00, 0x00, 0xff, // payload
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::Udp,
            payload_len: 4,
            ttl: 64,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0);
        assert!(!p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.checksum(), 0x66d3);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xaa, 0x00, 0x00, 0xff]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 24];
        let mut p = Packet::new_unchecked(&mut bytes);
        p.set_version_and_header_len(4, 20);
        p.set_dscp_ecn(0, 0);
        p.set_total_len(24);
        p.set_ident(0);
        p.set_flags_and_frag_offset(false, false, 0);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Udp);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; 24];
        let mut p = Packet::new_unchecked(&mut bytes);
        repr().emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_checksum_keeping_setters_match_fill() {
        let mut bytes = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_ttl(1);
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 200));
        p.set_dst_addr(Ipv4Addr::new(255, 255, 255, 255));
        assert!(p.verify_checksum());
        let kept = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), kept);
    }

    #[test]
    fn test_bad_lengths() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::Malformed {
                proto: "ipv4",
                field: "ihl",
                value: 4
            }
        );
        let mut bytes = PACKET_BYTES;
        bytes[3] = 19;
        assert!(matches!(
            Packet::new_checked(&bytes[..]),
            Err(Error::Malformed {
                field: "total_len",
                ..
            })
        ));
        assert!(matches!(
            Packet::new_checked(&PACKET_BYTES[..23]),
            Err(Error::Truncated { need: 24, .. })
        ));
        // Padding after total length is not payload.
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 4);
        let mut bytes = PACKET_BYTES;
        bytes[11] ^= 1;
        assert!(matches!(
            Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()),
            Err(Error::Malformed {
                field: "checksum",
                ..
            })
        ));
    }
}
