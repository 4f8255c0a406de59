//! Built-in stages, one module each, named as in the seed P4 programs.

pub mod arp_forward;
pub mod ecmper;
pub mod forward;
pub mod iptfs;
pub mod load_balancer;
