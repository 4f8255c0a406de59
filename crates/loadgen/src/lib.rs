//! The client side of the live-migration experiment (p4containerflow §5): a load generator
//! that holds N stream connections and proves no frame is lost, and a collector that samples
//! the server's and the load generator's metrics into upstream's CSV.
//!
//! Upstream's load generator only measured echo RTT, so a migration showed up as missing
//! echoes. Ours also tracks every frame's sequence number (holes, duplicates), the largest
//! server generation seen, and the longest gap between frame arrivals, which is the
//! client-visible downtime once the nominal frame interval is subtracted.
//!
//! Entry points for the `switchboard` binary: [`LoadgenArgs`] + [`run_loadgen`] and
//! [`CollectorArgs`] + [`run_collector`]. Tests and orchestrators can drive the pieces
//! directly with [`Loadgen`] and [`Collector`].
//!
//! Files (all timestamps CLOCK_MONOTONIC ns, shared by every namespace of the machine, so
//! they line up with migration timings):
//! - `--summary`: pretty JSON [`Summary`], written at exit; `downtime_ms` = largest
//!   per-connection gap − 1000/fps.
//! - `--gap-log`: JSON lines, one per gap > 3 frame intervals, written when the gap closes:
//!   `{"conn","start_ns","end_ns","gap_ms","seq_before","seq_after","generation_before","generation_after"}`.
//! - `--trace`: CSV `t_s,frames,max_gap_ms,rtt_max_ms,rtt_avg_ms`, one row per 100 ms;
//!   `t_s` counts from `Summary::start_ns`; `max_gap_ms` includes gaps still open.
//! - collector `--output`: CSV with [`CSV_HEADER`] (upstream's 19 columns, then ours).

mod collector;
mod conn;
mod error;
mod http;
mod loadgen;
mod parse;
mod signal;
mod stats;

pub use collector::{
    CSV_HEADER, Collector, CollectorArgs, CollectorConfig, Row, ServerMetrics,
    parse_server_metrics, run_collector,
};
pub use conn::{FrameOutcome, FrameTracker, Gap};
pub use error::{LoadgenError, Result};
pub use loadgen::{
    ConnSummary, Loadgen, LoadgenArgs, LoadgenConfig, LoadgenMetrics, RttSummary, Summary,
    run_loadgen,
};
pub use parse::{parse_duration, server_host_port};
pub use stats::{RttStats, percentile};
