//! A running lab: builds a [`Topology`] with namespaces, veth links, addresses, routes,
//! neighbours and processes, and always tears it down again.
//!
//! Where things live:
//! - each host is a namespace `sb-<lab>-<host>` holding its interfaces;
//! - switch ports are veth ends in the **root** namespace (named by
//!   [`Topology::switch_port_ifaces`]), and the switch process runs in the root namespace too, so
//!   its REST API (`api`, e.g. 127.0.0.1:5000) is reachable from the root namespace without any
//!   forwarding, and AF_PACKET/AF_XDP ports open the interfaces by name directly;
//! - host-to-host links are created directly between the two namespaces.
//!
//! A state file `/run/switchboard/lab-<name>.json` lists namespaces, root-namespace links and
//! processes as they are created, so [`down_by_name`] in another process removes everything
//! after a crash. Without a state file it falls back to the name prefixes `sb-<lab>-`
//! (namespaces) and `sb<lab>-` (root-namespace links), which lab names cannot make ambiguous.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::sys::{self, ProcRecord};
use crate::topology::{
    Endpoint, HostSpec, IfaceSpec, SwitchSpec, Topology, check_lab_name, link_prefix, netns_name,
    netns_prefix,
};

/// Directory holding one state file per running lab.
pub const STATE_DIR: &str = "/run/switchboard";

/// How long processes get between SIGTERM and SIGKILL at teardown.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Starts a switch process given its spec and how each of its ports is backed. The binary
/// supplies this so the lab crate does not depend on the switch's config format.
pub type SwitchLauncher =
    Box<dyn Fn(&SwitchSpec, &BTreeMap<u16, crate::PortBinding>) -> Result<Child>>;

/// Options for [`Lab::up`].
#[derive(Default)]
pub struct LabOptions {
    /// Tear down an existing lab of the same name first instead of failing.
    pub replace: bool,
    /// Starts each switch node once all links are up. Without it switch ports are created but
    /// no switch process runs.
    pub switch_launcher: Option<SwitchLauncher>,
    /// Do not start the topology's `[[process]]` entries (callers start their own).
    pub skip_processes: bool,
}

impl fmt::Debug for LabOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabOptions")
            .field("replace", &self.replace)
            .field("switch_launcher", &self.switch_launcher.is_some())
            .field("skip_processes", &self.skip_processes)
            .finish()
    }
}

/// What the lab created, persisted so a later `down` can undo it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LabState {
    name: String,
    namespaces: Vec<String>,
    links: Vec<String>,
    procs: Vec<ProcRecord>,
}

/// Path of a lab's state file.
pub fn state_path(lab: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("lab-{lab}.json"))
}

fn read_state(lab: &str) -> Result<Option<LabState>> {
    let path = state_path(lab);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::State {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LabError::State {
            path,
            message: e.to_string(),
        }),
    }
}

fn write_state(state: &LabState) -> Result<()> {
    let path = state_path(&state.name);
    let err = |e: &dyn fmt::Display| LabError::State {
        path: path.clone(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(STATE_DIR).map_err(|e| err(&e))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).map_err(|e| err(&e))?;
    std::fs::write(&tmp, text).map_err(|e| err(&e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&e))
}

/// A running lab. Dropping it tears everything down (processes by PID, root-namespace links,
/// namespaces, the state file); use [`Lab::down`] to see teardown errors.
pub struct Lab {
    topo: Topology,
    name: String,
    inner: Mutex<Inner>,
}

/// Mutable part of a lab, behind a mutex so `spawn` works through `&Lab` from any thread.
struct Inner {
    state: LabState,
    children: Vec<Child>,
    torn_down: bool,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Lab")
            .field("name", &self.name)
            .field("namespaces", &inner.state.namespaces)
            .field("links", &inner.state.links)
            .field("procs", &inner.state.procs)
            .finish()
    }
}

/// Everything a lab currently has in the system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// The state file, if present.
    pub state_file: Option<PathBuf>,
    /// Existing namespaces with the lab's prefix.
    pub namespaces: Vec<String>,
    /// Existing root-namespace links with the lab's prefix, with operational state.
    pub links: Vec<(String, String)>,
    /// Recorded processes and whether each is still running.
    pub processes: Vec<ProcStatus>,
}

/// One recorded process in a [`LabStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// Process id.
    pub pid: u32,
    /// What it is.
    pub what: String,
    /// Still running.
    pub alive: bool,
}

impl LabStatus {
    /// True when nothing of the lab exists.
    pub fn is_empty(&self) -> bool {
        self.state_file.is_none()
            && self.namespaces.is_empty()
            && self.links.is_empty()
            && self.processes.iter().all(|p| !p.alive)
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "lab {}: down (nothing exists)", self.name);
        }
        match &self.state_file {
            Some(p) => writeln!(f, "lab {}: up (state {})", self.name, p.display())?,
            None => writeln!(f, "lab {}: leftovers without a state file", self.name)?,
        }
        writeln!(f, "  namespaces ({}):", self.namespaces.len())?;
        for n in &self.namespaces {
            writeln!(f, "    {n}")?;
        }
        writeln!(f, "  root-namespace links ({}):", self.links.len())?;
        for (n, s) in &self.links {
            writeln!(f, "    {n} {s}")?;
        }
        writeln!(f, "  processes ({}):", self.processes.len())?;
        for p in &self.processes {
            let s = if p.alive { "running" } else { "gone" };
            writeln!(f, "    {} {} ({s})", p.pid, p.what)?;
        }
        Ok(())
    }
}

/// Namespace names, and root-namespace link names with their operational state.
type Found = (Vec<String>, Vec<(String, String)>);

/// Namespaces and root-namespace links that carry the lab's prefixes.
fn find_by_prefix(lab: &str) -> Result<Found> {
    let np = netns_prefix(lab);
    let lp = link_prefix(lab);
    let mut ns: Vec<String> = sys::list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(&np))
        .collect();
    ns.sort();
    let mut links: Vec<(String, String)> = sys::list_root_links()?
        .into_iter()
        .filter(|(n, _)| n.starts_with(&lp))
        .collect();
    links.sort();
    Ok((ns, links))
}

/// What exists of lab `lab` now: state file, namespaces, links and recorded processes.
pub fn lab_status(lab: &str) -> Result<LabStatus> {
    check_name_arg(lab)?;
    let state = read_state(lab).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring unreadable state file");
        None
    });
    let (namespaces, links) = find_by_prefix(lab)?;
    let processes = state
        .as_ref()
        .map(|s| {
            s.procs
                .iter()
                .map(|p| ProcStatus {
                    pid: p.pid,
                    what: p.what.clone(),
                    alive: p.alive(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LabStatus {
        name: lab.to_string(),
        state_file: state.map(|_| state_path(lab)),
        namespaces,
        links,
        processes,
    })
}

/// [`lab_status`] as text, for `switchboard lab status`.
pub fn status_by_name(lab: &str) -> Result<String> {
    Ok(lab_status(lab)?.to_string())
}

/// Removes everything of lab `lab`: kills recorded processes (checking PIDs were not reused)
/// and any process inside its namespaces, deletes its root-namespace links and namespaces, and
/// the state file. Works after a crash, with or without the state file. Returns how many
/// processes, links and namespaces it removed.
pub fn down_by_name(lab: &str) -> Result<usize> {
    check_name_arg(lab)?;
    let state = match read_state(lab) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "state file unreadable; removing by name prefix");
            None
        }
    };
    let state = state.unwrap_or_else(|| LabState {
        name: lab.to_string(),
        ..LabState::default()
    });
    remove_all(&state, &mut [])
}

/// Shared teardown: processes, then links, then namespaces, then the state file. Collects every
/// failure instead of stopping at the first, so one stuck item does not leave the rest behind.
fn remove_all(state: &LabState, children: &mut [Child]) -> Result<usize> {
    let lab = state.name.as_str();
    let mut problems = Vec::new();
    let mut removed = sys::terminate(&state.procs, children, KILL_GRACE);

    let (found_ns, found_links) = match find_by_prefix(lab) {
        Ok(v) => v,
        Err(e) => {
            problems.push(e.to_string());
            Default::default()
        }
    };
    let mut namespaces: Vec<String> = state.namespaces.clone();
    for n in found_ns {
        if !namespaces.contains(&n) {
            namespaces.push(n);
        }
    }
    let existing_ns = sys::list_netns().unwrap_or_default();
    namespaces.retain(|n| existing_ns.contains(n));

    // Anything still running inside the lab's namespaces is the lab's.
    let strays: Vec<ProcRecord> = namespaces
        .iter()
        .flat_map(|ns| {
            sys::netns_pids(ns).into_iter().map(move |pid| ProcRecord {
                pid,
                start_time: sys::start_time(pid),
                group: false,
                what: format!("process in {ns}"),
            })
        })
        .collect();
    removed += sys::terminate(&strays, &mut [], KILL_GRACE);

    let existing_links: Vec<String> = sys::list_root_links()
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut links: Vec<String> = state.links.clone();
    for (n, _) in found_links {
        if !links.contains(&n) {
            links.push(n);
        }
    }
    for l in links.iter().filter(|l| existing_links.contains(l)) {
        match sys::ip(&format!("lab `{lab}` link {l}"), &["link", "del", "dev", l]) {
            Ok(_) => removed += 1,
            // Deleting one veth end removes its peer; a peer listed after it is already gone.
            Err(e) => {
                if sys::list_root_links()
                    .unwrap_or_default()
                    .iter()
                    .any(|(n, _)| n == l)
                {
                    problems.push(e.to_string());
                }
            }
        }
    }
    for ns in &namespaces {
        match sys::ip(
            &format!("lab `{lab}` namespace {ns}"),
            &["netns", "del", ns],
        ) {
            Ok(_) => removed += 1,
            Err(e) => problems.push(e.to_string()),
        }
    }
    let path = state_path(lab);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", path.display()));
    }
    if problems.is_empty() {
        tracing::info!(lab, removed, "lab down");
        Ok(removed)
    } else {
        Err(LabError::Teardown {
            lab: lab.to_string(),
            problems,
        })
    }
}

/// Rejects names that are not lab names, so a typo cannot widen the prefix match (an empty
/// name would match every `sb-` link).
fn check_name_arg(lab: &str) -> Result<()> {
    check_lab_name(lab).map_err(|message| LabError::Invalid {
        location: "<argument>".into(),
        field: "lab name".into(),
        message,
    })
}

/// Fails with [`LabError::AlreadyUp`] when anything of lab `lab` exists.
fn check_not_up(lab: &str) -> Result<()> {
    let path = state_path(lab);
    let what = if path.exists() {
        Some(format!("state file {}", path.display()))
    } else {
        let (ns, links) = find_by_prefix(lab)?;
        ns.first()
            .map(|n| format!("namespace {n}"))
            .or_else(|| links.first().map(|(l, _)| format!("link {l}")))
    };
    match what {
        Some(what) => Err(LabError::AlreadyUp {
            name: lab.to_string(),
            what,
        }),
        None => Ok(()),
    }
}

impl Lab {
    /// Builds the topology: namespaces, links, addresses, routes, neighbours, then switches
    /// (through the launcher) and processes. On any failure it tears down what it built and
    /// returns the first error.
    pub fn up(topo: &Topology, opts: LabOptions) -> Result<Lab> {
        topo.validate()?;
        if !sys::is_root() {
            return Err(LabError::NeedsRoot);
        }
        if opts.replace {
            down_by_name(&topo.name)?;
        } else {
            check_not_up(&topo.name)?;
        }
        let lab = Lab {
            topo: topo.clone(),
            name: topo.name.clone(),
            inner: Mutex::new(Inner {
                state: LabState {
                    name: topo.name.clone(),
                    ..LabState::default()
                },
                children: Vec::new(),
                torn_down: false,
            }),
        };
        if let Err(e) = lab.build(&opts) {
            tracing::warn!(lab = %topo.name, error = %e, "lab up failed; tearing down");
            if let Err(t) = lab.teardown() {
                tracing::warn!(error = %t, "teardown after failed up");
            }
            return Err(e);
        }
        tracing::info!(lab = %topo.name, "lab up");
        Ok(lab)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a namespace or root-namespace link *before* creating it, so a crash in between
    /// still leaves a trace for `down`.
    fn note(&self, f: impl FnOnce(&mut LabState)) -> Result<()> {
        let mut inner = self.lock();
        f(&mut inner.state);
        write_state(&inner.state)
    }

    fn build(&self, opts: &LabOptions) -> Result<()> {
        self.note(|_| ())?;
        let topo = &self.topo;
        let name = topo.name.as_str();
        let ipv6 = sys::ipv6_present();

        for h in &topo.hosts {
            let ns = netns_name(name, &h.name);
            let ctx = format!("host `{}`", h.name);
            self.note(|s| s.namespaces.push(ns.clone()))?;
            sys::ip(&ctx, &["netns", "add", &ns])?;
            sys::ip(&ctx, &["-n", &ns, "link", "set", "dev", "lo", "up"])?;
            for (k, v) in &h.sysctl {
                let kv = format!("{k}={v}");
                sys::run_in(&ns, &ctx, "sysctl", &["-q", "-w", &kv])?;
            }
        }

        for (i, l) in topo.links.iter().enumerate() {
            let ctx = format!("link[{i}] {} <-> {}", l.a, l.b);
            let (Some(a), Some(b)) = (topo.endpoint(&l.a), topo.endpoint(&l.b)) else {
                // validate() guarantees both resolve.
                return Err(LabError::Invalid {
                    location: "<topology>".into(),
                    field: format!("link[{i}]"),
                    message: "endpoint does not resolve".into(),
                });
            };
            if l.kind == crate::LinkKind::Tap {
                self.add_tap_link(topo, i, a, b, ipv6)?;
                continue;
            }
            let end_a = end_args(topo, a);
            let end_b = end_args(topo, b);
            self.note(|s| {
                s.links.extend(
                    end_a
                        .root_name
                        .iter()
                        .chain(end_b.root_name.iter())
                        .cloned(),
                )
            })?;
            let mut args: Vec<&str> = vec!["link", "add", "name", &end_a.name];
            if let Some(ns) = &end_a.ns {
                args.extend(["netns", ns.as_str()]);
            }
            args.extend(["type", "veth", "peer", "name", &end_b.name]);
            if let Some(ns) = &end_b.ns {
                args.extend(["netns", ns.as_str()]);
            }
            sys::ip(&ctx, &args)?;
            for (end, ep) in [(&end_a, a), (&end_b, b)] {
                let iface = match ep {
                    Endpoint::Host { host, iface } => topo
                        .host(host)
                        .and_then(|h| h.ifaces.iter().find(|x| x.name == iface)),
                    Endpoint::Switch { .. } => None,
                };
                configure_end(end, iface, l.mtu, ipv6)?;
            }
        }

        for h in &topo.hosts {
            configure_routes(&netns_name(name, &h.name), h)?;
        }
        let base = topo
            .source_path()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        for h in &topo.hosts {
            run_setup(&netns_name(name, &h.name), h, base)?;
        }

        if let Some(launch) = &opts.switch_launcher {
            for s in &topo.switches {
                let map = topo.switch_ports(&s.name)?;
                let child = launch(s, &map)?;
                self.record_child(child, false, format!("switch {}", s.name))?;
            }
        }

        if !opts.skip_processes && !topo.processes.is_empty() {
            let mut pids = Vec::new();
            for (i, p) in topo.processes.iter().enumerate() {
                let mut cmd = self.command(&p.node)?;
                cmd.args(&p.cmd).envs(&p.env);
                match &p.log {
                    Some(log) => {
                        let open = || {
                            OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(log)
                                .map_err(|source| LabError::Read {
                                    path: log.clone(),
                                    source,
                                })
                        };
                        cmd.stdout(open()?).stderr(open()?);
                    }
                    None => {
                        cmd.stdout(Stdio::null()).stderr(Stdio::null());
                    }
                }
                let what = format!("process[{i}] {}: {}", p.node, p.cmd.join(" "));
                pids.push(self.spawn_recorded(cmd, what)?);
            }
            // A command that is not found or dies at once is a topology error worth reporting.
            std::thread::sleep(Duration::from_millis(100));
            let mut inner = self.lock();
            for c in inner.children.iter_mut() {
                let Some(i) = pids.iter().position(|&p| p == c.id()) else {
                    continue;
                };
                if let Ok(Some(status)) = c.try_wait() {
                    let p = &topo.processes[i];
                    return Err(LabError::Command {
                        command: p.cmd.join(" "),
                        context: format!("process[{i}] on host `{}`", p.node),
                        status: status.to_string(),
                        stderr: "exited right after start (see its log)".into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn record_child(&self, child: Child, group: bool, what: String) -> Result<u32> {
        let pid = child.id();
        let rec = ProcRecord {
            pid,
            start_time: sys::start_time(pid),
            group,
            what,
        };
        let mut inner = self.lock();
        inner.children.push(child);
        inner.state.procs.push(rec);
        write_state(&inner.state)?;
        Ok(pid)
    }

    fn spawn_recorded(&self, mut cmd: Command, what: String) -> Result<u32> {
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: format!("{cmd:?}"),
            context: what.clone(),
            source,
        })?;
        self.record_child(child, true, what)
    }

    /// Lab name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topology this lab was built from.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Namespace name of host `node`.
    pub fn netns(&self, node: &str) -> Result<String> {
        if self.topo.host(node).is_none() {
            return Err(LabError::NoSuchNode {
                lab: self.name.clone(),
                kind: "host",
                node: node.to_string(),
            });
        }
        Ok(netns_name(&self.name, node))
    }

    /// `ip netns exec <ns>` prefilled for host `node`: add the program and its arguments.
    pub fn command(&self, node: &str) -> Result<Command> {
        let ns = self.netns(node)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]);
        Ok(c)
    }

    /// Runs `argv` inside host `node` and waits; the caller judges the exit status.
    pub fn exec(&self, node: &str, argv: &[&str]) -> Result<Output> {
        let mut c = self.command(node)?;
        c.args(argv).stdin(Stdio::null());
        c.output().map_err(|source| LabError::Spawn {
            command: argv.join(" "),
            context: format!("host `{node}`"),
            source,
        })
    }

    /// Like [`Lab::exec`] but a non-zero exit is an error carrying stderr; returns stdout.
    pub fn exec_ok(&self, node: &str, argv: &[&str]) -> Result<String> {
        let ns = self.netns(node)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(LabError::Spawn {
                command: String::new(),
                context: format!("host `{node}`"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
            });
        };
        sys::run_in(&ns, &format!("host `{node}`"), program, args)
    }

    /// Starts `argv` in the background inside host `node` (own process group, output
    /// discarded); teardown kills it, even from another process after a crash. Returns its PID.
    pub fn spawn(&self, node: &str, argv: &[&str]) -> Result<u32> {
        let mut c = self.command(node)?;
        c.args(argv).stdout(Stdio::null()).stderr(Stdio::null());
        self.spawn_recorded(c, format!("{node}: {}", argv.join(" ")))
    }

    /// Records a process the caller started (e.g. a switch started after `up`) so teardown
    /// kills it like its own. Returns its PID.
    pub fn adopt(&self, child: Child, what: &str) -> Result<u32> {
        self.record_child(child, false, what.to_string())
    }

    /// PIDs of every process the lab started or adopted, with what each is.
    pub fn pids(&self) -> Vec<(u32, String)> {
        self.lock()
            .state
            .procs
            .iter()
            .map(|p| (p.pid, p.what.clone()))
            .collect()
    }

    /// Port number -> root-namespace interface name of switch `switch`, to write the switch
    /// config's port backends.
    pub fn switch_port_ifaces(&self, switch: &str) -> Result<BTreeMap<u16, String>> {
        self.topo.switch_port_ifaces(switch)
    }

    /// What exists of this lab now.
    pub fn status(&self) -> Result<LabStatus> {
        lab_status(&self.name)
    }

    /// Leaves the lab running after this handle is gone (`switchboard lab up`): its
    /// processes keep running and [`down_by_name`] removes it later from the state file.
    pub fn keep(self) {
        let mut inner = self.lock();
        inner.torn_down = true;
        // The children run on; their handles are released without waiting.
        inner.children.clear();
    }

    /// Tears the lab down, reporting anything left behind.
    pub fn down(self) -> Result<()> {
        self.teardown().map(|_| ())
    }

    fn teardown(&self) -> Result<usize> {
        let mut inner = self.lock();
        if inner.torn_down {
            return Ok(0);
        }
        inner.torn_down = true;
        let Inner {
            state, children, ..
        } = &mut *inner;
        remove_all(state, children)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "lab teardown on drop");
        }
    }
}

/// How one end of a link is created and named.
fn end_args(topo: &Topology, ep: Endpoint<'_>) -> EndArgs {
    match ep {
        Endpoint::Host { host, iface } => EndArgs {
            name: iface.to_string(),
            ns: Some(netns_name(&topo.name, host)),
            root_name: None,
            ctx: format!("host `{host}` iface {iface}"),
        },
        Endpoint::Switch { switch, port } => {
            let n = topo.switch_iface(switch, port);
            EndArgs {
                name: n.clone(),
                ns: None,
                root_name: Some(n.clone()),
                ctx: format!("switch `{switch}` port {port} ({n})"),
            }
        }
    }
}

impl Lab {
    /// A tap link: a persistent TAP in the host's namespace, configured like a veth end; the
    /// switch attaches to it from there. It goes away with the namespace.
    fn add_tap_link(
        &self,
        topo: &Topology,
        index: usize,
        a: Endpoint<'_>,
        b: Endpoint<'_>,
        ipv6: bool,
    ) -> Result<()> {
        let (host, iface) = match (a, b) {
            (Endpoint::Host { host, iface }, _) | (_, Endpoint::Host { host, iface }) => {
                (host, iface)
            }
            _ => {
                return Err(LabError::Invalid {
                    location: "<topology>".into(),
                    field: format!("link[{index}]"),
                    message: "a tap link joins one host iface and one switch port".into(),
                });
            }
        };
        let end = EndArgs {
            name: iface.to_string(),
            ns: Some(netns_name(&topo.name, host)),
            root_name: None,
            ctx: format!("link[{index}] tap `{host}:{iface}`"),
        };
        let ns = end.ns.clone().unwrap_or_default();
        sys::ip(
            &end.ctx,
            &["-n", &ns, "tuntap", "add", "mode", "tap", "name", iface],
        )?;
        let spec = topo
            .host(host)
            .and_then(|h| h.ifaces.iter().find(|x| x.name == iface));
        let mtu = topo.links.get(index).and_then(|l| l.mtu);
        configure_end(&end, spec, mtu, ipv6)
    }
}

/// One veth end: its name, namespace (None = root) and context for errors.
struct EndArgs {
    name: String,
    ns: Option<String>,
    root_name: Option<String>,
    ctx: String,
}

/// Offloads off, IPv6 off unless wanted, MTU, MAC, addresses, then up.
fn configure_end(
    end: &EndArgs,
    iface: Option<&IfaceSpec>,
    link_mtu: Option<u32>,
    ipv6: bool,
) -> Result<()> {
    let ctx = end.ctx.as_str();
    let dev = end.name.as_str();
    // Checksum offload off on every end: with it on, veth hands a user-space switch packets
    // with unfinished checksums and forwarded packets arrive corrupt.
    let ethtool = [
        "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
    ];
    match &end.ns {
        Some(ns) => sys::run_in(ns, ctx, "ethtool", &ethtool)?,
        None => sys::run(ctx, "ethtool", &ethtool)?,
    };
    let wants_v6 = iface.is_some_and(IfaceSpec::wants_ipv6);
    if ipv6 && !wants_v6 {
        // Slash form so names with dots work as sysctl keys.
        let key = format!("net/ipv6/conf/{dev}/disable_ipv6");
        match &end.ns {
            Some(ns) => {
                sys::run_in(ns, ctx, "sysctl", &["-q", "-w", &format!("{key}=1")])?;
            }
            None => {
                let path = format!("/proc/sys/{key}");
                std::fs::write(&path, "1").map_err(|e| LabError::Command {
                    command: format!("write 1 > {path}"),
                    context: ctx.to_string(),
                    status: "failed".into(),
                    stderr: e.to_string(),
                })?;
            }
        }
    }
    let mut ip: Vec<&str> = Vec::new();
    if let Some(ns) = &end.ns {
        ip.extend(["-n", ns.as_str()]);
    }
    let mtu = iface
        .and_then(|i| i.mtu)
        .or(link_mtu)
        .map(|m| m.to_string());
    let mut set = ip.clone();
    set.extend(["link", "set", "dev", dev]);
    if let Some(m) = &mtu {
        set.extend(["mtu", m.as_str()]);
    }
    if let Some(mac) = iface.and_then(|i| i.mac.as_deref()) {
        set.extend(["address", mac]);
    }
    if mtu.is_some() || iface.is_some_and(|i| i.mac.is_some()) {
        sys::ip(ctx, &set)?;
    }
    for a in iface.map(|i| i.addrs.as_slice()).unwrap_or_default() {
        let mut add = ip.clone();
        add.extend(["addr", "add", a.as_str(), "dev", dev]);
        if a.contains(':') {
            add.push("nodad");
        }
        sys::ip(ctx, &add)?;
    }
    let mut up = ip;
    up.extend(["link", "set", "dev", dev, "up"]);
    sys::ip(ctx, &up)?;
    Ok(())
}

/// Routes and static neighbours of one host, after its links are up.
/// A host's `setup` commands, in order, inside its namespace, from `base`.
fn run_setup(ns: &str, h: &HostSpec, base: &Path) -> Result<()> {
    for (i, argv) in h.setup.iter().enumerate() {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        let context = format!("host `{}` setup[{i}]", h.name);
        let out = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .current_dir(if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base
            })
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::Command {
                command: argv.join(" "),
                context: context.clone(),
                status: "could not start".into(),
                stderr: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(LabError::Command {
                command: argv.join(" "),
                context,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

fn configure_routes(ns: &str, h: &HostSpec) -> Result<()> {
    for (i, r) in h.routes.iter().enumerate() {
        let ctx = format!("host `{}` route[{i}] {}", h.name, r.dst);
        // `default` alone does not say the family; an IPv6 next hop or prefix does.
        let v6 = r.dst.contains(':') || r.via.as_deref().is_some_and(|v| v.contains(':'));
        let mut args = vec!["-n", ns];
        if v6 {
            args.push("-6");
        }
        args.extend(["route", "replace", r.dst.as_str()]);
        if let Some(via) = &r.via {
            args.extend(["via", via.as_str()]);
        }
        if let Some(dev) = &r.dev {
            args.extend(["dev", dev.as_str()]);
        }
        sys::ip(&ctx, &args)?;
    }
    for (i, n) in h.neighs.iter().enumerate() {
        let ctx = format!("host `{}` neigh[{i}] {}", h.name, n.ip);
        sys::ip(
            &ctx,
            &[
                "-n",
                ns,
                "neigh",
                "replace",
                n.ip.as_str(),
                "lladdr",
                n.mac.as_str(),
                "dev",
                n.dev.as_str(),
                "nud",
                "permanent",
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_is_shareable_across_threads() {
        fn check<T: Send + Sync>() {}
        check::<Lab>();
    }

    #[test]
    fn status_display_lists_everything() {
        let st = LabStatus {
            name: "x".into(),
            state_file: Some(state_path("x")),
            namespaces: vec!["sb-x-a".into()],
            links: vec![("sbx-1".into(), "UP".into())],
            processes: vec![ProcStatus {
                pid: 42,
                what: "switch sw".into(),
                alive: false,
            }],
        };
        let text = st.to_string();
        assert!(
            text.contains("lab x: up (state /run/switchboard/lab-x.json)"),
            "{text}"
        );
        assert!(
            text.contains("sb-x-a") && text.contains("sbx-1 UP"),
            "{text}"
        );
        assert!(text.contains("42 switch sw (gone)"), "{text}");
        assert!(!st.is_empty());
        let empty = LabStatus {
            name: "x".into(),
            ..LabStatus::default()
        };
        assert!(empty.is_empty());
        assert_eq!(empty.to_string(), "lab x: down (nothing exists)\n");
    }
}
