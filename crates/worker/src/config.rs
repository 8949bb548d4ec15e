//! Worker configuration: what `prefect worker start` takes, validated.
//!
//! The CLI parses flags and environment variables (with Prefect's names and defaults) and
//! builds a [`WorkerConfig`]; the library never reads flags itself, so tests construct the
//! config directly.

use std::net::SocketAddr;
use std::time::Duration;

use prefect_client::Auth;
use serde_json::Value;

/// Everything the worker loop needs to run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `PREFECT_API_URL`.
    pub api_url: String,
    /// `PREFECT_API_KEY` / `PREFECT_API_AUTH_STRING`.
    pub auth: Auth,
    /// `--pool`.
    pub pool: String,
    /// `--work-queue` (empty: all queues).
    pub work_queues: Vec<String>,
    /// `--name`; Prefect's default is `"<ClassName> <uuid4>"`.
    pub name: String,
    /// `--limit`: at most this many runs submitted and watched at once.
    pub limit: Option<usize>,
    /// `--prefetch-seconds` / `PREFECT_WORKER_PREFETCH_SECONDS` (10).
    pub prefetch: Duration,
    /// `--run-once`.
    pub run_once: bool,
    /// `--with-healthcheck`: where `/health` listens (`PREFECT_WORKER_WEBSERVER_HOST/PORT`).
    pub healthcheck: Option<SocketAddr>,
    /// `--create-pool-if-not-found` (default on).
    pub create_pool_if_not_found: bool,
    /// `--base-job-template`: used only when creating the pool.
    pub base_job_template: Option<Value>,
    /// `PREFECT_WORKER_HEARTBEAT_SECONDS` (30).
    pub heartbeat_interval: Duration,
    /// `PREFECT_WORKER_QUERY_SECONDS` (10).
    pub query_interval: Duration,
    /// Explicitly set `PREFECT_*` settings passed to flow-run containers (Prefect passes the
    /// worker's explicitly set settings); API URL/key/auth string are added from the fields above.
    pub passthrough_settings: Vec<(String, String)>,
    /// How long a graceful shutdown waits for in-flight submissions to reach a safe point.
    pub shutdown_grace: Duration,
}

impl WorkerConfig {
    /// A config with Prefect's defaults for `pool` on `api_url`.
    pub fn new(api_url: impl Into<String>, pool: impl Into<String>) -> Self {
        WorkerConfig {
            api_url: api_url.into(),
            auth: Auth::None,
            pool: pool.into(),
            work_queues: vec![],
            name: default_worker_name(),
            limit: None,
            prefetch: Duration::from_secs(10),
            run_once: false,
            healthcheck: None,
            create_pool_if_not_found: true,
            base_job_template: None,
            heartbeat_interval: Duration::from_secs(30),
            query_interval: Duration::from_secs(10),
            passthrough_settings: vec![],
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Prefect's default worker name: `"<ClassName> <uuid4>"`.
pub fn default_worker_name() -> String {
    format!("AzureContainerWorker {}", uuid::Uuid::new_v4())
}
