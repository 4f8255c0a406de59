//! Lookup structures, one per [`StorageKind`]. Immutable once published; the writer clones
//! the published index (parts are behind `Arc` and copied on first write with
//! `Arc::make_mut`), applies a batch, calls [`Index::finish`], and publishes.
//!
//! Keys are turned into *words* by a [`Packer`]: when the fields' total width is at most 128
//! bits they are packed into a single `u128` (one hash of one integer per probe); otherwise each
//! field is one word and maps are keyed by `Box<[u128]>`, probed with a stack slice, so lookups
//! never allocate either way.

use std::cmp::Reverse;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::entry::{Entry, FieldMatch};
use crate::schema::{KeyField, MAX_KEY_FIELDS, MatchKind, StorageKind, prefix_mask, width_mask};

/// Scratch buffer for key words; on the stack.
pub(crate) type Words = [u128; MAX_KEY_FIELDS];

/// Turns one `u128` per key field into map words (see module docs).
#[derive(Debug)]
pub(crate) struct Packer {
    /// (shift, width mask) per field; shift is only used when `narrow`.
    fields: Vec<(u32, u128)>,
    /// Width of each field.
    bits: Vec<u16>,
    narrow: bool,
}

impl Packer {
    pub(crate) fn new(keys: &[KeyField]) -> Self {
        let total: u32 = keys.iter().map(|k| u32::from(k.bits)).sum();
        let mut shift = 0u32;
        let fields = keys
            .iter()
            .map(|k| {
                let f = (shift, width_mask(k.bits));
                shift += u32::from(k.bits);
                f
            })
            .collect();
        Self {
            fields,
            bits: keys.iter().map(|k| k.bits).collect(),
            narrow: total <= 128,
        }
    }

    /// Number of words keys occupy.
    #[inline]
    fn stride(&self) -> usize {
        if self.narrow { 1 } else { self.fields.len() }
    }

    /// Packs `key` (one value per field, extra high bits ignored) into `buf`; returns the word
    /// count. `key` must have one value per field (checked by callers).
    #[inline]
    pub(crate) fn words(&self, key: &[u128], buf: &mut Words) -> usize {
        if self.narrow {
            let mut w = 0u128;
            for (&(shift, mask), &v) in self.fields.iter().zip(key) {
                // shift < 128 whenever a narrow table has a field at that position.
                w |= (v & mask).checked_shl(shift).unwrap_or(0);
            }
            buf[0] = w;
            1
        } else {
            for ((slot, &(_, mask)), &v) in buf.iter_mut().zip(&self.fields).zip(key) {
                *slot = v & mask;
            }
            self.fields.len()
        }
    }

    /// Places a per-field mask (or value) `m` of field `i` into word space: shifted into the
    /// packed word when narrow, unchanged otherwise.
    fn place(&self, i: usize, m: u128) -> u128 {
        if self.narrow {
            m.checked_shl(self.fields[i].0).unwrap_or(0)
        } else {
            m
        }
    }
}

/// Hash map keyed by packed key words.
#[derive(Debug, Clone)]
pub(crate) enum KeyMap {
    Narrow(HashMap<u128, Arc<Entry>>),
    Wide(HashMap<Box<[u128]>, Arc<Entry>>),
}

impl KeyMap {
    fn new(narrow: bool) -> Self {
        if narrow {
            KeyMap::Narrow(HashMap::new())
        } else {
            KeyMap::Wide(HashMap::new())
        }
    }
    #[inline]
    fn get(&self, words: &[u128]) -> Option<&Arc<Entry>> {
        match self {
            KeyMap::Narrow(m) => m.get(words.first()?),
            KeyMap::Wide(m) => m.get(words),
        }
    }
    fn insert(&mut self, words: &[u128], e: Arc<Entry>) -> Option<Arc<Entry>> {
        match self {
            KeyMap::Narrow(m) => m.insert(words[0], e),
            KeyMap::Wide(m) => m.insert(words.into(), e),
        }
    }
    fn remove(&mut self, words: &[u128]) -> Option<Arc<Entry>> {
        match self {
            KeyMap::Narrow(m) => m.remove(&words[0]),
            KeyMap::Wide(m) => m.remove(words),
        }
    }
    fn len(&self) -> usize {
        match self {
            KeyMap::Narrow(m) => m.len(),
            KeyMap::Wide(m) => m.len(),
        }
    }
    fn values(&self) -> Box<dyn Iterator<Item = &Arc<Entry>> + '_> {
        match self {
            KeyMap::Narrow(m) => Box::new(m.values()),
            KeyMap::Wide(m) => Box::new(m.values()),
        }
    }
}

/// One prefix length of an LPM table.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    prefix_len: u16,
    /// Prefix mask of the lpm field alone (for the filter index).
    field_mask: u128,
    /// One bit per value of the lpm field's top `FILTER_BITS` bits (fewer for narrower
    /// fields): set when some entry of this level has that top part. A lookup tests the bit
    /// before hashing, so levels that cannot match cost one memory read. Rebuilt by
    /// `finish` for levels a batch changed.
    filter: Arc<Vec<u64>>,
    /// Changed by the batch being built; filter needs a rebuild.
    dirty: bool,
    /// Narrow: mask over the whole packed word (other fields all ones, lpm field's prefix).
    /// Wide: prefix mask for the lpm field's word.
    mask: u128,
    map: Arc<KeyMap>,
}

/// Width of the LPM level filter index (2^16 bits = 8 KiB per level).
const FILTER_BITS: u16 = 16;

/// Filter slot of lpm-field value `v` (already masked) of a `bits`-wide field.
#[inline]
fn filter_slot(bits: u16, v: u128) -> usize {
    let f = bits.min(FILTER_BITS);
    ((v >> (bits - f)) & width_mask(f)) as usize
}

#[inline]
fn filter_has(filter: &[u64], slot: usize) -> bool {
    filter
        .get(slot / 64)
        .is_some_and(|w| w & (1u64 << (slot % 64)) != 0)
}

/// Priority-ordered value/mask rows of a ternary table, `stride` words per row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    values: Vec<u128>,
    masks: Vec<u128>,
    entries: Vec<Arc<Entry>>,
}

/// The lookup structure of one table version.
#[derive(Debug, Clone)]
pub(crate) enum Index {
    /// All fields exact: one hash map.
    Exact {
        packer: Arc<Packer>,
        map: Arc<KeyMap>,
    },
    /// One lpm field (`field`, `bits` wide), the rest exact: one map per prefix length present,
    /// `levels` sorted longest first; a lookup probes only those lengths.
    Lpm {
        packer: Arc<Packer>,
        field: usize,
        bits: u16,
        levels: Vec<Level>,
    },
    /// Ternary (or several lpm fields, treated as ternary with prefix masks).
    ///
    /// Lookup is a scan of `rows`, sorted by priority (higher first, ties: earlier insert),
    /// stopping at the first match. A scan is accepted here only: value/mask matching has no
    /// general hashing scheme, and ternary tables (ACLs) are small. `by_key` gives writers
    /// identity lookups; `rows` is rebuilt from it once per published batch.
    Ternary {
        packer: Arc<Packer>,
        by_key: Arc<HashMap<Vec<FieldMatch>, Arc<Entry>>>,
        rows: Arc<Rows>,
        dirty: bool,
    },
}

impl Index {
    pub(crate) fn new(kind: StorageKind, keys: &[KeyField]) -> Self {
        let packer = Arc::new(Packer::new(keys));
        match kind {
            StorageKind::Exact => Index::Exact {
                map: Arc::new(KeyMap::new(packer.narrow)),
                packer,
            },
            StorageKind::Lpm => {
                let field = keys
                    .iter()
                    .position(|k| k.kind == MatchKind::Lpm)
                    .unwrap_or(0);
                Index::Lpm {
                    packer,
                    field,
                    bits: keys.get(field).map_or(0, |k| k.bits),
                    levels: Vec::new(),
                }
            }
            StorageKind::Ternary => Index::Ternary {
                rows: Arc::default(),
                packer,
                by_key: Arc::default(),
                dirty: false,
            },
        }
    }

    /// Hot path: the matching entry for `key` (one value per field, length already checked).
    #[inline]
    pub(crate) fn lookup(&self, key: &[u128]) -> Option<&Entry> {
        let mut buf: Words = [0; MAX_KEY_FIELDS];
        match self {
            Index::Exact { packer, map } => {
                let n = packer.words(key, &mut buf);
                map.get(&buf[..n]).map(|e| &**e)
            }
            Index::Lpm {
                packer,
                field,
                bits,
                levels,
            } => {
                let n = packer.words(key, &mut buf);
                let lv = key.get(*field).copied().unwrap_or(0) & width_mask(*bits);
                if packer.narrow {
                    let w = buf[0];
                    levels
                        .iter()
                        .filter(|l| filter_has(&l.filter, filter_slot(*bits, lv & l.field_mask)))
                        .find_map(|l| match &*l.map {
                            KeyMap::Narrow(m) => m.get(&(w & l.mask)),
                            KeyMap::Wide(_) => None,
                        })
                        .map(|e| &**e)
                } else {
                    let orig = buf[*field];
                    for l in levels {
                        if !filter_has(&l.filter, filter_slot(*bits, lv & l.field_mask)) {
                            continue;
                        }
                        buf[*field] = orig & l.mask;
                        if let Some(e) = l.map.get(&buf[..n]) {
                            return Some(e);
                        }
                    }
                    None
                }
            }
            Index::Ternary { packer, rows, .. } => {
                let n = packer.words(key, &mut buf);
                if n == 1 {
                    let w = buf[0];
                    rows.values
                        .iter()
                        .zip(&rows.masks)
                        .position(|(&v, &m)| w & m == v)
                        .map(|i| &*rows.entries[i])
                } else {
                    let k = &buf[..n];
                    rows.values
                        .chunks_exact(n)
                        .zip(rows.masks.chunks_exact(n))
                        .position(|(v, m)| k.iter().zip(v).zip(m).all(|((k, v), m)| k & m == *v))
                        .map(|i| &*rows.entries[i])
                }
            }
        }
    }

    /// Values of a canonical key (lpm/ternary values, exact values) and the lpm prefix length.
    fn key_values(key: &[FieldMatch], buf: &mut Words) -> u16 {
        let mut plen = 0;
        for (slot, m) in buf.iter_mut().zip(key) {
            *slot = match *m {
                FieldMatch::Exact(v) => v,
                FieldMatch::Lpm { value, prefix_len } => {
                    plen = prefix_len;
                    value
                }
                FieldMatch::Ternary { value, .. } => value,
            };
        }
        plen
    }

    /// The entry whose canonical key is `key`.
    pub(crate) fn get(&self, key: &[FieldMatch]) -> Option<&Arc<Entry>> {
        let mut vals: Words = [0; MAX_KEY_FIELDS];
        let plen = Self::key_values(key, &mut vals);
        let mut buf: Words = [0; MAX_KEY_FIELDS];
        match self {
            Index::Exact { packer, map } => {
                let n = packer.words(&vals[..key.len()], &mut buf);
                map.get(&buf[..n])
            }
            Index::Lpm { packer, levels, .. } => {
                let n = packer.words(&vals[..key.len()], &mut buf);
                levels
                    .iter()
                    .find(|l| l.prefix_len == plen)
                    .and_then(|l| l.map.get(&buf[..n]))
            }
            Index::Ternary { by_key, .. } => by_key.get(key),
        }
    }

    /// Installs `e` under its canonical key, replacing any entry with that key.
    pub(crate) fn put(&mut self, e: Arc<Entry>) {
        let key = &e.spec.key;
        let mut vals: Words = [0; MAX_KEY_FIELDS];
        let plen = Self::key_values(key, &mut vals);
        let mut buf: Words = [0; MAX_KEY_FIELDS];
        match self {
            Index::Exact { packer, map } => {
                let n = packer.words(&vals[..key.len()], &mut buf);
                Arc::make_mut(map).insert(&buf[..n], e);
            }
            Index::Lpm {
                packer,
                field,
                bits,
                levels,
            } => {
                let n = packer.words(&vals[..key.len()], &mut buf);
                let pos =
                    match levels.binary_search_by_key(&Reverse(plen), |l| Reverse(l.prefix_len)) {
                        Ok(p) => p,
                        Err(p) => {
                            let pm = prefix_mask(*bits, plen);
                            let mask = if packer.narrow {
                                // all ones over the packed word except the lpm field's host bits
                                !packer.place(*field, width_mask(*bits) & !pm)
                            } else {
                                pm
                            };
                            levels.insert(
                                p,
                                Level {
                                    prefix_len: plen,
                                    field_mask: pm,
                                    filter: Arc::default(),
                                    dirty: true,
                                    mask,
                                    map: Arc::new(KeyMap::new(packer.narrow)),
                                },
                            );
                            p
                        }
                    };
                levels[pos].dirty = true;
                Arc::make_mut(&mut levels[pos].map).insert(&buf[..n], e);
            }
            Index::Ternary { by_key, dirty, .. } => {
                Arc::make_mut(by_key).insert(e.spec.key.clone(), e);
                *dirty = true;
            }
        }
    }

    /// Removes and returns the entry with canonical key `key`.
    pub(crate) fn remove(&mut self, key: &[FieldMatch]) -> Option<Arc<Entry>> {
        let mut vals: Words = [0; MAX_KEY_FIELDS];
        let plen = Self::key_values(key, &mut vals);
        let mut buf: Words = [0; MAX_KEY_FIELDS];
        match self {
            Index::Exact { packer, map } => {
                let n = packer.words(&vals[..key.len()], &mut buf);
                map.get(&buf[..n])?;
                Arc::make_mut(map).remove(&buf[..n])
            }
            Index::Lpm { packer, levels, .. } => {
                let n = packer.words(&vals[..key.len()], &mut buf);
                let l = levels.iter_mut().find(|l| l.prefix_len == plen)?;
                l.map.get(&buf[..n])?;
                l.dirty = true;
                Arc::make_mut(&mut l.map).remove(&buf[..n])
            }
            Index::Ternary { by_key, dirty, .. } => {
                by_key.get(key)?;
                *dirty = true;
                Arc::make_mut(by_key).remove(key)
            }
        }
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        match self {
            Index::Exact { packer, map } => *map = Arc::new(KeyMap::new(packer.narrow)),
            Index::Lpm { levels, .. } => levels.clear(),
            Index::Ternary { by_key, dirty, .. } => {
                *by_key = Arc::default();
                *dirty = true;
            }
        }
    }

    /// Makes the index ready to publish: drops empty prefix levels, re-sorts ternary rows.
    pub(crate) fn finish(&mut self) {
        match self {
            Index::Exact { .. } => {}
            Index::Lpm {
                field,
                bits,
                levels,
                ..
            } => {
                levels.retain(|l| l.map.len() > 0);
                for l in levels.iter_mut().filter(|l| l.dirty) {
                    l.dirty = false;
                    let slots = 1usize << (*bits).min(FILTER_BITS);
                    let mut filter = vec![0u64; slots.div_ceil(64)];
                    for e in l.map.values() {
                        if let Some(FieldMatch::Lpm { value, .. }) = e.spec.key.get(*field) {
                            let slot = filter_slot(*bits, *value);
                            filter[slot / 64] |= 1u64 << (slot % 64);
                        }
                    }
                    l.filter = Arc::new(filter);
                }
            }
            Index::Ternary {
                packer,
                by_key,
                rows,
                dirty,
            } => {
                if !*dirty {
                    return;
                }
                *dirty = false;
                let mut entries: Vec<Arc<Entry>> = by_key.values().cloned().collect();
                entries.sort_by_key(|e| (Reverse(e.spec.priority), e.seq));
                let stride = packer.stride();
                let mut values = Vec::with_capacity(entries.len() * stride);
                let mut masks = Vec::with_capacity(entries.len() * stride);
                let mut vbuf: Words = [0; MAX_KEY_FIELDS];
                let mut mbuf: Words = [0; MAX_KEY_FIELDS];
                for e in &entries {
                    let k = &e.spec.key;
                    let mut vals: Words = [0; MAX_KEY_FIELDS];
                    let mut msks: Words = [0; MAX_KEY_FIELDS];
                    for (i, m) in k.iter().enumerate() {
                        let (v, mk) = match *m {
                            FieldMatch::Exact(v) => (v, u128::MAX),
                            FieldMatch::Ternary { value, mask } => (value, mask),
                            // several lpm fields: lpm as ternary with a prefix mask
                            FieldMatch::Lpm { value, prefix_len } => (
                                value,
                                prefix_mask(packer.bits.get(i).copied().unwrap_or(128), prefix_len),
                            ),
                        };
                        vals[i] = v;
                        msks[i] = mk;
                    }
                    let n = packer.words(&vals[..k.len()], &mut vbuf);
                    packer.words(&msks[..k.len()], &mut mbuf);
                    values.extend_from_slice(&vbuf[..n]);
                    masks.extend_from_slice(&mbuf[..n]);
                }
                *rows = Arc::new(Rows {
                    values,
                    masks,
                    entries,
                });
            }
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Index::Exact { map, .. } => map.len(),
            Index::Lpm { levels, .. } => levels.iter().map(|l| l.map.len()).sum(),
            Index::Ternary { by_key, .. } => by_key.len(),
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Entry>)) {
        match self {
            Index::Exact { map, .. } => map.values().for_each(&mut f),
            Index::Lpm { levels, .. } => {
                levels.iter().for_each(|l| l.map.values().for_each(&mut f))
            }
            Index::Ternary { by_key, .. } => by_key.values().for_each(f),
        }
    }

    /// Prefix lengths present, longest first (lpm tables only; for stats and tests).
    pub(crate) fn prefix_lengths(&self) -> Vec<u16> {
        match self {
            Index::Lpm { levels, .. } => levels.iter().map(|l| l.prefix_len).collect(),
            _ => Vec::new(),
        }
    }
}
