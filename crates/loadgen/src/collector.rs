//! The collector: every tick, scrape the stream server's metrics and the load generator's
//! `/metrics`, check the migration flag file, append one CSV row. The columns are upstream's
//! 19 in order, then ours, so upstream's plotting scripts read our files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::error::{LoadgenError, Result};
use crate::loadgen::LoadgenMetrics;
use crate::parse::parse_duration;
use crate::signal;

/// CSV header: upstream's 19 columns, then `lg_max_gap_ms, lg_sequence_holes,
/// lg_duplicate_frames`.
pub const CSV_HEADER: [&str; 22] = [
    "timestamp",
    "timestamp_unix_milli",
    "elapsed_s",
    "connected_clients",
    "total_clients",
    "bytes_sent",
    "bytes_received",
    "uptime_s",
    "lg_connected_clients",
    "ws_rtt_avg_ms",
    "ws_rtt_p50_ms",
    "ws_rtt_p95_ms",
    "ws_rtt_p99_ms",
    "ws_rtt_max_ms",
    "ws_jitter_ms",
    "connection_drops",
    "cpu_percent",
    "memory_mb",
    "migration_event",
    "lg_max_gap_ms",
    "lg_sequence_holes",
    "lg_duplicate_frames",
];

/// Command-line flags, named as upstream's `cmd/collector` plus `--duration`.
#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    /// Stream server metrics (Prometheus text or JSON).
    #[arg(long, default_value = "http://localhost:8081/metrics")]
    pub server_metrics_url: String,
    /// Load generator JSON metrics.
    #[arg(long, default_value = "http://localhost:9090/metrics")]
    pub loadgen_url: String,
    /// If this file exists at a tick, the row gets migration_event=1 and the file is deleted.
    #[arg(long, default_value = "/tmp/collector_migration_flag")]
    pub migration_flag: PathBuf,
    /// CSV output (truncated at start, as upstream's os.Create).
    #[arg(long, default_value = "metrics.csv")]
    pub output: PathBuf,
    /// Sampling period ("1s", "500ms").
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Run length; 0 runs until SIGINT/SIGTERM.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub duration: Duration,
}

/// Settings for [`Collector::create`].
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub server_metrics_url: String,
    pub loadgen_url: String,
    pub migration_flag: PathBuf,
    pub output: PathBuf,
    /// Timeout of each scrape (upstream: 2 s).
    pub timeout: Duration,
}

impl From<&CollectorArgs> for CollectorConfig {
    fn from(a: &CollectorArgs) -> Self {
        CollectorConfig {
            server_metrics_url: a.server_metrics_url.clone(),
            loadgen_url: a.loadgen_url.clone(),
            migration_flag: a.migration_flag.clone(),
            output: a.output.clone(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The stream server's metrics the CSV uses. Zeros when the scrape failed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerMetrics {
    pub connected_clients: f64,
    pub total_clients: f64,
    pub uptime_seconds: f64,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub cpu_percent: f64,
    pub memory_mb: f64,
}

/// Read server metrics from Prometheus text (`name{labels} value [ts]`, `#` comments) or,
/// as upstream's older server served, a JSON object with the same names. Unknown names are
/// ignored; a name may carry a prefix ending in `_` (e.g. `stream_connected_clients`).
pub fn parse_server_metrics(body: &str) -> ServerMetrics {
    let mut m = ServerMetrics::default();
    let mut set = |name: &str, v: f64| {
        let fields: [(&str, &mut f64); 7] = [
            ("connected_clients", &mut m.connected_clients),
            ("total_clients", &mut m.total_clients),
            ("uptime_seconds", &mut m.uptime_seconds),
            ("bytes_sent", &mut m.bytes_sent),
            ("bytes_received", &mut m.bytes_received),
            ("cpu_percent", &mut m.cpu_percent),
            ("memory_mb", &mut m.memory_mb),
        ];
        for (key, slot) in fields {
            let prefixed = name
                .strip_suffix(key)
                .is_some_and(|p| p.is_empty() || p.ends_with('_'));
            if prefixed && v.is_finite() {
                *slot = v;
                return;
            }
        }
    };
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(trimmed) {
            for (k, v) in obj {
                if let Some(x) = v.as_f64() {
                    set(&k, x);
                }
            }
        }
        return m;
    }
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ', '\t']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let rest = match rest.strip_prefix('{') {
            Some(r) => match r.find('}') {
                Some(j) => &r[j + 1..],
                None => continue,
            },
            None => rest,
        };
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            set(name, v);
        }
    }
    m
}

/// One CSV row as scraped, returned by [`Collector::tick`] so callers can react without
/// re-reading the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Wall-clock time of the tick, Unix ms (the `timestamp*` columns).
    pub unix_ms: u64,
    /// Seconds since the collector started.
    pub elapsed_s: f64,
    /// Zeros if the server scrape failed.
    pub server: ServerMetrics,
    /// Zeros if the load generator scrape failed.
    pub loadgen: LoadgenMetrics,
    /// The flag file existed (and was deleted) at this tick.
    pub migration_event: bool,
}

impl Row {
    fn to_csv(&self) -> String {
        let s = &self.server;
        let l = &self.loadgen;
        let int = |v: f64| format!("{}", v.max(0.0).round() as u64);
        let cols: [String; 22] = [
            rfc3339_utc_ms(self.unix_ms),
            self.unix_ms.to_string(),
            format!("{:.3}", self.elapsed_s),
            int(s.connected_clients),
            int(s.total_clients),
            int(s.bytes_sent),
            int(s.bytes_received),
            format!("{:.1}", s.uptime_seconds),
            l.connected_clients.to_string(),
            format!("{:.3}", l.avg_rtt_ms),
            format!("{:.3}", l.p50_rtt_ms),
            format!("{:.3}", l.p95_rtt_ms),
            format!("{:.3}", l.p99_rtt_ms),
            format!("{:.3}", l.max_rtt_ms),
            format!("{:.3}", l.jitter_ms),
            l.connection_drops.to_string(),
            format!("{:.2}", s.cpu_percent),
            format!("{:.2}", s.memory_mb),
            u8::from(self.migration_event).to_string(),
            format!("{:.3}", l.max_gap_ms),
            l.sequence_holes.to_string(),
            l.duplicate_frames.to_string(),
        ];
        cols.join(",")
    }
}

/// A collector writing to its CSV file; call [`Collector::tick`] once per interval.
pub struct Collector {
    cfg: CollectorConfig,
    agent: ureq::Agent,
    out: BufWriter<File>,
    start: Instant,
}

impl Collector {
    /// Create (truncate) the output file and write the header.
    pub fn create(cfg: CollectorConfig) -> Result<Collector> {
        let f = File::create(&cfg.output)
            .map_err(|e| LoadgenError::io(format!("create {}", cfg.output.display()), e))?;
        let mut out = BufWriter::new(f);
        writeln!(out, "{}", CSV_HEADER.join(","))
            .and_then(|_| out.flush())
            .map_err(|e| LoadgenError::io("write CSV header", e))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .build()
            .into();
        Ok(Collector {
            cfg,
            agent,
            out,
            start: Instant::now(),
        })
    }

    fn get(&self, url: &str) -> Option<String> {
        match self
            .agent
            .get(url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
        {
            Ok(body) => Some(body),
            Err(e) => {
                tracing::debug!(url, error = %e, "scrape failed; zeros");
                None
            }
        }
    }

    /// Scrape both endpoints, consume the migration flag, append and flush one row.
    pub fn tick(&mut self) -> Result<Row> {
        let elapsed_s = self.start.elapsed().as_secs_f64();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let server = self
            .get(&self.cfg.server_metrics_url)
            .map(|b| parse_server_metrics(&b))
            .unwrap_or_default();
        let loadgen = self
            .get(&self.cfg.loadgen_url)
            .and_then(|b| serde_json::from_str::<LoadgenMetrics>(&b).ok())
            .unwrap_or_default();
        let migration_event = take_flag(&self.cfg.migration_flag);
        if migration_event {
            tracing::info!("migration event flagged");
        }
        let row = Row {
            unix_ms,
            elapsed_s,
            server,
            loadgen,
            migration_event,
        };
        writeln!(self.out, "{}", row.to_csv())
            .and_then(|_| self.out.flush())
            .map_err(|e| LoadgenError::io(format!("write {}", self.cfg.output.display()), e))?;
        Ok(row)
    }
}

/// True (and the file removed) if the flag file exists.
fn take_flag(p: &Path) -> bool {
    if p.exists() {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove migration flag");
        }
        true
    } else {
        false
    }
}

/// Format Unix ms as RFC 3339 UTC with milliseconds ("2026-02-22T18:31:30.123Z").
fn rfc3339_utc_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// `switchboard collector`: one row per `--interval` until `--duration` or SIGINT/SIGTERM.
pub fn run_collector(args: CollectorArgs) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        return Err(LoadgenError::BadConfig {
            name: "interval",
            reason: "must be > 0".into(),
        }
        .into());
    }
    signal::install()?;
    let mut c = Collector::create(CollectorConfig::from(&args))?;
    tracing::info!(output = %args.output.display(), interval = ?args.interval, "collector started");
    let start = Instant::now();
    let deadline = (!args.duration.is_zero()).then(|| start + args.duration);
    let mut next = start + args.interval;
    loop {
        loop {
            if signal::requested() || deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::info!("collector stopped");
                return Ok(());
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
        c.tick()?;
        next += args.interval;
        let now = Instant::now();
        if next < now {
            // Scrapes took longer than a tick: skip the missed ticks, like a Go ticker.
            next = now + args.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_and_json_both_parse() {
        let text = "# HELP connected_clients Clients\n# TYPE connected_clients gauge\n\
            connected_clients 4\ntotal_clients{job=\"x\"} 7 1700000000\nstream_uptime_seconds 12.5\n\
            bytes_sent 1e6\nbytes_received 300\ncpu_percent 1.25\nmemory_mb 9.5\nother_metric 3\nbad\n";
        let m = parse_server_metrics(text);
        assert_eq!(
            m,
            ServerMetrics {
                connected_clients: 4.0,
                total_clients: 7.0,
                uptime_seconds: 12.5,
                bytes_sent: 1e6,
                bytes_received: 300.0,
                cpu_percent: 1.25,
                memory_mb: 9.5,
            }
        );
        let j = parse_server_metrics(r#"{"connected_clients":2,"uptime_seconds":3.5,"x":"y"}"#);
        assert_eq!(j.connected_clients, 2.0);
        assert_eq!(j.uptime_seconds, 3.5);
        // "notconnected_clients" must not match connected_clients
        assert_eq!(
            parse_server_metrics("notconnected_clients 5\n"),
            ServerMetrics::default()
        );
        assert_eq!(
            parse_server_metrics("garbage{{{ \n\u{0}"),
            ServerMetrics::default()
        );
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_utc_ms(0), "1970-01-01T00:00:00.000Z");
        // 2026-02-22T18:31:30.123Z
        assert_eq!(
            rfc3339_utc_ms(1_771_785_090_123),
            "2026-02-22T18:31:30.123Z"
        );
        // leap day 2024-02-29T12:00:00Z = 1709208000
        assert_eq!(
            rfc3339_utc_ms(1_709_208_000_000),
            "2024-02-29T12:00:00.000Z"
        );
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: CollectorArgs,
    }

    #[test]
    fn cli_defaults_match_upstream() {
        let a = Cli::try_parse_from(["collector"]).unwrap().a;
        assert_eq!(
            a.migration_flag,
            PathBuf::from("/tmp/collector_migration_flag")
        );
        assert_eq!(a.output, PathBuf::from("metrics.csv"));
        assert_eq!(a.interval, Duration::from_secs(1));
        assert_eq!(a.duration, Duration::ZERO);
        let a = Cli::try_parse_from(["collector", "--interval", "250ms", "--duration", "30s"])
            .unwrap()
            .a;
        assert_eq!(a.interval, Duration::from_millis(250));
        assert_eq!(CollectorConfig::from(&a).timeout, Duration::from_secs(2));
    }
}
