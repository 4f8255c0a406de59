//! Contract check against the real stream server (crates/stream) on 127.0.0.1: the load
//! generator reads its frames and echoes cleanly, and the collector reads its Prometheus
//! metrics. No root needed (no migration here).

mod common;

use std::time::Duration;

use common::{TempDir, free_addr};
use loadgen::{CSV_HEADER, Collector, CollectorConfig, Loadgen, LoadgenConfig};

#[test]
fn loadgen_and_collector_against_the_real_stream_server() {
    let dir = TempDir::new("real");
    let (sig, met) = (free_addr(), free_addr());
    let control = dir.path("control.sock");
    let args = stream::ServerArgs {
        signaling_addr: sig.to_string(),
        metrics_addr: met.to_string(),
        fps: 50,
        control: Some(control.clone()),
        ..Default::default()
    };
    let server = std::thread::spawn(move || stream::run(args));
    let mut cfg = LoadgenConfig::new(sig.to_string());
    cfg.connections = 2;
    cfg.fps = 50.0;
    cfg.ramp_up = Duration::ZERO;
    cfg.ping_interval = Duration::from_millis(20);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let lg = Loadgen::start(cfg).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while lg.connected_clients() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));

    let out = dir.path("m.csv");
    let mut c = Collector::create(CollectorConfig {
        server_metrics_url: format!("http://{met}/metrics"),
        loadgen_url: format!("http://{}/metrics", lg.metrics_addr().unwrap()),
        migration_flag: dir.path("flag"),
        output: out,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let row = c.tick().unwrap();
    let s = lg.stop();
    let shut = stream::control_request(
        &control,
        &serde_json::json!({"op": "shutdown"}),
        Duration::from_secs(2),
    );

    assert_eq!(s.total_clients, 2);
    assert_eq!(s.connection_drops, 0);
    assert_eq!(s.sequence_holes, 0);
    assert_eq!(s.duplicate_frames, 0);
    assert!(s.frames_received >= 40, "frames {}", s.frames_received);
    assert!(s.rtt.count >= 20, "rtt samples {}", s.rtt.count);
    assert!(s.max_gap_ms < 100.0, "max gap {}", s.max_gap_ms);

    assert_eq!(row.server.connected_clients, 2.0);
    assert!(row.server.uptime_seconds > 0.0);
    assert!(row.server.bytes_sent > 0.0);
    assert_eq!(row.loadgen.connected_clients, 2);
    assert!(row.loadgen.frames_received > 0);
    assert_eq!(CSV_HEADER.len(), 22);
    // Join only if the server agreed to stop; otherwise it would block the test forever.
    if shut.is_ok() {
        server.join().unwrap().unwrap();
    }
}
