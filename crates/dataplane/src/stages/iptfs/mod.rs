//! `iptfs`: an IP-TFS (RFC 9347 AGGFRAG over ESP) tunnel endpoint as a pipeline stage, over
//! the `iptfs` codec crate, with statically configured SAs ([`config`]).
//!
//! - **Out SAs**: an IPv4/IPv6 packet whose destination matches an out SA's selector is
//!   queued into that SA's [`Sender`] and consumed ([`Egress::Consumed`]). After each round
//!   the worker polls the stage ([`Stage::poll`]), which writes the outer packets the senders
//!   produce (Ethernet ‖ outer IP ‖ ESP) into fresh buffers and emits them on the SA's port.
//!   Demand mode thus aggregates whatever arrived in one round (and, with `init_delay`, over
//!   that delay); constant-rate mode is driven by the worker's timer, the stage returning the
//!   next slot as its deadline.
//! - **In SAs**: ESP (IP protocol 50) to an in SA's `local` address is looked up by SPI,
//!   decrypted in place and decoded; each inner packet gets an Ethernet header (`src_mac`,
//!   `dst_mac`, ethertype by IP version) and is emitted on the SA's port. Refused ESP is
//!   dropped as `iptfs_rx_error` (the SA's counters say why), an unknown SPI as
//!   `iptfs_unknown_spi`.
//! - An inner packet over the tunnel MTU (`dont_frag`, or `plain` mode) is answered as Linux
//!   does with ICMP "fragmentation needed" / ICMPv6 "packet too big" from the SA's `local`
//!   address (when of the inner family) out of the ingress port, MACs swapped.
//! - Everything else continues down the pipeline untouched.
//!
//! The stage behaves as the Linux router on each side of the tunnel would:
//! - **TTL / hop limit** (`decrement_ttl`, default on): an inner packet is decremented once
//!   before it is queued (the entry router's `ip_forward`) and once when it leaves the exit
//!   router (incremental IPv4 checksum update, RFC 1624). One arriving with TTL / hop limit
//!   <= 1 is dropped and counted as `ttl_expired`; no ICMP time exceeded is sent, because the
//!   stage's only own address is the outer tunnel endpoint, which the inner network may not
//!   route back to (and an unauthenticated error generator is a reflection vector).
//! - **Outer DS field** on encapsulation: DSCP fixed (default 0, as `xfrm_iptfs`) or copied
//!   from the first inner packet in the payload; ECN off (Not-ECT, as `xfrm_iptfs`) or RFC
//!   6040 normal mode, where an outer shared by several inner packets is ECT only if all of
//!   them are ECN-capable (a CE mark on it must be deliverable to every one), and CE is never
//!   copied outward (sent as ECT(0)).
//! - **ECN on decapsulation** (RFC 6040 4.2): an outer CE marks ECT inner packets CE and drops
//!   Not-ECT ones (`ecn_marked`, `ecn_dropped`); every inner released while that outer is
//!   handled gets it (exact in order; inners released later by the drop timer get none).
//! - **Outer addresses**: ESP with an in SA's SPI from an address other than its `remote`, or
//!   to a local address other than its `local`, is dropped undecrypted
//!   (`outer_addr_mismatch`), so one peer cannot burn another's replay window.
//! - **Outer fragments**: outers are not reassembled; an IPv4 or IPv6 fragment of ESP to an in
//!   SA is dropped undecrypted and counted as `outer_fragments`.
//!
//! Counters per SA (codec and stage) are published to an [`IptfsHandle`] for the REST API and
//! `/metrics`: at most every millisecond while packets flow, at once in a quiet round. Time is the worker's monotonic clock; [`Iptfs::process_at`] and
//! [`Iptfs::poll_at`] take it explicitly so tests can run the stage on a virtual clock.

pub mod config;
pub mod handle;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iptfs::{EspInbound, EspOutbound, Nanos, Poll, Receiver, Sender};
use packet::PacketBuf;
use packet::parse::{Fragment, Headers, L3Kind};

pub use config::{Direction, EcnMode, IptfsConfig, Mode, OuterDscp, Prefix, SaConfig};
pub use handle::{IptfsHandle, SaStats, handle_of};

use crate::meta::{DropReason, Egress, Flow, Meta};
use crate::stage::{Emit, Stage};
use handle::StageCounters;

/// The stage's name in the pipeline config.
pub const STAGE: &str = "iptfs";

const ETH_LEN: usize = 14;
const PROTO_ESP: u8 = 50;
/// Outer TTL / hop limit.
const OUTER_TTL: u8 = 64;
const ECN_ECT1: u8 = 1;
const ECN_ECT0: u8 = 2;
const ECN_CE: u8 = 3;

enum Codec {
    Out(Box<Sender>),
    In(Box<Receiver>),
}

struct Sa {
    name: String,
    spi: u32,
    mode: Mode,
    local: IpAddr,
    remote: IpAddr,
    port: u16,
    /// Ethernet header of every frame this SA emits, ethertype filled per packet.
    eth: [u8; ETH_LEN],
    codec: Codec,
    stats: StageCounters,
    /// IPv4 identification of the next outer packet.
    ip_id: u16,
    /// Decrement inner TTL / hop limit (both directions).
    decrement_ttl: bool,
    /// Out: outer DSCP source.
    dscp: OuterDscp,
    /// Out: RFC 6040 normal-mode encapsulation; in: RFC 6040 decapsulation.
    ecn: bool,
    /// Out, when the outer DS field depends on the inners: what each outer carries.
    shadow: Option<Shadow>,
}

/// The DS fields of the inner packets in an out SA's send queue, kept in step with the
/// codec's queue (which only reports octet counts), so each outer's DS field can be derived
/// from the inner packets whose blocks it carries.
#[derive(Debug, Default)]
struct Shadow {
    /// (length, DS field) per queued inner packet, oldest first.
    q: VecDeque<(usize, u8)>,
    /// Octets of the head packet already sent.
    head_sent: usize,
}

/// The DS fields of the inner packets (or fragments) one outer carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Carried {
    /// DS field of the first one; `None` for an all-pad outer.
    first: Option<u8>,
    /// Every one is ECN-capable (ECT(0), ECT(1) or CE).
    all_ect: bool,
    /// Every one is ECT(1).
    all_ect1: bool,
}

impl Shadow {
    /// Syncs with the codec after a poll that took `taken` octets off its queue, `stale` of
    /// the packets (from the front, never a partly sent one) dropped for age: the codec sends
    /// the rest of a partly sent packet first, then drops stale ones, then frames in order.
    fn take(&mut self, mut taken: usize, stale: u64) -> Carried {
        let mut c = Carried {
            first: None,
            all_ect: true,
            all_ect1: true,
        };
        let mut note = |ds: u8| {
            c.first.get_or_insert(ds);
            c.all_ect &= ds & 3 != 0;
            c.all_ect1 &= ds & 3 == 1;
        };
        if self.head_sent > 0
            && let Some(&(len, ds)) = self.q.front()
        {
            let n = len.saturating_sub(self.head_sent).min(taken);
            if n > 0 {
                note(ds);
            }
            taken -= n;
            self.head_sent += n;
            if self.head_sent >= len {
                self.q.pop_front();
                self.head_sent = 0;
            }
        }
        for _ in 0..stale {
            if let Some((len, _)) = self.q.pop_front() {
                taken = taken.saturating_sub(len.saturating_sub(self.head_sent));
                self.head_sent = 0;
            }
        }
        while taken > 0 {
            let Some(&(len, ds)) = self.q.front() else {
                break;
            };
            note(ds);
            let n = len.saturating_sub(self.head_sent).min(taken);
            taken -= n;
            self.head_sent += n;
            if self.head_sent >= len {
                self.q.pop_front();
                self.head_sent = 0;
            }
        }
        c
    }
}

/// The outer DS field (TOS / traffic class) for an outer carrying `c`.
fn outer_ds(dscp: OuterDscp, ecn: bool, c: Carried) -> u8 {
    let d = match dscp {
        OuterDscp::Fixed(d) => d << 2,
        OuterDscp::Copy => c.first.unwrap_or(0) & 0xfc,
    };
    // RFC 6040 normal mode: ECT propagated, CE never (it would read as congestion on this
    // path); with several inners only if every one can take a CE mark on the way out.
    let e = match (ecn, c.first.is_some() && c.all_ect, c.all_ect1) {
        (true, true, true) => ECN_ECT1,
        (true, true, false) => ECN_ECT0,
        _ => 0,
    };
    d | e
}

/// The `iptfs` stage.
pub struct Iptfs {
    sas: Vec<Sa>,
    /// Out selectors in config order: the first matching prefix picks the SA.
    selectors: Vec<(Prefix, usize)>,
    /// In SAs by SPI.
    by_spi: Vec<(u32, usize)>,
    /// Local addresses of in SAs: ESP to one of them is ours.
    locals: Vec<IpAddr>,
    epoch: Instant,
    now: Nanos,
    /// Decoded inner packets waiting for the next poll.
    inbox: Inbox,
    /// Counters changed since the last publish.
    dirty: bool,
    /// A packet was processed since the last poll (counters are then published at most every
    /// [`PUBLISH_EVERY`]; in a quiet round at once).
    saw_packets: bool,
    published_at: Nanos,
    handle: Arc<IptfsHandle>,
}

/// Least spare buffers kept for decoded inner packets.
const SPARE: usize = 64;
/// Most spare buffers kept (a quarter of the worker's pool).
const MAX_SPARE: usize = 1024;
/// Least time between two counter publishes while packets flow.
const PUBLISH_EVERY: Nanos = 1_000_000;

/// Decoded inner packets on their way out. `process` has no access to the worker's pool, so
/// the stage keeps spare pool buffers (topped up at every poll to what the last round used,
/// within [`SPARE`]..=[`MAX_SPARE`]) and frames inner packets straight into them: one copy.
/// When they run out, packets are copied aside and framed at the next poll from the pool, so
/// memory stays bounded whatever the burst.
#[derive(Default)]
struct Inbox {
    spare: Vec<PacketBuf>,
    ready: Vec<(u16, PacketBuf)>,
    overflow: Vec<u8>,
    /// (port, Ethernet header, range in `overflow`).
    overflow_at: Vec<(u16, [u8; ETH_LEN], usize, usize)>,
}

/// What the exit router does to a decapsulated inner packet before forwarding it.
#[derive(Debug, Clone, Copy)]
struct Exit {
    /// Decrement TTL / hop limit.
    decrement_ttl: bool,
    /// Its outer arrived CE (and the SA does RFC 6040 decapsulation).
    ce: bool,
}

impl Inbox {
    fn deliver(
        &mut self,
        eth: &[u8; ETH_LEN],
        port: u16,
        stats: &mut StageCounters,
        exit: Exit,
        inner: &[u8],
    ) {
        if ETH_LEN + inner.len() > packet::buf::MAX_FRAME {
            stats.oversize_inner += 1;
            return;
        }
        if exit.decrement_ttl && ttl(inner).is_some_and(|t| t <= 1) {
            stats.ttl_expired += 1;
            return;
        }
        if exit.ce && ds_field(inner).is_some_and(|d| d & 3 == 0) {
            // RFC 6040 4.2: congestion on the tunnel path, and the inner transport cannot be
            // told by a mark: the drop is the signal.
            stats.ecn_dropped += 1;
            return;
        }
        stats.selected += 1;
        let patched = match self.spare.pop() {
            Some(mut buf) => {
                frame_inner(&mut buf, eth, inner);
                let p = buf
                    .frame_mut()
                    .get_mut(ETH_LEN..)
                    .map(|l3| patch_exit(l3, exit));
                self.ready.push((port, buf));
                p
            }
            None => {
                let s = self.overflow.len();
                self.overflow.extend_from_slice(inner);
                let p = self.overflow.get_mut(s..).map(|l3| patch_exit(l3, exit));
                self.overflow_at.push((port, *eth, s, self.overflow.len()));
                p
            }
        };
        if patched == Some(true) {
            stats.ecn_marked += 1;
        }
    }

    fn pending(&self) -> usize {
        self.ready.len() + self.overflow_at.len()
    }
}

/// Writes Ethernet (`eth` with the ethertype of the inner packet's IP version) and `inner`
/// into `buf`, which must have room (checked by the caller against `MAX_FRAME`).
fn frame_inner(buf: &mut PacketBuf, eth: &[u8; ETH_LEN], inner: &[u8]) {
    let space = buf.rx_space();
    let Some(dst) = space.get_mut(..ETH_LEN + inner.len()) else {
        return;
    };
    dst[..12].copy_from_slice(&eth[..12]);
    let ethertype: u16 = if inner.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    dst[12..14].copy_from_slice(&ethertype.to_be_bytes());
    dst[ETH_LEN..].copy_from_slice(inner);
    buf.set_len(ETH_LEN + inner.len());
}

impl Iptfs {
    /// Builds the stage from its options; the error names the SA and field.
    pub fn from_options(opts: Option<&toml::Value>) -> Result<Iptfs, String> {
        Iptfs::new(&IptfsConfig::from_options(opts)?)
    }

    /// Builds the stage from a parsed config.
    pub fn new(cfg: &IptfsConfig) -> Result<Iptfs, String> {
        let specs = cfg.specs()?;
        let mut sas = Vec::with_capacity(specs.len());
        let mut selectors = Vec::new();
        let mut by_spi = Vec::new();
        let mut locals = Vec::new();
        for (i, s) in specs.into_iter().enumerate() {
            let c = &s.cfg;
            let err = |e: iptfs::Error| format!("sa[{i}] ('{}'): {e}", c.name);
            let codec = match c.direction {
                Direction::Out => {
                    let esp = EspOutbound::new(c.spi, &s.key, c.esn).map_err(err)?;
                    for p in &s.selector {
                        selectors.push((*p, i));
                    }
                    Codec::Out(Box::new(Sender::new(s.sender.clone(), esp).map_err(err)?))
                }
                Direction::In => {
                    let esp =
                        EspInbound::new(c.spi, &s.key, c.esn, c.replay_window()).map_err(err)?;
                    by_spi.push((c.spi, i));
                    if !locals.contains(&c.local) {
                        locals.push(c.local);
                    }
                    Codec::In(Box::new(
                        Receiver::new(s.receiver.clone(), esp).map_err(err)?,
                    ))
                }
            };
            let mut eth = [0u8; ETH_LEN];
            eth[0..6].copy_from_slice(&s.dst_mac.0);
            eth[6..12].copy_from_slice(&s.src_mac.0);
            sas.push(Sa {
                name: c.name.clone(),
                spi: c.spi,
                mode: c.mode(),
                local: c.local,
                remote: c.remote,
                port: c.port,
                eth,
                codec,
                stats: StageCounters::default(),
                ip_id: 0,
                decrement_ttl: c.decrement_ttl,
                dscp: s.dscp,
                ecn: s.ecn,
                shadow: (c.direction == Direction::Out && (s.ecn || s.dscp == OuterDscp::Copy))
                    .then(Shadow::default),
            });
        }
        let mut st = Iptfs {
            sas,
            selectors,
            by_spi,
            locals,
            epoch: Instant::now(),
            now: 0,
            inbox: Inbox::default(),
            saw_packets: false,
            published_at: 0,
            dirty: true,
            handle: Arc::new(IptfsHandle::default()),
        };
        st.publish(true);
        Ok(st)
    }

    /// The handle the control plane reads counters from.
    pub fn handle(&self) -> &Arc<IptfsHandle> {
        &self.handle
    }

    /// Egress ports the SAs send on (for config checks).
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.sas.iter().map(|s| s.port)
    }

    fn nanos(&self, t: Instant) -> Nanos {
        t.saturating_duration_since(self.epoch).as_nanos() as Nanos
    }

    /// [`Stage::process`] at time `now` (nanoseconds on the stage's clock).
    pub fn process_at(&mut self, now: Nanos, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        let h = meta.hdr;
        if h.l3 != L3Kind::Ipv4 && h.l3 != L3Kind::Ipv6 {
            return Flow::Continue;
        }
        self.saw_packets = true;
        let Some(dst) = dst_addr(pkt.frame(), &h) else {
            return Flow::Continue;
        };
        if h.ip_proto == PROTO_ESP && !self.locals.is_empty() && self.locals.contains(&dst) {
            return self.receive(now, pkt, meta, dst);
        }
        let Some(&(_, i)) = self.selectors.iter().find(|(p, _)| p.contains(dst)) else {
            return Flow::Continue;
        };
        let sa = &mut self.sas[i];
        let Codec::Out(tx) = &mut sa.codec else {
            return Flow::Continue;
        };
        sa.stats.selected += 1;
        self.dirty = true;
        let l3 = usize::from(h.l3_off)..usize::from(h.l3_end);
        let undo = if sa.decrement_ttl {
            match pkt.frame_mut().get_mut(l3.clone()).and_then(hop) {
                Some(Hop::Expired) => {
                    sa.stats.ttl_expired += 1;
                    return meta.drop_with(DropReason::TtlExpired);
                }
                Some(Hop::Done(u)) => Some(u),
                None => None,
            }
        } else {
            None
        };
        let inner = h.l3_bytes(pkt.frame());
        let ds = ds_field(inner).unwrap_or(0);
        match tx.push(now, inner) {
            Ok(()) => {
                if let Some(sh) = &mut sa.shadow {
                    sh.q.push_back((inner.len(), ds));
                }
                meta.egress = Egress::Consumed;
                Flow::Exit
            }
            Err(e) => {
                // Not forwarded after all: the packet (quoted by an ICMP error) is as it came.
                if let (Some(u), Some(b)) = (undo, pkt.frame_mut().get_mut(l3)) {
                    u.apply(b);
                }
                self.refused(i, e, pkt, meta)
            }
        }
    }

    /// An inner packet the out SA `i` refused: ICMP too-big or a drop.
    fn refused(&mut self, i: usize, e: iptfs::Error, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        let h = meta.hdr;
        let sa = &mut self.sas[i];
        match e {
            iptfs::Error::TooBig { mtu, .. } => {
                sa.stats.push_errors += 1;
                // Linux dont-frag: answer with ICMP too-big from the tunnel's local address
                // (when of the inner family), back out of the ingress port.
                let local = sa.local;
                match too_big_reply(pkt.frame(), &h, local, mtu) {
                    Some(reply) if pkt.set_frame(&reply) => {
                        sa.stats.too_big_sent += 1;
                        meta.egress = Egress::Port(meta.in_port);
                        Flow::Exit
                    }
                    _ => meta.drop_with(DropReason::IptfsTooBig),
                }
            }
            e => {
                sa.stats.push_errors += 1;
                meta.drop_with(match e {
                    iptfs::Error::QueueFull { .. } => DropReason::IptfsQueueFull,
                    _ => DropReason::IptfsBadInner,
                })
            }
        }
    }

    fn receive(&mut self, now: Nanos, pkt: &mut PacketBuf, meta: &mut Meta, dst: IpAddr) -> Flow {
        let h = meta.hdr;
        let (start, end) = (usize::from(h.l4_off), usize::from(h.l3_end));
        if h.fragment == Fragment::Later {
            // No ESP header in it to find the SA by: charged to the in SA of this address pair.
            let src = src_addr(pkt.frame(), &h);
            if let Some(sa) = self.sas.iter_mut().find(|s| {
                matches!(s.codec, Codec::In(_)) && s.local == dst && Some(s.remote) == src
            }) {
                sa.stats.outer_fragments += 1;
                self.dirty = true;
            }
            return meta.drop_with(DropReason::IptfsRxError);
        }
        let Some(spi) = pkt.frame().get(start..end).and_then(EspInbound::peek_spi) else {
            // Too short even for an SPI: no SA to charge it to.
            return meta.drop_with(DropReason::IptfsRxError);
        };
        let Some(&(_, i)) = self.by_spi.iter().find(|(s, _)| *s == spi) else {
            return meta.drop_with(DropReason::IptfsUnknownSpi);
        };
        let frame = pkt.frame();
        if self.sas[i].local != dst || src_addr(frame, &h) != Some(self.sas[i].remote) {
            // Not from this SA's peer (or to another of our addresses): never decrypted, so
            // a forged or misrouted packet cannot advance the replay window.
            self.sas[i].stats.outer_addr_mismatch += 1;
            self.dirty = true;
            return meta.drop_with(DropReason::IptfsRxError);
        }
        let outer_ce = ds_field(h.l3_bytes(frame)).is_some_and(|d| d & 3 == ECN_CE);
        if h.fragment != Fragment::None {
            // Outer IP fragments are not reassembled: dropped undecrypted, counted apart.
            self.sas[i].stats.outer_fragments += 1;
            self.dirty = true;
            return meta.drop_with(DropReason::IptfsRxError);
        }
        let Iptfs { sas, inbox, .. } = self;
        let Sa {
            codec,
            eth,
            port,
            stats,
            decrement_ttl,
            ecn,
            ..
        } = &mut sas[i];
        let Codec::In(rx) = codec else {
            return meta.drop_with(DropReason::IptfsUnknownSpi);
        };
        let Some(esp) = pkt.frame_mut().get_mut(start..end) else {
            return meta.drop_with(DropReason::IptfsRxError);
        };
        let exit = Exit {
            decrement_ttl: *decrement_ttl,
            ce: *ecn && outer_ce,
        };
        let mut deliver = |p: &[u8]| inbox.deliver(eth, *port, stats, exit, p);
        let res = rx.receive(now, esp, &mut deliver);
        self.dirty = true;
        match res {
            Ok(()) => {
                meta.egress = Egress::Consumed;
                Flow::Exit
            }
            Err(e) => {
                tracing::trace!(sa = %self.sas[i].name, "ESP refused: {e}");
                meta.drop_with(DropReason::IptfsRxError)
            }
        }
    }

    /// [`Stage::poll`] at time `now`: emits decoded inner packets and due outer packets, runs
    /// the receivers' timers; returns when to poll again.
    pub fn poll_at(&mut self, now: Nanos, out: &mut Emit<'_>) -> Option<Nanos> {
        let mut next: Option<Nanos> = None;
        let mut min = |t: Nanos| next = Some(next.map_or(t, |n: Nanos| n.min(t)));
        for i in 0..self.sas.len() {
            match &self.sas[i].codec {
                Codec::Out(_) => {
                    if let Some(t) = self.drain_sender(i, now, out) {
                        min(t);
                    }
                }
                Codec::In(_) => {
                    if let Some(t) = self.poll_receiver(i, now) {
                        min(t);
                    }
                }
            }
        }
        self.emit_ready(out);
        if self.dirty
            && (!self.saw_packets || now.saturating_sub(self.published_at) >= PUBLISH_EVERY)
        {
            self.publish(false);
            self.published_at = now;
        }
        self.saw_packets = false;
        next
    }

    /// Everything a sender has ready at `now`; returns its next deadline.
    fn drain_sender(&mut self, i: usize, now: Nanos, out: &mut Emit<'_>) -> Option<Nanos> {
        let sa = &mut self.sas[i];
        let Codec::Out(tx) = &mut sa.codec else {
            return None;
        };
        let hl = if sa.local.is_ipv4() { 20 } else { 40 };
        loop {
            let mut buf = out.buf();
            let space = buf.rx_space();
            let Some(esp) = space.get_mut(ETH_LEN + hl..) else {
                out.recycle(buf);
                return None;
            };
            let before = sa
                .shadow
                .as_ref()
                .map(|_| (tx.queued_bytes(), tx.counters()));
            let res = tx.poll(now, esp);
            let carried = match (&mut sa.shadow, before) {
                (Some(sh), Some((q, c))) => {
                    let taken = q.saturating_sub(tx.queued_bytes());
                    let stale = tx.counters().dropped_stale.saturating_sub(c.dropped_stale);
                    sh.take(taken, stale)
                }
                _ => Carried::default(),
            };
            match res {
                Ok(Poll::Send(sent)) => {
                    let ip_len = hl + sent.len;
                    let ds = outer_ds(sa.dscp, sa.ecn, carried);
                    write_outer(space, &sa.eth, (sa.local, sa.remote), ip_len, sa.ip_id, ds);
                    sa.ip_id = sa.ip_id.wrapping_add(1);
                    buf.set_len(ETH_LEN + ip_len);
                    out.send(sa.port, buf);
                    self.dirty = true;
                }
                Ok(Poll::Wait(t)) => {
                    out.recycle(buf);
                    return t;
                }
                Err(e) => {
                    out.recycle(buf);
                    if sa.stats.tx_errors == 0 {
                        tracing::warn!(sa = %sa.name, "IP-TFS sender stopped: {e}");
                    }
                    sa.stats.tx_errors += 1;
                    self.dirty = true;
                    return None;
                }
            }
        }
    }

    fn poll_receiver(&mut self, i: usize, now: Nanos) -> Option<Nanos> {
        let Iptfs { sas, inbox, .. } = self;
        let Sa {
            codec,
            eth,
            port,
            stats,
            decrement_ttl,
            ..
        } = &mut sas[i];
        let Codec::In(rx) = codec else {
            return None;
        };
        let before = inbox.pending();
        // Released by the timer: the outers they came in are gone, so no CE to apply.
        let exit = Exit {
            decrement_ttl: *decrement_ttl,
            ce: false,
        };
        let mut deliver = |p: &[u8]| inbox.deliver(eth, *port, stats, exit, p);
        let t = rx.poll(now, &mut deliver);
        if inbox.pending() != before {
            self.dirty = true;
        }
        t
    }

    /// Sends the framed inner packets and tops the spare buffers up from the pool.
    fn emit_ready(&mut self, out: &mut Emit<'_>) {
        let inbox = &mut self.inbox;
        let used = inbox.pending();
        if used > 0 {
            self.dirty = true;
        }
        for (port, buf) in inbox.ready.drain(..) {
            out.send(port, buf);
        }
        for (port, eth, s, e) in inbox.overflow_at.drain(..) {
            let mut buf = out.buf();
            frame_inner(&mut buf, &eth, &inbox.overflow[s..e]);
            out.send(port, buf);
        }
        inbox.overflow.clear();
        if !self.by_spi.is_empty() {
            let want = used.clamp(SPARE, MAX_SPARE);
            while inbox.spare.len() < want {
                inbox.spare.push(out.buf());
            }
            while inbox.spare.len() > want {
                if let Some(b) = inbox.spare.pop() {
                    out.recycle(b);
                }
            }
        }
    }

    /// [`Stage::finish`] at time `now`: senders send everything queued (as if their timers had
    /// fired), receivers declare pending gaps lost and deliver what they hold.
    pub fn finish_at(&mut self, now: Nanos, out: &mut Emit<'_>) {
        for i in 0..self.sas.len() {
            match &self.sas[i].codec {
                Codec::Out(_) => {
                    let mut t = now;
                    // Bounded: each round sends at least one outer or ends.
                    for _ in 0..1_000_000 {
                        let Some(due) = self.drain_sender(i, t, out) else {
                            break;
                        };
                        let Codec::Out(tx) = &self.sas[i].codec else {
                            break;
                        };
                        if tx.queued_bytes() == 0 {
                            break;
                        }
                        t = t.max(due);
                    }
                }
                Codec::In(_) => {
                    let mut t = now;
                    for _ in 0..1024 {
                        match self.poll_receiver(i, t) {
                            Some(due) => t = t.max(due),
                            None => break,
                        }
                    }
                }
            }
        }
        self.emit_ready(out);
        for b in self.inbox.spare.drain(..) {
            out.recycle(b);
        }
        self.publish(true);
    }

    /// Copies every SA's counters to the handle (skipped if the reader holds it, unless
    /// `force`).
    fn publish(&mut self, force: bool) {
        let fill = |v: &mut Vec<SaStats>| {
            v.clear();
            for sa in &self.sas {
                let mut counters = std::collections::BTreeMap::new();
                for (k, n) in handle::stage_fields(&sa.stats) {
                    counters.insert(k, n);
                }
                let (direction, mode, seq, queued) = match &sa.codec {
                    Codec::Out(tx) => {
                        for (k, n) in handle::tx_fields(&tx.counters()) {
                            counters.insert(k, n);
                        }
                        (
                            Direction::Out,
                            Some(sa.mode),
                            tx.esp().last_seq(),
                            tx.queued_bytes() as u64,
                        )
                    }
                    Codec::In(rx) => {
                        for (k, n) in handle::rx_fields(rx.counters()) {
                            counters.insert(k, n);
                        }
                        (Direction::In, None, rx.esp().replay_window().top(), 0)
                    }
                };
                v.push(SaStats {
                    name: sa.name.clone(),
                    direction,
                    spi: sa.spi,
                    mode,
                    local: sa.local,
                    remote: sa.remote,
                    port: sa.port,
                    seq,
                    queued_bytes: queued,
                    counters,
                });
            }
        };
        let done = if force {
            // The reader holds the lock only to clone: worth waiting for at start and end.
            let mut v = Vec::new();
            fill(&mut v);
            (0..1000).any(|_| {
                let ok = self.handle.try_publish(|g| g.clone_from(&v));
                if !ok {
                    std::thread::yield_now();
                }
                ok
            })
        } else {
            self.handle.try_publish(fill)
        };
        if done {
            self.dirty = false;
        }
    }
}

/// An ICMP "fragmentation needed" (IPv4, type 3 code 4) or ICMPv6 "packet too big" (type 2)
/// answering the IP packet in `frame`, from `src`, advertising `mtu`, with the frame's L2
/// header turned around. `None` when `src` is of the other family or the packet is itself an
/// ICMP error (never answer an error with an error).
fn too_big_reply(frame: &[u8], h: &Headers, src: IpAddr, mtu: usize) -> Option<Vec<u8>> {
    let l3 = h.l3_bytes(frame);
    let l2 = frame.get(..usize::from(h.l3_off))?;
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(l2.len() + 1280);
    out.extend_from_slice(l2);
    out[..6].copy_from_slice(frame.get(6..12)?);
    out[6..12].copy_from_slice(frame.get(..6)?);
    match (h.l3, src) {
        (L3Kind::Ipv4, IpAddr::V4(src)) => {
            let ihl = usize::from(l3.first()? & 0x0f) * 4;
            let icmp_type = l3.get(ihl).copied();
            if l3.get(9) == Some(&1) && matches!(icmp_type, Some(3 | 4 | 5 | 11 | 12)) {
                return None;
            }
            let quoted = &l3[..l3.len().min(ihl + 8)];
            let total = 20 + 8 + quoted.len();
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip[8] = OUTER_TTL;
            ip[9] = 1;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(l3.get(12..16)?);
            let c = !packet::checksum::data(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut icmp = vec![3u8, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&mtu.to_be_bytes());
            icmp.extend_from_slice(quoted);
            let c = !packet::checksum::data(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&icmp);
        }
        (L3Kind::Ipv6, IpAddr::V6(src)) => {
            if h.ip_proto == 58 && h.l4_bytes(frame).first().is_some_and(|t| *t < 128) {
                return None;
            }
            let dst: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            let dst = Ipv6Addr::from(dst);
            // The whole error fits the IPv6 minimum MTU.
            let quoted = &l3[..l3.len().min(1280 - 40 - 8)];
            let len = 8 + quoted.len();
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            ip[6] = 58;
            ip[7] = OUTER_TTL;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            let mut icmp = vec![2u8, 0, 0, 0];
            icmp.extend_from_slice(&u32::from(mtu).to_be_bytes());
            icmp.extend_from_slice(quoted);
            let pseudo = packet::checksum::ipv6_pseudo_header(src, dst, 58, len as u32);
            let c = !packet::checksum::combine(&[pseudo, packet::checksum::data(&icmp)]);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&icmp);
        }
        _ => return None,
    }
    Some(out)
}

/// Writes Ethernet and the outer IPv4/IPv6 header (ESP, DF set and flow label 0 as Linux,
/// TOS / traffic class `ds`) in front of an ESP packet already at `frame[14 + hl..]`.
fn write_outer(
    frame: &mut [u8],
    eth: &[u8; ETH_LEN],
    (src, dst): (IpAddr, IpAddr),
    ip_len: usize,
    id: u16,
    ds: u8,
) {
    frame[..12].copy_from_slice(&eth[..12]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut frame[ETH_LEN..ETH_LEN + 20];
            ip[0] = 0x45;
            ip[1] = ds;
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = OUTER_TTL;
            ip[9] = PROTO_ESP;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = !packet::checksum::data(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (s, d) => {
            frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let (s, d) = (v6(s), v6(d));
            let ip = &mut frame[ETH_LEN..ETH_LEN + 40];
            ip[0..4].copy_from_slice(&[0x60 | ds >> 4, (ds & 0x0f) << 4, 0, 0]);
            ip[4..6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
            ip[6] = PROTO_ESP;
            ip[7] = OUTER_TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
        }
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(v) => v,
        IpAddr::V4(v) => v.to_ipv6_mapped(),
    }
}

/// The IPv4 TTL or IPv6 hop limit of an IP packet.
fn ttl(ip: &[u8]) -> Option<u8> {
    match ip.first()? >> 4 {
        4 => ip.get(8).copied(),
        6 => ip.get(7).copied(),
        _ => None,
    }
}

/// The DS field (IPv4 TOS / IPv6 traffic class: DSCP << 2 | ECN) of an IP packet.
fn ds_field(ip: &[u8]) -> Option<u8> {
    let b1 = *ip.get(1)?;
    match ip.first()? >> 4 {
        4 => Some(b1),
        6 => Some((ip[0] & 0x0f) << 4 | b1 >> 4),
        _ => None,
    }
}

/// The IPv4 header checksum after the 16-bit word at `at` changed from `old` (RFC 1624).
fn fix_checksum(ip: &mut [u8], at: usize, old: [u8; 2]) {
    let (Some(new), Some(c)) = (ip.get(at..at + 2), ip.get(10..12)) else {
        return;
    };
    let new = u16::from_be_bytes([new[0], new[1]]);
    let c = packet::checksum::update16(
        u16::from_be_bytes([c[0], c[1]]),
        u16::from_be_bytes(old),
        new,
    );
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// What decrementing an inner packet's TTL / hop limit did.
enum Hop {
    /// It arrived with <= 1: not to be forwarded (left untouched).
    Expired,
    /// Decremented; the original bytes, to restore if the packet is not forwarded.
    Done(Undo),
}

/// The TTL / hop limit and IPv4 checksum of a packet before [`hop`].
#[derive(Debug, Clone, Copy)]
struct Undo {
    at: usize,
    ttl: u8,
    checksum: Option<[u8; 2]>,
}

impl Undo {
    fn apply(self, ip: &mut [u8]) {
        if let Some(t) = ip.get_mut(self.at) {
            *t = self.ttl;
        }
        if let (Some(c), Some(dst)) = (self.checksum, ip.get_mut(10..12)) {
            dst.copy_from_slice(&c);
        }
    }
}

/// Decrements the TTL (fixing the IPv4 checksum) or hop limit, as a forwarding router.
/// `None` for a packet too short to have one (the parser has vouched for the header, so this
/// does not happen; such a packet is sent on unchanged).
fn hop(ip: &mut [u8]) -> Option<Hop> {
    let v4 = ip.first()? >> 4 == 4;
    let at = if v4 { 8 } else { 7 };
    let ttl = *ip.get(at)?;
    if ttl <= 1 {
        return Some(Hop::Expired);
    }
    let checksum = if v4 {
        let c: [u8; 2] = ip.get(10..12)?.try_into().ok()?;
        let old: [u8; 2] = ip.get(8..10)?.try_into().ok()?;
        ip[8] = ttl - 1;
        fix_checksum(ip, 8, old);
        Some(c)
    } else {
        ip[7] = ttl - 1;
        None
    };
    Some(Hop::Done(Undo { at, ttl, checksum }))
}

/// The exit router's changes to a decapsulated inner packet (already checked by
/// `Inbox::deliver`): TTL / hop limit decremented, CE set when the outer was CE. Returns
/// whether it marked CE.
fn patch_exit(ip: &mut [u8], exit: Exit) -> bool {
    if exit.decrement_ttl {
        let _ = hop(ip);
    }
    if !exit.ce || ds_field(ip).is_none_or(|d| d & 3 == 0 || d & 3 == ECN_CE) {
        return false;
    }
    if ip[0] >> 4 == 4 {
        let old = [ip[0], ip[1]];
        ip[1] |= ECN_CE;
        fix_checksum(ip, 0, old);
    } else {
        // ECN is the low two bits of the traffic class: bits 5..4 of octet 1.
        ip[1] |= ECN_CE << 4;
    }
    true
}

/// The IP source of a parsed IPv4/IPv6 frame.
fn src_addr(frame: &[u8], h: &Headers) -> Option<IpAddr> {
    ip_addr_at(frame, h, 12, 8)
}

/// The IP destination of a parsed IPv4/IPv6 frame.
fn dst_addr(frame: &[u8], h: &Headers) -> Option<IpAddr> {
    ip_addr_at(frame, h, 16, 24)
}

/// The address at header offset `v4` (IPv4) or `v6` (IPv6) of a parsed frame.
fn ip_addr_at(frame: &[u8], h: &Headers, v4: usize, v6: usize) -> Option<IpAddr> {
    let l3 = usize::from(h.l3_off);
    match h.l3 {
        L3Kind::Ipv4 => {
            let b: [u8; 4] = frame.get(l3 + v4..l3 + v4 + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        L3Kind::Ipv6 => {
            let b: [u8; 16] = frame.get(l3 + v6..l3 + v6 + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

impl Stage for Iptfs {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn begin_batch(&mut self) {
        self.now = self.nanos(Instant::now());
    }

    fn process(&mut self, pkt: &mut PacketBuf, meta: &mut Meta) -> Flow {
        self.process_at(self.now, pkt, meta)
    }

    fn wants_poll(&self) -> bool {
        true
    }

    fn poll(&mut self, now: Instant, out: &mut Emit<'_>) -> Option<Instant> {
        let n = self.nanos(now);
        self.now = self.now.max(n);
        self.poll_at(n, out)
            .map(|t| self.epoch + Duration::from_nanos(t))
    }

    fn finish(&mut self, now: Instant, out: &mut Emit<'_>) {
        let n = self.nanos(now);
        self.finish_at(n, out);
    }
}
