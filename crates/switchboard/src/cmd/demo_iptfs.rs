//! `switchboard demo iptfs`: the IP-TFS lab (seed 003) on one machine.
//!
//! Builds examples/iptfs (h1 - r1 == r2 - h2, switchboard routers running the `iptfs` stage)
//! and runs, each phase on a fresh lab:
//! - `tunnel`: IPv4 and IPv6 ping and iperf3 TCP h1 -> h2 through the tunnel (demand mode);
//! - `constant-rate`: the out SAs switched to IP-TFS proper (fixed outer size, fixed rate), the
//!   outer stream captured on the r1 -> r2 wire while h1's UDP load steps from idle to more
//!   than the tunnel carries: the outer packet rate and size must not follow the inner load;
//! - `small-packets`: a blaster in h1 floods 64-byte frames; inner packets per second delivered
//!   to h2 with aggregation (demand mode) and with plain ESP (mode `plain`, one inner per outer);
//! - `baselines`: iperf3 through the same topology with plain switchboard routing
//!   (examples/iptfs/plain-routing) and with Linux kernel routing (examples/iptfs/kernel-routing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use control::client::Client;
use lab::{Lab, LabOptions, Topology};
use serde::Serialize;
use serde_json::Value;

use super::demo::{DemoArgs, PingResult, example_dir, iperf, iperf_run, ping, which};
use super::lab::{log_path, run_dir, switch_launcher, wait_for_api};

/// Every phase, in the order they run.
pub const PHASES: [&str; 4] = ["tunnel", "constant-rate", "small-packets", "baselines"];
const H1_ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const H2_V4: &str = "10.0.2.10";
const H2_V6: &str = "fc00:2::10";

/// Everything the demo measured; `--json` writes it.
#[derive(Serialize, Default)]
struct Report {
    ping: BTreeMap<String, PingJson>,
    iperf3_mbps: BTreeMap<String, f64>,
    /// Tunnel (IPv4) over plain switchboard routing, both iperf3 TCP in this run.
    tunnel_vs_plain_switchboard: Option<f64>,
    /// Outer packets per inner packet on r1's IPv4 out SA during the tunnel phase.
    tunnel_outers_per_inner: Option<f64>,
    constant_rate: Option<ConstantRate>,
    small_packets: Option<SmallPackets>,
}

#[derive(Serialize)]
struct PingJson {
    sent: u32,
    received: u32,
    loss_pct: f64,
    rtt_avg_ms: Option<f64>,
}

impl From<&PingResult> for PingJson {
    fn from(r: &PingResult) -> Self {
        PingJson {
            sent: r.sent,
            received: r.received,
            loss_pct: if r.sent == 0 {
                100.0
            } else {
                100.0 * f64::from(r.sent - r.received.min(r.sent)) / f64::from(r.sent)
            },
            rtt_avg_ms: r.avg_ms,
        }
    }
}

#[derive(Serialize)]
struct ConstantRate {
    rate_pps: u64,
    outer_packet_size: usize,
    /// Inner octets one outer carries at most (its DataBlock capacity), so capacity in Mbit/s.
    inner_capacity_mbps: f64,
    levels: Vec<Level>,
    /// The largest |outer pps - rate_pps| / rate_pps over the levels, in percent.
    max_outer_pps_error_pct: f64,
}

#[derive(Serialize)]
struct Level {
    load: String,
    /// Inner load offered by h1 (iperf3 UDP `-b`), Mbit/s; 0 for idle and ping.
    offered_mbps: f64,
    /// What h2's iperf3 received, Mbit/s.
    delivered_mbps: f64,
    inner_loss_pct: f64,
    /// Outer ESP packets of r1's IPv4 out SA per second, counted on the r1 -> r2 wire.
    outer_pps: f64,
    outer_pps_error_pct: f64,
    /// Outer IP packet sizes seen on the wire in this level, with their counts.
    outer_sizes: BTreeMap<u16, u64>,
    /// Outers that carried no inner data (r1's counter).
    all_pad_outers: u64,
    /// Slots the sender missed (woken too late); each one is an outer not sent.
    missed_slots: u64,
    /// Slots sent late but made up, back to back (woken at most 8 slots late).
    late_slots: u64,
    seconds: f64,
}

#[derive(Serialize)]
struct SmallPackets {
    frame_len: usize,
    seconds: f64,
    /// Per mode (`aggregated` = demand, `plain_esp`).
    modes: BTreeMap<String, SmallRun>,
    /// Inner packets per second through the tunnel (decoded by r2), aggregated over plain ESP.
    ratio: Option<f64>,
    /// The same for inner packets delivered to h2.
    delivered_ratio: Option<f64>,
}

#[derive(Serialize)]
struct SmallRun {
    offered_pps: f64,
    /// Inner packets r1 took in from h1 per second.
    r1_rx_pps: f64,
    /// Outer packets r1 sent on the IPv4 out SA per second.
    outer_pps: f64,
    /// Inner packets r2 decrypted and decoded per second: what got through the tunnel.
    decoded_pps: f64,
    /// Inner packets r2 sent on to h2 per second (r2's egress to h2 is per inner packet in
    /// both modes).
    delivered_pps: f64,
}

/// A lab with its switches' API clients, torn down on drop.
struct Running {
    lab: Lab,
    apis: BTreeMap<String, Client>,
}

impl Running {
    fn up(topo_path: &Path) -> anyhow::Result<Running> {
        let topo = Topology::load(topo_path)?;
        let lab = Lab::up(
            &topo,
            LabOptions {
                replace: true,
                switch_launcher: Some(switch_launcher(&topo.name)),
                skip_processes: true,
            },
        )?;
        let mut apis = BTreeMap::new();
        for sw in &topo.switches {
            let api = sw.api.clone().unwrap_or_else(|| "127.0.0.1:5000".into());
            wait_for_api(
                &api,
                Duration::from_secs(15),
                &log_path(&topo.name, &sw.name),
            )?;
            apis.insert(sw.name.clone(), Client::new(&format!("http://{api}")));
        }
        Ok(Running { lab, apis })
    }

    fn api(&self, switch: &str) -> anyhow::Result<&Client> {
        self.apis
            .get(switch)
            .with_context(|| format!("the topology has no switch '{switch}'"))
    }

    /// The counters of `switch`'s first out SA with an IPv4 outer (what h1 -> h2 IPv4 uses).
    fn out4(&self, switch: &str) -> anyhow::Result<Value> {
        self.sa4(switch, "out")
    }

    /// The counters of `switch`'s first `direction` SA with an IPv4 outer.
    fn sa4(&self, switch: &str, direction: &str) -> anyhow::Result<Value> {
        let v = self.api(switch)?.iptfs()?;
        v["sas"]
            .as_array()
            .and_then(|sas| {
                sas.iter()
                    .find(|s| {
                        s["direction"] == direction
                            && s["local"].as_str().is_some_and(|l| l.contains('.'))
                    })
                    .cloned()
            })
            .with_context(|| format!("{switch} has no IPv4 {direction} SA: {v}"))
    }

    fn port_counter(&self, switch: &str, port: u64, field: &str) -> anyhow::Result<u64> {
        let v = self.api(switch)?.ports()?;
        let list = v
            .as_array()
            .or_else(|| v.get("ports").and_then(Value::as_array))
            .cloned()
            .unwrap_or_default();
        list.iter()
            .find(|p| p["id"].as_u64() == Some(port))
            .and_then(|p| p["counters"][field].as_u64())
            .with_context(|| format!("{switch} port {port} has no counter {field}"))
    }

    fn down(self) -> anyhow::Result<()> {
        self.lab.down()?;
        Ok(())
    }
}

fn counter(sa: &Value, name: &str) -> u64 {
    sa["counters"][name].as_u64().unwrap_or(0)
}

pub fn run(a: &DemoArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo builds network namespaces and needs root (try: sudo switchboard demo iptfs)"
        );
    }
    for tool in ["ip", "ping", "iperf3", "ethtool", "tcpdump"] {
        if which(tool).is_none() {
            bail!(
                "'{tool}' is not installed; run scripts/ensure-deps.sh (apt packages iproute2 iputils-ping iperf3 ethtool tcpdump)"
            );
        }
    }
    let phases: Vec<&str> = match &a.phases {
        None => PHASES.to_vec(),
        Some(list) => {
            let mut v = Vec::new();
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match PHASES.iter().find(|k| **k == p) {
                    Some(k) => v.push(*k),
                    None => bail!(
                        "--phases: unknown phase '{p}' (known: {})",
                        PHASES.join(", ")
                    ),
                }
            }
            v
        }
    };
    if a.rate_pps == 0 {
        bail!("--rate-pps must be at least 1");
    }
    if !(100..=9000).contains(&a.outer_size) {
        bail!("--outer-size {} is outside 100..=9000", a.outer_size);
    }
    let dir = a.example.clone().unwrap_or_else(|| example_dir("iptfs"));
    let topo = dir.join("topology.toml");
    let work = run_dir().join("iptfs-demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let secs = a.seconds.unwrap_or(5);
    println!("switchboard demo: IP-TFS tunnel (seed 003)");
    println!(
        "  topology {}; phases {}",
        topo.display(),
        phases.join(", ")
    );
    let mut r = Report::default();
    let total = phases.len();
    for (i, phase) in phases.iter().enumerate() {
        println!("\n[{}/{total}] {phase}", i + 1);
        match *phase {
            "tunnel" => tunnel(&topo, secs, &mut r)?,
            "constant-rate" => constant_rate(&dir, &work, a, &mut r)?,
            "small-packets" => small_packets(&dir, &work, a, &mut r)?,
            "baselines" => baselines(&dir, secs, &mut r)?,
            _ => unreachable!("phases are checked above"),
        }
    }
    summary(&r);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nmeasurements written to {}", path.display());
    }
    let lost: Vec<String> = r
        .ping
        .iter()
        .filter(|(_, p)| p.received < p.sent)
        .map(|(k, p)| format!("{k} {}/{}", p.received, p.sent))
        .collect();
    if !lost.is_empty() {
        bail!("pings were lost through the tunnel: {}", lost.join(", "));
    }
    Ok(())
}

fn tunnel(topo: &Path, secs: u32, r: &mut Report) -> anyhow::Result<()> {
    let lab = Running::up(topo)?;
    println!("      lab up: r1 and r2 run the iptfs stage (demand mode, AES-GCM-128)");
    for (fam, dst) in [("ipv4", H2_V4), ("ipv6", H2_V6)] {
        let p = ping(&lab.lab, "h1", dst, 5)?;
        println!(
            "      ping h1 -> {dst}: {}/{} replies{}",
            p.received,
            p.sent,
            p.avg_ms
                .map(|a| format!(", rtt avg {a:.3} ms"))
                .unwrap_or_default()
        );
        r.ping.insert(fam.into(), PingJson::from(&p));
    }
    let before = lab.out4("r1")?;
    for (fam, dst) in [("ipv4", H2_V4), ("ipv6", H2_V6)] {
        let mbps = iperf(&lab.lab, "h2", "h1", dst, secs)?;
        println!("      iperf3 TCP h1 -> {dst}, {secs} s: {mbps:.0} Mbit/s");
        r.iperf3_mbps.insert(format!("tunnel_{fam}"), mbps);
    }
    let after = lab.out4("r1")?;
    let d = |k: &str| counter(&after, k).saturating_sub(counter(&before, k));
    if d("inner_packets") > 0 {
        let per = d("outer_packets") as f64 / d("inner_packets") as f64;
        println!(
            "      r1's IPv4 out SA: {} inner packets in {} outers ({per:.2} outers per inner: \
             1500-octet inners do not fit one 1500-octet outer, and demand mode sends what is \
             queued without waiting)",
            d("inner_packets"),
            d("outer_packets")
        );
        r.tunnel_outers_per_inner = Some(per);
    }
    lab.down()
}

/// A copy of the example with every out SA's sender knobs replaced by `knobs` (TOML lines).
fn variant(dir: &Path, to: &Path, knobs: &[String]) -> anyhow::Result<PathBuf> {
    const REPLACED: [&str; 7] = [
        "mode",
        "rate_pps",
        "l3_fixed_rate",
        "outer_packet_size",
        "pkt_size",
        "init_delay_ms",
        "init_delay_us",
    ];
    std::fs::create_dir_all(to)?;
    for f in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let f = f?.path();
        if !f.is_file() || f.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&f)?;
        let name = f.file_name().context("file name")?;
        if name == "topology.toml" {
            std::fs::write(to.join(name), text)?;
            continue;
        }
        let mut out = String::new();
        let mut in_sa = false;
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with('[') {
                in_sa = t.starts_with("[[stage.iptfs.sa]]");
            }
            let key = t.split('=').next().unwrap_or("").trim();
            if in_sa && REPLACED.contains(&key) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if in_sa && key == "direction" && t.contains("\"out\"") {
                for k in knobs {
                    out.push_str(k);
                    out.push('\n');
                }
            }
        }
        std::fs::write(to.join(name), out)?;
    }
    Ok(to.join("topology.toml"))
}

/// A running tcpdump writing a pcap; stopped (SIGTERM, so it flushes) by `stop` or on drop.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    fn start(iface: &str, file: &Path, filter: &str) -> anyhow::Result<Capture> {
        let mut child = Command::new("tcpdump")
            .args(["-U", "--immediate-mode", "-n", "-i", iface, "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        // It captures only once it says it is listening.
        use std::io::BufRead as _;
        let mut err = std::io::BufReader::new(child.stderr.take().context("tcpdump stderr")?);
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("tcpdump on {iface} ended before listening");
            }
        }
        Ok(Capture {
            child: Some(child),
            file: file.to_path_buf(),
        })
    }

    fn stop(mut self) -> anyhow::Result<PathBuf> {
        self.terminate();
        Ok(self.file.clone())
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill with the PID of a child this process started and has not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// One captured ESP packet: when, its outer IP length and SPI.
struct EspSeen {
    at: f64,
    ip_len: u16,
    spi: u32,
}

/// The ESP packets in a pcap written by tcpdump (Ethernet, IPv4 or IPv6 outer).
fn esp_packets(file: &Path) -> anyhow::Result<Vec<EspSeen>> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut rd = pcap_file::pcap::PcapReader::new(f).context("reading the capture")?;
    let mut out = Vec::new();
    while let Some(p) = rd.next_packet() {
        let p = p.context("reading the capture")?;
        let d = &p.data;
        if d.len() < 14 {
            continue;
        }
        let (ip_len, spi_at) = match u16::from_be_bytes([d[12], d[13]]) {
            0x0800 if d.len() >= 34 && d[23] == 50 => {
                let ihl = usize::from(d[14] & 0x0f) * 4;
                (u16::from_be_bytes([d[16], d[17]]), 14 + ihl)
            }
            0x86dd if d.len() >= 58 && d[20] == 50 => {
                (u16::from_be_bytes([d[18], d[19]]).saturating_add(40), 54)
            }
            _ => continue,
        };
        let Some(spi) = d.get(spi_at..spi_at + 4) else {
            continue;
        };
        out.push(EspSeen {
            at: p.timestamp.as_secs_f64(),
            ip_len,
            spi: u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]]),
        });
    }
    Ok(out)
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An iperf3 UDP run h1 -> h2 at `mbps` for `secs`: (Mbit/s received, loss %).
fn iperf_udp(lab: &Lab, mbps: f64, secs: f64) -> anyhow::Result<(f64, f64)> {
    let rate = format!("{:.0}", mbps * 1e6);
    let secs = format!("{secs:.0}");
    let args = ["-u", "-b", &rate, "-l", "1200", "-t", &secs];
    let v = iperf_run(lab, "h2", "h1", H2_V4, &args)?;
    // UDP: `sum` holds the sender's rate with the loss the server counted.
    let bps = v
        .pointer("/end/sum/bits_per_second")
        .and_then(Value::as_f64)
        .context("iperf3 UDP: no summary")?;
    let lost = v
        .pointer("/end/sum/lost_percent")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let rx = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .unwrap_or(bps * (1.0 - lost / 100.0));
    Ok((rx / 1e6, lost))
}

fn constant_rate(dir: &Path, work: &Path, a: &DemoArgs, r: &mut Report) -> anyhow::Result<()> {
    let topo = variant(
        dir,
        &work.join("constant-rate"),
        &[
            "mode = \"iptfs\"".into(),
            format!("rate_pps = {}", a.rate_pps),
            format!("outer_packet_size = {}", a.outer_size),
        ],
    )?;
    let lab = Running::up(&topo)?;
    println!(
        "      lab up with every out SA in IP-TFS mode: {}-octet outers at {} packets/s",
        a.outer_size, a.rate_pps
    );
    let sa = lab.out4("r1")?;
    let spi = sa["spi"].as_u64().context("SA without spi")? as u32;
    // The DataBlock capacity of one outer: IPv4 20, ESP header 8, IV 8 and ICV 16 around a
    // payload padded to 4 octets that holds the AGGFRAG header (4), the data and the ESP
    // trailer (2).
    let capacity = (a.outer_size.saturating_sub(52) & !3).saturating_sub(6);
    let cap_mbps = a.rate_pps as f64 * capacity as f64 * 8.0 / 1e6;
    let wire = lab.lab.switch_port_ifaces("r2")?;
    let wire = wire.get(&2).context("r2 has no port 2")?;
    let cap = Capture::start(wire, &work.join("constant-rate.pcap"), "esp")?;
    println!(
        "      capturing the r1 -> r2 wire on {wire}; inner capacity {cap_mbps:.1} Mbit/s \
         ({capacity} octets per outer)"
    );
    let secs = a.level_s.max(1.0);
    let loads: Vec<(String, f64)> = vec![
        ("idle".into(), 0.0),
        ("ping 5/s".into(), 0.0),
        ("UDP 25 %".into(), 0.25 * cap_mbps),
        ("UDP 50 %".into(), 0.5 * cap_mbps),
        ("UDP 90 %".into(), 0.9 * cap_mbps),
        ("UDP 150 %".into(), 1.5 * cap_mbps),
    ];
    let mut windows = Vec::new();
    for (label, mbps) in &loads {
        let c0 = lab.out4("r1")?;
        let t0 = wall();
        let (delivered, loss) = if label.starts_with("ping") {
            let n = (secs * 5.0).round().max(1.0) as u32;
            let out = lab.lab.exec(
                "h1",
                &["ping", "-n", "-q", "-c", &n.to_string(), "-i", "0.2", H2_V4],
            )?;
            let text = String::from_utf8_lossy(&out.stdout);
            let loss = text
                .split(',')
                .find(|s| s.contains("packet loss"))
                .and_then(|s| s.trim().split('%').next()?.parse().ok())
                .unwrap_or(100.0);
            (0.0, loss)
        } else if *mbps > 0.0 {
            iperf_udp(&lab.lab, *mbps, secs)?
        } else {
            std::thread::sleep(Duration::from_secs_f64(secs));
            (0.0, 0.0)
        };
        let t1 = wall();
        let c1 = lab.out4("r1")?;
        let d = |k: &str| counter(&c1, k).saturating_sub(counter(&c0, k));
        println!(
            "      {label:<10} offered {mbps:>6.2} Mbit/s, delivered {delivered:>6.2} Mbit/s, \
             loss {loss:>5.1} %"
        );
        windows.push((
            label.clone(),
            *mbps,
            delivered,
            loss,
            t0,
            t1,
            d("all_pad_packets"),
            d("missed_slots"),
            d("late_slots"),
        ));
    }
    std::thread::sleep(Duration::from_millis(200));
    let file = cap.stop()?;
    let seen = esp_packets(&file)?;
    let mut levels = Vec::new();
    let mut worst: f64 = 0.0;
    for (load, offered, delivered, loss, t0, t1, pad, missed, late) in windows {
        // Half a second off each edge: the load starts and stops inside the window.
        let (lo, hi) = (t0 + 0.5, t1 - 0.5);
        let mut sizes = BTreeMap::new();
        let mut n = 0u64;
        for p in seen
            .iter()
            .filter(|p| p.spi == spi && p.at >= lo && p.at < hi)
        {
            n += 1;
            *sizes.entry(p.ip_len).or_insert(0) += 1;
        }
        let span = (hi - lo).max(1e-3);
        let pps = n as f64 / span;
        let err = 100.0 * (pps - a.rate_pps as f64) / a.rate_pps as f64;
        worst = worst.max(err.abs());
        levels.push(Level {
            load,
            offered_mbps: offered,
            delivered_mbps: delivered,
            inner_loss_pct: loss,
            outer_pps: pps,
            outer_pps_error_pct: err,
            outer_sizes: sizes,
            all_pad_outers: pad,
            missed_slots: missed,
            late_slots: late,
            seconds: span,
        });
    }
    println!(
        "\n      {:<10} {:>9} {:>9} {:>7} {:>10} {:>7} {:>9}  outer sizes seen",
        "load", "offered", "delivered", "loss%", "outer pps", "error%", "all-pad"
    );
    for l in &levels {
        let sizes: Vec<String> = l
            .outer_sizes
            .iter()
            .map(|(s, n)| format!("{s} B x{n}"))
            .collect();
        println!(
            "      {:<10} {:>9.2} {:>9.2} {:>7.1} {:>10.1} {:>+7.2} {:>9}  {}",
            l.load,
            l.offered_mbps,
            l.delivered_mbps,
            l.inner_loss_pct,
            l.outer_pps,
            l.outer_pps_error_pct,
            l.all_pad_outers,
            sizes.join(", ")
        );
    }
    println!(
        "      outer rate within {worst:.2} % of {} packets/s at every load level",
        a.rate_pps
    );
    r.constant_rate = Some(ConstantRate {
        rate_pps: a.rate_pps,
        outer_packet_size: a.outer_size,
        inner_capacity_mbps: cap_mbps,
        levels,
        max_outer_pps_error_pct: worst,
    });
    lab.down()
}

/// 64-byte frames from h1 at full speed through a lab whose out SAs use `knobs`.
fn small_run(
    dir: &Path,
    to: &Path,
    knobs: &[String],
    a: &DemoArgs,
) -> anyhow::Result<(SmallRun, f64)> {
    let topo = variant(dir, to, knobs)?;
    let lab = Running::up(&topo)?;
    // veth passes XDP-redirected frames to its peer only through the peer's NAPI, which GRO
    // turns on (the lab turns offloads off on every end).
    let ports = lab.lab.switch_port_ifaces("r1")?;
    let r1_in = ports.get(&1).context("r1 has no port 1")?;
    let out = Command::new("ethtool")
        .args(["-K", r1_in, "gro", "on"])
        .output()?;
    if !out.status.success() {
        bail!(
            "ethtool -K {r1_in} gro on: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let opts = xdp::BlastOptions {
        netns: lab.lab.netns("h1")?,
        iface: "eth0".into(),
        dst_mac: H1_ROUTER_MAC,
        src_mac: None,
        src_ip: "10.0.1.10".parse()?,
        dst_ip: H2_V4.parse()?,
        flows: 4,
        frame_len: 60,
        rate_pps: None,
        count: None,
        duration: Some(Duration::from_secs_f64(a.blast_s.max(0.5))),
        cpu: None,
        realtime: false,
    };
    let rx0 = lab.port_counter("r1", 1, "rx_packets")?;
    let tx0 = lab.port_counter("r2", 1, "tx_packets")?;
    let o0 = counter(&lab.out4("r1")?, "outer_packets");
    let d0 = counter(&lab.sa4("r2", "in")?, "inner_packets");
    let stats = xdp::blast(&opts, &AtomicBool::new(false))?;
    // What is still queued in r1 and r2 drains; count it with the run.
    std::thread::sleep(Duration::from_millis(300));
    let secs = stats.elapsed.as_secs_f64().max(1e-3);
    let rx = lab.port_counter("r1", 1, "rx_packets")? - rx0;
    let tx = lab.port_counter("r2", 1, "tx_packets")? - tx0;
    let outers = counter(&lab.out4("r1")?, "outer_packets") - o0;
    let decoded = counter(&lab.sa4("r2", "in")?, "inner_packets") - d0;
    lab.down()?;
    Ok((
        SmallRun {
            offered_pps: stats.pps(),
            r1_rx_pps: rx as f64 / secs,
            outer_pps: outers as f64 / secs,
            decoded_pps: decoded as f64 / secs,
            delivered_pps: tx as f64 / secs,
        },
        secs,
    ))
}

fn small_packets(dir: &Path, work: &Path, a: &DemoArgs, r: &mut Report) -> anyhow::Result<()> {
    let mut modes = BTreeMap::new();
    let mut seconds = 0.0;
    for (name, mode) in [("aggregated", "demand"), ("plain_esp", "plain")] {
        let (run, secs) = small_run(
            dir,
            &work.join(format!("small-{mode}")),
            &[format!("mode = \"{mode}\"")],
            a,
        )?;
        println!(
            "      {name:<10} (mode {mode:<6}): offered {:.3} Mpps, r1 took in {:.3} Mpps, \
             {:.3} M outers/s, r2 decoded {:.3} Mpps, h2 got {:.3} Mpps",
            run.offered_pps / 1e6,
            run.r1_rx_pps / 1e6,
            run.outer_pps / 1e6,
            run.decoded_pps / 1e6,
            run.delivered_pps / 1e6
        );
        seconds = secs;
        modes.insert(name.to_string(), run);
    }
    let ratio_of = |f: fn(&SmallRun) -> f64| match (modes.get("aggregated"), modes.get("plain_esp"))
    {
        (Some(x), Some(y)) if f(y) > 0.0 => Some(f(x) / f(y)),
        _ => None,
    };
    let ratio = ratio_of(|m| m.decoded_pps);
    let delivered_ratio = ratio_of(|m| m.delivered_pps);
    if let (Some(q), Some(d)) = (ratio, delivered_ratio) {
        println!(
            "      64-byte inner packets through the tunnel: aggregation {q:.2}x plain ESP \
             ({d:.2}x delivered to h2)"
        );
    }
    r.small_packets = Some(SmallPackets {
        frame_len: 64,
        seconds,
        modes,
        ratio,
        delivered_ratio,
    });
    Ok(())
}

fn baselines(dir: &Path, secs: u32, r: &mut Report) -> anyhow::Result<()> {
    for (key, sub, what) in [
        (
            "plain_switchboard_ipv4",
            "plain-routing",
            "plain switchboard routing",
        ),
        ("kernel_ipv4", "kernel-routing", "Linux kernel routing"),
    ] {
        let lab = Running::up(&dir.join(sub).join("topology.toml"))?;
        let mbps = iperf(&lab.lab, "h2", "h1", H2_V4, secs)?;
        println!("      {what:<26} iperf3 TCP h1 -> {H2_V4}, {secs} s: {mbps:.0} Mbit/s");
        r.iperf3_mbps.insert(key.into(), mbps);
        lab.down()?;
    }
    if let (Some(t), Some(p)) = (
        r.iperf3_mbps.get("tunnel_ipv4"),
        r.iperf3_mbps.get("plain_switchboard_ipv4"),
    ) && *p > 0.0
    {
        r.tunnel_vs_plain_switchboard = Some(t / p);
    }
    Ok(())
}

fn summary(r: &Report) {
    println!("\nsummary");
    for (k, p) in &r.ping {
        println!(
            "  ping {k:<6} {}/{} replies, loss {:.0} %",
            p.received, p.sent, p.loss_pct
        );
    }
    for (k, v) in &r.iperf3_mbps {
        println!("  iperf3 {k:<24} {v:>8.0} Mbit/s");
    }
    if let Some(q) = r.tunnel_vs_plain_switchboard {
        println!("  tunnel / plain switchboard routing: {q:.2}");
    }
    if let Some(c) = &r.constant_rate {
        println!(
            "  constant rate: {} pps of {}-octet outers, worst level {:.2} % off",
            c.rate_pps, c.outer_packet_size, c.max_outer_pps_error_pct
        );
    }
    if let Some(s) = &r.small_packets
        && let Some(q) = s.ratio
    {
        println!("  64-byte packets: aggregation {q:.2}x plain ESP");
    }
}
