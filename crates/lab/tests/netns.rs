//! Root-only tests that build real labs with network namespaces and veth links, send traffic
//! only inside them, and check that teardown (drop, or `down_by_name` after a simulated crash)
//! leaves nothing behind. Each test uses its own lab name so they run in parallel.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use lab::{Lab, LabError, LabOptions, Topology, down_by_name, lab_status, status_by_name};

fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        {
            // Straight to stderr: the test harness captures eprintln! of passing tests,
            // and a skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED: needs root");
        }
        return false;
    }
    true
}

/// Clears leftovers of an earlier aborted run, then parses the topology.
fn fresh(name: &str, text: &str) -> Topology {
    down_by_name(name).expect("clearing leftovers");
    Topology::parse(text, "test.toml").expect("topology")
}

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn links_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Running, i.e. present and not a zombie (an unreaped child of ours after mem::forget).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

fn assert_gone(name: &str) {
    let ns = netns_with_prefix(&format!("sb-{name}-"));
    assert!(ns.is_empty(), "namespaces left: {ns:?}");
    let links = links_with_prefix(&format!("sb{name}-"));
    assert!(links.is_empty(), "links left: {links:?}");
    assert!(!lab::state_path(name).exists(), "state file left");
    let st = lab_status(name).unwrap();
    assert!(st.is_empty(), "{st}");
}

const TWO_HOSTS: &str = r#"
name = "tping"
[[host]]
name = "a"
  [[host.iface]]
  name = "eth0"
  mac = "02:00:00:77:00:01"
  addrs = ["10.77.0.1/24"]
  [[host.route]]
  dst = "10.78.0.0/16"
  via = "10.77.0.2"
[[host]]
name = "b"
  [[host.iface]]
  name = "eth0"
  mac = "02:00:00:77:00:02"
  addrs = ["10.77.0.2/24"]
  [[host.neigh]]
  ip = "10.77.0.1"
  mac = "02:00:00:77:00:01"
  dev = "eth0"
[[link]]
a = "a:eth0"
b = "b:eth0"
mtu = 1400
"#;

#[test]
fn two_hosts_ping_then_drop_cleans_up() {
    if !need_root() {
        return;
    }
    let topo = fresh("tping", TWO_HOSTS);
    let lab = Lab::up(&topo, LabOptions::default()).expect("lab up");

    let ping = lab
        .exec(
            "a",
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.77.0.2"],
        )
        .unwrap();
    assert!(
        ping.status.success(),
        "ping failed: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // Interface settings took effect.
    let link = lab.exec_ok("a", &["ip", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains("02:00:00:77:00:01"), "{link}");
    assert!(link.contains("state UP"), "{link}");
    let lo = lab.exec_ok("b", &["ip", "link", "show", "lo"]).unwrap();
    assert!(lo.contains("UP"), "{lo}");
    let feats = lab.exec_ok("a", &["ethtool", "-k", "eth0"]).unwrap();
    assert!(feats.contains("tx-checksumming: off"), "{feats}");
    assert!(feats.contains("generic-receive-offload: off"), "{feats}");
    let v6 = lab
        .exec_ok("b", &["sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"])
        .unwrap();
    assert_eq!(v6.trim(), "1");
    let route = lab
        .exec_ok("a", &["ip", "route", "show", "10.78.0.0/16"])
        .unwrap();
    assert!(route.contains("via 10.77.0.2"), "{route}");
    let neigh = lab
        .exec_ok("b", &["ip", "neigh", "show", "10.77.0.1"])
        .unwrap();
    assert!(neigh.contains("PERMANENT"), "{neigh}");

    // Status sees both namespaces; a second lab of the same name is refused.
    let status = status_by_name("tping").unwrap();
    assert!(
        status.contains("sb-tping-a") && status.contains("sb-tping-b"),
        "{status}"
    );
    match Lab::up(&topo, LabOptions::default()) {
        Err(LabError::AlreadyUp { name, .. }) => assert_eq!(name, "tping"),
        other => panic!("expected AlreadyUp, got {other:?}"),
    }

    // Errors name the node.
    let err = lab.exec("nope", &["true"]).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    let err = lab
        .exec_ok("a", &["ip", "link", "show", "eth9"])
        .unwrap_err();
    assert!(err.to_string().contains("host `a`"), "{err}");

    let pid = lab.spawn("b", &["sleep", "300"]).unwrap();
    assert!(running(pid));

    drop(lab);
    assert!(!running(pid), "spawned process survived teardown");
    assert_gone("tping");
}

const SWITCHED: &str = r#"
name = "tcrash"
[[host]]
name = "h1"
  [[host.iface]]
  name = "eth0"
  addrs = ["10.79.0.1/24"]
[[host]]
name = "h2"
  [[host.iface]]
  name = "eth0"
  addrs = ["10.79.0.2/24"]
[[switch]]
name = "sw"
[[link]]
a = "h1:eth0"
b = "sw:1"
[[link]]
a = "h2:eth0"
b = "sw:2"
[[process]]
node = "h1"
cmd = ["sleep", "300"]
"#;

/// Removes a lab by name when dropped, so a failed assertion after `mem::forget`
/// leaves nothing behind.
struct DownOnDrop(&'static str);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = down_by_name(self.0);
    }
}

#[test]
fn crash_then_down_by_name_removes_everything() {
    if !need_root() {
        return;
    }
    let topo = fresh("tcrash", SWITCHED);
    let lab = Lab::up(&topo, LabOptions::default()).expect("lab up");
    let _cleanup = DownOnDrop("tcrash");
    let pids: Vec<u32> = lab.pids().into_iter().map(|(p, _)| p).collect();
    assert_eq!(pids.len(), 1);
    assert!(running(pids[0]));
    let ports = lab.switch_port_ifaces("sw").unwrap();
    assert_eq!(ports[&1], "sbtcrash-1");
    assert_eq!(links_with_prefix("sbtcrash-").len(), 2);
    std::mem::forget(lab);

    let st = lab_status("tcrash").unwrap();
    assert_eq!(st.namespaces.len(), 2, "{st}");
    assert_eq!(st.links.len(), 2, "{st}");
    assert!(st.processes.iter().all(|p| p.alive), "{st}");

    // 1 process + 2 links + 2 namespaces.
    let removed = down_by_name("tcrash").unwrap();
    assert_eq!(removed, 5);
    assert!(!running(pids[0]), "process survived down_by_name");
    assert_gone("tcrash");
    assert_eq!(down_by_name("tcrash").unwrap(), 0);
}

#[test]
fn crash_without_state_file_falls_back_to_prefix() {
    if !need_root() {
        return;
    }
    let text = SWITCHED.replace("tcrash", "tnostate");
    let topo = fresh("tnostate", &text);
    let lab = Lab::up(&topo, LabOptions::default()).expect("lab up");
    let _cleanup = DownOnDrop("tnostate");
    let pid = lab.pids()[0].0;
    std::mem::forget(lab);
    std::fs::remove_file(lab::state_path("tnostate")).unwrap();

    // Found by prefix; the process is found inside its namespace.
    let removed = down_by_name("tnostate").unwrap();
    assert!(removed >= 3, "removed {removed}");
    assert!(!running(pid), "process in namespace survived");
    assert_gone("tnostate");
}

#[test]
fn switch_launcher_gets_ports_and_traffic_crosses_them() {
    if !need_root() {
        return;
    }
    let text = SWITCHED.replace("tcrash", "tsw").replace(
        "[[process]]\nnode = \"h1\"\ncmd = [\"sleep\", \"300\"]\n",
        "",
    );
    let topo = fresh("tsw", &text);
    // Stand-in switch: a tc u32/mirred cross-connect between the two port interfaces
    // (pure L2, no netfilter), plus a sleep as "the switch process".
    let launcher: lab::SwitchLauncher =
        Box::new(|spec, ports: &BTreeMap<u16, lab::PortBinding>| {
            assert_eq!(spec.name, "sw");
            let (p1, p2) = (&ports[&1].iface, &ports[&2].iface);
            for (from, to) in [(p1, p2), (p2, p1)] {
                let ok = |args: &[&str]| {
                    let st = Command::new("tc").args(args).status().unwrap();
                    assert!(st.success(), "tc {args:?}");
                };
                ok(&["qdisc", "add", "dev", from, "ingress"]);
                ok(&[
                    "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                    "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
                ]);
            }
            Command::new("sleep")
                .arg("300")
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| LabError::Launch {
                    switch: spec.name.clone(),
                    message: e.to_string(),
                })
        });
    let lab = Lab::up(
        &topo,
        LabOptions {
            switch_launcher: Some(launcher),
            ..LabOptions::default()
        },
    )
    .expect("lab up");
    let (pid, what) = lab.pids()[0].clone();
    assert_eq!(what, "switch sw");
    assert!(running(pid));

    let ping = lab
        .exec(
            "h1",
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.79.0.2"],
        )
        .unwrap();
    assert!(
        ping.status.success(),
        "ping through switch ports failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let feats = Command::new("ethtool")
        .args(["-k", "sbtsw-1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&feats.stdout).contains("tx-checksumming: off"));

    lab.down().expect("down");
    assert!(!running(pid));
    assert_gone("tsw");
}

#[test]
fn failed_up_tears_down_partial_lab() {
    if !need_root() {
        return;
    }
    // A route via a gateway outside every connected subnet fails in the kernel, after the
    // namespaces and links already exist.
    let text = TWO_HOSTS
        .replace("tping", "tfail")
        .replace("via = \"10.77.0.2\"", "via = \"10.99.0.1\"");
    let topo = fresh("tfail", &text);
    let err = Lab::up(&topo, LabOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("route"), "{err}");
    assert!(err.contains("host `a`"), "{err}");
    assert_gone("tfail");
}

/// Brings up the p4containerflow example (renamed so it never touches a real `p4cf` lab) and
/// checks the seed's addressing, then cross-connects ports 132 and 140 with tc to show the
/// static neighbours let client reach the server without ARP.
#[test]
fn p4containerflow_example_comes_up() {
    if !need_root() {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/p4containerflow/topology.toml");
    down_by_name("tp4cf").unwrap();
    let mut topo = Topology::load(&path).unwrap();
    topo.name = "tp4cf".into();
    topo.validate().unwrap();
    let lab = Lab::up(&topo, LabOptions::default()).expect("lab up");
    let ports = lab.switch_port_ifaces("sw").unwrap();
    assert_eq!(
        ports.values().cloned().collect::<Vec<_>>(),
        ["cpu0", "sbtp4cf-132", "sbtp4cf-140", "sbtp4cf-148"]
    );
    assert_eq!(links_with_prefix("sbtp4cf-").len(), 3);
    // The CPU port's TAP lives in host `cpu` with the switch's kernel-side address and NAT.
    let cpu = lab
        .exec_ok("cpu", &["ip", "-d", "addr", "show", "cpu0"])
        .unwrap();
    assert!(
        cpu.contains("192.168.12.1/24") && cpu.contains("tun type tap"),
        "{cpu}"
    );
    let nat = lab.exec_ok("cpu", &["nft", "list", "ruleset"]).unwrap();
    assert!(nat.contains("dnat to 192.168.12.2:8080"), "{nat}");

    let lw = lab
        .exec_ok("lakewood", &["ip", "addr", "show", "eth0"])
        .unwrap();
    assert!(
        lw.contains("192.168.12.2/24") && lw.contains("02:42:c0:a8:0c:02"),
        "{lw}"
    );
    let ll = lab
        .exec_ok("loveland", &["ip", "addr", "show", "eth0"])
        .unwrap();
    assert!(
        !ll.contains("inet ") && ll.contains("02:42:c0:a8:0c:02"),
        "{ll}"
    );

    for (from, to) in [
        ("sbtp4cf-132", "sbtp4cf-140"),
        ("sbtp4cf-140", "sbtp4cf-132"),
    ] {
        for args in [
            vec!["qdisc", "add", "dev", from, "ingress"],
            vec![
                "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ],
        ] {
            assert!(Command::new("tc").args(&args).status().unwrap().success());
        }
    }
    let ping = lab
        .exec("client", &["ping", "-c", "1", "-W", "2", "192.168.12.2"])
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    drop(lab);
    assert_gone("tp4cf");
}

#[test]
fn bad_lab_name_arguments_are_refused() {
    // No root needed: the name is checked before anything is listed or removed.
    for bad in ["", "a-b", "UPPER", "waytoolongname"] {
        assert!(
            matches!(down_by_name(bad), Err(LabError::Invalid { .. })),
            "{bad:?} accepted"
        );
        assert!(status_by_name(bad).is_err(), "{bad:?} accepted");
    }
}
