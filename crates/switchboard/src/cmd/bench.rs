//! `switchboard bench` (forwarding Mpps: switchboard vs the Linux kernel, bridge,
//! Open vSwitch) and `switchboard blast` (the XDP live-frames generator).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use xdp::bench::{BenchConfig, BenchTopo, DutSpec, SinkKind, render_table, run_bench};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of the saturation measurement per dut.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Seconds per step of the search for the highest rate with < 0.1 % loss.
    #[arg(long, default_value_t = 2)]
    step: u64,
    /// Steps of that search (0: saturation only).
    #[arg(long, default_value_t = 5)]
    search_steps: usize,
    /// Skip the Linux bridge baseline.
    #[arg(long)]
    no_bridge: bool,
    /// Skip the Open vSwitch baseline.
    #[arg(long)]
    no_ovs: bool,
    /// Only switchboard (and the kernel baseline, which the ratios need).
    #[arg(long)]
    quick: bool,
    /// Also run switchboard with a busy-polling worker (`[engine] busy_poll = true`). It shares
    /// the dut's core with the kernel's receive thread and starves it, so the default config
    /// (sleep in poll(2) when idle) is the one measured first.
    #[arg(long)]
    with_busy_poll: bool,
    /// Also run switchboard with TPACKET_V2 receive rings (`ring = "v2"`: per-frame
    /// handover, the lowest latency).
    #[arg(long)]
    with_v2_ring: bool,
    /// How the sink counts: `tc` (tcx ingress, the same cost for every dut) or `xdp`
    /// (native XDP; veth then copies every socket-sent frame first, a tax on user-space duts).
    #[arg(long, default_value = "tc", value_parser = ["tc", "xdp"])]
    sink: String,
    /// Repeat the whole comparison this many times and report each dut's median round
    /// (the machines are shared: single runs move by up to 25 %). Ratios are also given
    /// per round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A switchboard dut: two AF_PACKET ports, the `forward` stage, one entry for the sink.
fn switchboard_dut(
    name: &str,
    busy_poll: bool,
    realtime: Option<u8>,
    ring: &'static str,
) -> DutSpec {
    DutSpec {
        name: name.to_string(),
        start: Box::new(move |t: &BenchTopo| -> xdp::Result<Child> {
            let mac = t
                .sink_mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            let cfg = format!(
                "[[port]]\nid = 1\nbackend = \"afpacket\"\nring = \"{ring}\"\niface = \"{}\"\n\n\
                 [[port]]\nid = 2\nbackend = \"afpacket\"\nring = \"{ring}\"\niface = \"{}\"\n\n\
                 [pipeline]\nstages = [\"forward\"]\n\n\
                 [engine]\nbusy_poll = {busy_poll}\n{rt}\n\
                 [[entry]]\ntable = \"forward\"\nkey = {{ \"hdr.ipv4.dst_addr\" = \"{}\" }}\n\
                 action = \"set_egress_port_with_mac\"\nparams = {{ port = 2, dst_mac = \"{mac}\" }}\n",
                t.dut_in,
                t.dut_out,
                t.sink_ip,
                rt = realtime
                    .map(|p| format!("realtime_priority = {p}\n"))
                    .unwrap_or_default(),
            );
            let path = std::env::temp_dir().join(format!(
                "sb-bench-{}-{}.toml",
                std::process::id(),
                t.dut_ns
            ));
            std::fs::write(&path, cfg).map_err(|e| xdp::Error::Io {
                context: "writing the switchboard bench config".into(),
                source: e,
            })?;
            let exe = std::env::current_exe().map_err(|e| xdp::Error::Io {
                context: "finding the switchboard binary".into(),
                source: e,
            })?;
            Command::new("ip")
                .args(["netns", "exec", &t.dut_ns])
                .arg(exe)
                .args([
                    "--log",
                    "warn",
                    "run",
                    "--no-api",
                    "--cpu",
                    &t.dut_cpu.to_string(),
                    "-c",
                ])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(dut_output())
                .stderr(dut_output())
                .spawn()
                .map_err(|e| xdp::Error::Io {
                    context: "starting switchboard run".into(),
                    source: e,
                })
        }),
    }
}

/// The dut's own output (its counters at exit): shown with `SWITCHBOARD_BENCH_DUT_LOG=1`.
fn dut_output() -> Stdio {
    if std::env::var_os("SWITCHBOARD_BENCH_DUT_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let cfg = BenchConfig {
        duration: Duration::from_secs(a.duration),
        step: Duration::from_secs(a.step),
        search_steps: a.search_steps,
        bridge: !a.no_bridge && !a.quick,
        ovs: !a.no_ovs && !a.quick,
        sink: if a.sink == "xdp" {
            SinkKind::Xdp
        } else {
            SinkKind::Tc
        },
        ..BenchConfig::default()
    };
    eprintln!(
        "bench: gen -> dut -> sink over veth, {}-byte frames (+FCS), {} UDP flows; generator on cpu{}, \
         dut (its process and its receive NAPI thread) on cpu{}; sink counts with {}; {} s saturation + {} search steps of {} s per dut",
        cfg.frame_len,
        cfg.flows,
        cfg.gen_cpu,
        cfg.dut_cpu,
        a.sink,
        a.duration,
        a.search_steps,
        a.step
    );
    let mut duts = vec![
        switchboard_dut("switchboard", false, None, "v3"),
        switchboard_dut("switchboard-rt", false, Some(10), "v3"),
    ];
    if a.with_busy_poll {
        duts.push(switchboard_dut("switchboard-busy", true, None, "v3"));
    }
    if a.with_v2_ring {
        duts.push(switchboard_dut("switchboard-v2", false, None, "v2"));
    }
    let mut rounds: Vec<Vec<xdp::bench::BenchResult>> = Vec::new();
    for r in 0..a.rounds.max(1) {
        if a.rounds > 1 {
            eprintln!("bench: round {}/{}", r + 1, a.rounds);
        }
        rounds.push(run_bench(&cfg, &duts)?);
    }
    let results = median_rows(&rounds);
    if rounds.len() > 1 {
        print_round_ratios(&rounds);
    }
    let ceiling = xdp::bench::generator_ceiling(&cfg).context("measuring the generator alone")?;
    println!(
        "generator ceiling (gen -> sink, no dut): {:.2} Mpps offered, {:.2} Mpps counted",
        ceiling.offered_mpps, ceiling.delivered_mpps
    );
    println!("{}", render_table(&results));
    if let Some(path) = a.json {
        let rows: Vec<serde_json::Value> = std::iter::once(&ceiling)
            .chain(results.iter())
            .map(|r| {
                serde_json::json!({
                    "dut": r.dut,
                    "offered_mpps": r.offered_mpps,
                    "delivered_mpps": r.delivered_mpps,
                    "drop_pct": r.drop_pct,
                    "best_lossless_mpps": r.best_lossless_mpps,
                    "skipped": r.skipped,
                    "placement": r.placement,
                })
            })
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Each dut's median round by delivered rate (skipped rows kept as they are).
fn median_rows(rounds: &[Vec<xdp::bench::BenchResult>]) -> Vec<xdp::bench::BenchResult> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|row| {
            let mut runs: Vec<&xdp::bench::BenchResult> = rounds
                .iter()
                .filter_map(|r| r.iter().find(|x| x.dut == row.dut && x.skipped.is_none()))
                .collect();
            if runs.is_empty() {
                return row.clone();
            }
            runs.sort_by(|a, b| a.delivered_mpps.total_cmp(&b.delivered_mpps));
            runs[runs.len() / 2].clone()
        })
        .collect()
}

/// Delivered rate of each dut relative to the kernel, round by round.
fn print_round_ratios(rounds: &[Vec<xdp::bench::BenchResult>]) {
    println!("delivered vs kernel, per round:");
    let Some(first) = rounds.first() else { return };
    for row in first {
        let ratios: Vec<String> = rounds
            .iter()
            .map(|r| {
                let kernel = r
                    .iter()
                    .find(|x| x.dut == "kernel")
                    .map(|x| x.delivered_mpps);
                let me = r
                    .iter()
                    .find(|x| x.dut == row.dut)
                    .map(|x| x.delivered_mpps);
                match (kernel, me) {
                    (Some(k), Some(m)) if k > 0.0 => format!("{:.2}x", m / k),
                    _ => "-".into(),
                }
            })
            .collect();
        println!("  {:<18} {}", row.dut, ratios.join("  "));
    }
}

#[derive(clap::Args)]
pub struct BlastArgs {
    /// Sending interface.
    #[arg(long)]
    iface: String,
    /// Namespace of the interface (default: the current one).
    #[arg(long, default_value = "")]
    netns: String,
    /// Destination MAC (the next hop).
    #[arg(long)]
    dst_mac: String,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    src_mac: Option<String>,
    #[arg(long, default_value = "10.10.1.1")]
    src_ip: Ipv4Addr,
    #[arg(long, default_value = "10.10.2.1")]
    dst_ip: Ipv4Addr,
    /// UDP flows (distinct source ports).
    #[arg(long, default_value_t = 4)]
    flows: u16,
    /// Frame length without FCS (60 = 64-byte frames).
    #[arg(long, default_value_t = 60)]
    len: usize,
    /// Packets per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds (default 10 unless --count is given).
    #[arg(long)]
    seconds: Option<f64>,
    /// Pin the generator to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let m: packet::EthernetAddress = s
        .parse()
        .map_err(|_| anyhow::anyhow!("'{s}' is not a MAC address"))?;
    Ok(m.0)
}

pub fn blast(a: BlastArgs) -> anyhow::Result<()> {
    let duration = match (a.seconds, a.count) {
        (Some(s), _) => Some(Duration::from_secs_f64(s)),
        (None, None) => Some(Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    let opts = xdp::BlastOptions {
        netns: a.netns,
        iface: a.iface,
        dst_mac: parse_mac(&a.dst_mac)?,
        src_mac: a.src_mac.as_deref().map(parse_mac).transpose()?,
        src_ip: a.src_ip,
        dst_ip: a.dst_ip,
        flows: a.flows,
        frame_len: a.len,
        rate_pps: a.rate,
        count: a.count,
        duration,
        cpu: a.cpu,
        realtime: false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))?;
    }
    let s = xdp::blast(&opts, &stop)?;
    println!(
        "sent {} frames in {:.2} s: {:.3} Mpps",
        s.sent,
        s.elapsed.as_secs_f64(),
        s.pps() / 1e6
    );
    Ok(())
}
