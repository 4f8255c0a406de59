//! The shared face of a running switch: what the control plane reads and writes.
//!
//! The worker owns ports and stages; the [`Switch`] holds what both sides share:
//! the tables (written by the control plane, read by stages through snapshots),
//! each port's counters, the pipeline's description and the stop flag.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tables::{EntryJson, Op, Tables};

use crate::counters::PortCounters;

/// A port as the control plane sees it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub id: u16,
    pub backend: &'static str,
    pub target: String,
    pub counters: Arc<PortCounters>,
}

/// A stage as the control plane sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageInfo {
    pub name: String,
    pub tables: Vec<String>,
}

/// An entry the configuration installs at start (and `/reinitialize` restores).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct InitialEntry {
    pub table: String,
    #[serde(flatten)]
    pub entry: EntryJson,
}

/// An action-profile member the configuration installs (`[[member]]`), in a table with an
/// action selector.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    pub table: String,
    pub id: u32,
    pub action: String,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A selector group the configuration installs (`[[group]]`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitialGroup {
    pub table: String,
    pub id: u32,
    #[serde(default)]
    pub members: Vec<u32>,
}

/// State shared by the worker(s) and the control plane.
#[derive(Debug)]
pub struct Switch {
    pub tables: Tables,
    pub ports: Vec<PortInfo>,
    pub pipeline: Vec<StageInfo>,
    pub initial_entries: Vec<InitialEntry>,
    /// Configured action-profile members, installed before groups and entries.
    pub initial_members: Vec<InitialMember>,
    /// Configured selector groups, installed after members, before entries.
    pub initial_groups: Vec<InitialGroup>,
    /// `[stage.<name>]` options as configured, for the control plane (e.g. the load
    /// balancer's `service_port`).
    pub stage_options: std::collections::BTreeMap<String, toml::Value>,
    /// Set to stop the workers.
    pub stop: Arc<AtomicBool>,
    pub started: Instant,
}

impl Switch {
    /// The port numbered `id`.
    pub fn port(&self, id: u16) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.id == id)
    }

    /// Empty every table (defaults stay as they are): entries, then selector groups, then
    /// members, each table in one publish.
    pub fn clear_tables(&self) {
        for (_, t) in self.tables.iter() {
            t.clear_all();
        }
    }

    /// Install the configured initial entries, each table's entries as one atomic batch.
    /// On error nothing of the failing table is installed; the error names entry and field.
    pub fn install_initial_entries(&self) -> Result<(), tables::TableError> {
        self.load_entries(false)
    }

    /// Back to the configured state: each table is emptied (entries, groups, members), its
    /// default action reset and its configured members, groups and entries installed in one
    /// atomic publish, so traffic never sees a table half restored.
    pub fn reinitialize(&self) -> Result<(), tables::TableError> {
        self.load_entries(true)
    }

    fn load_entries(&self, reset: bool) -> Result<(), tables::TableError> {
        // Per table: [reset ops, members, groups, entries], applied as one batch in that
        // order (what an entry refers to exists before it).
        let mut by_table: std::collections::BTreeMap<&str, [Vec<Op>; 4]> = Default::default();
        if reset {
            for (name, t) in self.tables.iter() {
                let ops = &mut by_table.entry(name).or_default()[0];
                ops.push(Op::Clear);
                if t.selector_schema().is_some() {
                    ops.extend([Op::ClearGroups, Op::ClearMembers]);
                }
                if !t.schema().const_default {
                    ops.push(Op::SetDefault(t.schema().default_action.clone()));
                }
            }
        }
        for m in &self.initial_members {
            let t = self.tables.get(&m.table)?;
            let (id, action) = t.member_from_json(&tables::MemberJson {
                id: m.id,
                action: m.action.clone(),
                params: m.params.clone(),
            })?;
            by_table.entry(t.name()).or_default()[1].push(Op::InsertMember { id, action });
        }
        for g in &self.initial_groups {
            let t = self.tables.get(&g.table)?;
            by_table.entry(t.name()).or_default()[2].push(Op::InsertGroup {
                id: g.id,
                members: g.members.clone(),
            });
        }
        for ie in &self.initial_entries {
            let t = self.tables.get(&ie.table)?;
            by_table.entry(t.name()).or_default()[3]
                .push(Op::Insert(t.entry_from_json(&ie.entry)?));
        }
        for (name, ops) in by_table {
            let ops: Vec<Op> = ops.into_iter().flatten().collect();
            self.tables.get(name)?.apply(&ops)?;
        }
        Ok(())
    }
}
