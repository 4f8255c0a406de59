//! Template frames for the blaster: Ethernet / IPv4 / UDP with valid checksums.

use std::net::Ipv4Addr;

use crate::{Error, Result};

/// Smallest Ethernet frame without FCS (64 bytes on the wire with it).
pub const MIN_FRAME_LEN: usize = 60;
/// Ethernet + IPv4 + UDP header bytes.
const HEADERS_LEN: usize = 14 + 20 + 8;

/// One UDP flow to generate; `frame_len` excludes the 4-byte FCS (60 = a "64-byte" frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// Ethernet source (the generator interface's MAC).
    pub src_mac: [u8; 6],
    /// Ethernet destination (the next hop: the dut's MAC, or the sink's through a bridge).
    pub dst_mac: [u8; 6],
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// Frame length without FCS, at least [`MIN_FRAME_LEN`].
    pub frame_len: usize,
}

impl FlowSpec {
    /// A 60-byte (64 on the wire) UDP flow from port 1024 to port 9 (discard).
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: Ipv4Addr, dst_ip: Ipv4Addr) -> Self {
        FlowSpec {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            src_port: 1024,
            dst_port: 9,
            frame_len: MIN_FRAME_LEN,
        }
    }
}

/// Build the frame for `flow`: Ethernet II, IPv4 (TTL 64, header checksum), UDP (checksum),
/// zero payload padding up to `frame_len`.
pub fn build_udp_frame(flow: &FlowSpec) -> Result<Vec<u8>> {
    // The kernel's live-frames mode copies the frame into a page with headroom; 1500 bytes of
    // IP keeps it a plain non-jumbo frame.
    if !(MIN_FRAME_LEN..=1514).contains(&flow.frame_len) {
        return Err(Error::Invalid {
            what: "frame length",
            detail: format!("{} (must be 60..=1514)", flow.frame_len),
        });
    }
    let payload = vec![0u8; flow.frame_len - HEADERS_LEN];
    let builder = etherparse::PacketBuilder::ethernet2(flow.src_mac, flow.dst_mac)
        .ipv4(flow.src_ip.octets(), flow.dst_ip.octets(), 64)
        .udp(flow.src_port, flow.dst_port);
    let mut out = Vec::with_capacity(flow.frame_len);
    builder
        .write(&mut out, &payload)
        .map_err(|e| Error::Invalid {
            what: "frame",
            detail: e.to_string(),
        })?;
    Ok(out)
}

/// `n` frames of the same flow with consecutive UDP source ports, so hashing dataplanes (RSS,
/// flow caches) see `n` distinct 5-tuples.
pub fn build_flows(flow: &FlowSpec, n: u16) -> Result<Vec<Vec<u8>>> {
    (0..n.max(1))
        .map(|i| {
            build_udp_frame(&FlowSpec {
                src_port: flow.src_port.wrapping_add(i),
                ..flow.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn spec() -> FlowSpec {
        FlowSpec::new(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(10, 10, 1, 1),
            Ipv4Addr::new(10, 10, 2, 2),
        )
    }

    #[test]
    fn template_parses_back_with_valid_checksums() {
        let f = build_udp_frame(&spec()).unwrap();
        assert_eq!(f.len(), 60);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("no ethernet")
        };
        assert_eq!(eth.source(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth.destination(), [2, 0, 0, 0, 0, 2]);
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("no ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.source, [10, 10, 1, 1]);
        assert_eq!(h.destination, [10, 10, 2, 2]);
        assert_eq!(h.time_to_live, 64);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_ne!(h.header_checksum, 0);
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("no udp")
        };
        let uh = udp.to_header();
        assert_eq!((uh.source_port, uh.destination_port), (1024, 9));
        assert_eq!(uh.length, 26);
        assert_eq!(
            uh.checksum,
            uh.calc_checksum_ipv4(&h, udp.payload()).unwrap()
        );
        assert_ne!(uh.checksum, 0);
    }

    #[test]
    fn ipv4_checksum_independently_verified() {
        // Ones'-complement sum over the IPv4 header including its checksum must be 0xffff.
        let f = build_udp_frame(&spec()).unwrap();
        let ip = &f[14..34];
        let mut sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn larger_frames_and_bounds() {
        let f = build_udp_frame(&FlowSpec {
            frame_len: 1514,
            ..spec()
        })
        .unwrap();
        assert_eq!(f.len(), 1514);
        for bad in [0, 59, 1515] {
            assert!(
                build_udp_frame(&FlowSpec {
                    frame_len: bad,
                    ..spec()
                })
                .is_err()
            );
        }
    }

    #[test]
    fn flows_vary_source_port() {
        let fs = build_flows(&spec(), 4).unwrap();
        assert_eq!(fs.len(), 4);
        let ports: Vec<u16> = fs
            .iter()
            .map(|f| u16::from_be_bytes([f[34], f[35]]))
            .collect();
        assert_eq!(ports, vec![1024, 1025, 1026, 1027]);
    }
}
