//! Network namespaces: run code inside one, create and delete them, run commands.
//!
//! BPF test runs and link creation resolve ifindexes in the *calling thread's* netns, so work
//! for another namespace runs on a short-lived thread that `setns`es first; the rest of the
//! process stays where it was.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Run `f` on a new thread that has joined network namespace `netns` (a name under
/// /run/netns, as created by `ip netns add`; "" means the caller's own namespace).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Invalid {
                what: "netns worker",
                detail: "thread panicked".into(),
            })
        })
    })
}

/// Move the calling thread into `netns` ("" is a no-op). Use only on threads you own.
pub fn enter_netns(netns: &str) -> Result<()> {
    if netns.is_empty() {
        return Ok(());
    }
    let err = |source| Error::Netns {
        netns: netns.to_string(),
        source,
    };
    if netns.contains('/') {
        return Err(err(io::Error::from(io::ErrorKind::InvalidInput)));
    }
    let f = File::open(format!("/run/netns/{netns}")).map_err(err)?;
    // SAFETY: f is an open netns fd; setns only affects the calling thread for CLONE_NEWNET.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// The ifindex of `iface` in the calling thread's netns.
pub fn ifindex(netns: &str, iface: &str) -> Result<u32> {
    let missing = || Error::NoSuchInterface {
        netns: netns.to_string(),
        iface: iface.to_string(),
    };
    let c = std::ffi::CString::new(iface).map_err(|_| missing())?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(missing()) } else { Ok(idx) }
}

/// Run a command to completion; a non-zero exit becomes [`Error::Command`] with its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let cmdline = || format!("{prog} {}", args.join(" "));
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            cmd: cmdline(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: cmdline(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command inside `netns` via `ip netns exec`.
pub fn run_in(netns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", netns, prog];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Whether we may create namespaces and load BPF programs.
pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// A named network namespace that is deleted on drop (which also destroys its veths,
/// bridges and any XDP programs attached in it).
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// `ip netns add name`, with IPv6 disabled so no ND/MLD chatter pollutes counters.
    pub fn create(name: &str) -> Result<NetnsGuard> {
        run("ip", &["netns", "add", name])?;
        let g = NetnsGuard {
            name: name.to_string(),
        };
        run_in(
            name,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        run_in(name, "ip", &["link", "set", "lo", "up"])?;
        Ok(g)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "failed to delete netns");
        }
    }
}

/// Create a veth pair `a` (in `ns_a`) <-> `b` (in `ns_b`), both up, IPv6 off.
pub fn veth_pair(a: &str, ns_a: &str, b: &str, ns_b: &str) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ],
    )?;
    run_in(ns_a, "ip", &["link", "set", a, "up"])?;
    run_in(ns_b, "ip", &["link", "set", b, "up"])?;
    Ok(())
}

/// The MAC address of `iface` in `netns`.
pub fn mac_of(netns: &str, iface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{iface}/address");
    // sysfs shows the mounter's namespace, not the thread's: read it from inside `netns`.
    let s = if netns.is_empty() {
        std::fs::read_to_string(&path).map_err(|e| Error::io(path.clone(), e))?
    } else {
        run_in(netns, "cat", &[&path])?
    };
    parse_mac(s.trim())
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::Invalid {
        what: "MAC address",
        detail: s.to_string(),
    };
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in out.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// Format a MAC as "aa:bb:cc:dd:ee:ff".
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:00:0a:ff:10:01").unwrap();
        assert_eq!(m, [2, 0, 0x0a, 0xff, 0x10, 1]);
        assert_eq!(fmt_mac(&m), "02:00:0a:ff:10:01");
        assert!(parse_mac("02:00:0a:ff:10").is_err());
        assert!(parse_mac("02:00:0a:ff:10:01:02").is_err());
        assert!(parse_mac("02:00:0a:ff:10:zz").is_err());
        assert!(parse_mac("2:00:0a:ff:10:01").is_err());
    }

    #[test]
    fn netns_name_with_slash_is_rejected() {
        assert!(matches!(enter_netns("../x"), Err(Error::Netns { .. })));
    }
}
