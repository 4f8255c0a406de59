//! API tests: the router driven with `oneshot` (no socket) over a switch with three memory
//! ports, plus one test through a real socket with the blocking client.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use dataplane::port::memory::{MemoryHandle, MemoryPort};
use dataplane::{Port, Switch, SwitchConfig, Worker};
use packet::wire::EthernetAddress;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::app;

const CONFIG: &str = r#"
[pipeline]
stages = ["arp_forward", "forward"]

[[entry]]
table = "forward"
key = { "hdr.ipv4.dst_addr" = "192.168.12.2" }
action = "set_egress_port"
params = { port = 140 }

[[entry]]
table = "forward"
key = { "hdr.ipv4.dst_addr" = "192.168.12.100" }
action = "set_egress_port"
params = { port = 132 }

[[entry]]
table = "arp_forward"
key = { "hdr.arp.target_proto_addr" = "192.168.12.2" }
action = "set_egress_port"
params = { port = 140 }
"#;

const PORTS: [u16; 3] = [132, 140, 148];

struct Rig {
    switch: Arc<Switch>,
    worker: Worker,
    /// Memory port handles, in `PORTS` order.
    handles: Vec<MemoryHandle>,
    app: Router,
}

fn rig() -> Rig {
    rig_with(CONFIG)
}

fn rig_with(config: &str) -> Rig {
    let cfg = SwitchConfig::parse(config, Path::new("test.toml")).expect("config parses");
    let mut ports: Vec<Box<dyn Port>> = Vec::new();
    let mut handles = Vec::new();
    for id in PORTS {
        let (p, h) = MemoryPort::new(id);
        ports.push(Box::new(p));
        handles.push(h);
    }
    let a = dataplane::assemble_with_ports(&cfg, ports).expect("switch assembles");
    Rig {
        app: app(Arc::clone(&a.switch)),
        switch: a.switch,
        worker: a.worker,
        handles,
    }
}

/// Sends a request; returns the status and the body (JSON, or a JSON string for text).
async fn call(app: &Router, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(path);
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .expect("request builds");
    let resp = app.clone().oneshot(req).await.expect("router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body reads");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

async fn get(app: &Router, path: &str) -> (StatusCode, Value) {
    call(app, "GET", path, None).await
}

async fn send(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(app, method, path, Some(&body.to_string())).await
}

/// The error message of an error answer, checked to be the `{"error": ...}` shape.
fn err(v: &Value) -> &str {
    v.get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[track_caller]
fn assert_err(got: (StatusCode, Value), status: StatusCode, needles: &[&str]) {
    assert_eq!(got.0, status, "body: {}", got.1);
    let m = err(&got.1);
    for n in needles {
        assert!(m.contains(n), "error {m:?} should contain {n:?}");
    }
}

/// (key, action, params) of every entry of a table, via the API.
async fn entries(app: &Router, table: &str) -> Vec<(String, String, Value)> {
    let (s, v) = get(app, &format!("/api/v1/tables/{table}/entries")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array()
        .expect("entries is an array")
        .iter()
        .map(|e| {
            let key = e["key"].as_object().expect("key object");
            let k = key
                .values()
                .next()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (
                k,
                e["action"].as_str().unwrap_or("").to_owned(),
                e["params"].clone(),
            )
        })
        .collect()
}

fn fwd_entry(ip: &str, port: Value) -> Value {
    json!({"key": {"hdr.ipv4.dst_addr": ip}, "action": "set_egress_port", "params": {"port": port}})
}

// ----- native: tables ---------------------------------------------------------------------

#[tokio::test]
async fn tables_list_and_schema() {
    let r = rig();
    let (s, v) = get(&r.app, "/api/v1/tables").await;
    assert_eq!(s, StatusCode::OK);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let fwd = list.iter().find(|t| t["name"] == "forward").unwrap();
    assert_eq!(fwd["size"], 1024);
    assert_eq!(fwd["entries"], 2);
    assert_eq!(fwd["hits"], 0);
    let arp = list.iter().find(|t| t["name"] == "arp_forward").unwrap();
    assert_eq!(arp["size"], 64);
    assert_eq!(arp["entries"], 1);

    let (s, v) = get(&r.app, "/api/v1/tables/forward").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["keys"],
        json!([{"name": "hdr.ipv4.dst_addr", "bits": 32, "match_kind": "exact"}])
    );
    let with_mac = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "set_egress_port_with_mac")
        .unwrap();
    assert_eq!(
        with_mac["params"],
        json!([{"name": "port", "bits": 16}, {"name": "dst_mac", "bits": 48}])
    );
    assert_eq!(
        v["default_action"],
        json!({"action": "NoAction", "params": {}})
    );
    assert_eq!(v["const_default"], false);
    assert_eq!(v["size"], 1024);
    assert_eq!(v["entries"], 2);

    let (_, v) = get(&r.app, "/api/v1/tables/arp_forward").await;
    assert_eq!(v["const_default"], true);

    assert_err(
        get(&r.app, "/api/v1/tables/nope").await,
        StatusCode::NOT_FOUND,
        &["nope"],
    );
    assert_err(
        get(&r.app, "/api/v1/tables/nope/entries").await,
        StatusCode::NOT_FOUND,
        &["nope"],
    );
}

#[tokio::test]
async fn entry_insert_modify_delete() {
    let r = rig();
    let path = "/api/v1/tables/forward/entries";
    let (s, v) = send(&r.app, "POST", path, fwd_entry("10.0.0.1", json!(148))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["key"]["hdr.ipv4.dst_addr"], "10.0.0.1");
    assert_eq!(v["packets"], 0);
    // The canonical form: 0x0a000002 in hex is the same address.
    let (s, _) = send(&r.app, "POST", path, fwd_entry("0x0a000002", json!("148"))).await;
    assert_eq!(s, StatusCode::CREATED);
    let e = entries(&r.app, "forward").await;
    assert_eq!(e.len(), 4);
    assert_eq!(e[3].0, "10.0.0.2");
    assert_eq!(e[3].2, json!({"port": 148}));

    assert_err(
        send(&r.app, "POST", path, fwd_entry("10.0.0.1", json!(140))).await,
        StatusCode::CONFLICT,
        &["already exists", "10.0.0.1"],
    );

    let (s, v) = send(
        &r.app,
        "PUT",
        path,
        json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "action": "set_egress_port_with_mac",
               "params": {"port": 140, "dst_mac": "02:42:c0:a8:0c:02"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["action"], "set_egress_port_with_mac");
    let e = entries(&r.app, "forward").await;
    let one = e.iter().find(|e| e.0 == "10.0.0.1").unwrap();
    assert_eq!(one.2, json!({"port": 140, "dst_mac": "02:42:c0:a8:0c:02"}));

    assert_err(
        send(&r.app, "PUT", path, fwd_entry("10.0.0.77", json!(140))).await,
        StatusCode::NOT_FOUND,
        &["10.0.0.77"],
    );

    let del = json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}});
    let (s, v) = send(&r.app, "DELETE", path, del.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["key"]["hdr.ipv4.dst_addr"], "10.0.0.1");
    assert_err(
        send(&r.app, "DELETE", path, del).await,
        StatusCode::NOT_FOUND,
        &["10.0.0.1"],
    );
    assert_err(
        send(&r.app, "DELETE", path, json!({"key": {"dst": "10.0.0.1"}})).await,
        StatusCode::BAD_REQUEST,
        &["unknown key field 'dst'"],
    );
    assert_eq!(entries(&r.app, "forward").await.len(), 3);
}

#[tokio::test]
async fn entry_bad_input_is_400_naming_the_field() {
    let r = rig();
    let path = "/api/v1/tables/forward/entries";
    let post = |b: Value| send(&r.app, "POST", path, b);

    assert_err(
        post(json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "action": "teleport"})).await,
        StatusCode::BAD_REQUEST,
        &["unknown action 'teleport'"],
    );
    assert_err(
        post(fwd_entry("192.168.12.300", json!(140))).await,
        StatusCode::BAD_REQUEST,
        &["hdr.ipv4.dst_addr", "192.168.12.300"],
    );
    assert_err(
        post(fwd_entry("10.0.0.1", json!(70000))).await,
        StatusCode::BAD_REQUEST,
        &["parameter 'port'", "16 bits"],
    );
    assert_err(
        post(fwd_entry("10.0.0.1", json!(999))).await,
        StatusCode::BAD_REQUEST,
        &["unknown port 999", "parameter 'port'", "132, 140, 148"],
    );
    assert_err(
        post(
            json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "action": "set_egress_port_with_mac",
                    "params": {"port": 140}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["missing parameter 'dst_mac'"],
    );
    assert_err(
        post(json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "params": {"port": 140}})).await,
        StatusCode::BAD_REQUEST,
        &["missing field `action`"],
    );
    assert_err(
        post(json!({"key": 5, "action": "NoAction"})).await,
        StatusCode::BAD_REQUEST,
        &["key", "invalid type"],
    );
    assert_err(
        post(json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "action": "NoAction", "priority": "high"}))
            .await,
        StatusCode::BAD_REQUEST,
        &["priority"],
    );
    assert_err(
        call(&r.app, "POST", path, Some("{\"key\": ")).await,
        StatusCode::BAD_REQUEST,
        &["invalid JSON body"],
    );
    assert_err(
        call(&r.app, "POST", path, None).await,
        StatusCode::BAD_REQUEST,
        &["body is empty"],
    );
    // Nothing of the above was installed.
    assert_eq!(entries(&r.app, "forward").await.len(), 2);

    // Table full is a 400 too: arp_forward holds 64.
    let apath = "/api/v1/tables/arp_forward/entries";
    for i in 0..63u32 {
        let ip = Ipv4Addr::from(0x0a01_0000 + i).to_string();
        let (s, v) = send(
            &r.app,
            "POST",
            apath,
            json!({"key": {"hdr.arp.target_proto_addr": ip}, "action": "set_egress_port", "params": {"port": 148}}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    assert_err(
        send(
            &r.app,
            "POST",
            apath,
            json!({"key": {"hdr.arp.target_proto_addr": "10.2.0.0"}, "action": "set_egress_port", "params": {"port": 148}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["arp_forward", "full"],
    );
}

#[tokio::test]
async fn batch_is_all_or_nothing_and_names_the_op() {
    let r = rig();
    let path = "/api/v1/tables/forward/entries/batch";
    let ins = |ip: &str| json!({"op": "insert", "key": {"hdr.ipv4.dst_addr": ip}, "action": "set_egress_port", "params": {"port": 148}});

    // Duplicate inside the batch at op #2: 409, nothing applied.
    let (s, v) = send(
        &r.app,
        "POST",
        path,
        json!({"ops": [ins("10.0.0.1"), ins("10.0.0.2"), ins("10.0.0.1")]}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(err(&v).contains("batch op #2"), "{v}");
    assert_eq!(entries(&r.app, "forward").await.len(), 2);

    // A value that does not parse at op #1: 400 naming it.
    assert_err(
        send(
            &r.app,
            "POST",
            path,
            json!({"ops": [ins("10.0.0.1"), ins("10.0.0.300")]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["batch op #1", "10.0.0.300"],
    );
    // Unknown port at op #0.
    assert_err(
        send(
            &r.app,
            "POST",
            path,
            json!({"ops": [{"op": "modify", "key": {"hdr.ipv4.dst_addr": "192.168.12.2"}, "action": "set_egress_port", "params": {"port": 7}}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["batch op #0", "unknown port 7"],
    );
    // Insert without action.
    assert_err(
        send(
            &r.app,
            "POST",
            path,
            json!({"ops": [{"op": "insert", "key": {"hdr.ipv4.dst_addr": "10.0.0.1"}}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["batch op #0", "action"],
    );
    // Unknown op kind: serde's path names the member.
    assert_err(
        send(
            &r.app,
            "POST",
            path,
            json!({"ops": [{"op": "upsert", "key": {}}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["ops[0].op", "upsert"],
    );
    // Deleting an absent key in a batch: 404.
    assert_err(
        send(&r.app, "POST", path, json!({"ops": [ins("10.0.0.1"), {"op": "delete", "key": {"hdr.ipv4.dst_addr": "10.9.9.9"}}]})).await,
        StatusCode::NOT_FOUND,
        &["batch op #1"],
    );
    assert_eq!(entries(&r.app, "forward").await.len(), 2);

    // A good batch: insert, modify, delete together.
    let (s, v) = send(
        &r.app,
        "POST",
        path,
        json!({"ops": [
            ins("10.0.0.1"),
            {"op": "modify", "key": {"hdr.ipv4.dst_addr": "192.168.12.2"}, "action": "set_egress_port", "params": {"port": 148}},
            {"op": "delete", "key": {"hdr.ipv4.dst_addr": "192.168.12.100"}},
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], 3);
    let e = entries(&r.app, "forward").await;
    assert_eq!(
        e.iter()
            .map(|e| (e.0.as_str(), e.2["port"].as_u64()))
            .collect::<Vec<_>>(),
        vec![("192.168.12.2", Some(148)), ("10.0.0.1", Some(148))]
    );
}

#[tokio::test]
async fn default_action_and_clear() {
    let r = rig();
    let (s, v) = send(
        &r.app,
        "PUT",
        "/api/v1/tables/forward/default",
        json!({"action": "set_egress_port", "params": {"port": 148}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"action": "set_egress_port", "params": {"port": 148}})
    );
    let (_, t) = get(&r.app, "/api/v1/tables/forward").await;
    assert_eq!(t["default_action"]["params"]["port"], 148);
    let (_, d) = get(&r.app, "/api/v1/tables/forward/default").await;
    assert_eq!(d["action"], "set_egress_port");

    assert_err(
        send(
            &r.app,
            "PUT",
            "/api/v1/tables/arp_forward/default",
            json!({"action": "NoAction"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["const"],
    );
    assert_err(
        send(
            &r.app,
            "PUT",
            "/api/v1/tables/forward/default",
            json!({"action": "set_egress_port", "params": {"port": 999}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["unknown port 999"],
    );
    assert_err(
        send(
            &r.app,
            "PUT",
            "/api/v1/tables/forward/default",
            json!({"params": {}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["action"],
    );

    let (s, v) = call(&r.app, "DELETE", "/api/v1/tables/forward/entries/all", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["removed"], 2);
    assert!(entries(&r.app, "forward").await.is_empty());
    // Only that table.
    assert_eq!(entries(&r.app, "arp_forward").await.len(), 1);
}

#[tokio::test]
async fn ports_pipeline_and_unknown_routes() {
    let r = rig();
    let (s, v) = get(&r.app, "/api/v1/ports").await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![132, 140, 148]);
    let (s, v) = get(&r.app, "/api/v1/ports/140").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["backend"], "memory");
    assert_eq!(v["target"], "mem140");
    assert_eq!(v["counters"]["rx_packets"], 0);
    assert_eq!(v["counters"]["drops"], json!({}));
    assert_err(
        get(&r.app, "/api/v1/ports/999").await,
        StatusCode::NOT_FOUND,
        &["unknown port 999"],
    );
    assert_err(
        get(&r.app, "/api/v1/ports/abc").await,
        StatusCode::BAD_REQUEST,
        &["'abc'"],
    );

    let (s, v) = get(&r.app, "/api/v1/pipeline").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!([{"name": "arp_forward", "tables": ["arp_forward"]}, {"name": "forward", "tables": ["forward"]}])
    );

    assert_err(
        get(&r.app, "/nowhere").await,
        StatusCode::NOT_FOUND,
        &["/nowhere"],
    );
    assert_err(
        get(&r.app, "/addForward").await,
        StatusCode::METHOD_NOT_ALLOWED,
        &["GET"],
    );
}

// ----- p4containerflow compatibility -------------------------------------------------------

#[tokio::test]
async fn compat_add_forward() {
    let r = rig();
    let (s, v) = send(
        &r.app,
        "POST",
        "/addForward",
        json!({"dst_addr": "192.168.12.1", "port": 148}),
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "success"})));
    // Port as a numeric string, with a MAC.
    let (s, v) = send(
        &r.app,
        "POST",
        "/addForward",
        json!({"dst_addr": "192.168.12.3", "port": "132", "dst_mac": "02:42:C0:A8:0C:03"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let fwd = entries(&r.app, "forward").await;
    assert!(fwd.contains(&(
        "192.168.12.1".into(),
        "set_egress_port".into(),
        json!({"port": 148})
    )));
    assert!(fwd.contains(&(
        "192.168.12.3".into(),
        "set_egress_port_with_mac".into(),
        json!({"port": 132, "dst_mac": "02:42:c0:a8:0c:03"})
    )));
    let arp = entries(&r.app, "arp_forward").await;
    assert!(arp.contains(&(
        "192.168.12.1".into(),
        "set_egress_port".into(),
        json!({"port": 148})
    )));
    assert!(arp.contains(&(
        "192.168.12.3".into(),
        "set_egress_port".into(),
        json!({"port": 132})
    )));

    // Errors: all 400 in the upstream shape.
    let add = |b: Value| send(&r.app, "POST", "/addForward", b);
    assert_err(
        add(json!({})).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters: dst_addr, port"],
    );
    assert_err(
        call(&r.app, "POST", "/addForward", None).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters"],
    );
    assert_err(
        add(json!({"dst_addr": "192.168.12.9"})).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters: port"],
    );
    assert_err(
        add(json!({"dst_addr": "192.168.12.300", "port": 140})).await,
        StatusCode::BAD_REQUEST,
        &["dst_addr", "192.168.12.300"],
    );
    assert_err(
        add(json!({"dst_addr": "192.168.12.9", "port": 999})).await,
        StatusCode::BAD_REQUEST,
        &["port", "unknown port 999"],
    );
    assert_err(
        add(json!({"dst_addr": "192.168.12.9", "port": "fourty"})).await,
        StatusCode::BAD_REQUEST,
        &["port", "fourty"],
    );
    assert_err(
        add(json!({"dst_addr": "192.168.12.9", "port": 140, "dst_mac": "02:42"})).await,
        StatusCode::BAD_REQUEST,
        &["dst_mac"],
    );
    assert_err(
        add(json!({"dst_addr": "192.168.12.1", "port": 140})).await,
        StatusCode::BAD_REQUEST,
        &["already exists", "192.168.12.1"],
    );
    assert_err(
        call(&r.app, "POST", "/addForward", Some("[1, 2]")).await,
        StatusCode::BAD_REQUEST,
        &["JSON object"],
    );
    assert_err(
        call(&r.app, "POST", "/addForward", Some("{\"dst_addr\": ")).await,
        StatusCode::BAD_REQUEST,
        &["invalid JSON"],
    );
    assert_eq!(entries(&r.app, "forward").await.len(), 4);
    assert_eq!(entries(&r.app, "arp_forward").await.len(), 3);
}

#[tokio::test]
async fn compat_arp_full_and_add_forward_rollback() {
    let r = rig();
    // One entry comes from the config; 63 more fill the table.
    for i in 0..63u32 {
        let ip = Ipv4Addr::from(0x0a00_0000 + i).to_string();
        let (s, v) = send(
            &r.app,
            "POST",
            "/addArpForward",
            json!({"target_ip": ip, "port": 148}),
        )
        .await;
        assert_eq!(
            (s, &v),
            (StatusCode::OK, &json!({"status": "success"})),
            "entry {i}"
        );
    }
    assert_err(
        send(
            &r.app,
            "POST",
            "/addArpForward",
            json!({"target_ip": "10.1.0.0", "port": 148}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["arp_forward", "full"],
    );
    assert_err(
        send(&r.app, "POST", "/addArpForward", json!({"port": 148})).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters: target_ip"],
    );
    // addArpForward touched only arp_forward.
    let fwd_before = entries(&r.app, "forward").await;
    assert_eq!(fwd_before.len(), 2);

    // addForward: the forward insert succeeds, arp_forward refuses, forward is rolled back.
    assert_err(
        send(
            &r.app,
            "POST",
            "/addForward",
            json!({"dst_addr": "192.168.12.50", "port": 140}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["full", "rolled back"],
    );
    assert_eq!(entries(&r.app, "forward").await, fwd_before);
    assert_eq!(entries(&r.app, "arp_forward").await.len(), 64);
}

#[tokio::test]
async fn compat_update_forward() {
    let r = rig();
    let (s, v) = send(
        &r.app,
        "POST",
        "/updateForward",
        json!({"ipv4": "192.168.12.2", "sw_port": 148, "dst_mac": "02:42:c0:a8:0c:02"}),
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "success"})));
    let fwd = entries(&r.app, "forward").await;
    assert!(fwd.contains(&(
        "192.168.12.2".into(),
        "set_egress_port_with_mac".into(),
        json!({"port": 148, "dst_mac": "02:42:c0:a8:0c:02"})
    )));
    let arp = entries(&r.app, "arp_forward").await;
    assert_eq!(
        arp,
        vec![(
            "192.168.12.2".into(),
            "set_egress_port".into(),
            json!({"port": 148})
        )]
    );

    // Back to 140 without a MAC: plain set_egress_port again.
    let (s, _) = send(
        &r.app,
        "POST",
        "/updateForward",
        json!({"ipv4": "192.168.12.2", "sw_port": "140"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let fwd = entries(&r.app, "forward").await;
    assert!(fwd.contains(&(
        "192.168.12.2".into(),
        "set_egress_port".into(),
        json!({"port": 140})
    )));

    let upd = |b: Value| send(&r.app, "POST", "/updateForward", b);
    assert_err(
        upd(json!({"ipv4": "192.168.12.77", "sw_port": 148})).await,
        StatusCode::BAD_REQUEST,
        &["ipv4", "no forward entry", "192.168.12.77"],
    );
    // .100 has a forward entry but no arp_forward one: refused before any write.
    assert_err(
        upd(json!({"ipv4": "192.168.12.100", "sw_port": 148})).await,
        StatusCode::BAD_REQUEST,
        &["no arp_forward entry"],
    );
    assert!(entries(&r.app, "forward").await.contains(&(
        "192.168.12.100".into(),
        "set_egress_port".into(),
        json!({"port": 132})
    )));
    assert_err(
        upd(json!({})).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters: ipv4, sw_port"],
    );
    assert_err(
        upd(json!({"ipv4": "192.168.12.2", "sw_port": 999})).await,
        StatusCode::BAD_REQUEST,
        &["sw_port", "unknown port 999"],
    );
}

#[tokio::test]
async fn compat_cleanup_reinitialize_and_lb_endpoints() {
    let r = rig();
    let config_fwd = entries(&r.app, "forward").await;
    let config_arp = entries(&r.app, "arp_forward").await;
    let (s, _) = send(
        &r.app,
        "POST",
        "/addForward",
        json!({"dst_addr": "192.168.12.1", "port": 148}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = call(&r.app, "POST", "/cleanup", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert!(
        v["message"].as_str().unwrap().contains("removed 5 entries"),
        "{v}"
    );
    assert!(entries(&r.app, "forward").await.is_empty());
    assert!(entries(&r.app, "arp_forward").await.is_empty());

    let (s, _) = send(
        &r.app,
        "POST",
        "/addForward",
        json!({"dst_addr": "192.168.12.1", "port": 148}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = send(&r.app, "POST", "/reinitialize", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert!(v["message"].is_string());
    assert_eq!(entries(&r.app, "forward").await, config_fwd);
    assert_eq!(entries(&r.app, "arp_forward").await, config_arp);

    assert_err(
        send(
            &r.app,
            "POST",
            "/migrateNode",
            json!({"old_ipv4": "192.168.12.2", "new_ipv4": "192.168.12.3"}),
        )
        .await,
        StatusCode::NOT_IMPLEMENTED,
        &["node_selector"],
    );
    assert_err(
        call(&r.app, "POST", "/deleteClientSnat", None).await,
        StatusCode::NOT_IMPLEMENTED,
        &["client_snat"],
    );
}

// ----- metrics and counters ----------------------------------------------------------------

fn mac(last: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0x42, 0xc0, 0xa8, 0x0c, last])
}

fn udp(dst: Ipv4Addr) -> Vec<u8> {
    packet::build::pad(
        packet::build::udp_ipv4(
            mac(100),
            mac(2),
            Ipv4Addr::new(192, 168, 12, 100),
            dst,
            40000,
            8080,
            b"hello",
        ),
        60,
    )
}

#[tokio::test]
async fn metrics_and_counters_after_traffic() {
    let mut r = rig();
    let client = &r.handles[0]; // port 132
    client.inject(&udp(Ipv4Addr::new(192, 168, 12, 2)));
    client.inject(&udp(Ipv4Addr::new(10, 9, 9, 9)));
    client.inject(&packet::build::pad(
        packet::build::arp_request(
            mac(100),
            Ipv4Addr::new(192, 168, 12, 100),
            Ipv4Addr::new(192, 168, 12, 2),
        ),
        60,
    ));
    let n = r.worker.poll_once().expect("poll");
    assert_eq!(n, 3);
    assert_eq!(
        r.handles[1].take_sent().len(),
        2,
        "UDP and ARP reach port 140"
    );

    let (s, body) = get(&r.app, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = body.as_str().expect("metrics is text");
    for line in [
        "# TYPE switchboard_port_rx_packets_total counter",
        "# HELP switchboard_port_drops_total ",
        "# TYPE switchboard_uptime_seconds gauge",
        "switchboard_port_rx_packets_total{port=\"132\"} 3",
        "switchboard_port_tx_packets_total{port=\"140\"} 2",
        "switchboard_port_tx_packets_total{port=\"148\"} 0",
        "switchboard_port_tx_dropped_total{port=\"140\"} 0",
        "switchboard_port_drops_total{port=\"132\",reason=\"forward_miss\"} 1",
        "switchboard_port_drops_total{port=\"132\",reason=\"arp_forward_miss\"} 0",
        "switchboard_table_hits_total{table=\"forward\"} 1",
        "switchboard_table_misses_total{table=\"forward\"} 1",
        "switchboard_table_hits_total{table=\"arp_forward\"} 1",
        "switchboard_table_entries{table=\"forward\"} 2",
        "switchboard_table_size{table=\"arp_forward\"} 64",
        "switchboard_port_info{port=\"140\",backend=\"memory\",target=\"mem140\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in\n{text}"
        );
    }
    let rx_bytes = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_port_rx_bytes_total{port=\"132\"} "))
        .expect("rx bytes series");
    assert_eq!(rx_bytes, "180", "three 60-byte frames");
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchboard_uptime_seconds "))
    );

    // The same numbers through the JSON API.
    let (_, p) = get(&r.app, "/api/v1/ports/132").await;
    assert_eq!(p["counters"]["rx_packets"], 3);
    assert_eq!(p["counters"]["rx_dropped"], 1);
    assert_eq!(p["counters"]["drops"], json!({"forward_miss": 1}));
    let (_, e) = get(&r.app, "/api/v1/tables/forward/entries").await;
    let hit = e
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"]["hdr.ipv4.dst_addr"] == "192.168.12.2")
        .unwrap();
    assert_eq!(hit["packets"], 1);
    assert_eq!(hit["bytes"], 60);
    let (_, t) = get(&r.app, "/api/v1/tables/forward").await;
    assert_eq!(
        (t["hits"].as_u64(), t["misses"].as_u64()),
        (Some(1), Some(1))
    );

    // A table write made through the API steers the next packets.
    let (s, _) = send(
        &r.app,
        "POST",
        "/updateForward",
        json!({"ipv4": "192.168.12.2", "sw_port": 148}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    client.inject(&udp(Ipv4Addr::new(192, 168, 12, 2)));
    r.worker.poll_once().expect("poll");
    assert_eq!(r.handles[2].take_sent().len(), 1, "now out of port 148");
    assert!(r.handles[1].take_sent().is_empty());
    assert_eq!(r.switch.ports[2].counters.snapshot().tx_packets, 1);
}

// ----- over a real socket, with the client ------------------------------------------------

#[test]
fn real_socket_with_client() {
    use crate::api::{EntryInfo, PortJson, StageJson, TableInfo, TableSummary};
    use crate::client::{Client, ClientError};
    use crate::error::ControlError;

    let r = rig();
    let server = crate::spawn_server(Arc::clone(&r.switch), "127.0.0.1:0".parse().unwrap())
        .expect("server starts");
    let addr = server.addr();
    let c = Client::new(&server.url());

    let tables: Vec<TableSummary> = Client::decode(c.tables().expect("tables")).expect("typed");
    assert_eq!(
        tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["arp_forward", "forward"]
    );
    let info: TableInfo = Client::decode(c.table("forward").expect("table")).expect("typed");
    assert_eq!(info.entries, 2);
    assert_eq!(info.keys[0].name, dataplane::stages::forward::KEY);

    let e: tables::EntryJson =
        serde_json::from_value(fwd_entry("10.0.0.1", json!(148))).expect("entry json");
    let got: EntryInfo = Client::decode(c.insert("forward", &e).expect("insert")).expect("typed");
    assert_eq!(got.entry.key["hdr.ipv4.dst_addr"], "10.0.0.1");
    let dup = c.insert("forward", &e).expect_err("duplicate refused");
    assert_eq!(dup.status(), Some(409));
    assert!(dup.to_string().contains("already exists"), "{dup}");
    let missing = c.table("nope").expect_err("404");
    assert_eq!(missing.status(), Some(404));
    assert!(
        missing.to_string().contains("no table named 'nope'"),
        "{missing}"
    );

    let mut m = e.clone();
    m.params.insert("port".into(), json!(132));
    assert_eq!(
        c.modify("forward", &m).expect("modify")["params"]["port"],
        132
    );
    let deleted = c.delete("forward", &e.key).expect("delete");
    assert_eq!(deleted["deleted"]["params"]["port"], 132);
    let all: Vec<EntryInfo> =
        Client::decode(c.entries("forward").expect("entries")).expect("typed");
    assert_eq!(all.len(), 2);

    let n = c
        .batch(
            "forward",
            &serde_json::from_value::<Vec<crate::api::BatchOp>>(json!([
                {"op": "insert", "key": {"hdr.ipv4.dst_addr": "10.0.0.5"}, "action": "NoAction"}
            ]))
            .unwrap(),
        )
        .expect("batch");
    assert_eq!(n["applied"], 1);
    let d = c
        .set_default(
            "forward",
            "set_egress_port",
            &serde_json::from_value(json!({"port": 140})).unwrap(),
        )
        .expect("default");
    assert_eq!(d["params"]["port"], 140);

    let ports: Vec<PortJson> = Client::decode(c.ports().expect("ports")).expect("typed");
    assert_eq!(ports.len(), 3);
    assert_eq!(c.port(148).expect("port")["target"], "mem148");
    let stages: Vec<StageJson> = Client::decode(c.pipeline().expect("pipeline")).expect("typed");
    assert_eq!(stages[0].name, "arp_forward");
    let wrong = Client::decode::<Vec<PortJson>>(c.pipeline().expect("pipeline"))
        .expect_err("stages are not ports");
    assert!(wrong.to_string().contains("PortJson"), "{wrong}");
    assert!(
        c.metrics()
            .expect("metrics")
            .contains("switchboard_table_entries{table=\"forward\"} 3")
    );

    let (s, v) = c
        .compat(
            "/addForward",
            &json!({"dst_addr": "192.168.12.1", "port": 148}),
        )
        .expect("compat");
    assert_eq!((s, v), (200, json!({"status": "success"})));
    let (s, v) = c
        .compat("addForward", &json!({"port": 148}))
        .expect("compat");
    assert_eq!(s, 400);
    assert_eq!(v["error"], "Missing parameters: dst_addr");
    assert_eq!(c.clear("arp_forward").expect("clear")["removed"], 2);

    // A second server on the same address: the bind error names it.
    match crate::spawn_server(Arc::clone(&r.switch), addr) {
        Err(e @ ControlError::Bind { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}")
        }
        other => panic!("expected a bind error, got {other:?}"),
    }

    server.stop().expect("clean stop");
    match c.tables() {
        Err(e @ ClientError::Connect { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}")
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn serve_stops_on_shutdown_future() {
    let r = rig();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Find a free port, then serve on it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let task = tokio::spawn(crate::serve(Arc::clone(&r.switch), addr, async move {
        let _ = rx.await;
    }));
    // Wait until it accepts connections.
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(up, "server did not come up on {addr}");
    tx.send(()).unwrap();
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("server stopped in time")
        .expect("task joined");
    assert!(res.is_ok(), "{res:?}");

    // Bind failure names the address.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let e = crate::serve(Arc::clone(&r.switch), busy_addr, async {})
        .await
        .expect_err("address in use");
    assert!(e.to_string().contains(&busy_addr.to_string()), "{e}");
}

// ----- small pieces ------------------------------------------------------------------------

#[test]
fn table_errors_map_to_statuses() {
    use crate::error::AppError;
    use tables::TableError;
    let t = || "forward".to_owned();
    let status = |e: TableError| AppError::from(e).status();
    assert_eq!(
        status(TableError::UnknownTable { table: t() }),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(TableError::NoSuchEntry {
            table: t(),
            key: "k".into()
        }),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(TableError::DuplicateKey {
            table: t(),
            key: "k".into()
        }),
        StatusCode::CONFLICT
    );
    assert_eq!(
        status(TableError::TableFull {
            table: t(),
            size: 1
        }),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(TableError::ConstDefault { table: t() }),
        StatusCode::BAD_REQUEST
    );
    let batch = TableError::Batch {
        table: t(),
        index: 4,
        source: Box::new(TableError::DuplicateKey {
            table: t(),
            key: "k".into(),
        }),
    };
    let e = AppError::from(batch);
    assert_eq!(e.status(), StatusCode::CONFLICT);
    assert!(e.to_string().contains("#4"), "{e}");
    // The compat endpoints answer every client mistake with 400, but not server faults.
    assert_eq!(
        AppError::Conflict("x".into()).into_compat().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        AppError::Partial("x".into()).into_compat().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn internal_errors_do_not_leak_details() {
    use axum::response::IntoResponse;
    let resp = crate::error::AppError::Internal("secret detail".into()).into_response();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("\"error\""), "{text}");
}

#[test]
fn client_base_url_and_connect_error() {
    use crate::client::{Client, ClientError};
    let c = Client::new("127.0.0.1:1/");
    assert_eq!(c.base_url(), "http://127.0.0.1:1");
    match c.tables() {
        Err(e @ ClientError::Connect { .. }) => {
            assert!(e.to_string().contains("127.0.0.1:1"), "{e}")
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
}

// ----- load balancer: members, groups, /migrateNode, /deleteClientSnat ---------------------

/// CONFIG plus the load balancer as the upstream controller starts it.
fn lb_config(service_port: u16) -> String {
    CONFIG.replace(
        r#"stages = ["arp_forward", "forward"]"#,
        &format!(
            "stages = [\"arp_forward\", \"load_balancer\", \"forward\"]\n\n\
             [stage.load_balancer]\nservice_port = {service_port}"
        ),
    ) + &format!(
        r#"
[[entry]]
table = "client_snat"
key = {{ "hdr.tcp.src_port" = {service_port} }}
action = "set_rewrite_src"
params = {{ new_src = "192.168.12.10" }}

[[member]]
table = "node_selector"
id = 1
action = "set_rewrite_dst"
params = {{ new_dst = "192.168.12.2" }}

[[group]]
table = "node_selector"
id = 1
members = [1]

[[entry]]
table = "node_selector"
key = {{ "hdr.ipv4.dst_addr" = "192.168.12.10" }}
group = 1
"#
    )
}

fn lb_rig() -> Rig {
    rig_with(&lb_config(8080))
}

async fn members(app: &Router) -> Value {
    let (s, v) = get(app, "/api/v1/tables/node_selector/members").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn members_and_groups_rest() {
    let r = lb_rig();
    let app = &r.app;
    assert_eq!(
        members(app).await,
        json!([{"id": 1, "action": "set_rewrite_dst", "params": {"new_dst": "192.168.12.2"}}])
    );
    let (s, v) = get(app, "/api/v1/tables/node_selector/groups").await;
    assert_eq!((s, v), (StatusCode::OK, json!([{"id": 1, "members": [1]}])));
    // The dump shows the selector and the entry's group.
    let (_, t) = get(app, "/api/v1/tables/node_selector").await;
    assert_eq!(t["selector"]["max_group_size"], 4);
    assert_eq!(t["selector"]["hash"], "crc16");
    assert_eq!(t["selector"]["fields"][3], "hdr.tcp.src_port");
    assert_eq!(t["selector"]["groups"], json!([{"id": 1, "members": [1]}]));
    assert_eq!(
        t["selector"]["members"][0]["params"]["new_dst"],
        "192.168.12.2"
    );
    let (_, t) = get(app, "/api/v1/tables/forward").await;
    assert!(t.get("selector").is_none(), "{t}");
    let (_, e) = get(app, "/api/v1/tables/node_selector/entries").await;
    assert_eq!(e[0]["group"], 1);
    assert_eq!(e[0]["key"]["hdr.ipv4.dst_addr"], "192.168.12.10");
    assert!(e[0].get("action").is_none(), "{e}");

    let url = "/api/v1/tables/node_selector/members";
    let m2 = json!({"id": 2, "action": "set_rewrite_dst", "params": {"new_dst": "192.168.12.3"}});
    let (s, v) = send(app, "POST", url, m2.clone()).await;
    assert_eq!((s, v), (StatusCode::CREATED, m2.clone()));
    assert_err(
        send(app, "POST", url, m2).await,
        StatusCode::CONFLICT,
        &["member 2 already exists"],
    );
    assert_err(
        send(
            app,
            "POST",
            url,
            json!({"id": 3, "action": "set_rewrite_dst", "params": {"new_dst": "1.2.3"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["new_dst", "not an IPv4 address"],
    );
    assert_err(
        send(
            app,
            "POST",
            url,
            json!({"id": 3, "action": "set_rewrite_dst"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["missing parameter 'new_dst'"],
    );
    assert_err(
        send(app, "POST", url, json!({"id": "x", "action": "NoAction"})).await,
        StatusCode::BAD_REQUEST,
        &["id"],
    );
    let (s, v) = send(
        app,
        "PUT",
        url,
        json!({"id": 2, "action": "set_rewrite_dst", "params": {"new_dst": "192.168.12.4"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_err(
        send(app, "PUT", url, json!({"id": 9, "action": "NoAction"})).await,
        StatusCode::NOT_FOUND,
        &["no action profile member 9"],
    );
    // Groups: modify to two members, size and reference errors.
    let gurl = "/api/v1/tables/node_selector/groups";
    let (s, v) = send(app, "PUT", gurl, json!({"id": 1, "members": [1, 2]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_err(
        send(app, "PUT", gurl, json!({"id": 1, "members": [1, 7]})).await,
        StatusCode::NOT_FOUND,
        &["no action profile member 7"],
    );
    assert_err(
        send(app, "POST", gurl, json!({"id": 2, "members": []})).await,
        StatusCode::BAD_REQUEST,
        &["maximum of 1 groups"],
    );
    assert_err(
        send(
            app,
            "PUT",
            gurl,
            json!({"id": 1, "members": [1, 2, 3, 4, 5]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["max group size is 4"],
    );
    // Deletes in the wrong order are refused with 409, naming the user.
    assert_err(
        call(
            app,
            "DELETE",
            "/api/v1/tables/node_selector/members/2",
            None,
        )
        .await,
        StatusCode::CONFLICT,
        &["member 2 is still used by group 1"],
    );
    assert_err(
        call(app, "DELETE", "/api/v1/tables/node_selector/groups/1", None).await,
        StatusCode::CONFLICT,
        &["group 1 is still used by entry", "192.168.12.10"],
    );
    assert_err(
        call(
            app,
            "DELETE",
            "/api/v1/tables/node_selector/groups/abc",
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["group id 'abc'"],
    );
    // Entries: group references, direct actions refused.
    let eurl = "/api/v1/tables/node_selector/entries";
    assert_err(
        send(app, "POST", eurl, json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "action": "set_rewrite_dst", "params": {"new_dst": "1.2.3.4"}})).await,
        StatusCode::BAD_REQUEST,
        &["uses an action selector"],
    );
    assert_err(
        send(
            app,
            "POST",
            eurl,
            json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "group": 5}),
        )
        .await,
        StatusCode::NOT_FOUND,
        &["no selector group 5"],
    );
    let (s, v) = send(
        app,
        "POST",
        eurl,
        json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "member": 2}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["member"], 2);
    let (s, v) = send(
        app,
        "POST",
        &format!("{eurl}/batch"),
        json!({"ops": [
            {"op": "delete", "key": {"hdr.ipv4.dst_addr": "10.0.0.1"}},
            {"op": "insert", "key": {"hdr.ipv4.dst_addr": "10.0.0.2"}, "group": 1},
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Members/groups on a table without a selector.
    assert_err(
        get(app, "/api/v1/tables/forward/members").await,
        StatusCode::BAD_REQUEST,
        &["has no action selector"],
    );
    assert_err(
        send(
            app,
            "POST",
            "/api/v1/tables/forward/entries",
            json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.1"}, "group": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["has no action selector"],
    );
    // Remove in dependency order.
    let (s, _) = send(
        app,
        "DELETE",
        eurl,
        json!({"key": {"hdr.ipv4.dst_addr": "10.0.0.2"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(
        app,
        "DELETE",
        eurl,
        json!({"key": {"hdr.ipv4.dst_addr": "192.168.12.10"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(app, "DELETE", "/api/v1/tables/node_selector/groups/1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], json!({"id": 1, "members": [1, 2]}));
    let (s, v) = call(
        app,
        "DELETE",
        "/api/v1/tables/node_selector/members/2",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["params"]["new_dst"], "192.168.12.4");
    assert_err(
        call(
            app,
            "DELETE",
            "/api/v1/tables/node_selector/members/2",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        &["no action profile member 2"],
    );
}

#[tokio::test]
async fn compat_migrate_node() {
    let r = lb_rig();
    let app = &r.app;
    let migrate = |body: Value| send(app, "POST", "/migrateNode", body);
    // Bad input: missing and malformed fields are named.
    assert_err(
        migrate(json!({"old_ipv4": "192.168.12.2"})).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters: new_ipv4"],
    );
    assert_err(
        call(app, "POST", "/migrateNode", None).await,
        StatusCode::BAD_REQUEST,
        &["Missing parameters: old_ipv4, new_ipv4"],
    );
    assert_err(
        migrate(json!({"old_ipv4": "192.168.12", "new_ipv4": "192.168.12.3"})).await,
        StatusCode::BAD_REQUEST,
        &["old_ipv4", "not an IPv4 address"],
    );
    assert_err(
        migrate(json!({"old_ipv4": "192.168.12.2", "new_ipv4": 7})).await,
        StatusCode::BAD_REQUEST,
        &["new_ipv4"],
    );
    assert_err(
        migrate(json!({"old_ipv4": "192.168.12.77", "new_ipv4": "192.168.12.3"})).await,
        StatusCode::BAD_REQUEST,
        &[
            "old_ipv4",
            "no node_selector member rewrites to 192.168.12.77",
            "192.168.12.2",
        ],
    );
    // Equal: a no-op.
    let before = entries(app, "forward").await;
    let (s, v) = migrate(json!({"old_ipv4": "192.168.12.2", "new_ipv4": "192.168.12.2"})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "success"})));
    assert_eq!(entries(app, "forward").await, before);
    // .3 has no forward entry: forward + arp_forward on .2's port (140), then the member.
    let (s, v) = migrate(json!({"old_ipv4": "192.168.12.2", "new_ipv4": "192.168.12.3"})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "success"})));
    assert_eq!(
        members(app).await[0]["params"]["new_dst"],
        "192.168.12.3",
        "member re-pointed"
    );
    let fwd = entries(app, "forward").await;
    assert!(
        fwd.contains(&(
            "192.168.12.3".into(),
            "set_egress_port".into(),
            json!({"port": 140})
        )),
        "{fwd:?}"
    );
    let arp = entries(app, "arp_forward").await;
    assert!(
        arp.contains(&(
            "192.168.12.3".into(),
            "set_egress_port".into(),
            json!({"port": 140})
        )),
        "{arp:?}"
    );
    // Back to .2, which has forward entries: nothing added, just the member.
    let n_fwd = entries(app, "forward").await.len();
    let (s, _) = migrate(json!({"old_ipv4": "192.168.12.3", "new_ipv4": "192.168.12.2"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(entries(app, "forward").await.len(), n_fwd);
    assert_eq!(members(app).await[0]["params"]["new_dst"], "192.168.12.2");
    // Old node without a forward entry to take the port from: 400, nothing changed.
    let (s, _) = send(
        app,
        "PUT",
        "/api/v1/tables/node_selector/members",
        json!({"id": 1, "action": "set_rewrite_dst", "params": {"new_dst": "192.168.12.50"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_err(
        migrate(json!({"old_ipv4": "192.168.12.50", "new_ipv4": "192.168.12.51"})).await,
        StatusCode::BAD_REQUEST,
        &["old_ipv4", "no forward entry for 192.168.12.50"],
    );
    assert_eq!(members(app).await[0]["params"]["new_dst"], "192.168.12.50");
    // Without the load_balancer stage: 501 naming the table.
    assert_err(
        send(
            &rig().app,
            "POST",
            "/migrateNode",
            json!({"old_ipv4": "192.168.12.2", "new_ipv4": "192.168.12.3"}),
        )
        .await,
        StatusCode::NOT_IMPLEMENTED,
        &["node_selector"],
    );
}

#[tokio::test]
async fn compat_delete_client_snat_cleanup_and_reinitialize() {
    let r = lb_rig();
    let app = &r.app;
    let (s, v) = call(app, "POST", "/deleteClientSnat", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("Deleted") && m.contains("8080") && m.contains("192.168.12.10"),
        "{m}"
    );
    assert!(entries(app, "client_snat").await.is_empty());
    // Again: idempotent success, saying nothing was deleted.
    let (s, v) = call(app, "POST", "/deleteClientSnat", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("nothing to delete"),
        "{v}"
    );
    // Reinitialize restores it, with members, groups and the node_selector entry.
    let (s, v) = call(app, "POST", "/reinitialize", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(entries(app, "client_snat").await.len(), 1);
    // Cleanup removes entries, then groups, then members.
    let (s, v) = call(app, "POST", "/cleanup", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("removed 5 entries, 1 selector groups and 1 members"),
        "{m}"
    );
    assert!(entries(app, "node_selector").await.is_empty());
    assert_eq!(members(app).await, json!([]));
    let (_, g) = get(app, "/api/v1/tables/node_selector/groups").await;
    assert_eq!(g, json!([]));
    let (s, _) = call(app, "POST", "/reinitialize", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(members(app).await.as_array().unwrap().len(), 1);
    assert_eq!(entries(app, "node_selector").await.len(), 1);
    // /metrics still counts per table, the LB tables included.
    let (s, v) = get(app, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(
        text.contains("switchboard_table_entries{table=\"node_selector\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_table_entries{table=\"client_snat\"} 1"),
        "{text}"
    );
    // A configured service port is the one deleted.
    let r = rig_with(&lb_config(9000));
    let (s, v) = call(&r.app, "POST", "/deleteClientSnat", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("service port 9000"),
        "{v}"
    );
    assert!(entries(&r.app, "client_snat").await.is_empty());
    // Without the stage: 501 naming the table.
    assert_err(
        call(&rig().app, "POST", "/deleteClientSnat", None).await,
        StatusCode::NOT_IMPLEMENTED,
        &["client_snat"],
    );
}

#[tokio::test]
async fn traffic_through_the_load_balancer_after_migrate_node() {
    let mut r = lb_rig();
    // .3 on port 148 so the migration is visible on the wire.
    let (s, _) = send(
        &r.app,
        "POST",
        "/addForward",
        json!({"dst_addr": "192.168.12.3", "port": 148}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let syn = |sport| {
        packet::build::tcp_ipv4(
            mac(100),
            mac(99),
            Ipv4Addr::new(192, 168, 12, 100),
            Ipv4Addr::new(192, 168, 12, 10),
            sport,
            8080,
            1,
            0,
            packet::wire::tcp::Flags::SYN,
            b"",
        )
    };
    r.handles[0].inject(&syn(40000));
    r.worker.poll_once().unwrap();
    let out = r.handles[1].take_sent();
    assert_eq!(out.len(), 1, "VIP traffic goes to .2 on port 140");
    assert_eq!(&out[0][30..34], &[192, 168, 12, 2]);
    let (s, _) = send(
        &r.app,
        "POST",
        "/migrateNode",
        json!({"old_ipv4": "192.168.12.2", "new_ipv4": "192.168.12.3"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    r.handles[0].inject(&syn(40000));
    r.worker.poll_once().unwrap();
    let out = r.handles[2].take_sent();
    assert_eq!(out.len(), 1, "now to .3 on port 148");
    assert_eq!(&out[0][30..34], &[192, 168, 12, 3]);
}

// ---- ecmper: the c4bmv2 paths and the native /api/v1/ecmper ----

const ECMPER_COMPAT: &str =
    "[pipeline]\nstages = [\"ecmper\"]\n\n[stage.ecmper]\nmode = \"compat\"\n";
const ECMPER_RESILIENT: &str =
    "[pipeline]\nstages = [\"ecmper\"]\n\n[stage.ecmper]\nbuckets = 1009\n";

async fn put(app: &Router, path: &str) -> (StatusCode, Value) {
    call(app, "PUT", path, None).await
}

/// A text answer's body.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a text body: {v}"))
}

#[track_caller]
fn assert_text(got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert!(
        text(&got.1).contains(needle),
        "{:?} should contain {needle:?}",
        got.1
    );
}

#[tokio::test]
async fn c4bmv2_demo_script_compat() {
    let mut r = rig_with(ECMPER_COMPAT);
    let app = r.app.clone();
    assert_text(put(&app, "/clear").await, StatusCode::OK, "");
    assert_text(
        put(&app, "/neigh/add/10.0.0.1/140/02:03:04:05:06:01").await,
        StatusCode::OK,
        "",
    );
    assert_text(
        put(&app, "/neigh/add/10.0.0.2/148/02:03:04:05:06:02").await,
        StatusCode::OK,
        "",
    );
    assert_text(
        put(&app, "/neigh/add/10.0.1.99/132/02:03:04:05:06:99").await,
        StatusCode::OK,
        "",
    );
    assert_text(
        put(&app, "/add/10.0.10.0/32/10.0.0.1").await,
        StatusCode::OK,
        "Route: 10.0.10.0/32 to 10.0.0.1 enqueued",
    );
    assert_text(
        put(&app, "/add/10.0.10.0/32/10.0.0.1").await,
        StatusCode::BAD_REQUEST,
        "invalid route",
    );
    assert_text(put(&app, "/install").await, StatusCode::OK, "");
    assert_text(
        put(&app, "/add/10.0.10.0/32/10.0.0.2").await,
        StatusCode::OK,
        "enqueued",
    );
    assert_text(put(&app, "/install").await, StatusCode::OK, "");
    assert_text(
        get(&app, "/tables/ipv4_lpm").await,
        StatusCode::OK,
        "| Table SwitchIngress.ecmper.ipv4_lpm\n1 | match: dstAddr: 10.0.10.0/32 | action: set_nh_index( cur_nh_offset: 1 cur_nh_count: 8 prv_nh_offset: 1 prv_nh_count: 1 )",
    );
    assert_text(
        get(&app, "/tables/prv_nh").await,
        StatusCode::OK,
        "2 | match: nh_index: 1 | action: set_nexthop( nexthop: 10.0.0.1 )",
    );
    assert_text(
        get(&app, "/tables/neigh").await,
        StatusCode::OK,
        "match: nh_addr: 10.0.0.2 | action: set_output( dstMac: 02:03:04:05:06:02 port: 148 )",
    );
    let (s, all) = get(&app, "/tables").await;
    assert_eq!(s, StatusCode::OK);
    for t in ["ipv4_lpm", "cur_nh", "prv_nh", "neigh"] {
        assert!(
            text(&all).contains(&format!(" Table SwitchIngress.ecmper.{t}\n")),
            "{t}"
        );
    }
    assert_text(
        get(&app, "/tables/nope").await,
        StatusCode::NOT_FOUND,
        "nope",
    );

    // The reference flow goes to .2 (port 148); marked ToS 0x01 to .1 (port 140).
    let mut f = packet::build::tcp_ipv4(
        mac(99),
        mac(1),
        Ipv4Addr::new(10, 0, 1, 99),
        Ipv4Addr::new(10, 0, 10, 0),
        8081,
        80,
        1,
        1,
        packet::wire::tcp::Flags::ACK,
        b"GET",
    );
    r.handles[0].inject(&f);
    r.worker.poll_once().unwrap();
    assert_eq!(r.handles[2].take_sent().len(), 1, "cur: 10.0.0.2");
    f[15] = 0x01;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = !packet::checksum::data(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    r.handles[0].inject(&f);
    r.worker.poll_once().unwrap();
    assert_eq!(r.handles[1].take_sent().len(), 1, "prv: 10.0.0.1");

    assert_text(
        put(&app, "/del/10.0.10.0/32/10.0.0.2").await,
        StatusCode::OK,
        "Route: 10.0.10.0/32 to 10.0.0.2 enqueued",
    );
    assert_text(put(&app, "/neigh/del/10.0.0.2").await, StatusCode::OK, "");
    assert_text(
        put(&app, "/neigh/del/10.0.0.2").await,
        StatusCode::NOT_FOUND,
        "",
    );
    assert_eq!(
        get(&app, "/install").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_text(put(&app, "/clear").await, StatusCode::OK, "");
    let (_, lpm) = get(&app, "/tables/ipv4_lpm").await;
    assert!(!text(&lpm).contains("dstAddr"), "{lpm}");
    // p4containerflow paths coexist (and answer 501 without their stages).
    assert_eq!(
        send(&app, "POST", "/deleteClientSnat", json!({})).await.0,
        StatusCode::NOT_IMPLEMENTED
    );
}

#[tokio::test]
async fn c4bmv2_bad_input_is_4xx_naming_the_field() {
    let r = rig_with(ECMPER_COMPAT);
    let app = &r.app;
    for (path, status, needle) in [
        ("/add/10.0.10/32/10.0.0.1", 400, "prefix"),
        ("/add/10.0.10.1/24/10.0.0.1", 400, "prefix"),
        ("/add/10.0.10.0/33/10.0.0.1", 400, "preflen"),
        ("/add/10.0.10.0/x/10.0.0.1", 400, "preflen"),
        ("/del/10.0.10.0/32/nowhere", 400, "nexthop"),
        ("/neigh/add/10.0.0.1/999/02:03:04:05:06:01", 400, "port"),
        ("/neigh/add/10.0.0.1/-1/02:03:04:05:06:01", 400, "port"),
        ("/neigh/add/10.0.0.x/140/02:03:04:05:06:01", 400, "nh_addr"),
        ("/neigh/add/10.0.0.1/140/02:03:04:05:06", 400, "dstmac"),
        ("/neigh/add/10.0.0.1/140/02:03:04:05:06:zz", 400, "dstmac"),
        ("/neigh/del/256.0.0.1", 400, "nh_addr"),
        ("/add/10.0.10.0/32", 404, ""),
    ] {
        let (s, v) = put(app, path).await;
        assert_eq!(s.as_u16(), status, "{path}: {v}");
        let body = v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string());
        assert!(body.contains(needle), "{path}: {body}");
    }
    // Routes with connected next hops are fine.
    assert_text(
        put(app, "/add/10.0.1.0/24/connected").await,
        StatusCode::OK,
        "to connected enqueued",
    );
}

#[tokio::test]
async fn c4bmv2_paths_answer_501_without_an_ecmper_stage() {
    let r = rig();
    for (m, path) in [
        ("PUT", "/add/10.0.10.0/32/10.0.0.1"),
        ("PUT", "/del/10.0.10.0/32/10.0.0.1"),
        ("PUT", "/install"),
        ("PUT", "/neigh/add/10.0.0.1/140/02:03:04:05:06:01"),
        ("PUT", "/neigh/del/10.0.0.1"),
        ("PUT", "/clear"),
        ("GET", "/tables"),
        ("GET", "/tables/neigh"),
        ("GET", "/api/v1/ecmper"),
        ("POST", "/api/v1/ecmper/install"),
    ] {
        let (s, v) = call(&r.app, m, path, None).await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{m} {path}: {v}");
        assert!(v.to_string().contains("ecmper"), "{path}: {v}");
    }
    // The native API and p4containerflow are unaffected.
    assert_eq!(get(&r.app, "/api/v1/tables").await.0, StatusCode::OK);
    assert_eq!(
        send(&r.app, "POST", "/cleanup", json!({})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn native_ecmper_api_resilient() {
    let r = rig_with(ECMPER_RESILIENT);
    let app = &r.app;
    let (s, v) = get(app, "/api/v1/ecmper").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["mode"], "resilient");
    assert_eq!(v["config"]["generations"], 2);
    let route = |nh: &str| json!({"prefix": "10.0.10.0/32", "nexthop": nh});
    for nh in ["10.0.0.1", "10.0.0.2"] {
        let (s, v) = send(app, "POST", "/api/v1/ecmper/routes", route(nh)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    assert_err(
        send(app, "POST", "/api/v1/ecmper/routes", route("10.0.0.1")).await,
        StatusCode::CONFLICT,
        &["already queued"],
    );
    assert_err(
        send(
            app,
            "POST",
            "/api/v1/ecmper/routes",
            json!({"prefix": "10.0.10.0", "nexthop": "connected"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["prefix"],
    );
    assert_err(
        send(
            app,
            "POST",
            "/api/v1/ecmper/routes",
            json!({"prefix": "10.0.10.0/32"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["nexthop"],
    );
    let (_, p) = get(app, "/api/v1/ecmper/pending").await;
    assert_eq!(p["add"].as_array().unwrap().len(), 2);
    let (s, o) = call(app, "POST", "/api/v1/ecmper/install", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(o["changed"], true);
    assert_eq!(o["generation"], 1);
    let (_, o) = call(app, "POST", "/api/v1/ecmper/install", None).await;
    assert_eq!(o["changed"], false, "no pending change: no rotation");
    let (s, v) = send(app, "DELETE", "/api/v1/ecmper/routes", route("10.0.0.2")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    call(app, "POST", "/api/v1/ecmper/install", None).await;
    let (_, g) = get(app, "/api/v1/ecmper/generations").await;
    let g = g.as_array().unwrap();
    assert_eq!(g.len(), 3);
    assert_eq!(g[0]["routes"].as_array().unwrap().len(), 1);
    assert_eq!(g[1]["marker_dscp"], 7, "(1 << 2) | 0b11");
    let (_, rs) = get(app, "/api/v1/ecmper/routes").await;
    assert_eq!(
        rs,
        json!([{"prefix": "10.0.10.0/32", "nexthop": "10.0.0.1"}])
    );

    let n = json!({"nh_addr": "10.0.0.1", "port": 140, "dst_mac": "02:03:04:05:06:01"});
    assert_eq!(
        send(app, "PUT", "/api/v1/ecmper/neigh", n.clone()).await.0,
        StatusCode::OK
    );
    let (_, l) = get(app, "/api/v1/ecmper/neigh").await;
    assert_eq!(l, json!([n]));
    assert_err(
        send(
            app,
            "PUT",
            "/api/v1/ecmper/neigh",
            json!({"nh_addr": "10.0.0.1", "port": 7, "dst_mac": "02:03:04:05:06:01"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["port", "unknown port 7"],
    );
    assert_err(
        send(
            app,
            "PUT",
            "/api/v1/ecmper/neigh",
            json!({"nh_addr": "10.0.0.1", "port": 140, "dst_mac": "nope"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["dst_mac"],
    );
    assert_eq!(
        call(app, "DELETE", "/api/v1/ecmper/neigh/10.0.0.1", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_err(
        call(app, "DELETE", "/api/v1/ecmper/neigh/10.0.0.1", None).await,
        StatusCode::NOT_FOUND,
        &[],
    );
    // The c4bmv2 dump in resilient mode shows the generations.
    let (s, t) = get(app, "/tables/generations").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        text(&t).contains("10.0.10.0/32 -> [10.0.0.1] (1009 buckets)"),
        "{t}"
    );
    assert_text(
        get(app, "/tables/cur_nh").await,
        StatusCode::NOT_FOUND,
        "generations",
    );
    let (s, _) = call(app, "POST", "/api/v1/ecmper/clear", None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, g) = get(app, "/api/v1/ecmper/generations").await;
    assert_eq!(g.as_array().unwrap().len(), 1);
}
