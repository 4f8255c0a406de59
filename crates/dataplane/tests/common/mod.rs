//! What the dataplane tests share: the seed-000 addresses and a config with the
//! entries the upstream controller installs (.100 on port 132, .2 on port 140).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use dataplane::port::memory::{MemoryHandle, MemoryPort};
use dataplane::port::pcap::{PcapInPort, PcapOutPort};
use dataplane::{DropReason, Port, Switch, SwitchConfig, Worker, assemble_with_ports};
use packet::wire::EthernetAddress;
use packet::{PacketBuf, Pool};

pub const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0x42, 0xc0, 0xa8, 0x0c, 0x64]);
pub const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0x42, 0xc0, 0xa8, 0x0c, 0x02]);
/// Some other MAC: what a sender puts when it does not know the server's.
pub const ANY_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x99]);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 12, 100);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 12, 2);
pub const PORTS: [u16; 3] = [132, 140, 148];

/// Pipeline and entries of the p4containerflow switch (no ports).
pub const CONFIG: &str = r#"
[pipeline]
stages = ["arp_forward", "forward"]

[[entry]]
table = "forward"
key = { "hdr.ipv4.dst_addr" = "192.168.12.100" }
action = "set_egress_port"
params = { port = 132 }

[[entry]]
table = "forward"
key = { "hdr.ipv4.dst_addr" = "192.168.12.2" }
action = "set_egress_port_with_mac"
params = { port = 140, dst_mac = "02:42:c0:a8:0c:02" }

[[entry]]
table = "arp_forward"
key = { "hdr.arp.target_proto_addr" = "192.168.12.2" }
action = "set_egress_port"
params = { port = 140 }

[[entry]]
table = "arp_forward"
key = { "hdr.arp.target_proto_addr" = "192.168.12.100" }
action = "set_egress_port"
params = { port = 132 }
"#;

/// A switch from a config text with in-memory ports 132, 140 and 148, run by hand.
pub struct Rig {
    pub sw: Arc<Switch>,
    pub worker: Worker,
    pub ports: Vec<(u16, MemoryHandle)>,
}

impl Rig {
    pub fn from_config(text: &str) -> Rig {
        let cfg = SwitchConfig::parse(text, Path::new("test.toml")).unwrap();
        let mut ports: Vec<Box<dyn Port>> = Vec::new();
        let mut handles = Vec::new();
        for id in PORTS {
            let (p, h) = MemoryPort::new(id);
            ports.push(Box::new(p));
            handles.push((id, h));
        }
        let a = assemble_with_ports(&cfg, ports).unwrap();
        Rig {
            sw: a.switch,
            worker: a.worker,
            ports: handles,
        }
    }
    pub fn h(&self, id: u16) -> &MemoryHandle {
        &self.ports.iter().find(|(i, _)| *i == id).unwrap().1
    }
    /// Inject a frame on `port` and run the worker until every port's input is consumed.
    pub fn send(&mut self, port: u16, frame: &[u8]) {
        self.h(port).inject(frame);
        while self.ports.iter().any(|(_, h)| h.pending() > 0) {
            self.worker.poll_once().unwrap();
        }
    }
    pub fn sent(&self, port: u16) -> Vec<Vec<u8>> {
        self.h(port).take_sent()
    }
    pub fn drops(&self, port: u16, r: DropReason) -> u64 {
        self.sw.port(port).unwrap().counters.drops(r)
    }
}

/// Every frame of a pcap file, read through the pcap port backend.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut p = PcapInPort::open(0, path).unwrap();
    let mut pool = Pool::new(8);
    let mut batch: Vec<PacketBuf> = Vec::new();
    while !p.rx_exhausted() {
        p.rx_batch(&mut pool, &mut batch, 64).unwrap();
    }
    batch.iter().map(|b| b.frame().to_vec()).collect()
}

/// Write frames to a pcap file through the pcap port backend.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut p = PcapOutPort::create(0, path).unwrap();
    let mut pool = Pool::new(8);
    let mut batch: Vec<PacketBuf> = frames
        .iter()
        .map(|f| PacketBuf::from_slice(f).unwrap())
        .collect();
    p.tx_batch(&mut pool, &mut batch).unwrap();
    p.flush().unwrap();
}
