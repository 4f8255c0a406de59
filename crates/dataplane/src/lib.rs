//! The switchboard data plane: ports, the run-to-completion engine, the stage
//! trait and the built-in stages.
#![deny(unused_must_use)]

pub mod assemble;
pub mod config;
pub mod counters;
pub mod engine;
pub mod meta;
pub mod port;
pub mod stage;
pub mod stages;
pub mod switch;

pub use assemble::{Assembled, assemble, assemble_with_ports};
pub use config::{ConfigError, SwitchConfig};
pub use counters::{PortCounters, PortCountersSnapshot};
pub use engine::{IdleMode, Worker};
pub use meta::{DropReason, Egress, Flow, Meta};
pub use port::{Port, PortError};
pub use stage::Stage;
pub use switch::{InitialEntry, PortInfo, StageInfo, Switch};
