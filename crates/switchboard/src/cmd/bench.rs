//! `switchboard bench` and `switchboard blast` (being written).

#[derive(clap::Args)]
pub struct BenchArgs {}

#[derive(clap::Args)]
pub struct BlastArgs {}

pub fn run(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench: not built yet")
}

pub fn blast(_a: BlastArgs) -> anyhow::Result<()> {
    anyhow::bail!("blast: not built yet")
}
