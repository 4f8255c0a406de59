//! Action selectors: P4's `ActionSelector` (P4Runtime action profile with groups, BMv2's
//! `act_prof` with a selector), kept generic.
//!
//! A table declared with a [`SelectorSchema`] does not hold actions in its entries. Instead:
//! - **members**: `member_id -> ActionCall` (one of the table's own actions, checked against
//!   its schema), at most [`SelectorSchema::size`] of them (the action profile size);
//! - **groups**: `group_id -> [member_id]`, at most [`SelectorSchema::max_groups`] groups of
//!   at most [`SelectorSchema::max_group_size`] members each, no member twice in a group;
//! - **entries** refer to a group ([`ActionCall::group`]) or to one member
//!   ([`ActionCall::member`]) instead of naming an action.
//!
//! Members, groups and entries live in the same [`crate::TableVersion`], so a writer's batch
//! that adds a member, puts it in a group and points an entry at the group is published as
//! one version, and the packet path never sees an entry whose group is missing. References
//! are checked on every write (a member still in a group or a group still used by an entry
//! cannot be deleted), so every reference in a published version resolves.
//!
//! The lookup resolves a hit to the group's member actions
//! ([`crate::TableVersion::resolve`]); the caller hashes its own selector fields and picks one
//! ([`crate::TableVersion::select`], FAIR: `index = hash % members`). The hash is the
//! caller's because only it knows which header fields the P4 program feeds the selector.
//!
//! Profiles are small (hardware action profiles hold a few thousand members at most), so each
//! publish copies the member and group maps; lookups are one ordered-map probe per group.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TableError};
use crate::schema::ActionCall;

/// How a member is chosen from a group for a given hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectorMode {
    /// Tofino's FAIR mode: `index = hash % live members`, in the group's member order.
    /// (Every member of a group is live here: there is no port-status pruning.)
    #[default]
    Fair,
}

impl SelectorMode {
    /// Index into `n` members for `hash` (None when the group is empty).
    #[inline]
    pub fn pick(self, hash: u64, n: usize) -> Option<usize> {
        match self {
            SelectorMode::Fair => {
                if n == 0 {
                    None
                } else {
                    Some((hash % n as u64) as usize)
                }
            }
        }
    }
}

/// Declaration of a table's action selector (P4 `ActionSelector(hash, mode, size, ...)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorSchema {
    /// Header fields hashed to choose a member, in order (as in the P4 `selector` key fields).
    /// Informative: the data plane computes the hash.
    pub fields: Vec<String>,
    /// Name of the hash algorithm (e.g. "crc16"). Informative, as `fields`.
    pub hash: String,
    /// How the hash picks a member.
    #[serde(default)]
    pub mode: SelectorMode,
    /// Action profile size: the maximum number of members.
    pub size: usize,
    /// Maximum number of groups.
    pub max_groups: usize,
    /// Maximum number of members in one group.
    pub max_group_size: usize,
}

impl SelectorSchema {
    /// Checks that every limit is at least 1.
    pub fn validate(&self, table: &str) -> Result<()> {
        for (what, v) in [
            ("action profile size", self.size),
            ("max groups", self.max_groups),
            ("max group size", self.max_group_size),
        ] {
            if v == 0 {
                return Err(TableError::BadSelector {
                    table: table.to_owned(),
                    message: format!("{what} must be at least 1"),
                });
            }
        }
        Ok(())
    }
}

/// One group: its member ids in order and, resolved, their actions (what lookups return).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) members: Vec<u32>,
    pub(crate) actions: Vec<ActionCall>,
}

/// Members and groups of one published version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SelectorState {
    pub(crate) members: BTreeMap<u32, ActionCall>,
    pub(crate) groups: BTreeMap<u32, Group>,
}

impl SelectorState {
    /// Re-resolves the actions of every group that holds `member` (after a member modify).
    pub(crate) fn refresh_member(&mut self, member: u32) {
        let Some(action) = self.members.get(&member) else {
            return;
        };
        for g in self.groups.values_mut() {
            for (m, a) in g.members.iter().zip(g.actions.iter_mut()) {
                if *m == member {
                    *a = action.clone();
                }
            }
        }
    }

    /// Checks a group's member list against the schema and the members present, and resolves
    /// it.
    pub(crate) fn build_group(
        &self,
        table: &str,
        sel: &SelectorSchema,
        group: u32,
        members: &[u32],
    ) -> Result<Group> {
        if members.len() > sel.max_group_size {
            return Err(TableError::GroupTooLarge {
                table: table.to_owned(),
                group,
                size: members.len(),
                max: sel.max_group_size,
            });
        }
        let mut actions = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if members[..i].contains(m) {
                return Err(TableError::DuplicateGroupMember {
                    table: table.to_owned(),
                    group,
                    member: *m,
                });
            }
            let a = self
                .members
                .get(m)
                .ok_or_else(|| TableError::NoSuchMember {
                    table: table.to_owned(),
                    member: *m,
                })?;
            actions.push(a.clone());
        }
        Ok(Group {
            members: members.to_vec(),
            actions,
        })
    }

    /// The first group holding `member`, if any.
    pub(crate) fn group_of(&self, member: u32) -> Option<u32> {
        self.groups
            .iter()
            .find(|(_, g)| g.members.contains(&member))
            .map(|(id, _)| *id)
    }
}
