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
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use dataplane::port::pcap::{PcapInPort, PcapOutPort};
use dataplane::{DropReason, Port, SwitchConfig, assemble};
use packet::build;
use packet::wire::EthernetAddress;
use packet::{PacketBuf, Pool};

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

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut p = PcapInPort::open(0, path).unwrap();
    let mut pool = Pool::new(8);
    let mut batch: Vec<PacketBuf> = Vec::new();
    while !p.rx_exhausted() {
        p.rx_batch(&mut pool, &mut batch, 64).unwrap();
    }
    batch.iter().map(|b| b.frame().to_vec()).collect()
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut p = PcapOutPort::create(0, path).unwrap();
    let mut pool = Pool::new(8);
    let mut batch: Vec<PacketBuf> = frames
        .iter()
        .map(|f| PacketBuf::from_slice(f).unwrap())
        .collect();
    p.tx_batch(&mut pool, &mut batch).unwrap();
    p.flush().unwrap();
}

/// Run a case: write its inputs (when updating), run the switch over pcap ports,
/// compare outputs with the expected files. Returns the outputs per port and the switch.
fn run_case(
    case: &str,
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
    let mut cfg = String::from(CONFIG);
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
