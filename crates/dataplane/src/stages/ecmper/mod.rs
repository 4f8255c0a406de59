//! `ecmper`: the ECMP-ER router (ToyotaInfoTech/ecmper `p4src/ecmper.p4`), in two modes.
//!
//! **Compat mode** (`mode = "compat"`) is bit-exact with the bmv2 program. Tables, with their
//! P4Runtime field and parameter names:
//!
//! | table      | key (kind)        | actions                                                     | size |
//! |------------|-------------------|-------------------------------------------------------------|------|
//! | `ipv4_lpm` | `dstAddr` (lpm)   | `set_nh_index(cur_nh_offset, cur_nh_count, prv_nh_offset, prv_nh_count)`, `drop`, `NoAction` | 1024 |
//! | `cur_nh`   | `nh_index` (exact)| `set_nexthop(nexthop)`, `drop`, `NoAction`                  | 8192 |
//! | `prv_nh`   | `nh_index` (exact)| `set_nexthop(nexthop)`, `drop`, `NoAction`                  | 8192 |
//! | `neigh`    | `nh_addr` (exact) | `set_output(dstMac, port)`, `drop`, `NoAction`              | 1024 |
//!
//! All defaults are `NoAction`. Per IPv4 packet with TTL > 0: `ipv4_lpm` gives (offset, count)
//! per generation (zeros on a miss); H = CRC-32(srcAddr‖protocol‖dstPort‖srcPort) mod 65535;
//! index = (H & (count − 1)) + offset, 16-bit (count 0 is the mask 0xFFFF); a ToS byte of
//! exactly 0x01 selects `prv_nh`, anything else `cur_nh`; next hop 0.0.0.0 (or a miss) means
//! the destination itself; `neigh` then sets dst MAC, src MAC 02:00:00:00:00:ff, TTL − 1 and
//! the port. A `drop` action anywhere drops at the end. The IPv4 checksum is recomputed, as
//! bmv2 does. Where bmv2 sends a frame unmodified out of port 0 by accident (not IPv4, TTL 0,
//! `neigh` miss), this drops and counts it (`not_ipv4`, `ttl_zero`, `ecmper_neigh_miss`)
//! unless `bmv2_quirks = true`. Deviations: IPv4 options are skipped (IHL honoured) and later
//! fragments hash with ports 0/0, where upstream reads ports at a fixed offset.
//!
//! **Resilient mode** (`mode = "resilient"`, the default) keeps the same hash input, `neigh`
//! table, MAC rule and TTL decrement, but routes through an immutable ring of generations
//! (see [`control`]): the current one and `generations` previous ones, each a set of prefixes
//! with a Maglev bucket table of `buckets` (a prime) entries over the prefix's next hops. A
//! packet whose DSCP is `(m << 2) | 0b11` (m = 1..=15, [`hash::marker_of`]) is forwarded with
//! previous generation m, keeping the marker; any other DSCP uses the current one; the ECN
//! bits are never read or written. A marker naming a generation not kept is dropped
//! (`ecmper_no_generation`); TTL ≤ 1 is dropped (`ttl_expired`); an LPM miss routes to the
//! destination itself ("connected", as upstream's miss path does for the replies); a `neigh`
//! miss drops. The control plane publishes a new generation with one atomic swap.
//!
//! Options (`[stage.ecmper]`): `mode` ("resilient" | "compat"), `generations` (previous
//! generations kept, 1..=15, default 2), `buckets` (Maglev table size per prefix, a prime,
//! default 65537), `bmv2_quirks` (default false).

pub mod control;
pub mod hash;
pub mod maglev;

use std::sync::Arc;

use packet::PacketBuf;
use packet::parse::L3Kind;
use tables::{
    ActionCall, ActionId, ActionSchema, KeyField, ParamSchema, Table, TableSchema, TableVersion,
};

use crate::meta::{DropReason, Egress, Flow, Meta};
use crate::stage::Stage;
use crate::stages::forward::{PORT_BITS, set_dst_mac};

pub use control::{EcmperError, EcmperHandle, Generation, Ring, Route};

/// Stage name in the pipeline config.
pub const STAGE: &str = "ecmper";
/// Table names, exactly as upstream (P4Runtime: `SwitchIngress.ecmper.<table>`).
pub const IPV4_LPM: &str = "ipv4_lpm";
pub const CUR_NH: &str = "cur_nh";
pub const PRV_NH: &str = "prv_nh";
pub const NEIGH: &str = "neigh";
/// Upstream's P4Runtime full-name prefix, used in the text dumps.
pub const P4RT_PREFIX: &str = "SwitchIngress.ecmper.";
/// Key field names (P4Runtime).
pub const LPM_KEY: &str = "dstAddr";
pub const NH_KEY: &str = "nh_index";
pub const NEIGH_KEY: &str = "nh_addr";
/// Action names.
pub const SET_NH_INDEX: &str = "set_nh_index";
pub const SET_NEXTHOP: &str = "set_nexthop";
pub const SET_OUTPUT: &str = "set_output";
pub const DROP: &str = "drop";
pub const NO_ACTION: &str = "NoAction";
/// Source MAC of every forwarded frame.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xff];

/// Action ids, in schema order (the first action of each table, then `drop`, `NoAction`).
const A_SET: ActionId = ActionId(0);
const A_DROP: ActionId = ActionId(1);

/// Which behaviour the stage has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bit-exact with the bmv2 reference and its controller.
    Compat,
    /// K generations, Maglev buckets, DSCP marker, atomic install.
    #[default]
    Resilient,
}

/// Options of the stage (`[stage.ecmper]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcmperConfig {
    pub mode: Mode,
    /// Resilient: previous generations kept besides the current one (1..=15).
    pub generations: u8,
    /// Resilient: Maglev buckets per prefix (a prime; ≥ 100 × next hops for ≤ 1 % imbalance).
    pub buckets: u32,
    /// Send what bmv2 sends to port 0 by accident to port 0 instead of dropping it.
    pub bmv2_quirks: bool,
}

impl Default for EcmperConfig {
    fn default() -> Self {
        EcmperConfig {
            mode: Mode::Resilient,
            generations: 2,
            buckets: maglev::DEFAULT_BUCKETS,
            bmv2_quirks: false,
        }
    }
}

impl EcmperConfig {
    /// Reads and checks the stage's options table (absent: defaults). The error names the
    /// field.
    pub fn from_options(opts: Option<&toml::Value>) -> Result<Self, String> {
        // One field at a time first, so a bad value's message names its field (serde's
        // "unknown variant" and "invalid value" messages do not).
        if let Some(toml::Value::Table(t)) = opts {
            for (k, v) in t {
                let mut one = toml::Table::new();
                one.insert(k.clone(), v.clone());
                if let Err(e) = toml::Value::Table(one).try_into::<EcmperConfig>() {
                    let m = e.message();
                    return Err(if m.contains(k.as_str()) {
                        m.to_string()
                    } else {
                        format!("{k}: {m}")
                    });
                }
            }
        }
        let c: EcmperConfig = match opts {
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string())?,
            None => Self::default(),
        };
        if !(1..=hash::MAX_MARK).contains(&c.generations) {
            return Err(format!(
                "generations: {} is out of range 1..={}",
                c.generations,
                hash::MAX_MARK
            ));
        }
        if !maglev::is_prime(c.buckets) || c.buckets > 1 << 24 {
            return Err(format!(
                "buckets: {} is not a prime below 2^24 (e.g. 65537, 1009, 101)",
                c.buckets
            ));
        }
        Ok(c)
    }
}

fn nh_schema(name: &str) -> TableSchema {
    TableSchema {
        name: name.into(),
        keys: vec![KeyField::exact(NH_KEY, 16)],
        actions: vec![
            ActionSchema::new(SET_NEXTHOP, vec![ParamSchema::new("nexthop", 32)]),
            ActionSchema::new(DROP, vec![]),
            ActionSchema::new(NO_ACTION, vec![]),
        ],
        default_action: ActionCall::new(ActionId(2), []),
        const_default: false,
        size: 8192,
    }
}

/// The schema of `ipv4_lpm`.
pub fn ipv4_lpm_schema() -> TableSchema {
    TableSchema {
        name: IPV4_LPM.into(),
        keys: vec![KeyField::lpm(LPM_KEY, 32)],
        actions: vec![
            ActionSchema::new(
                SET_NH_INDEX,
                [
                    "cur_nh_offset",
                    "cur_nh_count",
                    "prv_nh_offset",
                    "prv_nh_count",
                ]
                .iter()
                .map(|n| ParamSchema::new(*n, 16))
                .collect(),
            ),
            ActionSchema::new(DROP, vec![]),
            ActionSchema::new(NO_ACTION, vec![]),
        ],
        default_action: ActionCall::new(ActionId(2), []),
        const_default: false,
        size: 1024,
    }
}

/// The schema of `cur_nh`.
pub fn cur_nh_schema() -> TableSchema {
    nh_schema(CUR_NH)
}

/// The schema of `prv_nh`.
pub fn prv_nh_schema() -> TableSchema {
    nh_schema(PRV_NH)
}

/// The schema of `neigh`.
pub fn neigh_schema() -> TableSchema {
    TableSchema {
        name: NEIGH.into(),
        keys: vec![KeyField::exact(NEIGH_KEY, 32)],
        actions: vec![
            ActionSchema::new(
                SET_OUTPUT,
                vec![
                    ParamSchema::new("dstMac", 48),
                    ParamSchema::new("port", PORT_BITS),
                ],
            ),
            ActionSchema::new(DROP, vec![]),
            ActionSchema::new(NO_ACTION, vec![]),
        ],
        default_action: ActionCall::new(ActionId(2), []),
        const_default: false,
        size: 1024,
    }
}

/// The compat-mode tables and their snapshots for the current batch.
struct CompatTables {
    lpm: Arc<Table>,
    cur: Arc<Table>,
    prv: Arc<Table>,
    lpm_v: Arc<TableVersion>,
    cur_v: Arc<TableVersion>,
    prv_v: Arc<TableVersion>,
}

/// The `ecmper` stage.
pub struct Ecmper {
    quirks: bool,
    handle: Arc<EcmperHandle>,
    compat: Option<CompatTables>,
    neigh: Arc<Table>,
    neigh_v: Arc<TableVersion>,
    ring: Arc<Ring>,
}

/// What a stage build produces: the stage, its tables' names, and the control handle.
pub struct Built {
    pub stage: Ecmper,
    pub tables: Vec<String>,
    pub handle: Arc<EcmperHandle>,
}

impl Ecmper {
    /// Builds the stage for `cfg`, creating its tables with `add` (which registers them with
    /// the switch): all four in compat mode, `neigh` only in resilient mode. The control
    /// handle is registered so [`control::handle_of`] finds it from the switch.
    pub fn build(
        cfg: EcmperConfig,
        mut add: impl FnMut(TableSchema) -> Result<Arc<Table>, String>,
    ) -> Result<Built, String> {
        let (compat, names) = match cfg.mode {
            Mode::Compat => {
                let lpm = add(ipv4_lpm_schema())?;
                let cur = add(cur_nh_schema())?;
                let prv = add(prv_nh_schema())?;
                (
                    Some(CompatTables {
                        lpm_v: lpm.snapshot(),
                        cur_v: cur.snapshot(),
                        prv_v: prv.snapshot(),
                        lpm,
                        cur,
                        prv,
                    }),
                    vec![IPV4_LPM, CUR_NH, PRV_NH, NEIGH],
                )
            }
            Mode::Resilient => (None, vec![NEIGH]),
        };
        let neigh = add(neigh_schema())?;
        let handle = Arc::new(EcmperHandle::new(
            cfg,
            compat.as_ref().map(|c| (&c.lpm, &c.cur, &c.prv)),
            &neigh,
        ));
        handle.install_index0_drops().map_err(|e| e.to_string())?;
        control::register(&neigh, Arc::clone(&handle));
        let stage = Ecmper {
            quirks: cfg.bmv2_quirks,
            ring: handle.ring(),
            handle: Arc::clone(&handle),
            compat,
            neigh_v: neigh.snapshot(),
            neigh,
        };
        Ok(Built {
            stage,
            tables: names.into_iter().map(String::from).collect(),
            handle,
        })
    }

    /// The control handle (routes, install, generations).
    pub fn handle(&self) -> &Arc<EcmperHandle> {
        &self.handle
    }

    /// What bmv2 does with a frame it did not route: port 0 unmodified (quirk) or a drop.
    #[inline]
    fn unrouted(&self, meta: &mut Meta, reason: DropReason) -> Flow {
        if self.quirks {
            meta.egress = Egress::Port(0);
            Flow::Continue
        } else {
            meta.drop_with(reason)
        }
    }

    /// `neigh` for next hop `nh`: rewrite and choose the port, or drop.
    #[inline]
    fn output(&self, pkt: &mut PacketBuf, meta: &mut Meta, nh: u32, recompute: bool) -> Flow {
        let len = pkt.len() as u64;
        let a = self.neigh_v.lookup_counted(&[u128::from(nh)], len).action();
        match a.action {
            A_SET => {
                let (mac, port) = (a.param(0), a.param(1) as u16);
                rewrite(pkt, meta, mac, recompute);
                meta.egress = Egress::Port(port);
                Flow::Continue
            }
            A_DROP => meta.drop_with(DropReason::EcmperDrop),
            _ => self.unrouted(meta, DropReason::EcmperNeighMiss),
        }
    }

    #[inline]
    fn process_compat(&self, pkt: &mut PacketBuf, meta: &mut Meta, f: Fields) -> Flow {
        let Some(c) = &self.compat else {
            return meta.drop_with(DropReason::NoEgress);
        };
        let len = pkt.len() as u64;
        let mut drop = false;
        let lpm = c.lpm_v.lookup_counted(&[u128::from(f.dst)], len).action();
        let (co, cc, po, pc) = match lpm.action {
            A_SET => (
                lpm.param(0) as u16,
                lpm.param(1) as u16,
                lpm.param(2) as u16,
                lpm.param(3) as u16,
            ),
            A_DROP => {
                drop = true;
                (0, 0, 0, 0)
            }
            _ => (0, 0, 0, 0),
        };
        let h = hash::compat_hash(f.crc);
        let (idx, nh_v) = if f.tos == hash::TOS_RETRANSMITTED {
            (hash::compat_index(h, po, pc), &c.prv_v)
        } else {
            (hash::compat_index(h, co, cc), &c.cur_v)
        };
        let a = nh_v.lookup_counted(&[u128::from(idx)], len).action();
        let mut nh = match a.action {
            A_SET => a.param(0) as u32,
            A_DROP => {
                drop = true;
                0
            }
            _ => 0,
        };
        if nh == 0 {
            nh = f.dst;
        }
        let flow = self.output(pkt, meta, nh, true);
        if drop {
            return meta.drop_with(DropReason::EcmperDrop);
        }
        flow
    }

    #[inline]
    fn process_resilient(&self, pkt: &mut PacketBuf, meta: &mut Meta, f: Fields) -> Flow {
        let m = hash::marker_of(f.tos);
        let Some(generation) = self.ring.gens.get(usize::from(m)) else {
            return meta.drop_with(DropReason::EcmperNoGeneration);
        };
        if f.ttl <= 1 {
            return meta.drop_with(DropReason::TtlExpired);
        }
        let nh = match generation.lookup(f.dst) {
            Some(route) => match route.pick(f.crc) {
                Some(0) => f.dst,
                Some(nh) => nh,
                None => return meta.drop_with(DropReason::EcmperDrop),
            },
            None => f.dst,
        };
        self.output(pkt, meta, nh, false)
    }
}

/// What both modes read from the IPv4 header.
#[derive(Clone, Copy)]
struct Fields {
    dst: u32,
    tos: u8,
    ttl: u8,
    crc: u32,
}

/// `set_output`'s rewrite: dst MAC, src MAC [`ROUTER_MAC`], TTL − 1 and the IPv4 checksum
/// (recomputed over the header in compat mode like bmv2's deparser, else updated
/// incrementally).
#[inline]
fn rewrite(pkt: &mut PacketBuf, meta: &Meta, mac: u128, recompute: bool) {
    let off = usize::from(meta.hdr.l3_off);
    let ihl = usize::from(meta.hdr.l3_len);
    let frame = pkt.frame_mut();
    set_dst_mac(frame, mac);
    if let Some(src) = frame.get_mut(6..12) {
        src.copy_from_slice(&ROUTER_MAC);
    }
    let Some(ip) = frame.get_mut(off..off + ihl) else {
        return;
    };
    if ip.len() < 20 {
        return;
    }
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] = ip[8].wrapping_sub(1);
    if recompute {
        ip[10] = 0;
        ip[11] = 0;
        let c = !packet::checksum::data(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let new = u16::from_be_bytes([ip[8], ip[9]]);
        let c = packet::checksum::update16(u16::from_be_bytes([ip[10], ip[11]]), old, new);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

impl Stage for Ecmper {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn begin_batch(&mut self) {
        self.neigh_v = self.neigh.snapshot();
        if let Some(c) = &mut self.compat {
            c.lpm_v = c.lpm.snapshot();
            c.cur_v = c.cur.snapshot();
            c.prv_v = c.prv.snapshot();
        }
        self.ring = self.handle.ring();
    }

    #[inline]
    fn process(&mut self, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        if meta.hdr.l3 != L3Kind::Ipv4 {
            return self.unrouted(meta, DropReason::NotIpv4);
        }
        let off = usize::from(meta.hdr.l3_off);
        let frame = pkt.frame();
        let (Some(&tos), Some(&ttl), Some(dst)) = (
            frame.get(off + 1),
            frame.get(off + 8),
            frame.get(off + 16..off + 20),
        ) else {
            return meta.drop_with(DropReason::Parse(packet::parse::ParseError::TruncatedIpv4));
        };
        if ttl == 0 {
            return self.unrouted(meta, DropReason::TtlZero);
        }
        let dst = u32::from_be_bytes([dst[0], dst[1], dst[2], dst[3]]);
        let Some(input) = hash::hash_input(frame, &meta.hdr) else {
            return meta.drop_with(DropReason::NotIpv4);
        };
        let f = Fields {
            dst,
            tos,
            ttl,
            crc: hash::crc32(&input),
        };
        if self.compat.is_some() {
            self.process_compat(pkt, meta, f)
        } else {
            self.process_resilient(pkt, meta, f)
        }
    }
}
