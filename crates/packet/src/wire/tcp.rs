//! TCP header view: ports, sequence numbers, flags, checksum. Port setters
//! patch the checksum incrementally (what NAT rewrites); build with the raw
//! setters and finish with `fill_checksum_*`.

use core::fmt;
use core::ops::BitOr;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Field, be16, be32, need};
use crate::checksum;
use crate::{Error, Result};

/// TCP flag bits (the low byte of the offset/flags word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: Flags = Flags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Flags = Flags(0x02);
    /// Reset the connection.
    pub const RST: Flags = Flags(0x04);
    /// Push.
    pub const PSH: Flags = Flags(0x08);
    /// Acknowledgment number is valid.
    pub const ACK: Flags = Flags(0x10);
    /// Urgent pointer is valid.
    pub const URG: Flags = Flags(0x20);
    /// ECN echo.
    pub const ECE: Flags = Flags(0x40);
    /// Congestion window reduced.
    pub const CWR: Flags = Flags(0x80);

    /// True when every bit of `other` is set here.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// A read/write view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use super::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

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

    /// Ok when the buffer holds the header including options (data offset
    /// >= 5). `set_header_len` can void this.
    pub fn check_len(&self) -> Result<()> {
        let have = self.buffer.as_ref().len();
        need("tcp", HEADER_LEN, have)?;
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed {
                proto: "tcp",
                field: "data_offset",
                value: (hl / 4) as u32,
            });
        }
        need("tcp", hl, have)
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
    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }
    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }
    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }
    /// Flag bits.
    #[inline]
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }
    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WIN_SIZE])
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }
    /// Bytes after the header (the whole buffer is the segment: pass
    /// [`crate::Headers::l4_bytes`], which excludes Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    /// True when the checksum is right for an IPv4 pseudo header.
    pub fn verify_checksum_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let d = self.buffer.as_ref();
        checksum::combine(&[
            checksum::ipv4_pseudo_header(src, dst, 6, d.len() as u32),
            checksum::data(d),
        ]) == 0xffff
    }
    /// True when the checksum is right for an IPv6 pseudo header.
    pub fn verify_checksum_ipv6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let d = self.buffer.as_ref();
        checksum::combine(&[
            checksum::ipv6_pseudo_header(src, dst, 6, d.len() as u32),
            checksum::data(d),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port and patch the checksum incrementally.
    pub fn set_src_port(&mut self, v: u16) {
        let c = checksum::update16(self.checksum(), self.src_port(), v);
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
        self.set_checksum(c);
    }
    /// Set the destination port and patch the checksum incrementally.
    pub fn set_dst_port(&mut self, v: u16) {
        let c = checksum::update16(self.checksum(), self.dst_port(), v);
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
        self.set_checksum(c);
    }
    /// Set the sequence number (checksum not updated).
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the acknowledgment number (checksum not updated).
    pub fn set_ack_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the header length in bytes (a multiple of 4). Voids `check_len`.
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4;
    }
    /// Set the flag bits (checksum not updated).
    pub fn set_flags(&mut self, f: Flags) {
        self.buffer.as_mut()[field::FLAGS] = f.0
    }
    /// Set the window size (checksum not updated).
    pub fn set_window_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::WIN_SIZE].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the checksum field as is.
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Set the urgent pointer (checksum not updated).
    pub fn set_urgent_at(&mut self, v: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&v.to_be_bytes())
    }
    /// Compute the checksum over the whole buffer with an IPv4 pseudo header.
    pub fn fill_checksum_ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let c = !checksum::combine(&[
            checksum::ipv4_pseudo_header(src, dst, 6, d.len() as u32),
            checksum::data(d),
        ]);
        self.set_checksum(c);
    }
    /// Compute the checksum over the whole buffer with an IPv6 pseudo header.
    pub fn fill_checksum_ipv6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let c = !checksum::combine(&[
            checksum::ipv6_pseudo_header(src, dst, 6, d.len() as u32),
            checksum::data(d),
        ]);
        self.set_checksum(c);
    }
    /// Bytes after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TCP src={} dst={} seq={} ack={} flags=0x{:02x} len={}",
            self.src_port(),
            self.dst_port(),
            self.seq_number(),
            self.ack_number(),
            self.flags().0,
            self.payload().len()
        )
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    // Captured: 48896 -> 80 SYN seq 0x01234567 win 0x0123, 4-byte payload.
    static PACKET_BYTES: [u8; 24] = [
        0xbf, 0x00, 0x00, 0x50, 0x01, 0x23, 0x45, 0x67, 0x00, 0x00, 0x00, 0x00, //
        0x50, 0x02, 0x01, 0x23, 0x7a, 0x8d, 0x00, 0x00, //
        0xaa, 0x00, 0x00, 0xff,
    ];

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 48896);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x01234567);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.flags(), Flags::SYN);
        assert_eq!(p.window_len(), 0x0123);
        assert_eq!(p.checksum(), 0x7a8d);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.payload(), &[0xaa, 0x00, 0x00, 0xff]);
        assert!(p.verify_checksum_ipv4(SRC, DST));
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 24];
        let mut p = Packet::new_unchecked(&mut bytes);
        p.set_src_port(48896);
        p.set_dst_port(80);
        p.set_seq_number(0x01234567);
        p.set_ack_number(0);
        p.set_header_len(20);
        p.set_flags(Flags::SYN);
        p.set_window_len(0x0123);
        p.set_urgent_at(0);
        p.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        p.fill_checksum_ipv4(SRC, DST);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_port_setters_keep_checksum() {
        let mut bytes = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(65535);
        assert!(p.verify_checksum_ipv4(SRC, DST));
        let src6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        p.fill_checksum_ipv6(src6, dst6);
        assert!(p.verify_checksum_ipv6(src6, dst6));
        assert!(!p.verify_checksum_ipv4(SRC, DST));
    }

    #[test]
    fn test_bad_offset() {
        let mut bytes = PACKET_BYTES;
        bytes[12] = 0x40;
        assert!(matches!(
            Packet::new_checked(&bytes[..]),
            Err(Error::Malformed {
                field: "data_offset",
                ..
            })
        ));
        bytes[12] = 0x70; // 28-byte header in a 24-byte buffer
        assert!(matches!(
            Packet::new_checked(&bytes[..]),
            Err(Error::Truncated { need: 28, .. })
        ));
        assert!(Flags(0x12).contains(Flags::SYN | Flags::ACK));
    }
}
