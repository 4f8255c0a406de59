//! pcap golden tests, like BMv2's pcap mode: frames in from `in-<port>.pcap`,
//! frames out compared byte for byte with `expected-<port>.pcap`.
//!
//! Each case also asserts what the expected files must contain (frame counts,
//! rewritten MACs), so a wrong golden file cannot pass unnoticed.
//! `UPDATE_GOLDEN=1 cargo test -p switchboard-dataplane --test golden` rewrites
//! the inputs and expected outputs from the builders below.

mod common;
use common::*;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use dataplane::{DropReason, SwitchConfig, assemble};
use packet::build;
use packet::wire::EthernetAddress;

const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0x42, 0xc0, 0xa8, 0x0c, 0x64]);
const ANY_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x99]);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 12, 2);

/// Frames written per port.
type PortFrames = Vec<(u16, Vec<Vec<u8>>)>;

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

/// Run a case: write its inputs (when updating), run the switch over pcap ports,
/// compare outputs with the expected files. Returns the outputs per port and the switch.
fn run_case(
    case: &str,
    extra: &str,
    inputs: &[(u16, Vec<Vec<u8>>)],
) -> (PortFrames, std::sync::Arc<dataplane::Switch>) {
    run_case_with(case, CONFIG, extra, inputs)
}

/// [`run_case`] over another base config.
fn run_case_with(
    case: &str,
    base: &str,
    extra: &str,
    inputs: &[(u16, Vec<Vec<u8>>)],
) -> (PortFrames, std::sync::Arc<dataplane::Switch>) {
    let dir = case_dir(case);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
        for (port, frames) in inputs {
            write_pcap(&dir.join(format!("in-{port}.pcap")), frames);
        }
    }
    let out = std::env::temp_dir().join(format!("sb-golden-{case}-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg = String::from(base);
    cfg.push_str(extra);
    for port in PORTS {
        let input = dir.join(format!("in-{port}.pcap"));
        cfg.push_str(&format!("\n[[port]]\nid = {port}\nbackend = \"pcap\"\n"));
        if input.exists() {
            cfg.push_str(&format!("input = \"{}\"\n", input.display()));
        }
        cfg.push_str(&format!(
            "output = \"{}\"\n",
            out.join(format!("out-{port}.pcap")).display()
        ));
    }
    let cfg = SwitchConfig::parse(&cfg, &out.join("switch.toml")).unwrap();
    assert!(cfg.stop_at_eof());
    let mut a = assemble(&cfg).unwrap();
    a.worker.run(&AtomicBool::new(false), true).unwrap();
    let mut results = Vec::new();
    for port in PORTS {
        let got = out.join(format!("out-{port}.pcap"));
        let expected = dir.join(format!("expected-{port}.pcap"));
        if update {
            std::fs::copy(&got, &expected).unwrap();
        }
        let got_bytes = std::fs::read(&got).unwrap();
        let want_bytes = std::fs::read(&expected).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
                expected.display()
            )
        });
        assert!(
            got_bytes == want_bytes,
            "case {case}: port {port} output differs from {}",
            expected.display()
        );
        results.push((port, read_pcap(&got)));
    }
    let _ = std::fs::remove_dir_all(&out);
    (results, a.switch)
}

fn frames_of(r: &[(u16, Vec<Vec<u8>>)], port: u16) -> &Vec<Vec<u8>> {
    &r.iter().find(|(p, _)| *p == port).unwrap().1
}

#[test]
fn golden_forward() {
    let to_server = build::udp_ipv4(
        CLIENT_MAC,
        ANY_MAC,
        CLIENT,
        SERVER,
        40000,
        8080,
        b"to server",
    );
    let to_client = build::udp_ipv4(
        SERVER_MAC,
        CLIENT_MAC,
        SERVER,
        CLIENT,
        8080,
        40000,
        b"to client",
    );
    let to_nobody = build::udp_ipv4(
        CLIENT_MAC,
        ANY_MAC,
        CLIENT,
        Ipv4Addr::new(10, 9, 9, 9),
        1,
        2,
        b"miss",
    );
    let mut ttl0 = to_server.clone();
    ttl0[14 + 8] = 0;
    let v6 = build::udp_ipv6(
        CLIENT_MAC,
        ANY_MAC,
        "fd00::1".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        1,
        2,
        b"v6",
    );
    let tcp = build::tcp_ipv4(
        CLIENT_MAC,
        ANY_MAC,
        CLIENT,
        SERVER,
        40001,
        8080,
        1,
        0,
        packet::wire::tcp::Flags::SYN,
        b"tcp payload",
    );
    let (r, sw) = run_case(
        "forward",
        "",
        &[
            (
                132,
                vec![
                    to_server.clone(),
                    to_nobody,
                    ttl0,
                    v6,
                    tcp.clone(),
                    to_server[..20].to_vec(),
                ],
            ),
            (140, vec![to_client.clone()]),
        ],
    );
    let p140 = frames_of(&r, 140);
    assert_eq!(p140.len(), 2, "the UDP and the TCP frame to .2");
    for f in p140 {
        assert_eq!(
            &f[0..6],
            &SERVER_MAC.0,
            "set_egress_port_with_mac rewrote the dst MAC"
        );
    }
    assert_eq!(&p140[0][6..], &to_server[6..]);
    assert_eq!(&p140[1][6..], &tcp[6..]);
    assert_eq!(
        frames_of(&r, 132),
        &vec![to_client],
        "set_egress_port leaves the frame as is"
    );
    assert!(frames_of(&r, 148).is_empty());
    let c = sw.port(132).unwrap().counters.clone();
    assert_eq!(
        c.drops(DropReason::ForwardMiss),
        1,
        "default action NoAction drops"
    );
    assert_eq!(c.drops(DropReason::TtlZero), 1);
    assert_eq!(c.drops(DropReason::NotIpv4), 1);
    assert_eq!(c.snapshot().rx_dropped, 4, "plus one truncated frame");
}

#[test]
fn golden_arp_forward() {
    let req = build::arp_request(CLIENT_MAC, CLIENT, SERVER);
    let reply = build::arp_reply(SERVER_MAC, SERVER, CLIENT_MAC, CLIENT);
    let unknown = build::arp_request(CLIENT_MAC, CLIENT, Ipv4Addr::new(192, 168, 12, 55));
    let garp = build::gratuitous_arp(SERVER_MAC, SERVER);
    let (r, sw) = run_case(
        "arp_forward",
        "",
        &[
            (132, vec![req.clone(), unknown]),
            (148, vec![garp.clone(), reply.clone()]),
        ],
    );
    // Round order: port 132's batch, then port 148's, so 140 sees req then the flooded GARP.
    assert_eq!(frames_of(&r, 140), &vec![req, garp.clone()]);
    assert_eq!(
        frames_of(&r, 132),
        &vec![garp, reply],
        "GARP flooded, reply steered by TPA"
    );
    assert!(
        frames_of(&r, 148).is_empty(),
        "never back out of the ingress port"
    );
    assert_eq!(sw.port(132).unwrap().counters.drops(DropReason::ArpMiss), 1);
}

#[test]
fn golden_arp_forward_upstream_mode() {
    let garp = build::gratuitous_arp(SERVER_MAC, SERVER);
    let (r, _) = run_case(
        "arp_forward_upstream",
        "[stage.arp_forward]\nflood_gratuitous = false\n",
        &[(148, vec![garp.clone()])],
    );
    assert_eq!(
        frames_of(&r, 140),
        &vec![garp],
        "steered to .2's recorded port only"
    );
    assert!(frames_of(&r, 132).is_empty() && frames_of(&r, 148).is_empty());
}

// ----- load_balancer ------------------------------------------------------------------------

const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 12, 10);

/// Full recomputation of a frame's IPv4 header checksum and TCP/UDP checksum with etherparse
/// (independent of the incremental update under test): (stored, computed) pairs.
fn checksums(frame: &[u8]) -> [(u16, u16); 2] {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    let ip_sum = (h.header_checksum, h.calc_header_checksum());
    let l4 = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (
            t.checksum(),
            t.calc_checksum_ipv4(h.source, h.destination).unwrap(),
        ),
        Some(TransportSlice::Udp(u)) => (
            u.checksum(),
            u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
        ),
        other => panic!("no TCP/UDP: {other:?}"),
    };
    [ip_sum, l4]
}

#[track_caller]
fn assert_checksums_ok(frame: &[u8]) {
    for (stored, computed) in checksums(frame) {
        assert_eq!(stored, computed, "checksum after rewrite");
    }
}

fn ip_src(f: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(f[26], f[27], f[28], f[29])
}

fn ip_dst(f: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(f[30], f[31], f[32], f[33])
}

/// The upstream controller's start state: client_snat(8080 -> VIP), member 1 = .2 in group 1,
/// node_selector(VIP -> group 1); plus common's forward/arp entries.
fn lb_config() -> String {
    CONFIG.replace(
        r#"stages = ["arp_forward", "forward"]"#,
        r#"stages = ["arp_forward", "load_balancer", "forward"]"#,
    ) + r#"
[[entry]]
table = "client_snat"
key = { "hdr.tcp.src_port" = 8080 }
action = "set_rewrite_src"
params = { new_src = "192.168.12.10" }

[[member]]
table = "node_selector"
id = 1
action = "set_rewrite_dst"
params = { new_dst = "192.168.12.2" }

[[group]]
table = "node_selector"
id = 1
members = [1]

[[entry]]
table = "node_selector"
key = { "hdr.ipv4.dst_addr" = "192.168.12.10" }
group = 1
"#
}

#[test]
fn golden_load_balancer() {
    use packet::wire::tcp::Flags;
    let tcp = |src, dst, sport, dport, payload: &[u8]| {
        build::tcp_ipv4(
            CLIENT_MAC,
            ANY_MAC,
            src,
            dst,
            sport,
            dport,
            1000,
            0,
            Flags::SYN,
            payload,
        )
    };
    // client -> VIP:8080 (rewritten to .2), over TCP and UDP
    let to_vip = tcp(CLIENT, VIP, 40000, 8080, b"hello vip");
    let udp_to_vip = build::udp_ipv4(CLIENT_MAC, ANY_MAC, CLIENT, VIP, 40001, 8080, b"udp vip");
    // client -> .2 directly: not load-balanced; src port 40002 has no client_snat entry
    let direct = tcp(CLIENT, SERVER, 40002, 8080, b"direct");
    // replies from .2: TCP from 8080 re-sourced to the VIP; UDP from 8080 and TCP from
    // another port untouched
    let reply = build::tcp_ipv4(
        SERVER_MAC,
        CLIENT_MAC,
        SERVER,
        CLIENT,
        8080,
        40000,
        5000,
        1001,
        Flags::SYN | Flags::ACK,
        b"hello client",
    );
    let udp_reply = build::udp_ipv4(SERVER_MAC, CLIENT_MAC, SERVER, CLIENT, 8080, 40001, b"u");
    let other_port = build::tcp_ipv4(
        SERVER_MAC,
        CLIENT_MAC,
        SERVER,
        CLIENT,
        9999,
        40000,
        1,
        0,
        Flags::ACK,
        b"other",
    );
    // truncated and corrupt frames must not panic the stage
    let truncated = to_vip[..14 + 20 + 10].to_vec();
    let mut bad_ihl = to_vip.clone();
    bad_ihl[14] = 0x4f; // IHL 15: header longer than the packet
    let (r, sw) = run_case_with(
        "load_balancer",
        &lb_config(),
        "",
        &[
            (
                132,
                vec![
                    to_vip.clone(),
                    udp_to_vip.clone(),
                    direct.clone(),
                    truncated,
                    bad_ihl,
                ],
            ),
            (
                140,
                vec![reply.clone(), udp_reply.clone(), other_port.clone()],
            ),
        ],
    );
    let p140 = frames_of(&r, 140);
    assert_eq!(p140.len(), 3, "TCP and UDP to the VIP, TCP to .2");
    for (f, orig) in p140.iter().zip([&to_vip, &udp_to_vip]) {
        assert_eq!(ip_dst(f), SERVER, "VIP rewritten to the backend");
        assert_eq!(ip_src(f), CLIENT);
        assert_eq!(&f[0..6], &SERVER_MAC.0, "then forwarded with .2's MAC");
        assert_checksums_ok(f);
        assert_ne!(&f[14..], &orig[14..]);
    }
    assert_eq!(&p140[2][6..], &direct[6..], "direct traffic untouched");
    let p132 = frames_of(&r, 132);
    assert_eq!(p132.len(), 3);
    assert_eq!(
        ip_src(&p132[0]),
        VIP,
        "reply from :8080 re-sourced to the VIP"
    );
    assert_eq!(ip_dst(&p132[0]), CLIENT);
    assert_checksums_ok(&p132[0]);
    // Only the address and the two checksums changed.
    let diff: Vec<usize> = (0..reply.len())
        .filter(|&i| p132[0][i] != reply[i])
        .collect();
    assert!(
        diff.iter()
            .all(|&i| (24..30).contains(&i) || i == 50 || i == 51),
        "bytes changed: {diff:?}"
    );
    assert_eq!(p132[1], udp_reply, "client_snat applies to TCP only");
    assert_eq!(p132[2], other_port, "no client_snat entry for port 9999");
    assert!(frames_of(&r, 148).is_empty());
    assert_eq!(sw.port(132).unwrap().counters.snapshot().rx_dropped, 2);
    let ns = sw.tables.get("node_selector").unwrap().stats();
    assert_eq!(
        (ns.hits, ns.misses),
        (2, 4),
        "VIP twice; direct + 3 replies miss"
    );
    let snat = sw.tables.get("client_snat").unwrap().stats();
    assert_eq!(
        (snat.hits, snat.misses),
        (1, 2),
        "applied to the non-LB TCP packets only"
    );
}
