//! `forward`: the p4containerflow IPv4 forwarding table (seed 000).
//!
//! Key `hdr.ipv4.dst_addr` (exact); actions `set_egress_port(port)`,
//! `set_egress_port_with_mac(port, dst_mac)` (also rewrites the destination MAC)
//! and `NoAction`, the default (non-const, as in the final upstream program),
//! which leaves no egress so the packet is dropped. Size 1024. Like the seed
//! program it accepts only IPv4 (other ethertypes but ARP, which it leaves to
//! `arp_forward`, are dropped) and drops TTL 0; it does not decrement the TTL.
//! Also as upstream, a packet whose IPv4 header checksum is wrong is forwarded
//! with its destination MAC set to the tag 00:00:de:ad:be:ef (the seed program's
//! way of marking parser checksum errors), so a capture shows them.

use std::sync::Arc;

use packet::PacketBuf;
use packet::parse::L3Kind;
use tables::{
    ActionCall, ActionId, ActionSchema, KeyField, ParamSchema, Table, TableSchema, TableVersion,
};

use crate::meta::{DropReason, Egress, Flow, Meta};
use crate::stage::Stage;

/// Table name, exactly as upstream.
pub const TABLE: &str = "forward";
/// Action names, exactly as upstream.
pub const SET_EGRESS_PORT: &str = "set_egress_port";
pub const SET_EGRESS_PORT_WITH_MAC: &str = "set_egress_port_with_mac";
pub const NO_ACTION: &str = "NoAction";
/// Key field name as in the P4 source.
pub const KEY: &str = "hdr.ipv4.dst_addr";

/// Destination MAC the seed program writes on packets with a bad IPv4 header checksum.
pub const BAD_CHECKSUM_TAG: u128 = 0x0000_dead_beef;

const A_SET_PORT: ActionId = ActionId(0);
const A_SET_PORT_MAC: ActionId = ActionId(1);

/// Port numbers are the switch's own 16-bit numbers (upstream uses 9-bit device ports).
pub const PORT_BITS: u16 = 16;

/// The schema of `forward`.
pub fn schema() -> TableSchema {
    TableSchema {
        name: TABLE.into(),
        keys: vec![KeyField::exact(KEY, 32)],
        actions: vec![
            ActionSchema::new(SET_EGRESS_PORT, vec![ParamSchema::new("port", PORT_BITS)]),
            ActionSchema::new(
                SET_EGRESS_PORT_WITH_MAC,
                vec![
                    ParamSchema::new("port", PORT_BITS),
                    ParamSchema::new("dst_mac", 48),
                ],
            ),
            ActionSchema::new(NO_ACTION, vec![]),
        ],
        default_action: ActionCall::new(ActionId(2), []),
        const_default: false,
        size: 1024,
    }
}

/// The `forward` stage.
pub struct Forward {
    table: Arc<Table>,
    snap: Arc<TableVersion>,
}

impl Forward {
    /// A stage matching against `table` (made from [`schema`]).
    pub fn new(table: Arc<Table>) -> Forward {
        let snap = table.snapshot();
        Forward { table, snap }
    }
}

/// Write a 48-bit action parameter as a MAC into the first six bytes of `frame`.
#[inline]
pub(crate) fn set_dst_mac(frame: &mut [u8], mac: u128) {
    if let Some(dst) = frame.get_mut(0..6) {
        dst.copy_from_slice(&mac.to_be_bytes()[10..16]);
    }
}

impl Stage for Forward {
    fn name(&self) -> &'static str {
        TABLE
    }

    fn begin_batch(&mut self) {
        self.snap = self.table.snapshot();
    }

    #[inline]
    fn process(&mut self, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        match meta.hdr.l3 {
            L3Kind::Ipv4 => {}
            // ARP is `arp_forward`'s, wherever it stands in the pipeline.
            L3Kind::Arp => return Flow::Continue,
            _ => return meta.drop_with(DropReason::NotIpv4),
        }
        let off = usize::from(meta.hdr.l3_off);
        let frame = pkt.frame();
        let (Some(&ttl), Some(dst)) = (frame.get(off + 8), frame.get(off + 16..off + 20)) else {
            return meta.drop_with(DropReason::Parse(packet::parse::ParseError::TruncatedIpv4));
        };
        if ttl == 0 {
            return meta.drop_with(DropReason::TtlZero);
        }
        let dst = u32::from_be_bytes([dst[0], dst[1], dst[2], dst[3]]);
        let ihl = usize::from(meta.hdr.l3_len);
        let bad_checksum = frame
            .get(off..off + ihl)
            .is_some_and(|h| packet::checksum::data(h) != 0xffff);
        let len = pkt.len() as u64;
        let action = self.snap.lookup_counted(&[u128::from(dst)], len).action();
        let flow = match action.action {
            A_SET_PORT => {
                meta.egress = Egress::Port(action.param(0) as u16);
                Flow::Continue
            }
            A_SET_PORT_MAC => {
                set_dst_mac(pkt.frame_mut(), action.param(1));
                meta.egress = Egress::Port(action.param(0) as u16);
                Flow::Continue
            }
            _ => return meta.drop_with(DropReason::ForwardMiss),
        };
        if bad_checksum {
            set_dst_mac(pkt.frame_mut(), BAD_CHECKSUM_TAG);
        }
        flow
    }
}
