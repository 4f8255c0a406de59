//! The crate's error type: one enum with structured variants, so callers (the CLI, the demo)
//! can tell "not attached" from "the kernel refused the program".

use std::path::PathBuf;

/// Everything that can go wrong while attaching, detaching or reading the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crate was compiled where clang or the libbpf headers were missing.
    #[error("built without clang; install clang and libbpf-dev and rebuild")]
    NoObject,
    /// A user-supplied value is out of range or unusable as a name.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// Why it is rejected.
        detail: String,
    },
    /// Joining the network namespace failed.
    #[error("cannot enter netns {netns}: {source}")]
    Netns {
        /// The name under /run/netns.
        netns: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interface does not exist in the namespace.
    #[error("no interface {iface} in netns {netns}")]
    NoSuchInterface {
        /// The netns name, or "(current)".
        netns: String,
        /// The interface name.
        iface: String,
    },
    /// An agent is already pinned for this interface.
    #[error("er-agent already attached (pins at {path}); run detach first")]
    AlreadyAttached {
        /// The pin directory.
        path: PathBuf,
    },
    /// No agent is pinned for this interface.
    #[error("er-agent not attached (no pins at {path})")]
    NotAttached {
        /// The pin directory that was expected.
        path: PathBuf,
    },
    /// The BPF filesystem is not mounted and could not be mounted.
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Loading the object (or the verifier) failed.
    #[error("loading the BPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program operation (load, attach) failed.
    #[error("BPF program {program}: {source}")]
    Program {
        /// The program's function name.
        program: &'static str,
        /// The aya error.
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("BPF map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The aya error.
        source: Box<aya::maps::MapError>,
    },
    /// Pinning an object failed.
    #[error("pinning {path}: {detail}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The object is missing an expected program or map (source and loader out of sync).
    #[error("BPF object lacks {0}")]
    Missing(&'static str),
    /// A file-system operation on the pin directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn program_err(program: &'static str) -> impl Fn(aya::programs::ProgramError) -> Error {
    move |e| Error::Program {
        program,
        source: Box::new(e),
    }
}

pub(crate) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        source: Box::new(e),
    }
}
