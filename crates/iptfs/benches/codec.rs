//! Single-core encrypt+encode and decrypt+decode rates for IP-TFS (AGGFRAG, 1500-octet IPv4
//! outers) and plain ESP (aggregation off), with 1500- and 64-octet inner packets.
//! Throughput is inner octets (for Gbit/s) or inner packets (for packets/s).

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iptfs::testutil::ipv4_packet;
use iptfs::{EspInbound, EspOutbound, Poll, Receiver, ReceiverConfig, SaKey, Sender, SenderConfig};
use std::hint::black_box;

const SPI: u32 = 0xAAA;

fn key() -> SaKey {
    SaKey::from_hex("4a506a794f574265564551694d6537681a2b1a2b").unwrap()
}

fn cfg(plain: bool) -> SenderConfig {
    if plain {
        SenderConfig::plain()
    } else {
        // Demand mode, every outer filled (fragmenting), as a loaded tunnel behaves.
        SenderConfig {
            whole_packets_only: false,
            ..SenderConfig::linux_demand()
        }
    }
}

fn cases() -> Vec<(&'static str, bool, usize, usize)> {
    // (name, plain, inner size, packets per iteration)
    vec![
        ("iptfs", false, 1500, 200),
        ("iptfs", false, 64, 2000),
        ("plain", true, 1400, 200),
        ("plain", true, 64, 2000),
    ]
}

fn encode_all(tx: &mut Sender, pkts: &[Vec<u8>], buf: &mut [u8], out: Option<&mut Vec<Vec<u8>>>) {
    for p in pkts {
        tx.push(0, p).unwrap();
    }
    let mut out = out;
    while let Poll::Send(s) = tx.poll(0, buf).unwrap() {
        if let Some(o) = out.as_deref_mut() {
            o.push(buf[..s.len].to_vec());
        }
        black_box(s);
    }
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encrypt_encode");
    for (name, plain, size, n) in cases() {
        let pkts: Vec<_> = (0..n).map(|i| ipv4_packet(size, i as u32)).collect();
        let mut tx = Sender::new(cfg(plain), EspOutbound::new(SPI, &key(), true).unwrap()).unwrap();
        let mut buf = vec![0u8; tx.max_esp_len()];
        g.throughput(Throughput::Bytes((size * n) as u64));
        g.bench_function(BenchmarkId::new(format!("{name}_bytes"), size), |b| {
            b.iter(|| encode_all(&mut tx, &pkts, &mut buf, None))
        });
        if size == 64 {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(format!("{name}_pkts"), size), |b| {
                b.iter(|| encode_all(&mut tx, &pkts, &mut buf, None))
            });
        }
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decrypt_decode");
    for (name, plain, size, n) in cases() {
        let pkts: Vec<_> = (0..n).map(|i| ipv4_packet(size, i as u32)).collect();
        let mut tx =
            Sender::new(cfg(plain), EspOutbound::new(SPI, &key(), false).unwrap()).unwrap();
        let mut buf = vec![0u8; tx.max_esp_len()];
        let mut outers = Vec::new();
        encode_all(&mut tx, &pkts, &mut buf, Some(&mut outers));
        let run = |b: &mut criterion::Bencher| {
            b.iter_batched(
                || {
                    let rx = Receiver::new(
                        ReceiverConfig::default(),
                        EspInbound::new(SPI, &key(), false, 64).unwrap(),
                    )
                    .unwrap();
                    (rx, outers.clone())
                },
                |(mut rx, mut outers)| {
                    let mut delivered = 0usize;
                    for o in outers.iter_mut() {
                        rx.receive(0, o, &mut |p: &[u8]| delivered += p.len())
                            .unwrap();
                    }
                    assert_eq!(delivered, size * n);
                    rx
                },
                BatchSize::LargeInput,
            )
        };
        g.throughput(Throughput::Bytes((size * n) as u64));
        g.bench_function(BenchmarkId::new(format!("{name}_bytes"), size), run);
        if size == 64 {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(format!("{name}_pkts"), size), run);
        }
    }
    g.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);
