//! The native API, mounted under `/api/v1`: tables (schema, entries, batch, default action),
//! ports and the pipeline. One router per resource, merged.
//!
//! Status codes: unknown table, port, entry, member or group 404; duplicate key, member or
//! group, or a member/group still in use 409; any other refusal of the client's input 400.
//! Bodies of refusals are `{"error": "<message>"}`.
//!
//! Tables with an action selector (e.g. `node_selector`) also have
//! `/tables/{name}/members` and `/tables/{name}/groups`: `GET` lists, `POST` adds, `PUT`
//! modifies (bodies `{"id", "action", "params"}` and `{"id", "members": [..]}`), and
//! `DELETE /tables/{name}/members/{id}` / `.../groups/{id}` removes. Their entries name
//! `"group": id` (or `"member": id`) instead of `action`/`params`; `GET /tables/{name}` shows
//! the selector with its members and groups.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use serde_json::{Value, json};
use tables::{EntryJson, EntrySpec, GroupJson, MemberJson, Op, Table};

use crate::api::{
    ActionJson, BatchJson, BatchOpKind, DeleteJson, EntryInfo, PortJson, StageJson, TableInfo,
    TableSummary,
};
use crate::error::{AppError, AppJson};
use crate::state::AppState;

/// Every native route (relative to `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(tables_routes())
        .merge(ports_routes())
        .merge(pipeline_routes())
}

fn tables_routes() -> Router<AppState> {
    Router::new()
        .route("/tables", get(list_tables))
        .route("/tables/{name}", get(get_table))
        .route(
            "/tables/{name}/entries",
            get(list_entries)
                .post(insert_entry)
                .put(modify_entry)
                .delete(delete_entry),
        )
        .route("/tables/{name}/entries/batch", post(batch))
        .route("/tables/{name}/entries/all", delete(clear_table))
        .route("/tables/{name}/default", put(set_default).get(get_default))
        .route(
            "/tables/{name}/members",
            get(list_members).post(insert_member).put(modify_member),
        )
        .route("/tables/{name}/members/{id}", delete(delete_member))
        .route(
            "/tables/{name}/groups",
            get(list_groups).post(insert_group).put(modify_group),
        )
        .route("/tables/{name}/groups/{id}", delete(delete_group))
}

fn ports_routes() -> Router<AppState> {
    Router::new()
        .route("/ports", get(list_ports))
        .route("/ports/{id}", get(get_port))
}

fn pipeline_routes() -> Router<AppState> {
    Router::new().route("/pipeline", get(pipeline))
}

type ApiResult<T> = Result<T, AppError>;

async fn list_tables(State(st): State<AppState>) -> AppJson<Vec<TableSummary>> {
    AppJson(
        st.switch
            .tables
            .iter()
            .map(|(_, t)| TableSummary::of(t))
            .collect(),
    )
}

async fn get_table(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<AppJson<TableInfo>> {
    Ok(AppJson(TableInfo::of(st.table(&name)?)))
}

fn entry_info(t: &Table, spec: &EntrySpec, packets: u64, bytes: u64) -> EntryInfo {
    EntryInfo {
        entry: t.entry_to_json(spec),
        packets,
        bytes,
    }
}

async fn list_entries(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<AppJson<Vec<EntryInfo>>> {
    let t = st.table(&name)?;
    Ok(AppJson(
        t.entries()
            .iter()
            .map(|(spec, p, b)| entry_info(t, spec, *p, *b))
            .collect(),
    ))
}

/// Parses an entry for `t`, port parameters included.
fn parse_entry(st: &AppState, t: &Table, e: &EntryJson) -> ApiResult<EntrySpec> {
    st.check_action_ports(t, &e.action, &e.params)?;
    Ok(t.entry_from_json(e)?)
}

async fn insert_entry(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(e): AppJson<EntryJson>,
) -> ApiResult<(StatusCode, AppJson<EntryInfo>)> {
    let t = st.table(&name)?;
    let spec = parse_entry(&st, t, &e)?;
    let _g = st.lock_multi_write();
    t.insert(spec.clone())?;
    tracing::info!(table = %name, key = %t.schema().format_key(&spec.key), "entry inserted");
    Ok((StatusCode::CREATED, AppJson(entry_info(t, &spec, 0, 0))))
}

async fn modify_entry(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(e): AppJson<EntryJson>,
) -> ApiResult<AppJson<EntryInfo>> {
    let t = st.table(&name)?;
    let spec = parse_entry(&st, t, &e)?;
    let _g = st.lock_multi_write();
    t.modify(spec.clone())?;
    tracing::info!(table = %name, key = %t.schema().format_key(&spec.key), "entry modified");
    let (p, b) = t.get(&spec.key).map_or((0, 0), |e| e.counters.get());
    Ok(AppJson(entry_info(t, &spec, p, b)))
}

async fn delete_entry(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(d): AppJson<DeleteJson>,
) -> ApiResult<AppJson<Value>> {
    let t = st.table(&name)?;
    let key = t.key_from_json(&d.key)?;
    let _g = st.lock_multi_write();
    let old = t.get(&key)?;
    t.delete(&key)?;
    tracing::info!(table = %name, key = %t.schema().format_key(&key), "entry deleted");
    let (p, b) = old.counters.get();
    Ok(AppJson(json!({
        "status": "success",
        "deleted": entry_info(t, &old.spec, p, b),
    })))
}

async fn batch(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(b): AppJson<BatchJson>,
) -> ApiResult<AppJson<Value>> {
    let t = st.table(&name)?;
    let mut ops = Vec::with_capacity(b.ops.len());
    for (i, op) in b.ops.into_iter().enumerate() {
        let parsed = match op.op {
            BatchOpKind::Delete => t.key_from_json(&op.key).map(Op::Delete).map_err(Into::into),
            kind => {
                let entry = match (op.action, op.group, op.member) {
                    (Some(action), None, None) => Ok(EntryJson {
                        key: op.key,
                        action,
                        params: op.params,
                        priority: op.priority,
                    }),
                    (None, Some(g), None) => Ok(EntryJson::group(op.key, g)),
                    (None, None, Some(m)) => Ok(EntryJson::member(op.key, m)),
                    (None, None, None) => Err(AppError::BadRequest(format!(
                        "missing field `action` (or `group` / `member`; required for {kind:?})"
                    ))),
                    _ => Err(AppError::BadRequest(
                        "give exactly one of `action`, `group` and `member`".into(),
                    )),
                };
                entry.and_then(|e| {
                    let spec = parse_entry(&st, t, &e)?;
                    Ok(if kind == BatchOpKind::Insert {
                        Op::Insert(spec)
                    } else {
                        Op::Modify(spec)
                    })
                })
            }
        };
        ops.push(parsed.map_err(|e| e.context(&format!("batch op #{i} (ops[{i}])")))?);
    }
    let n = ops.len();
    let _g = st.lock_multi_write();
    t.apply(&ops)?;
    tracing::info!(table = %name, ops = n, "batch applied");
    Ok(AppJson(json!({"status": "success", "applied": n})))
}

async fn clear_table(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<AppJson<Value>> {
    let t = st.table(&name)?;
    let _g = st.lock_multi_write();
    let n = t.len();
    t.clear();
    tracing::info!(table = %name, removed = n, "table cleared");
    Ok(AppJson(json!({"status": "success", "removed": n})))
}

/// The table, refused with 400 unless it has an action selector.
fn selector_table<'a>(st: &'a AppState, name: &str) -> ApiResult<&'a Table> {
    let t = st.table(name)?;
    if t.selector_schema().is_none() {
        return Err(tables::TableError::NotASelector {
            table: name.to_owned(),
        }
        .into());
    }
    Ok(t)
}

fn parse_id(what: &str, id: &str) -> ApiResult<u32> {
    id.trim().parse().map_err(|_| {
        AppError::BadRequest(format!(
            "{what} id '{id}' is not a number in 0..=4294967295"
        ))
    })
}

async fn list_members(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<AppJson<Vec<MemberJson>>> {
    let t = selector_table(&st, &name)?;
    Ok(AppJson(
        t.members()
            .iter()
            .map(|(id, a)| t.member_to_json(*id, a))
            .collect(),
    ))
}

async fn insert_member(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(m): AppJson<MemberJson>,
) -> ApiResult<(StatusCode, AppJson<MemberJson>)> {
    let t = selector_table(&st, &name)?;
    st.check_action_ports(t, &m.action, &m.params)?;
    let (id, action) = t.member_from_json(&m)?;
    let _g = st.lock_multi_write();
    t.insert_member(id, action.clone())?;
    tracing::info!(table = %name, member = id, "member inserted");
    Ok((StatusCode::CREATED, AppJson(t.member_to_json(id, &action))))
}

async fn modify_member(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(m): AppJson<MemberJson>,
) -> ApiResult<AppJson<MemberJson>> {
    let t = selector_table(&st, &name)?;
    st.check_action_ports(t, &m.action, &m.params)?;
    let (id, action) = t.member_from_json(&m)?;
    let _g = st.lock_multi_write();
    t.modify_member(id, action.clone())?;
    tracing::info!(table = %name, member = id, "member modified");
    Ok(AppJson(t.member_to_json(id, &action)))
}

async fn delete_member(
    State(st): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<AppJson<Value>> {
    let t = selector_table(&st, &name)?;
    let id = parse_id("member", &id)?;
    let _g = st.lock_multi_write();
    let old = t.snapshot().member(id).cloned();
    t.delete_member(id)?;
    tracing::info!(table = %name, member = id, "member deleted");
    let deleted = old.map(|a| t.member_to_json(id, &a));
    Ok(AppJson(json!({"status": "success", "deleted": deleted})))
}

async fn list_groups(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<AppJson<Vec<GroupJson>>> {
    let t = selector_table(&st, &name)?;
    Ok(AppJson(
        t.groups()
            .into_iter()
            .map(|(id, members)| GroupJson { id, members })
            .collect(),
    ))
}

async fn insert_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(g): AppJson<GroupJson>,
) -> ApiResult<(StatusCode, AppJson<GroupJson>)> {
    let t = selector_table(&st, &name)?;
    let _g = st.lock_multi_write();
    t.insert_group(g.id, g.members.clone())?;
    tracing::info!(table = %name, group = g.id, members = ?g.members, "group inserted");
    Ok((StatusCode::CREATED, AppJson(g)))
}

async fn modify_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(g): AppJson<GroupJson>,
) -> ApiResult<AppJson<GroupJson>> {
    let t = selector_table(&st, &name)?;
    let _g = st.lock_multi_write();
    t.modify_group(g.id, g.members.clone())?;
    tracing::info!(table = %name, group = g.id, members = ?g.members, "group modified");
    Ok(AppJson(g))
}

async fn delete_group(
    State(st): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<AppJson<Value>> {
    let t = selector_table(&st, &name)?;
    let id = parse_id("group", &id)?;
    let _g = st.lock_multi_write();
    let old = t.snapshot().group(id).map(<[u32]>::to_vec);
    t.delete_group(id)?;
    tracing::info!(table = %name, group = id, "group deleted");
    let deleted = old.map(|members| GroupJson { id, members });
    Ok(AppJson(json!({"status": "success", "deleted": deleted})))
}

fn current_default(t: &Table) -> ActionJson {
    let (action, params) = t.action_to_json(&t.default_action());
    ActionJson { action, params }
}

async fn get_default(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<AppJson<ActionJson>> {
    Ok(AppJson(current_default(st.table(&name)?)))
}

async fn set_default(
    State(st): State<AppState>,
    Path(name): Path<String>,
    AppJson(a): AppJson<ActionJson>,
) -> ApiResult<AppJson<ActionJson>> {
    let t = st.table(&name)?;
    st.check_action_ports(t, &a.action, &a.params)?;
    let call = t.action_from_json(&a.action, &a.params)?;
    let _g = st.lock_multi_write();
    t.set_default(call)?;
    tracing::info!(table = %name, action = %a.action, "default action set");
    Ok(AppJson(current_default(t)))
}

async fn list_ports(State(st): State<AppState>) -> AppJson<Vec<PortJson>> {
    AppJson(st.switch.ports.iter().map(PortJson::of).collect())
}

async fn get_port(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<AppJson<PortJson>> {
    let n: u16 = id.trim().parse().map_err(|_| {
        AppError::BadRequest(format!("port id '{id}' is not a number in 0..=65535"))
    })?;
    let p = st.switch.port(n).ok_or_else(|| {
        AppError::NotFound(format!(
            "unknown port {n} (switch ports: {})",
            st.port_list()
        ))
    })?;
    Ok(AppJson(PortJson::of(p)))
}

async fn pipeline(State(st): State<AppState>) -> AppJson<Vec<StageJson>> {
    AppJson(
        st.switch
            .pipeline
            .iter()
            .map(|s| StageJson {
                name: s.name.clone(),
                tables: s.tables.clone(),
            })
            .collect(),
    )
}
