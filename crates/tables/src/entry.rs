//! Entries, their per-entry (direct) counters, and write operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::schema::ActionCall;

/// How one key field of an entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldMatch {
    /// Equal to the value.
    Exact(u128),
    /// Top `prefix_len` bits equal to `value` (whose other bits must be zero).
    Lpm { value: u128, prefix_len: u16 },
    /// `key & mask == value` (value bits outside the mask must be zero).
    Ternary { value: u128, mask: u128 },
}

impl FieldMatch {
    /// "exact", "lpm" or "ternary", for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            FieldMatch::Exact(_) => "exact",
            FieldMatch::Lpm { .. } => "lpm",
            FieldMatch::Ternary { .. } => "ternary",
        }
    }
}

/// What a client asks to install: a key, a priority and an action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntrySpec {
    /// One match per key field, in schema order.
    pub key: Vec<FieldMatch>,
    /// Only meaningful for ternary tables: higher wins; ties go to the earlier insert.
    /// Not part of the entry's identity (a key can be installed once, whatever the priority).
    #[serde(default)]
    pub priority: i32,
    /// Action invoked on a hit.
    pub action: ActionCall,
}

/// Direct counters of one entry. Shared (`Arc`) between versions of the table, so they survive
/// modify and every republish; bumped with relaxed atomics from the data path.
#[derive(Debug, Default)]
pub struct EntryCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl EntryCounters {
    /// Counts one packet of `bytes` bytes.
    #[inline]
    pub fn hit(&self, bytes: u64) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    /// (packets, bytes).
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
    /// Zeroes both counters.
    pub fn reset(&self) {
        self.packets.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }
}

/// An installed entry: its (canonical) spec and its counters.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry as installed, key in canonical form (see `TableSchema::canonical_key`).
    pub spec: EntrySpec,
    /// Direct counters, preserved across modify.
    pub counters: Arc<EntryCounters>,
    /// Insertion sequence number: ternary tie-break and dump order. Kept across modify.
    pub(crate) seq: u64,
}

impl Entry {
    /// The action to run on a hit.
    #[inline]
    pub fn action(&self) -> &crate::ActionCall {
        &self.spec.action
    }
}

/// One write in a batch (see `Table::apply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add an entry; fails if the key exists or the table is full.
    Insert(EntrySpec),
    /// Replace the action and priority of an existing key; counters are kept.
    Modify(EntrySpec),
    /// Remove the entry with this key.
    Delete(Vec<FieldMatch>),
    /// Change the action taken on a miss; fails on a const default.
    SetDefault(crate::ActionCall),
    /// Remove every entry (the default action stays; members and groups stay). With inserts
    /// after it in the same batch, this replaces the table's contents atomically.
    Clear,
    /// Add action-profile member `id` running `action` (a direct action of the table).
    /// Selector tables only; fails if the id exists or the profile is full.
    InsertMember { id: u32, action: ActionCall },
    /// Change the action of member `id`; groups holding it pick up the change in the same
    /// publish.
    ModifyMember { id: u32, action: ActionCall },
    /// Remove member `id`; fails while a group or an entry refers to it.
    DeleteMember(u32),
    /// Add selector group `id` with these members (each must exist, at most max group size).
    InsertGroup { id: u32, members: Vec<u32> },
    /// Replace the member list of group `id`.
    ModifyGroup { id: u32, members: Vec<u32> },
    /// Remove group `id`; fails while an entry refers to it.
    DeleteGroup(u32),
    /// Remove every group; fails while an entry refers to one (put [`Op::Clear`] first).
    ClearGroups,
    /// Remove every member; fails while a group or an entry refers to one.
    ClearMembers,
}
