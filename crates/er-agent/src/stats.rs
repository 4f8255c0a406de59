//! The agent's counters: indices shared with bpf/xdp_er.c, and the summed view `stats` prints.

use std::fmt;

use serde::Serialize;

use crate::{AttachMode, Marker};

/// Number of slots in the per-CPU `er_stats` array (`ER_NSTATS` in the C source).
pub const NSTATS: u32 = 32;
/// First slot of the "bounced towards generation g" counters (`ER_BOUNCED_GEN`).
pub const BOUNCED_GEN_BASE: u32 = 16;

/// Slot indices of the per-CPU `er_stats` array; mirror of `enum er_counter` in the C source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Every frame the program saw.
    RxPackets = 0,
    /// Bytes of every frame the program saw.
    RxBytes = 1,
    /// Passed: not IPv4 or not TCP.
    PassNotTcp = 2,
    /// Passed: an IPv4 fragment.
    PassFragment = 3,
    /// Passed: SYN set; new connections are never bounced.
    PassSyn = 4,
    /// Passed: destination is not a configured VIP.
    PassNotVip = 5,
    /// Passed: a socket owns the 4-tuple (established, request, time-wait).
    PassSocket = 6,
    /// Passed: ACK carrying a valid SYN cookie at a listener.
    PassCookie = 7,
    /// Passed: no connection, but the marker reached max_generation (the stack sends RST).
    PassGaveUp = 8,
    /// Bounced back to the router with XDP_TX.
    Bounced = 9,
    /// Bytes bounced.
    BouncedBytes = 10,
    /// Dropped: truncated or malformed headers.
    DropMalformed = 11,
    /// Lookups that found no socket at all.
    NoSocket = 12,
    /// Lookups that found only a listener, and the segment was not a cookie ACK.
    ListenerNoCookie = 13,
    /// Passed because the config map could not be read (should stay 0).
    PassNoConfig = 14,
}

/// Counters summed over CPUs, with the configuration the agent was attached with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Interface the agent is attached to.
    pub iface: String,
    /// Network namespace name, if not the caller's.
    pub netns: Option<String>,
    /// Attach mode recorded at attach time.
    pub mode: Option<AttachMode>,
    /// Marker encoding in use.
    pub marker: Option<Marker>,
    /// Oldest generation a packet may be bounced towards.
    pub max_generation: u32,
    /// Whether bouncing is limited to the configured VIPs.
    pub vip_filter: bool,
    /// Frames seen.
    pub rx_packets: u64,
    /// Bytes seen.
    pub rx_bytes: u64,
    /// Frames passed to the stack, for any reason (sum of the `pass_*` counters).
    pub passed: u64,
    /// Passed: not IPv4/TCP.
    pub pass_not_tcp: u64,
    /// Passed: IPv4 fragments.
    pub pass_fragment: u64,
    /// Passed: SYN segments.
    pub pass_syn: u64,
    /// Passed: destination not a VIP.
    pub pass_not_vip: u64,
    /// Passed: a socket owns the segment.
    pub pass_socket: u64,
    /// Passed: valid SYN-cookie ACK.
    pub pass_cookie: u64,
    /// Passed: already at max_generation (the stack answers RST).
    pub gave_up: u64,
    /// Passed: config unreadable.
    pub pass_no_config: u64,
    /// Bounced back to the router.
    pub bounced: u64,
    /// Bytes bounced.
    pub bounced_bytes: u64,
    /// Dropped as malformed.
    pub dropped_malformed: u64,
    /// Socket lookups that found nothing.
    pub no_socket: u64,
    /// Socket lookups that found only a listener (no cookie).
    pub listener_no_cookie: u64,
    /// The driver's XDP_TX error counter (ethtool), where it has one: native-mode bounces
    /// that the kernel failed to send (invisible to the program itself).
    pub driver_xdp_tx_errors: Option<u64>,
    /// `bounced_by_generation[g]`: bounces towards previous generation g (index 0 unused).
    pub bounced_by_generation: Vec<u64>,
}

impl Stats {
    /// Build from the per-slot sums read from the map.
    pub fn from_slots(slots: &[u64]) -> Stats {
        let get = |c: Counter| slots.get(c as usize).copied().unwrap_or(0);
        let mut s = Stats {
            rx_packets: get(Counter::RxPackets),
            rx_bytes: get(Counter::RxBytes),
            pass_not_tcp: get(Counter::PassNotTcp),
            pass_fragment: get(Counter::PassFragment),
            pass_syn: get(Counter::PassSyn),
            pass_not_vip: get(Counter::PassNotVip),
            pass_socket: get(Counter::PassSocket),
            pass_cookie: get(Counter::PassCookie),
            gave_up: get(Counter::PassGaveUp),
            pass_no_config: get(Counter::PassNoConfig),
            bounced: get(Counter::Bounced),
            bounced_bytes: get(Counter::BouncedBytes),
            dropped_malformed: get(Counter::DropMalformed),
            no_socket: get(Counter::NoSocket),
            listener_no_cookie: get(Counter::ListenerNoCookie),
            bounced_by_generation: (0..16)
                .map(|g| {
                    slots
                        .get((BOUNCED_GEN_BASE + g) as usize)
                        .copied()
                        .unwrap_or(0)
                })
                .collect(),
            ..Stats::default()
        };
        s.passed = s.pass_not_tcp
            + s.pass_fragment
            + s.pass_syn
            + s.pass_not_vip
            + s.pass_socket
            + s.pass_cookie
            + s.gave_up
            + s.pass_no_config;
        s
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.netns.as_deref().unwrap_or("(current)");
        let opt = |o: Option<&'static str>| o.unwrap_or("?");
        writeln!(
            f,
            "er-agent on {} in netns {}: mode {}, marker {}, max-generation {}, vip filter {}",
            self.iface,
            ns,
            opt(self.mode.map(AttachMode::as_str)),
            opt(self.marker.map(Marker::as_str)),
            self.max_generation,
            if self.vip_filter { "on" } else { "off" }
        )?;
        let rows: [(&str, u64, Option<u64>); 14] = [
            ("received", self.rx_packets, Some(self.rx_bytes)),
            ("bounced (XDP_TX)", self.bounced, Some(self.bounced_bytes)),
            ("passed", self.passed, None),
            ("  socket owns it", self.pass_socket, None),
            ("  SYN", self.pass_syn, None),
            ("  SYN-cookie ACK", self.pass_cookie, None),
            ("  gave up (RST)", self.gave_up, None),
            ("  not IPv4/TCP", self.pass_not_tcp, None),
            ("  fragment", self.pass_fragment, None),
            ("  not a VIP", self.pass_not_vip, None),
            ("  no config", self.pass_no_config, None),
            ("dropped malformed", self.dropped_malformed, None),
            ("lookup: no socket", self.no_socket, None),
            ("lookup: listener", self.listener_no_cookie, None),
        ];
        writeln!(f, "{:<22} {:>14} {:>16}", "counter", "packets", "bytes")?;
        for (name, pkts, bytes) in rows {
            match bytes {
                Some(b) => writeln!(f, "{name:<22} {pkts:>14} {b:>16}")?,
                None => writeln!(f, "{name:<22} {pkts:>14}")?,
            }
        }
        let gens: Vec<String> = self
            .bounced_by_generation
            .iter()
            .enumerate()
            .filter(|&(g, &n)| g > 0 && n > 0)
            .map(|(g, n)| format!("{g}: {n}"))
            .collect();
        if let Some(n) = self.driver_xdp_tx_errors {
            writeln!(f, "{:<22} {n:>14}", "driver xdp_tx_errors")?;
        }
        if !gens.is_empty() {
            writeln!(f, "bounced towards generation  {}", gens.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_is_the_sum_of_pass_reasons() {
        let mut slots = vec![0u64; NSTATS as usize];
        slots[Counter::RxPackets as usize] = 10;
        slots[Counter::PassSyn as usize] = 2;
        slots[Counter::PassSocket as usize] = 3;
        slots[Counter::PassGaveUp as usize] = 1;
        slots[Counter::Bounced as usize] = 4;
        slots[(BOUNCED_GEN_BASE + 2) as usize] = 4;
        let s = Stats::from_slots(&slots);
        assert_eq!(s.passed, 6);
        assert_eq!(s.bounced, 4);
        assert_eq!(s.bounced_by_generation[2], 4);
        let text = s.to_string();
        assert!(text.contains("bounced towards generation  2: 4"), "{text}");
    }

    #[test]
    fn short_slot_vector_does_not_panic() {
        let s = Stats::from_slots(&[5]);
        assert_eq!(s.rx_packets, 5);
        assert_eq!(s.passed, 0);
    }
}
