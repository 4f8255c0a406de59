//! Property tests: any inner packet sequence at any outer size round-trips; with losses and
//! reordering within the window every inner packet arrives intact or is counted lost, never
//! corrupted or duplicated.

mod common;

use common::*;
use iptfs::testutil::{ipv4_packet, ipv6_packet};
use iptfs::{ReceiverConfig, SenderConfig};
use proptest::prelude::*;

fn inner_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec((any::<bool>(), 0usize..4000), 1..60).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (v6, len))| {
                if v6 {
                    ipv6_packet(len, i as u32)
                } else {
                    ipv4_packet(len, i as u32)
                }
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
struct Shape {
    outer: usize,
    outer_v6: bool,
    cc: bool,
    demand: bool,
    whole_only: bool,
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    (
        80usize..3000,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(outer, outer_v6, cc, demand, whole_only)| Shape {
            outer,
            outer_v6,
            cc,
            demand,
            whole_only,
        })
}

fn config(s: &Shape) -> SenderConfig {
    let base = if s.demand {
        SenderConfig::linux_demand()
    } else {
        SenderConfig::constant_rate(s.outer, 1000)
    };
    SenderConfig {
        outer_packet_size: s.outer,
        outer_header_len: if s.outer_v6 { 40 } else { 20 },
        congestion_control: s.cc,
        whole_packets_only: s.whole_only,
        ..base
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_any_size(inner in inner_strategy(), shape in shape_strategy()) {
        let cfg = config(&shape);
        let Ok(mut tx) = iptfs::Sender::new(cfg, esp_tx()) else {
            // Too small for the header: must be the documented rejection.
            prop_assert!(shape.outer < 80 + 60);
            return Ok(());
        };
        let outers = encode(&mut tx, &inner);
        if !shape.demand {
            prop_assert!(outers.iter().all(|o| o.len() == outers[0].len()), "fixed size");
        }
        let mut rx = receiver(ReceiverConfig::default());
        let got = decode(&mut rx, &outers);
        prop_assert!(got == inner, "got {} of {} packets", got.len(), inner.len());
        let c = rx.counters();
        prop_assert_eq!(c.incomplete_packets + c.missed_packets + c.inconsistent_offsets + c.errored(), 0);
    }

    /// Constant-rate full packing, then drops and reordering within the window: the delivered
    /// packets are exactly those whose outers all arrived, in order, byte-identical; missed
    /// outers are counted.
    #[test]
    fn loss_and_reorder(
        inner in inner_strategy(),
        outer in 100usize..2000,
        window in 1u16..8,
        drops in prop::collection::vec(prop::bool::weighted(0.15), 200),
        reverse in prop::collection::vec(any::<bool>(), 200),
        immediate in any::<bool>(),
    ) {
        let mut tx = sender(SenderConfig::constant_rate(outer, 1000));
        let cap = tx.data_capacity();
        let outers = encode(&mut tx, &inner);
        let n = outers.len();
        let dropped = |i: usize| drops[i % drops.len()];
        // Reverse chunks of window+1 outers (the most the window can absorb), chosen at random.
        let mut order: Vec<usize> = Vec::new();
        for (ci, chunk) in (0..n).collect::<Vec<_>>().chunks(window as usize + 1).enumerate() {
            if reverse[ci % reverse.len()] { order.extend(chunk.iter().rev()) } else { order.extend(chunk) }
        }
        let arrival: Vec<_> = order.iter().filter(|&&i| !dropped(i)).map(|&i| outers[i].clone()).collect();
        let mut rx = receiver(ReceiverConfig { reorder_window: window, send_immediately: immediate, ..Default::default() });
        let got = decode(&mut rx, &arrival);
        // Expected: packets whose byte span lies in received outers only.
        let mut at = 0;
        let want: Vec<_> = inner.iter().filter(|p| {
            let (a, b) = (at / cap, (at + p.len() - 1) / cap);
            at += p.len();
            !(a..=b).any(dropped)
        }).cloned().collect();
        if immediate {
            let mut g = got.clone();
            g.sort_by_key(|p| tag(p));
            prop_assert!(g == want, "immediate: got {} want {}", g.len(), want.len());
        } else {
            prop_assert!(got == want, "got {} want {}", got.len(), want.len());
        }
        let last = (0..n).rev().find(|&i| !dropped(i));
        let lost = last.map_or(0, |l| (0..l).filter(|&i| dropped(i)).count()) as u64;
        let c = rx.counters();
        prop_assert_eq!(c.missed_packets, lost);
        prop_assert_eq!(c.late_packets + c.inconsistent_offsets + c.errored(), 0);
    }

    /// Arbitrary bytes into a receiver never panic; arbitrary payloads sealed with the right key
    /// (so they pass the ICV) never panic either.
    #[test]
    fn garbage_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..200),
        payloads in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..300), 0u8..3), 1..20),
    ) {
        let mut rx = receiver(ReceiverConfig { strict_flags: false, ..Default::default() });
        let _ = rx.receive(0, &mut raw.clone(), &mut |_: &[u8]| {});
        let mut esp = esp_tx();
        for (p, nh) in payloads {
            let nh = [144u8, 4, 41][nh as usize];
            let _ = rx.receive(0, &mut seal(&mut esp, &p, nh), &mut |_: &[u8]| {});
        }
        rx.poll(u64::MAX / 2, &mut |_: &[u8]| {});
    }
}
