//! `ecmper` stage tests: compat mode against the reference vector and an independent
//! bitwise CRC-32, the controller's encoding, drops and bmv2 quirks, resilient mode's
//! generations and DSCP markers, Maglev spread and movement, and atomic install.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dataplane::port::memory::{MemoryHandle, MemoryPort};
use dataplane::stages::ecmper::control::{EcmperHandle, Route, handle_of};
use dataplane::stages::ecmper::{hash, maglev};
use dataplane::{DropReason, Port, Switch, SwitchConfig, Worker, assemble_with_ports};
use packet::build;
use packet::wire::EthernetAddress;
use packet::wire::tcp::Flags;

const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0x03, 0x04, 0x05, 0x06, 0x99]);
const RTR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 0);

fn server(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// Independent bitwise CRC-32 (reflected 0xEDB88320, init/xorout 0xFFFFFFFF), not the crate's.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

struct Rig {
    sw: Arc<Switch>,
    worker: Worker,
    ports: Vec<MemoryHandle>,
}

impl Rig {
    fn new(stage_opts: &str) -> Rig {
        let text = format!("[pipeline]\nstages = [\"ecmper\"]\n\n[stage.ecmper]\n{stage_opts}\n");
        let cfg = SwitchConfig::parse(&text, Path::new("test.toml")).unwrap();
        let mut ports: Vec<Box<dyn Port>> = Vec::new();
        let mut handles = Vec::new();
        for id in 0..=4 {
            let (p, h) = MemoryPort::new(id);
            ports.push(Box::new(p));
            handles.push(h);
        }
        let a = assemble_with_ports(&cfg, ports).unwrap();
        Rig {
            sw: a.switch,
            worker: a.worker,
            ports: handles,
        }
    }
    fn h(&self) -> Arc<EcmperHandle> {
        handle_of(&self.sw).expect("ecmper handle registered")
    }
    /// The demo's base configuration: neigh 10.0.0.N -> port N, 10.0.1.99 -> port 0.
    fn base(&self) {
        let h = self.h();
        for n in 1..=4u8 {
            h.neigh_add(server(n), u16::from(n), 0x0203_0405_0600 + u64::from(n))
                .unwrap();
        }
        h.neigh_add(CLIENT, 0, 0x0203_0405_0699).unwrap();
    }
    fn add(&self, nh: u8) {
        self.h()
            .queue_add(Route::parse("10.0.10.0", "32", &server(nh).to_string()).unwrap())
            .unwrap();
    }
    fn del(&self, nh: u8) {
        self.h()
            .queue_del(Route::parse("10.0.10.0", "32", &server(nh).to_string()).unwrap())
            .unwrap();
    }
    /// Sends `frame` in on port 0; returns the port it left on (and the frame), or None.
    fn route(&mut self, frame: &[u8]) -> Option<(u16, Vec<u8>)> {
        self.ports[0].inject(frame);
        while self.ports.iter().any(|h| h.pending() > 0) {
            self.worker.poll_once().unwrap();
        }
        let mut out = None;
        for (id, h) in self.ports.iter().enumerate() {
            for f in h.take_sent() {
                assert!(out.is_none(), "one frame in, more than one out");
                out = Some((id as u16, f));
            }
        }
        out
    }
    fn drops(&self, r: DropReason) -> u64 {
        self.sw.port(0).unwrap().counters.drops(r)
    }
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    build::tcp_ipv4(
        CLIENT_MAC,
        RTR_MAC,
        src,
        dst,
        sport,
        dport,
        1,
        1,
        Flags::ACK | Flags::PSH,
        b"GET /10B.txt HTTP/1.0\r\n\r\n",
    )
}

/// `frame` with its ToS byte set (IPv4 checksum recomputed).
fn with_tos(mut frame: Vec<u8>, tos: u8) -> Vec<u8> {
    frame[15] = tos;
    frame[24] = 0;
    frame[25] = 0;
    let c = !packet::checksum::data(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

fn ip_checksum_ok(frame: &[u8]) -> bool {
    packet::checksum::data(&frame[14..34]) == 0xffff
}

#[test]
fn reference_vector_through_the_compat_pipeline() {
    let mut r = Rig::new("mode = \"compat\"");
    r.base();
    let h = r.h();
    // HOWTO Demo 1: .1, install, .2, install -> cur (1, 8), prv (1, 1).
    r.add(1);
    h.install().unwrap();
    r.add(2);
    h.install().unwrap();
    let dump = h.dump("ipv4_lpm", false).unwrap();
    assert!(
        dump.contains("dstAddr: 10.0.10.0/32 | action: set_nh_index( cur_nh_offset: 1 cur_nh_count: 8 prv_nh_offset: 1 prv_nh_count: 1 )"),
        "{dump}"
    );
    let input = hash::flow_bytes(CLIENT.to_bits(), 6, 8081, 80);
    assert_eq!(crc32_bitwise(&input), 0xF29E_9E2C);
    assert_eq!(hash::compat_hash(crc32_bitwise(&input)), 37067);

    let f = tcp(CLIENT, 8081, VIP, 80);
    let (port, out) = r.route(&f).expect("forwarded");
    assert_eq!(port, 2, "cur generation: index 4 -> 10.0.0.2");
    assert_eq!(&out[0..6], &[2, 3, 4, 5, 6, 2]);
    assert_eq!(&out[6..12], &[2, 0, 0, 0, 0, 0xff]);
    assert_eq!(out[22], 63, "TTL - 1");
    assert!(ip_checksum_ok(&out));
    assert_eq!(out[34..], f[34..], "L4 untouched");

    let bounced = with_tos(f, 0x01);
    let (port, out) = r.route(&bounced).expect("forwarded");
    assert_eq!(port, 1, "prv generation: index 1 -> 10.0.0.1");
    assert_eq!(out[15], 0x01, "the marker is kept");
    assert!(ip_checksum_ok(&out));
}

#[test]
fn compat_matches_an_independent_model_on_many_flows() {
    let mut r = Rig::new("mode = \"compat\"");
    r.base();
    let h = r.h();
    for n in [1, 2, 3] {
        r.add(n);
    }
    h.install().unwrap();
    r.add(4);
    h.install().unwrap();
    // Model: prv = [.1,.2,.3] expanded to 16 from offset 1; cur = [.1..=.4] expanded to 16.
    let prv: Vec<u8> = (0..16).map(|x| [1, 2, 3][x % 3]).collect();
    let cur: Vec<u8> = (0..16).map(|x| [1, 2, 3, 4][x % 4]).collect();
    let mut seen = [0u32; 5];
    for i in 0..400u32 {
        let src = Ipv4Addr::from(0x0a00_0100 + (i * 7919) % 65536);
        let sport = 1024 + ((i * 104_729) % 60000) as u16;
        let udp = i % 3 == 0;
        let f = if udp {
            build::udp_ipv4(CLIENT_MAC, RTR_MAC, src, VIP, sport, 53, b"q")
        } else {
            tcp(src, sport, VIP, 80)
        };
        let proto = if udp { 17 } else { 6 };
        let dport = if udp { 53 } else { 80 };
        let hh =
            (crc32_bitwise(&hash::flow_bytes(src.to_bits(), proto, sport, dport)) % 65535) as usize;
        let want_cur = cur[hh & 15];
        let want_prv = prv[hh & 15];
        let (p, _) = r.route(&f).unwrap();
        assert_eq!(p, u16::from(want_cur), "flow {i} cur");
        seen[usize::from(want_cur)] += 1;
        let (p, _) = r.route(&with_tos(f, 0x01)).unwrap();
        assert_eq!(p, u16::from(want_prv), "flow {i} prv");
    }
    assert!(seen[1..].iter().all(|&c| c > 50), "{seen:?}");
}

#[test]
fn compat_drops_what_bmv2_sends_to_port_0_unless_quirks() {
    for quirks in [false, true] {
        let mut r = Rig::new(&format!("mode = \"compat\"\nbmv2_quirks = {quirks}"));
        r.base();
        let arp = build::arp_request(CLIENT_MAC, CLIENT, server(1));
        let mut ttl0 = tcp(CLIENT, 1, server(1), 80);
        ttl0[22] = 0;
        let nomatch = tcp(CLIENT, 1, Ipv4Addr::new(10, 9, 9, 9), 80);
        for (f, reason) in [
            (arp, DropReason::NotIpv4),
            (ttl0, DropReason::TtlZero),
            (nomatch, DropReason::EcmperNeighMiss),
        ] {
            let out = r.route(&f);
            if quirks {
                let (p, o) = out.expect("quirk: out of port 0");
                assert_eq!(p, 0);
                assert_eq!(o, f, "unmodified");
            } else {
                assert!(out.is_none());
                assert_eq!(r.drops(reason), 1, "{reason:?}");
            }
        }
        // The LPM miss to a neighbour is routed as "connected" (the demo's reply path).
        let (p, o) = r.route(&tcp(VIP, 80, CLIENT, 8081)).unwrap();
        assert_eq!(p, 0);
        assert_eq!(&o[0..6], &[2, 3, 4, 5, 6, 0x99]);
    }
}

#[test]
fn compat_index_zero_drops_and_second_install_collapses_prv() {
    let mut r = Rig::new("mode = \"compat\"");
    r.base();
    let h = r.h();
    r.add(1);
    h.install().unwrap();
    // A prefix with only a previous generation: count 0 -> mask 0xFFFF -> index H + offset,
    // a cur_nh miss -> nh = dst: the VIP itself, not a neighbour: dropped.
    r.del(1);
    h.install().unwrap();
    let f = tcp(CLIENT, 8081, VIP, 80);
    assert!(r.route(&f).is_none());
    assert_eq!(r.drops(DropReason::EcmperNeighMiss), 1);
    // The bounced packet still reaches .1 through prv (1, 1).
    assert_eq!(r.route(&with_tos(f.clone(), 1)).unwrap().0, 1);
    // Upstream: a second install with nothing queued makes prv = cur (empty).
    h.install().unwrap();
    assert!(r.route(&with_tos(f, 1)).is_none());
    // Index 0 is drop in both tables.
    let dump = h.dump("cur_nh", false).unwrap();
    assert!(
        dump.contains("1 | match: nh_index: 0 | action: drop( )"),
        "{dump}"
    );
}

#[test]
fn resilient_generations_markers_and_drops() {
    let mut r = Rig::new("generations = 2\nbuckets = 1009");
    r.base();
    let h = r.h();
    r.add(1);
    assert!(h.install().unwrap().changed);
    r.add(2);
    h.install().unwrap();
    r.add(3);
    h.install().unwrap();
    // No pending change: no rotation.
    let before = h.generations();
    let o = h.install().unwrap();
    assert!(!o.changed);
    assert_eq!(h.generations(), before);
    assert_eq!(before.len(), 3, "current + 2 previous");
    assert_eq!(before[0].routes.len(), 3);
    assert_eq!(before[2].routes.len(), 1);

    // Find a flow the current generation sends somewhere other than .1.
    let (f, cur_port) = (0..200u16)
        .find_map(|p| {
            let f = tcp(CLIENT, 20000 + p, VIP, 80);
            let (port, _) = r.route(&f).unwrap();
            (port != 1).then_some((f, port))
        })
        .unwrap();
    assert!(cur_port == 2 || cur_port == 3);
    for ecn in 0..4u8 {
        // Marker 2 = the generation with .1 only; ECN bits pass untouched.
        let m2 = with_tos(f.clone(), hash::mark_tos(ecn, 2));
        let (p, out) = r.route(&m2).unwrap();
        assert_eq!(p, 1, "ecn {ecn}");
        assert_eq!(out[15], hash::mark_tos(ecn, 2), "marker and ECN kept");
        assert!(ip_checksum_ok(&out));
        assert_eq!(out[22], 63);
        // Upstream's ToS 0x01 (ECT(1)) is no marker here: current generation.
        let (p, _) = r.route(&with_tos(f.clone(), 0x01)).unwrap();
        assert_eq!(p, cur_port);
    }
    // Marker 3 names a generation not kept: dropped and counted.
    assert!(
        r.route(&with_tos(f.clone(), hash::mark_tos(0, 3)))
            .is_none()
    );
    assert_eq!(r.drops(DropReason::EcmperNoGeneration), 1);
    // TTL 1 is not forwarded as TTL 0.
    let mut ttl1 = f.clone();
    ttl1[22] = 1;
    assert!(r.route(&with_tos(ttl1, 0)).is_none());
    assert_eq!(r.drops(DropReason::TtlExpired), 1);
    // Neighbour miss is a drop; the reply path (LPM miss) goes to the client.
    assert!(
        r.route(&tcp(CLIENT, 1, Ipv4Addr::new(10, 9, 9, 9), 80))
            .is_none()
    );
    assert_eq!(r.drops(DropReason::EcmperNeighMiss), 1);
    assert_eq!(r.route(&tcp(VIP, 80, CLIENT, 8081)).unwrap().0, 0);
    // Clear: everything gone, one fresh generation.
    h.clear().unwrap();
    assert_eq!(h.generations().len(), 1);
    assert!(h.routes().is_empty());
    assert!(r.route(&f).is_none());
}

/// Fraction of `flows` whose next hop differs between two bucket fills.
fn moved(a: &[u32], ta: &[u16], b: &[u32], tb: &[u16], flows: &[u32]) -> f64 {
    let m = ta.len();
    let n = flows
        .iter()
        .filter(|&&c| {
            let i = c as usize % m;
            a[usize::from(ta[i])] != b[usize::from(tb[i])]
        })
        .count();
    n as f64 / flows.len() as f64
}

#[test]
fn maglev_spread_and_movement() {
    // 1M flow hashes over the ECMP-ER hash input.
    let flows: Vec<u32> = (0..1_000_000u32)
        .map(|i| {
            let src = 0x0a00_0000 | (i >> 4);
            hash::crc32(&hash::flow_bytes(
                src,
                6,
                80,
                1024 + (i & 0xf) as u16 * 3001,
            ))
        })
        .collect();
    let m = maglev::DEFAULT_BUCKETS;
    for n in [2usize, 3, 4, 5, 8, 16] {
        let backends: Vec<u32> = (1..=n as u32).map(|i| 0x0a00_0000 + i).collect();
        let t = maglev::fill(&backends, m);
        // Buckets: every backend within 1 % of M/N.
        let mut buckets = vec![0usize; n];
        for &b in &t {
            buckets[usize::from(b)] += 1;
        }
        let even = m as f64 / n as f64;
        for &c in &buckets {
            assert!((c as f64 - even).abs() / even < 0.01, "n {n}: {buckets:?}");
        }
        // Flows: within 1 % of even (1M flows: sampling noise is ~0.2 % at N = 4).
        let mut per = vec![0usize; n];
        for &c in &flows {
            per[usize::from(t[c as usize % t.len()])] += 1;
        }
        let even = flows.len() as f64 / n as f64;
        let worst = per
            .iter()
            .map(|&c| (c as f64 - even).abs() / even)
            .fold(0.0, f64::max);
        assert!(worst < 0.01 + 0.002 * n as f64 / 4.0, "n {n}: {per:?}");

        // N -> N+1 and N -> N-1: moved fraction vs the ideal 1/(N+1) and 1/N.
        let mut up = backends.clone();
        up.push(0x0a00_0000 + n as u32 + 1);
        let tu = maglev::fill(&up, m);
        let mv_up = moved(&backends, &t, &up, &tu, &flows);
        let ideal_up = 1.0 / (n as f64 + 1.0);
        let down: Vec<u32> = backends[..n - 1].to_vec();
        let td = maglev::fill(&down, m);
        let mv_down = moved(&backends, &t, &down, &td, &flows);
        let ideal_down = 1.0 / n as f64;
        eprintln!(
            "maglev M={m} N={n}: N->N+1 moved {:.2} % (ideal {:.2} %, x{:.3}); N->N-1 moved {:.2} % (ideal {:.2} %, x{:.3}); worst flow share off even {:.3} %",
            mv_up * 100.0,
            ideal_up * 100.0,
            mv_up / ideal_up,
            mv_down * 100.0,
            ideal_down * 100.0,
            mv_down / ideal_down,
            worst * 100.0
        );
        assert!(mv_up <= 1.5 * ideal_up, "n {n} up: {mv_up}");
        assert!(mv_down <= 1.5 * ideal_down, "n {n} down: {mv_down}");
        assert!(mv_up >= 0.9 * ideal_up && mv_down >= 0.9 * ideal_down);
    }
    // Order-independent: the same set in another order fills the same table.
    let a = [3u32, 1, 2];
    let mut s = a;
    s.sort();
    assert_eq!(maglev::fill(&s, 1009), maglev::fill(&[1, 2, 3], 1009));
}

#[test]
fn install_is_atomic_for_concurrent_readers() {
    let r = Rig::new("generations = 3\nbuckets = 10007");
    let h = r.h();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(std::sync::Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let h = Arc::clone(&h);
            let stop = Arc::clone(&stop);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ring = h.ring();
                    assert!(ring.gens.len() <= 4);
                    for (i, g) in ring.gens.iter().enumerate() {
                        if i > 0 {
                            assert_eq!(g.number + i as u64, ring.gens[0].number, "ring order");
                        }
                        // The generation is whole: its buckets cover exactly its route set.
                        let mut want: Vec<u32> =
                            g.routes.iter().map(|r| r.nexthop.to_bits()).collect();
                        want.sort();
                        want.dedup();
                        match g.vips() {
                            [] => assert!(want.is_empty()),
                            [v] => {
                                assert_eq!(v.nexthops, want);
                                assert_eq!(v.buckets().len(), 10007);
                                let mut used = vec![false; want.len()];
                                for &b in v.buckets() {
                                    used[usize::from(b)] = true;
                                }
                                assert!(used.iter().all(|u| *u), "every next hop has buckets");
                            }
                            more => panic!("{} prefixes", more.len()),
                        }
                    }
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    // Writer: flap between 2..=6 next hops, one change per install.
    start.wait();
    let mut n = 2u8;
    for i in 0..300 {
        if i % 2 == 0 && n < 6 || n <= 2 {
            n += 1;
            h.queue_add(Route::parse("10.0.10.0", "32", &server(n).to_string()).unwrap())
                .unwrap();
        } else {
            h.queue_del(Route::parse("10.0.10.0", "32", &server(n).to_string()).unwrap())
                .unwrap();
            n -= 1;
        }
        assert!(h.install().unwrap().changed);
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("concurrent readers checked {checked} rings during 300 installs");
    assert!(checked > 0);
    assert_eq!(h.generations().len(), 4);
}

#[test]
fn config_errors_name_the_field() {
    for (opts, needle) in [
        ("generations = 0", "generations"),
        ("generations = 16", "generations"),
        ("buckets = 1000", "buckets"),
        ("mode = \"fast\"", "mode"),
        ("bogus = 1", "bogus"),
    ] {
        let text = format!("[pipeline]\nstages = [\"ecmper\"]\n\n[stage.ecmper]\n{opts}\n");
        let cfg = SwitchConfig::parse(&text, Path::new("t.toml")).unwrap();
        let e = match assemble_with_ports(&cfg, Vec::new()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{opts} accepted"),
        };
        assert!(e.contains(needle) && e.contains("t.toml:"), "{opts}: {e}");
    }
}
