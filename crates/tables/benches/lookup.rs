//! Lookup cost: exact hit on a 1024-entry table, lpm on 10k IPv4 prefixes, and a small
//! ternary ACL (the one storage kind that scans).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tables::{
    ActionCall, ActionId, ActionSchema, EntrySpec, FieldMatch, KeyField, Op, ParamSchema, Table,
    TableSchema,
};

fn schema(name: &str, keys: Vec<KeyField>) -> TableSchema {
    TableSchema {
        name: name.into(),
        keys,
        actions: vec![
            ActionSchema::new("forward", vec![ParamSchema::new("port", 9)]),
            ActionSchema::new("drop", vec![]),
        ],
        default_action: ActionCall::new(ActionId(1), []),
        const_default: false,
        size: 1 << 16,
    }
}

fn spec(key: Vec<FieldMatch>, priority: i32) -> EntrySpec {
    EntrySpec {
        key,
        priority,
        action: ActionCall::new(ActionId(0), [1]),
    }
}

/// Deterministic pseudo-random numbers (xorshift), so runs are comparable.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn bench(c: &mut Criterion) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;

    // exact: (mac 48, vlan 12), 1024 entries
    let t = Table::new(schema(
        "mac",
        vec![KeyField::exact("dst_mac", 48), KeyField::exact("vlan", 12)],
    ))
    .unwrap();
    let keys: Vec<[u128; 2]> = (0..1024)
        .map(|i| [u128::from(rng(&mut seed) & 0xffff_ffff_ffff), i % 4096])
        .collect();
    let ops: Vec<Op> = keys
        .iter()
        .map(|k| Op::Insert(spec(k.iter().map(|&v| FieldMatch::Exact(v)).collect(), 0)))
        .collect();
    t.apply(&ops).unwrap();
    let snap = t.snapshot();
    let mut i = 0;
    c.bench_function("exact_hit_1024", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(snap.lookup(black_box(&keys[i])))
        })
    });
    c.bench_function("exact_hit_1024_counted", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(snap.lookup_counted(black_box(&keys[i]), 64).is_hit())
        })
    });

    // lpm: 10k IPv4 prefixes, lengths 8..=32 (so up to 25 levels), random probes
    let t = Table::new(schema("lpm", vec![KeyField::lpm("dst_addr", 32)])).unwrap();
    let mut ops = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while ops.len() < 10_000 {
        let len = 8 + (rng(&mut seed) % 25) as u16;
        let v = (rng(&mut seed) as u32) & (u32::MAX << (32 - len));
        if seen.insert((v, len)) {
            ops.push(Op::Insert(spec(
                vec![FieldMatch::Lpm {
                    value: u128::from(v),
                    prefix_len: len,
                }],
                0,
            )));
        }
    }
    ops.push(Op::Insert(spec(
        vec![FieldMatch::Lpm {
            value: 0,
            prefix_len: 0,
        }],
        0,
    )));
    t.apply(&ops).unwrap();
    let snap = t.snapshot();
    let probes: Vec<[u128; 1]> = (0..4096)
        .map(|_| [u128::from(rng(&mut seed) as u32)])
        .collect();
    c.bench_function("lpm_10k_random", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(snap.lookup(black_box(&probes[i])))
        })
    });

    // one insert into the 10k lpm table: clone-modify-publish cost
    let mut n = 0u128;
    c.bench_function("lpm_10k_insert_delete", |b| {
        b.iter(|| {
            n = (n + 1) & 0xff;
            let key = vec![FieldMatch::Lpm {
                value: 0xc0a8_0000 | n,
                prefix_len: 32,
            }];
            t.insert(spec(key.clone(), 0)).unwrap();
            t.delete(&key).unwrap();
        })
    });

    // ternary: 64-rule ACL on (src 32, dst 32, proto 8), probes mostly missing (worst case)
    let t = Table::new(schema(
        "acl",
        vec![
            KeyField::ternary("src", 32),
            KeyField::ternary("dst", 32),
            KeyField::ternary("proto", 8),
        ],
    ))
    .unwrap();
    let ops: Vec<Op> = (0..64)
        .map(|p| {
            Op::Insert(spec(
                vec![
                    FieldMatch::Ternary {
                        value: u128::from(rng(&mut seed) as u32 & 0xffff_0000),
                        mask: 0xffff_0000,
                    },
                    FieldMatch::Ternary { value: 0, mask: 0 },
                    FieldMatch::Ternary {
                        value: 6,
                        mask: 0xff,
                    },
                ],
                p,
            ))
        })
        .collect();
    t.apply(&ops).unwrap();
    let snap = t.snapshot();
    c.bench_function("ternary_64_miss", |b| {
        b.iter(|| black_box(snap.lookup(black_box(&[0x0102_0304, 0x0a00_0001, 17]))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
