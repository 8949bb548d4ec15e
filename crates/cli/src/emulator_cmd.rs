//! `prefect-aci emulator`: serve the local ARM/ACI emulator until interrupted.

use std::process::ExitCode;

/// Flags of `prefect-aci emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {}

pub async fn run(_args: EmulatorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the emulator is not built yet")
}
