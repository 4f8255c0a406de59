//! The stage trait: one step of the pipeline, like a P4 control applied in sequence.

use packet::PacketBuf;

use crate::meta::{Flow, Meta};

/// A pipeline stage. It reads its tables, may rewrite the frame in place, and
/// records its decision in [`Meta::egress`]. Stages are owned by one worker, so
/// they keep per-worker state without locks.
pub trait Stage: Send {
    /// The stage's name as written in the pipeline config.
    fn name(&self) -> &'static str;
    /// Called once before each batch: the place to load fresh table snapshots,
    /// so table updates are picked up between batches and never mid-packet.
    fn begin_batch(&mut self) {}
    /// Handle one packet. Must never panic on packet bytes.
    fn process(&mut self, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow;
}
