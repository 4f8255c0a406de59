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
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let mut cfg = SwitchConfig::load(&a.config)?;
    if let Some(l) = a.listen {
        cfg.api.listen = l;
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
    let t0 = Instant::now();
    let handle = std::thread::Builder::new()
        .name("sb-worker-0".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
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
        "{:>6} {:<9} {:<16} {:>10} {:>10} {:>10} {:>10}  drops",
        "port", "backend", "target", "rx_pkts", "tx_pkts", "rx_drop", "tx_drop"
    );
    for p in &switch.ports {
        let c = p.counters.snapshot();
        let drops: Vec<String> = c.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:>6} {:<9} {:<16} {:>10} {:>10} {:>10} {:>10}  {}",
            p.id,
            p.backend,
            p.target,
            c.rx_packets,
            c.tx_packets,
            c.rx_dropped,
            c.tx_dropped,
            drops.join(" ")
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
