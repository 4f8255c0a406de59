//! `switchboard er-agent attach|detach|stats`: clap arguments and the command runner, so the
//! `switchboard` binary only has to embed [`ErAgentArgs`] and call [`run`].

use std::net::Ipv4Addr;

use crate::agent::{self, AttachOptions, Target};
use crate::{AttachMode, Marker};

/// Arguments of `switchboard er-agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct ErAgentArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ErAgentCommand,
}

/// The er-agent subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ErAgentCommand {
    /// Load the ECMP-ER XDP agent on an interface and pin it (stays after exit).
    Attach(AttachArgs),
    /// Remove the agent from an interface.
    Detach(TargetArgs),
    /// Print the agent's counters (what upstream's er-stat shows, and more).
    Stats(StatsArgs),
}

/// Which interface, in which namespace.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Interface the agent runs on (the server's router-facing interface).
    #[arg(long)]
    pub iface: String,
    /// Operate inside /run/netns/NAME instead of the current namespace.
    #[arg(long)]
    pub netns: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        Target::new(self.netns.as_deref(), &self.iface)
    }
}

/// Arguments of `er-agent attach`.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// Interface and namespace.
    #[command(flatten)]
    pub target: TargetArgs,
    /// XDP mode; generic is the dependable one on veth (native needs a native XDP program on
    /// the peer and complete checksums).
    #[arg(long, value_enum, default_value_t = AttachMode::Generic)]
    pub mode: AttachMode,
    /// Marker encoding, as configured on the router stage.
    #[arg(long, value_enum, default_value_t = Marker::Dscp)]
    pub marker: Marker,
    /// Oldest previous generation to bounce towards; older packets are passed (RST).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=15))]
    pub max_generation: u8,
    /// Only bounce packets to this VIP (repeatable); default: any destination.
    #[arg(long = "vip")]
    pub vips: Vec<Ipv4Addr>,
}

/// Arguments of `er-agent stats`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// Interface and namespace.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Run an `er-agent` command, printing results to stdout.
pub fn run(args: ErAgentArgs) -> anyhow::Result<()> {
    match args.command {
        ErAgentCommand::Attach(a) => {
            let opts = AttachOptions {
                mode: a.mode,
                marker: a.marker,
                max_generation: a.max_generation,
                vips: a.vips,
            };
            let dir = agent::attach(&a.target.target(), &opts)?;
            let generations = match opts.marker {
                Marker::Dscp => format!("max-generation {}", opts.max_generation),
                Marker::Compat => "one previous generation".to_string(),
            };
            println!(
                "er-agent attached to {} ({} mode, marker {}, {generations}); pinned at {}",
                a.target.iface,
                opts.mode.as_str(),
                opts.marker.as_str(),
                dir.display()
            );
        }
        ErAgentCommand::Detach(t) => {
            agent::detach(&t.target())?;
            println!("er-agent detached from {}", t.iface);
        }
        ErAgentCommand::Stats(s) => {
            let st = agent::stats(&s.target.target())?;
            if s.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{st}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ErAgentArgs,
    }

    #[test]
    fn defaults_follow_the_reference() {
        let cli = Cli::try_parse_from(["x", "attach", "--iface", "veth1"]).unwrap();
        let ErAgentCommand::Attach(a) = cli.args.command else {
            panic!("not attach")
        };
        assert_eq!(a.mode, AttachMode::Generic);
        assert_eq!(a.marker, Marker::Dscp);
        assert_eq!(a.max_generation, 2);
        assert!(a.target.netns.is_none());
    }

    #[test]
    fn parses_all_options_and_rejects_bad_generation() {
        let cli = Cli::try_parse_from([
            "x",
            "attach",
            "--iface",
            "v",
            "--netns",
            "srv",
            "--mode",
            "native",
            "--marker",
            "compat",
            "--max-generation",
            "5",
            "--vip",
            "10.0.10.0",
        ])
        .unwrap();
        let ErAgentCommand::Attach(a) = cli.args.command else {
            panic!("not attach")
        };
        assert_eq!(a.mode, AttachMode::Native);
        assert_eq!(a.marker, Marker::Compat);
        assert_eq!(a.max_generation, 5);
        assert_eq!(a.target.netns.as_deref(), Some("srv"));
        assert_eq!(a.vips, vec![Ipv4Addr::new(10, 0, 10, 0)]);
        for bad in ["0", "16"] {
            assert!(
                Cli::try_parse_from(["x", "attach", "--iface", "v", "--max-generation", bad])
                    .is_err()
            );
        }
        assert!(Cli::try_parse_from(["x", "stats", "--iface", "v", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["x", "detach"]).is_err());
    }
}
