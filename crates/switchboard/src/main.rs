//! `switchboard`: one binary for the switch, its control client, the lab, the
//! demos and the benchmarks. The logic lives in the library crates; this is the
//! command-line edge.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A fast user-space software switch and router"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. "info" or "dataplane=debug"
    /// [default: "info"; "warn" for demo and bench, whose own output tells the story].
    #[arg(long, global = true, env = "SWITCHBOARD_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a switch from a config file until Ctrl-C.
    Run(cmd::run::RunArgs),
    /// Talk to a running switch's REST API: tables, entries, ports.
    Ctl(cmd::ctl::CtlArgs),
    /// Build, inspect, enter and remove namespace labs.
    Lab(cmd::lab::LabArgs),
    /// Run a demo on a built-in lab (default: the p4containerflow forwarding demo).
    Demo(cmd::demo::DemoArgs),
    /// Forwarding benchmark: switchboard vs Linux kernel forwarding and bridge, in Mpps.
    Bench(cmd::bench::BenchArgs),
    /// XDP live-frames packet generator (a packetblaster).
    Blast(cmd::bench::BlastArgs),
    /// The migration workload's server: streams frames to every client, echoes pings, and
    /// hands its connections over with TCP repair on request (Go-style `-fps 30` works too).
    StreamServer(stream::server::ServerArgs),
    /// The migration workload's load generator: RTT, frame gaps, sequence holes per connection.
    Loadgen(loadgen::LoadgenArgs),
    /// Scrape server and loadgen metrics once a second into a CSV.
    Collector(loadgen::CollectorArgs),
    /// Move a running stream server to another lab host, keeping its TCP connections.
    Migrate(cmd::migrate::MigrateArgs),
    /// The ECMP-ER server agent (XDP): attach, detach, stats.
    ErAgent(er_agent::ErAgentArgs),
}

/// Upstream's Go tools take `-server`, `-connections` ...: accept those single-dash long
/// flags for the workload subcommands by turning them into `--server`.
fn go_style_args(args: Vec<String>) -> Vec<String> {
    let mut words = args.iter().skip(1);
    let mut sub = None;
    while let Some(a) = words.next() {
        if a == "--log" {
            words.next();
        } else if !a.starts_with('-') {
            sub = Some(a.as_str());
            break;
        }
    }
    let workload = matches!(sub, Some("stream-server" | "loadgen" | "collector"));
    if !workload {
        return args;
    }
    args.into_iter()
        .map(|a| {
            let b = a.as_bytes();
            if b.len() > 2 && b[0] == b'-' && b[1].is_ascii_alphabetic() && b[2] != b'=' {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(go_style_args(std::env::args().collect()));
    if matches!(
        cli.cmd,
        Command::Ctl(_) | Command::Lab(_) | Command::Migrate(_)
    ) {
        // Printing commands end quietly when their reader goes away (`... | head`), as
        // other CLI tools do; long-running ones keep Rust's ignored SIGPIPE.
        // SAFETY: setting a signal disposition to its default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let quiet = matches!(cli.cmd, Command::Demo(_) | Command::Bench(_));
    let filter = cli
        .log
        .clone()
        .unwrap_or_else(|| if quiet { "warn" } else { "info" }.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let res = match cli.cmd {
        Command::Run(a) => cmd::run::run(a),
        Command::Ctl(a) => cmd::ctl::run(a),
        Command::Lab(a) => cmd::lab::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Blast(a) => cmd::bench::blast(a),
        Command::StreamServer(a) => stream::server::run(a),
        Command::Loadgen(a) => loadgen::run_loadgen(a),
        Command::Collector(a) => loadgen::run_collector(a),
        Command::Migrate(a) => cmd::migrate::run(a),
        Command::ErAgent(a) => er_agent::run(a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::go_style_args;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn go_style_flags_become_long_flags_for_workload_tools_only() {
        assert_eq!(
            go_style_args(v(
                "sb --log info loadgen -server http://x:1 -connections 4 -h --fps 5"
            )),
            v("sb --log info loadgen --server http://x:1 --connections 4 -h --fps 5")
        );
        assert_eq!(
            go_style_args(v("sb stream-server -fps=500")),
            v("sb stream-server --fps=500")
        );
        assert_eq!(go_style_args(v("sb run -c x.toml")), v("sb run -c x.toml"));
        assert_eq!(go_style_args(v("sb lab -abc")), v("sb lab -abc"));
    }
}
