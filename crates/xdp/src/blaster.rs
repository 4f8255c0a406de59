//! The traffic generator: XDP live-frames test runs (the xdp-trafficgen technique).
//!
//! `BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` runs an XDP program `repeat` times over
//! fresh copies of a template frame, in batches of `batch_size`, and really transmits every
//! frame the program redirects. Our program is `return bpf_redirect(ifindex, 0)`, so each run
//! is a burst of frames out of `ifindex` with no socket, no skb and no copy to user space: one
//! core pushes several Mpps into a veth.
//!
//! "Sent" counts frames the program redirected. When the receiver's ring is full the kernel
//! drops the frame at the veth without telling us; those drops are the receiver's loss.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::frame::{FlowSpec, build_flows};
use crate::insn::redirect_rewrite_prog;
use crate::netns::{enter_netns, ifindex, in_netns, mac_of};
use crate::sys::{self, TEST_XDP_MAX_BATCH, XdpMd};
use crate::{Error, Result};

/// First test-run size when unthrottled; later runs adapt to last ~250 ms.
const UNLIMITED_CHUNK: u64 = 1 << 16;
/// Largest test run (repeat is a u32; this is ~2 s at 8 Mpps).
const MAX_CHUNK: u64 = 1 << 24;

/// A loaded generator bound to one interface in one namespace.
#[derive(Debug)]
pub struct Blaster {
    netns: String,
    iface: String,
    ifindex: u32,
    /// One program per frame: each rewrites its own template (see
    /// [`crate::insn::redirect_rewrite_prog`]).
    progs: Vec<(OwnedFd, Vec<u8>)>,
    cpu: Option<usize>,
    realtime: bool,
    batch_size: u32,
    /// Per-CPU credit counter for rate-limited (thinned) runs.
    credit: OwnedFd,
}

/// What one [`Blaster::run`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlastStats {
    /// Frames handed to the kernel's live-frames test run for redirect out of the interface.
    /// A redirect that fails there is not reported back (seen about once in 20000 frames on
    /// a loaded machine); the interface's own `tx_queue_0_xdp_xmit` counts what went out.
    pub sent: u64,
    /// Wall time from the first to the end of the last test run.
    pub elapsed: Duration,
    /// The CPU the generator thread ran on (it is pinned when [`Blaster::pin_cpu`] was set).
    pub cpu: Option<usize>,
}

impl BlastStats {
    /// Offered load in packets per second.
    pub fn pps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.sent as f64 / s } else { 0.0 }
    }
}

impl Blaster {
    /// Load the redirect program for `iface` in `netns` ("" = the caller's namespace) with one
    /// template frame, which is transmitted unchanged out of `iface`.
    pub fn new(netns: &str, iface: &str, frame: Vec<u8>) -> Result<Blaster> {
        Blaster::with_frames(netns, iface, vec![frame])
    }

    /// Like [`Blaster::new`] with several template frames (e.g. one per flow), used in turn,
    /// one test-run chunk each.
    pub fn with_frames(netns: &str, iface: &str, frames: Vec<Vec<u8>>) -> Result<Blaster> {
        if frames.is_empty() {
            return Err(Error::Invalid {
                what: "frames",
                detail: "at least one template frame is needed".into(),
            });
        }
        if let Some(f) = frames.iter().find(|f| f.len() < 14 || f.len() > 3000) {
            return Err(Error::Invalid {
                what: "frame length",
                detail: format!("{} bytes (must be 14..=3000)", f.len()),
            });
        }
        let idx = in_netns(netns, || ifindex(netns, iface))?;
        let progs = frames
            .into_iter()
            .map(|f| {
                Ok((
                    sys::load_xdp_prog("sb_blaster", &redirect_rewrite_prog(idx, &f))?,
                    f,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Blaster {
            netns: netns.to_string(),
            iface: iface.to_string(),
            ifindex: idx,
            progs,
            cpu: None,
            realtime: false,
            batch_size: 64,
            credit: sys::create_percpu_array("sb_blast_cred", 8, 1)?,
        })
    }

    /// Pin the generator thread to `cpu` for every run.
    pub fn pin_cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Run the generator thread as SCHED_FIFO (priority 10): on a shared machine, ordinary
    /// tasks otherwise take its CPU at every reschedule point inside a test run and the
    /// offered rate collapses. Needs root (or CAP_SYS_NICE); a refusal is logged, not fatal.
    pub fn realtime(mut self, on: bool) -> Self {
        self.realtime = on;
        self
    }

    /// Frames the kernel processes per batch (1..=256, default 64 like NAPI).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n.clamp(1, TEST_XDP_MAX_BATCH);
        self
    }

    /// The interface frames leave through.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Send `total` frames, at `rate_pps` if given or as fast as the kernel allows; returns
    /// early when `stop` becomes true. Paced frames are evenly spread by the program itself
    /// (see [`crate::insn::thinned_redirect_prog`]); checked every ~250 ms.
    pub fn run(&self, total: u64, rate_pps: Option<u64>, stop: &AtomicBool) -> Result<BlastStats> {
        self.run_inner(total, None, rate_pps, stop)
    }

    /// Send for `duration` (or until `stop`), at `rate_pps` or unthrottled.
    pub fn run_for(
        &self,
        duration: Duration,
        rate_pps: Option<u64>,
        stop: &AtomicBool,
    ) -> Result<BlastStats> {
        self.run_inner(u64::MAX, Some(duration), rate_pps, stop)
    }

    fn run_inner(
        &self,
        total: u64,
        duration: Option<Duration>,
        rate_pps: Option<u64>,
        stop: &AtomicBool,
    ) -> Result<BlastStats> {
        if rate_pps == Some(0) {
            return Err(Error::Invalid {
                what: "rate",
                detail: "0 pps".into(),
            });
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&self.netns)?;
                if let Some(cpu) = self.cpu {
                    sys::pin_current_thread(cpu)?;
                }
                if self.realtime
                    && let Err(e) = sys::set_fifo(10)
                {
                    tracing::warn!(error = %e, "generator stays SCHED_OTHER");
                }
                match rate_pps {
                    Some(r) => self.paced_loop(total, duration, r, stop),
                    None => self.blast_loop(total, duration, stop),
                }
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Invalid {
                    what: "blaster thread",
                    detail: "panicked".into(),
                })
            })
        })
    }

    /// Rate-limited: long runs of a program that transmits a fraction of its runs, the
    /// fraction re-tuned after every run from the measured run rate.
    fn paced_loop(
        &self,
        total: u64,
        duration: Option<Duration>,
        rate: u64,
        stop: &AtomicBool,
    ) -> Result<BlastStats> {
        use crate::insn::{THIN_DEN, thinned_redirect_prog};
        use std::os::fd::AsRawFd;
        let start = Instant::now();
        let deadline = duration.map(|d| start + d);
        let mut sent: u64 = 0;
        // Sum of runs * num: frames transmitted so far, times THIN_DEN (exact, as the
        // program's credit counter carries the remainder over).
        let mut acc: u64 = 0;
        let mut runs_per_s: f64 = 5e6; // first guess, corrected after one run
        let mut i = 0usize;
        while sent < total && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => break,
                Some(d) => (d - now).as_secs_f64(),
                None => f64::INFINITY,
            };
            let ratio = (rate as f64 / runs_per_s).clamp(1.0 / f64::from(THIN_DEN), 1.0);
            let num = ((ratio * f64::from(THIN_DEN)) as i32).max(1);
            let secs = left.min(0.25);
            let want_frames = ((total - sent) as f64).min(rate as f64 * secs).max(1.0);
            let exact = f64::from(num) / f64::from(THIN_DEN);
            let runs = (want_frames / exact).ceil().clamp(1.0, MAX_CHUNK as f64) as u64;
            let (_, frame) = &self.progs[i % self.progs.len()];
            let prog = sys::load_xdp_prog(
                "sb_blaster_rl",
                &thinned_redirect_prog(self.ifindex, frame, self.credit.as_raw_fd(), num),
            )?;
            let ctx = XdpMd {
                data_end: frame.len() as u32,
                ingress_ifindex: self.ifindex,
                ..Default::default()
            };
            let t0 = Instant::now();
            sys::test_run_live(&prog, frame, &ctx, runs as u32, self.batch_size).map_err(
                |source| Error::Bpf {
                    cmd: "BPF_PROG_TEST_RUN(live frames)",
                    source,
                },
            )?;
            let took = t0.elapsed().as_secs_f64().max(1e-6);
            if runs >= 4096 {
                runs_per_s = runs as f64 / took;
            }
            acc += runs * num as u64;
            sent = acc / THIN_DEN as u64;
            i = i.wrapping_add(1);
            // If the run went faster than planned, wait instead of over-sending.
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now && deadline.is_none_or(|d| due < d) {
                std::thread::sleep(due - now);
            }
        }
        Ok(BlastStats {
            sent,
            elapsed: start.elapsed(),
            cpu: sys::current_cpu(),
        })
    }

    /// Unthrottled: back-to-back runs, each sized to last ~250 ms.
    fn blast_loop(
        &self,
        total: u64,
        duration: Option<Duration>,
        stop: &AtomicBool,
    ) -> Result<BlastStats> {
        // Every test run pays a fixed teardown cost (tens of ms on 6.x kernels: page pool and
        // memory-model unregistration), so runs are sized to amortise it.
        let mut chunk = UNLIMITED_CHUNK;
        let start = Instant::now();
        let deadline = duration.map(|d| start + d);
        let mut sent: u64 = 0;
        let mut i = 0usize;
        while sent < total && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            let mut n = (total - sent).min(chunk);
            if let Some(d) = deadline {
                // Do not overrun the deadline by more than a little.
                let left = d.saturating_duration_since(now).as_secs_f64();
                let pps = if sent > 0 {
                    sent as f64 / now.duration_since(start).as_secs_f64().max(1e-6)
                } else {
                    1e6
                };
                n = n.min(((left * pps) as u64).max(UNLIMITED_CHUNK / 4));
            }
            let (prog, frame) = &self.progs[i % self.progs.len()];
            let ctx = XdpMd {
                data_end: frame.len() as u32,
                ingress_ifindex: self.ifindex,
                ..Default::default()
            };
            let t0 = Instant::now();
            sys::test_run_live(prog, frame, &ctx, n as u32, self.batch_size).map_err(|source| {
                Error::Bpf {
                    cmd: "BPF_PROG_TEST_RUN(live frames)",
                    source,
                }
            })?;
            let took = t0.elapsed().as_secs_f64().max(1e-6);
            chunk = ((n as f64 / took * 0.25) as u64).clamp(UNLIMITED_CHUNK, MAX_CHUNK);
            sent += n;
            i = i.wrapping_add(1);
        }
        Ok(BlastStats {
            sent,
            elapsed: start.elapsed(),
            cpu: sys::current_cpu(),
        })
    }
}

/// Everything a `switchboard blast` subcommand needs to generate UDP traffic.
#[derive(Clone, Debug)]
pub struct BlastOptions {
    /// Namespace of the sending interface ("" = current).
    pub netns: String,
    /// Sending interface; frames leave through it.
    pub iface: String,
    /// Ethernet destination (the next hop's MAC).
    pub dst_mac: [u8; 6],
    /// Ethernet source; `None` = the interface's own MAC.
    pub src_mac: Option<[u8; 6]>,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// Number of UDP flows (distinct source ports).
    pub flows: u16,
    /// Frame length without FCS (60 = 64-byte frames).
    pub frame_len: usize,
    /// Target rate; `None` = as fast as possible.
    pub rate_pps: Option<u64>,
    /// Stop after this many frames (`None` = unbounded).
    pub count: Option<u64>,
    /// Stop after this long (`None` = unbounded).
    pub duration: Option<Duration>,
    /// Pin the generator to this CPU.
    pub cpu: Option<usize>,
    /// Run the generator thread SCHED_FIFO (see [`Blaster::realtime`]).
    pub realtime: bool,
}

/// Build frames from `opts` and blast until the count, the duration or `stop` ends it.
pub fn blast(opts: &BlastOptions, stop: &AtomicBool) -> Result<BlastStats> {
    let src_mac = match opts.src_mac {
        Some(m) => m,
        None => mac_of(&opts.netns, &opts.iface)?,
    };
    let flow = FlowSpec {
        frame_len: opts.frame_len,
        ..FlowSpec::new(src_mac, opts.dst_mac, opts.src_ip, opts.dst_ip)
    };
    let mut b = Blaster::with_frames(&opts.netns, &opts.iface, build_flows(&flow, opts.flows)?)?;
    if let Some(cpu) = opts.cpu {
        b = b.pin_cpu(cpu);
    }
    b = b.realtime(opts.realtime);
    b.run_inner(
        opts.count.unwrap_or(u64::MAX),
        opts.duration,
        opts.rate_pps,
        stop,
    )
}
