//! The load generator: N stream connections, each pinging and counting frames, plus the
//! `/metrics` endpoint, the stdout report, the 100 ms trace, the gap log and the summary.
//!
//! One blocking reader thread and one pinger thread per connection: the reader never waits
//! on a write, so frame arrival times stay accurate while the server is frozen.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use stream::protocol::{HEADER_LEN, Header, Kind, monotonic_ns};

use crate::conn::{FrameTracker, Gap};
use crate::error::{LoadgenError, Result};
use crate::parse::{parse_duration, server_host_port};
use crate::stats::{RttStats, Window};
use crate::{http, signal};

/// Command-line flags, named as upstream's `cmd/loadgen` (long options) plus ours.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Stream server: http://host:port, ws://host:port/ws or host:port (only host:port is used).
    #[arg(long, default_value = "http://localhost:8080")]
    pub server: String,
    /// Concurrent TCP connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Ping period per connection, ms.
    #[arg(long, default_value_t = 100)]
    pub ping_interval_ms: u64,
    /// RTT samples at or above this (ms) are discarded, as upstream (stale echoes of a freeze).
    #[arg(long, default_value_t = 1000)]
    pub rtt_cap_ms: u64,
    /// Stdout report period ("1s", "500ms").
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Test length ("30s", "2m"); 0 runs until SIGINT/SIGTERM.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub duration: Duration,
    /// Port of the JSON `/metrics` endpoint on 0.0.0.0 (0 picks a free port).
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Delay between opening consecutive connections.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub ramp_up: Duration,
    /// The server's frame rate; downtime = longest gap − 1/fps.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Write a JSON summary here at exit.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Append one JSON line per gap longer than 3 frame intervals, and one at every change of
    /// server generation (a migration) however short, as gaps close.
    #[arg(long)]
    pub gap_log: Option<PathBuf>,
    /// CSV trace, one row per 100 ms: t_s,frames,max_gap_ms,rtt_max_ms,rtt_avg_ms.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// Validated settings for [`Loadgen::start`].
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// `host:port` to connect to.
    pub server: String,
    pub connections: usize,
    pub ping_interval: Duration,
    pub rtt_cap: Duration,
    pub fps: f64,
    pub ramp_up: Duration,
    /// Where `/metrics` listens; `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    pub gap_log: Option<PathBuf>,
    pub trace: Option<PathBuf>,
    /// Stdout report period; `None` prints nothing.
    pub report_interval: Option<Duration>,
}

impl LoadgenConfig {
    /// Settings for `server` with upstream's defaults, no metrics endpoint, no files, no
    /// report: a starting point for tests and orchestrators.
    pub fn new(server: impl Into<String>) -> Self {
        LoadgenConfig {
            server: server.into(),
            connections: 4,
            ping_interval: Duration::from_millis(100),
            rtt_cap: Duration::from_millis(1000),
            fps: 30.0,
            ramp_up: Duration::from_millis(200),
            metrics_addr: None,
            gap_log: None,
            trace: None,
            report_interval: None,
        }
    }

    /// Translate and check the command line.
    pub fn from_args(a: &LoadgenArgs) -> Result<Self> {
        let cfg = LoadgenConfig {
            server: server_host_port(&a.server)?,
            connections: a.connections,
            ping_interval: Duration::from_millis(a.ping_interval_ms),
            rtt_cap: Duration::from_millis(a.rtt_cap_ms),
            fps: a.fps,
            ramp_up: a.ramp_up,
            metrics_addr: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                a.metrics_port,
            )),
            gap_log: a.gap_log.clone(),
            trace: a.trace.clone(),
            report_interval: Some(a.interval),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(LoadgenError::BadConfig {
                name,
                reason: reason.to_string(),
            })
        };
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 1e6) {
            return bad("fps", "must be a number in (0, 1e6]");
        }
        if self.connections == 0 || self.connections > 4096 {
            return bad("connections", "must be 1..=4096");
        }
        if self.ping_interval.is_zero() {
            return bad("ping-interval-ms", "must be > 0");
        }
        if self.report_interval.is_some_and(|d| d.is_zero()) {
            return bad("interval", "must be > 0");
        }
        Ok(())
    }

    fn frame_interval_ns(&self) -> u64 {
        (1e9 / self.fps) as u64
    }
}

/// The `/metrics` JSON: upstream's fields (interval-scoped RTT, cumulative drops) plus ours.
/// The collector deserialises the same type; missing fields read as zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadgenMetrics {
    pub connected_clients: u64,
    pub total_clients: u64,
    pub avg_rtt_ms: f64,
    pub p50_rtt_ms: f64,
    pub p95_rtt_ms: f64,
    pub p99_rtt_ms: f64,
    pub max_rtt_ms: f64,
    pub jitter_ms: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub connection_drops: u64,
    /// Longest frame gap in this interval, including gaps still open at scrape time.
    pub max_gap_ms: f64,
    pub sequence_holes: u64,
    pub duplicate_frames: u64,
    pub frames_received: u64,
}

/// Whole-run RTT statistics in the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    pub count: u64,
    /// Samples dropped for being at or above `--rtt-cap-ms`.
    pub discarded: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub jitter_ms: f64,
}

/// One connection in the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnSummary {
    pub conn: usize,
    pub frames: u64,
    pub bytes_received: u64,
    pub holes: u64,
    pub duplicates: u64,
    /// Longest closed gap between consecutive frames.
    pub longest_gap_ms: f64,
    /// CLOCK_MONOTONIC ns of the frame that closed that gap.
    pub longest_gap_end_ns: u64,
    pub max_generation: u32,
    pub connected_at_end: bool,
    /// Whether the connection ended before the run did (counted in `connection_drops`).
    pub dropped: bool,
    /// For connections still up: time since their last frame when the run ended.
    pub open_gap_ms_at_end: f64,
    /// Lines this connection wrote to the gap log.
    pub gaps_logged: u64,
}

/// Written to `--summary` at exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub server: String,
    pub connections: usize,
    pub fps: f64,
    /// CLOCK_MONOTONIC ns at start and at the stop request; the trace's t_s counts from start.
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_s: f64,
    pub total_clients: u64,
    pub connected_at_end: u64,
    pub connection_drops: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sequence_holes: u64,
    pub duplicate_frames: u64,
    /// Nominal 1000/fps.
    pub frame_interval_ms: f64,
    /// Mean of the inter-arrival times that were not long gaps (0 if none).
    pub measured_frame_interval_ms: f64,
    /// Largest `longest_gap_ms` over connections.
    pub max_gap_ms: f64,
    /// `max_gap_ms − frame_interval_ms`, at least 0: the client-visible downtime.
    pub downtime_ms: f64,
    pub gaps_logged: u64,
    pub rtt: RttSummary,
    pub per_connection: Vec<ConnSummary>,
}

struct ConnState {
    tracker: FrameTracker,
    connected: bool,
    dropped: bool,
    bytes_received: u64,
    last_rtt_ms: Option<f64>,
    gaps_logged: u64,
}

const WIN_SCRAPE: usize = 0;
const WIN_REPORT: usize = 1;
const WIN_TRACE: usize = 2;
const WIN_RUN: usize = 3;

struct State {
    conns: Vec<ConnState>,
    windows: [Window; 4],
    total_clients: u64,
    connection_drops: u64,
    bytes_sent: u64,
    bytes_received: u64,
    rtt_discarded: u64,
}

impl State {
    fn totals(&self) -> (u64, u64, u64) {
        self.conns.iter().fold((0, 0, 0), |(f, h, d), c| {
            (
                f + c.tracker.frames,
                h + c.tracker.holes,
                d + c.tracker.duplicates,
            )
        })
    }

    fn connected(&self) -> u64 {
        self.conns.iter().filter(|c| c.connected).count() as u64
    }

    /// The longest gap still open on a live connection.
    fn open_gap_ns(&self, now: u64) -> u64 {
        self.conns
            .iter()
            .filter(|c| c.connected)
            .filter_map(|c| c.tracker.last_arrival_ns())
            .map(|t| now.saturating_sub(t))
            .max()
            .unwrap_or(0)
    }
}

struct Shared {
    cfg: LoadgenConfig,
    start_ns: u64,
    stop: Arc<AtomicBool>,
    state: Mutex<State>,
    gap_log: Mutex<Option<BufWriter<File>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Take window `w` (resetting it) and read the counters.
    fn take(&self, w: usize) -> (LoadgenMetrics, Window) {
        let now = monotonic_ns();
        let mut st = lock(&self.state);
        let mut win = std::mem::take(&mut st.windows[w]);
        let (frames, holes, dups) = st.totals();
        let gap_ns = win.max_gap_ns.max(st.open_gap_ns(now));
        let m = LoadgenMetrics {
            connected_clients: st.connected(),
            total_clients: st.total_clients,
            bytes_sent: st.bytes_sent,
            bytes_received: st.bytes_received,
            connection_drops: st.connection_drops,
            max_gap_ms: gap_ns as f64 / 1e6,
            sequence_holes: holes,
            duplicate_frames: dups,
            frames_received: frames,
            ..Default::default()
        };
        drop(st);
        let r = win.rtt_stats();
        let m = LoadgenMetrics {
            avg_rtt_ms: r.avg_ms,
            p50_rtt_ms: r.p50_ms,
            p95_rtt_ms: r.p95_ms,
            p99_rtt_ms: r.p99_ms,
            max_rtt_ms: r.max_ms,
            jitter_ms: r.jitter_ms,
            ..m
        };
        (m, win)
    }

    fn log_gaps(&self, conn: usize, gaps: &[Gap]) {
        if gaps.is_empty() {
            return;
        }
        for g in gaps {
            tracing::info!(
                conn,
                gap_ms = g.gap_ms(),
                seq_before = g.seq_before,
                seq_after = g.seq_after,
                generation_before = g.generation_before,
                generation_after = g.generation_after,
                "frame gap"
            );
        }
        let mut log = lock(&self.gap_log);
        let Some(w) = log.as_mut() else { return };
        for g in gaps {
            let line = serde_json::json!({
                "conn": conn,
                "start_ns": g.start_ns,
                "end_ns": g.end_ns,
                "gap_ms": g.gap_ms(),
                "seq_before": g.seq_before,
                "seq_after": g.seq_after,
                "generation_before": g.generation_before,
                "generation_after": g.generation_after,
            });
            if let Err(e) = writeln!(w, "{line}").and_then(|_| w.flush()) {
                tracing::warn!(error = %e, "gap log write failed");
            }
        }
    }
}

/// A running load generator. Dropping it without [`Loadgen::stop`] stops it too, but
/// without a summary.
pub struct Loadgen {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
}

impl Loadgen {
    /// Open the output files, start the metrics endpoint and the connection threads.
    /// Connections come up in the background (ramp-up, retry with backoff).
    pub fn start(cfg: LoadgenConfig) -> Result<Loadgen> {
        cfg.validate()?;
        let gap_log = cfg.gap_log.as_deref().map(create_file).transpose()?;
        let mut trace = cfg.trace.as_deref().map(create_file).transpose()?;
        if let Some(t) = trace.as_mut() {
            writeln!(t, "t_s,frames,max_gap_ms,rtt_max_ms,rtt_avg_ms")
                .and_then(|_| t.flush())
                .map_err(|e| LoadgenError::io("write trace header", e))?;
        }
        let threshold = 3 * cfg.frame_interval_ns();
        let state = State {
            conns: (0..cfg.connections)
                .map(|_| ConnState {
                    tracker: FrameTracker::new(threshold),
                    connected: false,
                    dropped: false,
                    bytes_received: 0,
                    last_rtt_ms: None,
                    gaps_logged: 0,
                })
                .collect(),
            windows: Default::default(),
            total_clients: 0,
            connection_drops: 0,
            bytes_sent: 0,
            bytes_received: 0,
            rtt_discarded: 0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            cfg,
            start_ns: monotonic_ns(),
            stop: stop.clone(),
            state: Mutex::new(state),
            gap_log: Mutex::new(gap_log),
        });
        let mut lg = Loadgen {
            shared: shared.clone(),
            threads: Vec::new(),
            metrics_addr: None,
        };
        if let Some(addr) = shared.cfg.metrics_addr {
            let sh = shared.clone();
            let handler: http::Handler = Box::new(move |path| match path {
                "/metrics" => serde_json::to_string(&sh.take(WIN_SCRAPE).0)
                    .ok()
                    .map(|b| ("application/json", b)),
                _ => None,
            });
            // On error `lg` drops here and stops whatever already started.
            let (local, th) = http::serve(addr, stop.clone(), handler)?;
            tracing::info!(%local, "loadgen metrics listening");
            lg.metrics_addr = Some(local);
            lg.threads.push(th);
        }
        let sh = shared.clone();
        lg.threads
            .push(spawn("loadgen-ticker", move || ticker(sh, trace))?);
        for idx in 0..shared.cfg.connections {
            let sh = shared.clone();
            lg.threads
                .push(spawn(&format!("conn-{idx}"), move || conn_main(idx, sh))?);
        }
        Ok(lg)
    }

    /// Where `/metrics` listens (the real port when 0 was asked for).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// CLOCK_MONOTONIC ns when the run started.
    pub fn start_ns(&self) -> u64 {
        self.shared.start_ns
    }

    /// Connections currently up.
    pub fn connected_clients(&self) -> u64 {
        lock(&self.shared.state).connected()
    }

    /// The same snapshot `/metrics` returns; like a scrape, it resets the scrape window.
    pub fn scrape(&self) -> LoadgenMetrics {
        self.shared.take(WIN_SCRAPE).0
    }

    /// Stop every thread, close the connections and return the summary.
    pub fn stop(mut self) -> Summary {
        let end_ns = monotonic_ns();
        self.shutdown();
        summarize(&self.shared, end_ns)
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn create_file(p: &Path) -> Result<BufWriter<File>> {
    File::create(p)
        .map(BufWriter::new)
        .map_err(|e| LoadgenError::io(format!("create {}", p.display()), e))
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| LoadgenError::io(format!("spawn thread {name}"), e))
}

/// Sleep `d` in short steps; false if a stop was requested meanwhile.
fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn summarize(sh: &Shared, end_ns: u64) -> Summary {
    let st = &mut *lock(&sh.state);
    let fi_ms = sh.cfg.frame_interval_ns() as f64 / 1e6;
    let (frames, holes, dups) = st.totals();
    let mut run = std::mem::take(&mut st.windows[WIN_RUN]);
    let r: RttStats = run.rtt_stats();
    let per: Vec<ConnSummary> = st
        .conns
        .iter()
        .enumerate()
        .map(|(i, c)| ConnSummary {
            conn: i,
            frames: c.tracker.frames,
            bytes_received: c.bytes_received,
            holes: c.tracker.holes,
            duplicates: c.tracker.duplicates,
            longest_gap_ms: c.tracker.longest_gap_ns as f64 / 1e6,
            longest_gap_end_ns: c.tracker.longest_gap_end_ns,
            max_generation: c.tracker.max_generation,
            connected_at_end: c.connected,
            dropped: c.dropped,
            open_gap_ms_at_end: match (c.connected, c.tracker.last_arrival_ns()) {
                (true, Some(t)) => end_ns.saturating_sub(t) as f64 / 1e6,
                _ => 0.0,
            },
            gaps_logged: c.gaps_logged,
        })
        .collect();
    let (gsum, gn) = st.conns.iter().fold((0u64, 0u64), |(s, n), c| {
        (s + c.tracker.normal_gap_sum_ns, n + c.tracker.normal_gap_n)
    });
    let max_gap_ms = per.iter().map(|c| c.longest_gap_ms).fold(0.0, f64::max);
    Summary {
        server: sh.cfg.server.clone(),
        connections: sh.cfg.connections,
        fps: sh.cfg.fps,
        start_ns: sh.start_ns,
        end_ns,
        duration_s: end_ns.saturating_sub(sh.start_ns) as f64 / 1e9,
        total_clients: st.total_clients,
        connected_at_end: st.connected(),
        connection_drops: st.connection_drops,
        frames_received: frames,
        bytes_sent: st.bytes_sent,
        bytes_received: st.bytes_received,
        sequence_holes: holes,
        duplicate_frames: dups,
        frame_interval_ms: fi_ms,
        measured_frame_interval_ms: if gn == 0 {
            0.0
        } else {
            gsum as f64 / gn as f64 / 1e6
        },
        max_gap_ms,
        downtime_ms: if max_gap_ms > 0.0 {
            (max_gap_ms - fi_ms).max(0.0)
        } else {
            0.0
        },
        gaps_logged: per.iter().map(|c| c.gaps_logged).sum(),
        rtt: RttSummary {
            count: r.count as u64,
            discarded: st.rtt_discarded,
            avg_ms: r.avg_ms,
            p50_ms: r.p50_ms,
            p95_ms: r.p95_ms,
            p99_ms: r.p99_ms,
            max_ms: r.max_ms,
            jitter_ms: r.jitter_ms,
        },
        per_connection: per,
    }
}

/// Writes the 100 ms trace rows and the stdout report lines.
fn ticker(sh: Arc<Shared>, mut trace: Option<BufWriter<File>>) {
    const TRACE_STEP: Duration = Duration::from_millis(100);
    let start = Instant::now();
    let mut next_trace = start + TRACE_STEP;
    let report = sh.cfg.report_interval;
    let mut next_report = report.map(|d| start + d);
    while !sh.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if trace.is_some() && now >= next_trace {
            let (m, win) = sh.take(WIN_TRACE);
            let t_s = monotonic_ns().saturating_sub(sh.start_ns) as f64 / 1e9;
            if let Some(t) = trace.as_mut() {
                let row = writeln!(
                    t,
                    "{t_s:.3},{},{:.3},{:.3},{:.3}",
                    win.frames, m.max_gap_ms, m.max_rtt_ms, m.avg_rtt_ms
                )
                .and_then(|_| t.flush());
                if let Err(e) = row {
                    tracing::warn!(error = %e, "trace write failed; trace disabled");
                    trace = None;
                }
            }
            next_trace += TRACE_STEP;
            if next_trace < now {
                next_trace = now + TRACE_STEP;
            }
        }
        if let (Some(d), Some(nr)) = (report, next_report)
            && now >= nr
        {
            let (m, win) = sh.take(WIN_REPORT);
            let t_s = monotonic_ns().saturating_sub(sh.start_ns) as f64 / 1e9;
            println!(
                "[{t_s:7.1}s] conns {}/{} frames {} holes {} dups {} drops {} | rtt avg {:.3} p50 {:.3} p95 {:.3} p99 {:.3} max {:.3} jitter {:.3} ms | max_gap {:.1} ms",
                m.connected_clients,
                sh.cfg.connections,
                win.frames,
                m.sequence_holes,
                m.duplicate_frames,
                m.connection_drops,
                m.avg_rtt_ms,
                m.p50_rtt_ms,
                m.p95_rtt_ms,
                m.p99_rtt_ms,
                m.max_rtt_ms,
                m.jitter_ms,
                m.max_gap_ms
            );
            let mut n = nr + d;
            if n < now {
                n = now + d;
            }
            next_report = Some(n);
        }
        let mut wake = next_trace;
        if let Some(nr) = next_report {
            wake = wake.min(nr);
        }
        let now = Instant::now();
        std::thread::sleep(
            wake.saturating_duration_since(now)
                .min(Duration::from_millis(50)),
        );
    }
    if let Some(mut t) = trace {
        let _ = t.flush();
    }
}

fn connect_with_retry(sh: &Shared, idx: usize) -> Option<TcpStream> {
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 0u32;
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return None;
        }
        attempt += 1;
        let res = sh.cfg.server.to_socket_addrs().and_then(|addrs| {
            let mut last =
                std::io::Error::new(std::io::ErrorKind::NotFound, "name resolved to no address");
            for a in addrs {
                match TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        match res {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!(conn = idx, attempt, error = %e, retry_in = ?backoff, "connect failed");
                if !sleep_unless_stopped(&sh.stop, backoff) {
                    return None;
                }
                backoff = (backoff * 2).min(Duration::from_secs(3));
            }
        }
    }
}

fn configure(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    socket2::SockRef::from(s).set_tcp_keepalive(&ka)?;
    // Short read timeout so the reader notices a stop request.
    s.set_read_timeout(Some(Duration::from_millis(100)))
}

enum End {
    Stopped,
    Closed,
    Failed(String),
}

fn conn_main(idx: usize, sh: Arc<Shared>) {
    let delay = sh.cfg.ramp_up.saturating_mul(idx as u32);
    if !sleep_unless_stopped(&sh.stop, delay) {
        return;
    }
    let Some(mut s) = connect_with_retry(&sh, idx) else {
        return;
    };
    if let Err(e) = configure(&s) {
        tracing::warn!(conn = idx, error = %e, "socket options failed");
    }
    let writer = match s.try_clone() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(conn = idx, error = %e, "cannot clone socket");
            return;
        }
    };
    {
        let st = &mut *lock(&sh.state);
        st.total_clients += 1;
        st.conns[idx].connected = true;
    }
    tracing::info!(conn = idx, peer = ?s.peer_addr().ok(), "connected");
    let done = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (sh, done) = (sh.clone(), done.clone());
        spawn(&format!("ping-{idx}"), move || {
            pinger(idx, writer, sh, done)
        })
    };
    let end = read_loop(idx, &mut s, &sh);
    done.store(true, Ordering::SeqCst);
    {
        let st = &mut *lock(&sh.state);
        if !matches!(end, End::Stopped) {
            st.connection_drops += 1;
            st.conns[idx].connected = false;
            st.conns[idx].dropped = true;
        }
    }
    match &end {
        End::Stopped => tracing::debug!(conn = idx, "closing at stop"),
        End::Closed => tracing::warn!(conn = idx, "connection closed by peer (drop)"),
        End::Failed(e) => tracing::warn!(conn = idx, error = %e, "connection failed (drop)"),
    }
    let _ = s.shutdown(Shutdown::Both);
    if let Ok(p) = pinger {
        let _ = p.join();
    }
}

fn pinger(idx: usize, mut w: TcpStream, sh: Arc<Shared>, done: Arc<AtomicBool>) {
    let interval = sh.cfg.ping_interval;
    let mut seq = 0u64;
    let mut next = Instant::now();
    let mut buf = [0u8; HEADER_LEN];
    while !sh.stop.load(Ordering::SeqCst) && !done.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next {
            Header::ping(seq).encode(&mut buf);
            if let Err(e) = w.write_all(&buf) {
                tracing::debug!(conn = idx, error = %e, "ping write failed");
                return;
            }
            seq += 1;
            lock(&sh.state).bytes_sent += HEADER_LEN as u64;
            next += interval;
            if next < now {
                next = now + interval;
            }
        }
        let now = Instant::now();
        std::thread::sleep(
            next.saturating_duration_since(now)
                .min(Duration::from_millis(50)),
        );
    }
}

fn read_loop(idx: usize, s: &mut TcpStream, sh: &Shared) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut gaps = Vec::new();
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return End::Stopped;
        }
        match s.read(&mut buf) {
            Ok(0) => return End::Closed,
            Ok(n) => {
                let now = monotonic_ns();
                pending.extend_from_slice(&buf[..n]);
                let res = process(idx, sh, &mut pending, n, now, &mut gaps);
                sh.log_gaps(idx, &gaps);
                gaps.clear();
                if let Err(e) = res {
                    return End::Failed(e);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return End::Failed(e.to_string()),
        }
    }
}

/// Consume every complete message in `pending`; all of them arrived at `now`.
fn process(
    idx: usize,
    sh: &Shared,
    pending: &mut Vec<u8>,
    n_read: usize,
    now: u64,
    gaps: &mut Vec<Gap>,
) -> std::result::Result<(), String> {
    let cap_ms = sh.cfg.rtt_cap.as_secs_f64() * 1e3;
    let st = &mut *lock(&sh.state);
    st.bytes_received += n_read as u64;
    st.conns[idx].bytes_received += n_read as u64;
    let mut off = 0;
    let mut result = Ok(());
    while off < pending.len() {
        let h = match Header::decode(&pending[off..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                result = Err(format!("protocol error at byte {off}: {e}"));
                break;
            }
        };
        if pending.len() - off < h.len as usize {
            break;
        }
        off += h.len as usize;
        match h.kind {
            Kind::Frame => {
                let o = st.conns[idx].tracker.on_frame(now, h.seq, h.generation);
                for w in st.windows.iter_mut() {
                    w.add_frame(o.gap_ns);
                }
                if let Some(g) = o.long_gap {
                    st.conns[idx].gaps_logged += 1;
                    gaps.push(g);
                }
            }
            Kind::Echo => {
                let rtt_ms = now.saturating_sub(h.client_ts_ns) as f64 / 1e6;
                if rtt_ms >= cap_ms {
                    st.rtt_discarded += 1;
                } else {
                    let prev = st.conns[idx].last_rtt_ms.replace(rtt_ms);
                    for w in st.windows.iter_mut() {
                        w.add_rtt(rtt_ms, prev);
                    }
                }
            }
            Kind::Ping => {} // not sent by servers; ignore
        }
    }
    pending.drain(..off);
    result
}

/// `switchboard loadgen`: run until `--duration` or SIGINT/SIGTERM, then write the summary.
pub fn run_loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let cfg = LoadgenConfig::from_args(&args)?;
    signal::install()?;
    tracing::info!(server = %cfg.server, connections = cfg.connections, fps = cfg.fps, "loadgen starting");
    let lg = Loadgen::start(cfg)?;
    let deadline = (!args.duration.is_zero()).then(|| Instant::now() + args.duration);
    while !signal::requested() && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = lg.stop();
    if let Some(p) = &args.summary {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(p, text + "\n")
            .map_err(|e| LoadgenError::io(format!("write {}", p.display()), e))?;
    }
    println!(
        "summary: frames {} holes {} dups {} drops {} connected {}/{} max_gap {:.1} ms downtime {:.1} ms rtt avg {:.3} max {:.3} ms",
        summary.frames_received,
        summary.sequence_holes,
        summary.duplicate_frames,
        summary.connection_drops,
        summary.connected_at_end,
        summary.connections,
        summary.max_gap_ms,
        summary.downtime_ms,
        summary.rtt.avg_ms,
        summary.rtt.max_ms
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: LoadgenArgs,
    }

    #[test]
    fn cli_defaults_match_upstream() {
        let a = Cli::try_parse_from(["loadgen"]).unwrap().a;
        assert_eq!(a.server, "http://localhost:8080");
        assert_eq!(a.connections, 4);
        assert_eq!(a.ping_interval_ms, 100);
        assert_eq!(a.rtt_cap_ms, 1000);
        assert_eq!(a.interval, Duration::from_secs(1));
        assert_eq!(a.duration, Duration::ZERO);
        assert_eq!(a.metrics_port, 9090);
        assert_eq!(a.ramp_up, Duration::from_millis(200));
        assert_eq!(a.fps, 30.0);
        let c = LoadgenConfig::from_args(&a).unwrap();
        assert_eq!(c.server, "localhost:8080");
        assert_eq!(c.frame_interval_ns(), 33_333_333);
    }

    #[test]
    fn cli_parses_and_validates() {
        let a = Cli::try_parse_from([
            "loadgen",
            "--server",
            "ws://10.0.0.2:8080/ws",
            "--interval",
            "500ms",
            "--duration",
            "2m",
            "--fps",
            "0",
        ])
        .unwrap()
        .a;
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!(a.duration, Duration::from_secs(120));
        assert!(matches!(
            LoadgenConfig::from_args(&a),
            Err(LoadgenError::BadConfig { name: "fps", .. })
        ));
        assert!(Cli::try_parse_from(["loadgen", "--duration", "soon"]).is_err());
    }
}
