//! `switchboard run -c switch.toml`: a switch on real interfaces.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use dataplane::SwitchConfig;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The switch config file (TOML).
    #[arg(short, long)]
    config: PathBuf,
    /// Override the REST API listen address from the config.
    #[arg(long)]
    listen: Option<String>,
    /// Do not start the REST API.
    #[arg(long)]
    no_api: bool,
    /// Pin the worker thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Run the worker SCHED_FIFO at this priority (overrides `[engine] realtime_priority`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime: Option<u8>,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let mut cfg = SwitchConfig::load(&a.config)?;
    if let Some(l) = a.listen {
        cfg.api.listen = l;
    }
    if a.realtime.is_some() {
        if cfg.engine.busy_poll {
            anyhow::bail!("--realtime with [engine] busy_poll would starve the worker's core");
        }
        cfg.engine.realtime_priority = a.realtime;
    }
    let built = dataplane::assemble(&cfg)?;
    let switch = built.switch.clone();
    let stop = switch.stop.clone();
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C / SIGTERM handler")?;
    }
    let server = if a.no_api {
        None
    } else {
        let addr = cfg.api.listen.parse().with_context(|| {
            format!(
                "{}: api.listen: '{}' is not an address:port",
                cfg.file.display(),
                cfg.api.listen
            )
        })?;
        Some(control::spawn_server(switch.clone(), addr)?)
    };
    for p in &switch.ports {
        tracing::info!(port = p.id, backend = p.backend, target = %p.target, "port up");
    }
    tracing::info!(
        stages = ?switch.pipeline.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        api = if a.no_api { "off" } else { cfg.api.listen.as_str() },
        "switch running"
    );
    let mut worker = built.worker;
    let stop_at_eof = built.stop_at_eof;
    let cpu = a.cpu;
    let rt = built.realtime_priority;
    let t0 = Instant::now();
    let handle = std::thread::Builder::new()
        .name("sb-worker-0".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            if let Some(prio) = rt {
                set_realtime(prio);
            }
            worker.run(&stop, stop_at_eof)
        })
        .context("starting the worker thread")?;
    let summary = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the worker thread panicked"))??;
    if let Some(Err(e)) = server.map(|s| s.stop()) {
        tracing::warn!("stopping the REST API: {e}");
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "switch stopped after {secs:.1} s: {} packets in {} rounds",
        summary.packets, summary.rounds
    );
    print_port_table(&switch);
    Ok(())
}

/// Print per-port counters as a table.
pub fn print_port_table(switch: &dataplane::Switch) {
    println!(
        "{:>6} {:<9} {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}  drops",
        "port", "backend", "target", "rx_pkts", "tx_pkts", "rx_drop", "tx_drop", "rx_err"
    );
    for p in &switch.ports {
        let c = p.counters.snapshot();
        let drops: Vec<String> = c.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:>6} {:<9} {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            p.id,
            p.backend,
            p.target,
            c.rx_packets,
            c.tx_packets,
            c.rx_dropped,
            c.tx_dropped,
            c.rx_errors,
            drops.join(" ")
        );
    }
}

/// Make the calling thread SCHED_FIFO at `prio` (best effort: a failure is logged).
pub fn set_realtime(prio: u8) {
    let param = libc::sched_param {
        sched_priority: i32::from(prio),
    };
    // SAFETY: param is a valid sched_param for the call's duration; 0 is this thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        tracing::warn!(
            prio,
            "could not make the worker real-time: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Pin the calling thread to one CPU (best effort: a failure is logged, not fatal).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(
                cpu,
                "could not pin the worker: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
