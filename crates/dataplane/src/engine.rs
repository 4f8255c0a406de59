//! The run-to-completion worker: rx batch -> parse once -> stages -> per-port tx batches.
//!
//! A worker owns its ports, its stages and its buffer pool, so nothing on the
//! packet path takes a lock or allocates once the pool is warm. Table updates
//! from the control plane arrive as new snapshots that stages load between batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use packet::{PacketBuf, Pool};

use crate::counters::PortCounters;
use crate::meta::{DropReason, Egress, Flow, Meta};
use crate::port::{Port, PortError};
use crate::stage::{Emit, Stage};

/// Frames taken from one port per round.
pub const RX_BATCH: usize = 256;
/// Rounds between copies of the backends' own counters into the shared ones.
const STATS_EVERY: u64 = 1024;
/// Least time between two log lines about the same port's I/O errors.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Buffers a worker starts with.
pub const POOL_SIZE: usize = 4096;

/// How a worker waits when no port has traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Sleep in `poll(2)` on the ports' descriptors (or briefly, for polled ports).
    Sleep,
    /// Spin at 100 % CPU for the lowest latency and the highest rate.
    BusyPoll,
}

/// What a worker did, for the summary printed at the end of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerSummary {
    pub rounds: u64,
    pub packets: u64,
}

/// One run-to-completion worker.
pub struct Worker {
    ports: Vec<Box<dyn Port>>,
    counters: Vec<Arc<PortCounters>>,
    /// Port number -> index into `ports` + 1 (0: no such port). 128 KiB, one load per lookup.
    slot: Box<[u16]>,
    stages: Vec<Box<dyn Stage>>,
    pool: Pool,
    rx: Vec<PacketBuf>,
    tx: Vec<Vec<PacketBuf>>,
    idle: IdleMode,
    summary: WorkerSummary,
    /// When each port last logged an I/O error (rate limit).
    last_error_log: Vec<Option<std::time::Instant>>,
    /// Indexes of the stages that asked to be polled every round ([`Stage::wants_poll`]).
    polled: Vec<usize>,
    /// Packets those stages generated, with their egress port, until they are queued.
    emitted: Vec<(u16, PacketBuf)>,
    /// The earliest time a polled stage asked to run again.
    deadline: Option<Instant>,
    /// Traffic arrived since the backends' error counters were last published: publish them
    /// before sleeping, or drops in the last burst before a quiet spell (kernel ring
    /// overruns) would stay invisible until the next 1024 busy rounds.
    stats_dirty: bool,
}

impl Worker {
    /// A worker over `ports` (each with its shared counters) running `stages` in order.
    pub fn new(
        ports: Vec<(Box<dyn Port>, Arc<PortCounters>)>,
        stages: Vec<Box<dyn Stage>>,
        idle: IdleMode,
    ) -> Worker {
        let mut slot = vec![0u16; usize::from(u16::MAX) + 1].into_boxed_slice();
        let (ports, counters): (Vec<_>, Vec<_>) = ports.into_iter().unzip();
        for (i, p) in ports.iter().enumerate() {
            slot[usize::from(p.id())] = (i + 1) as u16;
        }
        let tx = ports
            .iter()
            .map(|_| Vec::with_capacity(RX_BATCH * 4))
            .collect();
        let last_error_log = vec![None; ports.len()];
        let polled = (0..stages.len())
            .filter(|&i| stages[i].wants_poll())
            .collect();
        Worker {
            ports,
            counters,
            slot,
            stages,
            pool: Pool::new(POOL_SIZE),
            rx: Vec::with_capacity(RX_BATCH),
            tx,
            idle,
            summary: WorkerSummary::default(),
            last_error_log,
            polled,
            emitted: Vec::new(),
            deadline: None,
            stats_dirty: false,
        }
    }

    /// Run until `stop` is set, or until every finite input (pcap) is exhausted
    /// when `stop_at_eof` is true. Output is flushed before returning.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        stop_at_eof: bool,
    ) -> Result<WorkerSummary, PortError> {
        while !stop.load(Relaxed) {
            let n = self.poll_once()?;
            if n == 0 {
                if stop_at_eof && self.ports.iter().all(|p| p.rx_exhausted()) {
                    self.finish_stages();
                    break;
                }
                if std::mem::take(&mut self.stats_dirty) {
                    self.publish_port_stats();
                }
                self.wait_idle()?;
            }
        }
        self.flush()?;
        self.publish_port_stats();
        Ok(self.summary)
    }

    /// One round over every port; returns how many packets were received.
    pub fn poll_once(&mut self) -> Result<usize, PortError> {
        self.summary.rounds += 1;
        let mut total = 0;
        for i in 0..self.ports.len() {
            let n = match self.ports[i].rx_batch(&mut self.pool, &mut self.rx, RX_BATCH) {
                Ok(n) => n,
                Err(e) => {
                    // One port's trouble must not stop the switch: count, log now and then, go on.
                    PortCounters::add(&self.counters[i].rx_errors, 1);
                    self.log_port_error(i, &e);
                    self.pool.put_all(&mut self.rx);
                    0
                }
            };
            if n == 0 {
                continue;
            }
            if total == 0 {
                // Fresh table snapshots once per round with traffic; idle rounds skip it.
                for st in &mut self.stages {
                    st.begin_batch();
                }
            }
            total += n;
            let c = &self.counters[i];
            PortCounters::add(&c.rx_packets, n as u64);
            let bytes: usize = self.rx.iter().map(|p| p.len()).sum();
            PortCounters::add(&c.rx_bytes, bytes as u64);
            let mut batch = std::mem::take(&mut self.rx);
            for pkt in batch.drain(..) {
                self.handle(pkt, i);
            }
            self.rx = batch;
        }
        if !self.polled.is_empty() {
            self.poll_stages(Instant::now());
        }
        self.transmit();
        self.summary.packets += total as u64;
        if self.summary.rounds.is_multiple_of(STATS_EVERY) {
            self.publish_port_stats();
            self.stats_dirty = false;
        } else if total > 0 {
            self.stats_dirty = true;
        }
        Ok(total)
    }

    /// Run every packet through the pipeline and queue it for its egress.
    #[inline]
    fn handle(&mut self, mut pkt: PacketBuf, in_idx: usize) {
        let in_port = pkt.in_port;
        let hdr = match packet::parse::parse(pkt.frame()) {
            Ok(h) => h,
            Err(e) => {
                self.counters[in_idx].count_drop(DropReason::Parse(e));
                self.pool.put(pkt);
                return;
            }
        };
        let mut meta = Meta::new(hdr, in_port);
        for st in &mut self.stages {
            if st.process(&mut pkt, &mut meta) == Flow::Exit {
                break;
            }
        }
        match meta.egress {
            Egress::Port(p) => match self.slot.get(usize::from(p)).copied().unwrap_or(0) {
                0 => self.drop_pkt(pkt, in_idx, DropReason::UnknownEgressPort),
                s => self.tx[usize::from(s) - 1].push(pkt),
            },
            Egress::Flood { except_ingress } => {
                let mut copies = 0;
                for j in 0..self.ports.len() {
                    if except_ingress && j == in_idx {
                        continue;
                    }
                    let mut copy = self.pool.get();
                    if copy.set_frame(pkt.frame()) {
                        self.tx[j].push(copy);
                        copies += 1;
                    } else {
                        self.pool.put(copy);
                    }
                }
                if copies == 0 {
                    self.drop_pkt(pkt, in_idx, DropReason::NoEgress);
                } else {
                    self.pool.put(pkt);
                }
            }
            Egress::Drop(r) => self.drop_pkt(pkt, in_idx, r),
            Egress::Consumed => self.pool.put(pkt),
            Egress::Unset => self.drop_pkt(pkt, in_idx, DropReason::NoEgress),
        }
    }

    /// Let the stages that asked for it emit generated packets and run their timers.
    fn poll_stages(&mut self, now: Instant) {
        let mut deadline: Option<Instant> = None;
        for &i in &self.polled {
            let mut out = Emit::new(&mut self.pool, &mut self.emitted);
            if let Some(t) = self.stages[i].poll(now, &mut out) {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        }
        self.deadline = deadline;
        self.queue_emitted();
    }

    /// End of input: the stages emit what their timers would have sent later, then it is sent.
    fn finish_stages(&mut self) {
        if self.polled.is_empty() {
            return;
        }
        let now = Instant::now();
        for &i in &self.polled {
            let mut out = Emit::new(&mut self.pool, &mut self.emitted);
            self.stages[i].finish(now, &mut out);
        }
        self.deadline = None;
        self.queue_emitted();
        self.transmit();
    }

    /// Move generated packets to their ports' tx queues (unknown ports: the buffer goes back).
    fn queue_emitted(&mut self) {
        for (port, pkt) in self.emitted.drain(..) {
            match self.slot.get(usize::from(port)).copied().unwrap_or(0) {
                0 => self.pool.put(pkt),
                s => self.tx[usize::from(s) - 1].push(pkt),
            }
        }
    }

    #[inline]
    fn drop_pkt(&mut self, pkt: PacketBuf, in_idx: usize, reason: DropReason) {
        self.counters[in_idx].count_drop(reason);
        self.pool.put(pkt);
    }

    /// Copy the backends' own error counters into the shared port counters.
    pub fn publish_port_stats(&self) {
        for (p, c) in self.ports.iter().zip(&self.counters) {
            let st = p.stats();
            c.rx_errors
                .store(st.rx_errors.max(c.rx_errors.load(Relaxed)), Relaxed);
            c.tx_errors
                .store(st.tx_errors.max(c.tx_errors.load(Relaxed)), Relaxed);
        }
    }

    fn log_port_error(&mut self, i: usize, e: &PortError) {
        let now = std::time::Instant::now();
        if self.last_error_log[i].is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL) {
            self.last_error_log[i] = Some(now);
            tracing::warn!(
                port = self.ports[i].id(),
                "{e} (counted; the switch goes on)"
            );
        }
    }

    fn transmit(&mut self) {
        for j in 0..self.ports.len() {
            if self.tx[j].is_empty() {
                continue;
            }
            let n = self.tx[j].len();
            let out = match self.ports[j].tx_batch(&mut self.pool, &mut self.tx[j]) {
                Ok(out) => out,
                Err(e) => {
                    PortCounters::add(&self.counters[j].tx_errors, 1);
                    self.log_port_error(j, &e);
                    crate::port::TxOutcome {
                        dropped: n,
                        ..Default::default()
                    }
                }
            };
            // A backend must drain the batch; if one did not, reclaim the buffers.
            self.pool.put_all(&mut self.tx[j]);
            let c = &self.counters[j];
            PortCounters::add(&c.tx_packets, out.sent as u64);
            PortCounters::add(&c.tx_bytes, out.bytes as u64);
            PortCounters::add(&c.tx_dropped, (n - out.sent) as u64);
        }
    }

    fn wait_idle(&mut self) -> Result<(), PortError> {
        if self.idle == IdleMode::BusyPoll {
            std::hint::spin_loop();
            return Ok(());
        }
        self.flush()?;
        let mut fds: smallvec::SmallVec<[libc::pollfd; 8]> = smallvec::SmallVec::new();
        let mut polled = false;
        for p in &self.ports {
            match p.poll_fd() {
                Some(fd) => fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
                None if !p.rx_exhausted() => polled = true,
                None => {}
            }
        }
        // A stage timer (a tunnel's next constant-rate slot) shortens the wait.
        let until = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if until == Some(Duration::ZERO) {
            return Ok(());
        }
        if polled || fds.is_empty() {
            let nap = Duration::from_micros(200);
            std::thread::sleep(until.map_or(nap, |u| u.min(nap)));
        } else {
            let wait = until.map_or(Duration::from_millis(5), |u| {
                u.min(Duration::from_millis(5))
            });
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs and `ts` a valid
            // timespec for the call's duration; a null sigmask leaves the mask unchanged.
            unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    &ts,
                    std::ptr::null(),
                )
            };
        }
        Ok(())
    }

    /// Flush buffered output (pcap writers).
    pub fn flush(&mut self) -> Result<(), PortError> {
        for p in &mut self.ports {
            p.flush()?;
        }
        Ok(())
    }
}
