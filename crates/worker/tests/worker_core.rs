//! The worker core against a real Prefect server, with a fake infrastructure that records
//! what it is asked to do. The ACI backend has its own end-to-end tests.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prefect_aci_worker::infrastructure::{
    ExitInfo, InfraError, Infrastructure, JobContext, RunSignals,
};
use prefect_aci_worker::template::{base_job_template, POOL_TYPE};
use prefect_aci_worker::WorkerConfig;
use prefect_client::Auth;
use serde_json::{json, Map, Value};
use support::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the fake was asked to do, for assertions.
#[derive(Default)]
struct Record {
    launched: Vec<Uuid>,
    configs: HashMap<Uuid, Map<String, Value>>,
    killed: Vec<Uuid>,
    cleaned: Vec<Uuid>,
    running: usize,
    max_running: usize,
}

/// Behaviour is chosen per run by its `command` job variable:
/// `fail-launch`, `exit N`, `hold` (runs until killed), anything else exits 0.
#[derive(Clone, Default)]
struct FakeInfra {
    record: Arc<Mutex<Record>>,
    kill_signal: Arc<tokio::sync::Notify>,
}

struct FakeJob {
    id: Uuid,
    command: String,
}

impl Infrastructure for FakeInfra {
    type Job = FakeJob;

    fn prepare(&self, ctx: &JobContext) -> Result<FakeJob, InfraError> {
        // The mode comes from env FAKE_MODE, else from the command.
        let command = ctx.configuration["env"]["FAKE_MODE"]
            .as_str()
            .or(ctx.configuration["command"].as_str())
            .unwrap_or("")
            .to_string();
        if command == "invalid" {
            return Err(InfraError::invalid(
                "command 'invalid' is not allowed by the fake",
            ));
        }
        self.record
            .lock()
            .unwrap()
            .configs
            .insert(ctx.flow_run.id, ctx.configuration.clone());
        Ok(FakeJob {
            id: ctx.flow_run.id,
            command,
        })
    }

    fn identifier(&self, job: &FakeJob) -> String {
        format!("{}:fake-{}", job.id, &job.id.to_string()[..8])
    }

    async fn launch(&self, job: &FakeJob) -> Result<(), InfraError> {
        if job.command == "fail-launch" {
            return Err(InfraError::permanent(
                "RuntimeError: the fake refused to start",
            ));
        }
        let mut r = self.record.lock().unwrap();
        r.launched.push(job.id);
        r.running += 1;
        r.max_running = r.max_running.max(r.running);
        Ok(())
    }

    async fn watch(
        &self,
        job: &FakeJob,
        signals: RunSignals,
    ) -> Result<Option<ExitInfo>, InfraError> {
        let code = if job.command == "hold" {
            tokio::select! {
                _ = signals.shutdown.cancelled() => return Ok(None),
                _ = self.kill_signal.notified() => -1,
                // Exits on its own once Prefect says the run is final (like a real engine).
                _ = async {
                    let mut st = signals.state.clone();
                    loop {
                        if st.borrow_and_update().as_ref().is_some_and(|s| s.is_final()) { break; }
                        if st.changed().await.is_err() { std::future::pending::<()>().await; }
                    }
                } => 0,
            }
        } else if let Some(n) = job.command.strip_prefix("exit ") {
            n.parse().unwrap_or(1)
        } else {
            0
        };
        self.record.lock().unwrap().running -= 1;
        Ok(Some(ExitInfo {
            status_code: code,
            explanation: None,
        }))
    }

    async fn kill(&self, job: &FakeJob, _grace: Duration) -> Result<(), InfraError> {
        self.record.lock().unwrap().killed.push(job.id);
        self.kill_signal.notify_waiters();
        Ok(())
    }

    async fn cleanup(&self, job: &FakeJob) -> Result<(), InfraError> {
        self.record.lock().unwrap().cleaned.push(job.id);
        Ok(())
    }
}

fn config(url: &str, pool: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(url, pool);
    c.name = unique("worker");
    c.query_interval = Duration::from_millis(500);
    c.heartbeat_interval = Duration::from_secs(5);
    c.prefetch = Duration::from_secs(10);
    c.shutdown_grace = Duration::from_secs(10);
    c
}

/// A worker running in the background; stopped (and awaited) by `stop`.
struct Running {
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), prefect_aci_worker::WorkerError>>,
}

fn start(c: WorkerConfig, infra: FakeInfra) -> Running {
    init_test_logs();
    let token = CancellationToken::new();
    let task = tokio::spawn(prefect_aci_worker::run(c, infra, token.clone()));
    Running { token, task }
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        self.task.await.expect("join").expect("worker result");
    }
}

/// Create the pool through the worker (run once), so tests start from a real pool.
async fn pool_via_worker(url: &str) -> String {
    let pool = unique("pool");
    let mut c = config(url, &pool);
    c.run_once = true;
    prefect_aci_worker::run(c, FakeInfra::default(), CancellationToken::new())
        .await
        .expect("run once");
    pool
}

#[tokio::test]
async fn creates_the_pool_with_the_aci_template_and_the_server_accepts_it() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let p = client(&url, Auth::None)
        .read_work_pool(&pool)
        .await
        .unwrap()
        .expect("pool exists");
    assert_eq!(p.pool_type, POOL_TYPE);
    assert_eq!(p.base_job_template, base_job_template());
    assert_eq!(
        p.status.as_deref(),
        Some("READY"),
        "heartbeat should make the pool ready"
    );
}

#[tokio::test]
async fn claims_a_run_reports_infrastructure_pid_labels_and_logs() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    let dep = api
        .create_deployment(&pool, None, json!({"env": {"DEP": "d"}, "cpu": 2, "resource_group_name": "rg", "subscription_id": "sub"}))
        .await;
    let run = api.create_flow_run(dep, json!({"env": {"RUN": "r"}})).await;

    let fake = FakeInfra::default();
    let w = start(config(&url, &pool), fake.clone());
    let fr = wait_for(Duration::from_secs(60), "infrastructure_pid", || async {
        let fr = api.flow_run(run).await;
        fr["infrastructure_pid"].as_str().is_some().then_some(fr)
    })
    .await;
    wait_for(Duration::from_secs(60), "cleanup", || async {
        fake.record
            .lock()
            .unwrap()
            .cleaned
            .contains(&run)
            .then_some(())
    })
    .await;
    w.stop().await;

    assert_eq!(
        fr["infrastructure_pid"],
        format!("{run}:fake-{}", &run.to_string()[..8])
    );
    // The fake "container" exits 0 without an engine reporting: no zombie is left behind.
    let after = api.flow_run(run).await;
    assert_eq!(after["state"]["type"], "CRASHED", "{after}");
    assert!(after["state"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("without the flow run reporting a final state"));
    // The claim, then the Submitting sub-state (3.6.22+), then the end.
    let mut history = api.0.read_flow_run_states(run).await.unwrap();
    history.sort_by_key(|s| s.timestamp);
    let names: Vec<_> = history.iter().filter_map(|s| s.name.as_deref()).collect();
    assert_eq!(names, ["Scheduled", "Pending", "Submitting", "Crashed"]);
    // Labels are written beside the launch, and a stopped worker has finished its writes.
    assert_eq!(after["labels"]["prefect.worker.type"], POOL_TYPE);
    assert_eq!(after["labels"]["prefect.work-pool.name"], pool.as_str());

    let (launched, cfg) = {
        let rec = fake.record.lock().unwrap();
        (rec.launched.clone(), rec.configs[&run].clone())
    };
    assert_eq!(launched, vec![run]);
    assert_eq!(cfg["cpu"], 2);
    assert_eq!(cfg["command"], "prefect flow-run execute");
    assert_eq!(cfg["env"]["DEP"], "d");
    assert_eq!(cfg["env"]["RUN"], "r");
    assert_eq!(cfg["env"]["PREFECT__FLOW_RUN_ID"], run.to_string());
    assert_eq!(cfg["env"]["PREFECT_API_URL"], url.as_str());
    assert_eq!(cfg["labels"]["prefect.io/flow-run-id"], run.to_string());

    // Events: submitted and executed, about this flow run, from this worker.
    let events = wait_for(Duration::from_secs(60), "worker events", || async {
        let v = api
            .post(
                "/events/filter",
                json!({"filter": {
                    "occurred": {"since": (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339()},
                    "any_resource": {"id": [format!("prefect.flow-run.{run}")]},
                    "event": {"prefix": ["prefect.worker."]},
                }, "limit": 50}),
            )
            .await;
        let names: Vec<String> = v["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["event"].as_str().map(str::to_string))
            .collect();
        (names.iter().any(|n| n == "prefect.worker.executed-flow-run")).then_some(names)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|n| n == "prefect.worker.submitted-flow-run"),
        "{events:?}"
    );

    let logs = wait_for(
        Duration::from_secs(10),
        "worker logs in Prefect",
        || async {
            let l = api.logs(run).await;
            l.iter()
                .any(|m| m.contains("submitted to infrastructure"))
                .then_some(l)
        },
    )
    .await;
    assert!(
        logs.iter()
            .any(|m| m.contains(&format!("submitting flow run '{run}'"))),
        "{logs:?}"
    );
}

#[tokio::test]
async fn failed_submission_and_non_zero_exit_crash_the_run_and_the_worker_keeps_serving() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    let dep = api.create_deployment(&pool, None, json!({})).await;
    let refused = api
        .create_flow_run(dep, json!({"command": "fail-launch"}))
        .await;
    let exit3 = api.create_flow_run(dep, json!({"command": "exit 3"})).await;
    let invalid = api
        .create_flow_run(dep, json!({"command": "invalid"}))
        .await;
    let fine = api.create_flow_run(dep, json!({})).await;

    let fake = FakeInfra::default();
    let w = start(config(&url, &pool), fake.clone());
    for id in [refused, exit3, invalid] {
        wait_for(Duration::from_secs(60), "Crashed", || async {
            (api.state_type(id).await == "CRASHED").then_some(())
        })
        .await;
    }
    wait_for(Duration::from_secs(60), "the good run launched", || async {
        fake.record
            .lock()
            .unwrap()
            .launched
            .contains(&fine)
            .then_some(())
    })
    .await;
    w.stop().await;

    let msg = |v: Value| v["state"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(
        msg(api.flow_run(refused).await),
        "Failed to submit flow run to infrastructure: RuntimeError: the fake refused to start"
    );
    assert!(msg(api.flow_run(exit3).await)
        .starts_with("Flow run infrastructure exited with non-zero status code 3."));
    assert!(msg(api.flow_run(invalid).await).contains("command 'invalid' is not allowed"));
}

#[tokio::test]
async fn two_workers_on_one_pool_never_submit_the_same_run() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    let dep = api.create_deployment(&pool, None, json!({})).await;
    let mut runs = Vec::new();
    for _ in 0..12 {
        runs.push(api.create_flow_run(dep, json!({})).await);
    }
    let fake = FakeInfra::default();
    let (w1, w2) = (
        start(config(&url, &pool), fake.clone()),
        start(config(&url, &pool), fake.clone()),
    );
    wait_for(Duration::from_secs(60), "all runs launched", || async {
        (fake.record.lock().unwrap().launched.len() >= runs.len()).then_some(())
    })
    .await;
    // Give both workers further polls: nothing may be launched twice.
    for _ in 0..3 {
        for r in &runs {
            api.flow_run(*r).await;
        }
    }
    w1.stop().await;
    w2.stop().await;
    let mut launched = fake.record.lock().unwrap().launched.clone();
    launched.sort();
    let mut expected = runs.clone();
    expected.sort();
    assert_eq!(launched, expected, "every run launched exactly once");
}

/// A proposal retried after its first attempt committed (response lost) must not read as a
/// refusal: the server REJECTs the repeated transition id with our own state, and a worker
/// that took that for a lost claim would strand the run in Pending.
#[tokio::test]
async fn a_retried_state_proposal_that_already_committed_counts_as_accepted() {
    use prefect_client::models::{SetStateStatus, StateCreate, StateType};
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    let dep = api.create_deployment(&pool, None, json!({})).await;
    let run = api.create_flow_run(dep, json!({})).await;
    let pending = StateCreate::new(StateType::Pending, "Pending", run);
    let first = api
        .0
        .set_flow_run_state(run, &pending, false)
        .await
        .unwrap();
    assert_eq!(first.status, SetStateStatus::Accept);
    let again = api
        .0
        .set_flow_run_state(run, &pending, false)
        .await
        .unwrap();
    assert_eq!(again.status, SetStateStatus::Accept, "{again:?}");
    assert_eq!(
        again.state.as_ref().and_then(|s| s.id),
        first.state.as_ref().and_then(|s| s.id),
        "the answer carries the state the first attempt committed"
    );
    // A fresh proposal of the same type (another transition) is still refused.
    let other = StateCreate::new(StateType::Pending, "Pending", run);
    let refused = api.0.set_flow_run_state(run, &other, false).await.unwrap();
    assert_ne!(refused.status, SetStateStatus::Accept);
    let pendings = api
        .0
        .read_flow_run_states(run)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.state_type == StateType::Pending)
        .count();
    assert_eq!(pendings, 1, "one committed Pending");
}

#[tokio::test]
async fn respects_work_queues_and_the_local_limit() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    api.post(&format!("/work_pools/{pool}/queues/"), json!({"name": "a"}))
        .await;
    api.post(&format!("/work_pools/{pool}/queues/"), json!({"name": "b"}))
        .await;
    let dep_a = api.create_deployment(&pool, Some("a"), json!({})).await;
    let dep_b = api.create_deployment(&pool, Some("b"), json!({})).await;
    let in_b = api.create_flow_run(dep_b, json!({})).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(api.create_flow_run(dep_a, json!({"command": "hold"})).await);
    }
    let fake = FakeInfra::default();
    let mut c = config(&url, &pool);
    c.work_queues = vec!["a".into()];
    c.limit = Some(1);
    let w = start(c, fake.clone());
    wait_for(Duration::from_secs(60), "one held run launched", || async {
        (fake.record.lock().unwrap().launched.len() == 1).then_some(())
    })
    .await;
    // Finish the held runs one by one through Prefect; each frees the slot for the next.
    for _ in 0..3 {
        let current = *fake.record.lock().unwrap().launched.last().unwrap();
        let n = fake.record.lock().unwrap().launched.len();
        api.post(
            &format!("/flow_runs/{current}/set_state"),
            json!({"state": {"type": "COMPLETED"}, "force": true}),
        )
        .await;
        if n < 3 {
            wait_for(Duration::from_secs(60), "next held run", || async {
                (fake.record.lock().unwrap().launched.len() == n + 1).then_some(())
            })
            .await;
        }
    }
    w.stop().await;
    let (max_running, launched) = {
        let rec = fake.record.lock().unwrap();
        (rec.max_running, rec.launched.clone())
    };
    assert_eq!(max_running, 1, "--limit 1 allows one run at a time");
    assert!(
        !launched.contains(&in_b),
        "a run in queue b must not be picked by a worker of queue a"
    );
    assert_eq!(api.state_type(in_b).await, "SCHEDULED");
}

#[tokio::test]
async fn run_of_a_deleted_deployment_is_cancelled() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    // Deleting a deployment deletes its runs on 3.9, so make a run whose deployment id
    // points nowhere, as a run whose deployment vanished mid-flight looks.
    let flow = api.create_flow(&unique("flow")).await;
    let gone = Uuid::new_v4();
    let fr = api
        .post(
            "/flow_runs/",
            json!({"flow_id": flow, "deployment_id": gone, "work_pool_name": pool, "work_queue_name": "default",
                   "state": {"type": "SCHEDULED", "name": "Scheduled"}}),
        )
        .await;
    let run: Uuid = fr["id"].as_str().unwrap().parse().unwrap();
    let fake = FakeInfra::default();
    let w = start(config(&url, &pool), fake.clone());
    wait_for(Duration::from_secs(60), "Cancelled", || async {
        (api.state_type(run).await == "CANCELLED").then_some(())
    })
    .await;
    w.stop().await;
    let fr = api.flow_run(run).await;
    assert_eq!(
        fr["state"]["message"],
        format!("Deployment {gone} no longer exists, cancelled run.")
    );
    assert!(fake.record.lock().unwrap().launched.is_empty());
}

#[tokio::test]
async fn cancelling_a_running_run_kills_it_and_marks_it_cancelled() {
    let url = api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    let dep = api.create_deployment(&pool, None, json!({})).await;
    let run = api.create_flow_run(dep, json!({"command": "hold"})).await;
    let fake = FakeInfra::default();
    let w = start(config(&url, &pool), fake.clone());
    wait_for(Duration::from_secs(60), "launched", || async {
        fake.record
            .lock()
            .unwrap()
            .launched
            .contains(&run)
            .then_some(())
    })
    .await;
    api.post(
        &format!("/flow_runs/{run}/set_state"),
        json!({"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": true}),
    )
    .await;
    wait_for(Duration::from_secs(60), "Cancelled", || async {
        (api.state_type(run).await == "CANCELLED").then_some(())
    })
    .await;
    wait_for(Duration::from_secs(60), "cleanup", || async {
        fake.record
            .lock()
            .unwrap()
            .cleaned
            .contains(&run)
            .then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(fake.record.lock().unwrap().killed, vec![run]);
}

#[tokio::test]
async fn healthcheck_reports_ok_while_polling() {
    let url = api_url();
    let pool = unique("pool");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = config(&url, &pool);
    c.healthcheck = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let w = start(c, FakeInfra::default());
    let body: Value = wait_for(Duration::from_secs(60), "/health", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())?;
        r.json().await.ok()
    })
    .await;
    assert_eq!(body, json!({"message": "OK"}));
    w.stop().await;
}

#[tokio::test]
async fn authenticates_with_an_auth_string_and_reports_refusal_clearly() {
    let (url, auth) = auth_api();
    let pool = unique("pool");
    // Without credentials: a clear error, not a hang.
    let mut c = config(&url, &pool);
    c.run_once = true;
    let err = prefect_aci_worker::run(c.clone(), FakeInfra::default(), CancellationToken::new())
        .await
        .expect_err("must be refused");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(chain.contains("refused our credentials"), "{chain}");
    assert!(!chain.contains(&auth));
    // With the auth string: the pool is created and a run is claimed.
    c.auth = Auth::AuthString(auth.clone());
    prefect_aci_worker::run(c.clone(), FakeInfra::default(), CancellationToken::new())
        .await
        .expect("run once with auth");
    let api = Api(client(&url, Auth::AuthString(auth.clone())));
    let dep = api.create_deployment(&pool, None, json!({})).await;
    let run = api.create_flow_run(dep, json!({})).await;
    let fake = FakeInfra::default();
    c.run_once = false;
    let w = start(c, fake.clone());
    wait_for(Duration::from_secs(60), "launched", || async {
        fake.record
            .lock()
            .unwrap()
            .launched
            .contains(&run)
            .then_some(())
    })
    .await;
    w.stop().await;
    let cfg = fake.record.lock().unwrap().configs[&run].clone();
    assert_eq!(
        cfg["env"]["PREFECT_API_AUTH_STRING"],
        auth.as_str(),
        "the engine needs the auth string"
    );
}

#[tokio::test]
async fn works_with_a_prefect_2_server() {
    let url = p2_api_url();
    let pool = pool_via_worker(&url).await;
    let api = Api::new(&url);
    let dep = api.create_deployment(&pool, None, json!({})).await;
    let run = api
        .create_flow_run(dep, json!({"env": {"FAKE_MODE": "hold"}}))
        .await;
    let fake = FakeInfra::default();
    let w = start(config(&url, &pool), fake.clone());
    let fr = wait_for(Duration::from_secs(60), "infrastructure_pid", || async {
        let fr = api.flow_run(run).await;
        fr["infrastructure_pid"].as_str().is_some().then_some(fr)
    })
    .await;
    w.stop().await;
    assert_eq!(fr["state"]["type"], "PENDING");
    let cfg = fake.record.lock().unwrap().configs[&run].clone();
    assert_eq!(
        cfg["command"], "python -m prefect.engine",
        "Prefect 2's engine command"
    );
}
