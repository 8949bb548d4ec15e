//! `prefect-aci setup` and `prefect-aci teardown`: flags → [`prefect_aci_setup::Setup`].
//!
//! Azure access is configured like the worker's (`AZURE_*` variables, then managed identity,
//! then the Azure CLI); Prefect through `PREFECT_API_URL` / `PREFECT_API_KEY`. Both commands
//! print what they will do first and ask before changing anything unless `--yes` is given.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use azure_arm::{
    ArmClient, ArmClientConfig, AzureEnvironmentConfig, DefaultAzureCredential,
    DefaultCredentialOptions, ExplicitClientSecret,
};
use prefect_aci_setup::{Setup, SetupOptions, Status};
use prefect_client::{ClientConfig, PrefectClient};

use crate::worker_cmd::ApiArgs;

/// Flags of `prefect-aci setup`.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Azure location of everything created, e.g. eastus.
    #[arg(long)]
    location: String,
    /// Name of the user-assigned managed identity the worker runs as.
    #[arg(long)]
    identity: String,
    /// Name of the Azure Container Registry (5-50 letters and digits, globally unique).
    #[arg(long)]
    registry: String,
    /// The worker image [default: <registry>.azurecr.io/prefect-aci:latest].
    #[arg(long)]
    worker_image: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// Flags shared by setup and teardown.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Azure subscription id.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    subscription: String,
    /// Resource group name.
    #[arg(long)]
    resource_group: String,
    /// Prefect work pool name (also names the worker's container group).
    #[arg(long)]
    pool: String,
    /// Only show what would change.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Flags of `prefect-aci teardown`.
#[derive(Debug, clap::Args)]
pub struct TeardownArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    api: ApiArgs,
}

fn clients(api: &ApiArgs) -> anyhow::Result<(ArmClient, PrefectClient, String)> {
    let env = AzureEnvironmentConfig::from_process_env().context("invalid Azure environment")?;
    let http = azure_arm::build_http_client(&azure_arm::HttpClientConfig::default())
        .context("cannot build the HTTP client")?;
    let credential = DefaultAzureCredential::from_env(
        &env,
        &ExplicitClientSecret::default(),
        http.clone(),
        &DefaultCredentialOptions::default(),
    )
    .context("cannot configure Azure credentials")?;
    let mut config = ArmClientConfig::for_cloud(&env.cloud, Arc::new(credential));
    config.http_client = Some(http);
    let arm = ArmClient::new(config).context("cannot configure the ARM client")?;
    let url = api.api_url()?;
    let mut pc = ClientConfig::new(url.clone());
    pc.auth = api.auth();
    let prefect = PrefectClient::new(pc).context("cannot configure the Prefect client")?;
    Ok((arm, prefect, url))
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} needs confirmation, but stdin is not a terminal: re-run with --yes (or --dry-run to only look)");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok();
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn describe(status: &Status) -> String {
    match status {
        Status::Exists(d) => format!("exists          {d}"),
        Status::Create(d) => format!("will be created {d}"),
        Status::Change(diffs) => format!("will change     {}", diffs.join("; ")),
    }
}

fn done(status: &Status) -> String {
    match status {
        Status::Exists(d) => format!("unchanged  {d}"),
        Status::Create(d) => format!("created    {d}"),
        Status::Change(diffs) => format!("updated    {}", diffs.join("; ")),
    }
}

pub async fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let (arm, prefect, url) = clients(&args.api)?;
    let mut options = SetupOptions::new(
        &args.target.subscription,
        &args.target.resource_group,
        &args.location,
        &args.identity,
        &args.registry,
        &args.target.pool,
        url,
    );
    options.worker_image = args.worker_image.clone();
    options.prefect_api_key = args.api.api_key.clone().filter(|k| !k.is_empty());
    let setup = Setup::new(arm, prefect, options)?;
    println!("Plan:");
    let plan = setup.plan().await?;
    for item in &plan.items {
        println!("  {:<52} {}", item.step.label(), describe(&item.status));
    }
    if plan.is_noop() {
        println!("No changes: everything is already set up.");
    } else if args.target.dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    } else if !args.target.yes && !confirm("Apply these changes?")? {
        println!("Nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    if args.target.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    println!("Applying:");
    let summary = setup
        .apply(&mut |item| println!("  {:<52} {}", item.step.label(), done(&item.status)))
        .await?;
    println!();
    println!("Set up. Values the guide asks you to keep:");
    println!("  RG_SCOPE={}", summary.rg_scope);
    println!("  IDENTITY_ID={}", summary.identity_id);
    println!("  IDENTITY_CLIENT_ID={}", summary.identity_client_id);
    println!("  REGISTRY={}", summary.registry_login_server);
    println!("  WORK_POOL={}", summary.pool);
    println!(
        "Push the worker image with: docker build -t {0}/prefect-aci:latest . && az acr login --name {1} && docker push {0}/prefect-aci:latest",
        summary.registry_login_server, args.registry
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn teardown(args: TeardownArgs) -> anyhow::Result<ExitCode> {
    let (arm, prefect, url) = clients(&args.api)?;
    // Teardown finds resources by tags; the names below only shape paths and must be valid.
    let options = SetupOptions::new(
        &args.target.subscription,
        &args.target.resource_group,
        "unused",
        "unused",
        "unusedregistry",
        &args.target.pool,
        url,
    );
    let setup = Setup::new(arm, prefect, options)?;
    let plan = setup.teardown(false, &mut |_| {}).await?;
    if plan.items.is_empty() {
        println!(
            "Nothing to remove: no resources tagged by setup for pool '{}'.",
            args.target.pool
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("Will remove:");
    for i in &plan.items {
        match &i.kept {
            None => println!("  {:<16} {}", i.kind, i.id),
            Some(why) => println!("  {:<16} {} (kept: {why})", i.kind, i.id),
        }
    }
    if args.target.dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.target.yes && !confirm("Delete these resources?")? {
        println!("Nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    println!("Removing:");
    setup
        .teardown(true, &mut |i| match &i.kept {
            None => println!("  deleted {:<16} {}", i.kind, i.id),
            Some(why) => println!("  kept    {:<16} {} ({why})", i.kind, i.id),
        })
        .await?;
    println!("Teardown complete.");
    Ok(ExitCode::SUCCESS)
}
