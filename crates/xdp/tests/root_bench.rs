//! Root-only: a short kernel-forwarding benchmark gives plausible numbers.

use std::time::Duration;

use xdp::bench::{BenchConfig, render_table, run_bench};
use xdp::netns::is_root;

#[test]
fn kernel_forwarding_bench_delivers() {
    if !is_root() {
        {
            // Straight to stderr: the test harness captures eprintln! of passing tests,
            // and a skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED: needs root");
        }
        return;
    }
    let cfg = BenchConfig {
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        step: Duration::from_secs(1),
        search_steps: 2,
        bridge: false,
        ovs: false,
        ..BenchConfig::default()
    };
    let results = run_bench(&cfg, &[]).expect("bench");
    eprintln!("{}", render_table(&results));
    assert_eq!(results.len(), 1);
    let k = &results[0];
    assert_eq!(k.dut, "kernel");
    assert!(k.skipped.is_none(), "kernel skipped: {:?}", k.skipped);
    assert!(k.delivered_mpps > 0.0, "{k:?}");
    assert!(k.delivered_mpps <= k.offered_mpps * 1.0001, "{k:?}");
    assert!((0.0..=100.0).contains(&k.drop_pct), "{k:?}");
    // Nothing of ours is left behind.
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let prefix = format!("sbb-{}-", std::process::id() % 100_000);
    assert!(!String::from_utf8_lossy(&ns.stdout).contains(&prefix));
}
