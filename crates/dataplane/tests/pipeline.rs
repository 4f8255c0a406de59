//! The seed-000 pipeline (`arp_forward`, `forward`) between in-memory ports:
//! what comes out of which port, what is counted, what is dropped and why.

mod common;
use common::*;

use std::net::Ipv4Addr;
use std::path::Path;

use dataplane::port::memory::MemoryPort;
use dataplane::{DropReason, Port, SwitchConfig, assemble_with_ports};
use packet::build;
use packet::parse::ParseError;
use packet::wire::EthernetAddress;

const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0x42, 0xc0, 0xa8, 0x0c, 0x02]);
const SWITCH_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 12, 2);

/// The seed config plus `extra`.
fn rig(extra: &str) -> Rig {
    Rig::from_config(&format!("{CONFIG}\n{extra}"))
}

fn udp_to(dst: Ipv4Addr) -> Vec<u8> {
    build::udp_ipv4(
        CLIENT_MAC,
        SWITCH_MAC,
        CLIENT,
        dst,
        40000,
        8080,
        b"hello switchboard",
    )
}

#[test]
fn set_egress_port_with_mac_forwards_and_rewrites_the_destination_mac() {
    let mut r = rig("");
    let frame = udp_to(SERVER);
    r.send(132, &frame);
    let out = r.sent(140);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &SERVER_MAC.0);
    assert_eq!(
        &out[0][6..],
        &frame[6..],
        "only the destination MAC changes"
    );
    assert!(r.sent(132).is_empty() && r.sent(148).is_empty());
    let c = r.sw.port(140).unwrap().counters.snapshot();
    assert_eq!((c.tx_packets, c.tx_bytes), (1, frame.len() as u64));
    let c = r.sw.port(132).unwrap().counters.snapshot();
    assert_eq!((c.rx_packets, c.rx_bytes), (1, frame.len() as u64));
    let t = r.sw.tables.get("forward").unwrap();
    assert_eq!(t.stats().hits, 1);
    let hit: Vec<_> = t.entries().into_iter().filter(|e| e.1 > 0).collect();
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].2, frame.len() as u64, "direct counter counts bytes");
}

#[test]
fn set_egress_port_leaves_the_frame_untouched() {
    let mut r = rig("");
    let frame = build::udp_ipv4(
        SERVER_MAC, CLIENT_MAC, SERVER, CLIENT, 8080, 40000, b"reply",
    );
    r.send(140, &frame);
    assert_eq!(r.sent(132), vec![frame]);
}

#[test]
fn a_miss_is_dropped_by_the_default_action_and_counted() {
    let mut r = rig("");
    r.send(132, &udp_to(Ipv4Addr::new(192, 168, 12, 77)));
    assert!(r.ports.iter().all(|(_, h)| h.take_sent().is_empty()));
    assert_eq!(r.drops(132, DropReason::ForwardMiss), 1);
    assert_eq!(r.sw.tables.get("forward").unwrap().stats().misses, 1);
}

#[test]
fn non_ipv4_and_ttl_zero_are_dropped_like_the_seed_parser() {
    let mut r = rig("");
    let v6 = build::udp_ipv6(
        CLIENT_MAC,
        SWITCH_MAC,
        "fd00::1".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        1,
        2,
        b"x",
    );
    r.send(132, &v6);
    assert_eq!(r.drops(132, DropReason::NotIpv4), 1);
    let mut ttl0 = udp_to(SERVER);
    ttl0[14 + 8] = 0;
    r.send(132, &ttl0);
    assert_eq!(r.drops(132, DropReason::TtlZero), 1);
    assert!(r.sent(140).is_empty());
}

#[test]
fn arp_is_steered_by_target_address_and_unknown_targets_are_dropped() {
    let mut r = rig("");
    let req = build::arp_request(CLIENT_MAC, CLIENT, SERVER);
    r.send(132, &req);
    assert_eq!(r.sent(140), vec![req]);
    assert!(r.sent(148).is_empty());
    r.send(
        132,
        &build::arp_request(CLIENT_MAC, CLIENT, Ipv4Addr::new(192, 168, 12, 9)),
    );
    assert_eq!(r.drops(132, DropReason::ArpMiss), 1);
    assert!(r.ports.iter().all(|(_, h)| h.take_sent().is_empty()));
}

#[test]
fn gratuitous_arp_is_flooded_to_every_port_but_the_ingress() {
    let mut r = rig("");
    let garp = build::gratuitous_arp(SERVER_MAC, SERVER);
    r.send(148, &garp);
    assert_eq!(r.sent(132), vec![garp.clone()]);
    assert_eq!(r.sent(140), vec![garp]);
    assert!(r.sent(148).is_empty());
}

#[test]
fn gratuitous_arp_follows_upstream_steering_when_the_fix_is_off() {
    let mut r = rig("[stage.arp_forward]\nflood_gratuitous = false\n");
    let garp = build::gratuitous_arp(SERVER_MAC, SERVER);
    r.send(148, &garp);
    assert_eq!(
        r.sent(140),
        vec![garp],
        "steered to the recorded port of .2"
    );
    assert!(r.sent(132).is_empty() && r.sent(148).is_empty());
}

#[test]
fn flood_to_ingress_includes_the_ingress_port() {
    let mut r = rig("[stage.arp_forward]\nflood_to_ingress = true\n");
    let garp = build::gratuitous_arp(SERVER_MAC, SERVER);
    r.send(148, &garp);
    for p in [132, 140, 148] {
        assert_eq!(r.sent(p).len(), 1, "port {p}");
    }
}

#[test]
fn a_table_change_takes_effect_on_the_next_batch() {
    let mut r = rig("");
    let t = r.sw.tables.get("forward").unwrap().clone();
    let e: tables::EntryJson = serde_json::from_value(serde_json::json!({
        "key": {"hdr.ipv4.dst_addr": "192.168.12.2"},
        "action": "set_egress_port",
        "params": {"port": 148}
    }))
    .unwrap();
    t.modify(t.entry_from_json(&e).unwrap()).unwrap();
    r.send(132, &udp_to(SERVER));
    assert_eq!(r.sent(148).len(), 1);
    assert!(r.sent(140).is_empty());
}

#[test]
fn an_entry_pointing_at_a_missing_port_is_counted_not_sent() {
    let mut r = rig("");
    let t = r.sw.tables.get("forward").unwrap().clone();
    let e: tables::EntryJson = serde_json::from_value(serde_json::json!({
        "key": {"hdr.ipv4.dst_addr": "192.168.12.50"},
        "action": "set_egress_port",
        "params": {"port": 999}
    }))
    .unwrap();
    t.insert(t.entry_from_json(&e).unwrap()).unwrap();
    r.send(132, &udp_to(Ipv4Addr::new(192, 168, 12, 50)));
    assert_eq!(r.drops(132, DropReason::UnknownEgressPort), 1);
}

#[test]
fn truncated_and_malformed_frames_are_counted_and_dropped_without_panic() {
    let mut r = rig("");
    let good = udp_to(SERVER);
    let mut dropped_expected = 0;
    // Every prefix of a good frame: short ones fail to parse, none may panic or escape
    // with a wrong length.
    for n in 0..good.len() {
        r.send(132, &good[..n]);
        dropped_expected += 1;
    }
    let c = r.sw.port(132).unwrap().counters.snapshot();
    assert_eq!(c.rx_packets, good.len() as u64);
    // Prefixes that still parse are forwarded only if the IPv4 header is complete.
    let forwarded = r.sent(140).len() as u64;
    assert_eq!(c.rx_dropped + forwarded, dropped_expected);
    assert!(r.drops(132, DropReason::Parse(ParseError::TruncatedIpv4)) > 0);
    // Garbage of every kind.
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x41;
    r.send(132, &bad_ihl);
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    r.send(132, &bad_version);
    let mut arp = build::arp_request(CLIENT_MAC, CLIENT, SERVER);
    arp.truncate(14 + 20);
    r.send(132, &arp);
    let after = r.sw.port(132).unwrap().counters.snapshot();
    assert_eq!(after.rx_dropped, c.rx_dropped + 3, "{:?}", after.drops);
}

#[test]
fn reinitialize_restores_the_configured_entries() {
    let r = rig("");
    r.sw.clear_tables();
    assert_eq!(r.sw.tables.get("forward").unwrap().len(), 0);
    r.sw.reinitialize().unwrap();
    assert_eq!(r.sw.tables.get("forward").unwrap().len(), 2);
    assert_eq!(r.sw.tables.get("arp_forward").unwrap().len(), 2);
}

#[test]
fn config_errors_name_the_file_line_and_field() {
    let bad_entry = format!(
        "{CONFIG}\n[[entry]]\ntable = \"forward\"\nkey = {{ \"hdr.ipv4.dst_addr\" = \"192.168.12.300\" }}\naction = \"set_egress_port\"\nparams = {{ port = 1 }}\n"
    );
    let cfg = SwitchConfig::parse(&bad_entry, Path::new("sw.toml")).unwrap();
    let err = assemble_with_ports(&cfg, vec![]).err().unwrap().to_string();
    assert!(err.starts_with("sw.toml:"), "{err}");
    assert!(
        err.contains("entry[4]") && err.contains("192.168.12.300"),
        "{err}"
    );
    let line: usize = err.split(':').nth(1).unwrap().parse().unwrap();
    assert_eq!(
        bad_entry.lines().nth(line - 1).unwrap(),
        "[[entry]]",
        "{err}"
    );

    let err = SwitchConfig::parse(
        "[pipeline]\nstages = [\"forward\"]\nbogus = 1\n",
        Path::new("x.toml"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("x.toml:3:") && err.contains("bogus"),
        "{err}"
    );

    let cfg = SwitchConfig::parse("[pipeline]\nstages = [\"fwd\"]\n", Path::new("y.toml")).unwrap();
    let err = assemble_with_ports(&cfg, vec![]).err().unwrap().to_string();
    assert!(
        err.starts_with("y.toml:2:")
            && err.contains("pipeline.stages[0]")
            && err.contains("unknown stage 'fwd'"),
        "{err}"
    );

    let err = SwitchConfig::parse(
        "[pipeline]\nstages = [\"forward\"]\n[[port]]\nid = 1\nbackend = \"afpacket\"\n",
        Path::new("z.toml"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("port[0].iface") && err.contains("z.toml:3"),
        "{err}"
    );
}

fn rig_with(config: &str, ids: &[u16]) -> Result<Rig, dataplane::ConfigError> {
    let cfg = SwitchConfig::parse(config, Path::new("t.toml")).unwrap();
    let mut ports: Vec<Box<dyn Port>> = Vec::new();
    let mut handles = Vec::new();
    for &id in ids {
        let (p, h) = MemoryPort::new(id);
        ports.push(Box::new(p));
        handles.push((id, h));
    }
    let a = assemble_with_ports(&cfg, ports)?;
    Ok(Rig {
        sw: a.switch,
        worker: a.worker,
        ports: handles,
    })
}

#[test]
fn realtime_priority_is_checked() {
    let base = "[pipeline]\nstages = [\"forward\"]\n[engine]\n";
    let ok = SwitchConfig::parse(
        &format!("{base}realtime_priority = 10\n"),
        Path::new("r.toml"),
    )
    .unwrap();
    assert_eq!(ok.engine.realtime_priority, Some(10));
    let err = SwitchConfig::parse(
        &format!("{base}realtime_priority = 0\n"),
        Path::new("r.toml"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("r.toml:4") && err.contains("engine.realtime_priority"),
        "{err}"
    );
    let err = SwitchConfig::parse(
        &format!("{base}busy_poll = true\nrealtime_priority = 10\n"),
        Path::new("r.toml"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("starve"), "{err}");
}

#[test]
fn a_config_entry_sending_to_a_missing_port_is_refused_at_start() {
    let text = format!(
        "{CONFIG}\n[[entry]]\ntable = \"forward\"\nkey = {{ \"hdr.ipv4.dst_addr\" = \"10.0.0.1\" }}\naction = \"set_egress_port\"\nparams = {{ port = 999 }}\n"
    );
    let err = rig_with(&text, &PORTS).err().unwrap().to_string();
    assert!(
        err.contains("entry[4].params.port") && err.contains("unknown port 999"),
        "{err}"
    );
}

#[test]
fn arp_still_reaches_arp_forward_when_forward_comes_first() {
    let text = CONFIG.replace(
        "stages = [\"arp_forward\", \"forward\"]",
        "stages = [\"forward\", \"arp_forward\"]",
    );
    let mut r = rig_with(&text, &PORTS).unwrap();
    let req = build::arp_request(CLIENT_MAC, CLIENT, SERVER);
    r.send(132, &req);
    assert_eq!(r.sent(140), vec![req]);
    r.send(132, &udp_to(SERVER));
    assert_eq!(r.sent(140).len(), 1);
}

#[test]
fn a_flood_with_nowhere_to_go_is_counted_as_a_drop() {
    let mut r = rig_with(
        "[pipeline]\nstages = [\"arp_forward\", \"forward\"]\n",
        &[148],
    )
    .unwrap();
    r.send(148, &build::gratuitous_arp(SERVER_MAC, SERVER));
    assert!(r.sent(148).is_empty());
    assert_eq!(r.drops(148, DropReason::NoEgress), 1);
}

#[test]
fn reinitialize_also_restores_the_default_action_in_one_publish() {
    let r = rig("");
    let t = r.sw.tables.get("forward").unwrap().clone();
    let e: tables::EntryJson = serde_json::from_value(serde_json::json!({
        "key": {"hdr.ipv4.dst_addr": "192.168.12.99"},
        "action": "set_egress_port",
        "params": {"port": 148}
    }))
    .unwrap();
    t.insert(t.entry_from_json(&e).unwrap()).unwrap();
    t.set_default(
        t.action_from_json(
            "set_egress_port",
            &serde_json::from_value(serde_json::json!({"port": 148})).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let before = t.version();
    r.sw.reinitialize().unwrap();
    assert_eq!(t.version(), before + 1, "one publish per table");
    assert_eq!(t.len(), 2);
    assert_eq!(t.default_action(), t.schema().default_action);
}

#[test]
fn a_bad_ipv4_checksum_is_forwarded_with_the_seed_programs_mac_tag() {
    let mut r = rig("");
    let mut bad = udp_to(SERVER);
    bad[14 + 10] ^= 0xff; // corrupt the header checksum
    r.send(132, &bad);
    let out = r.sent(140);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &[0, 0, 0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(&out[0][6..], &bad[6..]);
    // A good one keeps the entry's MAC.
    r.send(132, &udp_to(SERVER));
    assert_eq!(&r.sent(140)[0][0..6], &SERVER_MAC.0);
}
