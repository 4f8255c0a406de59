//! The stage trait: one step of the pipeline, like a P4 control applied in sequence.

use std::time::Instant;

use packet::{PacketBuf, Pool};

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
    /// True for a stage that makes packets of its own (a tunnel's outer packets, reassembled
    /// inner packets) or runs timers: the worker then calls [`Stage::poll`] every round.
    /// Stages that only rewrite what they are given keep the default and cost nothing.
    fn wants_poll(&self) -> bool {
        false
    }
    /// Called by the worker after each round's packets and in idle rounds (only when
    /// [`Stage::wants_poll`]): emit generated packets into `out` and return when the stage
    /// next needs to run (the worker's idle wait ends by then), or `None` for no timer.
    fn poll(&mut self, _now: Instant, _out: &mut Emit<'_>) -> Option<Instant> {
        None
    }
    /// Called once when every input has ended (pcap replay): emit now whatever timers would
    /// send later, so a replay's output does not depend on how long the run took.
    fn finish(&mut self, _now: Instant, _out: &mut Emit<'_>) {}
}

/// Where a stage puts packets it generates: buffers come from, and go back to, the worker's
/// pool; each sent packet goes straight to its egress port (it does not run through the
/// pipeline again).
pub struct Emit<'a> {
    pool: &'a mut Pool,
    out: &'a mut Vec<(u16, PacketBuf)>,
}

impl<'a> Emit<'a> {
    /// An emitter over `pool`, queueing into `out` as (egress port, frame).
    pub fn new(pool: &'a mut Pool, out: &'a mut Vec<(u16, PacketBuf)>) -> Emit<'a> {
        Emit { pool, out }
    }

    /// An empty buffer from the worker's pool.
    #[inline]
    pub fn buf(&mut self) -> PacketBuf {
        self.pool.get()
    }

    /// Queue `pkt` for transmission out of `port`.
    #[inline]
    pub fn send(&mut self, port: u16, pkt: PacketBuf) {
        self.out.push((port, pkt));
    }

    /// Give back a buffer that will not be sent.
    #[inline]
    pub fn recycle(&mut self, pkt: PacketBuf) {
        self.pool.put(pkt);
    }

    /// Packets queued so far.
    pub fn queued(&self) -> usize {
        self.out.len()
    }
}
