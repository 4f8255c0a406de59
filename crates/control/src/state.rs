//! What every handler shares: the switch, plus the lock that makes multi-table writes
//! (p4containerflow's two-table updates, cleanup, reinitialize) atomic with respect to each
//! other.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dataplane::Switch;
use serde_json::{Map, Value};
use tables::Table;

use crate::error::AppError;

/// Name of action parameters that hold a switch port number; checked against the switch's
/// ports before a write, so a typo cannot install an entry that sends packets nowhere.
pub const PORT_PARAM: &str = "port";

/// Handler state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    pub switch: Arc<Switch>,
    multi_write: Arc<Mutex<()>>,
}

impl AppState {
    /// State around `switch`.
    pub fn new(switch: Arc<Switch>) -> AppState {
        AppState {
            switch,
            multi_write: Arc::new(Mutex::new(())),
        }
    }

    /// The table named `name` (404 when there is none).
    pub fn table(&self, name: &str) -> Result<&Arc<Table>, AppError> {
        Ok(self.switch.tables.get(name)?)
    }

    /// Taken by every REST write, so a compound operation (a compat endpoint writing two
    /// tables, or rolling one back) never interleaves with another write. Only synchronous table writes happen
    /// under it (never an `.await`). A panic under the lock leaves no half state behind it
    /// (tables publish whole versions), so poisoning is ignored.
    pub fn lock_multi_write(&self) -> MutexGuard<'_, ()> {
        self.multi_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Comma-separated port numbers, for messages.
    pub fn port_list(&self) -> String {
        let ids: Vec<String> = self.switch.ports.iter().map(|p| p.id.to_string()).collect();
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    }

    /// `Err("unknown port N ...")` unless the switch has port `id`.
    pub fn check_port_id(&self, id: u128) -> Result<(), AppError> {
        let known = u16::try_from(id)
            .ok()
            .is_some_and(|id| self.switch.port(id).is_some());
        if known {
            Ok(())
        } else {
            Err(AppError::BadRequest(format!(
                "unknown port {id} (switch ports: {})",
                self.port_list()
            )))
        }
    }

    /// Checks the `port` parameter of `action` on table `t`, if the action has one and the
    /// value parses; unparsable values are left for the table to report.
    pub fn check_action_ports(
        &self,
        t: &Table,
        action: &str,
        params: &Map<String, Value>,
    ) -> Result<(), AppError> {
        let s = t.schema();
        let Some(a) = s.action_id(action).and_then(|id| s.action(id)) else {
            return Ok(());
        };
        let Some(p) = a.params.iter().find(|p| p.name == PORT_PARAM) else {
            return Ok(());
        };
        let Some(v) = params.get(PORT_PARAM) else {
            return Ok(());
        };
        match tables::parse_value(p.bits, v) {
            Ok(id) => self.check_port_id(id).map_err(|e| {
                e.context(&format!(
                    "table '{}': action '{action}' parameter '{PORT_PARAM}'",
                    s.name
                ))
            }),
            Err(_) => Ok(()),
        }
    }
}
