//! Thin wrappers over the system: running `ip`/`ethtool`/`sysctl`, listing namespaces and links,
//! and identifying and killing processes by PID without hitting a reused PID.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// True when running as root (needed to create namespaces).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion; on failure the error names the command, `context` (node or
/// link at fault) and the command's stderr. Returns stdout.
pub(crate) fn run(context: &str, program: &str, args: &[&str]) -> Result<String> {
    let command = command_line(program, args);
    tracing::debug!(%command, %context, "run");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            context: context.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            context: context.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>`.
pub(crate) fn ip(context: &str, args: &[&str]) -> Result<String> {
    run(context, "ip", args)
}

/// Runs `program args` inside namespace `ns` via `ip netns exec`.
pub(crate) fn run_in(ns: &str, context: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run(context, "ip", &full)
}

#[derive(Deserialize)]
struct NetnsEntry {
    name: String,
}

/// Names of all named network namespaces (`ip netns list`).
pub(crate) fn list_netns() -> Result<Vec<String>> {
    let out = ip("listing namespaces", &["-j", "netns", "list"])?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<NetnsEntry> = serde_json::from_str(&out).map_err(|e| LabError::Command {
        command: "ip -j netns list".into(),
        context: "listing namespaces".into(),
        status: "unparsable output".into(),
        stderr: e.to_string(),
    })?;
    Ok(v.into_iter().map(|e| e.name).collect())
}

#[derive(Deserialize)]
struct LinkEntry {
    ifname: String,
    #[serde(default)]
    operstate: Option<String>,
}

/// Interfaces of the root namespace with their operational state.
pub(crate) fn list_root_links() -> Result<Vec<(String, String)>> {
    let out = ip("listing links", &["-j", "link", "show"])?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<LinkEntry> = serde_json::from_str(&out).map_err(|e| LabError::Command {
        command: "ip -j link show".into(),
        context: "listing links".into(),
        status: "unparsable output".into(),
        stderr: e.to_string(),
    })?;
    Ok(v.into_iter()
        .map(|e| (e.ifname, e.operstate.unwrap_or_default()))
        .collect())
}

/// PIDs of processes inside a named namespace (`ip netns pids`).
pub(crate) fn netns_pids(ns: &str) -> Vec<u32> {
    match ip(ns, &["netns", "pids", ns]) {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether IPv6 exists in this kernel at all (`ipv6.disable=1` removes /proc/sys/net/ipv6).
pub(crate) fn ipv6_present() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// A process the lab started, recorded so another process can kill it after a crash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ProcRecord {
    /// Process id.
    pub pid: u32,
    /// Start time from /proc/<pid>/stat (clock ticks since boot), to detect PID reuse.
    pub start_time: Option<u64>,
    /// Whether the process leads its own process group (then the whole group is signalled).
    pub group: bool,
    /// What it is, for status output (`switch sw`, `process[0] client: sleep 10`).
    pub what: String,
}

/// Start time (field 22) and state (field 3) from /proc/<pid>/stat.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come fields 4..; start time is field 22, i.e. 19 further fields on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Start time of a live process, recorded when the lab starts it.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

impl ProcRecord {
    /// True while the recorded process still runs (not a zombie, and not a reused PID).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            None => false,
            Some(('Z', _)) | Some(('X', _)) => false,
            Some((_, t)) => self.start_time.is_none_or(|s| s == t),
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if !self.alive() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        let target = if self.group { -pid } else { pid };
        // SAFETY: kill has no memory preconditions; a stale target only yields ESRCH.
        unsafe {
            libc::kill(target, sig);
        }
    }
}

/// Terminates processes: SIGTERM, up to `grace` to exit, then SIGKILL. `children` are reaped
/// when they belong to this process. Returns how many were alive.
pub(crate) fn terminate(
    records: &[ProcRecord],
    children: &mut [std::process::Child],
    grace: Duration,
) -> usize {
    let mut alive: Vec<&ProcRecord> = records.iter().filter(|r| r.alive()).collect();
    let count = alive.len();
    for r in &alive {
        r.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        for c in children.iter_mut() {
            let _ = c.try_wait();
        }
        alive.retain(|r| r.alive());
        if alive.is_empty() || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for r in &alive {
        tracing::warn!(pid = r.pid, what = %r.what, "did not exit on SIGTERM; killing");
        r.signal(libc::SIGKILL);
    }
    for c in children.iter_mut() {
        // Kill in case it escaped the records (e.g. exec failed oddly); then reap.
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    count
}
