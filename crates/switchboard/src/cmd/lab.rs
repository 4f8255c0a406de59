//! `switchboard lab up|down|exec|status`: namespace labs from a topology file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lab::{Lab, LabOptions, PortBinding, SwitchLauncher, SwitchSpec, Topology};

#[derive(clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    cmd: LabCommand,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Build a topology (namespaces, veth links, addresses, switches, processes) and leave it running.
    Up {
        topology: PathBuf,
        /// Remove a lab of the same name first instead of failing.
        #[arg(long)]
        replace: bool,
    },
    /// Remove everything of a lab, also after a crash: by lab name or topology file.
    Down { lab: String },
    /// Run a command inside a host of a lab: `lab exec p4cf client -- ping 192.168.12.2`.
    Exec {
        /// Lab name or topology file.
        lab: String,
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Show what exists of a lab now.
    Status { lab: String },
}

/// A lab name from either a name or a topology file path.
fn lab_name(arg: &str) -> anyhow::Result<String> {
    let p = Path::new(arg);
    if p.is_file() {
        Ok(Topology::load(p)?.name)
    } else {
        Ok(arg.to_string())
    }
}

pub fn run(a: LabArgs) -> anyhow::Result<()> {
    match a.cmd {
        LabCommand::Up { topology, replace } => {
            let topo = Topology::load(&topology)?;
            let lab = Lab::up(
                &topo,
                LabOptions {
                    replace,
                    switch_launcher: Some(switch_launcher(&topo.name)),
                    skip_processes: false,
                },
            )?;
            for sw in &topo.switches {
                if let Some(api) = &sw.api {
                    wait_for_api(
                        api,
                        Duration::from_secs(15),
                        &log_path(&topo.name, &sw.name),
                    )?;
                    println!("switch {} up, REST API at http://{api}", sw.name);
                }
            }
            println!("{}", lab.status()?);
            println!(
                "lab '{}' is up; remove it with: switchboard lab down {}",
                topo.name, topo.name
            );
            lab.keep();
            Ok(())
        }
        LabCommand::Down { lab } => {
            let name = lab_name(&lab)?;
            let n = lab::down_by_name(&name)?;
            println!("lab '{name}': removed {n} items");
            Ok(())
        }
        LabCommand::Exec { lab, node, cmd } => {
            let name = lab_name(&lab)?;
            let ns = lab::netns_name(&name, &node);
            if !Path::new("/run/netns").join(&ns).exists() {
                bail!("lab '{name}' has no host '{node}' running (no namespace {ns})");
            }
            let status = Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&cmd)
                .status()
                .context("running ip netns exec")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        LabCommand::Status { lab } => {
            println!("{}", lab::status_by_name(&lab_name(&lab)?)?);
            Ok(())
        }
    }
}

/// Where a lab switch's effective config and log go.
pub fn run_dir() -> PathBuf {
    PathBuf::from(lab::STATE_DIR)
}

pub fn log_path(lab: &str, switch: &str) -> PathBuf {
    run_dir().join(format!("{lab}-{switch}.log"))
}

/// Write a switch config whose ports point at the lab's interfaces and whose API
/// listens where the topology says; returns its path.
pub fn effective_config(
    lab: &str,
    spec: &SwitchSpec,
    ports: &BTreeMap<u16, PortBinding>,
) -> anyhow::Result<PathBuf> {
    let src = spec
        .config
        .as_ref()
        .with_context(|| format!("switch '{}' has no config file in the topology", spec.name))?;
    let text =
        std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    // Check it first so errors name the original file and line.
    dataplane::SwitchConfig::parse(&text, src)?;
    let mut doc: toml::Table = toml::from_str(&text)?;
    if let Some(toml::Value::Array(list)) = doc.get_mut("port") {
        for p in list.iter_mut() {
            let Some(t) = p.as_table_mut() else { continue };
            let id = t.get("id").and_then(toml::Value::as_integer).unwrap_or(-1);
            if let Some(b) = u16::try_from(id).ok().and_then(|id| ports.get(&id)) {
                t.insert("iface".into(), toml::Value::String(b.iface.clone()));
                if let Some(ns) = &b.netns {
                    // The lab made the TAP (persistent, in the host's namespace): attach to it.
                    t.insert("backend".into(), toml::Value::String("tap".into()));
                    t.insert("create".into(), toml::Value::Boolean(false));
                    t.insert("netns".into(), toml::Value::String(ns.clone()));
                    t.remove("ring");
                    t.remove("keep_kernel_stack");
                }
            }
            // pcap paths stay relative to the original file.
            for key in ["input", "output"] {
                if let Some(toml::Value::String(f)) = t.get(key) {
                    let abs = src.parent().unwrap_or(Path::new(".")).join(f);
                    t.insert(key.into(), toml::Value::String(abs.display().to_string()));
                }
            }
        }
    }
    if let Some(api) = &spec.api {
        let mut t = toml::Table::new();
        t.insert("listen".into(), toml::Value::String(api.clone()));
        doc.insert("api".into(), toml::Value::Table(t));
    }
    std::fs::create_dir_all(run_dir())?;
    let out = run_dir().join(format!("{lab}-{}.toml", spec.name));
    std::fs::write(&out, toml::to_string(&doc)?)?;
    Ok(out)
}

/// Starts `switchboard run` for each switch node of a lab, logging to /run/switchboard.
pub fn switch_launcher(lab: &str) -> SwitchLauncher {
    let lab = lab.to_string();
    Box::new(
        move |spec: &SwitchSpec, ports: &BTreeMap<u16, PortBinding>| {
            start_switch(&lab, spec, ports, &[]).map_err(|e| lab::LabError::Launch {
                switch: spec.name.clone(),
                message: format!("{e:#}"),
            })
        },
    )
}

/// Start one switch process for a lab node, with extra `run` arguments.
pub fn start_switch(
    lab: &str,
    spec: &SwitchSpec,
    ports: &BTreeMap<u16, PortBinding>,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let cfg = effective_config(lab, spec, ports)?;
    let log = std::fs::File::create(log_path(lab, &spec.name))?;
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Wait until a switch's REST API answers, or fail with the tail of its log.
pub fn wait_for_api(api: &str, timeout: Duration, log: &Path) -> anyhow::Result<()> {
    let c = control::client::Client::new(&format!("http://{api}"));
    let t0 = Instant::now();
    loop {
        if c.pipeline().is_ok() {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the switch's API at {api} did not answer within {timeout:?}; its log ({}):\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
