//! `prefect-aci worker start`: Prefect's worker flags and environment variables, same names,
//! same meanings, same defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use prefect_aci_worker::config::default_worker_name;
use prefect_aci_worker::WorkerConfig;
use prefect_client::Auth;

/// Where the Prefect API is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Prefect API URL, e.g. http://127.0.0.1:4200/api.
    #[arg(long = "api-url", env = "PREFECT_API_URL", hide_env_values = true)]
    pub api_url: Option<String>,
    /// Prefect Cloud API key.
    #[arg(
        long = "api-key",
        env = "PREFECT_API_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub api_key: Option<String>,
    /// `user:password` of a self-hosted server started with PREFECT_SERVER_API_AUTH_STRING.
    #[arg(
        long = "api-auth-string",
        env = "PREFECT_API_AUTH_STRING",
        hide_env_values = true,
        hide = true
    )]
    pub auth_string: Option<String>,
}

impl ApiArgs {
    pub fn api_url(&self) -> anyhow::Result<String> {
        self.api_url.clone().filter(|s| !s.is_empty()).context(
            "PREFECT_API_URL is not set; export it (e.g. PREFECT_API_URL=http://127.0.0.1:4200/api) or pass --api-url",
        )
    }
    pub fn auth(&self) -> Auth {
        Auth::from_settings(self.api_key.clone(), self.auth_string.clone())
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Start a worker that polls a work pool and runs its flow runs on ACI.
    Start(StartArgs),
}

/// Flags of `prefect worker start`, with Prefect's defaults.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The work pool to poll.
    #[arg(short = 'p', long = "pool")]
    pool: String,
    /// Work queues to poll (repeatable); all queues of the pool when absent.
    #[arg(short = 'q', long = "work-queue")]
    work_queues: Vec<String>,
    /// The worker's name (default: "AzureContainerWorker <uuid>").
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    /// Maximum number of flow runs to submit and watch at once.
    #[arg(short = 'l', long = "limit")]
    limit: Option<usize>,
    /// Seconds before a run's scheduled time to submit it.
    #[arg(
        long = "prefetch-seconds",
        env = "PREFECT_WORKER_PREFETCH_SECONDS",
        default_value_t = 10.0
    )]
    prefetch_seconds: f64,
    /// Poll once, wait for the submitted runs, and exit.
    #[arg(long = "run-once")]
    run_once: bool,
    /// Serve GET /health on PREFECT_WORKER_WEBSERVER_HOST:PORT.
    #[arg(long = "with-healthcheck")]
    with_healthcheck: bool,
    /// Create the work pool if it does not exist (default on).
    #[arg(long = "create-pool-if-not-found", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    create_pool_if_not_found: bool,
    /// Do not create the work pool if it does not exist.
    #[arg(
        long = "no-create-pool-if-not-found",
        conflicts_with = "create_pool_if_not_found"
    )]
    no_create_pool_if_not_found: bool,
    /// A base job template (JSON file) used only when the pool is created.
    #[arg(long = "base-job-template")]
    base_job_template: Option<PathBuf>,
    /// Accepted for compatibility with `prefect worker start`; only azure-container-instance is supported.
    #[arg(short = 't', long = "type", hide = true)]
    worker_type: Option<String>,
    #[arg(
        long,
        env = "PREFECT_WORKER_HEARTBEAT_SECONDS",
        default_value_t = 30.0,
        hide = true
    )]
    heartbeat_seconds: f64,
    #[arg(
        long,
        env = "PREFECT_WORKER_QUERY_SECONDS",
        default_value_t = 10.0,
        hide = true
    )]
    query_seconds: f64,
    #[arg(
        long,
        env = "PREFECT_WORKER_WEBSERVER_HOST",
        default_value = "0.0.0.0",
        hide = true
    )]
    webserver_host: IpAddr,
    #[arg(
        long,
        env = "PREFECT_WORKER_WEBSERVER_PORT",
        default_value_t = 8080,
        hide = true
    )]
    webserver_port: u16,
    #[command(flatten)]
    api: ApiArgs,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        anyhow::bail!("{name} must be a non-negative number of seconds (got {v})");
    }
    Ok(Duration::from_secs_f64(v))
}

impl StartArgs {
    fn into_config(self) -> anyhow::Result<WorkerConfig> {
        if let Some(t) = &self.worker_type {
            if t != prefect_aci_worker::template::POOL_TYPE {
                anyhow::bail!("prefect-aci only runs workers of type azure-container-instance (got --type {t})");
            }
        }
        let mut c = WorkerConfig::new(self.api.api_url()?, self.pool.clone());
        c.auth = self.api.auth();
        c.work_queues = self.work_queues;
        c.name = self.name.unwrap_or_else(default_worker_name);
        if c.name.contains('/') || c.name.contains('%') {
            anyhow::bail!("worker name {:?} may not contain '/' or '%'", c.name);
        }
        c.limit = self.limit;
        if c.limit == Some(0) {
            anyhow::bail!("--limit must be at least 1");
        }
        c.prefetch = seconds("--prefetch-seconds", self.prefetch_seconds)?;
        c.run_once = self.run_once;
        c.create_pool_if_not_found =
            self.create_pool_if_not_found && !self.no_create_pool_if_not_found;
        c.heartbeat_interval = seconds("PREFECT_WORKER_HEARTBEAT_SECONDS", self.heartbeat_seconds)?
            .max(Duration::from_secs(1));
        c.query_interval = seconds("PREFECT_WORKER_QUERY_SECONDS", self.query_seconds)?
            .max(Duration::from_millis(100));
        if self.with_healthcheck {
            c.healthcheck = Some(SocketAddr::new(self.webserver_host, self.webserver_port));
        }
        if let Some(path) = self.base_job_template {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading --base-job-template {}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!("--base-job-template {} is not valid JSON", path.display())
            })?;
            if v.get("job_configuration").is_none() || v.get("variables").is_none() {
                anyhow::bail!("--base-job-template {} must have \"job_configuration\" and \"variables\" (see `prefect-aci pool template`)", path.display());
            }
            c.base_job_template = Some(v);
        }
        // Prefect passes the worker's explicitly set PREFECT_* settings to flow runs.
        c.passthrough_settings = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("PREFECT_")
                    && !k.starts_with("PREFECT_WORKER_")
                    && !k.starts_with("PREFECT__")
                    && !matches!(
                        k.as_str(),
                        "PREFECT_API_URL" | "PREFECT_API_KEY" | "PREFECT_API_AUTH_STRING"
                    )
            })
            .collect();
        c.passthrough_settings.sort();
        Ok(c)
    }
}

pub async fn run(cmd: WorkerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkerCommand::Start(args) => {
            let config = args.into_config()?;
            let shutdown = crate::shutdown::on_signals();
            let infra = prefect_aci_worker::aci::AciInfrastructure::from_env()
                .context("configuring Azure access")?;
            prefect_aci_worker::run(config, infra, shutdown)
                .await
                .context("worker stopped with an error")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: StartArgs,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<WorkerConfig> {
        let mut full = vec!["x", "--api-url", "http://127.0.0.1:4200/api"];
        full.extend_from_slice(argv);
        Wrap::try_parse_from(full)?.args.into_config()
    }

    #[test]
    fn prefect_flags_keep_their_meaning_and_defaults() {
        let c = parse(&[
            "-p",
            "pool",
            "-q",
            "a",
            "--work-queue",
            "b",
            "-n",
            "w1",
            "-l",
            "3",
            "--run-once",
        ])
        .unwrap();
        assert_eq!(c.pool, "pool");
        assert_eq!(c.work_queues, ["a", "b"]);
        assert_eq!(c.name, "w1");
        assert_eq!(c.limit, Some(3));
        assert!(c.run_once && c.create_pool_if_not_found);
        assert_eq!(c.prefetch, Duration::from_secs(10));
        assert!(c.healthcheck.is_none());

        let d = parse(&[
            "--pool",
            "p",
            "--with-healthcheck",
            "--no-create-pool-if-not-found",
            "--prefetch-seconds",
            "2.5",
        ])
        .unwrap();
        assert_eq!(
            d.healthcheck,
            Some("0.0.0.0:8080".parse().unwrap()),
            "Prefect's default webserver address"
        );
        assert!(!d.create_pool_if_not_found);
        assert_eq!(d.prefetch, Duration::from_millis(2500));
        assert!(d.name.starts_with("AzureContainerWorker "));
    }

    #[test]
    fn bad_values_are_explained() {
        let e = parse(&["--pool", "p", "--limit", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--limit"), "{e}");
        let e = parse(&["--pool", "p", "--name", "a/b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("may not contain"), "{e}");
        let e = parse(&["--pool", "p", "--type", "process"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("azure-container-instance"), "{e}");
        let e = parse(&["--pool", "p", "--base-job-template", "/nonexistent.json"]).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent.json"));
    }
}
