//! AGGFRAG/IP-TFS receiver (RFC 9347 §2.2, §2.5, §2.6): ESP open, reorder window with a
//! lost-packet timer, BlockOffset tracking and reassembly, counted errors.
//!
//! Inner packets are handed to a caller closure as slices: complete blocks straight out of the
//! caller's (decrypted in place) buffer, reassembled packets out of one reusable buffer. Only
//! outer payloads that arrive out of order are copied (into recycled buffers).

use std::collections::VecDeque;

use crate::Nanos;
use crate::aggfrag::{BlockKind, CcInfo, Header, block_kind, inner_len};
use crate::error::{Error, Result};
use crate::esp::{EspInbound, NH_AGGFRAG, NH_IPV4, NH_IPV6, NH_NONE};

/// Inbound SA configuration: RFC 9348 and Linux knobs that belong to the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Reorder window (Linux `reorder-window`, default 3): how far past the next expected
    /// sequence number an outer may arrive and be held; 0 = no reordering, a gap is a loss.
    pub reorder_window: u16,
    /// Lost-packet timer (Linux `drop-time`, default 1 s): a gap older than this is declared
    /// lost, and a reassembly without progress for this long is abandoned.
    pub drop_time: Nanos,
    /// Delivery style (a) (RFC 9348 `send-immediately`): complete inner packets of an
    /// out-of-order outer are delivered at once instead of after the gap is resolved.
    pub send_immediately: bool,
    /// Drop AGGFRAG payloads with a non-zero flags octet as Linux does (default); when false the
    /// P/E flags of sub-type 1 are accepted and reserved bits ignored as RFC 9347 says.
    pub strict_flags: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            reorder_window: 3,
            drop_time: 1_000_000_000,
            send_immediately: false,
            strict_flags: true,
        }
    }
}

/// Receiver counters. RFC 9348 names: `received-packets` = `outer_packets`, `incomplete-packets`
/// = `incomplete_packets`, `missed-packets` = `missed_packets`, `errored-packets` = `errored()`,
/// `all-pad-packets`/`octets` as here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// ESP packets that verified (ICV good, not replayed).
    pub outer_packets: u64,
    /// Their ESP octets.
    pub outer_octets: u64,
    /// Shorter than ESP header + IV + trailer + ICV.
    pub truncated: u64,
    /// SPI not this SA's.
    pub wrong_spi: u64,
    /// Replayed sequence number.
    pub replayed: u64,
    /// Sequence number left of the replay window.
    pub too_old: u64,
    /// ICV failure.
    pub bad_icv: u64,
    /// Bad ESP padding.
    pub bad_pad: u64,
    /// Unsupported next header.
    pub bad_next_header: u64,
    /// AGGFRAG payload shorter than its header.
    pub aggfrag_truncated: u64,
    /// Unknown sub-type.
    pub bad_subtype: u64,
    /// Non-zero flags octet (strict mode).
    pub bad_flags: u64,
    /// Plain tunnel-mode ESP packets (next header 4/41).
    pub plain_packets: u64,
    /// Dummy packets (next header 59).
    pub dummy_packets: u64,
    /// All-pad AGGFRAG payloads.
    pub all_pad_packets: u64,
    /// Pad-block octets.
    pub pad_octets: u64,
    /// Inner packets delivered.
    pub inner_packets: u64,
    /// Inner octets delivered.
    pub inner_octets: u64,
    /// Outer sequence numbers declared lost (window overflow or timer).
    pub missed_packets: u64,
    /// Declared lost by the timer (subset of `missed_packets`).
    pub timer_losses: u64,
    /// Arrived after their sequence number was declared lost or passed.
    pub late_packets: u64,
    /// Arrived out of order and were held.
    pub reordered_packets: u64,
    /// Same sequence number twice in the reorder buffer.
    pub duplicate_packets: u64,
    /// Reassemblies abandoned (loss, timer, inconsistency): inner packets lost in part.
    pub incomplete_packets: u64,
    /// BlockOffset inconsistent with the packet being reassembled.
    pub inconsistent_offsets: u64,
    /// Inner length field impossible (IPv4 total length < 20, runt that ends early).
    pub bad_inner_length: u64,
    /// Data block with an undefined type nibble (rest of payload dropped).
    pub unknown_blocks: u64,
    /// Continuation octets skipped because their packet's start was never seen.
    pub skipped_octets: u64,
}

impl RxCounters {
    /// RFC 9348 `errored-packets`: outer packets dropped for a format or crypto error.
    pub fn errored(&self) -> u64 {
        self.truncated
            + self.wrong_spi
            + self.bad_icv
            + self.bad_pad
            + self.bad_next_header
            + self.aggfrag_truncated
            + self.bad_subtype
            + self.bad_flags
    }

    fn count(&mut self, e: &Error) {
        match e {
            Error::Truncated { .. } => self.truncated += 1,
            Error::WrongSpi { .. } => self.wrong_spi += 1,
            Error::Replayed { .. } => self.replayed += 1,
            Error::TooOld { .. } => self.too_old += 1,
            Error::BadIcv => self.bad_icv += 1,
            Error::BadPad => self.bad_pad += 1,
            Error::BadNextHeader { .. } => self.bad_next_header += 1,
            Error::AggfragTruncated { .. } => self.aggfrag_truncated += 1,
            Error::BadSubtype { .. } => self.bad_subtype += 1,
            Error::BadFlags { .. } => self.bad_flags += 1,
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// AGGFRAG payload: header length and BlockOffset.
    Agg { hdr_len: usize, offset: u16 },
    /// Advances the sequence without touching reassembly (plain/dummy, already delivered).
    Skip,
    /// Verified but unusable: counts as a loss for reassembly.
    Broken,
}

#[derive(Debug)]
struct Slot {
    kind: Kind,
    buf: Vec<u8>,
    /// Immediate mode: complete blocks before this position were already delivered.
    resume_at: Option<usize>,
    /// Arrival time, for the lost-packet timer.
    at: Nanos,
}

#[derive(Debug, Default)]
struct Reasm {
    buf: Vec<u8>,
    /// Total length once known; 0 while the header is still a runt.
    need: usize,
    active: bool,
    since: Nanos,
}

/// One inbound AGGFRAG (or plain ESP) SA.
#[derive(Debug)]
pub struct Receiver {
    esp: EspInbound,
    cfg: ReceiverConfig,
    /// Next sequence number to process in order.
    expected: Option<u64>,
    /// `pending[i]` holds sequence number `expected + i`; non-empty means a gap at `expected`.
    pending: VecDeque<Option<Slot>>,
    free: Vec<Vec<u8>>,
    reasm: Reasm,
    cc: Option<(CcInfo, Nanos)>,
    counters: RxCounters,
}

impl Receiver {
    /// Creates a receiver over an inbound ESP SA.
    pub fn new(cfg: ReceiverConfig, esp: EspInbound) -> Result<Self> {
        if cfg.drop_time == 0 {
            return Err(Error::InvalidConfig {
                field: "drop_time",
                reason: "must be > 0".into(),
            });
        }
        Ok(Self {
            esp,
            cfg,
            expected: Some(1),
            pending: VecDeque::new(),
            free: Vec::new(),
            reasm: Reasm::default(),
            cc: None,
            counters: RxCounters::default(),
        })
    }

    /// Joins a stream mid-way (e.g. replaying a capture): the next outer the receiver
    /// processes is whatever arrives next, instead of sequence number 1 of a fresh SA.
    /// Outers held for reordering are discarded and any reassembly is abandoned.
    pub fn resync(&mut self) {
        self.abandon();
        for s in self.pending.drain(..).flatten() {
            self.free.push(s.buf);
        }
        self.expected = None;
    }

    /// Counters so far.
    pub fn counters(&self) -> &RxCounters {
        &self.counters
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// The ESP SA.
    pub fn esp(&self) -> &EspInbound {
        &self.esp
    }

    /// Last sub-type 1 info received and when; feed it to the reverse SA's
    /// [`crate::Sender::on_peer_cc`].
    pub fn last_cc(&self) -> Option<(CcInfo, Nanos)> {
        self.cc
    }

    /// Rough inverse loss rate (outers received per outer missed; 0 = no loss) for sub-type 1
    /// feedback. Not RFC 5348's weighted loss intervals.
    pub fn loss_event_rate(&self) -> u32 {
        if self.counters.missed_packets == 0 {
            return 0;
        }
        (self.counters.outer_packets / self.counters.missed_packets).clamp(1, u32::MAX as u64)
            as u32
    }

    /// Handles one ESP packet (SPI to ICV; decrypted in place). Inner packets that become
    /// deliverable are passed to `deliver`. Errors are counted and returned so the caller can
    /// log them; the packet is then dropped.
    pub fn receive<F: FnMut(&[u8])>(
        &mut self,
        now: Nanos,
        pkt: &mut [u8],
        deliver: &mut F,
    ) -> Result<()> {
        let opened = match self.esp.open(pkt) {
            Ok(o) => o,
            Err(e) => {
                self.counters.count(&e);
                return Err(e);
            }
        };
        self.counters.outer_packets += 1;
        self.counters.outer_octets += pkt.len() as u64;
        let payload = &pkt[opened.payload];
        let mut err = None;
        let kind = match opened.next_header {
            NH_AGGFRAG => match Header::parse(payload, self.cfg.strict_flags) {
                Ok(h) => {
                    if let Some(cc) = h.cc {
                        self.cc = Some((cc, now));
                    }
                    Kind::Agg {
                        hdr_len: h.len(),
                        offset: h.block_offset,
                    }
                }
                Err(e) => {
                    err = Some(e);
                    Kind::Broken
                }
            },
            NH_IPV4 | NH_IPV6 => {
                // Plain tunnel mode: the payload is one inner packet, maybe followed by TFC pad.
                match inner_len(payload) {
                    Some(l) => {
                        self.counters.plain_packets += 1;
                        self.deliver_one(&payload[..l], deliver);
                    }
                    None => self.counters.bad_inner_length += 1,
                }
                Kind::Skip
            }
            NH_NONE => {
                self.counters.dummy_packets += 1;
                Kind::Skip
            }
            next_header => {
                err = Some(Error::BadNextHeader { next_header });
                Kind::Broken
            }
        };
        if let Some(e) = &err {
            self.counters.count(e);
        }
        self.sequence(now, opened.seq, kind, payload, deliver);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs the timers: declares a gap older than `drop_time` lost, abandons a stalled
    /// reassembly. Returns when to call again (`None`: nothing pending).
    pub fn poll<F: FnMut(&[u8])>(&mut self, now: Nanos, deliver: &mut F) -> Option<Nanos> {
        let dt = self.cfg.drop_time;
        // A held outer that waited `drop_time` forces every gap before it to be declared lost.
        while self
            .oldest_held()
            .is_some_and(|t| now >= t.saturating_add(dt))
        {
            self.counters.timer_losses += 1;
            self.lose_head(now, deliver);
        }
        if self.reasm.active && now >= self.reasm.since.saturating_add(dt) {
            self.abandon();
        }
        let a = self.oldest_held().map(|t| t.saturating_add(dt));
        let b = self
            .reasm
            .active
            .then(|| self.reasm.since.saturating_add(dt));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn oldest_held(&self) -> Option<Nanos> {
        self.pending.iter().flatten().map(|s| s.at).min()
    }

    fn deliver_one<F: FnMut(&[u8])>(&mut self, p: &[u8], deliver: &mut F) {
        self.counters.inner_packets += 1;
        self.counters.inner_octets += p.len() as u64;
        deliver(p);
    }

    fn sequence<F: FnMut(&[u8])>(
        &mut self,
        now: Nanos,
        seq: u64,
        kind: Kind,
        payload: &[u8],
        deliver: &mut F,
    ) {
        let w = self.cfg.reorder_window as u64;
        let e = *self.expected.get_or_insert(seq);
        if seq < e {
            self.counters.late_packets += 1;
            return;
        }
        if seq > e && w == 0 {
            // No reordering: everything between is lost.
            self.counters.missed_packets += seq - e;
            self.abandon();
            self.expected = Some(seq);
        }
        while let Some(x) = self.expected.filter(|&x| seq > x && seq - x > w) {
            if self.pending.is_empty() {
                // Nothing held: jump in O(1) however large the gap.
                let n = seq - w - x;
                self.counters.missed_packets += n;
                self.abandon();
                self.expected = Some(x + n);
                break;
            }
            self.lose_head(now, deliver);
        }
        let e = self.expected.unwrap_or(seq);
        if seq < e {
            // Only reachable when the replay window is smaller than the reorder window.
            self.counters.late_packets += 1;
            return;
        }
        if seq == e {
            self.process(now, kind, payload, None, deliver);
            self.expected = Some(e + 1);
            self.pending.pop_front();
            self.drain(now, deliver);
            return;
        }
        let idx = (seq - e) as usize;
        if self.pending.len() <= idx {
            self.pending.resize_with(idx + 1, || None);
        }
        if self.pending[idx].is_some() {
            self.counters.duplicate_packets += 1;
            return;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        let mut resume_at = None;
        if let Kind::Agg { hdr_len, offset } = kind {
            let data = payload.get(hdr_len..).unwrap_or(&[]);
            buf.extend_from_slice(data);
            if self.cfg.send_immediately && (offset as usize) < data.len() {
                resume_at = Some(self.pre_deliver(data, offset as usize, deliver));
            }
        }
        self.pending[idx] = Some(Slot {
            kind,
            buf,
            resume_at,
            at: now,
        });
        self.counters.reordered_packets += 1;
    }

    /// Declares `expected` lost and processes whatever then becomes in order.
    fn lose_head<F: FnMut(&[u8])>(&mut self, now: Nanos, deliver: &mut F) {
        let Some(e) = self.expected else { return };
        self.counters.missed_packets += 1;
        self.abandon();
        self.expected = Some(e + 1);
        self.pending.pop_front();
        self.drain(now, deliver);
    }

    fn drain<F: FnMut(&[u8])>(&mut self, now: Nanos, deliver: &mut F) {
        while let Some(Some(_)) = self.pending.front() {
            let Some(Some(slot)) = self.pending.pop_front() else {
                break;
            };
            let kind = match slot.kind {
                Kind::Agg { offset, .. } => Kind::Agg { hdr_len: 0, offset },
                k => k,
            };
            self.process(now, kind, &slot.buf, slot.resume_at, deliver);
            self.free.push(slot.buf);
            self.expected = self.expected.map(|e| e + 1);
        }
    }

    fn abandon(&mut self) {
        if self.reasm.active {
            self.counters.incomplete_packets += 1;
            self.reasm.active = false;
            self.reasm.buf.clear();
            self.reasm.need = 0;
        }
    }

    fn process<F: FnMut(&[u8])>(
        &mut self,
        now: Nanos,
        kind: Kind,
        payload: &[u8],
        resume_at: Option<usize>,
        deliver: &mut F,
    ) {
        match kind {
            Kind::Skip => {}
            Kind::Broken => self.abandon(),
            Kind::Agg { hdr_len, offset } => {
                let data = payload.get(hdr_len..).unwrap_or(&[]);
                self.decode(now, data, offset as usize, resume_at, deliver);
            }
        }
    }

    /// In-order decode of one payload's DataBlocks.
    fn decode<F: FnMut(&[u8])>(
        &mut self,
        now: Nanos,
        d: &[u8],
        off: usize,
        resume_at: Option<usize>,
        deliver: &mut F,
    ) {
        let dlen = d.len();
        let mut p;
        if self.reasm.active {
            if off == 0 {
                if d.first().is_none_or(|b| b >> 4 == 0) {
                    // All-pad between fragments: the continuation comes one seq later.
                    self.counters.all_pad_packets += 1;
                    self.counters.pad_octets += dlen as u64;
                    return;
                }
                self.counters.inconsistent_offsets += 1;
                self.abandon();
                p = 0;
            } else {
                let before = self.reasm.buf.len();
                let total = before + off;
                if self.reasm.need != 0 && self.reasm.need != total {
                    self.counters.inconsistent_offsets += 1;
                    self.abandon();
                    if off >= dlen {
                        self.counters.skipped_octets += dlen as u64;
                        return;
                    }
                    p = off;
                } else {
                    let take = off.min(dlen);
                    self.reasm.buf.extend_from_slice(&d[..take]);
                    self.reasm.since = now;
                    if self.reasm.need == 0 {
                        match block_kind(&self.reasm.buf) {
                            BlockKind::Packet(l) if l == total => self.reasm.need = l,
                            BlockKind::Packet(_) => {
                                self.counters.inconsistent_offsets += 1;
                                self.abandon();
                            }
                            BlockKind::NeedMore(_) => {
                                if off <= dlen {
                                    // The block ended before its length field did.
                                    self.counters.bad_inner_length += 1;
                                    self.abandon();
                                }
                            }
                            _ => {
                                self.counters.bad_inner_length += 1;
                                self.abandon();
                            }
                        }
                    }
                    if self.reasm.active && off <= dlen {
                        let buf = std::mem::take(&mut self.reasm.buf);
                        self.deliver_one(&buf, deliver);
                        self.reasm.buf = buf;
                        self.reasm.buf.clear();
                        self.reasm.active = false;
                        self.reasm.need = 0;
                    }
                    if off >= dlen {
                        return;
                    }
                    p = off;
                }
            }
        } else if off > 0 {
            self.counters.skipped_octets += off.min(dlen) as u64;
            if off >= dlen {
                return;
            }
            p = off;
        } else {
            p = 0;
        }
        if let Some(r) = resume_at {
            p = p.max(r);
        }
        self.parse_blocks(now, d, p, deliver);
    }

    fn parse_blocks<F: FnMut(&[u8])>(
        &mut self,
        now: Nanos,
        d: &[u8],
        mut p: usize,
        deliver: &mut F,
    ) {
        let dlen = d.len();
        while p < dlen {
            match block_kind(&d[p..]) {
                BlockKind::Pad => {
                    if p == 0 {
                        self.counters.all_pad_packets += 1;
                    }
                    self.counters.pad_octets += (dlen - p) as u64;
                    return;
                }
                BlockKind::Packet(l) if p + l <= dlen => {
                    self.deliver_one(&d[p..p + l], deliver);
                    p += l;
                }
                BlockKind::Packet(l) => {
                    self.start_reasm(now, &d[p..], l);
                    return;
                }
                BlockKind::NeedMore(_) => {
                    self.start_reasm(now, &d[p..], 0);
                    return;
                }
                BlockKind::BadLength(_) => {
                    self.counters.bad_inner_length += 1;
                    return;
                }
                BlockKind::Unknown(_) => {
                    self.counters.unknown_blocks += 1;
                    return;
                }
            }
        }
    }

    fn start_reasm(&mut self, now: Nanos, part: &[u8], need: usize) {
        self.reasm.buf.clear();
        self.reasm.buf.extend_from_slice(part);
        self.reasm.need = need;
        self.reasm.active = true;
        self.reasm.since = now;
    }

    /// Immediate delivery of the complete blocks of an out-of-order payload; returns where
    /// in-order processing must resume (the first block not delivered).
    fn pre_deliver<F: FnMut(&[u8])>(&mut self, d: &[u8], mut p: usize, deliver: &mut F) -> usize {
        while p < d.len() {
            match block_kind(&d[p..]) {
                BlockKind::Packet(l) if p + l <= d.len() => {
                    self.deliver_one(&d[p..p + l], deliver);
                    p += l;
                }
                _ => break,
            }
        }
        p
    }
}
