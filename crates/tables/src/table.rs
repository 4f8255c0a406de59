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
use crate::schema::{ActionCall, TableSchema};

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
}

impl Table {
    /// Validates `schema` and creates an empty table (epoch 0).
    pub fn new(schema: TableSchema) -> Result<Table> {
        schema.validate()?;
        let schema = Arc::new(schema);
        let stats = Arc::new(TableCounters::default());
        let v = TableVersion {
            epoch: 0,
            default_action: schema.default_action.clone(),
            index: Index::new(schema.storage_kind(), &schema.keys),
            len: 0,
            schema: Arc::clone(&schema),
            stats: Arc::clone(&stats),
        };
        Ok(Table {
            schema,
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

    /// Removes every entry (the default action stays).
    pub fn clear(&self) {
        // Clear cannot fail; ignore the impossible error rather than panic.
        let _ = self.commit(&[Op::Clear], false);
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
                let spec = s.check_entry(spec)?;
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
                let spec = s.check_entry(spec)?;
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
        }
        Ok(())
    }
}
