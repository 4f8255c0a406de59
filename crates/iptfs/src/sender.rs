//! AGGFRAG/IP-TFS sender (RFC 9347 §2, §3): queues inner packets and builds sealed ESP packets.
//!
//! Driven entirely by the caller: [`Sender::push`] queues an inner packet, [`Sender::poll`]
//! returns the next outer ESP packet to send now (written into the caller's buffer) or the time
//! at which to poll again. No threads, no clocks: `now` is any monotonic nanosecond count.

use std::collections::VecDeque;

use crate::Nanos;
use crate::aggfrag::{CC_HEADER_LEN, CcInfo, FLAG_E, HEADER_LEN, Header, inner_len};
use crate::error::{Error, Result};
use crate::esp::{self, EspOutbound, NH_AGGFRAG, NH_IPV4, NH_IPV6, PAYLOAD_OFFSET};

/// Largest inner packet accepted (BlockOffset is 16 bits).
pub const MAX_INNER_LEN: usize = 65535;

/// How outer packets are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Linux `iptfs` mode: send as soon as data is queued (after `init_delay`, or at once when a
    /// full outer is ready); outer size follows the content, no AGGFRAG padding.
    Demand,
    /// IP-TFS proper: exactly one outer of `outer_packet_size` every `interval`, padded, and
    /// all-pad outers when idle.
    ConstantRate {
        /// Time between outer packets.
        interval: Nanos,
    },
    /// Aggregation off: plain RFC 4303 tunnel mode, one inner packet per ESP packet, next
    /// header 4/41. The baseline IP-TFS is compared against.
    Plain,
}

impl SendMode {
    /// Constant rate from an L3 bit rate (outer IP octets per second × 8), as RFC 9348's
    /// `l3-fixed-rate`.
    pub fn l3_rate(bits_per_sec: u64, outer_packet_size: usize) -> Result<Self> {
        if bits_per_sec == 0 {
            return Err(Error::InvalidConfig {
                field: "rate",
                reason: "must be > 0".into(),
            });
        }
        let interval =
            (outer_packet_size as u128 * 8 * 1_000_000_000 / bits_per_sec as u128) as u64;
        Ok(SendMode::ConstantRate {
            interval: interval.max(1),
        })
    }
}

/// Outbound SA configuration: RFC 9348 and Linux knobs that belong to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Demand / constant rate / plain.
    pub mode: SendMode,
    /// Outer IP packet size in octets including the outer IP header (Linux `pkt-size`, RFC 9348
    /// `outer-packet-size`): fixed size in constant-rate mode, maximum otherwise.
    pub outer_packet_size: usize,
    /// Outer IP header length: 20 (IPv4) or 40 (IPv6); the caller writes that header.
    pub outer_header_len: usize,
    /// Never fragment inner packets (Linux `dont-frag`): oversize packets are refused with
    /// [`Error::TooBig`] and a packet that does not fit what is left of an outer waits.
    pub dont_fragment: bool,
    /// Append a packet to a non-empty outer only if it fits whole (Linux's packing: only the
    /// first packet of an outer may be split). Off = fill every outer completely.
    pub whole_packets_only: bool,
    /// Demand mode: wait this long after the first queued packet before sending (Linux
    /// `init-delay`), unless a full outer is ready.
    pub init_delay: Nanos,
    /// Drop inner packets that waited longer than this before their first octet was sent
    /// (RFC 9348 `max-aggregation-time`).
    pub max_aggregation_time: Option<Nanos>,
    /// Send-queue limit in octets (Linux `max-queue-size`, default 10 MiB).
    pub max_queue_bytes: usize,
    /// Send the sub-type 1 congestion-control header instead of sub-type 0.
    pub congestion_control: bool,
}

impl SenderConfig {
    /// Linux defaults: demand mode, 1500-octet IPv4 outers, no init delay, 10 MiB queue.
    pub fn linux_demand() -> Self {
        Self {
            mode: SendMode::Demand,
            outer_packet_size: 1500,
            outer_header_len: 20,
            dont_fragment: false,
            whole_packets_only: true,
            init_delay: 0,
            max_aggregation_time: None,
            max_queue_bytes: 10_485_760,
            congestion_control: false,
        }
    }

    /// IP-TFS constant rate with fully packed outers of `outer_packet_size`.
    pub fn constant_rate(outer_packet_size: usize, interval: Nanos) -> Self {
        Self {
            mode: SendMode::ConstantRate { interval },
            outer_packet_size,
            whole_packets_only: false,
            ..Self::linux_demand()
        }
    }

    /// Plain ESP tunnel mode (aggregation off).
    pub fn plain() -> Self {
        Self {
            mode: SendMode::Plain,
            ..Self::linux_demand()
        }
    }
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self::linux_demand()
    }
}

/// How many constant-rate slots a late `poll` still sends (back to back) before it skips
/// slots: a scheduler delay of a few milliseconds then costs timing jitter, not packets, and
/// the outer rate over a second stays exact.
pub const CATCH_UP_SLOTS: u64 = 8;

/// Sender counters (RFC 9348 tx counters and more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Outer ESP packets produced.
    pub outer_packets: u64,
    /// Their ESP octets (without the outer IP header).
    pub outer_octets: u64,
    /// Inner packets accepted by `push`.
    pub inner_packets: u64,
    /// Inner octets accepted by `push`.
    pub inner_octets: u64,
    /// Inner packets split across more than one outer.
    pub fragmented_packets: u64,
    /// Outers carrying only padding.
    pub all_pad_packets: u64,
    /// AGGFRAG payload octets in all-pad outers.
    pub all_pad_octets: u64,
    /// Outers that carried data and a pad block.
    pub extra_pad_packets: u64,
    /// Pad-block octets in outers that also carried data.
    pub extra_pad_octets: u64,
    /// Inner packets refused: queue full.
    pub dropped_queue_full: u64,
    /// Inner packets refused: too big / not IP.
    pub dropped_bad: u64,
    /// Inner packets dropped after waiting longer than `max_aggregation_time`.
    pub dropped_stale: u64,
    /// Constant-rate slots skipped because `poll` was called more than
    /// [`CATCH_UP_SLOTS`] slots late.
    pub missed_slots: u64,
    /// Constant-rate slots sent late (the caller was behind by at most [`CATCH_UP_SLOTS`]):
    /// their outers went out back to back to hold the rate.
    pub late_slots: u64,
}

/// What [`Sender::poll`] wants the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// An ESP packet of `len` octets is in the caller's buffer: prepend the outer IP header and
    /// send it, then poll again.
    Send(Sent),
    /// Nothing to send now; poll again at this time (or after the next `push` when `None`).
    Wait(Option<Nanos>),
}

/// Description of one produced ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// ESP length (SPI to ICV).
    pub len: usize,
    /// ESP sequence number used.
    pub seq: u64,
    /// True for an all-pad outer.
    pub all_pad: bool,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    len: u32,
    at: Nanos,
}

#[derive(Debug, Clone, Copy, Default)]
struct CcState {
    peer_tval: Option<(u32, Nanos)>,
    rtt_us: u32,
    loss_event_rate: u32,
    ecn_loss: bool,
}

/// The AGGFRAG framing core, without ESP or timing: a queue of inner packets cut into
/// DataBlocks of any size with correct BlockOffsets. [`Sender`] uses it; it is public for
/// other transports and for tests that need exact payload sizes (RFC 9347 Appendix A).
#[derive(Debug, Default)]
pub struct Framer {
    bytes: VecDeque<u8>,
    pkts: VecDeque<Queued>,
    /// Octets of the head packet already framed.
    head_sent: usize,
    fragmented: u64,
    dropped_stale: u64,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an inner packet (copied) with its enqueue time. The caller validates it.
    pub fn push(&mut self, now: Nanos, pkt: &[u8]) {
        self.bytes.extend(pkt);
        self.pkts.push_back(Queued {
            len: pkt.len() as u32,
            at: now,
        });
    }

    /// Octets queued and not yet framed.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Inner packets queued, including one partly framed.
    pub fn queued_packets(&self) -> usize {
        self.pkts.len()
    }

    /// Enqueue time of the oldest queued packet.
    pub fn oldest(&self) -> Option<Nanos> {
        self.pkts.front().map(|q| q.at)
    }

    /// Inner packets split so far.
    pub fn fragmented_packets(&self) -> u64 {
        self.fragmented
    }

    /// Inner packets dropped for waiting longer than `max_age`.
    pub fn dropped_stale(&self) -> u64 {
        self.dropped_stale
    }

    /// Drops packets at the head that waited more than `max_age` (never a partly sent one).
    pub fn drop_stale(&mut self, now: Nanos, max_age: Option<Nanos>) {
        let Some(max) = max_age else { return };
        while self.head_sent == 0 {
            match self.pkts.front() {
                Some(q) if now.saturating_sub(q.at) > max => {
                    let l = q.len as usize;
                    self.bytes.drain(..l);
                    self.pkts.pop_front();
                    self.dropped_stale += 1;
                }
                _ => break,
            }
        }
    }

    /// Takes the next whole packet (plain ESP) into `out`; returns its length.
    pub fn pop_whole(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.head_sent != 0 {
            return None;
        }
        let l = self.pkts.front()?.len as usize;
        let dst = out.get_mut(..l)?;
        take_front(&mut self.bytes, dst);
        self.pkts.pop_front();
        Some(l)
    }

    /// Fills `data` with DataBlocks; returns (octets used, BlockOffset). With `whole_only` a
    /// packet is appended to a non-empty `data` only if it fits entirely. Unused octets are
    /// left untouched (the caller pads or shortens the payload).
    pub fn fill(
        &mut self,
        now: Nanos,
        data: &mut [u8],
        whole_only: bool,
        max_age: Option<Nanos>,
    ) -> (usize, u16) {
        let cap = data.len();
        let mut pos = 0;
        let mut offset = 0u16;
        if self.head_sent > 0 {
            let Some(head) = self.pkts.front() else {
                return (0, 0);
            };
            let rem = head.len as usize - self.head_sent;
            offset = rem.min(u16::MAX as usize) as u16;
            let n = rem.min(cap);
            take_front(&mut self.bytes, &mut data[..n]);
            pos = n;
            if n == rem {
                self.pkts.pop_front();
                self.head_sent = 0;
            } else {
                self.head_sent += n;
                return (pos, offset);
            }
        }
        while pos < cap {
            self.drop_stale(now, max_age);
            let Some(head) = self.pkts.front() else { break };
            let l = head.len as usize;
            let avail = cap - pos;
            if l <= avail {
                take_front(&mut self.bytes, &mut data[pos..pos + l]);
                pos += l;
                self.pkts.pop_front();
            } else if whole_only && pos > 0 {
                break;
            } else {
                take_front(&mut self.bytes, &mut data[pos..cap]);
                self.head_sent = avail;
                self.fragmented += 1;
                pos = cap;
            }
        }
        (pos, offset)
    }
}

/// One outbound AGGFRAG (or plain ESP) SA.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    esp: EspOutbound,
    esp_room: usize,
    payload_cap: usize,
    data_cap: usize,
    hdr_len: usize,
    framer: Framer,
    next_slot: Option<Nanos>,
    flushing: bool,
    cc: CcState,
    counters: TxCounters,
}

fn take_front(q: &mut VecDeque<u8>, out: &mut [u8]) {
    let n = out.len();
    let (a, b) = q.as_slices();
    let na = a.len().min(n);
    out[..na].copy_from_slice(&a[..na]);
    if na < n {
        out[na..].copy_from_slice(&b[..n - na]);
    }
    q.drain(..n);
}

impl Sender {
    /// Creates a sender over an outbound ESP SA.
    pub fn new(cfg: SenderConfig, esp: EspOutbound) -> Result<Self> {
        if cfg.outer_header_len != 20 && cfg.outer_header_len != 40 {
            return Err(Error::InvalidConfig {
                field: "outer_header_len",
                reason: format!("{} (must be 20 or 40)", cfg.outer_header_len),
            });
        }
        if let SendMode::ConstantRate { interval: 0 } = cfg.mode {
            return Err(Error::InvalidConfig {
                field: "interval",
                reason: "must be > 0".into(),
            });
        }
        let esp_room = cfg.outer_packet_size.saturating_sub(cfg.outer_header_len);
        let payload_cap = esp::max_payload(esp_room);
        let hdr_len = if cfg.congestion_control {
            CC_HEADER_LEN
        } else {
            HEADER_LEN
        };
        if payload_cap < hdr_len + 1 {
            return Err(Error::InvalidConfig {
                field: "outer_packet_size",
                reason: format!("{} leaves no room for data", cfg.outer_packet_size),
            });
        }
        let data_cap = payload_cap - hdr_len;
        Ok(Self {
            cfg,
            esp,
            esp_room,
            payload_cap,
            data_cap,
            hdr_len,
            framer: Framer::new(),
            next_slot: None,
            flushing: false,
            cc: CcState::default(),
            counters: TxCounters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn counters(&self) -> TxCounters {
        TxCounters {
            fragmented_packets: self.framer.fragmented_packets(),
            dropped_stale: self.framer.dropped_stale(),
            ..self.counters.clone()
        }
    }

    /// The ESP SA (for its SPI and sequence number).
    pub fn esp(&self) -> &EspOutbound {
        &self.esp
    }

    /// Largest ESP packet `poll` can write: the output buffer must be at least this long.
    pub fn max_esp_len(&self) -> usize {
        self.esp_room
    }

    /// DataBlock octets per full outer (1442 for 1500-octet IPv4 outers, sub-type 0).
    pub fn data_capacity(&self) -> usize {
        self.data_cap
    }

    /// Largest inner packet accepted: the tunnel MTU reported in ICMP too-big.
    pub fn mtu(&self) -> usize {
        match self.cfg.mode {
            SendMode::Plain => self.payload_cap,
            _ if self.cfg.dont_fragment => self.data_cap,
            _ => MAX_INNER_LEN,
        }
    }

    /// Octets queued and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.framer.queued_bytes()
    }

    /// Inner packets queued (including one partly sent).
    pub fn queued_packets(&self) -> usize {
        self.framer.queued_packets()
    }

    /// Queues one inner IPv4/IPv6 packet (copied). Its IP length field must equal `pkt.len()`.
    pub fn push(&mut self, now: Nanos, pkt: &[u8]) -> Result<()> {
        if inner_len(pkt) != Some(pkt.len()) {
            self.counters.dropped_bad += 1;
            return Err(Error::BadInnerPacket { len: pkt.len() });
        }
        let mtu = self.mtu();
        if pkt.len() > mtu {
            self.counters.dropped_bad += 1;
            return Err(Error::TooBig {
                len: pkt.len(),
                mtu,
            });
        }
        let queued = self.framer.queued_bytes();
        if queued + pkt.len() > self.cfg.max_queue_bytes {
            self.counters.dropped_queue_full += 1;
            return Err(Error::QueueFull {
                queued,
                limit: self.cfg.max_queue_bytes,
            });
        }
        self.framer.push(now, pkt);
        self.counters.inner_packets += 1;
        self.counters.inner_octets += pkt.len() as u64;
        Ok(())
    }

    /// Feeds congestion-control info received from the peer (by the reverse SA's receiver) at
    /// `received_at`: its TVal is echoed back and its TEcho gives an RTT sample.
    pub fn on_peer_cc(&mut self, info: &CcInfo, received_at: Nanos) {
        self.cc.peer_tval = Some((info.tval, received_at));
        if info.techo != 0 {
            let now_us = (received_at / 1000) as u32;
            let sample = now_us
                .wrapping_sub(info.techo)
                .wrapping_sub(info.echo_delay_us);
            // A sample "from the future" means a stale or bogus echo: ignore it.
            if sample < 1 << 30 {
                self.cc.rtt_us = sample.max(info.tx_delay_us);
            }
        }
    }

    /// Sets the loss event rate (1/p) this side measured on the reverse SA, to report it.
    pub fn set_loss_event_rate(&mut self, inverse_p: u32) {
        self.cc.loss_event_rate = inverse_p;
    }

    /// Sets the E flag (CE marks counted as loss) in sub-type 1 headers.
    pub fn set_ecn_loss(&mut self, on: bool) {
        self.cc.ecn_loss = on;
    }

    /// Current RTT estimate in µs from sub-type 1 feedback (0 = unknown).
    pub fn rtt_us(&self) -> u32 {
        self.cc.rtt_us
    }

    fn header(&self, now: Nanos, block_offset: u16) -> Header {
        if !self.cfg.congestion_control {
            return Header {
                block_offset,
                flags: 0,
                cc: None,
            };
        }
        let (techo, echo_delay_us) = match self.cc.peer_tval {
            Some((tv, at)) => (
                tv,
                (now.saturating_sub(at) / 1000).min(u32::MAX as u64) as u32,
            ),
            None => (0, 0),
        };
        Header {
            block_offset,
            flags: if self.cc.ecn_loss { FLAG_E } else { 0 },
            cc: Some(CcInfo {
                loss_event_rate: self.cc.loss_event_rate,
                rtt_us: self.cc.rtt_us,
                echo_delay_us,
                tx_delay_us: 0,
                tval: (now / 1000) as u32,
                techo,
            }),
        }
    }

    fn emit_aggfrag(&mut self, now: Nanos, out: &mut [u8], pad_to_full: bool) -> Result<Sent> {
        let hdr_len = self.hdr_len;
        let data_start = PAYLOAD_OFFSET + hdr_len;
        let whole_only = self.cfg.whole_packets_only || self.cfg.dont_fragment;
        let (used, offset) = self.framer.fill(
            now,
            &mut out[data_start..data_start + self.data_cap],
            whole_only,
            self.cfg.max_aggregation_time,
        );
        let hdr = self.header(now, offset);
        hdr.emit(&mut out[PAYLOAD_OFFSET..])?;
        let mut payload_len = hdr_len + used;
        let all_pad = used == 0;
        if pad_to_full && used < self.data_cap {
            out[data_start + used..data_start + self.data_cap].fill(0);
            let pad = self.data_cap - used;
            if all_pad {
                self.counters.all_pad_packets += 1;
                self.counters.all_pad_octets += self.payload_cap as u64;
            } else {
                self.counters.extra_pad_packets += 1;
                self.counters.extra_pad_octets += pad as u64;
            }
            payload_len = self.payload_cap;
        }
        let (len, seq) = self.esp.seal(out, payload_len, NH_AGGFRAG)?;
        self.counters.outer_packets += 1;
        self.counters.outer_octets += len as u64;
        Ok(Sent {
            len,
            seq,
            all_pad: all_pad && pad_to_full,
        })
    }

    /// Produces the next outer packet due at `now` into `out` (at least [`max_esp_len`] octets;
    /// leave headroom before it for the outer IP header), or says when to call again.
    ///
    /// [`max_esp_len`]: Sender::max_esp_len
    pub fn poll(&mut self, now: Nanos, out: &mut [u8]) -> Result<Poll> {
        if out.len() < self.esp_room {
            return Err(Error::BufferTooSmall {
                need: self.esp_room,
                have: out.len(),
            });
        }
        match self.cfg.mode {
            SendMode::Plain => {
                self.framer.drop_stale(now, self.cfg.max_aggregation_time);
                let Some(l) = self.framer.pop_whole(&mut out[PAYLOAD_OFFSET..]) else {
                    return Ok(Poll::Wait(None));
                };
                let nh = if out[PAYLOAD_OFFSET] >> 4 == 6 {
                    NH_IPV6
                } else {
                    NH_IPV4
                };
                let (len, seq) = self.esp.seal(out, l, nh)?;
                self.counters.outer_packets += 1;
                self.counters.outer_octets += len as u64;
                Ok(Poll::Send(Sent {
                    len,
                    seq,
                    all_pad: false,
                }))
            }
            SendMode::Demand => {
                self.framer.drop_stale(now, self.cfg.max_aggregation_time);
                let Some(oldest) = self.framer.oldest() else {
                    self.flushing = false;
                    return Ok(Poll::Wait(None));
                };
                if !self.flushing
                    && self.cfg.init_delay > 0
                    && self.framer.queued_bytes() < self.data_cap
                {
                    let due = oldest.saturating_add(self.cfg.init_delay);
                    if now < due {
                        return Ok(Poll::Wait(Some(due)));
                    }
                    // Linux: when the timer fires, everything queued goes out.
                    self.flushing = true;
                }
                Ok(Poll::Send(self.emit_aggfrag(now, out, false)?))
            }
            SendMode::ConstantRate { interval } => {
                let mut slot = *self.next_slot.get_or_insert(now);
                if now < slot {
                    return Ok(Poll::Wait(Some(slot)));
                }
                // A caller woken late (a busy core) makes up to CATCH_UP_SLOTS slots late,
                // back to back, so the rate over any second stays the configured one; slots
                // further behind are skipped and counted.
                let skip = ((now - slot) / interval).saturating_sub(CATCH_UP_SLOTS);
                self.counters.missed_slots += skip;
                slot += skip * interval;
                if now - slot >= interval {
                    self.counters.late_slots += 1;
                }
                self.next_slot = Some(slot + interval);
                Ok(Poll::Send(self.emit_aggfrag(now, out, true)?))
            }
        }
    }
}
