//! Turning a [`SwitchConfig`] into a running switch: tables, stages, ports, worker.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tables::{Table, Tables};

use crate::config::{Backend, ConfigError, PortConfig, SwitchConfig};
use crate::counters::PortCounters;
use crate::engine::{IdleMode, Worker};
use crate::port::{Port, PortError};
use crate::stage::Stage;
use crate::stages::{arp_forward, ecmper, forward, iptfs, load_balancer};
use crate::switch::{PortInfo, StageInfo, Switch};

/// Names of the stages this build knows, for error messages and the API.
pub const STAGE_NAMES: &[&str] = &[
    arp_forward::TABLE,
    ecmper::STAGE,
    forward::TABLE,
    iptfs::STAGE,
    load_balancer::STAGE,
];

/// A built switch: the shared state and the worker that runs the ports.
pub struct Assembled {
    pub switch: Arc<Switch>,
    pub worker: Worker,
    pub stop_at_eof: bool,
    /// SCHED_FIFO priority for the worker thread, if the config asks for one.
    pub realtime_priority: Option<u8>,
}

/// Build a stage by name, creating and registering its tables. The `iptfs` stage's counter
/// handle goes to `iptfs_handle`, to be registered once the switch exists.
fn make_stage(
    name: &str,
    opts: Option<&toml::Value>,
    tables: &mut Tables,
    port_ids: &[u16],
    iptfs_handle: &mut Option<Arc<iptfs::IptfsHandle>>,
) -> Result<(Box<dyn Stage>, Vec<String>), String> {
    let mut table = |schema| -> Result<Arc<Table>, String> {
        let t = Table::new(schema).map_err(|e| e.to_string())?;
        tables.add(t).map_err(|e| e.to_string())
    };
    match name {
        forward::TABLE => {
            if opts.is_some() {
                return Err("stage 'forward' takes no options".into());
            }
            let t = table(forward::schema())?;
            Ok((
                Box::new(forward::Forward::new(t)),
                vec![forward::TABLE.into()],
            ))
        }
        arp_forward::TABLE => {
            let cfg: arp_forward::ArpForwardConfig = match opts {
                Some(v) => v
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| e.message().to_string())?,
                None => Default::default(),
            };
            let t = table(arp_forward::schema())?;
            Ok((
                Box::new(arp_forward::ArpForward::new(t, cfg)),
                vec![arp_forward::TABLE.into()],
            ))
        }
        load_balancer::STAGE => {
            // Checked here so a typo in the options fails at start, naming the field.
            load_balancer::LoadBalancerConfig::from_options(opts)?;
            let snat = table(load_balancer::client_snat_schema())?;
            let ns = Table::with_selector(
                load_balancer::node_selector_schema(),
                load_balancer::node_selector_selector(),
            )
            .map_err(|e| e.to_string())?;
            let ns = tables.add(ns).map_err(|e| e.to_string())?;
            Ok((
                Box::new(load_balancer::LoadBalancer::new(ns, snat)),
                vec![
                    load_balancer::NODE_SELECTOR.into(),
                    load_balancer::CLIENT_SNAT.into(),
                ],
            ))
        }
        ecmper::STAGE => {
            let cfg = ecmper::EcmperConfig::from_options(opts)?;
            let built = ecmper::Ecmper::build(cfg, table)?;
            Ok((Box::new(built.stage), built.tables))
        }
        iptfs::STAGE => {
            let st = iptfs::Iptfs::from_options(opts)?;
            // (No ports at all: table-only library use, as for entries.)
            if let Some(p) = st
                .ports()
                .find(|p| !port_ids.is_empty() && !port_ids.contains(p))
            {
                return Err(format!(
                    "an SA sends out of port {p}, which the switch does not have"
                ));
            }
            *iptfs_handle = Some(Arc::clone(st.handle()));
            Ok((Box::new(st), Vec::new()))
        }
        other => Err(format!(
            "unknown stage '{other}' (known: {})",
            STAGE_NAMES.join(", ")
        )),
    }
}

/// Open the backend of one configured port.
pub fn open_port(cfg: &SwitchConfig, p: &PortConfig) -> Result<Box<dyn Port>, PortError> {
    let iface = p.iface.clone().unwrap_or_default();
    Ok(match p.backend {
        Backend::Afpacket => Box::new(crate::port::afpacket::AfPacketPort::open(
            p.id,
            &iface,
            crate::port::afpacket::AfPacketOptions {
                detach_kernel_stack: !p.keep_kernel_stack,
                ring: p.ring,
                ..Default::default()
            },
        )?),
        Backend::Tap => Box::new(open_tap(p, &iface)?),
        Backend::Pcap => {
            let input = p.input.as_ref().map(|f| cfg.resolve(f));
            let output = p.output.as_ref().map(|f| cfg.resolve(f));
            Box::new(crate::port::pcap::PcapPort::open(
                p.id,
                input.as_deref(),
                output.as_deref(),
            )?)
        }
    })
}

/// A TAP port, opened from inside `p.netns` when one is given: TUNSETIFF finds and creates
/// devices in the opener's namespace, and the descriptor keeps working from any thread after.
fn open_tap(p: &PortConfig, iface: &str) -> Result<crate::port::tap::TapPort, PortError> {
    use crate::port::tap::TapPort;
    let open = || {
        if p.create {
            TapPort::create(p.id, iface)
        } else {
            TapPort::attach(p.id, iface)
        }
    };
    let Some(ns) = p.netns.as_deref().filter(|ns| !ns.is_empty()) else {
        return open();
    };
    xdp::netns::in_netns(ns, || Ok(open())).map_err(|e| PortError::Config {
        port: p.id,
        message: format!("tap '{iface}' in namespace '{ns}': {e}"),
    })?
}

/// A `port` parameter of `spec`'s action naming no port of `switch` (none checked
/// when the switch has no ports at all, as in table-only library use).
fn unknown_port(switch: &Switch, table: &str, spec: &tables::EntrySpec) -> Option<u128> {
    if switch.ports.is_empty() {
        return None;
    }
    let t = switch.tables.get(table).ok()?;
    let action = t.schema().action(spec.action.action)?;
    action
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name == "port")
        .map(|(k, _)| spec.action.param(k))
        .find(|&v| u16::try_from(v).map_or(true, |id| switch.port(id).is_none()))
}

/// Checks `[[member]]` and `[[group]]` sections one by one, so an error names the section's
/// line and field: the table exists and has an action selector, the member's action parses,
/// ids are unique, a group's members are declared members of the same table and fit the
/// selector's limits. (The install that follows re-checks everything.)
fn check_members_and_groups(cfg: &SwitchConfig, switch: &Switch) -> Result<(), ConfigError> {
    let table_of = |name: &str| switch.tables.get(name).map_err(|e| e.to_string());
    for (i, sm) in cfg.members.iter().enumerate() {
        let m = sm.get_ref();
        let at = sm.span().start;
        let res = table_of(&m.table).and_then(|t| {
            t.member_from_json(&tables::MemberJson {
                id: m.id,
                action: m.action.clone(),
                params: m.params.clone(),
            })
            .map_err(|e| e.to_string())
        });
        if let Err(e) = res {
            return Err(cfg.field_error(at, format!("member[{i}]"), e));
        }
        let dup = cfg.members[..i]
            .iter()
            .any(|o| o.get_ref().table == m.table && o.get_ref().id == m.id);
        if dup {
            return Err(cfg.field_error(
                at,
                format!("member[{i}].id"),
                format!("member {} of table '{}' is declared twice", m.id, m.table),
            ));
        }
    }
    for (i, sg) in cfg.groups.iter().enumerate() {
        let g = sg.get_ref();
        let at = sg.span().start;
        let t = table_of(&g.table).map_err(|e| cfg.field_error(at, format!("group[{i}]"), e))?;
        let Some(sel) = t.selector_schema() else {
            return Err(cfg.field_error(
                at,
                format!("group[{i}].table"),
                format!("table '{}' has no action selector", g.table),
            ));
        };
        if g.members.len() > sel.max_group_size {
            return Err(cfg.field_error(
                at,
                format!("group[{i}].members"),
                format!(
                    "{} members; max group size of '{}' is {}",
                    g.members.len(),
                    g.table,
                    sel.max_group_size
                ),
            ));
        }
        for m in &g.members {
            let declared = cfg
                .members
                .iter()
                .any(|o| o.get_ref().table == g.table && o.get_ref().id == *m);
            if !declared {
                return Err(cfg.field_error(
                    at,
                    format!("group[{i}].members"),
                    format!("no [[member]] with id {m} for table '{}'", g.table),
                ));
            }
        }
        let dup = cfg.groups[..i]
            .iter()
            .any(|o| o.get_ref().table == g.table && o.get_ref().id == g.id);
        if dup {
            return Err(cfg.field_error(
                at,
                format!("group[{i}].id"),
                format!("group {} of table '{}' is declared twice", g.id, g.table),
            ));
        }
    }
    Ok(())
}

/// Build everything from the config, opening the configured ports.
pub fn assemble(cfg: &SwitchConfig) -> Result<Assembled, ConfigError> {
    let mut ports = Vec::new();
    for (i, sp) in cfg.ports.iter().enumerate() {
        let port = open_port(cfg, sp.get_ref())
            .map_err(|e| cfg.field_error(sp.span().start, format!("port[{i}]"), e.to_string()))?;
        ports.push(port);
    }
    assemble_with_ports(cfg, ports)
}

/// Build from the config with ports supplied by the caller (tests use memory ports).
pub fn assemble_with_ports(
    cfg: &SwitchConfig,
    ports: Vec<Box<dyn Port>>,
) -> Result<Assembled, ConfigError> {
    let mut tables = Tables::new();
    let mut stages = Vec::new();
    let mut pipeline = Vec::new();
    let mut iptfs_handle = None;
    let port_ids: Vec<u16> = ports.iter().map(|p| p.id()).collect();
    if cfg.pipeline.stages.is_empty() {
        return Err(cfg.field_error(
            cfg.offset_of_line("stages"),
            "pipeline.stages",
            "the pipeline has no stages",
        ));
    }
    for (i, name) in cfg.pipeline.stages.iter().enumerate() {
        let (st, tnames) = make_stage(
            name,
            cfg.stage.get(name),
            &mut tables,
            &port_ids,
            &mut iptfs_handle,
        )
        .map_err(|m| {
            let at = cfg
                .offset_of_line(&format!("[stage.{name}]"))
                .max(cfg.offset_of_line("stages"));
            cfg.field_error(at, format!("pipeline.stages[{i}]"), m)
        })?;
        stages.push(st);
        pipeline.push(StageInfo {
            name: name.clone(),
            tables: tnames,
        });
    }
    for name in cfg.stage.keys() {
        if !cfg.pipeline.stages.contains(name) {
            return Err(cfg.field_error(
                0,
                format!("stage.{name}"),
                "options for a stage that is not in the pipeline",
            ));
        }
    }
    let mut infos = Vec::new();
    let mut with_counters = Vec::new();
    for p in ports {
        let counters = Arc::new(PortCounters::default());
        infos.push(PortInfo {
            id: p.id(),
            backend: p.backend(),
            target: p.target().to_string(),
            counters: Arc::clone(&counters),
        });
        with_counters.push((p, counters));
    }
    let switch = Switch {
        tables,
        ports: infos,
        pipeline,
        initial_entries: cfg.entries.iter().map(|e| e.get_ref().clone()).collect(),
        initial_members: cfg.members.iter().map(|m| m.get_ref().clone()).collect(),
        initial_groups: cfg.groups.iter().map(|g| g.get_ref().clone()).collect(),
        stage_options: cfg.stage.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
    };
    if let Some(h) = iptfs_handle {
        iptfs::handle::register(&switch.stop, h);
    }
    check_members_and_groups(cfg, &switch)?;
    // Check each initial entry on its own first, so the error points at its line.
    for (i, se) in cfg.entries.iter().enumerate() {
        let ie = se.get_ref();
        let res = switch
            .tables
            .get(&ie.table)
            .and_then(|t| t.entry_from_json(&ie.entry));
        let spec = match res {
            Ok(spec) => spec,
            Err(e) => {
                return Err(cfg.field_error(se.span().start, format!("entry[{i}]"), e.to_string()));
            }
        };
        // A group or member reference must name one the config declares for that table.
        if let Some(r) = spec.action.profile_ref() {
            let (what, id, known) = match r {
                tables::ProfileRef::Group(id) => (
                    "group",
                    id,
                    cfg.groups
                        .iter()
                        .any(|g| g.get_ref().table == ie.table && g.get_ref().id == id),
                ),
                tables::ProfileRef::Member(id) => (
                    "member",
                    id,
                    cfg.members
                        .iter()
                        .any(|m| m.get_ref().table == ie.table && m.get_ref().id == id),
                ),
            };
            if !known {
                return Err(cfg.field_error(
                    se.span().start,
                    format!("entry[{i}].{what}"),
                    format!("no [[{what}]] with id {id} for table '{}'", ie.table),
                ));
            }
        }
        // An entry sending to a port the switch does not have would drop every match.
        if let Some(port) = unknown_port(&switch, &ie.table, &spec) {
            let known: Vec<String> = switch.ports.iter().map(|p| p.id.to_string()).collect();
            return Err(cfg.field_error(
                se.span().start,
                format!("entry[{i}].params.port"),
                format!("unknown port {port} (switch ports: {})", known.join(", ")),
            ));
        }
    }
    switch
        .install_initial_entries()
        .map_err(|e| cfg.field_error(0, "entry", e.to_string()))?;
    let idle = if cfg.engine.busy_poll {
        IdleMode::BusyPoll
    } else {
        IdleMode::Sleep
    };
    Ok(Assembled {
        switch: Arc::new(switch),
        worker: Worker::new(with_counters, stages, idle),
        stop_at_eof: cfg.stop_at_eof(),
        realtime_priority: cfg.engine.realtime_priority,
    })
}
