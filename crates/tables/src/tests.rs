//! Behaviour tests of tables: every storage kind, validation, batches, counters, RCU publish,
//! concurrency, JSON and the registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::*;

const FWD: ActionId = ActionId(0);
const DROP: ActionId = ActionId(1);

fn fwd(port: u128) -> ActionCall {
    ActionCall::new(FWD, [port])
}

fn schema(name: &str, keys: Vec<KeyField>, size: usize) -> TableSchema {
    TableSchema {
        name: name.into(),
        keys,
        actions: vec![
            ActionSchema::new("forward", vec![ParamSchema::new("port", 9)]),
            ActionSchema::new("drop", vec![]),
        ],
        default_action: ActionCall::new(DROP, []),
        const_default: false,
        size,
    }
}

fn exact_table(size: usize) -> Table {
    Table::new(schema(
        "mac_exact",
        vec![KeyField::exact("dst_mac", 48), KeyField::exact("vlan", 12)],
        size,
    ))
    .unwrap()
}

fn lpm_table() -> Table {
    Table::new(schema(
        "ipv4_lpm",
        vec![KeyField::lpm("dst_addr", 32)],
        1 << 16,
    ))
    .unwrap()
}

fn ternary_table() -> Table {
    Table::new(schema(
        "acl",
        vec![
            KeyField::ternary("src_addr", 32),
            KeyField::ternary("proto", 8),
        ],
        64,
    ))
    .unwrap()
}

fn ex(key: &[u128], port: u128) -> EntrySpec {
    EntrySpec {
        key: key.iter().map(|&v| FieldMatch::Exact(v)).collect(),
        priority: 0,
        action: fwd(port),
    }
}

fn lpm(value: u128, prefix_len: u16) -> FieldMatch {
    FieldMatch::Lpm { value, prefix_len }
}

fn tern(value: u128, mask: u128) -> FieldMatch {
    FieldMatch::Ternary { value, mask }
}

fn entry(key: Vec<FieldMatch>, priority: i32, port: u128) -> EntrySpec {
    EntrySpec {
        key,
        priority,
        action: fwd(port),
    }
}

/// Port of the action a lookup of `key` yields, or None on a miss.
fn port_of(t: &Table, key: &[u128]) -> Option<u128> {
    t.snapshot().lookup(key).map(|e| e.action().param(0))
}

fn ip(s: &str) -> u128 {
    u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()))
}

#[test]
fn table_is_send_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Table>();
    assert::<Arc<TableVersion>>();
    assert::<Tables>();
}

#[test]
fn exact_hit_and_default_on_miss() {
    let t = exact_table(16);
    t.insert(ex(&[0x0242_c0a8_0c02, 10], 3)).unwrap();
    t.insert(ex(&[0x0242_c0a8_0c02, 11], 4)).unwrap();
    assert_eq!(port_of(&t, &[0x0242_c0a8_0c02, 10]), Some(3));
    assert_eq!(port_of(&t, &[0x0242_c0a8_0c02, 11]), Some(4));
    assert_eq!(port_of(&t, &[0x0242_c0a8_0c03, 10]), None);
    let snap = t.snapshot();
    let miss = snap.lookup_counted(&[1, 2], 60);
    assert!(!miss.is_hit());
    assert_eq!(miss.action(), &ActionCall::new(DROP, []));
    assert_eq!(snap.default_action().action, DROP);
    // wrong number of key values: a miss, not a panic
    assert!(snap.lookup(&[0x0242_c0a8_0c02]).is_none());
    // bits above the field width are ignored (vlan is 12 bits)
    assert_eq!(port_of(&t, &[0x0242_c0a8_0c02, 10 | 0xf000]), Some(3));
}

#[test]
fn exact_wide_keys_over_128_bits() {
    let t = Table::new(schema(
        "wide",
        vec![KeyField::exact("a", 128), KeyField::exact("b", 64)],
        16,
    ))
    .unwrap();
    t.insert(ex(&[u128::MAX, 7], 1)).unwrap();
    t.insert(ex(&[u128::MAX, 8], 2)).unwrap();
    t.insert(ex(&[1, 7], 3)).unwrap();
    assert_eq!(port_of(&t, &[u128::MAX, 7]), Some(1));
    assert_eq!(port_of(&t, &[u128::MAX, 8]), Some(2));
    assert_eq!(port_of(&t, &[1, 7]), Some(3));
    assert_eq!(port_of(&t, &[1, 8]), None);
    t.delete(&[FieldMatch::Exact(1), FieldMatch::Exact(7)])
        .unwrap();
    assert_eq!(port_of(&t, &[1, 7]), None);
    assert_eq!(t.len(), 2);
}

#[test]
fn lpm_longest_prefix_wins_with_default_route() {
    let t = lpm_table();
    t.insert(entry(vec![lpm(0, 0)], 0, 1)).unwrap();
    t.insert(entry(vec![lpm(ip("10.0.0.0"), 8)], 0, 2)).unwrap();
    t.insert(entry(vec![lpm(ip("10.1.0.0"), 16)], 0, 3))
        .unwrap();
    t.insert(entry(vec![lpm(ip("10.1.2.3"), 32)], 0, 4))
        .unwrap();
    assert_eq!(port_of(&t, &[ip("192.168.1.1")]), Some(1));
    assert_eq!(port_of(&t, &[ip("10.200.0.1")]), Some(2));
    assert_eq!(port_of(&t, &[ip("10.1.200.1")]), Some(3));
    assert_eq!(port_of(&t, &[ip("10.1.2.3")]), Some(4));
    assert_eq!(port_of(&t, &[ip("10.1.2.4")]), Some(3));
    assert_eq!(t.snapshot().prefix_lengths(), vec![32, 16, 8, 0]);
    // removing the /16 falls back to the /8; its level disappears
    t.delete(&[lpm(ip("10.1.0.0"), 16)]).unwrap();
    assert_eq!(port_of(&t, &[ip("10.1.200.1")]), Some(2));
    assert_eq!(t.snapshot().prefix_lengths(), vec![32, 8, 0]);
    // no default route: a miss
    t.delete(&[lpm(0, 0)]).unwrap();
    assert_eq!(port_of(&t, &[ip("192.168.1.1")]), None);
}

#[test]
fn lpm_with_exact_field_separates_vrfs() {
    let t = Table::new(schema(
        "vrf_lpm",
        vec![KeyField::exact("vrf", 8), KeyField::lpm("dst_addr", 32)],
        64,
    ))
    .unwrap();
    t.insert(entry(
        vec![FieldMatch::Exact(1), lpm(ip("10.0.0.0"), 8)],
        0,
        1,
    ))
    .unwrap();
    t.insert(entry(
        vec![FieldMatch::Exact(2), lpm(ip("10.0.0.0"), 16)],
        0,
        2,
    ))
    .unwrap();
    t.insert(entry(vec![FieldMatch::Exact(2), lpm(0, 0)], 0, 3))
        .unwrap();
    assert_eq!(port_of(&t, &[1, ip("10.0.9.9")]), Some(1));
    assert_eq!(port_of(&t, &[2, ip("10.0.9.9")]), Some(2));
    assert_eq!(port_of(&t, &[2, ip("10.9.9.9")]), Some(3));
    assert_eq!(port_of(&t, &[1, ip("11.0.0.1")]), None);
    assert_eq!(port_of(&t, &[3, ip("10.0.9.9")]), None);
}

#[test]
fn lpm_ipv6_wide_key() {
    let t = Table::new(schema(
        "ipv6_lpm",
        vec![KeyField::lpm("dst_addr", 128), KeyField::exact("vrf", 16)],
        64,
    ))
    .unwrap();
    let a = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
    t.insert(entry(
        vec![lpm(a("2001:db8::"), 32), FieldMatch::Exact(0)],
        0,
        1,
    ))
    .unwrap();
    t.insert(entry(
        vec![lpm(a("2001:db8:1::"), 48), FieldMatch::Exact(0)],
        0,
        2,
    ))
    .unwrap();
    t.insert(entry(
        vec![lpm(a("2001:db8:1::1"), 128), FieldMatch::Exact(0)],
        0,
        3,
    ))
    .unwrap();
    assert_eq!(port_of(&t, &[a("2001:db8:2::1"), 0]), Some(1));
    assert_eq!(port_of(&t, &[a("2001:db8:1::2"), 0]), Some(2));
    assert_eq!(port_of(&t, &[a("2001:db8:1::1"), 0]), Some(3));
    assert_eq!(port_of(&t, &[a("2001:db8:1::1"), 1]), None);
    assert_eq!(port_of(&t, &[a("2001:db9::"), 0]), None);
}

#[test]
fn ternary_priority_and_ties() {
    let t = ternary_table();
    let any = tern(0, 0);
    // catch-all at low priority
    t.insert(entry(vec![any, any], 1, 1)).unwrap();
    // 10/8 any proto, priority 10
    t.insert(entry(vec![tern(ip("10.0.0.0"), 0xff00_0000), any], 10, 2))
        .unwrap();
    // tcp from anywhere, priority 10 too, inserted later: loses ties against the 10/8 rule
    t.insert(entry(vec![any, tern(6, 0xff)], 10, 3)).unwrap();
    // 10.1.2.3 udp, priority 20
    t.insert(entry(
        vec![tern(ip("10.1.2.3"), u128::from(u32::MAX)), tern(17, 0xff)],
        20,
        4,
    ))
    .unwrap();
    assert_eq!(port_of(&t, &[ip("10.1.2.3"), 17]), Some(4));
    assert_eq!(
        port_of(&t, &[ip("10.1.2.3"), 6]),
        Some(2),
        "tie: earlier insert wins"
    );
    assert_eq!(port_of(&t, &[ip("11.0.0.1"), 6]), Some(3));
    assert_eq!(port_of(&t, &[ip("11.0.0.1"), 1]), Some(1));
    // raising the tcp rule's priority makes it win
    t.modify(entry(vec![any, tern(6, 0xff)], 15, 3)).unwrap();
    assert_eq!(port_of(&t, &[ip("10.1.2.3"), 6]), Some(3));
    // and deleting it restores the 10/8 rule
    t.delete(&[any, tern(6, 0xff)]).unwrap();
    assert_eq!(port_of(&t, &[ip("10.1.2.3"), 6]), Some(2));
}

#[test]
fn ternary_modify_keeps_insertion_order_for_ties() {
    let t = ternary_table();
    let any = tern(0, 0);
    t.insert(entry(vec![any, tern(6, 0xff)], 5, 1)).unwrap();
    t.insert(entry(vec![tern(ip("10.0.0.0"), 0xff00_0000), any], 5, 2))
        .unwrap();
    // modifying the first entry's action does not move it behind the second
    t.modify(entry(vec![any, tern(6, 0xff)], 5, 7)).unwrap();
    assert_eq!(port_of(&t, &[ip("10.0.0.1"), 6]), Some(7));
}

#[test]
fn ternary_wide_and_multi_lpm() {
    // ternary over > 128 bits uses per-field words
    let t = Table::new(schema(
        "acl6",
        vec![KeyField::ternary("src", 128), KeyField::exact("proto", 8)],
        8,
    ))
    .unwrap();
    t.insert(entry(
        vec![tern(0xfe80 << 112, 0xffff << 112), FieldMatch::Exact(58)],
        1,
        1,
    ))
    .unwrap();
    assert_eq!(port_of(&t, &[(0xfe80 << 112) | 1, 58]), Some(1));
    assert_eq!(port_of(&t, &[(0xfe80 << 112) | 1, 6]), None);
    // an Exact given for a ternary field is stored as an all-ones mask
    t.insert(entry(
        vec![FieldMatch::Exact(5), FieldMatch::Exact(6)],
        0,
        2,
    ))
    .unwrap();
    assert_eq!(t.entries()[1].0.key[0], tern(5, u128::MAX));
    assert_eq!(port_of(&t, &[5, 6]), Some(2));

    // two lpm fields: treated as ternary with prefix masks, priority decides
    let s = schema(
        "src_dst",
        vec![KeyField::lpm("src", 32), KeyField::lpm("dst", 32)],
        8,
    );
    assert_eq!(s.storage_kind(), StorageKind::Ternary);
    let t = Table::new(s).unwrap();
    t.insert(entry(vec![lpm(ip("10.0.0.0"), 8), lpm(0, 0)], 1, 1))
        .unwrap();
    t.insert(entry(vec![lpm(0, 0), lpm(ip("20.0.0.0"), 8)], 2, 2))
        .unwrap();
    assert_eq!(port_of(&t, &[ip("10.0.0.1"), ip("30.0.0.1")]), Some(1));
    assert_eq!(port_of(&t, &[ip("10.0.0.1"), ip("20.0.0.1")]), Some(2));
    assert_eq!(port_of(&t, &[ip("11.0.0.1"), ip("30.0.0.1")]), None);
}

#[test]
fn size_limit_is_enforced() {
    let t = exact_table(2);
    t.insert(ex(&[1, 1], 1)).unwrap();
    t.insert(ex(&[2, 1], 1)).unwrap();
    let e = t.insert(ex(&[3, 1], 1)).unwrap_err();
    assert_eq!(
        e,
        TableError::TableFull {
            table: "mac_exact".into(),
            size: 2
        }
    );
    assert_eq!(e.to_string(), "table 'mac_exact' is full (2 entries)");
    // modify does not count against the limit; delete makes room
    t.modify(ex(&[2, 1], 5)).unwrap();
    t.delete(&[FieldMatch::Exact(1), FieldMatch::Exact(1)])
        .unwrap();
    t.insert(ex(&[3, 1], 1)).unwrap();
    assert_eq!(t.len(), 2);
}

#[test]
fn duplicate_and_missing_keys() {
    let t = lpm_table();
    t.insert(entry(vec![lpm(ip("10.0.0.1"), 32)], 0, 1))
        .unwrap();
    // Exact for an lpm field is the same key as the /32
    let e = t
        .insert(entry(vec![FieldMatch::Exact(ip("10.0.0.1"))], 0, 2))
        .unwrap_err();
    assert!(matches!(e, TableError::DuplicateKey { .. }), "{e}");
    assert!(e.to_string().contains("dst_addr=10.0.0.1/32"), "{e}");
    let e = t
        .modify(entry(vec![lpm(ip("10.0.0.0"), 24)], 0, 2))
        .unwrap_err();
    assert!(matches!(e, TableError::NoSuchEntry { .. }), "{e}");
    let e = t.delete(&[lpm(ip("10.0.0.0"), 24)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "table 'ipv4_lpm': no entry with key {dst_addr=10.0.0.0/24}"
    );
    assert!(e.is_not_found());
    // same value, different prefix length: a different key
    t.insert(entry(vec![lpm(ip("10.0.0.0"), 24)], 0, 2))
        .unwrap();
    assert_eq!(t.len(), 2);
}

#[test]
fn invalid_entries_are_refused() {
    let t = exact_table(8);
    let errs = [
        t.insert(ex(&[1 << 48, 1], 1)).unwrap_err(),
        t.insert(ex(&[1], 1)).unwrap_err(),
        t.insert(EntrySpec {
            action: ActionCall::new(ActionId(9), []),
            ..ex(&[1, 1], 1)
        })
        .unwrap_err(),
        t.insert(EntrySpec {
            action: ActionCall::new(FWD, []),
            ..ex(&[1, 1], 1)
        })
        .unwrap_err(),
        t.insert(ex(&[1, 1], 512)).unwrap_err(),
        t.insert(entry(vec![lpm(0, 0), FieldMatch::Exact(1)], 0, 1))
            .unwrap_err(),
    ];
    assert!(
        matches!(&errs[0], TableError::ValueTooWide { field, bits: 48, .. } if field == "dst_mac")
    );
    assert!(matches!(
        errs[1],
        TableError::KeyFieldCount {
            expected: 2,
            got: 1,
            ..
        }
    ));
    assert!(matches!(errs[2], TableError::UnknownActionId { id: 9, .. }));
    assert!(matches!(
        errs[3],
        TableError::ParamCount {
            expected: 1,
            got: 0,
            ..
        }
    ));
    assert!(
        matches!(&errs[4], TableError::ParamTooWide { param, value: 512, bits: 9, .. } if param == "port")
    );
    assert!(
        matches!(&errs[5], TableError::MatchKindMismatch { field, expected: MatchKind::Exact, got: "lpm", .. } if field == "dst_mac")
    );
    for e in &errs {
        assert_eq!(e.table(), "mac_exact");
        assert!(e.to_string().starts_with("table 'mac_exact'"), "{e}");
    }
    assert_eq!(t.len(), 0);
    assert_eq!(t.version(), 0, "refused writes publish nothing");
}

#[test]
fn default_action_changes_and_const_default() {
    let t = lpm_table();
    t.set_default(fwd(7)).unwrap();
    assert_eq!(t.snapshot().lookup_counted(&[1], 1).action(), &fwd(7));
    assert!(matches!(
        t.set_default(ActionCall::new(FWD, [1000])),
        Err(TableError::ParamTooWide { .. })
    ));
    let mut s = schema("c", vec![KeyField::exact("k", 8)], 4);
    s.const_default = true;
    let t = Table::new(s).unwrap();
    let e = t.set_default(fwd(1)).unwrap_err();
    assert_eq!(e, TableError::ConstDefault { table: "c".into() });
    assert_eq!(t.default_action(), ActionCall::new(DROP, []));
}

#[test]
fn batch_is_atomic() {
    let t = exact_table(4);
    t.insert(ex(&[1, 1], 1)).unwrap();
    let before_version = t.version();
    let before = t.entries();
    let ops = [
        Op::Insert(ex(&[2, 1], 2)),
        Op::Modify(ex(&[1, 1], 9)),
        Op::SetDefault(fwd(3)),
        Op::Insert(ex(&[1, 1], 3)), // duplicate: fails
        Op::Insert(ex(&[3, 1], 3)),
    ];
    let e = t.apply(&ops).unwrap_err();
    match &e {
        TableError::Batch { index, source, .. } => {
            assert_eq!(*index, 3);
            assert!(matches!(**source, TableError::DuplicateKey { .. }));
        }
        other => panic!("expected Batch, got {other:?}"),
    }
    assert!(e.is_conflict());
    assert!(e.to_string().contains("batch op #3"), "{e}");
    assert_eq!(t.version(), before_version);
    assert_eq!(t.entries(), before);
    assert_eq!(t.default_action(), ActionCall::new(DROP, []));
    assert_eq!(port_of(&t, &[2, 1]), None);

    // a batch that fills past the size limit fails whole too
    let e = t
        .apply(&[
            Op::Insert(ex(&[2, 1], 2)),
            Op::Insert(ex(&[3, 1], 2)),
            Op::Insert(ex(&[4, 1], 2)),
            Op::Insert(ex(&[5, 1], 2)),
        ])
        .unwrap_err();
    assert!(matches!(e, TableError::Batch { index: 3, .. }), "{e}");
    assert_eq!(t.len(), 1);

    // a good batch publishes exactly one version
    t.apply(&ops[..3]).unwrap();
    assert_eq!(t.version(), before_version + 1);
    assert_eq!(port_of(&t, &[1, 1]), Some(9));
    assert_eq!(port_of(&t, &[2, 1]), Some(2));
    assert_eq!(t.default_action(), fwd(3));
    // empty batch: nothing published
    t.apply(&[]).unwrap();
    assert_eq!(t.version(), before_version + 1);
}

#[test]
fn clear_and_atomic_replace() {
    let t = lpm_table();
    t.set_default(fwd(9)).unwrap();
    t.insert(entry(vec![lpm(ip("10.0.0.0"), 8)], 0, 1)).unwrap();
    t.insert(entry(vec![lpm(ip("11.0.0.0"), 8)], 0, 1)).unwrap();
    let v = t.version();
    t.apply(&[
        Op::Clear,
        Op::Insert(entry(vec![lpm(ip("12.0.0.0"), 8)], 0, 2)),
    ])
    .unwrap();
    assert_eq!(t.version(), v + 1);
    assert_eq!(t.len(), 1);
    assert_eq!(port_of(&t, &[ip("10.0.0.1")]), None);
    assert_eq!(port_of(&t, &[ip("12.0.0.1")]), Some(2));
    t.clear();
    assert!(t.is_empty());
    assert_eq!(t.default_action(), fwd(9), "clear keeps the default action");
    assert_eq!(t.version(), v + 2);
}

#[test]
fn counters_entry_and_table() {
    let t = exact_table(8);
    t.insert(ex(&[1, 1], 1)).unwrap();
    t.insert(ex(&[2, 1], 2)).unwrap();
    {
        let s = t.snapshot();
        assert!(s.lookup_counted(&[1, 1], 100).is_hit());
        assert!(s.lookup_counted(&[1, 1], 50).is_hit());
        assert!(s.lookup_counted(&[2, 1], 10).is_hit());
        assert!(!s.lookup_counted(&[3, 1], 999).is_hit());
        // plain lookup counts nothing
        assert!(s.lookup(&[1, 1]).is_some());
    }
    assert_eq!(t.stats(), TableStats { hits: 3, misses: 1 });
    assert_eq!(
        t.get(&[FieldMatch::Exact(1), FieldMatch::Exact(1)])
            .unwrap()
            .counters
            .get(),
        (2, 150)
    );
    // counters survive modify and unrelated republishes
    t.modify(ex(&[1, 1], 5)).unwrap();
    t.insert(ex(&[3, 1], 3)).unwrap();
    let dump = t.entries();
    assert_eq!(dump[0], (ex(&[1, 1], 5), 2, 150));
    assert_eq!(dump[1], (ex(&[2, 1], 2), 1, 10));
    assert_eq!(dump[2], (ex(&[3, 1], 3), 0, 0));
    // delete + re-insert starts from zero
    t.delete(&[FieldMatch::Exact(1), FieldMatch::Exact(1)])
        .unwrap();
    t.insert(ex(&[1, 1], 5)).unwrap();
    assert_eq!(
        t.get(&[FieldMatch::Exact(1), FieldMatch::Exact(1)])
            .unwrap()
            .counters
            .get(),
        (0, 0)
    );
    t.reset_counters();
    assert_eq!(t.stats(), TableStats::default());
    assert_eq!(t.entries()[0].1, 0);
}

#[test]
fn old_snapshot_keeps_old_data() {
    let t = lpm_table();
    t.insert(entry(vec![lpm(ip("10.0.0.0"), 8)], 0, 1)).unwrap();
    let old = t.snapshot();
    let guard = t.load();
    t.apply(&[
        Op::Modify(entry(vec![lpm(ip("10.0.0.0"), 8)], 0, 2)),
        Op::Insert(entry(vec![lpm(ip("10.1.0.0"), 16)], 0, 3)),
    ])
    .unwrap();
    t.delete(&[lpm(ip("10.0.0.0"), 8)]).unwrap();
    // the old version is untouched
    assert_eq!(old.epoch(), 1);
    assert_eq!(old.len(), 1);
    assert_eq!(old.lookup(&[ip("10.1.0.1")]).unwrap().action(), &fwd(1));
    assert_eq!(guard.lookup(&[ip("10.1.0.1")]).unwrap().action(), &fwd(1));
    // the new one has the new data
    let new = t.snapshot();
    assert_eq!(new.epoch(), 3);
    assert_eq!(new.lookup(&[ip("10.1.0.1")]).unwrap().action(), &fwd(3));
    assert!(new.lookup(&[ip("10.2.0.1")]).is_none());
}

#[test]
fn concurrent_readers_never_see_half_a_batch() {
    // Each batch rewrites 8 entries and the default action to the same generation number; a
    // reader checks that every snapshot it takes is internally consistent. The writer keeps
    // going until both readers have seen many distinct versions (or a deadline passes).
    let t = Arc::new(Table::new(schema("gen", vec![KeyField::exact("k", 16)], 64)).unwrap());
    let mut ops: Vec<Op> = (0..8).map(|k| Op::Insert(ex(&[k], 0))).collect();
    t.apply(&ops).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let t = Arc::clone(&t);
            let stop = Arc::clone(&stop);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut last_epoch = 0;
                while !stop.load(Ordering::Relaxed) {
                    let s = t.load();
                    assert!(s.epoch() >= last_epoch, "epochs go backwards");
                    if s.epoch() != last_epoch {
                        seen[r].fetch_add(1, Ordering::Relaxed);
                    }
                    last_epoch = s.epoch();
                    let gen0 = s.lookup(&[0]).expect("entry 0 present").action().param(0);
                    for k in 1..8 {
                        let g = s.lookup(&[k]).expect("entry present").action().param(0);
                        assert_eq!(g, gen0, "half-applied batch seen at epoch {}", s.epoch());
                    }
                    // the initial default is drop (no params): param(0) reads as 0
                    assert_eq!(s.default_action().param(0), gen0);
                    assert_eq!(s.len(), 8);
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut generation = 0u128;
    while generation < 300
        || (seen.iter().any(|s| s.load(Ordering::Relaxed) < 50)
            && std::time::Instant::now() < deadline)
    {
        generation += 1;
        ops.clear();
        ops.extend((0..8).map(|k| Op::Modify(ex(&[k], generation % 512))));
        ops.push(Op::SetDefault(fwd(generation % 512)));
        t.apply(&ops).unwrap();
        if generation.is_multiple_of(16) {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader saw an inconsistent version");
    }
    for s in seen.iter() {
        assert!(
            s.load(Ordering::Relaxed) >= 50,
            "a reader saw too few versions"
        );
    }
    assert_eq!(t.version(), 1 + generation as u64);
}

// ----- JSON -------------------------------------------------------------------------------

fn ej(v: Value) -> EntryJson {
    serde_json::from_value(v).unwrap()
}

#[test]
fn json_lpm_round_trip() {
    let t = lpm_table();
    let j = ej(
        json!({"key": {"dst_addr": "10.0.0.0/8"}, "action": "forward", "params": {"port": "0x3"}}),
    );
    let spec = t.entry_from_json(&j).unwrap();
    assert_eq!(spec, entry(vec![lpm(ip("10.0.0.0"), 8)], 0, 3));
    let back = t.entry_to_json(&spec);
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        json!({"key": {"dst_addr": "10.0.0.0/8"}, "action": "forward", "params": {"port": 3}, "priority": 0})
    );
    assert_eq!(t.entry_from_json(&back).unwrap(), spec);
    // object form and plain value (= /32)
    let j =
        ej(json!({"key": {"dst_addr": {"value": "10.1.0.0", "prefix_len": 16}}, "action": "drop"}));
    assert_eq!(
        t.entry_from_json(&j).unwrap().key,
        vec![lpm(ip("10.1.0.0"), 16)]
    );
    let j = ej(json!({"key": {"dst_addr": 167772161}, "action": "drop"}));
    assert_eq!(
        t.entry_from_json(&j).unwrap().key,
        vec![lpm(ip("10.0.0.1"), 32)]
    );
    // omitted lpm field = default route
    let j = ej(json!({"key": {}, "action": "drop"}));
    assert_eq!(t.entry_from_json(&j).unwrap().key, vec![lpm(0, 0)]);
}

#[test]
fn json_exact_mac_ipv6_and_wide_values() {
    let s = TableSchema {
        name: "mix".into(),
        keys: vec![
            KeyField::exact("dst_mac", 48),
            KeyField::exact("dst_ip6", 128),
            KeyField::exact("port", 9),
        ],
        actions: vec![ActionSchema::new(
            "set",
            vec![
                ParamSchema::new("smac", 48),
                ParamSchema::new("nhop", 32),
                ParamSchema::new("big", 96),
            ],
        )],
        default_action: ActionCall::new(ActionId(0), [0, 0, 0]),
        const_default: false,
        size: 4,
    };
    let t = Table::new(s).unwrap();
    let j = ej(json!({
        "key": {"dst_mac": "02:42:c0:a8:0c:02", "dst_ip6": "2001:db8::1", "port": "140"},
        "action": "set",
        "params": {"smac": "02-42-C0-A8-0C-03", "nhop": "192.168.12.2", "big": "0x1_0000_0000_0000_0000"}
    }));
    let spec = t.entry_from_json(&j).unwrap();
    assert_eq!(
        spec.key,
        vec![
            FieldMatch::Exact(0x0242_c0a8_0c02),
            FieldMatch::Exact(0x2001_0db8_0000_0000_0000_0000_0000_0001),
            FieldMatch::Exact(140)
        ]
    );
    assert_eq!(
        spec.action.params.as_slice(),
        &[0x0242_c0a8_0c03, ip("192.168.12.2"), 1 << 64]
    );
    let back = t.entry_to_json(&spec);
    assert_eq!(back.key["dst_mac"], json!("02:42:c0:a8:0c:02"));
    assert_eq!(back.key["dst_ip6"], json!("2001:db8::1"));
    assert_eq!(back.key["port"], json!(140));
    assert_eq!(back.params["nhop"], json!("192.168.12.2"));
    assert_eq!(back.params["big"], json!("0x10000000000000000"));
    assert_eq!(t.entry_from_json(&back).unwrap(), spec);
}

#[test]
fn json_ternary_forms() {
    let t = ternary_table();
    let j = ej(json!({
        "key": {"src_addr": "10.0.0.0&&&255.0.0.0", "proto": {"value": 6, "mask": "0xff"}},
        "action": "forward", "params": {"port": 1}, "priority": 7
    }));
    let spec = t.entry_from_json(&j).unwrap();
    assert_eq!(
        spec.key,
        vec![tern(ip("10.0.0.0"), 0xff00_0000), tern(6, 0xff)]
    );
    assert_eq!(spec.priority, 7);
    let back = t.entry_to_json(&spec);
    assert_eq!(
        back.key["src_addr"],
        json!({"value": "10.0.0.0", "mask": "255.0.0.0"})
    );
    assert_eq!(t.entry_from_json(&back).unwrap(), spec);
    // prefix notation, plain value, and omitted field (wildcard)
    let j = ej(json!({"key": {"src_addr": "10.0.0.0/8", "proto": 17}, "action": "drop"}));
    assert_eq!(
        t.entry_from_json(&j).unwrap().key,
        vec![tern(ip("10.0.0.0"), 0xff00_0000), tern(17, 0xff)]
    );
    let j = ej(json!({"key": {"proto": 17}, "action": "drop"}));
    assert_eq!(
        t.entry_from_json(&j).unwrap().key,
        vec![tern(0, 0), tern(17, 0xff)]
    );
}

fn json_err(t: &Table, v: Value) -> String {
    t.entry_from_json(&ej(v)).unwrap_err().to_string()
}

#[test]
fn json_errors_name_the_field() {
    let t = lpm_table();
    assert_eq!(
        json_err(
            &t,
            json!({"key": {"dst_addr": "192.168.12.300"}, "action": "drop"})
        ),
        "table 'ipv4_lpm': key field 'dst_addr': \"192.168.12.300\" is not an IPv4 address"
    );
    let e = json_err(
        &t,
        json!({"key": {"dst_addr": "10.0.0.1/8"}, "action": "drop"}),
    );
    assert!(
        e.contains("key field 'dst_addr'") && e.contains("did you mean 10.0.0.0/8"),
        "{e}"
    );
    let e = json_err(
        &t,
        json!({"key": {"dst_addr": "10.0.0.0/33"}, "action": "drop"}),
    );
    assert!(e.contains("prefix length 33 exceeds 32 bits"), "{e}");
    let e = json_err(&t, json!({"key": {"dst": "10.0.0.0/8"}, "action": "drop"}));
    assert_eq!(
        e,
        "table 'ipv4_lpm': unknown key field 'dst' (known: dst_addr)"
    );
    let e = json_err(&t, json!({"key": {}, "action": "frobnicate"}));
    assert_eq!(
        e,
        "table 'ipv4_lpm': unknown action 'frobnicate' (known: forward, drop)"
    );
    let e = json_err(&t, json!({"key": {}, "action": "forward"}));
    assert_eq!(
        e,
        "table 'ipv4_lpm': action 'forward' is missing parameter 'port'"
    );
    let e = json_err(
        &t,
        json!({"key": {}, "action": "forward", "params": {"port": 1, "x": 2}}),
    );
    assert!(e.contains("has no parameter 'x'"), "{e}");
    let e = json_err(
        &t,
        json!({"key": {}, "action": "forward", "params": {"port": 512}}),
    );
    assert_eq!(
        e,
        "table 'ipv4_lpm': action 'forward' parameter 'port': value 0x200 does not fit in 9 bits"
    );
    let e = json_err(
        &t,
        json!({"key": {}, "action": "forward", "params": {"port": -1}}),
    );
    assert!(e.contains("parameter 'port': -1 is negative"), "{e}");
    let e = json_err(
        &t,
        json!({"key": {}, "action": "forward", "params": {"port": "eth0"}}),
    );
    assert!(
        e.contains("parameter 'port': \"eth0\" is not a number"),
        "{e}"
    );

    let t = exact_table(4);
    let e = json_err(
        &t,
        json!({"key": {"dst_mac": "02:42:c0:a8:0c"}, "action": "drop"}),
    );
    assert!(
        e.contains("key field 'dst_mac': \"02:42:c0:a8:0c\" is not a MAC address"),
        "{e}"
    );
    let e = json_err(&t, json!({"key": {"dst_mac": 1}, "action": "drop"}));
    assert_eq!(e, "table 'mac_exact': missing exact key field 'vlan'");
    let e = json_err(
        &t,
        json!({"key": {"dst_mac": 1, "vlan": "10.0.0.0/8"}, "action": "drop"}),
    );
    assert!(e.contains("key field 'vlan'"), "{e}");

    let t = ternary_table();
    let e = json_err(
        &t,
        json!({"key": {"src_addr": "10.0.0.1&&&255.0.0.0"}, "action": "drop"}),
    );
    assert!(
        e.contains("key field 'src_addr': value 10.0.0.1 has bits outside mask 255.0.0.0"),
        "{e}"
    );
    let e = json_err(
        &t,
        json!({"key": {"proto": {"value": 6}}, "action": "drop"}),
    );
    assert!(
        e.contains("key field 'proto': missing member \"mask\""),
        "{e}"
    );
}

#[test]
fn json_key_and_toml() {
    let t = lpm_table();
    t.insert(entry(vec![lpm(ip("10.0.0.0"), 8)], 0, 1)).unwrap();
    let mut key = Map::new();
    key.insert("dst_addr".into(), json!("10.0.0.0/8"));
    t.delete(&t.key_from_json(&key).unwrap()).unwrap();
    assert!(t.is_empty());
    // TOML config deserializes into the same type
    let e: EntryJson = toml::from_str(
        r#"
        action = "forward"
        key = { dst_addr = "192.168.0.0/16" }
        params = { port = 4 }
        "#,
    )
    .unwrap();
    assert_eq!(
        t.entry_from_json(&e).unwrap(),
        entry(vec![lpm(ip("192.168.0.0"), 16)], 0, 4)
    );
}

// ----- registry ---------------------------------------------------------------------------

#[test]
fn registry_add_get_iterate() {
    let mut reg = Tables::new();
    let a = reg.add(lpm_table()).unwrap();
    reg.add(exact_table(4)).unwrap();
    let e = reg.add(lpm_table()).unwrap_err();
    assert_eq!(e.to_string(), "table 'ipv4_lpm' is already registered");
    assert!(Arc::ptr_eq(reg.get("ipv4_lpm").unwrap(), &a));
    let e = reg.get("nope").unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.to_string(), "no table named 'nope'");
    assert_eq!(reg.names().collect::<Vec<_>>(), ["ipv4_lpm", "mac_exact"]);
    assert_eq!(reg.iter().count(), 2);
    assert_eq!((&reg).into_iter().count(), 2);
    assert_eq!(reg.len(), 2);
}

// ----- property test: lpm against a naive reference ---------------------------------------

fn naive_lpm(routes: &[(u32, u16, u128)], addr: u32) -> Option<u128> {
    routes
        .iter()
        .filter(|(v, l, _)| {
            let m = if *l == 0 { 0 } else { u32::MAX << (32 - l) };
            addr & m == *v
        })
        .max_by_key(|(_, l, _)| *l)
        .map(|r| r.2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn lpm_matches_naive_reference(
        raw in prop::collection::vec((any::<u32>(), 0u16..=32, 0u128..512), 0..200),
        probes in prop::collection::vec(any::<u32>(), 1..100),
        deletes in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let t = lpm_table();
        let mut routes: Vec<(u32, u16, u128)> = Vec::new();
        for (v, l, port) in raw {
            let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            let v = v & m;
            if routes.iter().any(|r| r.0 == v && r.1 == l) {
                continue;
            }
            routes.push((v, l, port));
        }
        let ops: Vec<Op> = routes
            .iter()
            .map(|&(v, l, p)| Op::Insert(entry(vec![lpm(u128::from(v), l)], 0, p)))
            .collect();
        t.apply(&ops).unwrap();
        for d in deletes {
            if routes.is_empty() {
                break;
            }
            let (v, l, _) = routes.remove(d.index(routes.len()));
            t.delete(&[lpm(u128::from(v), l)]).unwrap();
        }
        prop_assert_eq!(t.len(), routes.len());
        let s = t.snapshot();
        // probe random addresses and addresses inside each route
        let inside = routes.iter().map(|r| r.0 | 1);
        for a in probes.into_iter().chain(inside) {
            let got = s.lookup(&[u128::from(a)]).map(|e| e.action().param(0));
            prop_assert_eq!(got, naive_lpm(&routes, a), "addr {:#x}", a);
        }
    }

    #[test]
    fn ternary_matches_naive_reference(
        raw in prop::collection::vec((any::<u8>(), any::<u8>(), -3i32..3, 0u128..512), 0..40),
        probes in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let t = Table::new(schema("t8", vec![KeyField::ternary("k", 8)], 64)).unwrap();
        let mut rules: Vec<(u8, u8, i32, u128)> = Vec::new();
        for (v, m, p, port) in raw {
            let v = v & m;
            if rules.iter().any(|r| r.0 == v && r.1 == m) {
                continue;
            }
            t.insert(entry(vec![tern(u128::from(v), u128::from(m))], p, port)).unwrap();
            rules.push((v, m, p, port));
        }
        let s = t.snapshot();
        for k in probes {
            // highest priority; among equals the first inserted
            let mut best: Option<&(u8, u8, i32, u128)> = None;
            for r in rules.iter().filter(|r| k & r.1 == r.0) {
                if best.is_none_or(|b| r.2 > b.2) {
                    best = Some(r);
                }
            }
            let got = s.lookup(&[u128::from(k)]).map(|e| e.action().param(0));
            prop_assert_eq!(got, best.map(|r| r.3));
        }
    }
}

// ----- action selectors ---------------------------------------------------------------------

const REWRITE: ActionId = ActionId(0);

/// node_selector-like: exact dst, action `set_rewrite_dst(new_dst:32)`, selector 4/2/8.
fn selector_table() -> Table {
    Table::with_selector(
        TableSchema {
            name: "node_selector".into(),
            keys: vec![KeyField::exact("dst", 32)],
            actions: vec![
                ActionSchema::new("set_rewrite_dst", vec![ParamSchema::new("new_dst", 32)]),
                ActionSchema::new("NoAction", vec![]),
            ],
            default_action: ActionCall::new(ActionId(1), []),
            const_default: true,
            size: 16,
        },
        SelectorSchema {
            fields: vec!["src".into(), "dst".into()],
            hash: "crc16".into(),
            mode: SelectorMode::Fair,
            size: 8,
            max_groups: 2,
            max_group_size: 4,
        },
    )
    .unwrap()
}

fn rw(last: u8) -> ActionCall {
    ActionCall::new(
        REWRITE,
        [u128::from(u32::from(std::net::Ipv4Addr::new(
            10, 0, 0, last,
        )))],
    )
}

fn to_group(dst: u128, group: u32) -> EntrySpec {
    EntrySpec {
        key: vec![FieldMatch::Exact(dst)],
        priority: 0,
        action: ActionCall::group(group),
    }
}

/// The action chosen for `dst` with `hash`.
fn chosen(t: &Table, dst: u128, hash: u64) -> Option<ActionCall> {
    let v = t.snapshot();
    let e = v.lookup(&[dst])?;
    v.select(e.action(), hash).cloned()
}

#[test]
fn selector_group_resolves_and_fair_pick_is_hash_mod_members() {
    let t = selector_table();
    t.apply(&[
        Op::InsertMember {
            id: 1,
            action: rw(1),
        },
        Op::InsertMember {
            id: 2,
            action: rw(2),
        },
        Op::InsertMember {
            id: 3,
            action: rw(3),
        },
        Op::InsertGroup {
            id: 7,
            members: vec![3, 1, 2],
        },
        Op::Insert(to_group(5, 7)),
    ])
    .unwrap();
    let v = t.snapshot();
    let e = v.lookup(&[5]).unwrap();
    assert_eq!(e.action().profile_ref(), Some(ProfileRef::Group(7)));
    assert_eq!(v.resolve(e.action()), &[rw(3), rw(1), rw(2)], "group order");
    for h in 0..9u64 {
        let want = [rw(3), rw(1), rw(2)][(h % 3) as usize].clone();
        assert_eq!(v.select(e.action(), h), Some(&want), "hash {h}");
    }
    // A direct call resolves to itself; a member reference to that member.
    assert_eq!(v.resolve(&rw(9)), &[rw(9)]);
    assert_eq!(v.resolve(&ActionCall::member(2)), &[rw(2)]);
    assert_eq!(v.resolve(&ActionCall::member(99)), &[] as &[ActionCall]);
    assert_eq!(v.members().len(), 3);
    assert_eq!(v.groups(), vec![(7, vec![3, 1, 2])]);
    assert_eq!(v.group(7), Some(&[3u32, 1, 2][..]));
    assert_eq!(v.member(1), Some(&rw(1)));
    // Entries may also point at a single member.
    t.insert(EntrySpec {
        key: vec![FieldMatch::Exact(6)],
        priority: 0,
        action: ActionCall::member(2),
    })
    .unwrap();
    assert_eq!(chosen(&t, 6, 12345), Some(rw(2)));
    // An empty group selects nothing.
    t.modify_group(7, vec![]).unwrap();
    assert_eq!(chosen(&t, 5, 1), None);
}

#[test]
fn selector_member_modify_is_seen_through_groups_in_one_publish() {
    let t = selector_table();
    t.apply(&[
        Op::InsertMember {
            id: 1,
            action: rw(1),
        },
        Op::InsertMember {
            id: 2,
            action: rw(2),
        },
        Op::InsertGroup {
            id: 1,
            members: vec![1, 2],
        },
        Op::Insert(to_group(5, 1)),
    ])
    .unwrap();
    let old = t.snapshot();
    let epoch = t.version();
    t.modify_member(2, rw(22)).unwrap();
    assert_eq!(t.version(), epoch + 1, "one publish");
    assert_eq!(chosen(&t, 5, 1), Some(rw(22)));
    assert_eq!(chosen(&t, 5, 0), Some(rw(1)));
    // A reader holding the old version keeps the old member action.
    let e = old.lookup(&[5]).unwrap();
    assert_eq!(old.select(e.action(), 1), Some(&rw(2)));
}

#[test]
fn selector_errors_are_precise() {
    let t = selector_table();
    t.insert_member(1, rw(1)).unwrap();
    let e = t.insert_member(1, rw(2)).unwrap_err();
    assert!(
        matches!(e, TableError::DuplicateMember { member: 1, .. }),
        "{e}"
    );
    assert!(e.is_conflict());
    let e = t.modify_member(9, rw(2)).unwrap_err();
    assert!(
        matches!(e, TableError::NoSuchMember { member: 9, .. }),
        "{e}"
    );
    assert!(e.is_not_found());
    // Member actions are checked against the schema.
    let e = t
        .insert_member(2, ActionCall::new(REWRITE, [1u128 << 32]))
        .unwrap_err();
    assert!(matches!(e, TableError::ParamTooWide { .. }), "{e}");
    let e = t.insert_member(2, ActionCall::group(1)).unwrap_err();
    assert!(matches!(e, TableError::UnknownActionId { .. }), "{e}");
    // Groups: unknown member, duplicates, size.
    let e = t.insert_group(1, vec![1, 4]).unwrap_err();
    assert!(
        matches!(e, TableError::NoSuchMember { member: 4, .. }),
        "{e}"
    );
    let e = t.insert_group(1, vec![1, 1]).unwrap_err();
    assert!(
        matches!(
            e,
            TableError::DuplicateGroupMember {
                group: 1,
                member: 1,
                ..
            }
        ),
        "{e}"
    );
    for id in 2..=6 {
        t.insert_member(id, rw(id as u8)).unwrap();
    }
    let e = t.insert_group(1, vec![1, 2, 3, 4, 5]).unwrap_err();
    assert!(
        matches!(
            e,
            TableError::GroupTooLarge {
                size: 5,
                max: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("max group size is 4"), "{e}");
    t.insert_group(1, vec![1, 2, 3, 4]).unwrap();
    t.insert_group(2, vec![]).unwrap();
    let e = t.insert_group(3, vec![]).unwrap_err();
    assert!(matches!(e, TableError::TooManyGroups { max: 2, .. }), "{e}");
    let e = t.insert_group(2, vec![]).unwrap_err();
    assert!(
        matches!(e, TableError::DuplicateGroup { group: 2, .. }),
        "{e}"
    );
    let e = t.modify_group(3, vec![]).unwrap_err();
    assert!(matches!(e, TableError::NoSuchGroup { group: 3, .. }), "{e}");
    // Profile size 8.
    t.insert_member(7, rw(7)).unwrap();
    t.insert_member(8, rw(8)).unwrap();
    let e = t.insert_member(9, rw(9)).unwrap_err();
    assert!(matches!(e, TableError::ProfileFull { size: 8, .. }), "{e}");
    // Entries: direct actions refused, references must resolve.
    let e = t
        .insert(EntrySpec {
            key: vec![FieldMatch::Exact(5)],
            priority: 0,
            action: rw(1),
        })
        .unwrap_err();
    assert!(
        matches!(e, TableError::SelectorNeedsRef { ref action, .. } if action == "set_rewrite_dst"),
        "{e}"
    );
    let e = t.insert(to_group(5, 3)).unwrap_err();
    assert!(matches!(e, TableError::NoSuchGroup { group: 3, .. }), "{e}");
    t.insert(to_group(5, 1)).unwrap();
    // Still referenced: member by group, group by entry.
    let e = t.delete_member(2).unwrap_err();
    assert!(
        matches!(e, TableError::MemberInUse { member: 2, ref user, .. } if user == "group 1"),
        "{e}"
    );
    let e = t.delete_group(1).unwrap_err();
    assert!(matches!(e, TableError::GroupInUse { group: 1, .. }), "{e}");
    assert!(e.to_string().contains("dst=0.0.0.5"), "{e}");
    t.insert(EntrySpec {
        key: vec![FieldMatch::Exact(6)],
        priority: 0,
        action: ActionCall::member(8),
    })
    .unwrap();
    let e = t.delete_member(8).unwrap_err();
    assert!(
        matches!(e, TableError::MemberInUse { member: 8, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("entry {dst=0.0.0.6}"), "{e}");
    // Groups and members are refused on a table without a selector, and so are references.
    let plain = exact_table(4);
    let e = plain.insert_member(1, fwd(1)).unwrap_err();
    assert!(matches!(e, TableError::NotASelector { .. }), "{e}");
    let e = plain
        .insert(EntrySpec {
            key: vec![FieldMatch::Exact(1), FieldMatch::Exact(1)],
            priority: 0,
            action: ActionCall::group(1),
        })
        .unwrap_err();
    assert!(matches!(e, TableError::NotASelector { .. }), "{e}");
    // Bad declarations.
    let e = Table::with_selector(
        schema("x", vec![KeyField::exact("k", 8)], 4),
        SelectorSchema {
            fields: vec![],
            hash: "crc16".into(),
            mode: SelectorMode::Fair,
            size: 4,
            max_groups: 0,
            max_group_size: 4,
        },
    )
    .unwrap_err();
    assert!(matches!(e, TableError::BadSelector { .. }), "{e}");
}

#[test]
fn selector_batches_are_atomic_and_clear_all_goes_in_reverse_order() {
    let t = selector_table();
    t.apply(&[
        Op::InsertMember {
            id: 1,
            action: rw(1),
        },
        Op::InsertGroup {
            id: 1,
            members: vec![1],
        },
        Op::Insert(to_group(5, 1)),
    ])
    .unwrap();
    let epoch = t.version();
    // Fails at op 3 (group 9 does not exist): nothing of ops 0..3 is visible.
    let e = t
        .apply(&[
            Op::InsertMember {
                id: 2,
                action: rw(2),
            },
            Op::ModifyGroup {
                id: 1,
                members: vec![2],
            },
            Op::ModifyMember {
                id: 1,
                action: rw(11),
            },
            Op::Insert(to_group(6, 9)),
        ])
        .unwrap_err();
    assert!(matches!(e, TableError::Batch { index: 3, .. }), "{e}");
    assert!(e.is_not_found());
    assert_eq!(t.version(), epoch);
    assert_eq!(t.members(), vec![(1, rw(1))]);
    assert_eq!(t.groups(), vec![(1, vec![1])]);
    assert_eq!(chosen(&t, 5, 3), Some(rw(1)));
    // Groups cannot be cleared while an entry uses one; clear_all removes everything.
    let e = t.apply(&[Op::ClearGroups]).unwrap_err();
    assert!(
        matches!(*e_source(&e), TableError::GroupInUse { .. }),
        "{e}"
    );
    let e = t.apply(&[Op::Clear, Op::ClearMembers]).unwrap_err();
    assert!(
        matches!(*e_source(&e), TableError::MemberInUse { .. }),
        "{e}"
    );
    assert_eq!(t.len(), 1, "the failed batch cleared nothing");
    t.clear_all();
    assert!(t.is_empty() && t.members().is_empty() && t.groups().is_empty());
    // Plain clear keeps members and groups.
    t.apply(&[
        Op::InsertMember {
            id: 1,
            action: rw(1),
        },
        Op::InsertGroup {
            id: 1,
            members: vec![1],
        },
        Op::Insert(to_group(5, 1)),
    ])
    .unwrap();
    t.clear();
    assert!(t.is_empty());
    assert_eq!(t.groups(), vec![(1, vec![1])]);
}

fn e_source(e: &TableError) -> &TableError {
    match e {
        TableError::Batch { source, .. } => source,
        other => other,
    }
}

#[test]
fn selector_concurrent_readers_always_resolve() {
    // A writer keeps swapping the group's members; readers must never see an entry whose
    // group lacks members or a member id that does not resolve.
    let t = Arc::new(selector_table());
    t.apply(&[
        Op::InsertMember {
            id: 1,
            action: rw(1),
        },
        Op::InsertMember {
            id: 2,
            action: rw(2),
        },
        Op::InsertGroup {
            id: 1,
            members: vec![1],
        },
        Op::Insert(to_group(5, 1)),
    ])
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                // At least some lookups even if the writer is done before this thread starts.
                while n < 1000 || !stop.load(Ordering::Relaxed) {
                    let v = t.snapshot();
                    let e = v.lookup(&[5]).expect("entry always present");
                    let a = v.select(e.action(), n).expect("group never empty");
                    assert!(*a == rw(1) || *a == rw(2) || *a == rw(3), "{a:?}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..2000u32 {
        let ops = if i % 2 == 0 {
            vec![
                Op::InsertMember {
                    id: 3,
                    action: rw(3),
                },
                Op::ModifyGroup {
                    id: 1,
                    members: vec![2, 3],
                },
                Op::DeleteMember(1),
            ]
        } else {
            vec![
                Op::InsertMember {
                    id: 1,
                    action: rw(1),
                },
                Op::ModifyGroup {
                    id: 1,
                    members: vec![1],
                },
                Op::DeleteMember(3),
            ]
        };
        t.apply(&ops).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 1000);
    }
}

#[test]
fn selector_json_edge() {
    let t = selector_table();
    let m: MemberJson = serde_json::from_value(
        json!({"id": 1, "action": "set_rewrite_dst", "params": {"new_dst": "10.0.0.1"}}),
    )
    .unwrap();
    let (id, a) = t.member_from_json(&m).unwrap();
    assert_eq!((id, a.clone()), (1, rw(1)));
    assert_eq!(t.member_to_json(1, &a), m);
    t.insert_member(1, a).unwrap();
    let g: GroupJson = serde_json::from_value(json!({"id": 1, "members": [1]})).unwrap();
    t.insert_group(g.id, g.members).unwrap();
    // Wire form of a group entry: `group` instead of action/params.
    let e = ej(json!({"key": {"dst": "0.0.0.5"}, "group": 1}));
    assert_eq!(e.profile_ref(), Some(ProfileRef::Group(1)));
    let spec = t.entry_from_json(&e).unwrap();
    assert_eq!(spec, to_group(5, 1));
    t.insert(spec.clone()).unwrap();
    let back = serde_json::to_value(t.entry_to_json(&spec)).unwrap();
    assert_eq!(
        back,
        json!({"key": {"dst": "0.0.0.5"}, "group": 1, "priority": 0})
    );
    let m = ej(json!({"key": {"dst": "0.0.0.6"}, "member": 1}));
    assert_eq!(t.entry_from_json(&m).unwrap().action, ActionCall::member(1));
    assert_eq!(
        EntryJson::group(Map::new(), 3).profile_ref(),
        Some(ProfileRef::Group(3))
    );
    // Direct entries still serialize with action and params.
    let d = serde_json::to_value(ej(json!({"key": {}, "action": "x"}))).unwrap();
    assert_eq!(
        d,
        json!({"key": {}, "action": "x", "params": {}, "priority": 0})
    );
    // Wire errors.
    let bad = |v: Value| {
        serde_json::from_value::<EntryJson>(v)
            .unwrap_err()
            .to_string()
    };
    assert!(bad(json!({"key": {}})).contains("missing field `action`"));
    assert!(bad(json!({"key": {}, "action": "a", "group": 1})).contains("exactly one of"));
    assert!(bad(json!({"key": {}, "group": 1, "params": {"a": 1}})).contains("`params`"));
    // A direct action on the selector table, a group on a plain table.
    let e = t
        .entry_from_json(&ej(
            json!({"key": {"dst": "0.0.0.7"}, "action": "NoAction"}),
        ))
        .unwrap_err();
    assert!(matches!(e, TableError::SelectorNeedsRef { .. }), "{e}");
    let e = exact_table(4)
        .entry_from_json(&ej(json!({"key": {"dst_mac": 1, "vlan": 1}, "group": 1})))
        .unwrap_err();
    assert!(matches!(e, TableError::NotASelector { .. }), "{e}");
    let e = exact_table(4).member_from_json(&MemberJson {
        id: 1,
        action: "drop".into(),
        params: Map::new(),
    });
    assert!(matches!(e, Err(TableError::NotASelector { .. })));
    // TOML, as in a config file.
    let e: EntryJson = toml::from_str("key = { dst = \"0.0.0.5\" }\ngroup = 1\n").unwrap();
    assert_eq!(t.entry_from_json(&e).unwrap(), to_group(5, 1));
}
