//! ns per packet through `ecmper`, compat and resilient mode: parse once, hash (CRC-32 of
//! 9 bytes), LPM + next-hop + neighbour lookups (compat: three tables; resilient: the
//! generation's prefix list and Maglev buckets, then `neigh`), MAC/TTL/checksum rewrite.
//! 64 flows to one VIP with 4 servers, in memory, no ports. Compare with `forward`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataplane::stages::ecmper::control::Route;
use dataplane::stages::ecmper::{Ecmper, EcmperConfig, Mode};
use dataplane::{Meta, Stage};
use packet::PacketBuf;
use packet::build;
use packet::wire::EthernetAddress;
use tables::Table;

fn stage(mode: Mode) -> Ecmper {
    let cfg = EcmperConfig {
        mode,
        ..EcmperConfig::default()
    };
    let built = Ecmper::build(cfg, |s| {
        Table::new(s)
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    let h = built.handle;
    for n in 1..=4u8 {
        h.neigh_add(
            Ipv4Addr::new(10, 0, 0, n),
            u16::from(n),
            0x0203_0405_0600 + u64::from(n),
        )
        .unwrap();
        h.queue_add(Route::parse("10.0.10.0", "32", &format!("10.0.0.{n}")).unwrap())
            .unwrap();
        h.install().unwrap();
    }
    built.stage
}

fn bench(c: &mut Criterion) {
    let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let mk = || -> Vec<PacketBuf> {
        (0..64u32)
            .map(|i| {
                let src = Ipv4Addr::from(0x0a00_0100 + i * 37);
                let f = build::pad(
                    build::udp_ipv4(
                        mac,
                        mac,
                        src,
                        Ipv4Addr::new(10, 0, 10, 0),
                        1000 + i as u16,
                        80,
                        b"",
                    ),
                    60,
                );
                PacketBuf::from_slice(&f).unwrap()
            })
            .collect()
    };
    let mut g = c.benchmark_group("ecmper");
    g.throughput(Throughput::Elements(64));
    for (name, mode) in [("compat", Mode::Compat), ("resilient", Mode::Resilient)] {
        let mut st = stage(mode);
        let mut frames = mk();
        g.bench_function(
            format!("{name}: parse+hash+lookups+rewrite, 64-byte UDP, 4 servers, batch of 64"),
            |b| {
                b.iter(|| {
                    st.begin_batch();
                    for p in frames.iter_mut() {
                        // Keep the TTL from running out across iterations.
                        p.frame_mut()[22] = 64;
                        let hdr = packet::parse::parse(p.frame()).unwrap();
                        let mut m = Meta::new(hdr, 0);
                        black_box(st.process(p, &mut m));
                        black_box(m.egress);
                    }
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
