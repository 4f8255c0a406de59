//! `switchboard migrate`: move a running stream server from one lab host to another without
//! CRIU, keeping its TCP connections, and time every phase.
//!
//! The server is migration-aware (crates/stream): on `checkpoint` it pauses, drains its send
//! queues, takes its interface down (so nothing arrives after its state is read and the old
//! namespace stops answering for the address), checkpoints every socket with TCP repair and
//! exits. A standby process started beforehand in the destination namespace, which already
//! holds the same IP and MAC, restores the sockets; the switch's `forward` entry is moved with
//! `/updateForward`; then the new process announces itself with a gratuitous ARP, leaves repair
//! mode and resumes the streams. The orchestrator passes the state through (the seed's socat
//! transfer) and measures each step.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use lab::{Endpoint, Topology, netns_name};

use super::demo::default_example_dir;

/// Where the lab's runtime files (control sockets, logs) live.
const RUN_DIR: &str = "/run/switchboard";

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The lab's topology file [default: examples/p4containerflow/topology.toml].
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Host the server runs on now [default: the one whose server answers as active].
    #[arg(long)]
    from: Option<String>,
    /// Host to move it to [default: the other host whose --iface has the same MAC].
    #[arg(long)]
    to: Option<String>,
    /// The server's address, with its prefix length.
    #[arg(long, default_value = "192.168.12.2/24")]
    ip: String,
    /// The server's interface in both hosts.
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// How long the source may wait for its peers to acknowledge everything before it
    /// checkpoints anyway; unacknowledged bytes travel with the state and are sent again.
    /// 0 does not wait (a quiet peer's delayed ACK takes 40 ms).
    #[arg(long, default_value_t = 0)]
    drain_timeout_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Everything one migration needs to know, resolved from the topology.
#[derive(Debug, Clone)]
pub struct Plan {
    pub lab: String,
    pub from: String,
    pub to: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub iface: String,
    /// The destination's switch port (for `/updateForward`).
    pub to_port: u16,
    /// The destination interface's MAC (`dst_mac` of `/updateForward`).
    pub mac: String,
    /// The switch's REST address.
    pub api: String,
    pub drain_timeout_ms: u64,
    /// Arguments for the new server process besides --standby/--control/--iface.
    pub server_args: Vec<String>,
}

/// Timings of one migration, in milliseconds, plus monotonic timestamps (ns) so that client
/// measurements (frame gaps) can be placed on the same clock.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrationReport {
    pub from: String,
    pub to: String,
    pub connections: u64,
    /// Destination address and standby process, before the freeze (not downtime).
    pub prepare_ms: f64,
    pub pause_drain_ms: f64,
    pub checkpoint_ms: f64,
    /// State handed from the old process to the new one (the orchestrator's relay).
    pub transfer_ms: f64,
    pub restore_ms: f64,
    pub switch_update_ms: f64,
    /// Gratuitous ARP, repair mode off, streams resumed.
    pub resume_ms: f64,
    /// From the checkpoint request to the resumed streams: the server-side freeze.
    pub freeze_ms: f64,
    /// Housekeeping after the freeze (old host's address removed, its link back up).
    pub post_ms: f64,
    /// Bytes of state passed from the old process to the new one.
    pub state_bytes: usize,
    pub start_ns: u64,
    pub resumed_ns: u64,
}

/// The control socket of the stream server on `host` of `lab`.
pub fn control_socket(lab: &str, host: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{lab}-{host}-stream.sock"))
}

/// The log file of the stream server on `host` of `lab`.
pub fn server_log(lab: &str, host: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{lab}-{host}-stream.log"))
}

/// Start `switchboard stream-server` inside a lab host with its control socket, logging to
/// /run/switchboard. It runs in its own process group so it outlives this command; `lab down`
/// stops every process left in the lab's namespaces. Returns its PID once it answers.
pub fn start_server(
    lab: &str,
    host: &str,
    iface: &str,
    standby: bool,
    extra: &[String],
) -> anyhow::Result<u32> {
    std::fs::create_dir_all(RUN_DIR)?;
    let sock = control_socket(lab, host);
    let _ = std::fs::remove_file(&sock);
    let log = std::fs::File::create(server_log(lab, host))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &netns_name(lab, host)])
        .arg(exe)
        .arg("stream-server")
        .arg("--control")
        .arg(&sock)
        .args(["--iface", iface])
        .args(extra);
    if standby {
        cmd.arg("--standby");
    }
    use std::os::unix::process::CommandExt as _;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting stream-server")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(v) = control(&sock, &json!({"op": "status"}), Duration::from_secs(1)) {
            let want = if standby { "standby" } else { "active" };
            if v["role"] == want {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "stream-server on {host} did not answer on {} within 10 s (log: {})",
                sock.display(),
                server_log(lab, host).display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn control(sock: &Path, req: &Value, timeout: Duration) -> anyhow::Result<Value> {
    stream::control::control_request(sock, req, timeout)
        .with_context(|| format!("control socket {}", sock.display()))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn field_ms(v: &Value, key: &str) -> f64 {
    v["timings"][key].as_f64().unwrap_or(0.0)
}

/// One migration, `plan.from` -> `plan.to`. The source server must be running with its
/// control socket at [`control_socket`]; the destination host must be idle.
pub fn migrate(plan: &Plan, api: &control::client::Client) -> anyhow::Result<MigrationReport> {
    let from_sock = control_socket(&plan.lab, &plan.from);
    let to_ns = netns_name(&plan.lab, &plan.to);
    let from_ns = netns_name(&plan.lab, &plan.from);
    let cidr = format!("{}/{}", plan.ip, plan.prefix);
    let mut r = MigrationReport {
        from: plan.from.clone(),
        to: plan.to.clone(),
        ..Default::default()
    };

    // Prepare: the destination holds the address (admin-up, so a repair connect() has its
    // routes) but gets no traffic for it until the switch is updated; a standby process waits.
    let t = Instant::now();
    ip(&["-n", &to_ns, "addr", "replace", &cidr, "dev", &plan.iface])?;
    ip(&["-n", &to_ns, "link", "set", &plan.iface, "up"])?;
    start_server(&plan.lab, &plan.to, &plan.iface, true, &plan.server_args)?;
    let to_sock = control_socket(&plan.lab, &plan.to);
    r.prepare_ms = ms(t.elapsed());

    // The freeze.
    let t0 = Instant::now();
    r.start_ns = stream::protocol::monotonic_ns();
    let ck = control(
        &from_sock,
        &json!({"op": "checkpoint", "drain_timeout_ms": plan.drain_timeout_ms}),
        Duration::from_millis(plan.drain_timeout_ms + 5000),
    )
    .context("checkpoint at the source")?;
    let t1 = Instant::now();
    r.pause_drain_ms = field_ms(&ck, "pause_drain_ms");
    r.checkpoint_ms = field_ms(&ck, "checkpoint_ms");
    r.connections = ck["connections"].as_u64().unwrap_or(0);
    let state = ck
        .get("state")
        .cloned()
        .context("checkpoint reply has no state")?;
    r.state_bytes = serde_json::to_vec(&state).map(|v| v.len()).unwrap_or(0);

    let rs = control(
        &to_sock,
        &json!({"op": "restore", "state": state}),
        Duration::from_secs(10),
    )
    .context("restore at the destination")?;
    let t2 = Instant::now();
    r.restore_ms = field_ms(&rs, "restore_ms");
    // The relay: everything between the two replies that the restore itself did not take.
    r.transfer_ms = (ms(t2 - t1) - r.restore_ms).max(0.0);

    let (status, body) = api
        .compat(
            "/updateForward",
            &json!({"ipv4": plan.ip.to_string(), "sw_port": plan.to_port, "dst_mac": plan.mac}),
        )
        .map_err(|e| anyhow::anyhow!("switch update: {e}"))?;
    let t3 = Instant::now();
    if status != 200 {
        bail!("switch update: /updateForward answered {status}: {body}");
    }
    r.switch_update_ms = ms(t3 - t2);

    let rr = control(&to_sock, &json!({"op": "resume"}), Duration::from_secs(10))
        .context("resume at the destination")?;
    let t4 = Instant::now();
    r.resumed_ns = stream::protocol::monotonic_ns();
    // The round trip, which includes the server's own resume time.
    r.resume_ms = ms(t4 - t3).max(field_ms(&rr, "resume_ms"));
    r.freeze_ms = ms(t4 - t0);

    // Housekeeping: the old host gives the address up and comes back as a possible target.
    let t = Instant::now();
    ip(&["-n", &from_ns, "addr", "del", &cidr, "dev", &plan.iface])?;
    ip(&["-n", &from_ns, "link", "set", &plan.iface, "up"])?;
    let _ = std::fs::remove_file(&from_sock);
    r.post_ms = ms(t.elapsed());
    Ok(r)
}

/// The host whose stream server answers as active, among `candidates`.
fn active_host(lab: &str, candidates: &[String]) -> Option<String> {
    candidates.iter().find_map(|h| {
        let v = control(
            &control_socket(lab, h),
            &json!({"op": "status"}),
            Duration::from_millis(500),
        )
        .ok()?;
        (v["role"] == "active").then(|| h.clone())
    })
}

/// A plan from a topology: ports and MACs come from the links and host ifaces.
pub fn plan_from_topology(
    topo: &Topology,
    from: &str,
    to: &str,
    ip_cidr: &str,
    iface: &str,
) -> anyhow::Result<Plan> {
    let (addr, prefix) = ip_cidr
        .split_once('/')
        .context("--ip needs a prefix length, e.g. 192.168.12.2/24")?;
    let ip: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("--ip: '{addr}' is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .with_context(|| format!("--ip: '{prefix}' is not a prefix length"))?;
    let host_mac = |h: &str| -> anyhow::Result<String> {
        topo.host(h)
            .with_context(|| format!("no host '{h}' in lab '{}'", topo.name))?
            .ifaces
            .iter()
            .find(|i| i.name == iface)
            .with_context(|| format!("host '{h}' has no iface '{iface}'"))?
            .mac
            .clone()
            .with_context(|| format!("host '{h}' iface '{iface}' has no fixed MAC"))
    };
    let mac = host_mac(to)?;
    if host_mac(from)? != mac {
        bail!("'{from}' and '{to}' must have the same MAC on {iface} (same-IP migration)");
    }
    let to_end = format!("{to}:{iface}");
    let to_port = topo
        .links
        .iter()
        .find_map(|l| {
            let other = if l.a == to_end {
                &l.b
            } else if l.b == to_end {
                &l.a
            } else {
                return None;
            };
            match topo.endpoint(other) {
                Some(Endpoint::Switch { port, .. }) => Some(port),
                _ => None,
            }
        })
        .with_context(|| format!("{to_end} is not linked to a switch port"))?;
    let api = topo
        .switches
        .first()
        .and_then(|s| s.api.clone())
        .unwrap_or_else(|| "127.0.0.1:5000".into());
    Ok(Plan {
        lab: topo.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        ip,
        prefix,
        iface: iface.to_string(),
        to_port,
        mac,
        api,
        drain_timeout_ms: 0,
        server_args: Vec::new(),
    })
}

/// Arguments that make the new process serve like the old one (frame rate, frame size).
pub fn server_args_from_status(status: &Value) -> Vec<String> {
    let mut args = Vec::new();
    for (key, flag) in [("fps", "--fps"), ("frame_size", "--frame-size")] {
        if let Some(n) = status[key].as_u64() {
            args.extend([flag.to_string(), n.to_string()]);
        }
    }
    for (key, flag) in [
        ("signaling_addr", "--signaling-addr"),
        ("metrics_addr", "--metrics-addr"),
    ] {
        if let Some(s) = status[key].as_str() {
            args.extend([flag.to_string(), s.to_string()]);
        }
    }
    args
}

/// Print one report as a table.
pub fn print_report(r: &MigrationReport) {
    println!(
        "migrated {} -> {}: {} connection(s), state {} bytes",
        r.from, r.to, r.connections, r.state_bytes
    );
    for (name, v) in [
        ("pause/drain", r.pause_drain_ms),
        ("checkpoint", r.checkpoint_ms),
        ("transfer", r.transfer_ms),
        ("restore", r.restore_ms),
        ("switch update", r.switch_update_ms),
        ("resume", r.resume_ms),
        ("freeze (server silent)", r.freeze_ms),
    ] {
        println!("  {name:<24}{v:>9.3} ms");
    }
    println!(
        "  (prepare {:.1} ms before, housekeeping {:.1} ms after)",
        r.prepare_ms, r.post_ms
    );
}

pub fn run(a: MigrateArgs) -> anyhow::Result<()> {
    let path = a
        .topology
        .unwrap_or_else(|| default_example_dir().join("topology.toml"));
    let topo = Topology::load(&path)?;
    let hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    let from = match a.from {
        Some(f) => f,
        None => active_host(&topo.name, &hosts).with_context(|| {
            format!(
                "no active stream-server found in lab '{}' (start one with its control socket at {})",
                topo.name,
                control_socket(&topo.name, "<host>").display()
            )
        })?,
    };
    let to = match a.to {
        Some(t) => t,
        None => {
            let mac_of = |h: &str| {
                topo.host(h)
                    .and_then(|h| h.ifaces.iter().find(|i| i.name == a.iface))
                    .and_then(|i| i.mac.clone())
            };
            let mine = mac_of(&from);
            hosts
                .iter()
                .find(|h| **h != from && mine.is_some() && mac_of(h) == mine)
                .cloned()
                .with_context(|| format!("no other host shares {from}'s MAC; give --to"))?
        }
    };
    let mut plan = plan_from_topology(&topo, &from, &to, &a.ip, &a.iface)?;
    plan.drain_timeout_ms = a.drain_timeout_ms;
    let status = control(
        &control_socket(&plan.lab, &from),
        &json!({"op": "status"}),
        Duration::from_secs(2),
    )?;
    plan.server_args = server_args_from_status(&status);
    let api = control::client::Client::new(&format!("http://{}", plan.api));
    let r = migrate(&plan, &api)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r);
    }
    Ok(())
}
