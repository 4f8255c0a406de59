//! Test fixture: a fresh, uniquely named network namespace removed on drop.
//!
//! Sockets and TAP devices are created in the namespace of the calling
//! *thread*, so [`NetNs::run_inside`] runs a closure on a dedicated thread
//! that has `setns`-ed into the namespace; the test thread is never moved.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A named namespace (`ip netns add`), deleted with everything in it on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A new namespace, or `None` (after printing "SKIPPED: needs root") when not root.
    pub fn new(tag: &str) -> Option<NetNs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            {
                // Straight to stderr: the test harness captures eprintln! of passing tests,
                // and a skip must be seen.
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "SKIPPED: needs root ({tag})");
            }
            return None;
        }
        let name = format!(
            "sbtest-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        // Guard first, so a failure below still deletes the namespace.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// `ip -n <ns> args...`; panics with the command's stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Run `f` on a new thread that has entered the namespace; re-raises its panic.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns file");
                // SAFETY: a valid namespace fd; setns only affects this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
