//! The topology file: what a lab is made of, parsed from TOML and validated before anything
//! touches the kernel.
//!
//! ```toml
//! name = "p4cf"                      # lab name: namespaces are "sb-p4cf-<node>"
//! [[host]]
//! name = "client"
//!   [[host.iface]]
//!   name = "eth0"
//!   mac = "02:42:c0:a8:0c:64"
//!   addrs = ["192.168.12.100/24"]
//!   [[host.route]]
//!   dst = "default"
//!   via = "192.168.12.1"
//!   [[host.neigh]]
//!   ip = "192.168.12.2"
//!   mac = "02:42:c0:a8:0c:02"
//!   dev = "eth0"
//! [[switch]]
//! name = "sw"
//! config = "switch.toml"             # relative to the topology file
//! api = "127.0.0.1:5000"
//! [[link]]
//! a = "client:eth0"
//! b = "sw:132"                       # a switch endpoint names a port number
//! [[process]]
//! node = "client"
//! cmd = ["sleep", "1000"]
//! ```
//!
//! Switch-side veth ends live in the root namespace (where the switch process runs) and are
//! named `sb<lab>-<port>` (one switch) or `sb<lab>-<n>.<port>` (switch number `n`, from 1, when
//! there are several), unless the switch sets `iface_prefix`. Every name is checked to fit the
//! kernel's 15-byte interface name limit when the file is loaded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest lab name accepted; keeps generated root-namespace names under [`IFNAME_MAX`].
pub const LAB_NAME_MAX: usize = 10;
/// Longest node name accepted; keeps namespace names readable.
pub const NODE_NAME_MAX: usize = 32;

/// A whole lab: hosts (one network namespace each), switches (root-namespace port interfaces
/// plus an optional switch process), links between them and background processes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Lab name: lowercase letters, digits and `_`, at most [`LAB_NAME_MAX`] bytes. It prefixes
    /// every namespace (`sb-<name>-`) and root-namespace link (`sb<name>-`) the lab creates.
    pub name: String,
    /// Hosts, each in its own namespace `sb-<lab>-<host>`.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
    /// Switch nodes; their ports are veth ends in the root namespace.
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchSpec>,
    /// Point-to-point veth links between two endpoints.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    /// Background processes started in host namespaces after the network is up.
    #[serde(default, rename = "process")]
    pub processes: Vec<ProcessSpec>,
    /// Where the topology came from, to turn field paths into `file:line:col`.
    #[serde(skip)]
    source: Option<Source>,
}

#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    text: String,
}

/// A host: one network namespace with interfaces, routes and static neighbours.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Node name, unique among hosts and switches.
    pub name: String,
    /// Interfaces; each must be one end of exactly one `[[link]]`.
    #[serde(default, rename = "iface")]
    pub ifaces: Vec<IfaceSpec>,
    /// Routes added after addresses.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    /// Permanent neighbour (ARP/NDP) entries.
    #[serde(default, rename = "neigh")]
    pub neighs: Vec<NeighSpec>,
    /// Extra sysctls set inside the namespace, e.g. `"net.ipv4.ip_forward" = "1"`.
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Commands run once inside the namespace after every link, route and neighbour is in
    /// place (before switches start), from the topology file's directory: firewall/NAT rules
    /// (`["nft", "-f", "nat.nft"]`), route options (`rto_min`) and the like. A failing command
    /// fails `lab up`.
    #[serde(default)]
    pub setup: Vec<Vec<String>>,
}

/// One interface of a host (the host end of a veth).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IfaceSpec {
    /// Interface name inside the host namespace (at most 15 bytes).
    pub name: String,
    /// Unicast MAC address, `aa:bb:cc:dd:ee:ff`; random when absent.
    pub mac: Option<String>,
    /// Addresses in CIDR form. IPv6 stays disabled on the interface unless one is IPv6.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// MTU of this end (overrides the link's `mtu`).
    pub mtu: Option<u32>,
}

/// A route inside a host namespace.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `default` or a prefix in CIDR form.
    pub dst: String,
    /// Next hop address.
    pub via: Option<String>,
    /// Output interface (one of the host's ifaces).
    pub dev: Option<String>,
}

/// A permanent neighbour entry inside a host namespace.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NeighSpec {
    /// Neighbour IP address.
    pub ip: String,
    /// Its MAC address.
    pub mac: String,
    /// Interface it is reached through (one of the host's ifaces).
    pub dev: String,
}

/// A switch node. The lab creates its ports (root-namespace veth ends) and, when the caller
/// gives a launcher, starts the switch process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    /// Node name, unique among hosts and switches.
    pub name: String,
    /// Switch config file; after loading, relative paths are resolved against the directory of
    /// the topology file.
    pub config: Option<PathBuf>,
    /// Where the switch's REST API listens (from the root namespace), e.g. `127.0.0.1:5000`.
    pub api: Option<String>,
    /// Prefix of this switch's port interface names (default `sb<lab>-`, or `sb<lab>-<n>.`
    /// with several switches). Must start with `sb<lab>-` so `lab down` finds the ports.
    pub iface_prefix: Option<String>,
}

/// A veth link between two endpoints: `host:iface` or `switch:port`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// First endpoint.
    pub a: String,
    /// Second endpoint.
    pub b: String,
    /// MTU for both ends (a host iface's own `mtu` wins).
    pub mtu: Option<u32>,
    /// `veth` (default): a veth pair. `tap`: the host end is a persistent TAP device in the
    /// host's namespace and the switch port attaches to it, as a CPU port whose kernel side
    /// (addresses, routes, NAT) belongs to that host. A tap link joins a host and a switch.
    #[serde(default)]
    pub kind: LinkKind,
}

/// What a `[[link]]` is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    #[default]
    Veth,
    Tap,
}

/// Which interface backs one switch port, as the switch must open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// Interface name: the root-namespace veth end, or the TAP's name.
    pub iface: String,
    /// `tap` links: the host namespace holding the TAP (the switch opens it from there).
    pub netns: Option<String>,
    pub kind: LinkKind,
}

/// A background process started in a host namespace once the lab is up; killed on teardown.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// Host to run in.
    pub node: String,
    /// Program and arguments.
    pub cmd: Vec<String>,
    /// File receiving stdout and stderr (relative to the topology file); discarded when absent.
    pub log: Option<PathBuf>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A resolved link endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// An interface of a host.
    Host {
        /// Host name.
        host: &'a str,
        /// Interface name in the host namespace.
        iface: &'a str,
    },
    /// A port of a switch.
    Switch {
        /// Switch name.
        switch: &'a str,
        /// Port number.
        port: u16,
    },
}

/// Namespace of a host node: `sb-<lab>-<node>`.
pub fn netns_name(lab: &str, node: &str) -> String {
    format!("sb-{lab}-{node}")
}

/// Prefix shared by every namespace of a lab.
pub fn netns_prefix(lab: &str) -> String {
    format!("sb-{lab}-")
}

/// Prefix shared by every root-namespace interface of a lab.
pub fn link_prefix(lab: &str) -> String {
    format!("sb{lab}-")
}

/// One step of a field path such as `host[1].iface[0].name`.
#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Idx(usize),
}

/// Path of a field in the topology, used in error messages and resolved to a line.
#[derive(Debug, Clone, Default)]
struct FieldPath(Vec<Seg>);

impl FieldPath {
    fn key(&self, k: &'static str) -> FieldPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        FieldPath(v)
    }
    fn idx(&self, k: &'static str, i: usize) -> FieldPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        v.push(Seg::Idx(i));
        FieldPath(v)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Idx(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// `file:line:col` for a byte offset (1-based line and column, columns in characters).
fn line_col(path: &Path, text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{col}", path.display())
}

impl Topology {
    /// Reads, parses and validates a topology file. Relative paths inside it (switch configs,
    /// process logs) are resolved against the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Topology> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LabError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Topology::parse(&text, path)
    }

    /// Parses and validates topology text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Topology> {
        let path = path.as_ref();
        let mut topo: Topology = toml::from_str(text).map_err(|e| LabError::Parse {
            location: match e.span() {
                Some(span) => line_col(path, text, span.start),
                None => path.display().to_string(),
            },
            message: e.message().trim().to_string(),
        })?;
        topo.source = Some(Source {
            path: path.to_path_buf(),
            text: text.to_string(),
        });
        let base = path.parent().unwrap_or(Path::new(""));
        for sw in &mut topo.switches {
            if let Some(c) = &mut sw.config
                && c.is_relative()
            {
                *c = base.join(&*c);
            }
        }
        for p in &mut topo.processes {
            if let Some(l) = &mut p.log
                && l.is_relative()
            {
                *l = base.join(&*l);
            }
        }
        topo.validate()?;
        Ok(topo)
    }

    /// File the topology was loaded from, if any.
    pub fn source_path(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| s.path.as_path())
    }

    /// Host by name.
    pub fn host(&self, name: &str) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Switch by name.
    pub fn switch(&self, name: &str) -> Option<&SwitchSpec> {
        self.switches.iter().find(|s| s.name == name)
    }

    /// Resolves `host:iface` or `switch:port`; `None` if the node is unknown or the port is not
    /// a number. The iface is not checked against the host's declared ifaces.
    pub fn endpoint<'a>(&'a self, text: &'a str) -> Option<Endpoint<'a>> {
        let (node, rest) = text.split_once(':')?;
        if self.host(node).is_some() {
            return Some(Endpoint::Host {
                host: node,
                iface: rest,
            });
        }
        if self.switch(node).is_some() {
            let port = rest.parse().ok()?;
            return Some(Endpoint::Switch { switch: node, port });
        }
        None
    }

    /// Prefix of the root-namespace port interfaces of switch number `index`.
    fn switch_prefix(&self, index: usize) -> String {
        if let Some(p) = self
            .switches
            .get(index)
            .and_then(|s| s.iface_prefix.clone())
        {
            return p;
        }
        if self.switches.len() <= 1 {
            link_prefix(&self.name)
        } else {
            format!("{}{}.", link_prefix(&self.name), index + 1)
        }
    }

    /// Port number -> root-namespace interface name for one switch, from the links that reach
    /// it. The switch config refers to ports by number; this says which interface backs each.
    pub fn switch_port_ifaces(&self, switch: &str) -> Result<BTreeMap<u16, String>> {
        Ok(self
            .switch_ports(switch)?
            .into_iter()
            .map(|(port, b)| (port, b.iface))
            .collect())
    }

    /// Port number -> how the port is backed (veth end or a host's TAP) for one switch.
    pub fn switch_ports(&self, switch: &str) -> Result<BTreeMap<u16, PortBinding>> {
        let index = self
            .switches
            .iter()
            .position(|s| s.name == switch)
            .ok_or_else(|| LabError::NoSuchNode {
                lab: self.name.clone(),
                kind: "switch",
                node: switch.to_string(),
            })?;
        let prefix = self.switch_prefix(index);
        let mut map = BTreeMap::new();
        for l in &self.links {
            for (e, other) in [(&l.a, &l.b), (&l.b, &l.a)] {
                if let Some(Endpoint::Switch { switch: s, port }) = self.endpoint(e)
                    && s == switch
                {
                    let binding = match (l.kind, self.endpoint(other)) {
                        (LinkKind::Tap, Some(Endpoint::Host { host, iface })) => PortBinding {
                            iface: iface.to_string(),
                            netns: Some(netns_name(&self.name, host)),
                            kind: LinkKind::Tap,
                        },
                        _ => PortBinding {
                            iface: format!("{prefix}{port}"),
                            netns: None,
                            kind: LinkKind::Veth,
                        },
                    };
                    map.insert(port, binding);
                }
            }
        }
        Ok(map)
    }

    /// Root-namespace interface name for a switch endpoint.
    pub(crate) fn switch_iface(&self, switch: &str, port: u16) -> String {
        let index = self
            .switches
            .iter()
            .position(|s| s.name == switch)
            .unwrap_or(0);
        format!("{}{port}", self.switch_prefix(index))
    }

    fn invalid(&self, field: &FieldPath, message: impl Into<String>) -> LabError {
        LabError::Invalid {
            location: self.locate(field),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// `file:line:col` of a field, found by re-parsing the source with spans. Falls back to the
    /// deepest existing parent, then to the file name.
    fn locate(&self, field: &FieldPath) -> String {
        let Some(src) = &self.source else {
            return "<topology>".to_string();
        };
        let Ok(root) = toml::de::DeTable::parse(&src.text) else {
            return src.path.display().to_string();
        };
        let mut span = root.span();
        let root_value = toml::de::DeValue::Table(root.into_inner());
        let mut cur = &root_value;
        for seg in &field.0 {
            let next = match seg {
                Seg::Key(k) => cur.get(*k),
                Seg::Idx(i) => cur.get(*i),
            };
            match next {
                Some(v) => {
                    span = v.span();
                    cur = v.get_ref();
                }
                None => break,
            }
        }
        line_col(&src.path, &src.text, span.start)
    }

    /// Checks names, addresses, endpoints and generated interface names. Called by
    /// [`Topology::load`]; call it yourself after building or editing a topology in code.
    pub fn validate(&self) -> Result<()> {
        let root = FieldPath::default();
        check_lab_name(&self.name).map_err(|m| self.invalid(&root.key("name"), m))?;

        // Node names.
        let mut nodes: HashMap<&str, FieldPath> = HashMap::new();
        let named = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), root.idx("host", i)))
            .chain(
                self.switches
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.as_str(), root.idx("switch", i))),
            );
        for (name, path) in named {
            let f = path.key("name");
            check_node_name(name).map_err(|m| self.invalid(&f, m))?;
            if let Some(prev) = nodes.insert(name, path.clone()) {
                return Err(self.invalid(&f, format!("duplicate node name `{name}` (also {prev})")));
            }
        }

        // Hosts.
        for (hi, h) in self.hosts.iter().enumerate() {
            let hp = root.idx("host", hi);
            let mut names = BTreeSet::new();
            for (ii, iface) in h.ifaces.iter().enumerate() {
                let ip = hp.idx("iface", ii);
                check_ifname(&iface.name).map_err(|m| self.invalid(&ip.key("name"), m))?;
                if iface.name == "lo" {
                    return Err(self.invalid(&ip.key("name"), "`lo` is created by the kernel"));
                }
                if !names.insert(iface.name.as_str()) {
                    return Err(self.invalid(
                        &ip.key("name"),
                        format!("duplicate iface `{}` on host `{}`", iface.name, h.name),
                    ));
                }
                if let Some(mac) = &iface.mac {
                    check_mac(mac).map_err(|m| self.invalid(&ip.key("mac"), m))?;
                }
                for (ai, a) in iface.addrs.iter().enumerate() {
                    let mut f = ip.key("addrs");
                    f.0.push(Seg::Idx(ai));
                    parse_cidr(a).map_err(|m| self.invalid(&f, m))?;
                }
                if let Some(mtu) = iface.mtu {
                    check_mtu(mtu).map_err(|m| self.invalid(&ip.key("mtu"), m))?;
                }
            }
            for (ri, r) in h.routes.iter().enumerate() {
                let rp = hp.idx("route", ri);
                if r.dst != "default" {
                    parse_cidr(&r.dst).map_err(|m| {
                        self.invalid(&rp.key("dst"), format!("{m} (or use \"default\")"))
                    })?;
                }
                if let Some(via) = &r.via {
                    parse_ip(via).map_err(|m| self.invalid(&rp.key("via"), m))?;
                }
                if let Some(dev) = &r.dev
                    && !names.contains(dev.as_str())
                {
                    return Err(self.invalid(
                        &rp.key("dev"),
                        format!("host `{}` has no iface `{dev}`", h.name),
                    ));
                }
                if r.via.is_none() && r.dev.is_none() {
                    return Err(self.invalid(&rp, "a route needs `via`, `dev` or both"));
                }
            }
            for (ni, n) in h.neighs.iter().enumerate() {
                let np = hp.idx("neigh", ni);
                parse_ip(&n.ip).map_err(|m| self.invalid(&np.key("ip"), m))?;
                check_mac(&n.mac).map_err(|m| self.invalid(&np.key("mac"), m))?;
                if !names.contains(n.dev.as_str()) {
                    return Err(self.invalid(
                        &np.key("dev"),
                        format!("host `{}` has no iface `{}`", h.name, n.dev),
                    ));
                }
            }
            for key in h.sysctl.keys() {
                if key.is_empty()
                    || key.contains("..")
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
                {
                    return Err(self.invalid(&hp.key("sysctl"), format!("bad sysctl name `{key}`")));
                }
            }
        }

        // Switches.
        for (si, s) in self.switches.iter().enumerate() {
            let sp = root.idx("switch", si);
            if let Some(api) = &s.api {
                api.parse::<SocketAddr>().map_err(|_| {
                    self.invalid(&sp.key("api"), format!("`{api}` is not an ip:port address"))
                })?;
            }
            if let Some(p) = &s.iface_prefix
                && !p.starts_with(&link_prefix(&self.name))
            {
                return Err(self.invalid(
                    &sp.key("iface_prefix"),
                    format!(
                        "must start with `{}` so `switchboard lab down` finds the ports",
                        link_prefix(&self.name)
                    ),
                ));
            }
        }

        // Links.
        let mut used_host: HashMap<(&str, &str), FieldPath> = HashMap::new();
        let mut used_port: HashMap<(&str, u16), FieldPath> = HashMap::new();
        let mut root_ifaces: HashMap<String, FieldPath> = HashMap::new();
        for (li, l) in self.links.iter().enumerate() {
            let lp = root.idx("link", li);
            if let Some(mtu) = l.mtu {
                check_mtu(mtu).map_err(|m| self.invalid(&lp.key("mtu"), m))?;
            }
            for (key, text) in [("a", &l.a), ("b", &l.b)] {
                let f = lp.key(key);
                let Some((node, rest)) = text.split_once(':') else {
                    return Err(
                        self.invalid(&f, format!("`{text}` is not `host:iface` or `switch:port`"))
                    );
                };
                match self.endpoint(text) {
                    Some(Endpoint::Host { host, iface }) => {
                        let declared = self
                            .host(host)
                            .is_some_and(|h| h.ifaces.iter().any(|i| i.name == iface));
                        if !declared {
                            return Err(self.invalid(
                                &f,
                                format!(
                                    "host `{host}` has no iface `{iface}` (declare it in a [[host.iface]])"
                                ),
                            ));
                        }
                        if let Some(prev) = used_host.insert((host, iface), f.clone()) {
                            return Err(
                                self.invalid(&f, format!("`{text}` is already linked by {prev}"))
                            );
                        }
                    }
                    Some(Endpoint::Switch { switch, port }) => {
                        if let Some(prev) = used_port.insert((switch, port), f.clone()) {
                            return Err(
                                self.invalid(&f, format!("`{text}` is already linked by {prev}"))
                            );
                        }
                        let name = self.switch_iface(switch, port);
                        check_ifname(&name).map_err(|m| {
                            self.invalid(
                                &f,
                                format!(
                                    "generated port interface: {m}; shorten the lab name or set iface_prefix"
                                ),
                            )
                        })?;
                        if let Some(prev) = root_ifaces.insert(name.clone(), f.clone()) {
                            return Err(self.invalid(
                                &f,
                                format!("port interface `{name}` collides with {prev}"),
                            ));
                        }
                    }
                    None if self.switch(node).is_some() => {
                        return Err(self.invalid(
                            &f,
                            format!("switch port `{rest}` is not a number 0..=65535"),
                        ));
                    }
                    None => {
                        return Err(self.invalid(&f, format!("unknown node `{node}`")));
                    }
                }
            }
            if l.a == l.b {
                return Err(self.invalid(&lp.key("b"), "a link cannot join an endpoint to itself"));
            }
            if l.kind == LinkKind::Tap {
                let hosts = [&l.a, &l.b]
                    .iter()
                    .filter(|e| matches!(self.endpoint(e), Some(Endpoint::Host { .. })))
                    .count();
                if hosts != 1 {
                    return Err(self.invalid(
                        &lp.key("kind"),
                        "a tap link joins one host iface and one switch port",
                    ));
                }
            }
        }
        for (hi, h) in self.hosts.iter().enumerate() {
            for (ii, iface) in h.ifaces.iter().enumerate() {
                if !used_host.contains_key(&(h.name.as_str(), iface.name.as_str())) {
                    return Err(self.invalid(
                        &root.idx("host", hi).idx("iface", ii).key("name"),
                        format!(
                            "iface `{}:{}` is not an end of any [[link]]",
                            h.name, iface.name
                        ),
                    ));
                }
            }
        }

        // Processes.
        for (pi, p) in self.processes.iter().enumerate() {
            let pp = root.idx("process", pi);
            if self.host(&p.node).is_none() {
                return Err(self.invalid(
                    &pp.key("node"),
                    format!(
                        "unknown host `{}` (processes run in host namespaces)",
                        p.node
                    ),
                ));
            }
            if p.cmd.first().is_none_or(|c| c.is_empty()) {
                return Err(self.invalid(&pp.key("cmd"), "empty command"));
            }
        }
        Ok(())
    }
}

pub(crate) fn check_lab_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > LAB_NAME_MAX {
        return Err(format!(
            "lab name `{name}` must be 1..={LAB_NAME_MAX} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "lab name `{name}` may only hold a-z, 0-9 and `_` (it prefixes namespaces and links)"
        ));
    }
    Ok(())
}

fn check_node_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > NODE_NAME_MAX {
        return Err(format!(
            "node name `{name}` must be 1..={NODE_NAME_MAX} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "node name `{name}` may only hold letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// Checks a Linux interface name: 1..=15 bytes, no `/`, `:` or whitespace, not `.`/`..`.
pub fn check_ifname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(format!(
            "interface name `{name}` must be 1..={IFNAME_MAX} bytes (it has {})",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name `{name}` may not contain `/`, `:` or spaces"
        ));
    }
    Ok(())
}

/// Parses a MAC `aa:bb:cc:dd:ee:ff`; rejects multicast addresses (the kernel refuses them on an
/// interface).
pub fn parse_mac(mac: &str) -> std::result::Result<[u8; 6], String> {
    let bad = || format!("`{mac}` is not a MAC address like 02:00:00:00:00:01");
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

fn check_mac(mac: &str) -> std::result::Result<(), String> {
    let b = parse_mac(mac)?;
    if b[0] & 1 == 1 {
        return Err(format!("`{mac}` is a multicast MAC address"));
    }
    Ok(())
}

fn check_mtu(mtu: u32) -> std::result::Result<(), String> {
    if !(68..=65535).contains(&mtu) {
        return Err(format!("mtu {mtu} is outside 68..=65535"));
    }
    Ok(())
}

fn parse_ip(text: &str) -> std::result::Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IPv4 or IPv6 address"))
}

/// Parses `addr/len`, checking the prefix length fits the address family.
pub fn parse_cidr(text: &str) -> std::result::Result<(IpAddr, u8), String> {
    let (a, l) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not in CIDR form (address/prefix-length)"))?;
    let addr = parse_ip(a)?;
    let len: u8 = l
        .parse()
        .map_err(|_| format!("`{text}`: prefix length `{l}` is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("`{text}`: prefix length {len} exceeds {max}"));
    }
    Ok((addr, len))
}

impl IfaceSpec {
    /// True when any address is IPv6, so IPv6 must stay enabled on this interface.
    pub fn wants_ipv6(&self) -> bool {
        self.addrs
            .iter()
            .any(|a| parse_cidr(a).is_ok_and(|(ip, _)| ip.is_ipv6()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t1"
[[host]]
name = "a"
  [[host.iface]]
  name = "eth0"
  mac = "02:00:00:00:00:0a"
  addrs = ["10.0.0.1/24"]
  [[host.route]]
  dst = "default"
  via = "10.0.0.254"
  [[host.neigh]]
  ip = "10.0.0.2"
  mac = "02:00:00:00:00:0b"
  dev = "eth0"
[[host]]
name = "b"
  [[host.iface]]
  name = "eth0"
  addrs = ["10.0.0.2/24", "fd00::2/64"]
[[host]]
name = "c"
  [[host.iface]]
  name = "e1"
[[switch]]
name = "sw"
config = "switch.toml"
api = "127.0.0.1:5000"
[[link]]
a = "a:eth0"
b = "sw:132"
[[link]]
a = "sw:140"
b = "b:eth0"
mtu = 9000
[[link]]
a = "c:e1"
b = "sw:7"
[[process]]
node = "a"
cmd = ["sleep", "10"]
"#;

    fn parse(text: &str) -> Result<Topology> {
        Topology::parse(text, "/x/topo.toml")
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_good_topology_and_maps_ports() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.name, "t1");
        assert_eq!(t.hosts.len(), 3);
        assert_eq!(t.hosts[0].routes[0].via.as_deref(), Some("10.0.0.254"));
        assert_eq!(
            t.switches[0].config.as_deref(),
            Some(Path::new("/x/switch.toml"))
        );
        let map = t.switch_port_ifaces("sw").unwrap();
        let want: BTreeMap<u16, String> = [
            (7, "sbt1-7".to_string()),
            (132, "sbt1-132".to_string()),
            (140, "sbt1-140".to_string()),
        ]
        .into();
        assert_eq!(map, want);
        assert_eq!(
            t.endpoint("sw:140"),
            Some(Endpoint::Switch {
                switch: "sw",
                port: 140
            })
        );
        assert!(!t.hosts[0].ifaces[0].wants_ipv6());
        assert!(t.hosts[1].ifaces[0].wants_ipv6());
        assert!(t.switch_port_ifaces("nope").is_err());
    }

    #[test]
    fn syntax_error_names_file_line_col() {
        let e = err("name = \"x\"\n[[host]]\nname = \n");
        assert!(e.starts_with("/x/topo.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_field_names_line() {
        let e = err("name = \"x\"\n[[host]]\nname = \"a\"\ncolour = \"red\"\n");
        assert!(e.starts_with("/x/topo.toml:4:1"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn unknown_node_in_link_names_field_and_line() {
        let text = GOOD.replace("b = \"sw:132\"", "b = \"sx:132\"");
        let e = err(&text);
        let line = text.lines().position(|l| l.contains("sx:132")).unwrap() + 1;
        assert!(e.starts_with(&format!("/x/topo.toml:{line}:")), "{e}");
        assert!(e.contains("link[0].b"), "{e}");
        assert!(e.contains("unknown node `sx`"), "{e}");
    }

    #[test]
    fn duplicate_node_name() {
        let text = GOOD.replace("name = \"c\"", "name = \"a\"");
        let e = err(&text);
        assert!(e.contains("host[2].name"), "{e}");
        assert!(e.contains("duplicate node name `a`"), "{e}");
    }

    #[test]
    fn bad_address_and_mac() {
        let e = err(&GOOD.replace("10.0.0.2/24", "10.0.0.2/33"));
        assert!(e.contains("host[1].iface[0].addrs[0]"), "{e}");
        assert!(e.contains("exceeds 32"), "{e}");
        let line = GOOD
            .lines()
            .position(|l| l.contains("10.0.0.2/24"))
            .unwrap()
            + 1;
        assert!(e.starts_with(&format!("/x/topo.toml:{line}:")), "{e}");
        let e = err(&GOOD.replace("02:00:00:00:00:0a", "01:00:00:00:00:0a"));
        assert!(
            e.contains("host[0].iface[0].mac") && e.contains("multicast"),
            "{e}"
        );
        let e = err(&GOOD.replace("02:00:00:00:00:0a", "02:00:00:00:0a"));
        assert!(e.contains("not a MAC"), "{e}");
    }

    #[test]
    fn iface_name_too_long() {
        let e = err(&GOOD
            .replace("\"e1\"", "\"abcdefghijklmnop\"")
            .replace("c:e1", "c:abcdefghijklmnop"));
        assert!(e.contains("host[2].iface[0].name"), "{e}");
        assert!(e.contains("1..=15"), "{e}");
    }

    #[test]
    fn generated_port_name_too_long() {
        let text = GOOD
            .replace("name = \"t1\"", "name = \"longlab12\"")
            .replace("sw:7", "sw:65000");
        let e = err(&text);
        assert!(e.contains("generated port interface"), "{e}");
        assert!(e.contains("link[2].b"), "{e}");
    }

    #[test]
    fn tap_links_bind_the_switch_port_to_the_hosts_tap() {
        let text = GOOD.replace("b = \"sw:7\"\n", "b = \"sw:7\"\nkind = \"tap\"\n");
        let t = parse(&text).unwrap();
        let ports = t.switch_ports("sw").unwrap();
        assert_eq!(
            ports[&7],
            PortBinding {
                iface: "e1".into(),
                netns: Some("sb-t1-c".into()),
                kind: LinkKind::Tap,
            }
        );
        assert_eq!(ports[&132].kind, LinkKind::Veth);
        assert_eq!(ports[&132].netns, None);
        // A tap needs exactly one host end.
        let two_hosts = format!(
            "{}[[link]]\na = \"a:eth1\"\nb = \"b:eth1\"\nkind = \"tap\"\n",
            GOOD.replace(
                "  addrs = [\"10.0.0.1/24\"]\n",
                "  addrs = [\"10.0.0.1/24\"]\n  [[host.iface]]\n  name = \"eth1\"\n"
            )
            .replace(
                "  addrs = [\"10.0.0.2/24\", \"fd00::2/64\"]\n",
                "  addrs = [\"10.0.0.2/24\", \"fd00::2/64\"]\n  [[host.iface]]\n  name = \"eth1\"\n"
            )
        );
        let e = err(&two_hosts);
        assert!(e.contains("link[3].kind") && e.contains("one host"), "{e}");
        let e = err(&text.replace("kind = \"tap\"", "kind = \"gre\""));
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn bad_lab_name() {
        let e = err(&GOOD.replace("name = \"t1\"", "name = \"T-1\""));
        assert!(e.contains("/x/topo.toml:2:8: name:"), "{e}");
    }

    #[test]
    fn port_linked_twice_and_iface_unlinked() {
        let e = err(&GOOD.replace("sw:7", "sw:132"));
        assert!(
            e.contains("link[2].b") && e.contains("already linked by link[0].b"),
            "{e}"
        );
        let text = GOOD.replace("[[link]]\na = \"c:e1\"\nb = \"sw:7\"\n", "");
        let e = err(&text);
        assert!(
            e.contains("host[2].iface[0].name") && e.contains("not an end"),
            "{e}"
        );
    }

    #[test]
    fn undeclared_iface_and_bad_port() {
        let e = err(&GOOD.replace("a = \"a:eth0\"", "a = \"a:eth9\""));
        assert!(
            e.contains("link[0].a") && e.contains("no iface `eth9`"),
            "{e}"
        );
        let e = err(&GOOD.replace("sw:7", "sw:x7"));
        assert!(e.contains("link[2].b") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn route_and_neigh_checks() {
        let e = err(&GOOD.replace("via = \"10.0.0.254\"", "dev = \"eth7\""));
        assert!(e.contains("host[0].route[0].dev"), "{e}");
        let e = err(&GOOD.replace("dev = \"eth0\"", "dev = \"eth1\""));
        assert!(e.contains("host[0].neigh[0].dev"), "{e}");
        let e = err(&GOOD.replace("dst = \"default\"", "dst = \"10.1.0.0\""));
        assert!(
            e.contains("host[0].route[0].dst") && e.contains("CIDR"),
            "{e}"
        );
    }

    #[test]
    fn process_and_api_checks() {
        let e = err(&GOOD.replace("node = \"a\"", "node = \"sw\""));
        assert!(e.contains("process[0].node"), "{e}");
        let e = err(&GOOD.replace("127.0.0.1:5000", "localhost"));
        assert!(e.contains("switch[0].api"), "{e}");
    }

    #[test]
    fn several_switches_get_distinct_prefixes() {
        let text = r#"
name = "m"
[[switch]]
name = "s1"
[[switch]]
name = "s2"
[[link]]
a = "s1:1"
b = "s2:1"
"#;
        let t = parse(text).unwrap();
        assert_eq!(t.switch_port_ifaces("s1").unwrap()[&1], "sbm-1.1");
        assert_eq!(t.switch_port_ifaces("s2").unwrap()[&1], "sbm-2.1");
    }

    #[test]
    fn example_ecmper_topology_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ecmper/topology.toml");
        let t = Topology::load(&path).unwrap();
        assert_eq!(t.name, "ecmp");
        let ports = t.switch_port_ifaces("sw").unwrap();
        assert_eq!(
            ports.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(ports[&0], "sbecmp-0");
        for n in 1..=4 {
            let h = t.host(&format!("ns{n}")).unwrap();
            assert_eq!(h.ifaces[0].addrs, vec![format!("10.0.0.{n}/24")]);
            assert_eq!(
                h.setup[0],
                ["ip", "addr", "add", "10.0.10.0/32", "dev", "lo"]
            );
        }
        assert_eq!(
            t.host("ns99").unwrap().ifaces[0].mac.as_deref(),
            Some("02:03:04:05:06:99")
        );
    }

    #[test]
    fn example_p4containerflow_topology_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/p4containerflow/topology.toml");
        let t = Topology::load(&path).unwrap();
        assert_eq!(t.name, "p4cf");
        let ports = t.switch_ports("sw").unwrap();
        assert_eq!(
            ports.keys().copied().collect::<Vec<_>>(),
            vec![64, 132, 140, 148]
        );
        assert_eq!(ports[&140].iface, "sbp4cf-140");
        // The CPU port is the TAP in host `cpu`, whose kernel side holds 192.168.12.1.
        assert_eq!(ports[&64].kind, LinkKind::Tap);
        assert_eq!(ports[&64].netns.as_deref(), Some("sb-p4cf-cpu"));
        assert_eq!(
            t.host("cpu").unwrap().ifaces[0].addrs,
            vec!["192.168.12.1/24"]
        );
        let lakewood = t.host("lakewood").unwrap();
        assert_eq!(lakewood.ifaces[0].addrs, vec!["192.168.12.2/24"]);
        assert_eq!(lakewood.ifaces[0].mac.as_deref(), Some("02:42:c0:a8:0c:02"));
        let loveland = t.host("loveland").unwrap();
        assert!(loveland.ifaces[0].addrs.is_empty());
        assert_eq!(loveland.ifaces[0].mac.as_deref(), Some("02:42:c0:a8:0c:02"));
        let client = t.host("client").unwrap();
        assert_eq!(client.neighs[0].ip, "192.168.12.2");
        assert_eq!(
            t.switch("sw").unwrap().api.as_deref(),
            Some("127.0.0.1:5000")
        );
        assert!(
            t.switch("sw")
                .unwrap()
                .config
                .as_ref()
                .unwrap()
                .ends_with("switch.toml")
        );
    }
}
