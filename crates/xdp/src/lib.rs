//! switchboard-xdp: traffic tools built on the kernel's XDP, with no C toolchain.
//!
//! Benchmarks need a generator that outruns the switch under test and a sink that counts
//! without becoming the bottleneck. Both are tiny eBPF programs hand-assembled in Rust
//! ([`insn`]) and loaded with raw `bpf(2)` calls ([`sys`]), so CI needs neither clang nor
//! libbpf:
//!
//! - [`Blaster`] drives the kernel's XDP "live frames" test-run mode (`BPF_PROG_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`), the technique of xdp-tools' `xdp-trafficgen`: a program that
//!   only does `bpf_redirect(ifindex)` is run on a template frame and every run transmits it.
//! - [`Sink`] attaches an XDP program that counts packets in a per-CPU map and drops them.
//! - [`bench`] builds gen → dut → sink namespaces and compares a device under test with Linux
//!   kernel forwarding, the Linux bridge and (when installed) Open vSwitch.

pub mod bench;
pub mod blaster;
pub mod frame;
pub mod ingress_drop;
pub mod insn;
pub mod netns;
pub mod sink;
pub mod sys;

pub use blaster::{BlastOptions, BlastStats, Blaster, blast};
pub use frame::{FlowSpec, build_udp_frame};
pub use sink::{AttachMode, Sink, SinkCounters};

/// Everything that can go wrong in this crate; each variant names what was being done so a
/// failed benchmark says which step broke.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `bpf(2)` command failed.
    #[error("bpf({cmd}) failed: {source}")]
    Bpf {
        /// The bpf command name, e.g. "BPF_PROG_LOAD".
        cmd: &'static str,
        /// The errno the kernel returned.
        source: std::io::Error,
    },
    /// The verifier rejected a program; `log` is the verifier's own explanation.
    #[error("verifier rejected program {prog}: {source}\n{log}")]
    Verifier {
        /// Which program was being loaded.
        prog: &'static str,
        /// The errno the kernel returned.
        source: std::io::Error,
        /// The verifier log.
        log: String,
    },
    /// A named network namespace could not be entered.
    #[error("cannot enter network namespace {netns:?}: {source}")]
    Netns {
        /// The namespace name (under /run/netns).
        netns: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An interface does not exist in the namespace it was looked up in.
    #[error("no interface {iface:?} in network namespace {netns:?}")]
    NoSuchInterface {
        /// The namespace name ("" is the caller's own).
        netns: String,
        /// The interface name.
        iface: String,
    },
    /// An external command (ip, ethtool, ovs-*) failed.
    #[error("command `{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// A caller-provided value is out of range or malformed.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },
    /// A device under test could not be started or died.
    #[error("dut {dut}: {detail}")]
    Dut {
        /// The dut's name.
        dut: String,
        /// What happened.
        detail: String,
    },
    /// Other I/O (files under /proc, /sys, /run/netns, temp dirs).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
