//! One flow run's life, as an explicit state machine.
//!
//! ```text
//!  Claim ──► Configure ──► Submit ──► Launch ──► Watch ──► Finish ──► Cleanup ──► Done
//!    │           │                      │          │  └──► Cancel ─────┘
//!    └► Done     └► Crash ─────────────►└► Crash ──┴► Release (shutdown before launch)
//! ```
//!
//! [`drive`] calls [`step`] until `Done`. Each step does one thing and returns the next phase;
//! every error goes through [`error_policy`], which decides between retrying the same phase
//! after a backoff and crashing the run with a message — never both, never silently. The
//! phases that touch infrastructure are idempotent (launch uses a deterministic name), so a
//! retried step, or a restarted worker, cannot create a second container group.

use std::sync::Arc;
use std::time::Duration;

use prefect_client::models::{
    Deployment, Flow, FlowRun, SetStateStatus, State, StateCreate, StateType,
};
use prefect_client::{ApiError, PrefectClient};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::infrastructure::{
    ExitInfo, InfraError, InfraErrorKind, Infrastructure, JobContext, RunRefs, RunSignals,
};
use crate::logs::RunLogger;
use crate::prepare::{build_job_configuration, PrepareInput};
use crate::worker::Shared;

/// Where a run is in its life.
pub enum Phase<J> {
    /// Propose Pending; only an ACCEPT lets us go on (ABORT means another worker has it).
    Claim,
    /// Read deployment and flow, render the job configuration, validate it.
    Configure,
    /// Settle a tied claim; labels (in the background), the submitted event.
    Submit(Arc<Submission<J>>),
    /// Report `infrastructure_pid`, then create the infrastructure beside the `Submitting`
    /// sub-state.
    Launch(Arc<Submission<J>>),
    /// Wait for the infrastructure to end (or a cancellation, or shutdown).
    Watch(Arc<Submission<J>>),
    /// Report the exit: Crashed for a non-zero code unless the engine already reported.
    Finish(Arc<Submission<J>>, ExitInfo),
    /// Cancellation was requested: stop the job and mark the run Cancelled.
    Cancel(Arc<Submission<J>>),
    /// Crash the run with a message, then clean up what may exist.
    Crash(Option<Arc<Submission<J>>>, String),
    /// Delete whatever the run used.
    Cleanup(Arc<Submission<J>>),
    /// The worker is shutting down before launch: hand the run back to the pool.
    Release,
    /// Re-adopt a run whose infrastructure outlived a previous worker: configure, then watch.
    Adopt,
    /// Nothing left to do.
    Done,
}

impl<J> Phase<J> {
    fn name(&self) -> &'static str {
        match self {
            Phase::Claim => "claim",
            Phase::Configure => "configure",
            Phase::Submit(_) => "submit",
            Phase::Launch(_) => "launch",
            Phase::Watch(_) => "watch",
            Phase::Finish(..) => "finish",
            Phase::Cancel(_) => "cancel",
            Phase::Crash(..) => "crash",
            Phase::Cleanup(_) => "cleanup",
            Phase::Release => "release",
            Phase::Adopt => "adopt",
            Phase::Done => "done",
        }
    }
}

/// A run that has a validated job.
///
/// It lives as long as the run is watched, so it keeps only what watching and the worker
/// events need: the rendered configuration, the pool and the deployment are dropped once
/// the backend has built its job from them.
pub struct Submission<J> {
    pub job: J,
    pub identifier: String,
    pub refs: RunRefs,
    pub submitted_event: Uuid,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error("{0}")]
    Config(String),
    /// The server asked to wait before proposing again (a WAIT response).
    #[error("the server asked to wait {0:?}")]
    Wait(Duration),
}

/// What the error policy decided.
enum Decision<J> {
    Retry(Duration, Phase<J>),
    Goto(Phase<J>),
}

/// Per-run signals shared with the worker loop.
#[derive(Clone)]
pub struct RunControl {
    /// Cancelled when Prefect asks to cancel this run.
    pub cancel: CancellationToken,
    /// The latest state type the worker observed for this run.
    pub state: watch::Sender<Option<StateType>>,
}

impl RunControl {
    pub fn new() -> Self {
        RunControl {
            cancel: CancellationToken::new(),
            state: watch::channel(None).0,
        }
    }
}

impl Default for RunControl {
    fn default() -> Self {
        Self::new()
    }
}

/// Drive one run from `start` to `Done`, inside its own tracing span.
pub async fn drive<I: Infrastructure>(
    shared: Arc<Shared<I>>,
    flow_run: FlowRun,
    control: RunControl,
    start: Phase<I::Job>,
) {
    let span =
        tracing::info_span!("flow_run", flow_run.id = %flow_run.id, flow_run.name = %flow_run.name);
    async move {
        let logger = shared.logs.logger(flow_run.id);
        let mut run = RunState {
            shared: shared.clone(),
            flow_run,
            logger,
            control,
            attempts: 0,
            deployment: None,
            flow: None,
            claim: None,
            adopted: false,
            announced: false,
        };
        let mut phase = start;
        loop {
            if matches!(phase, Phase::Done) {
                break;
            }
            let name = phase.name();
            crate::metrics::global().step(name);
            tracing::debug!(phase = name, "step");
            match step(&mut run, phase).await {
                Ok(next) => {
                    run.attempts = 0;
                    phase = next;
                }
                Err((err, failed)) => match error_policy(&mut run, failed, &err) {
                    Decision::Retry(after, again) => {
                        run.attempts += 1;
                        tracing::warn!(phase = name, attempt = run.attempts, error = %err, "step failed; retrying in {after:?}");
                        tokio::select! {
                            _ = tokio::time::sleep(after) => {}
                            _ = run.shared.shutdown.cancelled(), if run.attempts > 1 => {}
                        }
                        phase = again;
                    }
                    Decision::Goto(next) => {
                        run.attempts = 0;
                        phase = next;
                    }
                },
            }
        }
    }
    .instrument(span)
    .await
}

struct RunState<I: Infrastructure> {
    shared: Arc<Shared<I>>,
    flow_run: FlowRun,
    logger: RunLogger,
    control: RunControl,
    attempts: u32,
    /// Read while claiming; reused to build the configuration.
    deployment: Option<Deployment>,
    flow: Option<Flow>,
    /// The id of our accepted Pending state, until [`won_claim`] has settled a tie.
    claim: Option<Uuid>,
    /// Adopted from a dead worker and not yet seen on its infrastructure.
    adopted: bool,
    /// The `Submitting` sub-state was proposed (once per run, whatever the launch retries).
    announced: bool,
}

type StepResult<J> = Result<Phase<J>, (StepError, Phase<J>)>;

fn fail<J, E: Into<StepError>>(phase: Phase<J>) -> impl FnOnce(E) -> (StepError, Phase<J>) {
    move |e| (e.into(), phase)
}

/// A phase's work on the heap, only while it runs.
///
/// A run's task lives as long as its container, and an `async fn` is as large as its largest
/// suspension point: inline, every phase's request futures would sit in every watched run's
/// task (~10 KiB each). Boxed, a run that is waiting holds only the phase it is in.
fn boxed<'a, T>(
    f: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(f)
}

/// Do one phase's work and say what comes next.
async fn step<I: Infrastructure>(
    run: &mut RunState<I>,
    phase: Phase<I::Job>,
) -> StepResult<I::Job> {
    let shared = run.shared.clone();
    let client = &shared.client;
    let id = run.flow_run.id;
    match phase {
        Phase::Done => Ok(Phase::Done),
        Phase::Claim => boxed(async {
            // A shutdown before we claimed anything: leave the run Scheduled for others.
            if shared.shutdown.is_cancelled() {
                return Ok(Phase::Done);
            }
            // The deployment and flow reads go out with the Pending proposal instead of
            // before it: three round trips become one on the way to the container. A run
            // whose deployment is gone is cancelled whatever the proposal got (the server
            // ABORTs such a Pending), as Prefect does after its own read.
            let deployment = async {
                match run.flow_run.deployment_id {
                    Some(dep_id) => shared.read_deployment(dep_id).await,
                    None => Ok(None),
                }
            };
            let proposed = StateCreate::new(StateType::Pending, "Pending", id);
            let (deployment, flow, resp) = tokio::join!(
                deployment,
                shared.read_flow(run.flow_run.flow_id),
                client.set_flow_run_state(id, &proposed, false)
            );
            if let (Some(dep_id), Ok(None)) = (run.flow_run.deployment_id, &deployment) {
                let msg = format!("Deployment {dep_id} no longer exists, cancelled run.");
                run.logger.error(msg.clone());
                set_cancelled(client, id, &msg)
                    .await
                    .map_err(fail(Phase::Claim))?;
                return Ok(Phase::Done);
            }
            let resp = resp.map_err(fail(Phase::Claim))?;
            // A failed read is not a failed claim: `configure` reads again.
            run.deployment = deployment.ok().flatten();
            run.flow = flow.ok();
            match resp.status {
                SetStateStatus::Accept
                    if resp.state.as_ref().map(|s| &s.state_type) == Some(&StateType::Pending) =>
                {
                    run.claim = resp.state.as_ref().and_then(|st| st.id);
                    Ok(Phase::Configure)
                }
                SetStateStatus::Wait => {
                    let delay = resp.details.delay_seconds.unwrap_or(1.0).clamp(0.0, 300.0);
                    tracing::info!("server asked to wait {delay}s before proposing Pending");
                    Err((
                        StepError::Wait(Duration::from_secs_f64(delay)),
                        Phase::Claim,
                    ))
                }
                status => {
                    let st = resp
                        .state
                        .as_ref()
                        .map(|s| s.state_type.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    tracing::info!(
                        ?status,
                        reason = resp.details.reason.as_deref().unwrap_or(""),
                        "Aborted submission of flow run '{id}': server returned a non-pending state '{st}'"
                    );
                    Ok(Phase::Done)
                }
            }
        })
        .await,
        Phase::Configure => boxed(configure(run)).await,
        Phase::Adopt => match boxed(configure(run)).await? {
            Phase::Submit(sub) => {
                run.logger.info(format!(
                    "Worker '{}' adopted flow run '{id}' running on {}",
                    shared.config.name, sub.identifier
                ));
                run.adopted = true;
                Ok(Phase::Watch(sub))
            }
            other => Ok(other),
        },
        Phase::Submit(sub) => boxed(async {
            // Settle a tied claim before writing anything that names us: the labels mark
            // the run's owner, and recovery adopts runs labelled with its own name.
            if let Some(ours) = run.claim.take() {
                if !won_claim(client, id, ours).await {
                    tracing::info!("another worker claimed flow run '{id}' at the same time; leaving it to them");
                    return Ok(Phase::Done);
                }
            }
            // The labels name the run's worker and pool: attribution, and a hint for
            // recovery (which also needs the infrastructure pid). They never hold up the
            // launch: a busy SQLite server can refuse this one write (503, "database is
            // locked") for a minute while everything else goes through, so it is retried
            // in the background on the worker's task tracker.
            if shared.server.supports_labels() {
                let mut labels = Map::new();
                labels.insert("prefect.worker.name".into(), json!(shared.config.name));
                labels.insert(
                    "prefect.worker.type".into(),
                    json!(crate::template::POOL_TYPE),
                );
                labels.insert("prefect.work-pool.name".into(), json!(shared.pool_name()));
                labels.insert(
                    "prefect.work-pool.id".into(),
                    json!(shared.pool_id().to_string()),
                );
                let client = client.clone();
                shared.tasks.spawn(
                    async move {
                        if let Err(e) = client.update_flow_run_labels(id, &labels).await {
                            tracing::debug!(error = %e, "could not set flow run labels");
                        }
                    }
                    .in_current_span(),
                );
            }
            shared.emit_run_event(
                "prefect.worker.submitted-flow-run",
                &sub.refs,
                Some(sub.submitted_event),
                None,
                None,
            );
            Ok(Phase::Launch(sub))
        })
        .await,
        Phase::Launch(sub) => boxed(async {
            if shared.shutdown.is_cancelled() {
                return Ok(Phase::Release);
            }
            if run.control.cancel.is_cancelled() {
                return Ok(Phase::Cancel(sub));
            }
            // The identifier is deterministic, so it is reported before the infrastructure
            // exists: a cancellation or a restarted worker can find a launch in progress.
            client
                .set_infrastructure_pid(id, &sub.identifier)
                .await
                .map_err(fail(Phase::Launch(sub.clone())))?;
            // The `Submitting` sub-state goes out beside the ARM request, once, instead of
            // before it: a set_state round trip is the slowest request of a busy server, and
            // nothing waits on this one. (After the pid, not beside it: both write the run's
            // row, and the pid would queue behind the state's orchestration.) The engine's
            // `Running` cannot be overtaken by it: a Submitting that arrives later is
            // ABORTed by the server, and ignored here.
            let submitting = async {
                if !shared.server.supports_submitting() || std::mem::replace(&mut run.announced, true) {
                    return;
                }
                let s = StateCreate::new(StateType::Pending, "Submitting", id);
                match client.set_flow_run_state(id, &s, false).await {
                    Ok(r) if r.status == SetStateStatus::Accept => {}
                    Ok(r) => tracing::debug!(status = ?r.status, "Submitting sub-state not accepted"),
                    Err(e) => tracing::debug!(error = %e, "could not set the Submitting sub-state"),
                }
            };
            let ((), launched) = tokio::join!(submitting, shared.infra.launch(&sub.job));
            launched.map_err(fail(Phase::Launch(sub.clone())))?;
            run.logger.info(format!(
                "Flow run '{}' submitted to infrastructure",
                run.flow_run.name
            ));
            Ok(Phase::Watch(sub))
        })
        .await,
        Phase::Watch(sub) => boxed(async {
            let signals = RunSignals {
                state: run.control.state.subscribe(),
                shutdown: shared.shutdown.clone(),
            };
            let cancel = run.control.cancel.clone();
            tokio::select! {
                res = shared.infra.watch(&sub.job, signals) => match res {
                    Ok(Some(exit)) => Ok(Phase::Finish(sub, exit)),
                    Ok(None) => {
                        tracing::info!("worker shutting down; leaving flow run '{id}' running on its infrastructure");
                        Ok(Phase::Done)
                    }
                    Err(e) if e.kind == InfraErrorKind::NotFound => {
                        // Adopted, never launched: the dead worker reported the identifier and
                        // died before creating the group. While the run is still Pending the
                        // engine never started, so launching it now (same deterministic name)
                        // runs it once instead of crashing it.
                        if std::mem::take(&mut run.adopted) {
                            let current = client
                                .read_flow_run(id)
                                .await
                                .map_err(fail(Phase::Watch(sub.clone())))?;
                            if current.as_ref().and_then(|r| r.current_state_type())
                                == Some(&StateType::Pending)
                            {
                                run.logger.info(format!(
                                    "The container group of flow run '{id}' was never created; launching it"
                                ));
                                return Ok(Phase::Launch(sub));
                            }
                        }
                        Ok(Phase::Finish(sub, ExitInfo {
                            status_code: -1,
                            explanation: Some(e.message),
                        }))
                    }
                    Err(e) => Err((e.into(), Phase::Watch(sub))),
                },
                _ = cancel.cancelled() => Ok(Phase::Cancel(sub)),
            }
        })
        .await,
        Phase::Finish(sub, exit) => boxed(async {
            shared.emit_run_event(
                "prefect.worker.executed-flow-run",
                &sub.refs,
                None,
                Some(sub.submitted_event),
                Some((&sub.identifier, exit.status_code)),
            );
            let current = client
                .read_flow_run(id)
                .await
                .map_err(fail(Phase::Finish(sub.clone(), exit.clone())))?;
            let state = current
                .as_ref()
                .and_then(|r| r.current_state_type().cloned());
            let is_final = state.as_ref().is_some_and(StateType::is_final);
            // A non-zero exit crashes any run the engine did not finish (Prefect's rule). A
            // clean exit that left the run Pending or Running would leave a zombie: the engine
            // never reported, so crash it too. Paused or rescheduled runs are left alone.
            let stuck = matches!(state, Some(StateType::Pending | StateType::Running));
            let message = if exit.status_code != 0 && !is_final {
                Some(format!(
                    "Flow run infrastructure exited with non-zero status code {}.",
                    exit.status_code
                ))
            } else if exit.status_code == 0 && stuck {
                Some("Flow run infrastructure exited with status code 0 without the flow run reporting a final state.".to_string())
            } else {
                None
            };
            if let Some(mut message) = message {
                if let Some(x) = &exit.explanation {
                    message.push(' ');
                    message.push_str(x);
                }
                propose_crashed(client, id, &message, &run.logger)
                    .await
                    .map_err(fail(Phase::Finish(sub.clone(), exit.clone())))?;
            }
            Ok(Phase::Cleanup(sub))
        })
        .await,
        Phase::Cancel(sub) => boxed(async {
            let grace = shared.infra.cancel_grace(&sub.job);
            run.logger.info(format!(
                "Cancelling flow run '{id}': giving its infrastructure {}s to stop",
                grace.as_secs()
            ));
            shared
                .infra
                .kill(&sub.job, grace)
                .await
                .map_err(fail(Phase::Cancel(sub.clone())))?;
            set_cancelled(
                client,
                id,
                "Flow run was cancelled; its infrastructure was stopped by the worker.",
            )
            .await
            .map_err(fail(Phase::Cancel(sub.clone())))?;
            Ok(Phase::Cleanup(sub))
        })
        .await,
        Phase::Crash(sub, message) => boxed(async {
            let full = format!("Failed to submit flow run to infrastructure: {message}");
            run.logger.error(full.clone());
            if let Err(e) = propose_crashed(client, id, &full, &run.logger).await {
                return Err((e.into(), Phase::Crash(sub, message)));
            }
            Ok(match sub {
                Some(s) => Phase::Cleanup(s),
                None => Phase::Done,
            })
        })
        .await,
        Phase::Cleanup(sub) => boxed(async {
            shared
                .infra
                .cleanup(&sub.job)
                .await
                .map_err(fail(Phase::Cleanup(sub.clone())))?;
            Ok(Phase::Done)
        })
        .await,
        Phase::Release => boxed(async {
            // Nothing was launched: put the run back so another worker (or our successor)
            // picks it up instead of leaving it stuck in Pending.
            let s = StateCreate::new(StateType::Scheduled, "Scheduled", id)
                .with_message("Worker shut down before submitting this run; rescheduled.");
            client
                .set_flow_run_state(id, &s, true)
                .await
                .map_err(fail(Phase::Release))?;
            tracing::info!("released flow run '{id}' back to Scheduled");
            Ok(Phase::Done)
        })
        .await,
    }
}

/// Read the deployment and flow, render and validate the job.
async fn configure<I: Infrastructure>(run: &mut RunState<I>) -> StepResult<I::Job> {
    let shared = run.shared.clone();
    let client = &shared.client;
    let fr = run.flow_run.clone();
    if run.deployment.is_none() {
        if let Some(dep_id) = fr.deployment_id {
            run.deployment = shared
                .read_deployment(dep_id)
                .await
                .map_err(fail(Phase::Configure))?;
        }
    }
    // Taken, not cloned: a run keeps no copy of its deployment once it is configured.
    let deployment: Option<Deployment> = run.deployment.take();
    let flow: Flow = match run.flow.take() {
        Some(f) => f,
        None => shared
            .read_flow(fr.flow_id)
            .await
            .map_err(fail(Phase::Configure))?,
    };
    run.logger.info(format!(
        "Worker '{}' submitting flow run '{}'",
        shared.config.name, fr.id
    ));
    let pool = shared.pool();
    let input = PrepareInput {
        client,
        server: &shared.server,
        pool: &pool,
        flow_run: &fr,
        flow: &flow,
        deployment: deployment.as_ref(),
        worker_name: &shared.config.name,
        api_url: &shared.config.api_url,
        auth: &shared.config.auth,
        passthrough_settings: &shared.config.passthrough_settings,
        worker_id: shared.worker_id.get().copied(),
    };
    let configuration = match build_job_configuration(&input).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(Phase::Crash(
                None,
                format!("invalid job configuration: {e}"),
            ))
        }
    };
    let ctx = JobContext {
        flow_run: fr,
        flow,
        deployment,
        work_pool: pool,
        worker_name: shared.config.name.clone(),
        configuration,
        logger: run.logger.clone(),
    };
    let job = match shared.infra.prepare(&ctx) {
        Ok(j) => j,
        Err(e) => return Ok(Phase::Crash(None, e.message)),
    };
    let identifier = shared.infra.identifier(&job);
    // From here on the run needs its id and name only; the rest went into the job.
    run.flow_run.labels = None;
    run.flow_run.job_variables = None;
    run.flow_run.state = None;
    Ok(Phase::Submit(Arc::new(Submission {
        job,
        identifier,
        refs: RunRefs::of(&ctx),
        submitted_event: Uuid::now_v7(),
    })))
}

/// Whether our accepted Pending is the claim that counts.
///
/// Prefect servers on SQLite can accept two concurrent Pending proposals for one run (both
/// orchestrations read `Scheduled`). Timestamps cannot break the tie: a state's timestamp is
/// taken when its request arrives, and a slow commit can carry the earlier timestamp. What
/// every claimant *can* see is commit order at the run's head: each commit makes its state
/// the run's current one. So, reading the history first and the run second:
///
/// - no rival Pending since the last `Scheduled`: ours is the only claim — proceed;
/// - the run's current state is ours: a rival committed before us — we lost;
/// - the current state is a rival's `Pending`: it committed after us — we won;
/// - anything else: a rival has already moved the run on — we lost.
///
/// For two claimants both sides agree whatever the timing, so no settle delay is needed.
/// (Three simultaneous accepts could still agree on two winners; the deterministic container
/// group name keeps even that to one container.) Read errors fall back to proceeding: an
/// unreachable API must not strand a claimed run.
async fn won_claim(client: &PrefectClient, id: Uuid, ours: Uuid) -> bool {
    let states = match client.read_flow_run_states(id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the state history; assuming the claim is ours");
            return true;
        }
    };
    let rivals = rival_claims(&states, ours);
    if rivals.is_empty() {
        return true;
    }
    let current = match client.read_flow_run(id).await {
        Ok(fr) => fr.and_then(|fr| fr.state).and_then(|s| s.id),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the run; assuming the claim is ours");
            return true;
        }
    };
    current.is_some_and(|c| rivals.contains(&c))
}

/// The ids of other accepted `Pending` claims of this scheduling of the run (see
/// [`won_claim`]). Empty when ours is not in `states` (nothing to compare against).
fn rival_claims(states: &[State], ours: Uuid) -> Vec<Uuid> {
    // Only the claims of this scheduling count: a run released back to Scheduled (its first
    // claimer died) has older Pendings that belong to nobody now.
    let Some(our_time) = states
        .iter()
        .find(|s| s.id == Some(ours))
        .and_then(|s| s.timestamp)
    else {
        return vec![];
    };
    let scheduled_at = states
        .iter()
        .filter(|s| s.state_type == StateType::Scheduled)
        .filter_map(|s| s.timestamp)
        .filter(|t| *t <= our_time)
        .max();
    states
        .iter()
        .filter(|s| s.state_type == StateType::Pending && s.name.as_deref() == Some("Pending"))
        .filter(|s| match (s.timestamp, scheduled_at) {
            (Some(t), Some(sched)) => t >= sched,
            _ => true,
        })
        .filter_map(|s| s.id)
        .filter(|s| *s != ours)
        .collect()
}

/// The one place that decides what a failed step means for the run.
fn error_policy<I: Infrastructure>(
    run: &mut RunState<I>,
    failed: Phase<I::Job>,
    err: &StepError,
) -> Decision<I::Job> {
    // Retries are spaced 1, 2, 4 ... 30 s apart with jitter.
    let backoff = |attempt: u32| {
        let base = (1u64 << attempt.min(5)).min(30) as f64;
        Duration::from_secs_f64(base * (0.8 + 0.4 * fastrand::f64()))
    };
    match err {
        StepError::Wait(d) => Decision::Retry(*d, failed),
        StepError::Config(msg) => Decision::Goto(Phase::Crash(submission_of(&failed), msg.clone())),
        StepError::Api(e) => {
            // The Prefect API is the source of truth; while it is unreachable we keep trying
            // (bounded for phases before launch, where giving up just leaves the run Pending
            // for the zombie reaper, and unbounded once a container may exist).
            let before_launch = matches!(
                failed,
                Phase::Claim | Phase::Configure | Phase::Submit(_) | Phase::Adopt
            );
            // A 200 whose body does not parse (a proxy or load balancer in trouble) is worth
            // a few retries before it costs the run anything.
            let retryable =
                e.is_transient() || (matches!(e, ApiError::Decode { .. }) && run.attempts < 3);
            if retryable && !(before_launch && run.attempts >= 20) {
                Decision::Retry(backoff(run.attempts), failed)
            } else if matches!(failed, Phase::Claim) {
                tracing::warn!(error = %e, "could not claim flow run; leaving it to a later poll");
                Decision::Goto(Phase::Done)
            } else if matches!(
                failed,
                Phase::Crash(..) | Phase::Cleanup(_) | Phase::Release
            ) {
                tracing::error!(error = %e, "giving up on this step");
                Decision::Goto(match failed {
                    Phase::Crash(Some(s), _) => Phase::Cleanup(s),
                    _ => Phase::Done,
                })
            } else {
                Decision::Goto(Phase::Crash(submission_of(&failed), e.to_string()))
            }
        }
        StepError::Infra(e) => match (e.kind, &failed) {
            (InfraErrorKind::Transient, Phase::Watch(_) | Phase::Cleanup(_) | Phase::Cancel(_)) => {
                Decision::Retry(backoff(run.attempts), failed)
            }
            // Launch is idempotent (deterministic name; a retry first reads the group), so
            // a transient failure after ARM's own retries gets a few more tries.
            (InfraErrorKind::Transient, Phase::Launch(_)) if run.attempts < 5 => {
                Decision::Retry(backoff(run.attempts), failed)
            }
            (InfraErrorKind::NotFound, Phase::Cleanup(_) | Phase::Cancel(_)) => {
                Decision::Goto(Phase::Done)
            }
            (_, Phase::Cleanup(_)) if run.attempts < 10 => {
                Decision::Retry(backoff(run.attempts), failed)
            }
            (_, Phase::Cleanup(_)) => {
                run.logger.error(format!(
                    "Could not clean up the infrastructure of this run: {e}"
                ));
                Decision::Goto(Phase::Done)
            }
            (_, Phase::Watch(_)) if run.attempts < 30 => {
                Decision::Retry(backoff(run.attempts), failed)
            }
            _ => Decision::Goto(Phase::Crash(submission_of(&failed), e.message.clone())),
        },
    }
}

fn submission_of<J>(phase: &Phase<J>) -> Option<Arc<Submission<J>>> {
    match phase {
        Phase::Submit(s)
        | Phase::Launch(s)
        | Phase::Watch(s)
        | Phase::Cancel(s)
        | Phase::Cleanup(s) => Some(s.clone()),
        Phase::Finish(s, _) => Some(s.clone()),
        Phase::Crash(s, _) => s.clone(),
        _ => None,
    }
}

/// Propose Crashed; an ABORT (already final) is fine.
pub async fn propose_crashed(
    client: &PrefectClient,
    id: Uuid,
    message: &str,
    logger: &RunLogger,
) -> Result<(), ApiError> {
    let s = StateCreate::new(StateType::Crashed, "Crashed", id).with_message(message);
    let resp = client.set_flow_run_state(id, &s, false).await?;
    if resp.status == SetStateStatus::Accept {
        logger.info(format!("Reported flow run '{id}' as crashed: {message}"));
    }
    Ok(())
}

/// Force the run to Cancelled, keeping its current state details (as Prefect does).
pub async fn set_cancelled(
    client: &PrefectClient,
    id: Uuid,
    message: &str,
) -> Result<(), ApiError> {
    let current = client.read_flow_run(id).await?;
    if current
        .as_ref()
        .and_then(|r| r.current_state_type().cloned())
        .is_some_and(|t| t.is_final())
    {
        return Ok(());
    }
    let mut s = StateCreate::new(StateType::Cancelled, "Cancelled", id).with_message(message);
    if let Some(state) = current.and_then(|r| r.state) {
        let mut details = state.state_details;
        details.insert(
            "transition_id".into(),
            Value::String(Uuid::new_v4().to_string()),
        );
        s.state_details = details;
    }
    client.set_flow_run_state(id, &s, true).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn state(t: StateType, name: &str, secs: i64) -> State {
        State {
            id: Some(Uuid::now_v7()),
            state_type: t,
            name: Some(name.into()),
            timestamp: DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0),
            message: None,
            state_details: Map::new(),
            data: None,
        }
    }

    #[test]
    fn rivals_are_other_pending_claims_of_the_same_scheduling() {
        let sched = state(StateType::Scheduled, "Scheduled", 0);
        // The rival's request arrived first but may have committed last: it still counts.
        let rival = state(StateType::Pending, "Pending", 1);
        let ours = state(StateType::Pending, "Pending", 2);
        let submitting = state(StateType::Pending, "Submitting", 3);
        let states = vec![sched, rival.clone(), ours.clone(), submitting];
        assert_eq!(
            rival_claims(&states, ours.id.unwrap()),
            vec![rival.id.unwrap()]
        );
        assert_eq!(
            rival_claims(&states, rival.id.unwrap()),
            vec![ours.id.unwrap()]
        );
    }

    #[test]
    fn claims_before_a_reschedule_and_unknown_ids_do_not_count() {
        let old = state(StateType::Pending, "Pending", 1);
        let resched = state(StateType::Scheduled, "Scheduled", 5);
        let ours = state(StateType::Pending, "Pending", 6);
        let states = vec![
            state(StateType::Scheduled, "Scheduled", 0),
            old,
            resched,
            ours.clone(),
        ];
        assert!(rival_claims(&states, ours.id.unwrap()).is_empty());
        assert!(rival_claims(&states, Uuid::now_v7()).is_empty());
    }
}
