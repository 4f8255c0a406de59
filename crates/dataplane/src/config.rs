//! The switch configuration file (TOML): ports, pipeline, stage options,
//! initial table entries, API address, engine options.
//!
//! ```toml
//! [api]
//! listen = "127.0.0.1:5000"
//!
//! [[port]]
//! id = 140
//! backend = "afpacket"      # afpacket | tap | pcap
//! iface = "veth140"
//!
//! [pipeline]
//! stages = ["arp_forward", "forward"]
//!
//! [stage.arp_forward]
//! flood_gratuitous = true
//!
//! [[entry]]
//! table = "forward"
//! key = { "hdr.ipv4.dst_addr" = "192.168.12.2" }
//! action = "set_egress_port"
//! params = { port = 140 }
//! ```
//!
//! Tables with an action selector (the load balancer's `node_selector`) take members and
//! groups, installed before the entries (and restored by `/reinitialize` in that order):
//!
//! ```toml
//! [[member]]                 # action-profile member: id -> one of the table's actions
//! table = "node_selector"
//! id = 1
//! action = "set_rewrite_dst"
//! params = { new_dst = "192.168.12.2" }
//!
//! [[group]]                  # selector group: id -> member ids (hash order)
//! table = "node_selector"
//! id = 1
//! members = [1]
//!
//! [[entry]]                  # an entry of such a table names `group` (or `member`)
//! table = "node_selector"    # instead of `action`/`params`
//! key = { "hdr.ipv4.dst_addr" = "192.168.12.10" }
//! group = 1
//! ```
//! A wrong config fails at start with the file, line and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::switch::{InitialEntry, InitialGroup, InitialMember};

/// Why a configuration could not be loaded or built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}: {field}: {message}")]
    Field {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// Where the REST API listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:5000".into()
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
        }
    }
}

/// Port backend kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Afpacket,
    Tap,
    Pcap,
}

/// One `[[port]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The switch's port number (the seeds use 132, 140, 148, 64 ...).
    pub id: u16,
    pub backend: Backend,
    /// Interface name (afpacket, tap).
    pub iface: Option<String>,
    /// tap: create the device (default) or attach to an existing persistent one.
    #[serde(default = "yes")]
    pub create: bool,
    /// tap: the network namespace (a name under /run/netns) that holds the device, so its
    /// kernel side can live in a lab host (the CPU port's kernel stack and NAT) while the
    /// switch stays in its own namespace. Default: the switch's namespace.
    pub netns: Option<String>,
    /// afpacket: receive ring, "v3" (default: batched, up to 1 ms of added latency)
    /// or "v2" (per frame: lowest latency, more CPU per frame).
    #[serde(default)]
    pub ring: crate::port::afpacket::RxRing,
    /// afpacket: let the kernel's stack keep handling the port's frames too
    /// (default false: a tc ingress drop after the switch's tap stops it).
    #[serde(default)]
    pub keep_kernel_stack: bool,
    /// pcap: frames to receive, read from this file.
    pub input: Option<PathBuf>,
    /// pcap: frames transmitted, written to this file.
    pub output: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Stage names in order.
    pub stages: Vec<String>,
}

/// `[engine]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Spin instead of sleeping when idle (lowest latency, one core at 100 %).
    #[serde(default)]
    pub busy_poll: bool,
    /// Stop once every input is exhausted (default: true when every port is a pcap port).
    pub stop_at_eof: Option<bool>,
    /// Run the worker thread SCHED_FIFO at this priority (1-99). When the worker shares
    /// its core with the kernel thread that fills its AF_PACKET rings, this keeps that
    /// thread from receiving frames the worker has no time for (at saturation nearly
    /// half of them, all dropped at the full ring). Not with `busy_poll`, which would
    /// starve everything else on the core.
    pub realtime_priority: Option<u8>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(rename = "port", default)]
    pub ports: Vec<toml::Spanned<PortConfig>>,
    pub pipeline: PipelineConfig,
    /// Options per stage name.
    #[serde(default)]
    pub stage: BTreeMap<String, toml::Value>,
    #[serde(rename = "entry", default)]
    pub entries: Vec<toml::Spanned<InitialEntry>>,
    /// Action-profile members of tables with an action selector (`[[member]]`).
    #[serde(rename = "member", default)]
    pub members: Vec<toml::Spanned<InitialMember>>,
    /// Selector groups (`[[group]]`).
    #[serde(rename = "group", default)]
    pub groups: Vec<toml::Spanned<InitialGroup>>,
    #[serde(default)]
    pub engine: EngineConfig,
    /// The file this was read from (for error messages and relative paths).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    text: String,
}

impl SwitchConfig {
    /// Read and check the syntax of a config file.
    pub fn load(path: &Path) -> Result<SwitchConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<SwitchConfig, ConfigError> {
        let mut cfg: SwitchConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                file: path.display().to_string(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        cfg.file = path.to_path_buf();
        cfg.text = text.to_string();
        cfg.check_ports()?;
        cfg.check_engine()?;
        Ok(cfg)
    }

    /// An error about `field`, located at the byte offset `at` of the file.
    pub fn field_error(
        &self,
        at: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Field {
            file: self.file.display().to_string(),
            line: line_col(&self.text, at).0,
            field: field.into(),
            message: message.into(),
        }
    }

    /// Byte offset of the first line starting with `prefix` (after indentation), for
    /// errors about parts serde does not give spans for; 0 when absent.
    pub fn offset_of_line(&self, prefix: &str) -> usize {
        let mut at = 0;
        for line in self.text.split_inclusive('\n') {
            if line.trim_start().starts_with(prefix) {
                return at;
            }
            at += line.len();
        }
        0
    }

    /// A path from the config, relative to the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// True when the engine should stop once inputs are exhausted.
    pub fn stop_at_eof(&self) -> bool {
        self.engine.stop_at_eof.unwrap_or_else(|| {
            !self.ports.is_empty()
                && self
                    .ports
                    .iter()
                    .all(|p| p.get_ref().backend == Backend::Pcap)
        })
    }

    fn check_engine(&self) -> Result<(), ConfigError> {
        if let Some(p) = self.engine.realtime_priority {
            let at = self.offset_of_line("realtime_priority");
            if !(1..=99).contains(&p) {
                return Err(self.field_error(
                    at,
                    "engine.realtime_priority",
                    format!("{p} is not in 1..=99"),
                ));
            }
            if self.engine.busy_poll {
                return Err(self.field_error(
                    at,
                    "engine.realtime_priority",
                    "a real-time worker that busy-polls would starve its core; drop busy_poll",
                ));
            }
        }
        Ok(())
    }

    fn check_ports(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, sp) in self.ports.iter().enumerate() {
            let p = sp.get_ref();
            let at = sp.span().start;
            if !seen.insert(p.id) {
                return Err(self.field_error(
                    at,
                    format!("port[{i}].id"),
                    format!("port {} is declared twice", p.id),
                ));
            }
            match p.backend {
                Backend::Afpacket | Backend::Tap if p.iface.as_deref().unwrap_or("").is_empty() => {
                    return Err(self.field_error(
                        at,
                        format!("port[{i}].iface"),
                        "required for this backend",
                    ));
                }
                Backend::Pcap if p.input.is_none() && p.output.is_none() => {
                    return Err(self.field_error(
                        at,
                        format!("port[{i}].input"),
                        "a pcap port needs input, output or both",
                    ));
                }
                _ => {}
            }
            if let Some(name) = p.iface.as_ref().filter(|n| n.len() > 15) {
                return Err(self.field_error(
                    at,
                    format!("port[{i}].iface"),
                    format!("'{name}' is longer than 15 characters"),
                ));
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
