//! The p4containerflow controller's REST endpoints (Flask, `controller.py`), so its
//! migration scripts run against switchboard unchanged: root paths, POST, JSON bodies, the
//! upstream field names and success shapes.
//!
//! | endpoint           | body                                   | effect                                  |
//! |--------------------|----------------------------------------|-----------------------------------------|
//! | `/addForward`      | `dst_addr`, `port`, `dst_mac?`         | insert `forward` + `arp_forward`        |
//! | `/updateForward`   | `ipv4`, `sw_port`, `dst_mac?`          | modify `forward` + `arp_forward`        |
//! | `/addArpForward`   | `target_ip`, `port`                    | insert `arp_forward` only               |
//! | `/migrateNode`     | `old_ipv4`, `new_ipv4`                 | re-point the LB member (see below)      |
//! | `/deleteClientSnat`|                                        | delete `client_snat[service_port]`      |
//! | `/cleanup`         |                                        | empty every table                       |
//! | `/reinitialize`    |                                        | empty, then install the config entries  |
//!
//! Success is 200 `{"status":"success"}` (plus `"message"` for cleanup, reinitialize and
//! deleteClientSnat).
//!
//! `/migrateNode` (VIP mode): the `node_selector` member whose action is
//! `set_rewrite_dst(old_ipv4)` becomes `set_rewrite_dst(new_ipv4)`. If `forward` has no entry
//! for `new_ipv4`, `forward` (`set_egress_port`, on `old_ipv4`'s forward port) and, if absent,
//! `arp_forward` entries for it are inserted first, so no rewritten packet meets a missing
//! route; all of it is rolled back if a later step fails. Equal addresses: a no-op (200).
//! An `old_ipv4` that no member rewrites to, or that has no `forward` entry when one is
//! needed, is 400 naming `old_ipv4`.
//!
//! `/deleteClientSnat` deletes the `client_snat` entry keyed by the load balancer's
//! `service_port` (`[stage.load_balancer] service_port`, 8080 by default). When there is no
//! such entry it still answers 200 success, with a message saying nothing was deleted: the
//! endpoint is idempotent, so a script may call it after every `/reinitialize`.
//! Both answer 501 on a switch whose pipeline has no `load_balancer` stage.
//! `/cleanup` removes each table's entries, then selector groups, then members.
//! Every client mistake is 400 `{"error": ...}` as upstream; absent members give
//! `"Missing parameters: a, b"`. Ports may be numbers or numeric strings (Flask scripts send
//! both). Unlike upstream, a two-table write that fails half way is rolled back, so the
//! tables never disagree about a host.

use std::net::Ipv4Addr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use dataplane::stages::load_balancer::{self, LoadBalancerConfig};
use dataplane::stages::{arp_forward, forward};
use serde_json::{Map, Value, json};
use tables::{ActionCall, EntryJson, EntrySpec, FieldMatch, Table};

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
    let (mut n, mut groups, mut members) = (0, 0, 0);
    for (_, t) in st.switch.tables.iter() {
        let v = t.snapshot();
        n += v.len();
        groups += v.groups().len();
        members += v.members().len();
    }
    st.switch.clear_tables();
    tracing::info!(removed = n, groups, members, "cleanup");
    Ok(AppJson(json!({
        "status": "success",
        "message": format!(
            "Cleanup completed: removed {n} entries, {groups} selector groups and {members} \
             members from {} tables",
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

/// A load-balancer table, or 501 naming it when the pipeline has no `load_balancer` stage.
fn lb_table<'a>(st: &'a AppState, table: &str, endpoint: &str) -> Result<&'a Table, AppError> {
    st.switch
        .tables
        .get(table)
        .map(|t| t.as_ref())
        .map_err(|_| {
            AppError::Unsupported(format!(
                "{endpoint} needs the load-balancer table '{table}', which this switch's \
                 pipeline does not have (add the '{}' stage)",
                load_balancer::STAGE
            ))
        })
}

fn ip_value(ip: Ipv4Addr) -> u128 {
    u128::from(u32::from(ip))
}

async fn migrate_node(State(st): State<AppState>, body: Bytes) -> CompatResult {
    let body = body_object(&body)?;
    require(&body, &["old_ipv4", "new_ipv4"])?;
    let old = ipv4_field(&body, "old_ipv4")?;
    let new = ipv4_field(&body, "new_ipv4")?;
    let ns = lb_table(&st, load_balancer::NODE_SELECTOR, "/migrateNode")?;
    if old == new {
        tracing::info!(%old, "migrateNode: same address, nothing to do");
        return Ok(success());
    }
    let _g = st.lock_multi_write();
    let rewrite = ns
        .schema()
        .action_id(load_balancer::SET_REWRITE_DST)
        .ok_or_else(|| AppError::Internal("node_selector lacks set_rewrite_dst".into()))?;
    let members = ns.members();
    let Some((member, old_action)) = members
        .iter()
        .find(|(_, a)| a.action == rewrite && a.param(0) == ip_value(old))
        .cloned()
    else {
        let known: Vec<String> = members
            .iter()
            .filter(|(_, a)| a.action == rewrite)
            .map(|(_, a)| tables::format_value(32, a.param(0)))
            .collect();
        return Err(AppError::BadRequest(format!(
            "old_ipv4: no {} member rewrites to {old} (load-balanced nodes: {})",
            load_balancer::NODE_SELECTOR,
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    };
    // Routes for the new node first, so no packet rewritten to it meets a missing entry.
    let mut added: Vec<(&Table, EntrySpec)> = Vec::new();
    let (fwd, new_fwd_key) = prepare(&st, forward::TABLE, &forward_entry(new, 0, None))
        .map(|(t, spec)| (t, spec.key))
        .map_err(compat_err)?;
    if fwd.get(&new_fwd_key).is_err() {
        let (_, old_key) =
            prepare(&st, forward::TABLE, &forward_entry(old, 0, None)).map_err(compat_err)?;
        let old_entry = fwd.get(&old_key.key).map_err(|_| {
            AppError::BadRequest(format!(
                "old_ipv4: no {} entry for {old} to take the port for {new} from",
                forward::TABLE
            ))
        })?;
        let port = u16::try_from(old_entry.action().param(0)).unwrap_or(u16::MAX);
        let (_, fspec) =
            prepare(&st, forward::TABLE, &forward_entry(new, port, None)).map_err(compat_err)?;
        let (arp, aspec) =
            prepare(&st, arp_forward::TABLE, &arp_entry(new, port)).map_err(compat_err)?;
        fwd.insert(fspec.clone()).map_err(compat_err)?;
        added.push((fwd, fspec));
        if arp.get(&aspec.key).is_err() {
            if let Err(e) = arp.insert(aspec.clone()) {
                return Err(roll_back(&added, e.into(), new));
            }
            added.push((arp, aspec));
        }
        tracing::info!(%new, port, "migrateNode: added forward entries for the new node");
    }
    let new_action = ActionCall::new(rewrite, [ip_value(new)]);
    if let Err(e) = ns.modify_member(member, new_action) {
        return Err(roll_back(&added, e.into(), new));
    }
    tracing::info!(%old, %new, member, was = ?old_action, "migrateNode");
    Ok(success())
}

/// Deletes the entries `added` (newest first) after `err`; the answer says whether that
/// restored the previous state.
fn roll_back(added: &[(&Table, EntrySpec)], err: AppError, new: Ipv4Addr) -> AppError {
    let mut failed = Vec::new();
    for (t, spec) in added.iter().rev() {
        if let Err(e) = t.delete(&spec.key) {
            failed.push(format!("{}: {e}", t.name()));
        }
    }
    if failed.is_empty() {
        err.into_compat()
            .context("migrateNode failed; the entries added for the new node were rolled back")
    } else {
        AppError::Partial(format!(
            "migrateNode failed ({err}); removing the entries added for {new} also failed: {}",
            failed.join("; ")
        ))
    }
}

async fn delete_client_snat(State(st): State<AppState>) -> CompatResult {
    let snat = lb_table(&st, load_balancer::CLIENT_SNAT, "/deleteClientSnat")?;
    let port = LoadBalancerConfig::of_switch(&st.switch).service_port;
    let key = [FieldMatch::Exact(u128::from(port))];
    let _g = st.lock_multi_write();
    let message = match snat.get(&key) {
        Ok(old) => {
            snat.delete(&key).map_err(compat_err)?;
            let to = tables::format_value(32, old.action().param(0));
            tracing::info!(port, was = %to, "deleteClientSnat");
            format!("Deleted client_snat entry for service port {port} (source rewrite to {to})")
        }
        Err(_) => {
            tracing::info!(port, "deleteClientSnat: no entry");
            format!("No client_snat entry for service port {port}; nothing to delete")
        }
    };
    Ok(AppJson(json!({"status": "success", "message": message})))
}
