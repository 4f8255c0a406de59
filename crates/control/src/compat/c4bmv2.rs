//! The ECMP-ER controller's REST API (ToyotaInfoTech/ecmper `tools/c4bmv2.py`, Flask on
//! port 5000), so the upstream demo scripts (`curl -X PUT ...`) run unchanged, plus the native
//! JSON API for the same operations under `/api/v1/ecmper`.
//!
//! Upstream paths (every parameter a path segment, answers plain text):
//!
//! | method and path                              | answer                                              |
//! |----------------------------------------------|-----------------------------------------------------|
//! | `PUT /add/<prefix>/<preflen>/<nexthop>`      | 200 `Route: P/L to NH enqueued`; 400 `invalid route` if already queued |
//! | `PUT /del/<prefix>/<preflen>/<nexthop>`      | same, for the delete queue                          |
//! | `PUT /install`                               | 200 (empty); 500 with the reason                    |
//! | `PUT /neigh/add/<nh_addr>/<port>/<dstmac>`   | 200 (empty)                                         |
//! | `PUT /neigh/del/<nh_addr>`                   | 200 (empty); 404 when there is no such neighbour    |
//! | `PUT /clear`                                 | 200 (empty)                                         |
//! | `GET /tables`, `GET /tables/<name>`          | 200, the text dump (upstream's line format)         |
//!
//! `<nexthop>` is a dotted quad or `connected`. Malformed segments answer 400 with a message
//! naming the field (upstream: Flask 404 or 500); an unknown port 400; an unknown table name
//! 404. On a switch whose pipeline has no `ecmper` stage, every path answers 501.
//! See [`dataplane::stages::ecmper::control`] for what `/install` does in each mode.
//!
//! Native (`/api/v1/ecmper`, JSON, errors `{"error": ...}`):
//!
//! | method and path                   | body / answer                                            |
//! |-----------------------------------|----------------------------------------------------------|
//! | `GET /api/v1/ecmper`              | [`EcmperStatus`]: mode, config, routes, pending, generations |
//! | `GET /api/v1/ecmper/routes`       | installed routes                                         |
//! | `POST /api/v1/ecmper/routes`      | [`RouteJson`] queued for add (409 if already queued)     |
//! | `DELETE /api/v1/ecmper/routes`    | [`RouteJson`] queued for delete                          |
//! | `GET /api/v1/ecmper/pending`      | `{"add": [...], "del": [...]}`                           |
//! | `POST /api/v1/ecmper/install`     | [`InstallOutcome`]                                       |
//! | `GET /api/v1/ecmper/generations`  | [`GenerationInfo`] list, current first                   |
//! | `GET /api/v1/ecmper/neigh`        | [`NeighJson`] list                                       |
//! | `PUT /api/v1/ecmper/neigh`        | [`NeighJson`]: insert or modify                          |
//! | `DELETE /api/v1/ecmper/neigh/{nh_addr}` | remove (404 if absent)                             |
//! | `POST /api/v1/ecmper/clear`       | empty everything, as `/clear`                            |

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use dataplane::stages::ecmper::control::{
    self as ec, EcmperError, EcmperHandle, GenerationInfo, InstallOutcome, Route,
};
use dataplane::stages::ecmper::{EcmperConfig, Mode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{AppError, AppJson};
use crate::state::AppState;

/// The upstream paths, at the root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/add/{prefix}/{preflen}/{nexthop}", put(add))
        .route("/del/{prefix}/{preflen}/{nexthop}", put(del))
        .route("/install", put(install))
        .route("/neigh/add/{nh_addr}/{port}/{dstmac}", put(neigh_add))
        .route("/neigh/del/{nh_addr}", put(neigh_del))
        .route("/clear", put(clear))
        .route("/tables", get(tables))
        .route("/tables/{name}", get(table))
}

/// The native routes, relative to `/api/v1/ecmper`.
pub fn native_router() -> Router<AppState> {
    Router::new()
        .route("/", get(n_status))
        .route(
            "/routes",
            get(n_routes).post(n_route_add).delete(n_route_del),
        )
        .route("/pending", get(n_pending))
        .route("/install", post(n_install))
        .route("/generations", get(n_generations))
        .route("/neigh", get(n_neigh).put(n_neigh_put))
        .route("/neigh/{nh_addr}", delete(n_neigh_del))
        .route("/clear", post(n_clear))
}

/// A plain-text answer, as Flask's `make_response` gives.
struct Text(StatusCode, String);

impl IntoResponse for Text {
    fn into_response(self) -> Response {
        (
            self.0,
            [("content-type", "text/html; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

fn ok(body: impl Into<String>) -> Text {
    Text(StatusCode::OK, body.into())
}

/// The switch's `ecmper` handle, or 501 naming what is missing.
fn handle(st: &AppState) -> Result<Arc<EcmperHandle>, AppError> {
    ec::handle_of(&st.switch).ok_or_else(|| {
        AppError::Unsupported(
            "this switch's pipeline has no 'ecmper' stage; the c4bmv2 endpoints need one".into(),
        )
    })
}

/// The status an [`EcmperError`] answers with.
fn status_of(e: &EcmperError) -> StatusCode {
    match e {
        EcmperError::Field { .. } | EcmperError::AlreadyQueued { .. } => StatusCode::BAD_REQUEST,
        EcmperError::Table(t) if t.is_not_found() => StatusCode::NOT_FOUND,
        EcmperError::Table(_) => StatusCode::BAD_REQUEST,
        EcmperError::TooManyEntries { .. } | EcmperError::Gone => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Upstream-style answer of an error: plain text.
fn text_err(e: &EcmperError) -> Text {
    Text(status_of(e), e.to_string())
}

fn app_err(e: AppError) -> Text {
    Text(e.status(), e.to_string())
}

/// The same error in the native JSON shape.
fn json_err(e: EcmperError) -> AppError {
    let m = e.to_string();
    match e {
        EcmperError::AlreadyQueued { route } => {
            AppError::Conflict(format!("route {route} is already queued"))
        }
        other => match status_of(&other) {
            StatusCode::NOT_FOUND => AppError::NotFound(m),
            StatusCode::BAD_REQUEST => AppError::BadRequest(m),
            _ => AppError::Internal(m),
        },
    }
}

/// A port path segment or JSON value: a number the switch has.
fn port_of(st: &AppState, s: &str) -> Result<u16, AppError> {
    let n: u128 = s
        .trim()
        .parse()
        .map_err(|_| AppError::BadRequest(format!("port: '{s}' is not a port number")))?;
    st.check_port_id(n)
        .map_err(|e| e.context("port"))
        .map(|()| n as u16)
}

fn addr_of(field: &'static str, s: &str) -> Result<Ipv4Addr, EcmperError> {
    s.trim().parse().map_err(|_| EcmperError::Field {
        field,
        message: format!("'{s}' is not an IPv4 address"),
    })
}

type Segs3 = Path<(String, String, String)>;

async fn add(State(st): State<AppState>, Path((p, l, nh)): Segs3) -> Text {
    queue(&st, &p, &l, &nh, true)
}

async fn del(State(st): State<AppState>, Path((p, l, nh)): Segs3) -> Text {
    queue(&st, &p, &l, &nh, false)
}

fn queue(st: &AppState, p: &str, l: &str, nh: &str, add: bool) -> Text {
    let h = match handle(st) {
        Ok(h) => h,
        Err(e) => return app_err(e),
    };
    let res = Route::parse(p, l, nh).and_then(|r| {
        if add {
            h.queue_add(r)?;
        } else {
            h.queue_del(r)?;
        }
        Ok(r.preflen)
    });
    match res {
        // Upstream echoes the prefix and next hop as given, the length as Flask's int.
        Ok(len) => ok(format!("Route: {p}/{len} to {nh} enqueued")),
        Err(e) => text_err(&e),
    }
}

async fn install(State(st): State<AppState>) -> Text {
    let h = match handle(&st) {
        Ok(h) => h,
        Err(e) => return app_err(e),
    };
    let _w = st.lock_multi_write();
    match h.install() {
        Ok(o) => {
            tracing::info!(
                changed = o.changed,
                generation = o.generation,
                routes = o.routes,
                "ecmper install"
            );
            ok("")
        }
        Err(e) => {
            tracing::warn!(error = %e, "ecmper install failed");
            Text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

async fn neigh_add(
    State(st): State<AppState>,
    Path((addr, port, mac)): Path<(String, String, String)>,
) -> Text {
    let h = match handle(&st) {
        Ok(h) => h,
        Err(e) => return app_err(e),
    };
    let port = match port_of(&st, &port) {
        Ok(p) => p,
        Err(e) => return app_err(e),
    };
    let res = addr_of("nh_addr", &addr)
        .and_then(|a| Ok((a, ec::parse_mac(&mac)?)))
        .and_then(|(a, m)| h.neigh_add(a, port, m));
    match res {
        Ok(()) => ok(""),
        Err(e) => text_err(&e),
    }
}

async fn neigh_del(State(st): State<AppState>, Path(addr): Path<String>) -> Text {
    let h = match handle(&st) {
        Ok(h) => h,
        Err(e) => return app_err(e),
    };
    match addr_of("nh_addr", &addr).and_then(|a| h.neigh_del(a)) {
        Ok(()) => ok(""),
        Err(e) => text_err(&e),
    }
}

async fn clear(State(st): State<AppState>) -> Text {
    let h = match handle(&st) {
        Ok(h) => h,
        Err(e) => return app_err(e),
    };
    let _w = st.lock_multi_write();
    match h.clear() {
        Ok(()) => ok(""),
        Err(e) => text_err(&e),
    }
}

async fn tables(State(st): State<AppState>) -> Text {
    match handle(&st) {
        Ok(h) => ok(h.dump_all()),
        Err(e) => app_err(e),
    }
}

async fn table(State(st): State<AppState>, Path(name): Path<String>) -> Text {
    let h = match handle(&st) {
        Ok(h) => h,
        Err(e) => return app_err(e),
    };
    match h.dump(&name, false) {
        Some(s) => ok(s),
        None => Text(
            StatusCode::NOT_FOUND,
            format!(
                "name: no table '{name}' (known: {})",
                h.dump_names().join(", ")
            ),
        ),
    }
}

/// A route in the native API: `prefix` in CIDR form (`10.0.10.0/32`), `nexthop` a dotted
/// quad or `connected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteJson {
    pub prefix: String,
    pub nexthop: String,
}

impl RouteJson {
    /// The API view of a route.
    pub fn of(r: &Route) -> RouteJson {
        RouteJson {
            prefix: format!("{}/{}", r.prefix, r.preflen),
            nexthop: r.nexthop_str(),
        }
    }

    fn parse(&self) -> Result<Route, EcmperError> {
        let (p, l) = self
            .prefix
            .split_once('/')
            .ok_or_else(|| EcmperError::Field {
                field: "prefix",
                message: format!("'{}' is not in CIDR form (a.b.c.d/len)", self.prefix),
            })?;
        Route::parse(p, l, &self.nexthop)
    }
}

/// A `neigh` entry in the native API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighJson {
    pub nh_addr: String,
    pub port: u16,
    /// `aa:bb:cc:dd:ee:ff`.
    pub dst_mac: String,
}

/// `GET /api/v1/ecmper`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EcmperStatus {
    pub mode: Mode,
    pub config: EcmperConfig,
    pub routes: Vec<RouteJson>,
    pub pending_add: Vec<RouteJson>,
    pub pending_del: Vec<RouteJson>,
    pub generations: Vec<GenerationInfo>,
}

fn routes_json(v: &[Route]) -> Vec<RouteJson> {
    v.iter().map(RouteJson::of).collect()
}

async fn n_status(State(st): State<AppState>) -> Result<AppJson<EcmperStatus>, AppError> {
    let h = handle(&st)?;
    let (a, d) = h.pending();
    Ok(AppJson(EcmperStatus {
        mode: h.mode(),
        config: h.config(),
        routes: routes_json(&h.routes()),
        pending_add: routes_json(&a),
        pending_del: routes_json(&d),
        generations: h.generations(),
    }))
}

async fn n_routes(State(st): State<AppState>) -> Result<AppJson<Vec<RouteJson>>, AppError> {
    Ok(AppJson(routes_json(&handle(&st)?.routes())))
}

async fn n_route_add(
    State(st): State<AppState>,
    AppJson(r): AppJson<RouteJson>,
) -> Result<AppJson<Value>, AppError> {
    let h = handle(&st)?;
    let r = r.parse().map_err(json_err)?;
    h.queue_add(r).map_err(json_err)?;
    Ok(AppJson(
        json!({"queued": "add", "route": RouteJson::of(&r)}),
    ))
}

async fn n_route_del(
    State(st): State<AppState>,
    AppJson(r): AppJson<RouteJson>,
) -> Result<AppJson<Value>, AppError> {
    let h = handle(&st)?;
    let r = r.parse().map_err(json_err)?;
    h.queue_del(r).map_err(json_err)?;
    Ok(AppJson(
        json!({"queued": "del", "route": RouteJson::of(&r)}),
    ))
}

async fn n_pending(State(st): State<AppState>) -> Result<AppJson<Value>, AppError> {
    let (a, d) = handle(&st)?.pending();
    Ok(AppJson(
        json!({"add": routes_json(&a), "del": routes_json(&d)}),
    ))
}

async fn n_install(State(st): State<AppState>) -> Result<AppJson<InstallOutcome>, AppError> {
    let h = handle(&st)?;
    let _w = st.lock_multi_write();
    Ok(AppJson(h.install().map_err(json_err)?))
}

async fn n_generations(
    State(st): State<AppState>,
) -> Result<AppJson<Vec<GenerationInfo>>, AppError> {
    Ok(AppJson(handle(&st)?.generations()))
}

async fn n_neigh(State(st): State<AppState>) -> Result<AppJson<Vec<NeighJson>>, AppError> {
    let v = handle(&st)?.neighbours().map_err(json_err)?;
    Ok(AppJson(
        v.into_iter()
            .map(|(a, mac, port)| NeighJson {
                nh_addr: a.to_string(),
                port,
                dst_mac: mac
                    .to_be_bytes()
                    .iter()
                    .skip(2)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            })
            .collect(),
    ))
}

async fn n_neigh_put(
    State(st): State<AppState>,
    AppJson(n): AppJson<NeighJson>,
) -> Result<AppJson<NeighJson>, AppError> {
    let h = handle(&st)?;
    st.check_port_id(u128::from(n.port))
        .map_err(|e| e.context("port"))?;
    let a = addr_of("nh_addr", &n.nh_addr).map_err(json_err)?;
    let mac = ec::parse_mac(&n.dst_mac).map_err(|e| match e {
        EcmperError::Field { message, .. } => AppError::BadRequest(format!("dst_mac: {message}")),
        other => json_err(other),
    })?;
    h.neigh_add(a, n.port, mac).map_err(json_err)?;
    Ok(AppJson(n))
}

async fn n_neigh_del(
    State(st): State<AppState>,
    Path(addr): Path<String>,
) -> Result<StatusCode, AppError> {
    let h = handle(&st)?;
    let a = addr_of("nh_addr", &addr).map_err(json_err)?;
    h.neigh_del(a).map_err(json_err)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn n_clear(State(st): State<AppState>) -> Result<AppJson<Value>, AppError> {
    let h = handle(&st)?;
    let _w = st.lock_multi_write();
    h.clear().map_err(json_err)?;
    Ok(AppJson(json!({"status": "cleared"})))
}
