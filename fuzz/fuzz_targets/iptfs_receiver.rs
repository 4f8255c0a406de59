//! IP-TFS receiver (ESP decrypt + AGGFRAG decode) on fuzzer-chosen input. Pure random bytes
//! never pass the ICV, so most records are sealed with the right key first: the fuzzer then
//! reaches BlockOffset tracking, runts, reassembly, reordering and the timers. Any panic is a
//! bug; afterwards the counters must be consistent.
#![no_main]

use iptfs::esp::EspOutbound;
use iptfs::{EspInbound, Receiver, ReceiverConfig, SaKey};
use libfuzzer_sys::fuzz_target;

fn key() -> SaKey {
    SaKey::from_hex("4a506a794f574265564551694d6537681a2b1a2b").unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg_byte, mut rest)) = data.split_first() else { return };
    let cfg = ReceiverConfig {
        reorder_window: (cfg_byte & 7) as u16,
        drop_time: 1000,
        send_immediately: cfg_byte & 8 != 0,
        strict_flags: cfg_byte & 16 != 0,
    };
    let esn = cfg_byte & 32 != 0;
    let mut rx = Receiver::new(cfg, EspInbound::new(0xAAA, &key(), esn, 64).unwrap()).unwrap();
    let mut tx = EspOutbound::new(0xAAA, &key(), esn).unwrap();
    let mut now = 0u64;
    let mut delivered = 0u64;
    let mut buf = vec![0u8; 70_000];
    // Records: op (1) | len (1, or 2 when op bit 7) | bytes.
    while let Some((&op, r)) = rest.split_first() {
        let (len, r) = if op & 0x80 != 0 {
            let Some((l, r)) = r.split_first_chunk::<2>() else { return };
            (u16::from_be_bytes(*l) as usize, r)
        } else {
            let Some((&l, r)) = r.split_first() else { return };
            (l as usize, r)
        };
        let len = len.min(r.len());
        let (body, r) = r.split_at(len);
        rest = r;
        let mut sink = |p: &[u8]| {
            assert!(!p.is_empty());
            delivered += 1;
        };
        match op & 3 {
            0 => {
                let mut raw = body.to_vec();
                let _ = rx.receive(now, &mut raw, &mut sink);
            }
            1 | 2 => {
                // Sealed payload; op bits 2-4 move the sender's sequence number to make
                // reordering, gaps and replays.
                let jump = ((op >> 2) & 7) as u64;
                let last = tx.last_seq();
                match jump {
                    0 => {}
                    1..=3 => tx.set_last_seq(last + jump),
                    _ => tx.set_last_seq(last.saturating_sub(jump - 3)),
                }
                let nh = if op & 3 == 1 { 144 } else { [4, 41, 59, 144, 17][(op as usize >> 5) % 5] };
                let n = body.len();
                buf[16..16 + n].copy_from_slice(body);
                if let Ok((l, _)) = tx.seal(&mut buf, n, nh) {
                    let _ = rx.receive(now, &mut buf[..l], &mut sink);
                }
            }
            _ => {
                now += body.first().copied().unwrap_or(1) as u64 * 20;
                let _ = rx.poll(now, &mut sink);
            }
        }
    }
    rx.poll(u64::MAX / 2, &mut |_: &[u8]| delivered += 1);
    let c = rx.counters();
    assert_eq!(c.inner_packets, delivered);
});
