//! Deterministic inner packets for tests, benches and fuzzing (not for production traffic).
//!
//! The payload is a pattern derived from a tag, so a corrupted or misassembled packet is easy
//! to detect and the tag identifies the packet.

/// An IPv4 packet of `len` octets (clamped to 20..=65535), protocol 253 (experimental),
/// identification and payload derived from `tag`.
pub fn ipv4_packet(len: usize, tag: u32) -> Vec<u8> {
    let len = len.clamp(20, 65535);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(tag as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 2, 4]);
    fill(&mut p[20..], tag);
    p
}

/// An IPv6 packet of `len` octets (clamped to 40..=65535), next header 253, flow label and
/// payload derived from `tag`.
pub fn ipv6_packet(len: usize, tag: u32) -> Vec<u8> {
    let len = len.clamp(40, 65535);
    let mut p = vec![0u8; len];
    p[0] = 0x60;
    p[1..4].copy_from_slice(&(tag & 0xF_FFFF).to_be_bytes()[1..]);
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = 253;
    p[7] = 64;
    p[8] = 0xfc;
    p[24] = 0xfc;
    p[39] = 4;
    fill(&mut p[40..], tag);
    p
}

fn fill(b: &mut [u8], tag: u32) {
    let mut x = tag.wrapping_mul(2_654_435_761).wrapping_add(1);
    for (i, o) in b.iter_mut().enumerate() {
        if i < 4 {
            *o = tag.to_be_bytes()[i];
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *o = x as u8;
        }
    }
}
