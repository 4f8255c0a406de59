//! `switchboard demo`: the p4containerflow forwarding demo on the built-in lab.
//!
//! Builds examples/p4containerflow, programs the switch through its REST API the
//! way the upstream controller does, shows ping and a TCP transfer crossing it,
//! moves the server address from lakewood (port 140) to loveland (port 148),
//! calls `/updateForward`, shows the traffic following, and tears the lab down.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use control::client::Client;
use lab::{Lab, LabOptions, Topology};
use serde_json::{Value, json};

use super::lab::{log_path, switch_launcher, wait_for_api};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Which demo: `p4containerflow` (forwarding, /updateForward), `migration` (the live
    /// migration experiment), `ecmper` (ECMP-ER demos 1 and 2) or `iptfs` (the IP-TFS tunnel).
    #[arg(default_value = "p4containerflow")]
    pub which: String,
    /// The example directory holding topology.toml and switch.toml.
    #[arg(long)]
    pub example: Option<PathBuf>,
    /// p4containerflow, iptfs: seconds of TCP transfer per iperf3 run (default 2, iptfs 5).
    #[arg(long)]
    pub seconds: Option<u32>,
    /// migration: how many migrations (alternating lakewood <-> loveland).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// migration: frames per second per connection; the downtime resolution is 1/fps.
    #[arg(long, default_value_t = 500)]
    pub fps: u32,
    /// migration: load generator connections.
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// migration: seconds between migrations.
    #[arg(long, default_value_t = 2.0)]
    pub interval_s: f64,
    /// migration: seconds of steady state before the first migration.
    #[arg(long, default_value_t = 3.0)]
    pub steady_s: f64,
    /// migration: seconds after the last migration before the load stops.
    #[arg(long, default_value_t = 2.0)]
    pub post_s: f64,
    /// migration: how long the server may wait for clients to acknowledge everything before
    /// it checkpoints; bytes still unacknowledged then travel with the state and are sent
    /// again by the new server. 0 (the default) does not wait: a client that has nothing to
    /// send acknowledges small frames only on its 40 ms delayed-ACK timer, which would
    /// otherwise be most of the downtime.
    #[arg(long, default_value_t = 0)]
    pub drain_timeout_ms: u64,
    /// migration: directory for the CSV, gap log, trace, summaries and plot.
    #[arg(long, default_value = "migration-results")]
    pub out: PathBuf,
    /// ecmper: ApacheBench requests per run (`ab -n`).
    #[arg(long, default_value_t = 1000)]
    pub requests: u64,
    /// ecmper: ApacheBench concurrency (`ab -c`).
    #[arg(long, default_value_t = 12)]
    pub concurrency: u32,
    /// ecmper: the file requested (10B.txt, 1m.img or 4m.img).
    #[arg(long, default_value = "1m.img")]
    pub file: String,
    /// ecmper: seconds between server-set changes during ApacheBench.
    #[arg(long, default_value_t = 1.0)]
    pub flap_interval_s: f64,
    /// iptfs: which phases, comma-separated (default all): tunnel, constant-rate,
    /// small-packets, baselines.
    #[arg(long)]
    pub phases: Option<String>,
    /// iptfs: outer packets per second of the constant-rate phase.
    #[arg(long, default_value_t = 1000)]
    pub rate_pps: u64,
    /// iptfs: outer IP packet size of the constant-rate phase, octets.
    #[arg(long, default_value_t = 1400)]
    pub outer_size: usize,
    /// iptfs: seconds per inner load level of the constant-rate phase.
    #[arg(long, default_value_t = 3.0)]
    pub level_s: f64,
    /// iptfs: seconds of 64-byte flood per mode in the small-packets phase.
    #[arg(long, default_value_t = 2.0)]
    pub blast_s: f64,
    /// migration, ecmper, iptfs: also write the summary (runs, drops, holes, downtime_ms, phases) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const SERVER: &str = "192.168.12.2";
const SERVER_MAC: &str = "02:42:c0:a8:0c:02";
const CLIENT: &str = "192.168.12.100";

struct Demo {
    lab: Lab,
    api: Client,
    step: usize,
    total: usize,
    summary: Vec<[String; 3]>,
}

/// Result of a ping run.
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
    pub avg_ms: Option<f64>,
}

/// Run `ping` inside a lab host and read its summary.
pub fn ping(lab: &Lab, node: &str, dst: &str, count: u32) -> anyhow::Result<PingResult> {
    let out = lab.exec(
        node,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            dst,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = PingResult {
        sent: count,
        received: 0,
        avg_ms: None,
    };
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .collect();
            if nums.len() >= 2 {
                r.sent = nums[0];
                r.received = nums[1];
            }
        }
        if let Some(rest) = line.strip_prefix("rtt min/avg/max/mdev = ") {
            r.avg_ms = rest.split('/').nth(1).and_then(|v| v.parse().ok());
        }
    }
    Ok(r)
}

/// An iperf3 TCP transfer from `client` to `server_ip` (served on `server`); Mbit/s received.
pub fn iperf(
    lab: &Lab,
    server: &str,
    client: &str,
    server_ip: &str,
    secs: u32,
) -> anyhow::Result<f64> {
    let v = iperf_run(lab, server, client, server_ip, &["-t", &secs.to_string()])?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|bps| bps / 1e6)
        .with_context(|| format!("iperf3 {client} -> {server_ip}: no receiver summary"))
}

/// One iperf3 run from `client` to `server_ip` (a one-shot server started on `server`) with
/// the extra client arguments `args`; its JSON report. Retries while the server is not yet
/// listening.
pub fn iperf_run(
    lab: &Lab,
    server: &str,
    client: &str,
    server_ip: &str,
    args: &[&str],
) -> anyhow::Result<Value> {
    lab.spawn(server, &["iperf3", "-s", "-1", "-B", server_ip])?;
    let mut argv = vec!["iperf3", "-c", server_ip, "-J", "--connect-timeout", "1000"];
    argv.extend_from_slice(args);
    let mut last = String::new();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let out = lab.exec(client, &argv)?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if v.pointer("/end/sum").is_some() || v.pointer("/end/sum_received").is_some() {
            return Ok(v);
        }
        last = v
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        if !last.contains("connect") {
            break;
        }
    }
    bail!("iperf3 {client} -> {server_ip} failed: {last}")
}

fn port_counters(api: &Client) -> anyhow::Result<Vec<(u64, u64, u64, u64)>> {
    let v = api.ports()?;
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v.get("ports").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    Ok(list
        .iter()
        .map(|p| {
            let c = &p["counters"];
            (
                p["id"].as_u64().unwrap_or(0),
                c["rx_packets"].as_u64().unwrap_or(0),
                c["tx_packets"].as_u64().unwrap_or(0),
                c["rx_dropped"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

impl Demo {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!("\n[{}/{}] {what}", self.step, self.total);
    }

    fn record(&mut self, what: &str, result: &str, detail: String) {
        println!("      {what}: {result}  {detail}");
        self.summary
            .push([what.to_string(), result.to_string(), detail]);
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, v) = self.api.compat(path, &body)?;
        println!("      POST {path} {body} -> {status} {v}");
        if status != 200 {
            bail!("POST {path} answered {status}: {v}");
        }
        Ok(v)
    }

    fn counters(&self) -> anyhow::Result<()> {
        println!(
            "      {:>6} {:>10} {:>10} {:>10}",
            "port", "rx_pkts", "tx_pkts", "dropped"
        );
        for (id, rx, tx, drop) in port_counters(&self.api)? {
            println!("      {id:>6} {rx:>10} {tx:>10} {drop:>10}");
        }
        Ok(())
    }

    fn tx_of(&self, port: u64) -> anyhow::Result<u64> {
        Ok(port_counters(&self.api)?
            .iter()
            .find(|c| c.0 == port)
            .map_or(0, |c| c.2))
    }

    fn ping_step(&mut self, label: &str, expect: bool) -> anyhow::Result<()> {
        let r = ping(&self.lab, "client", SERVER, 5)?;
        let ok = (r.received > 0) == expect;
        let detail = format!(
            "{}/{} replies{}",
            r.received,
            r.sent,
            r.avg_ms
                .map(|a| format!(", rtt avg {a:.3} ms"))
                .unwrap_or_default()
        );
        self.record(label, if ok { "ok" } else { "UNEXPECTED" }, detail);
        if !ok {
            bail!(
                "{label}: expected {}",
                if expect { "replies" } else { "no replies" }
            );
        }
        Ok(())
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    match a.which.as_str() {
        "migration" => return super::demo_migration::run(&a),
        "ecmper" => return super::demo_ecmper::run(&a),
        "iptfs" => return super::demo_iptfs::run(&a),
        "p4containerflow" => {}
        other => {
            bail!("unknown demo '{other}' (known: p4containerflow, migration, ecmper, iptfs)")
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo builds network namespaces and needs root (try: sudo switchboard demo)");
    }
    for tool in ["ip", "ping", "iperf3", "ethtool"] {
        if which(tool).is_none() {
            bail!(
                "'{tool}' is not installed; run scripts/ensure-deps.sh (apt packages iproute2 iputils-ping iperf3 ethtool)"
            );
        }
    }
    let dir = a.example.unwrap_or_else(default_example_dir);
    let topo_path = dir.join("topology.toml");
    println!("switchboard demo: p4containerflow forwarding (seed 000)");
    println!("  topology {}", topo_path.display());
    let topo = Topology::load(&topo_path)?;
    let (lab, sw, api_addr) = lab_with_switch(&topo)?;
    let mut d = Demo {
        lab,
        api: Client::new(&format!("http://{api_addr}")),
        step: 0,
        total: 7,
        summary: Vec::new(),
    };
    let res = demo_steps(&mut d, &topo, &sw.name, &api_addr, a.seconds.unwrap_or(2));
    d.step("tearing the lab down");
    let Demo { lab, summary, .. } = d;
    lab.down()?;
    println!("      namespaces, links and the switch process removed");
    println!("\nsummary");
    println!("  {:<44} {:<10} detail", "step", "result");
    for [w, r, det] in &summary {
        println!("  {w:<44} {r:<10} {det}");
    }
    res
}

fn demo_steps(d: &mut Demo, topo: &Topology, sw: &str, api: &str, secs: u32) -> anyhow::Result<()> {
    d.step(&format!(
        "lab '{}' up: hosts client (port 132), lakewood (port 140), loveland (port 148); switch '{sw}'",
        topo.name
    ));
    wait_for_api(api, Duration::from_secs(15), &log_path(&topo.name, sw))?;
    let p = d.api.pipeline()?;
    let stages: Vec<String> = p
        .as_array()
        .or_else(|| p.get("stages").and_then(Value::as_array))
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "      REST API at http://{api}; pipeline {}",
        stages.join(" -> ")
    );

    d.step("clean tables: with no entry nothing arrives (default NoAction = drop)");
    d.post("/cleanup", json!({}))?;
    d.ping_step("ping client -> .2 with empty tables", false)?;

    d.step("program the switch like the upstream controller: /addForward per node");
    d.post("/addForward", json!({"dst_addr": CLIENT, "port": 132}))?;
    d.post(
        "/addForward",
        json!({"dst_addr": SERVER, "port": 140, "dst_mac": SERVER_MAC}),
    )?;

    d.step("traffic to the server address on lakewood (port 140)");
    let tx140 = d.tx_of(140)?;
    d.ping_step("ping client -> .2 on lakewood", true)?;
    let mbps = iperf(&d.lab, "lakewood", "client", SERVER, secs)?;
    d.record(
        "TCP client -> .2 on lakewood (iperf3)",
        "ok",
        format!("{mbps:.0} Mbit/s"),
    );
    let grew = d.tx_of(140)? - tx140;
    d.record(
        "switch port 140 tx during the transfer",
        "ok",
        format!("{grew} packets"),
    );
    d.counters()?;

    d.step("move .2 from lakewood to loveland, announce it, POST /updateForward");
    d.lab.exec_ok(
        "lakewood",
        &["ip", "addr", "del", "192.168.12.2/24", "dev", "eth0"],
    )?;
    d.lab.exec_ok(
        "loveland",
        &["ip", "addr", "add", "192.168.12.2/24", "dev", "eth0"],
    )?;
    if which("arping").is_some() {
        let before = d.tx_of(132)?;
        let _ = d.lab.exec(
            "loveland",
            &["arping", "-U", "-c", "1", "-I", "eth0", SERVER],
        );
        std::thread::sleep(Duration::from_millis(100));
        let flooded = d.tx_of(132)? - before;
        d.record(
            "gratuitous ARP from loveland",
            if flooded > 0 { "ok" } else { "UNEXPECTED" },
            format!("flooded: port 132 sent {flooded} ARP frame(s) to the client"),
        );
        if flooded == 0 {
            bail!("the gratuitous ARP was not flooded to the client's port");
        }
    }
    d.post(
        "/updateForward",
        json!({"ipv4": SERVER, "sw_port": 148, "dst_mac": SERVER_MAC}),
    )?;

    d.step("traffic follows to loveland (port 148)");
    let (tx140, tx148) = (d.tx_of(140)?, d.tx_of(148)?);
    d.ping_step("ping client -> .2 on loveland", true)?;
    let mbps = iperf(&d.lab, "loveland", "client", SERVER, secs)?;
    d.record(
        "TCP client -> .2 on loveland (iperf3)",
        "ok",
        format!("{mbps:.0} Mbit/s"),
    );
    let (g140, g148) = (d.tx_of(140)? - tx140, d.tx_of(148)? - tx148);
    let ok = g148 > 0 && g140 == 0;
    d.record(
        "delivery moved from port 140 to port 148",
        if ok { "ok" } else { "UNEXPECTED" },
        format!("port 148 sent {g148} packets, port 140 sent {g140}"),
    );
    d.counters()?;
    if !ok {
        bail!("traffic did not move to port 148");
    }
    Ok(())
}

/// A demo's lab, replacing any leftover of the same name, with its first switch started
/// (the caller waits for its API): the lab, that switch's spec and its API address.
pub fn lab_with_switch(topo: &Topology) -> anyhow::Result<(Lab, lab::SwitchSpec, String)> {
    let sw = topo
        .switches
        .first()
        .context("the topology has no switch")?
        .clone();
    let api_addr = sw.api.clone().unwrap_or_else(|| "127.0.0.1:5000".into());
    let lab = Lab::up(
        topo,
        LabOptions {
            replace: true,
            switch_launcher: Some(switch_launcher(&topo.name)),
            skip_processes: true,
        },
    )?;
    Ok((lab, sw, api_addr))
}

/// `examples/p4containerflow` next to the workspace, or in the current directory.
pub fn default_example_dir() -> PathBuf {
    example_dir("p4containerflow")
}

/// `examples/<name>` in the current directory, or next to the workspace.
pub fn example_dir(name: &str) -> PathBuf {
    let here = PathBuf::from("examples").join(name);
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// The path of a program on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}
