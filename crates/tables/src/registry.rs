//! The set of tables of a pipeline, by name; what the control plane looks tables up in.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Result, TableError};
use crate::table::Table;

/// Tables by name, iterated in name order.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    map: BTreeMap<String, Arc<Table>>,
}

impl Tables {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `table`; refuses a second table of the same name.
    pub fn add(&mut self, table: Table) -> Result<Arc<Table>> {
        self.add_shared(Arc::new(table))
    }

    /// Registers an already shared table (e.g. one a data-plane stage created).
    pub fn add_shared(&mut self, table: Arc<Table>) -> Result<Arc<Table>> {
        let name = table.name().to_owned();
        if self.map.contains_key(&name) {
            return Err(TableError::DuplicateTable { table: name });
        }
        self.map.insert(name, Arc::clone(&table));
        Ok(table)
    }

    /// The table named `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<Table>> {
        self.map.get(name).ok_or_else(|| TableError::UnknownTable {
            table: name.to_owned(),
        })
    }

    /// (name, table) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Table>)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Table names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Number of tables.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no table is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<'a> IntoIterator for &'a Tables {
    type Item = (&'a String, &'a Arc<Table>);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Arc<Table>>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}
