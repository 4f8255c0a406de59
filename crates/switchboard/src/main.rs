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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Command::Ctl(_) | Command::Lab(_)) {
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
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
