//! External oracle (issue 5 part 4, codec level): tshark decrypts the codec's ESP with the
//! shared test key, and an independent AGGFRAG decoder written here from RFC 9347 (not the
//! crate's `Receiver`) recovers the inner packets from tshark's decrypted payloads.
//!
//! What tshark checks that our own tests cannot: that the ESP/AES-GCM framing (SPI, sequence
//! number, IV, nonce = salt ‖ IV, AAD = SPI ‖ seq, trailer, ICV) is what another implementation
//! expects. What the decoder checks: that the AGGFRAG stream (sub-type 0, zero flags,
//! BlockOffsets, runts, fragments spanning several outers, pad blocks, all-pad payloads) is
//! decodable by someone reading only the RFC.
//!
//! If tshark is not installed the test prints `SKIPPED: tshark not installed` and passes (CI
//! installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use iptfs::testutil::{ipv4_packet, ipv6_packet};
use iptfs::{EspOutbound, Poll, SaKey, Sender, SenderConfig};

/// iptfs-dev's shared test key: AES-128 key ‖ 4-octet salt (reference §6).
const KEY_HEX: &str = "4a506a794f574265564551694d6537681a2b1a2b";
/// Constant-rate slot interval; also the pcap timestamp step.
const INTERVAL_NS: u64 = 1_000_000;

/// One run's outer addressing.
struct Outer {
    v6: bool,
    spi: u32,
    src: &'static str,
    dst: &'static str,
}

const OUTER_V4: Outer = Outer {
    v6: false,
    spi: 0xAAA,
    src: "10.0.1.2",
    dst: "10.0.1.3",
};
const OUTER_V6: Outer = Outer {
    v6: true,
    spi: 0x8000_0AAA,
    src: "fc00:0:0:1::2",
    dst: "fc00:0:0:1::3",
};

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn pkt(v6: bool, len: usize, tag: u32) -> Vec<u8> {
    if v6 {
        ipv6_packet(len, tag)
    } else {
        ipv4_packet(len, tag)
    }
}

/// The inner stream, in two bursts (an idle gap with all-pad outers between them).
/// `cap` is the DataBlock capacity of one outer (1442 for IPv4 outers, 1422 for IPv6).
fn inner_bursts(cap: usize) -> [Vec<Vec<u8>>; 2] {
    let mut tag = 0u32;
    let mut next = |v6: bool, len: usize| {
        tag += 1;
        pkt(v6, len, tag)
    };
    // Burst 1 starts at a block boundary, so each `cap - 1` packet pushes the cut one octet
    // further into the next packet: runts of 1 (IPv4), 2 (IPv6), 3 (IPv4), 4 and 5 (IPv6)
    // octets, each completed from the next payload.
    let mut a: Vec<Vec<u8>> = [false, false, true, false, true, true]
        .into_iter()
        .map(|v6| next(v6, cap - 1))
        .collect();
    // Fragments spanning three and more outers, both families.
    a.push(next(false, 3 * cap + 17));
    a.push(next(true, 5000));
    // Varied sizes, alternating families, from the minimum up to beyond one outer.
    for (i, len) in (28..=1600).step_by(53).enumerate() {
        let v6 = i % 2 == 1;
        a.push(next(v6, len.max(if v6 { 40 } else { 28 })));
    }
    // Burst 2 after the idle gap: many minimum-size packets aggregated, then a mix.
    let mut b = Vec::new();
    for i in 0..60 {
        b.push(next(i % 3 == 0, if i % 3 == 0 { 48 } else { 28 }));
    }
    for (i, len) in [1500usize, 9000, 41, 1443, 1, 577, 65535, 64, 1280]
        .into_iter()
        .enumerate()
    {
        b.push(next(i % 2 == 0, len));
    }
    [a, b]
}

/// An outer ESP packet as the codec produced it.
struct Esp {
    time: u64,
    bytes: Vec<u8>,
}

/// Encodes the bursts in IP-TFS constant-rate mode with 1500-octet outers: burst 1, two idle
/// slots (all-pad), burst 2, and one more slot (all-pad). Returns the outers and the pushed
/// inner packets in order.
fn encode(outer: &Outer) -> (Vec<Esp>, Vec<Vec<u8>>, usize) {
    let key = SaKey::from_hex(KEY_HEX).unwrap();
    let cfg = SenderConfig {
        outer_header_len: if outer.v6 { 40 } else { 20 },
        ..SenderConfig::constant_rate(1500, INTERVAL_NS)
    };
    let mut tx = Sender::new(cfg, EspOutbound::new(outer.spi, &key, false).unwrap()).unwrap();
    let cap = tx.data_capacity();
    let mut buf = vec![0u8; tx.max_esp_len()];
    let mut now = 0u64;
    let mut out = Vec::new();
    let mut pushed = Vec::new();
    let mut poll_once = |tx: &mut Sender, now: &mut u64, out: &mut Vec<Esp>| loop {
        match tx.poll(*now, &mut buf).unwrap() {
            Poll::Send(s) => {
                out.push(Esp {
                    time: *now,
                    bytes: buf[..s.len].to_vec(),
                });
                return;
            }
            Poll::Wait(Some(t)) => *now = t,
            Poll::Wait(None) => panic!("constant-rate sender has no next slot"),
        }
    };
    for (i, burst) in inner_bursts(cap).into_iter().enumerate() {
        for p in burst {
            tx.push(now, &p).unwrap();
            pushed.push(p);
        }
        while tx.queued_packets() > 0 {
            poll_once(&mut tx, &mut now, &mut out);
        }
        let idle = if i == 0 { 2 } else { 1 };
        for _ in 0..idle {
            poll_once(&mut tx, &mut now, &mut out);
        }
    }
    // One more (all-pad) outer with a flipped ciphertext bit: tshark must call its ICV bad.
    poll_once(&mut tx, &mut now, &mut out);
    let last = out.last_mut().unwrap();
    last.bytes[16 + 10] ^= 0x01;
    (out, pushed, cap)
}

fn parse_v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

fn parse_v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + outer IP (protocol 50) + ESP, written as a classic pcap (LINKTYPE_ETHERNET).
fn write_pcap(path: &Path, outer: &Outer, esp: &[Esp]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for (i, e) in esp.iter().enumerate() {
        let mut fr = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        if outer.v6 {
            fr.extend_from_slice(&0x86ddu16.to_be_bytes());
            fr.extend_from_slice(&[0x60, 0, 0, 0]);
            fr.extend_from_slice(&(e.bytes.len() as u16).to_be_bytes());
            fr.extend_from_slice(&[50, 64]);
            fr.extend_from_slice(&parse_v6(outer.src));
            fr.extend_from_slice(&parse_v6(outer.dst));
        } else {
            fr.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + e.bytes.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(i as u16).to_be_bytes());
            h[6] = 0x40; // DF, as Linux sets on IP-TFS outers
            h[8] = 64;
            h[9] = 50;
            h[12..16].copy_from_slice(&parse_v4(outer.src));
            h[16..20].copy_from_slice(&parse_v4(outer.dst));
            let c = ipv4_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            fr.extend_from_slice(&h);
        }
        fr.extend_from_slice(&e.bytes);
        let secs = (e.time / 1_000_000_000) as u32;
        let usecs = ((e.time % 1_000_000_000) / 1000) as u32;
        f.extend_from_slice(&(1_700_000_000 + secs).to_le_bytes());
        f.extend_from_slice(&usecs.to_le_bytes());
        f.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        f.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        f.extend_from_slice(&fr);
    }
    std::fs::write(path, f).unwrap();
}

/// One frame as tshark dissected it.
#[derive(Debug)]
struct Frame {
    number: u32,
    spi: u32,
    seq: u32,
    icv_good: bool,
    icv_bad: bool,
    /// `esp.sequence-analysis.expected-sn`: present only when tshark saw a sequence gap.
    expected_sn: String,
    /// `esp.contained_data`: the decrypted ESP payload without the trailer.
    contained: Vec<u8>,
}

const FIELDS: [&str; 7] = [
    "frame.number",
    "esp.spi",
    "esp.sequence",
    "esp.icv_good",
    "esp.icv_bad",
    "esp.sequence-analysis.expected-sn",
    "esp.contained_data",
];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn number(s: &str) -> u32 {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")),
    }
}

fn boolean(s: &str) -> bool {
    matches!(s, "1" | "True" | "true")
}

/// Runs tshark with ESP decryption and the ICV check on, the SA given by a `uat:esp_sa` entry
/// (reference §7), and returns the dissected frames.
fn tshark(pcap: &Path, outer: &Outer) -> Vec<Frame> {
    let sa = format!(
        "uat:esp_sa:\"{}\",\"{}\",\"{}\",\"0x{:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{KEY_HEX}\",\"NULL\",\"\"",
        if outer.v6 { "IPv6" } else { "IPv4" },
        outer.src,
        outer.dst,
        outer.spi
    );
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(pcap)
        .args(["-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-o", "esp.enable_authentication_check:TRUE"])
        .args(["-o", "esp.do_esp_sequence_analysis:TRUE"])
        .args(["-o", &sa])
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), FIELDS.len(), "tshark line {l:?}");
            Frame {
                number: number(c[0]),
                spi: number(c[1]),
                seq: number(c[2]),
                icv_good: boolean(c[3]),
                icv_bad: boolean(c[4]),
                expected_sn: c[5].to_string(),
                contained: hex(c[6]),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Independent AGGFRAG decoder, from RFC 9347 §2 only.

/// What the decoder saw, so the test can check the stream exercised the interesting cases.
#[derive(Debug, Default)]
struct Seen {
    /// Lengths of runts: blocks cut before their length field was complete (< 4 / < 6 octets).
    runts: Vec<usize>,
    /// Largest number of payloads one inner packet was spread over.
    max_span: usize,
    /// Payloads that carry only a pad block (BlockOffset 0).
    all_pad: usize,
    /// Payloads ending in a pad block after data.
    pad_blocks: usize,
}

/// A block being reassembled across payloads.
struct Partial {
    bytes: Vec<u8>,
    /// Total block length, once the length field has been seen.
    len: Option<usize>,
    span: usize,
}

/// The block length from its first octets, or None if more octets are needed (a runt).
fn block_len(b: &[u8]) -> Result<Option<usize>, String> {
    match b[0] >> 4 {
        4 if b.len() >= 4 => {
            let l = usize::from(u16::from_be_bytes([b[2], b[3]]));
            if l < 20 {
                return Err(format!("IPv4 total length {l} < 20"));
            }
            Ok(Some(l))
        }
        6 if b.len() >= 6 => Ok(Some(40 + usize::from(u16::from_be_bytes([b[4], b[5]])))),
        4 | 6 => Ok(None),
        t => Err(format!("block type {t} where a packet was expected")),
    }
}

/// Decodes AGGFRAG payloads (sequence number, payload) that must form one lossless stream:
/// every inconsistency (sub-type, flags, BlockOffset, sequence gap inside a fragment, unknown
/// block type, trailing partial packet) is an error.
fn aggfrag_decode(payloads: &[(u32, Vec<u8>)]) -> Result<(Vec<Vec<u8>>, Seen), String> {
    let mut out = Vec::new();
    let mut seen = Seen::default();
    let mut partial: Option<Partial> = None;
    let mut prev_seq: Option<u32> = None;
    for (seq, p) in payloads {
        let ctx = |m: String| format!("seq {seq}: {m}");
        if let Some(prev) = prev_seq
            && *seq != prev.wrapping_add(1)
        {
            return Err(ctx(format!("sequence gap after {prev}")));
        }
        prev_seq = Some(*seq);
        if p.len() < 4 {
            return Err(ctx(format!("payload of {} octets", p.len())));
        }
        if p[0] != 0 {
            return Err(ctx(format!("sub-type {}", p[0])));
        }
        if p[1] != 0 {
            return Err(ctx(format!("reserved octet {:#x}", p[1])));
        }
        let offset = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let data = &p[4..];
        let mut pos = 0;
        if let Some(mut part) = partial.take() {
            if offset == 0 {
                // Only an all-pad payload may sit between fragments (RFC 9347 §2.2.3).
                if data.first().is_some_and(|b| b >> 4 == 0) {
                    seen.all_pad += 1;
                    partial = Some(part);
                    continue;
                }
                return Err(ctx("BlockOffset 0 while a packet is incomplete".into()));
            }
            part.span += 1;
            // Complete a runt's length field from this payload first.
            if part.len.is_none() {
                let need = if part.bytes[0] >> 4 == 6 { 6 } else { 4 };
                let take = (need - part.bytes.len()).min(data.len());
                part.bytes.extend_from_slice(&data[..take]);
                pos = take;
                part.len = block_len(&part.bytes).map_err(ctx)?;
            }
            match part.len {
                None => partial = Some(part), // still a runt: the whole payload was used
                Some(len) => {
                    let before = part.bytes.len() - pos; // octets received before this payload
                    let remaining = len
                        .checked_sub(before)
                        .ok_or_else(|| ctx("runt longer than its packet".into()))?;
                    // BlockOffset: octets of this payload's DataBlocks before the next block.
                    if offset != remaining {
                        return Err(ctx(format!(
                            "BlockOffset {offset}, but {remaining} octets of the packet remain"
                        )));
                    }
                    let end = remaining.min(data.len());
                    part.bytes.extend_from_slice(&data[pos..end]);
                    pos = end;
                    if part.bytes.len() == len {
                        seen.max_span = seen.max_span.max(part.span);
                        out.push(part.bytes);
                    } else {
                        partial = Some(part);
                    }
                }
            }
        } else if offset != 0 {
            return Err(ctx(format!(
                "BlockOffset {offset} with no packet in progress"
            )));
        }
        // New blocks from `pos` on.
        let first_block = pos;
        while pos < data.len() {
            let rest = &data[pos..];
            if rest[0] >> 4 == 0 {
                // Pad block: runs to the end of the payload.
                if pos == 0 && first_block == 0 {
                    seen.all_pad += 1;
                } else {
                    seen.pad_blocks += 1;
                }
                break;
            }
            match block_len(rest).map_err(ctx)? {
                None => {
                    seen.runts.push(rest.len());
                    partial = Some(Partial {
                        bytes: rest.to_vec(),
                        len: None,
                        span: 1,
                    });
                    break;
                }
                Some(len) if len <= rest.len() => {
                    out.push(rest[..len].to_vec());
                    seen.max_span = seen.max_span.max(1);
                    pos += len;
                }
                Some(len) => {
                    partial = Some(Partial {
                        bytes: rest.to_vec(),
                        len: Some(len),
                        span: 1,
                    });
                    break;
                }
            }
        }
    }
    if partial.is_some() {
        return Err("stream ends inside a packet".into());
    }
    Ok((out, seen))
}

// ---------------------------------------------------------------------------------------------

fn tmp_pcap(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("iptfs-tshark-{}-{name}.pcap", std::process::id()))
}

/// Removes the pcap when the test ends, pass or fail (unless IPTFS_KEEP_PCAP is set).
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var_os("IPTFS_KEEP_PCAP").is_none() {
            let _ = std::fs::remove_file(&self.0);
        } else {
            eprintln!("kept {}", self.0.display());
        }
    }
}

fn run(outer: &Outer) {
    let (esp, pushed, cap) = encode(outer);
    let name = if outer.v6 { "v6" } else { "v4" };
    let path = tmp_pcap(name);
    let _cleanup = Cleanup(path.clone());
    write_pcap(&path, outer, &esp);
    let frames = tshark(&path, outer);

    assert_eq!(
        frames.len(),
        esp.len(),
        "{name}: one dissected frame per outer"
    );
    let (good, bad) = frames.split_at(frames.len() - 1);
    // The corrupted last outer: tshark's ICV check can fail, so its "good" verdicts mean something.
    assert!(
        bad[0].icv_bad && !bad[0].icv_good,
        "{name}: tshark did not flag the flipped bit: {:?}",
        bad[0]
    );
    let mut payloads = Vec::new();
    for (i, f) in good.iter().enumerate() {
        let summary = format!("{name} frame {}", f.number);
        assert_eq!(f.number as usize, i + 1, "{summary}");
        assert_eq!(f.spi, outer.spi, "{summary}: SPI");
        assert!(f.icv_good && !f.icv_bad, "{summary}: ICV not good: {f:?}");
        assert_eq!(f.seq as usize, i + 1, "{summary}: sequence numbers from 1");
        assert!(f.expected_sn.is_empty(), "{summary}: tshark saw a seq gap");
        // Constant-rate IP-TFS: every payload has the same length (1500 - outer IP - 8 - 8 - 2 - 16).
        let payload_len = 1500 - if outer.v6 { 40 } else { 20 } - 34;
        assert_eq!(f.contained.len(), payload_len, "{summary}: payload length");
        payloads.push((f.seq, f.contained.clone()));
    }
    assert_eq!(cap + 4, payloads[0].1.len(), "{name}: DataBlock capacity");

    let (got, seen) = aggfrag_decode(&payloads).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got.len(), pushed.len(), "{name}: inner packet count");
    for (i, (g, p)) in got.iter().zip(&pushed).enumerate() {
        assert!(
            g == p,
            "{name}: inner packet {i} differs (len {} vs {})",
            g.len(),
            p.len()
        );
    }
    // The stream really exercised what this test is about.
    for r in 1..=5 {
        assert!(
            seen.runts.contains(&r),
            "{name}: no {r}-octet runt: {seen:?}"
        );
    }
    assert!(
        seen.max_span >= 5,
        "{name}: no inner packet over 5+ outers: {seen:?}"
    );
    assert_eq!(
        seen.all_pad, 3,
        "{name}: all-pad payloads (the idle slots): {seen:?}"
    );
    assert!(
        seen.pad_blocks >= 2,
        "{name}: pad blocks after data: {seen:?}"
    );
    eprintln!(
        "{name}: {} outers, {} inner packets, tshark ICV good and seq 1..={}; {seen:?}",
        esp.len(),
        got.len(),
        good.len()
    );
}

#[test]
fn tshark_decrypts_and_independent_decoder_recovers_inner_ipv4_outer() {
    if !tshark_available() {
        eprintln!("SKIPPED: tshark not installed");
        return;
    }
    run(&OUTER_V4);
}

#[test]
fn tshark_decrypts_and_independent_decoder_recovers_inner_ipv6_outer() {
    if !tshark_available() {
        eprintln!("SKIPPED: tshark not installed");
        return;
    }
    run(&OUTER_V6);
}

/// The decoder itself on RFC 9347 Appendix A (hand-built payloads, no codec involved), plus
/// one inconsistent BlockOffset, so its verdicts above can be trusted.
#[test]
fn independent_decoder_appendix_a() {
    let sizes = [750usize, 750, 60, 240, 3000];
    let inner: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &l)| ipv4_packet(l, i as u32))
        .collect();
    let stream: Vec<u8> = inner.concat();
    let mut payloads = Vec::new();
    for (i, (start, off)) in [(0usize, 0u16), (1400, 100), (2800, 2000), (4200, 600)]
        .into_iter()
        .enumerate()
    {
        let mut p = vec![0, 0];
        p.extend_from_slice(&off.to_be_bytes());
        let end = (start + 1400).min(stream.len());
        p.extend_from_slice(&stream[start..end]);
        p.resize(1404, 0);
        payloads.push((i as u32 + 1, p));
    }
    let (got, seen) = aggfrag_decode(&payloads).unwrap();
    assert_eq!(got, inner);
    assert_eq!(seen.max_span, 3);
    assert_eq!(seen.pad_blocks, 1);
    payloads[2].1[3] = 0xcf; // BlockOffset 1999 instead of 2000
    assert!(aggfrag_decode(&payloads).is_err());
}
