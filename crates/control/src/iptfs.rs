//! The `iptfs` stage's SA counters: `GET /api/v1/iptfs` (JSON) and their `/metrics` series.
//!
//! The stage publishes a copy of every SA's counters after each round in which something
//! changed ([`dataplane::stages::iptfs::IptfsHandle`]); this module only reads that copy, so a
//! scrape never touches the worker.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use dataplane::Switch;
use dataplane::stages::iptfs::{SaStats, handle_of};

use crate::error::{AppError, AppJson};
use crate::state::AppState;

/// The answer of `GET /api/v1/iptfs`.
#[derive(Debug, serde::Serialize)]
pub struct IptfsJson {
    /// Every configured SA, in config order.
    pub sas: Vec<SaStats>,
}

/// The `/api/v1/iptfs` route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/iptfs", get(list))
}

async fn list(State(st): State<AppState>) -> Result<AppJson<IptfsJson>, AppError> {
    let h = handle_of(&st.switch).ok_or_else(|| {
        AppError::Unsupported("this switch's pipeline has no 'iptfs' stage".into())
    })?;
    Ok(AppJson(IptfsJson { sas: h.snapshot() }))
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn direction(s: &SaStats) -> &'static str {
    match s.direction {
        dataplane::stages::iptfs::Direction::Out => "out",
        dataplane::stages::iptfs::Direction::In => "in",
    }
}

/// Appends the iptfs series to a `/metrics` body (nothing when there is no iptfs stage):
/// `switchboard_iptfs_sa_info`, `switchboard_iptfs_sa_seq`, `switchboard_iptfs_sa_queued_bytes`
/// and one `switchboard_iptfs_<counter>_total{sa,direction}` family per counter name (the
/// codec's and the stage's, e.g. `ttl_expired`, `ecn_marked`, `ecn_dropped`,
/// `outer_addr_mismatch`, `outer_fragments`; every SA lists every name of its direction, zeros included, so a
/// dashboard sees the series before the first event).
pub fn render_metrics(switch: &Switch, out: &mut String) {
    let Some(h) = handle_of(switch) else {
        return;
    };
    let sas = h.snapshot();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP switchboard_iptfs_sa_info IP-TFS SAs of the iptfs stage (value always 1).\n\
         # TYPE switchboard_iptfs_sa_info gauge"
    );
    for s in &sas {
        let mode = s.mode.map_or("none", |m| match m {
            dataplane::stages::iptfs::Mode::Demand => "demand",
            dataplane::stages::iptfs::Mode::Iptfs => "iptfs",
            dataplane::stages::iptfs::Mode::Plain => "plain",
        });
        let _ = writeln!(
            out,
            "switchboard_iptfs_sa_info{{sa=\"{}\",direction=\"{}\",spi=\"{:#x}\",mode=\"{mode}\",local=\"{}\",remote=\"{}\",port=\"{}\"}} 1",
            label(&s.name),
            direction(s),
            s.spi,
            s.local,
            s.remote,
            s.port
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_iptfs_sa_seq ESP sequence number last sent (out) or highest received (in).\n\
         # TYPE switchboard_iptfs_sa_seq gauge"
    );
    for s in &sas {
        let _ = writeln!(
            out,
            "switchboard_iptfs_sa_seq{{sa=\"{}\",direction=\"{}\"}} {}",
            label(&s.name),
            direction(s),
            s.seq
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_iptfs_sa_queued_bytes Inner octets waiting in an out SA's send queue.\n\
         # TYPE switchboard_iptfs_sa_queued_bytes gauge"
    );
    for s in sas.iter().filter(|s| s.mode.is_some()) {
        let _ = writeln!(
            out,
            "switchboard_iptfs_sa_queued_bytes{{sa=\"{}\"}} {}",
            label(&s.name),
            s.queued_bytes
        );
    }
    let mut families: BTreeMap<&str, Vec<(&SaStats, u64)>> = BTreeMap::new();
    for s in &sas {
        for (k, v) in &s.counters {
            families.entry(k).or_default().push((s, *v));
        }
    }
    for (name, rows) in families {
        let _ = writeln!(
            out,
            "# HELP switchboard_iptfs_{name}_total IP-TFS SA counter '{name}' (see GET /api/v1/iptfs).\n\
             # TYPE switchboard_iptfs_{name}_total counter"
        );
        for (s, v) in rows {
            let _ = writeln!(
                out,
                "switchboard_iptfs_{name}_total{{sa=\"{}\",direction=\"{}\"}} {v}",
                label(&s.name),
                direction(s)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use dataplane::port::memory::MemoryPort;
    use dataplane::{Port, SwitchConfig};
    use serde_json::Value;
    use tower::ServiceExt;

    const CONFIG: &str = r#"
[pipeline]
stages = ["iptfs"]

[[stage.iptfs.sa]]
name = "r1-to-r2"
direction = "out"
spi = 0xAAA
key = "4a506a794f574265564551694d6537681a2b1a2b"
local = "10.0.1.2"
remote = "10.0.1.3"
selector = ["10.0.2.0/24"]
port = 2
dst_mac = "02:00:00:00:00:02"
src_mac = "02:00:00:00:00:01"

[[stage.iptfs.sa]]
name = "r2-to-r1"
direction = "in"
spi = 0xBBB
key = "4a506a794f574265564551694d6537681a2b1a2b"
local = "10.0.1.2"
remote = "10.0.1.3"
port = 1
dst_mac = "02:00:00:00:00:09"
src_mac = "02:00:00:00:00:01"
"#;

    async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let s = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    #[tokio::test]
    async fn counters_in_api_and_metrics() {
        let cfg = SwitchConfig::parse(CONFIG, Path::new("t.toml")).unwrap();
        let mut ports: Vec<Box<dyn Port>> = Vec::new();
        let mut handles = Vec::new();
        for id in [1u16, 2] {
            let (p, h) = MemoryPort::new(id);
            ports.push(Box::new(p));
            handles.push(h);
        }
        let mut a = dataplane::assemble_with_ports(&cfg, ports).unwrap();
        let app = crate::app(Arc::clone(&a.switch));
        // Three inner packets to 10.0.2.4 in on port 1: one outer out of port 2.
        for tag in 0..3 {
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 8, 0];
            f.extend(iptfs_inner(100 + tag));
            handles[0].inject(&f);
        }
        // TTL 1: a router cannot forward it into the tunnel (counted, not sent).
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 8, 0];
        let mut expiring = iptfs_inner(100);
        expiring[8] = 1;
        f.extend(expiring);
        handles[0].inject(&f);
        // Outer IPv4 fragments of ESP to the in SA (the first with its SPI, a later one
        // without): not reassembled, counted as `outer_fragments`.
        handles[1].inject(&outer_fragment(0x2000, true));
        handles[1].inject(&outer_fragment(0x0010, false));
        while handles[1].pending() > 0 {
            a.worker.poll_once().unwrap();
        }
        while handles[0].pending() > 0 {
            a.worker.poll_once().unwrap();
        }
        // A quiet round publishes the counters.
        a.worker.poll_once().unwrap();
        assert_eq!(handles[1].take_sent().len(), 1);
        let (s, body) = get(&app, "/api/v1/iptfs").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let sas = v["sas"].as_array().unwrap();
        assert_eq!(sas.len(), 2);
        assert_eq!(sas[0]["name"], "r1-to-r2");
        assert_eq!(sas[0]["direction"], "out");
        assert_eq!(sas[0]["spi"], 0xAAA);
        assert_eq!(sas[0]["seq"], 1);
        assert_eq!(sas[0]["counters"]["inner_packets"], 3);
        assert_eq!(sas[0]["counters"]["outer_packets"], 1);
        assert_eq!(sas[1]["direction"], "in");
        assert_eq!(sas[1]["counters"]["bad_icv"], 0);
        assert_eq!(sas[0]["counters"]["ttl_expired"], 1);
        assert_eq!(sas[1]["counters"]["outer_fragments"], 2);
        assert_eq!(sas[1]["counters"]["push_errors"], 0, "not an out-SA error");
        assert_eq!(sas[0]["counters"]["outer_fragments"], 0);
        for c in [
            "ttl_expired",
            "ecn_marked",
            "ecn_dropped",
            "outer_addr_mismatch",
        ] {
            assert_eq!(sas[1]["counters"][c], 0, "{c} listed for the in SA");
        }
        let (s, text) = get(&app, "/metrics").await;
        assert_eq!(s, StatusCode::OK);
        assert!(text.contains(
            "switchboard_iptfs_inner_packets_total{sa=\"r1-to-r2\",direction=\"out\"} 3\n"
        ));
        assert!(text.contains(
            "switchboard_iptfs_outer_packets_total{sa=\"r1-to-r2\",direction=\"out\"} 1\n"
        ));
        assert!(text.contains("switchboard_iptfs_sa_seq{sa=\"r1-to-r2\",direction=\"out\"} 1\n"));
        assert!(
            text.contains("switchboard_iptfs_bad_icv_total{sa=\"r2-to-r1\",direction=\"in\"} 0\n")
        );
        assert!(text.contains("spi=\"0xaaa\",mode=\"demand\""));
        assert!(text.contains(
            "switchboard_iptfs_ttl_expired_total{sa=\"r1-to-r2\",direction=\"out\"} 1\n"
        ));
        assert!(text.contains(
            "switchboard_iptfs_outer_fragments_total{sa=\"r2-to-r1\",direction=\"in\"} 2\n"
        ));
        for c in ["ecn_marked", "ecn_dropped", "outer_addr_mismatch"] {
            assert!(
                text.contains(&format!(
                    "switchboard_iptfs_{c}_total{{sa=\"r2-to-r1\",direction=\"in\"}} 0\n"
                )),
                "{c} in /metrics"
            );
        }
    }

    /// An IPv4 fragment (flags / offset field `frag`) of ESP from 10.0.1.3 to 10.0.1.2, the
    /// in SA's endpoints; `first` starts with the in SA's ESP header.
    fn outer_fragment(frag: u16, first: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 8, 0];
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 7, 0, 0, 64, 50, 0, 0, 10, 0, 1, 3, 10, 0, 1, 2,
        ];
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        if first {
            ip.extend_from_slice(&[0, 0, 0x0b, 0xbb, 0, 0, 0, 1]);
        }
        ip.extend_from_slice(&[0x5a; 64]);
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        let mut sum: u32 = ip[..20]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        f.extend(ip);
        f
    }

    /// A minimal IPv4 packet of `len` octets to 10.0.2.4.
    fn iptfs_inner(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 253;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 2, 4]);
        p
    }

    #[tokio::test]
    async fn no_stage_is_501() {
        let cfg = SwitchConfig::parse("[pipeline]\nstages = [\"forward\"]\n", Path::new("t.toml"))
            .unwrap();
        let a = dataplane::assemble_with_ports(&cfg, Vec::new()).unwrap();
        let app = crate::app(Arc::clone(&a.switch));
        let (s, _) = get(&app, "/api/v1/iptfs").await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
        let (_, text) = get(&app, "/metrics").await;
        assert!(!text.contains("switchboard_iptfs"));
    }
}
