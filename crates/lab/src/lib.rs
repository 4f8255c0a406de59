//! switchboard-lab: rebuilds a seed system's testbed on one machine.
//!
//! A TOML [`Topology`] names hosts (one network namespace each), switch nodes (whose ports are
//! veth ends in the root namespace, where the switch process also runs), veth links,
//! addresses, routes, static neighbours and background processes. [`Lab::up`] builds it with
//! the `ip` and `ethtool` commands, records what it made in a state file, and tears everything
//! down on drop; [`down_by_name`] cleans up after a crash from another process.
//!
//! The crate shells out to iproute2 rather than speaking netlink: the commands are the same
//! ones a user would type to debug a lab, and every failure carries the command, its stderr and
//! the node or link at fault.

mod error;
mod lab;
mod sys;
mod topology;

pub use error::{LabError, Result};
pub use lab::{
    Lab, LabOptions, LabStatus, ProcStatus, STATE_DIR, SwitchLauncher, down_by_name, lab_status,
    state_path, status_by_name,
};
pub use topology::{
    Endpoint, HostSpec, IFNAME_MAX, IfaceSpec, LAB_NAME_MAX, LinkKind, LinkSpec, NODE_NAME_MAX,
    NeighSpec, PortBinding, ProcessSpec, RouteSpec, SwitchSpec, Topology, check_ifname,
    link_prefix, netns_name, netns_prefix, parse_cidr, parse_mac,
};
