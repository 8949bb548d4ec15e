//! The Azure Container Instances backend: one container group per flow run.
//!
//! # Life of a run here
//! 1. [`job::build`] validates the rendered configuration into an [`AciSpec`] (no IO).
//! 2. `launch`: resolve the resource group's location (cached), PUT the container group
//!    directly (no ARM deployment history), and follow its provisioning until `Succeeded`,
//!    `Failed` or `task_start_timeout_seconds`. Capacity and quota refusals are retried with
//!    backoff inside the start timeout, then in `fallback_locations`. A failed or timed-out
//!    group is deleted and the run crashes with ACI's own events.
//! 3. `watch`: the flow run's Prefect state is the main completion signal (the engine in the
//!    container reports it); ARM is read rarely — once a minute to catch a container that died
//!    without reporting, and around the end to collect the exit code. With `stream_output`,
//!    container logs are read every `task_watch_poll_interval` and forwarded, deduplicated,
//!    into the flow run's logs; the last lines are read before the group is deleted.
//! 4. `kill` (cancellation): give the engine `cancel_grace_seconds` to stop, then delete.
//! 5. `cleanup`: delete the group (or stop it with `keep_container_group`), without waiting
//!    for the deletion to finish. 404 is success: cleanup tolerates a launch that never was.
//! 6. `recover`: groups tagged for this pool are listed; those of finished runs are deleted,
//!    live ones are handed back to the worker to watch.

pub mod job;
mod logs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arm_models::container_group::ContainerGroup;
use azure_arm::{
    ArmClient, ArmClientConfig, ArmError, AzureEnvironmentConfig, DefaultAzureCredential,
    DefaultCredentialOptions, DeleteOutcome, ExplicitClientSecret, PollStatus, TokenCredential,
};
use prefect_client::models::StateType;
use serde_json::Value;
use tokio::sync::OnceCell;
use uuid::Uuid;

pub use job::AciSpec;
use job::{tags, ACI_API_VERSION};

use crate::infrastructure::{
    ExitInfo, InfraError, Infrastructure, JobContext, RecoveryContext, RunSignals,
};
use crate::logs::RunLogger;

const RESOURCE_GROUP_API_VERSION: &str = "2025-04-01";
const DEPLOYMENT_API_VERSION: &str = "2025-04-01";
/// How often a running group is read when Prefect says nothing: bounds how long a container
/// that died without reporting goes unnoticed. 60 s keeps a 10-minute run within 15 ARM
/// requests (bench/RESULTS.md).
const LIVENESS_INTERVAL: Duration = Duration::from_secs(60);

/// Errors configuring Azure access.
#[derive(Debug, thiserror::Error)]
pub enum AciConfigError {
    /// The Azure environment variables are inconsistent.
    #[error("invalid Azure configuration")]
    Environment(#[source] azure_arm::CredentialError),
    /// The HTTP client could not be built (e.g. an unreadable CA file).
    #[error("cannot build the Azure HTTP client")]
    Http(#[source] azure_arm::HttpClientError),
}

/// Options of the ACI backend.
#[derive(Clone, Debug)]
pub struct AciOptions {
    /// Cloud endpoints and identity settings.
    pub environment: AzureEnvironmentConfig,
    /// Credential chain knobs (IMDS warm-up, CLI).
    pub credential_options: DefaultCredentialOptions,
    /// An extra PEM CA to trust (e.g. the emulator's `--tls` CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// The image used when a run sets none (prefect-azure: the worker's Prefect version).
    pub default_image: String,
    /// Retry policy of every ARM request.
    pub retry: azure_arm::RetryPolicy,
    /// Liveness check period while Prefect reports nothing.
    pub liveness_interval: Duration,
}

impl AciOptions {
    /// Options read from the process environment.
    pub fn from_env() -> Result<Self, AciConfigError> {
        let environment =
            AzureEnvironmentConfig::from_process_env().map_err(AciConfigError::Environment)?;
        Ok(AciOptions {
            environment,
            credential_options: DefaultCredentialOptions::default(),
            ca_file: std::env::var_os("PREFECT_ACI_CA_FILE").map(Into::into),
            default_image: format!(
                "prefecthq/prefect:{}-python3.11",
                prefect_client::client::PREFECT_VERSION
            ),
            retry: azure_arm::RetryPolicy::default(),
            liveness_interval: LIVENESS_INTERVAL,
        })
    }
}

/// Runs flow runs as ACI container groups.
pub struct AciInfrastructure {
    options: AciOptions,
    http: reqwest::Client,
    default_template: Value,
    /// One ARM client per credential source, so tokens are reused across runs.
    clients: Mutex<HashMap<String, Arc<OnceCell<ArmClient>>>>,
    /// Resource group → location.
    locations: Mutex<HashMap<String, String>>,
    /// Resource groups this process has used: recovery looks there too.
    seen_groups: Mutex<Vec<(String, String, ExplicitClientSecret)>>,
    metrics: Arc<Mutex<Vec<Arc<azure_arm::ArmMetrics>>>>,
}

/// One run's job: the validated spec plus its runtime state.
pub struct AciJob {
    pub spec: AciSpec,
    logger: RunLogger,
    launched: std::sync::atomic::AtomicBool,
    log_cursor: Mutex<logs::LogCursor>,
    /// The container whose logs are read (a custom template may name it differently).
    container_name: Mutex<String>,
}

impl AciInfrastructure {
    /// Configure from the process environment.
    pub fn from_env() -> Result<Self, AciConfigError> {
        Self::new(AciOptions::from_env()?)
    }

    /// Configure explicitly (tests, the demo).
    pub fn new(options: AciOptions) -> Result<Self, AciConfigError> {
        let http = azure_arm::build_http_client(&azure_arm::HttpClientConfig {
            ca_file: options.ca_file.clone(),
            ..Default::default()
        })
        .map_err(AciConfigError::Http)?;
        let mut default_template = crate::template::base_job_template();
        let default_template = default_template["job_configuration"]["arm_template"].take();
        Ok(AciInfrastructure {
            options,
            http,
            default_template,
            clients: Mutex::new(HashMap::new()),
            locations: Mutex::new(HashMap::new()),
            seen_groups: Mutex::new(Vec::new()),
            metrics: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// ARM request counters of every client this backend created.
    pub fn arm_metrics(&self) -> Vec<Arc<azure_arm::ArmMetrics>> {
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn client(&self, creds: &ExplicitClientSecret) -> Result<ArmClient, InfraError> {
        // The secret is part of the key (hashed with a per-process random key, so the map
        // never holds it in clear): a run with a wrong secret for the same client id must not
        // borrow a client another deployment authenticated with the right one.
        static SECRET_HASHER: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let secret_hash = creds.client_secret.as_ref().map(|s| {
            use std::hash::BuildHasher;
            SECRET_HASHER
                .get_or_init(Default::default)
                .hash_one(s.expose())
        });
        let key = format!(
            "{}|{}|{}",
            creds.client_id.as_deref().unwrap_or(""),
            creds.tenant_id.as_deref().unwrap_or(""),
            secret_hash.map(|h| format!("{h:x}")).unwrap_or_default()
        );
        let cell = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let chain = DefaultAzureCredential::from_env(
                &self.options.environment,
                creds,
                self.http.clone(),
                &self.options.credential_options,
            )
            .map_err(|e| InfraError::invalid(format!("Azure credentials: {}", error_chain(&e))))?;
            // `ArmClient::new` caches tokens itself; the chain goes in as it is.
            let credential: Arc<dyn TokenCredential> = Arc::new(chain);
            let cloud = &self.options.environment.cloud;
            let mut config = ArmClientConfig::new(cloud.resource_manager.clone(), credential);
            config.scope = cloud.token_scope.clone();
            config.http_client = Some(self.http.clone());
            config.retry = self.options.retry.clone();
            let client =
                ArmClient::new(config).map_err(|e| InfraError::invalid(error_chain(&e)))?;
            self.metrics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(client.metrics());
            crate::metrics::global().register_arm(client.metrics());
            Ok::<_, InfraError>(client)
        })
        .await
        .cloned()
    }

    async fn location(&self, arm: &ArmClient, spec: &AciSpec) -> Result<String, InfraError> {
        let key = format!("{}/{}", spec.subscription_id, spec.resource_group).to_ascii_lowercase();
        if let Some(l) = self
            .locations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(l.clone());
        }
        let path = format!(
            "/subscriptions/{}/resourcegroups/{}",
            spec.subscription_id, spec.resource_group
        );
        let rg: Value = arm
            .get(&path, RESOURCE_GROUP_API_VERSION)
            .await
            .map_err(|e| classify(&e, "reading the resource group"))?;
        let loc = rg["location"].as_str().unwrap_or_default().to_string();
        if loc.is_empty() {
            return Err(InfraError::permanent(format!(
                "resource group {} has no location",
                spec.resource_group
            )));
        }
        self.locations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, loc.clone());
        Ok(loc)
    }

    async fn get_group(
        &self,
        arm: &ArmClient,
        spec: &AciSpec,
    ) -> Result<Option<ContainerGroup>, InfraError> {
        arm.get_opt(&spec.group_path(), ACI_API_VERSION)
            .await
            .map_err(|e| classify(&e, "reading the container group"))
    }

    /// PUT the group in `location` and follow provisioning until it ends or `deadline`.
    async fn create_in(
        &self,
        arm: &ArmClient,
        job: &AciJob,
        location: &str,
        deadline: Option<Instant>,
    ) -> Result<(), InfraError> {
        let spec = &job.spec;
        let mut body = spec.body.clone();
        body.location = Some(location.to_string());
        let outcome = arm
            .put::<_, ContainerGroup>(&spec.group_path(), ACI_API_VERSION, &body)
            .await
            .map_err(|e| classify(&e, "creating the container group"))?;
        let state = outcome
            .body
            .as_ref()
            .and_then(|g| g.properties.provisioning_state.clone());
        if state.as_deref() == Some("Succeeded") {
            return Ok(());
        }
        let Some(mut poller) = outcome.poller else {
            return Ok(());
        };
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let events = self.describe_failure(arm, spec).await;
                let _ = self.delete_group(arm, spec).await;
                return Err(InfraError::permanent(format!(
                    "Timed out after {}s waiting for container group {} to start.{events}",
                    spec.start_timeout.map(|d| d.as_secs()).unwrap_or(0),
                    spec.group_name
                )));
            }
            tokio::time::sleep(poller.next_delay().min(Duration::from_secs(5))).await;
            match poller.poll().await {
                // ACI ends the create operation Failed when provisioning fails (the arm below),
                // so Succeeded needs no extra GET of the group: one ARM read less per run.
                Ok(PollStatus::Succeeded(_)) => return Ok(()),
                Ok(PollStatus::InProgress(_)) => continue,
                Err(e) if e.is_transient() => continue,
                Err(e) => {
                    let events = self.describe_failure(arm, spec).await;
                    let _ = self.delete_group(arm, spec).await;
                    return Err(InfraError::permanent(format!(
                        "Container group {} failed to start: {}{events}",
                        spec.group_name,
                        arm_message(&e)
                    )));
                }
            }
        }
    }

    /// A pool with a custom `arm_template`: deploy it through ARM (as prefect-azure does),
    /// wait for the container group, then delete the deployment record so none pile up.
    async fn deploy_template(
        &self,
        arm: &ArmClient,
        job: &AciJob,
        template: Value,
        deadline: Option<Instant>,
    ) -> Result<(), InfraError> {
        let spec = &job.spec;
        let body = serde_json::json!({"properties": {
            "mode": "Incremental",
            "template": template,
            "parameters": {"container_group_name": {"value": spec.group_name}},
        }});
        let path = spec.deployment_path();
        let outcome = arm
            .put::<_, Value>(&path, DEPLOYMENT_API_VERSION, &body)
            .await
            .map_err(|e| classify(&e, "creating the ARM deployment"))?;
        let result = match outcome.poller {
            None => Ok(()),
            Some(poller) => {
                let wait = poller.wait();
                match deadline {
                    Some(d) => {
                        match tokio::time::timeout_at(tokio::time::Instant::from_std(d), wait).await
                        {
                            Ok(r) => r.map(drop).map_err(|e| {
                                InfraError::permanent(format!(
                                    "ARM deployment failed: {}",
                                    arm_message(&e)
                                ))
                            }),
                            Err(_) => Err(InfraError::permanent(format!(
                                "Timed out after {}s waiting for the ARM deployment of {}",
                                spec.start_timeout.map(|t| t.as_secs()).unwrap_or(0),
                                spec.group_name
                            ))),
                        }
                    }
                    None => wait.await.map(drop).map_err(|e| {
                        InfraError::permanent(format!("ARM deployment failed: {}", arm_message(&e)))
                    }),
                }
            }
        };
        // The deployment record is history only; deleting it never touches the group.
        if let Err(e) = arm.delete(&path, DEPLOYMENT_API_VERSION).await {
            job.logger.warning(format!(
                "Could not delete the ARM deployment record: {}",
                arm_message(&e)
            ));
        }
        if let Err(e) = result {
            let events = self.describe_failure(arm, spec).await;
            let _ = self.delete_group(arm, spec).await;
            return Err(InfraError::permanent(format!("{}{events}", e.message)));
        }
        match self.get_group(arm, spec).await? {
            Some(g) => {
                if let Some(c) = g.properties.containers.first() {
                    *job.container_name.lock().unwrap_or_else(|e| e.into_inner()) = c.name.clone();
                }
                Ok(())
            }
            None => Err(InfraError::permanent(format!(
                "the ARM deployment succeeded but created no container group named {}; the template must name its group [parameters('container_group_name')]",
                spec.group_name
            ))),
        }
    }

    /// ACI's events and container states, for crash messages.
    async fn describe_failure(&self, arm: &ArmClient, spec: &AciSpec) -> String {
        match self.get_group(arm, spec).await {
            Ok(Some(g)) => {
                let text = logs::describe_group(&g);
                if text.is_empty() {
                    String::new()
                } else {
                    format!(" {text}")
                }
            }
            _ => String::new(),
        }
    }

    async fn delete_group(&self, arm: &ArmClient, spec: &AciSpec) -> Result<(), InfraError> {
        match arm.delete(&spec.group_path(), ACI_API_VERSION).await {
            Ok(DeleteOutcome::NotFound | DeleteOutcome::Deleted | DeleteOutcome::Accepted(_)) => {
                Ok(())
            }
            Err(e) => Err(classify(&e, "deleting the container group")),
        }
    }

    /// Read the group once and turn a terminated container into an exit.
    fn exit_of(group: &ContainerGroup) -> Option<ExitInfo> {
        let c = group.properties.containers.first()?;
        let view = c.properties.instance_view.as_ref()?;
        let cur = view.current_state.as_ref()?;
        let group_done = group
            .properties
            .instance_view
            .as_ref()
            .and_then(|v| v.state.as_deref())
            .is_some_and(|s| matches!(s, "Succeeded" | "Failed" | "Stopped"));
        if cur.state != "Terminated" && !group_done {
            return None;
        }
        let code = cur.exit_code.map(i64::from).unwrap_or(-1);
        let text = logs::describe_group(group);
        Some(ExitInfo {
            status_code: code,
            explanation: (!text.is_empty()).then_some(text),
        })
    }
}

/// The full error chain as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn arm_message(e: &ArmError) -> String {
    match e {
        ArmError::Http {
            code,
            message,
            status,
            request_id,
            ..
        } => format!(
            "{} (HTTP {status}{}, request id {request_id})",
            message,
            code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
        ),
        other => error_chain(other),
    }
}

/// Map an ARM error to the worker's error kinds.
fn classify(e: &ArmError, doing: &str) -> InfraError {
    let message = format!("{doing}: {}", arm_message(e));
    // A read whose 200 body does not parse (a proxy or gateway in trouble) is worth another
    // read; reads are idempotent.
    let garbled_read = matches!(e, ArmError::Decode { method, .. } if method == "GET");
    if e.is_not_found() {
        InfraError::not_found(message)
    } else if e.is_transient() || garbled_read {
        InfraError::transient(message)
    } else {
        InfraError::permanent(message)
    }
}

fn is_capacity_error(e: &InfraError) -> bool {
    e.message.contains("ServiceUnavailable") || e.message.contains("ContainerGroupQuotaReached")
}

impl Infrastructure for AciInfrastructure {
    type Job = AciJob;

    fn prepare(&self, ctx: &JobContext) -> Result<AciJob, InfraError> {
        let spec = job::build(ctx, &self.options.default_image, &self.default_template)?;
        if spec.custom_template.is_some() {
            ctx.logger.info("This pool has a custom arm_template: the container group is created through an ARM deployment, deleted once the group exists.");
        }
        Ok(AciJob {
            container_name: Mutex::new(spec.container_name.clone()),
            spec,
            logger: ctx.logger.named("prefect.flow_runs.worker"),
            launched: std::sync::atomic::AtomicBool::new(false),
            log_cursor: Mutex::new(logs::LogCursor::default()),
        })
    }

    fn identifier(&self, job: &AciJob) -> String {
        job.spec.identifier()
    }

    fn cancel_grace(&self, job: &AciJob) -> Duration {
        job.spec.cancel_grace
    }

    async fn launch(&self, job: &AciJob) -> Result<(), InfraError> {
        let spec = &job.spec;
        let arm = self.client(&spec.credentials).await?;
        {
            let mut seen = self.seen_groups.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.iter().any(|(s, r, _)| {
                *s == spec.subscription_id && r.eq_ignore_ascii_case(&spec.resource_group)
            }) {
                seen.push((
                    spec.subscription_id.clone(),
                    spec.resource_group.clone(),
                    spec.credentials.clone(),
                ));
            }
        }
        // A retried launch (after an error or a restart) first looks for the group: the name
        // is deterministic, so an existing group is this run's.
        if job.launched.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let wait_until = spec.start_timeout.map(|t| Instant::now() + t);
            while let Some(g) = self.get_group(&arm, spec).await? {
                match g.properties.provisioning_state.as_deref() {
                    Some("Succeeded") => return Ok(()),
                    Some("Failed") => {
                        self.delete_group(&arm, spec).await?;
                        break;
                    }
                    // Still starting from the earlier attempt: follow it rather than PUT again
                    // (a second PUT updates a group that is starting: a duplicate launch).
                    _ if wait_until.is_none_or(|d| Instant::now() < d) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    _ => break,
                }
            }
        }
        let started = Instant::now();
        let deadline = spec.start_timeout.map(|t| started + t);
        if let Some(template) = spec.patched_template() {
            return self.deploy_template(&arm, job, template, deadline).await;
        }
        let home = self.location(&arm, spec).await?;
        let mut locations = vec![home];
        locations.extend(spec.fallback_locations.iter().cloned());
        let mut last_error = None;
        for (i, location) in locations.iter().enumerate() {
            let mut attempt = 0u32;
            loop {
                match self.create_in(&arm, job, location, deadline).await {
                    Ok(()) => {
                        if i > 0 {
                            job.logger
                                .info(format!("Started in fallback location {location}"));
                        }
                        return Ok(());
                    }
                    Err(e) if is_capacity_error(&e) => {
                        job.logger
                            .warning(format!("No capacity in {location}: {}", e.message));
                        last_error = Some(e);
                        attempt += 1;
                        let wait = Duration::from_secs(2u64.pow(attempt.min(5)));
                        let more_locations = i + 1 < locations.len();
                        let time_left = deadline.is_none_or(|d| Instant::now() + wait < d);
                        // Try the next region after a few attempts here, if there is one.
                        if attempt >= 3 && more_locations || !time_left {
                            break;
                        }
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let e = last_error.unwrap_or_else(|| InfraError::permanent("no location to try"));
        Err(InfraError::permanent(e.message))
    }

    async fn watch(
        &self,
        job: &AciJob,
        mut signals: RunSignals,
    ) -> Result<Option<ExitInfo>, InfraError> {
        // Every request below is boxed: this future lives as long as the container, and
        // while it sleeps it should hold timers and ids, not request state machines.
        let spec = &job.spec;
        let arm = Box::pin(self.client(&spec.credentials)).await?;
        let started = Instant::now();
        let mut next_liveness = Instant::now() + self.options.liveness_interval;
        let mut next_logs = Instant::now() + spec.poll_interval;
        loop {
            if signals
                .state
                .borrow_and_update()
                .as_ref()
                .is_some_and(StateType::is_final)
            {
                return Box::pin(self.finish(&arm, job)).await.map(Some);
            }
            if let Some(max) = spec.max_run {
                if started.elapsed() >= max {
                    job.logger.error(format!(
                        "Flow run exceeded max_run_seconds={}; stopping its container group",
                        max.as_secs()
                    ));
                    Box::pin(self.stream_logs(&arm, job)).await;
                    Box::pin(self.delete_group(&arm, spec)).await?;
                    return Ok(Some(ExitInfo {
                        status_code: -1,
                        explanation: Some(format!(
                            "Stopped by the worker after exceeding max_run_seconds={}.",
                            max.as_secs()
                        )),
                    }));
                }
            }
            let now = Instant::now();
            if now >= next_liveness {
                next_liveness = now + self.options.liveness_interval;
                match Box::pin(self.get_group(&arm, spec)).await? {
                    None => {
                        return Err(InfraError::not_found(format!(
                            "container group {} no longer exists",
                            spec.group_name
                        )))
                    }
                    Some(g) => {
                        if let Some(exit) = Self::exit_of(&g) {
                            Box::pin(self.stream_logs(&arm, job)).await;
                            return Ok(Some(exit));
                        }
                    }
                }
            }
            if spec.stream_output && now >= next_logs {
                next_logs = now + spec.poll_interval;
                Box::pin(self.stream_logs(&arm, job)).await;
            }
            let mut wake = next_liveness;
            if spec.stream_output {
                wake = wake.min(next_logs);
            }
            if let Some(max) = spec.max_run {
                wake = wake.min(started + max);
            }
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
            tokio::select! {
                _ = sleep => {}
                changed = signals.state.changed() => {
                    if changed.is_err() {
                        // The worker dropped the sender; keep going on timers alone.
                        signals.state = tokio::sync::watch::channel(None).1;
                    }
                }
                _ = signals.shutdown.cancelled() => return Ok(None),
            }
        }
    }

    async fn kill(&self, job: &AciJob, grace: Duration) -> Result<(), InfraError> {
        let spec = &job.spec;
        let arm = self.client(&spec.credentials).await?;
        // The engine in the container watches for Cancelling and exits on its own; give it
        // the grace period, checking every few seconds, then delete the group.
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.get_group(&arm, spec).await? {
                None => return Ok(()),
                Some(g) if Self::exit_of(&g).is_some() => break,
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(2).min(grace)).await;
        }
        self.stream_logs(&arm, job).await;
        self.delete_group(&arm, spec).await
    }

    async fn cleanup(&self, job: &AciJob) -> Result<(), InfraError> {
        let spec = &job.spec;
        let arm = self.client(&spec.credentials).await?;
        if spec.keep_container_group {
            return match arm
                .post_empty(&format!("{}/stop", spec.group_path()), ACI_API_VERSION)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(classify(&e, "stopping the container group")),
            };
        }
        self.delete_group(&arm, spec).await
    }

    async fn recover(&self, ctx: RecoveryContext) -> Result<Vec<Uuid>, InfraError> {
        recover(self, ctx).await
    }
}

impl AciInfrastructure {
    /// The end of a run as Prefect reported it: collect the exit code and last logs.
    async fn finish(&self, arm: &ArmClient, job: &AciJob) -> Result<ExitInfo, InfraError> {
        let spec = &job.spec;
        // The engine reported a final state; its process exits right after. Wait for ACI to
        // see the exit so the code and the last log lines are real: longer when the logs are
        // streamed (output buffered until exit must not be lost), briefly otherwise (the group
        // bills until it is deleted). Reads back off: 0.5, 1, 2, 4 ... seconds.
        let budget = if spec.stream_output {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(4)
        };
        let deadline = Instant::now() + budget;
        let mut delay = Duration::from_millis(500);
        let mut exit = None;
        loop {
            match self.get_group(arm, spec).await? {
                None => break,
                Some(g) => {
                    if let Some(e) = Self::exit_of(&g) {
                        exit = Some(e);
                        break;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.stream_logs(arm, job).await;
        // Still running after the engine finished: it will be deleted; Prefect already has
        // the real outcome, so report success rather than invent a crash.
        Ok(exit.unwrap_or(ExitInfo {
            status_code: 0,
            explanation: None,
        }))
    }

    /// Forward new container log lines (only with `stream_output`).
    async fn stream_logs(&self, arm: &ArmClient, job: &AciJob) {
        let spec = &job.spec;
        if !spec.stream_output {
            return;
        }
        let path = format!(
            "{}/containers/{}/logs",
            spec.group_path(),
            spec.container_name
        );
        let res: Result<arm_models::container_group::Logs, ArmError> = arm
            .get_with_query(&path, ACI_API_VERSION, &[("timestamps", "true")])
            .await;
        match res {
            Ok(l) => {
                let lines = job
                    .log_cursor
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take_new(&l.content);
                let container_logger = job.logger.named("prefect.flow_runs.container");
                for (ts, line) in lines {
                    println!("{} | {line}", spec.group_name);
                    container_logger.log_at(
                        crate::logs::Level::Info,
                        line,
                        ts.unwrap_or_else(chrono::Utc::now),
                    );
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => job.logger.warning(format!(
                "Could not read container logs: {}",
                arm_message(&e)
            )),
        }
    }
}

async fn recover(infra: &AciInfrastructure, ctx: RecoveryContext) -> Result<Vec<Uuid>, InfraError> {
    // Where to look: every place the worker was told about, plus every resource group this
    // process launched into.
    let mut places: Vec<(String, String, ExplicitClientSecret)> = infra
        .seen_groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (s, r) in &ctx.places {
        if !places
            .iter()
            .any(|(ps, pr, _)| ps == s && pr.eq_ignore_ascii_case(r))
        {
            places.push((s.clone(), r.clone(), ExplicitClientSecret::default()));
        }
    }
    let mut adopt = Vec::new();
    for (sub, rg, creds) in places {
        let arm = match infra.client(&creds).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "recovery: no Azure credentials for {sub}/{rg}");
                continue;
            }
        };
        let path = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups");
        let groups: Vec<ContainerGroup> = match arm.list(&path, ACI_API_VERSION).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(
                    "recovery: cannot list container groups in {rg}: {}",
                    arm_message(&e)
                );
                continue;
            }
        };
        for g in groups {
            let Some(t) = &g.tags else { continue };
            if t.get(tags::MANAGED_BY).map(String::as_str) != Some(tags::MANAGED_BY_VALUE)
                || t.get(tags::WORK_POOL) != Some(&ctx.work_pool.name)
            {
                continue;
            }
            let Some(id) = t
                .get(tags::FLOW_RUN_ID)
                .and_then(|s| s.parse::<Uuid>().ok())
            else {
                continue;
            };
            let name = g.name.clone().unwrap_or_default();
            let run = ctx
                .client
                .read_flow_run(id)
                .await
                .map_err(|e| InfraError::transient(e.to_string()))?;
            if ctx.in_flight.contains(&id) {
                // Ours and alive: its own task reads the last logs, then deletes it.
                continue;
            }
            // A finished run's group is an orphan only once its worker had time to clean up
            // after it (reading the last logs first); deleting earlier cuts the output off.
            let orphan_after = chrono::Duration::seconds(45);
            let finished = match run.as_ref() {
                None => true,
                Some(r) => {
                    let is_final = r.current_state_type().is_some_and(|t| t.is_final());
                    let since = r
                        .state
                        .as_ref()
                        .and_then(|s| s.timestamp)
                        .map(|t| chrono::Utc::now() - t);
                    is_final && since.is_none_or(|d| d > orphan_after)
                }
            };
            let still_settling = run
                .as_ref()
                .and_then(|r| r.current_state_type())
                .is_some_and(|t| t.is_final());
            if finished {
                tracing::info!(flow_run.id = %id, "recovery: deleting container group {name} of a finished flow run");
                let gpath = format!("{path}/{name}");
                if let Err(e) = arm.delete(&gpath, ACI_API_VERSION).await {
                    tracing::warn!("recovery: could not delete {name}: {}", arm_message(&e));
                }
            } else if !still_settling {
                adopt.push(id);
            }
        }
    }
    Ok(adopt)
}
