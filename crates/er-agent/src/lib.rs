//! ECMP-ER server agent: an XDP program (bpf/xdp_er.c, compiled by build.rs with clang) that
//! runs on a server's router-facing interface and bounces TCP segments of connections this
//! server does not own back to the ECMP-ER router, marked with the next previous generation,
//! so the router can deliver them to the server that does own them.
//!
//! Compared with upstream's `xdp/redirect.c` it never bounces SYNs, lets SYN-cookie ACKs
//! complete their handshake, never re-bounces a packet that already reached the oldest
//! generation, honours IHL, and keeps the ECN bits (DSCP marker).
//!
//! The program is loaded with aya 0.14 and stays attached after the command exits: the
//! bpf_link and maps are pinned under `/sys/fs/bpf/switchboard/<netns>/<iface>/`.

mod agent;
mod cli;
mod error;
mod stats;

use serde::Serialize;

pub use agent::{
    AttachOptions, BPFFS, CURRENT_NETNS_DIR, PIN_ROOT, PassProgram, Target, attach, detach,
    ensure_bpffs, hold_pass_program, is_attached, object_available, stats,
};
pub use cli::{AttachArgs, ErAgentArgs, ErAgentCommand, StatsArgs, TargetArgs, run};
pub use error::{Error, Result};
pub use stats::{BOUNCED_GEN_BASE, Counter, NSTATS, Stats};

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Generic (skb) XDP: works on any device, and on veth keeps checksum-offload state
    /// across XDP_TX, which is why it is the default for namespace test beds.
    Generic,
    /// Native (driver) XDP: faster; on veth the peer needs a native XDP program too (see
    /// [`hold_pass_program`]) and bounced segments need complete TCP checksums.
    Native,
}

impl AttachMode {
    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Generic => "generic",
            AttachMode::Native => "native",
        }
    }
}

/// How a bounced packet is marked; must match the router stage's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Marker {
    /// DSCP `(m << 2) | 0b11` = "sent with previous generation m" (m in 1..=15); ECN kept.
    Dscp,
    /// Upstream's whole ToS byte 0x01 (one previous generation; collides with ECT(1)).
    Compat,
}

impl Marker {
    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Marker::Dscp => "dscp",
            Marker::Compat => "compat",
        }
    }
}

/// The ToS byte a DSCP-mode bounce towards generation `m` (1..=15) writes, keeping `ecn`.
///
/// Shared knowledge with the router stage; exposed so tests and the demo agree on it.
pub fn dscp_marked_tos(m: u8, ecn: u8) -> u8 {
    ((((m & 0xf) << 2) | 0b11) << 2) | (ecn & 0b11)
}

/// The generation a ToS byte is marked with in DSCP mode (0 = unmarked / current).
pub fn dscp_marker_generation(tos: u8) -> u8 {
    let dscp = tos >> 2;
    if dscp & 0b11 == 0b11 { dscp >> 2 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dscp_marker_round_trip_keeps_ecn() {
        for m in 1..=15u8 {
            for ecn in 0..4u8 {
                let tos = dscp_marked_tos(m, ecn);
                assert_eq!(dscp_marker_generation(tos), m);
                assert_eq!(tos & 3, ecn);
            }
        }
        assert_eq!(dscp_marked_tos(1, 2), 0x1e);
        assert_eq!(dscp_marked_tos(2, 2), 0x2e);
        // Unmarked: best effort, ECT(1) (upstream's marker), EF (46), AF41 (34), DSCP 3.
        for tos in [0x00, 0x01, 46 << 2, 34 << 2, 3 << 2] {
            assert_eq!(dscp_marker_generation(tos), 0, "tos {tos:#x}");
        }
    }
}
