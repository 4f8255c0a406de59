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

/// State shared by the worker(s) and the control plane.
#[derive(Debug)]
pub struct Switch {
    pub tables: Tables,
    pub ports: Vec<PortInfo>,
    pub pipeline: Vec<StageInfo>,
    pub initial_entries: Vec<InitialEntry>,
    /// Set to stop the workers.
    pub stop: Arc<AtomicBool>,
    pub started: Instant,
}

impl Switch {
    /// The port numbered `id`.
    pub fn port(&self, id: u16) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.id == id)
    }

    /// Empty every table (defaults stay as they are).
    pub fn clear_tables(&self) {
        for (_, t) in self.tables.iter() {
            t.clear();
        }
    }

    /// Install the configured initial entries, each table's entries as one atomic batch.
    /// On error nothing of the failing table is installed; the error names entry and field.
    pub fn install_initial_entries(&self) -> Result<(), tables::TableError> {
        self.load_entries(false)
    }

    /// Back to the configured state: each table is emptied, its default action reset
    /// and its configured entries installed in one atomic publish, so traffic never
    /// sees a table half restored.
    pub fn reinitialize(&self) -> Result<(), tables::TableError> {
        self.load_entries(true)
    }

    fn load_entries(&self, reset: bool) -> Result<(), tables::TableError> {
        let mut by_table: std::collections::BTreeMap<&str, Vec<Op>> = Default::default();
        if reset {
            for (name, t) in self.tables.iter() {
                let ops = by_table.entry(name).or_default();
                ops.push(Op::Clear);
                if !t.schema().const_default {
                    ops.push(Op::SetDefault(t.schema().default_action.clone()));
                }
            }
        }
        for ie in &self.initial_entries {
            let t = self.tables.get(&ie.table)?;
            by_table
                .entry(t.name())
                .or_default()
                .push(Op::Insert(t.entry_from_json(&ie.entry)?));
        }
        for (name, ops) in by_table {
            self.tables.get(name)?.apply(&ops)?;
        }
        Ok(())
    }
}
