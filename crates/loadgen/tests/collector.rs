//! Collector against fake server and load generator endpoints.

mod common;

use std::collections::HashMap;

use common::{FakeHttp, TempDir, free_addr};
use loadgen::{CSV_HEADER, Collector, CollectorConfig, LoadgenMetrics};

fn read_csv(p: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn col(name: &str) -> usize {
    CSV_HEADER.iter().position(|h| *h == name).unwrap()
}

#[test]
fn header_then_rows_with_scraped_values_and_the_migration_flag() {
    let lg = LoadgenMetrics {
        connected_clients: 4,
        total_clients: 4,
        avg_rtt_ms: 0.3125,
        p50_rtt_ms: 0.3,
        p95_rtt_ms: 0.45,
        p99_rtt_ms: 0.5,
        max_rtt_ms: 0.61,
        jitter_ms: 0.04,
        bytes_sent: 1000,
        bytes_received: 50_000,
        connection_drops: 1,
        max_gap_ms: 3905.5,
        sequence_holes: 2,
        duplicate_frames: 3,
        frames_received: 100,
    };
    let mut routes = HashMap::new();
    routes.insert(
        "/metrics",
        "# TYPE connected_clients gauge\nconnected_clients 4\ntotal_clients 5\nuptime_seconds 12.34\n\
         bytes_sent 123456\nbytes_received 789\ncpu_percent 1.5\nmemory_mb 9.25\n"
            .to_string(),
    );
    routes.insert("/lg", serde_json::to_string(&lg).unwrap());
    let http = FakeHttp::start(routes);
    let dir = TempDir::new("collector");
    let flag = dir.path("flag");
    let out = dir.path("metrics.csv");
    let mut c = Collector::create(CollectorConfig {
        server_metrics_url: http.url("/metrics"),
        loadgen_url: http.url("/lg"),
        migration_flag: flag.clone(),
        output: out.clone(),
        timeout: std::time::Duration::from_secs(2),
    })
    .unwrap();
    // Header is written (and flushed) before the first tick.
    assert_eq!(read_csv(&out), vec![CSV_HEADER.map(String::from).to_vec()]);

    std::fs::write(&flag, b"").unwrap();
    let r1 = c.tick().unwrap();
    assert!(r1.migration_event);
    assert!(!flag.exists(), "flag must be consumed");
    let r2 = c.tick().unwrap();
    assert!(!r2.migration_event);

    let rows = read_csv(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].len(), 22);
    assert_eq!(&rows[0][..19], &CSV_HEADER[..19]);
    for r in &rows[1..] {
        assert_eq!(r.len(), 22, "row {r:?}");
        assert!(r[col("timestamp")].ends_with('Z'));
        assert_eq!(r[col("connected_clients")], "4");
        assert_eq!(r[col("total_clients")], "5");
        assert_eq!(r[col("bytes_sent")], "123456");
        assert_eq!(r[col("bytes_received")], "789");
        assert_eq!(r[col("uptime_s")], "12.3");
        assert_eq!(r[col("lg_connected_clients")], "4");
        assert_eq!(r[col("ws_rtt_avg_ms")], "0.312");
        assert_eq!(r[col("ws_rtt_p95_ms")], "0.450");
        assert_eq!(r[col("ws_rtt_max_ms")], "0.610");
        assert_eq!(r[col("ws_jitter_ms")], "0.040");
        assert_eq!(r[col("connection_drops")], "1");
        assert_eq!(r[col("cpu_percent")], "1.50");
        assert_eq!(r[col("memory_mb")], "9.25");
        assert_eq!(r[col("lg_max_gap_ms")], "3905.500");
        assert_eq!(r[col("lg_sequence_holes")], "2");
        assert_eq!(r[col("lg_duplicate_frames")], "3");
    }
    assert_eq!(rows[1][col("migration_event")], "1");
    assert_eq!(rows[2][col("migration_event")], "0");
    let t1: u64 = rows[1][col("timestamp_unix_milli")].parse().unwrap();
    let t2: u64 = rows[2][col("timestamp_unix_milli")].parse().unwrap();
    assert!(t2 >= t1);
}

#[test]
fn unreachable_endpoints_give_a_row_of_zeros() {
    let dead = format!("http://{}/metrics", free_addr());
    let dir = TempDir::new("collector-dead");
    let out = dir.path("m.csv");
    let mut c = Collector::create(CollectorConfig {
        server_metrics_url: dead.clone(),
        loadgen_url: dead,
        migration_flag: dir.path("noflag"),
        output: out.clone(),
        timeout: std::time::Duration::from_secs(2),
    })
    .unwrap();
    let r = c.tick().unwrap();
    assert!(!r.migration_event);
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][col("connected_clients")], "0");
    assert_eq!(rows[1][col("ws_rtt_avg_ms")], "0.000");
    assert_eq!(rows[1][col("lg_max_gap_ms")], "0.000");
    assert_eq!(rows[1][col("migration_event")], "0");
}

#[test]
fn run_collector_ticks_every_interval_until_the_duration() {
    let dir = TempDir::new("collector-run");
    let dead = format!("http://{}/metrics", free_addr());
    let out = dir.path("run.csv");
    loadgen::run_collector(loadgen::CollectorArgs {
        server_metrics_url: dead.clone(),
        loadgen_url: dead,
        migration_flag: dir.path("flag"),
        output: out.clone(),
        interval: std::time::Duration::from_millis(100),
        duration: std::time::Duration::from_millis(450),
    })
    .unwrap();
    let rows = read_csv(&out);
    // Header plus ticks at 0.1, 0.2, 0.3, 0.4 s (the last may miss on a loaded machine).
    assert!((4..=5).contains(&rows.len()), "{rows:?}");
    let elapsed: Vec<f64> = rows[1..]
        .iter()
        .map(|r| r[col("elapsed_s")].parse().unwrap())
        .collect();
    assert!(elapsed.windows(2).all(|w| w[1] > w[0]));
    assert!((0.09..0.2).contains(&elapsed[0]), "{elapsed:?}");
}
