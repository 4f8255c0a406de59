//! Ethernet II frame view and MAC addresses.

use core::fmt;
use core::str::FromStr;

use super::{Field, be16, need};
use crate::{Error, Result};

enum_with_unknown! {
    /// EtherType values the switch knows by name; others are `Unknown`.
    pub enum EtherType(u16) {
        /// IPv4.
        Ipv4 = 0x0800,
        /// ARP.
        Arp = 0x0806,
        /// 802.1Q VLAN tag.
        Vlan = 0x8100,
        /// 802.1ad service tag (QinQ outer).
        QinQ = 0x88a8,
        /// IPv6.
        Ipv6 = 0x86dd,
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtherType::Unknown(n) => write!(f, "0x{n:04x}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A MAC address. Displays and parses as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    /// 00:00:00:00:00:00 (ARP's unknown target hardware address).
    pub const ZERO: EthernetAddress = EthernetAddress([0; 6]);

    /// Copy from a slice; `None` unless it is exactly 6 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<EthernetAddress> {
        b.try_into().ok().map(EthernetAddress)
    }

    /// The address bytes.
    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// All ones: flood.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (broadcast included): flood or deliver to a group, never learn.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast: a source address the switch may learn.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered bit set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(b: [u8; 6]) -> Self {
        EthernetAddress(b)
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for EthernetAddress {
    type Err = Error;

    /// Accepts six two-digit hex groups separated by `:` or `-`.
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or(Error::BadMacAddress)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::BadMacAddress);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| Error::BadMacAddress)?;
        }
        if parts.next().is_some() {
            return Err(Error::BadMacAddress);
        }
        Ok(EthernetAddress(out))
    }
}

/// A read/write view of an Ethernet II header and its payload.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

/// The ethernet view under the name the other modules use.
pub type Packet<T> = Frame<T>;

mod field {
    use super::Field;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checking its length (emission into a sized buffer).
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap a buffer after [`Frame::check_len`].
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ok when the buffer holds a whole header; after that no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        need("ethernet", HEADER_LEN, self.buffer.as_ref().len())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        EthernetAddress(a)
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        EthernetAddress(a)
    }

    /// The (outer) ethertype: a VLAN TPID on a tagged frame.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0)
    }

    /// Set the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0)
    }

    /// Set the (outer) ethertype.
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes())
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Frame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EthernetII src={} dst={} type={}",
            self.src_addr(),
            self.dst_addr(),
            self.ethertype()
        )
    }
}

/// The validated summary of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source MAC.
    pub src_addr: EthernetAddress,
    /// Destination MAC.
    pub dst_addr: EthernetAddress,
    /// Ethertype.
    pub ethertype: EtherType,
}

impl Repr {
    /// Read the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into a frame at least [`HEADER_LEN`] long.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static FRAME_BYTES: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x08, 0x00, // IPv4
        0xaa, 0x00, 0x00, 0xff, // payload
    ];

    fn repr() -> Repr {
        Repr {
            dst_addr: EthernetAddress([1, 2, 3, 4, 5, 6]),
            src_addr: EthernetAddress([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]),
            ethertype: EtherType::Ipv4,
        }
    }

    #[test]
    fn test_deconstruct() {
        let f = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(f.dst_addr(), EthernetAddress([1, 2, 3, 4, 5, 6]));
        assert_eq!(
            f.src_addr(),
            EthernetAddress([0x11, 0x12, 0x13, 0x14, 0x15, 0x16])
        );
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload(), &[0xaa, 0x00, 0x00, 0xff]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 18];
        let mut f = Frame::new_unchecked(&mut bytes);
        f.set_dst_addr(EthernetAddress([1, 2, 3, 4, 5, 6]));
        f.set_src_addr(EthernetAddress([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]));
        f.set_ethertype(EtherType::Ipv4);
        f.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        assert_eq!(&bytes[..], &FRAME_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let f = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&f).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; 18];
        let mut f = Frame::new_unchecked(&mut bytes);
        repr().emit(&mut f);
        f.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        assert_eq!(&bytes[..], &FRAME_BYTES[..]);
    }

    #[test]
    fn test_short_buffer_is_refused() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&FRAME_BYTES[..n]).unwrap_err(),
                Error::Truncated {
                    proto: "ethernet",
                    need: 14,
                    have: n
                }
            );
        }
    }

    #[test]
    fn test_ethertype_is_open() {
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
        assert_eq!(u16::from(EtherType::Unknown(0x88cc)), 0x88cc);
        assert_eq!(u16::from(EtherType::Ipv6), 0x86dd);
        assert_eq!(EtherType::Unknown(0x88cc).to_string(), "0x88cc");
    }

    #[test]
    fn test_mac_text_round_trip() {
        let m: EthernetAddress = "02:aB:00:ff:10:9c".parse().unwrap();
        assert_eq!(m, EthernetAddress([0x02, 0xab, 0x00, 0xff, 0x10, 0x9c]));
        assert_eq!(m.to_string(), "02:ab:00:ff:10:9c");
        assert_eq!("02-ab-00-ff-10-9c".parse::<EthernetAddress>().unwrap(), m);
        for bad in [
            "",
            "02:ab:00:ff:10",
            "02:ab:00:ff:10:9c:00",
            "2:ab:00:ff:10:9c",
            "02:ab:00:ff:10:zz",
            "+2:ab:00:ff:10:9c",
        ] {
            assert_eq!(
                bad.parse::<EthernetAddress>(),
                Err(Error::BadMacAddress),
                "{bad}"
            );
        }
        assert!(m.is_local() && m.is_unicast());
        assert!(
            EthernetAddress::BROADCAST.is_broadcast() && EthernetAddress::BROADCAST.is_multicast()
        );
        assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3]), None);
    }
}
