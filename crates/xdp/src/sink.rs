//! The counting sink: an XDP program that counts frames in a per-CPU map and drops them.
//!
//! Counting at XDP keeps the sink far cheaper than anything it measures, and a per-CPU map
//! means no cache line bounces between CPUs. The program is attached through a BPF link, so
//! it detaches when the [`Sink`] (holding the link fd) is dropped, or the process dies.

use std::fmt;
use std::os::fd::OwnedFd;

use crate::insn::{count_prog, xdp_action};
use crate::netns::{ifindex, in_netns};
use crate::sys::{self, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use crate::{Error, Result};

/// Bytes per CPU in the counter map: `{ u64 packets; u64 bytes; }`.
const VALUE_SIZE: usize = 16;

/// How the sink program got attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP: for veth this also turns on the peer's NAPI path.
    Native,
    /// Generic (skb) XDP: works everywhere, slower.
    Generic,
    /// A tcx ingress program: counts skbs as the stack receives them, whatever memory
    /// they were built in (an XDP sink makes veth copy every skb without 256 bytes of
    /// headroom, i.e. every frame a socket sent, which taxes user-space duts only).
    Tc,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Tc => "tc",
        })
    }
}

/// Totals over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Frames seen.
    pub packets: u64,
    /// Bytes seen (frame length without FCS).
    pub bytes: u64,
}

/// A counting XDP_DROP program attached to one interface.
#[derive(Debug)]
pub struct Sink {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    mode: AttachMode,
    ncpus: usize,
    netns: String,
    iface: String,
}

impl Sink {
    /// Attach to `iface` in `netns` ("" = current), native XDP if the driver allows, else
    /// generic.
    pub fn attach(netns: &str, iface: &str) -> Result<Sink> {
        let ncpus = sys::possible_cpus()?;
        let map = sys::create_percpu_array("sb_sink_cnt", VALUE_SIZE as u32, 1)?;
        let prog = sys::load_xdp_prog(
            "sb_sink",
            &count_prog(std::os::fd::AsRawFd::as_raw_fd(&map), xdp_action::XDP_DROP),
        )?;
        let (link, mode) = in_netns(netns, || {
            let idx = ifindex(netns, iface)?;
            match sys::link_create_xdp(&prog, idx, XDP_FLAGS_DRV_MODE) {
                Ok(l) => Ok((l, AttachMode::Native)),
                Err(native) => {
                    tracing::info!(%iface, error = %native, "native XDP refused, trying generic");
                    sys::link_create_xdp(&prog, idx, XDP_FLAGS_SKB_MODE)
                        .map(|l| (l, AttachMode::Generic))
                        .map_err(|source| Error::Bpf {
                            cmd: "BPF_LINK_CREATE(xdp)",
                            source,
                        })
                }
            }
        })?;
        tracing::debug!(%netns, %iface, %mode, "sink attached");
        Ok(Sink {
            map,
            _prog: prog,
            _link: link,
            mode,
            ncpus,
            netns: netns.to_string(),
            iface: iface.to_string(),
        })
    }

    /// Attach a counting tcx ingress program to `iface` in `netns` ("" = current).
    pub fn attach_tc(netns: &str, iface: &str) -> Result<Sink> {
        let ncpus = sys::possible_cpus()?;
        let map = sys::create_percpu_array("sb_sink_cnt", VALUE_SIZE as u32, 1)?;
        /// `TC_ACT_SHOT`.
        const SHOT: i32 = 2;
        let prog = sys::load_prog(
            "sb_sink_tc",
            sys::BPF_PROG_TYPE_SCHED_CLS,
            sys::BPF_TCX_INGRESS,
            &crate::insn::count_prog_tc(std::os::fd::AsRawFd::as_raw_fd(&map), SHOT),
        )?;
        let link = in_netns(netns, || {
            let idx = ifindex(netns, iface)?;
            sys::link_create(&prog, idx, sys::BPF_TCX_INGRESS, 0).map_err(|source| Error::Bpf {
                cmd: "BPF_LINK_CREATE(tcx ingress)",
                source,
            })
        })?;
        Ok(Sink {
            map,
            _prog: prog,
            _link: link,
            mode: AttachMode::Tc,
            ncpus,
            netns: netns.to_string(),
            iface: iface.to_string(),
        })
    }

    /// Which XDP mode the program runs in.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Where the sink is attached, as (netns, iface).
    pub fn location(&self) -> (&str, &str) {
        (&self.netns, &self.iface)
    }

    /// Frames counted so far.
    pub fn count(&self) -> Result<u64> {
        Ok(self.counters()?.packets)
    }

    /// Frames and bytes counted so far, summed over CPUs.
    pub fn counters(&self) -> Result<SinkCounters> {
        let mut buf = vec![0u8; VALUE_SIZE * self.ncpus];
        sys::map_lookup(&self.map, 0, &mut buf)?;
        let mut c = SinkCounters::default();
        for cpu in buf.chunks_exact(VALUE_SIZE) {
            let (p, b) = cpu.split_at(8);
            let word = |s: &[u8]| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]));
            c.packets += word(p);
            c.bytes += word(b);
        }
        Ok(c)
    }
}
