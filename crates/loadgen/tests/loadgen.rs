//! Load generator against a scripted fake stream server on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{FakeServer, Step, TempDir, free_addr};
use loadgen::{Loadgen, LoadgenArgs, LoadgenConfig, LoadgenMetrics, Summary};

const FPS: f64 = 50.0; // 20 ms frame interval

fn config(server: &FakeServer, connections: usize) -> LoadgenConfig {
    let mut c = LoadgenConfig::new(server.addr.to_string());
    c.connections = connections;
    c.fps = FPS;
    c.ramp_up = Duration::ZERO;
    c.ping_interval = Duration::from_millis(20);
    c
}

fn run_for(cfg: LoadgenConfig, d: Duration) -> Summary {
    let lg = Loadgen::start(cfg).unwrap();
    std::thread::sleep(d);
    lg.stop()
}

#[test]
fn clean_stream_has_no_holes_and_gaps_near_the_frame_interval() {
    let srv = FakeServer::start(FPS, vec![]);
    let s = run_for(config(&srv, 2), Duration::from_millis(1000));
    assert_eq!(s.total_clients, 2);
    assert_eq!(s.connected_at_end, 2);
    assert_eq!(s.connection_drops, 0);
    assert_eq!(s.sequence_holes, 0);
    assert_eq!(s.duplicate_frames, 0);
    assert!(s.frames_received >= 60, "frames {}", s.frames_received);
    assert!(s.bytes_received >= s.frames_received * 512);
    assert!(s.bytes_sent >= 2 * 40 * 10, "bytes_sent {}", s.bytes_sent);
    for c in &s.per_connection {
        assert!(c.connected_at_end && !c.dropped);
        assert!(c.frames >= 30, "conn {} frames {}", c.conn, c.frames);
        // Nominal 20 ms; allow scheduling noise on a busy 2-core machine (other builds run
        // beside the tests) but stay below the 200 ms pause the pause test must detect.
        assert!(
            c.longest_gap_ms >= 15.0 && c.longest_gap_ms < 150.0,
            "conn {} longest gap {} ms",
            c.conn,
            c.longest_gap_ms
        );
    }
    assert!(
        (s.measured_frame_interval_ms - 20.0).abs() < 5.0,
        "measured interval {}",
        s.measured_frame_interval_ms
    );
    assert_eq!(s.frame_interval_ms, 20.0);
    assert!(s.rtt.count >= 20, "rtt samples {}", s.rtt.count);
    assert!(
        s.rtt.avg_ms > 0.0 && s.rtt.avg_ms < 50.0,
        "rtt {}",
        s.rtt.avg_ms
    );
    assert!(s.rtt.p50_ms <= s.rtt.p95_ms && s.rtt.p95_ms <= s.rtt.max_ms);
}

#[test]
fn skipped_sequence_numbers_are_counted_as_holes() {
    let srv = FakeServer::start(FPS, vec![Step::Frames(5), Step::Skip(3), Step::Frames(5)]);
    let s = run_for(config(&srv, 1), Duration::from_millis(500));
    assert_eq!(s.sequence_holes, 3);
    assert_eq!(s.duplicate_frames, 0);
    assert_eq!(s.per_connection[0].holes, 3);
}

#[test]
fn repeated_sequence_numbers_are_counted_as_duplicates() {
    let srv = FakeServer::start(
        FPS,
        vec![Step::Frames(5), Step::Repeat, Step::Repeat, Step::Frames(3)],
    );
    let s = run_for(config(&srv, 1), Duration::from_millis(500));
    assert_eq!(s.duplicate_frames, 2);
    assert_eq!(s.sequence_holes, 0);
}

#[test]
fn server_closing_is_a_connection_drop_without_reconnect() {
    let srv = FakeServer::start(FPS, vec![Step::Frames(5), Step::Close]);
    let s = run_for(config(&srv, 1), Duration::from_millis(600));
    assert_eq!(s.connection_drops, 1);
    assert_eq!(s.total_clients, 1, "must not reconnect");
    assert_eq!(s.connected_at_end, 0);
    let c = &s.per_connection[0];
    assert!(c.dropped && !c.connected_at_end);
    assert_eq!(c.frames, 5);
}

#[test]
fn garbage_from_the_server_ends_the_connection_as_a_drop() {
    let srv = FakeServer::start(FPS, vec![Step::Frames(3), Step::Garbage, Step::Frames(3)]);
    let s = run_for(config(&srv, 1), Duration::from_millis(400));
    assert_eq!(s.connection_drops, 1);
    assert_eq!(s.frames_received, 3);
}

#[test]
fn connect_retries_until_the_server_appears() {
    let addr = free_addr();
    let mut cfg = LoadgenConfig::new(addr.to_string());
    cfg.connections = 1;
    cfg.fps = FPS;
    let lg = Loadgen::start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lg.connected_clients(), 0);
    let _srv = FakeServer::start_on(addr, FPS, vec![]);
    // First retry at 0.5 s, then 1 s later.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while lg.connected_clients() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = lg.stop();
    assert_eq!(s.total_clients, 1);
    assert_eq!(s.connection_drops, 0);
    assert!(s.frames_received > 0);
}

#[test]
fn metrics_endpoint_serves_interval_scoped_json() {
    let srv = FakeServer::start(FPS, vec![]);
    let mut cfg = config(&srv, 1);
    // One ping at start, the next only after the test ends: the RTT window is deterministic.
    cfg.ping_interval = Duration::from_secs(30);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let lg = Loadgen::start(cfg).unwrap();
    let url = format!("http://{}/metrics", lg.metrics_addr().unwrap());
    std::thread::sleep(Duration::from_millis(400));
    let get = |u: &str| -> LoadgenMetrics {
        let body = ureq::get(u)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    };
    let first = get(&url);
    assert_eq!(first.connected_clients, 1);
    assert_eq!(first.total_clients, 1);
    assert!(first.frames_received >= 10);
    assert!(first.avg_rtt_ms > 0.0 && first.max_rtt_ms >= first.avg_rtt_ms);
    assert!(first.max_gap_ms > 0.0 && first.max_gap_ms < 200.0);
    assert_eq!(first.bytes_sent, 40);
    let second = get(&url);
    assert_eq!(second.avg_rtt_ms, 0.0, "RTT buffer must reset on scrape");
    assert_eq!(second.max_rtt_ms, 0.0);
    assert!(second.frames_received >= first.frames_received);
    // Every JSON key upstream's collector reads is present.
    let raw: serde_json::Value = serde_json::from_str(
        &ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    for k in [
        "connected_clients",
        "total_clients",
        "avg_rtt_ms",
        "p50_rtt_ms",
        "p95_rtt_ms",
        "p99_rtt_ms",
        "max_rtt_ms",
        "jitter_ms",
        "bytes_sent",
        "bytes_received",
        "connection_drops",
        "max_gap_ms",
        "sequence_holes",
        "duplicate_frames",
        "frames_received",
    ] {
        assert!(raw.get(k).is_some(), "missing {k}");
    }
    let status = ureq::get(&format!("http://{}/nope", lg.metrics_addr().unwrap())).call();
    assert!(status.is_err(), "unknown path must be 404");
    lg.stop();
}

/// The whole CLI path: a 200 ms server pause shows up in the gap log, the summary and the
/// trace, with the generation change across it.
#[test]
fn pause_is_logged_and_becomes_the_downtime() {
    let srv = FakeServer::start(
        FPS,
        vec![
            Step::Frames(10),
            Step::Pause(Duration::from_millis(200)),
            Step::Generation(1),
        ],
    );
    let dir = TempDir::new("pause");
    let args = LoadgenArgs {
        server: format!("http://{}", srv.addr),
        connections: 1,
        ping_interval_ms: 20,
        rtt_cap_ms: 1000,
        interval: Duration::from_millis(500),
        duration: Duration::from_millis(1200),
        metrics_port: 0,
        ramp_up: Duration::ZERO,
        fps: FPS,
        summary: Some(dir.path("summary.json")),
        gap_log: Some(dir.path("gaps.jsonl")),
        trace: Some(dir.path("trace.csv")),
    };
    loadgen::run_loadgen(args).unwrap();

    let gaps = std::fs::read_to_string(dir.path("gaps.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = gaps
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Scheduling noise on a loaded machine can add short logged gaps (> 60 ms); the pause is
    // the only one of 150 ms or more.
    let long: Vec<_> = lines
        .iter()
        .filter(|g| g["gap_ms"].as_f64().unwrap() >= 150.0)
        .collect();
    assert_eq!(long.len(), 1, "gap log: {gaps}");
    let g = long[0];
    let gap_ms = g["gap_ms"].as_f64().unwrap();
    // Pause 200 ms on top of the 20 ms interval.
    assert!((200.0..300.0).contains(&gap_ms), "gap {gap_ms}");
    assert_eq!(g["conn"], 0);
    assert_eq!(g["seq_before"], 9);
    assert_eq!(g["seq_after"], 10);
    assert_eq!(g["generation_before"], 0);
    assert_eq!(g["generation_after"], 1);
    let (start, end) = (
        g["start_ns"].as_u64().unwrap(),
        g["end_ns"].as_u64().unwrap(),
    );
    assert!(((end - start) as f64 / 1e6 - gap_ms).abs() < 1e-3);

    let s: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.path("summary.json")).unwrap()).unwrap();
    assert_eq!(s.sequence_holes, 0);
    assert_eq!(s.connection_drops, 0);
    assert_eq!(s.gaps_logged, lines.len() as u64);
    assert_eq!(s.per_connection[0].max_generation, 1);
    assert_eq!(s.per_connection[0].longest_gap_end_ns, end);
    assert!((s.max_gap_ms - gap_ms).abs() < 1e-3);
    assert!(
        (s.downtime_ms - (gap_ms - 20.0)).abs() < 1e-6,
        "downtime {} gap {gap_ms}",
        s.downtime_ms
    );
    assert!(s.start_ns < start && end < s.end_ns);

    let trace = std::fs::read_to_string(dir.path("trace.csv")).unwrap();
    let mut rows = trace.lines();
    assert_eq!(
        rows.next(),
        Some("t_s,frames,max_gap_ms,rtt_max_ms,rtt_avg_ms")
    );
    let rows: Vec<Vec<f64>> = rows
        .map(|r| r.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() >= 9, "trace rows {}", rows.len());
    assert!(rows.iter().all(|r| r.len() == 5));
    let frames: f64 = rows.iter().map(|r| r[1]).sum();
    assert!(frames <= s.frames_received as f64 && frames >= s.frames_received as f64 - 10.0);
    let worst = rows.iter().map(|r| r[2]).fold(0.0, f64::max);
    assert!(worst >= 100.0, "trace never saw the gap: max {worst}");
}
