//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use iptfs::esp::{EspInbound, EspOutbound, NH_AGGFRAG};
use iptfs::{Poll, Receiver, ReceiverConfig, SaKey, Sender, SenderConfig};

pub const SPI: u32 = 0xAAA;

/// iptfs-dev's shared test key (`rfc4106(gcm(aes))`, key ‖ salt).
pub fn key() -> SaKey {
    SaKey::from_hex("0x4a506a794f574265564551694d6537681A2B1A2B").unwrap()
}

pub fn sender(cfg: SenderConfig) -> Sender {
    Sender::new(cfg, EspOutbound::new(SPI, &key(), false).unwrap()).unwrap()
}

pub fn receiver(cfg: ReceiverConfig) -> Receiver {
    Receiver::new(cfg, EspInbound::new(SPI, &key(), false, 1024).unwrap()).unwrap()
}

/// Pushes everything at t=0 and polls until the queue drains; returns the ESP packets.
pub fn encode(tx: &mut Sender, pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
    for p in pkts {
        tx.push(0, p).unwrap();
    }
    drain(tx, 0)
}

/// Polls from `now` until the queue is empty.
pub fn drain(tx: &mut Sender, mut now: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; tx.max_esp_len()];
    while tx.queued_packets() > 0 {
        match tx.poll(now, &mut buf).unwrap() {
            Poll::Send(s) => out.push(buf[..s.len].to_vec()),
            Poll::Wait(Some(t)) => now = t,
            Poll::Wait(None) => break,
        }
    }
    out
}

/// Feeds outers in the given order at t=0, flushes timers, returns the delivered packets.
pub fn decode(rx: &mut Receiver, outers: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for o in outers {
        let mut b = o.clone();
        rx.receive(0, &mut b, &mut |p: &[u8]| got.push(p.to_vec()))
            .unwrap();
    }
    rx.poll(u64::MAX / 2, &mut |p: &[u8]| got.push(p.to_vec()));
    got
}

/// Decrypts outers with a fresh SA: (next header, AGGFRAG payload).
pub fn open_all(outers: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
    let mut sa = EspInbound::new(SPI, &key(), false, 1024).unwrap();
    outers
        .iter()
        .map(|o| {
            let mut b = o.clone();
            let op = sa.open(&mut b).unwrap();
            (op.next_header, b[op.payload].to_vec())
        })
        .collect()
}

/// BlockOffsets of AGGFRAG outers.
pub fn offsets(outers: &[Vec<u8>]) -> Vec<u16> {
    open_all(outers)
        .iter()
        .map(|(nh, p)| {
            assert_eq!(*nh, NH_AGGFRAG);
            u16::from_be_bytes([p[2], p[3]])
        })
        .collect()
}

/// Seals an arbitrary payload as one ESP packet.
pub fn seal(esp: &mut EspOutbound, payload: &[u8], nh: u8) -> Vec<u8> {
    let mut buf = vec![0u8; payload.len() + 64];
    buf[16..16 + payload.len()].copy_from_slice(payload);
    let (n, _) = esp.seal(&mut buf, payload.len(), nh).unwrap();
    buf.truncate(n);
    buf
}

pub fn esp_tx() -> EspOutbound {
    EspOutbound::new(SPI, &key(), false).unwrap()
}

/// The tag `testutil` wrote into a packet's header (IPv4 identification, IPv6 flow label).
pub fn tag(p: &[u8]) -> u32 {
    if p[0] >> 4 == 6 {
        u32::from_be_bytes([0, p[1] & 0x0f, p[2], p[3]])
    } else {
        u16::from_be_bytes([p[4], p[5]]) as u32
    }
}

/// Tags of a packet list, for readable assertion messages.
pub fn tags(pkts: &[Vec<u8>]) -> Vec<u32> {
    pkts.iter().map(|p| tag(p)).collect()
}
