//! Schema-declared, P4-style match-action tables with lock-free (RCU) publish.
//!
//! - A [`TableSchema`] declares key fields (exact / lpm / ternary, 1..=128 bits), actions with
//!   typed parameters, a default action and a size limit, close to a P4Info table.
//! - A [`Table`] stores entries in a structure fitted to its match kinds ([`StorageKind`]):
//!   one hash map for all-exact keys, a hash map per prefix length (probed longest-first, only
//!   over lengths present) for one lpm field, a priority-ordered value/mask list for ternary.
//! - Writers ([`Table::insert`], [`Table::apply`], ...) build the next [`TableVersion`] and
//!   publish it atomically; a batch is all-or-nothing. Readers take [`Table::snapshot`] /
//!   [`Table::load`] and never block.
//! - Counting: [`TableVersion::lookup_counted`] bumps the hit entry's packets/bytes and the
//!   table's hits/misses ([`Table::stats`]); [`TableVersion::lookup`] counts nothing.
//! - A table may be declared with an action selector ([`Table::with_selector`],
//!   [`SelectorSchema`]): its entries then point at groups of action-profile members, and
//!   the data plane picks a member by its own hash ([`TableVersion::select`]).
//! - [`EntryJson`] is the JSON/TOML edge used by the REST API and config files.
//!
//! ```
//! use tables::*;
//! let schema = TableSchema {
//!     name: "ipv4_lpm".into(),
//!     keys: vec![KeyField::lpm("dst_addr", 32)],
//!     actions: vec![
//!         ActionSchema::new("forward", vec![ParamSchema::new("port", 9)]),
//!         ActionSchema::new("drop", vec![]),
//!     ],
//!     default_action: ActionCall::new(ActionId(1), []),
//!     const_default: false,
//!     size: 1024,
//! };
//! let t = Table::new(schema).unwrap();
//! let e: EntryJson = serde_json::from_str(
//!     r#"{"key": {"dst_addr": "10.0.0.0/8"}, "action": "forward", "params": {"port": 3}}"#,
//! ).unwrap();
//! t.insert(t.entry_from_json(&e).unwrap()).unwrap();
//! let snap = t.snapshot();
//! let hit = snap.lookup_counted(&[0x0a01_0203], 64);
//! assert_eq!(hit.action().params[0], 3);
//! assert_eq!(t.stats().hits, 1);
//! ```

mod entry;
mod error;
mod index;
mod json;
mod registry;
mod schema;
mod selector;
mod table;

#[cfg(test)]
mod tests;

pub use entry::{Entry, EntryCounters, EntrySpec, FieldMatch, Op};
pub use error::{Result, TableError};
pub use json::{
    EntryJson, GROUP_REF, GroupJson, MEMBER_REF, MemberJson, format_match, format_value,
    match_to_json, parse_match, parse_value, parse_value_str, value_to_json,
};
pub use registry::Tables;
pub use schema::{
    ActionCall, ActionId, ActionSchema, KeyField, MAX_KEY_FIELDS, MatchKind, ParamSchema,
    ProfileRef, StorageKind, TableSchema,
};
pub use selector::{SelectorMode, SelectorSchema};
pub use table::{Lookup, Table, TableStats, TableVersion};

/// Guard type returned by [`Table::load`].
pub type VersionGuard = arc_swap::Guard<std::sync::Arc<TableVersion>>;
