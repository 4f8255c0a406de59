//! `GET /metrics`: the switch's counters in the Prometheus text format (version 0.0.4).
//!
//! Every series is emitted even when zero (drops for every reason on every port), so rates
//! and alerts work from the first scrape.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use dataplane::{DropReason, Switch};

use crate::state::AppState;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` route.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&st.switch))
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A per-port counter series: metric name, help text, and how to read it from a snapshot.
type PortSeries = (
    &'static str,
    &'static str,
    fn(&dataplane::PortCountersSnapshot) -> u64,
);

/// Renders every metric of `switch`.
pub fn render(switch: &Switch) -> String {
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "switchboard_uptime_seconds",
        "gauge",
        "Seconds since the switch started.",
    );
    let _ = writeln!(
        out,
        "switchboard_uptime_seconds {:.3}",
        switch.started.elapsed().as_secs_f64()
    );

    header(
        &mut out,
        "switchboard_port_info",
        "gauge",
        "Switch ports: backend and interface or file behind each (value always 1).",
    );
    for p in &switch.ports {
        let _ = writeln!(
            out,
            "switchboard_port_info{{port=\"{}\",backend=\"{}\",target=\"{}\"}} 1",
            p.id,
            label(p.backend),
            label(&p.target)
        );
    }

    let snaps: Vec<_> = switch
        .ports
        .iter()
        .map(|p| (p.id, p.counters.snapshot()))
        .collect();
    let port_series: [PortSeries; 7] = [
        (
            "switchboard_port_rx_packets_total",
            "Frames received on the port.",
            |c| c.rx_packets,
        ),
        (
            "switchboard_port_rx_bytes_total",
            "Bytes received on the port.",
            |c| c.rx_bytes,
        ),
        (
            "switchboard_port_tx_packets_total",
            "Frames sent out of the port.",
            |c| c.tx_packets,
        ),
        (
            "switchboard_port_tx_bytes_total",
            "Bytes sent out of the port.",
            |c| c.tx_bytes,
        ),
        (
            "switchboard_port_tx_dropped_total",
            "Frames the port backend could not send (link full); dropped, never queued.",
            |c| c.tx_dropped,
        ),
        (
            "switchboard_port_rx_errors_total",
            "Frames the port backend lost before the pipeline (ring overruns, oversize, read errors).",
            |c| c.rx_errors,
        ),
        (
            "switchboard_port_tx_errors_total",
            "Send failures counted by the port backend.",
            |c| c.tx_errors,
        ),
    ];
    for (name, help, get) in port_series {
        header(&mut out, name, "counter", help);
        for (id, c) in &snaps {
            let _ = writeln!(out, "{name}{{port=\"{id}\"}} {}", get(c));
        }
    }

    header(
        &mut out,
        "switchboard_port_drops_total",
        "counter",
        "Packets received on the port and dropped by the pipeline, by reason.",
    );
    for p in &switch.ports {
        for r in DropReason::all() {
            let _ = writeln!(
                out,
                "switchboard_port_drops_total{{port=\"{}\",reason=\"{}\"}} {}",
                p.id,
                label(r.name()),
                p.counters.drops(r)
            );
        }
    }

    let tables: Vec<_> = switch
        .tables
        .iter()
        .map(|(name, t)| (label(name), t.stats(), t.len(), t.schema().size))
        .collect();
    header(
        &mut out,
        "switchboard_table_hits_total",
        "counter",
        "Table lookups that matched an entry.",
    );
    for (name, st, _, _) in &tables {
        let _ = writeln!(
            out,
            "switchboard_table_hits_total{{table=\"{name}\"}} {}",
            st.hits
        );
    }
    header(
        &mut out,
        "switchboard_table_misses_total",
        "counter",
        "Table lookups that fell to the default action.",
    );
    for (name, st, _, _) in &tables {
        let _ = writeln!(
            out,
            "switchboard_table_misses_total{{table=\"{name}\"}} {}",
            st.misses
        );
    }
    header(
        &mut out,
        "switchboard_table_entries",
        "gauge",
        "Entries installed in the table.",
    );
    for (name, _, len, _) in &tables {
        let _ = writeln!(out, "switchboard_table_entries{{table=\"{name}\"}} {len}");
    }
    header(
        &mut out,
        "switchboard_table_size",
        "gauge",
        "Maximum number of entries of the table.",
    );
    for (name, _, _, size) in &tables {
        let _ = writeln!(out, "switchboard_table_size{{table=\"{name}\"}} {size}");
    }
    crate::iptfs::render_metrics(switch, &mut out);
    out
}
