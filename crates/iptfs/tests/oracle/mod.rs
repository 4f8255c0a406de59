//! External oracle for IP-TFS (issue 5 part 4), shared by the codec-level test
//! (`crates/iptfs/tests/tshark.rs`, `mod oracle;`) and the lab test
//! (`crates/switchboard/tests/netns.rs`, `#[path = ...] mod oracle;`).
//!
//! Two independent checkers, neither using the `iptfs` crate:
//! - tshark decrypts ESP (AES-GCM, RFC 4106) with the configured key and checks every ICV and
//!   the sequence numbers; [`tshark_esp`] runs it and returns the decrypted payloads;
//! - [`aggfrag_decode`], an AGGFRAG decoder written from RFC 9347 §2 only, recovers the inner
//!   packets from those payloads.
//!
//! Plus [`pcap_frames`], a classic-pcap reader for what tcpdump captured on the hosts.
//! Only std: whatever includes this file needs no extra dependency.
// Each including test crate uses a different subset of the helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// iptfs-dev's shared test key: AES-128 key ‖ 4-octet salt (reference §6).
pub const KEY_HEX: &str = "4a506a794f574265564551694d6537681a2b1a2b";

/// Whether `tshark` can be run at all.
pub fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One ESP SA for tshark's `esp_sa` table (AES-GCM-128 with a 16-octet ICV, no auth).
#[derive(Debug, Clone, Copy)]
pub struct EspSa<'a> {
    pub v6: bool,
    pub src: &'a str,
    pub dst: &'a str,
    pub spi: u32,
}

/// One ESP frame as tshark dissected it.
#[derive(Debug)]
pub struct Frame {
    pub number: u32,
    pub spi: u32,
    pub seq: u32,
    pub icv_good: bool,
    pub icv_bad: bool,
    /// `esp.sequence-analysis.expected-sn`: present only when tshark saw a sequence gap.
    pub expected_sn: String,
    /// `esp.contained_data`: the decrypted ESP payload without the trailer.
    pub contained: Vec<u8>,
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

/// Runs tshark on `pcap` with ESP decryption, the ICV check and sequence analysis on, one
/// `uat:esp_sa` entry per SA (reference §7), and returns the ESP frames (others are filtered
/// out with `-Y esp`), in capture order.
pub fn tshark_esp(pcap: &Path, key_hex: &str, sas: &[EspSa<'_>]) -> Vec<Frame> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(pcap)
        .args(["-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-o", "esp.enable_authentication_check:TRUE"])
        .args(["-o", "esp.do_esp_sequence_analysis:TRUE"]);
    for sa in sas {
        let entry = format!(
            "uat:esp_sa:\"{}\",\"{}\",\"{}\",\"0x{:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{key_hex}\",\"NULL\",\"\"",
            if sa.v6 { "IPv6" } else { "IPv4" },
            sa.src,
            sa.dst,
            sa.spi
        );
        cmd.args(["-o", &entry]);
    }
    cmd.args(["-Y", "esp"])
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

/// The frames of a classic pcap file (either byte order, micro- or nanosecond magic), with
/// the file's link type. tcpdump `-w` writes this format.
pub fn pcap_frames(path: &Path) -> (u32, Vec<Vec<u8>>) {
    let f = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(f.len() >= 24, "{}: no pcap header", path.display());
    let magic = [f[0], f[1], f[2], f[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("{}: not a classic pcap (magic {m:02x?})", path.display()),
    };
    let u32_at = |i: usize| {
        let b = [f[i], f[i + 1], f[i + 2], f[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20);
    let mut frames = Vec::new();
    let mut pos = 24;
    while pos + 16 <= f.len() {
        let incl = u32_at(pos + 8) as usize;
        let orig = u32_at(pos + 12) as usize;
        assert_eq!(incl, orig, "{}: truncated frame", path.display());
        let start = pos + 16;
        assert!(start + incl <= f.len(), "{}: cut short", path.display());
        frames.push(f[start..start + incl].to_vec());
        pos = start + incl;
    }
    assert_eq!(pos, f.len(), "{}: trailing octets", path.display());
    (linktype, frames)
}

// ---------------------------------------------------------------------------------------------
// Independent AGGFRAG decoder, from RFC 9347 §2 only.

/// What the decoder saw, so a test can check the stream exercised the interesting cases.
#[derive(Debug, Default)]
pub struct Seen {
    /// Lengths of runts: blocks cut before their length field was complete (< 4 / < 6 octets).
    pub runts: Vec<usize>,
    /// Largest number of payloads one inner packet was spread over.
    pub max_span: usize,
    /// Largest number of inner packets (whole or first fragment) starting in one payload:
    /// 2 or more means payloads aggregated packets.
    pub max_starts: usize,
    /// Payloads that carry only a pad block (BlockOffset 0).
    pub all_pad: usize,
    /// Payloads ending in a pad block after data.
    pub pad_blocks: usize,
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

/// Decodes AGGFRAG payloads (sequence number, payload) that must form one lossless stream
/// starting at a packet boundary: every inconsistency (sub-type, flags, BlockOffset, sequence
/// gap, unknown block type, trailing partial packet) is an error.
pub fn aggfrag_decode(payloads: &[(u32, Vec<u8>)]) -> Result<(Vec<Vec<u8>>, Seen), String> {
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
        let mut starts = 0;
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
            starts += 1;
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
        seen.max_starts = seen.max_starts.max(starts);
    }
    if partial.is_some() {
        return Err("stream ends inside a packet".into());
    }
    Ok((out, seen))
}
