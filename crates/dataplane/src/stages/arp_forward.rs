//! `arp_forward`: ARP steered by target protocol address (seed 000), with the
//! gratuitous-ARP fix.
//!
//! Upstream forwards ARP only to the port recorded for its target IP and drops
//! it otherwise, so a gratuitous ARP (sender IP == target IP) from a moved host
//! goes back to the host itself and no peer ever learns the move. Here such a
//! packet is flooded to every port but the ingress port (`flood_gratuitous`,
//! on by default; `flood_to_ingress` adds the ingress port too). Set
//! `flood_gratuitous = false` for the exact upstream behaviour.
//! Non-ARP packets pass through untouched.

use std::sync::Arc;

use packet::PacketBuf;
use packet::parse::L3Kind;
use tables::{
    ActionCall, ActionId, ActionSchema, KeyField, ParamSchema, Table, TableSchema, TableVersion,
};

use crate::meta::{DropReason, Egress, Flow, Meta};
use crate::stage::Stage;
use crate::stages::forward::PORT_BITS;

/// Table name, exactly as upstream.
pub const TABLE: &str = "arp_forward";
/// Key field name as in the P4 source.
pub const KEY: &str = "hdr.arp.target_proto_addr";
pub const SET_EGRESS_PORT: &str = "set_egress_port";

const A_SET_PORT: ActionId = ActionId(0);

/// Options of the stage (`[stage.arp_forward]` in the config).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArpForwardConfig {
    /// Flood gratuitous ARP (SPA == TPA) instead of steering it by target.
    pub flood_gratuitous: bool,
    /// Include the ingress port in that flood.
    pub flood_to_ingress: bool,
}

impl Default for ArpForwardConfig {
    fn default() -> Self {
        ArpForwardConfig {
            flood_gratuitous: true,
            flood_to_ingress: false,
        }
    }
}

/// The schema of `arp_forward` (const default NoAction, size 64).
pub fn schema() -> TableSchema {
    TableSchema {
        name: TABLE.into(),
        keys: vec![KeyField::exact(KEY, 32)],
        actions: vec![
            ActionSchema::new(SET_EGRESS_PORT, vec![ParamSchema::new("port", PORT_BITS)]),
            ActionSchema::new("NoAction", vec![]),
        ],
        default_action: ActionCall::new(ActionId(1), []),
        const_default: true,
        size: 64,
    }
}

/// The `arp_forward` stage.
pub struct ArpForward {
    table: Arc<Table>,
    snap: Arc<TableVersion>,
    cfg: ArpForwardConfig,
}

impl ArpForward {
    pub fn new(table: Arc<Table>, cfg: ArpForwardConfig) -> ArpForward {
        let snap = table.snapshot();
        ArpForward { table, snap, cfg }
    }
}

impl Stage for ArpForward {
    fn name(&self) -> &'static str {
        TABLE
    }

    fn begin_batch(&mut self) {
        self.snap = self.table.snapshot();
    }

    #[inline]
    fn process(&mut self, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        if meta.hdr.l3 != L3Kind::Arp {
            return Flow::Continue;
        }
        let off = usize::from(meta.hdr.l3_off);
        let frame = pkt.frame();
        // The parser guarantees a 28-byte Ethernet/IPv4 ARP body; `get` keeps it panic-free anyway.
        let (Some(spa), Some(tpa)) = (frame.get(off + 14..off + 18), frame.get(off + 24..off + 28))
        else {
            return meta.drop_with(DropReason::Parse(packet::parse::ParseError::TruncatedArp));
        };
        if self.cfg.flood_gratuitous && spa == tpa {
            meta.egress = Egress::Flood {
                except_ingress: !self.cfg.flood_to_ingress,
            };
            return Flow::Exit;
        }
        let tpa = u32::from_be_bytes([tpa[0], tpa[1], tpa[2], tpa[3]]);
        let action = self
            .snap
            .lookup_counted(&[u128::from(tpa)], pkt.len() as u64)
            .action();
        if action.action == A_SET_PORT {
            meta.egress = Egress::Port(action.param(0) as u16);
            Flow::Exit
        } else {
            meta.drop_with(DropReason::ArpMiss)
        }
    }
}
