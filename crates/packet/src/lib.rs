//! Packets for switchboard: buffers with headroom from a pool, a parse-once
//! header map of offsets, wire views for rewriting in place, and incremental
//! checksums.
//!
//! The packet path is [`parse::parse`] once per frame, then stages read and
//! rewrite fields through the smoltcp-style views in [`wire`] at the offsets the
//! [`Headers`] recorded, patching checksums with [`checksum`]'s RFC 1624
//! updates. Nothing here panics on packet bytes: a bad frame is a
//! [`ParseError`] (one counter per reason), a short buffer is an [`Error`].
#![deny(unused_must_use)]

#[macro_use]
mod macros;

pub mod buf;
pub mod build;
pub mod checksum;
pub mod parse;
pub mod wire;

pub use buf::{BUF_CAPACITY, HEADROOM, MAX_FRAME, PacketBuf, Pool};
pub use parse::{Fragment, Headers, L3Kind, L4Kind, ParseError, VlanTag, parse};
pub use wire::{EtherType, EthernetAddress, IpProtocol};

/// Errors of this crate other than per-packet drop reasons.
///
/// Drop reasons found while parsing are [`ParseError`]s (counted per reason on
/// the packet path); they convert into [`Error::Parse`] for callers that only
/// want one error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A wire view was asked to wrap a buffer shorter than its header (or than
    /// the length its own length field claims).
    #[error("{proto} buffer too short: need {need} bytes, have {have}")]
    Truncated {
        /// Protocol of the view (`"ipv4"`, `"udp"`, ...).
        proto: &'static str,
        /// Bytes the view needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// A header field holds a value the view cannot work with.
    #[error("{proto} field {field} is malformed (value {value})")]
    Malformed {
        /// Protocol of the view.
        proto: &'static str,
        /// Name of the field at fault.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// The [`Headers`] do not describe the kind of packet the operation needs
    /// (for example an IPv4 address rewrite on an ARP frame).
    #[error("operation needs {need}, frame has {have}")]
    WrongKind {
        /// What the operation needs.
        need: &'static str,
        /// What the headers say the frame is.
        have: &'static str,
    },
    /// A frame failed to parse.
    #[error("parse error: {0}")]
    Parse(#[from] ParseError),
    /// Text that should have been a MAC address (`aa:bb:cc:dd:ee:ff`) was not.
    #[error("invalid MAC address text")]
    BadMacAddress,
}

/// Result alias for this crate.
pub type Result<T> = core::result::Result<T, Error>;
