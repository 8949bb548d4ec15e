//! `prefect-aci worker start`: Prefect's worker flags and environment variables.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Start a worker that polls a work pool and runs its flow runs on ACI.
    Start {},
}

pub async fn run(_cmd: WorkerCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
