//! `switchboard demo migration`: the p4containerflow experiment on one machine.
//!
//! Builds examples/p4containerflow, starts the stream server on lakewood, the load generator
//! and the collector on the client, migrates the server back and forth N times under load,
//! and prints upstream's results table (mean and p95 of each phase, client-visible downtime,
//! drops, sequence holes). It writes the collector's CSV, the loadgen's gap log, trace and
//! summary, an SVG plot and optionally a JSON summary into the output directory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use lab::{Lab, Topology};

use super::demo::{DemoArgs, default_example_dir, lab_with_switch, which};
use super::lab::{log_path, wait_for_api};
use super::migrate::{self, MigrationReport, Plan};

/// Order statistics of one measured quantity over the runs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub min: f64,
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
}

impl Stats {
    /// Nearest-rank percentiles, as upstream's report uses.
    pub fn of(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = (p * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Stats {
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            median: rank(0.5),
            p95: rank(0.95),
            max: v[v.len() - 1],
        }
    }
}

/// One migration as the client saw it, next to the orchestrator's phases.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub run: usize,
    #[serde(flatten)]
    pub phases: MigrationReport,
    /// From the checkpoint request to the first frame of the new server at the client
    /// (earliest over connections).
    pub first_frame_ms: f64,
    /// Longest gap between frames at the client around this migration, minus the frame
    /// interval (largest over connections).
    pub downtime_ms: f64,
    pub max_gap_ms: f64,
    /// Connections that saw the new server's frames.
    pub connections_resumed: usize,
}

/// A line of the loadgen's gap log.
#[derive(Debug, Clone, serde::Deserialize)]
struct GapLine {
    #[serde(default)]
    conn: usize,
    start_ns: u64,
    end_ns: u64,
    gap_ms: f64,
    #[serde(default)]
    generation_before: u32,
    #[serde(default)]
    generation_after: u32,
}

fn read_gaps(path: &Path) -> Vec<GapLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How long after the resume a gap still counts as this migration's (a stall of the restored
/// connection); later gaps are the machine's noise, not the migration.
const AFTER_RESUME_NS: u64 = 200_000_000;

/// What the client saw around migration `r`: gap-log lines that end after the freeze began
/// and start before it ended (plus [`AFTER_RESUME_NS`]), before the next migration
/// (`until_ns`). The loadgen logs every generation change, so each connection has one.
fn client_view(
    run: usize,
    r: &MigrationReport,
    gaps: &[GapLine],
    until_ns: u64,
    interval_ms: f64,
) -> RunResult {
    let mine: Vec<&GapLine> = gaps
        .iter()
        .filter(|g| {
            g.end_ns >= r.start_ns
                && g.start_ns <= r.resumed_ns.saturating_add(AFTER_RESUME_NS)
                && g.end_ns < until_ns
        })
        .collect();
    let max_gap_ms = mine.iter().map(|g| g.gap_ms).fold(0.0, f64::max);
    let resumed: Vec<&&GapLine> = mine
        .iter()
        .filter(|g| g.generation_after > g.generation_before)
        .collect();
    let first_frame_ms = resumed
        .iter()
        .map(|g| g.end_ns.saturating_sub(r.start_ns) as f64 / 1e6)
        .fold(f64::INFINITY, f64::min);
    let mut conns: Vec<usize> = resumed.iter().map(|g| g.conn).collect();
    conns.sort_unstable();
    conns.dedup();
    RunResult {
        run,
        phases: r.clone(),
        first_frame_ms: if first_frame_ms.is_finite() {
            first_frame_ms
        } else {
            f64::NAN
        },
        downtime_ms: (max_gap_ms - interval_ms).max(0.0),
        max_gap_ms,
        connections_resumed: conns.len(),
    }
}

/// Start a long-running tool in a lab host, logging to `log`; the lab stops it on teardown.
fn spawn_in(lab: &Lab, node: &str, args: &[String], log: &Path) -> anyhow::Result<u32> {
    let f = std::fs::File::create(log)?;
    let mut cmd = lab.command(node)?;
    cmd.arg(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", args[0]))?;
    Ok(lab.adopt(child, &format!("{node}: {}", args.join(" ")))?)
}

/// SIGINT a process and wait until it is gone (it writes its summary on the way out).
fn interrupt_and_wait(pid: u32, timeout: Duration) {
    // SAFETY: kill with a PID this program started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // Zombie or gone: /proc/<pid>/stat state 'Z' or missing.
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = st
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        if st.is_empty() || state == Some("Z") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(a: &DemoArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo builds network namespaces and needs root (try: sudo switchboard demo migration)"
        );
    }
    for tool in ["ip", "ethtool", "nft"] {
        if which(tool).is_none() {
            bail!("'{tool}' is not installed; run scripts/ensure-deps.sh");
        }
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let dir = a.example.clone().unwrap_or_else(default_example_dir);
    let topo = Topology::load(dir.join("topology.toml"))?;
    let out = a.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    let fps = a.fps;
    let interval_ms = 1000.0 / fps as f64;

    println!("switchboard demo: live migration (p4containerflow, seed 000), one machine");
    println!(
        "  {} migrations lakewood <-> loveland, {} connections, {fps} frames/s: downtime resolves to {interval_ms:.1} ms",
        a.runs, a.connections
    );
    println!("  results in {}", out.display());

    let (lab, _, api_addr) = lab_with_switch(&topo)?;
    let res = experiment(a, &lab, &topo, &api_addr, &out, interval_ms);
    let down = lab.down();
    let summary = res?;
    down?;
    println!("lab removed");
    if summary.dropped_connections > 0 || summary.sequence_holes > 0 || summary.duplicates > 0 {
        bail!(
            "the client lost something: {} dropped connections, {} sequence holes, {} duplicate frames",
            summary.dropped_connections,
            summary.sequence_holes,
            summary.duplicates
        );
    }
    Ok(())
}

struct Totals {
    dropped_connections: u64,
    sequence_holes: u64,
    duplicates: u64,
}

fn experiment(
    a: &DemoArgs,
    lab: &Lab,
    topo: &Topology,
    api_addr: &str,
    out: &Path,
    interval_ms: f64,
) -> anyhow::Result<Totals> {
    let api = control::client::Client::new(&format!("http://{api_addr}"));
    let sw = topo
        .switches
        .first()
        .context("the topology has no switch")?;
    wait_for_api(
        api_addr,
        Duration::from_secs(15),
        &log_path(&topo.name, &sw.name),
    )?;
    // Same-IP migration: replies must keep the server's address (upstream calls this too).
    let (status, body) = api
        .compat("/deleteClientSnat", &json!({}))
        .map_err(|e| anyhow::anyhow!("/deleteClientSnat: {e}"))?;
    println!("  [1/5] lab up; POST /deleteClientSnat -> {status} {body}");

    let server_args: Vec<String> = vec![
        "--fps".into(),
        a.fps.to_string(),
        "--frame-size".into(),
        "512".into(),
    ];
    let name = topo.name.clone();
    migrate::start_server(&name, "lakewood", "eth0", false, &server_args)?;
    let gaps_path = out.join("gaps.jsonl");
    let summary_path = out.join("loadgen-summary.json");
    for f in [&gaps_path, &summary_path] {
        let _ = std::fs::remove_file(f);
    }
    let loadgen_args: Vec<String> = [
        "loadgen",
        "--server",
        "http://192.168.12.2:8080",
        "--connections",
        &a.connections.to_string(),
        "--fps",
        &a.fps.to_string(),
        "--metrics-port",
        "9090",
        "--summary",
        &summary_path.display().to_string(),
        "--gap-log",
        &gaps_path.display().to_string(),
        "--trace",
        &out.join("trace.csv").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let loadgen = spawn_in(lab, "client", &loadgen_args, &out.join("loadgen.log"))?;
    let flag = out.join("migration_flag");
    let collector_args: Vec<String> = [
        "collector",
        "--server-metrics-url",
        "http://192.168.12.2:8081/metrics",
        "--loadgen-url",
        "http://127.0.0.1:9090/metrics",
        "--migration-flag",
        &flag.display().to_string(),
        "--output",
        &out.join("metrics.csv").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let collector = spawn_in(lab, "client", &collector_args, &out.join("collector.log"))?;
    println!(
        "  [2/5] stream-server on lakewood, loadgen ({} connections) and collector on client; {} s steady state",
        a.connections, a.steady_s
    );
    std::thread::sleep(Duration::from_secs_f64(a.steady_s));

    println!("  [3/5] migrating");
    let mut plan: Plan =
        migrate::plan_from_topology(topo, "lakewood", "loveland", "192.168.12.2/24", "eth0")?;
    plan.server_args = server_args.clone();
    let mut reports = Vec::new();
    let mut here = "lakewood";
    for i in 0..a.runs {
        let there = if here == "lakewood" {
            "loveland"
        } else {
            "lakewood"
        };
        let mut p = migrate::plan_from_topology(topo, here, there, "192.168.12.2/24", "eth0")?;
        p.server_args = plan.server_args.clone();
        p.drain_timeout_ms = a.drain_timeout_ms;
        plan = p;
        let r = migrate::migrate(&plan, &api)
            .with_context(|| format!("migration {} ({here} -> {there})", i + 1))?;
        let _ = std::fs::write(&flag, b"1");
        println!(
            "    {:>3}/{}: {here:>8} -> {there:<8} freeze {:6.2} ms (switch update {:5.2} ms), {} connections",
            i + 1,
            a.runs,
            r.freeze_ms,
            r.switch_update_ms,
            r.connections
        );
        reports.push(r);
        here = there;
        std::thread::sleep(Duration::from_secs_f64(a.interval_s));
    }

    println!("  [4/5] stopping the load generator and collector");
    std::thread::sleep(Duration::from_secs_f64(a.post_s));
    interrupt_and_wait(loadgen, Duration::from_secs(5));
    interrupt_and_wait(collector, Duration::from_secs(5));
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path)
            .with_context(|| format!("loadgen summary {}", summary_path.display()))?,
    )?;
    let gaps = read_gaps(&gaps_path);
    let end_ns = summary["end_ns"].as_u64().unwrap_or(u64::MAX);
    let runs: Vec<RunResult> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let until = reports.get(i + 1).map_or(end_ns, |n| n.start_ns);
            client_view(i + 1, r, &gaps, until, interval_ms)
        })
        .collect();

    let totals = Totals {
        dropped_connections: summary["connection_drops"].as_u64().unwrap_or(0),
        sequence_holes: summary["sequence_holes"].as_u64().unwrap_or(0),
        duplicates: summary["duplicate_frames"].as_u64().unwrap_or(0),
    };
    println!("  [5/5] results");
    let report = results_json(&runs, &summary, &totals, interval_ms);
    print_table(&runs, &summary, &totals, interval_ms);
    std::fs::write(
        out.join("runs.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let svg = super::plot::migration_svg(
        &std::fs::read_to_string(out.join("trace.csv")).unwrap_or_default(),
        summary["start_ns"].as_u64().unwrap_or(0),
        &runs.iter().map(|r| r.phases.start_ns).collect::<Vec<_>>(),
        interval_ms,
    );
    std::fs::write(out.join("plot.svg"), svg)?;
    println!(
        "  wrote {}/{{metrics.csv, gaps.jsonl, trace.csv, loadgen-summary.json, runs.json, plot.svg}}",
        out.display()
    );
    if let Some(j) = &a.json {
        std::fs::write(j, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", j.display()))?;
        println!("  wrote {}", j.display());
    }
    Ok(totals)
}

/// Reads one quantity of a run.
type Metric = fn(&RunResult) -> f64;

fn stats_of(runs: &[RunResult], f: impl Fn(&RunResult) -> f64) -> Stats {
    let v: Vec<f64> = runs.iter().map(f).filter(|x| x.is_finite()).collect();
    Stats::of(&v)
}

/// The `--json` summary: the keys the issue names, one object per phase, and every run.
fn results_json(runs: &[RunResult], summary: &Value, t: &Totals, interval_ms: f64) -> Value {
    let s = |f: Metric| serde_json::to_value(stats_of(runs, f)).unwrap_or_default();
    json!({
        "runs": runs.len(),
        "connections": summary["connections"],
        "fps": summary["fps"],
        "frame_interval_ms": interval_ms,
        "dropped_connections": t.dropped_connections,
        "sequence_holes": t.sequence_holes,
        "duplicate_frames": t.duplicates,
        "downtime_ms": s(|r| r.downtime_ms),
        "switch_update_ms": s(|r| r.phases.switch_update_ms),
        "first_frame_ms": s(|r| r.first_frame_ms),
        "freeze_ms": s(|r| r.phases.freeze_ms),
        "phases": {
            "pause_drain_ms": s(|r| r.phases.pause_drain_ms),
            "checkpoint_ms": s(|r| r.phases.checkpoint_ms),
            "transfer_ms": s(|r| r.phases.transfer_ms),
            "restore_ms": s(|r| r.phases.restore_ms),
            "switch_update_ms": s(|r| r.phases.switch_update_ms),
            "resume_ms": s(|r| r.phases.resume_ms),
            "first_frame_ms": s(|r| r.first_frame_ms),
        },
        "rtt": summary["rtt"],
        "per_run": runs,
    })
}

fn print_table(runs: &[RunResult], summary: &Value, t: &Totals, interval_ms: f64) {
    println!();
    println!(
        "  {:<34}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "metric (ms)", "min", "mean", "median", "p95", "max"
    );
    let rows: [(&str, Metric); 9] = [
        ("pause + drain", |r| r.phases.pause_drain_ms),
        ("checkpoint (TCP repair)", |r| r.phases.checkpoint_ms),
        ("transfer", |r| r.phases.transfer_ms),
        ("restore", |r| r.phases.restore_ms),
        ("switch update (/updateForward)", |r| {
            r.phases.switch_update_ms
        }),
        ("resume (GARP, repair off)", |r| r.phases.resume_ms),
        ("freeze (server silent)", |r| r.phases.freeze_ms),
        ("first frame seen by the client", |r| r.first_frame_ms),
        ("client-visible downtime", |r| r.downtime_ms),
    ];
    for (name, f) in rows {
        let s = stats_of(runs, f);
        println!(
            "  {name:<34}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}",
            s.min, s.mean, s.median, s.p95, s.max
        );
    }
    println!(
        "  (downtime = longest frame gap at the client - {interval_ms:.1} ms frame interval; upstream, 20 runs with CRIU: mean 3909, switch update 32)"
    );
    println!(
        "  runs {}, connections {}, dropped connections {}, sequence holes {}, duplicate frames {}, RTT p50 {:.2} ms p99 {:.2} ms",
        runs.len(),
        summary["connections"],
        t.dropped_connections,
        t.sequence_holes,
        t.duplicates,
        summary["rtt"]["p50_ms"].as_f64().unwrap_or(0.0),
        summary["rtt"]["p99_ms"].as_f64().unwrap_or(0.0),
    );
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_stats() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Stats::of(&v);
        assert_eq!((s.min, s.median, s.p95, s.max), (1.0, 10.0, 19.0, 20.0));
        assert!((s.mean - 10.5).abs() < 1e-9);
        assert_eq!(Stats::of(&[]).max, 0.0);
    }

    #[test]
    fn client_view_takes_the_window_and_the_generation_change() {
        let r = MigrationReport {
            start_ns: 1_000_000_000,
            resumed_ns: 1_002_000_000,
            ..Default::default()
        };
        let line = |conn, start_ns: u64, end_ns: u64, g0, g1| GapLine {
            conn,
            start_ns,
            end_ns,
            gap_ms: (end_ns - start_ns) as f64 / 1e6,
            generation_before: g0,
            generation_after: g1,
        };
        let gaps = vec![
            line(0, 900_000_000, 950_000_000, 0, 0), // before: not this migration
            line(0, 999_000_000, 1_004_000_000, 0, 1),
            line(1, 998_500_000, 1_003_000_000, 0, 1),
            line(0, 1_300_000_000, 1_340_000_000, 1, 1), // noise well after the resume
            line(1, 2_000_000_000, 2_010_000_000, 1, 2), // the next migration
        ];
        let v = client_view(1, &r, &gaps, 1_500_000_000, 2.0);
        assert!((v.max_gap_ms - 5.0).abs() < 1e-9);
        assert!((v.downtime_ms - 3.0).abs() < 1e-9);
        assert!((v.first_frame_ms - 3.0).abs() < 1e-9);
        assert_eq!(v.connections_resumed, 2);
    }
}
