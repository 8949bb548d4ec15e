//! Bad input never crashes the emulator or yields a 5xx, and concurrent clients do not
//! deadlock it.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

/// Odd paths, methods and bodies all get a 4xx (or success), never a 5xx or a dropped
/// connection.
#[tokio::test]
async fn garbage_in_is_a_client_error() {
    // No throttling: every request should reach the handlers.
    let faults = aci_emulator::Faults {
        arm_throttling: None,
        aci_quotas: None,
        ..Default::default()
    };
    let env = start(aci_emulator::EmulatorConfig { faults, ..config() }).await;
    let sub = env.sub();
    let cg = env.cg("g");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let paths = [
        format!("{cg}?api-version={ACI}"),
        format!("{cg}/containers/x/logs?api-version={ACI}&tail=-1"),
        format!("{cg}/containers/x/logs?api-version={ACI}&tail=abc"),
        format!("{cg}/explode?api-version={ACI}"),
        format!("{sub}/providers/Microsoft.ContainerInstance/locations/eastus/operations/%ff%fe?api-version={ACI}"),
        format!("{sub}/resourcegroups/%2e%2e?api-version={RG_API}"),
        format!("{sub}/resourcegroups/a%00b?api-version={RG_API}"),
        format!("{sub}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/%20?api-version={MI_API}"),
        format!("{sub}/providers/Unknown.Namespace/register?api-version={RG_API}"),
        format!("{sub}?api-version={RG_API}"),
        "/subscriptions".to_string(),
        "/_emulator/groups/rg/g/kill".to_string(),
        "/x/oauth2/v2.0/token".to_string(),
        "/metadata/identity/oauth2/token?api-version=%zz".to_string(),
        "//////".to_string(),
    ];
    let bodies = [
        None,
        Some(json!(null)),
        Some(json!("text")),
        Some(json!({"location": 5, "properties": []})),
        Some(
            json!({"location": "eastus", "properties": {"osType": "Linux", "containers": [{"name": "c"}]}}),
        ),
        Some(
            json!({"location": "eastus", "properties": {"osType": "Linux", "containers": [{"name": "c", "properties": {
            "image": "shell:1", "resources": {"requests": {"cpu": -1, "memoryInGB": 1e300}}}}]}}),
        ),
        Some(
            serde_json::from_str::<serde_json::Value>(&format!("{{\"a\":{}}}", "1".repeat(400)))
                .unwrap_or(json!({})),
        ),
    ];
    for path in &paths {
        for method in [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ] {
            for body in &bodies {
                let r = env
                    .call(method.clone(), path, body.clone(), Some(&env.token))
                    .await;
                assert!(
                    r.status.as_u16() < 500,
                    "{method} {path} {body:?} -> {} {}",
                    r.status,
                    r.body
                );
            }
        }
        // Raw, non-JSON bytes.
        let r = env
            .http
            .put(env.url(path))
            .bearer_auth(&env.token)
            .body(deep.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().as_u16() < 500,
            "{path} deep nesting -> {}",
            r.status()
        );
        let r = env
            .http
            .put(env.url(path))
            .bearer_auth(&env.token)
            .body(vec![0xffu8, 0xfe, 0x00])
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "{path} binary -> {}", r.status());
    }
    // Still healthy afterwards.
    let r = env
        .get(&format!("{sub}/resourcegroups/rg?api-version={RG_API}"))
        .await;
    assert_eq!(r.status.as_u16(), 200);
}

/// Many concurrent creates, polls and deletes finish without deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients() {
    let env = std::sync::Arc::new(start(config()).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("c{i}");
            assert_eq!(
                env.create(&name, shell_group("echo $((1+1))", "Never"))
                    .await,
                "Succeeded"
            );
            env.wait_state(&name, &["Succeeded"]).await;
            assert_eq!(env.logs(&name, "job", "").await, "2\n");
            let r = env
                .delete(&format!("{}?api-version={ACI}", env.cg(&name)))
                .await;
            assert_eq!(
                env.wait_op(r.header("azure-asyncoperation").unwrap()).await,
                "Succeeded"
            );
        }));
    }
    for t in tasks {
        t.await.expect("task finished");
    }
    assert!(env.emu.groups().is_empty());
}
