//! UDP header view. A checksum of 0 means "none" over IPv4 and stays 0 when a
//! port setter patches it; a computed 0 is sent as 0xffff (RFC 768).

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Field, be16, need};
use crate::checksum;
use crate::{Error, Result};

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use super::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;

    pub const fn payload(length: u16) -> Field {
        CHECKSUM.end..length as usize
    }
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

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

    /// Ok when the buffer holds the header and the length field is between 8
    /// and the buffer length. `set_len` can void this.
    pub fn check_len(&self) -> Result<()> {
        let have = self.buffer.as_ref().len();
        need("udp", HEADER_LEN, have)?;
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed {
                proto: "udp",
                field: "length",
                value: len as u32,
            });
        }
        need("udp", len, have)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }
    /// Length field (header and payload).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }
    /// Checksum field (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// Payload per the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::payload(self.len())]
    }
    /// True when the checksum is right for an IPv4 pseudo header, or absent (0).
    pub fn verify_checksum_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || self.sum(checksum::ipv4_pseudo_header(
                src,
                dst,
                17,
                u32::from(self.len()),
            )) == 0xffff
    }
    /// True when the checksum is right for an IPv6 pseudo header (mandatory there).
    pub fn verify_checksum_ipv6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.sum(checksum::ipv6_pseudo_header(
            src,
            dst,
            17,
            u32::from(self.len()),
        )) == 0xffff
    }
    fn sum(&self, pseudo: u16) -> u16 {
        let d = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::combine(&[pseudo, checksum::data(d)])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port and patch a present checksum incrementally.
    pub fn set_src_port(&mut self, v: u16) {
        let old = self.src_port();
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
        self.patch(old, v);
    }
    /// Set the destination port and patch a present checksum incrementally.
    pub fn set_dst_port(&mut self, v: u16) {
        let old = self.dst_port();
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
        self.patch(old, v);
    }
    fn patch(&mut self, old: u16, new: u16) {
        let c = self.checksum();
        if c != 0 {
            let c = checksum::update16(c, old, new);
            self.set_checksum(if c == 0 { 0xffff } else { c });
        }
    }
    /// Set the length field. Voids `check_len`.
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the checksum field as is (0 = none).
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Compute the checksum with an IPv4 pseudo header.
    pub fn fill_checksum_ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = !self.sum(checksum::ipv4_pseudo_header(
            src,
            dst,
            17,
            u32::from(self.len()),
        ));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
    /// Compute the checksum with an IPv6 pseudo header.
    pub fn fill_checksum_ipv6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = !self.sum(checksum::ipv6_pseudo_header(
            src,
            dst,
            17,
            u32::from(self.len()),
        ));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
    /// Payload per the length field, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        &mut self.buffer.as_mut()[field::payload(len)]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UDP src={} dst={} len={}",
            self.src_port(),
            self.dst_port(),
            self.payload().len()
        )
    }
}

/// A validated UDP header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Read an IPv4 datagram, refusing a wrong (present) checksum.
    pub fn parse_ipv4<T: AsRef<[u8]> + ?Sized>(
        p: &Packet<&'a T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Repr<'a>> {
        p.check_len()?;
        if !p.verify_checksum_ipv4(src, dst) {
            return Err(Error::Malformed {
                proto: "udp",
                field: "checksum",
                value: u32::from(p.checksum()),
            });
        }
        let len = p.len();
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload: &p.buffer.as_ref()[field::payload(len)],
        })
    }

    /// Bytes this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Write header, payload and checksum into a buffer of [`Repr::buffer_len`] bytes.
    pub fn emit_ipv4<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        p.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        p.buffer.as_mut()[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        p.set_len(self.buffer_len() as u16);
        p.payload_mut().copy_from_slice(self.payload);
        p.fill_checksum_ipv4(src, dst);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    // smoltcp's captured datagram: 48896 -> 53, checksum 0x124d.
    static PACKET_BYTES: [u8; 12] = [
        0xbf, 0x00, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x4d, 0xaa, 0x00, 0x00, 0xff,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [0xaa, 0x00, 0x00, 0xff];

    fn repr() -> Repr<'static> {
        Repr {
            src_port: 48896,
            dst_port: 53,
            payload: &PAYLOAD_BYTES,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 48896);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert_eq!(p.checksum(), 0x124d);
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
        assert!(p.verify_checksum_ipv4(SRC, DST));
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 12];
        let mut p = Packet::new_unchecked(&mut bytes);
        p.set_src_port(48896);
        p.set_dst_port(53);
        p.set_len(12);
        p.set_checksum(0xffff);
        p.payload_mut().copy_from_slice(&PAYLOAD_BYTES[..]);
        p.fill_checksum_ipv4(SRC, DST);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse_ipv4(&p, SRC, DST).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; 12];
        repr().emit_ipv4(&mut Packet::new_unchecked(&mut bytes), SRC, DST);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_zero_checksum_means_none_and_stays_zero() {
        let mut bytes = PACKET_BYTES;
        bytes[6] = 0;
        bytes[7] = 0;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        assert!(p.verify_checksum_ipv4(SRC, DST));
        p.set_dst_port(5353);
        assert_eq!(p.checksum(), 0);
        assert!(!p.verify_checksum_ipv6("::1".parse().unwrap(), "::2".parse().unwrap()));
    }

    #[test]
    fn test_port_setters_keep_checksum() {
        let mut bytes = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        assert!(p.verify_checksum_ipv4(SRC, DST));
    }

    #[test]
    fn test_impossible_len() {
        let mut bytes = PACKET_BYTES;
        bytes[5] = 4;
        assert!(matches!(
            Packet::new_checked(&bytes[..]),
            Err(Error::Malformed {
                field: "length",
                value: 4,
                ..
            })
        ));
        bytes[5] = 13;
        assert!(matches!(
            Packet::new_checked(&bytes[..]),
            Err(Error::Truncated {
                need: 13,
                have: 12,
                ..
            })
        ));
    }
}
