//! Wire views in the smoltcp style: `Packet<T: AsRef<[u8]>>` over a byte
//! buffer, a private `field` module of byte ranges, getters, and setters under
//! `AsMut<[u8]>`.
//!
//! The length contract: once `check_len()` returned `Ok` (which
//! `new_checked` does), no accessor panics. Untrusted input must go through
//! `new_checked`; emission into a buffer you sized yourself may use
//! `new_unchecked` (a reused buffer may hold anything and fail the check).
//! The views take the layer's bytes: slice the frame at the offsets in
//! [`crate::Headers`] (for example `&mut frame[h.l3_off as usize..]`).

pub mod arp;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use ethernet::{EtherType, EthernetAddress};

/// A byte range of a header field.
pub(crate) type Field = core::ops::Range<usize>;

/// Read a big-endian u16 from a 2-byte field.
#[inline(always)]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Read a big-endian u32 from a 4-byte field.
#[inline(always)]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Length check shared by the views.
#[inline(always)]
pub(crate) fn need(proto: &'static str, need: usize, have: usize) -> crate::Result<()> {
    if have < need {
        Err(crate::Error::Truncated { proto, need, have })
    } else {
        Ok(())
    }
}

enum_with_unknown! {
    /// IP protocol / IPv6 next-header numbers.
    pub enum IpProtocol(u8) {
        /// IPv6 hop-by-hop options.
        HopByHop = 0,
        /// ICMP.
        Icmp = 1,
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
        /// IPv6 routing header.
        Ipv6Route = 43,
        /// IPv6 fragment header.
        Ipv6Frag = 44,
        /// ICMPv6.
        Icmpv6 = 58,
        /// IPv6 "no next header".
        Ipv6NoNxt = 59,
        /// IPv6 destination options.
        Ipv6Opts = 60,
    }
}

impl core::fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IpProtocol::Unknown(n) => write!(f, "0x{n:02x}"),
            other => write!(f, "{other:?}"),
        }
    }
}
