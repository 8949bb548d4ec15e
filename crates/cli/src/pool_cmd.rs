//! `prefect-aci pool`: the `azure-container-instance` base job template and pool creation.

use std::process::ExitCode;

use anyhow::Context;
use prefect_aci_worker::template::{base_job_template, POOL_TYPE};
use prefect_client::{ApiError, ClientConfig, PrefectClient};
use serde_json::json;

use crate::worker_cmd::ApiArgs;

#[derive(Debug, clap::Subcommand)]
pub enum PoolCommand {
    /// Print the base job template as JSON (usable with `prefect work-pool create --base-job-template`).
    Template,
    /// Create the work pool (type azure-container-instance) with our base job template.
    Create {
        /// Name of the work pool.
        name: String,
        /// Replace the base job template of an existing pool.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub async fn run(cmd: PoolCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoolCommand::Template => {
            println!("{}", serde_json::to_string_pretty(&base_job_template())?);
            Ok(ExitCode::SUCCESS)
        }
        PoolCommand::Create {
            name,
            overwrite,
            api,
        } => {
            let mut cfg = ClientConfig::new(api.api_url()?);
            cfg.auth = api.auth();
            let client = PrefectClient::new(cfg)?;
            let template = base_job_template();
            match client
                .create_work_pool(&name, POOL_TYPE, Some(&template), None)
                .await
            {
                Ok(pool) => {
                    println!("Created work pool {:?} ({})", pool.name, pool.id);
                }
                Err(ApiError::AlreadyExists { .. }) if overwrite => {
                    client
                        .update_work_pool(&name, &json!({"base_job_template": template}))
                        .await
                        .with_context(|| format!("updating work pool {name:?}"))?;
                    println!("Updated the base job template of work pool {name:?}");
                }
                Err(ApiError::AlreadyExists { .. }) => {
                    anyhow::bail!("work pool {name:?} already exists; pass --overwrite to replace its base job template")
                }
                Err(e) => return Err(e).with_context(|| format!("creating work pool {name:?}")),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
