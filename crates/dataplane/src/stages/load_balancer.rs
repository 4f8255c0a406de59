//! `load_balancer`: p4containerflow's virtual-IP load balancer and client SNAT
//! (`t2na_load_balancer.p4`), as two tables:
//!
//! - `node_selector`: key `hdr.ipv4.dst_addr` (exact), action `set_rewrite_dst(new_dst:32)`,
//!   const default `NoAction`, size 1024, implemented by an action selector (CRC16 hash, FAIR
//!   mode, max group size 4, 1 group, action profile size 4) over the selector fields
//!   src IP, dst IP, protocol, TCP src port, TCP dst port. An entry points the VIP at a group;
//!   each member rewrites the destination to one backend.
//! - `client_snat`: key `hdr.tcp.src_port` (exact), action `set_rewrite_src(new_src:32)`,
//!   const default `NoAction`, size 1024: replies from the service port are re-sourced to the
//!   VIP so the client sees the address it connected to.
//!
//! Control flow, as upstream: IPv4 only (anything else passes through untouched); apply
//! `node_selector`; if the packet was not load-balanced and it is TCP, apply `client_snat`.
//! Rewrites update the IPv4 header checksum and the TCP/UDP checksum incrementally (upstream
//! recomputes them in the deparser; the result is the same for a packet that arrived with
//! correct checksums). Upstream updates only TCP's; a UDP packet to the VIP gets a correct
//! UDP checksum here too. A packet with TTL 0 is left to `forward`, which drops it.
//!
//! The selector hash is the BMv2/Tofino `crc16`, i.e. CRC-16/ARC (poly 0x8005 reflected,
//! init 0, no final xor), computed with the `crc` crate over the 13 bytes
//! src IP, dst IP, protocol, TCP src port, TCP dst port (network order). For a packet that is
//! not TCP the port bytes are 0 (the TCP header is invalid, as in P4). FAIR picks member
//! `hash % members` in the group's member order. It is computed only when a group has more
//! than one member. Beware a property of this hash: the low two bits of CRC-16/ARC depend on
//! source-port bits 0..=10 only through their parity, so flows whose source ports are
//! consecutive (within one 2048-port block) reach only two of four members; randomized
//! ephemeral ports (Linux's default) spread evenly. Upstream (BMv2 `hash % size`) behaves the
//! same; it is kept for compatibility.
//!
//! Options (`[stage.load_balancer]`): `service_port` (default 8080), the TCP port whose
//! `client_snat` entry `/deleteClientSnat` removes (upstream's `service_port`).

use std::sync::Arc;

use packet::PacketBuf;
use packet::checksum::{Side, rewrite_ipv4_addr};
use packet::parse::{Headers, L3Kind, L4Kind};
use tables::{
    ActionCall, ActionId, ActionSchema, KeyField, Lookup, ParamSchema, SelectorMode,
    SelectorSchema, Table, TableSchema, TableVersion,
};

use crate::meta::{Flow, Meta};
use crate::stage::Stage;

/// Stage name in the pipeline config.
pub const STAGE: &str = "load_balancer";
/// Table names, exactly as upstream.
pub const NODE_SELECTOR: &str = "node_selector";
pub const CLIENT_SNAT: &str = "client_snat";
/// Key field names as in the P4 source.
pub const NODE_SELECTOR_KEY: &str = "hdr.ipv4.dst_addr";
pub const CLIENT_SNAT_KEY: &str = "hdr.tcp.src_port";
/// Action names, exactly as upstream.
pub const SET_REWRITE_DST: &str = "set_rewrite_dst";
pub const SET_REWRITE_SRC: &str = "set_rewrite_src";
pub const NO_ACTION: &str = "NoAction";
/// Parameter names of the two actions.
pub const NEW_DST: &str = "new_dst";
pub const NEW_SRC: &str = "new_src";
/// The selector's hashed fields, in hash order.
pub const SELECTOR_FIELDS: [&str; 5] = [
    "hdr.ipv4.src_addr",
    "hdr.ipv4.dst_addr",
    "hdr.ipv4.protocol",
    "hdr.tcp.src_port",
    "hdr.tcp.dst_port",
];
/// Upstream's `service_port`.
pub const DEFAULT_SERVICE_PORT: u16 = 8080;

const A_REWRITE: ActionId = ActionId(0);

/// The BMv2/Tofino `crc16` (CRC-16/ARC).
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// CRC-16/ARC of `data` (check value: `b"123456789"` -> 0xBB3D).
pub fn crc16(data: &[u8]) -> u16 {
    CRC16.checksum(data)
}

/// The selector hash of a parsed IPv4 frame: [`crc16`] over src IP, dst IP, protocol,
/// TCP src port, TCP dst port (ports 0 unless TCP). None when `hdr` is not IPv4 in `frame`.
pub fn selector_hash(frame: &[u8], hdr: &Headers) -> Option<u16> {
    let src = hdr.ipv4_src(frame)?;
    let dst = hdr.ipv4_dst(frame)?;
    let (sport, dport) = if hdr.l4 == L4Kind::Tcp {
        hdr.ports(frame).unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let mut b = [0u8; 13];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    b[8] = hdr.ip_proto;
    b[9..11].copy_from_slice(&sport.to_be_bytes());
    b[11..13].copy_from_slice(&dport.to_be_bytes());
    Some(crc16(&b))
}

/// Options of the stage (`[stage.load_balancer]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancerConfig {
    /// The service's TCP port: the `client_snat` key `/deleteClientSnat` deletes.
    pub service_port: u16,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        LoadBalancerConfig {
            service_port: DEFAULT_SERVICE_PORT,
        }
    }
}

impl LoadBalancerConfig {
    /// Reads the stage's options table (absent: defaults); the error is serde's message.
    pub fn from_options(opts: Option<&toml::Value>) -> Result<Self, String> {
        match opts {
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string()),
            None => Ok(Self::default()),
        }
    }

    /// The options a built switch was configured with (defaults when absent; they were
    /// checked when the switch was assembled).
    pub fn of_switch(sw: &crate::Switch) -> Self {
        Self::from_options(sw.stage_options.get(STAGE)).unwrap_or_default()
    }
}

/// The schema of `node_selector` (its selector: [`node_selector_selector`]).
pub fn node_selector_schema() -> TableSchema {
    TableSchema {
        name: NODE_SELECTOR.into(),
        keys: vec![KeyField::exact(NODE_SELECTOR_KEY, 32)],
        actions: vec![
            ActionSchema::new(SET_REWRITE_DST, vec![ParamSchema::new(NEW_DST, 32)]),
            ActionSchema::new(NO_ACTION, vec![]),
        ],
        default_action: ActionCall::new(ActionId(1), []),
        const_default: true,
        size: 1024,
    }
}

/// `node_selector`'s action selector: CRC16, FAIR, max group size 4, 1 group, profile size 4.
pub fn node_selector_selector() -> SelectorSchema {
    SelectorSchema {
        fields: SELECTOR_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        hash: "crc16".into(),
        mode: SelectorMode::Fair,
        size: 4,
        max_groups: 1,
        max_group_size: 4,
    }
}

/// The schema of `client_snat`.
pub fn client_snat_schema() -> TableSchema {
    TableSchema {
        name: CLIENT_SNAT.into(),
        keys: vec![KeyField::exact(CLIENT_SNAT_KEY, 16)],
        actions: vec![
            ActionSchema::new(SET_REWRITE_SRC, vec![ParamSchema::new(NEW_SRC, 32)]),
            ActionSchema::new(NO_ACTION, vec![]),
        ],
        default_action: ActionCall::new(ActionId(1), []),
        const_default: true,
        size: 1024,
    }
}

/// The `load_balancer` stage.
pub struct LoadBalancer {
    node_selector: Arc<Table>,
    client_snat: Arc<Table>,
    ns: Arc<TableVersion>,
    snat: Arc<TableVersion>,
}

impl LoadBalancer {
    /// A stage over `node_selector` (made with [`node_selector_schema`] and
    /// [`node_selector_selector`]) and `client_snat` (from [`client_snat_schema`]).
    pub fn new(node_selector: Arc<Table>, client_snat: Arc<Table>) -> LoadBalancer {
        LoadBalancer {
            ns: node_selector.snapshot(),
            snat: client_snat.snapshot(),
            node_selector,
            client_snat,
        }
    }

    /// The new destination `node_selector` picks for this packet, if it load-balances it.
    #[inline]
    fn pick_backend(&self, frame: &[u8], hdr: &Headers, dst: u32, len: u64) -> Option<u32> {
        let Lookup::Hit(e) = self.ns.lookup_counted(&[u128::from(dst)], len) else {
            return None;
        };
        let call = e.action();
        let action = match self.ns.resolve(call) {
            [] => return None,
            [one] => one,
            _ => self
                .ns
                .select(call, u64::from(selector_hash(frame, hdr)?))?,
        };
        (action.action == A_REWRITE).then(|| action.param(0) as u32)
    }
}

impl Stage for LoadBalancer {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn begin_batch(&mut self) {
        self.ns = self.node_selector.snapshot();
        self.snat = self.client_snat.snapshot();
    }

    #[inline]
    fn process(&mut self, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        if meta.hdr.l3 != L3Kind::Ipv4 {
            return Flow::Continue;
        }
        let hdr = meta.hdr;
        let frame = pkt.frame();
        let off = usize::from(hdr.l3_off);
        let (Some(&ttl), Some(dst)) = (frame.get(off + 8), hdr.ipv4_dst(frame)) else {
            return Flow::Continue;
        };
        if ttl == 0 {
            return Flow::Continue;
        }
        let len = pkt.len() as u64;
        if let Some(new_dst) = self.pick_backend(frame, &hdr, u32::from(dst), len) {
            // Only fails on frames the parser would not have passed; leave those as they are.
            let _ = rewrite_ipv4_addr(pkt.frame_mut(), &hdr, Side::Dst, new_dst.into());
            return Flow::Continue;
        }
        if hdr.l4 != L4Kind::Tcp {
            return Flow::Continue;
        }
        let Some((sport, _)) = hdr.ports(frame) else {
            return Flow::Continue;
        };
        let action = self.snat.lookup_counted(&[u128::from(sport)], len).action();
        if action.action == A_REWRITE {
            let new_src = action.param(0) as u32;
            let _ = rewrite_ipv4_addr(pkt.frame_mut(), &hdr, Side::Src, new_src.into());
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_crc16_arc() {
        assert_eq!(crc16(b"123456789"), 0xBB3D);
        assert_eq!(crc16(b""), 0);
        // Independent bitwise reference: reflected poly 0x8005 (0xA001), init 0.
        let reference = |data: &[u8]| {
            let mut crc = 0u16;
            for &b in data {
                crc ^= u16::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0xA001
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        };
        for data in [&b"switchboard"[..], &[0xc0, 0xa8, 0x0c, 0x64, 0, 1, 2]] {
            assert_eq!(crc16(data), reference(data));
        }
    }

    #[test]
    fn selector_hash_covers_the_five_tuple() {
        let f = packet::build::tcp_ipv4(
            packet::wire::EthernetAddress([2, 0, 0, 0, 0, 1]),
            packet::wire::EthernetAddress([2, 0, 0, 0, 0, 2]),
            "192.168.12.100".parse().unwrap(),
            "192.168.12.10".parse().unwrap(),
            40000,
            8080,
            1,
            0,
            packet::wire::tcp::Flags::SYN,
            b"",
        );
        let h = packet::parse::parse(&f).unwrap();
        let want = crc16(&[
            192, 168, 12, 100, 192, 168, 12, 10, 6, 0x9c, 0x40, 0x1f, 0x90,
        ]);
        assert_eq!(selector_hash(&f, &h), Some(want));
    }

    #[test]
    fn config_defaults_and_errors() {
        assert_eq!(
            LoadBalancerConfig::from_options(None).unwrap().service_port,
            8080
        );
        let v: toml::Value = toml::from_str("service_port = 9000").unwrap();
        assert_eq!(
            LoadBalancerConfig::from_options(Some(&v))
                .unwrap()
                .service_port,
            9000
        );
        let v: toml::Value = toml::from_str("service_prot = 9000").unwrap();
        let e = LoadBalancerConfig::from_options(Some(&v)).unwrap_err();
        assert!(e.contains("service_prot"), "{e}");
    }
}
