//! The crate's one error type.

use std::net::SocketAddr;

/// Everything that can go wrong in repair, the server's system calls and the control protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed; `op` names it (and the option or ioctl) so logs say which step broke.
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// TCP repair only moves established connections.
    #[error("socket is not ESTABLISHED (tcpi_state {state})")]
    NotEstablished { state: u8 },
    /// Only IPv4 connections are supported (the experiment is IPv4 only).
    #[error("only IPv4 sockets can be repaired, got {addr}")]
    NotIpv4 { addr: SocketAddr },
    /// A queue read in repair mode returned fewer bytes than the kernel said it holds.
    #[error("{queue} queue: peeked {got} bytes, kernel reports {want}")]
    ShortQueue {
        queue: &'static str,
        got: usize,
        want: usize,
    },
    /// Saved state is inconsistent (e.g. more queued bytes than the sequence numbers allow).
    #[error("invalid saved state: {reason}")]
    BadState { reason: String },
    /// A network interface name that the kernel cannot take (empty or too long).
    #[error("bad interface name {name:?}")]
    BadIfName { name: String },
    /// A control request or reply that is not valid JSON or lacks a field.
    #[error("control message: {reason}")]
    BadControl { reason: String },
    /// The peer answered `{"ok":false,"error":...}`.
    #[error("control request failed: {error}")]
    ControlRefused { error: String },
    /// JSON (de)serialisation.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Plain I/O on a control or client socket.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The current `errno` wrapped with the name of the failing step.
    pub(crate) fn last(op: &'static str) -> Error {
        Error::Sys {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}
