//! The p4containerflow controller's REST endpoints (Flask, `controller.py`), so its
//! migration scripts run against switchboard unchanged: root paths, POST, JSON bodies, the
//! upstream field names and success shapes.
//!
//! | endpoint           | body                                   | effect                                  |
//! |--------------------|----------------------------------------|-----------------------------------------|
//! | `/addForward`      | `dst_addr`, `port`, `dst_mac?`         | insert `forward` + `arp_forward`        |
//! | `/updateForward`   | `ipv4`, `sw_port`, `dst_mac?`          | modify `forward` + `arp_forward`        |
//! | `/addArpForward`   | `target_ip`, `port`                    | insert `arp_forward` only               |
//! | `/cleanup`         |                                        | empty every table                       |
//! | `/reinitialize`    |                                        | empty, then install the config entries  |
//! | `/migrateNode`, `/deleteClientSnat` | (load balancer mode)  | 501: no load-balancer stage yet         |
//!
//! Success is 200 `{"status":"success"}` (plus `"message"` for cleanup and reinitialize).
//! Every client mistake is 400 `{"error": ...}` as upstream; absent members give
//! `"Missing parameters: a, b"`. Ports may be numbers or numeric strings (Flask scripts send
//! both). Unlike upstream, a two-table write that fails half way is rolled back, so the
//! tables never disagree about a host.

use std::net::Ipv4Addr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use dataplane::stages::{arp_forward, forward};
use serde_json::{Map, Value, json};
use tables::{EntryJson, EntrySpec, Table};

use crate::error::{AppError, AppJson};
use crate::state::AppState;

/// The compatible endpoints, at the root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/addForward", post(add_forward))
        .route("/updateForward", post(update_forward))
        .route("/addArpForward", post(add_arp_forward))
        .route("/cleanup", post(cleanup))
        .route("/reinitialize", post(reinitialize))
        .route("/migrateNode", post(migrate_node))
        .route("/deleteClientSnat", post(delete_client_snat))
}

type CompatResult = Result<AppJson<Value>, AppError>;

fn success() -> AppJson<Value> {
    AppJson(json!({"status": "success"}))
}

/// Reads the body as a JSON object; an empty body is an empty object (so the answer is
/// "Missing parameters", as Flask's would be).
fn body_object(bytes: &Bytes) -> Result<Map<String, Value>, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(AppError::BadRequest(format!(
            "expected a JSON object body, got {}",
            kind_of(&other)
        ))),
        Err(e) => Err(AppError::BadRequest(format!("invalid JSON body: {e}"))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fails with "Missing parameters: ..." naming every absent (or null / empty) member.
fn require(body: &Map<String, Value>, names: &[&str]) -> Result<(), AppError> {
    let missing: Vec<String> = names
        .iter()
        .filter(|n| match body.get(**n) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            Some(_) => false,
        })
        .map(|n| (*n).to_owned())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AppError::MissingParams(missing))
    }
}

fn ipv4_field(body: &Map<String, Value>, name: &str) -> Result<Ipv4Addr, AppError> {
    match body.get(name) {
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| AppError::BadRequest(format!("{name}: '{s}' is not an IPv4 address"))),
        Some(other) => Err(AppError::BadRequest(format!(
            "{name}: expected an IPv4 address string, got {}",
            kind_of(other)
        ))),
        None => Err(AppError::MissingParams(vec![name.to_owned()])),
    }
}

/// A switch port number given as a JSON number or a numeric string, checked against the
/// switch's ports.
fn port_field(st: &AppState, body: &Map<String, Value>, name: &str) -> Result<u16, AppError> {
    let bad = |what: String| AppError::BadRequest(format!("{name}: {what}"));
    let n: u64 = match body.get(name) {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad(format!("{n} is not a port number")))?,
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{s}' is not a port number")))?,
        Some(other) => {
            return Err(bad(format!(
                "expected a port number, got {}",
                kind_of(other)
            )));
        }
        None => return Err(AppError::MissingParams(vec![name.to_owned()])),
    };
    st.check_port_id(u128::from(n))
        .map_err(|e| e.context(name))?;
    u16::try_from(n).map_err(|_| bad(format!("{n} is not a port number")))
}

/// The optional `dst_mac`, in canonical text form.
fn mac_field(body: &Map<String, Value>, name: &str) -> Result<Option<String>, AppError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => tables::parse_value(48, v)
            .map(|m| Some(tables::format_value(48, m)))
            .map_err(|e| AppError::BadRequest(format!("{name}: {e}"))),
    }
}

/// The `forward` entry for `ip` (with the MAC rewrite when a MAC is given).
fn forward_entry(ip: Ipv4Addr, port: u16, mac: Option<&str>) -> EntryJson {
    let mut params = Map::new();
    params.insert("port".into(), port.into());
    let action = match mac {
        Some(m) => {
            params.insert("dst_mac".into(), m.into());
            forward::SET_EGRESS_PORT_WITH_MAC
        }
        None => forward::SET_EGRESS_PORT,
    };
    EntryJson {
        key: Map::from_iter([(forward::KEY.to_owned(), ip.to_string().into())]),
        action: action.into(),
        params,
        priority: 0,
    }
}

/// The `arp_forward` entry steering ARP for `ip` to `port`.
fn arp_entry(ip: Ipv4Addr, port: u16) -> EntryJson {
    EntryJson {
        key: Map::from_iter([(arp_forward::KEY.to_owned(), ip.to_string().into())]),
        action: arp_forward::SET_EGRESS_PORT.into(),
        params: Map::from_iter([("port".to_owned(), port.into())]),
        priority: 0,
    }
}

/// Looks up a table the endpoint needs and parses its entry, before anything is written.
fn prepare<'a>(
    st: &'a AppState,
    table: &str,
    e: &EntryJson,
) -> Result<(&'a Table, EntrySpec), AppError> {
    let t = st.switch.tables.get(table).map_err(|_| {
        let stages: Vec<&str> = st.switch.pipeline.iter().map(|s| s.name.as_str()).collect();
        AppError::BadRequest(format!(
            "this switch's pipeline has no table '{table}' (stages: {})",
            stages.join(", ")
        ))
    })?;
    let spec = t.entry_from_json(e).map_err(AppError::from)?;
    Ok((t.as_ref(), spec))
}

fn compat_err(e: impl Into<AppError>) -> AppError {
    e.into().into_compat()
}

async fn add_forward(State(st): State<AppState>, body: Bytes) -> CompatResult {
    let body = body_object(&body)?;
    require(&body, &["dst_addr", "port"])?;
    let ip = ipv4_field(&body, "dst_addr")?;
    let port = port_field(&st, &body, "port")?;
    let mac = mac_field(&body, "dst_mac")?;
    let _g = st.lock_multi_write();
    let (fwd, fspec) = prepare(
        &st,
        forward::TABLE,
        &forward_entry(ip, port, mac.as_deref()),
    )
    .map_err(compat_err)?;
    let (arp, aspec) =
        prepare(&st, arp_forward::TABLE, &arp_entry(ip, port)).map_err(compat_err)?;
    fwd.insert(fspec.clone()).map_err(compat_err)?;
    if let Err(e) = arp.insert(aspec) {
        return Err(match fwd.delete(&fspec.key) {
            Ok(()) => AppError::BadRequest(format!(
                "{e}; the {} entry for {ip} was rolled back, nothing changed",
                forward::TABLE
            )),
            Err(re) => AppError::Partial(format!(
                "{e}; rolling back the {} entry for {ip} also failed ({re}): \
                 it stays installed without an {} entry",
                forward::TABLE,
                arp_forward::TABLE
            )),
        });
    }
    tracing::info!(%ip, port, mac = ?mac, "addForward");
    Ok(success())
}

async fn update_forward(State(st): State<AppState>, body: Bytes) -> CompatResult {
    let body = body_object(&body)?;
    require(&body, &["ipv4", "sw_port"])?;
    let ip = ipv4_field(&body, "ipv4")?;
    let port = port_field(&st, &body, "sw_port")?;
    let mac = mac_field(&body, "dst_mac")?;
    let _g = st.lock_multi_write();
    let (fwd, fspec) = prepare(
        &st,
        forward::TABLE,
        &forward_entry(ip, port, mac.as_deref()),
    )
    .map_err(compat_err)?;
    let (arp, aspec) =
        prepare(&st, arp_forward::TABLE, &arp_entry(ip, port)).map_err(compat_err)?;
    let absent = |table: &str| {
        AppError::BadRequest(format!(
            "ipv4: no {table} entry for {ip} to update (add it with /addForward)"
        ))
    };
    let old = fwd.get(&fspec.key).map_err(|_| absent(forward::TABLE))?;
    arp.get(&aspec.key)
        .map_err(|_| absent(arp_forward::TABLE))?;
    fwd.modify(fspec).map_err(compat_err)?;
    if let Err(e) = arp.modify(aspec) {
        return Err(match fwd.modify(old.spec.clone()) {
            Ok(()) => AppError::BadRequest(format!(
                "{e}; the {} entry for {ip} was restored, nothing changed",
                forward::TABLE
            )),
            Err(re) => AppError::Partial(format!(
                "{e}; restoring the {} entry for {ip} also failed ({re}): \
                 it now points to port {port} while {} does not",
                forward::TABLE,
                arp_forward::TABLE
            )),
        });
    }
    tracing::info!(%ip, port, mac = ?mac, "updateForward");
    Ok(success())
}

async fn add_arp_forward(State(st): State<AppState>, body: Bytes) -> CompatResult {
    let body = body_object(&body)?;
    require(&body, &["target_ip", "port"])?;
    let ip = ipv4_field(&body, "target_ip")?;
    let port = port_field(&st, &body, "port")?;
    let _g = st.lock_multi_write();
    let (arp, aspec) =
        prepare(&st, arp_forward::TABLE, &arp_entry(ip, port)).map_err(compat_err)?;
    arp.insert(aspec).map_err(compat_err)?;
    tracing::info!(%ip, port, "addArpForward");
    Ok(success())
}

async fn cleanup(State(st): State<AppState>) -> CompatResult {
    let _g = st.lock_multi_write();
    let n: usize = st.switch.tables.iter().map(|(_, t)| t.len()).sum();
    st.switch.clear_tables();
    tracing::info!(removed = n, "cleanup");
    Ok(AppJson(json!({
        "status": "success",
        "message": format!(
            "Cleanup completed: removed {n} entries from {} tables",
            st.switch.tables.len()
        ),
    })))
}

async fn reinitialize(State(st): State<AppState>) -> CompatResult {
    let _g = st.lock_multi_write();
    st.switch.reinitialize().map_err(|e| {
        AppError::Partial(format!(
            "reinitialize failed after clearing the tables: {e}"
        ))
    })?;
    let n = st.switch.initial_entries.len();
    tracing::info!(entries = n, "reinitialize");
    Ok(AppJson(json!({
        "status": "success",
        "message": format!("Reinitialized: tables cleared, {n} configured entries installed"),
    })))
}

async fn migrate_node() -> CompatResult {
    Err(AppError::Unsupported(
        "/migrateNode needs the load-balancer tables (node_selector), which this switch's \
         pipeline does not have; use /updateForward for same-IP migration"
            .into(),
    ))
}

async fn delete_client_snat() -> CompatResult {
    Err(AppError::Unsupported(
        "/deleteClientSnat needs the client_snat table, which this switch's pipeline does not have"
            .into(),
    ))
}
