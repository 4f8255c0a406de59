//! The live-migration workload: a stream server that can hand its established TCP connections
//! to a new process in another namespace, and the wire format its clients speak.
//!
//! - [`protocol`]: the fixed wire format shared with the load generator.
//! - [`repair`]: TCP repair checkpoint/restore of one IPv4 socket.
//! - [`server`]: the event-loop server, its CLI arguments and the migration control protocol.
//! - [`control`]: the client helper for that control protocol.
//! - [`netif`]: in-process interface and neighbour operations (link down, GARP, ARP table).

pub mod control;
mod error;
pub mod hex;
mod metrics;
pub mod netif;
pub mod protocol;
pub mod repair;
pub mod server;

pub use control::control_request;
pub use error::{Error, Result};
pub use server::{ServerArgs, run};
