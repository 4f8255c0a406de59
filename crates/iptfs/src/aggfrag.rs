//! AGGFRAG payload wire format (RFC 9347 §2.2-2.3): header and data-block helpers.
//!
//! ```text
//! sub-type 0:  Sub-Type(1)=0 | Reserved(1) | BlockOffset(2) | DataBlocks…
//! sub-type 1:  Sub-Type(1)=1 | Reserved(6 bits) P E | BlockOffset(2) | LossEventRate(4)
//!              | RTT(22b) EchoDelay(21b) TransmitDelay(21b) | TVal(4) | TEcho(4) | DataBlocks…
//! ```

use crate::error::{Error, Result};

/// Length of the sub-type 0 header.
pub const HEADER_LEN: usize = 4;
/// Length of the sub-type 1 (congestion control) header.
pub const CC_HEADER_LEN: usize = 24;
/// Basic sub-type.
pub const SUBTYPE_BASIC: u8 = 0;
/// Congestion-control sub-type.
pub const SUBTYPE_CC: u8 = 1;
/// P flag (PLMTUD probe) in the sub-type 1 flags octet.
pub const FLAG_P: u8 = 0x02;
/// E flag (ECN CE marks counted as loss) in the sub-type 1 flags octet.
pub const FLAG_E: u8 = 0x01;

const RTT_MAX: u32 = 0x3F_FFFF;
const DELAY_MAX: u32 = 0x1F_FFFF;

/// Congestion-control information carried by sub-type 1 (RFC 9347 §6.1.2). Times in µs;
/// values saturate at their field width when emitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CcInfo {
    /// Inverse of the loss event rate; 0 = no loss seen.
    pub loss_event_rate: u32,
    /// Sender's RTT estimate (22 bits).
    pub rtt_us: u32,
    /// Time between receiving the echoed TVal and sending this packet (21 bits).
    pub echo_delay_us: u32,
    /// Sender's transmit delay (21 bits).
    pub tx_delay_us: u32,
    /// Sender's opaque timestamp.
    pub tval: u32,
    /// Last TVal received from the peer.
    pub techo: u32,
}

/// A parsed AGGFRAG header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Octets of DataBlocks before the next new block starts.
    pub block_offset: u16,
    /// Flags octet (P/E for sub-type 1; must be 0 for sub-type 0).
    pub flags: u8,
    /// Present for sub-type 1.
    pub cc: Option<CcInfo>,
}

impl Header {
    /// Header length on the wire.
    pub fn len(&self) -> usize {
        if self.cc.is_some() {
            CC_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses the header of `payload`. `strict_flags` drops any non-zero flags octet as Linux
    /// does; otherwise only the reserved bits (all of sub-type 0's, the top 6 of sub-type 1's)
    /// are ignored as RFC 9347 says.
    pub fn parse(payload: &[u8], strict_flags: bool) -> Result<Self> {
        if payload.len() < HEADER_LEN {
            return Err(Error::AggfragTruncated { len: payload.len() });
        }
        let subtype = payload[0];
        let flags = payload[1];
        let block_offset = u16::from_be_bytes([payload[2], payload[3]]);
        if subtype > SUBTYPE_CC {
            return Err(Error::BadSubtype { subtype });
        }
        if strict_flags && flags != 0 {
            return Err(Error::BadFlags { flags });
        }
        if subtype == SUBTYPE_BASIC {
            return Ok(Self {
                block_offset,
                flags: 0,
                cc: None,
            });
        }
        if payload.len() < CC_HEADER_LEN {
            return Err(Error::AggfragTruncated { len: payload.len() });
        }
        let be32 = |i: usize| {
            u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
        };
        let packed = u64::from_be_bytes([
            payload[8],
            payload[9],
            payload[10],
            payload[11],
            payload[12],
            payload[13],
            payload[14],
            payload[15],
        ]);
        let cc = CcInfo {
            loss_event_rate: be32(4),
            rtt_us: (packed >> 42) as u32 & RTT_MAX,
            echo_delay_us: (packed >> 21) as u32 & DELAY_MAX,
            tx_delay_us: packed as u32 & DELAY_MAX,
            tval: be32(16),
            techo: be32(20),
        };
        Ok(Self {
            block_offset,
            flags: flags & (FLAG_P | FLAG_E),
            cc: Some(cc),
        })
    }

    /// Writes the header at the start of `buf` (which must hold `self.len()` octets) and returns
    /// its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let n = self.len();
        if buf.len() < n {
            return Err(Error::BufferTooSmall {
                need: n,
                have: buf.len(),
            });
        }
        buf[2..4].copy_from_slice(&self.block_offset.to_be_bytes());
        match &self.cc {
            None => {
                buf[0] = SUBTYPE_BASIC;
                buf[1] = 0;
            }
            Some(cc) => {
                buf[0] = SUBTYPE_CC;
                buf[1] = self.flags & (FLAG_P | FLAG_E);
                buf[4..8].copy_from_slice(&cc.loss_event_rate.to_be_bytes());
                let packed = ((cc.rtt_us.min(RTT_MAX) as u64) << 42)
                    | ((cc.echo_delay_us.min(DELAY_MAX) as u64) << 21)
                    | cc.tx_delay_us.min(DELAY_MAX) as u64;
                buf[8..16].copy_from_slice(&packed.to_be_bytes());
                buf[16..20].copy_from_slice(&cc.tval.to_be_bytes());
                buf[20..24].copy_from_slice(&cc.techo.to_be_bytes());
            }
        }
        Ok(n)
    }
}

/// What the first octets of a data block say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Pad block: runs to the end of the payload.
    Pad,
    /// IPv4 or IPv6 packet of this total length.
    Packet(usize),
    /// Not enough octets to read the length yet (a runt); this many are needed in total.
    NeedMore(usize),
    /// Length field too small to be a packet of that version.
    BadLength(usize),
    /// First nibble is neither 0, 4 nor 6.
    Unknown(u8),
}

/// Octets needed before a block's length is known, given its first octet.
pub fn header_need(first: u8) -> usize {
    match first >> 4 {
        4 => 4,
        6 => 6,
        _ => 1,
    }
}

/// Classifies the block starting at `b[0]` (`b` non-empty).
pub fn block_kind(b: &[u8]) -> BlockKind {
    let Some(&first) = b.first() else {
        return BlockKind::NeedMore(1);
    };
    match first >> 4 {
        0 => BlockKind::Pad,
        4 => {
            if b.len() < 4 {
                return BlockKind::NeedMore(4);
            }
            let l = u16::from_be_bytes([b[2], b[3]]) as usize;
            if l < 20 {
                BlockKind::BadLength(l)
            } else {
                BlockKind::Packet(l)
            }
        }
        6 => {
            if b.len() < 6 {
                return BlockKind::NeedMore(6);
            }
            BlockKind::Packet(u16::from_be_bytes([b[4], b[5]]) as usize + 40)
        }
        v => BlockKind::Unknown(v),
    }
}

/// Length of an inner IP packet as its header states it, if `pkt` is a plausible IPv4/IPv6
/// packet whose buffer is at least that long.
pub fn inner_len(pkt: &[u8]) -> Option<usize> {
    match block_kind(pkt) {
        BlockKind::Packet(l) if l <= pkt.len() => Some(l),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_emit_basic() {
        let h = Header {
            block_offset: 2000,
            flags: 0,
            cc: None,
        };
        let mut b = [0xa5u8; 8];
        assert_eq!(h.emit(&mut b).unwrap(), 4);
        assert_eq!(&b[..4], &[0, 0, 0x07, 0xd0]);
        assert_eq!(Header::parse(&b, true).unwrap(), h);
    }

    #[test]
    fn test_parse_emit_cc() {
        let cc = CcInfo {
            loss_event_rate: 1000,
            rtt_us: 0x3F_FFFF,
            echo_delay_us: 12345,
            tx_delay_us: 0x1F_FFFF,
            tval: 0xdead_beef,
            techo: 7,
        };
        let h = Header {
            block_offset: 3,
            flags: FLAG_E,
            cc: Some(cc),
        };
        let mut b = [0xa5u8; 30];
        assert_eq!(h.emit(&mut b).unwrap(), 24);
        assert_eq!(b[0], 1);
        assert_eq!(Header::parse(&b, false).unwrap(), h);
        // Linux-strict receivers drop flagged packets.
        assert_eq!(
            Header::parse(&b, true),
            Err(Error::BadFlags { flags: FLAG_E })
        );
        // Saturation.
        let mut big = cc;
        big.rtt_us = u32::MAX;
        big.echo_delay_us = u32::MAX;
        Header {
            block_offset: 0,
            flags: 0,
            cc: Some(big),
        }
        .emit(&mut b)
        .unwrap();
        let p = Header::parse(&b, true).unwrap().cc.unwrap();
        assert_eq!((p.rtt_us, p.echo_delay_us), (0x3F_FFFF, 0x1F_FFFF));
    }

    #[test]
    fn test_malformed_headers() {
        assert_eq!(
            Header::parse(&[0, 0, 0], true),
            Err(Error::AggfragTruncated { len: 3 })
        );
        assert_eq!(
            Header::parse(&[2, 0, 0, 0], true),
            Err(Error::BadSubtype { subtype: 2 })
        );
        assert_eq!(
            Header::parse(&[0, 1, 0, 0], true),
            Err(Error::BadFlags { flags: 1 })
        );
        assert_eq!(Header::parse(&[0, 1, 0, 0], false).unwrap().flags, 0);
        assert_eq!(
            Header::parse(&[1, 0, 0, 0, 0], true),
            Err(Error::AggfragTruncated { len: 5 })
        );
    }

    #[test]
    fn test_block_kind() {
        assert_eq!(block_kind(&[0x00, 1, 2]), BlockKind::Pad);
        assert_eq!(block_kind(&[0x45, 0, 0]), BlockKind::NeedMore(4));
        assert_eq!(block_kind(&[0x45, 0, 0, 28]), BlockKind::Packet(28));
        assert_eq!(block_kind(&[0x45, 0, 0, 19]), BlockKind::BadLength(19));
        assert_eq!(block_kind(&[0x60, 0, 0, 0, 0]), BlockKind::NeedMore(6));
        assert_eq!(block_kind(&[0x60, 0, 0, 0, 0, 8]), BlockKind::Packet(48));
        assert_eq!(block_kind(&[0x50]), BlockKind::Unknown(5));
    }
}
