//! The ECMP-ER controller's logic (upstream `tools/c4bmv2.py`), shared by the REST layers:
//! the route queue, `/install`, the neighbour table, `/clear`, the text dumps, and in
//! resilient mode the generation ring.
//!
//! Routes are queued with [`EcmperHandle::queue_add`] / [`EcmperHandle::queue_del`] and take
//! effect on [`EcmperHandle::install`]:
//!
//! - compat mode does what upstream does: prv routes ← cur routes, cur ← cur + adds − dels;
//!   per prefix (ordered as upstream: by the prefix's dotted string, then length) the next-hop
//!   list is expanded (n = 1: 1 entry; n > 1: next_pow2(n) × 4 entries, entry x = nh[x mod n])
//!   and laid out from index 1 in `prv_nh` and `cur_nh` (index 0 is `drop`); `ipv4_lpm` gets
//!   `set_nh_index(cur_off, cur_cnt, prv_off, prv_cnt)`. Each table is written in one atomic
//!   publish, `prv_nh`, then `cur_nh`, then `ipv4_lpm` (upstream clears and re-inserts entry by
//!   entry). As upstream, a second `/install` with nothing queued collapses prv into cur.
//! - resilient mode builds a new [`Generation`] off to the side (Maglev buckets per prefix;
//!   a prefix whose next-hop set did not change shares its buckets with the previous
//!   generation) and publishes `[new, previous...]` (at most 1 + `generations`) as one
//!   [`ArcSwap`] store: a reader sees the old ring or the new one, never a mix. An install
//!   whose result equals the current route set changes nothing and does not rotate.
//!
//! The stage and the REST layer find each other through a registry keyed by the stage's
//! `neigh` table ([`handle_of`]), because a [`Switch`] has no slot for stage state.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use tables::{ActionCall, ActionId, EntrySpec, FieldMatch, Op, Table, TableError};

use super::{EcmperConfig, Mode, NEIGH, P4RT_PREFIX, hash, maglev};
use crate::switch::Switch;

/// Why a controller operation failed. Each variant says whose fault it is, so the REST layer
/// can choose the status.
#[derive(Debug, thiserror::Error)]
pub enum EcmperError {
    /// A request field is malformed (400).
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// The route is already in the queue (upstream's 400 "invalid route").
    #[error("invalid route")]
    AlreadyQueued { route: String },
    /// The install would not fit a table (upstream fails with 500).
    #[error("table '{table}' would need {needed} entries; its size is {size}")]
    TooManyEntries {
        table: &'static str,
        needed: usize,
        size: usize,
    },
    /// A table write failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The switch the handle belongs to is gone.
    #[error("the switch's ecmper tables are gone")]
    Gone,
}

/// Result alias of the controller.
pub type Result<T, E = EcmperError> = std::result::Result<T, E>;

/// One route as the controller queues it. `nexthop` 0.0.0.0 is "connected" (the
/// destination itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub prefix: Ipv4Addr,
    pub preflen: u8,
    pub nexthop: Ipv4Addr,
}

impl Route {
    /// A route from the REST path segments: `prefix` dotted quad with no host bits set,
    /// `preflen` 0..=32, `nexthop` dotted quad or `connected`. The error names the field.
    pub fn parse(prefix: &str, preflen: &str, nexthop: &str) -> Result<Route> {
        let prefix: Ipv4Addr = prefix.trim().parse().map_err(|_| EcmperError::Field {
            field: "prefix",
            message: format!("'{prefix}' is not an IPv4 address"),
        })?;
        let preflen: u8 = preflen
            .trim()
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| EcmperError::Field {
                field: "preflen",
                message: format!("'{preflen}' is not a prefix length 0..=32"),
            })?;
        let nexthop = parse_nexthop(nexthop)?;
        let r = Route {
            prefix,
            preflen,
            nexthop,
        };
        if r.prefix.to_bits() & !r.mask() != 0 {
            return Err(EcmperError::Field {
                field: "prefix",
                message: format!("{prefix}/{preflen} has host bits set"),
            });
        }
        Ok(r)
    }

    /// The netmask of the prefix length.
    pub fn mask(&self) -> u32 {
        mask(self.preflen)
    }

    /// The next hop as upstream writes it: an address, or `connected`.
    pub fn nexthop_str(&self) -> String {
        if self.nexthop.is_unspecified() {
            "connected".into()
        } else {
            self.nexthop.to_string()
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} to {}",
            self.prefix,
            self.preflen,
            self.nexthop_str()
        )
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// A next hop path segment: a dotted quad or `connected` (0.0.0.0).
pub fn parse_nexthop(s: &str) -> Result<Ipv4Addr> {
    let s = s.trim();
    if s == "connected" {
        return Ok(Ipv4Addr::UNSPECIFIED);
    }
    s.parse().map_err(|_| EcmperError::Field {
        field: "nexthop",
        message: format!("'{s}' is neither an IPv4 address nor 'connected'"),
    })
}

/// A MAC given as `aa:bb:cc:dd:ee:ff` (or with `-`), as a 48-bit value.
pub fn parse_mac(s: &str) -> Result<u64> {
    let bad = || EcmperError::Field {
        field: "dstmac",
        message: format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"),
    };
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut v = 0u64;
    for p in parts {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        v = (v << 8) | u64::from(u8::from_str_radix(p, 16).map_err(|_| bad())?);
    }
    Ok(v)
}

fn format_mac(v: u128) -> String {
    let b = v.to_be_bytes();
    b[10..16]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One prefix of a generation: its next hops (sorted, distinct; 0 = connected) and the
/// Maglev table over them.
#[derive(Debug)]
pub struct VipRoute {
    pub prefix: u32,
    pub len: u8,
    pub nexthops: Vec<u32>,
    buckets: Arc<[u16]>,
}

impl VipRoute {
    /// The next hop for a flow whose CRC-32 is `crc` (None when there are no buckets).
    #[inline]
    pub fn pick(&self, crc: u32) -> Option<u32> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let b = self.buckets[(crc as usize) % n];
        self.nexthops.get(usize::from(b)).copied()
    }

    /// The bucket table (per bucket, an index into `nexthops`).
    pub fn buckets(&self) -> &[u16] {
        &self.buckets
    }
}

/// One immutable generation of resilient-mode routes.
#[derive(Debug, Default)]
pub struct Generation {
    /// Install counter: 0 for the empty start, +1 per rotating install.
    pub number: u64,
    /// The route set it was built from, in install order.
    pub routes: Vec<Route>,
    /// Prefixes, longest first; within a length sorted by prefix.
    vips: Vec<VipRoute>,
    /// (length, index of its first prefix in `vips`, count), longest first.
    lens: Vec<(u8, usize, usize)>,
}

impl Generation {
    /// Builds a generation from `routes`, reusing `prev`'s buckets for prefixes whose
    /// next-hop set did not change.
    pub fn build(number: u64, routes: &[Route], buckets: u32, prev: Option<&Generation>) -> Self {
        let mut by_prefix: BTreeMap<(std::cmp::Reverse<u8>, u32), Vec<u32>> = BTreeMap::new();
        for r in routes {
            by_prefix
                .entry((std::cmp::Reverse(r.preflen), r.prefix.to_bits()))
                .or_default()
                .push(r.nexthop.to_bits());
        }
        let mut vips = Vec::with_capacity(by_prefix.len());
        let mut lens: Vec<(u8, usize, usize)> = Vec::new();
        for ((std::cmp::Reverse(len), prefix), mut nhs) in by_prefix {
            nhs.sort_unstable();
            nhs.dedup();
            let reused = prev
                .and_then(|p| p.find(prefix, len))
                .filter(|v| v.nexthops == nhs)
                .map(|v| Arc::clone(&v.buckets));
            let buckets = reused.unwrap_or_else(|| {
                if (nhs.len() as u64) * 100 > u64::from(buckets) {
                    tracing::warn!(
                        prefix = %Ipv4Addr::from(prefix), len, nexthops = nhs.len(), buckets,
                        "fewer than 100 buckets per next hop: the spread may be uneven by more than 1 %"
                    );
                }
                maglev::fill(&nhs, buckets).into()
            });
            match lens.last_mut() {
                Some(l) if l.0 == len => l.2 += 1,
                _ => lens.push((len, vips.len(), 1)),
            }
            vips.push(VipRoute {
                prefix,
                len,
                nexthops: nhs,
                buckets,
            });
        }
        Generation {
            number,
            routes: routes.to_vec(),
            vips,
            lens,
        }
    }

    fn find(&self, prefix: u32, len: u8) -> Option<&VipRoute> {
        let &(_, start, n) = self.lens.iter().find(|l| l.0 == len)?;
        let s = &self.vips[start..start + n];
        s.binary_search_by_key(&prefix, |v| v.prefix)
            .ok()
            .map(|i| &s[i])
    }

    /// The longest prefix containing `dst`.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<&VipRoute> {
        for &(len, start, n) in &self.lens {
            let s = &self.vips[start..start + n];
            let key = dst & mask(len);
            if let Ok(i) = s.binary_search_by_key(&key, |v| v.prefix) {
                return Some(&s[i]);
            }
        }
        None
    }

    /// The prefixes, longest first.
    pub fn vips(&self) -> &[VipRoute] {
        &self.vips
    }
}

/// The generations a resilient-mode router keeps: `gens[0]` is current, `gens[m]` the one a
/// packet marked m uses.
#[derive(Debug)]
pub struct Ring {
    pub gens: Vec<Arc<Generation>>,
}

/// A generation as the native API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenerationInfo {
    /// Position in the ring: 0 current, m = the generation a packet marked m uses.
    pub age: u8,
    /// Install counter of the generation.
    pub number: u64,
    /// The ToS DSCP value (not shifted) a bounced packet carries to use it; None for current.
    pub marker_dscp: Option<u8>,
    pub routes: Vec<Route>,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallOutcome {
    /// False when nothing changed (resilient mode: the ring did not rotate).
    pub changed: bool,
    /// The current generation's number after the install (compat: installs so far).
    pub generation: u64,
    pub routes: usize,
}

#[derive(Debug, Default)]
struct RouteState {
    cur: Vec<Route>,
    prv: Vec<Route>,
    add_q: Vec<Route>,
    del_q: Vec<Route>,
    installs: u64,
}

/// Handles on the stage's tables; weak, so the registry does not keep a dropped switch's
/// tables alive.
#[derive(Debug)]
struct TableRefs {
    lpm: Option<Weak<Table>>,
    cur: Option<Weak<Table>>,
    prv: Option<Weak<Table>>,
    neigh: Weak<Table>,
}

/// The controller side of one `ecmper` stage: what the REST layers call.
#[derive(Debug)]
pub struct EcmperHandle {
    cfg: EcmperConfig,
    ring: ArcSwap<Ring>,
    state: Mutex<RouteState>,
    tables: TableRefs,
}

const A_SET: ActionId = ActionId(0);
const A_DROP: ActionId = ActionId(1);

fn upgrade(w: &Option<Weak<Table>>) -> Result<Arc<Table>> {
    w.as_ref().and_then(Weak::upgrade).ok_or(EcmperError::Gone)
}

impl EcmperHandle {
    /// A handle over the stage's tables (`compat`: ipv4_lpm, cur_nh, prv_nh in compat mode).
    pub fn new(
        cfg: EcmperConfig,
        compat: Option<(&Arc<Table>, &Arc<Table>, &Arc<Table>)>,
        neigh: &Arc<Table>,
    ) -> EcmperHandle {
        EcmperHandle {
            cfg,
            ring: ArcSwap::from_pointee(Ring {
                gens: vec![Arc::new(Generation::default())],
            }),
            state: Mutex::new(RouteState::default()),
            tables: TableRefs {
                lpm: compat.map(|c| Arc::downgrade(c.0)),
                cur: compat.map(|c| Arc::downgrade(c.1)),
                prv: compat.map(|c| Arc::downgrade(c.2)),
                neigh: Arc::downgrade(neigh),
            },
        }
    }

    /// The stage's configuration.
    pub fn config(&self) -> EcmperConfig {
        self.cfg
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// The ring now published (resilient mode; compat keeps one empty generation).
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.load_full()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn neigh(&self) -> Result<Arc<Table>> {
        self.tables.neigh.upgrade().ok_or(EcmperError::Gone)
    }

    /// Compat mode: `drop` at index 0 of `cur_nh` and `prv_nh` (upstream's startup step).
    pub fn install_index0_drops(&self) -> Result<()> {
        if self.cfg.mode != Mode::Compat {
            return Ok(());
        }
        for t in [&self.tables.cur, &self.tables.prv] {
            upsert(&upgrade(t)?, index_entry(0, None))?;
        }
        Ok(())
    }

    /// Queues a route add (upstream `PUT /add`); an identical queued add is
    /// [`EcmperError::AlreadyQueued`].
    pub fn queue_add(&self, r: Route) -> Result<()> {
        queue(&mut self.state().add_q, r)
    }

    /// Queues a route delete (upstream `PUT /del`); deleting an absent route is a no-op at
    /// install time.
    pub fn queue_del(&self, r: Route) -> Result<()> {
        queue(&mut self.state().del_q, r)
    }

    /// The queued (adds, deletes).
    pub fn pending(&self) -> (Vec<Route>, Vec<Route>) {
        let s = self.state();
        (s.add_q.clone(), s.del_q.clone())
    }

    /// The installed route set, in install order.
    pub fn routes(&self) -> Vec<Route> {
        self.state().cur.clone()
    }

    /// Applies the queues (see the module docs for each mode).
    pub fn install(&self) -> Result<InstallOutcome> {
        let mut s = self.state();
        let mut cur = s.cur.clone();
        for r in &s.add_q {
            if !cur.contains(r) {
                cur.push(*r);
            }
        }
        cur.retain(|r| !s.del_q.contains(r));
        match self.cfg.mode {
            Mode::Compat => {
                let prv = s.cur.clone();
                self.write_compat(&prv, &cur)?;
                s.prv = prv;
                s.cur = cur;
                s.installs += 1;
            }
            Mode::Resilient => {
                let same = {
                    let mut a = s.cur.clone();
                    let mut b = cur.clone();
                    a.sort_by_key(route_key);
                    b.sort_by_key(route_key);
                    a == b
                };
                if !same {
                    let old = self.ring.load_full();
                    let number = old.gens[0].number + 1;
                    let g = Generation::build(number, &cur, self.cfg.buckets, Some(&old.gens[0]));
                    let mut gens = Vec::with_capacity(usize::from(self.cfg.generations) + 1);
                    gens.push(Arc::new(g));
                    gens.extend(
                        old.gens
                            .iter()
                            .take(usize::from(self.cfg.generations))
                            .cloned(),
                    );
                    self.ring.store(Arc::new(Ring { gens }));
                    s.prv = std::mem::replace(&mut s.cur, cur);
                    s.installs += 1;
                }
                s.add_q.clear();
                s.del_q.clear();
                return Ok(InstallOutcome {
                    changed: !same,
                    generation: self.ring.load().gens[0].number,
                    routes: s.cur.len(),
                });
            }
        }
        s.add_q.clear();
        s.del_q.clear();
        Ok(InstallOutcome {
            changed: true,
            generation: s.installs,
            routes: s.cur.len(),
        })
    }

    /// Compat: lays out and writes `prv_nh`, `cur_nh` and `ipv4_lpm` as upstream encodes them.
    fn write_compat(&self, prv: &[Route], cur: &[Route]) -> Result<()> {
        let (lpm_t, cur_t, prv_t) = (
            upgrade(&self.tables.lpm)?,
            upgrade(&self.tables.cur)?,
            upgrade(&self.tables.prv)?,
        );
        let enc = compat_encode(prv, cur);
        for (name, t, list) in [
            (super::PRV_NH, &prv_t, &enc.prv),
            (super::CUR_NH, &cur_t, &enc.cur),
        ] {
            if list.len() + 1 > t.schema().size {
                return Err(EcmperError::TooManyEntries {
                    table: name,
                    needed: list.len() + 1,
                    size: t.schema().size,
                });
            }
        }
        if enc.lpm.len() > lpm_t.schema().size {
            return Err(EcmperError::TooManyEntries {
                table: super::IPV4_LPM,
                needed: enc.lpm.len(),
                size: lpm_t.schema().size,
            });
        }
        for (t, list) in [(&prv_t, &enc.prv), (&cur_t, &enc.cur)] {
            let mut ops = vec![Op::Clear, Op::Insert(index_entry(0, None))];
            ops.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, nh)| Op::Insert(index_entry(i as u16 + 1, Some(*nh)))),
            );
            t.apply(&ops)?;
        }
        let mut ops = vec![Op::Clear];
        for e in &enc.lpm {
            ops.push(Op::Insert(EntrySpec {
                key: vec![FieldMatch::Lpm {
                    value: u128::from(e.prefix.to_bits()),
                    prefix_len: u16::from(e.preflen),
                }],
                priority: 0,
                action: ActionCall::new(
                    A_SET,
                    [e.cur_off, e.cur_cnt, e.prv_off, e.prv_cnt].map(u128::from),
                ),
            }));
        }
        lpm_t.apply(&ops)?;
        Ok(())
    }

    /// `neigh`: `nh_addr` → `set_output(dstMac, port)`, inserted or modified now.
    pub fn neigh_add(&self, nh_addr: Ipv4Addr, port: u16, dst_mac: u64) -> Result<()> {
        let _serial = self.state();
        upsert(
            &self.neigh()?,
            EntrySpec {
                key: vec![FieldMatch::Exact(u128::from(nh_addr.to_bits()))],
                priority: 0,
                action: ActionCall::new(A_SET, [u128::from(dst_mac), u128::from(port)]),
            },
        )
    }

    /// Deletes `nh_addr` from `neigh` now (a missing entry is a table "not found" error).
    pub fn neigh_del(&self, nh_addr: Ipv4Addr) -> Result<()> {
        let _serial = self.state();
        self.neigh()?
            .delete(&[FieldMatch::Exact(u128::from(nh_addr.to_bits()))])?;
        Ok(())
    }

    /// The `neigh` entries: (address, MAC, port).
    pub fn neighbours(&self) -> Result<Vec<(Ipv4Addr, u64, u16)>> {
        let mut v: Vec<(Ipv4Addr, u64, u16)> = self
            .neigh()?
            .entries()
            .into_iter()
            .filter(|(e, _, _)| e.action.action == A_SET)
            .filter_map(|(e, _, _)| match e.key.first() {
                Some(FieldMatch::Exact(a)) => Some((
                    Ipv4Addr::from(*a as u32),
                    e.action.param(0) as u64,
                    e.action.param(1) as u16,
                )),
                _ => None,
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// Upstream `PUT /clear`: empties every table, reinstalls the index-0 drops and forgets
    /// the route history and queues. Resilient mode publishes a fresh empty generation
    /// (one swap).
    pub fn clear(&self) -> Result<()> {
        let mut s = self.state();
        for t in [&self.tables.lpm, &self.tables.cur, &self.tables.prv]
            .into_iter()
            .flatten()
        {
            if let Some(t) = t.upgrade() {
                t.clear();
            }
        }
        self.neigh()?.clear();
        self.install_index0_drops()?;
        let number = self.ring.load().gens[0].number + 1;
        self.ring.store(Arc::new(Ring {
            gens: vec![Arc::new(Generation {
                number,
                ..Default::default()
            })],
        }));
        *s = RouteState::default();
        Ok(())
    }

    /// The ring as the native API shows it.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.ring
            .load()
            .gens
            .iter()
            .enumerate()
            .map(|(age, g)| GenerationInfo {
                age: age as u8,
                number: g.number,
                marker_dscp: (age > 0).then(|| hash::marker_dscp(age as u8)),
                routes: g.routes.clone(),
            })
            .collect()
    }

    /// Names `GET /tables/<name>` accepts.
    pub fn dump_names(&self) -> &'static [&'static str] {
        match self.cfg.mode {
            Mode::Compat => &[super::IPV4_LPM, super::CUR_NH, super::PRV_NH, NEIGH],
            Mode::Resilient => &[NEIGH, "generations"],
        }
    }

    /// Upstream's text dump of one table (`GET /tables/<name>`, `underline` false) or in the
    /// `GET /tables` style (`underline` true). None for an unknown name.
    pub fn dump(&self, name: &str, underline: bool) -> Option<String> {
        if !self.dump_names().contains(&name) {
            return None;
        }
        let full = format!("{P4RT_PREFIX}{name}");
        let mut s = String::new();
        if underline {
            let bar = "-".repeat(full.len() + 8);
            s.push_str(&format!("{bar}\n Table {full}\n{bar}\n"));
        } else {
            s.push_str(&format!("| Table {full}\n"));
        }
        if name == "generations" {
            for g in self.generations() {
                let what = match g.marker_dscp {
                    None => "current".to_string(),
                    Some(d) => format!("previous {}, marker DSCP {d:#04x}", g.age),
                };
                s.push_str(&format!("generation {} | {what} |", g.number));
                let ring = self.ring.load();
                if let Some(gen_) = ring.gens.get(usize::from(g.age)) {
                    for v in gen_.vips() {
                        let nhs: Vec<String> = v
                            .nexthops
                            .iter()
                            .map(|n| {
                                if *n == 0 {
                                    "connected".into()
                                } else {
                                    Ipv4Addr::from(*n).to_string()
                                }
                            })
                            .collect();
                        s.push_str(&format!(
                            " {}/{} -> [{}] ({} buckets);",
                            Ipv4Addr::from(v.prefix),
                            v.len,
                            nhs.join(", "),
                            v.buckets.len()
                        ));
                    }
                }
                s.push('\n');
            }
            return Some(s);
        }
        let t = match name {
            super::IPV4_LPM => upgrade(&self.tables.lpm).ok()?,
            super::CUR_NH => upgrade(&self.tables.cur).ok()?,
            super::PRV_NH => upgrade(&self.tables.prv).ok()?,
            _ => self.neigh().ok()?,
        };
        let mut entries = t.entries();
        entries.sort_by_key(|(e, _, _)| match e.key.first() {
            Some(FieldMatch::Exact(v)) => (*v, 0),
            Some(FieldMatch::Lpm { value, prefix_len }) => (*value, *prefix_len),
            _ => (0, 0),
        });
        for (num, (e, _, _)) in entries.iter().enumerate() {
            let key = match e.key.first() {
                Some(FieldMatch::Lpm { value, prefix_len }) => {
                    format!("dstAddr: {}/{prefix_len}", Ipv4Addr::from(*value as u32))
                }
                Some(FieldMatch::Exact(v)) if name == NEIGH => {
                    format!("nh_addr: {}", Ipv4Addr::from(*v as u32))
                }
                Some(FieldMatch::Exact(v)) => format!("nh_index: {v}"),
                _ => String::new(),
            };
            let schema = t.schema();
            let aname = schema
                .action(e.action.action)
                .map_or("?", |a| a.name.as_str());
            let params = match (name, e.action.action) {
                (super::IPV4_LPM, A_SET) => format!(
                    " cur_nh_offset: {} cur_nh_count: {} prv_nh_offset: {} prv_nh_count: {}",
                    e.action.param(0),
                    e.action.param(1),
                    e.action.param(2),
                    e.action.param(3)
                ),
                (NEIGH, A_SET) => format!(
                    " dstMac: {} port: {}",
                    format_mac(e.action.param(0)),
                    e.action.param(1)
                ),
                (_, A_SET) => format!(" nexthop: {}", Ipv4Addr::from(e.action.param(0) as u32)),
                _ => String::new(),
            };
            s.push_str(&format!(
                "{} | match: {key} | action: {aname}({params} )\n",
                num + 1
            ));
        }
        Some(s)
    }

    /// `GET /tables`: every table, underlined.
    pub fn dump_all(&self) -> String {
        self.dump_names()
            .iter()
            .filter_map(|n| self.dump(n, true))
            .collect()
    }
}

/// Insert, or modify when the key exists (upstream's insert-then-modify). Callers hold the
/// state lock, so nothing else writes the key in between.
fn upsert(t: &Arc<Table>, e: EntrySpec) -> Result<()> {
    if t.get(&e.key).is_ok() {
        t.modify(e)?;
    } else {
        t.insert(e)?;
    }
    Ok(())
}

fn route_key(r: &Route) -> (u32, u8, u32) {
    (r.prefix.to_bits(), r.preflen, r.nexthop.to_bits())
}

fn queue(q: &mut Vec<Route>, r: Route) -> Result<()> {
    if q.contains(&r) {
        return Err(EcmperError::AlreadyQueued {
            route: r.to_string(),
        });
    }
    q.push(r);
    Ok(())
}

/// An `nh_index` entry: `set_nexthop(nh)`, or `drop` for None.
fn index_entry(index: u16, nh: Option<u32>) -> EntrySpec {
    EntrySpec {
        key: vec![FieldMatch::Exact(u128::from(index))],
        priority: 0,
        action: match nh {
            Some(nh) => ActionCall::new(A_SET, [u128::from(nh)]),
            None => ActionCall::new(A_DROP, []),
        },
    }
}

/// One `ipv4_lpm` entry of the compat encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatLpm {
    pub prefix: Ipv4Addr,
    pub preflen: u8,
    pub cur_off: u16,
    pub cur_cnt: u16,
    pub prv_off: u16,
    pub prv_cnt: u16,
}

/// The compat encoding: `ipv4_lpm` entries and the `prv_nh` / `cur_nh` lists from index 1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompatEncoding {
    pub lpm: Vec<CompatLpm>,
    pub prv: Vec<u32>,
    pub cur: Vec<u32>,
}

/// Upstream's expansion: n = 0 or 1 unchanged; n > 1: next_pow2(n) × 4 entries, entry x =
/// `nh[x mod n]`.
pub fn expand(nh: &[u32]) -> Vec<u32> {
    let n = nh.len();
    if n <= 1 {
        return nh.to_vec();
    }
    let m = n.next_power_of_two() * 4;
    (0..m).map(|x| nh[x % n]).collect()
}

/// Upstream's `do_encode`: prefixes in order of (dotted prefix string, length), offsets are
/// running indices from 1 per table, counts the expanded lengths (truncated to 16 bits as
/// P4Runtime would refuse larger ones; the table-size check catches those first).
pub fn compat_encode(prv: &[Route], cur: &[Route]) -> CompatEncoding {
    /// Per prefix: previous next hops, current next hops, the prefix.
    type Lists = (Vec<u32>, Vec<u32>, Ipv4Addr);
    let mut lpm: BTreeMap<(String, u8), Lists> = BTreeMap::new();
    for r in prv {
        lpm.entry((r.prefix.to_string(), r.preflen))
            .or_insert_with(|| (Vec::new(), Vec::new(), r.prefix))
            .0
            .push(r.nexthop.to_bits());
    }
    for r in cur {
        lpm.entry((r.prefix.to_string(), r.preflen))
            .or_insert_with(|| (Vec::new(), Vec::new(), r.prefix))
            .1
            .push(r.nexthop.to_bits());
    }
    let mut enc = CompatEncoding::default();
    for ((_, preflen), (p, c, prefix)) in lpm {
        let (p, c) = (expand(&p), expand(&c));
        enc.lpm.push(CompatLpm {
            prefix,
            preflen,
            cur_off: (enc.cur.len() + 1) as u16,
            cur_cnt: c.len() as u16,
            prv_off: (enc.prv.len() + 1) as u16,
            prv_cnt: p.len() as u16,
        });
        enc.prv.extend(p);
        enc.cur.extend(c);
    }
    enc
}

/// Registry from a switch's `neigh` table to the handle of the stage that owns it.
type Registry = Vec<(Weak<Table>, Arc<EcmperHandle>)>;
static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());

/// Records that `handle` controls the stage whose `neigh` table is `neigh`. Entries of
/// dropped switches are pruned here.
pub fn register(neigh: &Arc<Table>, handle: Arc<EcmperHandle>) {
    let mut r = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    r.retain(|(w, _)| w.strong_count() > 0);
    r.push((Arc::downgrade(neigh), handle));
}

/// The handle of `sw`'s `ecmper` stage, if its pipeline has one.
pub fn handle_of(sw: &Switch) -> Option<Arc<EcmperHandle>> {
    if !sw.pipeline.iter().any(|s| s.name == super::STAGE) {
        return None;
    }
    let neigh = sw.tables.get(NEIGH).ok()?;
    let r = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    r.iter()
        .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(neigh)))
        .map(|(_, h)| Arc::clone(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str, l: u8, nh: &str) -> Route {
        Route::parse(p, &l.to_string(), nh).unwrap()
    }

    #[test]
    fn howto_worked_example() {
        let a = r("10.0.10.0", 32, "10.0.0.1");
        let b = r("10.0.10.0", 32, "10.0.0.2");
        let e = compat_encode(&[], &[a]);
        assert_eq!((e.lpm[0].cur_off, e.lpm[0].cur_cnt), (1, 1));
        assert_eq!((e.lpm[0].prv_off, e.lpm[0].prv_cnt), (1, 0));
        let e = compat_encode(&[a], &[a, b]);
        assert_eq!((e.lpm[0].cur_off, e.lpm[0].cur_cnt), (1, 8));
        assert_eq!((e.lpm[0].prv_off, e.lpm[0].prv_cnt), (1, 1));
        let (x, y) = (0x0a00_0001, 0x0a00_0002);
        assert_eq!(e.cur, vec![x, y, x, y, x, y, x, y]);
        assert_eq!(e.prv, vec![x]);
    }

    #[test]
    fn expansion_sizes() {
        for (n, m) in [(0, 0), (1, 1), (2, 8), (3, 16), (4, 16), (5, 32)] {
            let v: Vec<u32> = (0..n).collect();
            assert_eq!(expand(&v).len(), m as usize, "n = {n}");
        }
    }

    #[test]
    fn lexicographic_prefix_order() {
        // "10.0.10.0" < "10.0.2.0" as strings: upstream lays 10.0.10.0 out first.
        let e = compat_encode(
            &[],
            &[
                r("10.0.2.0", 24, "10.0.0.1"),
                r("10.0.10.0", 24, "10.0.0.2"),
            ],
        );
        assert_eq!(e.lpm[0].prefix, Ipv4Addr::new(10, 0, 10, 0));
        assert_eq!(e.lpm[1].cur_off, 2);
    }

    #[test]
    fn route_parse_errors_name_the_field() {
        let f = |p, l, n| match Route::parse(p, l, n) {
            Err(EcmperError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(f("10.0.10", "32", "connected"), "prefix");
        assert_eq!(f("10.0.10.1", "24", "connected"), "prefix");
        assert_eq!(f("10.0.10.0", "33", "connected"), "preflen");
        assert_eq!(f("10.0.10.0", "x", "connected"), "preflen");
        assert_eq!(f("10.0.10.0", "32", "conn"), "nexthop");
        assert!(parse_mac("02:03:04:05:06:0g").is_err());
        assert_eq!(parse_mac("02:03:04:05:06:01").unwrap(), 0x0203_0405_0601);
    }
}
