//! Keep the kernel's own stack off a switch port's frames.
//!
//! An AF_PACKET socket gets a copy of every frame, and then the kernel goes on to
//! run the frame through its own protocol handlers: route lookups, ICMP errors,
//! sometimes forwarding. On a port the switch owns that is wasted work (measured
//! by perf in `switchboard bench` at about a fifth of the dut's core), and it can
//! send duplicates. Packet taps run before tc ingress, so a tcx ingress program
//! that drops everything lets the switch's socket see each frame and stops the
//! kernel from handling it. The program is attached through a BPF link, so it
//! disappears with the port, also when the process dies. (tc's `matchall`
//! and `gact` are not built into every kernel, this one included; tcx is.)

use xdp::ingress_drop::IngressDrop;

/// The attached drop program; detached on drop.
#[derive(Debug)]
pub struct KernelStackDetach {
    _prog: IngressDrop,
}

impl KernelStackDetach {
    /// Drop every frame arriving on interface `ifindex` after packet taps have seen it.
    pub fn install(ifindex: u32) -> Result<KernelStackDetach, String> {
        IngressDrop::attach(ifindex)
            .map(|p| KernelStackDetach { _prog: p })
            .map_err(|e| e.to_string())
    }
}
