//! ns per packet through `forward`: parse once, exact lookup in a 1024-entry
//! table, destination MAC rewrite. In memory, no ports.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataplane::stages::forward::{Forward, schema};
use dataplane::{Meta, Stage};
use packet::PacketBuf;
use packet::build;
use packet::wire::EthernetAddress;
use tables::{ActionCall, ActionId, EntrySpec, FieldMatch, Table};

fn table(n: u32) -> Arc<Table> {
    let t = Table::new(schema()).unwrap();
    for i in 0..n {
        t.insert(EntrySpec {
            key: vec![FieldMatch::Exact(u128::from(0x0a00_0000 + i))],
            priority: 0,
            action: ActionCall::new(ActionId(1), [u128::from(i % 4), 0x0242_c0a8_0c02]),
        })
        .unwrap();
    }
    Arc::new(t)
}

fn bench(c: &mut Criterion) {
    let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let frames: Vec<PacketBuf> = (0..64u32)
        .map(|i| {
            let dst = Ipv4Addr::from(0x0a00_0000 + (i * 13) % 1024);
            let f = build::pad(
                build::udp_ipv4(mac, mac, Ipv4Addr::new(10, 1, 0, 1), dst, 1000, 2000, b""),
                60,
            );
            PacketBuf::from_slice(&f).unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(frames.len() as u64));
    let mut st = Forward::new(table(1024));
    let mut frames = frames;
    g.bench_function(
        "parse+lookup+rewrite, 64-byte UDP, 1024 entries, batch of 64",
        |b| {
            b.iter(|| {
                st.begin_batch();
                for p in frames.iter_mut() {
                    let hdr = packet::parse::parse(p.frame()).unwrap();
                    let mut m = Meta::new(hdr, 1);
                    black_box(st.process(p, &mut m));
                    black_box(m.egress);
                }
            })
        },
    );
    g.bench_function("parse only", |b| {
        b.iter(|| {
            for p in frames.iter() {
                black_box(packet::parse::parse(black_box(p.frame())).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
