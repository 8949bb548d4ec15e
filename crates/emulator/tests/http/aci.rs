//! Container groups: create/get/list/delete, validation, processes, logs, restarts, actions.

use std::collections::BTreeMap;

use aci_emulator::{EmulatorConfig, ImageRule};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

fn container0(body: &Value) -> &Value {
    &body["properties"]["containers"][0]["properties"]["instanceView"]
}

/// The spec example's shape: 201 + Azure-AsyncOperation + Pending, then Succeeded; a job's
/// exit code, logs and events; secureValue never returned.
#[tokio::test]
async fn create_run_and_inspect_a_job() {
    let env = start(config()).await;
    let mut body = shell_group("echo hi; echo \"secret=$API_KEY\" >&2; exit 3", "Never");
    body["properties"]["containers"][0]["properties"]["environmentVariables"] =
        json!([{"name": "MODE", "value": "job"}, {"name": "API_KEY", "secureValue": "s3cr3t"}]);
    let r = env
        .put(&format!("{}?api-version={ACI}", env.cg("job-1")), body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Pending");
    assert_eq!(
        r.body["type"],
        "Microsoft.ContainerInstance/containerGroups"
    );
    assert_eq!(r.body["id"], env.cg("job-1"));
    assert!(r
        .header("x-ms-ratelimit-remaining-subscription-resource-requests-pt5m")
        .is_some());
    let op = r.header("azure-asyncoperation").unwrap().to_string();
    assert!(op.starts_with(&format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/eastus/operations/",
        env.emu.arm_url(),
        env.emu.config().subscription_id
    )));
    assert!(op.ends_with(&format!("?api-version={ACI}")));
    let envs = &r.body["properties"]["containers"][0]["properties"]["environmentVariables"];
    assert_eq!(
        envs,
        &json!([{"name": "MODE", "value": "job"}, {"name": "API_KEY"}])
    );

    assert_eq!(env.wait_op(&op).await, "Succeeded");
    let op_body = env.get(&op).await.body;
    assert_eq!(op_body["id"], env.cg("job-1"));
    assert!(op_body["startTime"].is_string() && op_body["endTime"].is_string());

    let g = env.wait_state("job-1", &["Succeeded", "Failed"]).await;
    assert_eq!(
        g["properties"]["instanceView"]["state"], "Failed",
        "non-zero exit under Never"
    );
    assert_eq!(g["properties"]["provisioningState"], "Succeeded");
    let iv = container0(&g);
    assert_eq!(iv["currentState"]["state"], "Terminated");
    assert_eq!(iv["currentState"]["exitCode"], 3);
    assert_eq!(iv["currentState"]["detailStatus"], "Error");
    assert!(
        iv["currentState"]["startTime"].is_string() && iv["currentState"]["finishTime"].is_string()
    );
    assert_eq!(iv["restartCount"], 0);
    let events: Vec<&str> = iv["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["Pulling", "Pulled", "Started"]);
    assert!(
        !g.to_string().contains("s3cr3t"),
        "secureValue is never returned"
    );

    // Logs hold both streams; the secure value reached the process.
    let logs = env.logs("job-1", "job", "").await;
    assert!(
        logs.contains("hi\n") && logs.contains("secret=s3cr3t\n"),
        "{logs:?}"
    );
    let stamped = env.logs("job-1", "job", "&timestamps=true&tail=1").await;
    assert_eq!(stamped.lines().count(), 1);
    let (ts, _) = stamped.split_once(' ').unwrap();
    assert_eq!(ts.len(), "2026-11-28T03:11:26.2851130Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    let r = env
        .get(&format!(
            "{}/containers/nope/logs?api-version={ACI}",
            env.cg("job-1")
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let summary = env.emu.groups();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].containers[0].exit_code, Some(3));
    assert_eq!(summary[0].tags.get("job").map(String::as_str), Some("test"));
}

/// A body close to the REST spec's example (ports, ipAddress, volumes are kept verbatim).
#[tokio::test]
async fn unknown_properties_round_trip() {
    let env = start(config()).await;
    let body = json!({
        "location": "eastus",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "osType": "Linux", "sku": "Standard", "restartPolicy": "OnFailure",
            "ipAddress": {"type": "Public", "ports": [{"port": 80, "protocol": "TCP"}], "dnsNameLabel": "dnsnamelabel1"},
            "diagnostics": {"logAnalytics": {"workspaceId": "w", "workspaceKey": "k"}},
            "containers": [{"name": "demo1", "properties": {
                "image": "shell:nginx", "command": ["/bin/sh", "-c", "exit 0"], "ports": [{"port": 80}],
                "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5}}}}]
        }
    });
    assert_eq!(env.create("demo1", body).await, "Succeeded");
    let g = env
        .get(&format!("{}?api-version={ACI}", env.cg("demo1")))
        .await
        .body;
    assert_eq!(
        g["properties"]["ipAddress"]["dnsNameLabel"],
        "dnsnamelabel1"
    );
    assert_eq!(
        g["properties"]["containers"][0]["properties"]["ports"],
        json!([{"port": 80}])
    );
    assert_eq!(g["properties"]["restartPolicy"], "OnFailure");
}

/// Validation errors carry the service's codes (data-driven).
#[tokio::test]
async fn validation_errors() {
    let env = start(config()).await;
    let uami = env
        .put(
            &format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pull?api-version={MI_API}", env.sub()),
            json!({"location": "eastus"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = || shell_group("true", "Never");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = base();
        f(&mut b);
        b
    };
    let acr = |attach: bool| {
        let mut b = base();
        b["properties"]["containers"][0]["properties"]["image"] =
            json!("myacr.azurecr.io/worker:1");
        b["properties"]["imageRegistryCredentials"] =
            json!([{"server": "myacr.azurecr.io", "identity": uami}]);
        if attach {
            b["identity"] =
                json!({"type": "UserAssigned", "userAssignedIdentities": {uami.clone(): {}}});
        }
        b
    };
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "no osType",
            "ok-name",
            with(&|b| {
                b["properties"].as_object_mut().unwrap().remove("osType");
            }),
            "InvalidOsType",
        ),
        (
            "no requests",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("resources");
            }),
            "ResourceRequestsNotSpecified",
        ),
        (
            "upper-case name",
            "Bad-Name",
            base(),
            "ContainerGroupNameInvalid",
        ),
        ("leading dash", "-bad", base(), "ContainerGroupNameInvalid"),
        (
            "bad env name",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["environmentVariables"] =
                    json!([{"name": "A-B", "value": "x"}]);
            }),
            "InvalidEnvironmentVariableName",
        ),
        (
            "too much cpu",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] =
                    json!(64);
            }),
            "InvalidCpuRequest",
        ),
        (
            "no memory",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["resources"]["requests"]
                    ["memoryInGB"] = json!(0);
            }),
            "InvalidMemoryRequest",
        ),
        (
            "unknown image",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["image"] = json!("nginx:latest");
            }),
            "InaccessibleImage",
        ),
        (
            "acr without credential",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["image"] =
                    json!("myacr.azurecr.io/worker:1");
            }),
            "InaccessibleImage",
        ),
        (
            "credential identity not attached",
            "ok-name",
            acr(false),
            "InaccessibleImage",
        ),
        (
            "scheme in server",
            "ok-name",
            with(&|b| {
                b["properties"]["imageRegistryCredentials"] =
                    json!([{"server": "https://x.io", "username": "u", "password": "p"}]);
            }),
            "InvalidImageRegistryServer",
        ),
        (
            "no location",
            "ok-name",
            with(&|b| {
                b.as_object_mut().unwrap().remove("location");
            }),
            "LocationRequired",
        ),
        (
            "unknown location",
            "ok-name",
            with(&|b| {
                b["location"] = json!("mars");
            }),
            "LocationNotAvailableForResourceType",
        ),
        (
            "bad restart policy",
            "ok-name",
            with(&|b| {
                b["properties"]["restartPolicy"] = json!("Sometimes");
            }),
            "InvalidRestartPolicy",
        ),
        (
            "no containers",
            "ok-name",
            with(&|b| {
                b["properties"]["containers"] = json!([]);
            }),
            "ContainerGroupContainersMissing",
        ),
        (
            "not json",
            "ok-name",
            json!("nope"),
            "InvalidRequestContent",
        ),
    ];
    for (what, name, body, code) in cases {
        let r = env
            .put(&format!("{}?api-version={ACI}", env.cg(name)), body)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code),
            "{what}: {}",
            r.body
        );
    }
    // Identity credentials need api-version 2021-07-01 or later.
    let r = env
        .put(
            &format!("{}?api-version=2021-03-01", env.cg("acr")),
            acr(true),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::BAD_REQUEST,
            "InvalidImageRegistryCredentialType"
        ),
        "{}",
        r.body
    );
    // With the identity attached and a new api-version, it works and ids are filled in.
    assert_eq!(env.create("acr", acr(true)).await, "Succeeded");
    let g = env
        .get(&format!("{}?api-version={ACI}", env.cg("acr")))
        .await
        .body;
    let ids = &g["identity"]["userAssignedIdentities"][uami.as_str()];
    assert!(
        ids["clientId"].is_string() && ids["principalId"].is_string(),
        "{g}"
    );
    assert!(
        env.emu.groups().iter().all(|g| g.name == "acr"),
        "failed PUTs create nothing"
    );
}

/// Pull failures (image accepted at PUT, missing at pull) fail provisioning like ACI.
#[tokio::test]
async fn pull_failure() {
    let env = start(EmulatorConfig {
        check_images_on_create: false,
        ..config()
    })
    .await;
    let mut body = shell_group("true", "Never");
    body["properties"]["containers"][0]["properties"]["image"] = json!("ghost:1");
    assert_eq!(env.create("ghost", body).await, "Failed");
    let g = env
        .get(&format!("{}?api-version={ACI}", env.cg("ghost")))
        .await
        .body;
    assert_eq!(g["properties"]["provisioningState"], "Failed");
    let events = container0(&g)["events"].as_array().unwrap().clone();
    assert!(
        events.iter().any(|e| e["name"] == "Failed"
            && e["type"] == "Warning"
            && e["message"].as_str().unwrap().contains("ghost:1")),
        "{events:?}"
    );
}

/// PUT on an existing group is an update (200) that redeploys.
#[tokio::test]
async fn update_is_200() {
    let env = start(config()).await;
    assert_eq!(
        env.create("upd", shell_group("echo one", "Never")).await,
        "Succeeded"
    );
    env.wait_state("upd", &["Succeeded"]).await;
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("upd")),
            shell_group("echo two", "Never"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    env.wait_op(r.header("azure-asyncoperation").unwrap()).await;
    env.wait_state("upd", &["Succeeded"]).await;
    assert_eq!(env.logs("upd", "job", "").await, "two\n");
}

/// Lists page with nextLink and carry no instanceView.
#[tokio::test]
async fn list_with_paging() {
    let env = start(EmulatorConfig {
        page_size: 2,
        ..config()
    })
    .await;
    for n in ["a1", "a2", "a3"] {
        env.create(n, shell_group("true", "Never")).await;
    }
    for path in [
        format!("{}/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups?api-version={ACI}", env.sub()),
        format!("{}/providers/Microsoft.ContainerInstance/containerGroups?api-version={ACI}", env.sub()),
    ] {
        let mut names = Vec::new();
        let mut next = Some(path);
        let mut pages = 0;
        while let Some(url) = next {
            let r = env.get(&url).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            for g in r.body["value"].as_array().unwrap() {
                assert!(g["properties"].get("instanceView").is_none());
                assert!(g["properties"]["containers"][0]["properties"].get("instanceView").is_none());
                names.push(g["name"].as_str().unwrap().to_string());
            }
            next = r.body["nextLink"].as_str().map(str::to_string);
            pages += 1;
        }
        assert_eq!(pages, 2);
        assert_eq!(names, ["a1", "a2", "a3"]);
    }
}

/// DELETE: 202 + async op, the process group dies, then 404; deleting again is 204.
#[tokio::test]
async fn delete_kills_the_process_group() {
    let env = start(config()).await;
    assert_eq!(
        env.create(
            "sleeper",
            shell_group("echo up; sleep 1000 & wait", "Never")
        )
        .await,
        "Succeeded"
    );
    env.poll(&format!("{}?api-version={ACI}", env.cg("sleeper")), |b| {
        container0(b)["currentState"]["state"] == "Running"
    })
    .await;
    let pid = env.emu.groups()[0].containers[0].pid.expect("running pid") as u64;
    assert!(alive(pid));
    let r = env
        .delete(&format!("{}?api-version={ACI}", env.cg("sleeper")))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let op = r.header("azure-asyncoperation").unwrap().to_string();
    assert_eq!(env.wait_op(&op).await, "Succeeded");
    assert!(!alive(pid), "the container's process is gone");
    let r = env
        .get(&format!("{}?api-version={ACI}", env.cg("sleeper")))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    let r = env
        .delete(&format!("{}?api-version={ACI}", env.cg("sleeper")))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

/// Stop kills and marks Stopped (204); start re-runs (202 + async op); restart is 204.
#[tokio::test]
async fn stop_start_restart() {
    let env = start(config()).await;
    env.create("svc", shell_group("echo tick; sleep 1000", "Always"))
        .await;
    let path = format!("{}?api-version={ACI}", env.cg("svc"));
    env.poll(&path, |b| {
        container0(b)["currentState"]["state"] == "Running"
    })
    .await;
    let pid = env.emu.groups()[0].containers[0].pid.unwrap() as u64;
    let r = env
        .post(&format!("{}/stop?api-version={ACI}", env.cg("svc")))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!alive(pid));
    let g = env.get(&path).await.body;
    assert_eq!(g["properties"]["instanceView"]["state"], "Stopped");
    assert_eq!(container0(&g)["currentState"]["state"], "Terminated");
    assert!(container0(&g)["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "Killing"));

    let r = env
        .post(&format!("{}/start?api-version={ACI}", env.cg("svc")))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        env.wait_op(r.header("azure-asyncoperation").unwrap()).await,
        "Succeeded"
    );
    env.poll(&path, |b| {
        container0(b)["currentState"]["state"] == "Running"
    })
    .await;
    let pid2 = env.emu.groups()[0].containers[0].pid.unwrap() as u64;
    assert_ne!(pid, pid2);

    let r = env
        .post(&format!("{}/restart?api-version={ACI}", env.cg("svc")))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    env.poll(&path, |b| {
        container0(b)["currentState"]["state"] == "Running"
    })
    .await;
    eventually("restart replaced the process", || !alive(pid2)).await;
    env.emu.shutdown().await;
}

/// OnFailure restarts a failing container, keeps previousState and counts restarts.
#[tokio::test]
async fn on_failure_restarts() {
    let env = start(config()).await;
    let script = "if [ -f ran ]; then echo second; exit 0; else touch ran; echo first; exit 1; fi";
    env.create("flaky", shell_group(script, "OnFailure")).await;
    let g = env.wait_state("flaky", &["Succeeded", "Failed"]).await;
    assert_eq!(g["properties"]["instanceView"]["state"], "Succeeded");
    let iv = container0(&g);
    assert_eq!(iv["restartCount"], 1);
    assert_eq!(iv["previousState"]["exitCode"], 1);
    assert_eq!(iv["previousState"]["state"], "Terminated");
    assert_eq!(iv["currentState"]["exitCode"], 0);
    assert_eq!(env.logs("flaky", "job", "").await, "first\nsecond\n");
}

/// The admin kill endpoint crashes a container; `Always` brings it back.
#[tokio::test]
async fn admin_kill_counts_as_a_crash() {
    let env = start(config()).await;
    env.create("victim", shell_group("sleep 1000", "Always"))
        .await;
    let path = format!("{}?api-version={ACI}", env.cg("victim"));
    env.poll(&path, |b| {
        container0(b)["currentState"]["state"] == "Running"
    })
    .await;
    let r = env
        .http
        .post(format!(
            "{}/_emulator/groups/rg/victim/kill",
            env.emu.arm_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let g = env
        .poll(&path, |b| {
            container0(b)["restartCount"] == 1
                && container0(b)["currentState"]["state"] == "Running"
        })
        .await;
    assert_eq!(container0(&g)["previousState"]["exitCode"], 137);
    let r = env
        .http
        .post(format!(
            "{}/_emulator/groups/rg/nope/kill",
            env.emu.arm_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    env.emu.shutdown().await;
}

/// What a process sees: image default command, entrypoint alias, env layering, platform
/// variables, no leaked emulator environment, its own working directory.
#[tokio::test]
async fn process_environment() {
    let mut image_env = BTreeMap::new();
    image_env.insert("FROM_IMAGE".to_string(), "1".to_string());
    image_env.insert("OVERRIDDEN".to_string(), "image".to_string());
    let rule = ImageRule {
        image: "prefect:*".into(),
        command: vec![
            "/opt/prefect/entrypoint.sh".into(),
            "/bin/sh".into(),
            "-c".into(),
            "env; pwd".into(),
        ],
        env: image_env,
        path_prepend: vec!["/opt/fake/bin".into()],
        entrypoint_aliases: [("/opt/prefect/entrypoint.sh".to_string(), vec![])]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let mut cfg = config();
    cfg.images.push(rule);
    let env = start(cfg).await;
    let body = json!({
        "location": "eastus",
        "properties": {"osType": "Linux", "restartPolicy": "Never", "containers": [{"name": "c", "properties": {
            "image": "prefect:3", "resources": {"requests": {"cpu": 1, "memoryInGB": 1}},
            "environmentVariables": [{"name": "OVERRIDDEN", "value": "container"}, {"name": "AZURE_AUTHORITY_HOST", "value": "https://mine"}]}}]}
    });
    env.create("envy", body).await;
    env.wait_state("envy", &["Succeeded", "Failed"]).await;
    let logs = env.logs("envy", "c", "").await;
    let arm = env.emu.arm_url();
    for expected in [
        "FROM_IMAGE=1".to_string(),
        "OVERRIDDEN=container".to_string(),
        "AZURE_AUTHORITY_HOST=https://mine".to_string(),
        format!("AZURE_RESOURCE_MANAGER_ENDPOINT={arm}"),
        format!("AZURE_POD_IDENTITY_AUTHORITY_HOST={arm}/_imds/"),
        "PATH=/opt/fake/bin:".to_string(),
    ] {
        assert!(logs.contains(&expected), "missing {expected:?} in:\n{logs}");
    }
    assert!(
        !logs.contains("CARGO_PKG_NAME="),
        "the emulator's environment leaked:\n{logs}"
    );
    let cwd = logs.lines().last().unwrap();
    assert!(cwd.ends_with("/rg/envy/c"), "{cwd}");
}

/// A container gets tokens for its group's identity from the scoped IMDS endpoint in its
/// environment, exactly as an SDK inside ACI would.
#[tokio::test]
async fn container_reaches_imds_for_its_identity() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("python3 is required for this test");
    }
    let env = start(config()).await;
    let mk = |name: &str| {
        format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?api-version={MI_API}", env.sub())
    };
    let mine = env
        .put(&mk("mine"), json!({"location": "eastus"}))
        .await
        .body;
    env.put(&mk("other"), json!({"location": "eastus"})).await;
    let script = r#"
import json, os, urllib.request
url = os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
req = urllib.request.Request(url, headers={"Metadata": "true"})
body = json.load(urllib.request.urlopen(req))
print("client_id=" + body["client_id"])
print("expires_in_type=" + type(body["expires_in"]).__name__)
"#;
    let id = mine["id"].as_str().unwrap();
    let body = json!({
        "location": "eastus",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {id: {}}},
        "properties": {"osType": "Linux", "restartPolicy": "Never", "containers": [{"name": "c", "properties": {
            "image": "shell:py", "command": ["python3", "-c", script],
            "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}}}]}
    });
    env.create("withid", body).await;
    let g = env.wait_state("withid", &["Succeeded", "Failed"]).await;
    let logs = env.logs("withid", "c", "").await;
    assert_eq!(
        g["properties"]["instanceView"]["state"], "Succeeded",
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "client_id={}",
            mine["properties"]["clientId"].as_str().unwrap()
        )),
        "{logs}"
    );
    assert!(logs.contains("expires_in_type=str"), "{logs}");
}

/// A command that cannot be executed fails the container with an event, not the emulator.
#[tokio::test]
async fn missing_executable() {
    let env = start(config()).await;
    let mut body = shell_group("", "Never");
    body["properties"]["containers"][0]["properties"]["command"] = json!(["/definitely/not/here"]);
    env.create("noexec", body).await;
    let g = env.wait_state("noexec", &["Failed", "Succeeded"]).await;
    let iv = container0(&g);
    assert_eq!(iv["currentState"]["exitCode"], 127);
    assert!(iv["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "Failed"));
}

/// Shutdown kills running containers.
#[tokio::test]
async fn shutdown_kills_everything() {
    let env = start(config()).await;
    env.create("long", shell_group("sleep 1000", "Always"))
        .await;
    env.poll(&format!("{}?api-version={ACI}", env.cg("long")), |b| {
        container0(b)["currentState"]["state"] == "Running"
    })
    .await;
    let pid = env.emu.groups()[0].containers[0].pid.unwrap() as u64;
    env.emu.shutdown().await;
    eventually("process killed at shutdown", || !alive(pid)).await;
}

/// Output without newlines is split into bounded lines; the log buffer is bounded too.
#[tokio::test]
async fn long_output_is_bounded() {
    let env = start(EmulatorConfig {
        log_limit_bytes: 150 * 1024,
        ..config()
    })
    .await;
    env.create(
        "chatty",
        shell_group(
            "head -c 200000 /dev/zero | tr '\\0' a; echo; echo end",
            "Never",
        ),
    )
    .await;
    env.wait_state("chatty", &["Succeeded", "Failed"]).await;
    let logs = env.logs("chatty", "job", "").await;
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.last(), Some(&"end"));
    assert!(lines.iter().all(|l| l.len() <= 64 * 1024));
    assert!(
        logs.len() <= 150 * 1024,
        "oldest lines were dropped: {}",
        logs.len()
    );
    let tail = env.logs("chatty", "job", "&tail=2").await;
    assert_eq!(tail.lines().count(), 2);
}

/// Redeploying while provisioning cancels the earlier operation instead of leaving it hanging.
#[tokio::test]
async fn redeploy_cancels_the_previous_operation() {
    let env = start(EmulatorConfig {
        pull_delay_ms: 2000,
        ..config()
    })
    .await;
    let path = format!("{}?api-version={ACI}", env.cg("twice"));
    let first = env.put(&path, shell_group("true", "Never")).await;
    let first_op = first.header("azure-asyncoperation").unwrap().to_string();
    let second = env.put(&path, shell_group("true", "Never")).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(env.get(&first_op).await.body["status"], "Canceled");
}

/// PATCH updates tags only and returns the group.
#[tokio::test]
async fn patch_updates_tags() {
    let env = start(config()).await;
    env.create("tagged", shell_group("true", "Never")).await;
    let r = env
        .call(
            reqwest::Method::PATCH,
            &format!("{}?api-version={ACI}", env.cg("tagged")),
            Some(json!({"tags": {"a": "1"}})),
            Some(&env.token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["tags"], json!({"a": "1"}));
    assert_eq!(
        env.emu.groups()[0].tags.get("a").map(String::as_str),
        Some("1")
    );
    let r = env
        .call(
            reqwest::Method::PATCH,
            &format!("{}?api-version={ACI}", env.cg("absent")),
            Some(json!({"tags": {}})),
            Some(&env.token),
        )
        .await;
    assert_eq!(r.code(), "ResourceNotFound");
}
