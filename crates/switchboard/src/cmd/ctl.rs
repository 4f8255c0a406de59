//! `switchboard ctl`: a command-line client of a running switch's REST API.

use anyhow::{Context, bail};
use control::client::Client;
use serde_json::{Map, Value};
use tables::EntryJson;

#[derive(clap::Args)]
pub struct CtlArgs {
    /// Base URL of the switch's REST API.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:5000",
        env = "SWITCHBOARD_API"
    )]
    api: String,
    /// Print the raw JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCommand,
}

#[derive(clap::Subcommand)]
enum CtlCommand {
    /// List the tables with their sizes and hit counters.
    Tables,
    /// Show one table's schema: keys, actions, default action, size.
    Schema { table: String },
    /// Dump a table's entries with their counters.
    Dump { table: String },
    /// Insert an entry: `ctl add forward --key hdr.ipv4.dst_addr=192.168.12.2 --action set_egress_port --param port=140`.
    Add(EntryArgs),
    /// Modify an existing entry (same arguments as add).
    Modify(EntryArgs),
    /// Delete the entry with this key.
    Delete {
        table: String,
        /// Key field as FIELD=VALUE (repeat for multi-field keys).
        #[arg(long = "key", value_name = "FIELD=VALUE", required = true)]
        key: Vec<String>,
    },
    /// Set a table's default action.
    Default {
        table: String,
        #[arg(long)]
        action: String,
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Show the ports with their counters.
    Ports,
    /// Show the pipeline: stages in order and their tables.
    Pipeline,
    /// POST a JSON body to a seed-compatible endpoint, e.g. `ctl post /updateForward '{"ipv4":"192.168.12.2","sw_port":148}'`.
    Post { path: String, body: Option<String> },
}

#[derive(clap::Args)]
struct EntryArgs {
    table: String,
    /// Key field as FIELD=VALUE (repeat for multi-field keys). Values: numbers, IPv4/IPv6, MACs, a/len for lpm, v&&&mask for ternary.
    #[arg(long = "key", value_name = "FIELD=VALUE", required = true)]
    key: Vec<String>,
    #[arg(long)]
    action: String,
    /// Action parameter as NAME=VALUE.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Priority (ternary tables).
    #[arg(long, default_value_t = 0)]
    priority: i32,
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    for it in items {
        let Some((k, v)) = it.split_once('=') else {
            bail!("{what} '{it}' must be written NAME=VALUE");
        };
        m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
    }
    Ok(m)
}

impl EntryArgs {
    fn entry(&self) -> anyhow::Result<EntryJson> {
        Ok(EntryJson {
            key: pairs(&self.key, "--key")?,
            action: self.action.clone(),
            params: pairs(&self.params, "--param")?,
            priority: self.priority,
        })
    }
}

pub fn run(a: CtlArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.api);
    let out: Value = match &a.cmd {
        CtlCommand::Tables => c.tables()?,
        CtlCommand::Schema { table } => c.table(table)?,
        CtlCommand::Dump { table } => c.entries(table)?,
        CtlCommand::Add(e) => c.insert(&e.table, &e.entry()?)?,
        CtlCommand::Modify(e) => c.modify(&e.table, &e.entry()?)?,
        CtlCommand::Delete { table, key } => c.delete(table, &pairs(key, "--key")?)?,
        CtlCommand::Default {
            table,
            action,
            params,
        } => c.set_default(table, action, &pairs(params, "--param")?)?,
        CtlCommand::Ports => c.ports()?,
        CtlCommand::Pipeline => c.pipeline()?,
        CtlCommand::Post { path, body } => {
            let body: Value = match body {
                Some(b) => serde_json::from_str(b).context("the body is not valid JSON")?,
                None => Value::Object(Map::new()),
            };
            let (status, v) = c.compat(path, &body)?;
            if !(200..300).contains(&status) {
                bail!("{path}: HTTP {status}: {v}");
            }
            v
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &a.cmd {
        CtlCommand::Tables => print_tables(&out),
        CtlCommand::Dump { .. } => print_entries(&out),
        CtlCommand::Ports => print_ports(&out),
        _ => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .get("tables")
            .or_else(|| o.get("entries"))
            .or_else(|| o.get("ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => vec![],
    }
}

fn print_tables(v: &Value) {
    println!(
        "{:<20} {:>8} {:>8} {:>12} {:>12}",
        "table", "entries", "size", "hits", "misses"
    );
    for t in list(v) {
        // Hits and misses sit at the top level, or under "stats" in a single table's answer.
        let stat = |k: &str| {
            t.get(k)
                .or_else(|| t.get("stats").and_then(|st| st.get(k)))
                .cloned()
        };
        println!(
            "{:<20} {:>8} {:>8} {:>12} {:>12}",
            s(&t["name"]),
            s(t.get("entries").unwrap_or(&Value::Null)),
            s(t.get("size").unwrap_or(&Value::Null)),
            s(&stat("hits").unwrap_or(Value::Null)),
            s(&stat("misses").unwrap_or(Value::Null)),
        );
    }
}

fn fmt_map(v: &Value) -> String {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect::<Vec<_>>()
            .join(" "),
        None => s(v),
    }
}

fn print_entries(v: &Value) {
    let entries = list(v);
    for e in &entries {
        println!(
            "{}  ->  {}({})  packets={} bytes={}",
            fmt_map(&e["key"]),
            s(&e["action"]),
            fmt_map(e.get("params").unwrap_or(&Value::Null)),
            s(e.get("packets").unwrap_or(&Value::Null)),
            s(e.get("bytes").unwrap_or(&Value::Null)),
        );
    }
    println!("({} entries)", entries.len());
}

fn print_ports(v: &Value) {
    println!(
        "{:>6} {:<9} {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}  drops",
        "port", "backend", "target", "rx_pkts", "tx_pkts", "rx_drop", "tx_drop", "rx_err"
    );
    for p in list(v) {
        let c = p.get("counters").cloned().unwrap_or(Value::Null);
        println!(
            "{:>6} {:<9} {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            s(&p["id"]),
            s(&p["backend"]),
            s(&p["target"]),
            s(c.get("rx_packets").unwrap_or(&Value::Null)),
            s(c.get("tx_packets").unwrap_or(&Value::Null)),
            s(c.get("rx_dropped").unwrap_or(&Value::Null)),
            s(c.get("tx_dropped").unwrap_or(&Value::Null)),
            s(c.get("rx_errors").unwrap_or(&Value::Null)),
            fmt_map(c.get("drops").unwrap_or(&Value::Null)),
        );
    }
}
