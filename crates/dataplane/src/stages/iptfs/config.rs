//! `[stage.iptfs]` options: statically configured SAs, one `[[stage.iptfs.sa]]` each.
//!
//! ```toml
//! [[stage.iptfs.sa]]
//! name = "r1-to-r2"
//! direction = "out"                 # "out" (encrypt + encode) or "in" (decrypt + decode)
//! spi = 0xAAA
//! algorithm = "aes-gcm-128"         # or "aes-gcm-256" (RFC 4106, 16-octet ICV)
//! key = "4a506a794f574265564551694d6537681a2b1a2b"   # key ‖ 4-octet salt, hex
//! local = "10.0.1.2"                # outer endpoints, both IPv4 or both IPv6
//! remote = "10.0.1.3"
//! selector = ["10.0.2.0/24", "fc00:2::/64"]   # out: inner destinations tunnelled
//! port = 2                          # out: outer egress port; in: inner egress port
//! dst_mac = "02:00:00:00:00:02"     # Ethernet header of the packets sent on `port`
//! src_mac = "02:00:00:00:00:01"
//! mode = "demand"                   # demand (Linux iptfs) | iptfs (constant rate) | plain
//! ```
//!
//! Sender knobs (out SAs; Linux `ip xfrm ... iptfs-opts` names and defaults, RFC 9348 where
//! Linux has none): `outer_packet_size` (Linux `pkt-size`, RFC 9348 `outer-packet-size`;
//! default 1500, 0 = 1500 as there is no PMTU discovery), `rate_pps` or `l3_fixed_rate` (bit/s,
//! RFC 9348) for mode `iptfs` (one is required), `init_delay_us` / `init_delay_ms` (Linux
//! `init-delay`, default 0), `max_queue_size` (octets, default 10485760), `dont_frag` (default
//! false), `max_aggregation_time_ms` (RFC 9348, default none), `congestion_control` (RFC 9348
//! `congestion-control`: send the RFC 9347 6.1.2 sub-type 1 AGGFRAG header; default false, as
//! Linux, which sends sub-type 0 only).
//! Receiver knobs (in SAs): `reorder_window` (default 3), `drop_time_us` / `drop_time_ms`
//! (Linux `drop-time`, default 1 s), `send_immediately` (RFC 9348, default false),
//! `strict_flags` (drop non-zero AGGFRAG flags as Linux, default true; sub-type 1 with zero
//! flags is accepted either way), `replay_window` (default 64). Both: `esn` (extended sequence
//! numbers, default false). A knob of the other direction (e.g. `reorder_window` on an out SA,
//! `mode` or `selector` on an in SA) is refused with the field named, not silently ignored.
//!
//! Router behaviour (the stage stands in for a Linux router forwarding into and out of the
//! tunnel): `decrement_ttl` (both directions, default true) decrements the inner IPv4 TTL /
//! IPv6 hop limit once on the way in (before encapsulation, as `ip_forward` does before xfrm
//! output) and once on the way out (after decapsulation, as the receiving router forwards the
//! inner packet); false keeps inner packets byte-identical (pcap replays, a bump in the wire).
//! `dscp` (out SAs): `"copy"` (the DSCP of the first inner packet in the payload) or a fixed
//! codepoint 0..=63; default 0 in modes `demand`/`iptfs`, as Linux `xfrm_iptfs` writes TOS 0
//! ("with 0, fractional, 1 or N inner packets there is no obviously correct DSCP"), and
//! `"copy"` in mode `plain`, as Linux tunnel-mode ESP (RFC 4301 5.1.2.1).
//! `ecn`: on out SAs `"off"` (outer Not-ECT: Linux `xfrm_iptfs` clears ECN, RFC 9347 3.1) or
//! `"normal"` (RFC 6040 normal mode; default in mode `plain`, as Linux tunnel mode); on in SAs
//! `"normal"` (default: RFC 6040 4.2 decapsulation) or `"off"` (outer ECN ignored, Linux
//! `noecn`).

use std::net::IpAddr;

use iptfs::{SendMode, SenderConfig};
use packet::wire::EthernetAddress;
use serde::Deserialize;

/// Direction of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Encrypt: inner packets matching the selector become ESP outers.
    Out,
    /// Decrypt: ESP to `local` with the SA's SPI becomes inner packets.
    In,
}

/// How an out SA builds outer packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Linux-compatible demand mode: outers sent as data arrives, no padding.
    #[default]
    Demand,
    /// IP-TFS proper: fixed-size outers at a constant rate, all-pad when idle.
    Iptfs,
    /// Plain ESP tunnel mode: one inner packet per outer (aggregation off).
    Plain,
}

/// One SA as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaConfig {
    /// Name in the API and metrics (unique).
    pub name: String,
    /// `out` or `in`.
    pub direction: Direction,
    /// ESP SPI (256 and up; unique among in SAs).
    pub spi: u32,
    /// `aes-gcm-128` (default) or `aes-gcm-256`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// Hex key ‖ 4-octet salt (RFC 4106 keymat), optional `0x`.
    pub key: String,
    /// This end's outer address (source of outers; ESP to it is decrypted).
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    #[serde(default)]
    /// Out: inner destination prefixes sent through this SA (required on out SAs).
    pub selector: Option<Vec<String>>,
    /// Out: egress port of outers; in: egress port of inner packets.
    pub port: u16,
    /// Destination MAC of the frames sent on `port`.
    pub dst_mac: String,
    /// Source MAC of the frames sent on `port`.
    pub src_mac: String,
    #[serde(default)]
    /// Out: how outers are built (default `demand`).
    pub mode: Option<Mode>,
    #[serde(default, alias = "pkt_size")]
    /// Out: outer IP packet size: fixed (iptfs) or maximum (demand); 0 = 1500 (default).
    pub outer_packet_size: Option<usize>,
    #[serde(default)]
    /// Out: constant rate in outer packets per second (mode `iptfs`).
    pub rate_pps: Option<u64>,
    #[serde(default)]
    /// Out: constant rate in outer IP bits per second (RFC 9348 `l3-fixed-rate`, mode `iptfs`).
    pub l3_fixed_rate: Option<u64>,
    #[serde(default)]
    /// Linux `init-delay` in µs (demand mode aggregation wait; default 0).
    pub init_delay_us: Option<u64>,
    #[serde(default)]
    /// The same in ms.
    pub init_delay_ms: Option<u64>,
    #[serde(default)]
    /// Out: Linux `max-queue-size` in octets (default 10485760).
    pub max_queue_size: Option<usize>,
    #[serde(default, alias = "dont_fragment")]
    /// Out: Linux `dont-frag`: never fragment inner packets; bigger ones get ICMP too-big.
    pub dont_frag: Option<bool>,
    #[serde(default)]
    /// RFC 9348 `max-aggregation-time`: inner packets waiting longer are dropped.
    pub max_aggregation_time_ms: Option<u64>,
    #[serde(default)]
    /// Out: send the RFC 9347 6.1.2 sub-type 1 congestion-control AGGFRAG header instead of
    /// sub-type 0 (RFC 9348 `congestion-control`; default false, as Linux, which only sends
    /// sub-type 0).
    pub congestion_control: Option<bool>,
    #[serde(default, alias = "window_size")]
    /// In: Linux `reorder-window` / RFC 9348 `window-size` (default 3).
    pub reorder_window: Option<u16>,
    #[serde(default)]
    /// In: Linux `drop-time` in µs (lost-packet timer; default 1 s).
    pub drop_time_us: Option<u64>,
    #[serde(default)]
    /// The same in ms (RFC 9348 `lost-packet-timer-interval`).
    pub drop_time_ms: Option<u64>,
    #[serde(default)]
    /// In: RFC 9348 `send-immediately` (deliver out-of-order inners at once).
    pub send_immediately: Option<bool>,
    #[serde(default)]
    /// In: drop AGGFRAG payloads with non-zero flags, as Linux (default true). Sub-type 1
    /// (congestion control) with zero flags is accepted either way.
    pub strict_flags: Option<bool>,
    #[serde(default)]
    /// In: anti-replay window (default 64).
    pub replay_window: Option<u32>,
    #[serde(default)]
    /// Extended sequence numbers.
    pub esn: bool,
    #[serde(default = "default_true")]
    /// Decrement the inner TTL / hop limit as a forwarding router (default true).
    pub decrement_ttl: bool,
    #[serde(default)]
    /// Out: the outer DSCP, `"copy"` or 0..=63 (default by mode, see the module doc).
    pub dscp: Option<DscpConfig>,
    #[serde(default)]
    /// Outer ECN handling, `"off"` or `"normal"` (default by direction and mode).
    pub ecn: Option<EcnMode>,
}

/// `dscp` as written: a number or a word.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DscpConfig {
    /// A fixed codepoint.
    Fixed(i64),
    /// `"copy"`.
    Word(String),
}

/// Where an out SA's outer DSCP comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OuterDscp {
    /// This codepoint (0..=63) on every outer.
    Fixed(u8),
    /// The DSCP of the first inner packet (or fragment) in the payload; 0 for all-pad outers.
    Copy,
}

/// Outer ECN handling (RFC 6040).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EcnMode {
    /// Out: outer Not-ECT; in: the outer ECN field is ignored.
    Off,
    /// Out: RFC 6040 normal mode (ECT propagated, CE sent as ECT(0)); in: RFC 6040 4.2.
    Normal,
}

fn default_algorithm() -> String {
    "aes-gcm-128".into()
}
fn default_true() -> bool {
    true
}

/// Default send-queue limit (Linux `max-queue-size`).
const DEFAULT_QUEUE: usize = 10_485_760;
/// Default reorder window (Linux `reorder-window`).
const DEFAULT_REORDER: u16 = 3;
/// Default anti-replay window.
const DEFAULT_REPLAY: u32 = 64;

impl SaConfig {
    /// Mode of an out SA (`demand` when not given).
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or_default()
    }

    /// Anti-replay window of an in SA (64 when not given).
    pub fn replay_window(&self) -> u32 {
        self.replay_window.unwrap_or(DEFAULT_REPLAY)
    }

    /// Options given that only the other direction uses: a config that sets them most
    /// likely has the SA's direction (or the option) wrong, so it is refused rather than
    /// silently ignored.
    fn foreign_options(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut note = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        match self.direction {
            Direction::Out => {
                note(self.reorder_window.is_some(), "reorder_window");
                note(self.drop_time_us.is_some(), "drop_time_us");
                note(self.drop_time_ms.is_some(), "drop_time_ms");
                note(self.send_immediately.is_some(), "send_immediately");
                note(self.strict_flags.is_some(), "strict_flags");
                note(self.replay_window.is_some(), "replay_window");
            }
            Direction::In => {
                note(self.selector.is_some(), "selector");
                note(self.mode.is_some(), "mode");
                note(self.outer_packet_size.is_some(), "outer_packet_size");
                note(self.rate_pps.is_some(), "rate_pps");
                note(self.l3_fixed_rate.is_some(), "l3_fixed_rate");
                note(self.init_delay_us.is_some(), "init_delay_us");
                note(self.init_delay_ms.is_some(), "init_delay_ms");
                note(self.max_queue_size.is_some(), "max_queue_size");
                note(self.dont_frag.is_some(), "dont_frag");
                note(
                    self.max_aggregation_time_ms.is_some(),
                    "max_aggregation_time_ms",
                );
                note(self.congestion_control.is_some(), "congestion_control");
            }
        }
        v
    }
}

/// The whole `[stage.iptfs]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IptfsConfig {
    /// The SAs, `[[stage.iptfs.sa]]`.
    #[serde(default)]
    pub sa: Vec<SaConfig>,
}

/// An inner-destination prefix of a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Network address (no host bits).
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// Parses `a.b.c.d/n` or `x::/n` (a bare address is a host route); host bits are refused.
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an IP prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?,
            None => max,
        };
        let p = Prefix { addr, len };
        if p.masked(addr) != bits(addr) {
            return Err(format!("'{s}' has host bits set"));
        }
        Ok(p)
    }

    fn masked(&self, a: IpAddr) -> u128 {
        let (b, width) = match a {
            IpAddr::V4(v) => (u128::from(v.to_bits()), 32),
            IpAddr::V6(v) => (v.to_bits(), 128),
        };
        if self.len == 0 {
            return 0;
        }
        let shift = width - u32::from(self.len);
        (b >> shift) << shift
    }

    /// True when `a` is inside the prefix (same family).
    #[inline]
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && self.masked(a) == bits(self.addr)
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(v.to_bits()),
        IpAddr::V6(v) => v.to_bits(),
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An SA checked and turned into what the codec takes.
#[derive(Debug, Clone)]
pub struct SaSpec {
    /// The SA as written.
    pub cfg: SaConfig,
    /// Parsed key material.
    pub key: iptfs::SaKey,
    /// Parsed selector.
    pub selector: Vec<Prefix>,
    /// Parsed `dst_mac`.
    pub dst_mac: EthernetAddress,
    /// Parsed `src_mac`.
    pub src_mac: EthernetAddress,
    /// Codec config of an out SA.
    pub sender: SenderConfig,
    /// Codec config of an in SA.
    pub receiver: iptfs::ReceiverConfig,
    /// Out: where the outer DSCP comes from.
    pub dscp: OuterDscp,
    /// Out: RFC 6040 normal-mode encapsulation; in: RFC 6040 decapsulation.
    pub ecn: bool,
}

fn ms_or_us(field: &str, us: Option<u64>, ms: Option<u64>, default_ns: u64) -> Result<u64, String> {
    match (us, ms) {
        (Some(_), Some(_)) => Err(format!("give {field}_us or {field}_ms, not both")),
        (Some(us), None) => Ok(us.saturating_mul(1_000)),
        (None, Some(ms)) => Ok(ms.saturating_mul(1_000_000)),
        (None, None) => Ok(default_ns),
    }
}

impl IptfsConfig {
    /// Parses and checks the stage options; an error names the SA and field.
    pub fn from_options(opts: Option<&toml::Value>) -> Result<IptfsConfig, String> {
        let c: IptfsConfig = match opts {
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string())?,
            None => IptfsConfig::default(),
        };
        Ok(c)
    }

    /// Every SA checked: key, addresses, selector, MACs, knob ranges, unique names and SPIs.
    pub fn specs(&self) -> Result<Vec<SaSpec>, String> {
        let mut out: Vec<SaSpec> = Vec::new();
        for (i, sa) in self.sa.iter().enumerate() {
            let at = |f: &str, m: String| format!("sa[{i}] ('{}').{f}: {m}", sa.name);
            if out.iter().any(|o| o.cfg.name == sa.name) {
                return Err(at("name", "declared twice".into()));
            }
            if out
                .iter()
                .any(|o| o.cfg.direction == Direction::In && o.cfg.spi == sa.spi)
                && sa.direction == Direction::In
            {
                return Err(at("spi", format!("{:#x} is used by another in SA", sa.spi)));
            }
            if sa.spi < 256 {
                return Err(at("spi", "0-255 are reserved (RFC 4303)".into()));
            }
            if let Some(f) = sa.foreign_options().first() {
                let (this, other) = match sa.direction {
                    Direction::Out => ("out", "in"),
                    Direction::In => ("in", "out"),
                };
                return Err(at(
                    f,
                    format!("only applies to {other} SAs (this SA is '{this}')"),
                ));
            }
            let key = iptfs::SaKey::from_hex(&sa.key).map_err(|e| at("key", e.to_string()))?;
            let want = match sa.algorithm.as_str() {
                "aes-gcm-128" => iptfs::Algorithm::AesGcm128,
                "aes-gcm-256" => iptfs::Algorithm::AesGcm256,
                other => {
                    return Err(at(
                        "algorithm",
                        format!("'{other}' (known: aes-gcm-128, aes-gcm-256)"),
                    ));
                }
            };
            if key.algorithm() != want {
                return Err(at(
                    "key",
                    format!(
                        "{} needs {} hex digits (key ‖ 4-octet salt)",
                        sa.algorithm,
                        if want == iptfs::Algorithm::AesGcm128 {
                            40
                        } else {
                            72
                        }
                    ),
                ));
            }
            if sa.local.is_ipv4() != sa.remote.is_ipv4() {
                return Err(at(
                    "remote",
                    "local and remote must be the same family".into(),
                ));
            }
            let selector = sa
                .selector
                .iter()
                .flatten()
                .map(|s| Prefix::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| at("selector", e))?;
            if sa.direction == Direction::Out && selector.is_empty() {
                return Err(at("selector", "an out SA needs at least one prefix".into()));
            }
            let dst_mac: EthernetAddress = sa
                .dst_mac
                .parse()
                .map_err(|_| at("dst_mac", format!("'{}' is not a MAC address", sa.dst_mac)))?;
            let src_mac: EthernetAddress = sa
                .src_mac
                .parse()
                .map_err(|_| at("src_mac", format!("'{}' is not a MAC address", sa.src_mac)))?;
            let outer_packet_size = match sa.outer_packet_size {
                None | Some(0) => 1500,
                Some(n) => n,
            };
            let outer_header_len = if sa.local.is_ipv4() { 20 } else { 40 };
            if !(outer_header_len + 64..=9000).contains(&outer_packet_size) {
                return Err(at(
                    "outer_packet_size",
                    format!(
                        "{outer_packet_size} is out of range {}..=9000",
                        outer_header_len + 64
                    ),
                ));
            }
            let (rate_pps, l3_fixed_rate) =
                (sa.rate_pps.unwrap_or(0), sa.l3_fixed_rate.unwrap_or(0));
            let mode = match sa.mode() {
                Mode::Demand => SendMode::Demand,
                Mode::Plain => SendMode::Plain,
                Mode::Iptfs => {
                    if rate_pps > 0 && l3_fixed_rate > 0 {
                        return Err(at("rate_pps", "give rate_pps or l3_fixed_rate".into()));
                    }
                    if let Some(interval) = 1_000_000_000u64.checked_div(rate_pps) {
                        SendMode::ConstantRate {
                            interval: interval.max(1),
                        }
                    } else if l3_fixed_rate > 0 {
                        SendMode::l3_rate(l3_fixed_rate, outer_packet_size)
                            .map_err(|e| at("l3_fixed_rate", e.to_string()))?
                    } else {
                        return Err(at(
                            "rate_pps",
                            "mode 'iptfs' sends at a constant rate: set rate_pps or l3_fixed_rate"
                                .into(),
                        ));
                    }
                }
            };
            let sender = SenderConfig {
                mode,
                outer_packet_size,
                outer_header_len,
                dont_fragment: sa.dont_frag.unwrap_or(false),
                whole_packets_only: sa.mode() != Mode::Iptfs,
                init_delay: ms_or_us("init_delay", sa.init_delay_us, sa.init_delay_ms, 0)
                    .map_err(|e| at("init_delay", e))?,
                max_aggregation_time: sa
                    .max_aggregation_time_ms
                    .map(|m| m.saturating_mul(1_000_000)),
                max_queue_bytes: sa.max_queue_size.unwrap_or(DEFAULT_QUEUE),
                congestion_control: sa.congestion_control.unwrap_or(false),
            };
            let drop_time = ms_or_us("drop_time", sa.drop_time_us, sa.drop_time_ms, 1_000_000_000)
                .map_err(|e| at("drop_time", e))?;
            if drop_time == 0 {
                return Err(at("drop_time", "must be > 0".into()));
            }
            let receiver = iptfs::ReceiverConfig {
                reorder_window: sa.reorder_window.unwrap_or(DEFAULT_REORDER),
                drop_time,
                send_immediately: sa.send_immediately.unwrap_or(false),
                strict_flags: sa.strict_flags.unwrap_or(true),
            };
            let plain = sa.mode() == Mode::Plain;
            let dscp = match (&sa.dscp, sa.direction) {
                (Some(_), Direction::In) => {
                    return Err(at("dscp", "only out SAs build outer headers".into()));
                }
                (None, _) if plain => OuterDscp::Copy,
                (None, _) => OuterDscp::Fixed(0),
                (Some(DscpConfig::Word(w)), _) if w == "copy" => OuterDscp::Copy,
                (Some(DscpConfig::Fixed(n)), _) => OuterDscp::Fixed(
                    u8::try_from(*n)
                        .ok()
                        .filter(|d| *d <= 63)
                        .ok_or_else(|| at("dscp", format!("{n} is not a DSCP (0..=63)")))?,
                ),
                (Some(DscpConfig::Word(w)), _) => {
                    return Err(at("dscp", format!("'{w}' (give \"copy\" or 0..=63)")));
                }
            };
            let ecn = match (sa.ecn, sa.direction) {
                (Some(m), _) => m == EcnMode::Normal,
                (None, Direction::In) => true,
                (None, Direction::Out) => plain,
            };
            out.push(SaSpec {
                cfg: sa.clone(),
                dscp,
                ecn,
                key,
                selector,
                dst_mac,
                src_mac,
                sender,
                receiver,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = Prefix::parse("10.0.2.0/24").unwrap();
        assert!(p.contains("10.0.2.77".parse().unwrap()));
        assert!(!p.contains("10.0.3.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let p6 = Prefix::parse("fc00:2::/64").unwrap();
        assert!(p6.contains("fc00:2::9".parse().unwrap()));
        assert!(!p6.contains("fc00:3::9".parse().unwrap()));
        assert!(
            Prefix::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Prefix::parse("10.0.2.1/24").is_err());
        assert!(Prefix::parse("10.0.2.0/33").is_err());
        assert!(Prefix::parse("nope/8").is_err());
        assert_eq!(Prefix::parse("10.0.0.1").unwrap().len, 32);
    }
}
