//! The worker loop: sync the pool, heartbeat, poll, dispatch runs, watch for cancellation.
//!
//! [`run`] takes a validated config, an [`Infrastructure`] and a shutdown token (so tests and
//! the CLI control its life, like mini-redis's `server::run`). It owns:
//! - a **sync** tick (every `PREFECT_WORKER_HEARTBEAT_SECONDS`): read the pool (creating it or
//!   filling an empty template as Prefect does) and send a heartbeat;
//! - a **poll** tick (every `PREFECT_WORKER_QUERY_SECONDS`): `get_scheduled_flow_runs` with the
//!   prefetch window; each new run becomes a task driving [`crate::run`]'s state machine,
//!   bounded by `--limit` (a local semaphore, nothing is sent to the server);
//! - an **observe** tick: one `flow_runs/filter` for all in-flight runs feeds their Prefect
//!   state to the infrastructure watchers and turns `Cancelling` into a cancellation.
//!
//! **Shutdown.** The first signal cancels the token: polling stops at once; runs not yet
//! launched are handed back to the pool (set Scheduled again, never left Pending); launched
//! runs keep running on their infrastructure, untouched — a restarted worker re-adopts them
//! through [`Infrastructure::recover`]. The loop then waits (bounded) for its tasks, emits
//! `prefect.worker.stopped` and flushes logs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use prefect_client::client::ClientConfig;
use prefect_client::events::EventEmitter;
use prefect_client::models::{
    Deployment, Event, Flow, FlowRun, StateCreate, StateType, WorkPool, WorkerFlowRunResponse,
};
use prefect_client::{ApiError, PrefectClient, ServerVersion};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::health::{self, Health};
use crate::infrastructure::{Infrastructure, RecoveryContext, RunRefs};
use crate::logs::LogShipper;
use crate::run::{drive, Phase, RunControl};
use crate::single_flight::SingleFlight;
use crate::template;

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Prefect API failed in a way the worker cannot work around.
    #[error("Prefect API error")]
    Api(#[from] ApiError),
    /// The work pool does not exist and `--create-pool-if-not-found` is off.
    #[error("work pool {0:?} not found; create it with `prefect-aci pool create {0}` or drop --no-create-pool-if-not-found")]
    PoolNotFound(String),
    /// The healthcheck server could not bind.
    #[error("cannot serve the healthcheck on {addr}")]
    Healthcheck {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the loop and every run task.
pub struct Shared<I: Infrastructure> {
    pub client: PrefectClient,
    pub infra: I,
    pub config: WorkerConfig,
    pub server: ServerVersion,
    pub logs: LogShipper,
    pub events: EventEmitter,
    /// Cancelled on worker shutdown (not on run cancellation).
    pub shutdown: CancellationToken,
    pool: RwLock<WorkPool>,
    in_flight: Mutex<HashMap<Uuid, RunControl>>,
    /// The worker's id on Prefect Cloud (from the first heartbeat), passed to flow runs.
    pub worker_id: std::sync::OnceLock<Uuid>,
    /// Deployment and flow reads shared by runs asking at the same moment (a burst).
    pub deployments: SingleFlight<Option<Deployment>>,
    pub flows: SingleFlight<Flow>,
    /// Every task of this worker: flow runs, and the best-effort writes they leave behind.
    /// Shutdown waits for it (bounded by the grace period).
    pub tasks: TaskTracker,
}

impl<I: Infrastructure> Shared<I> {
    /// `GET /deployments/{id}`, shared with concurrent readers of the same deployment.
    pub async fn read_deployment(&self, id: Uuid) -> Result<Option<Deployment>, ApiError> {
        self.deployments
            .get(id, || self.client.read_deployment(id))
            .await
    }

    /// `GET /flows/{id}`, shared with concurrent readers of the same flow.
    pub async fn read_flow(&self, id: Uuid) -> Result<Flow, ApiError> {
        self.flows.get(id, || self.client.read_flow(id)).await
    }
}

impl<I: Infrastructure> Shared<I> {
    /// The pool as last read.
    pub fn pool(&self) -> WorkPool {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn pool_name(&self) -> String {
        self.pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .name
            .clone()
    }
    pub fn pool_id(&self) -> Uuid {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).id
    }

    fn worker_resource(&self) -> BTreeMap<String, String> {
        let mut r = BTreeMap::new();
        r.insert(
            "prefect.resource.id".into(),
            format!(
                "prefect.worker.{}.{}",
                template::POOL_TYPE,
                slugify(&self.config.name)
            ),
        );
        r.insert("prefect.resource.name".into(), self.config.name.clone());
        r.insert(
            "prefect.version".into(),
            prefect_client::client::PREFECT_VERSION.into(),
        );
        r.insert("prefect.worker-type".into(), template::POOL_TYPE.into());
        r
    }

    fn pool_related(&self) -> BTreeMap<String, String> {
        let pool = self.pool.read().unwrap_or_else(|e| e.into_inner());
        related(
            &format!("prefect.work-pool.{}", pool.id),
            "work-pool",
            Some(&pool.name),
        )
    }

    /// Emit a `prefect.worker.*` event about a run.
    pub fn emit_run_event(
        &self,
        event: &str,
        refs: &RunRefs,
        id: Option<Uuid>,
        follows: Option<Uuid>,
        infrastructure: Option<(&str, i64)>,
    ) {
        let mut rel = Vec::new();
        if let Some((id, name)) = &refs.deployment {
            rel.push(related(
                &format!("prefect.deployment.{id}"),
                "deployment",
                Some(name),
            ));
        }
        rel.push(related(
            &format!("prefect.flow.{}", refs.flow_id),
            "flow",
            Some(&refs.flow_name),
        ));
        let mut fr = related(
            &format!("prefect.flow-run.{}", refs.flow_run_id),
            "flow-run",
            Some(&refs.flow_run_name),
        );
        if let Some((ident, code)) = infrastructure {
            fr.insert("prefect.infrastructure.identifier".into(), ident.into());
            fr.insert(
                "prefect.infrastructure.status-code".into(),
                code.to_string(),
            );
        }
        rel.push(fr);
        for tag in &refs.tags {
            rel.push(related(&format!("prefect.tag.{tag}"), "tag", None));
        }
        rel.push(self.pool_related());
        self.events.emit(Event {
            occurred: Utc::now(),
            event: event.into(),
            id: id.unwrap_or_else(Uuid::now_v7),
            follows,
            payload: Default::default(),
            resource: self.worker_resource(),
            related: rel,
        });
    }
}

fn related(id: &str, role: &str, name: Option<&str>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("prefect.resource.id".into(), id.into());
    m.insert("prefect.resource.role".into(), role.into());
    if let Some(n) = name {
        m.insert("prefect.resource.name".into(), n.into());
    }
    m
}

/// Lowercase, runs of other characters collapsed to `-` (python-slugify's default shape).
pub fn slugify(s: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Run the worker until `shutdown` is cancelled (or after one poll with `run_once`).
pub async fn run<I: Infrastructure>(
    config: WorkerConfig,
    infra: I,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let health_state = Health::new(config.query_interval * 30);
    if let Some(addr) = config.healthcheck {
        let bound = health::serve(addr, health_state.clone(), shutdown.clone())
            .await
            .map_err(|source| WorkerError::Healthcheck { addr, source })?;
        tracing::info!("healthcheck serving on http://{bound}/health");
    }

    let mut client_config = ClientConfig::new(config.api_url.clone());
    client_config.auth = config.auth.clone();
    client_config.worker_name = Some(config.name.clone());
    let client = PrefectClient::new(client_config)?;
    // The server's version, the pool and the first poll are independent reads: made together,
    // runs already waiting when the worker starts are taken one round trip after launch. (A
    // poll of a pool that does not exist yet just fails; the loop polls again once it does.)
    let (server, pool, first_poll) = tokio::join!(
        client.server_version(),
        sync_pool(&client, &config),
        fetch_scheduled(&client, &config)
    );
    let server = server?;
    tracing::info!(server = %server.raw, pool = %config.pool, worker = %config.name, "worker starting");
    let pool = pool?;
    if pool.pool_type != template::POOL_TYPE {
        tracing::warn!(
            "work pool {:?} has type {:?}, not {:?}; runs will still be executed on ACI",
            pool.name,
            pool.pool_type,
            template::POOL_TYPE
        );
    }
    if pool.is_paused {
        tracing::warn!(
            "work pool {:?} is paused; no runs will be picked up until it is resumed",
            pool.name
        );
    }
    let events = if server.supports_events() {
        EventEmitter::start(client.api_url(), config.auth.clone())
    } else {
        EventEmitter::disabled()
    };
    let shared = Arc::new(Shared {
        logs: LogShipper::start(client.clone()),
        client: client.clone(),
        infra,
        server,
        events,
        shutdown: CancellationToken::new(),
        pool: RwLock::new(pool),
        in_flight: Mutex::new(HashMap::new()),
        worker_id: std::sync::OnceLock::new(),
        deployments: SingleFlight::default(),
        flows: SingleFlight::default(),
        tasks: TaskTracker::new(),
        config,
    });
    let started_id = Uuid::now_v7();
    shared.events.emit(Event {
        occurred: Utc::now(),
        event: "prefect.worker.started".into(),
        id: started_id,
        follows: None,
        payload: Default::default(),
        resource: shared.worker_resource(),
        related: vec![shared.pool_related()],
    });
    let tracker = shared.tasks.clone();
    // The first heartbeat and recovery run beside the first poll instead of before it: a
    // started worker picks up runs at once (launch → first poll is benchmarked, bench/).
    let (s, t) = (shared.clone(), tracker.clone());
    tracker.spawn(async move {
        heartbeat(&s).await;
        recover(&s, &t).await;
    });

    let slots = shared.config.limit.map(|l| Arc::new(Semaphore::new(l)));
    let mut poll_tick = tokio::time::interval(shared.config.query_interval);
    let mut heartbeat_tick = tokio::time::interval(jittered(shared.config.heartbeat_interval));
    let mut observe_tick =
        tokio::time::interval(shared.config.query_interval.min(Duration::from_secs(5)));
    let mut recover_tick =
        tokio::time::interval(shared.config.heartbeat_interval.max(Duration::from_secs(5)) * 2);
    for t in [
        &mut poll_tick,
        &mut heartbeat_tick,
        &mut observe_tick,
        &mut recover_tick,
    ] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    heartbeat_tick.reset();
    recover_tick.reset();
    match first_poll {
        Ok(runs) => {
            take_scheduled(&shared, &tracker, slots.as_ref(), runs);
            health_state.polled();
            crate::metrics::global().polled();
            if !shared.config.run_once {
                poll_tick.reset();
            }
        }
        Err(e) => tracing::debug!(error = %e, "first poll failed; polling again in the loop"),
    }
    let pickup = if shared.server.supports_events() && crate::pickup::enabled_from_env() {
        crate::pickup::start(
            shared.client.api_url(),
            shared.config.auth.clone(),
            shared.pool_id(),
            shutdown.clone(),
        )
    } else {
        crate::pickup::Pickup::default()
    };

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = poll_tick.tick() => {
                match poll(&shared, &tracker, slots.as_ref()).await {
                    Ok(()) => {
                        health_state.polled();
                        crate::metrics::global().polled();
                    }
                    Err(e) => tracing::warn!(error = %e, "polling for scheduled flow runs failed; will retry"),
                }
                if shared.config.run_once {
                    break;
                }
            }
            _ = heartbeat_tick.tick() => {
                heartbeat(&shared).await;
            }
            _ = observe_tick.tick() => observe(&shared).await,
            // Recovery may wait on a slow or unreachable ARM; a shutdown must not wait for
            // it (it is idempotent and simply runs again after a restart).
            _ = recover_tick.tick() => tokio::select! {
                _ = recover(&shared, &tracker) => {}
                _ = shutdown.cancelled() => break,
            },
            // Pickup by events: fire the ticks now instead of waiting for their interval.
            _ = pickup.poll.notified() => poll_tick.reset_immediately(),
            _ = pickup.observe.notified() => observe_tick.reset_immediately(),
        }
    }

    if shared.config.run_once && !shutdown.is_cancelled() {
        // --run-once: wait for what was submitted to finish its life.
        tracker.close();
        tokio::select! {
            _ = wait_with_observe(&shared, &tracker) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    tracing::info!("worker stopping");
    shared.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some flow run tasks did not reach a safe point within the shutdown grace period"
        );
    }
    shared.events.emit(Event {
        occurred: Utc::now(),
        event: "prefect.worker.stopped".into(),
        id: Uuid::now_v7(),
        follows: Some(started_id),
        payload: Default::default(),
        resource: shared.worker_resource(),
        related: vec![shared.pool_related()],
    });
    let shared = match Arc::try_unwrap(shared) {
        Ok(s) => s,
        Err(_) => return Ok(()),
    };
    shared.events.close(Duration::from_secs(5)).await;
    shared.logs.close().await;
    Ok(())
}

async fn wait_with_observe<I: Infrastructure>(shared: &Arc<Shared<I>>, tracker: &TaskTracker) {
    let mut tick = tokio::time::interval(shared.config.query_interval.min(Duration::from_secs(5)));
    loop {
        tokio::select! {
            _ = tracker.wait() => return,
            _ = tick.tick() => observe(shared).await,
        }
    }
}

fn jittered(d: Duration) -> Duration {
    // Prefect jitters the heartbeat by up to 30% so a fleet of workers does not beat in step.
    d.mul_f64(1.0 + 0.3 * (fastrand::f64() - 0.5))
}

/// Read the pool, creating it (or filling an empty template) as Prefect's worker does.
async fn sync_pool(client: &PrefectClient, config: &WorkerConfig) -> Result<WorkPool, WorkerError> {
    let default_template = config
        .base_job_template
        .clone()
        .unwrap_or_else(template::base_job_template);
    let pool =
        match client.read_work_pool(&config.pool).await? {
            Some(p) => p,
            None if config.create_pool_if_not_found => {
                match client
                    .create_work_pool(
                        &config.pool,
                        template::POOL_TYPE,
                        Some(&default_template),
                        None,
                    )
                    .await
                {
                    Ok(p) => {
                        tracing::info!("created work pool {:?}", p.name);
                        p
                    }
                    Err(ApiError::AlreadyExists { .. }) => client
                        .read_work_pool(&config.pool)
                        .await?
                        .ok_or_else(|| WorkerError::PoolNotFound(config.pool.clone()))?,
                    Err(e) => return Err(e.into()),
                }
            }
            None => return Err(WorkerError::PoolNotFound(config.pool.clone())),
        };
    let empty = match &pool.base_job_template {
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    };
    if empty {
        client
            .update_work_pool(
                &config.pool,
                &json!({"base_job_template": default_template}),
            )
            .await?;
        return client
            .read_work_pool(&config.pool)
            .await?
            .ok_or_else(|| WorkerError::PoolNotFound(config.pool.clone()));
    }
    Ok(pool)
}

async fn heartbeat<I: Infrastructure>(shared: &Arc<Shared<I>>) {
    let c = &shared.config;
    match sync_pool(&shared.client, c).await {
        Ok(p) => *shared.pool.write().unwrap_or_else(|e| e.into_inner()) = p,
        Err(e) => tracing::warn!(error = %e, "could not refresh the work pool"),
    }
    let want_id = shared.worker_id.get().is_none();
    match shared
        .client
        .send_worker_heartbeat(
            &c.pool,
            &c.name,
            c.heartbeat_interval.as_secs().max(1),
            want_id,
        )
        .await
    {
        Ok(Some(id)) => {
            let _ = shared.worker_id.set(id);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "worker heartbeat failed"),
    }
}

/// Clean up after earlier workers and adopt runs whose infrastructure is still running.
///
/// Two sources of candidates: the infrastructure's own scan (groups tagged for this pool in
/// the places it knows), and Prefect: runs of this pool in Pending/Running/Cancelling that
/// carry an `infrastructure_pid` but that no live worker is handling. Adopting such a run
/// re-renders its configuration and watches it; if its container group is gone, the watch
/// reports that and the run is crashed instead of staying a zombie.
async fn recover<I: Infrastructure>(shared: &Arc<Shared<I>>, tracker: &TaskTracker) {
    let ctx = RecoveryContext {
        client: shared.client.clone(),
        work_pool: shared.pool(),
        worker_name: shared.config.name.clone(),
        places: places(shared).await,
        in_flight: shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect(),
    };
    let mut ids = match shared.infra.recover(ctx).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "recovery of earlier flow runs failed; will retry");
            vec![]
        }
    };
    let cell = Peers::new();
    match orphaned_runs(shared, &cell).await {
        Ok(more) => ids.extend(more),
        Err(e) => tracing::warn!(error = %e, "cannot look for orphaned flow runs; will retry"),
    }
    if let Err(e) = release_stale_claims(shared, &cell).await {
        tracing::warn!(error = %e, "cannot look for stale claimed flow runs; will retry");
    }
    ids.sort();
    ids.dedup();
    // Groups of this pool include those of runs other live workers are watching right now:
    // adopting those would put two watchers (and two cleanups) on one run.
    let online = if ids.is_empty() {
        Vec::new()
    } else {
        match peers(shared, &cell).await {
            Ok(p) => online_names(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the pool's workers; recovery postponed");
                return;
            }
        }
    };
    let others_online = online.iter().any(|n| *n != shared.config.name);
    for id in ids {
        if shared.shutdown.is_cancelled() {
            return;
        }
        if shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
        {
            continue;
        }
        match shared.client.read_flow_run(id).await {
            Ok(Some(fr))
                if !fr.current_state_type().is_some_and(StateType::is_final)
                    && !owned_by_live_peer(&fr, &shared.config.name, &online, others_online) =>
            {
                if restored_final_state(shared, &fr).await {
                    continue;
                }
                tracing::info!(flow_run.id = %id, "adopting a flow run whose worker is gone");
                submit(shared, tracker, fr, Phase::Adopt, None);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read flow run {id} for adoption"),
        }
    }
}

/// Repairs a run whose current state is an older, stale commit: on SQLite a losing claim's
/// `Pending` can commit after the winner has already finished the run, leaving the run
/// pointing at that `Pending` while its history ends in a final state. Adopting such a run
/// would watch (or even relaunch) a finished run, so the final state is proposed again
/// instead. Final states never move on, so re-proposing one cannot undo newer progress.
/// Returns whether the run was repaired.
async fn restored_final_state<I: Infrastructure>(shared: &Arc<Shared<I>>, fr: &FlowRun) -> bool {
    let Some(current) = fr.state.as_ref() else {
        return false;
    };
    let states = match shared.client.read_flow_run_states(fr.id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the state history of flow run {}", fr.id);
            return false;
        }
    };
    let Some(last) = states.iter().max_by_key(|s| s.timestamp) else {
        return false;
    };
    let stale =
        last.state_type.is_final() && last.id != current.id && last.timestamp > current.timestamp;
    if !stale {
        return false;
    }
    let copy = StateCreate::copy_of(last);
    match shared.client.set_flow_run_state(fr.id, &copy, true).await {
        Ok(_) => {
            tracing::info!(
                flow_run.id = %fr.id,
                "flow run pointed at a stale {} state after finishing; restored its {} state",
                current.state_type,
                last.state_type
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not restore the final state of flow run {}", fr.id);
            true
        }
    }
}

/// True when `fr` belongs to another worker that is online: its `prefect.worker.name` label
/// names a live peer, or (servers without labels, 2.x) any peer is alive.
fn owned_by_live_peer(fr: &FlowRun, me: &str, online: &[String], others_online: bool) -> bool {
    let owner = fr
        .labels
        .as_ref()
        .and_then(|l| l.get("prefect.worker.name"))
        .and_then(Value::as_str);
    match owner {
        Some(name) => name != me && online.iter().any(|n| n == name),
        None => others_online,
    }
}

/// `(subscription_id, resource_group_name)` pairs this pool's runs use: the pool's defaults
/// and every deployment's job variables.
async fn places<I: Infrastructure>(shared: &Arc<Shared<I>>) -> Vec<(String, String)> {
    let pool = shared.pool();
    let props = &pool.base_job_template["variables"]["properties"];
    let default_sub = props["subscription_id"]["default"]
        .as_str()
        .map(str::to_string);
    let default_rg = props["resource_group_name"]["default"]
        .as_str()
        .map(str::to_string);
    let mut out = Vec::new();
    if let (Some(s), Some(r)) = (&default_sub, &default_rg) {
        out.push((s.clone(), r.clone()));
    }
    let deployments = shared
        .client
        .raw_json(
            reqwest::Method::POST,
            "/deployments/filter",
            Some(&json!({"work_pools": {"name": {"any_": [pool.name]}}, "limit": 200})),
        )
        .await;
    match deployments {
        Ok(Value::Array(ds)) => {
            for d in ds {
                let vars = d.get("job_variables").or_else(|| d.get("infra_overrides"));
                let sub = vars
                    .and_then(|v| v["subscription_id"].as_str())
                    .map(str::to_string)
                    .or(default_sub.clone());
                let rg = vars
                    .and_then(|v| v["resource_group_name"].as_str())
                    .map(str::to_string)
                    .or(default_rg.clone());
                if let (Some(s), Some(r)) = (sub, rg) {
                    if !out
                        .iter()
                        .any(|(os, or)| *os == s && or.eq_ignore_ascii_case(&r))
                    {
                        out.push((s, r));
                    }
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot list the pool's deployments for recovery"),
    }
    out
}

/// Runs of this pool left Pending without an `infrastructure_pid` for much longer than a
/// submission takes: a worker claimed them and died before launching anything. Nothing
/// exists to adopt, so they are handed back to the pool (Scheduled) for any worker to run;
/// without this they would stay Pending forever (Prefect does not reap Pending runs).
///
/// A run whose claim carries the name of a worker that is still online is left alone, and so
/// is any run this worker is handling itself.
async fn release_stale_claims<I: Infrastructure>(
    shared: &Arc<Shared<I>>,
    cell: &Peers,
) -> Result<(), ApiError> {
    let stale_after = (shared.config.heartbeat_interval * 10).max(Duration::from_secs(60));
    let cutoff = Utc::now() - chrono::Duration::from_std(stale_after).unwrap_or_default();
    let runs = shared
        .client
        .filter_flow_runs(&json!({
            "flow_runs": {"state": {"type": {"any_": ["PENDING"]}}},
            "work_pools": {"name": {"any_": [shared.pool_name()]}},
            "limit": 200,
        }))
        .await?;
    let stale: Vec<FlowRun> = runs
        .into_iter()
        .filter(|fr| fr.infrastructure_pid.as_deref().is_none_or(str::is_empty))
        .filter(|fr| {
            fr.state
                .as_ref()
                .and_then(|s| s.timestamp)
                .is_some_and(|t| t < cutoff)
        })
        .filter(|fr| {
            !shared
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&fr.id)
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let online = online_names(peers(shared, cell).await?);
    for fr in stale {
        let owner = fr
            .labels
            .as_ref()
            .and_then(|l| l.get("prefect.worker.name"))
            .and_then(Value::as_str);
        if owner.is_some_and(|o| o != shared.config.name && online.iter().any(|n| n == o)) {
            continue;
        }
        let s = StateCreate::new(StateType::Scheduled, "Scheduled", fr.id).with_message(
            "The worker that claimed this run stopped before launching it; rescheduled.",
        );
        match shared.client.set_flow_run_state(fr.id, &s, true).await {
            Ok(_) => {
                tracing::info!(flow_run.id = %fr.id, "released a flow run claimed by a worker that is gone")
            }
            Err(e) => tracing::warn!(error = %e, "could not release stale flow run {}", fr.id),
        }
    }
    Ok(())
}

/// The pool's workers and their status (`ONLINE` / `OFFLINE`), read at most once per
/// recovery pass and only when a step needs them.
type Peers = tokio::sync::OnceCell<HashMap<String, String>>;

async fn peers<'p, I: Infrastructure>(
    shared: &Arc<Shared<I>>,
    cell: &'p Peers,
) -> Result<&'p HashMap<String, String>, ApiError> {
    cell.get_or_try_init(|| async {
        let workers = shared
            .client
            .raw_json(
                reqwest::Method::POST,
                &format!(
                    "/work_pools/{}/workers/filter",
                    prefect_client::client::encode_segment(&shared.pool_name())
                ),
                Some(&json!({})),
            )
            .await?;
        let mut status = HashMap::new();
        for w in workers.as_array().into_iter().flatten() {
            if let (Some(n), Some(st)) = (w["name"].as_str(), w["status"].as_str()) {
                status.insert(n.to_string(), st.to_string());
            }
        }
        Ok(status)
    })
    .await
}

/// Names of the workers in `statuses` that Prefect considers online.
fn online_names(statuses: &HashMap<String, String>) -> Vec<String> {
    statuses
        .iter()
        .filter(|(_, st)| *st == "ONLINE")
        .map(|(n, _)| n.clone())
        .collect()
}

/// Runs of this pool that were launched (they have an `infrastructure_pid`) by a worker that
/// is no longer online.
async fn orphaned_runs<I: Infrastructure>(
    shared: &Arc<Shared<I>>,
    cell: &Peers,
) -> Result<Vec<Uuid>, ApiError> {
    let pool = shared.pool_name();
    let runs = shared
        .client
        .filter_flow_runs(&json!({
            "flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}},
            "work_pools": {"name": {"any_": [pool]}},
            "limit": 200,
        }))
        .await?;
    if runs.is_empty() {
        return Ok(vec![]);
    }
    // A worker counts as gone when the server lists it OFFLINE (no heartbeat for three
    // intervals). One the server does not list yet may have just started and not
    // heartbeated: its runs are left alone until they are older than three intervals.
    let status = peers(shared, cell).await?;
    let others_online = status
        .iter()
        .any(|(n, st)| st == "ONLINE" && *n != shared.config.name);
    let stale_after =
        chrono::Duration::from_std(shared.config.heartbeat_interval * 3).unwrap_or_default();
    let now = Utc::now();
    Ok(runs
        .into_iter()
        .filter(|fr| {
            fr.infrastructure_pid
                .as_deref()
                .is_some_and(|p| p.contains(':'))
        })
        .filter(|fr| {
            let owner = fr
                .labels
                .as_ref()
                .and_then(|l| l.get("prefect.worker.name"))
                .and_then(Value::as_str);
            let stale = fr
                .state
                .as_ref()
                .and_then(|s| s.timestamp)
                .is_some_and(|t| now - t > stale_after);
            match owner {
                Some(name) if name == shared.config.name => true,
                Some(name) => match status.get(name).map(String::as_str) {
                    Some("ONLINE") => false,
                    Some(_) => true,
                    None => stale,
                },
                // Servers without labels (2.x): only when no other worker is alive.
                None => !others_online && stale,
            }
        })
        .map(|fr| fr.id)
        .collect())
}

async fn poll<I: Infrastructure>(
    shared: &Arc<Shared<I>>,
    tracker: &TaskTracker,
    slots: Option<&Arc<Semaphore>>,
) -> Result<(), ApiError> {
    let runs = fetch_scheduled(&shared.client, &shared.config).await?;
    take_scheduled(shared, tracker, slots, runs);
    Ok(())
}

/// The pool's runs due within the prefetch window.
async fn fetch_scheduled(
    client: &PrefectClient,
    c: &WorkerConfig,
) -> Result<Vec<WorkerFlowRunResponse>, ApiError> {
    let before = Utc::now() + chrono::Duration::from_std(c.prefetch).unwrap_or_default();
    client
        .get_scheduled_flow_runs(&c.pool, &c.work_queues, before, None)
        .await
}

/// Start a task for each run not already handled, as far as `--limit` allows.
fn take_scheduled<I: Infrastructure>(
    shared: &Arc<Shared<I>>,
    tracker: &TaskTracker,
    slots: Option<&Arc<Semaphore>>,
    runs: Vec<WorkerFlowRunResponse>,
) {
    for item in runs {
        let fr = item.flow_run;
        if shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&fr.id)
        {
            continue;
        }
        let permit = match slots {
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::debug!("limit reached; leaving remaining runs for a later poll");
                    break;
                }
            },
            None => None,
        };
        submit(shared, tracker, fr, Phase::Claim, permit);
    }
}

/// Start a task driving `fr` from `start`; it holds `permit` until done.
pub fn submit<I: Infrastructure>(
    shared: &Arc<Shared<I>>,
    tracker: &TaskTracker,
    fr: FlowRun,
    start: Phase<I::Job>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let control = RunControl::new();
    let due = matches!(start, Phase::Claim)
        .then(|| crate::metrics::Metrics::due_time(fr.created, fr.expected_start_time));
    crate::metrics::global().run_submitted(due.flatten());
    let ended = control.clone();
    shared
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(fr.id, control.clone());
    let shared = shared.clone();
    tracker.spawn(async move {
        let id = fr.id;
        drive(shared.clone(), fr, control, start).await;
        crate::metrics::global().run_ended(ended.state.borrow().as_ref());
        shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        drop(permit);
    });
}

/// Read the states of all in-flight runs (one request per 200, the server's page limit) and
/// feed them to their watchers; Cancelling cancels.
async fn observe<I: Infrastructure>(shared: &Arc<Shared<I>>) {
    const PAGE: usize = 200;
    let ids: Vec<Uuid> = shared
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .copied()
        .collect();
    for page in ids.chunks(PAGE) {
        let filter = json!({"flow_runs": {"id": {"any_": page}}, "limit": page.len()});
        let runs = match shared.client.filter_flow_run_heads(&filter).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "could not read in-flight flow run states");
                return;
            }
        };
        let in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for fr in runs {
            let Some(control) = in_flight.get(&fr.id) else {
                continue;
            };
            let st = fr.current_state_type().cloned();
            // 2.x servers express Cancelling as a CANCELLED type named "Cancelling".
            let cancelling = st == Some(StateType::Cancelling)
                || (st == Some(StateType::Cancelled)
                    && fr.current_state_name() == Some("Cancelling"));
            if cancelling && !control.cancel.is_cancelled() {
                tracing::info!(flow_run.id = %fr.id, "cancellation requested");
                control.cancel.cancel();
            }
            control.state.send_replace(st);
        }
    }
}
