//! ICMP and ICMPv6 header view (same layout: type, code, checksum, then the
//! rest of the header). The view needs only the 4 fixed bytes, like
//! [`crate::parse`]; echo fields return `None` when the message is shorter.

use core::fmt;
use std::net::Ipv6Addr;

use super::{Field, be16, need};
use crate::Result;
use crate::checksum;

enum_with_unknown! {
    /// ICMPv4 message types the switch handles by name.
    pub enum Message(u8) {
        /// Echo reply.
        EchoReply = 0,
        /// Destination unreachable.
        DstUnreachable = 3,
        /// Redirect.
        Redirect = 5,
        /// Echo request.
        EchoRequest = 8,
        /// Time exceeded (TTL expired in transit: code 0).
        TimeExceeded = 11,
        /// Parameter problem.
        ParamProblem = 12,
    }
}

enum_with_unknown! {
    /// ICMPv6 message types the switch handles by name.
    pub enum Message6(u8) {
        /// Destination unreachable.
        DstUnreachable = 1,
        /// Packet too big.
        PktTooBig = 2,
        /// Time exceeded.
        TimeExceeded = 3,
        /// Echo request.
        EchoRequest = 128,
        /// Echo reply.
        EchoReply = 129,
        /// Neighbor solicitation.
        NeighborSolicit = 135,
        /// Neighbor advertisement.
        NeighborAdvert = 136,
    }
}

/// A read/write view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use super::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
}

/// Length of the fixed part every ICMP message has.
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

    /// Ok when the buffer holds type, code and checksum.
    pub fn check_len(&self) -> Result<()> {
        need("icmp", HEADER_LEN, self.buffer.as_ref().len())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Raw type byte (see [`Message`] / [`Message6`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    /// Type as an ICMPv4 message.
    #[inline]
    pub fn message(&self) -> Message {
        Message::from(self.msg_type())
    }
    /// Type as an ICMPv6 message.
    #[inline]
    pub fn message6(&self) -> Message6 {
        Message6::from(self.msg_type())
    }
    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// Echo identifier, when the message is long enough to have one.
    #[inline]
    pub fn echo_ident(&self) -> Option<u16> {
        self.buffer.as_ref().get(field::ECHO_IDENT).map(be16)
    }
    /// Echo sequence number, when the message is long enough to have one.
    #[inline]
    pub fn echo_seq_no(&self) -> Option<u16> {
        self.buffer.as_ref().get(field::ECHO_SEQNO).map(be16)
    }
    /// Bytes after the fixed 4-byte part (rest of header and data).
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// True when the ICMPv4 checksum (over the whole message) is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
    /// True when the ICMPv6 checksum (with pseudo header) is right.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let d = self.buffer.as_ref();
        checksum::combine(&[
            checksum::ipv6_pseudo_header(src, dst, 58, d.len() as u32),
            checksum::data(d),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the type byte (checksum not updated).
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v
    }
    /// Set the code (checksum not updated).
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v
    }
    /// Set the checksum field as is.
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Set echo identifier and sequence number; false (nothing written) when
    /// the message is shorter than 8 bytes.
    #[must_use]
    pub fn set_echo(&mut self, ident: u16, seq_no: u16) -> bool {
        let d = self.buffer.as_mut();
        if d.len() < field::ECHO_SEQNO.end {
            return false;
        }
        d[field::ECHO_IDENT].copy_from_slice(&ident.to_be_bytes());
        d[field::ECHO_SEQNO].copy_from_slice(&seq_no.to_be_bytes());
        true
    }
    /// Compute the ICMPv4 checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::data(self.buffer.as_ref());
        self.set_checksum(c);
    }
    /// Compute the ICMPv6 checksum with a pseudo header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let c = !checksum::combine(&[
            checksum::ipv6_pseudo_header(src, dst, 58, d.len() as u32),
            checksum::data(d),
        ]);
        self.set_checksum(c);
    }
    /// Bytes after the fixed part, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ICMP type={} code={} len={}",
            self.msg_type(),
            self.code(),
            self.buffer.as_ref().len()
        )
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Captured: echo request id 0x1234 seq 1, payload "abcd".
    static PACKET_BYTES: [u8; 12] = [
        0x08, 0x00, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64,
    ];

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.message(), Message::EchoRequest);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x2104);
        assert_eq!(p.echo_ident(), Some(0x1234));
        assert_eq!(p.echo_seq_no(), Some(1));
        assert_eq!(&p.body()[4..], b"abcd");
        assert!(p.verify_checksum());
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 12];
        let mut p = Packet::new_unchecked(&mut bytes);
        p.set_msg_type(u8::from(Message::EchoRequest));
        p.set_code(0);
        assert!(p.set_echo(0x1234, 1));
        p.body_mut()[4..].copy_from_slice(b"abcd");
        p.fill_checksum();
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_short_message_has_no_echo_fields() {
        let p = Packet::new_checked(&PACKET_BYTES[..6]).unwrap();
        assert_eq!(p.echo_ident(), Some(0x1234));
        assert_eq!(p.echo_seq_no(), None);
        let mut short = PACKET_BYTES[..7].to_vec();
        assert!(!Packet::new_unchecked(&mut short[..]).set_echo(1, 2));
        assert_eq!(&short[..], &PACKET_BYTES[..7]);
        assert!(Packet::new_checked(&PACKET_BYTES[..3]).is_err());
        assert_eq!(Message::from(42), Message::Unknown(42));
    }

    #[test]
    fn test_icmpv6_checksum() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap());
        let mut bytes = PACKET_BYTES;
        bytes[0] = u8::from(Message6::EchoRequest);
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.fill_checksum_v6(s, d);
        assert!(p.verify_checksum_v6(s, d));
        assert_eq!(p.message6(), Message6::EchoRequest);
        assert!(!p.verify_checksum());
    }
}
