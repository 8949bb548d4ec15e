//! The fault matrix (issue 7): the real worker, a real Prefect server and the ACI emulator,
//! one injected fault per scenario, and the counts that prove nothing was lost.
//!
//! Each scenario submits flow runs, does something nasty to the worker's world (kills the
//! worker, throttles or breaks ARM, stops Prefect, refuses capacity, withholds IMDS, adds a
//! second worker, feeds bad input, cancels at every stage), then [`report::audit`] waits for
//! every run to end and for cleanup to finish and counts: completed / failed / crashed (with
//! reasons) / cancelled, and the must-be-zero counts — lost runs, zombies, orphan container
//! groups, duplicate submissions, secret values seen. [`report::finish`] writes the row into
//! `docs/RELIABILITY.md` and fails the test if a must-be-zero count is not zero.
//!
//! CI-sized by default; `PREFECT_ACI_SOAK=1` (`make soak`) scales counts and durations up.

mod support;

#[path = "faults/capture.rs"]
mod capture;
#[path = "faults/proxy.rs"]
mod proxy;
#[path = "faults/report.rs"]
mod report;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aci_emulator::config::{Bucket, CapacityFault, ThrottleLimits};
use aci_emulator::Emulator;
use report::{audit, finish, Expect, Ledger, Row};
use serde_json::{json, Value};
use support::aci::*;
use support::*;
use uuid::Uuid;

/// `PREFECT_ACI_SOAK=1`: the long mode.
pub fn soak() -> bool {
    std::env::var("PREFECT_ACI_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// One scenario's world: Prefect, the emulator, a pool, and its ledger of runs.
struct Scenario {
    api: Api,
    url: String,
    emu: Emulator,
    pool: String,
    ledger: Ledger,
    row: Row,
    started: Instant,
    secret: String,
}

impl Scenario {
    async fn new(name: &str, what: &str) -> Self {
        Self::on(name, what, api_url()).await
    }

    async fn on(name: &str, what: &str, url: String) -> Self {
        capture::init();
        let emu = emulator().await;
        let secret = format!("sekret-{}", Uuid::new_v4().simple());
        let mut ledger = Ledger::default();
        ledger.secrets.push(secret.clone());
        if let Some(s) = &emu.config().admin.client_secret {
            ledger.secrets.push(s.clone());
        }
        Scenario {
            api: Api::new(&url),
            url,
            emu,
            pool: unique("faults"),
            ledger,
            row: Row::new(name, what),
            started: Instant::now(),
            secret,
        }
    }

    /// Job variables for this emulator, with a secret env value the worker must never log.
    fn vars(&self) -> Value {
        let mut v = base_vars(&self.emu);
        v["env"] = json!({"FAULT_SECRET_TOKEN": self.secret, "PLAIN_SETTING": "visible"});
        v
    }

    fn config(&self) -> prefect_aci_worker::WorkerConfig {
        worker_config(&self.url, &self.pool)
    }

    async fn wait_pool(&self) {
        self.api.wait_pool(&self.pool).await;
    }

    async fn deployment(&self, entrypoint: &str, vars: Value) -> Uuid {
        let dep = self.api.create_deployment(&self.pool, None, vars).await;
        self.api
            .0
            .raw_json(
                reqwest::Method::PATCH,
                &format!("/deployments/{dep}"),
                Some(&json!({"entrypoint": entrypoint, "path": "."})),
            )
            .await
            .expect("set entrypoint");
        dep
    }

    async fn run(&mut self, dep: Uuid, params: Value, expect: Expect) -> Uuid {
        self.create_run(dep, json!({"parameters": params}), expect)
            .await
    }

    async fn create_run(&mut self, dep: Uuid, body: Value, expect: Expect) -> Uuid {
        let v = self
            .api
            .post(&format!("/deployments/{dep}/create_flow_run"), body)
            .await;
        let id: Uuid = v["id"].as_str().unwrap().parse().unwrap();
        self.ledger.add(id, expect);
        id
    }

    /// A run scheduled `after` from now: no worker takes it before then (less the prefetch).
    async fn run_later(
        &mut self,
        dep: Uuid,
        params: Value,
        after: Duration,
        expect: Expect,
    ) -> Uuid {
        let at = chrono::Utc::now() + chrono::Duration::from_std(after).unwrap();
        let body = json!({"parameters": params,
                          "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": at}}});
        self.create_run(dep, body, expect).await
    }

    async fn run_with_vars(&mut self, dep: Uuid, vars: Value, expect: Expect) -> Uuid {
        let id = self.api.create_flow_run(dep, vars).await;
        self.ledger.add(id, expect);
        id
    }

    /// Audit, write the row, fail on a must-be-zero count. The emulator stays up (the
    /// worker still talks to it until the test stops it).
    async fn finish(&mut self, timeout: Duration) -> Vec<Value> {
        let finals = audit(
            &mut self.row,
            &self.api,
            &self.emu,
            &self.ledger,
            timeout,
            self.started,
        )
        .await;
        finish(&self.row);
        finals
    }

    /// Audit like [`Scenario::finish`], returning the emulator's request counts.
    async fn emu_stats_after(&mut self, timeout: Duration) -> aci_emulator::Stats {
        audit(
            &mut self.row,
            &self.api,
            &self.emu,
            &self.ledger,
            timeout,
            self.started,
        )
        .await;
        let stats = self.emu.stats();
        finish(&self.row);
        stats
    }

    async fn state(&self, run: Uuid) -> String {
        report::state_type(&self.api.flow_run(run).await)
    }

    fn has_group(&self, run: Uuid) -> bool {
        self.emu
            .groups()
            .iter()
            .any(|g| g.name.contains(&run.to_string()))
    }
}

/// Where in a run's life a worker is killed.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    RandomDelay,
    Pending,
    GroupExists,
    Running,
    Final,
}

const KILL_POINTS: [KillPoint; 5] = [
    KillPoint::RandomDelay,
    KillPoint::Pending,
    KillPoint::GroupExists,
    KillPoint::Running,
    KillPoint::Final,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_at_every_point_of_a_run_s_life() {
    let kills = if soak() { 20 } else { 5 };
    let mut s = Scenario::new(
        "worker-killed",
        &format!("worker killed {kills} times (runtime dropped) at cycling points of a run's life, a fresh worker after each kill; plus one run left Pending by a worker that died right after claiming it"),
    )
    .await;
    let first = Killable::start(s.config(), &s.emu);
    s.wait_pool().await;
    let dep = s.deployment("flows.py:sleepy", s.vars()).await;
    // A worker that died right after claiming: the run is Pending, with no identifier and no
    // container. Nothing can be adopted; it must be handed back and run.
    let claimed = s.run(dep, json!({"seconds": 1}), Expect::Completed).await;
    s.api
        .post(
            &format!("/flow_runs/{claimed}/set_state"),
            json!({"state": {"type": "PENDING", "name": "Pending"}, "force": true}),
        )
        .await;
    let mut worker = Some(first);
    for i in 0..kills {
        let point = KILL_POINTS[i % KILL_POINTS.len()];
        let run = s.run(dep, json!({"seconds": 3}), Expect::AnyFinal).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let st = s.state(run).await;
            let reached = match point {
                KillPoint::RandomDelay => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..2500))).await;
                    true
                }
                KillPoint::Pending => st != "SCHEDULED" && !st.is_empty(),
                KillPoint::GroupExists => s.has_group(run),
                KillPoint::Running => st == "RUNNING",
                KillPoint::Final => report::is_final(&s.api.flow_run(run).await),
            };
            if reached || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "[faults] kill {i} at {point:?}: run {run} is {}",
            s.state(run).await
        );
        if let Some(w) = worker.take() {
            w.kill();
        }
        worker = Some(Killable::start(s.config(), &s.emu));
    }
    // The last worker lives to finish (and clean up) what the dead ones left.
    s.finish(Duration::from_secs(if soak() { 600 } else { 240 }))
        .await;
    if let Some(w) = worker.take() {
        w.kill();
    }
}

/// The `prefect-aci` binary, built on demand (a no-op when `cargo test --workspace` or an
/// earlier run built it): integration tests of one crate cannot depend on another crate's
/// binary, so the test asks cargo for it.
fn prefect_aci_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "prefect-aci"])
        .current_dir(&root)
        .status()
        .expect("run cargo build -p prefect-aci");
    assert!(status.success(), "cargo build -p prefect-aci failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/prefect-aci");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// `prefect-aci worker start` as a child process, configured for the emulator through the
/// environment exactly as a user would, logging at debug level into `log`.
fn spawn_worker_process(bin: &PathBuf, s: &Scenario, log: &PathBuf) -> Child {
    let c = s.emu.config();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("worker log file");
    Command::new(bin)
        .args(["worker", "start", "--pool", &s.pool, "--name"])
        .arg(unique("proc-worker"))
        .env("PREFECT_API_URL", &s.url)
        .env("PREFECT_WORKER_QUERY_SECONDS", "0.5")
        .env("PREFECT_WORKER_HEARTBEAT_SECONDS", "5")
        .env(
            "PREFECT_ACI_LOG",
            "info,prefect_aci_worker=debug,azure_arm=debug",
        )
        .env("AZURE_AUTHORITY_HOST", s.emu.authority_host())
        .env("AZURE_RESOURCE_MANAGER_ENDPOINT", s.emu.arm_url())
        .env("AZURE_CLIENT_ID", &c.admin.client_id)
        .env("AZURE_TENANT_ID", &c.tenant_id)
        .env(
            "AZURE_CLIENT_SECRET",
            c.admin.client_secret.as_deref().unwrap_or(""),
        )
        .env_remove("PREFECT_API_KEY")
        .env_remove("PREFECT_API_AUTH_STRING")
        .stdout(Stdio::from(out.try_clone().expect("log")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start prefect-aci worker")
}

/// A worker process, SIGKILLed when dropped (also when the test fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        sigkill(&mut self.0);
    }
}

fn sigkill(child: &mut Child) {
    // Child::kill is SIGKILL on Unix: no handler, no cleanup, no hand-back.
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_sigkilled_at_random_points() {
    let kills = if soak() { 20 } else { 3 };
    let bin = tokio::task::spawn_blocking(prefect_aci_binary)
        .await
        .expect("build");
    let mut s = Scenario::new(
        "worker-process-sigkilled",
        &format!("the real `prefect-aci worker start` process SIGKILLed {kills} times at random moments (0-12 s) while runs of 3-8 s keep arriving; a fresh process after each kill"),
    )
    .await;
    let log = std::env::temp_dir().join(format!("{}.log", unique("faults-proc-worker")));
    s.ledger.log_files.push(log.clone());
    let mut child = Proc(spawn_worker_process(&bin, &s, &log));
    s.wait_pool().await;
    let dep = s.deployment("flows.py:sleepy", s.vars()).await;
    for i in 0..kills {
        let secs = fastrand::u64(3..=8);
        s.run(dep, json!({ "seconds": secs }), Expect::AnyFinal)
            .await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..12_000))).await;
        sigkill(&mut child.0);
        eprintln!(
            "[faults] process kill {i}: groups {:?}",
            s.emu
                .groups()
                .iter()
                .map(|g| (&g.name, &g.state))
                .collect::<Vec<_>>()
        );
        child = Proc(spawn_worker_process(&bin, &s, &log));
    }
    s.finish(Duration::from_secs(if soak() { 600 } else { 240 }))
        .await;
    drop(child);
    let _ = std::fs::remove_file(&log);
}

fn storm() -> ThrottleLimits {
    // One token, refilled every 2 s: any two ARM requests of the worker within 2 s of each
    // other (three runs starting together, or polling a provisioning group) meet a 429.
    let tiny = Bucket {
        burst: 1,
        per_second: 0.5,
    };
    ThrottleLimits {
        reads: tiny,
        writes: tiny,
        deletes: tiny,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_429_storm() {
    let n = if soak() { 12 } else { 3 };
    let mut s = Scenario::new(
        "arm-429-storm",
        "ARM token buckets shrunk to 1 token refilled every 2 s: most requests answered 429 + Retry-After",
    )
    .await;
    let mut f = s.emu.faults();
    f.arm_throttling = Some(storm());
    s.emu.set_faults(f);
    let w = start_worker(s.config(), &s.emu);
    s.wait_pool().await;
    let dep = s.deployment("flows.py:hello", s.vars()).await;
    for _ in 0..n {
        s.run(dep, json!({}), Expect::Completed).await;
    }
    let stats = s.emu_stats_after(Duration::from_secs(300)).await;
    w.stop().await;
    let throttled: u64 = stats
        .requests
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.count)
        .sum();
    eprintln!("[faults] 429 storm: {throttled} requests throttled");
    assert!(throttled > 0, "the storm must actually throttle requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_5xx_ten_percent() {
    let n = if soak() { 12 } else { 3 };
    let mut s = Scenario::new(
        "arm-5xx-10pct",
        "10% of ARM requests fail with 500 or 503 (+ Retry-After) before being handled",
    )
    .await;
    let mut f = s.emu.faults();
    f.error_rate = 0.10;
    s.emu.set_faults(f);
    let w = start_worker(s.config(), &s.emu);
    s.wait_pool().await;
    let dep = s.deployment("flows.py:hello", s.vars()).await;
    for _ in 0..n {
        s.run(dep, json!({}), Expect::Completed).await;
    }
    s.finish(Duration::from_secs(300)).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_errors_with_and_without_fallback_locations() {
    let mut s = Scenario::new(
        "capacity",
        "every container group create in eastus answered ServiceUnavailable; one run with fallback_locations [westus], one without (20 s start timeout)",
    )
    .await;
    let mut f = s.emu.faults();
    f.capacity = vec![CapacityFault {
        location: "eastus".into(),
        count: None,
    }];
    s.emu.set_faults(f);
    let w = start_worker(s.config(), &s.emu);
    s.wait_pool().await;
    let mut with = s.vars();
    with["fallback_locations"] = json!(["westus"]);
    with["task_start_timeout_seconds"] = json!(60);
    let mut without = s.vars();
    without["task_start_timeout_seconds"] = json!(20);
    let dep_with = s.deployment("flows.py:hello", with).await;
    let dep_without = s.deployment("flows.py:hello", without).await;
    s.run(dep_with, json!({}), Expect::Completed).await;
    let crashed = s.run(dep_without, json!({}), Expect::Crashed).await;
    let finals = s.finish(Duration::from_secs(240)).await;
    let msg = finals
        .iter()
        .find(|f| f["id"] == json!(crashed.to_string()))
        .and_then(|f| f["state"]["message"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("ServiceUnavailable") || msg.contains("capacity"),
        "the crash carries Azure's reason: {msg}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_pool() {
    let n = if soak() { 16 } else { 6 };
    let mut s = Scenario::new(
        "two-workers",
        "two workers poll the same pool; every run must be launched exactly once",
    )
    .await;
    let a = start_worker(s.config(), &s.emu);
    let b = start_worker(s.config(), &s.emu);
    s.wait_pool().await;
    let dep = s.deployment("flows.py:hello", s.vars()).await;
    for _ in 0..n {
        s.run(dep, json!({}), Expect::Completed).await;
    }
    let runs: Vec<Uuid> = s.ledger.runs.iter().map(|(id, _)| *id).collect();
    let api = Api::new(&s.url);
    s.finish(Duration::from_secs(300)).await;
    // Neither worker may "adopt" a run the other one is alive and watching.
    let mut adopted = Vec::new();
    for run in runs {
        if api
            .logs(run)
            .await
            .iter()
            .any(|l| l.contains("adopted flow run"))
        {
            adopted.push(run);
        }
    }
    assert!(
        adopted.is_empty(),
        "runs adopted although their worker was alive: {adopted:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// Bad job variables: each must crash its run with a message naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_variables() {
    let mut s = Scenario::new(
        "bad-job-variables",
        "24 kinds of invalid job variables, then a good run on the same worker",
    )
    .await;
    // A pool whose variable schema only names the variables (as users' edited templates
    // may): Prefect then accepts any value, and the worker is the one that must refuse it.
    let mut loose = prefect_aci_worker::template::base_job_template();
    if let Some(props) = loose["variables"]["properties"].as_object_mut() {
        for p in props.values_mut() {
            if let Some(o) = p.as_object_mut() {
                o.retain(|k, _| k == "title" || k == "description" || k == "default");
            }
        }
    }
    if let Some(o) = loose["variables"].as_object_mut() {
        o.remove("required");
    }
    s.api
        .0
        .create_work_pool(
            &s.pool,
            prefect_aci_worker::template::POOL_TYPE,
            Some(&loose),
            None,
        )
        .await
        .expect("create the loose pool");
    let w = start_worker(s.config(), &s.emu);
    s.wait_pool().await;
    let dep = s.deployment("flows.py:hello", s.vars()).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"image": "nosuchregistry.io/missing:1"}),
            "InaccessibleImage",
        ),
        (json!({"image": "two words"}), "image"),
        (json!({"image": ""}), "image"),
        (json!({"cpu": 0}), "cpu"),
        (json!({"cpu": 64}), "cpu"),
        (json!({"cpu": "lots"}), "cpu"),
        (json!({"memory": -1}), "memory"),
        (json!({"memory": 1.25}), "memory"),
        (json!({"memory": 100000}), "memory"),
        (json!({"env": {"BAD-NAME": "x"}}), "environment variable"),
        (
            json!({"env": {"1STARTS_WITH_DIGIT": "x"}}),
            "environment variable",
        ),
        (json!({"gpu_count": 1}), "GPU"),
        (json!({"command": "prefect 'unbalanced"}), "unbalanced"),
        (json!({"identities": ["not-an-id"]}), "identities"),
        (json!({"identities": "not-a-list"}), "identities"),
        (
            json!({"image_registry": {"registry_url": "x.azurecr.io", "identity": "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"}}),
            "identities",
        ),
        (
            json!({"resource_group_name": "bad/name"}),
            "resource_group_name",
        ),
        (json!({"subscription_id": ""}), "subscription_id"),
        (
            json!({"task_watch_poll_interval": -5}),
            "task_watch_poll_interval",
        ),
        (
            json!({"task_start_timeout_seconds": "soon"}),
            "task_start_timeout_seconds",
        ),
        (json!({"max_run_seconds": -1}), "max_run_seconds"),
        (
            json!({"aci_credentials": {"client_id": "only-this"}}),
            "aci_credentials",
        ),
        (json!({"subnet_ids": ["not-a-subnet"]}), "subnet"),
        (json!({"dns_servers": ["not an ip"]}), "dns"),
        (
            json!({"fallback_locations": "westus"}),
            "fallback_locations",
        ),
        (json!({"cancel_grace_seconds": -3}), "cancel_grace_seconds"),
    ];
    let mut runs = Vec::new();
    for (vars, _) in &cases {
        runs.push(s.run_with_vars(dep, vars.clone(), Expect::Crashed).await);
    }
    // `env` that is not an object, set on the deployment (a flow run's non-object `env` over
    // a deployment's object is ignored by the merge, as documented in prefect-client).
    let mut env_string = s.vars();
    env_string["env"] = json!("not-an-object");
    let env_dep = s.deployment("flows.py:hello", env_string).await;
    let env_run = s.run_with_vars(env_dep, json!({}), Expect::Crashed).await;
    s.run_with_vars(dep, json!({}), Expect::Completed).await;
    s.row.what = format!(
        "{} kinds of invalid job variables, then a good run on the same worker",
        cases.len() + 1
    );
    let finals = s.finish(Duration::from_secs(240)).await;
    let mut unclear = Vec::new();
    for ((vars, expected), run) in cases.iter().zip(&runs) {
        let fr = finals
            .iter()
            .find(|f| f["id"] == json!(run.to_string()))
            .expect("final");
        let msg = fr["state"]["message"].as_str().unwrap_or("");
        if !msg.to_lowercase().contains(&expected.to_lowercase()) {
            unclear.push(format!("{vars}: expected {expected:?} in {msg:?}"));
        }
    }
    let env_msg = finals
        .iter()
        .find(|f| f["id"] == json!(env_run.to_string()))
        .and_then(|f| f["state"]["message"].as_str())
        .unwrap_or("");
    if !env_msg.contains("'env'") {
        unclear.push(format!("env string: {env_msg:?}"));
    }
    assert!(
        unclear.is_empty(),
        "crash messages must name the problem: {unclear:#?}"
    );
    w.stop().await;
}

/// Reads the worker makes of Prefect that may be corrupted.
fn prefect_reads(method: &str, path: &str) -> bool {
    (method == "POST" && (path.ends_with("/filter") || path.ends_with("/get_scheduled_flow_runs")))
        || (method == "GET"
            && (path.contains("/flow_runs/")
                || path.contains("/deployments/")
                || path.contains("/flows/")
                || path.contains("/work_pools/")))
}

/// ARM reads of container groups (the watch loop's source of truth besides Prefect).
fn arm_reads(method: &str, path: &str) -> bool {
    method == "GET" && path.to_ascii_lowercase().contains("/containergroups")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_prefect_and_arm_responses() {
    let n = if soak() { 10 } else { 4 };
    let base = api_url();
    let origin = base.trim_end_matches("/api").to_string();
    let prefect = proxy::start(&origin, 4, false, prefect_reads).await;
    let mut s = Scenario::new(
        "malformed-responses",
        "1 in 4 of the worker's Prefect reads and 1 in 3 ARM container group reads replaced by truncated JSON, HTML 502, wrong JSON type, empty or garbage 200, {}",
    )
    .await;
    let arm = proxy::start(&s.emu.arm_url(), 3, true, arm_reads).await;
    let mut options = options(&s.emu);
    options.environment.cloud.resource_manager = arm.url.parse().unwrap();
    let infra = prefect_aci_worker::aci::AciInfrastructure::new(options).expect("infra");
    let token = tokio_util::sync::CancellationToken::new();
    let config = worker_config(&format!("{}/api", prefect.url), &s.pool);
    let task = tokio::spawn(prefect_aci_worker::run(config, infra, token.clone()));
    s.wait_pool().await;
    // The engine in the container talks to Prefect directly: this scenario is about the
    // worker's handling of bad answers, not the engine's.
    let mut vars = s.vars();
    vars["env"]["PREFECT_API_URL"] = json!(base);
    let dep = s.deployment("flows.py:hello", vars).await;
    for _ in 0..n {
        s.run(dep, json!({}), Expect::Completed).await;
    }
    let extra = format!(" — kinds: {}", proxy::KINDS.join(", "));
    s.row.what.push_str(&extra);
    s.finish(Duration::from_secs(300)).await;
    eprintln!(
        "[faults] corrupted {} Prefect and {} ARM answers",
        prefect.corrupted.load(std::sync::atomic::Ordering::Relaxed),
        arm.corrupted.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(prefect.corrupted.load(std::sync::atomic::Ordering::Relaxed) > 0);
    token.cancel();
    task.await
        .expect("join")
        .expect("worker survives malformed answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_at_every_stage() {
    let mut s = Scenario::new(
        "cancellation",
        "cancelled while Scheduled (before any worker), while the group is provisioning (8 s provisioning), and while Running",
    )
    .await;
    let w = start_worker(s.config(), &s.emu);
    s.wait_pool().await;
    let mut vars = s.vars();
    vars["cancel_grace_seconds"] = json!(3);
    let dep = s.deployment("flows.py:sleepy", vars).await;
    async fn cancel(api: &Api, id: Uuid) {
        api.post(
            &format!("/flow_runs/{id}/set_state"),
            json!({"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": true}),
        )
        .await;
    }
    // Scheduled (for later, so no worker takes it first), then cancelled: never launched.
    let later = (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc3339();
    let v = s
        .api
        .post(
            &format!("/deployments/{dep}/create_flow_run"),
            json!({"state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": later}}}),
        )
        .await;
    let scheduled: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    s.ledger.add(scheduled, Expect::Cancelled);
    s.api
        .post(
            &format!("/flow_runs/{scheduled}/set_state"),
            json!({"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": true}),
        )
        .await;
    // Provisioning: slow provisioning, cancel as soon as the group exists.
    let mut f = s.emu.faults();
    f.provisioning_delay_ms = Some(8000);
    s.emu.set_faults(f);
    let provisioning = s.run(dep, json!({"seconds": 60}), Expect::Cancelled).await;
    wait_for(Duration::from_secs(60), "the group to exist", || async {
        s.has_group(provisioning).then_some(())
    })
    .await;
    cancel(&s.api, provisioning).await;
    let mut f = s.emu.faults();
    f.provisioning_delay_ms = None;
    s.emu.set_faults(f);
    // Running.
    let running = s.run(dep, json!({"seconds": 120}), Expect::Cancelled).await;
    wait_for(Duration::from_secs(120), "Running", || async {
        (s.state(running).await == "RUNNING").then_some(())
    })
    .await;
    cancel(&s.api, running).await;
    s.finish(Duration::from_secs(120)).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_unavailable_at_start() {
    let mut s = Scenario::new(
        "imds-unavailable",
        "the worker authenticates with a user-assigned managed identity through IMDS, which answers 503 for 12 s from the worker's first token request",
    )
    .await;
    let mut f = s.emu.faults();
    f.imds_unavailable_secs = 12;
    s.emu.set_faults(f);
    // The identity the worker will run as, created by the admin principal.
    let admin = reqwest::Client::new();
    let token = admin_token(&s.emu).await;
    let identity: Value = admin
        .put(format!(
            "{}/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/worker-uami?api-version=2024-11-30",
            s.emu.arm_url(),
            s.emu.config().subscription_id
        ))
        .bearer_auth(token)
        .json(&json!({"location": "eastus"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = identity["properties"]["clientId"]
        .as_str()
        .expect("identity client id")
        .to_string();
    let mut o = options(&s.emu);
    o.environment.client_id = Some(client_id);
    o.environment.tenant_id = None;
    o.environment.client_secret = None;
    o.environment.imds_endpoint = s.emu.arm_url().parse().unwrap();
    o.credential_options.exclude_managed_identity = false;
    o.credential_options.imds_warmup = Duration::from_secs(60);
    let infra = prefect_aci_worker::aci::AciInfrastructure::new(o).expect("infra");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(prefect_aci_worker::run(s.config(), infra, stop.clone()));
    s.wait_pool().await;
    let dep = s.deployment("flows.py:hello", s.vars()).await;
    s.run(dep, json!({}), Expect::Completed).await;
    let emu_stats = s.emu_stats_after(Duration::from_secs(180)).await;
    let refused = emu_stats.count("imds.token", 503);
    let served = emu_stats.count("imds.token", 200);
    eprintln!("[faults] IMDS: {refused} refused, {served} served");
    assert!(refused > 0 && served > 0, "IMDS was refused, then used");
    stop.cancel();
    task.await.expect("join").expect("worker ok");
}

/// A Prefect server of our own, so it can be stopped and restarted on the same port and
/// database.
struct OwnServer {
    child: Option<Child>,
    port: u16,
}

impl OwnServer {
    fn start_on(dir: PathBuf, port: u16) -> Self {
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let db = format!("sqlite+aiosqlite:///{}/prefect.db", dir.display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = Command::new(venv3().join("bin/prefect"))
            .args(["server", "start", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .env("PREFECT_HOME", dir.join("home"))
            .env("PREFECT_API_DATABASE_CONNECTION_URL", &db)
            .env("PREFECT_SERVER_DATABASE_CONNECTION_URL", &db)
            .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            .env("PREFECT_UI_ENABLED", "false")
            .env("PREFECT_SERVER_UI_ENABLED", "false")
            .env("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
            .env_remove("PREFECT_API_URL")
            .env_remove("PREFECT_API_KEY")
            .env_remove("PREFECT_API_AUTH_STRING")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prefect server");
        OwnServer {
            child: Some(child),
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    async fn healthy(&self) {
        // This may be the test's first HTTPS-capable client (the test run alone).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}/health", self.url());
        wait_for(
            Duration::from_secs(180),
            "the Prefect server to be healthy",
            || async {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first (as an orchestrator would), then make sure it is gone.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefect_server_outage() {
    let outage = Duration::from_secs(if soak() { 60 } else { 15 });
    let dir = std::env::temp_dir().join(unique("prefect-aci-outage"));
    let port = free_port();
    let mut server = OwnServer::start_on(dir.clone(), port);
    server.healthy().await;
    let mut s = Scenario::on(
        "prefect-outage",
        &format!(
            "the Prefect server stopped for {} s while one run is in its container and one is scheduled, then restarted on the same port and database",
            outage.as_secs()
        ),
        server.url(),
    )
    .await;
    let config = s.config();
    let prefetch = config.prefetch;
    let w = start_worker(config, &s.emu);
    s.wait_pool().await;
    // The long run's flow ends when the test says so (a file appears), after the server is
    // back: its engine must not have to reach a server that is still starting.
    let release = dir.join("release-long-run");
    let long_dep = s.deployment("flows.py:until_file", s.vars()).await;
    let long = s
        .run(
            long_dep,
            json!({"path": release.to_string_lossy()}),
            Expect::Completed,
        )
        .await;
    wait_for(Duration::from_secs(120), "Running", || async {
        (s.state(long).await == "RUNNING").then_some(())
    })
    .await;
    // Due only once the server is down (the worker fetches `prefetch` ahead), so it is
    // taken after the restart; one taken just before the stop would start its engine
    // against a stopped server and crash, which is not what this scenario is about.
    let dep = s.deployment("flows.py:sleepy", s.vars()).await;
    let due_in = prefetch + Duration::from_secs(3);
    s.run_later(dep, json!({"seconds": 1}), due_in, Expect::Completed)
        .await;
    server.stop();
    tokio::time::sleep(outage).await;
    let server = OwnServer::start_on(dir.clone(), port);
    server.healthy().await;
    std::fs::write(&release, b"").expect("release the long run");
    s.finish(Duration::from_secs(if soak() { 400 } else { 240 }))
        .await;
    w.stop().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 7 item 3: secret values never reach a log line, an error chain (the crash message
/// Prefect stores), the health/metrics endpoints or an ARM GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_error_chains_health_and_arm() {
    let mut s = Scenario::new(
        "secrets",
        "a wrong aci_credentials secret (crash message = error chain), a right one with secret env values and keep_container_group (ARM GET checked), a failing flow with secrets in env, /health and /metrics read",
    )
    .await;
    let wrong = format!("wrong-secret-{}", Uuid::new_v4().simple());
    s.ledger.secrets.push(wrong.clone());
    let health_port = free_port();
    let mut config = s.config();
    config.healthcheck = Some(([127, 0, 0, 1], health_port).into());
    let w = start_worker(config, &s.emu);
    s.wait_pool().await;
    let c = s.emu.config().clone();
    let mut bad = s.vars();
    bad["aci_credentials"] =
        json!({"client_id": c.admin.client_id, "tenant_id": c.tenant_id, "client_secret": wrong});
    let mut good = s.vars();
    good["aci_credentials"] = json!({"client_id": c.admin.client_id, "tenant_id": c.tenant_id, "client_secret": c.admin.client_secret});
    good["keep_container_group"] = json!(true);
    good["env"]["DB_PASSWORD"] = json!(s.secret);
    let dep_bad = s.deployment("flows.py:hello", bad).await;
    let dep_good = s.deployment("flows.py:hello", good).await;
    let dep_failing = s.deployment("flows.py:failing", s.vars()).await;
    let crashed = s.run(dep_bad, json!({}), Expect::Crashed).await;
    let kept = s.run(dep_good, json!({}), Expect::Completed).await;
    s.run(dep_failing, json!({}), Expect::AnyFinal).await;

    // The kept group: ARM must not return secure values; then delete it ourselves.
    let fr = wait_for(
        Duration::from_secs(180),
        "the kept run to finish",
        || async {
            let fr = s.api.flow_run(kept).await;
            report::is_final(&fr).then_some(fr)
        },
    )
    .await;
    let token = admin_token(&s.emu).await;
    let group = wait_for(Duration::from_secs(60), "the kept group", || async {
        s.emu
            .groups()
            .into_iter()
            .find(|g| g.name.contains(&kept.to_string()))
    })
    .await;
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups/{}?api-version=2025-09-01",
        s.emu.arm_url(),
        c.subscription_id,
        group.name
    );
    let http = reqwest::Client::new();
    let body = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("PLAIN_SETTING") && body.contains("visible"),
        "{body}"
    );
    let arm_leaks = s
        .ledger
        .secrets
        .iter()
        .filter(|x| body.contains(x.as_str()))
        .count();
    let status = http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "delete the kept group: {status}");
    let health = http
        .get(format!("http://127.0.0.1:{health_port}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let mut endpoint_text = String::new();
    for path in ["health", "metrics"] {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{health_port}/{path}"))
            .send()
            .await
        {
            endpoint_text.push_str(&r.text().await.unwrap_or_default());
        }
    }
    let endpoint_leaks = s
        .ledger
        .secrets
        .iter()
        .filter(|x| endpoint_text.contains(x.as_str()))
        .count();
    drop(fr);
    // Secret values seen outside the worker's logs (ARM GET, health/metrics) count too.
    s.ledger.extra_hits = arm_leaks + endpoint_leaks;
    s.row.what.push_str(&format!(" (health: HTTP {health})"));
    let secrets = s.ledger.secrets.clone();
    let finals = s.finish(Duration::from_secs(180)).await;
    assert_eq!(health, 200, "the healthcheck answers");
    let msg = finals
        .iter()
        .find(|f| f["id"] == json!(crashed.to_string()))
        .and_then(|f| f["state"]["message"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("aci_credentials")
            || msg.to_lowercase().contains("client secret")
            || msg.contains("AADSTS"),
        "the crash says which credential failed: {msg}"
    );
    for secret in &secrets {
        assert!(!msg.contains(secret.as_str()), "{msg}");
    }
    w.stop().await;
}

/// Issue 7 item 3: TLS certificates are verified by default; a private CA is trusted only
/// when asked (`ca_file`). ARM behind an HTTPS proxy with a private-CA certificate: without
/// the CA the run crashes with a certificate error, with it the run completes. The Prefect
/// API behind the same kind of proxy: the worker refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_verified_by_default() {
    let mut s = Scenario::new(
        "tls",
        "ARM behind HTTPS with a private-CA certificate: one worker without the CA (run must crash with a certificate error), one with ca_file (run must complete); Prefect behind HTTPS without the CA (worker must refuse to start)",
    )
    .await;
    let arm = proxy::start_tls(&s.emu.arm_url()).await;
    // Without the CA.
    let mut untrusting = options(&s.emu);
    untrusting.environment.cloud.resource_manager = format!("{}/", arm.url).parse().unwrap();
    untrusting.retry = azure_arm::RetryPolicy::none();
    let stop_a = tokio_util::sync::CancellationToken::new();
    let task_a = tokio::spawn(prefect_aci_worker::run(
        s.config(),
        prefect_aci_worker::aci::AciInfrastructure::new(untrusting).expect("infra"),
        stop_a.clone(),
    ));
    s.wait_pool().await;
    let dep = s.deployment("flows.py:hello", s.vars()).await;
    let refused = s.run(dep, json!({}), Expect::Crashed).await;
    let fr = wait_for(
        Duration::from_secs(120),
        "the untrusted run to end",
        || async {
            let fr = s.api.flow_run(refused).await;
            report::is_final(&fr).then_some(fr)
        },
    )
    .await;
    stop_a.cancel();
    task_a.await.expect("join").expect("worker a");
    let msg = fr["state"]["message"].as_str().unwrap_or("").to_string();
    // With the CA: a second worker on the same pool.
    let mut trusting = options(&s.emu);
    trusting.environment.cloud.resource_manager = format!("{}/", arm.url).parse().unwrap();
    trusting.ca_file = Some(proxy::tls_data("ca.pem"));
    let stop_b = tokio_util::sync::CancellationToken::new();
    let task_b = tokio::spawn(prefect_aci_worker::run(
        s.config(),
        prefect_aci_worker::aci::AciInfrastructure::new(trusting).expect("infra"),
        stop_b.clone(),
    ));
    s.run(dep, json!({}), Expect::Completed).await;
    // Prefect over HTTPS with an untrusted certificate.
    let origin = s.url.trim_end_matches("/api").to_string();
    let prefect_tls = proxy::start_tls(&origin).await;
    let refused_start = tokio::time::timeout(
        Duration::from_secs(120),
        prefect_aci_worker::run(
            worker_config(&format!("{}/api", prefect_tls.url), &s.pool),
            prefect_aci_worker::aci::AciInfrastructure::new(options(&s.emu)).expect("infra"),
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("the worker gives up on an untrusted Prefect API");
    s.finish(Duration::from_secs(180)).await;
    stop_b.cancel();
    task_b.await.expect("join").expect("worker b");
    assert!(
        msg.to_lowercase().contains("certificate")
            || msg.to_lowercase().contains("tls")
            || msg.contains("cannot reach"),
        "the crash names the TLS failure: {msg}"
    );
    let err = refused_start.expect_err("an untrusted Prefect certificate must be refused");
    eprintln!("[faults] untrusted Prefect API: {err}");
}
