//! The boundary between the Prefect side of the worker and where flow runs execute.
//!
//! The worker core knows nothing about Azure: it hands an [`Infrastructure`] a [`JobContext`]
//! (the flow run, its deployment and flow, and the rendered job configuration) and gets back
//! an identifier and, later, an exit. The contract, in the spirit of kube-rs finalizers:
//! - [`Infrastructure::prepare`] validates and types the configuration without remote calls;
//!   its errors crash only that run, with a message that names the variable at fault.
//! - [`Infrastructure::launch`] is idempotent: the same run always maps to the same
//!   identifier (a deterministic container group name), so retrying after a crash or restart
//!   finds the existing resource instead of creating a second one.
//! - [`Infrastructure::cleanup`] tolerates a launch that never happened.
//! - Errors carry a [`InfraErrorKind`] so one policy in [`crate::run`] decides: retry later,
//!   or crash the run with the message.

use std::future::Future;
use std::time::Duration;

use prefect_client::models::{Deployment, Flow, FlowRun, StateType, WorkPool};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::logs::RunLogger;

/// Everything a backend needs to run one flow run.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub flow_run: FlowRun,
    pub flow: Flow,
    pub deployment: Option<Deployment>,
    pub work_pool: WorkPool,
    pub worker_name: String,
    /// The rendered job configuration after `prepare_for_flow_run` (env, labels, command, name).
    pub configuration: Map<String, Value>,
    /// Logs for this run, shipped to Prefect with its `flow_run_id`.
    pub logger: RunLogger,
}

/// The names and ids a run's worker events relate to, kept after its [`JobContext`] is gone.
#[derive(Debug, Clone)]
pub struct RunRefs {
    pub flow_run_id: Uuid,
    pub flow_run_name: String,
    pub tags: Vec<String>,
    pub flow_id: Uuid,
    pub flow_name: String,
    /// `(id, name)`.
    pub deployment: Option<(Uuid, String)>,
}

impl RunRefs {
    /// The references of `ctx`.
    pub fn of(ctx: &JobContext) -> Self {
        RunRefs {
            flow_run_id: ctx.flow_run.id,
            flow_run_name: ctx.flow_run.name.clone(),
            tags: ctx.flow_run.tags.clone(),
            flow_id: ctx.flow.id,
            flow_name: ctx.flow.name.clone(),
            deployment: ctx.deployment.as_ref().map(|d| (d.id, d.name.clone())),
        }
    }
}

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfraErrorKind {
    /// The job configuration is wrong; retrying cannot help. The run is crashed.
    InvalidConfiguration,
    /// The backend refused or failed for good (quota, image, permissions). The run is crashed.
    Permanent,
    /// Worth retrying (throttling, 5xx, network); the run's step is requeued with backoff.
    Transient,
    /// The resource does not exist (deleted outside the worker).
    NotFound,
}

/// An infrastructure failure with a user-facing message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InfraError {
    pub kind: InfraErrorKind,
    pub message: String,
}

impl InfraError {
    /// A configuration error naming what is wrong and how to fix it.
    pub fn invalid(message: impl Into<String>) -> Self {
        InfraError {
            kind: InfraErrorKind::InvalidConfiguration,
            message: message.into(),
        }
    }
    /// A permanent backend failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        InfraError {
            kind: InfraErrorKind::Permanent,
            message: message.into(),
        }
    }
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        InfraError {
            kind: InfraErrorKind::Transient,
            message: message.into(),
        }
    }
    /// The resource is gone.
    pub fn not_found(message: impl Into<String>) -> Self {
        InfraError {
            kind: InfraErrorKind::NotFound,
            message: message.into(),
        }
    }
}

/// How a run's infrastructure ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// The process exit code; -1 when unknown (e.g. the container group vanished).
    pub status_code: i64,
    /// A human explanation appended to Crashed messages (events, OOM, restarts...).
    pub explanation: Option<String>,
}

/// Signals the worker gives a running job while it is watched.
#[derive(Debug, Clone)]
pub struct RunSignals {
    /// The latest Prefect state type of the flow run, as the worker learns it.
    pub state: watch::Receiver<Option<StateType>>,
    /// Cancelled when the worker shuts down: stop watching, leave the container running.
    pub shutdown: CancellationToken,
}

/// A place flow runs execute.
pub trait Infrastructure: Send + Sync + 'static {
    /// The validated, typed configuration of one run.
    type Job: Send + Sync + 'static;

    /// Validate and type the job configuration. No remote calls.
    fn prepare(&self, ctx: &JobContext) -> Result<Self::Job, InfraError>;

    /// The stable identifier reported as the flow run's `infrastructure_pid`.
    fn identifier(&self, job: &Self::Job) -> String;

    /// Create the infrastructure (idempotently) and wait until it has started.
    fn launch(&self, job: &Self::Job) -> impl Future<Output = Result<(), InfraError>> + Send;

    /// Watch the running job until it ends. Returns `Ok(None)` when `signals.shutdown` fired
    /// first (the job keeps running; a restarted worker re-adopts it).
    fn watch(
        &self,
        job: &Self::Job,
        signals: RunSignals,
    ) -> impl Future<Output = Result<Option<ExitInfo>, InfraError>> + Send;

    /// Stop the job, giving it `grace` to exit on its own first.
    fn kill(
        &self,
        job: &Self::Job,
        grace: Duration,
    ) -> impl Future<Output = Result<(), InfraError>> + Send;

    /// Release everything the run used. Must succeed when nothing was ever launched.
    fn cleanup(&self, job: &Self::Job) -> impl Future<Output = Result<(), InfraError>> + Send;

    /// The grace period the configuration asks for when cancelling a running job.
    fn cancel_grace(&self, _job: &Self::Job) -> Duration {
        Duration::from_secs(30)
    }

    /// Called once at worker start and then periodically: clean up what finished runs left
    /// behind, and return the flow runs whose infrastructure still runs, for the worker to
    /// adopt and watch (it skips runs it is already handling). The default finds nothing.
    fn recover(
        &self,
        _ctx: RecoveryContext,
    ) -> impl Future<Output = Result<Vec<uuid::Uuid>, InfraError>> + Send {
        async { Ok(vec![]) }
    }
}

/// What a backend gets for [`Infrastructure::recover`].
#[derive(Clone)]
pub struct RecoveryContext {
    pub client: prefect_client::PrefectClient,
    pub work_pool: WorkPool,
    pub worker_name: String,
    /// Where this pool's runs may have gone: `(subscription_id, resource_group_name)` pairs
    /// from the pool's defaults and its deployments' job variables.
    pub places: Vec<(String, String)>,
    /// Runs this worker is handling right now: their infrastructure is not to be touched.
    pub in_flight: Vec<uuid::Uuid>,
}
