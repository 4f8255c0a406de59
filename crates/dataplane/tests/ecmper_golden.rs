//! pcap golden tests of the `ecmper` stage: frames in from `in-0.pcap` (the client port),
//! frames out compared byte for byte with `expected-<port>.pcap` for ports 0..=4.
//! Each case also asserts what the outputs must contain, so a wrong golden file cannot pass.
//! `UPDATE_GOLDEN=1 cargo test -p switchboard-dataplane --test ecmper_golden` rewrites them.

mod common;
use common::{read_pcap, write_pcap};

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dataplane::stages::ecmper::control::{Route, handle_of};
use dataplane::stages::ecmper::hash;
use dataplane::{DropReason, Port, Switch, SwitchConfig, assemble};
use packet::build;
use packet::wire::EthernetAddress;
use packet::wire::tcp::Flags;

const PORTS: [u16; 5] = [0, 1, 2, 3, 4];
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0x03, 0x04, 0x05, 0x06, 0x99]);
const RTR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 0);

/// The demo's neighbours: 10.0.0.N on port N (MAC ...:0N), the client on port 0.
const NEIGH: &str = r#"
[[entry]]
table = "neigh"
key = { nh_addr = "10.0.0.1" }
action = "set_output"
params = { dstMac = "02:03:04:05:06:01", port = 1 }

[[entry]]
table = "neigh"
key = { nh_addr = "10.0.0.2" }
action = "set_output"
params = { dstMac = "02:03:04:05:06:02", port = 2 }

[[entry]]
table = "neigh"
key = { nh_addr = "10.0.0.3" }
action = "set_output"
params = { dstMac = "02:03:04:05:06:03", port = 3 }

[[entry]]
table = "neigh"
key = { nh_addr = "10.0.1.99" }
action = "set_output"
params = { dstMac = "02:03:04:05:06:99", port = 0 }
"#;

type PortFrames = Vec<(u16, Vec<Vec<u8>>)>;

/// Runs `frames` in on port 0 through a switch from `config`, after `setup` (controller
/// calls), and compares every port's output with the golden files of `case`.
fn run_case(
    case: &str,
    config: &str,
    frames: &[Vec<u8>],
    setup: impl FnOnce(&Switch),
) -> (PortFrames, Arc<Switch>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
        write_pcap(&dir.join("in-0.pcap"), frames);
    }
    let out = std::env::temp_dir().join(format!("sb-golden-{case}-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg = String::from(config);
    for port in PORTS {
        cfg.push_str(&format!("\n[[port]]\nid = {port}\nbackend = \"pcap\"\n"));
        if port == 0 {
            cfg.push_str(&format!(
                "input = \"{}\"\n",
                dir.join("in-0.pcap").display()
            ));
        }
        cfg.push_str(&format!(
            "output = \"{}\"\n",
            out.join(format!("out-{port}.pcap")).display()
        ));
    }
    let cfg = SwitchConfig::parse(&cfg, &out.join("switch.toml")).unwrap();
    let mut a = assemble(&cfg).unwrap();
    setup(&a.switch);
    a.worker.run(&AtomicBool::new(false), true).unwrap();
    let mut results = Vec::new();
    for port in PORTS {
        let got = out.join(format!("out-{port}.pcap"));
        let expected = dir.join(format!("expected-{port}.pcap"));
        if update {
            std::fs::copy(&got, &expected).unwrap();
        }
        let want = std::fs::read(&expected)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", expected.display()));
        assert!(
            std::fs::read(&got).unwrap() == want,
            "case {case}: port {port} differs from {}",
            expected.display()
        );
        results.push((port, read_pcap(&got)));
    }
    let _ = std::fs::remove_dir_all(&out);
    (results, a.switch)
}

fn port_frames(r: &PortFrames, port: u16) -> &Vec<Vec<u8>> {
    &r.iter().find(|(p, _)| *p == port).unwrap().1
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    build::tcp_ipv4(
        CLIENT_MAC,
        RTR_MAC,
        src,
        dst,
        sport,
        dport,
        1000,
        2000,
        Flags::ACK | Flags::PSH,
        payload,
    )
}

fn with_tos(mut f: Vec<u8>, tos: u8) -> Vec<u8> {
    f[15] = tos;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = !packet::checksum::data(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// Compat, the HOWTO's state after adding .1 then .2: cur (1, 8) = .1 .2 .1 .2 ...,
/// prv (1, 1) = .1. The reference flow goes to .2; with ToS 0x01 to .1. Non-IPv4, TTL 0 and
/// a neighbour miss are dropped.
#[test]
fn golden_ecmper_compat() {
    let mut config =
        String::from("[pipeline]\nstages = [\"ecmper\"]\n\n[stage.ecmper]\nmode = \"compat\"\n");
    config.push_str(NEIGH);
    config.push_str(
        r#"
[[entry]]
table = "ipv4_lpm"
key = { dstAddr = "10.0.10.0/32" }
action = "set_nh_index"
params = { cur_nh_offset = 1, cur_nh_count = 8, prv_nh_offset = 1, prv_nh_count = 1 }

[[entry]]
table = "prv_nh"
key = { nh_index = 1 }
action = "set_nexthop"
params = { nexthop = "10.0.0.1" }
"#,
    );
    for i in 1..=8 {
        let nh = if i % 2 == 1 { "10.0.0.1" } else { "10.0.0.2" };
        config.push_str(&format!(
            "\n[[entry]]\ntable = \"cur_nh\"\nkey = {{ nh_index = {i} }}\naction = \"set_nexthop\"\nparams = {{ nexthop = \"{nh}\" }}\n"
        ));
    }
    let get = tcp(CLIENT, 8081, VIP, 80, b"GET /10B.txt HTTP/1.0\r\n\r\n");
    let reply = tcp(VIP, 80, CLIENT, 8081, b"HTTP/1.1 200 OK\r\n");
    let mut ttl0 = get.clone();
    ttl0[22] = 0;
    let frames = vec![
        get.clone(),
        with_tos(get.clone(), 0x01),
        reply,
        build::arp_request(CLIENT_MAC, CLIENT, Ipv4Addr::new(10, 0, 1, 100)),
        ttl0,
        tcp(CLIENT, 1, Ipv4Addr::new(10, 9, 9, 9), 80, b"nowhere"),
    ];
    let (r, sw) = run_case("ecmper_compat", &config, &frames, |_| {});
    let p1 = port_frames(&r, 1);
    let p2 = port_frames(&r, 2);
    let p0 = port_frames(&r, 0);
    assert_eq!(p2.len(), 1, "cur generation: index 4 -> 10.0.0.2");
    assert_eq!(&p2[0][0..12], &[2, 3, 4, 5, 6, 2, 2, 0, 0, 0, 0, 0xff]);
    assert_eq!(p2[0][22], 63);
    assert_eq!(
        p1.len(),
        1,
        "prv generation (ToS 0x01): index 1 -> 10.0.0.1"
    );
    assert_eq!(p1[0][15], 0x01);
    assert_eq!(p0.len(), 1, "the reply, by the LPM-miss path");
    assert!(port_frames(&r, 3).is_empty() && port_frames(&r, 4).is_empty());
    let c = &sw.port(0).unwrap().counters;
    assert_eq!(c.drops(DropReason::NotIpv4), 1);
    assert_eq!(c.drops(DropReason::TtlZero), 1);
    assert_eq!(c.drops(DropReason::EcmperNeighMiss), 1);
}

/// Resilient: three generations (.1; .1 .2; .1 .2 .3). A flow the current generation sends
/// to .3 goes to .2 or .1 with markers 1 and 2 (ECN kept: ECT(0), ECT(1), CE), a marker
/// naming a generation not kept is dropped, upstream's ToS 0x01 is no marker.
#[test]
fn golden_ecmper_resilient() {
    let mut config = String::from(
        "[pipeline]\nstages = [\"ecmper\"]\n\n[stage.ecmper]\nmode = \"resilient\"\ngenerations = 2\nbuckets = 1009\n",
    );
    config.push_str(NEIGH);
    let setup = |sw: &Switch| {
        let h = handle_of(sw).unwrap();
        for nh in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            h.queue_add(Route::parse("10.0.10.0", "32", nh).unwrap())
                .unwrap();
            assert!(h.install().unwrap().changed);
        }
    };
    // Pick the flow offline with the same recipe: the first source port whose bucket in a
    // fresh {.1,.2,.3} table is .3 and in {.1,.2} is .2 (so all three generations differ).
    let pick = |nhs: &[u32], sport: u16| {
        let t = dataplane::stages::ecmper::maglev::fill(nhs, 1009);
        let c = hash::crc32(&hash::flow_bytes(CLIENT.to_bits(), 6, sport, 80));
        nhs[usize::from(t[c as usize % t.len()])]
    };
    let s1 = 0x0a00_0001;
    let s2 = 0x0a00_0002;
    let s3 = 0x0a00_0003;
    let sport = (20000..30000u16)
        .find(|&p| pick(&[s1, s2, s3], p) == s3 && pick(&[s1, s2], p) == s2)
        .unwrap();
    let f = tcp(CLIENT, sport, VIP, 80, b"GET /1m.img HTTP/1.0\r\n\r\n");
    let frames = vec![
        f.clone(),
        with_tos(f.clone(), 0x01),
        with_tos(f.clone(), hash::mark_tos(0b10, 1)),
        with_tos(f.clone(), hash::mark_tos(0b01, 2)),
        with_tos(f.clone(), hash::mark_tos(0b11, 2)),
        with_tos(f.clone(), hash::mark_tos(0b00, 3)),
        tcp(CLIENT, 1, Ipv4Addr::new(10, 0, 0, 4), 80, b"no neighbour"),
    ];
    let (r, sw) = run_case("ecmper_resilient", &config, &frames, setup);
    let (p1, p2, p3) = (port_frames(&r, 1), port_frames(&r, 2), port_frames(&r, 3));
    assert_eq!(p3.len(), 2, "current generation: unmarked and ToS 0x01");
    assert_eq!(p3[1][15], 0x01);
    assert_eq!(p2.len(), 1, "marker 1: previous generation {{.1,.2}}");
    assert_eq!(p2[0][15], hash::mark_tos(0b10, 1));
    assert_eq!(p2[0][15] & 0b11, 0b10, "ECT(0) kept");
    assert_eq!(p1.len(), 2, "marker 2: the generation with .1 only");
    assert_eq!(p1[0][15] & 0b11, 0b01, "ECT(1) kept");
    assert_eq!(p1[1][15] & 0b11, 0b11, "CE kept");
    for out in p1.iter().chain(p2).chain(p3) {
        assert_eq!(&out[6..12], &[2, 0, 0, 0, 0, 0xff]);
        assert_eq!(out[22], 63);
        assert_eq!(packet::checksum::data(&out[14..34]), 0xffff);
    }
    let c = &sw.port(0).unwrap().counters;
    assert_eq!(c.drops(DropReason::EcmperNoGeneration), 1);
    assert_eq!(c.drops(DropReason::EcmperNeighMiss), 1);
}

/// The example config parses and builds (with its ports swapped for pcap ones).
#[test]
fn example_switch_toml_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/ecmper/switch.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = SwitchConfig::parse(&text, &path).unwrap();
    assert_eq!(cfg.pipeline.stages, vec!["ecmper".to_string()]);
    let a = dataplane::assemble_with_ports(&cfg, Vec::<Box<dyn Port>>::new()).unwrap();
    let h = handle_of(&a.switch).unwrap();
    assert_eq!(h.mode(), dataplane::stages::ecmper::Mode::Resilient);
}
