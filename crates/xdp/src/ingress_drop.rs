//! A tcx ingress program that drops every frame: how a switch port keeps the
//! kernel's own stack off its frames.
//!
//! Packet sockets (the switch's AF_PACKET ports) see a frame before tc ingress
//! runs, so dropping at tcx ingress costs the switch nothing and spares the
//! kernel the IP receive path (route lookup, ICMP errors) for frames the switch
//! owns. The program is two instructions, assembled here like the others, and
//! attached through a BPF link: it goes away when the fd closes, also when the
//! process dies.

use std::os::fd::OwnedFd;

use crate::insn::Insn;
use crate::{Error, Result, sys};

/// `TC_ACT_SHOT`: drop the packet.
const TC_ACT_SHOT: i32 = 2;

/// `r0 = TC_ACT_SHOT; exit`.
pub fn program() -> [Insn; 2] {
    [
        Insn::mov64_imm(crate::insn::reg::R0, TC_ACT_SHOT),
        Insn::exit(),
    ]
}

/// The attached program; dropping it detaches.
#[derive(Debug)]
pub struct IngressDrop {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl IngressDrop {
    /// Drop every frame arriving on `ifindex` (in the caller's netns) at tcx ingress.
    pub fn attach(ifindex: u32) -> Result<IngressDrop> {
        let prog = sys::load_prog(
            "sb_ingress_drop",
            sys::BPF_PROG_TYPE_SCHED_CLS,
            sys::BPF_TCX_INGRESS,
            &program(),
        )?;
        let link = sys::link_create(&prog, ifindex, sys::BPF_TCX_INGRESS, 0).map_err(|source| {
            Error::Bpf {
                cmd: "BPF_LINK_CREATE(tcx ingress)",
                source,
            }
        })?;
        Ok(IngressDrop {
            _link: link,
            _prog: prog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_returns_tc_act_shot() {
        let p = program();
        // mov64 r0, 2 = opcode 0xb7, dst r0, imm 2; exit = 0x95.
        assert_eq!(p[0].to_bytes(), [0xb7, 0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p[1].to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }
}
