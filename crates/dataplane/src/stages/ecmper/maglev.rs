//! Maglev bucket fill (Eisenbud et al., NSDI'16), for resilient mode's per-VIP tables.
//!
//! Each backend gets a permutation of the `m` buckets (`offset + j*skip mod m`, m prime) and
//! backends take turns claiming their next unclaimed preferred bucket until all are taken. Every
//! backend ends with ⌊m/n⌋ or ⌈m/n⌉ buckets, and adding or removing one of n backends moves
//! about 1/n of the buckets. The backends are sorted before filling, so the table depends on
//! the set of next hops only, never on the order they were added in.

/// Default bucket count: Maglev's experiments' prime, ≥ 100·N for N ≤ 655.
pub const DEFAULT_BUCKETS: u32 = 65537;

/// Whether `n` is prime (trial division; `n` is at most a few million).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// A 64-bit mix (splitmix64's finaliser) of a backend key and a seed.
fn mix(key: u32, seed: u64) -> u64 {
    let mut z = u64::from(key)
        .wrapping_add(seed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `m` buckets (m prime) over `backends` (keys, e.g. next-hop addresses, distinct and
/// sorted by the caller, at most 65535). Returns per bucket the index into `backends`.
/// Empty `backends` or `m == 0` gives an empty table.
pub fn fill(backends: &[u32], m: u32) -> Vec<u16> {
    let n = backends.len();
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let mu = m as usize;
    let mut table = vec![u16::MAX; mu];
    let perm: Vec<(u64, u64)> = backends
        .iter()
        .map(|&k| {
            let offset = mix(k, 0x5eed_0001) % u64::from(m);
            let skip = if m > 1 {
                mix(k, 0x5eed_0002) % u64::from(m - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut filled = 0usize;
    'outer: loop {
        for i in 0..n {
            let (offset, skip) = perm[i];
            // A prime m makes each permutation visit every bucket, so this ends.
            let mut c = ((offset + next[i] * skip) % u64::from(m)) as usize;
            while table[c] != u16::MAX {
                next[i] += 1;
                c = ((offset + next[i] * skip) % u64::from(m)) as usize;
            }
            table[c] = i as u16;
            next[i] += 1;
            filled += 1;
            if filled == mu {
                break 'outer;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(101));
        assert!(!is_prime(65535));
        assert!(!is_prime(1));
        assert!(is_prime(2));
    }

    #[test]
    fn even_counts() {
        let b: Vec<u32> = (1..=7).map(|i| 0x0a00_0000 + i).collect();
        let t = fill(&b, 1009);
        let mut counts = [0usize; 7];
        for &i in &t {
            counts[usize::from(i)] += 1;
        }
        assert!(counts.iter().all(|&c| c == 1009 / 7 || c == 1009 / 7 + 1));
    }
}
