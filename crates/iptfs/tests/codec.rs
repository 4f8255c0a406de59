//! Codec tests: RFC 9347 Appendix A, the iptfs-dev case list at codec level, malformed input.

mod common;

use common::*;
use iptfs::esp::{NH_AGGFRAG, NH_IPV4, NH_IPV6};
use iptfs::testutil::{ipv4_packet, ipv6_packet};
use iptfs::{CATCH_UP_SLOTS, Error, Framer, Poll, ReceiverConfig, SendMode, Sender, SenderConfig};

fn pkt(v6: bool, len: usize, tag: u32) -> Vec<u8> {
    if v6 {
        ipv6_packet(len, tag)
    } else {
        ipv4_packet(len, tag)
    }
}

#[test]
fn rfc9347_appendix_a() {
    let sizes = [750, 750, 60, 240, 3000];
    let inner: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &l)| ipv4_packet(l, i as u32))
        .collect();
    let mut f = Framer::new();
    for p in &inner {
        f.push(0, p);
    }
    let mut esp = esp_tx();
    let mut outers = Vec::new();
    let mut offs = Vec::new();
    let mut used = Vec::new();
    for _ in 0..4 {
        let mut payload = vec![0xa5u8; 1404];
        let (u, off) = f.fill(0, &mut payload[4..], false, None);
        payload[..4].copy_from_slice(&[0, 0, (off >> 8) as u8, off as u8]);
        payload[4 + u..].fill(0); // pad block
        offs.push(off);
        used.push(u);
        if outers.is_empty() {
            assert_eq!(&payload[4..754], &inner[0][..]);
            assert_eq!(&payload[754..1404], &inner[1][..650]);
        }
        outers.push(seal(&mut esp, &payload, NH_AGGFRAG));
    }
    assert_eq!(offs, [0, 100, 2000, 600]);
    assert_eq!(used, [1400, 1400, 1400, 600]);
    assert_eq!(f.queued_packets(), 0);
    let mut rx = receiver(ReceiverConfig::default());
    assert_eq!(decode(&mut rx, &outers), inner);
    let c = rx.counters();
    assert_eq!(c.pad_octets, 800);
    assert_eq!(c.inner_packets, 5);
    assert_eq!(
        c.incomplete_packets + c.inconsistent_offsets + c.missed_packets,
        0
    );
}

fn cbr(outer: usize, outer_v6: bool) -> SenderConfig {
    SenderConfig {
        outer_header_len: if outer_v6 { 40 } else { 20 },
        ..SenderConfig::constant_rate(outer, 1_000_000)
    }
}

/// utpkt (1): inner sizes from the minimum to 1446 step 11, packed with fragmentation and
/// padding into 1500-octet outers; IPv4/IPv6 inner and outer.
#[test]
fn utpkt_sizes_step_11() {
    for inner_v6 in [false, true] {
        for outer_v6 in [false, true] {
            let min = if inner_v6 { 48 } else { 28 };
            let inner: Vec<_> = (min..=1446)
                .step_by(11)
                .enumerate()
                .map(|(i, l)| pkt(inner_v6, l, i as u32))
                .collect();
            let mut tx = sender(cbr(1500, outer_v6));
            let outers = encode(&mut tx, &inner);
            let esp_len = 1500 - if outer_v6 { 40 } else { 20 };
            assert!(
                outers.iter().all(|o| o.len() == esp_len),
                "fixed outer size"
            );
            let total: usize = inner.iter().map(Vec::len).sum();
            let cap = tx.data_capacity();
            assert_eq!(cap, if outer_v6 { 1422 } else { 1442 });
            assert_eq!(outers.len(), total.div_ceil(cap));
            let mut rx = receiver(ReceiverConfig::default());
            assert_eq!(
                decode(&mut rx, &outers),
                inner,
                "v6 inner {inner_v6} outer {outer_v6}"
            );
            // Linux-style demand packing decodes too.
            let mut tx = sender(SenderConfig {
                outer_header_len: if outer_v6 { 40 } else { 20 },
                ..SenderConfig::linux_demand()
            });
            let outers = encode(&mut tx, &inner);
            assert!(outers.iter().all(|o| o.len() <= esp_len));
            let mut rx = receiver(ReceiverConfig::default());
            assert_eq!(decode(&mut rx, &outers), inner);
        }
    }
}

/// utpkt (2): 1442/1443 (IPv6 outer 1422/1423) with dont-frag.
#[test]
fn dont_frag_boundary() {
    for (outer_v6, max) in [(false, 1442usize), (true, 1422)] {
        let cfg = SenderConfig {
            dont_fragment: true,
            ..cbr(1500, outer_v6)
        };
        let mut tx = sender(cfg.clone());
        assert_eq!(tx.mtu(), max);
        let ok = ipv4_packet(max, 1);
        tx.push(0, &ok).unwrap();
        assert_eq!(
            tx.push(0, &ipv4_packet(max + 1, 2)),
            Err(Error::TooBig {
                len: max + 1,
                mtu: max
            })
        );
        let outers = drain(&mut tx, 0);
        assert_eq!(outers.len(), 1);
        assert_eq!(offsets(&outers), [0]);
        assert_eq!(
            decode(&mut receiver(ReceiverConfig::default()), &outers),
            vec![ok.clone()]
        );
        // dont-frag never splits: two packets that would share an outer go in two.
        let mut tx = sender(cfg);
        tx.push(0, &ipv4_packet(1000, 3)).unwrap();
        tx.push(0, &ipv4_packet(1000, 4)).unwrap();
        let outers = drain(&mut tx, 0);
        assert_eq!(offsets(&outers), [0, 0]);
        assert_eq!(tx.counters().fragmented_packets, 0);
        assert_eq!(tx.counters().extra_pad_octets as usize, 2 * (max - 1000));
        // Without dont-frag, one octet more takes two outers.
        let mut tx = sender(cbr(1500, outer_v6));
        let big = ipv4_packet(max + 1, 5);
        let outers = encode(&mut tx, std::slice::from_ref(&big));
        assert_eq!(offsets(&outers), [0, 1]);
        assert_eq!(
            decode(&mut receiver(ReceiverConfig::default()), &outers),
            vec![big]
        );
    }
}

/// utpkt (3): 411 + 412 in 500-octet outers straddle.
#[test]
fn straddle_411_412() {
    let inner = vec![ipv4_packet(411, 1), ipv4_packet(412, 2)];
    let mut tx = sender(cbr(500, false));
    assert_eq!(tx.data_capacity(), 442);
    let outers = encode(&mut tx, &inner);
    assert_eq!(offsets(&outers), [0, 412 - 31]);
    assert_eq!(
        decode(&mut receiver(ReceiverConfig::default()), &outers),
        inner
    );
}

/// utpkt (4): 80 minimum-size pings aggregate, 51 per 1500-octet outer.
#[test]
fn eighty_min_size_aggregated() {
    let inner: Vec<_> = (0..80).map(|i| ipv4_packet(28, i)).collect();
    let mut tx = sender(SenderConfig {
        init_delay: 1_000_000,
        ..SenderConfig::linux_demand()
    });
    let outers = encode(&mut tx, &inner);
    assert_eq!(outers.len(), 2);
    let pays = open_all(&outers);
    assert_eq!(pays[0].1.len() - 4, 51 * 28);
    assert_eq!(pays[1].1.len() - 4, 29 * 28);
    assert_eq!(
        decode(&mut receiver(ReceiverConfig::default()), &outers),
        inner
    );
}

/// utpkt (5): three 1441-octet inners leave 1- and 2-octet runts; and every runt size for
/// IPv4 (1-3) and IPv6 (1-5).
#[test]
fn runts() {
    let inner: Vec<_> = (0..3).map(|i| ipv4_packet(1441, i)).collect();
    let mut tx = sender(cbr(1500, false));
    let outers = encode(&mut tx, &inner);
    assert_eq!(offsets(&outers), [0, 1440, 1439]);
    let pays = open_all(&outers);
    assert_eq!(&pays[0].1[4 + 1441..], &inner[1][..1]); // 1-octet runt
    assert_eq!(&pays[1].1[4 + 1440..], &inner[2][..2]); // 2-octet runt
    assert_eq!(
        decode(&mut receiver(ReceiverConfig::default()), &outers),
        inner
    );
    for v6 in [false, true] {
        for r in 1..=if v6 { 5 } else { 3 } {
            let inner = vec![pkt(v6, 1442 - r, 1), pkt(v6, 200, 2), pkt(v6, 60, 3)];
            let outers = encode(&mut sender(cbr(1500, false)), &inner);
            assert_eq!(offsets(&outers), [0, 200 - r as u16]);
            let mut rx = receiver(ReceiverConfig::default());
            assert_eq!(decode(&mut rx, &outers), inner, "v6 {v6} runt {r}");
        }
    }
}

/// An inner packet spanning many outers (Linux panicked at >= 3), plus all-pad outers
/// interleaved between its fragments.
#[test]
fn long_spans_and_all_pad_between_fragments() {
    let big = ipv4_packet(20_000, 9);
    let mut tx = sender(cbr(600, false));
    let outers = encode(&mut tx, std::slice::from_ref(&big));
    assert!(outers.len() >= 30);
    assert_eq!(
        decode(&mut receiver(ReceiverConfig::default()), &outers),
        vec![big.clone()]
    );
    // Hand-built: fragment, all-pad, all-pad, continuation.
    let mut esp = esp_tx();
    let mut p1 = vec![0, 0, 0, 0];
    p1.extend_from_slice(&big[..300]);
    let allpad = [0u8, 0, 0, 0, 0, 0, 0, 0];
    let mut p3 = vec![0, 0];
    p3.extend_from_slice(&((big.len() - 300) as u16).to_be_bytes());
    p3.extend_from_slice(&big[300..]);
    let outers = vec![
        seal(&mut esp, &p1, NH_AGGFRAG),
        seal(&mut esp, &allpad, NH_AGGFRAG),
        seal(&mut esp, &allpad, NH_AGGFRAG),
        seal(&mut esp, &p3, NH_AGGFRAG),
    ];
    let mut rx = receiver(ReceiverConfig::default());
    assert_eq!(decode(&mut rx, &outers), vec![big]);
    assert_eq!(rx.counters().all_pad_packets, 2);
}

/// Builds a stream where inner packets straddle outers: per-outer sequence of pings with a
/// half-size second payload (as iptfs-dev's reorder suite does).
fn straddle_stream(n_inner: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let inner: Vec<_> = (0..n_inner)
        .map(|i| ipv4_packet(if i % 2 == 0 { 1000 } else { 500 }, i as u32))
        .collect();
    let outers = encode(&mut sender(cbr(1500, false)), &inner);
    (inner, outers)
}

/// Reverse-order runs: 2of2, 3of3, 5of5 with window 5, 7of7 with window 7, many times.
#[test]
fn reversed_runs() {
    for (run, window) in [(2usize, 5u16), (3, 5), (5, 5), (7, 7)] {
        for send_immediately in [false, true] {
            let (inner, outers) = straddle_stream(30 * run);
            let mut arrival = Vec::new();
            for chunk in outers.chunks(run) {
                arrival.extend(chunk.iter().rev().cloned());
            }
            let mut rx = receiver(ReceiverConfig {
                reorder_window: window,
                send_immediately,
                ..Default::default()
            });
            let got = decode(&mut rx, &arrival);
            let c = rx.counters();
            assert_eq!(
                c.missed_packets + c.incomplete_packets + c.late_packets,
                0,
                "run {run}"
            );
            if send_immediately {
                let mut sorted = got.clone();
                sorted.sort_by_key(|p| u16::from_be_bytes([p[4], p[5]]));
                assert_eq!(sorted, inner);
            } else {
                assert_eq!(tags(&got), tags(&inner), "run {run} window {window}");
                assert!(got == inner);
            }
        }
    }
}

/// Which outers (by index) each inner packet of a fully packed stream touches.
fn spans(inner: &[Vec<u8>], cap: usize) -> Vec<(usize, usize)> {
    let mut at = 0;
    inner
        .iter()
        .map(|p| {
            let s = (at / cap, (at + p.len() - 1) / cap);
            at += p.len();
            s
        })
        .collect()
}

/// iptfs-dev `drop_2to{Y}of{N}[_exceptevery_{Z}]` with window 4: the exact set of inner
/// packets that survive is delivered in order, the rest are counted lost.
#[test]
fn drop_n_of_m_window_4() {
    let mut cases = 0;
    for n in [3usize, 4, 5, 6, 8, 10] {
        for y in 2..=n.min(5) {
            for z in [None, Some(2usize), Some(3)] {
                cases += 1;
                let (inner, outers) = straddle_stream(90);
                let dropped = |i: usize| {
                    let k = i % n + 1;
                    (2..=y).contains(&k) && z.is_none_or(|z| !i.is_multiple_of(z))
                };
                let kept: Vec<_> = outers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !dropped(*i))
                    .map(|(_, o)| o.clone())
                    .collect();
                let mut rx = receiver(ReceiverConfig {
                    reorder_window: 4,
                    drop_time: 50_000_000,
                    ..Default::default()
                });
                let got = decode(&mut rx, &kept);
                let sp = spans(&inner, 1442);
                let want: Vec<_> = inner
                    .iter()
                    .zip(&sp)
                    .filter(|(_, (a, b))| !(*a..=*b).any(dropped))
                    .map(|(p, _)| p.clone())
                    .collect();
                assert_eq!(
                    tags(&got),
                    tags(&want),
                    "drop 2to{y}of{n} except {z:?} {} outers {:?}",
                    outers.len(),
                    rx.counters()
                );
                assert!(got == want);
                let last =
                    outers.len() - 1 - (0..outers.len()).rev().take_while(|&i| dropped(i)).count();
                let lost = (0..last).filter(|&i| dropped(i)).count() as u64;
                assert_eq!(rx.counters().missed_packets, lost);
            }
        }
    }
    assert!(cases >= 28);
}

/// iptfs-dev `flood`: with init-delay 100 ms, 5 pings each way (10 pings) make exactly 2 outer
/// ESP packets each way.
#[test]
fn ten_pings_two_outers_each_way() {
    let cfg = SenderConfig {
        init_delay: 100_000_000,
        ..SenderConfig::linux_demand()
    };
    let mut a_tx = sender(cfg.clone());
    let mut b_rx = receiver(ReceiverConfig::default());
    let mut b_tx = sender(cfg);
    let mut a_rx = receiver(ReceiverConfig::default());
    let mut buf = vec![0u8; 1480];
    let (mut ab, mut ba, mut replies) = (0, 0, 0);
    for burst in 0..2u64 {
        let t0 = burst * 1_000_000_000;
        for i in 0..5u64 {
            a_tx.push(t0 + i * 1000, &ipv4_packet(84, (burst * 5 + i) as u32))
                .unwrap();
            assert_eq!(
                a_tx.poll(t0 + i * 1000, &mut buf).unwrap(),
                Poll::Wait(Some(t0 + 100_000_000))
            );
        }
        let mut requests = Vec::new();
        while let Poll::Send(s) = a_tx.poll(t0 + 100_000_000, &mut buf).unwrap() {
            ab += 1;
            b_rx.receive(t0, &mut buf[..s.len], &mut |p: &[u8]| {
                requests.push(p.to_vec())
            })
            .unwrap();
        }
        assert_eq!(requests.len(), 5);
        for r in &requests {
            b_tx.push(t0 + 100_000_000, r).unwrap();
        }
        while let Poll::Send(s) = b_tx.poll(t0 + 200_000_000, &mut buf).unwrap() {
            ba += 1;
            a_rx.receive(t0, &mut buf[..s.len], &mut |_: &[u8]| replies += 1)
                .unwrap();
        }
    }
    assert_eq!((ab, ba, replies), (2, 2, 10));
}

#[test]
fn constant_rate_all_pad_and_rate() {
    let interval = 1_000_000; // 1 ms
    let mut tx = sender(cbr(1500, false));
    let mut rx = receiver(ReceiverConfig::default());
    let mut buf = vec![0u8; tx.max_esp_len()];
    let mut sent = 0;
    let mut got = 0;
    let mut now = 0u64;
    // One simulated second; inner load changes every 100 ms.
    while now < 1_000_000_000 {
        let load = (now / 100_000_000) % 3; // 0: idle, 1: light, 2: overload
        if load > 0 && now.is_multiple_of(250_000) {
            for i in 0..load * load {
                let _ = tx.push(now, &ipv4_packet(200 + 300 * i as usize, i as u32));
            }
        }
        if let Poll::Send(s) = tx.poll(now, &mut buf).unwrap() {
            assert_eq!(s.len, 1480);
            sent += 1;
            rx.receive(now, &mut buf[..s.len], &mut |_: &[u8]| got += 1)
                .unwrap();
        }
        now += 50_000;
    }
    assert_eq!(sent, 1000, "exactly one outer per interval");
    let c = tx.counters();
    assert!(c.all_pad_packets >= 100, "idle periods are all-pad: {c:?}");
    assert_eq!(rx.counters().all_pad_packets, c.all_pad_packets);
    assert!(got > 0);
    assert_eq!(
        SendMode::l3_rate(12_000_000, 1500).unwrap(),
        SendMode::ConstantRate { interval }
    );
    assert_eq!(c.missed_slots, 0);
}

/// A caller woken a few slots late gets those slots back to back (the rate over the second
/// holds); one woken further behind than CATCH_UP_SLOTS loses only the excess, counted.
#[test]
fn constant_rate_late_poll_catches_up_then_skips() {
    let interval = 1_000_000;
    let mut tx = sender(cbr(1500, false));
    let mut buf = vec![0u8; tx.max_esp_len()];
    let mut drain = |tx: &mut Sender, now: u64| {
        let mut n = 0;
        while let Poll::Send(_) = tx.poll(now, &mut buf).unwrap() {
            n += 1;
        }
        n
    };
    assert_eq!(drain(&mut tx, 0), 1, "the first slot is now");
    // Woken 3.5 slots after the next one was due: that slot and the 3 after it.
    assert_eq!(drain(&mut tx, interval + 3 * interval + interval / 2), 4);
    assert_eq!(tx.counters().late_slots, 3);
    assert_eq!(tx.counters().missed_slots, 0);
    // On time again: one per slot.
    assert_eq!(drain(&mut tx, 5 * interval), 1);
    // Woken 20 slots late: CATCH_UP_SLOTS + 1 go out, the rest are skipped.
    let behind = 20;
    assert_eq!(
        drain(&mut tx, (6 + behind) * interval),
        CATCH_UP_SLOTS as usize + 1
    );
    assert_eq!(tx.counters().missed_slots, behind - CATCH_UP_SLOTS);
    assert_eq!(tx.counters().late_slots, 3 + CATCH_UP_SLOTS);
    // The schedule continues from the last slot sent, one interval on.
    assert_eq!(drain(&mut tx, (7 + behind) * interval - 1), 0);
    assert_eq!(drain(&mut tx, (7 + behind) * interval), 1);
    assert_eq!(tx.counters().outer_packets, 1 + 4 + 1 + 9 + 1);
}

#[test]
fn max_aggregation_time_drops_stale() {
    let cfg = SenderConfig {
        max_aggregation_time: Some(5_000_000),
        ..cbr(1500, false)
    };
    let mut tx = sender(SenderConfig {
        mode: SendMode::ConstantRate {
            interval: 10_000_000,
        },
        ..cfg
    });
    let mut buf = vec![0u8; 1480];
    assert!(matches!(tx.poll(0, &mut buf).unwrap(), Poll::Send(_)));
    for i in 0..3 {
        tx.push(1_000_000, &ipv4_packet(1000, i)).unwrap();
    }
    // Next slot at 10 ms: all three waited 9 ms > 5 ms.
    let Poll::Send(s) = tx.poll(10_000_000, &mut buf).unwrap() else {
        panic!()
    };
    assert!(s.all_pad);
    assert_eq!(tx.counters().dropped_stale, 3);
}

#[test]
fn plain_esp_mode() {
    let inner = vec![ipv4_packet(64, 1), ipv6_packet(64, 2), ipv4_packet(1446, 3)];
    let mut tx = sender(SenderConfig::plain());
    assert_eq!(
        tx.push(0, &ipv4_packet(1447, 4)),
        Err(Error::TooBig {
            len: 1447,
            mtu: 1446
        })
    );
    let outers = encode(&mut tx, &inner);
    assert_eq!(outers.len(), 3);
    let nhs: Vec<_> = open_all(&outers).iter().map(|(nh, _)| *nh).collect();
    assert_eq!(nhs, [NH_IPV4, NH_IPV6, NH_IPV4]);
    let mut rx = receiver(ReceiverConfig::default());
    assert_eq!(decode(&mut rx, &outers), inner);
    assert_eq!(rx.counters().plain_packets, 3);
}

#[test]
fn congestion_control_subtype_1() {
    let cfg = SenderConfig {
        congestion_control: true,
        ..cbr(1500, false)
    };
    let mut a = sender(cfg.clone());
    assert_eq!(a.data_capacity(), 1446 - 24);
    let mut b = sender(cfg);
    let inner = vec![ipv4_packet(3000, 1)];
    a.push(5_000_000, &inner[0]).unwrap();
    let outers = drain(&mut a, 5_000_000);
    let pays = open_all(&outers);
    assert!(pays.iter().all(|(_, p)| p[0] == 1 && p[1] == 0));
    let mut rx_b = receiver(ReceiverConfig::default());
    assert_eq!(decode(&mut rx_b, &outers), inner);
    let (cc, _) = rx_b.last_cc().unwrap();
    assert_eq!(outers.len(), 3);
    assert_eq!(cc.tval, 7000, "third outer sent at 7 ms");
    // B echoes A's TVal 2 ms after receiving it; A sees the echo 8 ms after sending.
    b.on_peer_cc(&cc, 7_000_000);
    let mut buf = vec![0u8; 1480];
    let Poll::Send(s) = b.poll(9_000_000, &mut buf).unwrap() else {
        panic!()
    };
    let mut rx_a = receiver(ReceiverConfig::default());
    rx_a.receive(15_000_000, &mut buf[..s.len], &mut |_: &[u8]| {})
        .unwrap();
    let (echo, at) = rx_a.last_cc().unwrap();
    assert_eq!(
        (echo.techo, echo.echo_delay_us, at),
        (7000, 2000, 15_000_000)
    );
    a.on_peer_cc(&echo, at);
    assert_eq!(a.rtt_us(), 15_000 - 7000 - 2000);
}

#[test]
fn lost_packet_timer_and_delivery_styles() {
    let inner: Vec<_> = (0..3).map(|i| ipv4_packet(1442, i)).collect();
    let outers = encode(&mut sender(cbr(1500, false)), &inner);
    assert_eq!(outers.len(), 3);
    for immediate in [false, true] {
        let mut rx = receiver(ReceiverConfig {
            drop_time: 1000,
            send_immediately: immediate,
            ..Default::default()
        });
        let mut got = Vec::new();
        let mut d = |p: &[u8]| got.push(p[5]);
        rx.receive(0, &mut outers[0].clone(), &mut d).unwrap();
        rx.receive(10, &mut outers[2].clone(), &mut d).unwrap();
        assert_eq!(rx.poll(500, &mut d), Some(1010));
        assert_eq!(got, if immediate { vec![0, 2] } else { vec![0] });
        let mut d = |p: &[u8]| got.push(p[5]);
        assert_eq!(rx.poll(1010, &mut d), None);
        // The lost one arriving now is late.
        rx.receive(2000, &mut outers[1].clone(), &mut d).unwrap();
        assert_eq!(got, [0, 2]);
        assert_eq!(
            (rx.counters().missed_packets, rx.counters().timer_losses),
            (1, 1)
        );
        assert_eq!(rx.counters().late_packets, 1);
    }
    // A stalled reassembly is abandoned by the timer.
    let big = ipv4_packet(3000, 7);
    let outers = encode(&mut sender(cbr(1500, false)), std::slice::from_ref(&big));
    let mut rx = receiver(ReceiverConfig {
        drop_time: 1000,
        ..Default::default()
    });
    rx.receive(0, &mut outers[0].clone(), &mut |_: &[u8]| panic!())
        .unwrap();
    assert_eq!(rx.poll(0, &mut |_: &[u8]| {}), Some(1000));
    assert_eq!(rx.poll(1000, &mut |_: &[u8]| {}), None);
    assert_eq!(rx.counters().incomplete_packets, 1);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: counted and dropped, never a panic.

#[test]
fn malformed_esp() {
    let outers = encode(
        &mut sender(cbr(1500, false)),
        &[ipv4_packet(100, 1), ipv4_packet(3000, 2)],
    );
    let mut rx = receiver(ReceiverConfig::default());
    let sink = &mut |_: &[u8]| {};
    assert!(matches!(
        rx.receive(0, &mut outers[0][..30].to_vec(), sink),
        Err(Error::Truncated { len: 30 })
    ));
    assert!(matches!(
        rx.receive(0, &mut outers[0][..100].to_vec(), sink),
        Err(Error::BadIcv)
    ));
    let mut flipped = outers[0].clone();
    flipped[500] ^= 0x10;
    assert_eq!(rx.receive(0, &mut flipped, sink), Err(Error::BadIcv));
    rx.receive(0, &mut outers[0].clone(), sink).unwrap();
    assert_eq!(
        rx.receive(0, &mut outers[0].clone(), sink),
        Err(Error::Replayed { seq: 1 })
    );
    let c = rx.counters();
    assert_eq!((c.truncated, c.bad_icv, c.replayed), (1, 2, 1));
    // Too old: a 64-packet replay window, 100 packets ahead.
    let mut esp = esp_tx();
    let mut rx = iptfs::Receiver::new(
        ReceiverConfig::default(),
        iptfs::EspInbound::new(SPI, &key(), false, 64).unwrap(),
    )
    .unwrap();
    let old = seal(&mut esp, &[0, 0, 0, 0, 0], NH_AGGFRAG);
    esp.set_last_seq(100);
    rx.receive(0, &mut seal(&mut esp, &[0, 0, 0, 0, 0], NH_AGGFRAG), sink)
        .unwrap();
    assert_eq!(
        rx.receive(0, &mut old.clone(), sink),
        Err(Error::TooOld { seq: 1 })
    );
    assert_eq!(rx.counters().too_old, 1);
    // Unknown next header.
    assert_eq!(
        rx.receive(0, &mut seal(&mut esp, &[1, 2, 3], 17), sink),
        Err(Error::BadNextHeader { next_header: 17 })
    );
    assert_eq!(rx.counters().errored(), 1);
}

#[test]
fn malformed_bad_pad() {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let k = LessSafeKey::new(
        UnboundKey::new(
            &AES_128_GCM,
            &[
                0x4a, 0x50, 0x6a, 0x79, 0x4f, 0x57, 0x42, 0x65, 0x56, 0x45, 0x51, 0x69, 0x4d, 0x65,
                0x37, 0x68,
            ],
        )
        .unwrap(),
    );
    let mut pkt = vec![0u8; 16 + 8 + 16];
    pkt[..4].copy_from_slice(&SPI.to_be_bytes());
    pkt[4..8].copy_from_slice(&1u32.to_be_bytes());
    pkt[8..16].copy_from_slice(&1u64.to_be_bytes());
    pkt[16..24].copy_from_slice(&[0, 0, 0, 0, 9, 9, 2, 144]); // pad "9 9" instead of "1 2"
    let mut nonce = [0x1a, 0x2b, 0x1a, 0x2b, 0, 0, 0, 0, 0, 0, 0, 0];
    nonce[4..].copy_from_slice(&1u64.to_be_bytes());
    let mut aad = [0u8; 8];
    aad[..4].copy_from_slice(&SPI.to_be_bytes());
    aad[4..].copy_from_slice(&1u32.to_be_bytes());
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut pkt[16..24],
        )
        .unwrap();
    pkt[24..].copy_from_slice(tag.as_ref());
    let mut rx = receiver(ReceiverConfig::default());
    assert_eq!(
        rx.receive(0, &mut pkt, &mut |_: &[u8]| {}),
        Err(Error::BadPad)
    );
    assert_eq!(rx.counters().bad_pad, 1);
}

fn agg(off: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0];
    p.extend_from_slice(&off.to_be_bytes());
    p.extend_from_slice(data);
    p
}

#[test]
fn malformed_aggfrag() {
    let a = ipv4_packet(100, 1);
    let big = ipv4_packet(1000, 2);
    let c = ipv4_packet(60, 3);
    let mut esp = esp_tx();
    let mut rx = receiver(ReceiverConfig::default());
    let mut got: Vec<Vec<u8>> = Vec::new();
    let feed = |rx: &mut iptfs::Receiver,
                esp: &mut iptfs::EspOutbound,
                payload: &[u8],
                got: &mut Vec<Vec<u8>>| {
        rx.receive(0, &mut seal(esp, payload, NH_AGGFRAG), &mut |p: &[u8]| {
            got.push(p.to_vec())
        })
    };
    // Unknown block type after a good packet: the good one is delivered, the rest dropped.
    let mut d = a.clone();
    d.extend_from_slice(&[0x50, 1, 2, 3]);
    feed(&mut rx, &mut esp, &agg(0, &d), &mut got).unwrap();
    assert_eq!(rx.counters().unknown_blocks, 1);
    // Sub-type 2, flags set, truncated header.
    assert_eq!(
        feed(&mut rx, &mut esp, &[2, 0, 0, 0], &mut got),
        Err(Error::BadSubtype { subtype: 2 })
    );
    assert_eq!(
        feed(&mut rx, &mut esp, &[0, 0x80, 0, 0], &mut got),
        Err(Error::BadFlags { flags: 0x80 })
    );
    let mut cc = vec![1, 0x01, 0, 0];
    cc.extend_from_slice(&[0; 20]);
    cc.extend_from_slice(&c);
    assert_eq!(
        feed(&mut rx, &mut esp, &cc, &mut got),
        Err(Error::BadFlags { flags: 1 })
    );
    assert_eq!(
        feed(&mut rx, &mut esp, &[1, 0, 0, 0, 0, 0], &mut got),
        Err(Error::AggfragTruncated { len: 6 })
    );
    assert_eq!(
        feed(&mut rx, &mut esp, &[0, 0], &mut got),
        Err(Error::AggfragTruncated { len: 2 })
    );
    // BlockOffset past the packet being reassembled: 400 of 1000 seen, offset says 900.
    feed(&mut rx, &mut esp, &agg(0, &big[..400]), &mut got).unwrap();
    let mut d = big[400..].to_vec();
    d.extend_from_slice(&[0; 300]);
    feed(&mut rx, &mut esp, &agg(900, &d), &mut got).unwrap();
    assert_eq!(rx.counters().inconsistent_offsets, 1);
    assert_eq!(rx.counters().incomplete_packets, 1);
    // BlockOffset past the end of the payload with nothing in progress: the whole data area
    // is a continuation of a packet whose start was never seen, counted as skipped octets
    // (not as an inconsistency: there is nothing to be inconsistent with).
    let before = rx.counters().clone();
    let delivered = got.len();
    feed(&mut rx, &mut esp, &agg(5000, &[1; 50]), &mut got).unwrap();
    assert_eq!(rx.counters().skipped_octets, before.skipped_octets + 50);
    assert_eq!(
        rx.counters().inconsistent_offsets,
        before.inconsistent_offsets
    );
    assert_eq!(rx.counters().incomplete_packets, before.incomplete_packets);
    assert_eq!(got.len(), delivered);
    // Resync: the next good packet arrives intact.
    feed(&mut rx, &mut esp, &agg(0, &c), &mut got).unwrap();
    // BlockOffset 0 (non-pad) where a continuation was expected.
    feed(&mut rx, &mut esp, &agg(0, &big[..500]), &mut got).unwrap();
    feed(&mut rx, &mut esp, &agg(0, &c), &mut got).unwrap();
    assert_eq!(rx.counters().inconsistent_offsets, 2);
    // IPv4 length field < 20; a runt whose block ends before its length field.
    feed(
        &mut rx,
        &mut esp,
        &agg(0, &[0x45, 0, 0, 10, 0, 0]),
        &mut got,
    )
    .unwrap();
    feed(&mut rx, &mut esp, &agg(0, &[0x45, 0]), &mut got).unwrap();
    feed(&mut rx, &mut esp, &agg(1, &[0]), &mut got).unwrap();
    assert_eq!(rx.counters().bad_inner_length, 2);
    // A runt whose completed length disagrees with the offset.
    feed(&mut rx, &mut esp, &agg(0, &[0x45, 0]), &mut got).unwrap();
    feed(&mut rx, &mut esp, &agg(3, &[0, 100, 0]), &mut got).unwrap();
    assert_eq!(rx.counters().inconsistent_offsets, 3);
    assert_eq!(got, vec![a, c.clone(), c]);
    let cnt = rx.counters();
    assert_eq!(
        (cnt.bad_subtype, cnt.bad_flags, cnt.aggfrag_truncated),
        (1, 2, 2)
    );
    // Non-strict receivers accept sub-type 1 with P/E flags.
    let mut rx = receiver(ReceiverConfig {
        strict_flags: false,
        ..Default::default()
    });
    let mut got = Vec::new();
    feed(&mut rx, &mut esp_tx(), &cc, &mut got).unwrap();
    assert_eq!(got, vec![ipv4_packet(60, 3)]);
}

#[test]
fn sender_rejects_bad_input_and_config() {
    let mut tx = sender(SenderConfig::linux_demand());
    assert_eq!(
        tx.push(0, &[0x45, 0, 0]),
        Err(Error::BadInnerPacket { len: 3 })
    );
    assert_eq!(
        tx.push(0, &[0x55; 40]),
        Err(Error::BadInnerPacket { len: 40 })
    );
    let mut p = ipv4_packet(100, 1);
    p.push(0);
    assert_eq!(tx.push(0, &p), Err(Error::BadInnerPacket { len: 101 }));
    let mut small = vec![0u8; 100];
    assert!(matches!(
        tx.poll(0, &mut small),
        Err(Error::BufferTooSmall { .. })
    ));
    let mut tx = sender(SenderConfig {
        max_queue_bytes: 1000,
        ..SenderConfig::linux_demand()
    });
    tx.push(0, &ipv4_packet(900, 1)).unwrap();
    assert!(matches!(
        tx.push(0, &ipv4_packet(200, 2)),
        Err(Error::QueueFull { .. })
    ));
    assert!(
        iptfs::Sender::new(
            SenderConfig {
                outer_packet_size: 50,
                ..SenderConfig::linux_demand()
            },
            esp_tx()
        )
        .is_err()
    );
    assert!(
        iptfs::Sender::new(
            SenderConfig {
                outer_header_len: 14,
                ..SenderConfig::linux_demand()
            },
            esp_tx()
        )
        .is_err()
    );
    assert!(iptfs::EspOutbound::new(0, &key(), false).is_err());
}

#[test]
fn window_zero_and_mid_stream_join() {
    let inner: Vec<_> = (0..6).map(|i| ipv4_packet(1442, i)).collect();
    let outers = encode(&mut sender(cbr(1500, false)), &inner);
    // Window 0: a gap is a loss at once, a late packet is dropped.
    let mut rx = receiver(ReceiverConfig {
        reorder_window: 0,
        ..Default::default()
    });
    let mut got = Vec::new();
    for i in [0usize, 2, 1, 3] {
        rx.receive(0, &mut outers[i].clone(), &mut |p: &[u8]| got.push(tag(p)))
            .unwrap();
    }
    assert_eq!(got, [0, 2, 3]);
    let c = rx.counters();
    assert_eq!(
        (c.missed_packets, c.late_packets, c.reordered_packets),
        (1, 1, 0)
    );
    // Joining mid-stream (capture replay): the first outer seen is delivered at once.
    let mut rx = receiver(ReceiverConfig::default());
    rx.resync();
    let mut got = Vec::new();
    for o in &outers[4..] {
        rx.receive(0, &mut o.clone(), &mut |p: &[u8]| got.push(tag(p)))
            .unwrap();
    }
    assert_eq!(got, [4, 5]);
    assert_eq!(rx.counters().missed_packets, 0);
    // Without resync a fresh SA counts seqs 1-4 as missed (window overflow jump).
    let mut rx = receiver(ReceiverConfig::default());
    let got = decode(&mut rx, &outers[4..]);
    assert_eq!(tags(&got), [4, 5]);
    assert_eq!(rx.counters().missed_packets, 4);
}

#[test]
fn esn_sa_through_the_codec() {
    let inner: Vec<_> = (0..20).map(|i| ipv4_packet(900, i)).collect();
    let mut esp = iptfs::EspOutbound::new(SPI, &key(), true).unwrap();
    esp.set_last_seq((1u64 << 32) - 5);
    let mut tx = iptfs::Sender::new(cbr(1500, false), esp).unwrap();
    let outers = encode(&mut tx, &inner);
    assert!(tx.esp().last_seq() > 1u64 << 32);
    let mut rx = iptfs::Receiver::new(
        ReceiverConfig::default(),
        iptfs::EspInbound::new(SPI, &key(), true, 64).unwrap(),
    )
    .unwrap();
    rx.resync();
    let got = decode(&mut rx, &outers);
    assert!(got == inner);
}
