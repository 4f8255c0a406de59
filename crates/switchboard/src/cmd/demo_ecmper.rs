//! `switchboard demo ecmper`: the ECMP-ER demo (seed 001) on one machine.
//!
//! Builds examples/ecmper (client ns99, nginx servers ns1..ns4 with the VIP 10.0.10.0 on
//! loopback, a switchboard router with the `ecmper` stage), drives the router only through the
//! c4bmv2 controller's REST paths, as the upstream scripts do, and runs:
//! - Demo 1: a connection is open to the VIP, a server is added, a request is sent: with the
//!   XDP agent on the servers the client gets `200 OK`, without it a reset;
//! - Demo 2: ApacheBench against the VIP while servers are added and removed every
//!   `--flap-interval-s`, for each mode (compat, resilient) with and without the agent.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use lab::{Lab, Topology, netns_name};

use super::demo::{DemoArgs, lab_with_switch, which};
use super::lab::{log_path, wait_for_api};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 0);
const SERVERS: [&str; 4] = ["ns1", "ns2", "ns3", "ns4"];
/// Where the demo's web root and nginx state live.
const WWW: &str = "/run/switchboard/ecmp-www";

/// The c4bmv2 REST API: PUT paths, plain-text answers.
struct C4 {
    base: String,
    agent: ureq::Agent,
}

impl C4 {
    fn new(api: &str) -> C4 {
        C4 {
            base: format!("http://{api}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
        }
    }

    /// `PUT path`; a non-2xx answer is an error carrying the switch's text.
    fn put(&self, path: &str) -> anyhow::Result<String> {
        let mut r = self
            .agent
            .put(&format!("{}{path}", self.base))
            .send_empty()
            .with_context(|| format!("PUT {path}"))?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            bail!("PUT {path}: {status} {}", text.trim());
        }
        Ok(text)
    }

    fn server(&self, op: &str, n: usize) -> anyhow::Result<()> {
        self.put(&format!("/{op}/{VIP}/32/10.0.0.{n}"))?;
        self.put("/install")?;
        Ok(())
    }

    /// The reference's base configuration: clear, neighbours for every host, the VIP on ns1.
    fn base(&self) -> anyhow::Result<()> {
        self.put("/clear")?;
        for n in 1..=4 {
            self.put(&format!("/neigh/add/10.0.0.{n}/{n}/02:03:04:05:06:0{n}"))?;
        }
        self.put("/neigh/add/10.0.1.99/0/02:03:04:05:06:99")?;
        self.put(&format!("/add/{VIP}/32/10.0.0.1"))?;
        self.put("/install")?;
        Ok(())
    }
}

/// One ApacheBench run under server flaps.
#[derive(Debug, Clone, Serialize)]
pub struct Demo2Run {
    pub mode: String,
    pub agent: bool,
    pub requests: u64,
    pub failed: u64,
    pub flap_interval_s: f64,
    /// Server-set changes made during the run.
    pub changes: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    /// ApacheBench stopped early on a request that stalled past its 10 s timeout.
    pub aborted: bool,
}

fn write_www() -> anyhow::Result<()> {
    std::fs::create_dir_all(WWW)?;
    std::fs::write(Path::new(WWW).join("10B.txt"), b"1234567890\n")?;
    for (name, mib) in [("1m.img", 1usize), ("4m.img", 4)] {
        let p = Path::new(WWW).join(name);
        if std::fs::metadata(&p).map(|m| m.len()).ok() != Some((mib << 20) as u64) {
            let data: Vec<u8> = (0..mib << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
            std::fs::write(&p, data)?;
        }
    }
    Ok(())
}

/// nginx in server `host`: one worker on the VIP, state under /run/switchboard.
fn start_nginx(lab: &Lab, host: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(format!("/run/switchboard/{}-nginx-{host}", lab.name()));
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 sendfile on;\n  keepalive_timeout 5;\n\
         \x20 server {{ listen {VIP}:80; root {WWW}; }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let log = std::fs::File::create(dir.join("stdout.log"))?;
    let mut cmd = lab.command(host)?;
    cmd.arg("nginx")
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = cmd.spawn().context("starting nginx")?;
    lab.adopt(child, &format!("{host}: nginx"))?;
    Ok(())
}

/// Attach or detach the XDP agent on every server's eth0.
fn agent(lab: &Lab, attach: bool, marker: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    for host in SERVERS {
        let ns = netns_name(lab.name(), host);
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["er-agent", if attach { "attach" } else { "detach" }])
            .args(["--netns", &ns, "--iface", "eth0"]);
        if attach {
            cmd.args(["--marker", marker]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "er-agent {} on {host}: {}",
                if attach { "attach" } else { "detach" },
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Demo 1's client: a TCP connection from ns99 port 8081 to the VIP.
fn connect_from_client(lab: &Lab, port: u16) -> anyhow::Result<TcpStream> {
    let ns = netns_name(lab.name(), "ns99");
    let open = || -> std::io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 99), port).into())?;
        s.connect_timeout(&SocketAddrV4::new(VIP, 80).into(), Duration::from_secs(3))?;
        Ok(TcpStream::from(s))
    };
    xdp::netns::in_netns(&ns, || Ok(open()))
        .map_err(|e| anyhow::anyhow!("entering {ns}: {e}"))?
        .with_context(|| format!("connecting from ns99:{port} to {VIP}:80"))
}

/// Send the request on an open connection: "200", another status, or "reset".
fn request(mut s: TcpStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(b"GET /10B.txt HTTP/1.0\r\n\r\n").is_err() {
        return "reset".into();
    }
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) | Err(_) if !buf.is_empty() => String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)
            .unwrap_or("garbage")
            .to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "timeout".into(),
        Err(e) => format!("error: {e}"),
        Ok(_) => "closed".into(),
    }
}

/// Demo 1 once: VIP on ns1, connection open, ns2 added, request sent.
fn demo1_once(lab: &Lab, c4: &C4) -> anyhow::Result<String> {
    c4.base()?;
    let s = connect_from_client(lab, 8081)?;
    c4.server("add", 2)?;
    Ok(request(s))
}

/// ApacheBench in ns99 while a flapper thread changes the server set.
fn demo2_once(
    lab: &Lab,
    c4: &Arc<C4>,
    a: &DemoArgs,
    mode: &str,
    with_agent: bool,
) -> anyhow::Result<Demo2Run> {
    c4.base()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = {
        let (stop, c4) = (stop.clone(), c4.clone());
        let every = Duration::from_secs_f64(a.flap_interval_s);
        std::thread::spawn(move || -> anyhow::Result<u64> {
            // Upstream's ecmper-config-adddel.sh: add .2, .3, .4, then delete .4, .3, .2.
            let steps = [
                ("add", 2),
                ("add", 3),
                ("add", 4),
                ("del", 4),
                ("del", 3),
                ("del", 2),
            ];
            let mut changes = 0u64;
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    let (op, n) = steps[changes as usize % steps.len()];
                    c4.server(op, n)?;
                    changes += 1;
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(changes)
        })
    };
    let t0 = Instant::now();
    let url = format!("http://{VIP}/{}", a.file);
    let out = lab.exec(
        "ns99",
        &[
            "ab",
            "-r",
            "-s",
            "10",
            "-n",
            &a.requests.to_string(),
            "-c",
            &a.concurrency.to_string(),
            &url,
        ],
    );
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let changes = flapper
        .join()
        .map_err(|_| anyhow::anyhow!("flapper panicked"))??;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    // ab gives up on the whole run when one request stalls past `-s` ("Total of N requests
    // completed", no summary): the rest count as failed.
    let aborted = field("Complete requests").is_none();
    let complete = match field("Complete requests") {
        Some(n) => n,
        None => format!("{text}\n{}", String::from_utf8_lossy(&out.stderr))
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Total of ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .with_context(|| {
                format!(
                    "ab printed no summary: {}{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                )
            })?,
    };
    let failed = field("Failed requests").unwrap_or(0);
    // Requests ab gave up on (timeouts, resets before completion) count as failed too.
    let failed = failed + a.requests.saturating_sub(complete);
    Ok(Demo2Run {
        mode: mode.to_string(),
        agent: with_agent,
        requests: a.requests,
        failed,
        flap_interval_s: a.flap_interval_s,
        changes,
        seconds,
        requests_per_s: complete as f64 / seconds,
        aborted,
    })
}

/// The example's switch config with the stage mode set, written next to the run files.
fn config_for_mode(example: &Path, lab: &str, mode: &str) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(example.join("switch.toml"))?;
    let mut doc: toml::Table = toml::from_str(&text)?;
    let stage = doc
        .entry("stage")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let ecmper = stage
        .as_table_mut()
        .context("[stage] is not a table")?
        .entry("ecmper")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    ecmper
        .as_table_mut()
        .context("[stage.ecmper] is not a table")?
        .insert("mode".into(), toml::Value::String(mode.into()));
    std::fs::create_dir_all("/run/switchboard")?;
    let out = PathBuf::from(format!("/run/switchboard/{lab}-switch-{mode}.toml"));
    std::fs::write(&out, toml::to_string(&doc)?)?;
    Ok(out)
}

pub fn run(a: &DemoArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo builds network namespaces and needs root (try: sudo switchboard demo ecmper)"
        );
    }
    for tool in ["ip", "ethtool", "nginx", "ab"] {
        if which(tool).is_none() {
            bail!("'{tool}' is not installed; run scripts/ensure-deps.sh");
        }
    }
    let example = a
        .example
        .clone()
        .unwrap_or_else(|| super::demo::example_dir("ecmper"));
    let base_topo = Topology::load(example.join("topology.toml"))?;
    write_www()?;
    println!("switchboard demo: ECMP-ER (seed 001), one machine");
    println!(
        "  Demo 2: ab -r -n {} -c {} http://{VIP}/{} while a server is added or removed every {} s",
        a.requests, a.concurrency, a.file, a.flap_interval_s
    );

    let mut demo1 = json!({});
    let mut runs: Vec<Demo2Run> = Vec::new();
    for mode in ["compat", "resilient"] {
        let mut topo = base_topo.clone();
        if let Some(sw) = topo.switches.first_mut() {
            sw.config = Some(config_for_mode(&example, &base_topo.name, mode)?);
        }
        println!("\n[{mode} mode] lab up");
        let (lab, sw, api) = lab_with_switch(&topo)?;
        let res = (|| -> anyhow::Result<()> {
            wait_for_api(
                &api,
                Duration::from_secs(15),
                &log_path(&topo.name, &sw.name),
            )?;
            for host in SERVERS {
                start_nginx(&lab, host)?;
            }
            std::thread::sleep(Duration::from_millis(300));
            let c4 = Arc::new(C4::new(&api));
            let marker = if mode == "compat" { "compat" } else { "dscp" };
            if mode == "compat" {
                // The paper's Demo 1: 10.0.1.99:8081 -> VIP hashes to index 4 once .2 is
                // added, which is ns2; the previous generation says ns1.
                let without = demo1_once(&lab, &c4)?;
                println!("  Demo 1 without the agent: {without}");
                agent(&lab, true, marker)?;
                let with = demo1_once(&lab, &c4)?;
                println!("  Demo 1 with the agent:    {with}");
                agent(&lab, false, marker)?;
                demo1 = json!({"without_agent": without, "with_agent": with});
            }
            for with_agent in [false, true] {
                if with_agent {
                    agent(&lab, true, marker)?;
                }
                let r = demo2_once(&lab, &c4, a, mode, with_agent)?;
                println!(
                    "  Demo 2, agent {:<3}: {:>5} failed of {} ({} server changes in {:.1} s, {:.0} req/s){}",
                    if with_agent { "on" } else { "off" },
                    r.failed,
                    r.requests,
                    r.changes,
                    r.seconds,
                    r.requests_per_s,
                    if r.aborted {
                        "; ab stopped on a stalled request"
                    } else {
                        ""
                    }
                );
                runs.push(r);
                if with_agent {
                    agent(&lab, false, marker)?;
                }
            }
            Ok(())
        })();
        let down = lab.down();
        res?;
        down?;
    }

    println!("\nsummary (upstream, bmv2, 4 s flaps: 120 of 360 failed without the agent, 0 with)");
    println!(
        "  {:<10}{:<7}{:>9}{:>8}{:>9}{:>10}",
        "mode", "agent", "requests", "failed", "changes", "req/s"
    );
    for r in &runs {
        println!(
            "  {:<10}{:<7}{:>9}{:>8}{:>9}{:>10.0}",
            r.mode,
            if r.agent { "on" } else { "off" },
            r.requests,
            r.failed,
            r.changes,
            r.requests_per_s
        );
    }
    if let Some(j) = &a.json {
        let v = json!({"demo1": demo1, "demo2": runs});
        std::fs::write(j, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", j.display()))?;
        println!("  wrote {}", j.display());
    }
    Ok(())
}
