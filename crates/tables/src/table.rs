//! A table: the published version (read lock-free by the data plane) plus the writer side.
//!
//! Publishing is RCU style: writers serialize on a mutex, clone the current [`TableVersion`]
//! (cheap: the maps sit behind `Arc` and are copied only on first write), apply a batch,
//! validate every op, and `ArcSwap::store` the result as the next version. Readers load the
//! current version without locking and keep whatever version they loaded for as long as they
//! hold it, so they never see half a batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Guard};
use serde::Serialize;

use crate::entry::{Entry, EntryCounters, EntrySpec, FieldMatch, Op};
use crate::error::{Result, TableError};
use crate::index::Index;
use crate::schema::{ActionCall, ProfileRef, TableSchema};
use crate::selector::{SelectorSchema, SelectorState};

/// Table-wide lookup counters, padded so hits and misses do not share a cache line.
#[derive(Debug, Default)]
struct TableCounters {
    hits: PaddedCounter,
    misses: PaddedCounter,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicU64);

/// Lookup totals of a table, counted by [`TableVersion::lookup_counted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TableStats {
    /// Lookups that matched an entry.
    pub hits: u64,
    /// Lookups that fell to the default action.
    pub misses: u64,
}

/// Result of a counted lookup: the entry hit, or the default action on a miss.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// An entry matched (its counters have been bumped).
    Hit(&'a Entry),
    /// No entry matched; run the default action.
    Miss(&'a ActionCall),
}

impl<'a> Lookup<'a> {
    /// The action to run, hit or miss.
    #[inline]
    pub fn action(&self) -> &'a ActionCall {
        match self {
            Lookup::Hit(e) => &e.spec.action,
            Lookup::Miss(a) => a,
        }
    }
    /// True on a hit.
    #[inline]
    pub fn is_hit(&self) -> bool {
        matches!(self, Lookup::Hit(_))
    }
    /// The entry, on a hit.
    #[inline]
    pub fn entry(&self) -> Option<&'a Entry> {
        match self {
            Lookup::Hit(e) => Some(e),
            Lookup::Miss(_) => None,
        }
    }
}

/// One immutable, published state of a table. Obtained from [`Table::snapshot`] or
/// [`Table::load`]; what the data plane matches against.
#[derive(Debug)]
pub struct TableVersion {
    epoch: u64,
    schema: Arc<TableSchema>,
    default_action: ActionCall,
    index: Index,
    len: usize,
    stats: Arc<TableCounters>,
    selector: Option<Arc<SelectorState>>,
    selector_schema: Option<Arc<SelectorSchema>>,
}

impl TableVersion {
    /// Hot path: the entry matching `key` (one `u128` per key field, in schema order).
    /// No allocation, no lock. Bits above a field's width are ignored. A key with the wrong
    /// number of fields matches nothing. Does not count; see [`Self::lookup_counted`].
    #[inline]
    pub fn lookup(&self, key: &[u128]) -> Option<&Entry> {
        if key.len() != self.schema.keys.len() {
            return None;
        }
        self.index.lookup(key)
    }

    /// Hot path with counting: on a hit bumps the entry's packets/bytes and the table's hits,
    /// on a miss the table's misses. This is the one place table stats are counted.
    #[inline]
    pub fn lookup_counted(&self, key: &[u128], bytes: u64) -> Lookup<'_> {
        match self.lookup(key) {
            Some(e) => {
                e.counters.hit(bytes);
                self.stats.hits.0.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(e)
            }
            None => {
                self.stats.misses.0.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(&self.default_action)
            }
        }
    }

    /// Action taken on a miss.
    #[inline]
    pub fn default_action(&self) -> &ActionCall {
        &self.default_action
    }

    /// Publish epoch of this version (0 for a fresh table, +1 per publish).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The table's schema.
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// Every entry, in insertion order.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let mut v = Vec::with_capacity(self.len);
        self.index.for_each(|e| v.push(Arc::clone(e)));
        v.sort_by_key(|e| e.seq);
        v
    }

    /// Prefix lengths present in an lpm table, longest first (empty for other kinds). Each
    /// lookup probes at most these.
    pub fn prefix_lengths(&self) -> Vec<u16> {
        self.index.prefix_lengths()
    }

    /// Hot path: the actions `call` stands for in this version. A direct action is itself; a
    /// member reference is that member's action; a group reference is its members' actions in
    /// group order (empty for an empty group). References that do not resolve (impossible in
    /// a published version, which is checked on write) give an empty slice.
    #[inline]
    pub fn resolve<'a>(&'a self, call: &'a ActionCall) -> &'a [ActionCall] {
        match (call.profile_ref(), self.selector.as_deref()) {
            (None, _) => std::slice::from_ref(call),
            (Some(_), None) => &[],
            (Some(ProfileRef::Member(m)), Some(sel)) => {
                sel.members.get(&m).map_or(&[], std::slice::from_ref)
            }
            (Some(ProfileRef::Group(g)), Some(sel)) => {
                sel.groups.get(&g).map_or(&[], |g| g.actions.as_slice())
            }
        }
    }

    /// Hot path: the one action `call` yields for a packet whose selector fields hash to
    /// `hash`: [`Self::resolve`], then the selector mode's pick (FAIR: `hash % members`).
    /// None for an empty group.
    #[inline]
    pub fn select<'a>(&'a self, call: &'a ActionCall, hash: u64) -> Option<&'a ActionCall> {
        let actions = self.resolve(call);
        match actions.len() {
            0 => None,
            1 => actions.first(),
            n => {
                let mode = self.selector_schema.as_deref().map(|s| s.mode);
                let i = mode.unwrap_or_default().pick(hash, n)?;
                actions.get(i)
            }
        }
    }

    /// The action selector's declaration, if the table has one.
    pub fn selector_schema(&self) -> Option<&SelectorSchema> {
        self.selector_schema.as_deref()
    }

    /// Action-profile members `(id, action)` in id order (empty without a selector).
    pub fn members(&self) -> Vec<(u32, ActionCall)> {
        self.selector
            .as_deref()
            .map(|s| s.members.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    /// Selector groups `(id, member ids)` in id order (empty without a selector).
    pub fn groups(&self) -> Vec<(u32, Vec<u32>)> {
        self.selector
            .as_deref()
            .map(|s| {
                s.groups
                    .iter()
                    .map(|(k, g)| (*k, g.members.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The action of member `id`.
    pub fn member(&self, id: u32) -> Option<&ActionCall> {
        self.selector.as_deref()?.members.get(&id)
    }

    /// The member ids of group `id`.
    pub fn group(&self, id: u32) -> Option<&[u32]> {
        Some(
            self.selector
                .as_deref()?
                .groups
                .get(&id)?
                .members
                .as_slice(),
        )
    }
}

/// Writer-only state, guarded by the writer mutex.
#[derive(Debug, Default)]
struct WriterState {
    next_seq: u64,
}

/// A match-action table. `Send + Sync`; share it as `Arc<Table>`.
#[derive(Debug)]
pub struct Table {
    schema: Arc<TableSchema>,
    selector_schema: Option<Arc<SelectorSchema>>,
    current: ArcSwap<TableVersion>,
    writer: Mutex<WriterState>,
    stats: Arc<TableCounters>,
}

/// The version being built by a batch.
struct Work {
    default_action: ActionCall,
    index: Index,
    len: usize,
    next_seq: u64,
    selector: Option<SelectorState>,
}

impl Table {
    /// Validates `schema` and creates an empty table (epoch 0).
    pub fn new(schema: TableSchema) -> Result<Table> {
        Self::build(schema, None)
    }

    /// A table whose entries refer to groups or members of an action selector (P4
    /// `implementation = ActionSelector(...)`) instead of naming actions; see
    /// [`crate::SelectorSchema`]. Members and groups start empty.
    pub fn with_selector(schema: TableSchema, selector: SelectorSchema) -> Result<Table> {
        selector.validate(&schema.name)?;
        Self::build(schema, Some(selector))
    }

    fn build(schema: TableSchema, selector: Option<SelectorSchema>) -> Result<Table> {
        schema.validate()?;
        let selector_schema = selector.map(Arc::new);
        let schema = Arc::new(schema);
        let stats = Arc::new(TableCounters::default());
        let v = TableVersion {
            epoch: 0,
            default_action: schema.default_action.clone(),
            index: Index::new(schema.storage_kind(), &schema.keys),
            len: 0,
            schema: Arc::clone(&schema),
            stats: Arc::clone(&stats),
            selector: selector_schema
                .as_ref()
                .map(|_| Arc::new(SelectorState::default())),
            selector_schema: selector_schema.clone(),
        };
        Ok(Table {
            schema,
            selector_schema,
            current: ArcSwap::from_pointee(v),
            writer: Mutex::new(WriterState::default()),
            stats,
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// The current version as an owned `Arc` (one atomic increment). Lock-free; never waits
    /// for writers. Hold it as long as needed: later publishes do not change it.
    pub fn snapshot(&self) -> Arc<TableVersion> {
        self.current.load_full()
    }

    /// The current version as an `arc_swap` guard: cheaper than [`Self::snapshot`] for a
    /// short-lived per-batch borrow on the data path; do not keep many alive per thread.
    pub fn load(&self) -> Guard<Arc<TableVersion>> {
        self.current.load()
    }

    /// Installs a new entry. Errors: duplicate key, table full, bad key or action.
    pub fn insert(&self, e: EntrySpec) -> Result<()> {
        self.commit(&[Op::Insert(e)], false)
    }

    /// Changes the action (and priority) of an existing entry; its counters are kept.
    pub fn modify(&self, e: EntrySpec) -> Result<()> {
        self.commit(&[Op::Modify(e)], false)
    }

    /// Removes the entry with this key.
    pub fn delete(&self, key: &[FieldMatch]) -> Result<()> {
        self.commit(&[Op::Delete(key.to_vec())], false)
    }

    /// Changes the default action (refused when the schema marks it const).
    pub fn set_default(&self, a: ActionCall) -> Result<()> {
        self.commit(&[Op::SetDefault(a)], false)
    }

    /// Applies `ops` all-or-nothing and publishes them as ONE new version. On failure nothing
    /// changes (not even the epoch) and the error is [`TableError::Batch`] with the failing
    /// op's index. An empty batch publishes nothing.
    pub fn apply(&self, ops: &[Op]) -> Result<()> {
        self.commit(ops, true)
    }

    /// Removes every entry (the default action stays; members and groups stay).
    pub fn clear(&self) {
        // Clear cannot fail; ignore the impossible error rather than panic.
        let _ = self.commit(&[Op::Clear], false);
    }

    /// Removes every entry, then (selector tables) every group, then every member, in one
    /// publish: the reverse of the order they depend on each other.
    pub fn clear_all(&self) {
        let ops: &[Op] = if self.selector_schema.is_some() {
            &[Op::Clear, Op::ClearGroups, Op::ClearMembers]
        } else {
            &[Op::Clear]
        };
        // Nothing can refer to what is left once entries, then groups are gone.
        let _ = self.commit(ops, false);
    }

    /// The action selector's declaration, if the table has one.
    pub fn selector_schema(&self) -> Option<&SelectorSchema> {
        self.selector_schema.as_deref()
    }

    /// Adds action-profile member `id` (see [`Op::InsertMember`]).
    pub fn insert_member(&self, id: u32, action: ActionCall) -> Result<()> {
        self.commit(&[Op::InsertMember { id, action }], false)
    }

    /// Changes member `id`'s action (see [`Op::ModifyMember`]).
    pub fn modify_member(&self, id: u32, action: ActionCall) -> Result<()> {
        self.commit(&[Op::ModifyMember { id, action }], false)
    }

    /// Removes member `id` (see [`Op::DeleteMember`]).
    pub fn delete_member(&self, id: u32) -> Result<()> {
        self.commit(&[Op::DeleteMember(id)], false)
    }

    /// Adds group `id` (see [`Op::InsertGroup`]).
    pub fn insert_group(&self, id: u32, members: Vec<u32>) -> Result<()> {
        self.commit(&[Op::InsertGroup { id, members }], false)
    }

    /// Replaces group `id`'s members (see [`Op::ModifyGroup`]).
    pub fn modify_group(&self, id: u32, members: Vec<u32>) -> Result<()> {
        self.commit(&[Op::ModifyGroup { id, members }], false)
    }

    /// Removes group `id` (see [`Op::DeleteGroup`]).
    pub fn delete_group(&self, id: u32) -> Result<()> {
        self.commit(&[Op::DeleteGroup(id)], false)
    }

    /// Members `(id, action)` of the current version, in id order.
    pub fn members(&self) -> Vec<(u32, ActionCall)> {
        self.current.load().members()
    }

    /// Groups `(id, member ids)` of the current version, in id order.
    pub fn groups(&self) -> Vec<(u32, Vec<u32>)> {
        self.current.load().groups()
    }

    /// Checks an entry for this table: key and direct action against the schema, or, for a
    /// selector table, a group/member reference (whether it resolves is checked on write).
    /// Returns it with its key in canonical form.
    pub fn check_spec(&self, e: &EntrySpec) -> Result<EntrySpec> {
        let s = &*self.schema;
        match (e.action.profile_ref(), self.selector_schema.is_some()) {
            (None, false) => s.check_entry(e),
            (Some(_), true) => Ok(EntrySpec {
                key: s.canonical_key(&e.key)?,
                priority: e.priority,
                action: e.action.clone(),
            }),
            (Some(_), false) => Err(TableError::NotASelector {
                table: s.name.clone(),
            }),
            (None, true) => Err(TableError::SelectorNeedsRef {
                table: s.name.clone(),
                action: s
                    .action(e.action.action)
                    .map_or_else(|| format!("#{}", e.action.action.0), |a| a.name.clone()),
            }),
        }
    }

    /// Number of entries in the current version.
    pub fn len(&self) -> usize {
        self.current.load().len
    }

    /// True when the current version has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Epoch of the current version; bumps by one on every publish, so caches keyed on it
    /// know when to recompute.
    pub fn version(&self) -> u64 {
        self.current.load().epoch
    }

    /// The current default action.
    pub fn default_action(&self) -> ActionCall {
        self.current.load().default_action.clone()
    }

    /// Every entry with its (packets, bytes) counters, in insertion order; for dumps.
    pub fn entries(&self) -> Vec<(EntrySpec, u64, u64)> {
        self.snapshot()
            .entries()
            .into_iter()
            .map(|e| {
                let (p, b) = e.counters.get();
                (e.spec.clone(), p, b)
            })
            .collect()
    }

    /// The installed entry with this key (any equivalent form is accepted), for reading
    /// its counters or action.
    pub fn get(&self, key: &[FieldMatch]) -> Result<Arc<Entry>> {
        let key = self.schema.canonical_key(key)?;
        self.current
            .load()
            .index
            .get(&key)
            .cloned()
            .ok_or_else(|| TableError::NoSuchEntry {
                table: self.schema.name.clone(),
                key: self.schema.format_key(&key),
            })
    }

    /// Table-wide hit/miss totals.
    pub fn stats(&self) -> TableStats {
        TableStats {
            hits: self.stats.hits.0.load(Ordering::Relaxed),
            misses: self.stats.misses.0.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the table's hit/miss totals and every entry's counters.
    pub fn reset_counters(&self) {
        self.stats.hits.0.store(0, Ordering::Relaxed);
        self.stats.misses.0.store(0, Ordering::Relaxed);
        self.current.load().index.for_each(|e| e.counters.reset());
    }

    fn commit(&self, ops: &[Op], wrap: bool) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // The guarded state is a counter that is only written after a successful publish, so
        // a poisoned lock leaves nothing inconsistent.
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = self.current.load_full();
        let mut work = Work {
            default_action: cur.default_action.clone(),
            index: cur.index.clone(),
            len: cur.len,
            next_seq: w.next_seq,
            selector: cur.selector.as_deref().cloned(),
        };
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = self.apply_one(&mut work, op) {
                tracing::debug!(table = %self.schema.name, op = i, error = %e, "table write refused");
                return Err(if wrap {
                    TableError::Batch {
                        table: self.schema.name.clone(),
                        index: i,
                        source: Box::new(e),
                    }
                } else {
                    e
                });
            }
        }
        work.index.finish();
        debug_assert_eq!(
            work.index.len(),
            work.len,
            "entry count out of step with index"
        );
        let next = TableVersion {
            epoch: cur.epoch + 1,
            schema: Arc::clone(&self.schema),
            default_action: work.default_action,
            index: work.index,
            len: work.len,
            stats: Arc::clone(&self.stats),
            selector: work.selector.map(Arc::new),
            selector_schema: self.selector_schema.clone(),
        };
        tracing::debug!(table = %self.schema.name, epoch = next.epoch, ops = ops.len(), entries = next.len, "table published");
        self.current.store(Arc::new(next));
        w.next_seq = work.next_seq;
        Ok(())
    }

    fn apply_one(&self, w: &mut Work, op: &Op) -> Result<()> {
        let s = &*self.schema;
        match op {
            Op::Insert(spec) => {
                let spec = self.check_spec(spec)?;
                self.check_ref(w, &spec.action)?;
                if w.index.get(&spec.key).is_some() {
                    return Err(TableError::DuplicateKey {
                        table: s.name.clone(),
                        key: s.format_key(&spec.key),
                    });
                }
                if w.len >= s.size {
                    return Err(TableError::TableFull {
                        table: s.name.clone(),
                        size: s.size,
                    });
                }
                let seq = w.next_seq;
                w.next_seq += 1;
                w.index.put(Arc::new(Entry {
                    spec,
                    counters: Arc::new(EntryCounters::default()),
                    seq,
                }));
                w.len += 1;
            }
            Op::Modify(spec) => {
                let spec = self.check_spec(spec)?;
                self.check_ref(w, &spec.action)?;
                let old = w
                    .index
                    .get(&spec.key)
                    .ok_or_else(|| TableError::NoSuchEntry {
                        table: s.name.clone(),
                        key: s.format_key(&spec.key),
                    })?;
                let e = Entry {
                    spec,
                    counters: Arc::clone(&old.counters),
                    seq: old.seq,
                };
                w.index.put(Arc::new(e));
            }
            Op::Delete(key) => {
                let key = s.canonical_key(key)?;
                w.index
                    .remove(&key)
                    .ok_or_else(|| TableError::NoSuchEntry {
                        table: s.name.clone(),
                        key: s.format_key(&key),
                    })?;
                w.len -= 1;
            }
            Op::SetDefault(a) => {
                if s.const_default {
                    return Err(TableError::ConstDefault {
                        table: s.name.clone(),
                    });
                }
                s.check_action(a)?;
                w.default_action = a.clone();
            }
            Op::Clear => {
                w.index.clear();
                w.len = 0;
            }
            _ => self.apply_selector_op(w, op)?,
        }
        Ok(())
    }

    /// Fails unless the group or member `call` refers to (if any) exists in `w`.
    fn check_ref(&self, w: &Work, call: &ActionCall) -> Result<()> {
        let table = || self.schema.name.clone();
        let (Some(r), Some(sel)) = (call.profile_ref(), w.selector.as_ref()) else {
            return Ok(());
        };
        match r {
            ProfileRef::Group(group) if !sel.groups.contains_key(&group) => {
                Err(TableError::NoSuchGroup {
                    table: table(),
                    group,
                })
            }
            ProfileRef::Member(member) if !sel.members.contains_key(&member) => {
                Err(TableError::NoSuchMember {
                    table: table(),
                    member,
                })
            }
            _ => Ok(()),
        }
    }

    /// Key of the first entry of `w` whose target is `r`, for "still in use" errors.
    fn entry_using(&self, w: &Work, r: ProfileRef) -> Option<String> {
        let mut found = None;
        w.index.for_each(|e| {
            if found.is_none() && e.spec.action.profile_ref() == Some(r) {
                found = Some(self.schema.format_key(&e.spec.key));
            }
        });
        found
    }

    fn apply_selector_op(&self, w: &mut Work, op: &Op) -> Result<()> {
        let name = &self.schema.name;
        let table = || name.clone();
        let (Some(sch), Some(mut sel)) = (self.selector_schema.as_deref(), w.selector.take())
        else {
            return Err(TableError::NotASelector { table: table() });
        };
        let res = (|| -> Result<()> {
            match op {
                Op::InsertMember { id, action } | Op::ModifyMember { id, action } => {
                    let insert = matches!(op, Op::InsertMember { .. });
                    // A member runs a direct action of the table (never another reference).
                    self.schema.check_action(action)?;
                    let exists = sel.members.contains_key(id);
                    if insert && exists {
                        return Err(TableError::DuplicateMember {
                            table: table(),
                            member: *id,
                        });
                    }
                    if !insert && !exists {
                        return Err(TableError::NoSuchMember {
                            table: table(),
                            member: *id,
                        });
                    }
                    if insert && sel.members.len() >= sch.size {
                        return Err(TableError::ProfileFull {
                            table: table(),
                            size: sch.size,
                        });
                    }
                    sel.members.insert(*id, action.clone());
                    sel.refresh_member(*id);
                }
                Op::DeleteMember(id) => {
                    if !sel.members.contains_key(id) {
                        return Err(TableError::NoSuchMember {
                            table: table(),
                            member: *id,
                        });
                    }
                    self.check_member_unused(w, &sel, *id)?;
                    sel.members.remove(id);
                }
                Op::InsertGroup { id, members } | Op::ModifyGroup { id, members } => {
                    let insert = matches!(op, Op::InsertGroup { .. });
                    let exists = sel.groups.contains_key(id);
                    if insert && exists {
                        return Err(TableError::DuplicateGroup {
                            table: table(),
                            group: *id,
                        });
                    }
                    if !insert && !exists {
                        return Err(TableError::NoSuchGroup {
                            table: table(),
                            group: *id,
                        });
                    }
                    if insert && sel.groups.len() >= sch.max_groups {
                        return Err(TableError::TooManyGroups {
                            table: table(),
                            max: sch.max_groups,
                        });
                    }
                    let g = sel.build_group(name, sch, *id, members)?;
                    sel.groups.insert(*id, g);
                }
                Op::DeleteGroup(id) => {
                    if !sel.groups.contains_key(id) {
                        return Err(TableError::NoSuchGroup {
                            table: table(),
                            group: *id,
                        });
                    }
                    if let Some(entry) = self.entry_using(w, ProfileRef::Group(*id)) {
                        return Err(TableError::GroupInUse {
                            table: table(),
                            group: *id,
                            entry,
                        });
                    }
                    sel.groups.remove(id);
                }
                Op::ClearGroups => {
                    for id in sel.groups.keys() {
                        if let Some(entry) = self.entry_using(w, ProfileRef::Group(*id)) {
                            return Err(TableError::GroupInUse {
                                table: table(),
                                group: *id,
                                entry,
                            });
                        }
                    }
                    sel.groups.clear();
                }
                Op::ClearMembers => {
                    for id in sel.members.keys() {
                        self.check_member_unused(w, &sel, *id)?;
                    }
                    sel.members.clear();
                }
                // Entry ops are handled by `apply_one`.
                Op::Insert(_) | Op::Modify(_) | Op::Delete(_) | Op::SetDefault(_) | Op::Clear => {}
            }
            Ok(())
        })();
        // On error the batch is abandoned anyway; put the state back either way.
        w.selector = Some(sel);
        res
    }

    fn check_member_unused(&self, w: &Work, sel: &SelectorState, member: u32) -> Result<()> {
        let user = match sel.group_of(member) {
            Some(g) => Some(format!("group {g}")),
            None => self
                .entry_using(w, ProfileRef::Member(member))
                .map(|k| format!("entry {k}")),
        };
        match user {
            Some(user) => Err(TableError::MemberInUse {
                table: self.schema.name.clone(),
                member,
                user,
            }),
            None => Ok(()),
        }
    }
}
