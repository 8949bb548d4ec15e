//! Setup and teardown against the emulator with RBAC enforced, then a worker running as the
//! identity setup created, end to end on a real Prefect server.

#[path = "../../worker/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aci_emulator::config::{EmulatorConfig, ImageRule, Principal};
use aci_emulator::Emulator;
use azure_arm::{
    ArmClient, ArmClientConfig, AzureCloud, AzureEnvironmentConfig, DefaultAzureCredential,
    DefaultCredentialOptions, ExplicitClientSecret, Secret,
};
use prefect_aci_setup::{Setup, SetupError, SetupOptions, Status, Step};
use prefect_aci_worker::aci::{AciInfrastructure, AciOptions};
use serde_json::{json, Value};
use support::aci::{venv3, worker_config};
use support::{api_url, unique, wait_for, Api};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const RG: &str = "prefect-setup";

/// The worker crate's test flows (the "image" contents).
fn worker_flows_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/data")
}

/// An RBAC-enforcing emulator whose registry images run the Prefect venv with the test flows,
/// except the worker image, which only idles (the test runs the worker in-process).
async fn emulator(registry: &str, extra: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = EmulatorConfig {
        rbac: true,
        principal_replication_lag_ms: 1000,
        pull_delay_ms: 50,
        provisioning_delay_ms: 50,
        ..EmulatorConfig::default()
    };
    let mut worker_image = ImageRule {
        image: format!("{registry}.azurecr.io/prefect-aci:*"),
        ..Default::default()
    };
    worker_image.entrypoint_aliases.insert(
        "prefect-aci".into(),
        vec!["/bin/sh".into(), "-c".into(), "sleep 3600".into()],
    );
    let mut flows = ImageRule {
        image: format!("{registry}.azurecr.io/*"),
        working_dir: Some(worker_flows_dir()),
        path_prepend: vec![venv3().join("bin")],
        ..Default::default()
    };
    flows
        .entrypoint_aliases
        .insert("/opt/prefect/entrypoint.sh".into(), vec![]);
    flows
        .env
        .insert("PREFECT_LOGGING_LEVEL".into(), "INFO".into());
    config.images = vec![worker_image, flows];
    extra(&mut config);
    aci_emulator::start(config).await.expect("emulator starts")
}

fn cloud(emu: &Emulator) -> AzureCloud {
    AzureCloud {
        authority_host: emu.authority_host().parse().expect("url"),
        resource_manager: emu.arm_url().parse().expect("url"),
        token_scope: "https://management.azure.com/.default".into(),
    }
}

/// An ARM client acting as a service principal with a client secret.
fn arm_as(emu: &Emulator, client_id: &str, secret: &str) -> ArmClient {
    let env = AzureEnvironmentConfig {
        cloud: cloud(emu),
        client_id: Some(client_id.into()),
        tenant_id: Some(emu.config().tenant_id.clone()),
        client_secret: Some(Secret::new(secret.to_string())),
        ..AzureEnvironmentConfig::default()
    };
    let http = azure_arm::build_http_client(&Default::default()).expect("http");
    let options = DefaultCredentialOptions {
        exclude_cli: true,
        exclude_managed_identity: true,
        ..Default::default()
    };
    let credential = DefaultAzureCredential::from_env(
        &env,
        &ExplicitClientSecret::default(),
        http.clone(),
        &options,
    )
    .expect("credential");
    let mut config = ArmClientConfig::for_cloud(&env.cloud, Arc::new(credential));
    config.http_client = Some(http);
    config.retry = azure_arm::RetryPolicy::fast_for_tests();
    ArmClient::new(config).expect("arm client")
}

fn admin(emu: &Emulator) -> ArmClient {
    let c = emu.config();
    arm_as(
        emu,
        &c.admin.client_id,
        c.admin.client_secret.as_deref().unwrap_or(""),
    )
}

fn options(emu: &Emulator, registry: &str, pool: &str) -> SetupOptions {
    let mut o = SetupOptions::new(
        &emu.config().subscription_id,
        RG,
        "eastus",
        "prefect-worker",
        registry,
        pool,
        api_url(),
    );
    o.principal_retry = Duration::from_secs(20);
    o
}

fn setup(arm: ArmClient, o: SetupOptions) -> Setup {
    Setup::new(
        arm,
        support::client(&api_url(), prefect_client::Auth::None),
        o,
    )
    .expect("valid options")
}

async fn exists(arm: &ArmClient, path: &str, api_version: &str) -> bool {
    arm.get_opt::<Value>(path, api_version)
        .await
        .expect("GET")
        .is_some()
}

fn rg_path(emu: &Emulator) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{RG}",
        emu.config().subscription_id
    )
}

/// A worker polling `pool` that authenticates as the user-assigned identity with `client_id`
/// through the emulator's IMDS endpoint (the managed identity path of the credential chain).
fn identity_worker(
    emu: &Emulator,
    pool: &str,
    client_id: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), prefect_aci_worker::WorkerError>>,
) {
    let mut o = AciOptions::from_env().expect("options");
    o.environment = AzureEnvironmentConfig {
        cloud: cloud(emu),
        client_id: Some(client_id.to_string()),
        imds_endpoint: emu.arm_url().parse().expect("url"),
        ..AzureEnvironmentConfig::default()
    };
    o.credential_options.exclude_cli = true;
    o.credential_options.exclude_managed_identity = false;
    o.liveness_interval = Duration::from_secs(3);
    let infra = AciInfrastructure::new(o).expect("infra");
    let token = CancellationToken::new();
    let task = tokio::spawn(prefect_aci_worker::run(
        worker_config(&api_url(), pool),
        infra,
        token.clone(),
    ));
    (token, task)
}

async fn flow_run(api: &Api, pool: &str, vars: Value) -> Uuid {
    let dep = api.create_deployment(pool, None, vars).await;
    api.0
        .raw_json(
            reqwest::Method::PATCH,
            &format!("/deployments/{dep}"),
            Some(&json!({"entrypoint": "flows.py:hello", "path": "."})),
        )
        .await
        .expect("set entrypoint");
    api.create_flow_run(dep, json!({})).await
}

async fn final_state(api: &Api, run: Uuid) -> Value {
    wait_for(Duration::from_secs(120), "a final state", || async {
        let fr = api.flow_run(run).await;
        let t = fr["state"]["type"].as_str().unwrap_or("");
        matches!(t, "COMPLETED" | "FAILED" | "CRASHED" | "CANCELLED").then_some(fr)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_and_the_identity_runs_flows_and_teardown_removes_only_ours() {
    let registry = format!("reg{}", &Uuid::new_v4().simple().to_string()[..10]);
    let pool = unique("setup-pool");
    let emu = emulator(&registry, |_| {}).await;
    let arm = admin(&emu);
    let s = setup(arm.clone(), options(&emu, &registry, &pool));
    let api = Api::new(&api_url());

    // The plan (a dry run) creates everything and changes nothing.
    let plan = s.plan().await.expect("plan");
    assert_eq!(plan.items.len(), 8);
    assert!(
        plan.items
            .iter()
            .all(|i| matches!(i.status, Status::Create(_))),
        "{plan:?}"
    );
    assert!(
        !exists(&arm, &rg_path(&emu), "2025-04-01").await,
        "dry run created the resource group"
    );
    assert!(api
        .0
        .read_work_pool(&pool)
        .await
        .expect("read pool")
        .is_none());

    let mut seen = Vec::new();
    let summary = s
        .apply(&mut |i| seen.push(i.clone()))
        .await
        .expect("setup succeeds");
    assert_eq!(
        seen.iter().map(|i| i.step).collect::<Vec<_>>(),
        Step::ALL.to_vec()
    );
    assert_eq!(summary.rg_scope, rg_path(&emu));
    assert_eq!(
        summary.registry_login_server,
        format!("{registry}.azurecr.io")
    );
    assert!(
        summary
            .identity_id
            .ends_with("/userAssignedIdentities/prefect-worker"),
        "{summary:?}"
    );

    // The worker's group runs with the identity, pulling from the registry by identity.
    let group = arm
        .get::<Value>(&summary.worker_group_id, "2025-09-01")
        .await
        .expect("worker group");
    assert_eq!(group["properties"]["restartPolicy"], "Always");
    assert_eq!(
        group["properties"]["imageRegistryCredentials"][0]["identity"],
        json!(summary.identity_id)
    );
    let env = &group["properties"]["containers"][0]["properties"]["environmentVariables"];
    assert!(
        env.as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"] == "PREFECT_API_URL" && v.get("value").is_none()),
        "{env}"
    );
    assert_eq!(
        group["properties"]["containers"][0]["properties"]["command"],
        json!(["prefect-aci", "worker", "start", "--pool", pool])
    );

    // The pool carries the guide's defaults.
    let p = api
        .0
        .read_work_pool(&pool)
        .await
        .expect("read")
        .expect("pool exists");
    let props = &p.base_job_template["variables"]["properties"];
    assert_eq!(props["identities"]["default"], json!([summary.identity_id]));
    assert_eq!(
        props["image_registry"]["default"],
        json!({"registry_url": summary.registry_login_server, "identity": summary.identity_id})
    );
    assert_eq!(
        props["subscription_id"]["default"],
        json!(emu.config().subscription_id)
    );
    assert_eq!(props["resource_group_name"]["default"], json!(RG));

    // A second run changes nothing.
    let again = s.plan().await.expect("plan");
    assert!(again.is_noop(), "{again:?}");
    let mut second = Vec::new();
    s.apply(&mut |i| second.push(i.clone()))
        .await
        .expect("second run");
    assert!(second.iter().all(|i| !i.status.is_change()), "{second:?}");

    // A worker authenticating as the identity runs a flow from the registry end to end.
    let (token, task) = identity_worker(&emu, &pool, &summary.identity_client_id);
    let vars = json!({
        "image": format!("{registry}.azurecr.io/flows:1"),
        "subscription_id": emu.config().subscription_id,
        "resource_group_name": RG,
        "task_watch_poll_interval": 1,
    });
    let run = flow_run(&api, &pool, vars.clone()).await;
    let fr = final_state(&api, run).await;
    assert_eq!(
        fr["state"]["type"],
        "COMPLETED",
        "{fr} {:?}",
        api.logs(run).await
    );
    let stats = emu.stats();
    assert!(
        stats.count("imds.token", 200) >= 1,
        "the worker used IMDS: {stats:?}"
    );

    // The worker deleted the run's group: only its own group is left.
    wait_for(
        Duration::from_secs(60),
        "flow-run groups to be deleted",
        || async { (emu.groups().len() == 1).then_some(()) },
    )
    .await;
    // Without the role assignment the same worker is refused, and says which action.
    let cic = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        summary.rg_scope,
        prefect_aci_setup::roles::assignment_name(
            &summary.rg_scope,
            &summary.identity_principal_id,
            &summary.role_definition_id
        )
    );
    arm.delete(&cic, "2022-04-01")
        .await
        .expect("delete assignment");
    let run = flow_run(&api, &pool, vars).await;
    let fr = final_state(&api, run).await;
    assert_eq!(fr["state"]["type"], "CRASHED", "{fr}");
    let msg = fr["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("AuthorizationFailed") || msg.contains("does not have authorization"),
        "{msg}"
    );
    assert!(msg.contains("perform action 'Microsoft."), "{msg}");
    token.cancel();
    task.await.expect("join").expect("worker ok");

    // Setup notices the missing assignment and restores it (resuming is re-running).
    let plan = s.plan().await.expect("plan");
    let changed: Vec<Step> = plan
        .items
        .iter()
        .filter(|i| i.status.is_change())
        .map(|i| i.step)
        .collect();
    assert_eq!(changed, vec![Step::RoleAssignment]);
    s.apply(&mut |_| {}).await.expect("resume");
    assert!(s.plan().await.expect("plan").is_noop());

    // Teardown: only tagged resources go; a bystander keeps the resource group alive.
    let bystander = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bystander",
        summary.rg_scope
    );
    arm.put::<_, Value>(&bystander, "2024-11-30", &json!({"location": "eastus"}))
        .await
        .expect("bystander");
    let td = s.teardown(false, &mut |_| {}).await.expect("teardown plan");
    assert!(
        exists(&arm, &summary.identity_id, "2024-11-30").await,
        "teardown plan deleted something"
    );
    let kinds: Vec<&str> = td.items.iter().map(|i| i.kind).collect();
    assert!(
        kinds.contains(&"container group")
            && kinds.contains(&"registry")
            && kinds.contains(&"work pool"),
        "{td:?}"
    );
    s.teardown(true, &mut |_| {}).await.expect("teardown");
    assert!(!exists(&arm, &summary.identity_id, "2024-11-30").await);
    assert!(!exists(&arm, &summary.registry_id, "2025-04-01").await);
    assert!(!exists(&arm, &summary.worker_group_id, "2025-09-01").await);
    assert!(!exists(&arm, &summary.role_definition_id, "2022-04-01").await);
    assert!(api.0.read_work_pool(&pool).await.expect("read").is_none());
    assert!(
        exists(&arm, &bystander, "2024-11-30").await,
        "teardown removed an untagged resource"
    );
    assert!(
        exists(&arm, &summary.rg_scope, "2025-04-01").await,
        "the group still holds the bystander"
    );

    // With the bystander gone, the resource group setup created goes too.
    arm.delete(&bystander, "2024-11-30")
        .await
        .expect("delete bystander");
    s.teardown(true, &mut |_| {}).await.expect("teardown");
    assert!(!exists(&arm, &summary.rg_scope, "2025-04-01").await);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_taken_registry_name_stops_before_anything_is_created() {
    let emu = emulator("takenname1", |c| {
        c.taken_registry_names = vec!["takenname1".into()]
    })
    .await;
    let arm = admin(&emu);
    let pool = unique("setup-pool");
    let s = setup(arm.clone(), options(&emu, "takenname1", &pool));
    match s.plan().await {
        Err(SetupError::RegistryNameTaken { name, .. }) => assert_eq!(name, "takenname1"),
        other => panic!("expected RegistryNameTaken, got {other:?}"),
    }
    let err = s.apply(&mut |_| {}).await.expect_err("apply refuses too");
    assert!(matches!(err, SetupError::RegistryNameTaken { .. }), "{err}");
    assert!(err.to_string().contains("nothing was created"), "{err}");
    assert!(
        !exists(&arm, &rg_path(&emu), "2025-04-01").await,
        "a resource group was created"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_missing_permission_names_the_action_and_the_roles_that_grant_it() {
    let registry = format!("reg{}", &Uuid::new_v4().simple().to_string()[..10]);
    let emu = emulator(&registry, |c| {
        c.principals.push(Principal {
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: Some("nobody-secret".into()),
            ..Principal::default()
        })
    })
    .await;
    let arm = arm_as(
        &emu,
        "11111111-2222-3333-4444-555555555555",
        "nobody-secret",
    );
    let s = setup(arm, options(&emu, &registry, &unique("setup-pool")));
    let err = s.apply(&mut |_| {}).await.expect_err("refused");
    match &err {
        SetupError::PermissionDenied {
            action,
            roles,
            scope,
            ..
        } => {
            assert_eq!(
                action,
                "Microsoft.ContainerRegistry/registries/read" // the registry pre-check reads first
            );
            assert!(
                scope.ends_with(&format!("/resourceGroups/{RG}")) || scope.contains(RG),
                "{scope}"
            );
            assert_eq!(roles.first().copied(), Some("Reader"));
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("az role assignment create") && text.contains("Reader"),
        "{text}"
    );
}

#[test]
fn stable_guids_match_arm_guid_as_the_emulator_implements_it() {
    use aci_emulator::rbac;
    use prefect_aci_setup::roles;
    let scope = "/subscriptions/s/resourceGroups/rg";
    assert_eq!(
        roles::custom_role_guid(scope),
        rbac::custom_role_definition_name(scope, roles::ROLE_NAME)
    );
    assert_eq!(
        roles::assignment_name(scope, "p", "/r"),
        rbac::role_assignment_name(scope, "p", "/r")
    );
    // The static role table agrees with the emulator's built-in roles.
    let defs = rbac::builtin_role_definitions();
    for action in [
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.ContainerInstance/containerGroups/write",
        "Microsoft.ContainerRegistry/registries/pull/read",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
    ] {
        let ours: Vec<&str> = roles::roles_granting(action);
        for d in rbac::roles_granting(action, &defs) {
            assert!(
                ours.contains(&d.role_name.as_str()),
                "{action}: {} missing from {ours:?}",
                d.role_name
            );
        }
    }
}
