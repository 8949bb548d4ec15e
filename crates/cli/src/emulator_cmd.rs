//! `prefect-aci emulator`: serve the local ARM/ACI emulator until interrupted.
//!
//! Reads an optional JSON config (`aci_emulator::EmulatorConfig`; every field optional),
//! applies the flags on top, starts the emulator, prints where everything is and the
//! environment a client needs, then serves until SIGINT/SIGTERM. Stopping kills every
//! container process the emulator started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Flags of `prefect-aci emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port); overrides the config file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// JSON configuration file (subscription, principals, image table, delays, faults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also write the printed environment variables to this file as `KEY=VALUE` lines.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Serve HTTPS with a generated CA and server certificate; the CA file's path is
    /// printed (clients that insist on https, like MSAL-based credentials, need this).
    #[arg(long)]
    tls: bool,
    /// Enforce Azure RBAC: every ARM call needs a role assignment granting its action (the
    /// config's admin principal is Owner of the subscription).
    #[arg(long)]
    rbac: bool,
}

pub async fn run(args: EmulatorArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            serde_json::from_str::<aci_emulator::EmulatorConfig>(&text)
                .with_context(|| format!("invalid emulator config in {}", path.display()))?
        }
        None => aci_emulator::EmulatorConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.tls {
        config.tls = true;
    }
    if args.rbac {
        config.rbac = true;
    }
    let shutdown = crate::shutdown::on_signals();
    let emulator = aci_emulator::start(config)
        .await
        .context("cannot start the emulator")?;
    let c = emulator.config();
    let mut env = vec![
        ("AZURE_RESOURCE_MANAGER_ENDPOINT", emulator.arm_url()),
        ("AZURE_AUTHORITY_HOST", emulator.authority_host()),
        ("AZURE_TENANT_ID", c.tenant_id.clone()),
        ("AZURE_CLIENT_ID", c.admin.client_id.clone()),
        (
            "AZURE_CLIENT_SECRET",
            c.admin.client_secret.clone().unwrap_or_default(),
        ),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.arm_url()),
        ("AZURE_SUBSCRIPTION_ID", c.subscription_id.clone()),
    ];
    if let (Some(ca), Some(bundle)) = (emulator.ca_pem_path(), emulator.ca_bundle_path()) {
        env.push(("AZURE_EMULATOR_CA_FILE", ca.display().to_string()));
        // Python (requests, MSAL) and OpenSSL-based clients read these.
        env.push(("REQUESTS_CA_BUNDLE", bundle.display().to_string()));
        env.push(("SSL_CERT_FILE", bundle.display().to_string()));
    }
    println!("ACI emulator listening");
    println!("  ARM endpoint:     {}", emulator.arm_url());
    println!("  authority host:   {}", emulator.authority_host());
    println!("  token endpoint:   {}", emulator.token_endpoint());
    println!("  IMDS endpoint:    {}", emulator.imds_endpoint());
    println!("  subscription id:  {}", c.subscription_id);
    println!(
        "  admin API:        {}/_emulator/{{stats,groups,faults}}",
        emulator.arm_url()
    );
    println!("  working dirs:     {}", emulator.work_dir().display());
    if c.rbac {
        println!(
            "  RBAC:             enforced (the admin client {} is Owner of the subscription)",
            c.admin.client_id
        );
    }
    if let Some(ca) = emulator.ca_pem_path() {
        println!("  CA certificate:   {}", ca.display());
    }
    for identity in emulator.identities() {
        println!(
            "  identity:         {} (client id {})",
            identity.id, identity.client_id
        );
    }
    println!();
    println!("Environment for clients:");
    let mut lines = String::new();
    for (k, v) in &env {
        println!("  export {k}={v}");
        lines.push_str(&format!("{k}={v}\n"));
    }
    if let Some(path) = &args.env_file {
        // Write then rename, so a script polling for the file never reads half of it.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, lines)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!();
    println!("Press Ctrl-C to stop.");
    shutdown.cancelled().await;
    emulator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
