//! `prefect-aci pool`: the `azure-container-instance` base job template and pool creation.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum PoolCommand {
    /// Print the base job template as JSON.
    Template,
}

pub async fn run(_cmd: PoolCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
