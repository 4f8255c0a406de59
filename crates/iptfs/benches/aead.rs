//! Raw AES-GCM seal/open throughput of the candidate crates on ESP-sized buffers, to justify the
//! choice of crypto backend. `--features aws-lc` adds aws-lc-rs.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const KEY128: [u8; 16] = *b"JPjyOWBeVEQiMe7h";
const SIZES: [usize; 2] = [64, 1448];

/// ring and aws-lc-rs share one AEAD API, so one body measures both.
macro_rules! ring_api_bench {
    ($c:expr, $name:literal, $krate:ident) => {{
        use $krate::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY128).unwrap());
        let mut g = $c.benchmark_group("aead_seal");
        for &n in &SIZES {
            g.throughput(Throughput::Bytes(n as u64));
            let mut buf = vec![0u8; n];
            let mut ctr = 0u64;
            g.bench_with_input(BenchmarkId::new($name, n), &n, |b, _| {
                b.iter(|| {
                    ctr += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&ctr.to_be_bytes());
                    let tag = key
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&[1u8; 8]),
                            &mut buf,
                        )
                        .unwrap();
                    let _ = black_box(tag);
                })
            });
        }
        g.finish();
    }};
}

fn ring_bench(c: &mut Criterion) {
    ring_api_bench!(c, "ring", ring);
}

fn rustcrypto_bench(c: &mut Criterion) {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes128Gcm, Nonce};
    let cipher = Aes128Gcm::new_from_slice(&KEY128).unwrap();
    let mut g = c.benchmark_group("aead_seal");
    for &n in &SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        let mut buf = vec![0u8; n];
        let mut ctr = 0u64;
        g.bench_with_input(BenchmarkId::new("aes-gcm", n), &n, |b, _| {
            b.iter(|| {
                ctr += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&ctr.to_be_bytes());
                let tag = cipher
                    .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[1u8; 8], &mut buf)
                    .unwrap();
                let _ = black_box(tag);
            })
        });
    }
    g.finish();
}

#[cfg(feature = "aws-lc")]
fn awslc_bench(c: &mut Criterion) {
    ring_api_bench!(c, "aws-lc-rs", aws_lc_rs);
}

#[cfg(not(feature = "aws-lc"))]
fn awslc_bench(_: &mut Criterion) {}

criterion_group!(benches, ring_bench, rustcrypto_bench, awslc_bench);
criterion_main!(benches);
