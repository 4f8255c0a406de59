//! Run the forwarding benchmark: `cargo run --release -p switchboard-xdp --example xdp_bench`.
//! Env: DURATION_S, STEPS, NO_THREAD=1, ONLY=kernel|bridge|ovs|gen.

use std::time::Duration;

use xdp::bench::{BenchConfig, generator_ceiling, render_table, run_bench};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok();
    let mut cfg = BenchConfig::default();
    if let Some(d) = env("DURATION_S").and_then(|s| s.parse().ok()) {
        cfg.duration = Duration::from_secs(d);
    }
    if let Some(n) = env("STEPS").and_then(|s| s.parse().ok()) {
        cfg.search_steps = n;
    }
    cfg.threaded_napi = env("NO_THREAD").is_none();
    let mut results = Vec::new();
    let only = env("ONLY");
    if only.as_deref().is_none_or(|o| o == "gen") {
        results.push(generator_ceiling(&cfg)?);
    }
    if let Some(o) = &only {
        cfg.kernel = o == "kernel";
        cfg.bridge = o == "bridge";
        cfg.ovs = o == "ovs";
    }
    results.extend(run_bench(&cfg, &[])?);
    println!("{}", render_table(&results));
    Ok(())
}
