//! ESP + AGGFRAG (IP-TFS, RFC 9347) codec and tunnel state machines, with no I/O.
//!
//! Layers, bottom up:
//! - [`esp`]: RFC 4303 tunnel-mode ESP with RFC 4106 AES-GCM, sealed and opened in place in
//!   caller buffers; anti-replay window; extended sequence numbers.
//! - [`aggfrag`]: the AGGFRAG payload header (sub-types 0 and 1) and data-block helpers.
//! - [`Sender`]: queues inner packets and produces outer ESP packets in demand mode (Linux
//!   compatible), constant-rate IP-TFS mode (fixed size, all-pad when idle) or plain ESP.
//! - [`Receiver`]: opens ESP packets, reorders within a window with a lost-packet timer,
//!   reassembles inner packets across any number of outers and counts every error.
//!
//! Time is a parameter ([`Nanos`], any monotonic origin), so everything is deterministic.
//!
//! # Buffers
//! - Sending: [`Sender::push`] copies the inner packet into a byte queue (one copy is needed
//!   anyway, since inner packets are split across outers). [`Sender::poll`] writes the whole ESP
//!   packet (SPI..ICV) into a caller slice of at least [`Sender::max_esp_len`] octets, so a stage
//!   passes `&mut buf[headroom..]` and writes the outer IP header into the headroom.
//! - Receiving: [`Receiver::receive`] decrypts the caller's buffer in place and calls a closure
//!   with each inner packet as a `&[u8]`: a sub-slice of that buffer for complete blocks, or of
//!   the receiver's reusable reassembly buffer. Only out-of-order outers are copied.
//!
//! # Example
//! ```
//! use iptfs::{EspInbound, EspOutbound, Poll, Receiver, ReceiverConfig, SaKey, Sender, SenderConfig};
//! let key = SaKey::from_hex("4a506a794f574265564551694d6537681a2b1a2b")?;
//! let mut tx = Sender::new(SenderConfig::linux_demand(), EspOutbound::new(0xAAA, &key, false)?)?;
//! let mut rx = Receiver::new(ReceiverConfig::default(), EspInbound::new(0xAAA, &key, false, 64)?)?;
//! let inner = iptfs::testutil::ipv4_packet(100, 1);
//! tx.push(0, &inner)?;
//! let mut buf = vec![0u8; 20 + tx.max_esp_len()];
//! let Poll::Send(sent) = tx.poll(0, &mut buf[20..])? else { panic!() };
//! let mut got = Vec::new();
//! rx.receive(0, &mut buf[20..20 + sent.len], &mut |p: &[u8]| got.push(p.to_vec()))?;
//! assert_eq!(got, vec![inner]);
//! # Ok::<(), iptfs::Error>(())
//! ```

#![deny(unused_must_use)]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aggfrag;
mod error;
pub mod esp;
mod receiver;
mod sender;
pub mod testutil;

pub use aggfrag::CcInfo;
pub use error::{Error, Result};
pub use esp::{Algorithm, EspInbound, EspOutbound, Opened, ReplayWindow, SaKey};
pub use receiver::{Receiver, ReceiverConfig, RxCounters};
pub use sender::{
    CATCH_UP_SLOTS, Framer, MAX_INNER_LEN, Poll, SendMode, Sender, SenderConfig, Sent, TxCounters,
};

/// Time in nanoseconds from an arbitrary monotonic origin chosen by the caller.
pub type Nanos = u64;
