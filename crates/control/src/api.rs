//! JSON documents of the native API, shared by the server (which writes them) and the
//! [`crate::client::Client`] (which reads them), so the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tables::{EntryJson, GroupJson, MatchKind, MemberJson, SelectorMode, Table};

/// One table in `GET /api/v1/tables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    pub name: String,
    /// Maximum number of entries.
    pub size: usize,
    /// Entries installed now.
    pub entries: usize,
    /// Lookups that matched an entry.
    pub hits: u64,
    /// Lookups that fell to the default action.
    pub misses: u64,
    /// Publish epoch: bumps on every write, so a client can tell whether anything changed.
    pub epoch: u64,
}

/// A key field of a table schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    pub bits: u16,
    pub match_kind: MatchKind,
}

/// A parameter of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    pub bits: u16,
}

/// An action a table offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionInfo {
    pub name: String,
    pub params: Vec<ParamInfo>,
}

/// An action call by name, as `PUT .../default` takes it and the schema shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionJson {
    pub action: String,
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// `GET /api/v1/tables/{name}`: the schema plus live numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: String,
    pub keys: Vec<KeyInfo>,
    pub actions: Vec<ActionInfo>,
    /// The default action now in force (it may differ from the schema's initial one).
    pub default_action: ActionJson,
    /// True when the default action cannot be changed.
    pub const_default: bool,
    pub size: usize,
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub epoch: u64,
    /// The action selector with its members and groups (tables declared with one only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorInfo>,
}

/// The action selector of a table in `GET /api/v1/tables/{name}`: its declaration plus the
/// members and groups installed now (same version as the entry count next to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectorInfo {
    /// Hashed header fields, in order.
    pub fields: Vec<String>,
    /// Hash algorithm (e.g. "crc16").
    pub hash: String,
    pub mode: SelectorMode,
    /// Action profile size (maximum members).
    pub size: usize,
    pub max_groups: usize,
    pub max_group_size: usize,
    pub members: Vec<MemberJson>,
    pub groups: Vec<GroupJson>,
}

impl SelectorInfo {
    /// Declaration and current contents of `t`'s selector, if it has one.
    pub fn of(t: &Table) -> Option<SelectorInfo> {
        let v = t.snapshot();
        let s = v.selector_schema()?;
        Some(SelectorInfo {
            fields: s.fields.clone(),
            hash: s.hash.clone(),
            mode: s.mode,
            size: s.size,
            max_groups: s.max_groups,
            max_group_size: s.max_group_size,
            members: v
                .members()
                .iter()
                .map(|(id, a)| t.member_to_json(*id, a))
                .collect(),
            groups: v
                .groups()
                .into_iter()
                .map(|(id, members)| GroupJson { id, members })
                .collect(),
        })
    }
}

/// One entry in `GET /api/v1/tables/{name}/entries`: the entry as installed (canonical key)
/// and its direct counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryInfo {
    #[serde(flatten)]
    pub entry: EntryJson,
    pub packets: u64,
    pub bytes: u64,
}

/// Body of `DELETE /api/v1/tables/{name}/entries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteJson {
    pub key: Map<String, Value>,
}

/// Kind of one write in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOpKind {
    Insert,
    Modify,
    Delete,
}

/// One write of `POST /api/v1/tables/{name}/entries/batch`. `action` (or, for a table with
/// an action selector, `group` / `member`) is required for insert and modify, ignored (may
/// be omitted) for delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOp {
    pub op: BatchOpKind,
    pub key: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub priority: i32,
    /// Selector tables: the group the entry points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// Selector tables: the member the entry points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u32>,
}

/// Body of the batch endpoint: applied all-or-nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchJson {
    pub ops: Vec<BatchOp>,
}

/// Counters of a port at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCountersJson {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the backend could not send.
    pub tx_dropped: u64,
    /// Frames the backend lost before the pipeline (ring overruns, oversize, read errors).
    #[serde(default)]
    pub rx_errors: u64,
    /// Send failures counted by the backend.
    #[serde(default)]
    pub tx_errors: u64,
    /// Packets received on this port and dropped by the pipeline (sum of `drops`).
    pub rx_dropped: u64,
    /// Non-zero pipeline drops by reason name.
    pub drops: BTreeMap<String, u64>,
}

/// `GET /api/v1/ports/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortJson {
    pub id: u16,
    pub backend: String,
    pub target: String,
    pub counters: PortCountersJson,
}

/// One stage of `GET /api/v1/pipeline`, in pipeline order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageJson {
    pub name: String,
    pub tables: Vec<String>,
}

impl TableSummary {
    /// Live summary of `t`.
    pub fn of(t: &Table) -> TableSummary {
        let v = t.snapshot();
        let st = t.stats();
        TableSummary {
            name: t.name().to_owned(),
            size: t.schema().size,
            entries: v.len(),
            hits: st.hits,
            misses: st.misses,
            epoch: v.epoch(),
        }
    }
}

impl TableInfo {
    /// Schema and live numbers of `t`.
    pub fn of(t: &Table) -> TableInfo {
        let s = t.schema();
        let v = t.snapshot();
        let st = t.stats();
        let (action, params) = t.action_to_json(v.default_action());
        TableInfo {
            name: s.name.clone(),
            keys: s
                .keys
                .iter()
                .map(|k| KeyInfo {
                    name: k.name.clone(),
                    bits: k.bits,
                    match_kind: k.kind,
                })
                .collect(),
            actions: s
                .actions
                .iter()
                .map(|a| ActionInfo {
                    name: a.name.clone(),
                    params: a
                        .params
                        .iter()
                        .map(|p| ParamInfo {
                            name: p.name.clone(),
                            bits: p.bits,
                        })
                        .collect(),
                })
                .collect(),
            default_action: ActionJson { action, params },
            const_default: s.const_default,
            size: s.size,
            entries: v.len(),
            hits: st.hits,
            misses: st.misses,
            epoch: v.epoch(),
            selector: SelectorInfo::of(t),
        }
    }
}

impl PortJson {
    /// The API view of a switch port, counters read now.
    pub fn of(p: &dataplane::PortInfo) -> PortJson {
        let c = p.counters.snapshot();
        PortJson {
            id: p.id,
            backend: p.backend.to_owned(),
            target: p.target.clone(),
            counters: PortCountersJson {
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                tx_dropped: c.tx_dropped,
                rx_errors: c.rx_errors,
                tx_errors: c.tx_errors,
                rx_dropped: c.rx_dropped,
                drops: c
                    .drops
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            },
        }
    }
}
