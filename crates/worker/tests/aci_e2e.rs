//! End to end: a real Prefect server, the ACI emulator over HTTP, our worker, and the real
//! `prefect flow-run execute` running inside the emulated container.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::aci::*;
use support::*;
use uuid::Uuid;

/// A Prefect API, an emulator and a worker polling a fresh pool.
struct Stack {
    api: Api,
    emu: aci_emulator::Emulator,
    pool: String,
    worker: Worker,
}

impl Stack {
    async fn start(url: String, emu: aci_emulator::Emulator) -> Stack {
        let pool = unique("aci-pool");
        let api = Api::new(&url);
        let worker = start_worker(config(&url, &pool), &emu);
        api.wait_pool(&pool).await;
        Stack {
            api,
            emu,
            pool,
            worker,
        }
    }
}

/// The shared worker config, with the worker's tracing kept for a failing test's output.
fn config(url: &str, pool: &str) -> prefect_aci_worker::WorkerConfig {
    init_test_logs();
    worker_config(url, pool)
}

async fn deployment(api: &Api, pool: &str, entrypoint: &str, vars: Value) -> Uuid {
    let dep = api.create_deployment(pool, None, vars).await;
    // The deployment's entrypoint decides which flow the engine loads.
    api.0
        .raw_json(
            reqwest::Method::PATCH,
            &format!("/deployments/{dep}"),
            Some(&json!({"entrypoint": entrypoint, "path": "."})),
        )
        .await
        .expect("set entrypoint");
    dep
}

async fn final_state(api: &Api, run: Uuid, timeout: Duration) -> Value {
    wait_for(timeout, "a final state", || async {
        let fr = api.flow_run(run).await;
        let t = fr["state"]["type"].as_str().unwrap_or("");
        matches!(t, "COMPLETED" | "FAILED" | "CRASHED" | "CANCELLED").then_some(fr)
    })
    .await
}

async fn no_groups_left(emu: &aci_emulator::Emulator, run: Uuid) {
    no_groups_left_within(emu, run, Duration::from_secs(60)).await
}

async fn no_groups_left_within(emu: &aci_emulator::Emulator, run: Uuid, timeout: Duration) {
    wait_for(timeout, "the container group to be deleted", || async {
        (!emu
            .groups()
            .iter()
            .any(|g| g.name.contains(&run.to_string())))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn hello_flow_completes_with_its_logs_in_prefect_and_the_group_is_deleted() {
    let Stack {
        api,
        emu,
        pool,
        worker: w,
    } = Stack::start(api_url(), emulator().await).await;
    let mut vars = base_vars(&emu);
    vars["stream_output"] = json!(true);
    vars["env"] = json!({"MY_SECRET_TOKEN": "tok-3141592653"});
    let dep = deployment(&api, &pool, "flows.py:hello", vars).await;
    let run = api.create_flow_run(dep, json!({})).await;

    let fr = final_state(&api, run, Duration::from_secs(120)).await;
    assert_eq!(fr["state"]["type"], "COMPLETED", "{fr}");
    let pid = fr["infrastructure_pid"].as_str().unwrap_or("");
    assert!(
        pid.starts_with(&format!("{run}:flow-")) && pid.ends_with(&format!("-{run}")),
        "{fr}"
    );
    no_groups_left(&emu, run).await;
    let logs = wait_for(
        Duration::from_secs(60),
        "container output in Prefect logs",
        || async {
            let l = api.logs(run).await;
            l.iter()
                .any(|m| m.contains("printed to stdout by the flow"))
                .then_some(l)
        },
    )
    .await;
    assert!(logs.iter().any(|m| m == "Hello from ACI!"), "{logs:?}");
    let dupes = logs
        .iter()
        .filter(|m| m.contains("printed to stdout by the flow"))
        .count();
    assert_eq!(dupes, 1, "container lines are forwarded once: {logs:?}");
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn failing_flow_is_failed_and_a_silent_exit_is_crashed_with_the_code() {
    let Stack {
        api,
        emu,
        pool,
        worker: w,
    } = Stack::start(api_url(), emulator().await).await;
    let failing = deployment(&api, &pool, "flows.py:failing", base_vars(&emu)).await;
    let hard = deployment(&api, &pool, "flows.py:hard_exit", base_vars(&emu)).await;
    let r1 = api.create_flow_run(failing, json!({})).await;
    let r2 = api.create_flow_run(hard, json!({})).await;
    let f1 = final_state(&api, r1, Duration::from_secs(120)).await;
    let f2 = final_state(&api, r2, Duration::from_secs(120)).await;
    assert_eq!(f1["state"]["type"], "FAILED", "{f1}");
    assert_eq!(f2["state"]["type"], "CRASHED", "{f2}");
    // Either the engine's runner or the worker reports it first; both name the exit code.
    let msg = f2["state"]["message"].as_str().unwrap();
    assert!(msg.contains("status code") && msg.contains('3'), "{msg}");
    no_groups_left(&emu, r1).await;
    no_groups_left(&emu, r2).await;
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn image_pull_failure_and_bad_job_variables_crash_with_clear_messages() {
    let Stack {
        api,
        emu,
        pool,
        worker: w,
    } = Stack::start(api_url(), emulator().await).await;
    let dep = deployment(&api, &pool, "flows.py:hello", base_vars(&emu)).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"image": "nosuchregistry.io/missing:1"}),
            "InaccessibleImage",
        ),
        (json!({"cpu": 0}), "invalid job variable 'cpu'"),
        (json!({"cpu": 64}), "invalid job variable 'cpu'"),
        (json!({"memory": -1}), "invalid job variable 'memory'"),
        (json!({"memory": 1.25}), "multiple of 0.1"),
        (
            json!({"env": {"BAD-NAME": "x"}}),
            "not a valid environment variable name",
        ),
        (json!({"gpu_count": 1}), "retired GPU containers"),
        (
            json!({"command": "prefect 'unbalanced"}),
            "unbalanced quotes",
        ),
        (
            json!({"identities": ["not-an-id"]}),
            "invalid job variable 'identities'",
        ),
        (
            json!({"image_registry": {"registry_url": "x.azurecr.io", "identity": "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"}}),
            "must also be listed in 'identities'",
        ),
        (
            json!({"resource_group_name": "bad/name"}),
            "invalid job variable 'resource_group_name'",
        ),
        (
            json!({"task_watch_poll_interval": -5}),
            "task_watch_poll_interval",
        ),
        (json!({"max_run_seconds": -1}), "max_run_seconds"),
        (
            json!({"aci_credentials": {"client_id": "only-this"}}),
            "aci_credentials",
        ),
        (
            json!({"image": "two words"}),
            "invalid job variable 'image'",
        ),
    ];
    let mut runs = Vec::new();
    for (vars, _) in &cases {
        runs.push(api.create_flow_run(dep, vars.clone()).await);
    }
    let good = api.create_flow_run(dep, json!({})).await;
    for ((vars, expected), run) in cases.iter().zip(&runs) {
        let fr = final_state(&api, *run, Duration::from_secs(90)).await;
        assert_eq!(fr["state"]["type"], "CRASHED", "{vars}: {fr}");
        let msg = fr["state"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(expected),
            "{vars}: expected {expected:?} in {msg:?}"
        );
    }
    let fr = final_state(&api, good, Duration::from_secs(120)).await;
    assert_eq!(
        fr["state"]["type"], "COMPLETED",
        "the worker keeps serving good runs: {fr}"
    );
    for run in runs.iter().chain([&good]) {
        no_groups_left(&emu, *run).await;
    }
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_flow_deletes_its_group_and_marks_it_cancelled() {
    let Stack {
        api,
        emu,
        pool,
        worker: w,
    } = Stack::start(api_url(), emulator().await).await;
    let mut vars = base_vars(&emu);
    vars["cancel_grace_seconds"] = json!(5);
    let dep = deployment(&api, &pool, "flows.py:sleepy", vars).await;
    let run = api.create_flow_run(dep, json!({})).await;
    wait_for(Duration::from_secs(120), "Running", || async {
        (api.state_type(run).await == "RUNNING").then_some(())
    })
    .await;
    api.post(
        &format!("/flow_runs/{run}/set_state"),
        json!({"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": true}),
    )
    .await;
    let fr = final_state(&api, run, Duration::from_secs(60)).await;
    assert_eq!(fr["state"]["type"], "CANCELLED", "{fr}");
    no_groups_left(&emu, run).await;
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn secrets_never_appear_in_arm_responses() {
    let url = api_url();
    let emu = emulator().await;
    let pool = unique("aci-pool");
    let api = Api::new(&url);
    let mut c = config(&url, &pool);
    c.run_once = false;
    let w = start_worker(c, &emu);
    api.wait_pool(&pool).await;
    let mut vars = base_vars(&emu);
    vars["env"] = json!({"DB_PASSWORD": "pw-2718281828", "PLAIN": "visible"});
    vars["keep_container_group"] = json!(true);
    let dep = deployment(&api, &pool, "flows.py:hello", vars).await;
    let run = api.create_flow_run(dep, json!({})).await;
    let fr = final_state(&api, run, Duration::from_secs(120)).await;
    assert_eq!(fr["state"]["type"], "COMPLETED", "{fr}");
    // keep_container_group: the group stays (stopped) and a GET shows no secure value.
    let group = emu
        .groups()
        .into_iter()
        .find(|g| g.name.contains(&run.to_string()))
        .expect("kept group");
    let token = admin_token(&emu).await;
    let body = reqwest::Client::new()
        .get(format!(
            "{}/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups/{}?api-version=2025-09-01",
            emu.arm_url(),
            emu.config().subscription_id,
            group.name
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("visible"),
        "plain values are returned: {body}"
    );
    assert!(
        !body.contains("pw-2718281828"),
        "secure values must never be returned: {body}"
    );
    assert!(body.contains("DB_PASSWORD"));
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_run_is_adopted_and_finished_by_its_successor() {
    let url = api_url();
    let emu = emulator().await;
    let pool = unique("aci-pool");
    let api = Api::new(&url);
    let first = Killable::start(config(&url, &pool), &emu);
    api.wait_pool(&pool).await;
    let dep = deployment(&api, &pool, "flows.py:sleepy", base_vars(&emu)).await;
    let run = api
        .create_flow_run_with_parameters(dep, json!({"seconds": 8}))
        .await;
    wait_for(Duration::from_secs(120), "Running", || async {
        (api.state_type(run).await == "RUNNING").then_some(())
    })
    .await;
    first.kill();
    // The container keeps running without its worker; a new worker must adopt it.
    let second = start_worker(config(&url, &pool), &emu);
    let fr = final_state(&api, run, Duration::from_secs(120)).await;
    assert_eq!(fr["state"]["type"], "COMPLETED", "{fr}");
    // The successor deletes the orphaned group at its next recovery pass.
    no_groups_left_within(&emu, run, Duration::from_secs(120)).await;
    second.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn runs_complete_through_an_arm_429_storm() {
    let url = api_url();
    let emu = emulator().await;
    let mut faults = emu.faults();
    // Tiny buckets: most bursts of requests are answered 429 with Retry-After.
    faults.arm_throttling = Some(aci_emulator::config::ThrottleLimits {
        reads: aci_emulator::config::Bucket {
            burst: 3,
            per_second: 1.0,
        },
        writes: aci_emulator::config::Bucket {
            burst: 2,
            per_second: 0.5,
        },
        deletes: aci_emulator::config::Bucket {
            burst: 2,
            per_second: 1.0,
        },
    });
    emu.set_faults(faults);
    let pool = unique("aci-pool");
    let api = Api::new(&url);
    // A first worker only creates the pool. The runs are created while no worker is
    // running, so the next worker's first poll takes all four at once and launches them
    // together: a burst that must exceed the write bucket however slowly the server
    // answers (runs created one by one and picked up one by one would not).
    let creator = start_worker(config(&url, &pool), &emu);
    api.wait_pool(&pool).await;
    creator.stop().await;
    let dep = deployment(&api, &pool, "flows.py:hello", base_vars(&emu)).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(api.create_flow_run(dep, json!({})).await);
    }
    let w = start_worker(config(&url, &pool), &emu);
    for run in &runs {
        let fr = final_state(&api, *run, Duration::from_secs(240)).await;
        assert_eq!(fr["state"]["type"], "COMPLETED", "{fr}");
    }
    for run in &runs {
        no_groups_left(&emu, *run).await;
    }
    let throttled: u64 = emu
        .stats()
        .requests
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.count)
        .sum();
    assert!(
        throttled > 0,
        "the storm must actually have throttled requests"
    );
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn hello_flow_runs_on_a_prefect_2_server() {
    let Stack {
        api,
        emu,
        pool,
        worker: w,
    } = Stack::start(p2_api_url(), emulator2().await).await;
    let dep = deployment(&api, &pool, "flows.py:hello", base_vars(&emu)).await;
    let run = api.create_flow_run(dep, json!({})).await;
    let fr = final_state(&api, run, Duration::from_secs(120)).await;
    assert_eq!(fr["state"]["type"], "COMPLETED", "{fr}");
    no_groups_left(&emu, run).await;
    let logs = api.logs(run).await;
    assert!(logs.iter().any(|m| m == "Hello from ACI!"), "{logs:?}");
    w.stop().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn a_pool_with_a_custom_arm_template_runs_through_an_arm_deployment() {
    let url = api_url();
    let emu = emulator().await;
    let pool = unique("aci-pool");
    let api = Api::new(&url);
    // A customised template (a fixed container name): the worker must deploy it through ARM
    // rather than PUT the group itself.
    let mut template = prefect_aci_worker::template::base_job_template();
    let resource = &mut template["job_configuration"]["arm_template"]["resources"][0];
    resource["properties"]["containers"][0]["name"] = json!("[concat('custom-', 'job')]");
    api.0
        .create_work_pool(&pool, "azure-container-instance", Some(&template), None)
        .await
        .expect("create the pool");
    let w = start_worker(config(&url, &pool), &emu);
    let dep = deployment(&api, &pool, "flows.py:hello", base_vars(&emu)).await;
    let run = api.create_flow_run(dep, json!({})).await;
    // The group the deployment created is the template's (its container name).
    wait_for(Duration::from_secs(60), "the templated group", || async {
        emu.groups()
            .into_iter()
            .find(|g| g.name.contains(&run.to_string()))
            .filter(|g| g.containers.first().is_some_and(|c| c.name == "custom-job"))
    })
    .await;
    let fr = final_state(&api, run, Duration::from_secs(120)).await;
    assert_eq!(fr["state"]["type"], "COMPLETED", "{fr}");
    // The flow can finish before the worker's next poll of the deployment: wait for the
    // worker to see it succeed and delete the record.
    wait_for(
        Duration::from_secs(60),
        "the deployment record to be deleted",
        || async { (emu.stats().count("deployments.delete", 202) >= 1).then_some(()) },
    )
    .await;
    let stats = emu.stats();
    assert_eq!(
        stats.count("deployments.createOrUpdate", 201),
        1,
        "{stats:?}"
    );
    assert_eq!(
        stats.total("containerGroups.createOrUpdate"),
        0,
        "{stats:?}"
    );
    no_groups_left(&emu, run).await;
    w.stop().await;
    emu.shutdown().await;
}
